//! Unpacking a pull's layers while their blobs are still arriving.
//!
//! A pull has to download every blob and unpack every layer; done one after the other,
//! the unpacking (decompress, hash the tar, write the files) waits for the last byte of
//! the last blob. Here one thread unpacks the layers bottom first, each one reading its
//! blob's temp file as the download writes it: the first layer unpacks while it streams,
//! the later ones find most of their bytes already there. Downloads never wait for it.
//!
//! Unpacking and the diff_id check are [`layer::unpack_staged`]'s, the one path every
//! layer dir takes; what is the pull's own is the reader that follows the growing file.
//! Nothing becomes visible here: a layer is unpacked into a staging dir under `tmp/` and
//! is published by the caller only after every blob's digest and every layer's diff_id
//! checked out and the filesystem was synced once. A download that restarts from its
//! first byte (the registry ignored a `Range`) makes the layer unpack again from the new
//! file; a download that fails, or a layer that is refused, stops the other side.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::RegistryError;
use kiln_image::incoming::Described;
pub(super) use kiln_layer::StagedLayer;
use kiln_layer::{self as layer, ApplyLimits, LayerError};
use kiln_store::{Digest, Store};

/// Where each blob of a pull is, shared by the downloads and the unpacking thread.
#[derive(Default)]
pub(super) struct Board {
    blobs: Mutex<HashMap<Digest, Arrival>>,
    changed: Condvar,
    /// Set when unpacking failed: the downloads stop early.
    cancelled: AtomicBool,
    /// Which side failed first ([`FIRST_DOWNLOAD`], [`FIRST_UNPACK`]; 0: neither yet): the
    /// first failure is the cause, the other side's failure only its echo.
    first_failure: AtomicU8,
}

