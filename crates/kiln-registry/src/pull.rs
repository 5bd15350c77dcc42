//! `kiln pull`: manifest (through an index to this machine's platform), then the config,
//! then the layers in parallel, each streamed into a staged blob and unpacked into a
//! staged layer dir while it arrives ([`unpack`]). Blobs are hashed as they stream and
//! stop at the descriptor's size; layers are checked against the config's diff_ids.
//! Only when everything checked out is the filesystem synced, once, and the blobs and
//! layer dirs renamed into the store. The caller tags the image: until then nothing
//! names it.

use std::io::{Read, Write};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Method, StatusCode};

use super::blob_mounts;
use super::deadline::Deadline;
use super::manifest::{self, Document, Kind, Platform};
use super::retry::{Retrying, Transient};
use super::sink::Sink;
use super::transport::{header, Attempt, Client};
use super::unpack::{unpack_layers, Board, Flusher, LayerJob, StagedLayer};
use super::{runtime, RegistryError, Result, Settings};
use kiln_image::incoming::{self, Described, Found, IncomingError, IndexPath, Role};
use kiln_image::{self as image, ImageConfig};
use kiln_layer::ApplyLimits;
use kiln_progress::{BlobOutcome, Progress};
use kiln_store::{BlobWriter, Bounds, Digest, Reference, Store, StoreError};

/// Layer blobs downloaded at once, by their size. Large ones two at a time: layers unpack
/// one after the other, bottom first, so a download far ahead of the unpacking only takes
/// bandwidth from the one it waits for (4 x 50 MiB on loopback: 2 at a time 374 ms, 4 or
/// 8 at a time 402 ms). Small ones four at a time, where the round trips are the cost (32 x
/// 2 MiB: 220 ms at 2, 197 at 4, 194 at 8; 64 x 256 KiB: 171, 158, 162; 10 x 1 MiB: 58, 55,
/// 57 ms; one hyperfine run each, 2026-12-07).
const PULL_PARALLEL_LARGE: usize = 2;
const PULL_PARALLEL_SMALL: usize = 4;

/// From this size on a blob counts as large for [`pull_parallelism`].
const LARGE_BLOB: u64 = 16 << 20;

/// How many of `blobs` to download at once: four unless most of them are large.
fn pull_parallelism(blobs: &[Described]) -> usize {
    let large = blobs.iter().filter(|b| b.size >= LARGE_BLOB).count();
    match large * 2 > blobs.len() {
        true => PULL_PARALLEL_LARGE,
        false => PULL_PARALLEL_SMALL,
    }
}

/// A pulled image: its manifest is in the store with every blob it names, and every
/// layer has its layer dir.
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

/// One blob of the image: fetched into staging, or already in the store.
struct Fetched {
    digest: Digest,
    size: u64,
    outcome: BlobOutcome,
    staged: Option<BlobWriter>,
}

/// Pulls `reference` into `store` for `platform` (default: this machine), unpacking every
/// layer the store has no layer dir for.
pub fn pull(
    store: &Store,
    settings: &Settings,
    reference: &Reference,
    platform: Option<&Platform>,
    progress: Arc<dyn Progress>,
) -> Result<Pulled> {
    let platform = platform.cloned().unwrap_or_else(Platform::host);
    let bounds = &settings.config.bounds;
    let refused = |source| RegistryError::incoming(reference.to_string(), source);
    let runtime = runtime()?;
    let _context = runtime.enter();
    let client = Client::new(settings, reference, false)?;
    let doc = runtime.block_on(resolve_manifest(&client, reference, &platform, bounds))?;
    let manifest: ImageManifest =
        serde_json::from_slice(&doc.bytes).map_err(|e| bad_manifest(reference, e.to_string()))?;
    incoming::check_manifest(&manifest, doc.bytes.len() as u64, bounds).map_err(refused)?;
    let config_blob = incoming::config_of(&manifest).map_err(refused)?;
    incoming::check_document(
        Role::Config,
        &config_blob.digest.to_string(),
        config_blob.size,
        bounds,
    )
    .map_err(refused)?;
    let board = Board::default();
    let pulling = Pulling {
        runtime: &runtime,
        client: &client,
        store,
        board: &board,
        progress: progress.as_ref(),
        limits: ApplyLimits::from(bounds),
        reference: reference.to_string(),
    };
    let config = runtime.block_on(pulling.fetch_blob(config_blob))?;
    let config_doc = read_config(store, &config, bounds.document_size)?;
    let jobs = layer_jobs(&manifest, &config_doc).map_err(refused)?;
    let (layers, staged_layers) = pulling.fetch_and_unpack(&jobs)?;
    let manifest_blob = stage_document(store, &doc.bytes, &doc.digest)?;
    let mut all = vec![config];
    all.extend(layers);
    let staged_blobs = all.iter_mut().filter_map(|f| f.staged.take()).collect();
    kiln_layer::publish_staged(store, staged_blobs, &staged_layers, manifest_blob)?;
    let digests: Vec<Digest> = all.iter().map(|f| f.digest.clone()).collect();
    // Only a hint for later pushes: a pull does not fail over it.
    let _ = blob_mounts::remember(store, client.registry(), client.repository(), &digests);
    Ok(summary(doc, &all))
}

