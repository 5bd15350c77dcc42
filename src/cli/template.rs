//! `--format '{{…}}'`: the part of Go's text/template that scripts written for docker's
//! `--format` use, applied to a JSON document.
//!
//! Exists so that `kiln inspect -f '{{.State.Pid}}' web` and the well-worn
//! `-f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}'` work as they do with
//! docker, without a Go template engine. A template is text and actions `{{ … }}` (`{{-`
//! and `-}}` trim the spaces beside them). An action is a pipeline, or a block:
//! `range` (over a list or a map's values, `$i, $v :=` to name them), `if`/`else if`/`else`,
//! `with`, each closed by `end`. A pipeline is commands joined by `|`, each passing its
//! value on as the last argument of the next; a command is a function and its arguments,
//! or one operand: `.Field.Path` (JSON keys; `.` alone is the current value), `$` (the
//! whole document), `$name.Path`, a string, a number, `true`/`false`, or a parenthesised
//! pipeline. Functions: Go's (`and or not len index print printf println eq ne lt le gt
//! ge`) and docker's (`json join split lower upper title`). What Go prints: strings as
//! they are, numbers and booleans as text, objects and arrays as `map[k:v]`/`[a b]`, and
//! `<no value>` for a key the document lacks.

use std::collections::HashMap;

use serde_json::Value;

/// Why a template cannot be used, as Go's words go (`template: …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "template: {}", self.0)
    }
}

fn error(why: impl Into<String>) -> TemplateError {
    TemplateError(why.into())
}

/// Renders `template` over `document`; a key the document lacks prints `<no value>`, as
/// Go's templates print a missing map key (inspect's documents are maps).
pub fn render(template: &str, document: &Value) -> Result<String, TemplateError> {
    Template::parse(template)?.render_with(document, false)
}

/// A template parsed once, for a listing that renders it over many rows.
pub struct Template(Vec<Node>);

impl Template {
    pub fn parse(template: &str) -> Result<Template, TemplateError> {
        parse(template).map(Template)
    }

    /// Renders it over a row of a listing, whose keys are fixed: a field it lacks is an
    /// error naming the field, as docker's listings (Go structs) make it.
    pub fn render_row(&self, row: &Value) -> Result<String, TemplateError> {
        self.render_with(row, true)
    }

    fn render_with(&self, document: &Value, strict: bool) -> Result<String, TemplateError> {
        let mut scope = Scope {
            root: document,
            vars: HashMap::new(),
            strict,
        };
        let mut out = String::new();
        execute(&self.0, document, &mut scope, &mut out)?;
        Ok(out)
    }
}

/// A parsed template: text, actions and the blocks that hold more of them.
#[derive(Debug)]
enum Node {
    Text(String),
    /// A pipeline whose value is printed, or (`{{$x := …}}`) kept in the names it declares.
    Print {
        names: Vec<String>,
        pipeline: String,
    },
    Block(Block),
}

#[derive(Debug)]
struct Block {
    kind: BlockKind,
    /// The pipeline after the keyword (and after `$k, $v :=` for `range`).
    pipeline: String,
    /// The names `range $i, $v :=` declares.
    names: Vec<String>,
    body: Vec<Node>,
    /// What `else` holds (an `else if` is an `if` block there).
    otherwise: Vec<Node>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Range,
    If,
    With,
}

/// One `{{ … }}` with the text before it.
struct Piece<'a> {
    text: String,
    action: Option<&'a str>,
}

/// Splits the template into text and actions, applying `{{-` and `-}}`.
fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = template;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| error(format!("unclosed action in {template:?}")))?;
        let mut action = &after[..end];
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        if let Some(trimmed) = action.strip_prefix("- ") {
            text = text.trim_end();
            action = trimmed;
        }
        trim_next = action.ends_with(" -");
        if trim_next {
            action = &action[..action.len() - 2];
        }
        pieces.push(Piece {
            text: text.to_owned(),
            action: Some(action.trim()),
        });
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    pieces.push(Piece {
        text: text.to_owned(),
        action: None,
    });
    Ok(pieces)
}

