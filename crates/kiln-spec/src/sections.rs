//! `config:` (what goes into the OCI image config) and `run:` (defaults for `kiln run`).

use std::collections::BTreeMap;
use std::path::Path;

use super::error::{Issue, Issues, Result};
use super::knobs::{
    parse_device, parse_ulimit, sysctl, ulimit as knob_ulimit, ulimit_name, ulimit_value,
};
use super::limits::{read_limits, size, LIMIT_KEYS};
use super::model::{Config, Device, Healthcheck, Mount, Privileges, RunDefaults, Ulimit};
use super::names::{check_hostname, parse_capability, parse_signal};
use super::node::{Node, Value};
use super::read::{boolean, key_text, list, located, optional_mapping, unsigned, Expander, Fields};
use super::steps::{network, user};
use super::top::resolve;
use super::units::{parse_duration, parse_port, parse_rate};

#[rustfmt::skip]
pub(crate) const CONFIG_KEYS: [&str; 10] = [
    "entrypoint", "cmd", "env", "user", "workdir", "expose", "labels", "volumes", "stop_signal",
    "healthcheck",
];
pub(crate) const HEALTHCHECK_KEYS: [&str; 5] =
    ["test", "interval", "timeout", "start_period", "retries"];
/// `run:`'s own keys; its limit keys ([`LIMIT_KEYS`]) are those of a step's `resources:`.
#[rustfmt::skip]
pub(crate) const RUN_OWN_KEYS: [&str; 20] = [
    "capabilities", "privileged", "read_only", "network", "hostname", "tmpfs", "mounts", "env",
    "user", "env_file", "extra_hosts", "ulimits", "shm_size", "sysctls", "devices", "init",
    "restart", "ports", "network_rate_in", "network_rate_out",
];
/// The keys of docker compose's long form of a published port.
pub(crate) const PORT_KEYS: [&str; 4] = ["target", "published", "host_ip", "protocol"];
/// The keys of a bind mount under `run: mounts:`.
pub(crate) const MOUNT_KEYS: [&str; 3] = ["source", "target", "readonly"];
/// The keys of `capabilities:` (of `run:` and of a run step).
pub(crate) const CAPABILITY_KEYS: [&str; 2] = ["add", "drop"];
/// The keys of a ulimit written as a mapping (`nofile: { soft: 1024, hard: 4096 }`).
pub(crate) const ULIMIT_KEYS: [&str; 2] = ["soft", "hard"];

/// Every key of `run:`.
pub(crate) fn run_keys() -> Vec<&'static str> {
    LIMIT_KEYS.iter().chain(&RUN_OWN_KEYS).copied().collect()
}

/// `config:`; each key's problem is recorded in `issues` and the other keys still read.
pub(crate) fn parse_config(node: &Node, ex: &Expander, issues: &mut Issues) -> Config {
    if node.is_null() {
        return Config::default();
    }
    let f = Fields::lenient(node, "config", &CONFIG_KEYS, issues, |_| None);
    let Some(f) = issues.check(f) else {
        return Config::default();
    };
    let signal = |n: &Node| located(n, parse_signal(&ex.text(n, "stop_signal")?));
    Config {
        entrypoint: keep(
            issues,
            f.read("entrypoint", |n| command(ex, n, "entrypoint")),
        ),
        cmd: keep(issues, f.read("cmd", |n| command(ex, n, "cmd"))),
        env: keep(issues, f.read_or_default("env", |n| ex.env_map(n, "env"))),
        user: keep(issues, f.read("user", |n| user(ex, n, "user"))),
        workdir: keep(
            issues,
            f.read("workdir", |n| ex.container_path(n, "workdir", false)),
        ),
        expose: keep(issues, f.read_or_default("expose", |n| expose(ex, n))),
        labels: keep(issues, f.read_or_default("labels", |n| labels(ex, n))),
        volumes: keep(
            issues,
            f.read_or_default("volumes", |n| ex.container_paths(n, "volumes", true)),
        ),
        stop_signal: keep(issues, f.read("stop_signal", signal)),
        healthcheck: keep(issues, f.read("healthcheck", |n| healthcheck(ex, n))),
    }
}

