//! A merged [`ContainerConfig`] made concrete for one container dir: the user looked up in
//! the image, the `/etc` files it gets, the runtime's `ContainerSpec`; and the state record
//! that `kiln ps` and `kiln rm` read, written before the container starts and after it
//! ends.
//!
//! The store owns the record's format and the container dirs; this file decides what goes
//! into the record and when, so every command that starts a container keeps it the same way.

use kiln_runtime::{self as runtime, ContainerSpec, NetworkMode, Overlay, Process};
use kiln_store::{ContainerDir, ContainerState, Store};

use super::config::ContainerConfig;
use super::error::{ContainerError, Result};
use super::exec::ExecContext;
use super::log::LogOptions;
use super::passwd;
use super::resolv::{resolv_conf, ResolverFor};
use super::source::Source;
use super::start::StartConfig;

/// How a container is started, beyond what it runs.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// The name `kiln ps` shows; the first 12 characters of the ID when `None`.
    pub name: Option<String>,
    /// Remove the container when it exits: its state is not written again then.
    pub auto_remove: bool,
    /// Give it a pseudo-terminal.
    pub tty: bool,
    /// Pass stdin to it.
    pub interactive: bool,
    /// Run by a monitor (`kiln run -d`), which keeps its output pipes for the log.
    pub detached: bool,
    /// How a monitor rotates its log.
    pub log: LogOptions,
}

impl Launch {
    /// An error when another container already has this launch's name.
    pub fn check_name_is_free(&self, store: &Store) -> Result<()> {
        match &self.name {
            Some(name) if store.find_container(name)?.is_some() => {
                Err(ContainerError::NameInUse(name.clone()))
            }
            _ => Ok(()),
        }
    }
}

/// What every start of the container in `dir` runs (kept as its start config), and the
/// state record of a container about to start (written with the PID of the kiln process
/// that runs it; [`record_start`] adds when it started).
pub fn create(
    store: &Store,
    source: &Source,
    config: ContainerConfig,
    dir: &ContainerDir,
    launch: &Launch,
) -> Result<(StartConfig, ContainerState)> {
    let state = ContainerState {
        id: dir.id.clone(),
        name: launch.name.clone().unwrap_or_else(|| short_id(dir)),
        image: source.tagged.reference.to_string(),
        image_digest: source.image.digest.clone(),
        command: config.argv.clone(),
        created: now(),
        pid: Some(std::process::id() as i32),
        exit_code: None,
        auto_remove: launch.auto_remove,
        started: None,
        finished: None,
        stop_signal: source.image.config.config.stop_signal.clone(),
        detached: launch.detached,
        init_pid: None,
        restart_count: 0,
        restarting: false,
    };
    let (health, restart) = (config.health.clone(), config.restart);
    let (publish, rates) = (config.publish.clone(), config.rates);
    let networks = config.networks.clone();
    let (mut spec, context) =
        container_spec(store, source, config, dir, (launch.tty, launch.interactive))?;
    spec.capture_output = launch.detached;
    let start = StartConfig {
        spec,
        restart,
        log: launch.log,
        health,
        publish,
        rates,
        networks,
        networks_disconnected: false,
    };
    context.write(store, dir)?;
    start.write(store, dir)?;
    dir.write_state(store, &state)?;
    tracing::debug!(id = %dir.id, "container created");
    Ok((start, state))
}

/// Records that the container's command runs now, run by process `runner`, with
/// `init_pid` as its first process; a start after a restart policy's wait counts as a
/// restart.
pub fn record_start(
    store: &Store,
    dir: &ContainerDir,
    state: &mut ContainerState,
    (runner, init_pid): (u32, i32),
) -> Result<()> {
    if state.restarting {
        state.restart_count += 1;
    }
    state.restarting = false;
    state.exit_code = None;
    state.pid = Some(runner as i32);
    state.init_pid = Some(init_pid);
    state.started = Some(kiln_store::containers::now());
    dir.write_state(store, state)?;
    Ok(())
}

/// Records that the container ended with `code` and that its runner starts it again
/// after its restart policy's delay.
pub fn record_restarting(
    store: &Store,
    dir: &ContainerDir,
    state: &mut ContainerState,
    code: i32,
) -> Result<()> {
    state.init_pid = None;
    state.exit_code = Some(code);
    state.finished = Some(kiln_store::containers::now());
    state.restarting = true;
    dir.write_state(store, state)?;
    Ok(())
}

