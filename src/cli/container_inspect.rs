//! `kiln inspect CONTAINER`: a container's state and settings as JSON, in the shape of
//! docker's `inspect` (`State.Health`, `RestartCount`, `HostConfig.RestartPolicy` …), so
//! scripts written for docker find the same keys.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

use kiln_container::health::HealthState;
use kiln_container::restart::RestartPolicy;
use kiln_container::start::StartConfig;
use kiln_store::containers::Status;
use kiln_store::{ContainerDir, ContainerState};

/// Docker's `inspect` document for the container.
pub(super) fn container_json(dir: &ContainerDir, state: &ContainerState) -> Value {
    let status = dir.status(state);
    let start = StartConfig::read(dir).ok();
    let running = matches!(status, Status::Running { .. });
    let mut state_json = json!({
        "Status": status.word(),
        "Running": running,
        "Restarting": matches!(status, Status::Restarting { .. }),
        "Pid": if running { state.init_pid.unwrap_or(0) } else { 0 },
        "ExitCode": state.exit_code.unwrap_or(0),
        "StartedAt": time(state.started),
        "FinishedAt": time(state.finished),
    });
    if let Some(health) = HealthState::read(dir).filter(|_| start_has_health(&start)) {
        state_json["Health"] = serde_json::to_value(health).expect("health serialises");
    }
    let mut host_config = start.as_ref().map(host_config).unwrap_or(Value::Null);
    if let (true, Some(pid)) = (running, state.init_pid) {
        host_config["IDMappings"] = id_mappings(pid);
    }
    let (path, args) = match state.command.split_first() {
        Some((path, args)) => (path.as_str(), args),
        None => ("", &[][..]),
    };
    json!({
        "Id": state.id,
        "Name": state.name,
        "Created": time(Some(state.created)),
        "Path": path,
        "Args": args,
        "Image": state.image_digest.to_string(),
        "ImageName": state.image,
        "State": state_json,
        "RestartCount": state.restart_count,
        "LogPath": if state.detached { dir.log_path().display().to_string() } else { String::new() },
        "HostConfig": host_config,
        "Config": start.as_ref().map(config).unwrap_or(Value::Null),
        "NetworkSettings": network_settings(dir, state, on_bridge(&start)),
    })
}

/// podman's `HostConfig.IDMappings` of a running container: its user namespace's maps
/// as `inside:outside:count`, read from its first process (the host's own map without
/// `--userns`).
fn id_mappings(pid: i32) -> Value {
    let read = |file: &str| -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .unwrap_or_default()
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(":"))
            .collect()
    };
    json!({ "UidMap": read("uid_map"), "GidMap": read("gid_map") })
}

/// Whether the container's network is the default one (`bridge`, pasta for an ordinary
/// user).
fn on_bridge(start: &Option<StartConfig>) -> bool {
    start
        .as_ref()
        .is_some_and(|s| s.spec.process.network == kiln_runtime::NetworkMode::Bridge)
}

fn start_has_health(start: &Option<StartConfig>) -> bool {
    start.as_ref().is_some_and(|s| s.health.is_some())
}

/// The address, gateway and MAC of its last run on the bridge, and the ports it
/// publishes while it runs (docker's `Ports` is empty for a container that does not).
fn network_settings(dir: &ContainerDir, state: &ContainerState, on_bridge: bool) -> Value {
    let ports = super::port::inspect_ports(&super::port::published(dir, state));
    let Some(net) = kiln_container::network::NetworkRecord::read(dir) else {
        // An ordinary user's default network: pasta gives the container the host's
        // addresses, which kiln does not record.
        return match on_bridge && kiln_container::rootless_network::uses_pasta() {
            true => json!({ "Ports": ports, "Networks": { "bridge": { "Driver": "pasta" } } }),
            false => Value::Null,
        };
    };
    // Every network of the last run, by name (docker's `NetworkSettings.Networks`).
    let networks: serde_json::Map<String, Value> =
        kiln_container::network::NetworkRecord::read_all(dir)
            .iter()
            .map(|r| {
                let name = r.network.clone().unwrap_or_else(|| "bridge".into());
                let doc = json!({
                    "IPAddress": r.address.to_string(),
                    "IPPrefixLen": r.prefix,
                    "Gateway": r.gateway.to_string(),
                    "MacAddress": r.mac,
                    "Aliases": r.aliases,
                });
                (name, doc)
            })
            .collect();
    json!({
        "IPAddress": net.address.to_string(),
        "IPPrefixLen": net.prefix,
        "Gateway": net.gateway.to_string(),
        "MacAddress": net.mac,
        "Ports": ports,
        "Networks": networks,
    })
}

