//! Ignore files: which context paths `copy:` steps never read.
//!
//! A build context may hold `.kilnignore` (gitignore syntax), or, for projects written for
//! other tools, `.containerignore` or `.dockerignore` (Docker's syntax, which buildah and
//! podman use for both): the first of those that exists is the only one used, in that
//! order, so a project can give kiln its own rules next to Docker's. The two syntaxes
//! differ in ways that change what lands in an image (see [`super::dockerignore`]), so
//! each file is read with its own tool's rules, never one file with the other's.

use std::io::Read;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;

use super::dockerignore::{self, Pattern};
use super::{ContextDir, ContextError, IgnoreProblem};
use kiln_layer::{Exclusion, LayerError};

/// How an ignore file's lines are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreSyntax {
    /// git's: unanchored patterns match at any depth, a trailing `/` means directories
    /// only, nothing below an excluded directory can be brought back.
    Gitignore,
    /// Docker's `.dockerignore`: patterns anchored at the context root, a pattern also
    /// matches what is below what it matches, and the last matching line decides.
    Docker,
}

/// The ignore files kiln looks for at the root of a build context, in this order; the
/// first one that exists is used and the others are not read. buildah and podman look for
/// `.containerignore` before `.dockerignore`; kiln's own comes first.
pub const IGNORE_FILES: [(&str, IgnoreSyntax); 3] = [
    (".kilnignore", IgnoreSyntax::Gitignore),
    (".containerignore", IgnoreSyntax::Docker),
    (".dockerignore", IgnoreSyntax::Docker),
];

/// Larger than any hand-written ignore file; keeps a hostile context from exhausting memory.
const MAX_IGNORE_FILE: u64 = 1 << 20;

/// The exclusion rules of one build context, from the ignore file it holds (if any).
#[derive(Debug, Clone)]
pub struct Ignore {
    /// The ignore file the rules came from; `None`: no rules.
    file: Option<(&'static str, IgnoreSyntax)>,
    rules: Rules,
}

#[derive(Debug, Clone)]
enum Rules {
    Git(Gitignore),
    Docker(Vec<Pattern>),
}

impl Ignore {
    /// No exclusions.
    pub fn none() -> Ignore {
        Ignore {
            file: None,
            rules: Rules::Git(Gitignore::empty()),
        }
    }

    /// The rules of the first ignore file of [`IGNORE_FILES`] the context holds; none when
    /// it holds none of them. Each file is opened like a copy source: a symlink that leaves
    /// the context is an error.
    pub fn load(context: &ContextDir) -> Result<Ignore, ContextError> {
        for (name, syntax) in IGNORE_FILES {
            if let Some(text) = read_ignore_file(context, name)? {
                return Ignore::parse(name, syntax, &context.path().join(name), &text);
            }
        }
        Ok(Ignore::none())
    }

