//! Why a step ran: the last build of each stage is remembered, and a cache miss is
//! explained by comparing the step's key inputs with that build's.
//!
//! Kept in `$ROOT/cache/builds/<id>` where the id names the spec file (canonical path) and
//! the stage. It is advice, not a cache: a missing or unreadable record only makes the
//! reason less specific ("not in the cache"), never changes what is built.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::context::{changed_paths, SourceEntry};
use super::key::{shells_differ, KeyInputs};
use kiln_progress::RunReason;
use kiln_store::{Digest, Store};

const KIND: &str = "builds";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct StageRecord {
    /// Per step of the stage; `None` for config-only steps.
    pub steps: Vec<Option<StepEntry>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct StepEntry {
    pub inputs: KeyInputs,
    /// For `copy` steps: every copied file.
    #[serde(default)]
    pub files: Vec<SourceEntry>,
}

/// The record id of `stage` of the spec at `spec_file`.
pub(super) fn record_id(spec_file: &Path, stage: &str) -> Digest {
    let path = std::fs::canonicalize(spec_file).unwrap_or_else(|_| spec_file.to_path_buf());
    let mut text = path.as_os_str().as_encoded_bytes().to_vec();
    text.push(0);
    text.extend_from_slice(stage.as_bytes());
    Digest::of_bytes(&text)
}

pub(super) fn load(store: &Store, id: &Digest) -> StageRecord {
    store
        .read_cache_file(KIND, id)
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Saves the record unless it equals the `previous` one (a fully cached build writes
/// nothing); failing to save only costs future explanations, so errors are ignored.
pub(super) fn save(store: &Store, id: &Digest, previous: &StageRecord, record: &StageRecord) {
    if record == previous {
        return;
    }
    if let Ok(bytes) = serde_json::to_vec(record) {
        let _ = store.write_cache_file(KIND, id, &bytes);
    }
}

/// Why a step with `now` inputs missed the cache, given what the previous build of the
/// same step had. `earlier_ran` tells whether a step before it in this build ran.
pub(super) fn explain(
    kind: &str,
    previous: Option<&StepEntry>,
    now: &KeyInputs,
    files: &[SourceEntry],
    earlier_ran: bool,
) -> RunReason {
    let Some(previous) = previous else {
        return RunReason::NotCached;
    };
    changed(kind, previous, now, files, earlier_ran)
        .map_or(RunReason::RecordGone, RunReason::Changed)
}

/// The first input that differs between the `previous` build of the step and `now`.
fn changed(
    kind: &str,
    previous: &StepEntry,
    now: &KeyInputs,
    files: &[SourceEntry],
    earlier_ran: bool,
) -> Option<String> {
    let before = &previous.inputs;
    if before.version != now.version {
        return Some("kiln's cache format changed".into());
    }
    // Args first: definitions are compared after `${}` substitution, so an arg that changed
    // changes the definition too.
    let args = changed_args(before, now);
    if !args.is_empty() {
        let plural = if args.len() > 1 { "args" } else { "arg" };
        return Some(format!("{plural} {} changed", args.join(", ")));
    }
    if before.definition != now.definition {
        return Some(match kind {
            "run" if shells_differ(&before.definition, &now.definition) => "shell changed".into(),
            "run" => "run: text changed".into(),
            _ => format!("{kind}: definition changed"),
        });
    }
    if before.sources != now.sources {
        let paths = changed_paths(&previous.files, files);
        return Some(match paths.as_slice() {
            [] => "copy: source changed".into(),
            [one] => format!("copy: {one} changed"),
            [a, b] => format!("copy: {a}, {b} changed"),
            [a, b, rest @ ..] => format!("copy: {a}, {b} and {} more changed", rest.len()),
        });
    }
    if before.format != now.format {
        return Some("layer format changed (compression or SOURCE_DATE_EPOCH)".into());
    }
    if before.parent != now.parent {
        return Some(match earlier_ran {
            true => "parent rebuilt".into(),
            false => "base image or an earlier env/workdir/user changed".into(),
        });
    }
    None
}

fn changed_args(before: &KeyInputs, now: &KeyInputs) -> Vec<String> {
    let names: BTreeSet<&String> = before.args.keys().chain(now.args.keys()).collect();
    names
        .into_iter()
        .filter(|name| before.args.get(*name) != now.args.get(*name))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::EntryKind;

    fn inputs(definition: &str, arg: &str, sources: Option<&str>) -> KeyInputs {
        KeyInputs {
            version: 1,
            parent: Digest::of_bytes(b"p"),
            definition: definition.into(),
            args: [("V".to_string(), arg.to_string())].into(),
            sources: sources.map(|s| Digest::of_bytes(s.as_bytes())),
            format: "zstd/0".into(),
        }
    }

    fn file(path: &str, content: &str) -> SourceEntry {
        SourceEntry {
            path: path.into(),
            kind: EntryKind::File {
                exec: false,
                content: Digest::of_bytes(content.as_bytes()),
            },
        }
    }

    fn entry(inputs: KeyInputs, files: &[(&str, &str)]) -> StepEntry {
        StepEntry {
            inputs,
            files: files.iter().map(|(p, c)| file(p, c)).collect(),
        }
    }

    #[test]
    fn names_the_first_difference() {
        let before = entry(inputs("d", "1", None), &[]);
        assert_eq!(
            explain("run", Some(&before), &inputs("e", "1", None), &[], false),
            RunReason::Changed("run: text changed".into())
        );
        assert_eq!(
            explain("run", Some(&before), &inputs("d", "2", None), &[], false),
            RunReason::Changed("arg V changed".into())
        );
        assert_eq!(
            explain("run", None, &inputs("d", "2", None), &[], false),
            RunReason::NotCached
        );
        let mut moved = inputs("d", "1", None);
        moved.parent = Digest::of_bytes(b"q");
        assert_eq!(
            explain("run", Some(&before), &moved, &[], true),
            RunReason::Changed("parent rebuilt".into())
        );
        assert_eq!(
            explain("run", Some(&before), &inputs("d", "1", None), &[], false),
            RunReason::RecordGone
        );
    }

    #[test]
    fn names_changed_files() {
        let before = entry(inputs("d", "1", Some("s1")), &[("a", "1"), ("b", "1")]);
        let now = [file("a", "2"), file("b", "1"), file("c", "1")];
        assert_eq!(
            explain(
                "copy",
                Some(&before),
                &inputs("d", "1", Some("s2")),
                &now,
                false
            ),
            RunReason::Changed("copy: a, c changed".into())
        );
    }
}
