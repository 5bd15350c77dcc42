//! The typed model of a `kiln.yaml` after parsing, substitution and validation.
//!
//! Every value here is already checked: modes are numbers, sizes are bytes, capability
//! names are known, `${VAR}` references are resolved (except in a string `run:` script,
//! which belongs to the shell), stage references point at earlier stages. Code below `spec` never re-validates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Where in the spec file something was written (1-based), for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// A whole, validated spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The spec file as passed to [`super::load`] (used in messages: `kiln.yaml:12:5`).
    /// Host paths in the spec are absolute whatever this is: relative ones were taken from
    /// this file's folder, made absolute when the spec was read.
    pub file: PathBuf,
    /// `image:`, the default tag for `kiln build`.
    pub image: Option<String>,
    /// Where `image:` was written, for the build's errors about the name.
    pub image_location: Option<Location>,
    /// `args:` after `--arg` overrides (name → value).
    pub args: BTreeMap<String, String>,
    /// `contexts:`: named build contexts, absolute paths (relative ones were taken from the
    /// spec's folder).
    pub contexts: BTreeMap<String, PathBuf>,
    /// Top-level `env:`, in file order. Already included at the start of every
    /// [`Stage::env`]; kept here for display.
    pub env: Vec<(String, String)>,
    /// The stages in file order, never empty; the last one is the image. A spec without
    /// `stages:` has one stage named [`SINGLE_STAGE_NAME`].
    pub stages: Vec<Stage>,
    /// `config:` of the final image.
    pub config: Config,
    /// `run:` defaults of the final image.
    pub run: RunDefaults,
}

/// The name of the only stage of a spec written with top-level `from:`/`steps:`.
pub const SINGLE_STAGE_NAME: &str = "main";

/// One stage: a base and the steps run on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// The key under `stages:`, or [`SINGLE_STAGE_NAME`].
    pub name: String,
    pub from: From,
    /// `${NAME}` args used by `from:` (directly, not through `env`).
    pub from_args_used: BTreeSet<String>,
    pub steps: Vec<Step>,
    /// The environment the stage's steps start with, set on top of the base's config: the
    /// top-level `env:` then the stage's own `env:`, in file order (a later entry of the
    /// same name wins).
    pub env: Vec<(String, String)>,
    /// Args referenced (directly) by the values of [`Stage::env`].
    pub env_args_used: BTreeSet<String>,
    /// The stage's key under `stages:`, or the top-level `from:` key.
    pub location: Location,
    /// The `from:` value, for the build's errors about the base it names.
    pub from_location: Location,
}

/// The base of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    Scratch,
    /// `oci:PATH[:TAG]`: an OCI image layout on disk.
    OciLayout {
        path: PathBuf,
        tag: Option<String>,
    },
    /// `rootfs:PATH`: a directory or a tarball (optionally gzip/zstd compressed).
    Rootfs(PathBuf),
    /// Anything else: an image reference, looked up in the local store.
    Image(String),
    /// The result of an earlier stage, by name.
    Stage(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    /// Names of `args:` this step's own text refers to, where the name meant the arg and not
    /// an `env` variable of the same name: `${NAME}` (or `${NAME:-default}`) that kiln
    /// substituted, and in a string `run:` script, which kiln leaves to the shell, `$NAME`
    /// and `${NAME…}`. Args that reach the step only through an `env` value are not listed.
    pub args_used: BTreeSet<String>,
    /// Where the step starts in the spec (the `-` of the list item's first key).
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Run(RunStep),
    Copy(CopyStep),
    /// `env:` step: adds to the environment of later steps and of the image.
    Env(Vec<(String, String)>),
    /// `workdir:` step: absolute path.
    Workdir(String),
    /// `user:` step: `NAME`, `UID`, `NAME:GROUP` or `UID:GID`.
    User(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunStep {
    pub command: Command,
    pub network: Network,
    /// `capabilities:` and `privileged:`: what the step may do beyond a default container.
    pub privileges: Privileges,
    /// `resources:`: the step's cgroup limits (over `kiln build --memory` etc.); boxed, as
    /// the largest part of a step that most steps leave empty.
    pub limits: Box<Limits>,
    /// `cache:` persistent cache mount targets (absolute paths).
    pub cache: Vec<String>,
    pub secrets: Vec<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A string: `script` exactly as written (kiln substitutes nothing in it: `${NAME}` is
    /// the shell's), run as the last argument of `shell`.
    Shell { script: String, shell: Vec<String> },
    /// A list: exec'd as is.
    Argv(Vec<String>),
}

/// The shell of a string `run:` without a `shell:` setting. `-e` stops a multi-line script
/// at its first failing command, as a Dockerfile user and GitHub Actions expect.
pub const DEFAULT_SHELL: [&str; 3] = ["/bin/sh", "-e", "-c"];

impl Command {
    /// The argv to execute.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Shell { script, shell } => {
                shell.iter().cloned().chain([script.clone()]).collect()
            }
            Command::Argv(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Share the host's network: an explicit grant, in a step as in `run:`.
    Host,
    /// A fresh network namespace with only loopback.
    None,
    /// Its own network namespace with an address on kiln's bridge, outbound NAT and (for
    /// containers) published ports: the default for build steps and containers.
    #[default]
    Bridge,
}

/// `capabilities: { add, drop }` and `privileged:` of a run step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Privileges {
    /// Every capability kiln holds, no seccomp filter, setuid gains allowed.
    pub privileged: bool,
    /// Upper-case names without the `CAP_` prefix, or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
}

/// The cgroup controls of `run:`, of a run step's `resources:` and of the limit flags
/// (`--memory`, `--cpu-shares`, …), with Docker's meanings. `None` and empty mean "not
/// set". Serialisable because [`RunDefaults`] keeps them, flattened.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Bytes.
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
    /// Soft memory limit in bytes (`--memory-reservation`), at most `memory`.
    pub memory_reservation: Option<u64>,
    /// Memory plus swap (`--memory-swap`); needs `memory`. `None` means no swap on top of
    /// `memory`, kiln's default (Docker's is twice the memory).
    pub memory_swap: Option<MemorySwap>,
    /// The CPU's relative weight, as v1 shares or v2 weight (one knob, two scales).
    pub cpu_weight: Option<CpuWeight>,
    /// CPUs the container may run on, a list like `0-1,3`, checked against this machine.
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use, a list like `0`, checked against this machine.
    pub cpuset_mems: Option<String>,
    /// The block I/O weight, 10 to 1000.
    pub blkio_weight: Option<u16>,
    /// Per-device read/write throttles, in the order given: a later one for the same device
    /// and kind wins (so flags, which come after `run:`'s, override them).
    pub device_throttles: Vec<DeviceThrottle>,
}

/// `memory_swap` / `--memory-swap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemorySwap {
    /// Memory plus swap, in bytes (at least the memory limit).
    Limit(u64),
    /// `-1`: as much swap as the host has.
    Unlimited,
}

