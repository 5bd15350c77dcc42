//! `kiln run` and `kiln bundle`: an image from the store as a container.
//!
//! Both fill the same `RunSettings` from their flags and hand it to `kiln_container`, which
//! merges it over the image's config and the spec's `run:` defaults kept with the tag, so
//! what `kiln bundle` hands to runc is exactly what `kiln run` would do. What is left here
//! is the command line's part: the flags, kiln's environment (`-e K`), what is printed,
//! signals and exit codes.

use std::path::PathBuf;

use clap::Args;
use kiln_runtime::UsernsMode;

use super::{CmdResult, Failure, Globals, EXIT_NOT_STARTED};
use std::time::Instant;

use kiln_container::health::HealthProbe;
use kiln_container::log::LogOptions;
use kiln_container::monitor::{ControlSocket, OutputLog, Supervisor};
use kiln_container::restart::{self, Backoff, RestartPolicy};
use kiln_container::start::StartConfig;
use kiln_container::{
    self as container, ConfineError, ContainerConfig, ContainerError, Launch, Notice,
};
use kiln_container::{RunSettings, Source};
use kiln_image::RunDefaultsOrigin;
use kiln_runtime as runtime;
use kiln_spec::{values, Network, RunDefaults};
use kiln_store::ContainerState;
use kiln_store::{ContainerDir, Store, Tagged};

/// Options shared by `kiln run` and `kiln bundle`: everything that shapes the container.
#[derive(Args, Debug, Clone)]
pub struct ContainerArgs {
    /// Set an environment variable (K=V, or K to take the value from kiln's environment)
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Read environment variables from a file: NAME=VALUE or NAME per line, # comments
    /// (before -e, which wins)
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Add a line to the container's /etc/hosts: NAME:IP (IPv6 too, with or without [ ])
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// Bind mount a host path: SRC:DST[:ro]
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    volumes: Vec<String>,
    /// Mount an empty tmpfs at DST
    #[arg(long, value_name = "DST")]
    tmpfs: Vec<String>,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
    /// Run without the limits kiln cannot apply here (an ordinary user without a
    /// delegated cgroup v2 subtree) instead of failing; a warning names them
    #[arg(long = "ignore-limits")]
    ignore_limits: bool,
    /// Add a Linux capability (e.g. NET_ADMIN)
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a Linux capability (ALL drops every one)
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Give the container every capability, no seccomp filter and no_new_privs off
    #[arg(long)]
    privileged: bool,
    /// seccomp=unconfined turns the default seccomp profile off, seccomp=PROFILE.json loads a Docker-format profile; no-new-privileges=false allows setuid gains
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<String>,
    /// Make the root filesystem read-only
    #[arg(long = "read-only")]
    read_only: bool,
    /// Network: bridge (the default: its own address on kiln's bridge, outbound NAT, -p),
    /// none (a private network with loopback only), host (the host's), or a named network
    /// (kiln network create), where containers reach each other by name
    #[arg(long, value_name = "NETWORK")]
    network: Option<String>,
    /// Another name the container has on its named network (repeatable)
    #[arg(long = "network-alias", value_name = "ALIAS")]
    network_alias: Vec<String>,
    /// Publish a container port on the host: [IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp],
    /// ranges as 8000-8002:80-82 (needs --network bridge; no HOSTPORT: a free one; no IP:
    /// every address); replaces the spec's run: ports for that container port
    #[arg(short = 'p', long = "publish", value_name = "[IP:][HOST:]PORT")]
    publish: Vec<String>,
    /// Publish every port the image exposes (a spec's expose:, an image's ExposedPorts;
    /// tcp and udp) on a free host port of every address; -p for a port wins
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Limit the bandwidth to the container (needs --network bridge), in tc's units: bits
    /// per second as 500kbit, 8mbit, 1gbit (powers of 1000; kibit, mibit… of 1024) or a
    /// bare number; kbps, mbps… are bytes per second, as in tc
    #[arg(long = "network-rate-in", value_name = "RATE")]
    network_rate_in: Option<String>,
    /// Limit the bandwidth from the container, as --network-rate-in
    #[arg(long = "network-rate-out", value_name = "RATE")]
    network_rate_out: Option<String>,
    /// Container host name
    #[arg(long)]
    hostname: Option<String>,
    /// User: NAME, UID, NAME:GROUP or UID:GID (names from the image's /etc/passwd)
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// Override the image's entrypoint
    #[arg(long)]
    entrypoint: Option<String>,
    /// Run kiln's small init as PID 1, which reaps zombies and forwards signals (the
    /// default; overrides the image's run: init: false)
    #[arg(long, conflicts_with = "no_init")]
    init: bool,
    /// Run the command as PID 1 without kiln's small init
    #[arg(long = "no-init")]
    no_init: bool,
    /// Set a process resource limit: NAME=SOFT[:HARD] with docker's names (nofile, nproc,
    /// core, memlock, stack, …); -1 or unlimited for no limit
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<String>,
    /// Whose ids the container runs with: host (the default), auto (a range of host ids
    /// of its own, so root in the container is not root on the host; auto:size=N for
    /// fewer than 65536) or keep-id (the host's ids in a user namespace of its own)
    #[arg(long, value_name = "MODE")]
    userns: Option<String>,
    /// Size of /dev/shm, e.g. 256m (default 64m)
    #[arg(long = "shm-size", value_name = "SIZE")]
    shm_size: Option<String>,
    /// Set a sysctl of the container's own namespaces: kernel.shm*, kernel.msg*,
    /// kernel.sem, fs.mqueue.*, net.* (not with --network host)
    #[arg(long, value_name = "KEY=VALUE")]
    sysctl: Vec<String>,
    /// Give the container a host device: HOST[:CONTAINER[:rwm]] (CONTAINER under /dev;
    /// a directory gives every device in it)
    #[arg(long, value_name = "HOST[:CONTAINER[:PERMS]]")]
    device: Vec<String>,
    /// Apply run settings that grant privileges (privileged, added capabilities, host
    /// binds, host network, devices, raised ulimits) also for an image that was not built
    /// in this store
    #[arg(long = "allow-image-privileges")]
    allow_image_privileges: bool,
}

