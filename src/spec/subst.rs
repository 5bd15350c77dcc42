//! `${NAME}` substitution in spec strings.
//!
//! Only the braced form is recognised, so `$HOME` and `$(cmd)` in a `run:` script reach the
//! shell untouched; `$$` is a literal `$` (write `$${HOME}` to hand `${HOME}` to the shell).
//! Substitution is a single pass: a value that itself contains `${X}` is inserted verbatim.

use std::collections::BTreeMap;

use super::error::{did_you_mean, Issue, Result};
use super::model::Location;

/// Variables visible at some point of the spec: build args, then `env:` entries in file
/// order (a later definition shadows an earlier one of the same name).
#[derive(Debug, Clone, Default)]
pub(crate) struct Vars {
    values: BTreeMap<String, String>,
}

impl Vars {
    pub fn define(&mut self, name: &str, value: &str) {
        self.values.insert(name.to_string(), value.to_string());
    }

    pub fn define_all<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a String, &'a String)>) {
        for (name, value) in pairs {
            self.define(name, value);
        }
    }

    /// Expands `text`, written at `location`, or explains which reference is wrong.
    pub fn expand(&self, text: &str, location: Location) -> Result<String> {
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
                out.push_str(self.lookup(&braced[..close], location)?);
                rest = &braced[close + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, name: &str, location: Location) -> Result<&str> {
        if !is_var_name(name) {
            return Err(Issue::at(
                location,
                format!("invalid variable reference \"${{{name}}}\""),
            )
            .hint("names are letters, digits and _, e.g. ${VERSION}; no defaults or operators"));
        }
        match self.values.get(name) {
            Some(value) => Ok(value),
            None => Err(
                Issue::at(location, format!("undefined variable \"{name}\"")).hint(
                    did_you_mean(name, self.values.keys().map(String::as_str)).unwrap_or_else(
                        || {
                            format!(
                                "declare it under args: or env:, or write $${{{name}}} to keep it literal"
                            )
                        },
                    ),
                ),
            ),
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