fn parse(template: &str) -> Result<Vec<Node>, TemplateError> {
    let pieces = pieces(template)?;
    let (nodes, closer) = parse_until_end(&mut pieces.into_iter())?;
    match closer {
        None => Ok(nodes),
        Some(word) => Err(error(format!("unexpected {{{{{word}}}}}"))),
    }
}

/// Nodes up to an `end` or `else …` (returned as the closer) or the template's end (none).
fn parse_until_end<'a>(
    pieces: &mut std::vec::IntoIter<Piece<'a>>,
) -> Result<(Vec<Node>, Option<&'a str>), TemplateError> {
    let mut nodes = Vec::new();
    while let Some(piece) = pieces.next() {
        if !piece.text.is_empty() {
            nodes.push(Node::Text(piece.text));
        }
        let Some(action) = piece.action else {
            break;
        };
        if action.starts_with("/*") {
            continue;
        }
        let (word, rest) = split_word(action);
        match word {
            "end" | "else" => return Ok((nodes, Some(action))),
            "range" | "if" | "with" => {
                nodes.push(Node::Block(parse_block(word, rest, pieces)?));
            }
            _ => {
                let (names, pipeline) = declared_names(action);
                nodes.push(Node::Print {
                    names,
                    pipeline: pipeline.to_owned(),
                });
            }
        }
    }
    Ok((nodes, None))
}

fn parse_block<'a>(
    word: &str,
    rest: &str,
    pieces: &mut std::vec::IntoIter<Piece<'a>>,
) -> Result<Block, TemplateError> {
    let kind = match word {
        "range" => BlockKind::Range,
        "if" => BlockKind::If,
        _ => BlockKind::With,
    };
    let (names, pipeline) = declared_names(rest);
    if pipeline.is_empty() {
        return Err(error(format!("missing value for {word}")));
    }
    let (body, closer) = parse_until_end(pieces)?;
    let mut block = Block {
        kind,
        pipeline: pipeline.to_owned(),
        names,
        body,
        otherwise: Vec::new(),
    };
    match closer.map(split_word) {
        Some(("end", "")) => {}
        Some(("else", "")) => {
            let (otherwise, closer) = parse_until_end(pieces)?;
            if closer.map(split_word) != Some(("end", "")) {
                return Err(error(format!("{word} has no {{{{end}}}}")));
            }
            block.otherwise = otherwise;
        }
        // `else if X` is an `if` block inside the else, sharing this block's `end`.
        Some(("else", chained)) => {
            let (inner_word, inner_rest) = split_word(chained);
            if inner_word != "if" && inner_word != "with" {
                return Err(error(format!("unexpected {{{{else {chained}}}}}")));
            }
            block.otherwise = vec![Node::Block(parse_block(inner_word, inner_rest, pieces)?)];
        }
        _ => return Err(error(format!("{word} has no {{{{end}}}}"))),
    }
    Ok(block)
}

/// `$k, $v := pipeline` → (["$k", "$v"], "pipeline"); anything else has no names.
fn declared_names(text: &str) -> (Vec<String>, &str) {
    if let Some((names, pipeline)) = text.split_once(":=") {
        let names: Vec<String> = names.split(',').map(|n| n.trim().to_owned()).collect();
        if names.iter().all(|n| n.starts_with('$') && n.len() > 1) {
            return (names, pipeline.trim());
        }
    }
    (Vec::new(), text.trim())
}

fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim();
    match text.find(char::is_whitespace) {
        Some(at) => (&text[..at], text[at..].trim()),
        None => (text, ""),
    }
}

/// What a running template sees besides the current value.
struct Scope<'a> {
    root: &'a Value,
    vars: HashMap<String, Value>,
    strict: bool,
}

fn execute(
    nodes: &[Node],
    dot: &Value,
    scope: &mut Scope,
    out: &mut String,
) -> Result<(), TemplateError> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Print { names, pipeline } => {
                let value = evaluate(pipeline, dot, scope)?;
                match names.first() {
                    // `{{$x := …}}` declares and prints nothing.
                    Some(name) => {
                        scope.vars.insert(name.clone(), value);
                    }
                    None => out.push_str(&go_text(&value)),
                }
            }
            Node::Block(block) => execute_block(block, dot, scope, out)?,
        }
    }
    Ok(())
}

