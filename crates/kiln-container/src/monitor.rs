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
use super::health::HealthProbe;
use super::log::{LineSplitter, LogWriter, Stream};
use super::restart::EndedBy;

const SOCKET: &str = "control.sock";
/// The longest request line.
const MAX_REQUEST: usize = 128;
/// How often a wait before a restart looks whether its runner was told to stop.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

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

/// A connection whose request line has not fully arrived.
struct Client {
    stream: UnixStream,
    request: Vec<u8>,
}

/// The runner's side of the control socket, for the container's whole life: each run of
/// its command ([`supervise`](Self::supervise)) and the waits between runs that a restart
/// policy makes ([`wait_to_restart`](Self::wait_to_restart)).
pub struct Supervisor {
    control: ControlSocket,
    clients: Vec<Client>,
    /// The connections that asked to hear how the container ended.
    waiters: Vec<UnixStream>,
    /// When `stop`'s grace time ends.
    kill_at: Option<Instant>,
    /// How kiln ended the current run, if it did.
    ended_by: Option<EndedBy>,
    /// When the wait before a restart ends.
    restart_at: Option<Instant>,
    /// The exit code of the last run, while waiting to restart.
    last_code: Option<i32>,
    health: Option<HealthProbe>,
    /// Give back memory before the first wait of each run (a detached monitor).
    trim: bool,
    trim_pending: bool,
}

impl Supervisor {
    /// Before it first waits in each run, the runner gives back the memory that starting
    /// the container needed (see `trim`): for a monitor, which lives as long as its
    /// container.
    pub fn trim_memory_when_idle(&mut self) {
        self.trim = true;
    }

    pub fn new(control: ControlSocket, health: Option<HealthProbe>) -> Supervisor {
        Supervisor {
            control,
            clients: Vec::new(),
            waiters: Vec::new(),
            kill_at: None,
            ended_by: None,
            restart_at: None,
            last_code: None,
            health,
            trim: false,
            trim_pending: false,
        }
    }

    /// Whether a `stop` or `kill` request ended the last run, for its restart policy.
    pub fn ended_by(&self) -> Option<EndedBy> {
        self.ended_by
    }

    /// Marks the container as stopped by its user (a foreground `kiln run` that got
    /// Ctrl-C).
    pub fn mark_stopped(&mut self) {
        self.ended_by = Some(EndedBy::Stop);
    }

    /// Tells each waiter the container's exit code.
    pub fn answer(&mut self, code: i32) {
        for mut w in self.waiters.drain(..) {
            let _ = w.set_nonblocking(false);
            let _ = w.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = writeln!(w, "exited {code}");
        }
    }

    /// Serves the control socket, runs the healthcheck and writes the output to the log
    /// until the container's PID 1 has exited (it is not reaped: `running.wait()` does that
    /// next).
    pub fn supervise(
        &mut self,
        running: &RunningContainer,
        mut output: Option<OutputLog>,
    ) -> Result<()> {
        self.last_code = None;
        self.ended_by = None;
        self.trim_pending = self.trim;
        if let Some(health) = &mut self.health {
            health.restart()?;
        }
        let pidfd = running.pidfd()?;
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
            let mut fds = vec![poll_in(pidfd.as_raw_fd())];
            if let Some(streams) = &streams {
                fds.extend(streams.iter().map(|s| poll_in(if s.3 { s.0 } else { -1 })));
            }
            self.wait_for_events(&mut fds, Some(running))?;
            if let (Some(streams), Some(out)) = (&mut streams, &mut output) {
                for (i, stream) in streams.iter_mut().enumerate() {
                    if fds[1 + i].revents != 0 {
                        stream.3 = copy_to_log(stream, &mut out.writer, &mut buf)?;
                    }
                }
            }
            if fds[0].revents != 0 {
                break;
            }
        }
        self.kill_at = None;
        if let Some(health) = &mut self.health {
            health.end_probe();
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
        Ok(())
    }

    /// Waits `delay` before the container ended with `code` is started again, answering
    /// requests meanwhile; `false` when a `stop` came, or `stopped()` (looked at every
    /// 100 ms: the runner's own signals) says so, and it is not to start.
    pub fn wait_to_restart(
        &mut self,
        delay: Duration,
        code: i32,
        stopped: &dyn Fn() -> bool,
    ) -> Result<bool> {
        self.last_code = Some(code);
        let until = Instant::now() + delay;
        while self.ended_by != Some(EndedBy::Stop) && Instant::now() < until {
            if stopped() {
                self.ended_by = Some(EndedBy::Stop);
                break;
            }
            self.restart_at = Some(until.min(Instant::now() + SIGNAL_CHECK));
            self.wait_for_events(&mut Vec::new(), None)?;
        }
        self.restart_at = None;
        Ok(self.ended_by != Some(EndedBy::Stop))
    }

