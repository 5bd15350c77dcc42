//! `.kilnignore`: which context paths `copy:` steps never read.

use std::io::Read;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;

use super::{ContextDir, ContextError};
use crate::layer::LayerError;

/// The file, at the root of a build context, that lists what `copy:` steps leave out.
pub const IGNORE_FILE: &str = ".kilnignore";

/// Larger than any hand-written ignore file; keeps a hostile context from exhausting memory.
const MAX_IGNORE_FILE: u64 = 1 << 20;

/// The exclusion rules of one build context, in gitignore syntax: patterns relative to the
/// context root, `!` exceptions, `**`, a trailing `/` for directories only. As in git, a
/// path is excluded when it, or any directory above it, is matched last by a pattern
/// without `!`; so nothing below an excluded directory can be brought back by an exception.
#[derive(Debug, Clone)]
pub struct Ignore {
    rules: Gitignore,
}

impl Ignore {
    /// No exclusions.
    pub fn none() -> Ignore {
        Ignore {
            rules: Gitignore::empty(),
        }
    }

    /// The rules of the context's `.kilnignore`; none when the file does not exist. The
    /// file is opened like a copy source: a symlink that leaves the context is an error.
    pub fn load(context: &ContextDir) -> Result<Ignore, ContextError> {
        let shown = context.path().join(IGNORE_FILE);
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
        let file = match context.open_source(IGNORE_FILE, IGNORE_FILE, flags) {
            Ok(fd) => std::fs::File::from(fd),
            Err(LayerError::CopySourceMissing(_)) => return Ok(Ignore::none()),
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
                why: format!("larger than {MAX_IGNORE_FILE} bytes"),
            });
        }
        Ignore::parse(&shown, &text)
    }

    /// Parses ignore rules; `path` only names the file in errors.
    pub fn parse(path: &Path, text: &[u8]) -> Result<Ignore, ContextError> {
        let bad = |line: u64, why: String| ContextError::IgnoreFile {
            path: path.to_owned(),
            line,
            why,
        };
        let text = text.strip_prefix("\u{feff}".as_bytes()).unwrap_or(text);
        let mut builder = GitignoreBuilder::new(".");
        for (index, line) in text.split(|b| *b == b'\n').enumerate() {
            let number = index as u64 + 1;
            let line = std::str::from_utf8(line)
                .map_err(|_| bad(number, "the pattern is not valid UTF-8".into()))?;
            let line = line.strip_suffix('\r').unwrap_or(line);
            // The crate keeps, for every pattern, the file it came from; the file is always
            // .kilnignore, so that slot carries the line number for error messages instead.
            builder
                .add_line(Some(PathBuf::from(number.to_string())), line)
                .map_err(|e| bad(number, e.to_string()))?;
        }
        let rules = builder.build().map_err(|e| bad(0, e.to_string()))?;
        Ok(Ignore { rules })
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule that excludes `path` itself (relative to the context root, no `.` or `..`),
    /// as `.kilnignore line N (PATTERN)`. Directories above `path` are not looked at: callers
    /// walk from the top and stop at an excluded directory.
    pub fn rule_for(&self, path: &Path, is_dir: bool) -> Option<String> {
        match self.rules.matched(path, is_dir) {
            Match::Ignore(glob) => {
                let line = glob.from().map(|l| l.display().to_string());
                let line = line.unwrap_or_else(|| "?".into());
                Some(format!("{IGNORE_FILE} line {line} ({})", glob.original()))
            }
            Match::None | Match::Whitelist(_) => None,
        }
    }

    /// The rule excluding `path` or the first excluded directory above it, from the top.
    pub fn rule_for_path_or_parents(&self, path: &Path, is_dir: bool) -> Option<String> {
        let mut prefix = PathBuf::new();
        let components: Vec<_> = path.components().collect();
        for (i, component) in components.iter().enumerate() {
            prefix.push(component);
            let last = i + 1 == components.len();
            if let Some(rule) = self.rule_for(&prefix, if last { is_dir } else { true }) {
                return Some(rule);
            }
        }
        None
    }

    /// The predicate `layer::copy_in_filtered` takes.
    pub fn as_exclusions(&self) -> impl Fn(&Path, bool) -> Option<String> + Sync + '_ {
        move |path, is_dir| self.rule_for(path, is_dir)
    }
}

impl Default for Ignore {
    fn default() -> Self {
        Ignore::none()
    }
}
