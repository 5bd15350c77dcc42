//! `kiln attach`: this terminal joined to a detached container's stdio, through the
//! process that runs it (`kiln_container::attach`), as `docker attach` does.
//!
//! The output arrives as it is written (stdout to stdout, stderr to stderr); with `-i` on
//! the container, what is typed goes to its stdin; with `-t`, this terminal is put in raw
//! mode so that every key (Ctrl-C included) reaches the container's terminal, and its size
//! follows this one. Ctrl-P Ctrl-Q detaches and leaves the container running. The command
//! exits with the container's code when it ends.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use nix::sys::termios::{self, SetArg, Termios};

use super::containers::{container_store, find};
use super::{CmdResult, Failure, Globals};
use kiln_container::attach::AttachStream;
use kiln_container::log::Stream;
use kiln_container::{lifecycle, monitor, ContainerError};
use kiln_store::containers::Status;
use kiln_store::ContainerDir;

/// Ctrl-P then Ctrl-Q: docker's default detach keys.
const DETACH_KEYS: [u8; 2] = [0x10, 0x11];
/// How often a terminal's size is compared with the one the container was told.
const SIZE_EVERY: Duration = Duration::from_millis(250);

/// Set by the stdin thread when the detach keys were typed.
static DETACHED: AtomicBool = AtomicBool::new(false);

#[derive(Args, Debug)]
#[command(
    about = "Attach this terminal to a running detached container: its output, and its stdin with -i",
    after_help = "Ctrl-P Ctrl-Q detaches and leaves the container running. Without a terminal in \
the container (-t), Ctrl-C is passed to the container unless --sig-proxy=false.\n\nExamples:\n  \
kiln run -dit --name box hello sh && kiln attach box\n  kiln attach --no-stdin web      # only follow its output\n  \
echo hello | kiln attach reader"
)]
pub struct AttachArgs {
    /// Do not pass this terminal's input to the container
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    /// Pass Ctrl-C and other termination signals to the container (without -t)
    #[arg(long = "sig-proxy", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    sig_proxy: bool,
    /// Container name or ID (a unique ID prefix is enough)
    container: String,
}

pub fn attach(globals: &Globals, args: AttachArgs) -> CmdResult {
    let store = container_store(globals)?;
    let (dir, state) = find(&store, &args.container)?;
    match dir.status(&state) {
        Status::Running { .. } => {}
        Status::Restarting { .. } => {
            return Err(failure(ContainerError::Restarting(args.container.clone())))
        }
        _ => {
            return Err(Failure::user(format!(
                "cannot attach to container {}: it is not running",
                args.container
            ))
            .hint(Some(format!(
                "start it and follow it with kiln start -a {}",
                args.container
            ))))
        }
    }
    let mut conn = AttachStream::connect(&dir).map_err(|e| match e {
        ContainerError::MonitorRefused(why) => Failure::user(format!(
            "cannot attach to container {}: {why}",
            args.container
        )),
        e => failure(e),
    })?;
    let mode = conn.mode;
    let raw = match mode.tty && std::io::stdin().is_terminal() {
        true => RawTerminal::enter(),
        false => None,
    };
    if mode.tty {
        resize_to_this_terminal(&dir);
    }
    if mode.stdin && !args.no_stdin {
        let sink = conn
            .stream
            .try_clone()
            .map_err(|e| Failure::user(format!("attach: {e}")))?;
        let dir = dir.clone();
        std::thread::spawn(move || copy_stdin(sink, &dir, mode.tty));
    }
    if args.sig_proxy && !mode.tty {
        super::signals::forward_to(state.init_pid);
    }
    let copied = copy_output(&mut conn);
    drop(raw);
    super::signals::forward_to(None);
    if DETACHED.load(Ordering::SeqCst) {
        eprintln!("kiln: detached from {}; it goes on running", args.container);
        return Ok(0);
    }
    copied.map_err(|e| Failure::user(format!("attach: {e}")))?;
    let code = lifecycle::wait(&store, &dir).map_err(failure)?;
    Ok(code.unwrap_or(0))
}

fn failure(e: ContainerError) -> Failure {
    let hint = e.hint();
    Failure::user(e).hint(hint)
}

/// Writes the container's output here until its stream ends.
fn copy_output(conn: &mut AttachStream) -> std::io::Result<()> {
    while let Some((stream, bytes)) = conn.next_output()? {
        let written = match stream {
            Stream::Stdout => write_flushed(&mut std::io::stdout().lock(), &bytes),
            Stream::Stderr => write_flushed(&mut std::io::stderr().lock(), &bytes),
        };
        // Our own output is gone (a closed pipe): stop following, like docker.
        if written.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn write_flushed(out: &mut dyn Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes)?;
    out.flush()
}

/// Copies this process's stdin to the container until end of input or the detach keys; the
/// terminal's size follows along with `tty`.
fn copy_stdin(mut sink: UnixStream, dir: &ContainerDir, tty: bool) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 4096];
    let mut after_ctrl_p = false;
    let mut size = terminal_size();
    loop {
        if tty && !wait_for_input(SIZE_EVERY) {
            let now = terminal_size();
            if now != size {
                size = now;
                resize_to_this_terminal(dir);
            }
            continue;
        }
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n);
        for &b in &buf[..n] {
            match (after_ctrl_p, b) {
                (false, k) if k == DETACH_KEYS[0] => after_ctrl_p = true,
                (true, k) if k == DETACH_KEYS[1] => {
                    let _ = sink.write_all(&out);
                    DETACHED.store(true, Ordering::SeqCst);
                    let _ = sink.shutdown(std::net::Shutdown::Both);
                    return;
                }
                (true, k) => {
                    out.extend_from_slice(&[DETACH_KEYS[0], k]);
                    after_ctrl_p = false;
                }
                (false, k) => out.push(k),
            }
        }
        if sink.write_all(&out).is_err() {
            return;
        }
    }
    // End of input: the container's stdin stays open for others, as docker leaves it.
    let _ = sink.shutdown(std::net::Shutdown::Write);
}

/// Whether stdin has input within `timeout`.
fn wait_for_input(timeout: Duration) -> bool {
    let mut fds = [libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd record.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout.as_millis() as libc::c_int) };
    n != 0
}

/// This terminal's rows and columns, if stdin or stdout is one.
fn terminal_size() -> Option<(u16, u16)> {
    [0, 1].into_iter().find_map(|fd| {
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize to the pointer.
        let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0;
        (ok && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
    })
}

/// Tells the container's runner this terminal's size, for the container's pty.
fn resize_to_this_terminal(dir: &ContainerDir) {
    if let Some((rows, cols)) = terminal_size() {
        let _ = monitor::request(
            dir,
            &format!("resize {rows} {cols}"),
            Some(Duration::from_secs(2)),
        );
    }
}

/// This terminal in raw mode until dropped.
struct RawTerminal(Termios);

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.0);
    }
}
