//! The JSON Schema (draft-07) of `kiln.yaml`, for editors (the YAML language server) and
//! CI; `kiln schema` prints it and `specs/kiln.schema.json` is its checked-in copy.
//!
//! Why it is generated here rather than written by hand: every object of the schema takes
//! its property names from the key tables the parser itself checks mappings against
//! (`TOP_KEYS`, `STEP_KEYS`, `CONFIG_KEYS`, …), and the numeric ranges and name lists from
//! the parser's constants, so the two cannot drift. A key added to a table without a
//! description here makes [`json_schema`] panic, which the tests below (and the test that
//! compares `kiln schema` with the checked-in file) turn into a failure.
//!
//! The schema describes the shape of a spec, not everything the parser checks: what needs
//! the rest of the spec or the machine (undefined `${NAME}`s, stage order, the CPUs this
//! machine has, a swap limit below the memory) is left to `kiln build`. It never rejects a
//! spec the parser accepts: a string holding `${` passes every pattern, since its value is
//! only known once substituted.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::knobs::{IPC_SYSCTLS, ULIMIT_NAMES};
use super::limits::{BLKIO_WEIGHT, CPU_SHARES, CPU_WEIGHT, LIMIT_KEYS, THROTTLE_KEYS};
use super::names::{CAPABILITIES, SIGNALS};
use super::sections::{
    run_keys, CAPABILITY_KEYS, CONFIG_KEYS, HEALTHCHECK_KEYS, MOUNT_KEYS, PORT_KEYS, ULIMIT_KEYS,
};
use super::stages::{MAX_STAGE_NAME, STAGE_KEYS};
use super::steps::{COPY_MODIFIERS, KINDS, RUN_MODIFIERS, SECRET_KEYS};
use super::top::TOP_KEYS;
use super::units::{MIN_MEMORY, MIN_RATE};

/// The schema's `$id`: a name for it, not a place it is downloaded from.
pub const SCHEMA_ID: &str = "https://kiln.dev/schemas/kiln.schema.json";

/// A JSON value whose objects keep the order they were built in, so the schema reads in
/// the spec reference's order and prints the same bytes every time.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The value under `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value at a path of object keys.
    pub fn at(&self, path: &[&str]) -> Option<&Json> {
        path.iter().try_fold(self, |value, key| value.get(key))
    }

    /// The keys of an object, in order; empty for anything else.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Json::Object(entries) => entries.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Int(n) => serializer.serialize_i64(*n),
            Json::Float(x) => serializer.serialize_f64(*x),
            Json::Str(s) => serializer.serialize_str(s),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_owned())
    }
}

impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}

impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}

impl From<i64> for Json {
    fn from(n: i64) -> Json {
        Json::Int(n)
    }
}

