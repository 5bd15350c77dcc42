//! `config:` (what goes into the OCI image config) and `run:` (defaults for `kiln run`).

use std::path::Path;

use super::error::{Issue, Result};
use super::model::{Config, Healthcheck, Mount, RunDefaults};
use super::node::{Node, Value};
use super::read::{boolean, key_text, list, located, number, optional_mapping, unsigned, Expander, Fields};
use super::steps::{network, user};
use super::units::{
    check_cpus, check_hostname, parse_capability, parse_duration, parse_port, parse_signal,
    parse_size,
};

const CONFIG_KEYS: [&str; 10] = [
    "entrypoint", "cmd", "env", "user", "workdir", "expose", "labels", "volumes", "stop_signal",
    "healthcheck",
];
const HEALTHCHECK_KEYS: [&str; 5] = ["test", "interval", "timeout", "start_period", "retries"];
const RUN_KEYS: [&str; 11] = [
    "memory", "cpus", "pids", "capabilities", "read_only", "network", "hostname", "tmpfs",
    "mounts", "env", "user",
];

pub(crate) fn parse_config(node: &Node, ex: &Expander) -> Result<Config> {
    if node.is_null() {
        return Ok(Config::default());
    }
    let f = Fields::new(node, "config", &CONFIG_KEYS)?;
    let mut config = Config::default();
    if let Some(n) = f.get("entrypoint") {
        config.entrypoint = Some(command(ex, n, "entrypoint")?);
    }
    if let Some(n) = f.get("cmd") {
        config.cmd = Some(command(ex, n, "cmd")?);
    }
    if let Some(n) = f.get("env") {
        config.env = ex.env_map(n, "env")?;
    }
    if let Some(n) = f.get("user") {
        config.user = Some(user(ex, n, "user")?);
    }
    if let Some(n) = f.get("workdir") {
        config.workdir = Some(ex.container_path(n, "workdir", false)?);
    }
    if let Some(n) = f.get("expose") {
        config.expose = expose(ex, n)?;
    }
    if let Some(n) = f.get("labels") {
        for (key, value) in optional_mapping(n, "labels")? {
            let name = key_text(key)?;
            let text = ex.text(value, &format!("label \"{name}\""))?;
            config.labels.insert(name.to_string(), text);
        }
    }
    if let Some(n) = f.get("volumes") {
        config.volumes = ex.container_paths(n, "volumes", true)?;
    }
    if let Some(n) = f.get("stop_signal") {
        config.stop_signal = Some(located(n, parse_signal(&ex.text(n, "stop_signal")?))?);
    }
    if let Some(n) = f.get("healthcheck") {
        config.healthcheck = Some(healthcheck(ex, n)?);
    }
    Ok(config)
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
            return Err(Issue::at(item.location, format!("port {port} is listed twice")));
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
    let duration = |name: &str| -> Result<Option<u64>> {
        let Some(n) = f.get(name) else { return Ok(None) };
        if let Value::Int { raw, .. } = &n.value {
            return Err(Issue::at(n.location, format!("{name} needs a unit"))
                .hint(format!("e.g. {raw}s")));
        }
        located(n, parse_duration(&ex.text(n, name)?)).map(Some)
    };
    let retries = match f.get("retries") {
        Some(n) => Some(
            u32::try_from(unsigned(n, "retries")?)
                .map_err(|_| Issue::at(n.location, "retries is too large"))?,
        ),
        None => None,
    };
    Ok(Healthcheck {
        test: health_test(ex, test_node)?,
        interval_ns: duration("interval")?,
        timeout_ns: duration("timeout")?,
        start_period_ns: duration("start_period")?,
        retries,
    })
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

pub(crate) fn parse_run(node: &Node, dir: &Path, ex: &Expander) -> Result<RunDefaults> {
    if node.is_null() {
        return Ok(RunDefaults::default());
    }
    let f = Fields::new(node, "run", &RUN_KEYS)?;
    let mut run = RunDefaults::default();
    if let Some(n) = f.get("memory") {
        run.memory = Some(memory(ex, n)?);
    }
    if let Some(n) = f.get("cpus") {
        run.cpus = Some(located(n, check_cpus(number(n, "cpus")?))?);
    }
    if let Some(n) = f.get("pids") {
        match unsigned(n, "pids")? {
            0 => return Err(Issue::at(n.location, "pids must be at least 1")),
            pids => run.pids = Some(pids),
        }
    }
    if let Some(n) = f.get("capabilities") {
        let caps = Fields::new(n, "capabilities", &["add", "drop"])?;
        run.cap_add = capabilities(ex, caps.get("add"), "add")?;
        run.cap_drop = capabilities(ex, caps.get("drop"), "drop")?;
    }
    if let Some(n) = f.get("read_only") {
        run.read_only = boolean(n, "read_only")?;
    }
    if let Some(n) = f.get("network") {
        run.network = Some(network(ex, n)?);
    }
    if let Some(n) = f.get("hostname") {
        let hostname = ex.text(n, "hostname")?;
        located(n, check_hostname(&hostname))?;
        run.hostname = Some(hostname);
    }
    if let Some(n) = f.get("tmpfs") {
        run.tmpfs = ex.container_paths(n, "tmpfs", true)?;
    }
    if let Some(n) = f.get("mounts") {
        run.mounts = mounts(ex, n, dir)?;
    }
    if let Some(n) = f.get("env") {
        run.env = ex.env_map(n, "env")?;
    }
    if let Some(n) = f.get("user") {
        run.user = Some(user(ex, n, "user")?);
    }
    Ok(run)
}

/// Bytes as a YAML integer, or a string with a unit (`64m`, `64Mi`).
fn memory(ex: &Expander, node: &Node) -> Result<u64> {
    match node.value {
        Value::Int { value, .. } => u64::try_from(value)
            .ok()
            .filter(|bytes| *bytes > 0)
            .ok_or_else(|| {
                Issue::at(node.location, format!("invalid size \"{value}\""))
                    .hint("a size is more than 0 bytes, e.g. 64m")
            }),
        Value::Str(_) => located(node, parse_size(&ex.text(node, "memory")?)),
        _ => Err(Issue::at(
            node.location,
            format!("memory must be a size like 64m, found {}", node.kind_name()),
        )),
    }
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
        let f = Fields::new(item, "mount", &["source", "target", "readonly"])?;
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
            source: dir.join(source),
            target: ex.container_path(require("target")?, "target", true)?,
            readonly: f.get("readonly").map(|n| boolean(n, "readonly")).transpose()?.unwrap_or(false),
        });
    }
    Ok(mounts)
}
