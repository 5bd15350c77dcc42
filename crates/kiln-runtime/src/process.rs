//! [`Process`]: what runs inside a build step or a container, and as whom.
//!
//! Build steps ([`StepSandbox`](super::StepSandbox)) and `kiln run`
//! ([`ContainerSpec`](super::ContainerSpec)) start their command the same way, so they share
//! this one description; [`ChildPlan::build`](super::plan::ChildPlan::build) turns it into
//! the C strings the clone child uses. They also get the same default environment
//! ([`add_default_env`]), so a script behaves alike in a step and in a container.

/// The network of a step or container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NetworkMode {
    /// The host's network namespace; for build steps, the host's `/etc/hosts` and
    /// `/etc/resolv.conf` are bound read-only over the image's, when the image has them as
    /// regular files.
    Host,
    /// A fresh network namespace with only the loopback interface, up.
    None,
    /// A fresh network namespace to which the caller adds an interface (a bridge
    /// network's veth) before the command runs ([`start_container_attached`]).
    ///
    /// [`start_container_attached`]: crate::start_container_attached
    Bridge,
}

/// What a step or container runs: the command, its environment and workdir, the user it
/// runs as, its hostname and its network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Adds the variables Docker gives every container to `env` ("K=V" entries), each unless
/// `env` already sets it (an image's `env`, a spec's or `-e`, win): `HOSTNAME`, `HOME` (the
/// user's home from the image's passwd, `/` without one) and, when the process has a
/// terminal, `TERM=xterm`. `PATH` is the caller's, as it decides where commands are found.
pub fn add_default_env(env: &mut Vec<String>, hostname: &str, home: &str, tty: bool) {
    let defaults = [
        ("HOSTNAME", Some(hostname)),
        ("HOME", Some(home)),
        ("TERM", tty.then_some("xterm")),
    ];
    for (name, value) in defaults {
        let Some(value) = value else { continue };
        let set = env
            .iter()
            .any(|kv| kv.split_once('=').is_some_and(|(k, _)| k == name));
        if !set {
            env.push(format!("{name}={value}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_only_what_is_unset() {
        let mut env = vec!["PATH=/bin".to_string(), "HOME=/custom".into()];
        add_default_env(&mut env, "box", "/root", false);
        assert_eq!(env, ["PATH=/bin", "HOME=/custom", "HOSTNAME=box"]);
        let mut env = vec!["TERM=vt100".to_string(), "HOSTNAMEX=1".into()];
        add_default_env(&mut env, "box", "/", true);
        assert_eq!(env, ["TERM=vt100", "HOSTNAMEX=1", "HOSTNAME=box", "HOME=/"]);
        let mut env = Vec::new();
        add_default_env(&mut env, "box", "/home/a", true);
        assert_eq!(env, ["HOSTNAME=box", "HOME=/home/a", "TERM=xterm"]);
    }
}
