//! Compression and hashing of layer streams.
//!
//! A layer has two digests: the diff_id (sha256 of the tar) and the blob digest (sha256 of
//! the compressed bytes). Both are computed while the data streams, in one pass, by small
//! reader/writer adapters, so nothing is buffered whole and no file is read twice.
//!
//! zstd output must not depend on the machine: with one worker or more, zstd's
//! multi-threaded mode cuts the input into jobs whose size depends only on the level and
//! window, never on the worker count (a test checks 1 and 2 workers give the same bytes).
//! gzip is written with a fixed header (no mtime, no file name).

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::path::Path;
use std::rc::Rc;

use sha2::{Digest as _, Sha256};

use super::error::{LayerError, Result};
use super::{write_tar, Compression, LayerDigests, TarOptions};
use kiln_store::oci::{
    MEDIA_TYPE_DOCKER_FOREIGN_TAR_GZIP, MEDIA_TYPE_DOCKER_TAR_GZIP, MEDIA_TYPE_TAR,
    MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_NONDISTRIBUTABLE, MEDIA_TYPE_TAR_NONDISTRIBUTABLE_GZIP,
    MEDIA_TYPE_TAR_NONDISTRIBUTABLE_ZSTD, MEDIA_TYPE_TAR_ZSTD,
};
use kiln_store::{Bound, Digest};

/// zstd level for layers (as `zstd -3`).
const ZSTD_LEVEL: i32 = 3;
/// gzip level for layers (as `gzip -6`).
const GZIP_LEVEL: u32 = 6;
/// Largest zstd window accepted when decompressing (128 MiB, zstd's own default limit).
pub(crate) const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// Upper bound on compression threads.
const MAX_ZSTD_WORKERS: usize = 4;

/// Walks `dir`, writes its compressed layer tar to `out`, and returns both digests.
pub fn write_layer(
    dir: &Path,
    out: &mut dyn Write,
    compression: Compression,
    opts: &TarOptions,
) -> Result<LayerDigests> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_ZSTD_WORKERS);
    write_layer_with(dir, out, compression, opts, workers as u32)
}

/// [`write_layer`] with an explicit number of zstd workers (≥ 1).
pub(crate) fn write_layer_with(
    dir: &Path,
    out: &mut dyn Write,
    compression: Compression,
    opts: &TarOptions,
    workers: u32,
) -> Result<LayerDigests> {
    let finish_err = LayerError::io("compress", b"the layer");
    let mut blob = HashWriter::new(out);
    let diff_id = match compression {
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(&mut blob, ZSTD_LEVEL)
                .map_err(LayerError::io("start zstd for", b"the layer"))?;
            enc.multithread(workers.max(1))
                .map_err(LayerError::io("start zstd for", b"the layer"))?;
            enc.include_checksum(true)
                .map_err(LayerError::io("start zstd for", b"the layer"))?;
            let mut tar = HashWriter::new(enc);
            write_tar(dir, &mut tar, opts)?;
            let (enc, diff_id) = tar.finish();
            enc.finish().map_err(finish_err)?;
            diff_id
        }
        Compression::Gzip => {
            let enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut blob, flate2::Compression::new(GZIP_LEVEL));
            let mut tar = HashWriter::new(enc);
            write_tar(dir, &mut tar, opts)?;
            let (enc, diff_id) = tar.finish();
            enc.finish().map_err(finish_err)?;
            diff_id
        }
    };
    let size = blob.count;
    let (_, digest) = blob.finish();
    tracing::debug!(
        dir = %dir.display(),
        %digest,
        %diff_id,
        size,
        compression = compression.media_type(),
        "layer written"
    );
    Ok(LayerDigests {
        digest,
        diff_id,
        size,
        compression,
    })
}

/// A writer that hashes and counts what passes through it.
pub(crate) struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn finish(self) -> (W, Digest) {
        (self.inner, Digest::from_hasher(self.hasher))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How a layer stream is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Plain,
    Gzip,
    Zstd,
    /// Unknown: decide from the first bytes.
    Sniff,
}

