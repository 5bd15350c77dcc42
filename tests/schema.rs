//! `kiln schema` and `specs/kiln.schema.json`: the checked-in file is what the command
//! prints, and the schema agrees with kiln's own parser, checked with a real validator
//! (Debian's python3-jsonschema, draft-07, reading YAML with python3-yaml as kiln does):
//! it accepts every spec of the repository (examples/, the whole-spec ```yaml blocks of
//! README.md, specs/spec.md and docs/*.md, tests/schema/accept/) and rejects the broken
//! specs of tests/schema/reject/ and the bad values below, each of which kiln rejects too.
//! Root-free: nothing here touches a store or the kernel.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{require, text, Env};
use serde_json::{json, Value};

/// The command that brings the checked-in schema up to date.
const REGENERATE: &str = "cargo run -q -- schema > specs/kiln.schema.json";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn kiln_schema(env: &Env) -> Vec<u8> {
    let out = env.kiln(&["schema"]);
    assert!(out.status.success(), "{}", text(&out));
    out.stdout
}

#[test]
fn the_checked_in_schema_is_what_kiln_schema_prints() {
    let env = Env::unprivileged();
    let printed = kiln_schema(&env);
    let checked_in = std::fs::read(repo("specs/kiln.schema.json")).unwrap_or_default();
    assert!(
        printed == checked_in,
        "specs/kiln.schema.json is not what `kiln schema` prints: regenerate it with `{REGENERATE}`"
    );
    // -o writes the same bytes.
    let file = env.path("kiln.schema.json");
    let out = env.kiln(&["schema", "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&file).unwrap(), printed);
}

/// A spec to check, and kiln's verdict on it.
struct Case {
    name: String,
    text: String,
    /// `--arg` pairs it is built with (`# kiln build --arg K=V` on its first line).
    args: Vec<(String, String)>,
}

impl Case {
    fn new(name: impl Into<String>, text: impl Into<String>) -> Case {
        let text = text.into();
        let args = build_args(&text);
        Case {
            name: name.into(),
            text,
            args,
        }
    }

    /// kiln's own problems with the spec, `None` when it accepts it.
    fn kiln_problems(&self) -> Option<String> {
        let file = repo("tests/schema/kiln.yaml");
        kiln_spec::parse(&self.text, &file, &self.args)
            .err()
            .map(|e| e.to_string())
    }
}

/// `# kiln build --arg K=V ...` on a spec's first line, as tests/docs_examples.rs reads it.
fn build_args(text: &str) -> Vec<(String, String)> {
    let first = text.lines().next().unwrap_or_default();
    let Some(args) = first.strip_prefix("# kiln build") else {
        return Vec::new();
    };
    let words: Vec<&str> = args.split_whitespace().collect();
    words
        .windows(2)
        .filter(|pair| pair[0] == "--arg")
        .filter_map(|pair| pair[1].split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The schema's problems with each spec (none: it accepts it), from python3-jsonschema.
fn schema_problems(schema: &Value, cases: &[Case]) -> Vec<Vec<String>> {
    require("jsonschema", "python3-jsonschema");
    let python = "/usr/bin/python3";
    let modules = Command::new(python)
        .args(["-c", "import jsonschema, yaml"])
        .output();
    assert!(
        modules.is_ok_and(|out| out.status.success()),
        "Debian's Python modules are missing: install them with `apt-get install python3-jsonschema python3-yaml` (tests/run.sh does this)"
    );
    let request = json!({
        "schema": schema,
        "specs": cases.iter().map(|c| json!({"name": c.name, "text": c.text})).collect::<Vec<_>>(),
    });
    let mut child = Command::new(python)
        .arg(repo("tests/schema/validate.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let body = request.to_string();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(body.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "validate.py: {}", text(&out));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), cases.len());
    results
        .iter()
        .map(|r| {
            r["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

fn schema() -> Value {
    serde_json::from_slice(&std::fs::read(repo("specs/kiln.schema.json")).unwrap()).unwrap()
}

/// Every whole spec of the repository: the examples, the ```yaml blocks of the docs that
/// are not marked `# fragment`, and tests/schema/accept/.
fn repository_specs() -> Vec<Case> {
    let mut cases = Vec::new();
    for dir in ["examples"] {
        for entry in std::fs::read_dir(repo(dir)).unwrap() {
            let spec = entry.unwrap().path().join("kiln.yaml");
            if spec.exists() {
                let name = spec.strip_prefix(repo("")).unwrap().display().to_string();
                cases.push(Case::new(name, std::fs::read_to_string(&spec).unwrap()));
            }
        }
    }
    let mut docs = vec![repo("README.md"), repo("specs/spec.md")];
    docs.extend(files_in("docs", "md"));
    for doc in docs {
        let name = doc.strip_prefix(repo("")).unwrap().display().to_string();
        for (line, block) in yaml_blocks(&std::fs::read_to_string(&doc).unwrap()) {
            if !block.starts_with("# fragment") {
                cases.push(Case::new(format!("{name}:{line}"), block));
            }
        }
    }
    for file in files_in("tests/schema/accept", "yaml") {
        cases.push(data_case(&file));
    }
    cases
}

fn files_in(dir: &str, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

fn data_case(file: &Path) -> Case {
    let name = file.strip_prefix(repo("")).unwrap().display().to_string();
    Case::new(name, std::fs::read_to_string(file).unwrap())
}

/// The ```yaml blocks of a Markdown document, with the line of their opening fence.
fn yaml_blocks(doc: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (index, line) in doc.lines().enumerate() {
        match &mut open {
            None if line.trim_end() == "```yaml" => open = Some((index + 1, String::new())),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(open.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    blocks
}

#[test]
fn the_schema_accepts_every_spec_in_the_repository() {
    let cases = repository_specs();
    assert!(cases.len() >= 15, "found only {} specs", cases.len());
    let verdicts = schema_problems(&schema(), &cases);
    let mut failures = Vec::new();
    for (case, problems) in cases.iter().zip(verdicts) {
        if let Some(kiln) = case.kiln_problems() {
            failures.push(format!("{}: kiln rejects it: {kiln}", case.name));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: the schema rejects it:\n  {}",
                case.name,
                problems.join("\n  ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_schema_rejects_the_broken_specs_kiln_rejects() {
    let cases: Vec<Case> = files_in("tests/schema/reject", "yaml")
        .iter()
        .map(|f| data_case(f))
        .collect();
    assert!(cases.len() >= 10, "found only {} broken specs", cases.len());
    let verdicts = schema_problems(&schema(), &cases);
    let mut failures = Vec::new();
    for (case, problems) in cases.iter().zip(verdicts) {
        assert!(
            case.text.starts_with("# "),
            "{}: say on its first line what is wrong with it",
            case.name
        );
        if case.kiln_problems().is_none() {
            failures.push(format!("{}: kiln accepts it", case.name));
        }
        if problems.is_empty() {
            failures.push(format!("{}: the schema accepts it", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What both must say of a value: a valid one, a bad one, or one the schema lets through
/// and kiln refuses, since telling them apart needs more than a pattern (the value's
/// magnitude, the machine).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    Valid,
    Invalid,
    OnlyKilnRefuses,
}

use Verdict::{Invalid, OnlyKilnRefuses, Valid};

/// Specs that put one value in its place: `{}` in the template is the value.
fn value_cases() -> Vec<(&'static str, Vec<(&'static str, Verdict)>)> {
    vec![
        (
            "run: { shm_size: {} }",
            vec![
                ("64m", Valid),
                ("64Mi", Valid),
                ("64MiB", Valid),
                ("64mb", Valid),
                ("1.5g", Valid),
                ("2T", Valid),
                ("512", Valid),
                ("\"1024\"", Valid),
                ("\"${SIZE:-64m}\"", Valid),
                ("64X", Invalid),
                ("-1", Invalid),
                ("1.5.3m", Invalid),
                ("\"\"", Invalid),
                ("1.5", Invalid),
                ("64 m", Invalid),
                ("0", Invalid),
                ("\"0\"", OnlyKilnRefuses),
            ],
        ),
        (
            "run: { memory: {} }",
            vec![
                ("64m", Valid),
                ("6291456", Valid),
                ("1048576", Invalid),
                ("1m", OnlyKilnRefuses),
            ],
        ),
        (
            "run: { memory: 64m, memory_swap: {} }",
            vec![
                ("-1", Valid),
                ("128m", Valid),
                ("1g", Valid),
                ("lots", Invalid),
            ],
        ),
        (
            "config: { healthcheck: { test: [NONE], interval: {} } }",
            vec![
                ("30s", Valid),
                ("1m30s", Valid),
                ("500ms", Valid),
                ("1.5s", Valid),
                ("2h", Valid),
                ("10000us", Valid),
                ("30", Invalid),
                ("1.5", Invalid),
                ("30x", Invalid),
                ("\"\"", Invalid),
                ("s", Invalid),
                ("1s 2m", Invalid),
                ("10ns", OnlyKilnRefuses),
            ],
        ),
        (
            "run: { network_rate_out: {} }",
            vec![
                ("8mbit", Valid),
                ("8Mbit", Valid),
                ("1.5mbit", Valid),
                ("1gbit", Valid),
                ("1mibit", Valid),
                ("1mbps", Valid),
                ("2kibps", Valid),
                ("1000000", Valid),
                ("8000", Valid),
                ("8mb", Invalid),
                ("fast", Invalid),
                ("mbit", Invalid),
                ("1.2.3mbit", Invalid),
                ("7999", Invalid),
                ("\"7999\"", OnlyKilnRefuses),
            ],
        ),
        (
            "steps: [{ copy: a, to: /a, mode: {} }]",
            vec![
                ("\"0755\"", Valid),
                ("\"755\"", Valid),
                ("\"0o755\"", Valid),
                ("0755", Valid),
                ("0o755", Valid),
                ("7", Valid),
                ("\"7777\"", Valid),
                ("\"0800\"", Invalid),
                ("\"17777\"", Invalid),
                ("abc", Invalid),
                ("17777", Invalid),
                ("true", Invalid),
                ("755", OnlyKilnRefuses),
            ],
        ),
        (
            "config: { stop_signal: {} }",
            vec![
                ("SIGTERM", Valid),
                ("TERM", Valid),
                ("term", Valid),
                ("sigkill", Valid),
                ("15", Valid),
                ("\"9\"", Valid),
                ("SIGRTMIN+3", Valid),
                ("RTMAX-1", Valid),
                ("SIGFOO", Invalid),
                ("0", Invalid),
                ("65", Invalid),
                ("[TERM]", Invalid),
            ],
        ),
        (
            "run: { capabilities: { add: [{}] } }",
            vec![
                ("NET_ADMIN", Valid),
                ("cap_net_admin", Valid),
                ("CAP_NET_BIND_SERVICE", Valid),
                ("ALL", Valid),
                ("all", Valid),
                ("CAP_NET_BIND", Invalid),
                ("FOO", Invalid),
                ("1", Invalid),
            ],
        ),
        (
            "steps: [{ run: make, network: {} }]",
            vec![
                ("bridge", Valid),
                ("host", Valid),
                ("none", Valid),
                ("bridged", Invalid),
                ("Host", Invalid),
                ("true", Invalid),
            ],
        ),
        (
            "config: { user: {} }",
            vec![
                ("\"1000:1000\"", Valid),
                ("root", Valid),
                ("1000", Valid),
                ("www-data", Valid),
                ("app:app", Valid),
                ("-x", Invalid),
                ("a:b:c", Invalid),
                ("bad user", Invalid),
                ("-1", Invalid),
            ],
        ),
        (
            "config: { expose: [{}] }",
            vec![
                ("8080", Valid),
                ("8080/tcp", Valid),
                ("53/udp", Valid),
                ("9/SCTP", Valid),
                ("0", Invalid),
                ("65536", Invalid),
                ("80/icmp", Invalid),
                ("http", Invalid),
            ],
        ),
        (
            "run: { ports: [{}] }",
            vec![
                ("\"8080:80\"", Valid),
                ("\"127.0.0.1:8080:80/tcp\"", Valid),
                ("80", Valid),
                ("{ target: 80 }", Valid),
                (
                    "{ target: 53, published: \"5353\", host_ip: 127.0.0.1, protocol: udp }",
                    Valid,
                ),
                ("{ published: 80 }", Invalid),
                ("{ target: 80, proto: tcp }", Invalid),
                ("{ target: 80, protocol: icmp }", Invalid),
                ("0", Invalid),
            ],
        ),
        (
            "run: { ulimits: {} }",
            vec![
                ("{ nofile: 1024 }", Valid),
                ("{ nofile: \"1024:4096\" }", Valid),
                ("{ nofile: { soft: 1024, hard: 4096 } }", Valid),
                ("{ core: -1, NPROC: unlimited }", Valid),
                ("{ nofiles: 1 }", Invalid),
                ("{ nofile: { soft: 1 } }", Invalid),
                ("{ nofile: { soft: 1, hard: 2, max: 3 } }", Invalid),
                ("{ nofile: 1.5 }", Invalid),
                ("{ nofile: -2 }", Invalid),
                ("{ nofile: lots }", Invalid),
            ],
        ),
        (
            "run: { sysctls: {} }",
            vec![
                ("{ kernel.shmmax: 1073741824 }", Valid),
                ("{ net.core.somaxconn: 1024 }", Valid),
                (
                    "{ fs.mqueue.msg_max: 10, kernel.domainname: example.org }",
                    Valid,
                ),
                ("{ vm.swappiness: 1 }", Invalid),
                ("{ kernel.hostname: web }", Invalid),
                ("{ net.core.somaxconn: }", Invalid),
            ],
        ),
        (
            "run: { restart: {} }",
            vec![
                ("no", Valid),
                ("false", Valid),
                ("always", Valid),
                ("on-failure", Valid),
                ("on-failure:3", Valid),
                ("unless-stopped", Valid),
                ("sometimes", Invalid),
                ("\"always:3\"", Invalid),
                ("true", Invalid),
            ],
        ),
        (
            "run: { hostname: {} }",
            vec![
                ("web", Valid),
                ("a.b-c", Valid),
                ("-bad", Invalid),
                ("a_b", Invalid),
            ],
        ),
        (
            "run: { {} }",
            vec![
                ("cpus: 0.5", Valid),
                ("cpus: \"0.5\"", Invalid),
                ("cpus: 0", Invalid),
                ("pids: 64", Valid),
                ("pids: 0", Invalid),
                ("pids: \"10\"", Invalid),
                ("cpu_shares: 512", Valid),
                ("cpu_shares: 1", Invalid),
                ("cpu_weight: 50, cpu_shares: 512", Invalid),
                ("blkio_weight: 5", Invalid),
                ("cpuset_cpus: \"0\"", Valid),
                ("cpuset_cpus: 0", Valid),
                ("cpuset_cpus: \"0,a\"", Invalid),
                ("read_only: true", Valid),
                ("read_only: yes", Invalid),
                ("init: \"false\"", Invalid),
                ("tmpfs: [/tmp, /run]", Valid),
                ("tmpfs: [tmp]", Invalid),
                ("tmpfs: [/a/../b]", Invalid),
                (
                    "mounts: [{ source: ./data, target: /data, readonly: true }]",
                    Valid,
                ),
                ("mounts: [{ source: ./data }]", Invalid),
                (
                    "mounts: [{ source: ./data, target: /data, ro: true }]",
                    Invalid,
                ),
                ("env_file: .env", Valid),
                ("env_file: [.env, local.env]", Valid),
                ("env_file: { a: b }", Invalid),
                ("extra_hosts: [\"db:10.0.0.5\"]", Valid),
                ("extra_hosts: [db]", Invalid),
                ("devices: [/dev/fuse, \"/dev/sdb:/dev/xvdb:r\"]", Valid),
                ("devices: [fuse]", Invalid),
                ("device_write_bps: [{ path: /dev/sda, rate: 10mb }]", Valid),
                ("device_read_iops: [\"/dev/sda:1000\"]", Valid),
                ("device_read_iops: [{ path: /dev/sda, rate: 0 }]", Invalid),
                ("device_read_bps: [{ path: /dev/sda }]", Invalid),
                ("device_read_bps: [{ path: sda, rate: 1mb }]", Invalid),
                ("env: { A: \"1\", B: x }", Valid),
                ("env: { A: }", Invalid),
                ("env: { \"A B\": x }", Invalid),
            ],
        ),
        (
            "steps: [{}]",
            vec![
                ("{ run: make }", Valid),
                ("{ run: [make, install] }", Valid),
                ("{ run: make, shell: [/bin/bash, -c] }", Valid),
                ("{ run: [make], shell: [/bin/bash, -c] }", Invalid),
                ("{ run: \"\" }", Invalid),
                ("{ run: [] }", Invalid),
                ("{ run: make, copy: x }", Invalid),
                ("{ run: make, to: /x }", Invalid),
                ("{ copy: a, to: /a, network: none }", Invalid),
                ("{ copy: a }", Invalid),
                ("{ copy: [], to: /a }", Invalid),
                ("{ copy: [a, b], to: /x/, owner: \"1000:1000\" }", Valid),
                ("{ to: /x }", Invalid),
                ("{ env: { A: b } }", Valid),
                ("{ env: }", Valid),
                ("{ workdir: /srv }", Valid),
                ("{ workdir: srv }", Invalid),
                ("{ user: \"1000\" }", Valid),
                ("{ user: nobody, run: id }", Invalid),
                ("make", Invalid),
                ("{ run: make, shell: [] }", Invalid),
                ("{ run: make, shell: /bin/bash }", Invalid),
                ("{ run: make, cache: [/root/.cache] }", Valid),
                ("{ run: make, cache: [cache] }", Invalid),
                (
                    "{ run: make, secrets: [{ id: t, source: ./t.txt }] }",
                    Valid,
                ),
                (
                    "{ run: make, secrets: [{ id: t, env: TOKEN, target: /t }] }",
                    Valid,
                ),
                (
                    "{ run: make, secrets: [{ id: t, source: ./t, env: T }] }",
                    Invalid,
                ),
                ("{ run: make, secrets: [{ id: t }] }", Invalid),
                ("{ run: make, secrets: [{ source: ./t }] }", Invalid),
                ("{ run: make, resources: { memory: 1g, cpus: 1 } }", Valid),
                ("{ run: make, resources: { read_only: true } }", Invalid),
                ("{ run: make, privileged: true }", Valid),
                ("{ run: make, privileged: \"yes\" }", Invalid),
            ],
        ),
    ]
}

#[test]
fn the_schema_and_kiln_agree_on_values() {
    let mut cases = Vec::new();
    let mut expected = Vec::new();
    for (template, values) in value_cases() {
        for (value, verdict) in values {
            let text = format!("from: scratch\n{}\n", template.replacen("{}", value, 1));
            cases.push(Case::new(format!("{template} with {value}"), text));
            expected.push(verdict);
        }
    }
    let verdicts = schema_problems(&schema(), &cases);
    let mut failures = Vec::new();
    for ((case, problems), verdict) in cases.iter().zip(verdicts).zip(expected) {
        let kiln = case.kiln_problems();
        let (kiln_ok, schema_ok) = (kiln.is_none(), problems.is_empty());
        let expected = match verdict {
            Valid => (true, true),
            Invalid => (false, false),
            OnlyKilnRefuses => (false, true),
        };
        if (kiln_ok, schema_ok) != expected {
            failures.push(format!(
                "{} ({verdict:?}): kiln {}, the schema {}",
                case.name,
                kiln.map_or("accepts it".to_owned(), |e| format!("says {e}")),
                if schema_ok {
                    "accepts it".to_owned()
                } else {
                    format!("says {}", problems.join("; "))
                },
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
