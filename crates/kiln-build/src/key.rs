//! Step cache keys: what a step's result depends on, hashed.
//!
//! A key is the sha256 of a canonical JSON document ([`KeyInputs`]) holding:
//! - the *state* the step starts from ([`state_id`]): the diff_ids of the layers below it
//!   and the config a step sees (env, workdir, user). It is computed from the state itself,
//!   not from the previous step's key, so a step that reran and produced the same layer
//!   (reproducible layers make this common) leaves the following steps cached;
//! - the step's definition after `${}` substitution, without what must never affect the
//!   result's identity (`cache:` mounts, `secrets:`);
//! - the values of the args the step uses (only those: a step that does not mention an arg
//!   is not invalidated by it);
//! - for `copy`, the digest of the copied content with normalised modes
//!   (`context::copy_sources_digest`), from a context or from the stage copied from
//!   (`stage_copy`: a rebuilt stage with the same files keeps the copy cached);
//! - the layer format (compression, SOURCE_DATE_EPOCH), since the cached layer is reused
//!   byte for byte.
//!
//! Never part of a key: host mtimes, the host umask, directory listing order, secret
//! values, cache mount contents.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Partial;
use kiln_spec::{Command, CopyFrom, Network, Step, StepKind};
use kiln_store::{canonical_json, Digest};

/// Bumped when the meaning of a key changes, so old records stop matching. 2: run steps
/// became confined containers, and their capabilities are part of the definition. 3: a
/// string run is the script as written (not substituted) with its shell (`-e` by default).
const KEY_VERSION: u32 = 3;

/// Identity of an image state as the next step sees it.
pub(super) fn state_id(image: &Partial) -> Digest {
    #[derive(Serialize)]
    struct State<'a> {
        diff_ids: &'a [Digest],
        env: &'a [String],
        workdir: Option<&'a str>,
        user: Option<&'a str>,
    }
    let config = &image.config.config;
    Digest::of_bytes(&canonical_json(&State {
        diff_ids: &image.config.rootfs.diff_ids,
        env: &config.env,
        workdir: config.working_dir.as_deref(),
        user: config.user.as_deref(),
    }))
}

/// Everything a step's key is made of. Kept (with the key) in the build record so that a
/// miss can be explained by comparing it with the previous build's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(super) struct KeyInputs {
    pub version: u32,
    /// [`state_id`] of the state the step runs on.
    pub parent: Digest,
    /// The step's normalised definition (canonical JSON text).
    pub definition: String,
    /// Values of the args the step uses.
    pub args: BTreeMap<String, String>,
    /// Digest of what a `copy` step copies: the content of the files, from a context or from
    /// the stage copied from.
    pub sources: Option<Digest>,
    /// Layer format: compression and SOURCE_DATE_EPOCH.
    pub format: String,
}

impl KeyInputs {
    pub fn new(
        parent: &Digest,
        step: &Step,
        args: &BTreeMap<String, String>,
        sources: Option<&Digest>,
        format: String,
    ) -> Self {
        let used = step
            .args_used
            .iter()
            .filter_map(|name| Some((name.clone(), args.get(name)?.clone())))
            .collect();
        KeyInputs {
            version: KEY_VERSION,
            parent: parent.clone(),
            definition: definition(&step.kind),
            args: used,
            sources: sources.cloned(),
            format,
        }
    }

    pub fn key(&self) -> Digest {
        Digest::of_bytes(&canonical_json(self))
    }
}

