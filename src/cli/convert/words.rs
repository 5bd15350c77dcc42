//! Dockerfile words (the values of `ENV`, `LABEL`, `COPY`, `WORKDIR`, `USER`, …) as kiln
//! strings: Docker's quoting and escapes resolved, its variable references rewritten in
//! the one form kiln substitutes (`${NAME}`, `${NAME:-default}`), and every other `$`
//! made literal (`$$`), since kiln gives `${` and `$$` a meaning Docker does not.
//!
//! Docker expands variables in these words itself, from the build args and the
//! environment, the base image's included; kiln expands them from the spec alone, so a
//! name the Dockerfile never sets is the caller's to report (`Word::unresolved`).
//!
//! A name is one of three things where a word uses it ([`Name`]): set at that point (an
//! `ENV` above, or an `ARG` its stage declares), an arg kiln knows but the stage does not
//! declare (Docker's `ARG` scope ends with its stage, kiln's args are the whole spec's, so
//! `${NAME}` would wrongly give the arg's value and the reference is resolved here instead),
//! or unknown to the Dockerfile.

/// A word made a kiln string, and what could not be carried over faithfully.
#[derive(Debug, Default, PartialEq)]
pub struct Word {
    pub text: String,
    /// Names it uses that the Dockerfile does not set (docker would take them from the
    /// base image's environment, or leave them empty).
    pub unresolved: Vec<String>,
    /// References kiln has no form for (`${A:+x}`, `${A#x}`), kept as literal text.
    pub unsupported: Vec<String>,
    /// Every name it refers to, in order: what an `ENV` value must not see reassigned by
    /// its own instruction.
    pub names: Vec<String>,
}

/// What a name a word uses is, at that point of the Dockerfile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Name {
    /// Set by an `ENV` above or an `ARG` of this stage: kiln substitutes it too.
    Set,
    /// An arg of the spec that this stage does not declare: Docker leaves it unset here.
    OtherStagesArg,
    /// Not set by the Dockerfile at all (the base image's, or nothing).
    Unknown,
}

/// Docker's default `PATH`, which most base images also set: what an unset `$PATH` in
/// the Dockerfile most likely meant.
pub const DOCKER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Text kiln must take literally (an exec-form argument, a label Docker does not expand):
/// `$` before `{` or `$` doubled, which kiln reads back as one `$`.
pub fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '$' && matches!(chars.peek(), Some('{') | Some('$')) {
            out.push('$');
        }
    }
    out
}

/// A name `$NAME` can use (kiln's rule for args, sh's for variables): a letter or `_`,
/// then letters, digits and `_`.
pub fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits on whitespace outside quotes, keeping each word as written (quotes and escapes
/// in place), as BuildKit splits `ENV a="x y" b=z` before it processes each word.
pub fn split(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, c) if c == escape => {
                word.push(c);
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            (Some(q), c) if c == q => {
                quote = None;
                word.push(c);
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                word.push(c);
            }
            (None, c) if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            (_, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// One Docker word as a kiln string: quotes removed, escapes resolved, variables
/// rewritten. `defined` says what a name is at this point.
pub fn process(raw: &str, escape: char, defined: &dyn Fn(&str) -> Name) -> Word {
    let mut lexer = Lexer {
        chars: raw.chars().collect(),
        at: 0,
        escape,
        defined,
        word: Word::default(),
    };
    lexer.run();
    lexer.word
}

struct Lexer<'a> {
    chars: Vec<char>,
    at: usize,
    escape: char,
    defined: &'a dyn Fn(&str) -> Name,
    word: Word,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    fn push_literal(&mut self, c: char) {
        self.word.text.push(c);
        if c == '$' {
            self.word.text.push('$');
        }
    }

    fn run(&mut self) {
        while let Some(c) = self.next() {
            match c {
                '\'' => self.single_quoted(),
                '"' => self.double_quoted(),
                '$' => self.variable(),
                c if c == self.escape => match self.next() {
                    Some(n) => self.push_literal(n),
                    None => self.push_literal(c),
                },
                c => self.push_literal(c),
            }
        }
    }

    fn single_quoted(&mut self) {
        while let Some(c) = self.next() {
            if c == '\'' {
                return;
            }
            self.push_literal(c);
        }
    }

    /// Inside double quotes only `"`, `$` and the escape character itself are escaped.
    fn double_quoted(&mut self) {
        while let Some(c) = self.next() {
            match c {
                '"' => return,
                '$' => self.variable(),
                c if c == self.escape => match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.at += 1;
                        self.push_literal(n);
                    }
                    _ => self.push_literal(c),
                },
                c => self.push_literal(c),
            }
        }
    }

    /// After a `$`: `$NAME`, `${NAME}`, `${NAME:-word}`, or a literal `$`.
    fn variable(&mut self) {
        match self.peek() {
            Some('{') => {
                self.at += 1;
                self.braced();
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let name = self.name();
                self.reference(&name, None);
            }
            _ => self.push_literal('$'),
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self
            .peek()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            name.push(c);
            self.at += 1;
        }
        name
    }

    fn braced(&mut self) {
        let start = self.at;
        let name = self.name();
        let mut rest = String::new();
        let mut closed = false;
        while let Some(c) = self.next() {
            if c == '}' {
                closed = true;
                break;
            }
            rest.push(c);
        }
        let end = if closed { self.at - 1 } else { self.at };
        let inner: String = self.chars[start..end].iter().collect();
        let whole = match closed {
            true => format!("${{{inner}}}"),
            false => format!("${{{inner}"),
        };
        match (closed, rest.strip_prefix(":-")) {
            (true, None) if rest.is_empty() && !name.is_empty() => self.reference(&name, None),
            (true, Some(default)) if !name.is_empty() && !default.contains(['$', '\'', '"']) => {
                self.reference(&name, Some(default))
            }
            _ => {
                self.word.unsupported.push(whole.clone());
                whole.chars().for_each(|c| self.push_literal(c));
            }
        }
    }

    fn reference(&mut self, name: &str, default: Option<&str>) {
        self.word.names.push(name.to_owned());
        let kind = (self.defined)(name);
        let text = &mut self.word.text;
        match (kind, default) {
            (Name::Set, None) => text.push_str(&format!("${{{name}}}")),
            (Name::Set | Name::Unknown, Some(d)) => text.push_str(&format!("${{{name}:-{d}}}")),
            // Unset in Docker's eyes, so the default (or nothing); kiln would give the
            // arg's value to any `${NAME…}`, so the result is written out.
            (Name::OtherStagesArg, default) => {
                text.push_str(&literal(default.unwrap_or("")));
                self.word.unresolved.push(name.to_owned());
            }
            (Name::Unknown, None) => {
                let fallback = if name == "PATH" { DOCKER_PATH } else { "" };
                text.push_str(&format!("${{{name}:-{fallback}}}"));
                self.word.unresolved.push(name.to_owned());
            }
        }
    }
}

