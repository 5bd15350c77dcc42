//! Running a `run` step: its environment, its confinement, the sandbox it runs in, and the
//! pipes that carry its output to the build's `Progress`.
//!
//! Exists apart from `steps.rs` because running a command is the one part of a step that
//! talks to the runtime and to threads: `steps.rs` decides *whether* a step runs (the cache)
//! and turns what it changed into a layer; this file only makes the step's upper dir hold
//! what the command wrote, or says why it could not.

use std::os::fd::OwnedFd;

use super::steps::{StepCx, StepDirs};
use super::{BuildError, BuildOptions, Partial, Result, StepError, Stream};
use kiln_container::rootless_network;
use kiln_container::{confinement, limits_over, passwd, ConfineError};
use kiln_runtime::{self as runtime, Confinement, ExitStatus, NetworkMode, Process, StepSandbox};
use kiln_spec::{Network, RunStep};
use kiln_store::StoreError;

/// The hostname of every run step.
const STEP_HOSTNAME: &str = "kiln-build";

/// Runs a `run` step's command in a sandbox on `image`'s layers, writing into `dirs`' upper
/// dir, with its output forwarded line by line to the build's progress.
pub(super) fn run_in_sandbox(
    cx: &StepCx,
    run: &RunStep,
    image: &Partial,
    dirs: &StepDirs,
) -> Result<()> {
    let job = cx.job;
    let overlay = dirs.overlay(job.store, image);
    let user = passwd::resolve_in_image(&overlay, image.config.config.user.as_deref())
        .map_err(|e| cx.error(e))?;
    // Only the args the step names reach its environment: that is what its key holds.
    // The defaults a container gets follow; they derive from the state (user, layers), which
    // the key holds too.
    let mut env = image.config.config.env.clone();
    env.extend(
        cx.step
            .args_used
            .iter()
            .filter(|k| image.config.env_var(k).is_none())
            .filter_map(|k| Some(format!("{k}={}", job.spec.args.get(k)?))),
    );
    runtime::add_default_env(&mut env, STEP_HOSTNAME, &user.home, false);
    let mounts = super::cache_and_secrets::step_mounts(
        job.store,
        &job.spec.file,
        run,
        &job.opts.environment,
    )
    .map_err(|e| cx.error(e))?;
    let confinement = step_confinement(run, job.opts).map_err(|e| cx.error(e))?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let sandbox = StepSandbox {
        mounts,
        overlay,
        process: Process {
            argv: run.command.argv(),
            env,
            cwd: image
                .config
                .config
                .working_dir
                .clone()
                .unwrap_or_else(|| "/".into()),
            uid: user.uid,
            gid: user.gid,
            groups: user.groups,
            hostname: STEP_HOSTNAME.into(),
            network: match run.network {
                Network::Host => NetworkMode::Host,
                Network::None => NetworkMode::None,
                Network::Bridge => NetworkMode::Bridge,
            },
        },
        stdout: out_w,
        stderr: err_w,
        confinement,
        etc_files: match run.network {
            Network::Bridge => bridge_etc_files(dirs).map_err(|e| cx.error(e))?,
            _ => Vec::new(),
        },
    };
    let on_pasta = run.network == Network::Bridge && rootless_network::uses_pasta();
    let bridge = match run.network {
        Network::Bridge if !on_pasta => Some(
            kiln_container::network::default_network()
                .map_err(|e| cx.error(StepError::Network(e.to_string())))?,
        ),
        _ => None,
    };
    let exit = std::thread::scope(|s| {
        let progress = cx.job.progress;
        s.spawn(|| super::output::forward(progress, cx.step_ref, Stream::Stdout, out_r));
        s.spawn(|| super::output::forward(progress, cx.step_ref, Stream::Stderr, err_r));
        let exit = match &bridge {
            Some(network) => run_on_bridge(&sandbox, network, job.opts.network_idle),
            None if on_pasta => run_on_pasta(&sandbox, dirs.run_dir()),
            None => runtime::run_step(&sandbox),
        };
        drop(sandbox);
        exit
    });
    let exit = exit.map_err(|source| BuildError::StepSetup {
        location: cx.location(),
        number: cx.index + 1,
        title: cx.title().into(),
        source,
    })?;
    match exit.status {
        ExitStatus::Exited(0) => Ok(()),
        status => Err(BuildError::StepFailed {
            location: cx.location(),
            number: cx.index + 1,
            title: cx.title().into(),
            status,
            out_of_memory: exit.command_oom_killed(),
        }),
    }
}

/// Runs the step with an address on kiln's bridge network, held while it runs: its
/// namespace gets its interface between its clone and its first instruction, and the
/// address goes back once it ended (the network stays up for the next step).
fn run_on_bridge(
    sandbox: &StepSandbox,
    network: &kiln_network::Network,
    network_idle: Option<fn()>,
) -> std::result::Result<runtime::ContainerExit, runtime::RuntimeError> {
    let mut attachment = None;
    let mut attach = |pid: i32| {
        let owner = format!("step-{pid}");
        attachment = Some(kiln_container::network::attach(
            network,
            &owner,
            pid,
            (&[], Default::default()),
        )?);
        Ok(())
    };
    let exit = runtime::run_step_attached(sandbox, &mut attach);
    if let Some(made) = attachment {
        // A failure here costs an address until the next attach or `kiln gc` reclaims it
        // (the lease's lock went with the step); it must not fail a step that succeeded.
        if let Ok(true) = network.release_keeping_network(made) {
            if let Some(idle) = network_idle {
                idle();
            }
        }
    }
    exit
}

/// Runs the step on an ordinary user's default network: pasta, for as long as it runs.
fn run_on_pasta(
    sandbox: &StepSandbox,
    dir: &std::path::Path,
) -> std::result::Result<runtime::ContainerExit, runtime::RuntimeError> {
    let mut network = None;
    let mut attach = |pid: i32| {
        network = Some(rootless_network::attach_pasta(pid, &[], dir)?);
        Ok(())
    };
    let exit = runtime::run_step_attached(sandbox, &mut attach);
    if let Some(network) = network {
        network.stop();
    }
    exit
}

/// The `/etc` files of a step on the bridge network: loopback names and its own, and the
/// host's resolvers it can reach (the image's resolv.conf when there is none); on
/// pasta, pasta's resolver.
fn bridge_etc_files(
    dirs: &StepDirs,
) -> std::result::Result<Vec<(std::path::PathBuf, &'static str)>, StoreError> {
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{STEP_HOSTNAME}\n"
    );
    let mut files = vec![(dirs.etc_file("hosts", &hosts)?, "etc/hosts")];
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = match rootless_network::uses_pasta() {
        true => Some(rootless_network::pasta_resolv_conf(&host_resolv)),
        false => kiln_container::network::bridge_resolv_conf(&host_resolv),
    };
    if let Some(text) = resolv {
        files.push((dirs.etc_file("resolv.conf", &text)?, "etc/resolv.conf"));
    }
    Ok(files)
}

/// What a run step may do: its own `capabilities:`/`privileged:`/`resources:`, with
/// `kiln build --memory` etc. where it sets no limit.
pub(super) fn step_confinement(
    run: &RunStep,
    opts: &BuildOptions,
) -> Result<Confinement, ConfineError> {
    let limits = limits_over(&run.limits, &opts.limits);
    confinement(&run.privileges, &limits, &Default::default())
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| {
        StoreError::Io {
            what: "create",
            path: "pipe".into(),
            source: e.into(),
        }
        .into()
    })
}