/// The layer media types kiln unpacks (OCI, OCI non-distributable, Docker).
pub(crate) fn stream_kind(media_type: &str) -> Result<StreamKind> {
    Ok(match media_type {
        "" => StreamKind::Sniff,
        MEDIA_TYPE_TAR | MEDIA_TYPE_TAR_NONDISTRIBUTABLE => StreamKind::Plain,
        MEDIA_TYPE_TAR_GZIP
        | MEDIA_TYPE_TAR_NONDISTRIBUTABLE_GZIP
        | MEDIA_TYPE_DOCKER_TAR_GZIP
        | MEDIA_TYPE_DOCKER_FOREIGN_TAR_GZIP => StreamKind::Gzip,
        MEDIA_TYPE_TAR_ZSTD | MEDIA_TYPE_TAR_NONDISTRIBUTABLE_ZSTD => StreamKind::Zstd,
        other => return Err(LayerError::MediaType(other.to_owned())),
    })
}

/// The compression of a stream from its first bytes (gzip `1f 8b`, zstd `28 b5 2f fd`);
/// `None` means an uncompressed tar.
pub fn detect_compression(first_bytes: &[u8]) -> Option<Compression> {
    if first_bytes.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if first_bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else {
        None
    }
}

/// `source` decompressed as its first bytes say (gzip, zstd with the window limit layers
/// get, or nothing): for streams that come without a media type, such as the image
/// archives `kiln load` reads (`docker load` takes a `.tar.gz` as well).
pub fn decompressed<'a>(source: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut source: Box<dyn Read + 'a> = Box::new(source);
    let prefix = read_prefix(&mut source, 4)?;
    let kind = detect_compression(&prefix);
    let source = Box::new(io::Cursor::new(prefix).chain(source));
    Ok(match kind {
        Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(source)),
        Some(Compression::Zstd) => {
            let mut dec = zstd::stream::read::Decoder::new(source)?;
            dec.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(dec)
        }
        None => source,
    })
}

/// Counts the compressed bytes read, for the compression-ratio bound.
struct CountingReader<'a> {
    inner: &'a mut dyn Read,
    count: Rc<Cell<u64>>,
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Reads up to `n` bytes (fewer only at end of stream).
fn read_prefix(r: &mut dyn Read, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A bound on the uncompressed stream was hit (turned into [`LayerError::Limit`]).
#[derive(Debug, thiserror::Error)]
#[error("limit of {limit} ({}) exceeded", bound.key())]
pub(crate) struct LimitHit {
    pub bound: Bound,
    pub limit: u64,
}

/// Maps a read error of the layer stream, recovering a [`LimitHit`].
pub(crate) fn stream_error(e: io::Error) -> LayerError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<LimitHit>())
    {
        Some(hit) => LayerError::Limit {
            bound: hit.bound,
            limit: hit.limit,
        },
        None => LayerError::Stream(e),
    }
}

/// The uncompressed layer stream: decompressed, hashed (diff_id) and bounded.
pub(crate) struct LayerStream<'a> {
    inner: Box<dyn Read + 'a>,
    hasher: Sha256,
    total: u64,
    compressed: Rc<Cell<u64>>,
    max_bytes: u64,
    max_ratio: u64,
    ratio_grace: u64,
}

