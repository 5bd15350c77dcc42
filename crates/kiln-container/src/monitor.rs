//! The process that runs a container, and how other kiln commands talk to it.
//!
//! Whoever starts a container stays its parent until it ends: a foreground `kiln run`, or
//! for `kiln run -d` a *monitor* (kiln re-executed in its own session, conmon's role). It
//! holds the container's lock (see `kiln_store::containers`), and [`supervise`] is its one
//! loop: a single thread `poll`s the container's pidfd, its output pipes (written to the
//! log, when detached) and a *control socket* in the container's dir, until the
//! container's PID 1 exits. Then the caller records the exit and [`Waiters::answer`]s
//! whoever waits.
//!
//! Why a socket rather than signals to the monitor: a request names an exact action
//! (`signal 15`, `stop 15 10`, `wait`) and gets an answer (the exit code), without racing
//! PID reuse, and the same channel will carry what later commands need (attach's
//! streams, exec's and restart policies' requests). The monitor signals its own unreaped
//! child, so a signal never reaches a recycled PID; `stop`'s SIGKILL deadline lives in the
//! monitor, so it holds even if the `kiln stop` that asked is interrupted.
//!
//! Protocol: one line per connection, answered by one line. `signal N` → `ok`;
//! `stop N SECONDS` → `exited CODE` once the container ended (N first, SIGKILL after
//! SECONDS); `wait` → `exited CODE`; anything else → `error TEXT`. The socket is
//! `<dir>/control.sock`, reached through `/proc/self/fd/N/` (a socket path is limited to
//! 108 bytes, which a store below a long temp dir would exceed).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant, SystemTime};

use kiln_runtime::{OutputPipes, RunningContainer};
use kiln_store::ContainerDir;
use nix::sys::signal::Signal;

use super::error::{ContainerError, Result};
use super::log::{LineSplitter, LogWriter, Stream};

const SOCKET: &str = "control.sock";
/// The longest request line.
const MAX_REQUEST: usize = 128;

/// The control socket a container's runner listens on.
pub struct ControlSocket {
    listener: UnixListener,
}

impl ControlSocket {
    /// Binds `<dir>/control.sock` (replacing a stale one).
    pub fn bind(dir: &ContainerDir) -> Result<ControlSocket> {
        let (_dirfd, path) = socket_path(dir)?;
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(control("bind the control socket"))?;
        listener
            .set_nonblocking(true)
            .map_err(control("bind the control socket"))?;
        Ok(ControlSocket { listener })
    }
}

/// The dir opened as an `O_PATH` fd, and the socket's short path through it.
fn socket_path(dir: &ContainerDir) -> Result<(File, String)> {
    let dirfd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(&dir.path)
        .map_err(control("open the container dir"))?;
    let path = format!("/proc/self/fd/{}/{SOCKET}", dirfd.as_raw_fd());
    Ok((dirfd, path))
}

fn control(what: &'static str) -> impl Fn(std::io::Error) -> ContainerError {
    move |source| ContainerError::Control { what, source }
}

/// Where a detached container's output goes.
pub struct OutputLog {
    pub pipes: OutputPipes,
    pub writer: LogWriter,
}

/// The connections that asked to hear how the container ended.
pub struct Waiters(Vec<UnixStream>);

impl Waiters {
    /// Tells each waiter the container's exit code.
    pub fn answer(self, code: i32) {
        for mut w in self.0 {
            let _ = w.set_nonblocking(false);
            let _ = w.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = writeln!(w, "exited {code}");
        }
    }
}

/// A connection whose request line has not fully arrived.
struct Client {
    stream: UnixStream,
    request: Vec<u8>,
}

