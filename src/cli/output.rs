//! Terminal output: errors with hints, human sizes, and the build progress display.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::Failure;
use crate::build::{Progress, StepReport, Stream};

pub fn print_failure(f: &Failure) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {}", f.message);
    if let Some(h) = &f.hint {
        let _ = writeln!(err, "hint: {h}");
    }
}

/// `1.5 MB`, like docker prints sizes (SI units).
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// `64 MiB`, for limits given in powers of 1024.
pub fn human_binary_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", units[i])
    } else {
        format!("{v:.1} {}", units[i])
    }
}

pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.0}ms", s * 1000.0)
    } else {
        format!("{s:.1}s")
    }
}

/// Build progress on stderr: a spinner for the running step on a terminal, and one line
/// per finished step with its duration; step output is printed with the step's number.
pub struct BuildProgress {
    quiet: bool,
    spinner: Mutex<Option<ProgressBar>>,
    total: Mutex<usize>,
    /// The running step's `[n/total] title`.
    current: Mutex<String>,
    tty: bool,
}

impl BuildProgress {
    pub fn new(quiet: bool) -> Self {
        BuildProgress {
            quiet,
            spinner: Mutex::new(None),
            total: Mutex::new(0),
            current: Mutex::new(String::new()),
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match self.spinner.lock().expect("progress lock").as_ref() {
            Some(pb) if self.tty => pb.println(text),
            _ => eprintln!("{text}"),
        }
    }

    fn prefix(&self, index: usize) -> String {
        format!(
            "[{}/{}]",
            index + 1,
            *self.total.lock().expect("progress lock")
        )
    }
}

impl Progress for BuildProgress {
    fn phase(&self, what: &str) {
        self.line(&format!("==> {what}"));
    }

    fn step_started(&self, index: usize, total: usize, title: &str) {
        *self.total.lock().expect("progress lock") = total;
        let current = format!("{} {title}", self.prefix(index));
        *self.current.lock().expect("progress lock") = current.clone();
        if self.quiet {
            return;
        }
        if self.tty {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
            );
            pb.set_message(current);
            pb.enable_steady_tick(Duration::from_millis(100));
            *self.spinner.lock().expect("progress lock") = Some(pb);
        }
    }

    fn step_output(&self, index: usize, stream: Stream, line: &[u8]) {
        let marker = if stream == Stream::Stderr { "!" } else { "|" };
        self.line(&format!(
            "{} {marker} {}",
            self.prefix(index),
            String::from_utf8_lossy(line)
        ));
    }

    fn step_finished(&self, _index: usize, report: &StepReport) {
        let title = self.current.lock().expect("progress lock").clone();
        if let Some(pb) = self.spinner.lock().expect("progress lock").take() {
            pb.finish_and_clear();
        }
        let layer = match &report.layer {
            Some((digest, size)) => format!("layer {} {}", digest.short(), human_size(*size)),
            None => "no layer".into(),
        };
        self.line(&format!(
            "{title} done in {} ({layer})",
            human_duration(report.duration)
        ));
    }
}
