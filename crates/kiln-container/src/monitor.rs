//! The process that runs a container, and how other kiln commands talk to it.
//!
//! Whoever starts a container stays its parent until it ends: a foreground `kiln run`, or
//! for `kiln run -d` a *monitor* (kiln re-executed in its own session, conmon's role). It
//! holds the container's lock (see `kiln_store::containers`), and a [`Supervisor`] is its
//! one loop: a single thread `poll`s the container's pidfd, its stdio (pipes or pty, the
//! output written to the log and to attached clients, when detached), the healthcheck
//! probe and a *control socket* in the container's dir, until the container's PID 1
//! exits; then the caller records the exit, the supervisor answers whoever waits, and,
//! under a restart policy, waits out the delay (still serving the socket) before the
//! caller starts the container again.
//!
//! Why a socket rather than signals to the monitor: a request names an exact action
//! (`signal 15`, `stop 15 10`, `wait`, `attach`) and gets an answer (the exit code, a
//! stream), without racing PID reuse, and a stop reaches the restart policy. The monitor
//! signals its own unreaped
//! child, so a signal never reaches a recycled PID; `stop`'s SIGKILL deadline lives in the
//! monitor, so it holds even if the `kiln stop` that asked is interrupted.
//!
//! Protocol: one line per connection, answered by one line. `signal N` → `ok` (or
//! `restarting` between two runs); `stop N SECONDS` → `exited CODE` once the container
//! ended (N first, SIGKILL after SECONDS); `wait` → `exited CODE`; `resize ROWS COLS` →
//! `ok` (the pty of a `-t` container); `attach` → `ok tty|pipes stdin|nostdin`, after which
//! the connection carries the container's stdio (see `attach`); `connect NETWORK
//! [ALIAS…]` and `disconnect NETWORK` → `ok` once the runner changed the container's
//! networks (see `live_networks`: the runner holds the leases); anything else →
//! `error TEXT`, where a tab may separate a hint from the text. The socket is
//! `<dir>/control.sock`, reached through `/proc/self/fd/N/` (a socket path is limited to
//! 108 bytes, which a store below a long temp dir would exceed).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant, SystemTime};

use kiln_runtime::{OutputPipes, RunningContainer};
use kiln_store::ContainerDir;
use nix::sys::signal::Signal;

use super::attach::{AttachMode, Attached, MAX_STDIN_PENDING};
use super::error::{ContainerError, Result};
use super::health::HealthProbe;
use super::live_networks::ConnectError;
use super::log::{LineSplitter, LogWriter, Stream};
use super::restart::EndedBy;

const SOCKET: &str = "control.sock";
/// The longest request line (`connect` names a network and its aliases).
const MAX_REQUEST: usize = 1024;
/// The longest answer line (an error with its hint).
const MAX_ANSWER: usize = 4096;
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

/// A detached container's stdio, kept by its runner: the output goes to the log and to
/// attached clients, their input to the container.
pub struct OutputLog {
    /// Its stdout and stderr pipes, or its pty's master.
    outputs: Vec<(OwnedFd, Stream)>,
    /// Its stdin (`-i`): a pipe, or the pty's master.
    input: Option<OwnedFd>,
    tty: bool,
    writer: LogWriter,
}

impl OutputLog {
    /// A container started without a terminal: its pipes.
    pub fn pipes(pipes: OutputPipes, writer: LogWriter) -> OutputLog {
        OutputLog {
            outputs: vec![
                (pipes.stdout, Stream::Stdout),
                (pipes.stderr, Stream::Stderr),
            ],
            input: pipes.stdin,
            tty: false,
            writer,
        }
    }

    /// A container with a terminal: its pty's master, read for its output and written
    /// with its input when `interactive`.
    pub fn console(master: OwnedFd, interactive: bool, writer: LogWriter) -> Result<OutputLog> {
        let input = match interactive {
            true => Some(master.try_clone().map_err(control("dup the pty"))?),
            false => None,
        };
        Ok(OutputLog {
            outputs: vec![(master, Stream::Stdout)],
            input,
            tty: true,
            writer,
        })
    }

    fn mode(&self) -> AttachMode {
        AttachMode {
            tty: self.tty,
            stdin: self.input.is_some(),
        }
    }
}

/// What a runner does for `connect` and `disconnect` requests: the container's
/// networks ([`crate::live_networks::LiveNetworks`]) and what only the caller can do
/// (start the network's DNS responder, have an idle network removed later).
pub trait NetworkRequests {
    /// `pid`: the container's first process while it runs; `None` between two runs.
    fn connect(
        &mut self,
        pid: Option<i32>,
        network: &str,
        aliases: &[String],
    ) -> std::result::Result<(), ConnectError>;