/// Fetches and unpacks the layers of `stack` (bottom first, each with its diff_id) that the
/// store lacks, from the repository `reference` names: the layers a build cache's records
/// lend a build. Layers the store has are not fetched but serve as the lower layers of
/// those above them, as in a pull. Returns how many blobs were fetched.
pub(super) fn pull_layer_stack(
    store: &Store,
    settings: &Settings,
    reference: &Reference,
    stack: &[LayerJob],
    progress: Arc<dyn Progress>,
) -> Result<usize> {
    let runtime = runtime()?;
    let _context = runtime.enter();
    let client = Client::new(settings, reference, false)?;
    let board = Board::default();
    let pulling = Pulling {
        runtime: &runtime,
        client: &client,
        store,
        board: &board,
        progress: progress.as_ref(),
        limits: ApplyLimits::from(&settings.config.bounds),
        reference: reference.to_string(),
    };
    let (mut fetched, staged_layers) = pulling.fetch_and_unpack(stack)?;
    // Only what came from this repository: the layers below may be from anywhere.
    let pulled: Vec<Digest> = fetched
        .iter()
        .filter(|f| f.outcome == BlobOutcome::Pulled)
        .map(|f| f.digest.clone())
        .collect();
    let staged_blobs = fetched.iter_mut().filter_map(|f| f.staged.take()).collect();
    kiln_layer::publish_staged(store, staged_blobs, &staged_layers, None)?;
    let _ = blob_mounts::remember(store, client.registry(), client.repository(), &pulled);
    Ok(pulled.len())
}

fn bad_manifest(reference: &Reference, why: String) -> RegistryError {
    RegistryError::BadManifest {
        reference: reference.to_string(),
        why,
    }
}

/// What the blobs of one pull share.
struct Pulling<'a> {
    runtime: &'a tokio::runtime::Runtime,
    client: &'a Client,
    store: &'a Store,
    board: &'a Board,
    progress: &'a dyn Progress,
    /// The bounds of the layers ([`Settings`]' `image_limits`).
    limits: ApplyLimits,
    /// The image, as errors name it.
    reference: String,
}

impl Pulling<'_> {
    fn refused(&self, source: IncomingError) -> RegistryError {
        RegistryError::incoming(self.reference.clone(), source)
    }

    async fn fetch_blob(&self, blob: Described) -> Result<Fetched> {
        fetch_blob(self, blob).await
    }

    /// Downloads the layer blobs (a few at a time) while a thread unpacks the layers in
    /// order and another starts writing the results to disk.
    fn fetch_and_unpack(&self, jobs: &[LayerJob]) -> Result<(Vec<Fetched>, Vec<StagedLayer>)> {
        // The same layer twice in one image is fetched once.
        let mut seen = std::collections::HashSet::new();
        let blobs: Vec<Described> = jobs
            .iter()
            .filter(|j| seen.insert(j.digest().clone()))
            .map(|j| j.blob.clone())
            .collect();
        for job in jobs {
            self.board.expect(job.digest());
        }
        let flusher = Flusher::default();
        let (fetched, unpacked) = std::thread::scope(|s| {
            let _end = EndOfPull {
                board: self.board,
                flusher: &flusher,
            };
            s.spawn(|| flusher.run(self.store));
            let unpacking =
                s.spawn(|| unpack_layers(self.store, self.board, jobs, &flusher, &self.limits));
            let fetched = self.fetch_all(blobs);
            if fetched.is_err() {
                self.board.fail_incomplete();
            }
            let unpacked = unpacking
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (fetched, unpacked)
        });
        // Whichever failed first explains the other: a refused layer stops the downloads,
        // and a failed download ends the unpacking, which may then fail to read a blob
        // whose staging went with the download's.
        let (fetched, staged) = match (fetched, unpacked) {
            (Err(download), Err(unpack)) if self.board.download_failed_first() => {
                tracing::debug!(error = %unpack, "unpacking stopped by a failed download");
                return Err(download);
            }
            (fetched, unpacked) => (fetched, unpacked),
        };
        let staged = staged?;
        let fetched = fetched?;
        // Unpacking stops early only when a download failed, which was reported above.
        let staged = staged.ok_or_else(|| RegistryError::Unpack {
            digest: jobs
                .first()
                .map(|j| j.digest().clone())
                .unwrap_or_else(|| Digest::of_bytes(b"")),
            why: "unpacking stopped although every download succeeded".into(),
        })?;
        Ok((fetched, staged))
    }

    fn fetch_all(&self, blobs: Vec<Described>) -> Result<Vec<Fetched>> {
        let parallel = pull_parallelism(&blobs);
        self.runtime.block_on(
            futures_util::stream::iter(blobs)
                .map(|blob| async {
                    let fetched = self.fetch_blob(blob).await;
                    if fetched.is_err() {
                        // Before the other downloads' results (and staging) are dropped.
                        self.board.download_failed();
                    }
                    fetched
                })
                .buffer_unordered(parallel)
                .try_collect(),
        )
    }
}

