//! Build progress on stderr: one line per step saying `cached` or why it ran, a spinner per
//! running step on a terminal, and step output prefixed with its step (and stage, when
//! stages build in parallel, so their lines stay apart).
//!
//! On a terminal, indicatif redraws the spinners below the printed lines by counting how
//! many rows each line took; a step's own control characters (a `\r` progress bar, a cursor
//! movement) would make that count wrong and leave stale or half-erased lines, so output is
//! made terminal-safe first, and a line the step keeps rewriting with `\r` is shown as one
//! line below its spinner that updates in place. The last lines of each running step are
//! kept, so `-q` and `--json`, which show no output as it comes, can show the failing
//! step's.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::output::{human_duration, human_size};
use kiln_progress::{Outcome, Progress, RunReason, StagePlan, StepRef, StepReport, Stream};

/// How many of a step's last lines of each stream are kept for a failure report. Per
/// stream, because stdout and stderr arrive through separate pipes in no fixed order: a
/// burst of stdout must not push out the error message that came just before it.
pub const TAIL_LINES: usize = 50;

pub struct BuildProgress {
    quiet: bool,
    tty: bool,
    bars: MultiProgress,
    /// The step running in each stage (a stage runs one step at a time).
    running: Mutex<HashMap<String, Running>>,
    cached: AtomicUsize,
    ran: AtomicUsize,
}

/// A step that started and has not finished.
struct Running {
    stage: Option<String>,
    index: usize,
    total: usize,
    title: String,
    spinner: Option<ProgressBar>,
    /// The line the step is rewriting with `\r`, drawn below its spinner.
    update: Option<ProgressBar>,
    /// Its last [`TAIL_LINES`] lines of stdout and of stderr, each numbered by arrival.
    stdout_tail: VecDeque<(usize, String)>,
    stderr_tail: VecDeque<(usize, String)>,
    /// How many lines it printed in all.
    lines: usize,
}

/// A step that never finished, with its last lines: after a failed build, the failed one.
pub struct UnfinishedStep {
    pub stage: Option<String>,
    /// 1-based.
    pub number: usize,
    /// Steps in its stage.
    pub total: usize,
    pub title: String,
    /// Its last lines (at least the last [`TAIL_LINES`], and the last [`TAIL_LINES`] of
    /// each stream), oldest first.
    pub tail: Vec<(Stream, String)>,
    /// How many lines it printed in all (more than `tail` holds when it was cut).
    pub lines: usize,
}

impl BuildProgress {
    pub fn new(quiet: bool) -> Self {
        BuildProgress {
            quiet,
            tty: super::debug_log::stderr_is_terminal(),
            bars: MultiProgress::new(),
            running: Mutex::new(HashMap::new()),
            cached: AtomicUsize::new(0),
            ran: AtomicUsize::new(0),
        }
    }

    /// Steps taken from the cache and steps run so far.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.cached.load(Ordering::Relaxed),
            self.ran.load(Ordering::Relaxed),
        )
    }

    /// The steps that started, never finished and printed something, in stage order.
    pub fn unfinished(&self) -> Vec<UnfinishedStep> {
        let running = self.running.lock().expect("progress lock");
        let mut steps: Vec<UnfinishedStep> = running
            .values()
            .filter(|r| r.lines > 0)
            .map(|r| UnfinishedStep {
                stage: r.stage.clone(),
                number: r.index + 1,
                total: r.total,
                title: r.title.clone(),
                tail: r.tail(),
                lines: r.lines,
            })
            .collect();
        steps.sort_by(|a, b| (&a.stage, a.number).cmp(&(&b.stage, b.number)));
        steps
    }

    /// A line on stderr; on a terminal, made safe for indicatif's redraws.
    fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match self.tty {
            true => {
                let _ = self.bars.println(terminal_safe(text));
            }
            false => eprintln!("{text}"),
        }
    }

    /// The entry of `step`, made when its first event arrives.
    fn entry<'m>(map: &'m mut HashMap<String, Running>, step: &StepRef) -> &'m mut Running {
        map.entry(stage_key(step)).or_insert_with(|| Running {
            stage: step.stage.map(str::to_owned),
            index: step.index,
            total: step.total,
            title: step.title.to_owned(),
            spinner: None,
            update: None,
            stdout_tail: VecDeque::new(),
            stderr_tail: VecDeque::new(),
            lines: 0,
        })
    }
}

