//! Writes the converted spec as YAML a person reads and edits: block style, short lists
//! of plain words in flow style, scripts as literal blocks, and comments where the
//! translation is not one to one. Written here rather than with serde-saphyr's serializer
//! because a serializer has no place for comments; every scalar that is not plainly safe
//! is written as a JSON string, which is a valid YAML double-quoted scalar, with the
//! characters YAML may not hold raw (control characters, DEL, C1, U+FEFF) escaped: a
//! Dockerfile's bytes are anyone's, and a spec must still parse.

/// A value of the spec.
#[derive(Debug, Clone)]
pub enum Node {
    Scalar(String),
    /// A number or boolean, written as it is (`retries: 3`, `privileged: true`).
    Plain(String),
    List(Vec<Item>),
    Map(Vec<Entry>),
}

/// A list item with the comment lines above it.
#[derive(Debug, Clone)]
pub struct Item {
    pub comments: Vec<String>,
    pub node: Node,
}

/// A mapping entry with the comment lines above it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub comments: Vec<String>,
    pub key: String,
    pub node: Node,
}

impl Entry {
    pub fn new(key: &str, node: Node) -> Entry {
        Entry {
            comments: Vec::new(),
            key: key.to_owned(),
            node,
        }
    }

    pub fn scalar(key: &str, value: &str) -> Entry {
        Entry::new(key, Node::Scalar(value.to_owned()))
    }
}

impl Node {
    pub fn list(values: &[String]) -> Node {
        Node::List(values.iter().map(|v| Item::plain(v)).collect())
    }

    /// A mapping of strings (`env:`, `labels:`, `args:`).
    pub fn pairs(pairs: &[(String, String)]) -> Node {
        Node::Map(pairs.iter().map(|(k, v)| Entry::scalar(k, v)).collect())
    }
}

impl Item {
    pub fn plain(value: &str) -> Item {
        Item {
            comments: Vec::new(),
            node: Node::Scalar(value.to_owned()),
        }
    }
}

/// The document: header comments, then the top-level entries.
pub fn document(header: &[String], entries: &[Entry]) -> String {
    let mut out = String::new();
    for line in header {
        comment(&mut out, 0, line);
    }
    for entry in entries {
        write_entry(&mut out, 0, entry);
    }
    out
}

fn comment(out: &mut String, indent: usize, text: &str) {
    for line in text.lines() {
        let line: String = line
            .trim_end()
            .chars()
            .map(|c| if printable(c) { c } else { '\u{fffd}' })
            .collect();
        match line.is_empty() {
            true => out.push_str(&format!("{:indent$}#\n", "")),
            false => out.push_str(&format!("{:indent$}# {line}\n", "")),
        }
    }
}

fn write_entry(out: &mut String, indent: usize, entry: &Entry) {
    for line in &entry.comments {
        comment(out, indent, line);
    }
    let key = scalar_inline(&entry.key);
    match &entry.node {
        Node::Scalar(s) if s.contains('\n') => {
            out.push_str(&format!("{:indent$}{key}: {}", "", block(s, indent + 2)))
        }
        Node::Scalar(s) => out.push_str(&format!("{:indent$}{key}: {}\n", "", scalar_inline(s))),
        Node::Plain(s) => out.push_str(&format!("{:indent$}{key}: {s}\n", "")),
        Node::List(items) if items.is_empty() => {
            out.push_str(&format!("{:indent$}{key}: []\n", ""))
        }
        Node::Map(entries) if entries.is_empty() => {
            out.push_str(&format!("{:indent$}{key}: {{}}\n", ""))
        }
        Node::List(items) => match flow(items) {
            Some(text) => out.push_str(&format!("{:indent$}{key}: {text}\n", "")),
            None => {
                out.push_str(&format!("{:indent$}{key}:\n", ""));
                items.iter().for_each(|i| write_item(out, indent + 2, i));
            }
        },
        Node::Map(entries) => {
            out.push_str(&format!("{:indent$}{key}:\n", ""));
            entries.iter().for_each(|e| write_entry(out, indent + 2, e));
        }
    }
}

fn write_item(out: &mut String, indent: usize, item: &Item) {
    for line in &item.comments {
        comment(out, indent, line);
    }
    match &item.node {
        Node::Scalar(s) if s.contains('\n') => {
            out.push_str(&format!("{:indent$}- {}", "", block(s, indent + 2)))
        }
        Node::Scalar(s) => out.push_str(&format!("{:indent$}- {}\n", "", scalar_inline(s))),
        Node::Plain(s) => out.push_str(&format!("{:indent$}- {s}\n", "")),
        Node::List(items) => {
            let text = flow(items).unwrap_or_else(|| json_list(items));
            out.push_str(&format!("{:indent$}- {text}\n", ""));
        }
        Node::Map(entries) => {
            // The first entry goes on the dash's line, the others below it.
            let mut first = String::new();
            if let Some(e) = entries.first() {
                write_entry(&mut first, indent + 2, e);
            }
            let first = first.trim_start_matches(' ');
            out.push_str(&format!("{:indent$}- {first}", ""));
            entries
                .iter()
                .skip(1)
                .for_each(|e| write_entry(out, indent + 2, e));
        }
    }
}

