//! `steps:`: the list of build steps, each a mapping with exactly one kind key
//! (`run`, `copy`, `env`, `workdir`, `user`) plus that kind's modifiers, and `shell:`, the
//! program a string `run:` script is given to (on a step, a stage or the whole spec).

use std::collections::BTreeSet;
use std::path::Path;

use super::error::{did_you_mean, Issue, Issues, Result};
use super::limits::{parse_limits, LIMIT_KEYS};
use super::model::{
    Command, CopyFrom, CopyStep, Location, Network, RunStep, Secret, SecretSource, Step, StepKind,
    DEFAULT_SHELL,
};
use super::names::{check_env_name, check_user};
use super::node::{Node, Value};
use super::read::{list, located, Expander, Fields};
use super::sections::parse_privileges;
use super::stages::{Place, StageUse};
use super::subst::Vars;
use super::top::resolve;
use super::units::{mode_from_int, parse_mode};

pub(crate) const KINDS: [&str; 5] = ["run", "copy", "env", "workdir", "user"];
pub(crate) const RUN_MODIFIERS: [&str; 7] = [
    "shell",
    "network",
    "cache",
    "secrets",
    "capabilities",
    "privileged",
    "resources",
];
pub(crate) const COPY_MODIFIERS: [&str; 4] = ["from", "to", "mode", "owner"];
/// The keys of one entry of a run step's `secrets:`.
pub(crate) const SECRET_KEYS: [&str; 4] = ["id", "source", "env", "target"];
const SECRET_EXAMPLE: &str = "e.g. { id: token, source: ./token.txt } or { id: token, env: TOKEN }";
const SHELL_EXAMPLE: &str =
    "e.g. shell: [/bin/bash, -euo, pipefail, -c]; the script becomes the last argument";
#[rustfmt::skip]
pub(crate) const STEP_KEYS: [&str; 16] = [
    "run", "copy", "env", "workdir", "user", "shell", "network", "cache", "secrets",
    "capabilities", "privileged", "resources", "from", "to", "mode", "owner",
];

/// The shell string `run:` scripts get where no closer `shell:` is written: the spec's or
/// the stage's `shell:`, or [`DEFAULT_SHELL`].
#[derive(Debug, Clone)]
pub(crate) struct Shell {
    /// The program and its arguments, after `${NAME}` substitution.
    pub argv: Vec<String>,
    /// Args the words used, which count as used by every step that runs with this shell.
    pub args_used: BTreeSet<String>,
}

impl Default for Shell {
    fn default() -> Self {
        Shell {
            argv: DEFAULT_SHELL.map(String::from).to_vec(),
            args_used: BTreeSet::new(),
        }
    }
}

impl Shell {
    /// A top-level or stage `shell:`, expanded with `vars`.
    pub fn parse(node: &Node, vars: &Vars) -> Result<Shell> {
        let ex = Expander::new(vars);
        let argv = shell(&ex, node)?;
        Ok(Shell {
            argv,
            args_used: ex.into_args_used(),
        })
    }
}

/// What steps need to know about the rest of the spec.
pub(crate) struct StepContext<'a> {
    /// The spec's folder, for relative secret sources.
    pub dir: &'a Path,
    /// Names declared under `contexts:`, for `copy … from:`.
    pub contexts: Vec<&'a str>,
    /// The stage the steps belong to, for `copy … from:`.
    pub stages: &'a Place<'a>,
    /// The shell of string `run:` steps without their own `shell:`.
    pub shell: &'a Shell,
}

/// Reads `steps:`. `vars` grows with every `env:` step, for the steps after it. A step with
/// a problem is recorded in `issues` and the next one is read all the same.
pub(crate) fn parse_steps(
    node: &Node,
    cx: &StepContext,
    vars: &mut Vars,
    issues: &mut Issues,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if node.is_null() {
        return steps;
    }
    let Some(items) = issues.check(list(node, "steps")) else {
        return steps;
    };
    for item in items {
        if issues.is_full() {
            break;
        }
        match parse_step(item, cx, vars) {
            Ok(step) => {
                if let StepKind::Env(env) = &step.kind {
                    vars.define_all(env.iter().map(|(k, v)| (k, v)));
                }
                steps.push(step);
            }
            Err(issue) => {
                // A broken env step leaves names undefined that later steps may use.
                if has_key(item, "env") {
                    vars.mark_incomplete();
                }
                issues.add(issue);
            }
        }
    }
    steps
}

/// Whether `item` is a mapping with the key `name`.
fn has_key(item: &Node, name: &str) -> bool {
    matches!(&item.value, Value::Map(entries) if entries.iter().any(|(k, _)| k.scalar_text() == Some(name)))
}