#[derive(Args, Debug)]
#[command(
    about = "Run a command in a new container",
    after_help = "Examples:\n  kiln run --rm hello\n  kiln run -it --rm hello sh\n  kiln run --rm --memory 64m --cap-drop ALL --network none hello id\n  kiln run --name web -p 8081:8080 -v ./site:/srv/www:ro hello\n  kiln run -d --name web -p 127.0.0.1:8080:8080 hello   # prints the container ID\n  kiln run -d --restart unless-stopped --health-cmd 'wget -q -O- localhost:8080' hello\n  kiln run -d --log-opt max-size=1m --log-opt max-file=2 hello\n  kiln run --rm --env-file .env --add-host db:10.0.0.5 hello env\n  kiln run --rm --cpu-shares 512 --cpuset-cpus 0 --memory 256m --memory-swap 512m hello\n  kiln run --rm -v /mnt/sdb:/data --device-write-bps /dev/sdb:10mb hello   # 10 MiB/s to sdb\n  kiln run --rm --ulimit nofile=1024:4096 --shm-size 256m hello sh -c 'ulimit -n; df /dev/shm'\n  kiln run --rm --sysctl kernel.shmmax=1073741824 --sysctl net.ipv4.ip_forward=1 hello\n  kiln run --rm --device /dev/fuse --device /dev/sdb:/dev/xvdb:r hello\n  kiln run --rm --init hello ps\n  kiln run -d --network bridge -p 127.0.0.1:8080:80 -p 8000-8002:81-83 hello\n  kiln run -d --name web --network bridge -P hello && kiln port web   # every exposed port\n  kiln run --rm --network bridge --network-rate-out 8mbit --network-rate-in 1gbit hello"
)]
pub struct RunArgs {
    #[command(flatten)]
    container: ContainerArgs,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the container ID; a monitor process keeps its
    /// output in a log (kiln logs), its terminal and stdin with -t and -i (kiln attach),
    /// and records its end (kiln ps, kiln wait)
    #[arg(short = 'd', long)]
    pub(super) detach: bool,
    /// Log options of a detached container: max-size=SIZE (default 10m), max-file=N
    /// (default 3)
    #[arg(long = "log-opt", value_name = "OPT")]
    log_opt: Vec<String>,
    /// Name the container (kiln ps, kiln rm)
    #[arg(long)]
    name: Option<String>,
    /// Start the container again when it ends: no, on-failure[:N] (a non-zero exit, at
    /// most N times), always, unless-stopped; kiln stop ends the restarts
    /// (default: the spec's run: restart, else no)
    #[arg(long, value_name = "POLICY", conflicts_with = "rm")]
    restart: Option<String>,
    #[command(flatten)]
    health: HealthArgs,
    /// Keep stdin open
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a terminal (use with -i for a shell)
    #[arg(short = 't', long)]
    tty: bool,
    /// Image name or ID
    image: String,
    /// Command and arguments (default: the image's entrypoint and cmd)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Docker's `--health-*` flags, over the image's healthcheck.
#[derive(Args, Debug, Clone)]
pub struct HealthArgs {
    /// Command the container's runner runs in it (a shell command) to check its health
    #[arg(long = "health-cmd", value_name = "CMD")]
    health_cmd: Option<String>,
    /// Time between checks (e.g. 30s), the first one after the command started
    #[arg(long = "health-interval", value_name = "DURATION")]
    health_interval: Option<String>,
    /// Time a check may take before it is killed and counts as failed
    #[arg(long = "health-timeout", value_name = "DURATION")]
    health_timeout: Option<String>,
    /// Time after the start when failed checks do not count yet
    #[arg(long = "health-start-period", value_name = "DURATION")]
    health_start_period: Option<String>,
    /// Failed checks in a row that make the container unhealthy
    #[arg(long = "health-retries", value_name = "N")]
    health_retries: Option<u32>,
    /// Run no healthcheck, not even the image's
    #[arg(long = "no-healthcheck", conflicts_with = "health_cmd")]
    no_healthcheck: bool,
}

impl HealthArgs {
    fn settings(&self) -> Result<container::HealthSettings, Failure> {
        let duration = |flag: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| {
                    kiln_spec::values::duration(t).map_err(|e| {
                        Failure::user(format!("--{flag} {t:?}: {}", e.message)).hint(e.hint)
                    })
                })
                .transpose()
        };
        if self.health_retries == Some(0) {
            return Err(Failure::user("--health-retries must be at least 1"));
        }
        Ok(container::HealthSettings {
            cmd: self.health_cmd.clone(),
            interval: duration("health-interval", &self.health_interval)?,
            timeout: duration("health-timeout", &self.health_timeout)?,
            start_period: duration("health-start-period", &self.health_start_period)?,
            retries: self.health_retries,
            disable: self.no_healthcheck,
        })
    }
}

