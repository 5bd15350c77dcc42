//! `kiln push`: each blob the registry lacks is streamed from its file (never held in
//! memory), blobs it has cost one HEAD, and the manifest goes last with the exact bytes of
//! the store, so its digest is the one the user sees locally. A blob kiln has seen in
//! another repository of the same registry is first offered as a cross-repository mount,
//! which moves no data; a declined mount falls back to an upload in the session the
//! registry opened instead.
//!
//! Small blobs go up as one monolithic PUT (the fewest requests); a blob of
//! [`RESUMABLE_MIN`] or more as one streaming PATCH into an upload session and a closing
//! PUT, so that when the connection breaks kiln asks the registry how much arrived
//! (`GET` on the session, its `Range` header) and sends only the rest. A registry that
//! cannot say (distribution 2.8 cancels a session whose data outran its last answer)
//! gets the blob again in a fresh session.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};

use super::blob_mounts;
use super::retry::{self, Retrying, Transient};
use super::transport::{header, Attempt, Client};
use super::{block_on, RegistryError, Result, Settings, PARALLEL_BLOBS};
use kiln_image::Image;
use kiln_progress::{BlobOutcome, Progress};
use kiln_store::oci::MEDIA_TYPE_MANIFEST;
use kiln_store::{Digest, Reference, Store, MAX_DOCUMENT};

/// Read size for upload bodies: large enough for few syscalls, small in memory.
const UPLOAD_CHUNK: usize = 256 << 10;

/// Blobs from this size on are uploaded so that a broken upload can resume (one request
/// more than a monolithic PUT, which only matters for small blobs).
pub(super) const RESUMABLE_MIN: u64 = 16 << 20;

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: Digest,
    pub uploaded: usize,
    /// Blobs the registry mounted from another of its repositories.
    pub mounted: usize,
    pub existed: usize,
    pub bytes: u64,
}

/// Pushes the image whose manifest is `manifest_digest` to `target`.
pub fn push(
    store: &Store,
    settings: &Settings,
    manifest_digest: &Digest,
    target: &Reference,
    progress: Arc<dyn Progress>,
) -> Result<Pushed> {
    let image = Image::load(store, manifest_digest)?;
    let manifest_bytes = store.read_blob(manifest_digest, MAX_DOCUMENT)?;
    let media_type = image
        .manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| MEDIA_TYPE_MANIFEST.to_owned());
    if let Some(d) = &target.digest {
        if d != manifest_digest {
            return Err(RegistryError::BadManifest {
                reference: target.to_string(),
                why: format!("the image's manifest is {manifest_digest}, not {d}"),
            });
        }
    }
    let mut blobs = vec![image.manifest.config().clone()];
    blobs.extend(image.manifest.layers().iter().cloned());
    let outgoing = Outgoing {
        digest: manifest_digest.clone(),
        bytes: manifest_bytes,
        media_type,
        blobs,
    };
    push_manifest(store, settings, target, outgoing, progress)
}

/// A manifest on its way up: its exact bytes and the blobs it names, all in the store.
pub(super) struct Outgoing {
    pub digest: Digest,
    pub bytes: Vec<u8>,
    pub media_type: String,
    /// Config first, then layers; a blob named twice is sent once.
    pub blobs: Vec<oci_spec::image::Descriptor>,
}

/// Sends the blobs the registry lacks, then the manifest: an image's or a build cache's.
pub(super) fn push_manifest(
    store: &Store,
    settings: &Settings,
    target: &Reference,
    outgoing: Outgoing,
    progress: Arc<dyn Progress>,
) -> Result<Pushed> {
    let Outgoing {
        digest: manifest_digest,
        bytes: manifest_bytes,
        media_type,
        mut blobs,
    } = outgoing;
    let mut seen = std::collections::HashSet::new();
    blobs.retain(|d| seen.insert(d.digest().clone()));
    block_on(async {
        let mut client = Client::new(settings, target, true)?;
        let sources = mount_sources(store, &client, &blobs);
        client.also_pull_from(sources);
        let digests = blobs
            .iter()
            .map(Digest::try_from)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let outcomes: Vec<(BlobOutcome, u64)> = futures_util::stream::iter(blobs)
            .map(|desc| push_blob(&client, store, desc, &progress))
            .buffer_unordered(PARALLEL_BLOBS)
            .try_collect()
            .await?;
        put_manifest(
            &client,
            target,
            &manifest_digest,
            manifest_bytes,
            &media_type,
        )
        .await?;
        // Only a hint for later pushes: a push does not fail over it.
        let _ = blob_mounts::remember(store, client.registry(), client.repository(), &digests);
        let uploaded: Vec<_> = outcomes
            .iter()
            .filter(|(o, _)| *o == BlobOutcome::Pushed)
            .collect();
        let count = |outcome| outcomes.iter().filter(|(o, _)| *o == outcome).count();
        Ok(Pushed {
            digest: manifest_digest.clone(),
            uploaded: uploaded.len(),
            mounted: count(BlobOutcome::Mounted),
            existed: count(BlobOutcome::Exists),
            bytes: uploaded.iter().map(|(_, n)| n).sum(),
        })
    })
}