/// A key's value, or its empty value after recording its problem: the spec is invalid
/// then, so the empty value is never used.
fn keep<T: Default>(issues: &mut Issues, value: Result<T>) -> T {
    issues.check(value).unwrap_or_default()
}

fn labels(ex: &Expander, node: &Node) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for (key, value) in optional_mapping(node, "labels")? {
        let name = key_text(key)?;
        labels.insert(
            name.to_string(),
            ex.text(value, &format!("label \"{name}\""))?,
        );
    }
    Ok(labels)
}

/// A string is run by `/bin/sh -c`, like a Dockerfile's shell form; a list is exec'd.
fn command(ex: &Expander, node: &Node, what: &str) -> Result<Vec<String>> {
    match ex.text_or_texts(node, what)? {
        (words, true) => Ok(words),
        (script, false) => Ok(vec!["/bin/sh".into(), "-c".into(), script.concat()]),
    }
}

fn expose(ex: &Expander, node: &Node) -> Result<Vec<String>> {
    let mut ports: Vec<String> = Vec::new();
    for item in list(node, "expose")? {
        let port = located(item, parse_port(&ex.text(item, "each expose entry")?))?;
        if ports.contains(&port) {
            return Err(Issue::at(
                item.location,
                format!("port {port} is listed twice"),
            ));
        }
        ports.push(port);
    }
    Ok(ports)
}

fn healthcheck(ex: &Expander, node: &Node) -> Result<Healthcheck> {
    let f = Fields::new(node, "healthcheck", &HEALTHCHECK_KEYS)?;
    let test_node = f.get("test").ok_or_else(|| {
        Issue::at(node.location, "healthcheck needs \"test\"")
            .hint("e.g. test: [CMD, wget, -q, -O-, localhost:8080]")
    })?;
    let duration = |name: &str| f.read(name, |n| duration(ex, n, name));
    let retries = |n: &Node| {
        u32::try_from(unsigned(n, "retries")?)
            .map_err(|_| Issue::at(n.location, "retries is too large"))
    };
    Ok(Healthcheck {
        test: health_test(ex, test_node)?,
        interval_ns: duration("interval")?,
        timeout_ns: duration("timeout")?,
        start_period_ns: duration("start_period")?,
        retries: f.read("retries", retries)?,
    })
}

/// A duration with a unit; a bare YAML number is refused rather than guessed at.
fn duration(ex: &Expander, node: &Node, what: &str) -> Result<u64> {
    if let Value::Int { raw, .. } = &node.value {
        return Err(
            Issue::at(node.location, format!("{what} needs a unit")).hint(format!("e.g. {raw}s"))
        );
    }
    located(node, parse_duration(&ex.text(node, what)?))
}

/// `[CMD, arg...]`, `[CMD-SHELL, script]`, `[NONE]`, or a string meaning CMD-SHELL.
fn health_test(ex: &Expander, node: &Node) -> Result<Vec<String>> {
    let (words, is_list) = ex.text_or_texts(node, "test")?;
    if !is_list {
        return Ok(vec!["CMD-SHELL".to_string(), words.concat()]);
    }
    let well_formed = match words.first().map(String::as_str) {
        Some("CMD") => words.len() >= 2,
        Some("CMD-SHELL") => words.len() == 2,
        Some("NONE") => words.len() == 1,
        _ => false,
    };
    if !well_formed {
        return Err(Issue::at(node.location, "invalid healthcheck test").hint(
            "write [CMD, program, args...], [CMD-SHELL, \"script\"], [NONE] or a script string",
        ));
    }
    Ok(words)
}