#[derive(Args, Debug)]
#[command(
    about = "Write an OCI runtime bundle (rootfs + config.json) for runc",
    after_help = "Examples:\n  kiln bundle hello /tmp/hello && runc run -b /tmp/hello hello1"
)]
pub struct BundleArgs {
    #[command(flatten)]
    container: ContainerArgs,
    /// Image name or ID
    image: String,
    /// Bundle directory (created; must not exist or be empty)
    dir: PathBuf,
    /// Command and arguments (default: the image's entrypoint and cmd)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// The flags as the library's settings. A bare `-e K` takes kiln's own value of K here (and
/// is left out when kiln has none): the library never reads the environment.
fn run_settings(args: &ContainerArgs, command: &[String]) -> Result<RunSettings, Failure> {
    let env = super::env_args::environment(&args.env_file, &args.env)?;
    let extra_hosts = args
        .add_host
        .iter()
        .map(|h| values::host_entry(h).map_err(|e| value_failure("--add-host", h, e)))
        .collect::<Result<_, _>>()?;
    let named = super::network::network_choice(args.network.as_deref(), &args.network_alias)?;
    let network = args.network.as_deref().map(|n| match n {
        "host" => Network::Host,
        "none" => Network::None,
        _ => Network::Bridge,
    });
    let mut publish = Vec::new();
    for p in &args.publish {
        let mappings = values::publish(p)
            .map_err(|e| Failure::user(format!("-p {p}: {}", e.message)).hint(e.hint))?;
        publish.extend(mappings);
    }
    Ok(RunSettings {
        env,
        extra_hosts,
        volumes: args.volumes.clone(),
        tmpfs: args.tmpfs.clone(),
        limits: args.limits.limits()?,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        privileged: args.privileged,
        security_options: args.security_opt.clone(),
        read_only: args.read_only,
        network,
        hostname: args.hostname.clone(),
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        entrypoint: args.entrypoint.clone(),
        command: command.to_vec(),
        ulimits: each(&args.ulimit, "--ulimit", values::ulimit)?,
        shm_size: args
            .shm_size
            .as_deref()
            .map(|s| values::shm_size(s).map_err(|e| value_failure("--shm-size", s, e)))
            .transpose()?,
        sysctls: each(&args.sysctl, "--sysctl", values::sysctl)?,
        devices: each(&args.device, "--device", values::device)?,
        init: match (args.init, args.no_init) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        allow_image_privileges: args.allow_image_privileges,
        health: Default::default(),
        restart: None,
        auto_remove: false,
        publish,
        publish_all: args.publish_all,
        ignore_limits: args.ignore_limits,
        userns: userns(args)?,
        rates: kiln_network::Shaping {
            rate_in: rate("--network-rate-in", &args.network_rate_in)?,
            rate_out: rate("--network-rate-out", &args.network_rate_out)?,
        },
        networks: named.into_iter().collect(),
    })
}

/// A `--network-rate-*` value in bits per second.
fn rate(flag: &str, text: &Option<String>) -> Result<Option<u64>, Failure> {
    text.as_deref()
        .map(|t| values::network_rate(t).map_err(|e| value_failure(flag, t, e)))
        .transpose()
}

/// Every value of a repeatable flag, read by `parse` (the spec's parser of the same key).
fn each<T>(
    given: &[String],
    flag: &str,
    parse: impl Fn(&str) -> Result<T, values::ValueError>,
) -> Result<Vec<T>, Failure> {
    given
        .iter()
        .map(|text| parse(text).map_err(|e| value_failure(flag, text, e)))
        .collect()
}

/// `--userns`, else the config file's `userns:`; `None` for the host's ids. An ordinary
/// user's kiln refuses the flag before anything starts, and passes over the config
/// file's default: its containers already run in kiln's user namespace.
fn userns(args: &ContainerArgs) -> Result<Option<UsernsMode>, Failure> {
    const HINT: &str =
        "auto gives the container host ids of its own; host (the host's ids) is the default";
    let rootless = kiln_runtime::userns::rootless();
    if let Some(text) = args.userns.as_deref() {
        let mode: UsernsMode = text
            .parse()
            .map_err(|e| Failure::user(format!("--userns {text}: {e}")).hint(Some(HINT.into())))?;
        if mode.is_private() && rootless {
            return Err(Failure::user(format!(
                "--userns={mode}: {}",
                kiln_runtime::container_userns::ROOT_ONLY
            ))
            .hint(Some("run it as root, or without --userns".into())));
        }
        return Ok(Some(mode));
    }
    let Some(given) = super::pull::kiln_config()?.userns else {
        return Ok(None);
    };
    let mode: UsernsMode = given
        .value
        .parse()
        .map_err(|e| Failure::user(given.error("userns", e)).hint(Some(HINT.into())))?;
    Ok((!rootless).then_some(mode))
}

/// `--ulimit nofile=9:8: the soft limit 9 of nofile is above its hard limit 8`, the hint
/// on a line of its own.
fn value_failure(flag: &str, text: &str, e: values::ValueError) -> Failure {
    Failure::user(format!("{flag} {text}: {}", e.message)).hint(e.hint)
}

/// A library error as the user sees it (exit 1: nothing was started), with the flag named
/// where the value can only have come from one.
fn failure(e: ContainerError, args: &ContainerArgs) -> Failure {
    let hint = e.hint();
    match &e {
        ContainerError::SecurityOption(opt) => {
            Failure::user(format!("unsupported --security-opt {opt:?}")).hint(hint)
        }
        ContainerError::SeccompProfile(why) => {
            Failure::user(format!("--security-opt seccomp: {why}"))
        }
        ContainerError::TmpfsTarget(t) if args.tmpfs.contains(t) => {
            Failure::user(format!("--tmpfs {t}: the target must be an absolute path"))
        }
        ContainerError::NoCommand => Failure::user(e).hint(Some(
            "give one after the image name: kiln run IMAGE COMMAND".into(),
        )),
        ContainerError::Confinement(ConfineError::Limits(conflict)) => {
            args.limits.conflict(*conflict)
        }
        ContainerError::Confinement(ConfineError::Device { path, problem }) => {
            match args.limits.device_flag(path) {
                Some(flag) => Failure::user(format!("{flag} {}: {problem}", path.display())),
                None => Failure::user(format!(
                    "the image's run: settings throttle {}: {problem}",
                    path.display()
                )),
            }
            .hint(hint)
        }
        ContainerError::Device(d) if given(&args.device, d.host().and_then(|h| h.to_str())) => {
            Failure::user(format!("--device: {e}")).hint(hint)
        }
        ContainerError::SysctlWithHostNetwork(key) if given(&args.sysctl, Some(key)) => {
            Failure::user(format!("--sysctl: {e}")).hint(hint)
        }
        ContainerError::NetworkRateWithoutBridge
            if args.network_rate_in.is_some() || args.network_rate_out.is_some() =>
        {
            let flag = match args.network_rate_in {
                Some(_) => "--network-rate-in",
                None => "--network-rate-out",
            };
            Failure::user(format!("{flag}: {e}")).hint(hint)
        }
        ContainerError::NameInUse(name) => {
            let hint = format!("remove it with kiln rm {name}, or pick another --name");
            Failure::user(e).hint(Some(hint))
        }
        _ => Failure::user(e).hint(hint),
    }
}

/// Whether one of a flag's values starts with `value` (its first `:`/`=` part): the
/// error is about what the flag gave, not about a stored default.
fn given(flag_values: &[String], value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        flag_values
            .iter()
            .any(|f| f.split([':', '=']).next() == Some(v))
    })
}