    fn disconnect(&mut self, network: &str) -> std::result::Result<(), ConnectError>;
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
    /// What `attach` gets during this run (`None`: no output kept, or between runs).
    attach_mode: Option<AttachMode>,
    /// The pty's master during this run, for `resize`.
    console: Option<RawFd>,
    attached: Vec<Attached>,
    /// Stdin from attached clients that the container has not read yet.
    stdin_pending: Vec<u8>,
    /// Serves `connect` and `disconnect` (none: refused).
    networks: Option<Box<dyn NetworkRequests>>,
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
            networks: None,
            trim: false,
            trim_pending: false,
            attach_mode: None,
            console: None,
            attached: Vec::new(),
            stdin_pending: Vec::new(),
        }
    }

    /// Serves `connect` and `disconnect` requests with `networks`.
    pub fn serve_network_requests(&mut self, networks: Box<dyn NetworkRequests>) {
        self.networks = Some(networks);
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

    /// Serves the control socket, runs the healthcheck, writes the output to the log and
    /// relays attached clients until the container's PID 1 has exited (it is not reaped:
    /// `running.wait()` does that next).
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
        self.attach_mode = output.as_ref().map(OutputLog::mode);
        self.console = output
            .as_ref()
            .filter(|o| o.tty)
            .map(|o| o.outputs[0].0.as_raw_fd());
        let mut streams: Vec<OutputStream> = output
            .as_ref()
            .map(|o| {
                o.outputs
                    .iter()
                    .map(|(fd, name)| (fd.as_raw_fd(), *name, LineSplitter::default(), true))
                    .collect()
            })
            .unwrap_or_default();
        let input = output
            .as_ref()
            .and_then(|o| o.input.as_ref())
            .map(|fd| fd.as_raw_fd());
        if let Some(fd) = input {
            set_nonblocking(fd);
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut fds = vec![poll_in(pidfd.as_raw_fd())];
            fds.extend(streams.iter().map(|s| poll_in(if s.3 { s.0 } else { -1 })));
            let input_at = fds.len();
            fds.push(match (input, self.stdin_pending.is_empty()) {
                (Some(fd), false) => poll_out(fd),
                _ => poll_in(-1),
            });
            self.wait_for_events(&mut fds, Some(running))?;
            if let Some(out) = &mut output {
                for (i, stream) in streams.iter_mut().enumerate() {
                    if fds[1 + i].revents != 0 {
                        stream.3 = self.copy_output(stream, &mut out.writer, &mut buf)?;
                    }
                }
            }
            if let Some(fd) = input {
                if fds[input_at].revents != 0 || !self.stdin_pending.is_empty() {
                    self.write_stdin(fd);
                }
            }
            if fds[0].revents != 0 {
                break;
            }
        }
        self.kill_at = None;
        self.console = None;
        if let Some(health) = &mut self.health {
            health.end_probe();
        }
        // PID 1 is gone, and the kernel kills the rest of its namespace: the pipes end soon.
        if let Some(out) = &mut output {
            for stream in streams.iter_mut() {
                while stream.3 {
                    wait_readable(stream.0);
                    stream.3 = self.copy_output(stream, &mut out.writer, &mut buf)?;
                }
            }
        }
        // Attached clients see the end of the stream: the run is over.
        self.attach_mode = None;
        self.stdin_pending.clear();
        for client in self.attached.drain(..) {
            client.finish();
        }
        Ok(())
    }

    /// Copies what is in an output pipe (or the pty) to the log and to attached clients;
    /// `false` at its end.
    fn copy_output(
        &mut self,
        stream: &mut OutputStream,
        log: &mut LogWriter,
        buf: &mut [u8],
    ) -> Result<bool> {
        let (fd, name, splitter, _) = stream;
        // SAFETY: the buffer is valid for its length; the fd is the runner's pipe or pty.
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
        if n > 0 {
            let bytes = &buf[..n as usize];
            for client in &mut self.attached {
                client.send(*name, bytes);
            }
            self.attached.retain(|c| !c.gone);
            return splitter.push(bytes, &mut write).map(|()| true);
        }
        let e = std::io::Error::last_os_error();
        match n {
            n if n < 0 && matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {
                Ok(true)
            }
            // EOF of a pipe, EIO of a pty whose last slave closed.
            _ => splitter.finish(&mut write).map(|()| false),
        }
    }

    /// Writes stdin that clients sent to the container, as far as it takes it now.
    fn write_stdin(&mut self, fd: RawFd) {
        while !self.stdin_pending.is_empty() {
            let pending = &self.stdin_pending;
            // SAFETY: the buffer is valid for its length; the fd is the container's stdin.
            let n = unsafe { libc::write(fd, pending.as_ptr().cast(), pending.len()) };
            if n > 0 {
                self.stdin_pending.drain(..n as usize);
                continue;
            }
            let e = std::io::Error::last_os_error();
            if n < 0 && e.kind() == ErrorKind::Interrupted {
                continue;
            }
            if n < 0 && e.kind() != ErrorKind::WouldBlock {
                // The container closed its stdin: what clients type goes nowhere.
                self.stdin_pending.clear();
            }
            return;
        }
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
        let first_attached = fds.len();
        let take_stdin = self.stdin_pending.len() < MAX_STDIN_PENDING;
        fds.extend(self.attached.iter().map(|c| libc::pollfd {
            fd: c.fd(),
            events: (if c.sending && take_stdin {
                libc::POLLIN
            } else {
                0
            }) | (if c.has_pending() { libc::POLLOUT } else { 0 }),
            revents: 0,
        }));
        if std::mem::take(&mut self.trim_pending) {
            super::trim::trim_memory();
        }
        poll(fds, self.timeout(running.is_some()))?;
        self.serve_attached(&fds[first_attached..]);
        self.serve_clients(&fds[first_client..first_attached], running);
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

    /// Takes stdin from the attached clients `ready` says sent some, and sends them the
    /// output they can take now.
    fn serve_attached(&mut self, ready: &[libc::pollfd]) {
        for (client, fd) in self.attached.iter_mut().zip(ready) {
            if fd.revents & libc::POLLOUT != 0 {
                client.flush();
            }
            let hung_up = fd.revents & (libc::POLLHUP | libc::POLLERR) != 0;
            if fd.revents & libc::POLLIN != 0 || (hung_up && client.sending) {
                let room = MAX_STDIN_PENDING.saturating_sub(self.stdin_pending.len());
                if let Some(bytes) = client.read_stdin(room) {
                    self.stdin_pending.extend_from_slice(&bytes);
                }
            } else if hung_up {
                // Gone for good: poll would report it again at once.
                client.gone = true;
            }
        }
        self.attached.retain(|c| !c.gone);
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
            (["attach"], _) => match self.attach_mode {
                Some(mode) => {
                    let mut stream = stream;
                    if writeln!(stream, "{}", mode.answer()).is_ok() {
                        self.attached.push(Attached::new(stream, mode.stdin));
                    }
                }
                None if running.is_none() => reply(stream, "error the container is restarting"),
                None => reply(
                    stream,
                    "error its output goes to the kiln run that runs it in the foreground",
                ),
            },
            (["resize", rows, cols], _) => match (self.console, rows.parse(), cols.parse()) {
                (Some(fd), Ok(rows), Ok(cols)) => {
                    let size = libc::winsize {
                        ws_row: rows,
                        ws_col: cols,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ reads one winsize from the pointer; fd is the
                    // container's pty master.
                    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) };
                    reply(stream, "ok");
                }
                _ => reply(stream, "error no terminal to resize"),
            },
            (["connect", network, aliases @ ..], _) => {
                let aliases: Vec<String> = aliases.iter().map(|a| a.to_string()).collect();
                let pid = running.map(RunningContainer::pid);
                let done = self
                    .networks
                    .as_mut()
                    .map(|n| n.connect(pid, network, &aliases));
                reply_network(stream, done);
            }
            (["disconnect", network], _) => {
                let done = self.networks.as_mut().map(|n| n.disconnect(network));
                reply_network(stream, done);
            }
            _ => reply(stream, "error unknown request"),
        }
    }
}