/// The other repositories of the registry that kiln saw holding any of `blobs`: mounting
/// from one needs pull access to it, in the same token as the push.
fn mount_sources(
    store: &Store,
    client: &Client,
    blobs: &[oci_spec::image::Descriptor],
) -> std::collections::BTreeSet<String> {
    blobs
        .iter()
        .filter_map(|d| Digest::try_from(d).ok())
        .flat_map(|d| blob_mounts::sources(store, client.registry(), &d, client.repository()))
        .collect()
}

async fn push_blob(
    client: &Client,
    store: &Store,
    desc: oci_spec::image::Descriptor,
    progress: &Arc<dyn Progress>,
) -> Result<(BlobOutcome, u64)> {
    let digest = Digest::try_from(&desc)?;
    let size = desc.size();
    let url = client.url(&format!("blobs/{digest}"));
    let what = format!("blob {digest}");
    let head = client
        .idempotent(Method::HEAD, &what, true, |http| http.head(url.clone()))
        .await?;
    if head.status() != StatusCode::NOT_FOUND {
        progress.blob_finished(&digest, size, BlobOutcome::Exists);
        return Ok((BlobOutcome::Exists, size));
    }
    let mut session = None;
    let known_elsewhere =
        blob_mounts::sources(store, client.registry(), &digest, client.repository());
    if let Some(from) = known_elsewhere.first() {
        match try_mount(client, &digest, from).await {
            Mount::Mounted => {
                progress.blob_finished(&digest, size, BlobOutcome::Mounted);
                return Ok((BlobOutcome::Mounted, size));
            }
            Mount::Declined(opened) => session = opened,
        }
    }
    progress.blob_started(&digest, size);
    let blob = Upload {
        path: store.blob_path(&digest),
        digest: &digest,
        size,
        progress,
    };
    if size >= RESUMABLE_MIN {
        upload_resumable(client, session, &blob).await?;
    } else {
        // A failed upload is retried as a whole from a new session: starting one twice is
        // harmless, while the old session may be gone.
        retry::with_retries(client.retry_time(), || {
            upload(client, session.take(), &blob)
        })
        .await?;
    }
    progress.blob_finished(&digest, size, BlobOutcome::Pushed);
    Ok((BlobOutcome::Pushed, size))
}

/// What became of a mount request.
enum Mount {
    Mounted,
    /// The registry opened an upload session instead (at this location, when it said).
    Declined(Option<Url>),
}

/// Asks the registry to link `digest` from repository `from` into this one. Any failure
/// counts as a declined mount: the upload that follows reports real problems.
async fn try_mount(client: &Client, digest: &Digest, from: &str) -> Mount {
    let mut url = client.url("blobs/uploads/");
    url.query_pairs_mut()
        .append_pair("mount", &digest.to_string())
        .append_pair("from", from);
    let what = format!("mount of {digest}");
    let answered = retry::with_retries(client.retry_time(), || async {
        let response = client.exchange(|| client.http().post(url.clone())).await?;
        client.expect_success(response, "POST", &what).await
    })
    .await;
    let Ok(response) = answered else {
        return Mount::Declined(None);
    };
    if response.status() == StatusCode::CREATED {
        return Mount::Mounted;
    }
    let session = header(response.headers(), LOCATION.as_str())
        .and_then(|location| client.resolve(&location).ok());
    Mount::Declined(session)
}