/// Whatever happens to the build, no spinner is left behind on the terminal.
impl Drop for BuildProgress {
    fn drop(&mut self) {
        let running = self
            .running
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        for step in running.into_values() {
            step.clear_bars(&self.bars);
        }
    }
}

impl Running {
    fn clear_update(&mut self, bars: &MultiProgress) {
        if let Some(pb) = self.update.take() {
            pb.finish_and_clear();
            bars.remove(&pb);
        }
    }

    fn clear_bars(mut self, bars: &MultiProgress) {
        self.clear_update(bars);
        if let Some(pb) = self.spinner.take() {
            pb.finish_and_clear();
            bars.remove(&pb);
        }
    }

    fn keep(&mut self, stream: Stream, line: String) {
        let tail = match stream {
            Stream::Stdout => &mut self.stdout_tail,
            Stream::Stderr => &mut self.stderr_tail,
        };
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back((self.lines, line));
        self.lines += 1;
    }

    /// Both streams' kept lines, in the order they arrived.
    fn tail(&self) -> Vec<(Stream, String)> {
        let out = self
            .stdout_tail
            .iter()
            .map(|(n, l)| (*n, Stream::Stdout, l));
        let err = self
            .stderr_tail
            .iter()
            .map(|(n, l)| (*n, Stream::Stderr, l));
        let mut all: Vec<_> = out.chain(err).collect();
        all.sort_by_key(|(n, _, _)| *n);
        all.into_iter().map(|(_, s, l)| (s, l.clone())).collect()
    }
}

/// `[3/10]`, or `[builder 3/10]` in a multi-stage build.
fn prefix(step: &StepRef) -> String {
    step_prefix(step.stage, step.index + 1, step.total)
}

pub fn step_prefix(stage: Option<&str>, number: usize, total: usize) -> String {
    match stage {
        Some(stage) => format!("[{stage} {number}/{total}]"),
        None => format!("[{number}/{total}]"),
    }
}

/// `|` before a line of stdout, `!` before one of stderr.
pub fn stream_marker(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "|",
        Stream::Stderr => "!",
    }
}

fn stage_key(step: &StepRef) -> String {
    step.stage.unwrap_or_default().to_owned()
}

/// `text` as it can be drawn between indicatif's redraws: SGR sequences (colours) stay,
/// every other escape sequence and control character goes, and tabs become spaces (the
/// terminal's tab stops are not where indicatif counts them).
fn terminal_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut column = 0;
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if let Some(sgr) = escape_sequence(&mut chars) {
                    out.push_str(&sgr);
                }
            }
            '\t' => {
                let spaces = 8 - column % 8;
                out.extend(std::iter::repeat_n(' ', spaces));
                column += spaces;
            }
            c if c.is_control() => {}
            c => {
                out.push(c);
                column += 1;
            }
        }
    }
    out
}

/// Consumes the escape sequence after an ESC; returns it when it only sets colours (a CSI
/// sequence ending in `m`).
fn escape_sequence(chars: &mut std::iter::Peekable<std::str::Chars>) -> Option<String> {
    match chars.next()? {
        '[' => {
            let mut body = String::new();
            for c in chars.by_ref() {
                if ('\x40'..='\x7e').contains(&c) {
                    let sgr = c == 'm' && body.chars().all(|b| b.is_ascii_digit() || b == ';');
                    return sgr.then(|| format!("\x1b[{body}m"));
                }
                body.push(c);
            }
            None
        }
        // OSC (a window title, a hyperlink): up to BEL or ESC \.
        ']' => {
            while let Some(c) = chars.next() {
                if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                    break;
                }
            }
            None
        }
        _ => None,
    }
}

impl Progress for BuildProgress {
    fn phase(&self, what: &str) {
        self.line(&format!("==> {what}"));
    }