/// The `run:` defaults kept with a tag; unreadable ones stop `kiln run`, `bundle` and
/// `inspect` with the ways to store them again.
pub(super) fn stored_run_defaults(
    store: &Store,
    tagged: &Tagged,
    config: &kiln_image::ImageConfig,
) -> Result<(RunDefaults, RunDefaultsOrigin), Failure> {
    container::stored_run_defaults(store, tagged, config)
        .map_err(|e| Failure::user(&e).hint(e.hint()))
}

fn print_notice(notice: Notice) {
    match notice {
        Notice::Granted { image, grants } => {
            for grant in &grants {
                eprintln!("kiln: {image}'s run settings grant: {grant}");
            }
        }
        Notice::Refused { image, grants } => eprintln!(
            "kiln: refused {image}'s run settings that grant privileges ({}): the image was not \
             built in this store; pass --allow-image-privileges to apply them",
            grants.join(", ")
        ),
        Notice::PortsNotPublished { network } => eprintln!(
            "kiln: the image's run: ports are not published: the container's network is \
             {network}, with no address of its own"
        ),
        Notice::LimitsIgnored(limits) => eprintln!(
            "kiln: warning: running without the {} limit{} (--ignore-limits): an ordinary \
             user's kiln has no cgroup here; kiln check says what to enable",
            limits.join(", "),
            if limits.len() == 1 { "" } else { "s" }
        ),
        Notice::SkippedSyscalls(skipped) => eprintln!(
            "kiln: the seccomp profile names {} syscalls this machine does not have (e.g. {}); they are skipped, as runc does",
            skipped.len(),
            skipped[0]
        ),
    }
}

