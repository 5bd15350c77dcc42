//! A Dockerfile as BuildKit reads it: parser directives, logical lines, flags, exec or
//! shell form, heredocs. Line-oriented, as BuildKit's own parser is.
//!
//! Written by hand on purpose: `parse-dockerfile` (0.1.9, the best kept crate) finds a
//! heredoc only at the very start of a `RUN` and only one of them (its own TODOs), so
//! `RUN cat <<EOF > /etc/motd` is a parse error there; `dockerfile-parser` has not been
//! released since 2021 and knows no heredocs or `# escape=`. The rules below are
//! BuildKit's, as the Dockerfile reference states them.

/// A parse failure, located at a line of the Dockerfile.
#[derive(Debug)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
    pub hint: Option<String>,
}

/// One instruction: its keyword (upper case), flags and arguments, where it starts.
#[derive(Debug, Clone)]
pub struct Instruction {
    pub line: usize,
    pub keyword: String,
    pub flags: Vec<Flag>,
    /// The arguments after the flags: the logical line with continuations joined and
    /// comment lines inside them dropped, as BuildKit hands them on.
    pub args: String,
    /// The JSON array form (`["a", "b"]`), when the arguments are one.
    pub exec: Option<Vec<String>>,
    pub heredocs: Vec<Heredoc>,
    /// The instruction's text as written (first line), for comments and messages.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Heredoc {
    pub delimiter: String,
    /// `<<-`: leading tabs are stripped from the body and the closing line.
    pub strip_tabs: bool,
    /// Unquoted delimiter: `$VAR` in the body is expanded.
    pub expand: bool,
    /// The body as written (tabs kept), each line with its `\n`.
    pub raw: String,
}

impl Heredoc {
    /// The body as the command reading it sees it.
    pub fn body(&self) -> String {
        match self.strip_tabs {
            false => self.raw.clone(),
            true => self
                .raw
                .split_inclusive('\n')
                .map(|l| l.trim_start_matches('\t'))
                .collect(),
        }
    }
}

/// Instructions whose arguments may open heredocs (BuildKit's list).
const HEREDOC_INSTRUCTIONS: [&str; 3] = ["RUN", "COPY", "ADD"];
/// Instructions whose leading `--name=value` words are flags.
const FLAG_INSTRUCTIONS: [&str; 5] = ["FROM", "RUN", "COPY", "ADD", "HEALTHCHECK"];
pub const KNOWN: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The parsed file: its escape character and instructions in order.
pub struct Dockerfile {
    pub escape: char,
    pub instructions: Vec<Instruction>,
}

pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    // BuildKit skips a UTF-8 byte order mark, which editors on Windows write.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let (escape, first) = directives(&lines)?;
    let mut instructions = Vec::new();
    let mut i = first;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            i += 1;
            continue;
        }
        let (instruction, next) = instruction(&lines, i, escape)?;
        instructions.push(instruction);
        i = next;
    }
    Ok(Dockerfile {
        escape,
        instructions,
    })
}

/// Parser directives (`# escape=`, `# syntax=`, `# check=`) at the very top: the escape
/// character, and the index of the first line after them. `syntax` and `check` only
/// choose BuildKit's frontend and its lint checks, so they change nothing here.
fn directives(lines: &[&str]) -> Result<(char, usize), ParseError> {
    let mut escape = '\\';
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim().strip_prefix('#') else {
            return Ok((escape, i));
        };
        let Some((name, value)) = rest.split_once('=') else {
            return Ok((escape, i));
        };
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Ok((escape, i));
        }
        if name == "escape" {
            escape = match value.trim() {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(ParseError {
                        line: i + 1,
                        message: format!("invalid escape character {other:?}"),
                        hint: Some("the escape directive takes \\ or `".into()),
                    })
                }
            };
        }
    }
    Ok((escape, lines.len()))
}