/// The parts of a step that decide its result, as canonical JSON. Run steps: the script
/// and its shell, or the argv, the network and what the step may do (capabilities,
/// privileged; not its limits, which can make a step fail but not change what it makes);
/// copy steps: sources, origin, destination, mode, owner.
fn definition(kind: &StepKind) -> String {
    let value = match kind {
        StepKind::Run(run) => serde_json::json!({
            "run": match &run.command {
                Command::Shell { script, .. } => serde_json::json!(script),
                Command::Argv(argv) => serde_json::json!(argv),
            },
            "shell": run_shell(&run.command),
            "network": match run.network { Network::Host => "host", Network::None => "none", Network::Bridge => "bridge" },
            "privileged": run.privileges.privileged,
            "cap_add": run.privileges.cap_add,
            "cap_drop": run.privileges.cap_drop,
        }),
        StepKind::Copy(copy) => serde_json::json!({
            "copy": copy.sources,
            "from": match &copy.from {
                CopyFrom::BuildContext => serde_json::Value::Null,
                CopyFrom::Context(name) => serde_json::json!({ "context": name }),
                CopyFrom::Stage(name) => serde_json::json!({ "stage": name }),
            },
            "to": copy.to,
            "mode": copy.mode,
            "owner": copy.owner,
        }),
        // Config-only steps are not cached (they cost nothing); their effect reaches later
        // steps through the state.
        StepKind::Env(_) | StepKind::Workdir(_) | StepKind::User(_) => serde_json::Value::Null,
    };
    String::from_utf8(canonical_json(&value)).expect("JSON is UTF-8")
}

/// The shell of a string run (`null` for a list), as [`definition`] holds it.
fn run_shell(command: &Command) -> serde_json::Value {
    match command {
        Command::Shell { shell, .. } => serde_json::json!(shell),
        Command::Argv(_) => serde_json::Value::Null,
    }
}

/// Whether two run step definitions differ in their shell (and perhaps more).
pub(super) fn shells_differ(before: &str, now: &str) -> bool {
    let shell = |definition: &str| {
        serde_json::from_str::<serde_json::Value>(definition)
            .ok()
            .map(|value| value["shell"].clone())
    };
    shell(before) != shell(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_image::ImageConfig;
    use kiln_spec::{Location, RunStep};

    fn run_step(script: &str, args: &[&str]) -> Step {
        Step {
            kind: StepKind::Run(RunStep {
                command: Command::Shell {
                    script: script.into(),
                    shell: vec!["/bin/sh".into(), "-e".into(), "-c".into()],
                },
                network: Network::Host,
                privileges: Default::default(),
                limits: Default::default(),
                cache: vec!["/var/cache/x".into()],
                secrets: vec![],
            }),
            args_used: args.iter().map(|s| s.to_string()).collect(),
            location: Location::default(),
        }
    }

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn key(step: &Step, args: &BTreeMap<String, String>) -> Digest {
        let parent = Digest::of_bytes(b"parent");
        KeyInputs::new(&parent, step, args, None, "zstd/0".into()).key()
    }

    #[test]
    fn only_used_args_count() {
        let step = run_step("echo ${A}", &["A"]);
        let base = key(&step, &args(&[("A", "1"), ("B", "1")]));
        assert_eq!(base, key(&step, &args(&[("A", "1"), ("B", "2")])));
        assert_ne!(base, key(&step, &args(&[("A", "2"), ("B", "1")])));
    }

    #[test]
    fn cache_mounts_are_not_part_of_the_key() {
        let a = run_step("make", &[]);
        let mut b = a.clone();
        if let StepKind::Run(run) = &mut b.kind {
            run.cache = vec!["/other".into()];
        }
        assert_eq!(key(&a, &args(&[])), key(&b, &args(&[])));
        assert_ne!(
            key(&a, &args(&[])),
            key(&run_step("make ", &[]), &args(&[]))
        );
    }

    #[test]
    fn the_shell_is_part_of_the_key() {
        let a = run_step("make", &[]);
        let mut b = a.clone();
        if let StepKind::Run(RunStep {
            command: Command::Shell { shell, .. },
            ..
        }) = &mut b.kind
        {
            *shell = vec!["/bin/sh".into(), "-c".into()];
        }
        assert_ne!(key(&a, &args(&[])), key(&b, &args(&[])));
        let (da, db) = (definition(&a.kind), definition(&b.kind));
        assert!(shells_differ(&da, &db));
        assert!(!shells_differ(
            &da,
            &definition(&run_step("make all", &[]).kind)
        ));
    }

    #[test]
    fn state_follows_layers_and_env() {
        let mut image = Partial {
            config: ImageConfig::scratch(),
            layers: vec![],
        };
        let empty = state_id(&image);
        image.config.config.set_env("A", "1");
        let with_env = state_id(&image);
        assert_ne!(empty, with_env);
        image.config.rootfs.diff_ids.push(Digest::of_bytes(b"l"));
        assert_ne!(with_env, state_id(&image));
    }
}
