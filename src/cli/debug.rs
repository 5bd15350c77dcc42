//! Hidden `kiln debug` commands used by benchmarks to time one piece in isolation.

use std::path::PathBuf;

use clap::Subcommand;

use super::{CmdResult, Failure};
use kiln_layer::{self as layer, Compression, TarOptions};

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Capture DIR as a compressed layer blob written to OUT; prints digest and diff_id
    Capture {
        dir: PathBuf,
        out: PathBuf,
        #[arg(long, default_value = "zstd", value_parser = ["zstd", "gzip"])]
        compression: String,
    },
}

pub fn run(cmd: DebugCommand) -> CmdResult {
    match cmd {
        DebugCommand::Capture {
            dir,
            out,
            compression,
        } => {
            let compression: Compression = compression.parse().map_err(Failure::user)?;
            let file = std::fs::File::create(&out)
                .map_err(|e| Failure::user(format!("{}: {e}", out.display())))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            let d = layer::write_layer(&dir, &mut w, compression, &TarOptions { epoch: 0 })
                .map_err(Failure::user)?;
            println!("{} {} {}", d.digest, d.diff_id, d.size);
            Ok(0)
        }
    }
}
