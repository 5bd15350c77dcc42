//! `--memory`, `--cpus` and `--pids-limit`: the same flags, with the same meaning, for
//! `kiln build` (every run step) and `kiln run`/`kiln bundle` (the container).

use clap::Args;

use super::Failure;
use kiln_spec::{values, Limits};

#[derive(Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Memory limit, e.g. 64m (units are powers of 1024)
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// CPU limit, e.g. 0.5
    #[arg(long)]
    cpus: Option<String>,
    /// Process limit (default 2048, like podman)
    #[arg(long = "pids-limit", value_name = "N")]
    pids_limit: Option<u64>,
}

impl LimitArgs {
    /// The limits given, checked like the spec's (Docker's rules: at least 6 MiB of memory,
    /// at most this machine's CPUs).
    pub fn limits(&self) -> Result<Limits, Failure> {
        let memory = self.memory.as_deref().map(values::memory).transpose();
        let cpus = self.cpus.as_deref().map(values::cpus).transpose();
        if self.pids_limit == Some(0) {
            return Err(Failure::user("--pids-limit must be at least 1"));
        }
        Ok(Limits {
            memory: memory.map_err(|e| flag_failure("--memory", e))?,
            cpus: cpus.map_err(|e| flag_failure("--cpus", e))?,
            pids: self.pids_limit,
        })
    }
}

/// `--memory 1m: memory limit 1 MiB is below …`, the hint on a line of its own.
fn flag_failure(flag: &str, e: values::ValueError) -> Failure {
    Failure::user(format!("{flag}: {}", e.message)).hint(e.hint)
}
