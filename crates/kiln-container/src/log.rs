//! A detached container's log: what its command writes on stdout and stderr, kept in its
//! dir as JSON lines (`{"stream":"stdout","time":"RFC 3339 nanos","log":"line\n"}`, Docker's
//! json-file format), rotated by size, and read back by `kiln logs`.
//!
//! Exists so that the monitor (which writes) and `kiln logs` (which reads, also while the
//! monitor writes) agree on one format and one rotation scheme: `container.log` is the
//! current file; when the next entry would take it past `max_size`, it becomes
//! `container.log.1` (the older ones move up by one, and the oldest beyond `max_files`
//! goes), and a new `container.log` starts. A line longer than [`MAX_ENTRY`] is cut into
//! several entries, as Docker does, so an endless line cannot grow the monitor's memory.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::error::{ContainerError, Result};

/// The longest entry: longer lines are split (Docker's 16 KiB).
pub const MAX_ENTRY: usize = 16 * 1024;

/// `--log-opt max-size=…,max-file=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogOptions {
    /// Bytes a log file may reach before it is rotated.
    pub max_size: u64,
    /// How many files are kept, the current one included.
    pub max_files: u32,
}

impl Default for LogOptions {
    /// 10 MiB × 3.
    fn default() -> Self {
        LogOptions {
            max_size: 10 << 20,
            max_files: 3,
        }
    }
}

impl LogOptions {
    /// Docker's `--log-opt` words: `max-size=10m` (units of 1024), `max-file=3`; each value
    /// may also come as one comma-separated list (`max-size=1m,max-file=2`).
    pub fn parse(words: &[String]) -> Result<LogOptions> {
        let mut options = LogOptions::default();
        for word in words.iter().flat_map(|w| w.split(',')) {
            let bad = || ContainerError::LogOption(word.to_owned());
            match word.split_once('=').ok_or_else(bad)? {
                ("max-size", v) => {
                    options.max_size = kiln_spec::values::size(v).map_err(|_| bad())?;
                    if options.max_size == 0 {
                        return Err(bad());
                    }
                }
                ("max-file", v) => {
                    options.max_files = v.parse().map_err(|_| bad())?;
                    if options.max_files == 0 {
                        return Err(bad());
                    }
                }
                _ => return Err(bad()),
            }
        }
        Ok(options)
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// An RFC 3339 time as docker's `--since` takes it: `2024-05-01T12:00:00Z`, with a
/// fraction, or with an offset (`+02:00`) instead of `Z`; a space may stand for the `T`.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    // humantime reads UTC only: an offset is taken off here and applied after.
    let split = text
        .len()
        .checked_sub(6)
        .and_then(|i| Some((text.get(..i)?, text.get(i..)?)));
    let (utc, offset) = match split {
        Some((time, zone)) if zone.starts_with(['+', '-']) && zone.as_bytes()[3] == b':' => {
            let hours: u64 = zone.get(1..3)?.parse().ok()?;
            let minutes: u64 = zone.get(4..6)?.parse().ok()?;
            (
                time,
                Some((zone.starts_with('+'), hours * 3600 + minutes * 60)),
            )
        }
        _ => (text.strip_suffix(['Z', 'z']).unwrap_or(text), None),
    };
    let time = humantime::parse_rfc3339_weak(utc).ok()?;
    match offset {
        None => Some(time),
        Some((true, east)) => time.checked_sub(Duration::from_secs(east)),
        Some((false, west)) => time.checked_add(Duration::from_secs(west)),
    }
}

/// One entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub stream: Stream,
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
    /// The line with its `\n` (none on a cut or last line), invalid UTF-8 replaced.
    pub log: String,
}

impl LogEntry {
    pub fn timestamp(&self) -> Option<SystemTime> {
        parse_rfc3339(&self.time)
    }
}

/// Appends entries to `container.log`, rotating it.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    options: LogOptions,
}

impl LogWriter {
    /// Opens (or creates, 0600) the current log file at `path` for appending. Never follows
    /// a symlink there: the dir is kiln's, and so must the file be.
    pub fn open(path: PathBuf, options: LogOptions) -> Result<LogWriter> {
        let file = open_append(&path)?;
        let size = file.metadata().map_err(log_error(&path))?.len();
        Ok(LogWriter {
            path,
            file,
            size,
            options,
        })
    }

