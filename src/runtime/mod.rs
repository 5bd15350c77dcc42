//! The sandbox: namespaces, overlay rootfs, pivot_root, /proc and /dev, exec.
//!
//! Exists so that the rest of kiln can run a command "inside an image" without knowing how
//! Linux isolates processes. Today it serves build steps ([`run_step`]) and direct access to
//! an image's merged filesystem ([`with_overlay`]); `kiln run` will extend it with cgroups,
//! capabilities, seccomp and a PID 1 reaper.
//!
//! Two rules shape it (DESIGN.md §6, SECURITY.md §3 rule 9):
//! - kiln is multi-threaded, so everything the `clone` child needs is prepared before
//!   `clone` ([`plan`]) and the child ([`child`]) makes raw system calls only, reporting a
//!   failure as a fixed-size record over a close-on-exec pipe;
//! - every mount happens inside the step's (or a thread's) private mount namespace, on mount
//!   points resolved inside the root without following image symlinks, so nothing is
//!   mounted on the host and nothing needs cleaning after a crash.
//!
//! Files: `overlay` (option string, scaffold, `with_overlay`), `sandbox` (public step types,
//! clone and wait), `plan` (C strings for the child), `child` (the allocation-free child),
//! `devices` (`/proc`, `/dev`, `/sys`, host file binds), `sys` (raw syscall wrappers),
//! `error`.

pub mod capabilities;
pub mod cgroups;
mod child;
mod container;
mod devices;
mod error;
mod init;
mod mounts;
mod overlay;
mod plan;
mod pty;
mod sandbox;
pub mod seccomp;
mod sys;

#[cfg(test)]
mod container_tests;
#[cfg(test)]
mod tests;

pub use capabilities::{CapabilityError, CapabilitySet};
pub use cgroups::{CgroupError, Resources};
pub use container::{
    run_container, start_container, BindMount, ContainerExit, ContainerSpec, RunningContainer,
};
pub use error::{RuntimeError, EXEC_STAGE};
pub use overlay::{with_overlay, Overlay};
pub use plan::DEFAULT_PATH;
pub use sandbox::{run_step, ExitStatus, NetworkMode, StepSandbox};