/// The image `name` and the container config its settings and the flags make.
fn source_and_config(
    store: &Store,
    name: &str,
    args: &ContainerArgs,
    settings: RunSettings,
) -> Result<(Source, ContainerConfig), Failure> {
    let source = Source::load(store, name).map_err(|e| failure(e, args))?;
    let config = ContainerConfig::merge(&source, &settings, &mut print_notice)
        .map_err(|e| failure(e, args))?;
    Ok((source, config))
}

pub fn run(globals: &Globals, args: RunArgs) -> CmdResult {
    match args.detach {
        true => match super::detach::start_monitor(std::env::args_os().skip(1).collect())? {
            Ok(id) => {
                println!("{id}");
                Ok(0)
            }
            Err(code) => Ok(code),
        },
        false => run_container(globals, args, &mut Foreground),
    }
}

/// What differs between a foreground `kiln run` and a detached container's monitor.
pub(super) trait Runner {
    /// Called each time the container's command runs (again, under a restart policy);
    /// returns where its output goes when the runner keeps it (the monitor's log), after
    /// telling whoever waits that it started.
    fn started(
        &mut self,
        running: &mut runtime::RunningContainer,
        dir: &ContainerDir,
        start: &StartConfig,
    ) -> Result<Option<OutputLog>, Failure>;