/// A blob on its way up, and who hears about its progress.
struct Upload<'a> {
    path: PathBuf,
    digest: &'a Digest,
    size: u64,
    progress: &'a Arc<dyn Progress>,
}

/// One monolithic upload: PUT `?digest=` with the file as a streaming body of known
/// length, into `session` or a new one from a POST.
async fn upload(client: &Client, session: Option<Url>, blob: &Upload<'_>) -> Attempt<()> {
    let mut url = match session {
        Some(url) => url,
        None => start_session(client, blob.digest).await?,
    };
    url.query_pairs_mut()
        .append_pair("digest", &blob.digest.to_string());
    let response = client
        .exchange_within(&client.deadline(blob.size), || {
            client
                .http()
                .put(url.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, blob.size)
                .body(file_body(blob, 0))
        })
        .await?;
    client
        .expect_success(response, "PUT", &format!("upload of {}", blob.digest))
        .await?;
    Ok(())
}

/// A resumable upload: one streaming PATCH of the whole blob into a session, then a PUT
/// `?digest=` without a body. When the PATCH breaks, the registry says how much it kept
/// and the next PATCH sends the rest; a registry that lost the session gets a new one.
async fn upload_resumable(client: &Client, session: Option<Url>, blob: &Upload<'_>) -> Result<()> {
    let mut session = match session {
        Some(url) => url,
        None => {
            retry::with_retries(client.retry_time(), || start_session(client, blob.digest)).await?
        }
    };
    let mut offset = 0;
    let mut retrying = Retrying::new(client.retry_time());
    while offset < blob.size {
        retrying.start();
        let failure = match patch_from(client, &session, blob, offset).await {
            Ok(next) => {
                session = next;
                break;
            }
            Err(failure) => failure,
        };
        let pause = match failure {
            (e, Some(t)) => retrying.pause(t.retry_after).ok_or(e)?,
            (e, None) => return Err(e),
        };
        tokio::time::sleep(pause).await;
        match upload_status(client, &session).await {
            Some((received, location)) if received <= blob.size => {
                // Tries that moved the upload forward do not count against it.
                if received > offset {
                    retrying.progressed();
                }
                offset = received;
                session = location;
            }
            _ => {
                session =
                    retry::with_retries(client.retry_time(), || start_session(client, blob.digest))
                        .await?;
                offset = 0;
            }
        }
    }
    finish_upload(client, session, blob).await
}

/// PATCHes the blob from byte `offset` to its end into `session`; returns the session's
/// next location. A 416 (the registry holds another amount) is worth asking about.
async fn patch_from(
    client: &Client,
    session: &Url,
    blob: &Upload<'_>,
    offset: u64,
) -> Attempt<Url> {
    let response = client
        .exchange_within(&client.deadline(blob.size - offset), || {
            client
                .http()
                .patch(session.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, blob.size - offset)
                .header(
                    CONTENT_RANGE,
                    format!("{offset}-{}", blob.size.saturating_sub(1)),
                )
                .body(file_body(blob, offset))
        })
        .await?;
    if response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        let err = RegistryError::Blob {
            digest: blob.digest.clone(),
            why: format!("the registry did not accept the upload from byte {offset} on"),
        };
        return Err((err, Some(Transient { retry_after: None })));
    }
    let response = client
        .expect_success(response, "PATCH", &format!("upload of {}", blob.digest))
        .await?;
    Ok(next_location(client, &response).unwrap_or_else(|| session.clone()))
}

/// How many bytes the session holds (its `Range: 0-LAST` header) and where to continue;
/// `None` when the registry cannot say or lost the session.
async fn upload_status(client: &Client, session: &Url) -> Option<(u64, Url)> {
    let response = client
        .exchange(|| client.http().get(session.clone()))
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let received = header(response.headers(), "range").and_then(|r| received_bytes(&r))?;
    let location = next_location(client, &response).unwrap_or_else(|| session.clone());
    Some((received, location))
}

/// Bytes held according to a `Range: 0-LAST` upload status. `0-0` is read as nothing:
/// distribution sends it for an empty session too, and resending one byte is harmless.
fn received_bytes(range: &str) -> Option<u64> {
    let range = range.trim();
    let range = range.strip_prefix("bytes=").unwrap_or(range);
    let (start, last) = range.split_once('-')?;
    let (start, last): (u64, u64) = (start.trim().parse().ok()?, last.trim().parse().ok()?);
    match (start, last) {
        (0, 0) => Some(0),
        (0, last) => last.checked_add(1),
        _ => None,
    }
}

