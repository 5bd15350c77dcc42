//! `${NAME}` and `${NAME:-default}` substitution in spec strings, and the record of which
//! build args each string used.
//!
//! Only the braced form is recognised, so `$HOME` and `$(cmd)` in a `run:` script reach the
//! shell untouched; `$$` is a literal `$` (write `$${HOME}` to hand `${HOME}` to the shell).
//! Substitution is a single pass: a value that itself contains `${X}` is inserted verbatim,
//! and so is a default.
//!
//! The build cache keys a step on the args it uses, so every expansion reports the args it
//! read; a name that currently means an `env:` variable is not an arg use, even when an arg
//! of the same name exists.

use std::collections::{BTreeMap, BTreeSet};

use super::error::{did_you_mean, Issue, Result};
use super::model::Location;

/// Variables visible at some point of the spec: build args, then `env:` entries in file
/// order (a later definition shadows an earlier one of the same name).
#[derive(Debug, Clone, Default)]
pub(crate) struct Vars {
    values: BTreeMap<String, Var>,
    /// A part of the spec that defines variables had a problem, so a name missing here may
    /// be one it would have defined: an undefined name is then only a follow-on problem.
    incomplete: bool,
}

#[derive(Debug, Clone)]
struct Var {
    value: String,
    /// Whether the current definition is a build arg (not shadowed by an `env:` entry).
    is_arg: bool,
}

impl Vars {
    /// Defines build args; they count as arg uses when referenced.
    pub fn define_args<'a>(&mut self, args: impl IntoIterator<Item = (&'a String, &'a String)>) {
        for (name, value) in args {
            self.insert(name, value, true);
        }
    }

    /// Defines an environment variable, shadowing an arg or variable of the same name.
    pub fn define(&mut self, name: &str, value: &str) {
        self.insert(name, value, false);
    }

    pub fn define_all<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a String, &'a String)>) {
        for (name, value) in pairs {
            self.define(name, value);
        }
    }

    /// Notes that some definitions are missing because of a problem reported elsewhere.
    pub fn mark_incomplete(&mut self) {
        self.incomplete = true;
    }

    /// A copy with [`Vars::mark_incomplete`] applied.
    pub fn incomplete(&self) -> Vars {
        let mut vars = self.clone();
        vars.mark_incomplete();
        vars
    }

    fn insert(&mut self, name: &str, value: &str, is_arg: bool) {
        let var = Var {
            value: value.to_string(),
            is_arg,
        };
        self.values.insert(name.to_string(), var);
    }

    /// Expands `text`, written at `location`, adding the args it reads to `args_used`, or
    /// explains which reference is wrong.
    pub fn expand(
        &self,
        text: &str,
        location: Location,
        args_used: &mut BTreeSet<String>,
    ) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            out.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(braced) = after.strip_prefix('{') {
                let Some(close) = braced.find('}') else {
                    return Err(Issue::at(location, "unterminated \"${\" in string")
                        .hint("close it with \"}\", or write \"$${\" for a literal \"${\""));
                };
                out.push_str(self.reference(&braced[..close], location, args_used)?);
                rest = &braced[close + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The value of one `${...}` whose inside is `reference`.
    fn reference<'s>(
        &'s self,
        reference: &'s str,
        location: Location,
        args_used: &mut BTreeSet<String>,
    ) -> Result<&'s str> {
        let (name, default) = match reference.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (reference, None),
        };
        if !is_var_name(name) {
            return Err(Issue::at(
                location,
                format!("invalid variable reference \"${{{reference}}}\""),
            )
            .hint("write ${NAME} or ${NAME:-default}, NAME being letters, digits and _; no other operators"));
        }
        if default.is_some_and(|d| d.contains("${")) {
            return Err(Issue::at(
                location,
                format!("the default in \"${{{reference}}}\" cannot use ${{...}}"),
            )
            .hint("a default is used as written; write the value itself"));
        }
        let Some(var) = self.values.get(name) else {
            return default.ok_or_else(|| self.undefined(name, location));
        };
        if var.is_arg {
            args_used.insert(name.to_string());
        }
        // Like the shell's `:-`, an empty value takes the default too.
        match default {
            Some(default) if var.value.is_empty() => Ok(default),
            _ => Ok(&var.value),
        }
    }

    fn undefined(&self, name: &str, location: Location) -> Issue {
        let issue = Issue::at(location, format!("undefined variable \"{name}\"")).hint(
            did_you_mean(name, self.values.keys().map(String::as_str)).unwrap_or_else(|| {
                format!("declare it under args: or env:, or write $${{{name}}} to keep it literal")
            }),
        );
        match self.incomplete {
            true => issue.follow_on(),
            false => issue,
        }
    }
}

/// A name usable as `${NAME}`: a letter or `_`, then letters, digits or `_`.
pub(crate) fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
