//! One [`ContainerConfig`] from three layers of settings: the image's config, then the
//! `run:` defaults kept with its tag, then the caller's [`RunSettings`] (`kiln run`'s flags).
//!
//! Exists so that `kiln run` and `kiln bundle` cannot disagree about what a container
//! gets, and so that the rule about stored settings that grant privileges (SECURITY.md
//! rule 15) is applied in one place, before anything else reads them.

use std::path::PathBuf;

use kiln_image::{RunDefaultsOrigin, RuntimeConfig};
use kiln_runtime::{self as runtime, BindMount, Confinement, DeviceNode, NetworkMode};
use kiln_spec::{values, Device, Limits, Network, Privileges, RunDefaults, Ulimit};

use super::confine::{confinement, limits_over};
use super::error::{ContainerError, Result};
use super::health::HealthConfig;
use super::security::{check_seccomp_profile, security_options};
use super::source::Source;
use kiln_network::Shaping;

/// What the caller asks for on top of the image: `kiln run`'s flags as plain values. Empty
/// and `None` mean "not given", so the image's settings apply.
#[derive(Debug, Clone, Default)]
pub struct RunSettings {
    /// `K=V` entries, in order: a later one wins. The caller has already taken the value of
    /// a bare `K` from its own environment (and left it out when it has none).
    pub env: Vec<(String, String)>,
    /// `--add-host`: lines added to the container's `/etc/hosts`.
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// Bind mounts as `SRC:DST[:ro|rw]`; a relative SRC is taken from the current directory.
    pub volumes: Vec<String>,
    /// Targets of empty tmpfs mounts.
    pub tmpfs: Vec<String>,
    pub limits: Limits,
    /// Capability names as the user wrote them (`net_admin`, `CAP_NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    /// Docker's words: `seccomp=unconfined`, `seccomp=PROFILE.json`,
    /// `no-new-privileges[=true|false]`.
    pub security_options: Vec<String>,
    pub read_only: bool,
    pub network: Option<Network>,
    pub hostname: Option<String>,
    /// `NAME`, `UID`, `NAME:GROUP` or `UID:GID`, looked up in the image.
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Replaces the image's entrypoint and drops its cmd.
    pub entrypoint: Option<String>,
    /// Replaces the image's cmd.
    pub command: Vec<String>,
    /// `--ulimit`s: a limit of the same name in the stored defaults is replaced.
    pub ulimits: Vec<Ulimit>,
    /// `--shm-size` in bytes.
    pub shm_size: Option<u64>,
    /// `--sysctl`s (already checked to be of the container's own namespaces); a later
    /// value of the same key wins.
    pub sysctls: Vec<(String, String)>,
    /// `--device`s.
    pub devices: Vec<Device>,
    /// `--init` (`Some(true)`) or `--no-init` (`Some(false)`): whether kiln's small init is
    /// PID 1; `None` leaves it to the stored defaults, else the init.
    pub init: Option<bool>,
    /// Apply stored settings that grant privileges also for an image not built in this
    /// store.
    pub allow_image_privileges: bool,
    /// `--health-*` and `--no-healthcheck`, over the image's healthcheck.
    pub health: HealthSettings,
    /// `--restart`, over the stored `restart:`; `--rm` (a container removed when it ends)
    /// has none.
    pub restart: Option<kiln_spec::RestartPolicy>,
    pub auto_remove: bool,
    /// `-p`: ports to publish (`--network bridge` only); one for a container port the
    /// stored `ports:` publish replaces theirs.
    pub publish: Vec<kiln_spec::PortMapping>,
    /// `-P`: every port the image exposes, not published otherwise, on a free host port.
    pub publish_all: bool,
    /// Run without the limits this kiln cannot apply (an ordinary user's, without a
    /// cgroup of its own) instead of failing; said through [`Notice::LimitsIgnored`].
    pub ignore_limits: bool,
    /// `--network-rate-in/-out`, over the stored `network_rate_in/out`.
    pub rates: Shaping,
    /// `--network NAME` (with `network` `Bridge`): named networks, the first one's
    /// interface `eth0` with the default route.
    pub networks: Vec<crate::named_network::NetworkChoice>,
    /// `--userns`: whose ids the container runs with; `None` is the host's.
    pub userns: Option<runtime::UsernsMode>,
}

