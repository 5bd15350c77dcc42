//! Layer dir → reproducible OCI layer tar.
//!
//! The same directory must give the same bytes on any machine, whatever order readdir
//! returns or files were created in, so kiln walks the tree itself instead of using
//! `tar::Builder::append_dir_all`:
//!
//! - entries are sorted by full path bytes (a directory `d` sorts as `d/`, so this equals
//!   byte order of the archive paths); a directory comes before its content, and its
//!   opaque marker `d/.wh..wh..opq` right after it;
//! - overlay whiteouts (0/0 character devices) become empty regular files `.wh.NAME` with
//!   mode 0, uid/gid 0; the marker is the same kind of file;
//! - ustar headers without user or group names; real uid/gid and mode bits (setuid, setgid,
//!   sticky included); mtime = min(mtime, epoch) in whole seconds, negative ones as 0;
//! - extended attributes as PAX `SCHILY.xattr.*` records, sorted by name, except
//!   `trusted.*` (overlay's own bookkeeping; apply drops them too), `user.overlay.*` and
//!   `security.selinux` (a host label, meaningless in an image);
//! - files with several links: the first path in sort order is stored, later ones become
//!   link entries to it; symlinks are never followed, sockets are skipped;
//! - long names, link targets and large numbers use PAX records (`path`, `linkpath`,
//!   `size`, `uid`, `gid`).
//!
//! A real file whose name starts with `.wh.` cannot be represented (readers would take it
//! for a whiteout), so it is an error rather than a silently different layer.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::sys::stat::FileStat;
use tar::{EntryType, Header};

use super::error::{LayerError, Result};
use super::inroot::{self, Root};
use super::TarOptions;

/// Name prefix of OCI whiteout files.
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the OCI opaque-directory marker.
pub(crate) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Largest value of an 11-digit octal field (size, mtime).
const OCTAL11_MAX: u64 = 0o777_7777_7777;
/// Largest value of a 7-digit octal field (uid, gid).
const OCTAL7_MAX: u64 = 0o777_7777;
/// Size of the copy buffer: large enough for fast streaming, fixed whatever the file size.
const COPY_BUF: usize = 256 << 10;

/// Walks the layer dir `dir` and writes an uncompressed, reproducible OCI layer tar to `out`.
pub fn write_tar(dir: &Path, out: &mut dyn Write, opts: &TarOptions) -> Result<()> {
    let root =
        Root::open(dir).map_err(LayerError::io("open", dir.as_os_str().as_encoded_bytes()))?;
    let root_dir = inroot::open_dir_nofollow(root.fd(), b".")
        .map_err(LayerError::io("open", dir.as_os_str().as_encoded_bytes()))?;
    let mut w = TarWriter {
        out,
        epoch: opts.epoch,
        links: HashMap::new(),
        buf: vec![0; COPY_BUF],
    };
    w.walk(root_dir.as_fd(), &mut Vec::new())?;
    // End of archive: two zero blocks.
    w.out
        .write_all(&[0u8; 1024])
        .map_err(LayerError::io("write", b"the layer"))
}

struct TarWriter<'a> {
    out: &'a mut dyn Write,
    epoch: u64,
    /// (device, inode) of files with several links → the path they were first stored at.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

/// One directory entry, with the name it sorts by in the archive.
struct Child {
    name: Vec<u8>,
    st: FileStat,
    /// `name`, `name/` for directories, `.wh.name` for whiteouts.
    key: Vec<u8>,
}

/// Everything a tar header says about one entry.
struct Entry<'a> {
    path: &'a [u8],
    kind: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    link: &'a [u8],
    dev: (u64, u64),
    xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

impl<'a> Entry<'a> {
    /// An empty regular file owned by root with mode 0 (whiteouts and opaque markers).
    fn marker(path: &'a [u8], mtime: u64) -> Self {
        Entry {
            path,
            kind: EntryType::Regular,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime,
            size: 0,
            link: b"",
            dev: (0, 0),
            xattrs: &[],
        }
    }
}