fn execute_block(
    block: &Block,
    dot: &Value,
    scope: &mut Scope,
    out: &mut String,
) -> Result<(), TemplateError> {
    let value = evaluate(&block.pipeline, dot, scope)?;
    match block.kind {
        BlockKind::If if truth(&value) => execute(&block.body, dot, scope, out),
        BlockKind::With if truth(&value) => execute(&block.body, &value, scope, out),
        BlockKind::If | BlockKind::With => execute(&block.otherwise, dot, scope, out),
        BlockKind::Range => {
            let items: Vec<(Value, Value)> = match &value {
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (Value::from(i), v.clone()))
                    .collect(),
                Value::Object(map) => map
                    .iter()
                    .map(|(k, v)| (Value::from(k.clone()), v.clone()))
                    .collect(),
                Value::Null => Vec::new(),
                other => return Err(error(format!("range can't iterate over {}", kind(other)))),
            };
            if items.is_empty() {
                return execute(&block.otherwise, dot, scope, out);
            }
            for (key, item) in items {
                match block.names.as_slice() {
                    [value_name] => {
                        scope.vars.insert(value_name.clone(), item.clone());
                    }
                    [key_name, value_name, ..] => {
                        scope.vars.insert(key_name.clone(), key);
                        scope.vars.insert(value_name.clone(), item.clone());
                    }
                    [] => {}
                }
                execute(&block.body, &item, scope, out)?;
            }
            Ok(())
        }
    }
}

/// Go's truth: false, 0, nothing, and empty strings, lists and maps are false.
fn truth(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

fn evaluate(pipeline: &str, dot: &Value, scope: &Scope) -> Result<Value, TemplateError> {
    Parser {
        text: pipeline,
        at: 0,
        dot,
        scope,
    }
    .pipeline_to_end()
}

/// How Go's template prints a value.
fn go_text(value: &Value) -> String {
    match value {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(go_text).collect();
            format!("[{}]", inner.join(" "))
        }
        Value::Object(map) => {
            // Go sorts map keys; serde_json's map is sorted already.
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_text(v)))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
    }
}

/// A tiny recursive-descent reader of one pipeline, evaluating as it reads.
struct Parser<'a> {
    text: &'a str,
    at: usize,
    dot: &'a Value,
    scope: &'a Scope<'a>,
}

impl<'a> Parser<'a> {
    fn pipeline_to_end(mut self) -> Result<Value, TemplateError> {
        let value = self.pipeline()?;
        self.skip_space();
        match self.peek() {
            None => Ok(value),
            Some(c) => Err(error(format!("unexpected {c:?} in {{{{{}}}}}", self.text))),
        }
    }

    /// `command ('|' command)*`: each later command gets the value as its last argument.
    fn pipeline(&mut self) -> Result<Value, TemplateError> {
        let mut value = self.command(None)?;
        loop {
            self.skip_space();
            if self.peek() != Some('|') {
                return Ok(value);
            }
            self.at += 1;
            value = self.command(Some(value))?;
        }
    }

    /// A function call (`json ARG`, `index ARG KEY…`) or a single operand.
    fn command(&mut self, piped: Option<Value>) -> Result<Value, TemplateError> {
        self.skip_space();
        let word = self.word();
        match word {
            "" | "true" | "false" | "nil" => {
                let value = match word {
                    "" => self
                        .operand()?
                        .ok_or_else(|| error(format!("missing value in {{{{{}}}}}", self.text)))?,
                    "nil" => Value::Null,
                    _ => Value::Bool(word == "true"),
                };
                match piped {
                    Some(_) => Err(error("only a function can take a piped value")),
                    None => Ok(value),
                }
            }
            function if FUNCTIONS.contains(&function) => {
                let mut args = Vec::new();
                while let Some(arg) = self.operand()? {
                    args.push(arg);
                }
                args.extend(piped);
                call(function, args)
            }
            other => Err(error(format!(
                "function {other:?} not defined (kiln has {})",
                FUNCTIONS.join(", ")
            ))),
        }
    }