/// The limits and policies the container runs with, under docker's names.
fn host_config(start: &StartConfig) -> Value {
    let (name, max) = match start.restart {
        RestartPolicy::OnFailure { max } => ("on-failure", max.unwrap_or(0)),
        other => match other {
            RestartPolicy::Always => ("always", 0),
            RestartPolicy::UnlessStopped => ("unless-stopped", 0),
            _ => ("no", 0),
        },
    };
    let spec = &start.spec;
    let resources = &spec.confinement.resources;
    let swap = match resources.memory_swap {
        Some(kiln_runtime::Swap::Limit(bytes)) => bytes as i64,
        Some(kiln_runtime::Swap::Unlimited) => -1,
        None => 0,
    };
    json!({
        "RestartPolicy": { "Name": name, "MaximumRetryCount": max },
        "Memory": resources.memory.unwrap_or(0),
        "MemoryReservation": resources.memory_reservation.unwrap_or(0),
        "MemorySwap": swap,
        "NanoCpus": resources.cpus.map(|c| (c * 1e9).round() as u64).unwrap_or(0),
        "CpuShares": resources.cpu_weight.map(|w| w.shares()).unwrap_or(0),
        "CpusetCpus": resources.cpuset_cpus.clone().unwrap_or_default(),
        "CpusetMems": resources.cpuset_mems.clone().unwrap_or_default(),
        "BlkioWeight": resources.blkio_weight.unwrap_or(0),
        "PidsLimit": resources.pids_limit(),
        "Ulimits": spec.confinement.rlimits.iter().map(|r| json!({
            "Name": r.name(), "Soft": r.soft, "Hard": r.hard,
        })).collect::<Vec<_>>(),
        "ShmSize": spec.shm_size.unwrap_or(64 << 20),
        "Sysctls": spec.sysctls.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "Devices": spec.devices.iter().map(|d| d.path.clone()).collect::<Vec<_>>(),
        "Init": spec.init,
        "UsernsMode": spec.userns.to_string(),
        "ReadonlyRootfs": start.spec.read_only,
        "PortBindings": super::port::port_bindings(&start.publish),
        "NetworkMode": match start.spec.process.network {
            kiln_runtime::NetworkMode::Host => "host",
            kiln_runtime::NetworkMode::None => "none",
            kiln_runtime::NetworkMode::Bridge => "bridge",
        },
        "LogConfig": { "Type": "json-file", "Config": {
            "max-size": start.log.max_size.to_string(),
            "max-file": start.log.max_files.to_string(),
        }},
    })
}

/// What runs, under docker's names.
fn config(start: &StartConfig) -> Value {
    let process = &start.spec.process;
    let healthcheck = start.health.as_ref().map(|h| {
        json!({
            "Test": std::iter::once("CMD".to_owned()).chain(h.argv.iter().cloned()).collect::<Vec<_>>(),
            "Interval": h.interval.as_nanos() as u64,
            "Timeout": h.timeout.as_nanos() as u64,
            "StartPeriod": h.start_period.as_nanos() as u64,
            "Retries": h.retries,
        })
    });
    json!({
        "Hostname": process.hostname,
        "User": format!("{}:{}", process.uid, process.gid),
        "Env": process.env,
        "Cmd": process.argv,
        "WorkingDir": process.cwd,
        "Tty": start.spec.tty,
        "Healthcheck": healthcheck,
    })
}

/// RFC 3339, or docker's zero time when unknown.
fn time(epoch: Option<u64>) -> String {
    match epoch {
        Some(secs) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
        }
        None => "0001-01-01T00:00:00Z".into(),
    }
}
