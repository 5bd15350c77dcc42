//! `kiln logs`: a detached container's output, from the log its monitor writes
//! (`kiln_container::log`): stdout entries on stdout, stderr entries on stderr, as docker
//! prints them.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;

use super::containers::{container_store, find};
use super::{CmdResult, Failure, Globals};
use kiln_container::log::parse_rfc3339;
use kiln_container::log::{LogEntry, LogReader, Stream};

#[derive(Args, Debug)]
#[command(
    about = "Print the output of a detached container",
    after_help = "Examples:\n  kiln logs web\n  kiln logs -f web              # and what it writes next, until it ends\n  kiln logs --tail 20 -t web    # the last 20 lines, with their times\n  kiln logs --since 10m web     # or an RFC 3339 time, or seconds since the epoch"
)]
pub struct LogsArgs {
    /// Keep printing what the container writes, until it ends
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines (all: every line)
    #[arg(short = 'n', long, value_name = "N", default_value = "all")]
    tail: String,
    /// Only lines written since T: a duration before now (30s, 10m, 1h30m), an RFC 3339
    /// time (2024-05-01T12:00:00Z) or seconds since the epoch
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Put each line's time (RFC 3339, nanoseconds) before it
    #[arg(short, long)]
    timestamps: bool,
    /// Container name or ID (a unique ID prefix is enough)
    container: String,
}

/// How often `-f` looks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

pub fn logs(globals: &Globals, args: LogsArgs) -> CmdResult {
    let store = container_store(globals)?;
    let (dir, state) = find(&store, &args.container)?;
    if !state.detached {
        return Err(Failure::user(format!(
            "container {} has no log: it was not started with kiln run -d",
            args.container
        ))
        .hint(Some("its output went to the kiln run that ran it".into())));
    }
    let tail = match args.tail.as_str() {
        "all" => None,
        n => Some(n.parse::<usize>().map_err(|_| {
            Failure::user(format!("--tail {n:?}: not a number of lines"))
                .hint(Some("give a number, or all".into()))
        })?),
    };
    let since = args
        .since
        .as_deref()
        .map(|t| parse_since(t, SystemTime::now()))
        .transpose()?;
    let show = |e: &LogEntry| since.is_none_or(|s| e.timestamp().is_some_and(|t| t >= s));
    let mut reader = LogReader::new(dir.log_path());
    let mut last: VecDeque<LogEntry> = VecDeque::new();
    reader
        .read_all(&mut |e| {
            if show(&e) {
                last.push_back(e);
                if tail.is_some_and(|n| last.len() > n) {
                    last.pop_front();
                }
            }
        })
        .map_err(Failure::user)?;
    for e in &last {
        print_entry(e, args.timestamps);
    }
    if args.follow {
        follow(&dir, &mut reader, args.timestamps)?;
    }
    Ok(0)
}

/// Prints what the container writes next until it has ended and everything is printed.
fn follow(
    dir: &kiln_store::ContainerDir,
    reader: &mut LogReader,
    timestamps: bool,
) -> Result<(), Failure> {
    loop {
        // Looked at before reading, so the last lines written before the end are read.
        let running = dir.is_locked();
        reader
            .follow(&mut |e| print_entry(&e, timestamps))
            .map_err(Failure::user)?;
        let _ = std::io::stdout().flush();
        if !running {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

fn print_entry(e: &LogEntry, timestamps: bool) {
    let prefix = match timestamps {
        true => format!("{} ", e.time),
        false => String::new(),
    };
    let _ = match e.stream {
        Stream::Stdout => write!(std::io::stdout().lock(), "{prefix}{}", e.log),
        Stream::Stderr => write!(std::io::stderr().lock(), "{prefix}{}", e.log),
    };
}

/// `--since`: a Go-style duration before `now` (`90s`, `10m`, `1h30m`), an RFC 3339 time,
/// or seconds since the epoch (fractions allowed), as docker takes it.
fn parse_since(text: &str, now: SystemTime) -> Result<SystemTime, Failure> {
    if let Ok(ago) = kiln_spec::values::duration(text) {
        return Ok(now.checked_sub(ago).unwrap_or(UNIX_EPOCH));
    }
    if let Some(t) = parse_rfc3339(text) {
        return Ok(t);
    }
    if let Ok(secs) = text.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(UNIX_EPOCH + Duration::from_secs_f64(secs));
        }
    }
    Err(Failure::user(format!("--since {text:?}: not a time")).hint(Some(
        "give a duration (30s, 10m, 1h30m), an RFC 3339 time (2024-05-01T12:00:00Z) or seconds since the epoch".into(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_times_and_epoch_seconds() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        let at = |t: &str| parse_since(t, now).unwrap();
        assert_eq!(at("10m"), UNIX_EPOCH + Duration::from_secs(9_400));
        assert_eq!(at("1h30m"), UNIX_EPOCH + Duration::from_secs(4_600));
        assert_eq!(
            at("1970-01-01T02:00:00Z"),
            UNIX_EPOCH + Duration::from_secs(7_200)
        );
        assert_eq!(at("5000"), UNIX_EPOCH + Duration::from_secs(5_000));
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("10x", now).is_err());
    }
}