/// `cpu_shares` (cgroup v1's scale, 2 to 262144, default 1024) or `cpu_weight` (v2's, 1 to
/// 10000, default 100): the same control, kept in the scale it was given in; the cgroup
/// code converts between them as runc does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuWeight {
    Shares(u64),
    Weight(u64),
}

/// One `device_read_bps`-like entry: a host block device and its limit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceThrottle {
    pub kind: ThrottleKind,
    /// A host path under `/dev/`, resolved to the device's numbers when a container starts.
    pub path: PathBuf,
    /// Bytes or operations per second, at least 1.
    pub rate: u64,
}

/// What a [`DeviceThrottle`] limits; the names are the spec keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleKind {
    DeviceReadBps,
    DeviceWriteBps,
    DeviceReadIops,
    DeviceWriteIops,
}

impl ThrottleKind {
    pub const ALL: [ThrottleKind; 4] = [
        ThrottleKind::DeviceReadBps,
        ThrottleKind::DeviceWriteBps,
        ThrottleKind::DeviceReadIops,
        ThrottleKind::DeviceWriteIops,
    ];

    /// The spec key: `device_read_bps`, …
    pub fn key(self) -> &'static str {
        match self {
            ThrottleKind::DeviceReadBps => "device_read_bps",
            ThrottleKind::DeviceWriteBps => "device_write_bps",
            ThrottleKind::DeviceReadIops => "device_read_iops",
            ThrottleKind::DeviceWriteIops => "device_write_iops",
        }
    }

    /// Bytes per second (a size like `1mb`), rather than operations per second.
    pub fn is_bytes(self) -> bool {
        matches!(
            self,
            ThrottleKind::DeviceReadBps | ThrottleKind::DeviceWriteBps
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    pub id: String,
    pub source: SecretSource,
    /// Absolute path in the container, default `/run/secrets/ID`.
    pub target: String,
    /// The secret's entry in the spec, for the build's errors about its source.
    pub location: Location,
}

/// Where a secret's value comes from at build time. The spec does not read it: a missing
/// file or variable is found by the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `source: PATH`, absolute (a relative one was taken from the spec's folder).
    File(PathBuf),
    /// `env: VAR`: a variable of `kiln build`'s own environment.
    Env(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStep {
    /// Source paths (at least one), never containing `..`. A trailing `/` or a directory
    /// copies the directory's contents. Relative to the context for
    /// [`CopyFrom::BuildContext`] and [`CopyFrom::Context`]; absolute (a relative one is
    /// made absolute) inside the stage's filesystem for [`CopyFrom::Stage`].
    pub sources: Vec<String>,
    /// `from:`.
    pub from: CopyFrom,
    /// Destination inside the image (absolute, or relative to the current workdir).
    pub to: String,
    /// `mode:` e.g. `"0755"`.
    pub mode: Option<u32>,
    /// `owner:` `UID[:GID]` (numeric, or names resolved at build time from the image).
    pub owner: Option<String>,
}

/// What a `copy` step copies from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFrom {
    /// No `from:`: the spec's own folder (the build context).
    BuildContext,
    /// A name declared under `contexts:`.
    Context(String),
    /// The filesystem of an earlier stage, by name.
    Stage(String),
}

/// `config:`: written into the OCI image config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// `8080/tcp`, `53/udp` (a bare port means tcp and is normalised to `PORT/tcp`).
    pub expose: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub volumes: Vec<String>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<Healthcheck>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `[CMD, arg...]`, `[CMD-SHELL, cmd]` or `[NONE]`.
    pub test: Vec<String>,
    /// Durations in nanoseconds, as the image config stores them.
    pub interval_ns: Option<u64>,
    pub timeout_ns: Option<u64>,
    pub start_period_ns: Option<u64>,
    pub retries: Option<u32>,
}