/// `[a, b]` when every item is a plain scalar without comments and the line stays short.
fn flow(items: &[Item]) -> Option<String> {
    let mut words = Vec::new();
    for item in items {
        match &item.node {
            Node::Scalar(s) if item.comments.is_empty() && !s.contains('\n') => {
                words.push(scalar_inline(s))
            }
            _ => return None,
        }
    }
    let text = format!("[{}]", words.join(", "));
    (text.len() <= 72).then_some(text)
}

/// A list of scalars as one JSON array, for a list nested in a list (rare).
fn json_list(items: &[Item]) -> String {
    let strings: Vec<&str> = items
        .iter()
        .filter_map(|i| match &i.node {
            Node::Scalar(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    serde_json::to_string(&strings).expect("strings serialise")
}

/// A scalar on one line: plain when YAML cannot read it as anything else, else quoted.
pub fn scalar_inline(s: &str) -> String {
    match is_plain(s) {
        true => s.to_owned(),
        false => quoted(s),
    }
}

/// A double-quoted scalar: JSON's escapes (which YAML shares) and `\uXXXX` for what
/// JSON leaves raw but YAML does not allow.
fn quoted(s: &str) -> String {
    let json = serde_json::to_string(s).expect("strings serialise");
    match json.chars().all(printable) {
        true => json,
        false => json
            .chars()
            .map(|c| match printable(c) {
                true => c.to_string(),
                false => format!("\\u{:04x}", u32::from(c)),
            })
            .collect(),
    }
}

/// What YAML 1.2 allows in a stream (its `c-printable`, without the byte order mark,
/// which a parser may take for the start of a document).
fn printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | ' '..='~' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && c != '\u{feff}'
}

/// Plain scalars are words of a safe alphabet that YAML 1.2 reads as strings (not
/// `true`, `null` or a number) and that need no quoting in flow style either.
fn is_plain(s: &str) -> bool {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_./-+=@%".contains(c) || c == ':';
    let Some(first) = s.chars().next() else {
        return false;
    };
    let reserved = ["true", "false", "null", "~", "yes", "no", "on", "off"];
    s.chars().all(safe)
        && (first.is_ascii_alphabetic() || first == '/' || first == '_' || first == '.')
        && !s.contains(": ")
        && !s.ends_with(':')
        && !reserved.contains(&s.to_ascii_lowercase().as_str())
        && !s.starts_with(".inf")
        && !s.starts_with(".nan")
}

/// A literal block (`|`, `|-`, `|+` by its trailing newlines) holding `s` exactly; when a
/// block cannot (a line with leading blanks first, a carriage return), a quoted string.
fn block(s: &str, indent: usize) -> String {
    let first_blank = s.starts_with([' ', '\t']) || s.starts_with('\n');
    let unprintable = s.chars().any(|c| !printable(c));
    if first_blank || unprintable || s.contains('\r') || s.lines().any(|l| l.ends_with([' ', '\t']))
    {
        return format!("{}\n", scalar_inline(s));
    }
    let chomp = match (s.ends_with("\n\n"), s.ends_with('\n')) {
        (true, _) => "+",
        (false, true) => "",
        (false, false) => "-",
    };
    let mut out = format!("|{chomp}\n");
    for line in s.lines() {
        match line.is_empty() {
            true => out.push('\n'),
            false => out.push_str(&format!("{:indent$}{line}\n", "")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_quoted_unless_plainly_strings() {
        assert_eq!(scalar_inline("busybox:1.36"), "busybox:1.36");
        assert_eq!(scalar_inline("1000:1000"), "\"1000:1000\"");
        assert_eq!(scalar_inline("true"), "\"true\"");
        assert_eq!(scalar_inline("a b"), "\"a b\"");
        assert_eq!(scalar_inline(""), "\"\"");
        assert_eq!(scalar_inline("${X}"), "\"${X}\"");
        assert_eq!(
            scalar_inline("a\u{0}\u{7f}\u{feff}"),
            "\"a\\u0000\\u007f\\ufeff\""
        );
        assert_eq!(block("a\u{1d}\n", 2), "\"a\\u001d\\n\"\n");
        let mut out = String::new();
        comment(&mut out, 0, "x\u{0}y");
        assert_eq!(out, "# x\u{fffd}y\n");
    }

    #[test]
    fn a_step_list_with_scripts_and_comments() {
        let step = Node::Map(vec![
            Entry::scalar("run", "echo a\necho b\n"),
            Entry::scalar("network", "none"),
        ]);
        let doc = document(
            &["head".into()],
            &[Entry::new(
                "steps",
                Node::List(vec![Item {
                    comments: vec!["Dockerfile:3".into()],
                    node: step,
                }]),
            )],
        );
        assert_eq!(
            doc,
            "# head\nsteps:\n  # Dockerfile:3\n  - run: |\n      echo a\n      echo b\n    network: none\n"
        );
    }
}