/// The variable names a shell script expands (`$NAME`, `${NAME…}`, `${#NAME}`), read as
/// kiln reads a `run:` script to choose the args it gets: quotes are not followed, `\`
/// escapes the next character and `$$` is the shell's PID. Erring towards more names only
/// leaves out a `: "$NAME"` line that was needed no more than it was.
pub fn shell_names(script: &str) -> Vec<&str> {
    let bytes = script.as_bytes();
    let mut names = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        at = match (bytes[at], bytes.get(at + 1)) {
            (b'\\', _) | (b'$', Some(b'$')) => at + 2,
            (b'$', Some(b'{')) => {
                let start = at + 2 + usize::from(matches!(bytes.get(at + 2), Some(b'#')));
                let end = name_end(bytes, start);
                names.push(&script[start..end]);
                end
            }
            (b'$', _) => {
                let end = name_end(bytes, at + 1);
                names.push(&script[at + 1..end]);
                end
            }
            _ => at + 1,
        };
    }
    names.retain(|n| !n.is_empty());
    names
}

/// Where a name (a letter or `_`, then letters, digits, `_`) starting at `start` ends.
fn name_end(bytes: &[u8], start: usize) -> usize {
    match bytes.get(start) {
        Some(b) if b.is_ascii_alphabetic() || *b == b'_' => bytes[start..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .map_or(bytes.len(), |n| start + n),
        _ => start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kiln(raw: &str) -> Word {
        process(raw, '\\', &|name| match name {
            "APP" | "V" => Name::Set,
            "BUILD_ONLY" => Name::OtherStagesArg,
            _ => Name::Unknown,
        })
    }

    #[test]
    fn quotes_escapes_and_references() {
        assert_eq!(kiln(r#""two words""#).text, "two words");
        assert_eq!(kiln(r"a\ b").text, "a b");
        // A literal `$` is written `$$`, which kiln reads back as `$`.
        assert_eq!(kiln("'$APP'").text, "$$APP");
        assert_eq!(kiln("/srv/$APP/${V}").text, "/srv/${APP}/${V}");
        assert_eq!(kiln("${X:-1.0}").text, "${X:-1.0}");
        assert_eq!(kiln(r#""cost: \$5""#).text, "cost: $$5");
        assert_eq!(kiln("a${b").text, "a$${b");
    }

    #[test]
    fn names_the_dockerfile_never_sets_are_reported() {
        let w = kiln("/opt/bin:$PATH");
        assert_eq!(w.text, format!("/opt/bin:${{PATH:-{DOCKER_PATH}}}"));
        assert_eq!(w.unresolved, ["PATH"]);
        let w = kiln("${HOME}/x");
        assert_eq!(w.text, "${HOME:-}/x");
        // Another stage's ARG is unset here for Docker: its default or nothing.
        let w = kiln("a$BUILD_ONLY-${BUILD_ONLY:-d}");
        assert_eq!(w.text, "a-d");
        assert_eq!(w.unresolved, ["BUILD_ONLY", "BUILD_ONLY"]);
        assert_eq!(w.names, ["BUILD_ONLY", "BUILD_ONLY"]);
    }

    #[test]
    fn a_script_names_what_sh_would_expand() {
        let script = "echo $A ${B:-x} ${#C} $$D \\$E '$F' $1 ${}";
        assert_eq!(shell_names(script), ["A", "B", "C", "F"]);
    }

    #[test]
    fn operators_kiln_lacks_stay_literal() {
        let w = kiln("${APP:+set}");
        assert_eq!(w.text, "$${APP:+set}");
        assert_eq!(w.unsupported, ["${APP:+set}"]);
    }

    #[test]
    fn splitting_keeps_quoted_words_whole() {
        assert_eq!(
            split(r#"A=1 B="two words" C=3\ x"#, '\\'),
            ["A=1", r#"B="two words""#, r"C=3\ x"]
        );
        assert_eq!(literal("echo ${HOME} $$ $PATH"), "echo $${HOME} $$$ $PATH");
    }
}