    /// Parses the ignore file `name` (one of [`IGNORE_FILES`]) in `syntax`; `path` only
    /// names the file in errors.
    pub fn parse(
        name: &'static str,
        syntax: IgnoreSyntax,
        path: &Path,
        text: &[u8],
    ) -> Result<Ignore, ContextError> {
        let bad = |line: u64, problem| ContextError::IgnoreFile {
            path: path.to_owned(),
            line,
            problem,
        };
        let text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
        let text = std::str::from_utf8(text).map_err(|e| {
            let line = text[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            bad(line as u64 + 1, IgnoreProblem::NotUtf8)
        })?;
        let rules = match syntax {
            IgnoreSyntax::Gitignore => Rules::Git(gitignore(text).map_err(|(n, why)| bad(n, why))?),
            IgnoreSyntax::Docker => {
                Rules::Docker(dockerignore::parse(text).map_err(|(n, why)| bad(n, why))?)
            }
        };
        Ok(Ignore {
            file: Some((name, syntax)),
            rules,
        })
    }

    /// The ignore file the rules came from, and how it was read; `None` when the context
    /// has none.
    pub fn file(&self) -> Option<(&'static str, IgnoreSyntax)> {
        self.file
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        match &self.rules {
            Rules::Git(rules) => rules.is_empty(),
            Rules::Docker(patterns) => patterns.is_empty(),
        }
    }

    /// What the rules say about `path` (relative to the context root, no `.` or `..`),
    /// with the rule that excludes it as `.kilnignore line N (PATTERN)`. With gitignore
    /// syntax only the path itself is looked at: callers walk from the top and stop at an
    /// excluded directory. Docker's rules look at the directories above it too.
    pub fn exclusion(&self, path: &Path, is_dir: bool) -> Exclusion {
        match &self.rules {
            Rules::Git(rules) => match rules.matched(path, is_dir) {
                Match::Ignore(glob) => {
                    let line = glob.from().map(|l| l.display().to_string());
                    let line = line.unwrap_or_else(|| "?".into());
                    Exclusion::Excluded(self.rule(&line, glob.original()))
                }
                Match::None | Match::Whitelist(_) => Exclusion::Included,
            },
            Rules::Docker(patterns) => self.docker_exclusion(patterns, path, is_dir),
        }
    }

    /// The last pattern matching `path` or a directory above it decides; an excluded
    /// directory is still walked when a later exception may bring back a path below it.
    fn docker_exclusion(&self, patterns: &[Pattern], path: &Path, is_dir: bool) -> Exclusion {
        let path: Vec<char> = String::from_utf8_lossy(path.as_os_str().as_encoded_bytes())
            .chars()
            .collect();
        let Some(last) = patterns
            .iter()
            .rposition(|p| p.matches_path_or_parent(&path))
        else {
            return Exclusion::Included;
        };
        let pattern = &patterns[last];
        if pattern.exception {
            return Exclusion::Included;
        }
        let rule = self.rule(&pattern.line.to_string(), &pattern.original);
        let spared = |p: &Pattern| p.exception && p.may_match_below(&path);
        match is_dir && patterns[last + 1..].iter().any(spared) {
            true => Exclusion::ExcludedWithExceptions(rule),
            false => Exclusion::Excluded(rule),
        }
    }

    /// How messages name a rule: `.dockerignore line 3 (*.log)`.
    fn rule(&self, line: &str, pattern: &str) -> String {
        let file = self.file.map_or("ignore file", |(name, _)| name);
        format!("{file} line {line} ({pattern})")
    }

    /// The predicate `layer::copy_in_filtered` takes.
    pub fn as_exclusions(&self) -> impl Fn(&Path, bool) -> Exclusion + Sync + '_ {
        move |path, is_dir| self.exclusion(path, is_dir)
    }
}

impl Default for Ignore {
    fn default() -> Self {
        Ignore::none()
    }
}

/// The content of the ignore file `name` at the context's root; `None` when it does not
/// exist.
fn read_ignore_file(context: &ContextDir, name: &str) -> Result<Option<Vec<u8>>, ContextError> {
    let shown = context.path().join(name);
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
    let file = match context.open_source(name, name, flags) {
        Ok(fd) => std::fs::File::from(fd),
        Err(LayerError::CopySourceMissing(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut text = Vec::new();
    file.take(MAX_IGNORE_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| ContextError::read(shown.clone(), e))?;
    if text.len() as u64 > MAX_IGNORE_FILE {
        return Err(ContextError::IgnoreFile {
            path: shown,
            line: 0,
            problem: IgnoreProblem::TooLarge(MAX_IGNORE_FILE),
        });
    }
    Ok(Some(text))
}

/// gitignore rules; an error carries the 1-based line and why.
fn gitignore(text: &str) -> Result<Gitignore, (u64, IgnoreProblem)> {
    let mut builder = GitignoreBuilder::new(".");
    for (index, line) in text.split('\n').enumerate() {
        let number = index as u64 + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        // The crate keeps, for every pattern, the file it came from; the file is known, so
        // that slot carries the line number for error messages instead.
        builder
            .add_line(Some(PathBuf::from(number.to_string())), line)
            .map_err(|e| (number, IgnoreProblem::Gitignore(e)))?;
    }
    builder
        .build()
        .map_err(|e| (0, IgnoreProblem::Gitignore(e)))
}
