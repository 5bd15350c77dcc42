//! `kiln run` and `kiln bundle`: an image from the store as a container.
//!
//! Both turn the same inputs (image config, the spec's `run:` defaults kept with the tag,
//! command-line flags, in that order of precedence) into one `runtime::ContainerSpec`, so
//! what `kiln bundle` hands to runc is exactly what `kiln run` would do.

use std::path::{Path, PathBuf};

use clap::Args;

use super::{CmdResult, Failure, Globals, EXIT_NOT_STARTED};
use kiln_build::{self as build, passwd};
use kiln_image::{self as image, Image, RuntimeConfig};
use kiln_runtime::{
    self as runtime, BindMount, Confinement, ContainerSpec, NetworkMode, Overlay, Process,
    SeccompPolicy,
};
use kiln_spec::{values, Limits, Network, Privileges, RunDefaults};
use kiln_store::{ContainerDir, ContainerState, Store, Tagged};

/// Options shared by `kiln run` and `kiln bundle`: everything that shapes the container.
#[derive(Args, Debug, Clone)]
pub struct ContainerArgs {
    /// Set an environment variable (K=V, or K to take the value from kiln's environment)
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Bind mount a host path: SRC:DST[:ro]
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    volumes: Vec<String>,
    /// Mount an empty tmpfs at DST
    #[arg(long, value_name = "DST")]
    tmpfs: Vec<String>,
    #[command(flatten)]
    limits: super::limits::LimitArgs,
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
    /// Network: none (a private network with loopback only; the default) or host
    #[arg(long, value_parser = ["none", "host"])]
    network: Option<String>,
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
    /// Run the command as PID 1 without kiln's small init
    #[arg(long = "no-init")]
    no_init: bool,
    /// Apply run settings that grant privileges (privileged, added capabilities, host
    /// binds, host network) also for an image that was not built in this store
    #[arg(long = "allow-image-privileges")]
    allow_image_privileges: bool,
}