impl TarWriter<'_> {
    /// Writes the entries below the directory `dir`, whose archive path is `prefix`
    /// (empty for the root, else ending in `/`).
    fn walk(&mut self, dir: BorrowedFd, prefix: &mut Vec<u8>) -> Result<()> {
        for child in self.sorted_children(dir, prefix)? {
            let base = prefix.len();
            prefix.extend_from_slice(&child.key);
            let result = self.write_child(dir, &child, prefix);
            prefix.truncate(base);
            result?;
        }
        Ok(())
    }

    fn sorted_children(&self, dir: BorrowedFd, prefix: &[u8]) -> Result<Vec<Child>> {
        let here = |name: &[u8]| [prefix, name].concat();
        let names = inroot::list_dir(dir).map_err(LayerError::io("list", &here(b"")))?;
        let mut children = Vec::with_capacity(names.len());
        for name in names {
            let st = inroot::lstat(dir, &name)
                .map_err(LayerError::io("stat", &here(&name)))?
                .ok_or_else(|| {
                    unrepresentable(&here(&name), "it vanished while the layer was written")
                })?;
            let key = if inroot::is_whiteout(&st) {
                [WHITEOUT_PREFIX, &name].concat()
            } else if name.starts_with(WHITEOUT_PREFIX) {
                return Err(unrepresentable(
                    &here(&name),
                    "names starting with .wh. mark whiteouts in OCI layers",
                ));
            } else if inroot::is_dir(&st) {
                [&name[..], b"/"].concat()
            } else {
                name.clone()
            };
            children.push(Child { name, st, key });
        }
        children.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(children)
    }

    fn write_child(&mut self, dir: BorrowedFd, child: &Child, path: &mut Vec<u8>) -> Result<()> {
        let st = &child.st;
        let mtime = clamp_mtime(st.st_mtime, self.epoch);
        if inroot::is_whiteout(st) {
            return self.header(&Entry::marker(path, mtime));
        }
        let ftype = inroot::file_type(st);
        if ftype == libc::S_IFSOCK {
            return Ok(());
        }
        let xattrs = self.xattrs(dir, &child.name, path)?;
        let mut entry = Entry {
            path,
            kind: EntryType::Regular,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid.into(),
            gid: st.st_gid.into(),
            mtime,
            size: 0,
            link: b"",
            dev: (0, 0),
            xattrs: &xattrs,
        };
        if ftype == libc::S_IFDIR {
            return self.write_dir(dir, child, entry);
        }
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                entry.kind = EntryType::Link;
                entry.link = &first;
                entry.xattrs = &[];
                return self.header(&entry);
            }
            self.links.insert(key, entry.path.to_vec());
        }
        let target;
        match ftype {
            libc::S_IFREG => return self.write_file(dir, child, entry),
            libc::S_IFLNK => {
                target = inroot::readlink(dir, &child.name)
                    .map_err(LayerError::io("read the symlink", entry.path))?;
                entry.kind = EntryType::Symlink;
                entry.link = &target;
            }
            libc::S_IFCHR | libc::S_IFBLK => {
                let is_char = ftype == libc::S_IFCHR;
                entry.kind = if is_char {
                    EntryType::Char
                } else {
                    EntryType::Block
                };
                entry.dev = (
                    nix::sys::stat::major(st.st_rdev),
                    nix::sys::stat::minor(st.st_rdev),
                );
            }
            libc::S_IFIFO => entry.kind = EntryType::Fifo,
            _ => return Err(unrepresentable(entry.path, "unknown file type")),
        }
        self.header(&entry)
    }

    fn write_dir(&mut self, dir: BorrowedFd, child: &Child, mut entry: Entry) -> Result<()> {
        entry.kind = EntryType::Directory;
        self.header(&entry)?;
        let sub = inroot::open_dir_nofollow(dir, &child.name)
            .map_err(LayerError::io("open", entry.path))?;
        if inroot::is_opaque(sub.as_fd(), b"")
            .map_err(LayerError::io("read xattrs of", entry.path))?
        {
            let marker = [entry.path, OPAQUE_MARKER].concat();
            self.header(&Entry::marker(&marker, entry.mtime))?;
        }
        let mut prefix = entry.path.to_vec();
        self.walk(sub.as_fd(), &mut prefix)
    }

    fn write_file(&mut self, dir: BorrowedFd, child: &Child, mut entry: Entry) -> Result<()> {
        let mut file = inroot::open_file_nofollow(dir, &child.name)
            .map_err(LayerError::io("open", entry.path))?;
        let size = child.st.st_size as u64;
        entry.size = size;
        self.header(&entry)?;
        self.copy_data(&mut file, size, entry.path)?;
        self.pad(size)
    }

    /// Copies exactly `size` bytes of `file` into the archive.
    fn copy_data(&mut self, file: &mut File, size: u64, path: &[u8]) -> Result<()> {
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = file
                .read(&mut self.buf[..want])
                .map_err(LayerError::io("read", path))?;
            if n == 0 {
                return Err(unrepresentable(
                    path,
                    "the file shrank while the layer was written",
                ));
            }
            self.out
                .write_all(&self.buf[..n])
                .map_err(LayerError::io("write", b"the layer"))?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Zero bytes up to the next 512-byte block boundary.
    fn pad(&mut self, size: u64) -> Result<()> {
        let rem = (size % 512) as usize;
        if rem == 0 {
            return Ok(());
        }
        self.out
            .write_all(&[0u8; 512][..512 - rem])
            .map_err(LayerError::io("write", b"the layer"))
    }

    /// Extended attributes worth storing, sorted by name.
    fn xattrs(&self, dir: BorrowedFd, name: &[u8], path: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let err = || LayerError::io("read xattrs of", path);
        let mut out = Vec::new();
        for key in inroot::xattr_names(dir, name).map_err(err())? {
            if !keep_xattr(&key) {
                continue;
            }
            if let Some(value) = inroot::xattr_get(dir, name, &key).map_err(err())? {
                out.push((key, value));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Writes the PAX extension (if needed) and the ustar header of `e`.
    fn header(&mut self, e: &Entry) -> Result<()> {
        let pax = pax_records(e);
        if !pax.is_empty() {
            let mut h = Header::new_ustar();
            set_bytes(&mut h.as_old_mut().name, b"././@PaxHeader");
            h.set_entry_type(EntryType::XHeader);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(pax.len() as u64);
            h.set_cksum();
            self.out
                .write_all(h.as_bytes())
                .map_err(LayerError::io("write", b"the layer"))?;
            self.out
                .write_all(&pax)
                .map_err(LayerError::io("write", b"the layer"))?;
            self.pad(pax.len() as u64)?;
        }
        let h = ustar_header(e)?;
        self.out
            .write_all(h.as_bytes())
            .map_err(LayerError::io("write", b"the layer"))
    }
}

fn unrepresentable(path: &[u8], why: &str) -> LayerError {
    LayerError::Unrepresentable {
        path: String::from_utf8_lossy(path).into_owned(),
        why: why.to_owned(),
    }
}

/// min(mtime, epoch), with times before 1970 as 0.
fn clamp_mtime(mtime: i64, epoch: u64) -> u64 {
    u64::try_from(mtime).unwrap_or(0).min(epoch)
}

/// Overlay's bookkeeping and host-specific labels never go into a layer.
fn keep_xattr(name: &[u8]) -> bool {
    !(name.starts_with(b"trusted.")
        || name.starts_with(b"user.overlay.")
        || name == b"security.selinux")
}

/// Copies `value` into a fixed-size header field, truncating (the PAX record holds the rest).
fn set_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

fn ustar_header(e: &Entry) -> Result<Header> {
    let mut h = Header::new_ustar();
    set_bytes(&mut h.as_old_mut().name, e.path);
    set_bytes(&mut h.as_old_mut().linkname, e.link);
    h.set_entry_type(e.kind);
    h.set_mode(e.mode);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_size(e.size);
    h.set_mtime(e.mtime);
    if matches!(e.kind, EntryType::Char | EntryType::Block) {
        let fits = |n: u64| {
            u32::try_from(n)
                .ok()
                .filter(|n| u64::from(*n) <= OCTAL7_MAX)
        };
        let (major, minor) = fits(e.dev.0)
            .zip(fits(e.dev.1))
            .ok_or_else(|| unrepresentable(e.path, "device number too large for a tar header"))?;
        let dev_err = |_| unrepresentable(e.path, "cannot encode the device number");
        h.set_device_major(major).map_err(dev_err)?;
        h.set_device_minor(minor).map_err(dev_err)?;
    }
    h.set_cksum();
    Ok(h)
}

/// PAX records for what the ustar header cannot hold: long paths, large numbers, xattrs.
fn pax_records(e: &Entry) -> Vec<u8> {
    let mut pax = Vec::new();
    if e.path.len() > 100 {
        pax_record(&mut pax, b"path", e.path);
    }
    if e.link.len() > 100 {
        pax_record(&mut pax, b"linkpath", e.link);
    }
    if e.size > OCTAL11_MAX {
        pax_record(&mut pax, b"size", e.size.to_string().as_bytes());
    }
    if e.uid > OCTAL7_MAX {
        pax_record(&mut pax, b"uid", e.uid.to_string().as_bytes());
    }
    if e.gid > OCTAL7_MAX {
        pax_record(&mut pax, b"gid", e.gid.to_string().as_bytes());
    }
    for (name, value) in e.xattrs {
        pax_record(&mut pax, &[&b"SCHILY.xattr."[..], name].concat(), value);
    }
    pax
}

/// Appends `"<len> <key>=<value>\n"`, where `<len>` counts the whole record, itself included.
pub(crate) fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}
