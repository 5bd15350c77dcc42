//! Running one build step: the public [`StepSandbox`] description, [`run_step`] and the
//! step's [`ChildPlan`]; the step then goes through `container`'s shared `start()` (clone,
//! error pipe, wait).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use super::confinement::Confinement;
use super::container::{self, ContainerExit, Launch};
use super::error::RuntimeError;
use super::overlay::{InitLayer, Overlay};
use super::plan::{c_string, ChildPlan, Sandbox, HOST_ETC_FILES};
use super::process::{NetworkMode, Process};
use super::step_mounts::{StepMount, StepMountPlan};

/// Everything needed to run one build step.
///
/// A build step is a container (SECURITY.md rule 11): it runs in new mount, pid, uts and
/// ipc namespaces (and a new network namespace for
/// [`NetworkMode::None`](super::NetworkMode::None)), in a cgroup of its own with the
/// device allow-list and `confinement`'s limits, with `/proc` and `/sys` masked like a
/// container's, and with `confinement`'s capabilities, `no_new_privs` and seccomp filter —
/// applied by the same code as `kiln run`'s. The command runs as PID 1 (no init).
#[derive(Debug)]
pub struct StepSandbox {
    pub overlay: Overlay,
    pub process: Process,
    /// The step's fd 1. The caller keeps its own copy; close it after `run_step` returns to
    /// see EOF on a pipe. Stdin is `/dev/null`. Give a pipe: the step can reopen its
    /// stdio through `/proc/self/fd`.
    pub stdout: OwnedFd,
    /// The step's fd 2.
    pub stderr: OwnedFd,
    /// Cache mounts and secrets, mounted in the step's namespace; never part of the upper
    /// dir: mount points kiln had to create are removed from it after the step.
    pub mounts: Vec<StepMount>,
    /// What the step may do; [`Confinement::default`] is a default `kiln run`.
    pub confinement: Confinement,
    /// Files kiln wrote for a step with its own network ([`NetworkMode::Bridge`]), each
    /// bound read-only over the image's file at the path (relative to the root, e.g.
    /// `etc/resolv.conf`) if the image has one: the resolvers it can reach from there
    /// (the host's own file may name one on the host's 127.0.0.53) and its own
    /// `/etc/hosts`. A step writes neither into its layer, as with the host's files.
    pub etc_files: Vec<(std::path::PathBuf, &'static str)>,
}

/// Run one build step (see [`StepSandbox`]) and return how it ended once it and every
/// process it started have ended. The overlay and every other mount exist only in the
/// step's mount namespace and vanish with it; the step's cgroup is removed before this
/// returns. Mount points created for [`StepSandbox::mounts`] are removed from the upper dir
/// before this returns.
///
/// Blocks the calling thread; the step is killed (`PR_SET_PDEATHSIG`) if that thread or
/// kiln ends first. Errors before the command runs come back as [`RuntimeError::Setup`] or
/// [`RuntimeError::CommandNotFound`] (see [`RuntimeError::command_exit_code`]).
pub fn run_step(sb: &StepSandbox) -> Result<ContainerExit, RuntimeError> {
    run_step_attached(sb, &mut |_| Ok(()))
}

/// [`run_step`], calling `attach` with the host PID of the step's first process before
/// any of its code runs, as [`start_container_attached`](super::start_container_attached)
/// does: where a step on the bridge network gets its interface.
pub fn run_step_attached(
    sb: &StepSandbox,
    attach: &mut dyn FnMut(i32) -> Result<(), String>,
) -> Result<ContainerExit, RuntimeError> {
    let cgroup_root = container::cgroup_root(None);
    // Once per build: the cgroups of steps whose kiln was killed.
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| container::sweep_stale_cgroups(None));
    let sandbox = Sandbox::new(&sb.confinement, &cgroup_root, false, None)?;
    let plan = ChildPlan::new(sb, sandbox)?;
    let devnull = container::open_host_devnull()?;
    let id = step_id();
    let mut launch = Launch {
        cgroup_root: &cgroup_root,
        id: &id,
        resources: &sb.confinement.resources,
        stdin: devnull.as_raw_fd(),
        stdout: sb.stdout.as_raw_fd(),
        stderr: sb.stderr.as_raw_fd(),
        tty: None,
        console_to_caller: false,
        attach: Some(attach),
        id_mapping: None,
    };
    let exit = container::start(&plan, &mut launch, devnull).and_then(|running| running.wait());
    // Also after a failed setup: the child may have made mount points before it failed.
    let cleaned = plan.remove_mount_points();
    let exit = exit?;
    cleaned.map(|()| exit)
}

/// A build step's [`ChildPlan`]: the step's process, its host `/etc` files with host
/// networking, and its cache mounts and secrets.
impl ChildPlan {
    pub(crate) fn new(sb: &StepSandbox, sandbox: Sandbox) -> Result<ChildPlan, RuntimeError> {
        let process = &sb.process;
        let etc_binds = match process.network {
            NetworkMode::Host => HOST_ETC_FILES
                .iter()
                .map(|(host, rel)| Ok((c_string(host, "path")?, c_string(rel, "path")?)))
                .collect::<Result<_, RuntimeError>>()?,
            NetworkMode::Bridge => sb
                .etc_files
                .iter()
                .map(|(file, rel)| {
                    let host = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
                        .map_err(|_| {
                            RuntimeError::from(super::error::InvalidSandbox::Nul {
                                what: "path".into(),
                                value: file.display().to_string(),
                            })
                        })?;
                    Ok((host, c_string(rel, "path")?))
                })
                .collect::<Result<_, RuntimeError>>()?,
            NetworkMode::None => Vec::new(),
        };
        // Before `build`, which prepares the overlay on disk as its last step.
        let step_mounts = StepMountPlan::new(&sb.mounts, &sb.overlay, process.uid, process.gid)?;
        let mut plan = ChildPlan::build(
            &sb.overlay,
            process,
            InitLayer::MountPoints,
            etc_binds,
            sandbox,
        )?;
        plan.step_mounts = step_mounts;
        Ok(plan)
    }
}

/// A cgroup name for a step, unique among the steps of all running kilns.
fn step_id() -> String {
    static STEPS: AtomicU64 = AtomicU64::new(0);
    let n = STEPS.fetch_add(1, Ordering::Relaxed);
    format!("step-{}-{n}", std::process::id())
}
