//! The YAML layer: text → a tree of [`Node`]s that each know their line and column.
//!
//! We deliberately do not deserialize straight into typed structs: serde's own messages for
//! unknown fields and wrong types cannot carry our suggestions, and struct-level errors lose
//! the position of the offending key. Instead serde-saphyr builds a small position-aware tree
//! (with duplicate-key rejection, budgets and alias limits switched on) and the rest of the
//! module checks it by hand.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{budget::BudgetBreach, MessageFormatter, Spanned};

use super::error::{Issue, Result};
use super::model::Location;

/// Largest spec kiln reads; real specs are a few KiB, so anything near this is a mistake or
/// an attack.
pub(crate) const MAX_SPEC_BYTES: usize = 1024 * 1024;
/// Deepest nesting of lists and mappings; the deepest legitimate spec path is 5 levels.
const MAX_DEPTH: usize = 32;
/// Total nodes, counting every alias expansion; bounds "billion laughs" style inputs.
const MAX_NODES: usize = 100_000;
const MAX_ALIASES: usize = 1_000;
const MAX_REPLAYED_EVENTS: usize = 100_000;

/// One YAML value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub location: Location,
}

/// A YAML value. Non-string scalars keep their source spelling (`raw`) so that a value like
/// `VERSION: 1.10` can be used as the string "1.10" rather than the float's "1.1".
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool { value: bool, raw: String },
    Int { value: i128, raw: String },
    Float { value: f64, raw: String },
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// How this value is named in "expected X, found Y" messages.
    pub fn kind_name(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Bool { .. } => "a boolean",
            Value::Int { .. } => "an integer",
            Value::Float { .. } => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The text of a scalar as written (strings, numbers, booleans); `None` otherwise.
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            Value::Bool { raw, .. } | Value::Int { raw, .. } | Value::Float { raw, .. } => {
                Some(raw)
            }
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }
}

/// Parses `text` (already checked against [`MAX_SPEC_BYTES`]) into a tree.
pub(crate) fn parse_yaml(text: &str) -> Result<Node> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            flow_nesting_limit: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_aliases: MAX_ALIASES,
            max_anchors: MAX_ALIASES,
            max_documents: 1,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_REPLAYED_EVENTS,
        },
        // `yes`/`no`/`on`/`off` stay strings: the "Norway problem" has no place in a spec.
        strict_booleans: true,
        // `mode: 0755` stays "0755" so it can be read as octal rather than decimal 755.
        leading_zero_numbers_as_strings: true,
        reject_unsupported_tags: true,
        emit_comments: false,
        with_snippet: false,
    };
    let tree: Spanned<RawValue> =
        serde_saphyr::from_str_with_options(text, options).map_err(yaml_issue)?;
    Ok(into_node(tree, text))
}

/// Turns serde-saphyr's error into an issue at its location, in words a spec author knows.
fn yaml_issue(err: serde_saphyr::Error) -> Issue {
    let location = err.location().map(|at| Location {
        line: usize::try_from(at.line()).unwrap_or(usize::MAX),
        column: usize::try_from(at.column()).unwrap_or(usize::MAX),
    });
    let (message, hint) = match err.without_snippet() {
        serde_saphyr::Error::DuplicateMappingKey { key, .. } => (
            match key {
                Some(key) => format!("duplicate key \"{key}\""),
                None => "duplicate key".to_string(),
            },
            Some("each key may appear only once in a mapping".to_string()),
        ),
        serde_saphyr::Error::Budget {
            breach: BudgetBreach::Documents { .. },
            ..
        }
        | serde_saphyr::Error::MultipleDocuments { .. } => (
            "a spec holds a single YAML document".to_string(),
            Some("remove the `---` separator".to_string()),
        ),
        serde_saphyr::Error::Budget {
            breach: BudgetBreach::Depth { .. },
            ..
        } => (too_deep(), None),
        serde_saphyr::Error::Budget { .. }
        | serde_saphyr::Error::AliasReplayLimitExceeded { .. }
        | serde_saphyr::Error::AliasExpansionLimitExceeded { .. }
        | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. }
        | serde_saphyr::Error::AliasReplayCounterOverflow { .. } => (
            format!("the spec is too large: it expands to more than {MAX_NODES} values, counting aliases"),
            None,
        ),
        other => {
            let text = serde_saphyr::UserMessageFormatter.format_message(other);
            if text.contains("recursion limit") {
                (too_deep(), None)
            } else {
                // The formatter's text is not sanitised; keep control characters out of terminals.
                let clean: String = text
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                (format!("invalid YAML: {clean}"), None)
            }
        }
    };
    Issue {
        location: location.filter(|at| at.line > 0),
        message,
        hint,
        follow_on: false,
    }
}

fn too_deep() -> String {
    format!("the spec is nested too deeply (more than {MAX_DEPTH} levels)")
}

/// What serde-saphyr hands us before positions are attached to every node.
enum RawValue {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawValue>>),
    Map(Vec<(Spanned<RawValue>, Spanned<RawValue>)>),
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_none<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
        Ok(RawValue::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<RawValue, E> {
        Ok(RawValue::Int(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(RawValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(RawValue::Map(entries))
    }
}

/// Attaches positions and source spellings. Recursion depth is bounded by [`MAX_DEPTH`].
fn into_node(spanned: Spanned<RawValue>, text: &str) -> Node {
    let location = Location {
        line: usize::try_from(spanned.referenced.line()).unwrap_or(usize::MAX),
        column: usize::try_from(spanned.referenced.column()).unwrap_or(usize::MAX),
    };
    // For an alias (`*a`) the use site says `*a`; the spelling lives at the definition.
    let raw = |fallback: String| source_text(&spanned.defined, text).unwrap_or(fallback);
    let value = match spanned.value {
        RawValue::Null => Value::Null,
        RawValue::Bool(value) => Value::Bool {
            value,
            raw: raw(value.to_string()),
        },
        RawValue::Int(value) => Value::Int {
            value,
            raw: raw(value.to_string()),
        },
        RawValue::Float(value) => Value::Float {
            value,
            raw: raw(value.to_string()),
        },
        RawValue::Str(s) => Value::Str(s),
        RawValue::Seq(items) => Value::Seq(items.into_iter().map(|i| into_node(i, text)).collect()),
        RawValue::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (into_node(k, text), into_node(v, text)))
                .collect(),
        ),
    };
    Node { value, location }
}

fn source_text(at: &serde_saphyr::Location, text: &str) -> Option<String> {
    let span = at.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let raw = text.get(start..start.checked_add(len)?)?.trim();
    (!raw.is_empty()).then(|| raw.to_string())
}