/// Docker's `--health-cmd` (a shell command), `--health-interval` … and
/// `--no-healthcheck`; `None` keeps the image's value.
#[derive(Debug, Clone, Default)]
pub struct HealthSettings {
    pub cmd: Option<String>,
    pub interval: Option<std::time::Duration>,
    pub timeout: Option<std::time::Duration>,
    pub start_period: Option<std::time::Duration>,
    pub retries: Option<u32>,
    pub disable: bool,
}

impl HealthSettings {
    /// The probe: the image's healthcheck with these settings over it.
    fn over(&self, image: Option<&kiln_image::Healthcheck>) -> Option<HealthConfig> {
        if self.disable {
            return None;
        }
        let mut check = image.cloned().unwrap_or_default();
        if let Some(cmd) = &self.cmd {
            check.test = vec!["CMD-SHELL".into(), cmd.clone()];
        }
        let nanos = |d: std::time::Duration| d.as_nanos().min(u64::MAX as u128) as u64;
        check.interval = self.interval.map(nanos).or(check.interval);
        check.timeout = self.timeout.map(nanos).or(check.timeout);
        check.start_period = self.start_period.map(nanos).or(check.start_period);
        check.retries = self.retries.or(check.retries);
        HealthConfig::from_image(&check)
    }
}

/// Everything a container gets, merged; the user is still a name, looked up in the image
/// when the container is made.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: Option<String>,
    pub hostname: Option<String>,
    /// Names and addresses added to `/etc/hosts`.
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    pub network: NetworkMode,
    pub mounts: Vec<BindMount>,
    pub tmpfs: Vec<String>,
    /// The size of `/dev/shm` in bytes; `None` is Docker's 64 MiB.
    pub shm_size: Option<u64>,
    pub sysctls: Vec<(String, String)>,
    /// Host devices, read from the host when the settings were merged.
    pub devices: Vec<DeviceNode>,
    pub confinement: Confinement,
    pub read_only: bool,
    pub init: bool,
    /// The healthcheck its runner probes, if any.
    pub health: Option<HealthConfig>,
    pub restart: kiln_spec::RestartPolicy,
    pub publish: Vec<kiln_spec::PortMapping>,
    pub rates: Shaping,
    pub networks: Vec<crate::named_network::NetworkChoice>,
    pub userns: runtime::UsernsMode,
}

