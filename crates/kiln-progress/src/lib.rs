//! How the library reports what it is doing, without printing anything itself: one trait,
//! [`Progress`], for every operation that takes long enough to be watched — a build's
//! stages and steps, a pull's or push's blobs — and the events it carries.
//!
//! Exists as one trait below `build` and `registry` rather than one per module, so the
//! CLI's sinks all implement the same interface and a caller hands one sink to whatever it
//! calls. Every event has a default that ignores it: a sink implements only the events it
//! shows. Only `cli` prints.

use std::time::Duration;

use kiln_store::Digest;

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
    /// Its layer came from the registry build cache this reference names
    /// (`kiln build --cache-from`); with `--plan`, it would.
    CachedFrom(String),
    /// It ran, for this reason.
    Ran(RunReason),
    /// `--plan`: it would run, for this reason.
    WouldRun(RunReason),
    /// A config-only step (`env`, `workdir`, `user`): nothing to run or cache.
    Config,
}

/// Why a step runs instead of coming from the build cache. The library states the fact;
/// how the build was asked to ignore the cache (a flag's name) is the caller's to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunReason {
    /// The build was asked to run every step.
    CacheIgnored,
    /// The build was asked to run this step, or an earlier one of its stage, and every
    /// step after it.
    CacheIgnoredFrom,
    /// No earlier build of the step is known.
    NotCached,
    /// Its inputs are those of the last build, but the cache holds no usable record of it
    /// (removed by a gc of the build cache, say).
    RecordGone,
    /// What differs from the last build, or why the step cannot come from the cache
    /// ("run: text changed", "parent rebuilt", "base image will be pulled", …).
    Changed(String),
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

/// What became of one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Already there (in the store for a pull, in the registry for a push).
    Exists,
    Pulled,
    Pushed,
    /// Linked by the registry from another of its repositories, without an upload.
    Mounted,
}

impl BlobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobOutcome::Exists => "exists",
            BlobOutcome::Pulled => "pulled",
            BlobOutcome::Pushed => "pushed",
            BlobOutcome::Mounted => "mounted",
        }
    }
}

/// Receives events from builds, pulls and pushes. The CLI implements it with progress bars
/// or lines; tests collect events. Calls may come from several threads at once: stages
/// build in parallel, and blobs move several at a time.
pub trait Progress: Send + Sync {
    // Builds.

    /// A phase outside the steps, e.g. "importing rootfs:./base.tar".
    fn phase(&self, _what: &str) {}
    /// A step starts. For a step that will run, `reason` says why it is not cached.
    fn step_started(&self, _step: &StepRef, _reason: Option<&RunReason>) {}
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

    // Pulls and pushes; events of several blobs interleave.

    /// A blob of `size` bytes starts moving.
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    /// `done` bytes of the blob have moved so far.
    fn blob_progress(&self, _digest: &Digest, _done: u64) {}
    fn blob_finished(&self, _digest: &Digest, _size: u64, _outcome: BlobOutcome) {}
}

/// A progress sink that ignores everything.
pub struct Silent;

impl Progress for Silent {}