const FIRST_DOWNLOAD: u8 = 1;
const FIRST_UNPACK: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Arrival {
    /// The download has not started.
    Waiting,
    /// `written` bytes are in `path` so far. A restarted download writes a new file.
    Writing { path: PathBuf, written: u64 },
    /// Every byte is in `path` and matches the digest.
    Complete { path: PathBuf },
    /// The download failed for good.
    Failed,
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, HashMap<Digest, Arrival>> {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, digest: &Digest, arrival: Arrival) {
        self.lock().insert(digest.clone(), arrival);
        self.changed.notify_all();
    }

    /// A blob the store already has.
    pub fn present(&self, digest: &Digest, path: PathBuf) {
        self.set(digest, Arrival::Complete { path });
    }

    /// A blob still to download.
    pub fn expect(&self, digest: &Digest) {
        self.set(digest, Arrival::Waiting);
    }

    /// `written` bytes of the blob are in `path` (a new path when the download restarted).
    pub fn writing(&self, digest: &Digest, path: &Path, written: u64) {
        let mut blobs = self.lock();
        match blobs.get_mut(digest) {
            Some(Arrival::Writing {
                path: p,
                written: w,
            }) if p == path => *w = written,
            _ => {
                blobs.insert(
                    digest.clone(),
                    Arrival::Writing {
                        path: path.to_owned(),
                        written,
                    },
                );
            }
        }
        drop(blobs);
        self.changed.notify_all();
    }

    pub fn complete(&self, digest: &Digest, path: &Path) {
        self.set(
            digest,
            Arrival::Complete {
                path: path.to_owned(),
            },
        );
    }

    /// Every blob not yet complete will never be: readers waiting on one give up.
    pub fn fail_incomplete(&self) {
        let mut blobs = self.lock();
        for arrival in blobs.values_mut() {
            if !matches!(arrival, Arrival::Complete { .. }) {
                *arrival = Arrival::Failed;
            }
        }
        drop(blobs);
        self.changed.notify_all();
    }

    /// Unpacking refused a layer: the downloads stop.
    pub fn cancel(&self) {
        self.note_failure(FIRST_UNPACK);
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// A download failed for good.
    pub fn download_failed(&self) {
        self.note_failure(FIRST_DOWNLOAD);
    }

    /// Whether a download failed before unpacking refused anything.
    pub fn download_failed_first(&self) -> bool {
        self.first_failure.load(Ordering::SeqCst) == FIRST_DOWNLOAD
    }

    fn note_failure(&self, side: u8) {
        let _ = self
            .first_failure
            .compare_exchange(0, side, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Waits until the blob has bytes beyond `pos` in `path`, is complete, moved to
    /// another file (restarted) or failed, and returns its state then.
    fn wait_beyond(&self, digest: &Digest, path: Option<&Path>, pos: u64) -> Arrival {
        let blobs = self.lock();
        let ready = |blobs: &mut HashMap<Digest, Arrival>| match blobs.get(digest) {
            None | Some(Arrival::Waiting) => false,
            Some(Arrival::Writing { path: p, written }) => {
                *written > pos || path.is_some_and(|mine| mine != p)
            }
            Some(Arrival::Complete { .. } | Arrival::Failed) => true,
        };
        let blobs = self
            .changed
            .wait_while(blobs, |b| !ready(b))
            .unwrap_or_else(|e| e.into_inner());
        blobs.get(digest).cloned().unwrap_or(Arrival::Failed)
    }

    /// Whether the file a reader followed is no longer the blob's (its download restarted).
    fn moved_from(&self, digest: &Digest, path: &Path) -> bool {
        match self.lock().get(digest) {
            Some(Arrival::Writing { path: p, .. } | Arrival::Complete { path: p }) => p != path,
            _ => false,
        }
    }
}

/// Why a blob stopped being readable part way.
#[derive(Debug, thiserror::Error)]
enum Interrupted {
    #[error("the download restarted")]
    Restarted,
    #[error("the download failed")]
    Failed,
}

/// Reads a blob from its temp file as the download writes it, waiting for bytes that
/// have not arrived yet; the end of the blob is the end of the stream.
struct Follow<'a> {
    board: &'a Board,
    digest: &'a Digest,
    file: Option<(File, PathBuf)>,
    pos: u64,
}

impl Read for Follow<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mine = self.file.as_ref().map(|(_, p)| p.as_path());
        let (path, available, complete) = match self.board.wait_beyond(self.digest, mine, self.pos)
        {
            Arrival::Writing { path, written } => (path, written, false),
            Arrival::Complete { path } => (path, u64::MAX, true),
            Arrival::Waiting | Arrival::Failed => {
                return Err(io::Error::other(Interrupted::Failed))
            }
        };
        match &mut self.file {
            Some((_, p)) if *p != path => return Err(io::Error::other(Interrupted::Restarted)),
            Some(_) => {}
            None => {
                let mut file = File::open(&path)?;
                file.seek(SeekFrom::Start(self.pos))?;
                self.file = Some((file, path));
            }
        }
        let Some((file, _)) = &mut self.file else {
            return Ok(0);
        };
        let room = usize::try_from(available - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(room);
        let n = file.read(&mut buf[..want])?;
        if n == 0 && !complete {
            // The writer said these bytes were written; a short file means it was
            // replaced under us.
            return Err(io::Error::other(Interrupted::Restarted));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// One layer of the image being pulled, bottom first.
#[derive(Debug, Clone)]
pub(super) struct LayerJob {
    /// The blob, as the manifest describes it.
    pub blob: Described,
    /// Its diff_id, as the config gives it.
    pub diff_id: Digest,
}

impl LayerJob {
    pub fn digest(&self) -> &Digest {
        &self.blob.digest
    }

    /// What [`layer::unpack_staged`] needs to know of the stream: its media type and
    /// the diff_id it must have.
    fn layer_type(&self) -> (&str, &Digest) {
        (&self.blob.media_type, &self.diff_id)
    }
}

/// Unpacks every layer the store has no dir for, bottom first, each from its blob as it
/// arrives; asks `flush` to start writing each one to disk once it is unpacked. On
/// failure the downloads are told to stop. A download failure ends it with
/// `Ok(None)`: the caller reports the download's own error.
pub(super) fn unpack_layers(
    store: &Store,
    board: &Board,
    layers: &[LayerJob],
    flush: &Flusher,
    limits: &ApplyLimits,
) -> Result<Option<Vec<StagedLayer>>, RegistryError> {
    let mut staged: Vec<StagedLayer> = Vec::new();
    for (i, job) in layers.iter().enumerate() {
        let done = if store.has_layer(&job.diff_id)
            || staged.iter().any(|s| *s.diff_id() == job.diff_id)
        {
            // The dir is there; a blob the store did not have must still be what the
            // config says it is, or the image would carry other content on (push, save).
            match store.has_blob(job.digest()) {
                true => Ok(()),
                false => follow_layer(board, job, |blob| {
                    layer::check_layer_blob(blob, job.layer_type(), limits)
                }),
            }
        } else {
            let lowers = layer::lower_dirs(store, layers[..i].iter().map(|l| &l.diff_id), &staged);
            follow_layer(board, job, |blob| {
                layer::unpack_staged(store, blob, job.layer_type(), &lowers, limits)
            })
            .map(|layer| {
                staged.push(layer);
                flush.request();
            })
        };
        match done {
            Ok(()) => {}
            Err(Stop::DownloadFailed) => return Ok(None),
            Err(Stop::Refused(e)) => {
                board.cancel();
                return Err(e);
            }
        }
    }
    Ok(Some(staged))
}

/// Why unpacking stopped.
enum Stop {
    DownloadFailed,
    Refused(RegistryError),
}

/// Reads one layer's blob as it arrives with `read` (unpacking it into a fresh staging
/// dir, or checking its diff_id), starting over when its download does.
fn follow_layer<T>(
    board: &Board,
    job: &LayerJob,
    mut read: impl FnMut(&mut dyn Read) -> Result<T, LayerError>,
) -> Result<T, Stop> {
    loop {
        let mut follow = Follow {
            board,
            digest: job.digest(),
            file: None,
            pos: 0,
        };
        let done = read(&mut follow);
        let followed = follow.file.as_ref().map(|(_, p)| p.clone());
        let e = match done {
            Ok(done) => return Ok(done),
            Err(LayerError::Store(e)) => return Err(Stop::Refused(e.into())),
            // The whole stream was read: the download did all it had to.
            Err(e @ LayerError::DiffId { .. }) => e,
            Err(e) => match interruption(board, job.digest(), followed.as_deref()) {
                Some(Interrupted::Restarted) => continue,
                Some(Interrupted::Failed) => return Err(Stop::DownloadFailed),
                None => e,
            },
        };
        return Err(Stop::Refused(RegistryError::Layer {
            layer: Box::new(job.blob.clone()),
            source: e,
        }));
    }
}

/// Whether a failed unpack was the download's doing rather than the layer's.
fn interruption(board: &Board, digest: &Digest, followed: Option<&Path>) -> Option<Interrupted> {
    let state = board.lock().get(digest).cloned();
    match state {
        Some(Arrival::Failed) | None => Some(Interrupted::Failed),
        _ if board.is_cancelled() => Some(Interrupted::Failed),
        _ => followed
            .is_some_and(|p| board.moved_from(digest, p))
            .then_some(Interrupted::Restarted),
    }
}

/// Starts writing to disk what a pull has written so far, in the background, so that
/// the one sync before anything is published finds little left to do.
#[derive(Default)]
pub(super) struct Flusher {
    wanted: Mutex<Wanted>,
    changed: Condvar,
}

#[derive(Default, Clone, Copy)]
struct Wanted {
    flush: bool,
    done: bool,
}

impl Flusher {
    /// Asks for a flush; requests made while one runs are served by one more.
    pub fn request(&self) {
        self.update(|w| w.flush = true);
    }

    /// Ends [`Flusher::run`] (after any flush in progress).
    pub fn finish(&self) {
        self.update(|w| w.done = true);
    }

    fn update(&self, change: impl FnOnce(&mut Wanted)) {
        change(&mut self.wanted.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_all();
    }

    /// Syncs the store's filesystem each time it is asked, until [`Flusher::finish`].
    /// Failures are left to the final sync, which reports them.
    pub fn run(&self, store: &Store) {
        loop {
            let wanted = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
            let mut wanted = self
                .changed
                .wait_while(wanted, |w| !w.flush && !w.done)
                .unwrap_or_else(|e| e.into_inner());
            if wanted.done {
                return;
            }
            wanted.flush = false;
            drop(wanted);
            let _ = store.sync_filesystem();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn digest(c: char) -> Digest {
        Digest::from_hex(&c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn a_reader_follows_a_growing_file_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let board = Board::default();
        let d = digest('a');
        board.expect(&d);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut follow = Follow {
                    board: &board,
                    digest: &d,
                    file: None,
                    pos: 0,
                };
                let mut out = Vec::new();
                follow.read_to_end(&mut out).map(|_| out)
            });
            let mut file = File::create(&path).unwrap();
            for i in 0..50u8 {
                file.write_all(&[i; 1000]).unwrap();
                board.writing(&d, &path, (i as u64 + 1) * 1000);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            board.complete(&d, &path);
            let out = reader.join().unwrap().unwrap();
            assert_eq!(out.len(), 50_000);
            assert!(out.chunks(1000).enumerate().all(|(i, c)| c[0] == i as u8));
        });
    }

    #[test]
    fn a_restarted_or_failed_download_interrupts_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("one"), dir.path().join("two"));
        std::fs::write(&first, b"abcdef").unwrap();
        let board = Board::default();
        let d = digest('b');
        board.writing(&d, &first, 3);
        let mut follow = Follow {
            board: &board,
            digest: &d,
            file: None,
            pos: 0,
        };
        let mut buf = [0; 16];
        assert_eq!(follow.read(&mut buf).unwrap(), 3);
        board.writing(&d, &second, 1);
        let err = follow.read(&mut buf).unwrap_err();
        assert!(err.to_string().contains("restarted"), "{err}");
        assert_eq!(
            interruption(&board, &d, Some(&first)).map(|i| i.to_string()),
            Some("the download restarted".into())
        );
        board.fail_incomplete();
        let mut fresh = Follow {
            board: &board,
            digest: &d,
            file: None,
            pos: 0,
        };
        assert!(fresh.read(&mut buf).is_err());
        assert!(matches!(
            interruption(&board, &d, None),
            Some(Interrupted::Failed)
        ));
    }
}
