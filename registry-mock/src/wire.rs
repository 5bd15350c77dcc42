//! How a response goes onto the socket: honestly, or with the byte-level lie a fault asks
//! for.
//!
//! This is why the crate uses plain `std::net` threads and no HTTP framework: a framework
//! keeps `Content-Length` truthful and closes connections politely, and these faults need
//! exactly the opposite (a reset after K bytes, a body that never ends, one byte at a time).

use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::faults::FaultKind;
use crate::http::{head_bytes, Response};

/// The registry's "we are shutting down" signal, which waiting faults also listen to.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    wakeup: Condvar,
}

impl Stop {
    pub fn trigger(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wakeup.notify_all();
    }

    pub fn is_set(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `duration` unless stopped first; true when stopped.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stopped = self
                .wakeup
                .wait_timeout(stopped, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// What the connection needs to know to send one response.
pub struct Sending<'a> {
    pub response: &'a Response,
    /// HEAD: headers describe the body, which is not sent.
    pub head_only: bool,
    pub keep_alive: bool,
    /// A body-shaping or stalling fault, if one fired.
    pub fault: Option<FaultKind>,
    pub stop: &'a Stop,
    pub stall_limit: Duration,
}

/// Writes the response; returns whether the connection may carry another request.
pub fn send(mut stream: &TcpStream, sending: &Sending) -> io::Result<bool> {
    let response = sending.response;
    let body: &[u8] = if sending.head_only {
        &[]
    } else {
        &response.body
    };
    let full_length = response.body.len() as u64;
    match sending.fault {
        None | Some(FaultKind::Corrupt) => {
            let close = !sending.keep_alive;
            let mut out = head_bytes(response, Some(full_length), close);
            out.extend_from_slice(body);
            stream.write_all(&out)?;
            Ok(sending.keep_alive)
        }
        Some(FaultKind::Stall) => {
            sending.stop.sleep(sending.stall_limit);
            Ok(false)
        }
        Some(FaultKind::Reset(_)) if response.status == 0 => {
            // An upload cut short: the request "broke" before any answer.
            set_zero_linger(stream)?;
            Ok(false)
        }
        Some(FaultKind::Reset(keep)) => {
            let mut out = head_bytes(response, Some(full_length), false);
            out.extend_from_slice(&body[..keep.min(body.len())]);
            stream.write_all(&out)?;
            set_zero_linger(stream)?;
            Ok(false)
        }
        Some(FaultKind::Hang(keep)) => {
            let mut out = head_bytes(response, Some(full_length), false);
            out.extend_from_slice(&body[..keep.min(body.len())]);
            stream.write_all(&out)?;
            sending.stop.sleep(sending.stall_limit);
            Ok(false)
        }
        Some(kind @ FaultKind::Trickle(_)) => {
            stream.write_all(&head_bytes(response, Some(full_length), false))?;
            for byte in body {
                stream.write_all(std::slice::from_ref(byte))?;
                if sending.stop.sleep(kind.trickle_interval()) {
                    return Ok(false);
                }
            }
            Ok(sending.keep_alive)
        }
        Some(FaultKind::LongLength) => {
            let mut out = head_bytes(response, Some(full_length + 1), true);
            out.extend_from_slice(body);
            stream.write_all(&out)?;
            Ok(false)
        }
        Some(FaultKind::ShortLength) => {
            let declared = full_length.saturating_sub(1);
            let mut out = head_bytes(response, Some(declared), !sending.keep_alive);
            out.extend_from_slice(&body[..body.len().min(declared as usize)]);
            stream.write_all(&out)?;
            Ok(sending.keep_alive)
        }
        Some(FaultKind::Endless) => send_endless(stream, response, sending.stop),
        // Faults that change what is answered, not how, never reach the wire.
        Some(_) => Err(io::Error::other("fault cannot shape a response body")),
    }
}

/// With a zero linger time, closing the socket sends RST instead of FIN.
fn set_zero_linger(stream: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is an open socket owned by `stream`, and the option value is
    // a live `linger` whose exact size is passed along.
    let result = unsafe {
        nix::libc::setsockopt(
            stream.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            std::mem::size_of_val(&linger) as nix::libc::socklen_t,
        )
    };
    match result {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// A chunked body of spaces (valid JSON whitespace, so a manifest parser keeps reading)
/// until the client hangs up or the registry stops.
fn send_endless(mut stream: &TcpStream, response: &Response, stop: &Stop) -> io::Result<bool> {
    const CHUNK: usize = 64 << 10;
    stream.write_all(&head_bytes(response, None, true))?;
    let mut chunk = format!("{CHUNK:x}\r\n").into_bytes();
    chunk.extend(std::iter::repeat_n(b' ', CHUNK));
    chunk.extend_from_slice(b"\r\n");
    while !stop.is_set() {
        if stream.write_all(&chunk).is_err() {
            break;
        }
    }
    Ok(false)
}

/// Flips the bits of the middle byte, keeping the length: only a digest check can tell.
pub fn corrupt(body: &mut [u8]) {
    if let Some(middle) = body.get_mut(body.len() / 2) {
        *middle ^= 0xff;
    }
}
