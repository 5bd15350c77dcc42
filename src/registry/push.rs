//! `kiln push`: each blob the registry lacks goes up as one streaming PUT from its file
//! (never held in memory), blobs it has cost one HEAD, and the manifest goes last with
//! the exact bytes of the store, so its digest is the one the user sees locally.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};

use super::manifest::OCI_MANIFEST;
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
        let uploaded: Vec<_> = outcomes
            .iter()
            .filter(|(o, _)| *o == BlobOutcome::Pushed)
            .collect();
        Ok(Pushed {
            digest: manifest_digest.clone(),
            uploaded: uploaded.len(),
            existed: outcomes.len() - uploaded.len(),
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
    progress.blob_started(&digest, size);
    let path = store.blob_path(&digest);
    // A failed upload is retried as a whole from a new session: starting one twice is
    // harmless, while the old session may be gone.
    retry::with_retries(|| upload(client, path.clone(), &digest, size, progress)).await?;
    progress.blob_finished(&digest, size, BlobOutcome::Pushed);
    Ok((BlobOutcome::Pushed, size))
}

/// One monolithic upload: POST for a session, then PUT `?digest=` with the file as a
/// streaming body of known length.
async fn upload(
    client: &Client,
    path: PathBuf,
    digest: &Digest,
    size: u64,
    progress: &Arc<dyn Progress>,
) -> Attempt<()> {
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
    let mut url = client.resolve(&location).map_err(|e| (e, None))?;
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
