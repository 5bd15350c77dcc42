//! The sandbox: namespaces, overlay rootfs, pivot_root, /proc and /dev, cgroups,
//! capabilities, seccomp, exec.
//!
//! Exists so that the rest of kiln can run a command "inside an image" without knowing how
//! Linux isolates processes. It serves build steps ([`run_step`]), direct access to an
//! image's merged filesystem ([`with_overlay`]) and `kiln run` ([`run_container`],
//! [`start_container`], and [`oci_config`] for `kiln bundle`), and `kiln exec`
//! ([`exec_in_container`]).
//!
//! Two rules shape it (ARCHITECTURE.md `runtime` and Invariants, SECURITY.md §3 rule 9):
//! - kiln is multi-threaded, so everything the `clone` child needs is prepared before
//!   `clone` ([`plan`], capability masks, the seccomp BPF program) and the child
//!   ([`child`]) makes raw system calls only, reporting a failure as a fixed-size record
//!   over a close-on-exec pipe;
//! - every mount happens inside the step's, container's (or a thread's) private mount
//!   namespace, on mount points resolved inside the root with `openat2`, so nothing is
//!   mounted on the host and nothing needs cleaning after a crash. Cgroups are the one host
//!   object a container leaves if kiln is killed; [`cgroups::clean_stale`] removes them.
//!
//! Files: `overlay` (the mount: one `lowerdir+` per layer through the new mount API, or the
//! one-page option string on older kernels; the scaffold; `with_overlay`), `sandbox`
//! (public step types, a step's plan), `container` (public container types, parent side of
//! `kiln run` and the `start()`, clone and wait it shares with steps), `process` (what
//! runs, shared by both), `plan` (what the child reads: C strings, container additions,
//! fds; below `child`, which is below `sandbox` and `container`),
//! `child` (the allocation-free child), `exec` (a process joining a running container), `devices` (`/proc`, `/dev`, `/sys`, host file
//! binds), `container_mounts` (container binds, tmpfs, masked and read-only paths; the
//! target creation step mounts share), `step_mounts` (cache mounts and secrets of build
//! steps), `mount_point_cleanup` (their mount points kept out of the step's layer), `cgroups` (v1 and v2 limits), `capabilities`, `seccomp`, `init`
//! (the PID 1 reaper), `pty` (`-t`), `oci` (`config.json`), `sys` (raw syscall wrappers),
//! `rlimits` (`--ulimit`), `sysctls` (`--sysctl`), `host_devices` (`--device`), `error`;
//! and for an ordinary user's kiln `userns` (the user namespace the whole process runs in,
//! and what the runtime may do in it) and `idmap` (subordinate id ranges); for a container
//! with a user namespace of its own (`--userns`), `container_userns` (its idmapped root,
//! built by the parent) and `id_leases` (slots of host ids, held by a lock).

#[cfg(test)]
#[macro_use]
extern crate kiln_testing;

pub mod capabilities;
use kiln_cgroups as cgroups;
mod child;
mod confinement;
mod container;
mod container_mounts;
pub mod container_userns;
mod devices;
mod error;
mod exec;
mod host_devices;
pub mod id_leases;
pub mod idmap;
mod init;
mod mount_point_cleanup;
mod oci;
mod overlay;
mod plan;
mod process;
mod pty;
mod relay;
mod rlimits;
mod sandbox;
pub mod seccomp;
mod step_mounts;
mod sys;
mod sysctls;
pub mod userns;

#[cfg(test)]
mod container_tests;
#[cfg(test)]
mod step_mounts_tests;
#[cfg(test)]
mod tests;

pub use capabilities::{CapabilityError, CapabilitySet};
pub use cgroups::{
    Access, CgroupError, CpuWeight, DeviceKind, DevicePolicy, DeviceRule, Resources, Swap,
    Throttle, ThrottleKind,
};
pub use confinement::{Confinement, SeccompPolicy};
pub use container::{
    limits_apply, run_container, start_container, start_container_attached, sweep_stale_cgroups,
    BindMount, ContainerExit, ContainerSpec, ExitStatus, RunningContainer,
};
pub use container_userns::{IdMapping, UsernsMode};
pub use error::{InvalidSandbox, MountTargetError, RuntimeError, EXEC_STAGE};
pub use exec::{exec_in_container, ExecSpec, RunningExec};
pub use host_devices::{DeviceError, DeviceNode};
pub use oci::{oci_config, write_state_files};
pub use overlay::{with_overlay, with_overlay_read_only, Overlay, MAX_IMAGE_LAYERS};
pub use plan::DEFAULT_PATH;
pub use process::{add_default_env, NetworkMode, Process};
pub use relay::OutputPipes;
pub use rlimits::{Rlimit, RlimitError, RLIM_INFINITY};
pub use sandbox::{run_step, run_step_attached, StepSandbox};
pub use step_mounts::{SecretBytes, StepMount, MAX_SECRET_BYTES, MAX_STEP_MOUNTS};

/// A pidfd of process `pid`, one of the caller's unreaped children (so the PID cannot have
/// been reused): to `poll` for its end along with other fds.
pub fn pidfd_of_child(pid: i32) -> Result<std::os::fd::OwnedFd, RuntimeError> {
    sys::pidfd_open(pid)
        .map_err(|e| RuntimeError::sys("pidfd_open")(nix::errno::Errno::from_raw(e)))
}