/// The `Location` of an upload answer, resolved against the registry.
fn next_location(client: &Client, response: &reqwest::Response) -> Option<Url> {
    header(response.headers(), LOCATION.as_str()).and_then(|l| client.resolve(&l).ok())
}

/// Closes a session holding the whole blob: PUT `?digest=` with no body. When the answer
/// to an earlier try was lost, the session is gone but the blob is there: a HEAD says so.
async fn finish_upload(client: &Client, session: Url, blob: &Upload<'_>) -> Result<()> {
    let mut url = session;
    url.query_pairs_mut()
        .append_pair("digest", &blob.digest.to_string());
    let what = format!("upload of {}", blob.digest);
    let finished = retry::with_retries(client.retry_time(), || async {
        let response = client
            .exchange(|| {
                client
                    .http()
                    .put(url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, 0)
            })
            .await?;
        client.expect_success(response, "PUT", &what).await
    })
    .await;
    match finished {
        Ok(_) => Ok(()),
        Err(e) => {
            let blob_url = client.url(&format!("blobs/{}", blob.digest));
            let head = client
                .idempotent(Method::HEAD, &what, true, |http| {
                    http.head(blob_url.clone())
                })
                .await;
            match head {
                Ok(r) if r.status().is_success() => Ok(()),
                _ => Err(e),
            }
        }
    }
}

/// POSTs for an upload session and returns where to send the blob.
async fn start_session(client: &Client, digest: &Digest) -> Attempt<Url> {
    let start = client.url("blobs/uploads/");
    let response = client
        .exchange(|| client.http().post(start.clone()))
        .await?;
    let response = client
        .expect_success(response, "POST", &format!("upload of {digest}"))
        .await?;
    let location = header(response.headers(), LOCATION.as_str()).ok_or_else(|| {
        let err = RegistryError::Blob {
            digest: digest.clone(),
            why: "the registry started an upload without a Location".into(),
        };
        (err, None)
    })?;
    client.resolve(&location).map_err(|e| (e, None))
}

/// A request body that streams the file from byte `offset` on, reporting progress as it
/// goes. The file is opened when the body is first polled, so each try reads afresh.
fn file_body(blob: &Upload<'_>, offset: u64) -> reqwest::Body {
    let (path, digest, progress) = (
        blob.path.clone(),
        blob.digest.clone(),
        blob.progress.clone(),
    );
    let mut sent = offset;
    let open = async move {
        use tokio::io::AsyncSeekExt;
        let mut file = tokio::fs::File::open(path).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        Ok::<_, std::io::Error>(file)
    };
    let stream = futures_util::stream::once(open)
        .map_ok(|file| tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_CHUNK))
        .try_flatten()
        .inspect_ok(move |chunk: &bytes::Bytes| {
            sent += chunk.len() as u64;
            progress.blob_progress(&digest, sent);
        });
    reqwest::Body::wrap_stream(stream)
}

async fn put_manifest(
    client: &Client,
    target: &Reference,
    digest: &Digest,
    bytes: Vec<u8>,
    media_type: &str,
) -> Result<()> {
    let tag_or_digest = target.tag.clone().unwrap_or_else(|| digest.to_string());
    let url = client.url(&format!("manifests/{tag_or_digest}"));
    let body = bytes::Bytes::from(bytes);
    let response = client
        .idempotent(Method::PUT, &format!("manifest {target}"), false, |http| {
            http.put(url.clone())
                .header(CONTENT_TYPE, media_type)
                .body(body.clone())
        })
        .await?;
    if let Some(answered) = header(response.headers(), "docker-content-digest") {
        if answered != digest.to_string() {
            return Err(RegistryError::BadManifest {
                reference: target.to_string(),
                why: format!("the registry stored it as {answered}, kiln sent {digest}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::received_bytes;

    #[test]
    fn reads_upload_status_ranges() {
        assert_eq!(received_bytes("0-99"), Some(100));
        assert_eq!(received_bytes(" 0-0 "), Some(0));
        assert_eq!(received_bytes("bytes=0-9"), Some(10));
        assert_eq!(received_bytes("5-9"), None);
        assert_eq!(received_bytes("nonsense"), None);
    }
}