/// The instruction starting at `lines[start]` and the index of the line after it.
fn instruction(
    lines: &[&str],
    start: usize,
    escape: char,
) -> Result<(Instruction, usize), ParseError> {
    let (logical, mut next) = logical_line(lines, start, escape);
    let logical = logical.trim();
    let (word, rest) = logical
        .split_once(char::is_whitespace)
        .unwrap_or((logical, ""));
    let keyword = word.to_ascii_uppercase();
    if !KNOWN.contains(&keyword.as_str()) {
        return Err(ParseError {
            line: start + 1,
            message: format!("unknown instruction {word:?}"),
            hint: nearest_instruction(&keyword),
        });
    }
    let (flags, rest) = match FLAG_INSTRUCTIONS.contains(&keyword.as_str()) {
        true => flags(rest.trim_start()),
        false => (Vec::new(), rest.trim_start()),
    };
    let mut heredocs = Vec::new();
    if HEREDOC_INSTRUCTIONS.contains(&keyword.as_str()) {
        for (delimiter, strip_tabs, expand) in heredoc_markers(rest) {
            let (raw, after) = heredoc_body(lines, next, &delimiter, strip_tabs, start)?;
            heredocs.push(Heredoc {
                delimiter,
                strip_tabs,
                expand,
                raw,
            });
            next = after;
        }
    }
    let exec = match heredocs.is_empty() {
        true => json_array(rest),
        false => None,
    };
    let instruction = Instruction {
        line: start + 1,
        keyword,
        flags,
        args: rest.to_owned(),
        exec,
        heredocs,
        source: lines[start].trim().to_owned(),
    };
    Ok((instruction, next))
}

/// The nearest instruction name to a misspelt one.
fn nearest_instruction(word: &str) -> Option<String> {
    KNOWN
        .iter()
        .map(|k| (strsim::levenshtein(word, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!("did you mean {k}?"))
}

/// Joins the physical lines of one instruction: a line ending in the escape character
/// (trailing blanks allowed) goes on with the next; comment and empty lines in between are
/// dropped. Returns the text and the index of the line after it.
fn logical_line(lines: &[&str], start: usize, escape: char) -> (String, usize) {
    let mut text = String::new();
    let mut i = start;
    loop {
        let line = lines[i];
        i += 1;
        let body = line.trim_end();
        match body.strip_suffix(escape) {
            Some(joined) if i < lines.len() => text.push_str(joined),
            _ => {
                text.push_str(line);
                return (text, i);
            }
        }
        while i < lines.len() {
            let next = lines[i].trim_start();
            match next.is_empty() || next.starts_with('#') {
                true => i += 1,
                false => break,
            }
        }
        if i == lines.len() {
            return (text, i);
        }
    }
}

/// Leading `--name[=value]` words, and the rest.
fn flags(mut rest: &str) -> (Vec<Flag>, &str) {
    let mut out = Vec::new();
    while let Some(word) = rest.strip_prefix("--") {
        let end = word.find(char::is_whitespace).unwrap_or(word.len());
        let (flag, after) = word.split_at(end);
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(unquote(v))),
            None => (flag, None),
        };
        out.push(Flag {
            name: name.to_ascii_lowercase(),
            value,
        });
        rest = after.trim_start();
    }
    (out, rest)
}

/// A flag value without the quotes around it (`--chown="app:app"`).
fn unquote(value: &str) -> String {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return inner.to_owned();
        }
    }
    value.to_owned()
}

/// The heredocs a command opens, in order: `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'`.
/// Quoted text is skipped, so `echo '<<EOF'` opens none.
pub fn heredoc_markers(text: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut quote = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            // Bytes, not `text[i..]`: `i` may be inside a multi-byte character (`héllo`).
            // A here-string (`<<<word`) is no heredoc.
            None if bytes[i..].starts_with(b"<<<") => i += 2,
            None if bytes[i..].starts_with(b"<<") => {
                if let Some((marker, len)) = heredoc_marker(&text[i + 2..]) {
                    out.push(marker);
                    i += 2 + len;
                    continue;
                }
            }
            None => {}
        }
        i += 1;
    }
    out
}

