//! Spec errors and the "did you mean" suggestions attached to them.
//!
//! Every problem found in a spec ends up as one [`SpecError`] printed as
//! `FILE:LINE:COL: message (hint)`, the shape compilers and linters use so that editors and
//! terminals can jump to the spot. Inside the module, checks return the file-less [`Issue`]
//! and [`super::parse`] attaches the file name once at the end.

use std::fmt;
use std::path::PathBuf;

use super::model::Location;

/// A problem with a spec file, pointing at the key or value at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The spec file, as given on the command line (not canonicalised).
    pub file: PathBuf,
    /// Where in the file; `None` for problems that are not in the file (e.g. a bad `--arg`).
    pub location: Option<Location>,
    pub message: String,
    /// What to do about it, e.g. `did you mean "run"?`.
    pub hint: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(at) = self.location {
            write!(f, ":{}:{}", at.line, at.column)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// A [`SpecError`] before the file name is known; what every check in this module returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub location: Option<Location>,
    pub message: String,
    pub hint: Option<String>,
}

impl Issue {
    pub fn at(location: Location, message: impl Into<String>) -> Self {
        Issue {
            location: Some(location),
            message: message.into(),
            hint: None,
        }
    }

    pub fn nowhere(message: impl Into<String>) -> Self {
        Issue {
            location: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn maybe_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    pub fn in_file(self, file: PathBuf) -> SpecError {
        SpecError {
            file,
            location: self.location,
            message: self.message,
            hint: self.hint,
        }
    }
}

pub(crate) type Result<T, E = Issue> = std::result::Result<T, E>;

/// The candidate closest to a misspelt `input`, if one is close enough to be a plausible typo.
///
/// Comparison ignores case. A candidate that extends the input (`NET_BIND` →
/// `NET_BIND_SERVICE`) wins over edit distance, because truncated names are the most common
/// slip; otherwise the smallest Damerau–Levenshtein distance wins (`rnu` → `run` is one
/// transposition), as long as it is small relative to the candidate's length.
pub(crate) fn nearest<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let input = input.to_ascii_lowercase();
    let mut by_prefix: Option<&str> = None;
    let mut by_distance: Option<(usize, &str)> = None;
    for candidate in candidates {
        let lower = candidate.to_ascii_lowercase();
        if lower == input {
            continue;
        }
        if input.len() >= 3 && lower.starts_with(&input) {
            if by_prefix.is_none_or(|best| candidate.len() < best.len()) {
                by_prefix = Some(candidate);
            }
            continue;
        }
        let distance = strsim::osa_distance(&input, &lower);
        let allowed = (lower.chars().count() / 3).max(1);
        if distance <= allowed && by_distance.is_none_or(|(best, _)| distance < best) {
            by_distance = Some((distance, candidate));
        }
    }
    by_prefix.or(by_distance.map(|(_, candidate)| candidate))
}

/// `did you mean "X"?` for the nearest candidate, if any.
pub(crate) fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    nearest(input, candidates).map(|found| format!("did you mean \"{found}\"?"))
}
