//! Stages: `stages:` (an ordered mapping of named stages) or the single stage written as
//! top-level `from:`/`steps:`, each stage's base, and `--target`.
//!
//! Stages may only use the stages above them, so the stages form a graph without cycles by
//! construction, and a stage can be checked as soon as it is read. A stage built on an
//! earlier one sees that stage's variables, as its build inherits that stage's environment.

use std::collections::BTreeSet;
use std::path::Path;

use super::error::{did_you_mean, Issue, Issues, NoSuchStage, Result};
use super::model::{From, Location, Spec, Stage, SINGLE_STAGE_NAME};
use super::node::{Node, Value};
use super::read::{key_text, mapping, Expander, Fields};
use super::sections::{run_keys, CONFIG_KEYS};
use super::steps::{parse_steps, Shell, StepContext, STEP_KEYS};
use super::subst::Vars;
use super::top::resolve;

pub(crate) const STAGE_KEYS: [&str; 4] = ["from", "steps", "env", "shell"];
/// Top-level keys that make no sense inside one stage.
const SHARED_KEYS: [&str; 2] = ["args", "contexts"];
const FINAL_IMAGE_KEYS: [&str; 3] = ["image", "config", "run"];
pub(crate) const MAX_STAGE_NAME: usize = 128;
const FROM_EXAMPLES: &str =
    "e.g. from: scratch, from: alpine:3.20, from: oci:./layout, from: rootfs:./root.tar";

/// What every stage sees of the top level of the spec.
pub(crate) struct Shared<'a> {
    /// The spec's folder.
    pub dir: &'a Path,
    /// Names declared under `contexts:`.
    pub contexts: Vec<&'a str>,
    /// Build args and the top-level `env:`.
    pub vars: Vars,
    /// The top-level `env:`, expanded.
    pub env: &'a [(String, String)],
    /// Args the top-level `env:` used.
    pub env_args_used: BTreeSet<String>,
    /// The top-level `shell:`, or the default one.
    pub shell: Shell,
}

/// A stage as written: its name and the nodes of its keys, not yet checked.
struct Written<'n> {
    name: String,
    location: Location,
    from: &'n Node,
    steps: Option<&'n Node>,
    env: Option<&'n Node>,
    shell: Option<&'n Node>,
}