/// The marker after `<<`: (delimiter, strip tabs, expand) and its length.
fn heredoc_marker(after: &str) -> Option<((String, bool, bool), usize)> {
    let (strip_tabs, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    let skip = usize::from(strip_tabs);
    let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    for quote in ['"', '\''] {
        if let Some(inner) = rest.strip_prefix(quote) {
            let end = inner.find(quote)?;
            let word = &inner[..end];
            return (!word.is_empty() && word.chars().all(word_char))
                .then(|| ((word.to_owned(), strip_tabs, false), skip + end + 2));
        }
    }
    let end = rest.find(|c: char| !word_char(c)).unwrap_or(rest.len());
    let word = &rest[..end];
    (!word.is_empty() && word.chars().next().is_some_and(|c| !c.is_ascii_digit()))
        .then(|| ((word.to_owned(), strip_tabs, true), skip + end))
}

/// The body of a heredoc starting at `lines[from]`, up to its closing line.
fn heredoc_body(
    lines: &[&str],
    from: usize,
    delimiter: &str,
    strip_tabs: bool,
    start: usize,
) -> Result<(String, usize), ParseError> {
    let mut raw = String::new();
    for (i, line) in lines.iter().enumerate().skip(from) {
        let closing = match strip_tabs {
            true => line.trim_start_matches('\t'),
            false => line,
        };
        if closing == delimiter {
            return Ok((raw, i + 1));
        }
        raw.push_str(line);
        raw.push('\n');
    }
    Err(ParseError {
        line: start + 1,
        message: format!("heredoc <<{delimiter} is not closed"),
        hint: Some(format!("end it with a line holding only {delimiter}")),
    })
}

/// `["a", "b"]` as a list of strings; anything else (not JSON, not all strings) is the
/// shell form, as BuildKit decides.
pub fn json_array(text: &str) -> Option<Vec<String>> {
    let text = text.trim();
    if !text.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_join_and_drop_comment_lines() {
        let file = parse("FROM x\nRUN echo a \\\n  # note\n\n  && echo b\nUSER app\n").unwrap();
        let run = &file.instructions[1];
        assert_eq!(run.args, "echo a   && echo b");
        assert_eq!(run.line, 2);
        assert_eq!(file.instructions[2].line, 6);
    }

    #[test]
    fn the_escape_directive_changes_the_continuation_character() {
        let text = "# escape=`\nFROM x\nRUN dir C:\\ `\n  && echo b\n";
        let file = parse(text).unwrap();
        assert_eq!(file.escape, '`');
        assert_eq!(file.instructions[1].args, "dir C:\\   && echo b");
    }

    #[test]
    fn heredocs_anywhere_in_a_run_and_several_of_them() {
        let text = "FROM x\nRUN cat <<A > /a && cat <<-'B' > /b\none\nA\n\ttwo\n\tB\nUSER u\n";
        let file = parse(text).unwrap();
        let run = &file.instructions[1];
        assert_eq!(run.heredocs.len(), 2);
        assert_eq!(run.heredocs[0].raw, "one\n");
        assert!(run.heredocs[0].expand);
        assert_eq!(run.heredocs[1].body(), "two\n");
        assert!(!run.heredocs[1].expand);
        assert_eq!(file.instructions[2].keyword, "USER");
        assert!(run.exec.is_none());
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_skipped() {
        let file = parse("\u{feff}from x\r\nRUN echo a \\\r\n  b\r\n").unwrap();
        assert_eq!(file.instructions[0].keyword, "FROM");
        assert_eq!(file.instructions[0].args, "x");
        assert_eq!(file.instructions[1].args, "echo a   b");
    }

    #[test]
    fn quoted_heredoc_markers_are_text() {
        assert!(heredoc_markers("echo héllo wörld").is_empty());
        assert_eq!(heredoc_markers("cat <<É é <<EOF").len(), 1);
        assert!(heredoc_markers("echo '<<EOF'").is_empty());
        assert!(heredoc_markers("cat <<<word").is_empty());
        assert_eq!(heredoc_markers("<<EOF").len(), 1);
    }

    #[test]
    fn exec_form_flags_and_unknown_instructions() {
        let file = parse("FROM --platform=linux/amd64 x AS b\nCMD [\"a\", \"b c\"]\n").unwrap();
        assert_eq!(file.instructions[0].flags[0].name, "platform");
        assert_eq!(file.instructions[0].args, "x AS b");
        assert_eq!(
            file.instructions[1].exec,
            Some(vec!["a".into(), "b c".into()])
        );
        let e = parse("FROM x\nRUNN echo\n").err().unwrap();
        assert_eq!(e.line, 2);
        assert_eq!(e.hint.as_deref(), Some("did you mean RUN?"));
        let e = parse("FROM x\nRUN <<EOF\necho\n").err().unwrap();
        assert!(e.message.contains("not closed"), "{}", e.message);
    }
}
