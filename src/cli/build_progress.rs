//! Build progress on stderr: one line per step saying `cached` or why it ran, a spinner per
//! running step on a terminal, and step output prefixed with its step (and stage, when
//! stages build in parallel, so their lines stay apart).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::output::{human_duration, human_size};
use crate::build::{Outcome, Progress, StagePlan, StepRef, StepReport, Stream};

pub struct BuildProgress {
    quiet: bool,
    tty: bool,
    bars: MultiProgress,
    /// The running step's spinner, per stage.
    spinners: Mutex<HashMap<String, ProgressBar>>,
    cached: AtomicUsize,
    ran: AtomicUsize,
}

impl BuildProgress {
    pub fn new(quiet: bool) -> Self {
        BuildProgress {
            quiet,
            tty: std::io::stderr().is_terminal(),
            bars: MultiProgress::new(),
            spinners: Mutex::new(HashMap::new()),
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

    fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match self.tty {
            true => {
                let _ = self.bars.println(text);
            }
            false => eprintln!("{text}"),
        }
    }
}

/// `[3/10]`, or `[builder 3/10]` in a multi-stage build.
fn prefix(step: &StepRef) -> String {
    match step.stage {
        Some(stage) => format!("[{stage} {}/{}]", step.index + 1, step.total),
        None => format!("[{}/{}]", step.index + 1, step.total),
    }
}

fn stage_key(step: &StepRef) -> String {
    step.stage.unwrap_or_default().to_owned()
}

impl Progress for BuildProgress {
    fn phase(&self, what: &str) {
        self.line(&format!("==> {what}"));
    }

    fn step_started(&self, step: &StepRef, reason: Option<&str>) {
        let Some(reason) = reason else {
            return;
        };
        if self.quiet || !self.tty {
            return;
        }
        let pb = self.bars.add(ProgressBar::new_spinner());
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
        );
        pb.set_message(format!("{} {} ({reason})", prefix(step), step.title));
        pb.enable_steady_tick(Duration::from_millis(100));
        let mut spinners = self.spinners.lock().expect("progress lock");
        spinners.insert(stage_key(step), pb);
    }

    fn step_output(&self, step: &StepRef, stream: Stream, line: &[u8]) {
        let marker = if stream == Stream::Stderr { "!" } else { "|" };
        self.line(&format!(
            "{} {marker} {}",
            prefix(step),
            String::from_utf8_lossy(line)
        ));
    }

    fn step_finished(&self, step: &StepRef, report: &StepReport) {
        if let Some(pb) = self
            .spinners
            .lock()
            .expect("progress lock")
            .remove(&stage_key(step))
        {
            pb.finish_and_clear();
            self.bars.remove(&pb);
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
            Outcome::WouldRun(reason) => format!("would run ({reason})"),
            Outcome::Ran(reason) => {
                self.ran.fetch_add(1, Ordering::Relaxed);
                format!(
                    "ran in {} ({reason}){layer}",
                    human_duration(report.duration)
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