/// Reads every stage, in file order, and returns them with the variables in scope at the
/// end of the last one (what `config:` and `run:` see). A stage with a problem is recorded
/// in `issues` and the stages after it are still read.
pub(crate) fn parse_stages(
    root: &Node,
    top: &Fields,
    shared: &Shared,
    issues: &mut Issues,
) -> (Vec<Stage>, Vars) {
    let (written, names) = match (top.key("stages"), top.get("stages")) {
        (Some(key), Some(stages)) => {
            issues.check(refuse_single_stage_keys(top));
            written_stages(key, stages, issues)
        }
        _ => match issues.check(single_stage(root, top)) {
            // In a spec without `stages:`, `from: main` is an image, not the stage itself.
            Some(stage) => (vec![Some(stage)], Vec::new()),
            None => (Vec::new(), Vec::new()),
        },
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut stages: Vec<Stage> = Vec::new();
    let mut scopes: Vec<Vars> = Vec::new();
    for (index, stage) in written.iter().enumerate() {
        if issues.is_full() {
            break;
        }
        let Some(stage) = stage else {
            // Its problem is recorded; a stage built on it sees an unknown scope.
            scopes.push(shared.vars.incomplete());
            continue;
        };
        let place = Place {
            names: &names,
            index,
        };
        let (stage, vars) = parse_stage(stage, &place, &scopes, shared, issues);
        stages.push(stage);
        scopes.push(vars);
    }
    let last = match scopes.pop() {
        Some(scope) => scope,
        None => shared.vars.incomplete(),
    };
    (stages, last)
}

/// The stage a spec without `stages:` describes.
fn single_stage<'n>(root: &'n Node, top: &Fields<'n>) -> Result<Written<'n>> {
    let from = top.get("from").ok_or_else(|| {
        Issue::at(root.location, "missing required key \"from\"").hint(format!(
            "{FROM_EXAMPLES}; or stages: for a multi-stage build"
        ))
    })?;
    Ok(Written {
        name: SINGLE_STAGE_NAME.to_string(),
        location: top.key("from").map_or(root.location, |key| key.location),
        from,
        steps: top.get("steps"),
        // The top-level env: and shell: are the spec's, read once for every stage.
        env: None,
        shell: None,
    })
}

fn refuse_single_stage_keys(top: &Fields) -> Result<()> {
    for name in ["from", "steps"] {
        if let Some(key) = top.key(name) {
            return Err(Issue::at(
                key.location,
                format!("top-level \"{name}\" cannot be used together with stages:"),
            )
            .hint("move it into a stage: each stage has its own from: and steps:"));
        }
    }
    Ok(())
}

/// The stages as written, `None` for one with a problem (recorded in `issues`), and every
/// stage name in file order, those of stages with a problem too: a later `from:` or
/// `copy … from:` naming one is not an image or an unknown name.
fn written_stages<'n>(
    key: &Node,
    node: &'n Node,
    issues: &mut Issues,
) -> (Vec<Option<Written<'n>>>, Vec<String>) {
    if node.is_null() || matches!(&node.value, Value::Map(entries) if entries.is_empty()) {
        issues.add(
            Issue::at(key.location, "stages: needs at least one stage")
                .hint("e.g. stages: { build: { from: alpine, steps: [...] } }"),
        );
        return (Vec::new(), Vec::new());
    }
    let entries = mapping(node, "stages")
        .map_err(|issue| issue.hint("stages: maps each stage's name to its from: and steps:"));
    let Some(entries) = issues.check(entries) else {
        return (Vec::new(), Vec::new());
    };
    let mut names = Vec::new();
    let mut written = Vec::new();
    for (key, value) in entries {
        let Some(name) = issues.check(key_text(key)) else {
            continue;
        };
        names.push(name.to_string());
        written.push(issues.check(written_stage(name, key, value)));
    }
    (written, names)
}

fn written_stage<'n>(name: &str, key: &'n Node, value: &'n Node) -> Result<Written<'n>> {
    check_stage_name(name, key.location)?;
    if !matches!(value.value, Value::Map(_)) {
        // An empty value has no position of its own worth showing; its key has.
        let at = if value.is_null() {
            key.location
        } else {
            value.location
        };
        return Err(Issue::at(
            at,
            format!(
                "stage \"{name}\" must be a mapping, found {}",
                value.kind_name()
            ),
        )
        .hint("e.g. { from: alpine:3.20, steps: [...] }"));
    }
    refuse_misplaced_keys(value)?;
    let fields = Fields::new(value, "stage", &STAGE_KEYS)?;
    let from = fields.get("from").ok_or_else(|| {
        Issue::at(key.location, format!("stage \"{name}\" needs \"from\""))
            .hint(format!("{FROM_EXAMPLES}, or the name of an earlier stage"))
    })?;
    Ok(Written {
        name: name.to_string(),
        location: key.location,
        from,
        steps: fields.get("steps"),
        env: fields.get("env"),
        shell: fields.get("shell"),
    })
}

/// Names that also work in image references and file names, so a stage name can be used in
/// `from:`, `--target` and directory names alike.
fn check_stage_name(name: &str, location: Location) -> Result<()> {
    if name == "scratch" {
        return Err(Issue::at(location, "\"scratch\" cannot be a stage name")
            .hint("from: scratch means an empty base; pick another name"));
    }
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if !starts_well || !chars_ok || name.len() > MAX_STAGE_NAME {
        return Err(
            Issue::at(location, format!("invalid stage name \"{name}\"")).hint(format!(
                "lower-case letters, digits, '-', '_' and '.', starting with a letter or digit, at most {MAX_STAGE_NAME} characters"
            )),
        );
    }
    Ok(())
}