/// `run:`; each key's problem is recorded in `issues` and the other keys still read.
pub(crate) fn parse_run(
    node: &Node,
    dir: &Path,
    ex: &Expander,
    issues: &mut Issues,
) -> RunDefaults {
    if node.is_null() {
        return RunDefaults::default();
    }
    let f = Fields::lenient(node, "run", &run_keys(), issues, |_| None);
    let Some(f) = issues.check(f) else {
        return RunDefaults::default();
    };
    let hostname = |n: &Node| {
        let hostname = ex.text(n, "hostname")?;
        located(n, check_hostname(&hostname)).map(|()| hostname)
    };
    let limits = read_limits(&f, ex, issues);
    let privileges = keep(issues, parse_privileges(&f, ex));
    RunDefaults {
        limits,
        cap_add: privileges.cap_add,
        cap_drop: privileges.cap_drop,
        privileged: privileges.privileged,
        read_only: keep(
            issues,
            f.read_or_default("read_only", |n| boolean(n, "read_only")),
        ),
        network: keep(issues, f.read("network", |n| network(ex, n))),
        hostname: keep(issues, f.read("hostname", hostname)),
        tmpfs: keep(
            issues,
            f.read_or_default("tmpfs", |n| ex.container_paths(n, "tmpfs", true)),
        ),
        mounts: keep(issues, f.read_or_default("mounts", |n| mounts(ex, n, dir))),
        env: keep(issues, f.read_or_default("env", |n| ex.env_map(n, "env"))),
        user: keep(issues, f.read("user", |n| user(ex, n, "user"))),
        env_file: keep(
            issues,
            f.read_or_default("env_file", |n| env_files(ex, n, dir)),
        ),
        extra_hosts: keep(
            issues,
            f.read_or_default("extra_hosts", |n| extra_hosts(ex, n)),
        ),
        ulimits: keep(issues, f.read_or_default("ulimits", |n| ulimits(ex, n))),
        shm_size: keep(issues, f.read("shm_size", |n| size(ex, n, "shm_size"))),
        sysctls: keep(issues, f.read_or_default("sysctls", |n| sysctls(ex, n))),
        devices: keep(issues, f.read_or_default("devices", |n| devices(ex, n))),
        init: keep(issues, f.read("init", |n| boolean(n, "init"))),
        restart: keep(issues, f.read("restart", |n| restart(ex, n))),
        ports: keep(issues, f.read_or_default("ports", |n| ports(ex, n))),
        network_rate_in: keep(issues, f.read("network_rate_in", |n| rate(ex, n, "in"))),
        network_rate_out: keep(issues, f.read("network_rate_out", |n| rate(ex, n, "out"))),
    }
}

/// `network_rate_in:`/`network_rate_out:` in tc's units (`8mbit`), or a whole number of
/// bits per second.
fn rate(ex: &Expander, node: &Node, way: &str) -> Result<u64> {
    let text = ex.text(node, &format!("network_rate_{way}"))?;
    located(node, parse_rate(&text))
}

/// `ports:` docker compose's two forms: `-p`'s string (`"8080:80"`, `"127.0.0.1::53/udp"`,
/// `"8000-8002:80-82"`, `80`) or `{ target, published, host_ip, protocol }`. A host port
/// given twice (same address and protocol) is an error here rather than when the
/// container starts.
fn ports(ex: &Expander, node: &Node) -> Result<Vec<crate::PortMapping>> {
    let mut out: Vec<crate::PortMapping> = Vec::new();
    for item in list(node, "ports")? {
        let text = match &item.value {
            Value::Map(_) => long_port(ex, item)?,
            _ => ex.text(item, "each ports entry")?,
        };
        let mappings = crate::ports::parse_publish(&text).map_err(|e| e.at(item.location))?;
        for m in mappings {
            let clash = out.iter().any(|o| {
                o.host_port.is_some()
                    && o.host_port == m.host_port
                    && o.protocol == m.protocol
                    && (o.host_ip == m.host_ip || o.host_ip.is_none() || m.host_ip.is_none())
            });
            if clash {
                let port = m.host_port.unwrap_or_default();
                return Err(Issue::at(
                    item.location,
                    format!("host port {port}/{} is published twice", m.protocol),
                ));
            }
            out.push(m);
        }
    }
    Ok(out)
}