impl From<u64> for Json {
    fn from(n: u64) -> Json {
        Json::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

/// The JSON Schema of `kiln.yaml`.
pub fn json_schema() -> Json {
    let mut root = vec![
        ("$schema", "http://json-schema.org/draft-07/schema#".into()),
        ("$id", SCHEMA_ID.into()),
        ("title", "kiln.yaml".into()),
        (
            "description",
            "A kiln spec: the image kiln builds (a base, build steps, its config) and the \
             defaults of kiln run. Reference: specs/spec.md."
                .into(),
        ),
        ("type", "object".into()),
        ("additionalProperties", false.into()),
        ("properties", properties(&TOP_KEYS, top_key)),
        // `from:` is required unless the spec has `stages:`, which replaces `from:` and
        // `steps:`.
        ("anyOf", array([requires(&["from"]), requires(&["stages"])])),
        (
            "dependencies",
            obj([(
                "stages",
                obj([(
                    "not",
                    obj([("anyOf", array([requires(&["from"]), requires(&["steps"])]))]),
                )]),
            )]),
        ),
    ];
    root.push(("definitions", definitions()));
    obj(root)
}

/// Builds an object from `(key, value)` pairs.
fn obj<'k>(entries: impl IntoIterator<Item = (&'k str, Json)>) -> Json {
    Json::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn array(items: impl IntoIterator<Item = Json>) -> Json {
    Json::Array(items.into_iter().collect())
}

fn strings(items: &[&str]) -> Json {
    array(items.iter().map(|s| Json::from(*s)))
}

fn requires(keys: &[&str]) -> Json {
    obj([("required", strings(keys))])
}

/// `"type"`: one name, or a list of them.
fn types(names: &[&str]) -> Json {
    match names {
        [one] => (*one).into(),
        many => strings(many),
    }
}

/// `$ref` to one of [`definitions`].
fn reference(name: &str) -> Json {
    obj([("$ref", format!("#/definitions/{name}").into())])
}

/// `schema` with a `description` first.
fn described(description: &str, schema: Json) -> Json {
    let Json::Object(entries) = schema else {
        unreachable!("a property's schema is an object")
    };
    let mut out = vec![("description".to_owned(), Json::from(description))];
    out.extend(entries);
    Json::Object(out)
}

/// The `properties` of an object whose keys are the parser's table `keys`: every key gets
/// the description and schema `describe` gives it.
fn properties(keys: &[&str], describe: fn(&str) -> Option<(&'static str, Json)>) -> Json {
    Json::Object(
        keys.iter()
            .map(|key| {
                let (description, schema) = describe(key).unwrap_or_else(|| {
                    panic!("schema.rs does not describe the key \"{key}\": add it there")
                });
                ((*key).to_owned(), described(description, schema))
            })
            .collect(),
    )
}

/// An object with exactly the keys of `keys` (the parser rejects any other).
fn closed(
    keys: &[&str],
    describe: fn(&str) -> Option<(&'static str, Json)>,
    nullable: bool,
    rest: Vec<(&str, Json)>,
) -> Json {
    let kind = if nullable {
        types(&["object", "null"])
    } else {
        "object".into()
    };
    let mut entries = vec![
        ("type", kind),
        ("additionalProperties", false.into()),
        ("properties", properties(keys, describe)),
    ];
    entries.extend(rest);
    obj(entries)
}

// ---- Value languages -------------------------------------------------------------------

/// Where the parser wants a string it takes a number or a boolean as written.
const TEXT: [&str; 3] = ["string", "number", "boolean"];
/// A decimal number as the size, duration and rate parsers read it.
const NUMBER: &str = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+";
/// A `${` anywhere: the value is only known once substituted, so no pattern applies.
const VARIABLE: &str = r"\$\{";

/// `pattern` matching all of a string, or any string with a `${NAME}` reference.
fn whole(pattern: &str) -> Json {
    format!("^(?:{pattern})$|{VARIABLE}").into()
}

/// `word` in any case: `[nN][oO]…`, as the parser's case-insensitive names need (JSON
/// Schema's regular expressions have no flags).
fn any_case(word: &str) -> String {
    word.chars()
        .map(|c| match c {
            c if c.is_ascii_alphabetic() => {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            }
            '+' | '.' => format!("\\{c}"),
            c => c.to_string(),
        })
        .collect()
}

fn any_case_of(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| any_case(w))
        .collect::<Vec<_>>()
        .join("|")
}

fn text() -> Json {
    obj([("type", types(&TEXT))])
}

fn non_empty_text() -> Json {
    obj([("type", types(&TEXT)), ("minLength", 1i64.into())])
}

fn text_matching(pattern: &str) -> Json {
    obj([("type", types(&TEXT)), ("pattern", whole(pattern))])
}

fn boolean() -> Json {
    obj([("type", "boolean".into())])
}

fn integer(min: u64, max: Option<u64>) -> Json {
    let mut entries = vec![("type", "integer".into()), ("minimum", min.into())];
    if let Some(max) = max {
        entries.push(("maximum", max.into()));
    }
    obj(entries)
}

fn range(range: (u64, u64)) -> Json {
    integer(range.0, Some(range.1))
}

/// One of `words` (or a `${NAME}`).
fn word(words: &[&str]) -> Json {
    obj([
        ("type", "string".into()),
        (
            "anyOf",
            array([
                obj([("enum", strings(words))]),
                obj([("pattern", VARIABLE.into())]),
            ]),
        ),
    ])
}

/// A string or a list of strings (`run:`, `copy:`, `entrypoint:`, `env_file:`).
fn text_or_texts(item: Json, min_items: i64) -> Json {
    obj([(
        "oneOf",
        array([
            item.clone(),
            obj([
                ("type", "array".into()),
                ("minItems", min_items.into()),
                ("items", item),
            ]),
        ]),
    )])
}

/// A mapping of names to scalars (`labels:`), possibly empty.
fn mapping(values: Json) -> Json {
    obj([
        ("type", types(&["object", "null"])),
        ("additionalProperties", values),
    ])
}

/// A mapping whose names match `names` (`args:`, `contexts:`, `ulimits:`, …).
fn named_mapping(names: Json, values: Json) -> Json {
    obj([
        ("type", types(&["object", "null"])),
        ("propertyNames", obj([("pattern", names)])),
        ("additionalProperties", values),
    ])
}

/// `env:`-style: variable names (no `=`, whitespace or NUL) to scalar values.
fn env() -> Json {
    named_mapping("^[^=\\s\u{0}]+$".into(), text())
}

/// Bytes: a YAML integer, or a number with a unit of 1024s (`64m`, `64Mi`, `1.5GiB`).
fn size(min_bytes: u64) -> Json {
    let pattern = format!(r"\s*(?:{NUMBER})(?:[bB]|[kKmMgGtT](?:[bB]|[iI][bB]?)?)?\s*");
    obj([
        ("type", types(&["integer", "string"])),
        ("minimum", min_bytes.into()),
        ("pattern", whole(&pattern)),
    ])
}

/// `30s`, `1m30s`, `500ms`: Go's durations; a bare number has no unit and is an error.
fn duration() -> Json {
    let pattern = format!(r"\s*(?:(?:{NUMBER})(?:ns|us|µs|ms|s|m|h))+\s*");
    obj([("type", "string".into()), ("pattern", whole(&pattern))])
}

/// tc's rates: bits per second (`8mbit`, a bare number) or bytes (`1mbps`).
fn rate() -> Json {
    let pattern = format!(
        r"\s*(?:{NUMBER})(?:(?:[kKmMgGtT][iI]?)?(?:{}|{}))?\s*",
        any_case("bit"),
        any_case("bps")
    );
    obj([
        ("type", types(&["number", "string"])),
        ("minimum", MIN_RATE.into()),
        ("pattern", whole(&pattern)),
    ])
}

/// A file mode: a quoted octal string (`"0755"`, `"0o755"`) up to `7777`.
fn mode() -> Json {
    obj([
        ("type", types(&["integer", "string"])),
        ("minimum", 0i64.into()),
        ("maximum", 0o7777i64.into()),
        ("pattern", whole("(?:0o)?0*[0-7]{1,4}")),
    ])
}

/// `NAME`, `UID`, `NAME:GROUP` or `UID:GID`.
fn user() -> Json {
    let part = "[0-9]+|[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}";
    obj([
        ("type", types(&TEXT)),
        ("minimum", 0i64.into()),
        ("maximum", u64::from(u32::MAX).into()),
        ("pattern", whole(&format!("(?:{part})(?::(?:{part}))?"))),
    ])
}

/// An absolute path inside the container.
fn container_path() -> Json {
    obj([
        ("type", "string".into()),
        ("pattern", format!("^/|{VARIABLE}").into()),
    ])
}

/// An absolute path inside the container that becomes a mount point: no `..`.
fn mount_point() -> Json {
    obj([
        ("type", "string".into()),
        (
            "pattern",
            format!(r"^/(?!(?:.*/)?\.\.(?:/|$))|{VARIABLE}").into(),
        ),
    ])
}

fn mount_points() -> Json {
    obj([("type", "array".into()), ("items", mount_point())])
}

/// A `shell:`: the program and its options, the script appended as the last argument.
fn shell() -> Json {
    obj([
        ("type", "array".into()),
        ("minItems", 1i64.into()),
        ("items", array([non_empty_text()])),
        ("additionalItems", text()),
    ])
}

fn network() -> Json {
    word(&["bridge", "host", "none"])
}

/// `8080`, `8080/tcp`, `53/udp`, `9/sctp`.
fn port() -> Json {
    let protocols = any_case_of(&["tcp", "udp", "sctp"]);
    obj([
        ("type", types(&["integer", "string"])),
        ("minimum", 1i64.into()),
        ("maximum", 65535i64.into()),
        ("pattern", whole(&format!("[0-9]+(?:/(?:{protocols}))?"))),
    ])
}

/// `SIGTERM`, `TERM`, `15`, `SIGRTMIN+3`, `RTMAX-1`, in any case.
fn signal() -> Json {
    let names = any_case_of(&SIGNALS);
    let pattern = format!(
        r"\s*(?:{})?(?:{names}|{}(?:\+[0-9]+)?|{}(?:-[0-9]+)?|[0-9]+)\s*",
        any_case("SIG"),
        any_case("RTMIN"),
        any_case("RTMAX"),
    );
    obj([
        ("type", types(&["integer", "string"])),
        ("minimum", 1i64.into()),
        ("maximum", 64i64.into()),
        ("pattern", whole(&pattern)),
    ])
}

/// A Linux capability name, any case, with or without `CAP_`; `ALL` is every one. The
/// `enum` offers the canonical names to an editor; the pattern takes every spelling.
fn capability() -> Json {
    let mut names = vec!["ALL"];
    names.extend(CAPABILITIES);
    let pattern = format!(
        r"\s*(?:{})?(?:{})\s*",
        any_case("CAP_"),
        any_case_of(&names)
    );
    obj([
        ("type", "string".into()),
        (
            "anyOf",
            array([
                obj([("enum", strings(&names))]),
                obj([("pattern", whole(&pattern))]),
            ]),
        ),
    ])
}

fn capabilities() -> Json {
    closed(
        &CAPABILITY_KEYS,
        |key| {
            let list = obj([("type", "array".into()), ("items", reference("capability"))]);
            match key {
                "add" => Some(("capabilities to add to Docker's default set", list)),
                "drop" => Some(("capabilities to drop (ALL: every one)", list)),
                _ => None,
            }
        },
        false,
        Vec::new(),
    )
}

/// A list like `0-1,3` (CPUs or memory nodes).
fn id_list() -> Json {
    let item = "[0-9]+(?:-[0-9]+)?";
    obj([
        ("type", types(&["integer", "string"])),
        ("minimum", 0i64.into()),
        ("pattern", whole(&format!("{item}(?:,{item})*"))),
    ])
}

/// `device_read_bps:` … : `{path, rate}` mappings or `PATH:RATE` strings.
fn device_throttles(bytes: bool) -> Json {
    let describe: fn(&str) -> Option<(&'static str, Json)> = if bytes {
        |key| throttle_key(key, true)
    } else {
        |key| throttle_key(key, false)
    };
    let mapping = closed(
        &THROTTLE_KEYS,
        describe,
        false,
        vec![("required", strings(&THROTTLE_KEYS))],
    );
    obj([
        ("type", "array".into()),
        (
            "items",
            obj([(
                "oneOf",
                array([
                    obj([
                        ("type", "string".into()),
                        ("pattern", whole("/dev/[^:]+:[^:]+")),
                    ]),
                    mapping,
                ]),
            )]),
        ),
    ])
}

fn throttle_key(key: &str, bytes: bool) -> Option<(&'static str, Json)> {
    match key {
        "path" => Some((
            "a host block device under /dev/",
            obj([("type", "string".into()), ("pattern", whole("/dev/.+"))]),
        )),
        "rate" if bytes => Some(("bytes per second, a size (1mb)", size(1))),
        "rate" => Some((
            "operations per second, at least 1",
            obj([
                ("type", types(&["integer", "string"])),
                ("minimum", 1i64.into()),
                ("pattern", whole(r"\s*[0-9]+\s*")),
            ]),
        )),
        _ => None,
    }
}

/// A ulimit: a number, `-1`/`unlimited` (no limit) or `SOFT:HARD`.
fn ulimit_value() -> Json {
    let limit = r"\s*(?:-1|unlimited|infinity|[0-9]+)\s*";
    obj([
        ("type", types(&["integer", "string"])),
        ("minimum", (-1i64).into()),
        ("pattern", whole(&format!("{limit}(?::{limit})?"))),
    ])
}

fn ulimits() -> Json {
    let names = format!(r"^\s*(?:{})\s*$", any_case_of(&ULIMIT_NAMES));
    let pair = closed(
        &ULIMIT_KEYS,
        |key| {
            let one = obj([
                ("type", types(&["integer", "string"])),
                ("minimum", (-1i64).into()),
                ("pattern", whole(r"\s*(?:-1|unlimited|infinity|[0-9]+)\s*")),
            ]);
            match key {
                "soft" => Some(("the soft limit (at most the hard one)", one)),
                "hard" => Some(("the hard limit", one)),
                _ => None,
            }
        },
        false,
        vec![("required", strings(&ULIMIT_KEYS))],
    );
    named_mapping(
        names.into(),
        obj([("oneOf", array([ulimit_value(), pair]))]),
    )
}

/// The sysctls of a container's own namespaces.
fn sysctls() -> Json {
    let word = "[A-Za-z0-9_-]+";
    let ipc: Vec<String> = IPC_SYSCTLS.iter().map(|s| s.replace('.', r"\.")).collect();
    let names = format!(
        r"^\s*(?:{}|kernel\.domainname|(?:fs\.mqueue|net)(?:\.{word})+)\s*$",
        ipc.join("|")
    );
    named_mapping(names.into(), non_empty_text())
}

fn restart() -> Json {
    obj([(
        "anyOf",
        array([
            obj([(
                "enum",
                array([
                    "no".into(),
                    "on-failure".into(),
                    "always".into(),
                    "unless-stopped".into(),
                    false.into(),
                ]),
            )]),
            obj([
                ("type", "string".into()),
                ("pattern", whole("on-failure:[0-9]+")),
            ]),
        ]),
    )])
}

fn ports() -> Json {
    let long = closed(
        &PORT_KEYS,
        |key| match key {
            "target" => Some((
                "the container's port (or range)",
                obj([
                    ("type", types(&["integer", "string"])),
                    ("minimum", 1i64.into()),
                    ("maximum", 65535i64.into()),
                ]),
            )),
            "published" => Some((
                "the host's port (or range); a free one when left out",
                obj([("type", types(&["integer", "string"]))]),
            )),
            "host_ip" => Some((
                "the host address to publish on; every address when left out",
                obj([("type", "string".into())]),
            )),
            "protocol" => Some((
                "tcp (the default), udp or sctp",
                obj([
                    ("type", "string".into()),
                    ("pattern", whole(&any_case_of(&["tcp", "udp", "sctp"]))),
                ]),
            )),
            _ => None,
        },
        false,
        vec![("required", strings(&["target"]))],
    );
    let short = obj([
        ("type", types(&["integer", "string"])),
        ("minimum", 1i64.into()),
        ("maximum", 65535i64.into()),
    ]);
    obj([
        ("type", "array".into()),
        ("items", obj([("oneOf", array([short, long]))])),
    ])
}

fn mounts() -> Json {
    let mount = closed(
        &MOUNT_KEYS,
        |key| match key {
            "source" => Some((
                "a host path, relative to the spec's folder",
                non_empty_text(),
            )),
            "target" => Some(("an absolute path in the container", mount_point())),
            "readonly" => Some(("mount it read-only (default false)", boolean())),
            _ => None,
        },
        false,
        vec![("required", strings(&["source", "target"]))],
    );
    obj([("type", "array".into()), ("items", mount)])
}

fn healthcheck() -> Json {
    closed(
        &HEALTHCHECK_KEYS,
        |key| match key {
            "test" => Some((
                "[CMD, prog, args...], [CMD-SHELL, script], [NONE], or a string meaning \
                 [CMD-SHELL, STRING]",
                text_or_texts(text(), 1),
            )),
            "interval" => Some((
                "time between probes, e.g. 30s (30s when unset or 0)",
                duration(),
            )),
            "timeout" => Some(("a probe running longer fails, e.g. 5s (30s)", duration())),
            "start_period" => Some((
                "failures in this time after the start do not count until a first success",
                duration(),
            )),
            "retries" => Some((
                "failures in a row that make the container unhealthy (3)",
                integer(0, Some(u64::from(u32::MAX))),
            )),
            _ => None,
        },
        false,
        vec![("required", strings(&["test"]))],
    )
}

// ---- Sections --------------------------------------------------------------------------

fn top_key(key: &str) -> Option<(&'static str, Json)> {
    Some(match key {
        "image" => (
            "default tag for kiln build (-t overrides), e.g. hello:latest",
            text_matching(r"\S+"),
        ),
        "from" => (
            "the base: scratch, an image reference, oci:PATH[:TAG] or rootfs:PATH; required \
             without stages",
            non_empty_text(),
        ),
        "args" => (
            "build arguments, name → default (none: --arg NAME=VALUE must give it)",
            named_mapping(
                "^[A-Za-z_][A-Za-z0-9_]*$".into(),
                obj([("type", types(&["string", "number", "boolean", "null"]))]),
            ),
        ),
        "contexts" => (
            "extra named build contexts for copy … from:, name → host folder",
            named_mapping("^[A-Za-z0-9_.-]+$".into(), non_empty_text()),
        ),
        "env" => ("environment of every step and of the image", env()),
        "shell" => (
            "the shell of every string run: step (default [/bin/sh, -e, -c])",
            shell(),
        ),
        "stages" => (
            "a multi-stage build, stage name → stage, instead of from: and steps:; the last \
             stage is the image",
            obj([
                ("type", "object".into()),
                ("minProperties", 1i64.into()),
                (
                    "propertyNames",
                    obj([
                        (
                            "pattern",
                            format!("^[a-z0-9][a-z0-9_.-]{{0,{}}}$", MAX_STAGE_NAME - 1).into(),
                        ),
                        ("not", obj([("const", "scratch".into())])),
                    ]),
                ),
                (
                    "additionalProperties",
                    closed(
                        &STAGE_KEYS,
                        stage_key,
                        false,
                        vec![("required", strings(&["from"]))],
                    ),
                ),
            ]),
        ),
        "steps" => ("build steps, in order", steps()),
        "config" => (
            "the OCI image config of the final image",
            closed(&CONFIG_KEYS, config_key, true, Vec::new()),
        ),
        "run" => (
            "defaults for kiln run (its flags override them)",
            closed(&run_keys(), run_key, true, one_cpu_weight()),
        ),
        _ => return None,
    })
}

fn stage_key(key: &str) -> Option<(&'static str, Json)> {
    Some(match key {
        "from" => (
            "a base as for the top-level from:, or the name of an earlier stage",
            non_empty_text(),
        ),
        "steps" => ("this stage's build steps, in order", steps()),
        "env" => ("environment of this stage, after the top-level env", env()),
        "shell" => ("the shell of this stage's string run: steps", shell()),
        _ => return None,
    })
}

fn steps() -> Json {
    obj([
        ("type", types(&["array", "null"])),
        ("items", reference("step")),
    ])
}

fn config_key(key: &str) -> Option<(&'static str, Json)> {
    Some(match key {
        "entrypoint" => (
            "a list is executed as is; a string becomes [/bin/sh, -c, STRING]",
            text_or_texts(text(), 0),
        ),
        "cmd" => ("same forms as entrypoint", text_or_texts(text(), 0)),
        "env" => ("more image environment", env()),
        "user" => ("NAME, UID, NAME:GROUP or UID:GID", user()),
        "workdir" => ("the working directory, an absolute path", container_path()),
        "expose" => (
            "ports: 8080, 8080/tcp, 53/udp, 9/sctp",
            obj([("type", "array".into()), ("items", port())]),
        ),
        "labels" => ("image labels, name → value", mapping(text())),
        "volumes" => ("volumes, absolute paths", mount_points()),
        "stop_signal" => ("SIGTERM, TERM, term, 15, SIGRTMIN+3, RTMAX-1", signal()),
        "healthcheck" => ("how kiln run probes the container's health", healthcheck()),
        _ => return None,
    })
}

/// `cpu_shares` and `cpu_weight` are one control in two scales: not both.
fn one_cpu_weight() -> Vec<(&'static str, Json)> {
    vec![("not", requires(&["cpu_shares", "cpu_weight"]))]
}

/// The cgroup controls of `run:` and of a run step's `resources:`.
fn limit_key(key: &str) -> Option<(&'static str, Json)> {
    Some(match key {
        "memory" => (
            "memory limit, a size (64m = 64Mi = 64MiB; units are powers of 1024), at least 6m",
            size(MIN_MEMORY),
        ),
        "cpus" => (
            "CPUs, from 0.01 up to the machine's (0.5)",
            obj([("type", "number".into()), ("minimum", Json::Float(0.01))]),
        ),
        "pids" => ("process limit (2048)", integer(1, None)),
        "memory_reservation" => (
            "soft memory limit, a size of at least 6m and at most memory",
            size(MIN_MEMORY),
        ),
        "memory_swap" => (
            "memory plus swap, a size of at least memory; -1: unlimited swap",
            obj([
                ("type", types(&["number", "string"])),
                ("minimum", (-1i64).into()),
                (
                    "pattern",
                    whole(&format!(
                        r"\s*-1\s*|\s*(?:{NUMBER})(?:[bB]|[kKmMgGtT](?:[bB]|[iI][bB]?)?)?\s*"
                    )),
                ),
            ]),
        ),
        "cpu_shares" => (
            "relative CPU weight on cgroup v1's scale (1024); not with cpu_weight",
            range(CPU_SHARES),
        ),
        "cpu_weight" => (
            "relative CPU weight on cgroup v2's scale (100); not with cpu_shares",
            range(CPU_WEIGHT),
        ),
        "cpuset_cpus" => ("the CPUs it may run on, e.g. 0-1,3", id_list()),
        "cpuset_mems" => ("the memory nodes it may use, e.g. 0", id_list()),
        "blkio_weight" => ("relative block I/O weight", range(BLKIO_WEIGHT)),
        "device_read_bps" => (
            "bytes per second read from a host block device: {path, rate} or PATH:RATE",
            device_throttles(true),
        ),
        "device_write_bps" => (
            "bytes per second written to a host block device: {path, rate} or PATH:RATE",
            device_throttles(true),
        ),
        "device_read_iops" => (
            "reads per second from a host block device: {path, rate} or PATH:RATE",
            device_throttles(false),
        ),
        "device_write_iops" => (
            "writes per second to a host block device: {path, rate} or PATH:RATE",
            device_throttles(false),
        ),
        _ => return None,
    })
}

fn run_key(key: &str) -> Option<(&'static str, Json)> {
    if let Some(limit) = limit_key(key) {
        return Some(limit);
    }
    Some(match key {
        "capabilities" => (
            "capabilities to add to and drop from Docker's default set",
            capabilities(),
        ),
        "privileged" => ("as kiln run --privileged (a grant)", boolean()),
        "read_only" => ("read-only root filesystem", boolean()),
        "network" => (
            "bridge (the default): kiln's bridge; none: only loopback; host: the host's \
             network (a grant)",
            network(),
        ),
        "hostname" => (
            "letters, digits, - and ., at most 64 characters",
            obj([
                ("type", types(&TEXT)),
                ("maxLength", 64i64.into()),
                (
                    "pattern",
                    whole(
                        r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
                    ),
                ),
            ]),
        ),
        "tmpfs" => ("tmpfs mounts, absolute paths", mount_points()),
        "mounts" => (
            "bind mounts: {source, target, readonly} (a grant)",
            mounts(),
        ),
        "env" => ("extra environment", env()),
        "user" => ("NAME, UID, NAME:GROUP or UID:GID", user()),
        "env_file" => (
            "files of NAME=VALUE lines, read by kiln build (relative to the spec's folder)",
            text_or_texts(non_empty_text(), 0),
        ),
        "extra_hosts" => (
            "/etc/hosts lines as NAME:IP",
            obj([
                ("type", "array".into()),
                ("items", text_matching(r"[^:=]+[:=].+")),
            ]),
        ),
        "ulimits" => (
            "process limits by docker's names: nofile: 1024, \"1024:4096\" or {soft, hard}; \
             -1 or unlimited for none",
            ulimits(),
        ),
        "shm_size" => ("size of /dev/shm (64m)", size(1)),
        "sysctls" => (
            "kernel parameters of the container's own namespaces (kernel.shm*, kernel.msg*, \
             kernel.sem, kernel.domainname, fs.mqueue.*, net.*)",
            sysctls(),
        ),
        "devices" => (
            "host devices as HOST[:CONTAINER[:PERMISSIONS]] (a grant)",
            obj([
                ("type", "array".into()),
                (
                    "items",
                    text_matching("/[^:]*(?::/dev/[^:]+)?(?::[rwm]{1,3})?"),
                ),
            ]),
        ),
        "init" => (
            "false runs the command as PID 1, without kiln's init (true)",
            boolean(),
        ),
        "restart" => (
            "no (the default), on-failure, on-failure:N, always or unless-stopped",
            restart(),
        ),
        "ports" => (
            "published ports: \"8080:80\", \"127.0.0.1:8080:80/tcp\", 80, or {target, \
             published, host_ip, protocol} (a grant)",
            ports(),
        ),
        "network_rate_in" => (
            "bandwidth into the container, tc's units: 8mbit (bits), 1mbps (bytes)",
            rate(),
        ),
        "network_rate_out" => (
            "bandwidth out of the container, tc's units: 8mbit (bits), 1mbps (bytes)",
            rate(),
        ),
        _ => return None,
    })
}

// ---- Steps ------------------------------------------------------------------------------

/// A step: one of the kinds, each an object that requires its kind key and allows only
/// its own modifiers, so a step with two kinds, or a modifier of another kind, matches
/// none.
fn definitions() -> Json {
    let variants: Vec<Json> = KINDS
        .iter()
        .map(|kind| reference(&format!("{kind}_step")))
        .collect();
    let mut entries = vec![
        (
            "step".to_owned(),
            obj([
                (
                    "description",
                    "a build step: exactly one of run, copy, env, workdir, user, with that \
                     kind's modifiers"
                        .into(),
                ),
                ("oneOf", Json::Array(variants)),
            ]),
        ),
        ("capability".to_owned(), capability()),
    ];
    for kind in KINDS {
        entries.push((format!("{kind}_step"), step(kind)));
    }
    Json::Object(entries)
}

/// The keys of a step of `kind`: the kind key, then its modifiers.
pub(crate) fn step_keys(kind: &str) -> Vec<&'static str> {
    let modifiers: &[&'static str] = match kind {
        "run" => &RUN_MODIFIERS,
        "copy" => &COPY_MODIFIERS,
        _ => &[],
    };
    KINDS
        .iter()
        .filter(|k| **k == kind)
        .chain(modifiers)
        .copied()
        .collect()
}

fn step(kind: &str) -> Json {
    let describe = match kind {
        "run" => run_step_key,
        "copy" => copy_step_key,
        _ => other_step_key,
    };
    let mut rest = vec![(
        "required",
        strings(if kind == "copy" {
            &["copy", "to"]
        } else {
            std::slice::from_ref(&kind)
        }),
    )];
    if kind == "run" {
        // A list run: is executed without a shell, so shell: makes no sense on it.
        rest.push((
            "if",
            obj([
                (
                    "properties",
                    obj([("run", obj([("type", "array".into())]))]),
                ),
                ("required", strings(&["run"])),
            ]),
        ));
        rest.push(("then", obj([("not", requires(&["shell"]))])));
    }
    closed(&step_keys(kind), describe, false, rest)
}

fn run_step_key(key: &str) -> Option<(&'static str, Json)> {
    Some(match key {
        "run" => (
            "a string is a shell script (run with the step's shell); a list is executed as is",
            obj([(
                "oneOf",
                array([
                    obj([("type", types(&TEXT)), ("pattern", r"\S".into())]),
                    obj([
                        ("type", "array".into()),
                        ("minItems", 1i64.into()),
                        ("items", text()),
                    ]),
                ]),
            )]),
        ),
        "shell" => (
            "the program the script is given to, as its last argument (only for a string run)",
            shell(),
        ),
        "network" => (
            "bridge (the default), none (only loopback) or host (a grant)",
            network(),
        ),
        "cache" => (
            "persistent cache directories mounted at these absolute paths",
            mount_points(),
        ),
        "secrets" => (
            "files present for this step only: {id, source | env, target}",
            obj([("type", "array".into()), ("items", secret())]),
        ),
        "capabilities" => (
            "capabilities to add to and drop from Docker's default set",
            capabilities(),
        ),
        "privileged" => (
            "every capability, no seccomp filter, setuid gains allowed",
            boolean(),
        ),
        "resources" => (
            "the step's cgroup limits, the keys of run: (memory, cpus, pids, …)",
            closed(&LIMIT_KEYS, limit_key, false, one_cpu_weight()),
        ),
        _ => return None,
    })
}

fn secret() -> Json {
    closed(
        &SECRET_KEYS,
        |key| {
            Some(match key {
                "id" => (
                    "the secret's name: letters, digits, _, . and -",
                    text_matching("[A-Za-z0-9_.-]+"),
                ),
                "source" => (
                    "a host file, relative to the spec's folder",
                    non_empty_text(),
                ),
                "env" => (
                    "a variable of kiln build's own environment",
                    text_matching("[^=\\s\u{0}]+"),
                ),
                "target" => (
                    "where it is in the container (/run/secrets/ID)",
                    mount_point(),
                ),
                _ => return None,
            })
        },
        false,
        vec![
            ("required", strings(&["id"])),
            ("oneOf", array([requires(&["source"]), requires(&["env"])])),
        ],
    )
}

fn copy_step_key(key: &str) -> Option<(&'static str, Json)> {
    Some(match key {
        "copy" => (
            "source paths in the build context, or in the stage named by from:",
            text_or_texts(non_empty_text(), 1),
        ),
        "from" => (
            "a name under contexts:, or an earlier stage (default: the spec's folder)",
            non_empty_text(),
        ),
        "to" => (
            "destination: absolute, or relative to the current workdir",
            non_empty_text(),
        ),
        "mode" => ("a quoted octal string, e.g. \"0755\"", mode()),
        "owner" => ("UID[:GID] or NAME[:GROUP] (default root)", user()),
        _ => return None,
    })
}

fn other_step_key(key: &str) -> Option<(&'static str, Json)> {
    Some(match key {
        "env" => ("variables for later steps and the image", env()),
        "workdir" => (
            "the working directory of later steps and the image, an absolute path",
            container_path(),
        ),
        "user" => (
            "the user of later steps and the image: NAME, UID, NAME:GROUP or UID:GID",
            user(),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::steps::STEP_KEYS;
    use super::*;

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        keys.sort();
        keys
    }

    /// The object at `path` (object keys, `[]` for a list's items, `|N` for the Nth
    /// alternative of a oneOf).
    fn object_at<'j>(schema: &'j Json, path: &str) -> &'j Json {
        let mut at = schema;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            at = match part {
                "[]" => at.get("items"),
                alternative if alternative.starts_with('|') => {
                    let n: usize = alternative[1..].parse().unwrap();
                    match at.get("oneOf") {
                        Some(Json::Array(items)) => items.get(n),
                        _ => None,
                    }
                }
                key => at.get(key),
            }
            .unwrap_or_else(|| panic!("no {part} in {path}"));
        }
        at
    }

    /// Every object the parser reads with a key table, and that table.
    fn objects() -> Vec<(&'static str, Vec<&'static str>)> {
        let mut objects = vec![
            ("", TOP_KEYS.to_vec()),
            (
                "properties.stages.additionalProperties",
                STAGE_KEYS.to_vec(),
            ),
            ("properties.config", CONFIG_KEYS.to_vec()),
            (
                "properties.config.properties.healthcheck",
                HEALTHCHECK_KEYS.to_vec(),
            ),
            ("properties.run", run_keys()),
            (
                "properties.run.properties.capabilities",
                CAPABILITY_KEYS.to_vec(),
            ),
            ("properties.run.properties.mounts.[]", MOUNT_KEYS.to_vec()),
            ("properties.run.properties.ports.[].|1", PORT_KEYS.to_vec()),
            (
                "properties.run.properties.ulimits.additionalProperties.|1",
                ULIMIT_KEYS.to_vec(),
            ),
            (
                "definitions.run_step.properties.resources",
                LIMIT_KEYS.to_vec(),
            ),
            (
                "definitions.run_step.properties.capabilities",
                CAPABILITY_KEYS.to_vec(),
            ),
            (
                "definitions.run_step.properties.secrets.[]",
                SECRET_KEYS.to_vec(),
            ),
        ];
        for kind in KINDS {
            objects.push(match kind {
                "run" => ("definitions.run_step", step_keys("run")),
                "copy" => ("definitions.copy_step", step_keys("copy")),
                "env" => ("definitions.env_step", step_keys("env")),
                "workdir" => ("definitions.workdir_step", step_keys("workdir")),
                _ => ("definitions.user_step", step_keys("user")),
            });
        }
        for key in ["device_read_bps", "device_write_iops"] {
            for section in [
                "properties.run",
                "definitions.run_step.properties.resources",
            ] {
                let path = format!("{section}.properties.{key}.[].|1");
                objects.push((Box::leak(path.into_boxed_str()), THROTTLE_KEYS.to_vec()));
            }
        }
        objects
    }

    #[test]
    fn every_object_has_exactly_the_keys_the_parser_allows() {
        let schema = json_schema();
        for (path, keys) in objects() {
            let object = object_at(&schema, path);
            let properties = object.get("properties").expect(path);
            assert_eq!(sorted(&properties.keys()), sorted(&keys), "{path}");
            assert_eq!(
                object.get("additionalProperties"),
                Some(&Json::Bool(false)),
                "{path}: the parser rejects unknown keys"
            );
        }
    }

    #[test]
    fn step_kinds_are_a_one_of_each_requiring_its_kind_and_together_all_step_keys() {
        let schema = json_schema();
        let Some(Json::Array(variants)) = schema.at(&["definitions", "step", "oneOf"]) else {
            panic!("step is not a oneOf");
        };
        assert_eq!(variants.len(), KINDS.len());
        let mut all = Vec::new();
        for kind in KINDS {
            let variant = object_at(&schema, &format!("definitions.{kind}_step"));
            let Some(Json::Array(required)) = variant.get("required") else {
                panic!("{kind} step requires nothing");
            };
            assert!(required.contains(&Json::from(kind)), "{kind}");
            let keys = variant.get("properties").unwrap().keys();
            // No other kind key is allowed on this kind's step.
            for other in KINDS.iter().filter(|k| **k != kind) {
                assert!(!keys.contains(other), "{kind} step allows {other}");
            }
            all.extend(keys);
        }
        all.dedup();
        let mut all = sorted(&all);
        all.dedup();
        assert_eq!(all, sorted(&STEP_KEYS));
    }

    #[test]
    fn every_property_has_a_short_description() {
        fn walk(value: &Json, path: &str) {
            match value {
                Json::Object(entries) => {
                    for (key, child) in entries {
                        // A condition's properties say what to match, not what a key is.
                        if key == "if" {
                            continue;
                        }
                        if key == "properties" {
                            for (name, property) in child.keys().iter().zip(match child {
                                Json::Object(props) => props.iter().map(|(_, p)| p),
                                _ => unreachable!(),
                            }) {
                                let description = match property.get("description") {
                                    Some(Json::Str(d)) => d,
                                    _ => panic!("{path}.{name} has no description"),
                                };
                                assert!(
                                    !description.is_empty() && description.len() <= 200,
                                    "{path}.{name}: {description}"
                                );
                            }
                        }
                        walk(child, &format!("{path}.{key}"));
                    }
                }
                Json::Array(items) => items.iter().for_each(|item| walk(item, path)),
                _ => {}
            }
        }
        walk(&json_schema(), "");
    }

    #[test]
    fn the_schema_is_draft_07_with_an_id_and_a_title() {
        let schema = json_schema();
        assert_eq!(
            schema.get("$schema"),
            Some(&Json::from("http://json-schema.org/draft-07/schema#"))
        );
        assert_eq!(schema.get("$id"), Some(&Json::from(SCHEMA_ID)));
        assert_eq!(schema.get("title"), Some(&Json::from("kiln.yaml")));
        // serde_json reads it back as the same document.
        let text = serde_json::to_string(&schema).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value["properties"]["steps"]["items"]["$ref"],
            "#/definitions/step"
        );
    }

    #[test]
    fn names_in_any_case_come_from_the_parsers_tables() {
        assert_eq!(any_case("nofile"), "[Nn][Oo][Ff][Ii][Ll][Ee]");
        assert_eq!(any_case("RTMIN+"), r"[Rr][Tt][Mm][Ii][Nn]\+");
        let schema = serde_json::to_string(&json_schema()).unwrap();
        for name in ["NET_BIND_SERVICE", "CHECKPOINT_RESTORE"] {
            assert!(schema.contains(&format!("\"{name}\"")), "{name}");
        }
        assert!(schema.contains(&any_case("sigpending")));
        assert!(schema.contains(&any_case("WINCH")));
    }
}
