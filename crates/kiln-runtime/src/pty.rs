//! The parent side of `kiln run -t`: a pseudo-terminal for the container, and the copying
//! between it and kiln's own stdin/stdout.
//!
//! The clone child allocates the pty in the container's own devpts, makes the slave its
//! stdio and controlling terminal, and sends the master to kiln over a unix socket. While the container runs, kiln puts its own terminal (if stdin is one) in raw
//! mode so that keys such as ^C reach the container's line discipline instead of killing
//! kiln, copies stdin to the master (when interactive) and the master to stdout, and
//! passes window size changes on (SIGWINCH). [`TtySession::finish`] restores the terminal.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::termios::{self, SetArg, Termios};
use nix::unistd::pipe2;

use super::error::RuntimeError;
use super::relay::{poll_in, read, spawn_copy, wait_for_any, write_all};

/// Write end of the pipe the SIGWINCH handler pokes; -1 when no session runs.
static WINCH_PIPE: AtomicI32 = AtomicI32::new(-1);

const BUF_LEN: usize = 16 * 1024;

/// The running copy threads and the saved terminal state.
pub(crate) struct TtySession {
    saved: Option<Termios>,
    old_winch: Option<libc::sigaction>,
    stop: Option<OwnedFd>,
    input: Option<JoinHandle<()>>,
    output: Option<JoinHandle<()>>,
}

impl TtySession {
    /// Starts copying; `forward_stdin` copies kiln's stdin to the container.
    pub(crate) fn start(master: OwnedFd, forward_stdin: bool) -> Result<TtySession, RuntimeError> {
        let (stop_read, stop_write) =
            pipe2(OFlag::O_CLOEXEC).map_err(RuntimeError::sys("create a pipe"))?;
        let (winch_read, winch_write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(RuntimeError::sys("create a pipe"))?;
        let master_out = master
            .try_clone()
            .map_err(|e| RuntimeError::sys("dup the pty")(errno_of(&e)))?;
        let mut session = TtySession {
            saved: make_stdin_raw(),
            old_winch: None,
            stop: Some(stop_write),
            input: None,
            output: None,
        };
        session.old_winch = watch_window_size(winch_write);
        session.output = Some(spawn_copy(move || copy_output(master_out)));
        session.input = Some(spawn_copy(move || {
            copy_input(master, stop_read, winch_read, forward_stdin)
        }));
        Ok(session)
    }

    /// Waits for the container's output to drain, stops the input copy and restores the
    /// terminal. Call after the container has exited.
    pub(crate) fn finish(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(output) = self.output.take() {
            let _ = output.join();
        }
        self.stop = None;
        if let Some(input) = self.input.take() {
            let _ = input.join();
        }
        if let Some(old) = self.old_winch.take() {
            // SAFETY: restores the disposition saved when the session started.
            unsafe { libc::sigaction(libc::SIGWINCH, &old, std::ptr::null_mut()) };
            let fd = WINCH_PIPE.swap(-1, Ordering::SeqCst);
            if fd >= 0 {
                // SAFETY: the write end was leaked to the handler; nobody else closes it.
                unsafe { libc::close(fd) };
            }
        }
        if let Some(saved) = self.saved.take() {
            let _ = termios::tcsetattr(io::stdin(), SetArg::TCSANOW, &saved);
        }
    }
}

impl Drop for TtySession {
    fn drop(&mut self) {
        // Without waiting for output: the container may still be running on error paths.
        self.output = None;
        self.shut_down();
    }
}

fn errno_of(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// The size of kiln's terminal, if stdin or stdout is one.
pub(crate) fn host_window_size() -> Option<libc::winsize> {
    for fd in [0, 1] {
        // SAFETY: winsize is plain data the ioctl fills.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0 {
            return Some(size);
        }
    }
    None
}

/// The size a new pty starts with: the host terminal's, or 0×0 (unknown) without one.
pub(crate) fn initial_window_size() -> libc::winsize {
    host_window_size().unwrap_or(libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    })
}

/// Raw mode on kiln's stdin when it is a terminal; returns the settings to restore.
fn make_stdin_raw() -> Option<Termios> {
    let stdin = io::stdin();
    let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
    let mut raw = saved.clone();
    termios::cfmakeraw(&mut raw);
    termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
    Some(saved)
}

extern "C" fn on_winch(_: libc::c_int) {
    let fd = WINCH_PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write is async-signal-safe; a full pipe just drops the poke.
        unsafe { libc::write(fd, b"w".as_ptr().cast(), 1) };
    }
}

/// Installs the SIGWINCH handler; returns the previous disposition.
fn watch_window_size(pipe: OwnedFd) -> Option<libc::sigaction> {
    use std::os::fd::IntoRawFd;
    WINCH_PIPE.store(pipe.into_raw_fd(), Ordering::SeqCst);
    // SAFETY: the handler only calls write; the structs are plain data.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_winch as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        (libc::sigaction(libc::SIGWINCH, &action, &mut old) == 0).then_some(old)
    }
}

fn copy_output(master: OwnedFd) {
    let mut buf = vec![0u8; BUF_LEN];
    // Ends with EIO once every slave fd (the container's) is closed.
    while let Ok(n) = read(master.as_raw_fd(), &mut buf) {
        if n == 0 || write_all(1, &buf[..n]).is_err() {
            break;
        }
    }
}

fn copy_input(master: OwnedFd, stop: OwnedFd, winch: OwnedFd, forward_stdin: bool) {
    let mut buf = vec![0u8; BUF_LEN];
    let mut stdin_open = forward_stdin;
    loop {
        let mut fds = [
            poll_in(stop.as_raw_fd()),
            poll_in(winch.as_raw_fd()),
            poll_in(if stdin_open { 0 } else { -1 }),
        ];
        if wait_for_any(&mut fds).is_err() {
            return;
        }
        if fds[0].revents != 0 {
            return;
        }
        if fds[1].revents != 0 {
            while read(winch.as_raw_fd(), &mut buf).is_ok_and(|n| n > 0) {}
            if let Some(size) = host_window_size() {
                // SAFETY: sets the pty's size from a valid winsize.
                unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
            }
        }
        if fds[2].revents != 0 {
            match read(0, &mut buf) {
                Ok(n) if n > 0 => {
                    if write_all(master.as_raw_fd(), &buf[..n]).is_err() {
                        return;
                    }
                }
                _ => stdin_open = false,
            }
        }
    }
}
