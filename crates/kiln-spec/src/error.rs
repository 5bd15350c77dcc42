//! Spec errors and the "did you mean" suggestions attached to them.
//!
//! Every problem found in a spec ends up as a [`SpecError`] printed as
//! `FILE:LINE:COL: message (hint)`, the shape compilers and linters use so that editors and
//! terminals can jump to the spot. Inside the module, checks return the file-less [`Issue`]
//! and [`super::parse`] attaches the file name once at the end.
//!
//! A spec with several mistakes reports them all in one go (up to [`MAX_ISSUES`]): fixing
//! one, rerunning and meeting the next is the slow way to learn a format. Checking goes on
//! after a problem wherever the rest can still be checked ([`Issues`]); a problem that may
//! only be a consequence of an earlier one (a variable the failed `env:` would have
//! defined) is a *follow-on* and is not reported.

use std::fmt;
use std::path::{Path, PathBuf};

use super::model::Location;

/// The most problems reported for one spec; checking stops there.
pub const MAX_ISSUES: usize = 20;

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
    /// The other problems of the same spec, in file order (at most [`MAX_ISSUES`] in all).
    /// `Display` shows only this one; [`SpecError::all`] gives every one.
    pub more: Vec<SpecError>,
}

impl SpecError {
    /// This problem and the others found with it, in file order.
    pub fn all(&self) -> impl Iterator<Item = &SpecError> {
        std::iter::once(self).chain(&self.more)
    }

    /// The same problems, naming the file as `file` (the path the user typed).
    pub fn shown_as(self, file: &Path) -> SpecError {
        SpecError {
            file: file.to_path_buf(),
            more: self.more.into_iter().map(|e| e.shown_as(file)).collect(),
            ..self
        }
    }

    /// The problems of `file`, the first carrying the others; `None` when there are none.
    pub(crate) fn from_issues(issues: Vec<Issue>, file: &Path) -> Option<SpecError> {
        let mut errors = issues.into_iter().map(|i| i.in_file(file.to_path_buf()));
        let mut first = errors.next()?;
        first.more = errors.collect();
        Some(first)
    }
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

/// [`crate::Spec::truncate_to`]'s error: no stage has the name the build was asked to
/// stop at. How that was asked (a flag) is the caller's to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSuchStage {
    pub file: PathBuf,
    pub name: String,
    /// "did you mean …?", or the stages there are.
    pub hint: String,
}

impl fmt::Display for NoSuchStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: no stage named \"{}\" to build ({})",
            self.file.display(),
            self.name,
            self.hint
        )
    }
}

impl std::error::Error for NoSuchStage {}

/// A [`SpecError`] before the file name is known; what every check in this module returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub location: Option<Location>,
    pub message: String,
    pub hint: Option<String>,
    /// Possibly only a consequence of a problem reported already; not reported itself.
    pub follow_on: bool,
}

impl Issue {
    pub fn at(location: Location, message: impl Into<String>) -> Self {
        Issue {
            location: Some(location),
            message: message.into(),
            hint: None,
            follow_on: false,
        }
    }

    pub fn nowhere(message: impl Into<String>) -> Self {
        Issue {
            location: None,
            message: message.into(),
            hint: None,
            follow_on: false,
        }
    }

    /// Marks the issue as a possible consequence of an earlier one.
    pub fn follow_on(mut self) -> Self {
        self.follow_on = true;
        self
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
            more: Vec::new(),
        }
    }
}

pub(crate) type Result<T, E = Issue> = std::result::Result<T, E>;

/// The problems found so far in one spec, so that checking can go on after one.
#[derive(Debug, Default)]
pub(crate) struct Issues {
    found: Vec<Issue>,
    /// The first follow-on problem, kept only so that a spec is never taken as valid when
    /// every problem found was a follow-on (which the checks do not let happen).
    first_follow_on: Option<Issue>,
}

impl Issues {
    /// The value of `result`, or `None` after recording its problem.
    pub fn check<T>(&mut self, result: Result<T>) -> Option<T> {
        result.map_err(|issue| self.add(issue)).ok()
    }

    pub fn add(&mut self, issue: Issue) {
        if issue.follow_on {
            self.first_follow_on.get_or_insert(issue);
        } else if !self.is_full() {
            self.found.push(issue);
        }
    }

    /// Whether [`MAX_ISSUES`] were found: checking may stop.
    pub fn is_full(&self) -> bool {
        self.found.len() >= MAX_ISSUES
    }

    /// `Ok` when nothing was found, else the problems in file order (problems outside
    /// the file first).
    pub fn finish(self) -> Result<(), Vec<Issue>> {
        let mut found = self.found;
        if found.is_empty() {
            found.extend(self.first_follow_on);
        }
        if found.is_empty() {
            return Ok(());
        }
        found.sort_by_key(|issue| issue.location.map(|at| (at.line, at.column)));
        Err(found)
    }
}

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