#[derive(Args, Debug)]
#[command(
    about = "Run a command in a new container",
    after_help = "Examples:\n  kiln run --rm hello\n  kiln run -it --rm hello sh\n  kiln run --rm --memory 64m --cap-drop ALL --network none hello id\n  kiln run --name web --network host -v ./site:/srv/www:ro hello"
)]
pub struct RunArgs {
    #[command(flatten)]
    container: ContainerArgs,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Name the container (kiln ps, kiln rm)
    #[arg(long)]
    name: Option<String>,
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

/// A failure before any container starts: bad input (an unknown image, a flag's value, a
/// user the image lacks, …) or the store. Exit 1; 125 is only for a valid container that
/// could not be started.
fn failed(message: impl std::fmt::Display) -> Failure {
    Failure::user(message)
}

/// The image to run, with its layer dirs in place.
struct Source {
    tagged: Tagged,
    image: Image,
    /// The spec's `run:` defaults kept with the tag, and where they came from.
    defaults: (RunDefaults, image::RunDefaultsOrigin),
}

fn load_source(store: &Store, name: &str) -> Result<Source, Failure> {
    let tagged = store.find(name)?.ok_or_else(|| {
        failed(format!("no such image: {name}")).hint(Some(
            "`kiln images` lists the images in the store; `kiln build` makes one".into(),
        ))
    })?;
    let defaults = stored_run_defaults(store, &tagged)?;
    let image = Image::load(store, &kiln_store::Digest::try_from(&tagged.manifest)?)?;
    build::ensure_layer_dirs(store, &image).map_err(failed)?;
    Ok(Source {
        tagged,
        image,
        defaults,
    })
}

/// The `run:` defaults kept with a tag. Unreadable ones stop `kiln run`, `bundle` and
/// `inspect` (a user error, exit 1) with the ways to store them again: a container must not
/// start without the limits and dropped capabilities they may hold.
pub(super) fn stored_run_defaults(
    store: &Store,
    tagged: &Tagged,
) -> Result<(RunDefaults, image::RunDefaultsOrigin), Failure> {
    image::run_defaults(&tagged.manifest).map_err(|e| {
        let name = &tagged.reference;
        let intact = store.tags().unwrap_or_default().into_iter().find(|t| {
            t.manifest.digest() == tagged.manifest.digest()
                && t.reference != *name
                && image::run_defaults(&t.manifest).is_ok()
        });
        let retag = match intact {
            Some(t) => format!(
                "or retag it from a name with intact settings: kiln tag {} {name}",
                t.reference
            ),
            None => {
                format!("or retag it from an image whose settings are intact: kiln tag GOOD {name}")
            }
        };
        Failure::user(format!("{name}: {e}")).hint(Some(format!(
            "rebuild it with kiln build, which stores the spec's run: settings again, {retag}"
        )))
    })
}

/// Image config, then the spec's `run:` defaults, then flags.
struct Settings {
    argv: Vec<String>,
    env: Vec<String>,
    cwd: String,
    user: Option<String>,
    hostname: Option<String>,
    network: NetworkMode,
    mounts: Vec<BindMount>,
    tmpfs: Vec<String>,
    confinement: Confinement,
    read_only: bool,
    init: bool,
}

fn settings(args: &ContainerArgs, command: &[String], src: &Source) -> Result<Settings, Failure> {
    let defaults = trusted_run_defaults(args, src);
    let config = &src.image.config.config;
    let hostname = args.hostname.clone().or(defaults.hostname.clone());
    if let Some(h) = &hostname {
        values::hostname(h).map_err(failed)?;
    }
    let user = args
        .user
        .clone()
        .or(defaults.user.clone())
        .or(config.user.clone());
    if let Some(u) = &user {
        values::user(u).map_err(failed)?;
    }
    Ok(Settings {
        argv: command_line(args, command, config)?,
        env: environment(args, &defaults, config),
        cwd: args
            .workdir
            .clone()
            .or(config.working_dir.clone())
            .unwrap_or_else(|| "/".into()),
        user,
        hostname,
        network: network(args, &defaults),
        mounts: bind_mounts(args, &defaults)?,
        tmpfs: tmpfs_mounts(args, &defaults)?,
        confinement: confinement(args, &defaults)?,
        read_only: args.read_only || defaults.read_only,
        init: !args.no_init,
    })
}

/// The image's `run:` defaults as far as they may apply (SECURITY.md rule 15). Settings
/// that restrict apply silently. Settings that grant privileges apply to images built in
/// this store from the user's own spec, and each is named on stderr; for an image from
/// anywhere else they are dropped, with a message, unless `--allow-image-privileges`.
fn trusted_run_defaults(args: &ContainerArgs, src: &Source) -> RunDefaults {
    let (defaults, origin) = src.defaults.clone();
    let (granting, narrowed) = split_grants(&defaults);
    if granting.is_empty() {
        return defaults;
    }
    let image = &src.tagged.reference;
    if origin == image::RunDefaultsOrigin::Build || args.allow_image_privileges {
        for grant in &granting {
            eprintln!("kiln: {image}'s run settings grant: {grant}");
        }
        return defaults;
    }
    eprintln!(
        "kiln: refused {image}'s run settings that grant privileges ({}): the image was not built \
         in this store; pass --allow-image-privileges to apply them",
        granting.join(", ")
    );
    narrowed
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
    (grants, narrowed)
}

/// Docker's rules: `--entrypoint` replaces the image's entrypoint and drops its cmd; a
/// command after the image name replaces the cmd.
fn command_line(
    args: &ContainerArgs,
    command: &[String],
    config: &RuntimeConfig,
) -> Result<Vec<String>, Failure> {
    let entrypoint = match &args.entrypoint {
        Some(e) => vec![e.clone()],
        None => config.entrypoint.clone().unwrap_or_default(),
    };
    let cmd = if !command.is_empty() {
        command.to_vec()
    } else if args.entrypoint.is_some() {
        Vec::new()
    } else {
        config.cmd.clone().unwrap_or_default()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(
            failed("no command: the image has no entrypoint or cmd").hint(Some(
                "give one after the image name: kiln run IMAGE COMMAND".into(),
            )),
        );
    }
    Ok(argv)
}

/// The image's environment, then the spec's `run.env`, then `-e` (a bare `-e K` takes
/// kiln's own value of K). A container always has a PATH, so every runtime finds the same
/// command.
fn environment(
    args: &ContainerArgs,
    defaults: &RunDefaults,
    config: &RuntimeConfig,
) -> Vec<String> {
    let mut env = RuntimeConfig {
        env: config.env.clone(),
        ..Default::default()
    };
    for (k, v) in &defaults.env {
        env.set_env(k, v);
    }
    for e in &args.env {
        match e.split_once('=') {
            Some((k, v)) => env.set_env(k, v),
            None => {
                if let Ok(v) = std::env::var(e) {
                    env.set_env(e, &v)
                }
            }
        }
    }
    if !env.env.iter().any(|kv| kv.starts_with("PATH=")) {
        env.env.insert(0, format!("PATH={}", runtime::DEFAULT_PATH));
    }
    env.env
}

/// The image's `run:` defaults, then the flags: limits, capabilities, `--privileged` and
/// `--security-opt`, through the same function a build step's confinement comes from.
fn confinement(args: &ContainerArgs, defaults: &RunDefaults) -> Result<Confinement, Failure> {
    let names = |base: &[String], flags: &[String]| -> Result<Vec<String>, Failure> {
        let mut out = base.to_vec();
        for n in flags {
            out.push(values::capability(n).map_err(failed)?);
        }
        Ok(out)
    };
    let privileges = Privileges {
        privileged: args.privileged || defaults.privileged,
        cap_add: names(&defaults.cap_add, &args.cap_add)?,
        cap_drop: names(&defaults.cap_drop, &args.cap_drop)?,
    };
    let image_limits = Limits {
        memory: defaults.memory,
        cpus: defaults.cpus,
        pids: defaults.pids,
    };
    let limits = build::limits_over(&args.limits.limits()?, &image_limits);
    let confinement =
        build::confinement(&privileges, &limits, &security_options(args)?).map_err(failed)?;
    check_seccomp_profile(&confinement)?;
    Ok(confinement)
}

/// `--security-opt seccomp=unconfined|FILE` and `no-new-privileges[=true|false]`.
fn security_options(args: &ContainerArgs) -> Result<build::SecurityOptions, Failure> {
    let mut options = build::SecurityOptions::default();
    for opt in &args.security_opt {
        let (key, value) = opt
            .split_once(['=', ':'])
            .map_or((opt.as_str(), None), |(k, v)| (k, Some(v)));
        match (key, value) {
            ("seccomp", Some("unconfined")) => options.seccomp_unconfined = true,
            ("seccomp", Some(path)) if !path.is_empty() => {
                options.seccomp_profile = Some(read_seccomp_profile(Path::new(path))?)
            }
            ("no-new-privileges", None | Some("true")) => options.no_new_privileges = Some(true),
            ("no-new-privileges", Some("false")) => options.no_new_privileges = Some(false),
            _ => {
                return Err(
                    failed(format!("unsupported --security-opt {opt:?}")).hint(Some(
                        "kiln knows seccomp=unconfined, seccomp=PROFILE.json (Docker's format) \
                         and no-new-privileges[=true|false]"
                            .into(),
                    )),
                )
            }
        }
    }
    Ok(options)
}

/// The most bytes of a seccomp profile kiln reads (Docker's default profile is ~20 KiB).
const MAX_SECCOMP_PROFILE: u64 = 1 << 20;

fn read_seccomp_profile(path: &Path) -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| {
        failed(format!("seccomp profile {}: {e}", path.display())).hint(Some(
            "give the path of a JSON profile in Docker's format".into(),
        ))
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    if !file.metadata().map_err(unreadable)?.is_file() {
        return Err(failed(format!(
            "seccomp profile {} is not a regular file",
            path.display()
        )));
    }
    let mut json = Vec::new();
    file.take(MAX_SECCOMP_PROFILE + 1)
        .read_to_end(&mut json)
        .map_err(unreadable)?;
    Ok(json)
}

/// Compiles a `--security-opt seccomp=FILE` profile once before anything starts, so a bad
/// one is an error naming the field, and says how many syscall names it skipped.
fn check_seccomp_profile(confinement: &Confinement) -> Result<(), Failure> {
    let SeccompPolicy::Profile(json) = &confinement.seccomp else {
        return Ok(());
    };
    let bounding = confinement.capabilities.bounding;
    let (_, skipped) = runtime::seccomp::SeccompProgram::from_docker_profile(json, bounding)
        .map_err(|e| failed(format!("--security-opt seccomp: {e}")))?;
    if !skipped.is_empty() {
        eprintln!(
            "kiln: the seccomp profile names {} syscalls this machine does not have (e.g. {}); they are skipped, as runc does",
            skipped.len(),
            skipped[0]
        );
    }
    Ok(())
}

/// `--network`, else the spec's, else a private network with loopback only.
fn network(args: &ContainerArgs, defaults: &RunDefaults) -> NetworkMode {
    let flag = args.network.as_deref().map(|n| {
        if n == "host" {
            Network::Host
        } else {
            Network::None
        }
    });
    match flag.or(defaults.network) {
        Some(Network::Host) => NetworkMode::Host,
        _ => NetworkMode::None,
    }
}

/// The spec's `mounts:` and then `-v`; every source must exist.
fn bind_mounts(args: &ContainerArgs, defaults: &RunDefaults) -> Result<Vec<BindMount>, Failure> {
    let mut mounts: Vec<BindMount> = defaults
        .mounts
        .iter()
        .map(|m| BindMount {
            source: m.source.clone(),
            target: m.target.clone(),
            readonly: m.readonly,
        })
        .collect();
    for v in &args.volumes {
        mounts.push(parse_volume(v)?);
    }
    if let Some(m) = mounts.iter().find(|m| !m.source.exists()) {
        return Err(failed(format!(
            "bind mount source {} does not exist",
            m.source.display()
        ))
        .hint(Some(
            "create it first, or fix the path before the ':'".into(),
        )));
    }
    Ok(mounts)
}

fn tmpfs_mounts(args: &ContainerArgs, defaults: &RunDefaults) -> Result<Vec<String>, Failure> {
    let tmpfs: Vec<String> = defaults.tmpfs.iter().chain(&args.tmpfs).cloned().collect();
    if let Some(t) = tmpfs.iter().find(|t| !t.starts_with('/')) {
        return Err(failed(format!(
            "--tmpfs {t}: the target must be an absolute path"
        )));
    }
    Ok(tmpfs)
}

/// `SRC:DST[:ro|rw]`; a relative SRC is taken from the current directory.
fn parse_volume(v: &str) -> Result<BindMount, Failure> {
    let bad = || {
        failed(format!("invalid volume {v:?}")).hint(Some(
            "write SRC:DST or SRC:DST:ro, with DST an absolute path in the container".into(),
        ))
    };
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
    let source = std::path::absolute(src).map_err(|_| bad())?;
    Ok(BindMount {
        source,
        target: dst.to_owned(),
        readonly,
    })
}

fn etc_hosts(hostname: &str, network: NetworkMode) -> String {
    if network == NetworkMode::Host {
        if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
            return hosts;
        }
    }
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

fn container_spec(
    store: &Store,
    src: &Source,
    s: Settings,
    dir: &ContainerDir,
    (tty, interactive): (bool, bool),
) -> Result<ContainerSpec, Failure> {
    let overlay = Overlay {
        layers_dir: store.layers_dir(),
        lowers: src.image.config.lower_layer_names(),
        upper: dir.upper(),
        work: dir.work(),
    };
    let user = passwd::resolve_in_image(&overlay, s.user.as_deref()).map_err(|e| {
        failed(e).hint(Some(
            "users and groups come from the image's /etc/passwd and /etc/group".into(),
        ))
    })?;
    let hostname = s.hostname.unwrap_or_else(|| dir.id[..12].to_owned());
    let mut env = s.env;
    runtime::add_default_env(&mut env, &hostname, &user.home, tty);
    Ok(ContainerSpec {
        overlay,
        read_only: s.read_only,
        etc_hosts: etc_hosts(&hostname, s.network),
        etc_resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        process: Process {
            argv: s.argv,
            env,
            cwd: s.cwd,
            uid: user.uid,
            gid: user.gid,
            groups: user.groups,
            hostname,
            network: s.network,
        },
        mounts: s.mounts,
        tmpfs: s.tmpfs,
        confinement: s.confinement,
        init: s.init,
        tty,
        interactive,
        id: dir.id.clone(),
        state_dir: dir.path.clone(),
        cgroup_root: None,
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn run(globals: &Globals, args: RunArgs) -> CmdResult {
    let store = globals.store()?;
    // What a killed kiln left: `--rm` containers (their cgroups go at container start).
    store.remove_abandoned_containers()?;
    // Until the container's state names its image, the image's layers are no gc root.
    let guard = store.content_guard()?;
    let src = load_source(&store, &args.image)?;
    let settings = settings(&args.container, &args.command, &src)?;
    if let Some(name) = &args.name {
        if store.find_container(name)?.is_some() {
            return Err(failed(format!(
                "the name {name:?} is already in use by a container"
            ))
            .hint(Some(format!(
                "remove it with kiln rm {name}, or pick another --name"
            ))));
        }
    }
    if args.container.privileged {
        eprintln!("kiln: warning: --privileged: the container gets every capability, no seccomp filter and can gain privileges");
    }
    let dir = store.create_container()?;
    let started = start(&store, &src, settings, &dir, &args);
    drop(guard);
    let remove = args.rm || started.is_err();
    let result = started.and_then(|(spec, mut state)| {
        let runtime_failure = |e: runtime::RuntimeError| {
            let code = e.command_exit_code().unwrap_or(EXIT_NOT_STARTED);
            Failure {
                code,
                ..Failure::not_started(e)
            }
        };
        let running = runtime::start_container(&spec).map_err(runtime_failure)?;
        super::signals::forward_to(Some(running.pid()));
        let exit = running.wait();
        super::signals::forward_to(None);
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
        state.pid = None;
        state.exit_code = Some(code);
        if !args.rm {
            dir.write_state(&store, &state)?;
        }
        Ok(code)
    });
    if remove {
        let _ = store.remove_container(&dir);
    }
    result
}

fn start(
    store: &Store,
    src: &Source,
    settings: Settings,
    dir: &ContainerDir,
    args: &RunArgs,
) -> Result<(ContainerSpec, ContainerState), Failure> {
    let state = ContainerState {
        id: dir.id.clone(),
        name: args.name.clone().unwrap_or_else(|| dir.id[..12].to_owned()),
        image: src.tagged.reference.to_string(),
        image_digest: src.image.digest.clone(),
        command: settings.argv.clone(),
        created: now(),
        pid: Some(std::process::id() as i32),
        exit_code: None,
        auto_remove: args.rm,
    };
    let spec = container_spec(store, src, settings, dir, (args.tty, args.interactive))?;
    dir.write_state(store, &state)?;
    Ok((spec, state))
}

pub fn bundle(globals: &Globals, args: BundleArgs) -> CmdResult {
    let store = globals.store()?;
    let src = load_source(&store, &args.image)?;
    let settings = settings(&args.container, &args.command, &src)?;
    prepare_bundle_dir(&args.dir)?;
    // The spec needs a container dir for its overlay; the bundle's rootfs is a flat copy.
    let dir = store.create_container()?;
    let result = (|| {
        let mut spec = container_spec(&store, &src, settings, &dir, (false, false))?;
        // The /etc files runc binds must outlive kiln: they live in the bundle.
        spec.state_dir = std::path::absolute(&args.dir).map_err(failed)?;
        runtime::write_state_files(&spec).map_err(failed)?;
        flatten_rootfs(&spec.overlay, &args.dir.join("rootfs"))?;
        let config = runtime::oci_config(&spec).map_err(failed)?;
        let json = serde_json::to_vec_pretty(&config).map_err(failed)?;
        std::fs::write(args.dir.join("config.json"), json).map_err(failed)?;
        if !globals.quiet {
            eprintln!(
                "wrote {}: run it with runc run -b {} NAME",
                args.dir.display(),
                args.dir.display()
            );
        }
        Ok(0)
    })();
    let _ = store.remove_container(&dir);
    result
}

fn prepare_bundle_dir(dir: &Path) -> Result<(), Failure> {
    let empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if !empty {
        return Err(failed(format!("{} is not empty", dir.display()))
            .hint(Some("give a new or empty directory".into())));
    }
    std::fs::create_dir_all(dir.join("rootfs"))
        .map_err(|e| failed(format!("{}: {e}", dir.display())))
}

/// Copies the image's merged tree into `dest`: the layer writer streams it as a tar and the
/// layer applier unpacks it, so the copy has exactly the image's metadata.
fn flatten_rootfs(overlay: &Overlay, dest: &Path) -> Result<(), Failure> {
    let (reader, writer) = std::io::pipe().map_err(failed)?;
    runtime::with_overlay(overlay, |merged| {
        std::thread::scope(|s| {
            let producer = s.spawn(move || {
                // If the reader stops early, writes fail with EPIPE rather than killing kiln.
                let mut sigpipe = nix::sys::signal::SigSet::empty();
                sigpipe.add(nix::sys::signal::Signal::SIGPIPE);
                let _ = sigpipe.thread_block();
                let mut writer = writer;
                kiln_layer::write_tar(
                    merged,
                    &mut writer,
                    &kiln_layer::TarOptions { epoch: u64::MAX },
                )
            });
            let applied = {
                let mut reader = reader;
                kiln_layer::apply_layer(
                    &mut reader,
                    kiln_layer::MEDIA_TYPE_TAR,
                    dest,
                    &[],
                    &Default::default(),
                )
            };
            let written = producer.join().expect("tar writer thread");
            written.map_err(failed)?;
            applied.map_err(failed)?;
            Ok(())
        })
    })
    .map_err(failed)?
}