fn parse_step(item: &Node, cx: &StepContext, vars: &Vars) -> Result<Step> {
    if !matches!(item.value, Value::Map(_)) {
        return Err(Issue::at(
            item.location,
            format!("a step must be a mapping, found {}", item.kind_name()),
        )
        .hint("e.g. `- run: make` or `- copy: src/`"));
    }
    let fields = Fields::new(item, "step", &STEP_KEYS)?;
    let kind = step_kind(item, &fields)?;
    check_modifiers(kind, &fields)?;
    let value = fields.get(kind).unwrap_or(item);
    let ex = Expander::new(vars);
    let kind = match kind {
        "run" => StepKind::Run(run_step(value, &fields, cx, &ex)?),
        "copy" => StepKind::Copy(copy_step(value, &fields, cx, &ex)?),
        "env" => StepKind::Env(ex.env_map(value, "env")?),
        "workdir" => StepKind::Workdir(ex.container_path(value, "workdir", false)?),
        // "user", the last of KINDS.
        _ => StepKind::User(user(&ex, value, "user")?),
    };
    Ok(Step {
        kind,
        args_used: ex.into_args_used(),
        location: item.location,
    })
}

/// The one kind key of a step.
fn step_kind(item: &Node, fields: &Fields) -> Result<&'static str> {
    let mut found = fields
        .names()
        .filter_map(|(name, key)| KINDS.iter().find(|k| **k == name).map(|k| (*k, key)));
    let needs_one = "a step needs exactly one of run, copy, env, workdir, user";
    match (found.next(), found.next()) {
        (Some((kind, _)), None) => Ok(kind),
        (None, _) => Err(Issue::at(item.location, needs_one)),
        (Some((first, _)), Some((second, key))) => Err(Issue::at(key.location, needs_one).hint(
            format!("this step has both \"{first}\" and \"{second}\"; make them two steps"),
        )),
    }
}

/// Rejects modifiers that belong to another kind of step (`to:` on a `run:` step).
fn check_modifiers(kind: &str, fields: &Fields) -> Result<()> {
    let allowed: &[&str] = match kind {
        "run" => &RUN_MODIFIERS,
        "copy" => &COPY_MODIFIERS,
        _ => &[],
    };
    for (name, key) in fields.names() {
        if name == kind || allowed.contains(&name) {
            continue;
        }
        // Unknown keys and second kind keys were reported already: this is a modifier.
        let owner = if RUN_MODIFIERS.contains(&name) {
            "run"
        } else {
            "copy"
        };
        return Err(Issue::at(
            key.location,
            format!("\"{name}\" is not allowed on a {kind} step"),
        )
        .hint(format!("\"{name}\" belongs to {owner} steps")));
    }
    Ok(())
}

fn run_step(value: &Node, fields: &Fields, cx: &StepContext, ex: &Expander) -> Result<RunStep> {
    Ok(RunStep {
        command: command(value, fields, cx, ex)?,
        network: fields.read_or_default("network", |n| network(ex, n))?,
        privileges: parse_privileges(fields, ex)?,
        limits: Box::new(fields.read_or_default("resources", |n| {
            parse_limits(&Fields::new(n, "resources", &LIMIT_KEYS)?, ex)
        })?),
        cache: fields.read_or_default("cache", |n| ex.container_paths(n, "cache", true))?,
        secrets: fields.read_or_default("secrets", |n| secrets(n, cx, ex))?,
    })
}

/// A list `run:` is exec'd, with `${NAME}` substituted since no shell will; a string is a
/// script kept as written for its shell: the step's `shell:`, else the stage's or spec's.
fn command(value: &Node, fields: &Fields, cx: &StepContext, ex: &Expander) -> Result<Command> {
    if matches!(value.value, Value::Seq(_)) {
        if let Some(key) = fields.key("shell") {
            return Err(Issue::at(
                key.location,
                "shell: does not apply to a list run: (it is executed without a shell)",
            )
            .hint("write run: as a string to run it with this shell, or remove shell:"));
        }
        let words = ex.texts(value, "run")?;
        if words.is_empty() {
            return Err(Issue::at(value.location, "run needs at least one word")
                .hint("e.g. run: [make, install]"));
        }
        return Ok(Command::Argv(words));
    }
    let script = ex.shell_text(value, "run")?;
    if script.trim().is_empty() {
        return Err(Issue::at(value.location, "run has an empty command"));
    }
    let shell = match fields.get("shell") {
        Some(node) => shell(ex, node)?,
        None => {
            ex.note_args_used(&cx.shell.args_used);
            cx.shell.argv.clone()
        }
    };
    Ok(Command::Shell { script, shell })
}