    /// `.Path`, `$var.Path`, `"string"`, a number, `true`/`false` or `( pipeline )`;
    /// `None` at the end of the command.
    fn operand(&mut self) -> Result<Option<Value>, TemplateError> {
        self.skip_space();
        match self.peek() {
            Some('.') => {
                let path = self.path();
                field_path(self.dot, path, self.scope.strict).map(Some)
            }
            Some('$') => {
                self.at += 1;
                let name = self.word_with(|c| c == '_' || c.is_alphanumeric());
                let path = self.path();
                let value = match name {
                    "" => self.scope.root,
                    name => self
                        .scope
                        .vars
                        .get(&format!("${name}"))
                        .ok_or_else(|| error(format!("undefined variable \"${name}\"")))?,
                };
                field_path(value, path, self.scope.strict).map(Some)
            }
            Some('"') => self.string().map(|s| Some(Value::String(s))),
            Some('`') => self.raw_string().map(|s| Some(Value::String(s))),
            Some('(') => {
                self.at += 1;
                let value = self.pipeline()?;
                self.skip_space();
                if self.peek() != Some(')') {
                    return Err(error(format!("unclosed ( in {{{{{}}}}}", self.text)));
                }
                self.at += 1;
                Ok(Some(value))
            }
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let word = self.word_with(|c| c.is_ascii_digit() || c == '-' || c == '.');
                let n: serde_json::Number = word
                    .parse()
                    .map_err(|_| error(format!("bad number {word:?}")))?;
                Ok(Some(Value::Number(n)))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let save = self.at;
                match self.word() {
                    "true" => Ok(Some(Value::Bool(true))),
                    "false" => Ok(Some(Value::Bool(false))),
                    "nil" => Ok(Some(Value::Null)),
                    // A function name: the end of this command's arguments (Go needs
                    // parentheses for a call as an argument).
                    _ => {
                        self.at = save;
                        Ok(None)
                    }
                }
            }
            _ => Ok(None),
        }
    }

    /// The `.A.B.C` part of an operand (possibly empty after `$name`).
    fn path(&mut self) -> &'a str {
        self.word_with(|c| c == '.' || c == '_' || c.is_alphanumeric())
    }

    fn string(&mut self) -> Result<String, TemplateError> {
        self.at += 1;
        let mut text = String::new();
        let mut chars = self.text[self.at..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.at += i + 1;
                    return Ok(text);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => text.push('\n'),
                    Some((_, 't')) => text.push('\t'),
                    Some((_, other)) => text.push(other),
                    None => break,
                },
                c => text.push(c),
            }
        }
        Err(error(format!(
            "unterminated string in {{{{{}}}}}",
            self.text
        )))
    }

    fn raw_string(&mut self) -> Result<String, TemplateError> {
        self.at += 1;
        let rest = &self.text[self.at..];
        let end = rest
            .find('`')
            .ok_or_else(|| error(format!("unterminated raw string in {{{{{}}}}}", self.text)))?;
        self.at += end + 1;
        Ok(rest[..end].to_owned())
    }

    fn word(&mut self) -> &'a str {
        self.word_with(|c| c.is_ascii_alphabetic())
    }

    fn word_with(&mut self, allowed: impl Fn(char) -> bool) -> &'a str {
        let rest = &self.text[self.at..];
        let len = rest.find(|c: char| !allowed(c)).unwrap_or(rest.len());
        self.at += len;
        &rest[..len]
    }

    fn skip_space(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    fn peek(&self) -> Option<char> {
        self.text[self.at..].chars().next()
    }
}

/// `.A.B.C` under `value`: `Null` where a key is missing (an error when strict).
fn field_path(value: &Value, path: &str, strict: bool) -> Result<Value, TemplateError> {
    let mut value = value;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        value = match value.get(key) {
            Some(found) => found,
            None if strict => return Err(unknown_field(key, value)),
            None => &Value::Null,
        };
    }
    Ok(value.clone())
}

/// docker's words for a field its row does not have, with the fields it has.
fn unknown_field(key: &str, row: &Value) -> TemplateError {
    let known: Vec<String> = match row {
        Value::Object(map) => map.keys().map(|k| format!(".{k}")).collect(),
        _ => Vec::new(),
    };
    error(format!(
        "can't evaluate field {key} (the fields are {})",
        known.join(" ")
    ))
}