/// Compose's long form as `-p`'s string, so that one parser checks both.
fn long_port(ex: &Expander, item: &Node) -> Result<String> {
    let f = Fields::new(item, "port", &PORT_KEYS)?;
    let target = f.get("target").ok_or_else(|| {
        Issue::at(item.location, "a port needs \"target\"")
            .hint("e.g. { target: 80, published: \"8080\", host_ip: 127.0.0.1, protocol: tcp }")
    })?;
    let field = |name: &str| f.get(name).map(|n| ex.text(n, name)).transpose();
    let mut text = String::new();
    if let Some(ip) = field("host_ip")? {
        // An IPv6 address goes in brackets in `-p`'s grammar.
        match ip.contains(':') && !ip.starts_with('[') {
            true => text.push_str(&format!("[{ip}]:")),
            false => text.push_str(&format!("{ip}:")),
        }
        if f.get("published").is_none() {
            text.push(':');
        }
    }
    if let Some(published) = field("published")? {
        text.push_str(&format!("{published}:"));
    }
    text.push_str(&ex.text(target, "target")?);
    if let Some(protocol) = field("protocol")? {
        text.push_str(&format!("/{protocol}"));
    }
    Ok(text)
}

/// `restart:` docker's words (`unless-stopped`, `on-failure:3`); a bare `no` (or `false`),
/// which YAML 1.1 readers take for a boolean, is `no` too.
fn restart(ex: &Expander, node: &Node) -> Result<crate::RestartPolicy> {
    if let Value::Bool { value: false, .. } = node.value {
        return Ok(crate::RestartPolicy::No);
    }
    let text = ex.text(node, "restart")?;
    crate::values::restart_policy(&text)
        .map_err(|e| Issue::at(node.location, format!("restart: {}", e.message)).maybe_hint(e.hint))
}

/// `env_file:` one path or a list (docker compose takes both), relative to the spec's
/// folder.
fn env_files(ex: &Expander, node: &Node, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let (paths, _) = ex.text_or_texts(node, "env_file")?;
    if let Some(empty) = paths.iter().find(|p| p.is_empty()) {
        return Err(Issue::at(
            node.location,
            format!("env_file {empty:?} is empty"),
        ));
    }
    Ok(paths.iter().map(|p| resolve(dir, p)).collect())
}

/// `extra_hosts:` a list of `NAME:IP`, as docker compose writes them.
fn extra_hosts(ex: &Expander, node: &Node) -> Result<Vec<(String, std::net::IpAddr)>> {
    list(node, "extra_hosts")?
        .iter()
        .map(|item| {
            let text = ex.text(item, "each extra_hosts entry")?;
            crate::values::host_entry(&text).map_err(|e| {
                Issue::at(item.location, format!("extra_hosts: {}", e.message)).maybe_hint(e.hint)
            })
        })
        .collect()
}

