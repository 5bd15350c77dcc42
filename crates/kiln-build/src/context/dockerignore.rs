//! Docker's `.dockerignore` rules, which `.containerignore` (buildah, podman) shares.
//!
//! Exists because those files do not mean what the same lines mean in gitignore syntax
//! (`.kilnignore`), and a project written for Docker must build the same under kiln:
//! - Every pattern is anchored at the context root: `*.log` is only `./x.log`, a leading
//!   `/` changes nothing, and only `**` reaches into subdirectories (`**/*.log`).
//! - Patterns are cleaned like paths first (`./a//b/` is `a/b`), so a trailing `/` does not
//!   mean "directories only".
//! - A pattern matches a path when it matches the path or any directory above it, and the
//!   last pattern that matches decides. So `!` exceptions can bring back paths inside an
//!   excluded directory (`docs` then `!docs/README.md`), which gitignore forbids.
//! - `*` and `?` never match `/`; `**` matches any number of directories, none included;
//!   `[...]` is a character class (`^` negates it); `\` escapes the next character.
//! - A line whose first character is `#` is a comment; spaces around a pattern and after
//!   `!` are dropped.
//!
//! This follows moby's `patternmatcher` (what `docker build`, BuildKit and buildah use),
//! matched here over characters with a table walk, never by backtracking, so no pattern
//! can make matching slow.

use super::IgnoreProblem;

/// One parsed line of a `.dockerignore`.
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    /// The line number in the file, for messages.
    pub line: u64,
    /// The line as written (trimmed), for messages.
    pub original: String,
    /// A `!` line: matching paths are brought back.
    pub exception: bool,
    glob: Vec<Token>,
    /// The pattern's characters when it has no wildcard: matched without the table.
    literal: Option<Vec<char>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Char(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**` followed by more pattern: nothing, or anything ending with `/`.
    Dirs,
    /// `**` at the end: anything at all.
    Rest,
    /// `[...]`: one character (other than `/`) in, or with `^` not in, the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Parses the text of an ignore file; an error carries the 1-based line and why.
pub(super) fn parse(text: &str) -> Result<Vec<Pattern>, (u64, IgnoreProblem)> {
    let mut patterns = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = index as u64 + 1;
        if raw.starts_with('#') {
            continue;
        }
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let (exception, body) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, trimmed),
        };
        if body.is_empty() {
            return Err((line, IgnoreProblem::BareNegation));
        }
        let glob = compile(&clean(body)).map_err(|why| (line, why))?;
        let literal = glob
            .iter()
            .map(|t| match t {
                Token::Char(c) => Some(*c),
                _ => None,
            })
            .collect();
        patterns.push(Pattern {
            line,
            original: trimmed.to_owned(),
            exception,
            glob,
            literal,
        });
    }
    Ok(patterns)
}

/// The pattern as Go's `filepath.Clean` leaves it, then without a leading `/`: repeated
/// and trailing slashes and `.` dropped, `..` resolved lexically.
fn clean(pattern: &str) -> String {
    let rooted = pattern.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if rooted => {}
            part => parts.push(part),
        }
    }
    parts.join("/")
}

fn compile(pattern: &str) -> Result<Vec<Token>, IgnoreProblem> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    // moby matches a pattern that starts with `**` and has nothing special after it as a
    // plain suffix: `**.log` is any path ending in `.log`, `**/x` any path ending in `/x`
    // (or `x`).
    let mut leading_stars_then_plain = pattern.starts_with("**");
    while let Some(c) = chars.next() {
        let token = match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` is `**`: the slash belongs to it.
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                match chars.peek() {
                    None => Token::Rest,
                    Some(_) => Token::Dirs,
                }
            }
            '*' => Token::Star,
            '?' => Token::One,
            '[' => class(&mut chars)?,
            '\\' => Token::Char(chars.next().ok_or(IgnoreProblem::TrailingEscape)?),
            c => Token::Char(c),
        };
        let plain = matches!(token, Token::Char(_)) && c != '\\';
        if !tokens.is_empty() && !plain {
            leading_stars_then_plain = false;
        }
        tokens.push(token);
    }
    if leading_stars_then_plain && !pattern.starts_with("**/") && tokens[0] == Token::Dirs {
        tokens[0] = Token::Rest;
    }
    Ok(tokens)
}