const FUNCTIONS: [&str; 20] = [
    "and", "or", "not", "len", "index", "print", "printf", "println", "eq", "ne", "lt", "le", "gt",
    "ge", "json", "join", "split", "lower", "upper", "title",
];

fn call(function: &str, args: Vec<Value>) -> Result<Value, TemplateError> {
    let need = |n: usize| match args.len() >= n {
        true => Ok(()),
        false => Err(error(format!("{function} needs {n} argument(s)"))),
    };
    match function {
        "print" => Ok(Value::String(go_print(&args))),
        "println" => {
            let texts: Vec<String> = args.iter().map(go_text).collect();
            Ok(Value::String(texts.join(" ") + "\n"))
        }
        "printf" => {
            need(1)?;
            Ok(Value::String(printf(&go_text(&args[0]), &args[1..])?))
        }
        "and" => {
            need(1)?;
            let first_false = args.iter().find(|a| !truth(a));
            Ok(first_false.unwrap_or(&args[args.len() - 1]).clone())
        }
        "or" => {
            need(1)?;
            let first_true = args.iter().find(|a| truth(a));
            Ok(first_true.unwrap_or(&args[args.len() - 1]).clone())
        }
        "not" => {
            need(1)?;
            Ok(Value::Bool(!truth(&args[0])))
        }
        "len" => {
            need(1)?;
            let n = match &args[0] {
                Value::String(s) => s.len(),
                Value::Array(items) => items.len(),
                Value::Object(map) => map.len(),
                other => return Err(error(format!("len of {}", kind(other)))),
            };
            Ok(Value::from(n))
        }
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
            need(2)?;
            compare(function, &args)
        }
        "json" => {
            need(1)?;
            Ok(Value::String(
                serde_json::to_string(&args[0]).expect("JSON values serialise"),
            ))
        }
        "join" => {
            need(2)?;
            let Value::Array(items) = &args[0] else {
                return Err(error(format!("join of {}", kind(&args[0]))));
            };
            let texts: Vec<String> = items.iter().map(go_text).collect();
            Ok(Value::String(texts.join(&go_text(&args[1]))))
        }
        "split" => {
            need(2)?;
            let (text, separator) = (go_text(&args[0]), go_text(&args[1]));
            let parts = text.split(separator.as_str()).map(Value::from);
            Ok(Value::Array(parts.collect()))
        }
        "lower" | "upper" | "title" => {
            need(1)?;
            let text = go_text(&args[0]);
            Ok(Value::String(match function {
                "lower" => text.to_lowercase(),
                "upper" => text.to_uppercase(),
                _ => title(&text),
            }))
        }
        _ => index(args),
    }
}

/// `index X K1 K2…`: a string key of an object, a number of an array.
fn index(args: Vec<Value>) -> Result<Value, TemplateError> {
    let mut args = args.into_iter();
    let first = args
        .next()
        .ok_or_else(|| error("index needs an argument"))?;
    args.try_fold(first, |value, key| match (&value, &key) {
        (Value::Object(map), Value::String(k)) => Ok(map.get(k).cloned().unwrap_or(Value::Null)),
        (Value::Array(items), Value::Number(n)) => {
            let i = n.as_u64().and_then(|i| usize::try_from(i).ok());
            i.and_then(|i| items.get(i).cloned())
                .ok_or_else(|| error(format!("index out of range: {n}")))
        }
        (Value::Null, _) => Ok(Value::Null),
        _ => Err(error(format!("cannot index {} with {key}", kind(&value)))),
    })
}

/// Go's `print`: operands' texts, with a space between two that are not strings.
fn go_print(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        let neither_string = i > 0 && !args[i - 1].is_string() && !arg.is_string();
        if neither_string {
            out.push(' ');
        }
        out.push_str(&go_text(arg));
    }
    out
}

