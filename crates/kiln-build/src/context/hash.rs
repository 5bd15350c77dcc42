//! Content hashes of the files a copy step would copy: from the memo when a file has not
//! changed, otherwise read in parallel.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::time::SystemTime;

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use nix::fcntl::OFlag;

use super::memo::{FileKey, HashMemo};
use super::walk::{Found, FoundKind};
use super::{ContextDir, Result};
use kiln_layer::inroot::{self, file_type};
use kiln_layer::LayerError;

/// Read size per call; large enough that syscalls do not dominate, small enough per thread.
const READ_BUFFER: usize = 256 << 10;

/// The sha256 of every regular file among the nodes (`None` for the others).
pub(super) struct Contents {
    pub sha256: Vec<Option<[u8; 32]>>,
    pub files_read: u64,
    pub bytes_read: u64,
}

/// One file read now.
struct Hashed {
    key: FileKey,
    sha256: [u8; 32],
    /// Unchanged while read and old enough to be remembered (see the memo module).
    settled: bool,
    bytes: u64,
}

pub(super) fn file_contents(
    dir: &ContextDir,
    nodes: &[Found],
    memo: &mut HashMemo,
) -> Result<Contents> {
    let mut sha256 = vec![None; nodes.len()];
    let mut misses = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if !matches!(node.kind, FoundKind::File) {
            continue;
        }
        match memo.lookup(&FileKey::of(&node.st)) {
            Some(sum) => sha256[i] = Some(sum),
            None => misses.push(i),
        }
    }
    let margin = memo.racy_margin;
    let hashed: Vec<Hashed> = misses
        .par_iter()
        .map_init(
            || vec![0u8; READ_BUFFER],
            |buf, &i| hash_file(dir, &nodes[i], buf, margin),
        )
        .collect::<Result<_, LayerError>>()?;
    let mut contents = Contents {
        sha256,
        files_read: 0,
        bytes_read: 0,
    };
    for (i, file) in misses.into_iter().zip(hashed) {
        contents.sha256[i] = Some(file.sha256);
        contents.files_read += 1;
        contents.bytes_read += file.bytes;
        if file.settled {
            memo.remember(file.key, file.sha256);
        }
    }
    Ok(contents)
}

fn hash_file(
    dir: &ContextDir,
    node: &Found,
    buf: &mut [u8],
    margin: std::time::Duration,
) -> Result<Hashed, LayerError> {
    let fail = |e: io::Error| LayerError::io("read", &node.path)(e);
    let started = SystemTime::now();
    // By the path the walk resolved, with no symlink allowed on the way: a file swapped
    // for a symlink since is not followed. O_NONBLOCK: one swapped for a FIFO does not hang.
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
    let mut file = File::from(dir.open_resolved(&node.real, flags).map_err(fail)?);
    let before = inroot::fstat(file.as_fd()).map_err(fail)?;
    if file_type(&before) != libc::S_IFREG {
        let why = "it stopped being a regular file while kiln read the build context";
        return Err(fail(io::Error::other(why)));
    }
    let mut h = Sha256::new();
    let mut bytes = 0u64;
    loop {
        match file.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(e)),
        }
    }
    let after = inroot::fstat(file.as_fd()).map_err(fail)?;
    let key = FileKey::of(&before);
    Ok(Hashed {
        key,
        sha256: h.finalize().into(),
        settled: key == FileKey::of(&after) && key.settled(started, margin),
        bytes,
    })
}