/// The rest of a `[...]` class, after its `[`.
fn class(chars: &mut std::iter::Peekable<std::str::Chars>) -> Result<Token, IgnoreProblem> {
    let unclosed = || IgnoreProblem::UnclosedClass;
    let negated = chars.next_if_eq(&'^').is_some();
    let mut ranges = Vec::new();
    loop {
        let lo = match chars.next().ok_or_else(unclosed)? {
            ']' if !ranges.is_empty() => break,
            ']' => return Err(IgnoreProblem::EmptyClass),
            '\\' => chars.next().ok_or_else(unclosed)?,
            c => c,
        };
        let hi = match chars.next_if_eq(&'-') {
            None => lo,
            Some(_) => match chars.next().ok_or_else(unclosed)? {
                '\\' => chars.next().ok_or_else(unclosed)?,
                ']' => return Err(IgnoreProblem::OpenRange(lo)),
                c => c,
            },
        };
        if hi < lo {
            return Err(IgnoreProblem::BackwardsRange(lo, hi));
        }
        ranges.push((lo, hi));
    }
    Ok(Token::Class { negated, ranges })
}

impl Pattern {
    /// Whether the pattern matches `path` itself or a directory above it.
    pub fn matches_path_or_parent(&self, path: &[char]) -> bool {
        if let Some(literal) = &self.literal {
            // The common `node_modules`, `.git`, `build/out`: the path or a parent is it.
            return path.starts_with(literal)
                && (path.len() == literal.len() || path[literal.len()] == '/');
        }
        // One pass gives every prefix: the pattern matches `path[..j]` where the last row
        // holds `j`, and the directories above `path` are the prefixes that end before a `/`.
        let (ends, _) = run(&self.glob, path);
        ends[path.len()] || (0..path.len()).any(|j| path[j] == '/' && ends[j])
    }

    /// Whether the pattern may match some path strictly below the directory `dir`: after
    /// reading `dir/`, a match is still under way. May say yes for a path that cannot
    /// exist; never says no wrongly.
    pub fn may_match_below(&self, dir: &[char]) -> bool {
        let mut prefix = dir.to_vec();
        prefix.push('/');
        let (_, under_way) = run(&self.glob, &prefix);
        under_way
    }
}

/// Matches `glob` against `text` from its start, one token at a time: row `t` holds the
/// positions of `text` where token `t` can start, each row made from the one above in one
/// pass, so matching costs tokens × characters and never backtracks. Returns the last row
/// (where a match of the whole glob can end) and whether some token can start at the end of
/// `text` (a longer text could still match).
fn run(glob: &[Token], text: &[char]) -> (Vec<bool>, bool) {
    let n = text.len();
    let mut row = vec![false; n + 1];
    row[0] = true;
    let mut under_way = row[n];
    for token in glob {
        let mut next = vec![false; n + 1];
        match token {
            Token::Star => {
                // Ends anywhere from its start up to the next `/`.
                let mut open = false;
                for j in 0..=n {
                    open |= row[j];
                    next[j] = open;
                    if j < n && text[j] == '/' {
                        open = false;
                    }
                }
            }
            Token::Dirs => {
                // Ends where it starts, or just after any later `/`.
                let mut seen = false;
                for j in 0..=n {
                    next[j] = row[j] || (seen && j > 0 && text[j - 1] == '/');
                    seen |= row[j];
                }
            }
            Token::Rest => {
                let mut seen = false;
                for j in 0..=n {
                    seen |= row[j];
                    next[j] = seen;
                }
            }
            single => {
                for j in 0..n {
                    next[j + 1] = row[j] && single_matches(single, text[j]);
                }
            }
        }
        row = next;
        under_way |= row[n];
    }
    (row, under_way)
}