/// What the user should be told while the settings are merged; none of it stops the
/// container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The stored settings of `image`, built in this store (or allowed by the caller),
    /// grant these privileges, and they apply.
    Granted { image: String, grants: Vec<String> },
    /// The stored settings of `image`, which was not built in this store, would grant
    /// these privileges; they were dropped.
    Refused { image: String, grants: Vec<String> },
    /// The seccomp profile names syscalls this machine does not have; they are skipped,
    /// as runc does.
    SkippedSyscalls(Vec<String>),
    /// The stored `ports:` are not published: the container's network (`host` or
    /// `none`) has no address of its own to forward them to (docker discards them too).
    PortsNotPublished { network: &'static str },
    /// These limits were asked for but cannot be applied here, and the caller said to
    /// run without them.
    LimitsIgnored(Vec<&'static str>),
}

impl ContainerConfig {
    /// Image config, then the stored `run:` defaults (those that grant privileges only as
    /// far as they may), then `settings`. Notices go to `notify` as they arise.
    pub fn merge(
        source: &Source,
        settings: &RunSettings,
        notify: &mut dyn FnMut(Notice),
    ) -> Result<ContainerConfig> {
        let defaults = trusted_run_defaults(source, settings, notify);
        let config = &source.image.config.config;
        let hostname = settings.hostname.clone().or(defaults.hostname.clone());
        if let Some(h) = &hostname {
            values::hostname(h)?;
        }
        let user = user_of(settings, &defaults, config);
        if let Some(u) = &user {
            values::user(u)?;
        }
        Ok(ContainerConfig {
            argv: command_line(settings, config)?,
            env: environment(settings, &defaults, config),
            cwd: settings
                .workdir
                .clone()
                .or(config.working_dir.clone())
                .unwrap_or_else(|| "/".into()),
            user,
            hostname,
            extra_hosts: extra_hosts(settings, &defaults)?,
            network: network(settings, &defaults),
            mounts: bind_mounts(settings, &defaults)?,
            tmpfs: tmpfs_mounts(settings, &defaults)?,
            shm_size: settings.shm_size.or(defaults.shm_size),
            sysctls: sysctls(settings, &defaults)?,
            devices: devices(settings, &defaults)?,
            confinement: merged_confinement(settings, &defaults, notify)?,
            read_only: settings.read_only || defaults.read_only,
            init: settings.init.or(defaults.init).unwrap_or(true),
            health: settings.health.over(config.healthcheck.as_ref()),
            publish: published(settings, &defaults, &config.exposed_ports, notify)?,
            rates: rates(settings, &defaults)?,
            networks: settings.networks.clone(),
            userns: settings.userns.unwrap_or_default(),
            restart: match settings.auto_remove {
                true => kiln_spec::RestartPolicy::No,
                false => settings.restart.or(defaults.restart).unwrap_or_default(),
            },
        })
    }
}

/// The image's `run:` defaults as far as they may apply (SECURITY.md rule 15). Settings
/// that restrict apply silently. Settings that grant privileges apply to images built in
/// this store from the user's own spec, and are named; for an image from anywhere else
/// they are dropped, and named as refused, unless the caller allows them.
fn trusted_run_defaults(
    source: &Source,
    settings: &RunSettings,
    notify: &mut dyn FnMut(Notice),
) -> RunDefaults {
    let defaults = not_overridden(&source.defaults, settings);
    let (grants, narrowed) = split_grants(&defaults);
    if grants.is_empty() {
        return defaults;
    }
    let image = source.tagged.reference.to_string();
    if source.origin == RunDefaultsOrigin::Build || settings.allow_image_privileges {
        notify(Notice::Granted { image, grants });
        return defaults;
    }
    notify(Notice::Refused { image, grants });
    narrowed
}

/// The stored defaults without what the command line replaces anyway (a stored port `-p`
/// gives again for the same container port, a stored network `--network` overrides), so
/// that no grant is named, granted or refused, that would not apply.
fn not_overridden(stored: &RunDefaults, settings: &RunSettings) -> RunDefaults {
    let mut defaults = stored.clone();
    defaults.ports.retain(|p| {
        !settings
            .publish
            .iter()
            .any(|q| q.container_port == p.container_port && q.protocol == p.protocol)
    });
    if settings.network.is_some() {
        defaults.network = None;
    }
    defaults
}

/// The granting items of `defaults` in words, and `defaults` without them.
fn split_grants(defaults: &RunDefaults) -> (Vec<String>, RunDefaults) {
    let mut grants = Vec::new();
    let mut narrowed = defaults.clone();
    if defaults.privileged {
        grants.push("privileged".to_string());
        narrowed.privileged = false;
    }
    let default_caps = runtime::capabilities::default_mask();
    let grants_cap = |name: &String| {
        name == "ALL"
            || runtime::capabilities::parse_capability(name, runtime::capabilities::last_cap())
                .ok()
                .flatten()
                .is_none_or(|bit| default_caps & (1 << bit) == 0)
    };
    for cap in defaults.cap_add.iter().filter(|c| grants_cap(c)) {
        grants.push(format!("cap-add {cap}"));
    }
    narrowed.cap_add.retain(|c| !grants_cap(c));
    for m in &defaults.mounts {
        let mode = if m.readonly { ":ro" } else { "" };
        grants.push(format!("mount {}:{}{mode}", m.source.display(), m.target));
    }
    narrowed.mounts.clear();
    if defaults.network == Some(Network::Host) {
        grants.push("network host".to_string());
        narrowed.network = None;
    }
    for d in &defaults.devices {
        grants.push(format!(
            "device {}:{}:{}",
            d.host.display(),
            d.container,
            d.access
        ));
    }
    narrowed.devices.clear();
    for u in defaults.ulimits.iter().filter(|u| raises_a_limit(u)) {
        grants.push(format!(
            "ulimit {}={}:{}",
            u.name,
            limit_text(u.soft),
            limit_text(u.hard)
        ));
    }
    narrowed.ulimits.retain(|u| !raises_a_limit(u));
    // A published port opens the host to the network: an image's settings travel with it
    // (the `dev.kiln.run` label), and one from elsewhere must not do that on its own.
    for p in &defaults.ports {
        let ip = p.host_ip.map_or("0.0.0.0".to_string(), |ip| ip.to_string());
        let host = p.host_port.map_or(String::new(), |port| port.to_string());
        grants.push(format!(
            "publish {ip}:{host}:{}/{}",
            p.container_port, p.protocol
        ));
    }
    narrowed.ports.clear();
    (grants, narrowed)
}

/// Whether a stored ulimit goes above kiln's own hard limit: only a process holding
/// CAP_SYS_RESOURCE (the container's setup) can set it, so it grants what the caller
/// does not have (real-time priority, locked memory, more files). A lower one restricts.
fn raises_a_limit(u: &Ulimit) -> bool {
    runtime::Rlimit::new(&u.name, u.soft, u.hard)
        .ok()
        .and_then(|l| l.current_hard())
        .is_none_or(|hard| u.hard > hard)
}

fn limit_text(value: u64) -> String {
    match value {
        kiln_spec::UNLIMITED => "unlimited".into(),
        n => n.to_string(),
    }
}

/// Docker's rules: an entrypoint given replaces the image's entrypoint and drops its cmd;
/// a command given replaces the cmd.
fn command_line(settings: &RunSettings, config: &RuntimeConfig) -> Result<Vec<String>> {
    let entrypoint = match &settings.entrypoint {
        Some(e) => vec![e.clone()],
        None => config.entrypoint.clone().unwrap_or_default(),
    };
    let cmd = if !settings.command.is_empty() {
        settings.command.clone()
    } else if settings.entrypoint.is_some() {
        Vec::new()
    } else {
        config.cmd.clone().unwrap_or_default()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    Ok(argv)
}

/// The image's environment, then the spec's `run.env`, then the settings'. A container
/// always has a PATH, so every runtime finds the same command.
fn environment(
    settings: &RunSettings,
    defaults: &RunDefaults,
    config: &RuntimeConfig,
) -> Vec<String> {
    let mut env = RuntimeConfig {
        env: config.env.clone(),
        ..Default::default()
    };
    for (k, v) in defaults.env.iter().chain(&settings.env) {
        env.set_env(k, v);
    }
    if !env.env.iter().any(|kv| kv.starts_with("PATH=")) {
        env.env.insert(0, format!("PATH={}", runtime::DEFAULT_PATH));
    }
    env.env
}

/// The image's `run:` defaults, then the settings: limits, capabilities, privileged and
/// security options, through the same function a build step's confinement comes from.
fn merged_confinement(
    settings: &RunSettings,
    defaults: &RunDefaults,
    notify: &mut dyn FnMut(Notice),
) -> Result<Confinement> {
    let names = |stored: &[String], given: &[String]| -> Result<Vec<String>> {
        let mut out = stored.to_vec();
        for n in given {
            out.push(values::capability(n)?);
        }
        Ok(out)
    };
    let privileges = Privileges {
        privileged: settings.privileged || defaults.privileged,
        cap_add: names(&defaults.cap_add, &settings.cap_add)?,
        cap_drop: names(&defaults.cap_drop, &settings.cap_drop)?,
    };
    let limits = limits_over(&settings.limits, &defaults.limits);
    let options = security_options(&settings.security_options)?;
    let mut confinement = confinement(&privileges, &limits, &options)?;
    confinement.rlimits = rlimits(settings, defaults)?;
    let skipped = check_seccomp_profile(&confinement)?;
    if !skipped.is_empty() {
        notify(Notice::SkippedSyscalls(skipped));
    }
    if settings.ignore_limits && !runtime::limits_apply() {
        let resources = &mut confinement.resources;
        let ignored = resources.requested();
        if !ignored.is_empty() {
            // The device list stays: it is what the container may open, not a limit.
            let devices = std::mem::take(&mut resources.devices);
            *resources = runtime::Resources {
                devices,
                ..Default::default()
            };
            notify(Notice::LimitsIgnored(ignored));
        }
    }
    Ok(confinement)
}

/// The stored ulimits, each replaced by the settings' of the same name, then the
/// settings' others.
fn rlimits(settings: &RunSettings, defaults: &RunDefaults) -> Result<Vec<runtime::Rlimit>> {
    let given = |name: &str| settings.ulimits.iter().any(|u| u.name == name);
    defaults
        .ulimits
        .iter()
        .filter(|u| !given(&u.name))
        .chain(&settings.ulimits)
        .map(|u| Ok(runtime::Rlimit::new(&u.name, u.soft, u.hard)?))
        .collect()
}

/// The stored `/etc/hosts` lines, then the settings'; stored names are checked again, as
/// they were not read by the spec's parser.
fn extra_hosts(
    settings: &RunSettings,
    defaults: &RunDefaults,
) -> Result<Vec<(String, std::net::IpAddr)>> {
    for (name, _) in &defaults.extra_hosts {
        values::hostname(name)?;
    }
    Ok([&defaults.extra_hosts[..], &settings.extra_hosts[..]].concat())
}

/// The stored sysctls, then the settings' (a later value of a key wins). A `net.*` one
/// needs the container's own network namespace.
fn sysctls(settings: &RunSettings, defaults: &RunDefaults) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (key, value) in defaults.sysctls.iter().chain(&settings.sysctls) {
        // Stored defaults are read from index.json, not through the spec's parser: a key
        // of the host's kernel must never get this far (written as root, it would change
        // the host), whoever wrote it.
        values::sysctl(&format!("{key}={value}"))?;
        out.retain(|(k, _)| k != key);
        out.push((key.clone(), value.clone()));
    }
    if network(settings, defaults) == NetworkMode::Host {
        if let Some((key, _)) = out
            .iter()
            .find(|(k, _)| values::sysctl_needs_own_network(k))
        {
            return Err(ContainerError::SysctlWithHostNetwork(key.clone()));
        }
    }
    Ok(out)
}

/// The stored devices, then the settings', each read from the host now.
fn devices(settings: &RunSettings, defaults: &RunDefaults) -> Result<Vec<DeviceNode>> {
    let mut nodes = Vec::new();
    let mut asked = defaults.devices.iter().chain(&settings.devices).peekable();
    if asked.peek().is_some() && runtime::userns::rootless() {
        return Err(ContainerError::DevicesNeedRoot);
    }
    for d in asked {
        // The spec's and the flags' parsers only let rwm letters through.
        let access = runtime::Access::from_letters(&d.access).unwrap_or(runtime::Access::NONE);
        nodes.extend(DeviceNode::from_host(&d.host, &d.container, access)?);
    }
    DeviceNode::check_distinct(&nodes)?;
    Ok(nodes)
}

/// The stored `ports:`, each container port that `-p` publishes taken from the settings
/// instead (docker compose's override of a service's port), then `-P`'s: every exposed
/// tcp and udp port published by neither, on a free host port of every address. Only a
/// container on the bridge network can have them: given ones are an error elsewhere,
/// stored ones are dropped with a notice (as docker discards ports with the host's
/// network).
fn published(
    settings: &RunSettings,
    defaults: &RunDefaults,
    exposed: &std::collections::BTreeMap<String, kiln_image::Empty>,
    notify: &mut dyn FnMut(Notice),
) -> Result<Vec<kiln_spec::PortMapping>> {
    let mode = network(settings, defaults);
    if mode != NetworkMode::Bridge {
        if !settings.publish.is_empty() || settings.publish_all {
            return Err(ContainerError::Network(
                "published ports need the container's own address on kiln's bridge network: drop --network host/none (or give --network bridge)".into(),
            ));
        }
        if !defaults.ports.is_empty() {
            let network = match mode {
                NetworkMode::Host => "host",
                _ => "none",
            };
            notify(Notice::PortsNotPublished { network });
        }
        return Ok(Vec::new());
    }
    let same_port = |a: &kiln_spec::PortMapping, b: &kiln_spec::PortMapping| {
        a.container_port == b.container_port && a.protocol == b.protocol
    };
    let mut ports: Vec<kiln_spec::PortMapping> = defaults
        .ports
        .iter()
        .filter(|stored| {
            !settings
                .publish
                .iter()
                .any(|given| same_port(stored, given))
        })
        .chain(&settings.publish)
        .cloned()
        .collect();
    if settings.publish_all {
        for port in exposed.keys().filter_map(|key| exposed_port(key)) {
            if !ports.iter().any(|p| same_port(p, &port)) {
                ports.push(port);
            }
        }
    }
    Ok(ports)
}

/// An `ExposedPorts` key (`80/tcp`, `53/udp`) as a port to publish on a free host port;
/// `None` for sctp, which kiln does not publish yet, and for a key it cannot read.
fn exposed_port(key: &str) -> Option<kiln_spec::PortMapping> {
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = match protocol {
        "tcp" => kiln_spec::Protocol::Tcp,
        "udp" => kiln_spec::Protocol::Udp,
        _ => return None,
    };
    Some(kiln_spec::PortMapping {
        host_ip: None,
        host_port: None,
        container_port: port.parse().ok().filter(|&p| p > 0)?,
        protocol,
    })
}

/// `--network-rate-in/-out` over the stored `network_rate_in/out`: a limit the container's
/// network cannot enforce (the host's, or none) is an error, never dropped.
fn rates(settings: &RunSettings, defaults: &RunDefaults) -> Result<Shaping> {
    let rates = Shaping {
        rate_in: settings.rates.rate_in.or(defaults.network_rate_in),
        rate_out: settings.rates.rate_out.or(defaults.network_rate_out),
    };
    let limited = rates.rate_in.is_some() || rates.rate_out.is_some();
    if limited && network(settings, defaults) != NetworkMode::Bridge {
        return Err(ContainerError::NetworkRateWithoutBridge);
    }
    Ok(rates)
}

/// The settings' network, else the spec's, else kiln's bridge network (docker's default).
fn network(settings: &RunSettings, defaults: &RunDefaults) -> NetworkMode {
    match settings.network.or(defaults.network).unwrap_or_default() {
        Network::Host => NetworkMode::Host,
        Network::Bridge => NetworkMode::Bridge,
        Network::None => NetworkMode::None,
    }
}

/// The spec's `mounts:` and then the settings' volumes; every source must exist.
fn bind_mounts(settings: &RunSettings, defaults: &RunDefaults) -> Result<Vec<BindMount>> {
    let mut mounts: Vec<BindMount> = defaults
        .mounts
        .iter()
        .map(|m| BindMount {
            source: m.source.clone(),
            target: m.target.clone(),
            readonly: m.readonly,
        })
        .collect();
    for v in &settings.volumes {
        mounts.push(parse_volume(v)?);
    }
    if let Some(m) = mounts.iter().find(|m| !m.source.exists()) {
        return Err(ContainerError::BindSourceMissing(m.source.clone()));
    }
    Ok(mounts)
}

fn tmpfs_mounts(settings: &RunSettings, defaults: &RunDefaults) -> Result<Vec<String>> {
    let tmpfs: Vec<String> = defaults
        .tmpfs
        .iter()
        .chain(&settings.tmpfs)
        .cloned()
        .collect();
    if let Some(t) = tmpfs.iter().find(|t| !t.starts_with('/')) {
        return Err(ContainerError::TmpfsTarget(t.clone()));
    }
    Ok(tmpfs)
}

/// `SRC:DST[:ro|rw]`; a relative SRC is taken from the current directory.
fn parse_volume(v: &str) -> Result<BindMount> {
    let bad = || ContainerError::BadVolume(v.to_owned());
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, readonly) = match parts.as_slice() {
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        _ => return Err(bad()),
    };
    if src.is_empty() || !dst.starts_with('/') {
        return Err(bad());
    }
    let source: PathBuf = std::path::absolute(src).map_err(|_| bad())?;
    Ok(BindMount {
        source,
        target: dst.to_owned(),
        readonly,
    })
}

