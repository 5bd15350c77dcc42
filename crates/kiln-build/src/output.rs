//! A running step's output, cut into lines the way a terminal shows them.
//!
//! `\n` ends a line; `\r` alone sends the cursor back to rewrite the line being written,
//! which is how dpkg, pip and curl draw progress. Passing such bytes on as they are garbles
//! whatever draws them (a spinner, a log), so each rewrite is reported as an *update* of the
//! current line and only the line's last text as a line: a progress bar becomes one
//! updating line on a terminal and one line in a log. (A rewrite shorter than the text
//! before it would leave that text's tail on a real terminal; the line reported is the
//! last text alone.)

use std::io::Read;
use std::os::fd::OwnedFd;

use super::{Progress, StepRef, Stream};

/// A line longer than this is passed on in pieces, so output without newlines cannot
/// grow kiln's memory.
const MAX_LINE: usize = 64 << 10;

/// Reads `fd` to its end, reporting its lines and updates to `progress`.
pub(super) fn forward(progress: &dyn Progress, step: &StepRef, stream: Stream, fd: OwnedFd) {
    let mut file = std::fs::File::from(fd);
    let mut lines = Lines::default();
    let mut emit = |piece: Piece| match piece {
        Piece::Line(line) => progress.step_output(step, stream, line),
        Piece::Update(text) => progress.step_output_update(step, stream, text),
    };
    let mut buf = vec![0; 64 << 10];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => lines.feed(&buf[..n], &mut emit),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    lines.finish(&mut emit);
}

/// What [`Lines`] finds in the bytes it is fed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// A finished line, without its line ending.
    Line(&'a [u8]),
    /// The current text of a line that is being rewritten with `\r`.
    Update(&'a [u8]),
}

/// Splits a byte stream into [`Piece`]s.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    /// The text after the last `\n` or `\r`.
    current: Vec<u8>,
    /// The text of the line's last update, the line's text when `\n` follows `\r` at once.
    last_update: Vec<u8>,
}

impl Lines {
    pub fn feed(&mut self, bytes: &[u8], emit: &mut dyn FnMut(Piece)) {
        for (i, &byte) in bytes.iter().enumerate() {
            match byte {
                b'\n' => self.end_line(emit),
                // `\r\n` ends a line like `\n`.
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {}
                b'\r' => {
                    if !self.current.is_empty() {
                        emit(Piece::Update(&self.current));
                        std::mem::swap(&mut self.last_update, &mut self.current);
                        self.current.clear();
                    }
                }
                _ => {
                    self.current.push(byte);
                    if self.current.len() >= MAX_LINE {
                        self.end_line(emit);
                    }
                }
            }
        }
    }

    /// The end of the stream: a line without a final newline is still a line.
    pub fn finish(mut self, emit: &mut dyn FnMut(Piece)) {
        if !self.current.is_empty() || !self.last_update.is_empty() {
            self.end_line(emit);
        }
    }

    fn end_line(&mut self, emit: &mut dyn FnMut(Piece)) {
        let line = match self.current.is_empty() {
            true => &self.last_update,
            false => &self.current,
        };
        emit(Piece::Line(line));
        self.current.clear();
        self.last_update.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces of `chunks` fed one after another, as text: `L:line` or `U:update`.
    fn pieces(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut emit = |piece: Piece| {
            out.push(match piece {
                Piece::Line(l) => format!("L:{}", String::from_utf8_lossy(l)),
                Piece::Update(u) => format!("U:{}", String::from_utf8_lossy(u)),
            })
        };
        let mut lines = Lines::default();
        for chunk in chunks {
            lines.feed(chunk, &mut emit);
        }
        lines.finish(&mut emit);
        out
    }

    #[test]
    fn newlines_end_lines_and_a_last_line_needs_none() {
        assert_eq!(pieces(&[b"a\nb\n\nc"]), ["L:a", "L:b", "L:", "L:c"]);
        assert_eq!(pieces(&[b"a\r\nb\r\n"]), ["L:a", "L:b"]);
        assert_eq!(pieces(&[b"pa", b"rt\n"]), ["L:part"]);
        assert!(pieces(&[b""]).is_empty());
    }

    #[test]
    fn carriage_returns_are_updates_of_one_line() {
        assert_eq!(pieces(&[b"10%\r50%\r100%\n"]), ["U:10%", "U:50%", "L:100%"]);
        // dpkg: the line's last text, then `\r\n` or `\r` and `\n`.
        assert_eq!(pieces(&[b"1\r2\r\n"]), ["U:1", "L:2"]);
        assert_eq!(
            pieces(&[b"1\r2\r", b"\nnext\n"]),
            ["U:1", "U:2", "L:2", "L:next"]
        );
        // curl ends with `\r` and no newline at all.
        assert_eq!(pieces(&[b"0%\r", b"100%\r"]), ["U:0%", "U:100%", "L:100%"]);
        assert_eq!(pieces(&[b"\r\r\rx\n"]), ["L:x"]);
    }

    #[test]
    fn an_endless_line_comes_in_pieces() {
        let long = vec![b'x'; MAX_LINE * 2 + 1];
        let found = pieces(&[&long]);
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].len(), 2 + MAX_LINE);
        assert_eq!(found[2], "L:x");
    }
}