/// `run:`: defaults for `kiln run`, which command-line flags override. Serialisable because
/// the store keeps them with the image's tags (see `image::with_run_defaults`).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunDefaults {
    /// `memory`, `cpus`, `pids`, `cpu_shares`, …: flattened, so the stored keys are the
    /// same as before the other controls existed.
    #[serde(flatten)]
    pub limits: Limits,
    /// Upper-case names without the `CAP_` prefix, or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Every capability, no seccomp filter: granted only to images built in this store.
    pub privileged: bool,
    pub read_only: bool,
    pub network: Option<Network>,
    pub hostname: Option<String>,
    pub tmpfs: Vec<String>,
    pub mounts: Vec<Mount>,
    pub env: Vec<(String, String)>,
    pub user: Option<String>,
    /// `env_file:` host paths, absolute (relative ones were taken from the spec's folder).
    /// `kiln build` reads them and stores their variables at the start of `env`, so what
    /// is kept with a tag never names one and `kiln run` reads no host file for them.
    pub env_file: Vec<PathBuf>,
    /// `extra_hosts:` lines added to the container's `/etc/hosts` (`--add-host`).
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// `ulimits:`: process resource limits (`--ulimit`).
    pub ulimits: Vec<Ulimit>,
    /// `shm_size:`: the size of `/dev/shm` in bytes (`--shm-size`).
    pub shm_size: Option<u64>,
    /// `sysctls:`: keys of the container's own namespaces and their values (`--sysctl`).
    pub sysctls: Vec<(String, String)>,
    /// `devices:`: host devices the container gets (`--device`); a grant, like `mounts`.
    pub devices: Vec<Device>,
    /// `init:`: run kiln's small init as PID 1 (`--init`, `--no-init`); `None` is kiln's
    /// default, which is the init.
    pub init: Option<bool>,
    /// `restart:` (`--restart`); `None` is `no`.
    pub restart: Option<RestartPolicy>,
    /// `ports:` published with the bridge network (`-p`), a range already one per port.
    pub ports: Vec<crate::PortMapping>,
    /// `network_rate_in:` (`--network-rate-in`): bits per second to the container.
    pub network_rate_in: Option<u64>,
    /// `network_rate_out:` (`--network-rate-out`): bits per second from the container.
    pub network_rate_out: Option<u64>,
}

/// `restart:` / `--restart`: whether a container that ended is started again (docker's
/// policies; what they mean is `kiln_container::restart`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    /// A non-zero exit, at most `max` times (`None`: without end).
    OnFailure {
        max: Option<u32>,
    },
    Always,
    UnlessStopped,
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max: Some(n) } => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

/// One `--ulimit`: a process resource limit by Docker's name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ulimit {
    /// Lower case, one of Docker's names (`nofile`, `nproc`, …).
    pub name: String,
    /// [`crate::UNLIMITED`] means no limit.
    pub soft: u64,
    pub hard: u64,
}

/// One `--device`: a host device node made in the container's `/dev`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Device {
    /// The host path, absolute: a device node (or a directory of them).
    pub host: PathBuf,
    /// Where it appears in the container, normalised, under `/dev/`.
    pub container: String,
    /// The letters of `rwm` allowed, in that order.
    pub access: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// Host path, absolute (a relative one was taken from the spec's folder).
    pub source: PathBuf,
    pub target: String,
    pub readonly: bool,
}

impl Spec {
    /// The position of the stage called `name`.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|stage| stage.name == name)
    }

    /// The stage that becomes the image: the last one.
    pub fn final_stage(&self) -> &Stage {
        self.stages
            .last()
            .expect("the spec parser never produces a spec without stages")
    }
}

impl Stage {
    /// The earlier stages this one reads (its `from:` and its `copy … from:`), by name.
    pub fn dependencies(&self) -> BTreeSet<&str> {
        let base = match &self.from {
            From::Stage(name) => Some(name.as_str()),
            _ => None,
        };
        let copies = self.steps.iter().filter_map(|step| match &step.kind {
            StepKind::Copy(CopyStep {
                from: CopyFrom::Stage(name),
                ..
            }) => Some(name.as_str()),
            _ => None,
        });
        base.into_iter().chain(copies).collect()
    }
}