    /// A process that lives only to run the container (a monitor), which should hold
    /// little memory.
    fn is_monitor(&self) -> bool {
        false
    }
}

/// `kiln run` without `-d`, and `kiln start -a`: the output goes to kiln's stdout and
/// stderr, signals to kiln go to the container.
pub(super) struct Foreground;

impl Runner for Foreground {
    fn started(
        &mut self,
        running: &mut runtime::RunningContainer,
        _: &ContainerDir,
        _: &StartConfig,
    ) -> Result<Option<OutputLog>, Failure> {
        super::signals::forward_to(Some(running.pid()));
        Ok(None)
    }
}

/// Creates the container, runs it to its end with `runner`, and returns the exit code.
pub(super) fn run_container(
    globals: &Globals,
    args: RunArgs,
    runner: &mut dyn Runner,
) -> CmdResult {
    let store = super::containers::container_store(globals)?;
    let failed = |e| failure(e, &args.container);
    let log = LogOptions::parse(&args.log_opt).map_err(|e| log_option_failure(&e))?;
    let mut settings = run_settings(&args.container, &args.command)?;
    settings.health = args.health.settings()?;
    settings.restart = args.restart.as_deref().map(restart_policy).transpose()?;
    settings.auto_remove = args.rm;
    // Until the container's state names its image, the image's layers are no gc root.
    let guard = store.content_guard()?;
    let (source, config) = source_and_config(&store, &args.image, &args.container, settings)?;
    tracing::debug!(image = %args.image, "image loaded");
    let launch = Launch {
        name: args.name.clone(),
        auto_remove: args.rm,
        tty: args.tty,
        interactive: args.interactive,
        detached: args.detach,
        log,
    };
    // Held until the state with the name is written, so no other kiln takes the name.
    let names = store.lock_container_names()?;
    launch.check_name_is_free(&store).map_err(failed)?;
    if args.container.privileged {
        eprintln!("kiln: warning: --privileged: the container gets every capability, no seccomp filter and can gain privileges");
    }
    let (dir, _lock) = store.create_container()?;
    let dir = match args.rm {
        true => dir.removed_at_end(),
        false => dir,
    };
    let created = container::create(&store, &source, config, &dir, &launch).map_err(failed);
    drop((names, guard));
    let remove = args.rm || created.is_err();
    let result = created.and_then(|(start, mut state)| {
        run_to_end(globals, &store, &dir, (&start, &mut state), runner)
    });
    if remove {
        let _ = store.remove_container(&dir);
    }
    tracing::debug!(removed = remove, "container finished");
    result
}

