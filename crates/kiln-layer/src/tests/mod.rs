//! Tests of the layer module on a real filesystem (they run as root: devices, trusted.*
//! xattrs, chown and overlay mounts are real).

mod compress;
mod copy_in;
mod hostile;
mod roundtrip;

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::inroot;

/// One node of a snapshot: everything apply must reproduce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub rdev: u64,
    pub content: Vec<u8>,
    pub link: String,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// The first path (in sort order) sharing this node's inode, for hard links.
    pub inode_group: String,
}

/// Every node below `root` (not `root` itself), keyed by relative path.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    let mut paths = Vec::new();
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let rel = rel.join(e.unwrap().file_name());
            if fs::symlink_metadata(root.join(&rel)).unwrap().is_dir() {
                stack.push(rel.clone());
            }
            paths.push(rel);
        }
    }
    paths.sort();
    for rel in paths {
        let full = root.join(&rel);
        let m = fs::symlink_metadata(&full).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if m.mode() & libc::S_IFMT == libc::S_IFCHR {
            "char"
        } else if m.mode() & libc::S_IFMT == libc::S_IFBLK {
            "block"
        } else {
            "fifo"
        };
        let key = rel.to_string_lossy().into_owned();
        let group = inodes
            .entry((m.dev(), m.ino()))
            .or_insert_with(|| key.clone())
            .clone();
        let parent = fs::File::open(full.parent().unwrap()).unwrap();
        let name = full.file_name().unwrap().as_encoded_bytes();
        let mut xattrs: Vec<(String, Vec<u8>)> = inroot::xattr_names(parent.as_fd(), name)
            .unwrap()
            .into_iter()
            .map(|k| {
                let v = inroot::xattr_get(parent.as_fd(), name, &k)
                    .unwrap()
                    .unwrap_or_default();
                (String::from_utf8(k).unwrap(), v)
            })
            .collect();
        xattrs.sort();
        out.insert(
            key,
            Node {
                kind,
                mode: m.permissions().mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
                rdev: m.rdev(),
                content: if ft.is_file() {
                    fs::read(&full).unwrap()
                } else {
                    Vec::new()
                },
                link: if ft.is_symlink() {
                    fs::read_link(&full).unwrap().to_string_lossy().into_owned()
                } else {
                    String::new()
                },
                xattrs,
                inode_group: if m.nlink() > 1 && !ft.is_dir() {
                    group
                } else {
                    String::new()
                },
            },
        );
    }
    out
}

/// Sets the mtime of `path` itself (not following a symlink).
pub(crate) fn set_mtime(path: &Path, secs: i64) {
    let parent = fs::File::open(path.parent().unwrap()).unwrap();
    inroot::utime_at(
        parent.as_fd(),
        path.file_name().unwrap().as_encoded_bytes(),
        secs,
        0,
    )
    .unwrap();
}

pub(crate) fn mknod(path: &Path, kind: u32, major: u64, minor: u64) {
    let parent = fs::File::open(path.parent().unwrap()).unwrap();
    let dev = nix::sys::stat::makedev(major, minor);
    inroot::mknod(
        parent.as_fd(),
        path.file_name().unwrap().as_encoded_bytes(),
        kind,
        dev,
    )
    .unwrap();
}

pub(crate) fn set_xattr(path: &Path, key: &str, value: &[u8]) {
    let parent = fs::File::open(path.parent().unwrap()).unwrap();
    inroot::xattr_set(
        parent.as_fd(),
        path.file_name().unwrap().as_encoded_bytes(),
        key.as_bytes(),
        value,
    )
    .unwrap();
}

pub(crate) fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

pub(crate) fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Paths of a tar stream, in order, with their type byte (read by the `tar` crate).
pub(crate) fn tar_listing(tar: &[u8]) -> Vec<(String, u8)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                e.header().entry_type().as_byte(),
            )
        })
        .collect()
}