/// The pull as the caller reports it.
fn summary(doc: Document, all: &[Fetched]) -> Pulled {
    let pulled = || all.iter().filter(|f| f.outcome == BlobOutcome::Pulled);
    Pulled {
        manifest: kiln_store::oci::descriptor(
            MediaType::from(doc.media_type.as_str()),
            &doc.digest,
            doc.bytes.len() as u64,
        ),
        digest: doc.digest,
        fetched: pulled().count(),
        existed: all.len() - pulled().count(),
        bytes: pulled().map(|f| f.size).sum(),
    }
}

/// However the downloads end (even by a panic), the unpacking thread stops waiting for
/// blobs and the flusher thread ends, so the thread scope can close.
struct EndOfPull<'a> {
    board: &'a Board,
    flusher: &'a Flusher,
}

impl Drop for EndOfPull<'_> {
    fn drop(&mut self) {
        self.board.fail_incomplete();
        self.flusher.finish();
    }
}

/// The image config, from staging or the store (at most `limit` bytes, which its
/// descriptor's size was checked against).
fn read_config(store: &Store, config: &Fetched, limit: u64) -> Result<ImageConfig> {
    let path = match &config.staged {
        Some(staged) => staged.temp_path().to_owned(),
        None => store.blob_path(&config.digest),
    };
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|e| StoreError::Io {
            what: "read",
            path: path.clone(),
            source: e,
        })?;
    if bytes.len() as u64 > limit {
        return Err(StoreError::TooLarge(config.digest.clone(), limit).into());
    }
    serde_json::from_slice(&bytes).map_err(|source| {
        RegistryError::Image(image::ImageError::BadDocument {
            what: "image config",
            digest: config.digest.clone(),
            source,
        })
    })
}

/// The layers to unpack, bottom first, each with the diff_id the config gives it.
pub(super) fn layer_jobs(
    manifest: &ImageManifest,
    config: &ImageConfig,
) -> std::result::Result<Vec<LayerJob>, IncomingError> {
    incoming::check_diff_ids(manifest, config.rootfs.diff_ids.len())?;
    Ok(incoming::layers_of(manifest)?
        .into_iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(blob, diff_id)| LayerJob {
            blob,
            diff_id: diff_id.clone(),
        })
        .collect())
}

/// The manifest as a staged blob, unless the store has it.
fn stage_document(store: &Store, bytes: &[u8], digest: &Digest) -> Result<Option<BlobWriter>> {
    if store.has_blob(digest) {
        return Ok(None);
    }
    let mut blob = store.new_blob()?;
    blob.write_all(bytes)
        .map_err(StoreError::io("write", &store.tmp_dir()))?;
    blob.verify(digest)?;
    Ok(Some(blob))
}