/// The monitor's loop: serves the control socket and writes the output to the log until
/// the container's PID 1 has exited (it is not reaped: `running.wait()` does that next).
pub fn supervise(
    running: &RunningContainer,
    control: ControlSocket,
    mut output: Option<OutputLog>,
) -> Result<Waiters> {
    let pidfd = running.pidfd()?;
    let mut loop_state = Loop {
        running,
        clients: Vec::new(),
        waiters: Vec::new(),
        kill_at: None,
    };
    let mut streams = output.as_ref().map(|o| {
        [
            (
                o.pipes.stdout.as_raw_fd(),
                Stream::Stdout,
                LineSplitter::default(),
                true,
            ),
            (
                o.pipes.stderr.as_raw_fd(),
                Stream::Stderr,
                LineSplitter::default(),
                true,
            ),
        ]
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = vec![
            poll_in(pidfd.as_raw_fd()),
            poll_in(control.listener.as_raw_fd()),
        ];
        if let Some(streams) = &streams {
            fds.extend(streams.iter().map(|s| poll_in(if s.3 { s.0 } else { -1 })));
        }
        let first_client = fds.len();
        fds.extend(
            loop_state
                .clients
                .iter()
                .map(|c| poll_in(c.stream.as_raw_fd())),
        );
        poll(&mut fds, loop_state.timeout())?;
        if let (Some(streams), Some(out)) = (&mut streams, &mut output) {
            for (i, stream) in streams.iter_mut().enumerate() {
                if fds[2 + i].revents != 0 {
                    stream.3 = copy_to_log(stream, &mut out.writer, &mut buf)?;
                }
            }
        }
        loop_state.serve_clients(&fds[first_client..]);
        if fds[1].revents != 0 {
            loop_state.accept(&control.listener);
        }
        loop_state.kill_when_due();
        if fds[0].revents != 0 {
            break;
        }
    }
    // PID 1 is gone, and the kernel kills the rest of its namespace: the pipes end soon.
    if let (Some(streams), Some(out)) = (&mut streams, &mut output) {
        for stream in streams.iter_mut() {
            while stream.3 {
                wait_readable(stream.0);
                stream.3 = copy_to_log(stream, &mut out.writer, &mut buf)?;
            }
        }
    }
    Ok(Waiters(loop_state.waiters))
}

/// A stream being copied: its fd, its name, its line splitter, whether it is still open.
type OutputStream = (RawFd, Stream, LineSplitter, bool);

/// Copies what is in the pipe to the log; `false` at its end.
fn copy_to_log(stream: &mut OutputStream, log: &mut LogWriter, buf: &mut [u8]) -> Result<bool> {
    let (fd, name, splitter, _) = stream;
    // SAFETY: the buffer is valid for its length; the fd is the monitor's pipe.
    let n = unsafe { libc::read(*fd, buf.as_mut_ptr().cast(), buf.len()) };
    let now = SystemTime::now();
    // A log that cannot be written (a full disk) loses lines, never the container: the
    // pipe must still be drained, or the container blocks on its next write.
    let mut write = |line: &[u8]| {
        if let Err(e) = log.write(*name, line, now) {
            tracing::warn!(error = %e, "a log line was lost");
        }
        Ok(())
    };
    match n {
        n if n > 0 => splitter.push(&buf[..n as usize], &mut write).map(|()| true),
        n if n < 0 && std::io::Error::last_os_error().kind() == ErrorKind::Interrupted => Ok(true),
        _ => splitter.finish(&mut write).map(|()| false),
    }
}

struct Loop<'a> {
    running: &'a RunningContainer,
    clients: Vec<Client>,
    waiters: Vec<UnixStream>,
    /// When `stop`'s grace time ends.
    kill_at: Option<Instant>,
}

