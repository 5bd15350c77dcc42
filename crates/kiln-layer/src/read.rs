//! kiln's one tar reader for untrusted layers (SECURITY.md rule 5).
//!
//! The `tar` crate's `Archive` reads extension headers into memory without a bound and
//! leaves size disagreements to the caller, so kiln drives the stream itself and uses
//! `tar::Header` only to decode the fields of a 512-byte block. Rules:
//!
//! - POSIX precedence: PAX `path`/`linkpath`/`size`/`uid`/`gid`/`mtime` override GNU
//!   long names, which override the ustar fields;
//! - a PAX `size` must equal the header size, except the one legitimate case of a size too
//!   large for the octal field (header 0); any other disagreement is file smuggling
//!   (TARmageddon) and an error;
//! - entries that carry no data (directories, links, devices, fifos) must have size 0:
//!   some readers skip their "data", others read it as the next header;
//! - extension headers are bounded by [`ApplyLimits::max_header_bytes`], two local PAX
//!   headers (or two long names) for one entry are an error, global PAX headers may not
//!   set `path`, `linkpath` or `size`, and sparse files are refused;
//! - the archive ends at the first zero block or at end of stream on a block boundary.

use std::collections::BTreeMap;
use std::io::{self, Read};

use tar::Header;

use super::compress::stream_error;
use super::error::{LayerError, Result};
use super::ApplyLimits;
use kiln_store::Bound;

const BLOCK: usize = 512;
/// Largest value of the 11-digit octal size field.
const OCTAL11_MAX: u64 = 0o777_7777_7777;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Char,
    Block,
    Fifo,
}

/// One entry's header, all extensions applied.
#[derive(Debug)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: Kind,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub size: u64,
    pub dev: (u32, u32),
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// The PAX records that matter to kiln, from one local extension header.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<i64>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Extension headers seen before the entry they describe.
#[derive(Default)]
struct Pending {
    pax: Option<Pax>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.pax.is_none() && self.long_name.is_none() && self.long_link.is_none()
    }
}

/// Reads entries from an uncompressed tar stream: layers, and the image archives `kiln load`
/// reads, which are as untrusted.
pub struct TarReader<R> {
    inner: R,
    /// Unread data bytes of the current entry, then its padding.
    remaining: u64,
    padding: u64,
    entries: u64,
    max_entries: u64,
    max_header_bytes: u64,
    done: bool,
}