/// A `shell:` value: a non-empty list whose first word is the program; the script is
/// appended as its last argument.
fn shell(ex: &Expander, node: &Node) -> Result<Vec<String>> {
    let Value::Seq(items) = &node.value else {
        return Err(Issue::at(
            node.location,
            format!(
                "shell must be a list of strings, found {}",
                node.kind_name()
            ),
        )
        .hint(SHELL_EXAMPLE));
    };
    let words = ex.texts(node, "shell")?;
    match (words.first(), items.first()) {
        (Some(program), Some(item)) if program.is_empty() => {
            Err(Issue::at(item.location, "the shell's program is empty").hint(SHELL_EXAMPLE))
        }
        (Some(_), _) => Ok(words),
        _ => Err(Issue::at(node.location, "shell needs at least a program").hint(SHELL_EXAMPLE)),
    }
}

/// `bridge`, `host` or `none`; shared with the `run:` section.
pub(crate) fn network(ex: &Expander, node: &Node) -> Result<Network> {
    match ex.text(node, "network")?.as_str() {
        "bridge" => Ok(Network::Bridge),
        "host" => Ok(Network::Host),
        "none" => Ok(Network::None),
        other => Err(
            Issue::at(node.location, format!("invalid network \"{other}\""))
                .hint("use bridge (the default), host or none"),
        ),
    }
}

fn secrets(node: &Node, cx: &StepContext, ex: &Expander) -> Result<Vec<Secret>> {
    let mut secrets: Vec<Secret> = Vec::new();
    for item in list(node, "secrets")? {
        let fields = Fields::new(item, "secret", &SECRET_KEYS)?;
        let id_node = fields.get("id").ok_or_else(|| {
            Issue::at(item.location, "a secret needs \"id\"").hint(SECRET_EXAMPLE)
        })?;
        let id = ex.text(id_node, "id")?;
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(
                Issue::at(id_node.location, format!("invalid secret id \"{id}\""))
                    .hint("letters, digits, '_', '.' and '-'"),
            );
        }
        let source = secret_source(item, &fields, cx, ex)?;
        let target = match fields.get("target") {
            Some(node) => ex.container_path(node, "target", true)?,
            None => format!("/run/secrets/{id}"),
        };
        if let Some(clash) = secrets.iter().find(|s| s.id == id || s.target == target) {
            return Err(Issue::at(
                item.location,
                format!("secret \"{id}\" clashes with secret \"{}\"", clash.id),
            )
            .hint("each secret needs its own id and target"));
        }
        secrets.push(Secret {
            id,
            source,
            target,
            location: item.location,
        });
    }
    Ok(secrets)
}

/// Exactly one of `source: PATH` (a host file) and `env: VAR` (a variable of kiln's own
/// environment). Neither is read here: the build reads it when the step runs.
fn secret_source(
    item: &Node,
    fields: &Fields,
    cx: &StepContext,
    ex: &Expander,
) -> Result<SecretSource> {
    match (fields.get("source"), fields.get("env")) {
        (Some(_), Some(_)) => {
            let second = fields
                .names()
                .filter(|(name, _)| *name == "source" || *name == "env")
                .nth(1)
                .map_or(item.location, |(_, key)| key.location);
            Err(
                Issue::at(second, "a secret takes \"source\" or \"env\", not both").hint(
                    "source: reads a file, env: reads a variable of kiln build's environment",
                ),
            )
        }
        (None, None) => Err(
            Issue::at(item.location, "a secret needs \"source\" or \"env\"").hint(SECRET_EXAMPLE),
        ),
        (Some(node), None) => {
            let path = ex.text(node, "source")?;
            if path.is_empty() {
                return Err(Issue::at(node.location, "secret source is empty")
                    .hint("give the path of a file, relative to the spec's folder"));
            }
            Ok(SecretSource::File(resolve(cx.dir, &path)))
        }
        (None, Some(node)) => {
            let name = ex.text(node, "env")?;
            located(node, check_env_name(&name))?;
            Ok(SecretSource::Env(name))
        }
    }
}