    /// Writes one entry for `line` (at most [`MAX_ENTRY`] bytes) read at `time`.
    pub fn write(&mut self, stream: Stream, line: &[u8], time: SystemTime) -> Result<()> {
        let entry = LogEntry {
            stream,
            time: humantime::format_rfc3339_nanos(time).to_string(),
            log: String::from_utf8_lossy(line).into_owned(),
        };
        let mut json = serde_json::to_vec(&entry).expect("log entries serialise");
        json.push(b'\n');
        if self.size > 0 && self.size + json.len() as u64 > self.options.max_size {
            self.rotate()?;
        }
        self.file.write_all(&json).map_err(log_error(&self.path))?;
        self.size += json.len() as u64;
        Ok(())
    }

    /// `container.log.(N-1)` → `.N`, …, `container.log` → `.1`; with one file, the file is
    /// emptied instead.
    fn rotate(&mut self) -> Result<()> {
        let keep = self.options.max_files;
        if keep > 1 {
            for n in (1..keep - 1).rev() {
                let _ = fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1));
            }
            fs::rename(&self.path, numbered(&self.path, 1)).map_err(log_error(&self.path))?;
            self.file = open_append(&self.path)?;
        } else {
            self.file.set_len(0).map_err(log_error(&self.path))?;
        }
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(log_error(path))
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn log_error(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError {
    let path = path.to_owned();
    move |source| ContainerError::Log { path, source }
}

/// Cuts a stream's bytes into lines (each with its `\n`) of at most [`MAX_ENTRY`] bytes.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Adds `bytes`; calls `line` for every complete (or full-length) line.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        line: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        while !bytes.is_empty() {
            let room = MAX_ENTRY - self.pending.len();
            let take = bytes.len().min(room);
            match bytes[..take].iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&bytes[..=i]);
                    bytes = &bytes[i + 1..];
                }
                None => {
                    self.pending.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.pending.len() < MAX_ENTRY {
                        continue;
                    }
                }
            }
            line(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// The last line, which had no `\n`, at the end of the stream.
    pub fn finish(&mut self, line: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if !self.pending.is_empty() {
            line(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }
}

/// Reads a container's log, oldest entry first, and then what is appended to it.
pub struct LogReader {
    path: PathBuf,
    /// The current file being read, with its inode, and the bytes of an unfinished line.
    current: Option<(BufReader<File>, u64)>,
    partial: Vec<u8>,
}

impl LogReader {
    /// A reader of the log at `path` (`container.log`); a missing log reads as empty.
    pub fn new(path: PathBuf) -> LogReader {
        LogReader {
            path,
            current: None,
            partial: Vec::new(),
        }
    }

    /// Every entry of the rotated files and the current one, oldest first; the reader is
    /// then at the end of the current file, where [`follow`](LogReader::follow) goes on.
    pub fn read_all(&mut self, entry: &mut dyn FnMut(LogEntry)) -> Result<()> {
        let mut rotated: Vec<(u32, PathBuf)> = (1..)
            .map(|n| (n, numbered(&self.path, n)))
            .take_while(|(_, p)| p.exists())
            .collect();
        rotated.reverse();
        for (_, path) in rotated {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            read_lines(&mut BufReader::new(file), &mut Vec::new(), entry)
                .map_err(log_error(&path))?;
        }
        self.follow(entry)
    }

    /// The entries appended since the last call. When the current file was rotated away,
    /// its rest is read first, then the new file from its start.
    pub fn follow(&mut self, entry: &mut dyn FnMut(LogEntry)) -> Result<()> {
        loop {
            if self.current.is_none() {
                match File::open(&self.path) {
                    Ok(file) => {
                        let inode = file.metadata().map_err(log_error(&self.path))?.ino();
                        self.current = Some((BufReader::new(file), inode));
                        self.partial.clear();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(log_error(&self.path)(e)),
                }
            }
            let (reader, inode) = self.current.as_mut().expect("opened above");
            read_lines(reader, &mut self.partial, entry).map_err(log_error(&self.path))?;
            // A file emptied in place (one file kept) reads again from its start.
            let position = reader.stream_position().map_err(log_error(&self.path))?;
            let now = fs::metadata(&self.path).ok();
            match now {
                Some(m) if m.ino() == *inode && m.len() < position => {
                    reader
                        .seek(SeekFrom::Start(0))
                        .map_err(log_error(&self.path))?;
                    self.partial.clear();
                }
                Some(m) if m.ino() != *inode => {
                    // Rotated: what was appended before the rename has been read above.
                    self.current = None;
                    continue;
                }
                _ => {}
            }
            return Ok(());
        }
    }
}

/// Reads complete lines until the end of what is there; an unfinished last line stays in
/// `partial` for the next call. Lines that do not parse (a torn write) are skipped.
fn read_lines(
    reader: &mut BufReader<File>,
    partial: &mut Vec<u8>,
    entry: &mut dyn FnMut(LogEntry),
) -> std::io::Result<()> {
    loop {
        let n = reader.read_until(b'\n', partial)?;
        if n == 0 || partial.last() != Some(&b'\n') {
            return Ok(());
        }
        if let Ok(e) = serde_json::from_slice::<LogEntry>(partial) {
            entry(e);
        }
        partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn times_are_written_with_nanoseconds_and_read_back_with_offsets() {
        let t = UNIX_EPOCH + Duration::new(1_714_564_800, 123_456_789);
        let text = humantime::format_rfc3339_nanos(t).to_string();
        assert_eq!(text, "2024-05-01T12:00:00.123456789Z");
        assert_eq!(parse_rfc3339(&text), Some(t));
        let noon = UNIX_EPOCH + Duration::from_secs(1_714_564_800);
        assert_eq!(parse_rfc3339("2024-05-01T14:00:00+02:00"), Some(noon));
        assert_eq!(parse_rfc3339("2024-05-01T10:30:00-01:30"), Some(noon));
        assert_eq!(parse_rfc3339("2024-05-01 12:00:00"), Some(noon));
        for bad in [
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "x",
            "2024-05-01T12:00:00+0é:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    fn all(path: &Path) -> Vec<LogEntry> {
        let mut out = Vec::new();
        LogReader::new(path.to_owned())
            .read_all(&mut |e| out.push(e))
            .unwrap();
        out
    }

    #[test]
    fn lines_are_cut_at_newlines_and_at_the_entry_limit() {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::default();
        let mut sink = |l: &[u8]| {
            lines.push(l.to_vec());
            Ok(())
        };
        splitter.push(b"one\ntw", &mut sink).unwrap();
        splitter.push(b"o\nthree", &mut sink).unwrap();
        splitter
            .push(&vec![b'x'; MAX_ENTRY + 5], &mut sink)
            .unwrap();
        splitter.finish(&mut sink).unwrap();
        assert_eq!(lines[0], b"one\n");
        assert_eq!(lines[1], b"two\n");
        assert_eq!(lines[2].len(), MAX_ENTRY);
        assert!(lines[2].starts_with(b"three"));
        assert_eq!(lines[3], vec![b'x'; 10]);
    }

    #[test]
    fn entries_round_trip_and_rotation_keeps_max_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("container.log");
        let options = LogOptions {
            max_size: 300,
            max_files: 3,
        };
        let mut writer = LogWriter::open(path.clone(), options).unwrap();
        let mut reader = LogReader::new(path.clone());
        let mut followed = Vec::new();
        for i in 0..40 {
            let line = format!("line {i}\n");
            writer
                .write(Stream::Stdout, line.as_bytes(), SystemTime::now())
                .unwrap();
            reader.follow(&mut |e| followed.push(e.log)).unwrap();
        }
        assert_eq!(
            followed.len(),
            40,
            "follow sees every entry across rotations"
        );
        let files = fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(files, 3);
        for n in [1, 2] {
            assert!(fs::metadata(numbered(&path, n)).unwrap().len() <= 300);
        }
        let kept = all(&path);
        assert_eq!(kept.last().unwrap().log, "line 39\n");
        let first: usize = kept[0].log[5..].trim().parse().unwrap();
        assert_eq!(kept.len(), 40 - first, "the newest entries, in order");
    }

    #[test]
    fn log_options_follow_docker() {
        let o = LogOptions::parse(&["max-size=1k,max-file=2".into()]).unwrap();
        assert_eq!((o.max_size, o.max_files), (1024, 2));
        for bad in [
            "max-size=0",
            "max-file=0",
            "size=1",
            "max-file=x",
            "max-size",
        ] {
            assert!(LogOptions::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