fn bad(why: impl Into<String>) -> LayerError {
    LayerError::BadArchive(why.into())
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R, limits: &ApplyLimits) -> Self {
        TarReader {
            inner,
            remaining: 0,
            padding: 0,
            entries: 0,
            max_entries: limits.max_entries,
            max_header_bytes: limits.max_header_bytes,
            done: false,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next entry, skipping whatever of the previous one's data was not read.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        if self.done {
            return Ok(None);
        }
        // A size up to u64::MAX is representable (base-256, PAX): the sum must not wrap,
        // or the next "header" would be read from inside this entry's data.
        let rest = self
            .remaining
            .checked_add(self.padding)
            .ok_or_else(|| bad("an entry claims more data than any archive can hold"))?;
        self.skip(rest)?;
        self.remaining = 0;
        self.padding = 0;
        let mut pending = Pending::default();
        loop {
            let Some(block) = self.read_header_block()? else {
                self.done = true;
                if !pending.is_empty() {
                    return Err(bad(
                        "the archive ends after an extension header, without its entry",
                    ));
                }
                return Ok(None);
            };
            let header = Header::from_byte_slice(&block);
            verify_checksum(header)?;
            let type_byte = header.as_old().linkflag[0];
            match type_byte {
                b'x' => {
                    if pending.pax.is_some() {
                        return Err(bad("two PAX headers describe the same entry"));
                    }
                    pending.pax = Some(parse_pax(&self.read_extension(header)?)?);
                }
                b'g' => {
                    let global = parse_pax(&self.read_extension(header)?)?;
                    if global.path.is_some() || global.linkpath.is_some() || global.size.is_some() {
                        return Err(bad("a global PAX header sets path, linkpath or size"));
                    }
                }
                b'L' | b'K' => {
                    let slot = if type_byte == b'L' {
                        &mut pending.long_name
                    } else {
                        &mut pending.long_link
                    };
                    if slot.is_some() {
                        return Err(bad("two GNU long names describe the same entry"));
                    }
                    let mut name = self.read_extension(header)?;
                    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
                    name.truncate(end);
                    *slot = Some(name);
                }
                _ => return self.finish_entry(header, pending).map(Some),
            }
        }
    }

    /// Builds the entry from its header and extensions, and arms the data reader.
    fn finish_entry(&mut self, header: &Header, pending: Pending) -> Result<Entry> {
        self.entries += 1;
        if self.entries > self.max_entries {
            return Err(LayerError::Limit {
                bound: Bound::LayerEntries,
                limit: self.max_entries,
            });
        }
        let pax = pending.pax.unwrap_or_default();
        let path = pax
            .path
            .or(pending.long_name)
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link = pax.linkpath.or(pending.long_link).unwrap_or_else(|| {
            header
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default()
        });
        let field =
            |what: &str, e: io::Error| LayerError::entry(&path, format!("bad {what} field: {e}"));
        let type_byte = header.as_old().linkflag[0];
        let kind = match entry_kind(type_byte) {
            // Pre-POSIX writers mark directories by a trailing slash only (Go reads it so).
            Ok(Kind::File) if type_byte == b'\0' && path.ends_with(b"/") => Kind::Dir,
            Ok(kind) => kind,
            Err(why) => return Err(LayerError::entry(&path, why.to_string())),
        };
        let old = header.as_old();
        let header_size =
            numeric(&old.size, || header.entry_size()).map_err(|e| field("size", e))?;
        let size = match pax.size {
            Some(s) if s == header_size || (header_size == 0 && s > OCTAL11_MAX) => s,
            Some(s) => {
                return Err(LayerError::entry(
                    &path,
                    format!("PAX size {s} disagrees with header size {header_size} (possible file smuggling)"),
                ))
            }
            None => header_size,
        };
        if kind != Kind::File && size != 0 {
            return Err(LayerError::entry(
                &path,
                format!("a {kind:?} entry carries {size} bytes of data"),
            ));
        }
        let dev = match kind {
            Kind::Char | Kind::Block => {
                device_numbers(header).map_err(|e| field("device number", e))?
            }
            _ => (0, 0),
        };
        let entry = Entry {
            kind,
            link,
            mode: numeric(&old.mode, || header.mode().map(u64::from))
                .map_err(|e| field("mode", e))? as u32,
            uid: pax.uid.map_or_else(
                || numeric(&old.uid, || header.uid()).map_err(|e| field("uid", e)),
                Ok,
            )?,
            gid: pax.gid.map_or_else(
                || numeric(&old.gid, || header.gid()).map_err(|e| field("gid", e)),
                Ok,
            )?,
            mtime: match pax.mtime {
                Some(t) => t,
                None => {
                    let t =
                        numeric(&old.mtime, || header.mtime()).map_err(|e| field("mtime", e))?;
                    i64::try_from(t).unwrap_or(i64::MAX)
                }
            },
            size,
            dev,
            xattrs: pax.xattrs,
            path,
        };
        self.remaining = size;
        self.padding = padding(size);
        Ok(entry)
    }

    /// Reads the current entry's data; 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = self.remaining.min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..want]).map_err(stream_error)?;
        if n == 0 {
            return Err(bad("the archive ends in the middle of a file"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// One header block; `None` at the end of the archive.
    fn read_header_block(&mut self) -> Result<Option<[u8; BLOCK]>> {
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            let n = self
                .inner
                .read(&mut block[filled..])
                .map_err(stream_error)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        match filled {
            0 => Ok(None),
            BLOCK if block.iter().all(|b| *b == 0) => Ok(None),
            BLOCK => Ok(Some(block)),
            _ => Err(bad("the archive ends in the middle of a header")),
        }
    }

    /// The data of an extension header, bounded.
    fn read_extension(&mut self, header: &Header) -> Result<Vec<u8>> {
        let size = numeric(&header.as_old().size, || header.entry_size())
            .map_err(|e| bad(format!("bad extension header size: {e}")))?;
        if size > self.max_header_bytes {
            return Err(LayerError::ExtensionTooLarge {
                limit: self.max_header_bytes,
            });
        }
        let mut data = vec![0u8; size as usize];
        self.inner
            .read_exact(&mut data)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    bad("the archive ends in the middle of an extension header")
                }
                _ => stream_error(e),
            })?;
        self.skip(padding(size))?;
        Ok(data)
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        let copied =
            io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(stream_error)?;
        if copied < n {
            return Err(bad("the archive ends in the middle of an entry"));
        }
        Ok(())
    }
}