fn copy_step(value: &Node, fields: &Fields, cx: &StepContext, ex: &Expander) -> Result<CopyStep> {
    let (sources, _) = ex.text_or_texts(value, "copy")?;
    if sources.is_empty() || sources.iter().any(String::is_empty) {
        return Err(
            Issue::at(value.location, "copy needs non-empty source paths")
                .hint("e.g. copy: [src/, Cargo.toml]"),
        );
    }
    let from = match fields.get("from") {
        Some(node) => copy_origin(ex, node, cx)?,
        None => CopyFrom::BuildContext,
    };
    let sources = match from {
        CopyFrom::Stage(_) => stage_sources(value, sources)?,
        _ => context_sources(value, sources)?,
    };
    let to_node = fields.get("to").ok_or_else(|| {
        let copy_key = fields.key("copy").map_or(value.location, |k| k.location);
        Issue::at(copy_key, "copy needs \"to\"").hint("e.g. to: /usr/local/bin/")
    })?;
    let to = ex.text(to_node, "to")?;
    if to.is_empty() {
        return Err(Issue::at(to_node.location, "\"to\" is empty"));
    }
    Ok(CopyStep {
        sources,
        from,
        to,
        mode: fields.read("mode", |n| mode(ex, n))?,
        owner: fields.read("owner", |n| user(ex, n, "owner"))?,
    })
}

/// Sources in a build context stay inside it; the build re-checks symlinks when it copies.
fn context_sources(value: &Node, sources: Vec<String>) -> Result<Vec<String>> {
    let escapes = |s: &String| s.starts_with('/') || has_dot_dot(s);
    if let Some(index) = sources.iter().position(escapes) {
        return Err(Issue::at(
            source_location(value, index),
            format!(
                "copy source \"{}\" leaves the build context",
                sources[index]
            ),
        )
        .hint("sources are relative to the context folder and cannot use \"..\" or start with /"));
    }
    Ok(sources)
}

/// Sources in another stage are paths in its filesystem, made absolute so the build has one
/// form to deal with.
fn stage_sources(value: &Node, sources: Vec<String>) -> Result<Vec<String>> {
    if let Some(index) = sources.iter().position(|s| has_dot_dot(s)) {
        return Err(Issue::at(
            source_location(value, index),
            format!("copy source \"{}\" contains \"..\"", sources[index]),
        )
        .hint("write the path inside the stage without \"..\", e.g. /usr/local/bin/app"));
    }
    Ok(sources
        .into_iter()
        .map(|s| {
            if s.starts_with('/') {
                s
            } else {
                format!("/{s}")
            }
        })
        .collect())
}

fn has_dot_dot(path: &str) -> bool {
    path.split('/').any(|part| part == "..")
}

/// The position of the `index`th source, for a list; of the whole value otherwise.
fn source_location(value: &Node, index: usize) -> Location {
    match &value.value {
        Value::Seq(items) => items
            .get(index)
            .map_or(value.location, |item| item.location),
        _ => value.location,
    }
}

/// `copy … from: NAME`: a build context or an earlier stage, never a name that is both.
fn copy_origin(ex: &Expander, node: &Node, cx: &StepContext) -> Result<CopyFrom> {
    let name = ex.text(node, "from")?;
    let is_context = cx.contexts.contains(&name.as_str());
    if is_context && cx.stages.is_stage(&name) {
        return Err(Issue::at(
            node.location,
            format!("\"{name}\" is both a build context and a stage"),
        )
        .hint("rename one of them so that copy from: is not ambiguous"));
    }
    if is_context {
        return Ok(CopyFrom::Context(name));
    }
    if cx
        .stages
        .refers_to_stage(&name, node.location, StageUse::Copy)?
    {
        return Ok(CopyFrom::Stage(name));
    }
    let candidates = cx.contexts.iter().chain(cx.stages.earlier()).copied();
    let (what, otherwise) = if cx.stages.is_multi_stage() {
        ("build context or stage", ", or name an earlier stage")
    } else {
        ("build context", "")
    };
    Err(
        Issue::at(node.location, format!("unknown {what} \"{name}\"")).hint(
            did_you_mean(&name, candidates).unwrap_or_else(|| {
                format!("declare it under contexts:, e.g. {name}: ./dir{otherwise}")
            }),
        ),
    )
}

fn mode(ex: &Expander, node: &Node) -> Result<u32> {
    match &node.value {
        Value::Int { value, raw } => located(node, mode_from_int(*value, raw)),
        Value::Str(_) => located(node, parse_mode(&ex.text(node, "mode")?)),
        _ => Err(Issue::at(
            node.location,
            format!(
                "mode must be a quoted octal string, found {}",
                node.kind_name()
            ),
        )
        .hint("e.g. mode: \"0755\"")),
    }
}

/// `NAME`, `UID`, `NAME:GROUP` or `UID:GID`; shared with `config:` and `run:`.
pub(crate) fn user(ex: &Expander, node: &Node, what: &str) -> Result<String> {
    let user = ex.text(node, what)?;
    located(node, check_user(&user))?;
    Ok(user)
}
