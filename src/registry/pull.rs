//! `kiln pull`: manifest (through an index to this machine's platform), then config and
//! layers in parallel, each streamed into the store and verified before it is committed.
//! The caller unpacks the layers and tags the image: until then nothing names it.

use std::io::Write;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Method, StatusCode};

use super::manifest::{self, Document, Kind, Platform};
use super::mounts;
use super::progress::{BlobOutcome, Progress};
use super::retry::{self, Transient};
use super::transport::{error_chain, header, Attempt, Client};
use super::{block_on, RegistryError, Result, Settings, PARALLEL_BLOBS};
use crate::image;
use crate::store::{BlobWriter, Digest, Reference, Store};

/// A pulled image: its manifest is in the store with every blob it names.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The manifest's descriptor, ready for [`Store::set_tag`].
    pub manifest: Descriptor,
    pub digest: Digest,
    /// Blobs fetched, and blobs the store already had.
    pub fetched: usize,
    pub existed: usize,
    pub bytes: u64,
}

/// Pulls `reference` into `store` for `platform` (default: this machine).
pub fn pull(
    store: &Store,
    settings: &Settings,
    reference: &Reference,
    platform: Option<&Platform>,
    progress: Arc<dyn Progress>,
) -> Result<Pulled> {
    let platform = platform.cloned().unwrap_or_else(Platform::host);
    block_on(async {
        let client = Client::new(settings, reference, false)?;
        let doc = resolve_manifest(&client, reference, &platform).await?;
        let manifest: ImageManifest =
            serde_json::from_slice(&doc.bytes).map_err(|e| RegistryError::BadManifest {
                reference: reference.to_string(),
                why: e.to_string(),
            })?;
        let mut blobs = vec![manifest.config().clone()];
        blobs.extend(manifest.layers().iter().cloned());
        // The same layer twice in one image is fetched once.
        let mut seen = std::collections::HashSet::new();
        blobs.retain(|d| seen.insert(d.digest().clone()));
        let outcomes: Vec<(Digest, BlobOutcome, u64)> = futures_util::stream::iter(blobs)
            .map(|desc| fetch_blob(&client, store, desc, progress.as_ref()))
            .buffer_unordered(PARALLEL_BLOBS)
            .try_collect()
            .await?;
        let stored = store.put_blob(&doc.bytes)?;
        debug_assert_eq!(stored, doc.digest);
        let digests: Vec<Digest> = outcomes.iter().map(|(d, _, _)| d.clone()).collect();
        // Only a hint for later pushes: a pull does not fail over it.
        let _ = mounts::remember(store, client.registry(), client.repository(), &digests);
        let fetched: Vec<_> = outcomes
            .iter()
            .filter(|(_, o, _)| *o == BlobOutcome::Pulled)
            .collect();
        Ok(Pulled {
            manifest: image::descriptor(
                MediaType::from(doc.media_type.as_str()),
                &doc.digest,
                doc.bytes.len() as u64,
            ),
            digest: doc.digest,
            fetched: fetched.len(),
            existed: outcomes.len() - fetched.len(),
            bytes: fetched.iter().map(|(_, _, n)| n).sum(),
        })
    })
}

/// The image manifest `reference` names, going through one index level when it names an
/// index (nested indexes are not followed: no registry serves them for images).
async fn resolve_manifest(
    client: &Client,
    reference: &Reference,
    platform: &Platform,
) -> Result<Document> {
    let name = reference.to_string();
    let tag_or_digest = match (&reference.digest, &reference.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_owned(),
    };
    let doc = manifest::fetch(client, &tag_or_digest, reference.digest.as_ref()).await?;
    if doc.kind == Kind::Manifest {
        return Ok(doc);
    }
    let bad = |why: String| RegistryError::BadManifest {
        reference: name.clone(),
        why,
    };
    let index: ImageIndex =
        serde_json::from_slice(&doc.bytes).map_err(|e| bad(format!("index: {e}")))?;
    let desc = manifest::pick_platform(&name, &index, platform)?;
    let digest = image::oci_digest(&desc)?;
    let child = manifest::fetch(client, &digest.to_string(), Some(&digest)).await?;
    let listed = desc.media_type().to_string();
    if child.media_type != listed || child.kind != Kind::Manifest {
        return Err(bad(format!(
            "the index lists {digest} as {listed}, but it is a {}",
            child.media_type
        )));
    }
    if child.bytes.len() as u64 != desc.size() {
        return Err(bad(format!(
            "the index gives {digest} a size of {}, it has {}",
            desc.size(),
            child.bytes.len()
        )));
    }
    Ok(child)
}

