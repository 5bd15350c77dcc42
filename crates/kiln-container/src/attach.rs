//! `kiln attach` to a detached container: the stream between its runner and the client.
//!
//! The runner keeps the container's stdio (pipes, or the pty's master with `-t`); a client
//! that sends `attach` on the control socket keeps that connection, and from then on the
//! runner sends it every chunk of output it reads, framed as docker's attach stream is
//! (one byte for the stream, 1 stdout or 2 stderr, three zero bytes, the length as a
//! 32-bit big-endian number, the bytes), and the client sends raw bytes that the runner
//! writes to the container's stdin. The runner never blocks on a client: output a client
//! does not take is kept up to [`MAX_PENDING`] and the client is dropped beyond that, and
//! stdin from clients is read only while the container takes what came before.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::error::{ContainerError, Result};
use super::log::Stream;

/// Output kept for a client that reads slower than the container writes.
const MAX_PENDING: usize = 1 << 20;
/// The most stdin bytes taken from clients before the container has read them.
pub(crate) const MAX_STDIN_PENDING: usize = 64 * 1024;
/// A frame's header: stream, three zero bytes, the length.
const HEADER: usize = 8;

/// What an attached client gets: whether the container has a terminal and a stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachMode {
    pub tty: bool,
    pub stdin: bool,
}

impl AttachMode {
    /// The runner's answer to `attach`.
    pub(crate) fn answer(self) -> String {
        format!(
            "ok {} {}",
            if self.tty { "tty" } else { "pipes" },
            if self.stdin { "stdin" } else { "nostdin" }
        )
    }

    fn parse(answer: &str) -> Option<AttachMode> {
        let words: Vec<&str> = answer.split_whitespace().collect();
        match words.as_slice() {
            ["ok", kind, stdin] => Some(AttachMode {
                tty: *kind == "tty",
                stdin: *stdin == "stdin",
            }),
            _ => None,
        }
    }
}

/// An attached client, on the runner's side.
pub(crate) struct Attached {
    pub(crate) stream: UnixStream,
    /// Output not yet taken by the client.
    pending: Vec<u8>,
    /// The client still sends stdin.
    pub(crate) sending: bool,
    /// Dropped: it went away, or fell too far behind.
    pub(crate) gone: bool,
}

impl Attached {
    pub(crate) fn new(stream: UnixStream, stdin: bool) -> Attached {
        let _ = stream.set_nonblocking(true);
        Attached {
            stream,
            pending: Vec::new(),
            sending: stdin,
            gone: false,
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Whether output waits for the client (poll it for `POLLOUT`).
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Queues one chunk of the container's output and sends what the client takes.
    pub(crate) fn send(&mut self, stream: Stream, bytes: &[u8]) {
        let kind = match stream {
            Stream::Stdout => 1u8,
            Stream::Stderr => 2u8,
        };
        self.pending.extend_from_slice(&[kind, 0, 0, 0]);
        self.pending
            .extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        self.pending.extend_from_slice(bytes);
        self.flush();
    }

    /// Sends what is pending, as far as the client takes it now.
    pub(crate) fn flush(&mut self) {
        while !self.pending.is_empty() && !self.gone {
            match self.stream.write(&self.pending) {
                Ok(0) => self.gone = true,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => self.gone = true,
            }
        }
        if self.pending.len() > MAX_PENDING {
            self.gone = true;
        }
    }

    /// Reads stdin the client sent, up to `room` bytes; `None` once it sends no more.
    pub(crate) fn read_stdin(&mut self, room: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; room.clamp(1, 16 * 1024)];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.sending = false;
                None
            }
            Ok(n) => {
                buf.truncate(n);
                Some(buf)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                Some(Vec::new())
            }
            Err(_) => {
                self.gone = true;
                None
            }
        }
    }

    /// At the end of a run: the rest of the output, within a second.
    pub(crate) fn finish(mut self) {
        let _ = self.stream.set_nonblocking(false);
        let _ = self.stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = self.stream.write_all(&self.pending);
    }
}

/// The client's side: a connection to the runner of the container in `dir` that has said
/// yes to `attach`.
pub struct AttachStream {
    pub stream: UnixStream,
    pub mode: AttachMode,
}

impl AttachStream {
    /// Asks the runner to attach; `Err(MonitorRefused)` when it cannot (a container that
    /// runs in the foreground of another kiln, or restarts), `NotRunning` when none runs it.
    pub fn connect(dir: &kiln_store::ContainerDir) -> Result<AttachStream> {
        let (stream, answer) = super::monitor::open_request(dir, "attach")?
            .ok_or_else(|| ContainerError::NotRunning(dir.id.clone()))?;
        if let Some(why) = answer.strip_prefix("error ") {
            return Err(ContainerError::MonitorRefused(why.to_owned()));
        }
        let mode = AttachMode::parse(&answer)
            .ok_or_else(|| ContainerError::MonitorRefused(format!("answered {answer:?}")))?;
        Ok(AttachStream { stream, mode })
    }

    /// The next chunk of output, `None` at the end (the container ended, or the runner
    /// dropped this client).
    pub fn next_output(&mut self) -> std::io::Result<Option<(Stream, Vec<u8>)>> {
        let mut header = [0u8; HEADER];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let stream = match header[0] {
            2 => Stream::Stderr,
            _ => Stream::Stdout,
        };
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let mut bytes = vec![0u8; len.min(MAX_PENDING)];
        self.stream.read_exact(&mut bytes)?;
        Ok(Some((stream, bytes)))
    }
}