impl Loop<'_> {
    /// Milliseconds until the SIGKILL of a `stop` is due, or -1.
    fn timeout(&self) -> libc::c_int {
        match self.kill_at {
            None => -1,
            Some(at) => at
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as libc::c_int,
        }
    }

    fn kill_when_due(&mut self) {
        if self.kill_at.is_some_and(|at| at <= Instant::now()) {
            self.kill_at = None;
            let _ = self.running.signal(Signal::SIGKILL);
        }
    }

    fn accept(&mut self, listener: &UnixListener) {
        while let Ok((stream, _)) = listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                self.clients.push(Client {
                    stream,
                    request: Vec::new(),
                });
            }
        }
    }

    /// Reads from the clients `ready` says are readable, and handles complete requests.
    fn serve_clients(&mut self, ready: &[libc::pollfd]) {
        let mut keep = Vec::new();
        for (mut client, fd) in std::mem::take(&mut self.clients).into_iter().zip(ready) {
            if fd.revents == 0 {
                keep.push(client);
                continue;
            }
            let mut buf = [0u8; MAX_REQUEST];
            match client.stream.read(&mut buf) {
                Ok(0) => continue,
                Ok(n) => client.request.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => continue,
            }
            match client.request.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let line = String::from_utf8_lossy(&client.request[..end]).into_owned();
                    self.handle(client.stream, &line);
                }
                None if client.request.len() < MAX_REQUEST => keep.push(client),
                None => reply(client.stream, "error request too long"),
            }
        }
        self.clients.extend(keep);
    }

    fn handle(&mut self, stream: UnixStream, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["signal", n] => match parse_signal(n).map(|s| self.running.signal(s)) {
                Some(Ok(())) => reply(stream, "ok"),
                Some(Err(e)) => reply(stream, &format!("error {e}")),
                None => reply(stream, "error bad signal"),
            },
            ["stop", n, seconds] => match (parse_signal(n), seconds.parse::<u64>()) {
                (Some(signal), Ok(seconds)) => {
                    let _ = self.running.signal(signal);
                    let at = Instant::now() + Duration::from_secs(seconds);
                    self.kill_at = Some(self.kill_at.map_or(at, |k| k.min(at)));
                    self.waiters.push(stream);
                }
                _ => reply(stream, "error bad stop request"),
            },
            ["wait"] => self.waiters.push(stream),
            _ => reply(stream, "error unknown request"),
        }
    }
}

fn parse_signal(n: &str) -> Option<Signal> {
    Signal::try_from(n.parse::<i32>().ok()?).ok()
}

fn reply(mut stream: UnixStream, line: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = writeln!(stream, "{line}");
}

fn poll_in(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn poll(fds: &mut [libc::pollfd], timeout: libc::c_int) -> Result<()> {
    loop {
        // SAFETY: the slice holds valid pollfd records.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(control("poll")(e));
        }
    }
}

fn wait_readable(fd: RawFd) {
    let mut fds = [poll_in(fd)];
    let _ = poll(&mut fds, -1);
}

/// What a container's runner answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Exited(i32),
    Error(String),
}

/// Sends `request` to the runner of the container in `dir` and waits up to `timeout` for
/// its answer. `None` when no runner listens or it ended without answering (it was killed,
/// or the container ended as the request came in): the container's lock and state say the
/// rest.
pub fn request(
    dir: &ContainerDir,
    request: &str,
    timeout: Option<Duration>,
) -> Result<Option<Reply>> {
    let (_dirfd, path) = socket_path(dir)?;
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Ok(None)
        }
        Err(e) => return Err(control("connect to the container's monitor")(e)),
    };
    stream
        .set_read_timeout(timeout)
        .map_err(control("talk to the container's monitor"))?;
    if writeln!(stream, "{request}").is_err() {
        return Ok(None);
    }
    let mut answer = String::new();
    let mut limited = (&stream).take(MAX_REQUEST as u64);
    match limited.read_to_string(&mut answer) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            return Err(ContainerError::MonitorTimeout)
        }
        Err(_) => return Ok(None),
    }
    let answer = answer.trim_end();
    Ok(match answer.split_once(' ') {
        _ if answer == "ok" => Some(Reply::Ok),
        Some(("exited", code)) => code.parse().ok().map(Reply::Exited),
        Some(("error", why)) => Some(Reply::Error(why.to_owned())),
        _ => None,
    })
}