/// Major and minor device numbers; fields left empty (all NUL or spaces) mean 0.
fn device_numbers(header: &Header) -> io::Result<(u32, u32)> {
    let (major, minor) = match (header.as_ustar(), header.as_gnu()) {
        (Some(h), _) => (
            numeric(&h.dev_major, || h.device_major().map(u64::from))?,
            numeric(&h.dev_minor, || h.device_minor().map(u64::from))?,
        ),
        (None, Some(h)) => (
            numeric(&h.dev_major, || h.device_major().map(u64::from))?,
            numeric(&h.dev_minor, || h.device_minor().map(u64::from))?,
        ),
        // Version 7 headers have no device fields.
        (None, None) => (0, 0),
    };
    let fit = |n: u64| u32::try_from(n).map_err(|_| io::Error::other("device number too large"));
    Ok((fit(major)?, fit(minor)?))
}

/// A numeric header field; one left blank (all NUL or spaces) reads as 0, as in Go's and
/// GNU tar's readers, so kiln sees the same archive they do.
fn numeric(field: &[u8], parse: impl FnOnce() -> io::Result<u64>) -> io::Result<u64> {
    if field.iter().all(|b| *b == 0 || *b == b' ') {
        Ok(0)
    } else {
        parse()
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn verify_checksum(header: &Header) -> Result<()> {
    let bytes = header.as_bytes();
    let sum: u32 = bytes[..148]
        .iter()
        .chain(&bytes[156..])
        .map(|b| u32::from(*b))
        .sum::<u32>()
        + 8 * u32::from(b' ');
    match header.cksum() {
        Ok(stored) if stored == sum => Ok(()),
        _ => Err(bad("header checksum mismatch")),
    }
}

/// A tar entry type kiln does not unpack.
#[derive(Debug, thiserror::Error)]
enum EntryTypeError {
    #[error("sparse files are not supported")]
    Sparse,
    #[error("unsupported tar entry type {0:?}")]
    Unsupported(char),
}

fn entry_kind(type_byte: u8) -> std::result::Result<Kind, EntryTypeError> {
    Ok(match type_byte {
        b'0' | b'\0' | b'7' => Kind::File,
        b'1' => Kind::HardLink,
        b'2' => Kind::Symlink,
        b'3' => Kind::Char,
        b'4' => Kind::Block,
        b'5' => Kind::Dir,
        b'6' => Kind::Fifo,
        b'S' => return Err(EntryTypeError::Sparse),
        other => return Err(EntryTypeError::Unsupported(char::from(other))),
    })
}

/// Parses PAX records (`"<len> <key>=<value>\n"`). Later records override earlier ones,
/// and an empty value removes the keyword, as POSIX says.
fn parse_pax(mut data: &[u8]) -> Result<Pax> {
    let mut pax = Pax::default();
    while !data.is_empty() {
        if data.iter().all(|b| *b == 0) {
            break;
        }
        let space = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("malformed PAX record"))?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|len| *len > space + 1 && *len <= data.len())
            .ok_or_else(|| bad("malformed PAX record length"))?;
        let record = &data[space + 1..len];
        data = &data[len..];
        let record = record
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("PAX record without newline"))?;
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| bad("PAX record without '='"))?;
        apply_pax_record(&mut pax, &record[..eq], &record[eq + 1..])?;
    }
    Ok(pax)
}

fn apply_pax_record(pax: &mut Pax, key: &[u8], value: &[u8]) -> Result<()> {
    let set = (!value.is_empty()).then(|| value.to_vec());
    match key {
        b"path" => pax.path = set,
        b"linkpath" => pax.linkpath = set,
        b"size" => pax.size = set.map(|v| parse_number(&v, "size")).transpose()?,
        b"uid" => pax.uid = set.map(|v| parse_number(&v, "uid")).transpose()?,
        b"gid" => pax.gid = set.map(|v| parse_number(&v, "gid")).transpose()?,
        b"mtime" => pax.mtime = set.map(|v| parse_time(&v)).transpose()?,
        _ if key.starts_with(b"GNU.sparse.") => return Err(bad("sparse files are not supported")),
        _ => {
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                pax.xattrs.insert(name.to_vec(), value.to_vec());
            }
        }
    }
    Ok(())
}

fn parse_number(v: &[u8], what: &str) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad PAX {what} {:?}", String::from_utf8_lossy(v))))
}

/// A PAX time (`[-]seconds[.fraction]`), truncated to whole seconds.
fn parse_time(v: &[u8]) -> Result<i64> {
    let s = std::str::from_utf8(v).map_err(|_| bad("bad PAX mtime"))?;
    let whole = s.split('.').next().unwrap_or(s);
    whole
        .parse()
        .map_err(|_| bad(format!("bad PAX mtime {s:?}")))
}
