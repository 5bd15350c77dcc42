//! Typed reads from the YAML tree, each failing with a located, plain-words error.
//!
//! This is where "unknown key" (with its suggestion) and "expected a string, found a list"
//! come from, so every section of the spec reports these the same way.

use std::cell::RefCell;
use std::collections::BTreeSet;

use super::error::{did_you_mean, Issue, Issues, Result};
use super::names::{check_container_path, check_env_name};
use super::node::{Node, Value};
use super::subst::Vars;
use super::units::Invalid;

/// The keys of one YAML mapping whose allowed keys are known (`config:`, a step, …).
pub(crate) struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// Reads `node` as a mapping named `what` (used in messages: `unknown step key "rnu"`),
    /// rejecting any key not in `allowed`.
    pub fn new(node: &'n Node, what: &str, allowed: &[&str]) -> Result<Self> {
        let mut entries = Vec::new();
        for (key, value) in mapping(node, what)? {
            let name = key_text(key)?;
            if !allowed.contains(&name) {
                return Err(unknown_key(key, name, what, allowed, None));
            }
            entries.push((name, key, value));
        }
        Ok(Fields { entries })
    }

    /// Like [`Fields::new`], but each unknown key is recorded in `issues` and left out, so
    /// the rest of the mapping can still be checked. `place` may say where a key that is
    /// unknown here belongs instead (`"read_only" belongs in run:`).
    pub fn lenient(
        node: &'n Node,
        what: &str,
        allowed: &[&str],
        issues: &mut Issues,
        place: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let mut entries = Vec::new();
        for (key, value) in mapping(node, what)? {
            let Some(name) = issues.check(key_text(key)) else {
                continue;
            };
            if allowed.contains(&name) {
                entries.push((name, key, value));
            } else {
                issues.add(unknown_key(key, name, what, allowed, place(name)));
            }
        }
        Ok(Fields { entries })
    }

    /// The value under `name`, if the key is present.
    pub fn get(&self, name: &str) -> Option<&'n Node> {
        self.entry(name).map(|(_, value)| value)
    }

    /// `read(value)` when `name` is present.
    pub fn read<T>(
        &self,
        name: &str,
        read: impl FnOnce(&'n Node) -> Result<T>,
    ) -> Result<Option<T>> {
        self.get(name).map(read).transpose()
    }

    /// `read(value)` when `name` is present, else the type's empty value.
    pub fn read_or_default<T: Default>(
        &self,
        name: &str,
        read: impl FnOnce(&'n Node) -> Result<T>,
    ) -> Result<T> {
        Ok(self.read(name, read)?.unwrap_or_default())
    }

    /// The key node itself, to point errors at the key rather than its value.
    pub fn key(&self, name: &str) -> Option<&'n Node> {
        self.entry(name).map(|(key, _)| key)
    }

    /// Present keys, in file order.
    pub fn names(&self) -> impl Iterator<Item = (&'n str, &'n Node)> + '_ {
        self.entries.iter().map(|(name, key, _)| (*name, *key))
    }

    fn entry(&self, name: &str) -> Option<(&'n Node, &'n Node)> {
        self.entries
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, key, value)| (*key, *value))
    }
}

/// `unknown step key "rnu"`, with where it belongs, else the nearest valid key, else the
/// valid keys as the hint.
fn unknown_key(
    key: &Node,
    name: &str,
    what: &str,
    allowed: &[&str],
    place: Option<String>,
) -> Issue {
    let hint = place
        .or_else(|| did_you_mean(name, allowed.iter().copied()))
        .unwrap_or_else(|| format!("valid keys: {}", allowed.join(", ")));
    Issue::at(key.location, format!("unknown {what} key \"{name}\"")).hint(hint)
}

fn type_error(node: &Node, what: &str, expected: &str) -> Issue {
    Issue::at(
        node.location,
        format!("{what} must be {expected}, found {}", node.kind_name()),
    )
}

/// The entries of a mapping, in file order.
pub(crate) fn mapping<'n>(node: &'n Node, what: &str) -> Result<&'n [(Node, Node)]> {
    match &node.value {
        Value::Map(entries) => Ok(entries),
        _ => Err(type_error(node, what, "a mapping")),
    }
}

/// Like [`mapping`], but an empty value (`env:` with nothing after it) is an empty mapping.
pub(crate) fn optional_mapping<'n>(node: &'n Node, what: &str) -> Result<&'n [(Node, Node)]> {
    if node.is_null() {
        Ok(&[])
    } else {
        mapping(node, what)
    }
}

pub(crate) fn list<'n>(node: &'n Node, what: &str) -> Result<&'n [Node]> {
    match &node.value {
        Value::Seq(items) => Ok(items),
        _ => Err(type_error(node, what, "a list")),
    }
}

/// A mapping key as text; numbers and booleans count (`8080: x`), other shapes do not.
pub(crate) fn key_text(key: &Node) -> Result<&str> {
    match key.scalar_text() {
        Some(text) if !text.is_empty() => Ok(text),
        _ => Err(Issue::at(
            key.location,
            "mapping keys must be non-empty strings",
        )),
    }
}