fn single_matches(token: &Token, c: char) -> bool {
    match token {
        Token::Char(want) => c == *want,
        Token::One => c != '/',
        Token::Class { negated, ranges } => {
            c != '/' && ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
        }
        Token::Star | Token::Dirs | Token::Rest => unreachable!("not a one-character token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> Pattern {
        parse(text).unwrap().remove(0)
    }

    fn matches(pattern_text: &str, path: &str) -> bool {
        let chars: Vec<char> = path.chars().collect();
        pattern(pattern_text).matches_path_or_parent(&chars)
    }

    #[test]
    fn patterns_are_anchored_at_the_root() {
        assert!(matches("*.log", "a.log"));
        assert!(!matches("*.log", "sub/a.log"), "gitignore would match");
        assert!(matches("/secret", "secret"));
        assert!(matches("secret", "secret/inner/file"), "a parent matches");
        assert!(!matches("secret", "sub/secret"));
        assert!(matches("./docs//api/", "docs/api"), "cleaned like a path");
        assert!(matches("docs/", "docs"), "a trailing / is not dirs-only");
        assert!(matches("a/../b", "b"));
        assert!(!matches("../x", "x"));
    }

    #[test]
    fn double_stars_cross_directories() {
        assert!(matches("**/*.log", "a.log"));
        assert!(matches("**/*.log", "x/y/a.log"));
        assert!(matches("docs/**/*.tmp", "docs/z.tmp"));
        assert!(matches("docs/**/*.tmp", "docs/x/y/z.tmp"));
        assert!(!matches("docs/**/*.tmp", "other/z.tmp"));
        assert!(matches("build/**", "build/x/y"));
        assert!(
            !matches("build/**", "build"),
            "`build/**` is what is in build"
        );
        assert!(matches("**", "anything/at/all"));
        // moby turns a `**` between letters into `(.*/)?` too.
        assert!(matches("a**b", "ax/b") && matches("a**b", "ab") && !matches("a**b", "axb"));
        // ... and a leading `**` before plain text into a suffix.
        assert!(matches("**.log", "a/b.log") && matches("**.log", "x.log"));
        assert!(matches("**/x", "x") && matches("**/x", "a/x") && !matches("**/x", "ax"));
    }

    #[test]
    fn single_characters_classes_and_escapes() {
        assert!(matches("?.txt", "a.txt") && !matches("?.txt", "ab.txt"));
        assert!(matches("[a-c]x", "bx") && !matches("[a-c]x", "dx"));
        assert!(matches("[^a-c]x", "dx") && !matches("[^a-c]x", "ax"));
        assert!(!matches("a[^b]c", "a/c"), "classes never match /");
        assert!(matches(r"\*", "*") && !matches(r"\*", "x"));
        assert!(
            parse("a\\").is_err(),
            "a trailing backslash escapes nothing"
        );
        assert!(matches("é?", "éà"), "characters, not bytes");
    }

    #[test]
    fn lines_comments_and_exceptions() {
        let parsed = parse("# c\n  *.log  \n\n! keep.log\n #not a comment\n").unwrap();
        let lines: Vec<(u64, &str, bool)> = parsed
            .iter()
            .map(|p| (p.line, p.original.as_str(), p.exception))
            .collect();
        assert_eq!(
            lines,
            [
                (2, "*.log", false),
                (4, "! keep.log", true),
                (5, "#not a comment", false)
            ]
        );
        assert_eq!(parse("a\n!\n").unwrap_err().0, 2);
        assert_eq!(parse("[ab").unwrap_err().0, 1);
        assert!(parse("[]").is_err() && parse("[b-a]").is_err());
    }

    #[test]
    fn below_a_directory() {
        let dir: Vec<char> = "docs".chars().collect();
        assert!(pattern("docs/README.md").may_match_below(&dir));
        assert!(pattern("**/*.md").may_match_below(&dir));
        assert!(pattern("d*/x").may_match_below(&dir));
        assert!(!pattern("*.md").may_match_below(&dir));
        assert!(!pattern("other/x").may_match_below(&dir));
        assert!(!pattern("docs").may_match_below(&dir));
    }
}
