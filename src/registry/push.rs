//! `kiln push`: each blob the registry lacks goes up as one streaming PUT from its file
//! (never held in memory), blobs it has cost one HEAD, and the manifest goes last with
//! the exact bytes of the store, so its digest is the one the user sees locally. A blob
//! kiln has seen in another repository of the same registry is first offered as a
//! cross-repository mount, which moves no data; a declined mount falls back to an upload
//! in the session the registry opened instead.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};

use super::manifest::OCI_MANIFEST;
use super::mounts;
use super::progress::{BlobOutcome, Progress};
use super::retry;
use super::transport::{header, Attempt, Client};
use super::{block_on, RegistryError, Result, Settings, PARALLEL_BLOBS};
use crate::image::{self, Image};
use crate::store::{Digest, Reference, Store, MAX_DOCUMENT};

/// Read size for upload bodies: large enough for few syscalls, small in memory.
const UPLOAD_CHUNK: usize = 256 << 10;

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
        .unwrap_or_else(|| OCI_MANIFEST.to_owned());
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
    let mut seen = std::collections::HashSet::new();
    blobs.retain(|d| seen.insert(d.digest().clone()));
    block_on(async {
        let client = Client::new(settings, target, true)?;
        let digests = blobs
            .iter()
            .map(image::oci_digest)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let outcomes: Vec<(BlobOutcome, u64)> = futures_util::stream::iter(blobs)
            .map(|desc| push_blob(&client, store, desc, &progress))
            .buffer_unordered(PARALLEL_BLOBS)
            .try_collect()
            .await?;
        put_manifest(
            &client,
            target,
            manifest_digest,
            manifest_bytes,
            &media_type,
        )
        .await?;
        // Only a hint for later pushes: a push does not fail over it.
        let _ = mounts::remember(store, client.registry(), client.repository(), &digests);
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

async fn push_blob(
    client: &Client,
    store: &Store,
    desc: oci_spec::image::Descriptor,
    progress: &Arc<dyn Progress>,
) -> Result<(BlobOutcome, u64)> {
    let digest = image::oci_digest(&desc)?;
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
    let known_elsewhere = mounts::sources(store, client.registry(), &digest, client.repository());
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
    let path = store.blob_path(&digest);
    // A failed upload is retried as a whole from a new session: starting one twice is
    // harmless, while the old session may be gone.
    retry::with_retries(|| {
        upload(
            client,
            session.take(),
            path.clone(),
            &digest,
            size,
            progress,
        )
    })
    .await?;
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
    let answered = retry::with_retries(|| async {
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

/// One monolithic upload: PUT `?digest=` with the file as a streaming body of known
/// length, into `session` or a new one from a POST.
async fn upload(
    client: &Client,
    session: Option<Url>,
    path: PathBuf,
    digest: &Digest,
    size: u64,
    progress: &Arc<dyn Progress>,
) -> Attempt<()> {
    let mut url = match session {
        Some(url) => url,
        None => start_session(client, digest).await?,
    };
    url.query_pairs_mut()
        .append_pair("digest", &digest.to_string());
    let response = client
        .exchange(|| {
            client
                .http()
                .put(url.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(file_body(path.clone(), digest.clone(), progress.clone()))
        })
        .await?;
    client
        .expect_success(response, "PUT", &format!("upload of {digest}"))
        .await?;
    Ok(())
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

/// A request body that streams the file, reporting progress as it goes. The file is
/// opened when the body is first polled, so each try reads from the start.
fn file_body(path: PathBuf, digest: Digest, progress: Arc<dyn Progress>) -> reqwest::Body {
    let mut sent = 0u64;
    let stream = futures_util::stream::once(tokio::fs::File::open(path))
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