/// A scalar as text. Numbers and booleans are taken as written (`1.10` stays "1.10").
pub(crate) fn text<'n>(node: &'n Node, what: &str) -> Result<&'n str> {
    node.scalar_text()
        .ok_or_else(|| type_error(node, what, "a string"))
}

pub(crate) fn boolean(node: &Node, what: &str) -> Result<bool> {
    match node.value {
        Value::Bool { value, .. } => Ok(value),
        _ => Err(type_error(node, what, "true or false")),
    }
}

pub(crate) fn unsigned(node: &Node, what: &str) -> Result<u64> {
    match node.value {
        Value::Int { value, .. } => u64::try_from(value)
            .map_err(|_| Issue::at(node.location, format!("{what} must not be negative"))),
        _ => Err(type_error(node, what, "a whole number")),
    }
}

pub(crate) fn number(node: &Node, what: &str) -> Result<f64> {
    match node.value {
        Value::Int { value, .. } => Ok(value as f64),
        Value::Float { value, .. } => Ok(value),
        _ => Err(type_error(node, what, "a number")),
    }
}

/// Places a unit parser's complaint at `node`.
pub(crate) fn located<T>(node: &Node, parsed: Result<T, Invalid>) -> Result<T> {
    parsed.map_err(|invalid| invalid.at(node.location))
}

/// Reads values with `${NAME}` substitution against the variables in scope, remembering
/// which build args they used.
pub(crate) struct Expander<'v> {
    vars: &'v Vars,
    args_used: RefCell<BTreeSet<String>>,
}

impl<'v> Expander<'v> {
    pub fn new(vars: &'v Vars) -> Self {
        Expander {
            vars,
            args_used: RefCell::default(),
        }
    }

    /// The args read so far (by everything expanded through this expander).
    pub fn into_args_used(self) -> BTreeSet<String> {
        self.args_used.into_inner()
    }

    /// A scalar, with `${NAME}` references expanded.
    pub fn text(&self, node: &Node, what: &str) -> Result<String> {
        self.expand_in(self.vars, text(node, what)?, node)
    }

    /// A shell script, as written: its `$NAME` and `${NAME}` are the shell's. The args it
    /// refers to are recorded, since the step receives them in its environment.
    pub fn shell_text(&self, node: &Node, what: &str) -> Result<String> {
        let script = text(node, what)?;
        (self.vars).note_shell_references(script, &mut self.args_used.borrow_mut());
        Ok(script.to_string())
    }

    /// Records args used elsewhere (a `shell:` inherited from the stage or the top level)
    /// as used here.
    pub fn note_args_used<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        self.args_used
            .borrow_mut()
            .extend(names.into_iter().cloned());
    }

    fn expand_in(&self, vars: &Vars, text: &str, node: &Node) -> Result<String> {
        vars.expand(text, node.location, &mut self.args_used.borrow_mut())
    }

    /// A list of scalars, each expanded.
    pub fn texts(&self, node: &Node, what: &str) -> Result<Vec<String>> {
        list(node, what)?
            .iter()
            .map(|item| self.text(item, &format!("each {what} entry")))
            .collect()
    }

    /// A string or a list of strings; the flag says which was written.
    pub fn text_or_texts(&self, node: &Node, what: &str) -> Result<(Vec<String>, bool)> {
        match node.value {
            Value::Seq(_) => Ok((self.texts(node, what)?, true)),
            _ => Ok((vec![self.text(node, what)?], false)),
        }
    }

    /// An absolute path inside the container; `mount_point` also forbids `..`.
    pub fn container_path(&self, node: &Node, what: &str, mount_point: bool) -> Result<String> {
        let path = self.text(node, what)?;
        located(node, check_container_path(&path, mount_point))?;
        Ok(path)
    }

    /// A list of absolute container paths.
    pub fn container_paths(
        &self,
        node: &Node,
        what: &str,
        mount_point: bool,
    ) -> Result<Vec<String>> {
        list(node, what)?
            .iter()
            .map(|item| self.container_path(item, &format!("each {what} entry"), mount_point))
            .collect()
    }

    /// An `env:`-style mapping of variable names to scalar values, in file order. Each entry
    /// may refer to the entries before it; whether they stay visible afterwards is the
    /// caller's choice.
    pub fn env_map(&self, node: &Node, what: &str) -> Result<Vec<(String, String)>> {
        let mut scope = self.vars.clone();
        let mut env = Vec::new();
        for (key, value) in optional_mapping(node, what)? {
            let name = env_name(key)?;
            if value.is_null() {
                return Err(Issue::at(key.location, format!("{name} has no value"))
                    .hint(format!("write {name}: \"\" for an empty value")));
            }
            let expanded =
                self.expand_in(&scope, text(value, &format!("the value of {name}"))?, value)?;
            scope.define(name, &expanded);
            env.push((name.to_string(), expanded));
        }
        Ok(env)
    }
}

/// An `env:` key, which must be a valid environment variable name.
fn env_name(key: &Node) -> Result<&str> {
    let name = key_text(key)?;
    located(key, check_env_name(name))?;
    Ok(name)
}
