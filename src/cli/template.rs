//! `--format '{{…}}'`: the part of Go's text/template that scripts written for docker's
//! `inspect --format` use, applied to a JSON document.
//!
//! Exists so that `kiln inspect -f '{{.State.Pid}}' web` works as it does with docker,
//! without a Go template engine: text with actions `{{ … }}`, each a pipeline of
//! `.Field.Path` (JSON keys; `.` alone is the whole document), `json ARG`, `index ARG KEY…`
//! (a string key of an object, a number of an array), string and number literals, a
//! parenthesised pipeline as an argument, and `|` to pass a value on as the last argument.
//! What Go prints: strings as they are, numbers and booleans as text, objects and arrays
//! as `map[k:v]`/`[a b]`, and `<no value>` for a key the document lacks.

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
    render_with(template, document, false)
}

/// Renders `template` over a row of a listing, whose keys are fixed: a field it lacks is
/// an error naming the field, as docker's listings (Go structs) make it.
pub fn render_row(template: &str, row: &Value) -> Result<String, TemplateError> {
    render_with(template, row, true)
}

fn render_with(template: &str, document: &Value, strict: bool) -> Result<String, TemplateError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| error(format!("unclosed action in {template:?}")))?;
        let action = after[..end].trim_matches(|c: char| c == '-' || c.is_whitespace());
        let value = Parser::new(action, strict).pipeline_to_end(document)?;
        out.push_str(&go_text(&value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
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

/// A tiny recursive-descent reader of one action.
struct Parser<'a> {
    text: &'a str,
    at: usize,
    /// A missing field is an error rather than `<no value>`.
    strict: bool,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, strict: bool) -> Self {
        Parser {
            text,
            at: 0,
            strict,
        }
    }

    fn pipeline_to_end(mut self, document: &Value) -> Result<Value, TemplateError> {
        let value = self.pipeline(document)?;
        self.skip_space();
        match self.peek() {
            None => Ok(value),
            Some(c) => Err(error(format!("unexpected {c:?} in {{{{{}}}}}", self.text))),
        }
    }

    /// `command ('|' command)*`: each later command gets the value as its last argument.
    fn pipeline(&mut self, document: &Value) -> Result<Value, TemplateError> {
        let mut value = self.command(document, None)?;
        loop {
            self.skip_space();
            if self.peek() != Some('|') {
                return Ok(value);
            }
            self.at += 1;
            value = self.command(document, Some(value))?;
        }
    }

    /// A function call (`json ARG`, `index ARG KEY…`) or a single operand.
    fn command(&mut self, document: &Value, piped: Option<Value>) -> Result<Value, TemplateError> {
        self.skip_space();
        let word = self.word();
        match word {
            "json" | "index" => {
                let mut args = Vec::new();
                while let Some(arg) = self.operand(document)? {
                    args.push(arg);
                }
                args.extend(piped);
                call(word, args)
            }
            "" => {
                let value = self
                    .operand(document)?
                    .ok_or_else(|| error(format!("missing value in {{{{{}}}}}", self.text)))?;
                match piped {
                    Some(_) => Err(error("only a function can take a piped value")),
                    None => Ok(value),
                }
            }
            other => Err(error(format!(
                "function {other:?} not defined (kiln has json and index)"
            ))),
        }
    }

    /// `.Path`, `"string"`, a number or `( pipeline )`; `None` at the end of the command.
    fn operand(&mut self, document: &Value) -> Result<Option<Value>, TemplateError> {
        self.skip_space();
        match self.peek() {
            Some('.') => self.field_path(document).map(Some),
            Some('"') => self.string().map(|s| Some(Value::String(s))),
            Some('(') => {
                self.at += 1;
                let value = self.pipeline(document)?;
                self.skip_space();
                if self.peek() != Some(')') {
                    return Err(error(format!("unclosed ( in {{{{{}}}}}", self.text)));
                }
                self.at += 1;
                Ok(Some(value))
            }
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let word = self.word_with(|c| c.is_ascii_digit() || c == '-');
                let n: i64 = word
                    .parse()
                    .map_err(|_| error(format!("bad number {word:?}")))?;
                Ok(Some(Value::from(n)))
            }
            _ => Ok(None),
        }
    }

    /// `.A.B.C` over `document`: `Null` where a key is missing (an error when strict).
    fn field_path(&mut self, document: &Value) -> Result<Value, TemplateError> {
        let path = self.word_with(|c| c == '.' || c == '_' || c.is_alphanumeric());
        let mut value = document;
        for key in path.split('.').filter(|k| !k.is_empty()) {
            value = match value.get(key) {
                Some(found) => found,
                None if self.strict => return Err(unknown_field(key, value)),
                None => &Value::Null,
            };
        }
        Ok(value.clone())
    }

    fn string(&mut self) -> Result<String, TemplateError> {
        self.at += 1;
        let rest = &self.text[self.at..];
        let end = rest
            .find('"')
            .ok_or_else(|| error(format!("unterminated string in {{{{{}}}}}", self.text)))?;
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

fn call(function: &str, args: Vec<Value>) -> Result<Value, TemplateError> {
    let mut args = args.into_iter();
    let first = args
        .next()
        .ok_or_else(|| error(format!("{function} needs an argument")))?;
    match function {
        "json" => Ok(Value::String(
            serde_json::to_string(&first).expect("JSON values serialise"),
        )),
        _ => args.try_fold(first, |value, key| match (&value, &key) {
            (Value::Object(map), Value::String(k)) => {
                Ok(map.get(k).cloned().unwrap_or(Value::Null))
            }
            (Value::Array(items), Value::Number(n)) => {
                let i = n.as_u64().and_then(|i| usize::try_from(i).ok());
                i.and_then(|i| items.get(i).cloned())
                    .ok_or_else(|| error(format!("index out of range: {n}")))
            }
            (Value::Null, _) => Ok(Value::Null),
            _ => Err(error(format!("cannot index {} with {key}", kind(&value)))),
        }),
    }
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
        assert!(render("{{upper .Id}}", &d)
            .unwrap_err()
            .0
            .contains("\"upper\" not defined"));
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