/// `ok`, or `error TEXT<tab>HINT`.
fn reply_network(stream: UnixStream, done: Option<std::result::Result<(), ConnectError>>) {
    match done {
        None => reply(stream, "error this runner does not change networks"),
        Some(Ok(())) => reply(stream, "ok"),
        Some(Err(e)) => {
            let text = format!("{e}\t{}", e.hint().unwrap_or_default());
            reply(stream, &format!("error {}", text.replace('\n', " ")));
        }
    }
}

/// A stream being copied: its fd, its name, its line splitter, whether it is still open.
type OutputStream = (RawFd, Stream, LineSplitter, bool);

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

fn poll_out(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl flags of an fd the runner owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

fn wait_readable(fd: RawFd) {
    let mut fds = [poll_in(fd)];
    let _ = poll(&mut fds, -1);
}

/// Sends `request` to the runner of the container in `dir` and reads its one-line answer,
/// keeping the connection (for `attach`, which goes on with a stream). `None` when no
/// runner listens or it ended without answering.
pub fn open_request(dir: &ContainerDir, request: &str) -> Result<Option<(UnixStream, String)>> {
    open_request_within(dir, request, Some(Duration::from_secs(5)))
}

fn open_request_within(
    dir: &ContainerDir,
    request: &str,
    timeout: Option<Duration>,
) -> Result<Option<(UnixStream, String)>> {
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
    // Byte by byte up to the newline: what follows belongs to the caller (attach's stream).
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while answer.len() < MAX_ANSWER {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => answer.push(byte[0]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(ContainerError::MonitorTimeout)
            }
            Err(_) => return Ok(None),
        }
    }
    let _ = stream.set_read_timeout(None);
    Ok(Some((
        stream,
        String::from_utf8_lossy(&answer).into_owned(),
    )))
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
    let Some((stream, answer)) = open_request_within(dir, request, timeout)? else {
        return Ok(None);
    };
    drop(stream);
    let answer = answer.trim_end();
    Ok(match answer.split_once(' ') {
        _ if answer == "ok" => Some(Reply::Ok),
        _ if answer == "restarting" => Some(Reply::Restarting),
        Some(("exited", code)) => code.parse().ok().map(Reply::Exited),
        Some(("error", why)) => Some(Reply::Error(why.to_owned())),
        _ => None,
    })
}