fn restart_policy(text: &str) -> Result<RestartPolicy, Failure> {
    values::restart_policy(text)
        .map_err(|e| Failure::user(format!("--restart: {}", e.message)).hint(e.hint))
}

/// Runs a created container's command, again each time its restart policy says so, and
/// records its end; returns the last exit code. The caller holds the container's lock.
pub(super) fn run_to_end(
    globals: &Globals,
    store: &Store,
    dir: &ContainerDir,
    (start, state): (&StartConfig, &mut ContainerState),
    runner: &mut dyn Runner,
) -> CmdResult {
    let failed = |e: ContainerError| Failure::user(&e).hint(e.hint());
    let control = ControlSocket::bind(dir).map_err(failed)?;
    let health = start.health.clone().map(|config| {
        let command = super::exec::probe_command(globals, &dir.id);
        HealthProbe::new(config, command, store.clone(), dir.clone())
    });
    let mut supervisor = Supervisor::new(control, health);
    // The runner holds the leases, so `kiln network connect` and `disconnect` of the
    // running container are its to do, asked over the control socket.
    let networks = super::live_networks::RunnerNetworks::new(globals, store, dir, state, start);
    supervisor.serve_network_requests(Box::new(networks.clone()));
    if runner.is_monitor() {
        supervisor.trim_memory_when_idle();
    }
    let mut backoff = Backoff::default();
    loop {
        let began = Instant::now();
        // Each run attaches the networks the start config names now (a network connected
        // during an earlier run included).
        if let Err(e) = networks.live().plan() {
            end_unstarted(store, dir, state, &mut supervisor)?;
            return Err(Failure::not_started(&e).hint(e.hint()));
        }
        // A Ctrl-C while the container starts is passed to it once it runs (the runner's
        // `started` names it), not taken as kiln's own end.
        super::signals::hold();
        let mut attach = |pid: i32| {
            let mut live = networks.live();
            live.attach(pid)?;
            super::network::start_responders(globals, live.joined())
        };
        let started = runtime::start_container_attached(&start.spec, &mut attach);
        if networks.live().attached() {
            networks.live().write_records().map_err(failed)?;
        }
        let mut running = match started {
            Ok(running) => {
                tracing::debug!(pid = running.pid(), "command started");
                running
            }
            Err(e) => {
                super::signals::forward_to(None);
                end_unstarted(store, dir, state, &mut supervisor)?;
                return Err(runtime_failure(e));
            }
        };
        // Recorded before the runner says it started, so `kiln exec` right after finds it.
        let ids = (std::process::id(), running.pid());
        container::record_start(store, dir, state, ids).map_err(failed)?;
        let output = runner.started(&mut running, dir, start)?;
        let code = supervise_to_end(&start.spec, (running, output), &mut supervisor);
        // Its namespace is gone: the addresses and ports are free again.
        super::network_later::finish_run(globals, networks.live().release());
        let code = code?;
        if super::signals::take_forwarded() {
            supervisor.mark_stopped();
        }
        let ended_by = supervisor.ended_by();
        let again = restart::restarts(start.restart, code, state.restart_count, ended_by);
        if again {
            container::record_restarting(store, dir, state, code).map_err(failed)?;
            supervisor.answer(code);
            let delay = backoff.delay_after(began.elapsed());
            // A Ctrl-C meanwhile ends the restarts, as a stop does.
            super::signals::hold();
            let stopped = || super::signals::take_held();
            let again = supervisor.wait_to_restart(delay, code, &stopped);
            let late_signal = super::signals::release();
            if again.map_err(failed)? && !late_signal {
                continue;
            }
        }
        container::record_exit(store, dir, state, code).map_err(failed)?;
        supervisor.answer(code);
        return Ok(code);
    }
}

