//! The parent side of a container's stdio without `-t`: pipes that kiln copies.
//!
//! A container must never hold one of kiln's own file descriptors (SECURITY.md rule 13):
//! through `/proc/self/fd/1` it could reopen the file kiln's output goes to and read or
//! truncate it, or `ioctl` the terminal kiln runs on. So its fds 1 and 2 are pipes whose
//! read ends stay in kiln, and a thread per stream copies them to kiln's stdout and stderr
//! (with `splice`, so the bytes do not pass through user space when kiln's output is a file
//! or a pipe). With `-i`, another thread copies kiln's stdin into the container's stdin
//! pipe and closes it at end of input, so the container sees EOF as it would on a file.
//!
//! When kiln's output cannot be written any more (a closed pipe), the copy stops and drops
//! its read end, so the container gets `EPIPE`/`SIGPIPE` exactly as if it wrote there
//! itself (`kiln run img yes | head -1` ends).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::pipe2;

use super::error::RuntimeError;

/// The most bytes one `splice` moves (the pipe holds less; the kernel moves what it has).
const SPLICE_LEN: usize = 1 << 20;
const BUF_LEN: usize = 64 * 1024;
/// The capacity asked for the stdio pipes (Linux's default is 64 KiB).
const PIPE_SIZE: libc::c_int = 1 << 20;

/// kiln's own stdio.
const STDIN: RawFd = 0;
const STDOUT: RawFd = 1;
const STDERR: RawFd = 2;

/// The container's ends of the pipes: what becomes its fds 0 (with `-i`), 1 and 2.
pub(crate) struct ChildEnds {
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// The read ends of a container's stdout and stderr, and the write end of its stdin with
/// `-i`, for a caller that copies them itself (a detached container's monitor, which
/// writes the output to the container's log and relays `kiln attach`).
#[derive(Debug)]
pub struct OutputPipes {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub stdin: Option<OwnedFd>,
}

impl OutputPipes {
    /// The pipes, and the container's ends of them (its stdin stays `/dev/null` unless
    /// `interactive`).
    pub(crate) fn new(interactive: bool) -> Result<(OutputPipes, ChildEnds), RuntimeError> {
        let (out_read, out_write) = cloexec_pipe()?;
        let (err_read, err_write) = cloexec_pipe()?;
        let (stdin_read, stdin_write) = match interactive {
            true => cloexec_pipe().map(|(r, w)| (Some(r), Some(w)))?,
            false => (None, None),
        };
        let ends = ChildEnds {
            stdin: stdin_read,
            stdout: out_write,
            stderr: err_write,
        };
        Ok((
            OutputPipes {
                stdout: out_read,
                stderr: err_read,
                stdin: stdin_write,
            },
            ends,
        ))
    }
}

/// The running copy threads.
pub(crate) struct StdioRelay {
    output: Vec<JoinHandle<()>>,
    input: Option<JoinHandle<()>>,
    /// Dropped to stop the stdin copy.
    stop: Option<OwnedFd>,
}

impl std::fmt::Debug for StdioRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StdioRelay")
    }
}

impl StdioRelay {
    /// Creates the pipes and starts copying; `forward_stdin` is `-i`.
    pub(crate) fn start(forward_stdin: bool) -> Result<(StdioRelay, ChildEnds), RuntimeError> {
        let (out_read, out_write) = cloexec_pipe()?;
        let (err_read, err_write) = cloexec_pipe()?;
        let mut relay = StdioRelay {
            output: Vec::new(),
            input: None,
            stop: None,
        };
        let stdin = match forward_stdin {
            true => {
                let (in_read, in_write) = cloexec_pipe()?;
                let (stop_read, stop_write) = cloexec_pipe()?;
                relay.stop = Some(stop_write);
                relay.input = Some(spawn_copy(move || copy_in(in_write, stop_read)));
                Some(in_read)
            }
            false => None,
        };
        relay.output = vec![
            spawn_copy(move || copy_out(out_read, STDOUT)),
            spawn_copy(move || copy_out(err_read, STDERR)),
        ];
        let ends = ChildEnds {
            stdin,
            stdout: out_write,
            stderr: err_write,
        };
        Ok((relay, ends))
    }

    /// Waits until everything the container wrote has been copied, then stops the stdin
    /// copy. Call after the container has exited (its processes hold the write ends).
    pub(crate) fn finish(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        for thread in self.output.drain(..) {
            let _ = thread.join();
        }
        self.stop = None;
        if let Some(input) = self.input.take() {
            let _ = input.join();
        }
    }
}