/// Fetches one blob unless the store has it. A try that fails part way keeps what it
/// wrote: the next one asks for the rest with `Range`, so a large layer on a flaky link
/// is not downloaded from the start again.
async fn fetch_blob(
    client: &Client,
    store: &Store,
    desc: Descriptor,
    progress: &dyn Progress,
) -> Result<(Digest, BlobOutcome, u64)> {
    let digest = image::oci_digest(&desc)?;
    let size = desc.size();
    if store.has_blob(&digest) {
        progress.blob_finished(&digest, size, BlobOutcome::Exists);
        return Ok((digest, BlobOutcome::Exists, size));
    }
    progress.blob_started(&digest, size);
    let mut blob = store.new_blob()?;
    let mut tries = 0;
    loop {
        tries += 1;
        let before = blob.size();
        match download(client, store, &mut blob, &digest, size, progress).await {
            Ok(()) => break,
            Err((_, Some(t))) if tries < retry::MAX_ATTEMPTS => {
                // Tries that moved the download forward do not count against it.
                if blob.size() > before {
                    tries = 1;
                }
                tokio::time::sleep(retry::delay(tries, t.retry_after)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
    blob.commit(Some(&digest))?;
    progress.blob_finished(&digest, size, BlobOutcome::Pulled);
    Ok((digest, BlobOutcome::Pulled, size))
}

/// One try: stream the blob (or, when `blob` already holds its first bytes, the rest of
/// it) into `blob`, stopping at `size` bytes. The caller commits it, which verifies the
/// digest; an uncommitted blob leaves no file behind.
async fn download(
    client: &Client,
    store: &Store,
    blob: &mut BlobWriter,
    digest: &Digest,
    size: u64,
    progress: &dyn Progress,
) -> Attempt<()> {
    let url = client.url(&format!("blobs/{digest}"));
    let offset = blob.size();
    let response = client
        .exchange(|| {
            let request = client.http().get(url.clone());
            if offset > 0 {
                request.header(RANGE, format!("bytes={offset}-"))
            } else {
                request
            }
        })
        .await?;
    if offset > 0 && response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        return Err(restart(
            store,
            blob,
            digest,
            "the registry refused the range",
        ));
    }
    let mut response = client
        .expect_success(response, Method::GET.as_str(), &format!("blob {digest}"))
        .await?;
    if offset > 0 && !resumes_at(&response, offset) {
        // The registry ignored the range (200) or answered another one: start over,
        // reading this same answer from its first byte.
        *blob = store.new_blob().map_err(fatal)?;
    }
    let too_long = |got| RegistryError::BlobSize {
        digest: digest.clone(),
        expected: size,
        got,
    };
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            let err = RegistryError::Blob {
                digest: digest.clone(),
                why: error_chain(&e),
            };
            (err, Some(Transient { retry_after: None }))
        })?;
        let Some(chunk) = chunk else { break };
        let total = blob.size() + chunk.len() as u64;
        if total > size {
            return Err(fatal(too_long(total)));
        }
        blob.write_all(&chunk).map_err(|e| {
            fatal(RegistryError::Blob {
                digest: digest.clone(),
                why: format!("writing to the store: {e}"),
            })
        })?;
        progress.blob_progress(digest, total);
    }
    if blob.size() != size {
        // A body cut short (the connection closed early): try again from here.
        let err = too_long(blob.size());
        return Err((err, Some(Transient { retry_after: None })));
    }
    Ok(())
}

/// Whether a ranged GET was answered with the bytes from `offset` on (206 and a
/// `Content-Range` starting there).
fn resumes_at(response: &reqwest::Response, offset: u64) -> bool {
    if response.status() != StatusCode::PARTIAL_CONTENT {
        return false;
    }
    header(response.headers(), CONTENT_RANGE.as_str())
        .and_then(|r| content_range_start(&r))
        .is_some_and(|start| start == offset)
}

/// The first byte of a `Content-Range: bytes START-END/LEN` value.
fn content_range_start(value: &str) -> Option<u64> {
    let (start, _) = value.trim().strip_prefix("bytes ")?.split_once('-')?;
    start.trim().parse().ok()
}

/// Drops what was written and makes the next try fetch the whole blob.
fn restart(
    store: &Store,
    blob: &mut BlobWriter,
    digest: &Digest,
    why: &str,
) -> (RegistryError, Option<Transient>) {
    match store.new_blob() {
        Ok(fresh) => {
            *blob = fresh;
            let err = RegistryError::Blob {
                digest: digest.clone(),
                why: why.to_owned(),
            };
            (err, Some(Transient { retry_after: None }))
        }
        Err(e) => fatal(e),
    }
}

fn fatal(e: impl Into<RegistryError>) -> (RegistryError, Option<Transient>) {
    (e.into(), None)
}

#[cfg(test)]
mod tests {
    use super::content_range_start;

    #[test]
    fn reads_the_start_of_a_content_range() {
        assert_eq!(
            content_range_start("bytes 100000-2099999/2100000"),
            Some(100000)
        );
        assert_eq!(content_range_start(" bytes 0-9/10"), Some(0));
        assert_eq!(content_range_start("bytes */10"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
    }
}