/// Keys that belong elsewhere get a message saying where, rather than "unknown key".
fn refuse_misplaced_keys(stage: &Node) -> Result<()> {
    let Value::Map(entries) = &stage.value else {
        return Ok(());
    };
    for (key, _) in entries {
        let name = key.scalar_text().unwrap_or_default();
        // Step keys first: `run:` or `user:` in a stage is most likely a step out of place.
        let place = if STAGE_KEYS.contains(&name) {
            continue;
        } else if STEP_KEYS.contains(&name) {
            "in a step under the stage's steps:"
        } else if FINAL_IMAGE_KEYS.contains(&name) {
            "at the top level: it applies to the final image"
        } else if SHARED_KEYS.contains(&name) {
            "at the top level: it is shared by all stages"
        } else if CONFIG_KEYS.contains(&name) {
            "in config: at the top level"
        } else if run_keys().contains(&name) {
            "in run: at the top level"
        } else {
            continue;
        };
        return Err(
            Issue::at(key.location, format!("unknown stage key \"{name}\""))
                .hint(format!("\"{name}\" belongs {place}")),
        );
    }
    Ok(())
}

/// How one stage uses another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StageUse {
    /// `from: STAGE`.
    Base,
    /// `copy … from: STAGE`.
    Copy,
}

/// Which stage is being read, among which names: what `from:` needs to tell a stage from
/// an image or a build context.
pub(crate) struct Place<'a> {
    /// Every stage name in file order; empty for a spec without `stages:`.
    names: &'a [&'a str],
    index: usize,
}

impl Place<'_> {
    fn current(&self) -> &str {
        self.names
            .get(self.index)
            .copied()
            .unwrap_or(SINGLE_STAGE_NAME)
    }

    /// The stages this one may use.
    pub fn earlier(&self) -> &[&str] {
        &self.names[..self.index.min(self.names.len())]
    }

    /// Whether `name` is any stage of the spec, before or after this one.
    pub fn is_stage(&self, name: &str) -> bool {
        self.names.contains(&name)
    }

    /// Whether the spec has `stages:` (rather than top-level `from:`/`steps:`).
    pub fn is_multi_stage(&self) -> bool {
        !self.names.is_empty()
    }

    /// Whether `name` is a stage this one may use as `how`; `Ok(false)` when it names no
    /// stage.
    pub fn refers_to_stage(&self, name: &str, location: Location, how: StageUse) -> Result<bool> {
        let Some(index) = self.names.iter().position(|n| *n == name) else {
            return Ok(false);
        };
        if index == self.index {
            return Err(match how {
                StageUse::Base => Issue::at(
                    location,
                    format!("stage \"{name}\" cannot be built from itself"),
                )
                .hint(format!(
                    "a stage name wins over an image of the same name; to use the image \"{name}\", rename the stage"
                )),
                StageUse::Copy => Issue::at(
                    location,
                    format!("stage \"{name}\" cannot copy from itself"),
                ),
            });
        }
        if index > self.index {
            return Err(Issue::at(
                location,
                format!("stage \"{name}\" is defined after \"{}\"", self.current()),
            )
            .hint(format!(
                "a stage can only use the stages above it; move \"{name}\" above \"{}\"",
                self.current()
            )));
        }
        Ok(true)
    }
}