    fn step_started(&self, step: &StepRef, reason: Option<&RunReason>) {
        let Some(reason) = reason else {
            return;
        };
        let reason = reason_text(reason);
        let mut running = self.running.lock().expect("progress lock");
        let entry = Self::entry(&mut running, step);
        if self.quiet || !self.tty {
            return;
        }
        let pb = self.bars.add(ProgressBar::new_spinner());
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
        );
        let message = format!("{} {} ({reason})", prefix(step), step.title);
        pb.set_message(terminal_safe(&message));
        pb.enable_steady_tick(Duration::from_millis(100));
        entry.spinner = Some(pb);
    }

    fn step_output(&self, step: &StepRef, stream: Stream, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let mut running = self.running.lock().expect("progress lock");
        let entry = Self::entry(&mut running, step);
        entry.clear_update(&self.bars);
        self.line(&format!(
            "{} {} {text}",
            prefix(step),
            stream_marker(stream)
        ));
        // Kept as the step wrote it: `--json` escapes it, `-q` prints it with no bars.
        entry.keep(stream, text.into_owned());
    }

    fn step_output_update(&self, step: &StepRef, stream: Stream, text: &[u8]) {
        if self.quiet || !self.tty {
            return;
        }
        let text = terminal_safe(&String::from_utf8_lossy(text));
        let mut running = self.running.lock().expect("progress lock");
        let entry = Self::entry(&mut running, step);
        let bars = &self.bars;
        let update = entry.update.get_or_insert_with(|| {
            let pb = ProgressBar::new_spinner();
            let pb = match &entry.spinner {
                Some(spinner) => bars.insert_after(spinner, pb),
                None => bars.add(pb),
            };
            pb.set_style(ProgressStyle::with_template("{wide_msg}").expect("valid template"));
            pb
        });
        update.set_message(format!("{} {} {text}", prefix(step), stream_marker(stream)));
    }

    fn step_finished(&self, step: &StepRef, report: &StepReport) {
        if let Some(entry) = self
            .running
            .lock()
            .expect("progress lock")
            .remove(&stage_key(step))
        {
            entry.clear_bars(&self.bars);
        }
        let layer = match &report.layer {
            Some((digest, size)) => format!(", layer {} {}", digest.short(), human_size(*size)),
            None => String::new(),
        };
        let status = match &report.outcome {
            Outcome::Cached => {
                self.cached.fetch_add(1, Ordering::Relaxed);
                format!("cached{layer}")
            }
            Outcome::CachedFrom(cache) => {
                self.cached.fetch_add(1, Ordering::Relaxed);
                format!("cached, from registry cache {cache}{layer}")
            }
            Outcome::WouldRun(reason) => format!("would run ({})", reason_text(reason)),
            Outcome::Ran(reason) => {
                self.ran.fetch_add(1, Ordering::Relaxed);
                format!(
                    "ran in {} ({}){layer}",
                    human_duration(report.duration),
                    reason_text(reason)
                )
            }
            Outcome::Config => String::new(),
        };
        self.line(format!("{} {}  {status}", prefix(step), step.title).trim_end());
    }

    fn stage_planned(&self, plan: &StagePlan) {
        self.line(&format!("==> {}", stage_plan_text(plan)));
    }
}

/// `stage "build" would run; used by "final"`.
fn stage_plan_text(plan: &StagePlan) -> String {
    let state = match plan.would_run {
        true => "would run",
        false => "is cached",
    };
    let users: Vec<String> = plan.used_by.iter().map(|s| format!("{s:?}")).collect();
    match users.is_empty() {
        true => format!("stage {:?} {state} (the image)", plan.stage),
        false => format!(
            "stage {:?} {state}; used by {}",
            plan.stage,
            users.join(", ")
        ),
    }
}

/// Why a step runs, as `kiln build` says it: the flag that asked for it, when one did.
pub fn reason_text(reason: &RunReason) -> std::borrow::Cow<'_, str> {
    match reason {
        RunReason::CacheIgnored => "--no-cache".into(),
        RunReason::CacheIgnoredFrom => "--no-cache-from".into(),
        RunReason::NotCached => "not in the cache".into(),
        RunReason::RecordGone => "not in the cache (removed by kiln gc --cache?)".into(),
        RunReason::Changed(what) => what.as_str().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn only_colours_survive_on_a_terminal() {
        assert_eq!(terminal_safe("plain"), "plain");
        assert_eq!(terminal_safe("\x1b[31mred\x1b[0m"), "\x1b[31mred\x1b[0m");
        assert_eq!(terminal_safe("a\x1b[2Kb\x1b[1Ac"), "abc");
        assert_eq!(terminal_safe("\x1b]0;title\x07x"), "x");
        assert_eq!(terminal_safe("\x1b]8;;http://x\x1b\\link"), "link");
        assert_eq!(terminal_safe("a\x08b\x07c\rd\x7f"), "abcd");
        assert_eq!(terminal_safe("a\tb"), "a       b");
        assert_eq!(terminal_safe("12345678\tb"), "12345678        b");
    }
}