/// Records that the container ended with `code`; a container removed on exit keeps no
/// record.
pub fn record_exit(
    store: &Store,
    dir: &ContainerDir,
    state: &mut ContainerState,
    code: i32,
) -> Result<()> {
    state.pid = None;
    state.init_pid = None;
    state.restarting = false;
    state.exit_code = Some(code);
    state.finished = Some(kiln_store::containers::now());
    if !state.auto_remove {
        dir.write_state(store, state)?;
    }
    Ok(())
}

/// The runtime's spec: `config` with the user resolved in the image, the hostname
/// defaulted to the short ID and the `/etc` files the container gets; and what a
/// process exec'd into it gets by default.
pub(crate) fn container_spec(
    store: &Store,
    source: &Source,
    config: ContainerConfig,
    dir: &ContainerDir,
    (tty, interactive): (bool, bool),
) -> Result<(ContainerSpec, ExecContext)> {
    let overlay = Overlay {
        layers_dir: store.layers_dir(),
        lowers: source.image.config.lower_layer_names(),
        upper: dir.upper(),
        work: dir.work(),
    };
    let user = passwd::resolve_in_image_remembered(store, &overlay, config.user.as_deref())?;
    let hostname = config.hostname.clone().unwrap_or_else(|| short_id(dir));
    let context = ExecContext::new(&config, &user, &hostname);
    let mut env = config.env;
    runtime::add_default_env(&mut env, &hostname, &user.home, tty);
    let spec = ContainerSpec {
        overlay,
        read_only: config.read_only,
        etc_hosts: etc_hosts(&hostname, config.network, &config.extra_hosts),
        etc_resolv_conf: etc_resolv_conf(store, config.network, &config.networks)?,
        process: Process {
            argv: config.argv,
            env,
            cwd: config.cwd,
            uid: user.uid,
            gid: user.gid,
            groups: user.groups,
            hostname,
            network: config.network,
        },
        mounts: config.mounts,
        tmpfs: config.tmpfs,
        shm_size: config.shm_size,
        sysctls: config.sysctls,
        devices: config.devices,
        confinement: config.confinement,
        init: config.init,
        tty,
        interactive,
        capture_output: false,
        id: dir.id.clone(),
        state_dir: dir.path.clone(),
        cgroup_root: None,
        userns: config.userns,
    };
    Ok((spec, context))
}

/// The host's resolv.conf with the host's network (and none); on a bridge network, one
/// whose resolvers work from inside ([`crate::resolv`]).
fn etc_resolv_conf(
    store: &Store,
    network: NetworkMode,
    named: &[crate::named_network::NetworkChoice],
) -> Result<String> {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolver = match (network, named.first()) {
        (NetworkMode::Bridge, Some(first)) => {
            let definition = crate::named_network::find(store, &first.name)?;
            ResolverFor::Named {
                gateway: definition.gateway()?,
            }
        }
        (NetworkMode::Bridge, None) if crate::rootless_network::uses_pasta() => {
            return Ok(crate::rootless_network::pasta_resolv_conf(&host));
        }
        (NetworkMode::Bridge, None) => ResolverFor::DefaultBridge {
            gateway: crate::network::default_subnet().gateway(),
        },
        _ => return Ok(host),
    };
    Ok(resolv_conf(&host, resolver).text)
}

/// The first 12 characters of the container's ID, as Docker shows IDs.
fn short_id(dir: &ContainerDir) -> String {
    dir.id[..12].to_owned()
}

/// The host's `/etc/hosts` with the host's network; otherwise loopback names and the
/// container's own. `--add-host` entries follow, as docker appends them.
fn etc_hosts(hostname: &str, network: NetworkMode, extra: &[(String, std::net::IpAddr)]) -> String {
    let mut hosts = match network {
        NetworkMode::Host => std::fs::read_to_string("/etc/hosts").ok(),
        _ => None,
    }
    .unwrap_or_else(|| {
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        )
    });
    if !hosts.is_empty() && !hosts.ends_with('\n') {
        hosts.push('\n');
    }
    for (name, ip) in extra {
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    hosts
}

fn now() -> u64 {
    kiln_store::containers::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_network_gets_loopback_names_and_its_own() {
        let hosts = etc_hosts("box", NetworkMode::None, &[]);
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts.ends_with("127.0.1.1\tbox\n"));
        let extra = [
            ("db".to_owned(), "10.0.0.5".parse().unwrap()),
            ("v6".to_owned(), "::2".parse().unwrap()),
        ];
        let hosts = etc_hosts("box", NetworkMode::None, &extra);
        assert!(
            hosts.ends_with("127.0.1.1\tbox\n10.0.0.5\tdb\n::2\tv6\n"),
            "{hosts}"
        );
    }
}