/// `ulimits:` as docker compose writes them: `NAME: LIMIT` (soft and hard),
/// `NAME: "SOFT:HARD"` or `NAME: { soft: S, hard: H }`; a limit is a number, `-1` or
/// `unlimited`.
fn ulimits(ex: &Expander, node: &Node) -> Result<Vec<Ulimit>> {
    let mut out: Vec<Ulimit> = Vec::new();
    for (key, value) in optional_mapping(node, "ulimits")? {
        let name = located(key, ulimit_name(key_text(key)?))?;
        let limit = |n: &Node, what: &str| located(n, ulimit_value(name, &ex.text(n, what)?));
        let (soft, hard) = match &value.value {
            Value::Map(_) => {
                let f = Fields::new(value, &format!("ulimit {name}"), &ULIMIT_KEYS)?;
                let need = |which: &str| {
                    f.get(which).ok_or_else(|| {
                        Issue::at(value.location, format!("ulimit {name} needs \"{which}\""))
                            .hint("e.g. nofile: { soft: 1024, hard: 4096 }")
                    })
                };
                (limit(need("soft")?, "soft")?, limit(need("hard")?, "hard")?)
            }
            _ => {
                let text = ex.text(value, &format!("ulimit {name}"))?;
                let parsed = located(value, parse_ulimit(&format!("{name}={text}")))?;
                (parsed.soft, parsed.hard)
            }
        };
        let parsed = located(key, knob_ulimit(name, soft, hard))?;
        if out.iter().any(|u| u.name == parsed.name) {
            return Err(Issue::at(
                key.location,
                format!("ulimit {} is listed twice", parsed.name),
            ));
        }
        out.push(parsed);
    }
    Ok(out)
}

/// `sysctls:` a mapping `KEY: VALUE` (docker compose's), only keys of the container's
/// own namespaces.
fn sysctls(ex: &Expander, node: &Node) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (key, value) in optional_mapping(node, "sysctls")? {
        let name = key_text(key)?;
        let value = ex.text(value, &format!("the value of {name}"))?;
        out.push(located(key, sysctl(name, &value))?);
    }
    Ok(out)
}

/// `devices:` a list of `HOST[:CONTAINER[:PERMISSIONS]]` (docker compose's).
fn devices(ex: &Expander, node: &Node) -> Result<Vec<Device>> {
    let mut out: Vec<Device> = Vec::new();
    for item in list(node, "devices")? {
        let device = located(item, parse_device(&ex.text(item, "each device")?))?;
        if out.iter().any(|d| d.container == device.container) {
            return Err(Issue::at(
                item.location,
                format!("two devices at {} in the container", device.container),
            ));
        }
        out.push(device);
    }
    Ok(out)
}

/// `capabilities: { add, drop }` and `privileged:` of `run:` or of a run step.
pub(crate) fn parse_privileges(f: &Fields, ex: &Expander) -> Result<Privileges> {
    let (cap_add, cap_drop) = match f.get("capabilities") {
        Some(n) => {
            let caps = Fields::new(n, "capabilities", &CAPABILITY_KEYS)?;
            (
                capabilities(ex, caps.get("add"), "add")?,
                capabilities(ex, caps.get("drop"), "drop")?,
            )
        }
        None => (Vec::new(), Vec::new()),
    };
    Ok(Privileges {
        privileged: f.read_or_default("privileged", |n| boolean(n, "privileged"))?,
        cap_add,
        cap_drop,
    })
}

fn capabilities(ex: &Expander, node: Option<&Node>, what: &str) -> Result<Vec<String>> {
    let Some(node) = node else {
        return Ok(Vec::new());
    };
    list(node, what)?
        .iter()
        .map(|item| located(item, parse_capability(&ex.text(item, "each capability")?)))
        .collect()
}

fn mounts(ex: &Expander, node: &Node, dir: &Path) -> Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for item in list(node, "mounts")? {
        let f = Fields::new(item, "mount", &MOUNT_KEYS)?;
        let require = |name: &str| {
            f.get(name).ok_or_else(|| {
                Issue::at(item.location, format!("a mount needs \"{name}\""))
                    .hint("e.g. { source: ./data, target: /data, readonly: true }")
            })
        };
        let source = ex.text(require("source")?, "source")?;
        if source.is_empty() {
            return Err(Issue::at(item.location, "mount source is empty"));
        }
        mounts.push(Mount {
            source: resolve(dir, &source),
            target: ex.container_path(require("target")?, "target", true)?,
            readonly: f
                .get("readonly")
                .map(|n| boolean(n, "readonly"))
                .transpose()?
                .unwrap_or(false),
        });
    }
    Ok(mounts)
}