impl Drop for StdioRelay {
    fn drop(&mut self) {
        // The container is dead by now (RunningContainer kills it first), so its pipes are
        // closed and the output threads end.
        self.shut_down();
    }
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    let (read, write) =
        pipe2(OFlag::O_CLOEXEC).map_err(RuntimeError::sys("create a stdio pipe"))?;
    // A larger pipe means fewer wake-ups of the copy thread per byte; the kernel may cap
    // it (fs.pipe-max-size), which is fine.
    // SAFETY: fcntl on a pipe kiln just made.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    Ok((read, write))
}

/// Starts a thread that copies between kiln and a container, with SIGPIPE blocked in it.
/// kiln keeps SIGPIPE's default disposition (so `kiln images | head` ends quietly), but a
/// closed pipe at either end of a copy (`kiln run img yes | head -1`, `yes | kiln run -i
/// img true`) must end that copy, not kill kiln and leave the container behind. The
/// signal such a write raises is the thread's own, and goes with the thread.
pub(crate) fn spawn_copy<T: Send + 'static>(
    copy: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::spawn(move || {
        let mut pipe = nix::sys::signal::SigSet::empty();
        pipe.add(nix::sys::signal::Signal::SIGPIPE);
        let _ = pipe.thread_block();
        copy()
    })
}

/// Copies `src` to `dst` until EOF on `src` or a write error on `dst`.
fn copy_out(src: OwnedFd, dst: RawFd) {
    if splice_all(src.as_fd(), dst) == Spliced::Unsupported {
        read_write_all(src.as_fd(), dst);
    }
}

#[derive(PartialEq, Eq)]
enum Spliced {
    Done,
    /// `dst` does not take `splice` (a terminal, an `O_APPEND` file); nothing was lost.
    Unsupported,
}

fn splice_all(src: BorrowedFd, dst: RawFd) -> Spliced {
    loop {
        // SAFETY: plain system call on fds this thread keeps open (or kiln's own stdio).
        let n = unsafe {
            libc::splice(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst,
                std::ptr::null_mut(),
                SPLICE_LEN,
                libc::SPLICE_F_MOVE,
            )
        };
        match Errno::result(n) {
            Ok(0) => return Spliced::Done,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_writable(dst),
            Err(Errno::EINVAL | Errno::ENOSYS) => return Spliced::Unsupported,
            Err(_) => return Spliced::Done,
        }
    }
}

fn read_write_all(src: BorrowedFd, dst: RawFd) {
    let mut buf = vec![0u8; BUF_LEN];
    loop {
        match read(src.as_raw_fd(), &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if write_all(dst, &buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Copies kiln's stdin into the container's stdin pipe until EOF (then closes the pipe),
/// until the container stops reading, or until `stop` is closed.
fn copy_in(pipe: OwnedFd, stop: OwnedFd) {
    let mut buf = vec![0u8; BUF_LEN];
    loop {
        let mut fds = [poll_in(stop.as_raw_fd()), poll_in(STDIN)];
        if wait_for_any(&mut fds).is_err() {
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        if fds[1].revents != 0 {
            match read(STDIN, &mut buf) {
                Ok(n) if n > 0 => {
                    if write_all(pipe.as_raw_fd(), &buf[..n]).is_err() {
                        return;
                    }
                }
                // End of input: dropping `pipe` gives the container its EOF.
                _ => return,
            }
        }
    }
}

/// `read`, retried on EINTR; waits on a non-blocking fd. Also used by `pty`.
pub(super) fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match Errno::result(n) {
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_readable(fd),
            other => return other.map(|n| n as usize),
        }
    }
}

/// Writes all of `bytes`, retried on EINTR; waits on a non-blocking fd. Also used by `pty`.
pub(super) fn write_all(fd: RawFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        match Errno::result(n) {
            Ok(n) => bytes = &bytes[n as usize..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait_writable(fd),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A `pollfd` waiting for `fd` to be readable (`fd` -1 is ignored by `poll`).
pub(super) fn poll_in(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// `poll` without a timeout, retried on EINTR. Also used by `pty`.
pub(super) fn wait_for_any(fds: &mut [libc::pollfd]) -> Result<(), Errno> {
    loop {
        // SAFETY: the slice holds valid pollfd records.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        match Errno::result(n) {
            Err(Errno::EINTR) => {}
            other => return other.map(drop),
        }
    }
}

/// kiln's stdio may be non-blocking (a terminal another program left so): wait instead of
/// spinning.
fn wait_writable(fd: RawFd) {
    poll_one(fd, libc::POLLOUT);
}

fn wait_readable(fd: RawFd) {
    poll_one(fd, libc::POLLIN);
}

fn poll_one(fd: RawFd, events: libc::c_short) {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd record.
    unsafe { libc::poll(&mut pfd, 1, -1) };
}