/// `printf` with the verbs scripts use: `%s %v %d %q %%`.
fn printf(format: &str, args: &[Value]) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let verb = chars.next().ok_or_else(|| error("printf: % at the end"))?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let arg = args
            .next()
            .ok_or_else(|| error(format!("printf: %{verb} has no argument")))?;
        match verb {
            's' | 'v' | 'd' => out.push_str(&go_text(arg)),
            'q' => out.push_str(&serde_json::to_string(&go_text(arg)).expect("strings serialise")),
            other => return Err(error(format!("printf: %{other} (kiln has %s %v %d %q)"))),
        }
    }
    Ok(out)
}

fn compare(function: &str, args: &[Value]) -> Result<Value, TemplateError> {
    use std::cmp::Ordering;
    let order = |a: &Value, b: &Value| -> Result<Ordering, TemplateError> {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                Ok(x.partial_cmp(&y).unwrap_or(Ordering::Equal))
            }
            (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
            (Value::Bool(x), Value::Bool(y)) if matches!(function, "eq" | "ne") => Ok(x.cmp(y)),
            (Value::Null, Value::Null) if matches!(function, "eq" | "ne") => Ok(Ordering::Equal),
            _ => Err(error(format!(
                "{function}: cannot compare {} with {}",
                kind(a),
                kind(b)
            ))),
        }
    };
    let first = &args[0];
    // Go's eq takes several: true when the first equals any of the others.
    if function == "eq" {
        for other in &args[1..] {
            if order(first, other)? == Ordering::Equal {
                return Ok(Value::Bool(true));
            }
        }
        return Ok(Value::Bool(false));
    }
    let ordering = order(first, &args[1])?;
    Ok(Value::Bool(match function {
        "ne" => ordering != Ordering::Equal,
        "lt" => ordering == Ordering::Less,
        "le" => ordering != Ordering::Greater,
        "gt" => ordering == Ordering::Greater,
        _ => ordering != Ordering::Less,
    }))
}