/// The image manifest `reference` names, following indexes (each to the entry for
/// `platform`) at most [`Bounds::index_depth`] deep, none twice.
async fn resolve_manifest(
    client: &Client,
    reference: &Reference,
    platform: &Platform,
    bounds: &Bounds,
) -> Result<Document> {
    let name = reference.to_string();
    let tag_or_digest = match (&reference.digest, &reference.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_owned(),
    };
    let bad = |why: String| RegistryError::BadManifest {
        reference: name.clone(),
        why,
    };
    let mut doc =
        manifest::fetch(client, &tag_or_digest, reference.digest.as_ref(), bounds).await?;
    let mut followed = IndexPath::default();
    while doc.kind == Kind::Index {
        followed
            .enter(&doc.digest, bounds)
            .map_err(|source| RegistryError::incoming(name.clone(), source))?;
        let index: ImageIndex =
            serde_json::from_slice(&doc.bytes).map_err(|e| bad(format!("index: {e}")))?;
        let desc = manifest::pick_platform(&name, &index, platform)?;
        let digest = Digest::try_from(&desc)?;
        let child = manifest::fetch(client, &digest.to_string(), Some(&digest), bounds).await?;
        let listed = desc.media_type().to_string();
        if child.media_type != listed {
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
        doc = child;
    }
    Ok(doc)
}

/// Fetches one blob into staging unless the store has it, telling `board` how far it got
/// so its layer can unpack as it arrives. A try that fails part way keeps what it wrote:
/// the next one asks for the rest with `Range`, so a large layer on a flaky link is not
/// downloaded from the start again.
async fn fetch_blob(pulling: &Pulling<'_>, blob: Described) -> Result<Fetched> {
    let Pulling {
        client,
        store,
        board,
        progress,
        ..
    } = *pulling;
    let digest = blob.digest.clone();
    let size = blob.size;
    if store.has_blob(&digest) {
        // A descriptor that lies about a blob the store has is refused all the same.
        let stored = store.blob_size(&digest)?;
        if stored != size {
            return Err(pulling.refused(IncomingError::SizeMismatch {
                blob,
                source_name: "the blob in kiln's store",
                found: Found::Exactly(stored),
            }));
        }
        board.present(&digest, store.blob_path(&digest));
        progress.blob_finished(&digest, size, BlobOutcome::Exists);
        return Ok(Fetched {
            digest,
            size,
            outcome: BlobOutcome::Exists,
            staged: None,
        });
    }
    progress.blob_started(&digest, size);
    let mut sink = Sink::new(store.new_blob()?);
    board.writing(&digest, sink.path(), 0);
    // One deadline for the whole blob, however many tries and resumes it takes.
    let deadline = client.deadline(size);
    let mut retrying = Retrying::new(client.retry_time());
    loop {
        retrying.start();
        let before = sink.received();
        let target = Target {
            blob: &blob,
            progress,
            board,
        };
        let result = download(client, store, &mut sink, &target, &deadline).await;
        // What arrived stays, for the next try to resume from.
        let settled = sink.settle().await;
        board.writing(&digest, sink.path(), sink.written());
        match (result, settled) {
            (Ok(()), Ok(())) => break,
            (_, Err(e)) => return Err(write_error(&digest, &e)),
            (Err((e, Some(t))), Ok(())) => {
                // Tries that moved the download forward do not count against it.
                if sink.received() > before {
                    retrying.progressed();
                }
                let Some(pause) = retrying.pause(t.retry_after) else {
                    return Err(e);
                };
                tracing::debug!(error = %e, ?pause, "blob download failed; retrying");
                tokio::time::sleep(pause).await;
            }
            (Err((e, None)), Ok(())) => return Err(e),
        }
    }
    let mut staged = sink.finish().await.map_err(|e| write_error(&digest, &e))?;
    staged.verify(&digest).map_err(|e| match e {
        StoreError::DigestMismatch { actual, .. } => {
            pulling.refused(IncomingError::DigestMismatch { blob, actual })
        }
        e => e.into(),
    })?;
    board.complete(&digest, staged.temp_path());
    progress.blob_finished(&digest, size, BlobOutcome::Pulled);
    Ok(Fetched {
        digest,
        size,
        outcome: BlobOutcome::Pulled,
        staged: Some(staged),
    })
}

/// The blob a download fetches, and who hears about its progress.
struct Target<'a> {
    blob: &'a Described,
    progress: &'a dyn Progress,
    board: &'a Board,
}

fn write_error(digest: &Digest, e: &std::io::Error) -> RegistryError {
    RegistryError::Blob {
        digest: digest.clone(),
        why: format!("writing to the store: {e}"),
    }
}

