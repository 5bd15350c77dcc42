//! [`Process`]: what runs inside a build step or a container, and as whom.
//!
//! Build steps ([`StepSandbox`](super::StepSandbox)) and `kiln run`
//! ([`ContainerSpec`](super::ContainerSpec)) start their command the same way, so they share
//! this one description; [`ChildPlan::build`](super::plan::ChildPlan::build) turns it into
//! the C strings the clone child uses.

/// The network of a step or container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// The host's network namespace; for build steps, the host's `/etc/hosts` and
    /// `/etc/resolv.conf` are bound read-only over the image's, when the image has them as
    /// regular files.
    Host,
    /// A fresh network namespace with only the loopback interface, up.
    None,
}

/// What a step or container runs: the command, its environment and workdir, the user it
/// runs as, its hostname and its network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// "K=V" entries. `PATH` from here is used to find `argv[0]` when it has no `/`.
    pub env: Vec<String>,
    /// Absolute path inside the root; created if missing (owned by root, 0755), like
    /// Docker's `WORKDIR`.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups; empty clears kiln's own.
    pub groups: Vec<u32>,
    /// The hostname in the new uts namespace (1 to 64 bytes).
    pub hostname: String,
    pub network: NetworkMode,
}
