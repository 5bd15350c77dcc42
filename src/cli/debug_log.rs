//! `--verbose` and `KILN_LOG`: the library crates' debug events (`tracing`) rendered on
//! stderr. The library only emits events; this is the one place that installs a
//! subscriber, so without the flag or the variable nothing extra is printed.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

use super::Failure;

/// The variable that sets the filter, in `tracing-subscriber`'s `EnvFilter` syntax
/// (`debug`, `kiln_registry=trace`, …); it wins over `--verbose`.
const FILTER_VAR: &str = "KILN_LOG";

/// Whether debug events are written to stderr.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether stderr may be drawn on as a terminal (spinners, bars): not while debug events
/// are written to it too, which would tear the redrawn lines apart.
pub fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && !ACTIVE.load(Ordering::Relaxed)
}

/// Installs the stderr subscriber when asked: `--verbose` once shows kiln's debug events,
/// twice its trace events too; `KILN_LOG` sets any filter.
pub fn install(verbose: u8) -> Result<(), Failure> {
    let filter = match std::env::var(FILTER_VAR) {
        Ok(text) if !text.trim().is_empty() => EnvFilter::try_new(&text).map_err(|e| {
            Failure::user(format!("{FILTER_VAR}={text:?}: {e}")).hint(Some(
                "a filter is a level (debug, trace) or TARGET=LEVEL pairs, e.g. kiln_registry=trace"
                    .into(),
            ))
        })?,
        _ => match verbose {
            0 => return Ok(()),
            // Kiln's own crates are `kiln` and `kiln_*`: a target directive matches by prefix.
            1 => EnvFilter::new("warn,kiln=debug"),
            _ => EnvFilter::new("warn,kiln=trace"),
        },
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    ACTIVE.store(true, Ordering::Relaxed);
    Ok(())
}
