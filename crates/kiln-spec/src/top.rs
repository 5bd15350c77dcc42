//! The top level of a spec: `image`, `args`, `contexts`, `env`, `shell`, and the order in
//! which sections are read so that `${NAME}` sees the right variables. Stages are in
//! `stages`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{did_you_mean, Issue, Issues, Result};
use super::model::Spec;
use super::node::{Node, Value};
use super::read::{key_text, optional_mapping, text, Expander, Fields};
use super::sections::{parse_config, parse_run, run_keys, CONFIG_KEYS};
use super::stages::{parse_stages, Shared};
use super::steps::{Shell, STEP_KEYS};
use super::subst::{is_var_name, Vars};

#[rustfmt::skip]
pub(crate) const TOP_KEYS: [&str; 10] = [
    "image", "from", "args", "contexts", "env", "shell", "stages", "steps", "config", "run",
];

/// Builds the validated [`Spec`] from the YAML tree of the file `file`, or every problem
/// found (up to [`super::error::MAX_ISSUES`]): each section, stage and step is checked even
/// after another had a problem.
pub(crate) fn build_spec(
    root: &Node,
    file: &Path,
    overrides: &[(String, String)],
) -> Result<Spec, Vec<Issue>> {
    check_root(root).map_err(|issue| vec![issue])?;
    let dir = &spec_dir(file).map_err(|issue| vec![issue])?;
    let mut issues = Issues::default();
    let f = Fields::lenient(root, "top-level", &TOP_KEYS, &mut issues, belongs_in)
        .map_err(|issue| vec![issue])?;
    let empty = Node {
        value: Value::Null,
        location: root.location,
    };
    let section = |name: &str| f.get(name).unwrap_or(&empty);

    // Reading order is scope order: args, then env, then the stages (env steps add to it),
    // then config and run, which see the scope at the end of the last stage. A section
    // with a problem leaves the scope incomplete, which silences undefined-name follow-ons.
    let mut vars = Vars::default();
    let args = issues.check(parse_args(section("args"), overrides));
    match &args {
        Some(args) => vars.define_args(args),
        None => vars.mark_incomplete(),
    }
    let contexts = parse_contexts(section("contexts"), dir, &mut issues);
    let env_ex = Expander::new(&vars);
    let env = issues.check(env_ex.env_map(section("env"), "env"));
    let env_args_used = env_ex.into_args_used();
    match &env {
        Some(env) => vars.define_all(env.iter().map(|(k, v)| (k, v))),
        None => vars.mark_incomplete(),
    }
    let env = env.unwrap_or_default();
    let image = issues
        .check(f.read("image", |n| image_name(&Expander::new(&vars), n)))
        .flatten();
    let shell = issues
        .check(f.read_or_default("shell", |n| Shell::parse(n, &vars)))
        .unwrap_or_default();
    let shared = Shared {
        dir,
        contexts: contexts.keys().map(String::as_str).collect(),
        vars,
        env: &env,
        env_args_used,
        shell,
    };
    let (stages, last_scope) = parse_stages(root, &f, &shared, &mut issues);
    let ex = Expander::new(&last_scope);
    let config = parse_config(section("config"), &ex, &mut issues);
    let run = parse_run(section("run"), dir, &ex, &mut issues);
    // Past this point every section was read without a problem, so the defaults below
    // are never used.
    issues.finish()?;
    Ok(Spec {
        file: file.to_path_buf(),
        image,
        image_location: f.get("image").map(|n| n.location),
        stages,
        config,
        run,
        contexts,
        env,
        args: args.unwrap_or_default(),
    })
}

/// The root must be a mapping.
fn check_root(root: &Node) -> Result<()> {
    match &root.value {
        Value::Map(_) => Ok(()),
        Value::Null => Err(Issue::at(root.location, "the spec is empty")
            .hint("start with `from: scratch` or `from: IMAGE`")),
        _ => Err(Issue::at(
            root.location,
            format!(
                "a spec must be a mapping with keys such as from:, found {}",
                root.kind_name()
            ),
        )),
    }
}

/// Where a key of another section that was written at the top belongs: a better hint than
/// "did you mean".
fn belongs_in(name: &str) -> Option<String> {
    let section = if CONFIG_KEYS.contains(&name) {
        "config:"
    } else if run_keys().contains(&name) {
        "run:"
    } else if STEP_KEYS.contains(&name) {
        "a step under steps:"
    } else {
        return None;
    };
    Some(format!("\"{name}\" belongs in {section}"))
}