/// One try: stream the blob (or, when `sink` already holds its first bytes, the rest of
/// it) into `sink`, stopping at `size` bytes. The caller settles the sink and verifies the
/// digest; a blob never staged leaves no file behind.
async fn download(
    client: &Client,
    store: &Store,
    sink: &mut Sink,
    target: &Target<'_>,
    deadline: &Deadline,
) -> Attempt<()> {
    let Target {
        blob,
        progress,
        board,
    } = *target;
    let (digest, size) = (&blob.digest, blob.size);
    let url = client.url(&format!("blobs/{digest}"));
    let offset = sink.received();
    let response = client
        .exchange_within(deadline, || {
            let request = client.http().get(url.clone());
            if offset > 0 {
                request.header(RANGE, format!("bytes={offset}-"))
            } else {
                request
            }
        })
        .await?;
    if offset > 0 && response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        sink.restart(store.new_blob().map_err(fatal)?).await;
        board.writing(digest, sink.path(), 0);
        let err = RegistryError::Blob {
            digest: digest.clone(),
            why: "the registry refused the range".into(),
        };
        return Err((err, Some(Transient { retry_after: None })));
    }
    let mut response = client
        .expect_success(response, Method::GET.as_str(), &format!("blob {digest}"))
        .await?;
    if offset > 0 && !resumes_at(&response, offset) {
        // The registry ignored the range (200) or answered another one: start over,
        // reading this same answer from its first byte.
        sink.restart(store.new_blob().map_err(fatal)?).await;
        board.writing(digest, sink.path(), 0);
    }
    let mismatch = |found| {
        let name = format!("{}/{}", client.registry(), client.repository());
        RegistryError::incoming(
            name,
            IncomingError::SizeMismatch {
                blob: blob.clone(),
                source_name: "the registry",
                found,
            },
        )
    };
    // What the registry announced: how large the blob it sends is, when that turns out to
    // be more than the descriptor's size (a wrong announcement alone is only a cut body).
    let announced = response.content_length().filter(|_| offset == 0);
    loop {
        if board.is_cancelled() {
            let err = RegistryError::Blob {
                digest: digest.clone(),
                why: "stopped: another layer of the image was refused".into(),
            };
            return Err(fatal(err));
        }
        let chunk = deadline
            .chunk(&mut response, sink.received())
            .await
            .map_err(|e| match e {
                RegistryError::Connect { why, .. } => {
                    let err = RegistryError::Blob {
                        digest: digest.clone(),
                        why,
                    };
                    (err, Some(Transient { retry_after: None }))
                }
                e => {
                    let transient = e.is_transient();
                    (e, transient.then_some(Transient { retry_after: None }))
                }
            })?;
        let Some(chunk) = chunk else { break };
        let total = sink.received() + chunk.len() as u64;
        if total > size {
            let found = match announced {
                Some(n) if n >= total => Found::Exactly(n),
                _ => Found::AtLeast(total),
            };
            return Err(fatal(mismatch(found)));
        }
        let progressed = sink
            .push(chunk)
            .await
            .map_err(|e| fatal(write_error(digest, &e)))?;
        if progressed {
            board.writing(digest, sink.path(), sink.written());
        }
        progress.blob_progress(digest, total);
    }
    if sink.received() != size {
        // A body cut short (the connection closed early): try again from here.
        let err = mismatch(Found::Only(sink.received()));
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

fn fatal(e: impl Into<RegistryError>) -> (RegistryError, Option<Transient>) {
    (e.into(), None)
}

#[cfg(test)]
mod tests {
    use super::{content_range_start, pull_parallelism, Described, Digest, Role};

    #[test]
    fn small_layers_come_four_at_a_time_large_ones_two() {
        let blob = |size: u64| Described {
            role: Role::Layer { n: 1, of: 1 },
            digest: Digest::of_bytes(&size.to_ne_bytes()),
            size,
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
        };
        let small = |n| (0..n).map(|_| blob(1 << 20)).collect::<Vec<_>>();
        let large = |n| (0..n).map(|_| blob(50 << 20)).collect::<Vec<_>>();
        assert_eq!(pull_parallelism(&small(10)), 4);
        assert_eq!(pull_parallelism(&large(4)), 2);
        assert_eq!(pull_parallelism(&[large(1), small(5)].concat()), 4);
        assert_eq!(pull_parallelism(&[large(3), small(1)].concat()), 2);
        assert_eq!(pull_parallelism(&[]), 4);
    }

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
