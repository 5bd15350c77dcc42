//! The `kiln.yaml` format: parsing, variable substitution and validation.
//!
//! Exists so that every mistake in a spec is caught before any work starts, and is reported
//! as `kiln.yaml:LINE:COL: message (hint)`. The rest of kiln only sees [`model::Spec`].
//! The reference for the format is `specs/spec.md`.
//!
//! Layers, bottom up: [`node`] turns YAML into a tree that remembers positions; [`read`]
//! reads typed values from it; [`units`], [`names`] and [`subst`] parse the small languages
//! inside values; `top`, `stages`, `steps` and `sections` check each part of the spec.
//! [`schema`] describes the format as a JSON Schema (`kiln schema`), from the same key tables.
//!
//! INTERFACE (owned by the spec helper; keep these signatures):
//! - `pub fn load(path: &Path, arg_overrides: &[(String, String)]) -> Result<Spec, SpecError>`
//! - `pub fn parse(text: &str, file: &Path, arg_overrides: &[(String, String)]) -> Result<Spec, SpecError>`
//! - `SpecError`: Display = `FILE:LINE:COL: message` plus ` (hint)` when there is one;
//!   `SpecError::all()` also gives the other problems found in the same spec.
//! - `Spec::stages` (never empty, last = the image), `Spec::final_stage()`,
//!   `Spec::stage_index(name)`, `Spec::truncate_to(name)` for `--target`,
//!   `Stage::dependencies()`; `Step::args_used`, `Stage::{env_args_used, from_args_used}`.

mod error;
mod knobs;
mod limits;
pub mod model;
mod names;
mod node;
mod ports;
mod read;
pub mod schema;
mod sections;
mod stages;
mod steps;
mod subst;
mod top;
mod units;
pub mod values;

#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::Path;

pub use error::{NoSuchStage, SpecError, MAX_ISSUES as MAX_PROBLEMS};
pub use knobs::UNLIMITED;
pub use model::*;
pub use ports::{PortMapping, Protocol};

use error::Issue;
use node::MAX_SPEC_BYTES;

/// Reads and validates the spec at `path`. Relative paths in the spec (`contexts:`,
/// `from: oci:`/`rootfs:`, mount and secret sources) are taken from the spec's folder and
/// made absolute.
/// `arg_overrides` are the `--arg NAME=VALUE` pairs, in command-line order.
pub fn load(path: &Path, arg_overrides: &[(String, String)]) -> Result<Spec, SpecError> {
    let text = read_spec(path).map_err(|issue| issue.in_file(path.to_path_buf()))?;
    parse(&text, path, arg_overrides)
}

/// Validates spec `text` as if read from `file` (used for messages and relative paths).
pub fn parse(
    text: &str,
    file: &Path,
    arg_overrides: &[(String, String)],
) -> Result<Spec, SpecError> {
    parse_issues(text, file, arg_overrides).map_err(|issues| {
        SpecError::from_issues(issues, file)
            .unwrap_or_else(|| Issue::nowhere("the spec is invalid").in_file(file.into()))
    })
}

/// The spec, or its problems in file order (never an empty list).
fn parse_issues(
    text: &str,
    file: &Path,
    arg_overrides: &[(String, String)],
) -> Result<Spec, Vec<Issue>> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(vec![too_big()]);
    }
    let root = node::parse_yaml(text).map_err(|issue| vec![issue])?;
    top::build_spec(&root, file, arg_overrides)
}

fn too_big() -> Issue {
    Issue::nowhere(format!(
        "the spec is larger than {} KiB",
        MAX_SPEC_BYTES / 1024
    ))
    .hint("a spec describes a build; keep data in the build context")
}

/// Reads at most [`MAX_SPEC_BYTES`] (plus one, to notice more) and checks it is UTF-8.
fn read_spec(path: &Path) -> Result<String, Issue> {
    let unreadable = |err: std::io::Error| {
        let issue = Issue::nowhere(format!("cannot read the spec: {err}"));
        if err.kind() == std::io::ErrorKind::NotFound {
            issue.hint("kiln build reads kiln.yaml from the context folder; -f picks another file")
        } else {
            issue
        }
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > MAX_SPEC_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        Issue::at(Location { line, column }, "the spec is not valid UTF-8")
            .hint("save the file as UTF-8")
    })
}
