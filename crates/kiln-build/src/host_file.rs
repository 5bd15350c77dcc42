//! Host files the user names for kiln to read — `from: rootfs:`, `kiln import`, secret
//! sources, the files of an `oci:` layout — looked at before anything reads them.
//!
//! Exists because opening and reading a path trusts it to be a file: a FIFO blocks the open
//! (and then the read) forever, `/dev/zero` never ends, and opening some devices does
//! something by itself. So the path is opened with `O_PATH` (which neither opens the file
//! itself nor blocks), its type is checked with `fstat` on that fd, and only a regular file
//! is then opened for reading, through that same fd (`/proc/self/fd/N`), so what is read is
//! what was checked even if the path changes in between.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode};

use super::io_reason;
use kiln_layer::inroot;

/// A named path that is a regular file or a directory.
pub(crate) enum FileOrDir {
    /// A regular file, open for reading, and its `fstat`.
    File(File, Box<FileStat>),
    Dir,
}

/// Why a named path is not read.
#[derive(Debug)]
pub enum Refused {
    /// It cannot be opened (missing, no permission, …).
    Io(io::Error),
    /// It is not a kind of node kiln reads here: `a FIFO`, `a character device`, ….
    Kind(&'static str),
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Refused::Io(e) => Some(e),
            Refused::Kind(_) => None,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Io(e) => f.write_str(&io_reason(e)),
            Refused::Kind(kind) => write!(f, "it is {kind}, not a regular file"),
        }
    }
}

/// Opens `path` for reading if it is a regular file; a directory is only reported.
pub(crate) fn open_file_or_dir(path: &Path) -> Result<FileOrDir, Refused> {
    let (fd, st) = open_path(path)?;
    match inroot::file_type(&st) {
        libc::S_IFDIR => Ok(FileOrDir::Dir),
        libc::S_IFREG => Ok(FileOrDir::File(reopen_for_reading(&fd)?, Box::new(st))),
        _ => Err(Refused::Kind(kind_name(&st))),
    }
}

/// Opens `path` for reading if it is a regular file.
pub(crate) fn open_regular(path: &Path) -> Result<File, Refused> {
    let (fd, st) = open_path(path)?;
    match inroot::file_type(&st) {
        libc::S_IFREG => Ok(reopen_for_reading(&fd)?),
        _ => Err(Refused::Kind(kind_name(&st))),
    }
}

/// An `O_PATH` fd of `path` (symlinks followed: the user named it) and its `fstat`.
fn open_path(path: &Path) -> Result<(OwnedFd, FileStat), Refused> {
    let flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(path, flags, Mode::empty()).map_err(|e| Refused::Io(e.into()))?;
    let st = inroot::fstat(fd.as_fd()).map_err(Refused::Io)?;
    Ok((fd, st))
}

/// The file an `O_PATH` fd names, opened for reading (the kernel's `/proc/self/fd` link,
/// so the path is not looked up again).
fn reopen_for_reading(fd: &OwnedFd) -> Result<File, Refused> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    let file =
        nix::fcntl::open(link.as_str(), flags, Mode::empty()).map_err(|e| Refused::Io(e.into()))?;
    Ok(File::from(file))
}

/// What a node is, for messages: `a FIFO`, `a character device`, ….
pub(crate) fn kind_name(st: &FileStat) -> &'static str {
    match inroot::file_type(st) {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symbolic link",
        _ => "an unknown kind of file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_and_directories_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "content").unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("link")).unwrap();

        // None of these may block or read: a FIFO with no writer, an endless device.
        let refused = |p: &Path| match open_file_or_dir(p) {
            Err(Refused::Kind(kind)) => kind,
            other => panic!("{}: {:?}", p.display(), other.map(|_| ())),
        };
        assert_eq!(refused(&fifo), "a FIFO");
        assert_eq!(refused(Path::new("/dev/zero")), "a character device");
        assert!(matches!(open_regular(&fifo), Err(Refused::Kind("a FIFO"))));
        assert!(matches!(
            open_regular(dir.path()),
            Err(Refused::Kind("a directory"))
        ));
        assert!(matches!(
            open_file_or_dir(&dir.path().join("missing")),
            Err(Refused::Io(_))
        ));

        assert!(matches!(open_file_or_dir(dir.path()), Ok(FileOrDir::Dir)));
        let via_link = open_regular(&dir.path().join("link")).unwrap();
        assert_eq!(io::read_to_string(via_link).unwrap(), "content");
        let Ok(FileOrDir::File(f, st)) = open_file_or_dir(&file) else {
            panic!("a regular file is opened")
        };
        assert_eq!(st.st_size, 7);
        assert_eq!(io::read_to_string(f).unwrap(), "content");
    }
}
