//! `--memory`, `--cpus` and `--pids-limit`: the same flags, with the same meaning, for
//! `kiln build` (every run step) and `kiln run`/`kiln bundle` (the container).

use clap::Args;

use super::Failure;
use crate::spec::{values, Limits};

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
    /// The limits given, checked like the spec's.
    pub fn limits(&self) -> Result<Limits, Failure> {
        let memory = self.memory.as_deref().map(values::size).transpose();
        let cpus = self.cpus.as_deref().map(values::cpus).transpose();
        if self.pids_limit == Some(0) {
            return Err(Failure::user("--pids-limit must be at least 1"));
        }
        Ok(Limits {
            memory: memory.map_err(Failure::user)?,
            cpus: cpus.map_err(Failure::user)?,
            pids: self.pids_limit,
        })
    }
}
