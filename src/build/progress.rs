//! How a build reports what it is doing, without printing anything itself.

use std::time::Duration;

use crate::store::Digest;

/// Which output stream of a step a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Which step an event is about. Stages build in parallel, so events of different stages
/// interleave; `stage` keeps them apart.
#[derive(Debug, Clone, Copy)]
pub struct StepRef<'a> {
    /// The stage's name; `None` for a single-stage spec.
    pub stage: Option<&'a str>,
    /// 0-based index of the step in its stage.
    pub index: usize,
    /// Steps in the stage.
    pub total: usize,
    /// A one-line description, e.g. `run: make`.
    pub title: &'a str,
}

/// How a step was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its layer came from the build cache.
    Cached,
    /// It ran, for this reason ("run: text changed", "parent rebuilt", …).
    Ran(String),
    /// `--plan`: it would run, for this reason.
    WouldRun(String),
    /// A config-only step (`env`, `workdir`, `user`): nothing to run or cache.
    Config,
}

/// What a finished step produced.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub duration: Duration,
    /// The new layer's blob digest and compressed size; `None` when the step changed no file.
    pub layer: Option<(Digest, u64)>,
    pub outcome: Outcome,
}

/// `--plan` of a multi-stage build: what becomes of one stage, and which stages use it.
#[derive(Debug, Clone)]
pub struct StagePlan<'a> {
    pub stage: &'a str,
    /// A step of the stage would run (or its base is not known yet): the stage would be
    /// rebuilt, and so would what uses it from there on.
    pub would_run: bool,
    /// The stages that use it (`from:` or `copy … from:`), in spec order.
    pub used_by: Vec<&'a str>,
}

/// Receives build events. The CLI implements it with progress bars; tests collect events.
pub trait Progress: Sync {
    /// A phase outside the steps, e.g. "importing rootfs:./base.tar".
    fn phase(&self, _what: &str) {}
    /// A step starts. For a step that will run, `reason` says why it is not cached.
    fn step_started(&self, _step: &StepRef, _reason: Option<&str>) {}
    /// One line of output of a running step (without the newline). A line the step
    /// rewrote with `\r` (a progress bar) comes here once, with its last text.
    fn step_output(&self, _step: &StepRef, _stream: Stream, _line: &[u8]) {}
    /// The current text of a line the step is rewriting with `\r`: what a terminal would
    /// show now. Its final text comes later through [`Progress::step_output`].
    fn step_output_update(&self, _step: &StepRef, _stream: Stream, _text: &[u8]) {}
    fn step_finished(&self, _step: &StepRef, _report: &StepReport) {}
    /// `--plan` of a multi-stage build, after every step was reported: one call per stage
    /// the image needs, in spec order.
    fn stage_planned(&self, _plan: &StagePlan) {}
}

/// A progress sink that ignores everything.
pub struct Silent;

impl Progress for Silent {}