/// docker's `title`: each word's first letter upper-cased.
fn title(text: &str) -> String {
    let mut out = String::new();
    let mut at_word_start = true;
    for c in text.chars() {
        match at_word_start {
            true => out.extend(c.to_uppercase()),
            false => out.push(c),
        }
        at_word_start = !c.is_alphanumeric();
    }
    out
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "Id": "abc",
            "State": { "Pid": 42, "Running": true, "Health": null },
            "Config": { "Env": ["A=1", "B=2"], "Labels": { "org.x": "y" } },
            "Args": [],
        })
    }

    #[test]
    fn fields_print_as_go_prints_them() {
        let d = doc();
        assert_eq!(render("{{.Id}}", &d).unwrap(), "abc");
        assert_eq!(
            render("pid={{ .State.Pid }} up={{.State.Running}}", &d).unwrap(),
            "pid=42 up=true"
        );
        assert_eq!(render("{{.Config.Env}}", &d).unwrap(), "[A=1 B=2]");
        assert_eq!(render("{{.Config.Labels}}", &d).unwrap(), "map[org.x:y]");
        assert_eq!(render("{{.Nope.Deeper}}", &d).unwrap(), "<no value>");
        assert_eq!(render("no actions", &d).unwrap(), "no actions");
    }

    #[test]
    fn json_and_index_take_arguments_and_pipes() {
        let d = doc();
        assert_eq!(
            render("{{json .Config.Env}}", &d).unwrap(),
            r#"["A=1","B=2"]"#
        );
        assert_eq!(
            render("{{.State | json}}", &d).unwrap(),
            r#"{"Health":null,"Pid":42,"Running":true}"#
        );
        assert_eq!(
            render(r#"{{index .Config.Labels "org.x"}}"#, &d).unwrap(),
            "y"
        );
        assert_eq!(render("{{index .Config.Env 1}}", &d).unwrap(), "B=2");
        assert_eq!(
            render(r#"{{json (index .Config "Env")}}"#, &d).unwrap(),
            r#"["A=1","B=2"]"#
        );
        assert_eq!(
            render("{{json .}}", &json!({"a": 1})).unwrap(),
            r#"{"a":1}"#
        );
    }

    #[test]
    fn range_if_with_and_variables_work_as_in_docker_scripts() {
        let d = json!({
            "NetworkSettings": { "Networks": {
                "bridge": { "IPAddress": "10.89.0.2" },
                "front": { "IPAddress": "10.90.0.5" },
            }},
            "Config": { "Env": ["A=1", "B=2"], "Cmd": ["sleep", "60"], "Labels": {} },
            "State": { "Status": "running", "ExitCode": 0 },
        });
        assert_eq!(
            render(
                "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                &d
            )
            .unwrap(),
            "10.89.0.2 10.90.0.5 "
        );
        assert_eq!(
            render("{{range $name, $net := .NetworkSettings.Networks}}{{$name}}={{$net.IPAddress}};{{end}}", &d).unwrap(),
            "bridge=10.89.0.2;front=10.90.0.5;"
        );
        assert_eq!(
            render(
                "{{range $i, $e := .Config.Env}}{{if $i}},{{end}}{{$e}}{{end}}",
                &d
            )
            .unwrap(),
            "A=1,B=2"
        );
        assert_eq!(
            render("{{range .Config.Labels}}x{{else}}no labels{{end}}", &d).unwrap(),
            "no labels"
        );
        assert_eq!(
            render(r#"{{if eq .State.Status "running"}}up{{else if .State.ExitCode}}failed{{else}}done{{end}}"#, &d).unwrap(),
            "up"
        );
        assert_eq!(
            render("{{with .State}}{{.Status}}/{{$.Config.Cmd}}{{end}}", &d).unwrap(),
            "running/[sleep 60]"
        );
        assert_eq!(
            render(
                r#"{{join .Config.Cmd " "}} {{len .Config.Env}} {{upper .State.Status}}"#,
                &d
            )
            .unwrap(),
            "sleep 60 2 RUNNING"
        );
        assert_eq!(
            render(r#"{{printf "%s:%d" .State.Status .State.ExitCode}}"#, &d).unwrap(),
            "running:0"
        );
        assert_eq!(
            render("a\n  {{- .State.Status -}}  \nb{{/* note */}}", &d).unwrap(),
            "arunningb"
        );
        assert_eq!(
            render(
                r#"{{index (split "a:b" ":") 1}} {{not .Config.Labels}} {{and 1 0}} {{or 0 "x"}}"#,
                &d
            )
            .unwrap(),
            "b true 0 x"
        );
    }

    #[test]
    fn blocks_that_do_not_close_are_named() {
        let d = json!({});
        for (template, says) in [
            ("{{range .X}}", "range has no {{end}}"),
            ("{{if .X}}a{{else}}b", "if has no {{end}}"),
            ("{{end}}", "unexpected {{end}}"),
            ("{{range}}{{end}}", "missing value for range"),
            ("{{$x}}", "undefined variable \"$x\""),
            ("{{range 5}}{{end}}", "range can't iterate over a number"),
        ] {
            let err = render(template, &d).unwrap_err().0;
            assert!(err.contains(says), "{template}: {err}");
        }
    }

    fn render_row(template: &str, row: &Value) -> Result<String, TemplateError> {
        Template::parse(template)?.render_row(row)
    }

    #[test]
    fn a_row_has_only_its_own_fields() {
        let row = json!({"ID": "abc", "Tag": "1"});
        assert_eq!(render_row("{{.ID}}:{{.Tag}}", &row).unwrap(), "abc:1");
        let err = render_row("{{.Repo}}", &row).unwrap_err().0;
        assert!(err.contains("can't evaluate field Repo"), "{err}");
        assert!(err.contains(".ID .Tag"), "{err}");
    }

    #[test]
    fn mistakes_are_named() {
        let d = doc();
        assert!(render("{{.Id", &d)
            .unwrap_err()
            .0
            .contains("unclosed action"));
        assert!(render("{{shout .Id}}", &d)
            .unwrap_err()
            .0
            .contains("\"shout\" not defined"));
        assert!(render("{{index .Config.Env 5}}", &d)
            .unwrap_err()
            .0
            .contains("out of range"));
        assert!(render("{{index .Id 0}}", &d)
            .unwrap_err()
            .0
            .contains("cannot index a string"));
        assert!(render(r#"{{index .Id "x}}"#, &d)
            .unwrap_err()
            .0
            .contains("unterminated"));
    }
}