/// One stage, its problems recorded in `issues`. With a problem the stage returned is
/// incomplete, which is harmless: the spec as a whole is then an error.
fn parse_stage(
    written: &Written,
    place: &Place,
    earlier_scopes: &[Vars],
    shared: &Shared,
    issues: &mut Issues,
) -> (Stage, Vars) {
    let from_ex = Expander::new(&shared.vars);
    let from = issues.check(stage_base(written, place, &from_ex, shared.dir));
    let from_args_used = from_ex.into_args_used();

    // Mirror the build: the base's environment, then the top-level env, then the stage's.
    let mut vars = match &from {
        Some(From::Stage(name)) => place
            .names
            .iter()
            .position(|n| n == name)
            .and_then(|index| earlier_scopes.get(index))
            .cloned()
            .unwrap_or_else(|| shared.vars.clone()),
        Some(_) => shared.vars.clone(),
        // The base is unknown, and so is what it defines.
        None => shared.vars.incomplete(),
    };
    vars.define_all(shared.env.iter().map(|(k, v)| (k, v)));
    let env_ex = Expander::new(&vars);
    let own_env = match written.env {
        Some(node) => issues.check(env_ex.env_map(node, "env")),
        None => Some(Vec::new()),
    };
    let mut env_args_used = env_ex.into_args_used();
    env_args_used.extend(shared.env_args_used.iter().cloned());
    match &own_env {
        Some(env) => vars.define_all(env.iter().map(|(k, v)| (k, v))),
        None => vars.mark_incomplete(),
    }
    // A stage's shell: is its own setting, like its env:, over the top-level one. It is not
    // taken from a base stage: a shell is how steps are written, not part of an image.
    let shell = match written.shell {
        Some(node) => issues
            .check(Shell::parse(node, &vars))
            .unwrap_or_else(|| shared.shell.clone()),
        None => shared.shell.clone(),
    };

    let step_context = StepContext {
        dir: shared.dir,
        contexts: shared.contexts.clone(),
        stages: place,
        shell: &shell,
    };
    let steps = match written.steps {
        Some(node) => parse_steps(node, &step_context, &mut vars, issues),
        None => Vec::new(),
    };
    let stage = Stage {
        name: written.name.clone(),
        from: from.unwrap_or(From::Scratch),
        from_args_used,
        steps,
        env: shared
            .env
            .iter()
            .cloned()
            .chain(own_env.unwrap_or_default())
            .collect(),
        env_args_used,
        location: written.location,
        from_location: written.from.location,
    };
    (stage, vars)
}

/// A stage's `from:`: an earlier stage, or a base as [`parse_from`] reads it.
fn stage_base(written: &Written, place: &Place, ex: &Expander, dir: &Path) -> Result<From> {
    let text = ex.text(written.from, "from")?;
    if place.refers_to_stage(&text, written.from.location, StageUse::Base)? {
        Ok(From::Stage(text))
    } else {
        parse_from(&text, written.from, dir)
    }
}

/// `scratch` | `oci:PATH[:TAG]` | `rootfs:PATH` | an image reference.
fn parse_from(text: &str, node: &Node, dir: &Path) -> Result<From> {
    let empty = |what: &str| {
        Issue::at(
            node.location,
            format!("\"from: {text}\" has an empty {what}"),
        )
    };
    if text == "scratch" {
        Ok(From::Scratch)
    } else if let Some(rest) = text.strip_prefix("oci:") {
        // A ':' followed by a '/' belongs to the path (`oci:./a:b/layout`), not a tag.
        let (path, tag) = match rest.rsplit_once(':') {
            Some((path, tag)) if !tag.contains('/') => (path, Some(tag)),
            _ => (rest, None),
        };
        if path.is_empty() {
            return Err(empty("path"));
        }
        if tag == Some("") {
            return Err(empty("tag"));
        }
        Ok(From::OciLayout {
            path: resolve(dir, path),
            tag: tag.map(str::to_string),
        })
    } else if let Some(path) = text.strip_prefix("rootfs:") {
        if path.is_empty() {
            return Err(empty("path"));
        }
        Ok(From::Rootfs(resolve(dir, path)))
    } else if text.is_empty() || text.contains(char::is_whitespace) {
        Err(
            Issue::at(node.location, format!("invalid base image \"{text}\"")).hint(
                "use scratch, an image reference, oci:PATH[:TAG], rootfs:PATH or an earlier stage",
            ),
        )
    } else {
        Ok(From::Image(text.to_string()))
    }
}

impl Spec {
    /// `kiln build --target NAME`: drops the stages after `name`, which becomes the image.
    /// `config:`, `run:` and `image:` stay as written; they now describe that stage's image.
    pub fn truncate_to(&mut self, name: &str) -> Result<(), NoSuchStage> {
        let Some(index) = self.stage_index(name) else {
            let names = || self.stages.iter().map(|stage| stage.name.as_str());
            let hint = did_you_mean(name, names()).unwrap_or_else(|| {
                let list: Vec<String> = names().map(|n| format!("\"{n}\"")).collect();
                format!("the stages are {}", list.join(", "))
            });
            return Err(NoSuchStage {
                file: self.file.clone(),
                name: name.into(),
                hint,
            });
        };
        self.stages.truncate(index + 1);
        Ok(())
    }
}