    /// One `poll` of `fds` (the caller's, first) with the socket, its clients and the
    /// healthcheck; then serves what is ready on kiln's side.
    fn wait_for_events(
        &mut self,
        fds: &mut Vec<libc::pollfd>,
        running: Option<&RunningContainer>,
    ) -> Result<()> {
        let own = fds.len();
        fds.push(poll_in(self.control.listener.as_raw_fd()));
        let health_fds = self.health.as_ref().map(|h| h.fds()).unwrap_or([-1, -1]);
        fds.extend(health_fds.map(poll_in));
        let first_client = fds.len();
        fds.extend(self.clients.iter().map(|c| poll_in(c.stream.as_raw_fd())));
        if std::mem::take(&mut self.trim_pending) {
            super::trim::trim_memory();
        }
        poll(fds, self.timeout(running.is_some()))?;
        self.serve_clients(&fds[first_client..], running);
        if fds[own].revents != 0 {
            self.accept();
        }
        if running.is_some() {
            if let Some(health) = &mut self.health {
                // What starting and recording a probe needed is given back until the next.
                self.trim_pending |= health.advance()? && self.trim;
            }
        }
        self.kill_when_due(running);
        fds.truncate(own);
        Ok(())
    }

    /// Milliseconds until the next thing due (a `stop`'s SIGKILL, a probe, the end of a
    /// restart's delay), or -1.
    fn timeout(&self, running: bool) -> libc::c_int {
        let kill = self
            .kill_at
            .map(|at| at.saturating_duration_since(Instant::now()));
        let health = self.health.as_ref().filter(|_| running).map(|h| h.due_in());
        let restart = self
            .restart_at
            .filter(|_| !running)
            .map(|at| at.saturating_duration_since(Instant::now()));
        match [kill, health, restart].into_iter().flatten().min() {
            None => -1,
            Some(d) if d == Duration::MAX => -1,
            // Rounded up: a poll that ends a little early would only spin.
            Some(d) => d.as_millis().saturating_add(1).min(i32::MAX as u128) as libc::c_int,
        }
    }

    fn kill_when_due(&mut self, running: Option<&RunningContainer>) {
        if self.kill_at.is_some_and(|at| at <= Instant::now()) {
            self.kill_at = None;
            if let Some(running) = running {
                let _ = running.signal(Signal::SIGKILL);
            }
        }
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.control.listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                self.clients.push(Client {
                    stream,
                    request: Vec::new(),
                });
            }
        }
    }

    /// Reads from the clients `ready` says are readable, and handles complete requests.
    fn serve_clients(&mut self, ready: &[libc::pollfd], running: Option<&RunningContainer>) {
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
                    self.handle(client.stream, &line, running);
                }
                None if client.request.len() < MAX_REQUEST => keep.push(client),
                None => reply(client.stream, "error request too long"),
            }
        }
        self.clients.extend(keep);
    }

    fn handle(&mut self, stream: UnixStream, line: &str, running: Option<&RunningContainer>) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match (words.as_slice(), running) {
            (["signal", n], _) => match (parse_signal(n), running) {
                (None, _) => reply(stream, "error bad signal"),
                // Between runs there is no process to signal (docker refuses too).
                (Some(_), None) => reply(stream, "restarting"),
                (Some(signal), Some(running)) => {
                    self.ended_by.get_or_insert(EndedBy::Kill);
                    match running.signal(signal) {
                        Ok(()) => reply(stream, "ok"),
                        Err(e) => reply(stream, &format!("error {e}")),
                    }
                }
            },
            (["stop", n, seconds], _) => match (parse_signal(n), seconds.parse::<u64>()) {
                (Some(signal), Ok(seconds)) => {
                    self.ended_by = Some(EndedBy::Stop);
                    match (running, self.last_code) {
                        (Some(running), _) => {
                            let _ = running.signal(signal);
                            let at = Instant::now() + Duration::from_secs(seconds);
                            self.kill_at = Some(self.kill_at.map_or(at, |k| k.min(at)));
                            self.waiters.push(stream);
                        }
                        (None, Some(code)) => reply(stream, &format!("exited {code}")),
                        (None, None) => self.waiters.push(stream),
                    }
                }
                _ => reply(stream, "error bad stop request"),
            },
            (["wait"], _) => self.waiters.push(stream),
            _ => reply(stream, "error unknown request"),
        }
    }
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
    /// A signal came between two runs of a container with a restart policy.
    Restarting,
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
        _ if answer == "restarting" => Some(Reply::Restarting),
        Some(("exited", code)) => code.parse().ok().map(Reply::Exited),
        Some(("error", why)) => Some(Reply::Error(why.to_owned())),
        _ => None,
    })
}