/// A restart that cannot start ends the container with its last run's code.
fn end_unstarted(
    store: &Store,
    dir: &ContainerDir,
    state: &mut ContainerState,
    supervisor: &mut Supervisor,
) -> Result<(), Failure> {
    if let (true, Some(code)) = (state.restarting, state.exit_code) {
        container::record_exit(store, dir, state, code)
            .map_err(|e| Failure::user(&e).hint(e.hint()))?;
        supervisor.answer(code);
    }
    Ok(())
}

fn log_option_failure(e: &ContainerError) -> Failure {
    Failure::user(format!("--log-opt: {e}")).hint(e.hint())
}

/// A runtime error as the exit code docker gives it: 126/127 when the command cannot
/// run, else 125.
fn runtime_failure(e: runtime::RuntimeError) -> Failure {
    let code = e.command_exit_code().unwrap_or(EXIT_NOT_STARTED);
    let hint = match e {
        runtime::RuntimeError::LimitsNeedCgroups { .. } => Some(
            "run without the limits, or pass --ignore-limits to run without them with a \
             warning; kiln check says what gives you cgroups (cgroup v2 with systemd delegation)"
                .into(),
        ),
        _ => None,
    };
    Failure {
        code,
        ..Failure::not_started(e).hint(hint)
    }
}

/// Serves the control socket (and writes the log) until the container ends; returns the
/// exit code kiln exits with, saying when the OOM killer struck.
fn supervise_to_end(
    spec: &runtime::ContainerSpec,
    (running, output): (runtime::RunningContainer, Option<OutputLog>),
    supervisor: &mut Supervisor,
) -> Result<i32, Failure> {
    let supervised = supervisor.supervise(&running, output);
    let exit = running.wait();
    super::signals::forward_to(None);
    supervised.map_err(Failure::user)?;
    let exit = exit.map_err(runtime_failure)?;
    let mut code = exit.status.code();
    let limit = spec
        .confinement
        .resources
        .memory
        .map(|m| format!(" (limit {})", super::output::human_binary_size(m)))
        .unwrap_or_default();
    if exit.command_oom_killed() {
        eprintln!("kiln: killed: out of memory{limit}");
        code = 137;
    } else if exit.oom_killed {
        eprintln!("kiln: warning: a process in the container was killed: out of memory{limit}; the command itself {}", exit.status);
    }
    Ok(code)
}

pub fn bundle(globals: &Globals, args: BundleArgs) -> CmdResult {
    let store = globals.store()?;
    let mut settings = run_settings(&args.container, &args.command)?;
    if args.container.userns.is_none() {
        // A bundle's rootfs is a plain dir, with the host's ids: the config file's
        // `userns:` is a default for what kiln runs itself.
        settings.userns = None;
    }
    let (source, config) = source_and_config(&store, &args.image, &args.container, settings)?;
    tracing::debug!(image = %args.image, "image loaded");
    // The rootfs is unpacked by a thread that mounts the image's overlay, whose working
    // directory is `/`: a relative DIR would be taken from there.
    let dir = super::absolute(&args.dir)?;
    container::write_bundle(&store, &source, config, &dir)
        .map_err(|e| failure(e, &args.container))?;
    if !globals.quiet {
        eprintln!(
            "wrote {}: run it with runc run -b {} NAME",
            args.dir.display(),
            args.dir.display()
        );
    }
    Ok(0)
}