/// Who the container runs as: `--user`, else the stored `run: user:`, else the image's
/// `User`. An empty `User` is Docker's way of writing none (docker-format images without
/// a USER carry `"User": ""`): the image's default, root.
fn user_of(
    settings: &RunSettings,
    defaults: &RunDefaults,
    config: &RuntimeConfig,
) -> Option<String> {
    let image_user = config.user.clone().filter(|u| !u.is_empty());
    settings
        .user
        .clone()
        .or(defaults.user.clone())
        .or(image_user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_spec::Mount;

    #[test]
    fn volumes_parse_and_bad_ones_are_errors() {
        let m = parse_volume("/src:/dst:ro").unwrap();
        assert_eq!(
            (m.source, m.target.as_str(), m.readonly),
            (PathBuf::from("/src"), "/dst", true)
        );
        assert!(!parse_volume("/src:/dst:rw").unwrap().readonly);
        assert!(parse_volume("rel:/dst").unwrap().source.is_absolute());
        for bad in ["/src", ":/dst", "/src:dst", "/src:/dst:rx", "a:/b:ro:x"] {
            assert!(
                matches!(parse_volume(bad), Err(ContainerError::BadVolume(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn grants_are_split_from_what_restricts() {
        let defaults = RunDefaults {
            privileged: true,
            cap_add: vec!["CHOWN".into(), "NET_ADMIN".into()],
            cap_drop: vec!["ALL".into()],
            network: Some(Network::Host),
            mounts: vec![Mount {
                source: "/srv".into(),
                target: "/srv".into(),
                readonly: true,
            }],
            limits: Limits {
                memory: Some(64 << 20),
                ..Default::default()
            },
            devices: vec![Device {
                host: "/dev/fuse".into(),
                container: "/dev/fuse".into(),
                access: "rw".into(),
            }],
            ulimits: vec![
                // Above kiln's own hard limit: a grant. Below it: a restriction.
                Ulimit {
                    name: "nofile".into(),
                    soft: kiln_spec::UNLIMITED,
                    hard: kiln_spec::UNLIMITED,
                },
                Ulimit {
                    name: "core".into(),
                    soft: 0,
                    hard: 0,
                },
            ],
            sysctls: vec![("kernel.shmmax".into(), "1".into())],
            ..Default::default()
        };
        let (grants, narrowed) = split_grants(&defaults);
        assert_eq!(
            grants,
            [
                "privileged",
                "cap-add NET_ADMIN",
                "mount /srv:/srv:ro",
                "network host",
                "device /dev/fuse:/dev/fuse:rw",
                "ulimit nofile=unlimited:unlimited",
            ]
        );
        assert!(narrowed.devices.is_empty());
        assert_eq!(narrowed.ulimits, defaults.ulimits[1..]);
        // Sysctls reach only the container's own namespaces: no grant.
        assert_eq!(narrowed.sysctls, defaults.sysctls);
        assert!(!narrowed.privileged && narrowed.mounts.is_empty());
        assert_eq!(narrowed.cap_add, ["CHOWN"]);
        assert_eq!(narrowed.network, None);
        // What restricts stays.
        assert_eq!(narrowed.cap_drop, ["ALL"]);
        assert_eq!(narrowed.limits.memory, Some(64 << 20));
    }

    #[test]
    fn an_empty_image_user_is_no_user() {
        let config = RuntimeConfig {
            user: Some(String::new()),
            ..Default::default()
        };
        let none = RunSettings::default();
        assert_eq!(user_of(&none, &RunDefaults::default(), &config), None);
        let app = RuntimeConfig {
            user: Some("app".into()),
            ..Default::default()
        };
        assert_eq!(
            user_of(&none, &RunDefaults::default(), &app).as_deref(),
            Some("app")
        );
        let given = RunSettings {
            user: Some("1000".into()),
            ..Default::default()
        };
        assert_eq!(
            user_of(&given, &RunDefaults::default(), &config).as_deref(),
            Some("1000")
        );
    }

    #[test]
    fn later_layers_of_settings_win() {
        let config = RuntimeConfig {
            env: vec!["A=image".into(), "B=image".into()],
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["cmd".into()]),
            ..Default::default()
        };
        let defaults = RunDefaults {
            env: vec![("B".into(), "spec".into()), ("C".into(), "spec".into())],
            ..Default::default()
        };
        let settings = RunSettings {
            env: vec![("C".into(), "flag".into())],
            ..Default::default()
        };
        let env = environment(&settings, &defaults, &config);
        assert_eq!(env[0], format!("PATH={}", runtime::DEFAULT_PATH));
        assert_eq!(env[1..], ["A=image", "B=spec", "C=flag"]);
        assert_eq!(command_line(&settings, &config).unwrap(), ["/entry", "cmd"]);
        let entrypoint = RunSettings {
            entrypoint: Some("/other".into()),
            ..Default::default()
        };
        assert_eq!(command_line(&entrypoint, &config).unwrap(), ["/other"]);
        assert!(matches!(
            command_line(&RunSettings::default(), &RuntimeConfig::default()),
            Err(ContainerError::NoCommand)
        ));
    }

    fn port(
        host: Option<u16>,
        container: u16,
        protocol: kiln_spec::Protocol,
    ) -> kiln_spec::PortMapping {
        kiln_spec::PortMapping {
            host_ip: None,
            host_port: host,
            container_port: container,
            protocol,
        }
    }

    #[test]
    fn a_stored_grant_the_command_line_replaces_is_not_named() {
        use kiln_spec::Protocol::Tcp;
        let stored = RunDefaults {
            network: Some(Network::Host),
            ports: vec![port(Some(8080), 80, Tcp), port(Some(8443), 443, Tcp)],
            ..Default::default()
        };
        let settings = RunSettings {
            publish: vec![port(None, 80, Tcp)],
            network: Some(Network::Bridge),
            ..Default::default()
        };
        let (grants, _) = split_grants(&not_overridden(&stored, &settings));
        assert_eq!(grants, vec!["publish 0.0.0.0:8443:443/tcp".to_string()]);
    }

    #[test]
    fn given_ports_override_stored_ones_and_publish_all_adds_the_rest() {
        use kiln_spec::Protocol::{Tcp, Udp};
        let defaults = RunDefaults {
            network: Some(Network::Bridge),
            ports: vec![port(Some(8080), 80, Tcp), port(Some(5353), 53, Udp)],
            ..Default::default()
        };
        let settings = RunSettings {
            publish: vec![port(Some(9090), 80, Tcp)],
            publish_all: true,
            ..Default::default()
        };
        let exposed = ["80/tcp", "53/udp", "443/tcp", "9/sctp", "x/tcp"]
            .map(|k| (k.to_owned(), kiln_image::Empty {}))
            .into_iter()
            .collect();
        let mut notices = Vec::new();
        let ports = published(&settings, &defaults, &exposed, &mut |n| notices.push(n)).unwrap();
        assert_eq!(
            ports,
            [
                port(Some(5353), 53, Udp),
                port(Some(9090), 80, Tcp),
                port(None, 443, Tcp),
            ]
        );
        assert!(notices.is_empty());
        // Without the bridge: given ports are an error, stored ones a notice.
        let host = RunDefaults {
            network: Some(Network::Host),
            ..defaults
        };
        let none = published(&RunSettings::default(), &host, &exposed, &mut |n| {
            notices.push(n)
        });
        assert_eq!(none.unwrap(), []);
        assert_eq!(notices, [Notice::PortsNotPublished { network: "host" }]);
        let given = published(&settings, &host, &exposed, &mut |_| {});
        assert!(matches!(given, Err(ContainerError::Network(_))));
    }

    #[test]
    fn rates_need_the_bridge() {
        let defaults = RunDefaults {
            network_rate_in: Some(1_000_000),
            ..Default::default()
        };
        let settings = RunSettings {
            rates: Shaping {
                rate_in: None,
                rate_out: Some(8_000_000),
            },
            network: Some(Network::Bridge),
            ..Default::default()
        };
        let rates = super::rates(&settings, &defaults).unwrap();
        assert_eq!(
            (rates.rate_in, rates.rate_out),
            (Some(1_000_000), Some(8_000_000))
        );
        let none = RunSettings {
            network: Some(Network::None),
            ..settings
        };
        assert!(matches!(
            super::rates(&none, &defaults),
            Err(ContainerError::NetworkRateWithoutBridge)
        ));
    }
}