impl<'a> LayerStream<'a> {
    /// Opens `blob` for reading as an uncompressed tar, according to `media_type`.
    pub fn open(
        blob: &'a mut dyn Read,
        media_type: &str,
        limits: &super::ApplyLimits,
    ) -> Result<Self> {
        let compressed = Rc::new(Cell::new(0));
        let counted = CountingReader {
            inner: blob,
            count: Rc::clone(&compressed),
        };
        let mut kind = stream_kind(media_type)?;
        let mut source: Box<dyn Read + 'a> = Box::new(counted);
        if kind == StreamKind::Sniff {
            let prefix = read_prefix(&mut source, 4).map_err(LayerError::Stream)?;
            kind = match detect_compression(&prefix) {
                Some(Compression::Gzip) => StreamKind::Gzip,
                Some(Compression::Zstd) => StreamKind::Zstd,
                None => StreamKind::Plain,
            };
            source = Box::new(io::Cursor::new(prefix).chain(source));
        }
        let inner: Box<dyn Read + 'a> = match kind {
            StreamKind::Gzip => Box::new(flate2::read::MultiGzDecoder::new(source)),
            StreamKind::Zstd => {
                let mut dec =
                    zstd::stream::read::Decoder::new(source).map_err(LayerError::Stream)?;
                dec.window_log_max(ZSTD_WINDOW_LOG_MAX)
                    .map_err(LayerError::Stream)?;
                Box::new(dec)
            }
            StreamKind::Plain | StreamKind::Sniff => source,
        };
        Ok(LayerStream {
            inner,
            hasher: Sha256::new(),
            total: 0,
            compressed,
            max_bytes: limits.max_bytes,
            max_ratio: limits.max_ratio,
            ratio_grace: limits.ratio_grace,
        })
    }

    /// Reads the stream to its end (bytes after the tar's end still count for the diff_id)
    /// and returns the diff_id.
    pub fn finish(mut self) -> Result<Digest> {
        io::copy(&mut self, &mut io::sink()).map_err(stream_error)?;
        Ok(Digest::from_hasher(self.hasher))
    }

    fn check_bounds(&self) -> io::Result<()> {
        if self.total > self.max_bytes {
            return Err(io::Error::other(LimitHit {
                bound: Bound::LayerSize,
                limit: self.max_bytes,
            }));
        }
        let compressed = self.compressed.get().max(1);
        if self.max_ratio > 0
            && self.total > self.ratio_grace
            && self.total / compressed > self.max_ratio
        {
            let hit = LimitHit {
                bound: Bound::CompressionRatio,
                limit: self.max_ratio,
            };
            return Err(io::Error::other(hit));
        }
        Ok(())
    }
}

impl Read for LayerStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.total += n as u64;
        self.check_bounds()?;
        Ok(n)
    }
}

/// Writes the layer `blob` (of `media_type`) to `out` gzip-compressed, as Docker archives
/// want it (Docker before 23 reads no zstd): a gzip blob is copied as it is, any other is
/// decompressed and compressed again, streaming. For blobs of kiln's own store, which were
/// verified when they came in.
pub fn copy_as_gzip(blob: &mut dyn Read, media_type: &str, out: &mut dyn Write) -> Result<()> {
    let kind = match stream_kind(media_type)? {
        StreamKind::Sniff => {
            let prefix = read_prefix(blob, 4).map_err(LayerError::Stream)?;
            let kind = match detect_compression(&prefix) {
                Some(Compression::Gzip) => StreamKind::Gzip,
                Some(Compression::Zstd) => StreamKind::Zstd,
                None => StreamKind::Plain,
            };
            return copy_kind_as_gzip(&mut io::Cursor::new(prefix).chain(blob), kind, out);
        }
        kind => kind,
    };
    copy_kind_as_gzip(blob, kind, out)
}

fn copy_kind_as_gzip(blob: &mut dyn Read, kind: StreamKind, out: &mut dyn Write) -> Result<()> {
    let copied = match kind {
        StreamKind::Gzip => io::copy(blob, out).map(drop),
        StreamKind::Zstd => zstd::stream::read::Decoder::new(blob).and_then(|mut plain| {
            let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            io::copy(&mut plain, &mut gz)?;
            gz.finish().map(drop)
        }),
        StreamKind::Plain | StreamKind::Sniff => {
            let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            io::copy(blob, &mut gz).and_then(|_| gz.finish().map(drop))
        }
    };
    copied.map_err(LayerError::Stream)
}
