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
//!
//! A string `run:` script is not substituted at all: like a Dockerfile `RUN`, its `${NAME}`
//! belongs to the shell, which finds args in the step's environment. Which args a script
//! uses is then found by [`shell_references`], a scan of the text as sh would expand it.

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

    /// Adds to `args_used` the build args shell `script` refers to (see
    /// [`shell_references`]). The script itself is left as written.
    pub fn note_shell_references(&self, script: &str, args_used: &mut BTreeSet<String>) {
        for name in shell_references(script) {
            if self.values.get(name).is_some_and(|var| var.is_arg) {
                args_used.insert(name.to_string());
            }
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

/// The variable names sh may expand in `script`: `$NAME` and `${NAME…}` (any operator:
/// `${NAME:-x}`, `${NAME%.*}`, also `${#NAME}`), in order, repeats included.
///
/// It errs only on the side of finding too much, since a name it missed would be an arg
/// the step uses but neither receives nor is keyed on. So quotes are not tracked (`'$A'`
/// counts); `\` always escapes the next character (inside single quotes sh keeps the `\`,
/// but then the `$` after it is quoted too); `$$` is the shell's PID, so `$$A` names no
/// variable. Arithmetic without `$` (`$((A + 1))`) is not seen.
pub(crate) fn shell_references(script: &str) -> Vec<&str> {
    let bytes = script.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'$' => match bytes.get(i + 1) {
                Some(b'$') => i += 2,
                Some(b'{') => {
                    let start = match bytes.get(i + 2) {
                        Some(b'#' | b'!') => i + 3,
                        _ => i + 2,
                    };
                    let end = name_end(bytes, start);
                    if end > start {
                        names.push(&script[start..end]);
                    }
                    i = end.max(i + 2);
                }
                _ => {
                    let end = name_end(bytes, i + 1);
                    if end > i + 1 {
                        names.push(&script[i + 1..end]);
                    }
                    i = end.max(i + 1);
                }
            },
            _ => i += 1,
        }
    }
    names
}

/// Where the variable name starting at `start` ends (`start` itself when there is none):
/// a letter or `_`, then letters, digits and `_`, as sh reads it.
fn name_end(bytes: &[u8], start: usize) -> usize {
    let starts_name = |b: &u8| b.is_ascii_alphabetic() || *b == b'_';
    if !bytes.get(start).is_some_and(starts_name) {
        return start;
    }
    let rest = bytes[start..]
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        .unwrap_or(bytes.len() - start);
    start + rest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_braced_references_are_found() {
        assert_eq!(shell_references("echo $A ${B} x$C_1y"), ["A", "B", "C_1y"]);
        assert_eq!(shell_references("$A$B/${C}"), ["A", "B", "C"]);
        assert_eq!(
            shell_references("${A:-x} ${B%.*} ${#C} ${D:+y}"),
            ["A", "B", "C", "D"]
        );
        assert_eq!(
            shell_references("\"$A\" '$B' <<EOF\n$C\nEOF"),
            ["A", "B", "C"]
        );
    }

    #[test]
    fn escapes_and_special_parameters_are_not_names() {
        assert!(shell_references("$$ $$A \\$B \\${C} $1 $? $@ $(pwd) ${1} $").is_empty());
        // `\\` is an escaped backslash: the `$` after it is live.
        assert_eq!(shell_references("\\\\$A"), ["A"]);
        // A third `$` starts a reference after the PID.
        assert_eq!(shell_references("$$$A"), ["A"]);
        assert_eq!(shell_references("caf\u{e9} $\u{e9}t\u{e9} $A\u{e9}"), ["A"]);
    }

    fn vars() -> Vars {
        let mut vars = Vars::default();
        let args = [("A".to_string(), "1".to_string()), ("E".into(), "2".into())];
        vars.define_args(args.iter().map(|(k, v)| (k, v)));
        vars.define("E", "env wins");
        vars.define("F", "env only");
        vars
    }

    #[test]
    fn only_names_that_mean_args_are_arg_uses() {
        let mut used = BTreeSet::new();
        vars().note_shell_references("$A ${E} ${F:-x} $HOME ${UNDEFINED} $$A", &mut used);
        assert_eq!(used, BTreeSet::from(["A".to_string()]));
    }
}