/// `args:` with `--arg` overrides applied. An arg written without a value (`VERSION:`)
/// must be given with `--arg`.
fn parse_args(node: &Node, overrides: &[(String, String)]) -> Result<BTreeMap<String, String>> {
    let mut declared: Vec<(&Node, &str, Option<&str>)> = Vec::new();
    for (key, value) in optional_mapping(node, "args")? {
        let name = key_text(key)?;
        if !is_var_name(name) {
            return Err(
                Issue::at(key.location, format!("invalid build arg name \"{name}\"")).hint(
                    "letters, digits and _, not starting with a digit, so ${NAME} can use it",
                ),
            );
        }
        let value = if value.is_null() {
            None
        } else {
            Some(text(value, &format!("build arg \"{name}\""))?)
        };
        declared.push((key, name, value));
    }
    for (name, _) in overrides {
        if !declared.iter().any(|(_, declared, _)| declared == name) {
            let suggestion = did_you_mean(name, declared.iter().map(|(_, n, _)| *n));
            return Err(
                Issue::nowhere(format!("unknown build arg \"{name}\"")).hint(match suggestion {
                    Some(suggestion) => format!("{suggestion} otherwise declare it under args:"),
                    None => "declare it under args:".to_string(),
                }),
            );
        }
    }
    let mut args = BTreeMap::new();
    for (key, name, default) in declared {
        // Like `docker build --build-arg`, the last of repeated overrides wins.
        let given = overrides.iter().rev().find(|(n, _)| n == name);
        let value = match (given, default) {
            (Some((_, value)), _) => value.clone(),
            (None, Some(default)) => default.to_string(),
            (None, None) => {
                return Err(
                    Issue::at(key.location, format!("build arg \"{name}\" has no value"))
                        .hint(format!("give it a default here or pass --arg {name}=VALUE")),
                )
            }
        };
        args.insert(name.to_string(), value);
    }
    Ok(args)
}

/// `contexts:` name → folder, relative paths taken from the spec's folder. A bad entry is
/// recorded and still named (with its path as written), so that `copy … from:` it is not
/// also reported as an unknown context.
fn parse_contexts(node: &Node, dir: &Path, issues: &mut Issues) -> BTreeMap<String, PathBuf> {
    let mut contexts = BTreeMap::new();
    let Some(entries) = issues.check(optional_mapping(node, "contexts")) else {
        return contexts;
    };
    for (key, value) in entries {
        let Some(name) = issues.check(key_text(key)) else {
            continue;
        };
        let path = issues.check(context(name, key, value)).unwrap_or_default();
        contexts.insert(name.to_string(), resolve(dir, path));
    }
    contexts
}

/// One `contexts:` entry's path.
fn context<'n>(name: &str, key: &Node, value: &'n Node) -> Result<&'n str> {
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(
            Issue::at(key.location, format!("invalid context name \"{name}\""))
                .hint("letters, digits, '_', '.' and '-'"),
        );
    }
    let path = text(value, &format!("context \"{name}\""))?;
    if path.is_empty() {
        return Err(Issue::at(
            value.location,
            format!("context \"{name}\" has an empty path"),
        ));
    }
    Ok(path)
}

fn image_name(ex: &Expander, node: &Node) -> Result<String> {
    let name = ex.text(node, "image")?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(
            Issue::at(node.location, format!("invalid image name \"{name}\""))
                .hint("e.g. image: hello:latest"),
        );
    }
    Ok(name)
}

/// The spec's folder, absolute, made so while the spec is read: relative host paths in the
/// spec are taken from it (the compose and bake convention), and an absolute path means the
/// same in every thread, also in one that has changed its working directory.
fn spec_dir(file: &Path) -> Result<PathBuf> {
    let file = std::path::absolute(file)
        .map_err(|e| Issue::nowhere(format!("cannot find the spec's folder: {e}")))?;
    Ok(file
        .parent()
        .map_or_else(|| file.clone(), Path::to_path_buf))
}

/// A host path from the spec, relative ones taken from the spec's (absolute) folder `dir`.
pub(crate) fn resolve(dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    let relative = path.strip_prefix(".").unwrap_or(path);
    if relative.as_os_str().is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(relative)
    }
}
