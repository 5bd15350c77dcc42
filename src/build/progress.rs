//! How a build reports what it is doing, without printing anything itself.

use std::time::Duration;

use crate::store::Digest;

/// Which output stream of a step a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What a finished step produced.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub duration: Duration,
    /// The new layer's blob digest and compressed size; `None` when the step changed no file.
    pub layer: Option<(Digest, u64)>,
}

/// Receives build events. The CLI implements it with progress bars; tests collect events.
pub trait Progress: Sync {
    /// A phase outside the steps, e.g. "importing rootfs:./base.tar".
    fn phase(&self, _what: &str) {}
    /// Step `index` (0-based) of `total` starts; `title` is a one-line description.
    fn step_started(&self, _index: usize, _total: usize, _title: &str) {}
    /// One line of output of a running step (without the newline).
    fn step_output(&self, _index: usize, _stream: Stream, _line: &[u8]) {}
    fn step_finished(&self, _index: usize, _report: &StepReport) {}
}

/// A progress sink that ignores everything.
pub struct Silent;

impl Progress for Silent {}
