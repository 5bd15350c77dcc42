//! What a process exec'd into a running container gets (`kiln exec`): the container's own
//! environment, workdir, user and confinement, recorded when the container is made, with
//! the caller's `-e`, `-w`, `-u` and `--privileged` on top.
//!
//! Exists because a container's confinement is decided once, from the image, its stored
//! `run:` defaults and `kiln run`'s flags ([`ContainerConfig::merge`]), and an exec must
//! get exactly that, not a second reading of settings that may have changed since (a
//! retagged image, other defaults). So [`ExecContext`] is written as `exec.json` in the
//! container's dir before the container starts, next to `state.json`, and read back by
//! [`prepare`]; the runtime joins the container with it (`runtime::exec_in_container`).

use std::path::Path;

use kiln_runtime::{
    self as runtime, CapabilitySet, Confinement, ExecSpec, Resources, Rlimit, SeccompPolicy,
};
use kiln_store::{ContainerDir, ContainerState, Store};
use serde::{Deserialize, Serialize};

use super::config::ContainerConfig;
use super::error::{ContainerError, Result};
use super::passwd::{self, User};

/// The file in a container's dir that holds its [`ExecContext`].
const EXEC_FILE: &str = "exec.json";

/// What an exec'd process gets unless the caller says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecContext {
    /// The container's environment before kiln's defaults (`HOSTNAME`, `HOME`, `TERM`),
    /// which are added for the exec'd process's own user and terminal.
    pub env: Vec<String>,
    pub hostname: String,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// The container user's home, for `HOME`.
    pub home: String,
    pub capabilities: Capabilities,
    pub no_new_privileges: bool,
    pub seccomp: Seccomp,
    /// The container's `--ulimit`s: an exec'd process is forked by kiln, not by the
    /// container's init, so it gets them set again (as docker's exec does); the limits not
    /// given are kiln's, as the container's are.
    #[serde(default)]
    pub ulimits: Vec<kiln_spec::Ulimit>,
}

/// [`CapabilitySet`] as it is written down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

/// [`SeccompPolicy`] as it is written down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    Default,
    Unconfined,
    /// A Docker-format profile, as JSON text.
    Profile(String),
}

impl ExecContext {
    pub(crate) fn new(config: &ContainerConfig, user: &User, hostname: &str) -> ExecContext {
        let c = &config.confinement;
        let caps = c.capabilities;
        ExecContext {
            env: config.env.clone(),
            hostname: hostname.to_owned(),
            cwd: config.cwd.clone(),
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            home: user.home.clone(),
            capabilities: Capabilities {
                bounding: caps.bounding,
                effective: caps.effective,
                permitted: caps.permitted,
                inheritable: caps.inheritable,
                ambient: caps.ambient,
            },
            no_new_privileges: c.no_new_privileges,
            seccomp: match &c.seccomp {
                SeccompPolicy::Default => Seccomp::Default,
                SeccompPolicy::Unconfined => Seccomp::Unconfined,
                SeccompPolicy::Profile(json) => {
                    Seccomp::Profile(String::from_utf8_lossy(json).into_owned())
                }
            },
            ulimits: c
                .rlimits
                .iter()
                .map(|l| kiln_spec::Ulimit {
                    name: l.name().to_owned(),
                    soft: l.soft,
                    hard: l.hard,
                })
                .collect(),
        }
    }

    pub(crate) fn write(&self, store: &Store, dir: &ContainerDir) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("exec context serialises");
        dir.write_file(store, EXEC_FILE, &json)?;
        Ok(())
    }

    fn read(dir: &ContainerDir) -> Result<ExecContext> {
        dir.read_file(EXEC_FILE)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| ContainerError::NoExecContext(dir.id.clone()))
    }

    /// The container's own confinement (the resources are its cgroup's, not this one's).
    fn confinement(&self) -> Confinement {
        let c = self.capabilities;
        Confinement {
            capabilities: CapabilitySet {
                bounding: c.bounding,
                effective: c.effective,
                permitted: c.permitted,
                inheritable: c.inheritable,
                ambient: c.ambient,
            },
            no_new_privileges: self.no_new_privileges,
            seccomp: match &self.seccomp {
                Seccomp::Default => SeccompPolicy::Default,
                Seccomp::Unconfined => SeccompPolicy::Unconfined,
                Seccomp::Profile(json) => SeccompPolicy::Profile(json.clone().into_bytes()),
            },
            resources: Resources::default(),
            // Written from valid limits; one that no longer reads is left to kiln's own.
            rlimits: self
                .ulimits
                .iter()
                .filter_map(|u| Rlimit::new(&u.name, u.soft, u.hard).ok())
                .collect(),
        }
    }
}

/// What the caller of `kiln exec` asks for.
#[derive(Debug, Clone, Default)]
pub struct ExecSettings {
    pub argv: Vec<String>,
    /// `K=V` entries over the container's environment, in order (a later one wins).
    pub env: Vec<(String, String)>,
    /// `USER[:GROUP]`, looked up in the container's `/etc/passwd` and `/etc/group`.
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Every capability, no seccomp filter, `no_new_privs` off (docker's `exec
    /// --privileged`); the container's namespaces, root and cgroup stay.
    pub privileged: bool,
    pub tty: bool,
    pub interactive: bool,
    pub detach: bool,
}

/// The runtime's description of `settings` run in the container of `dir`, which must be
/// running (its runner holds its lock and has recorded its first process).
pub fn prepare(
    dir: &ContainerDir,
    state: &ContainerState,
    settings: &ExecSettings,
) -> Result<ExecSpec> {
    let pid = match state.init_pid {
        Some(pid) if state.exit_code.is_none() && dir.is_locked() => pid,
        _ => return Err(ContainerError::NotRunning(state.name.clone())),
    };
    let context = ExecContext::read(dir)?;
    let user = match &settings.user {
        None => User {
            uid: context.uid,
            gid: context.gid,
            groups: context.groups.clone(),
            home: context.home.clone(),
        },
        // The container's own files, as it sees them now: its root through its first
        // process (resolved inside that root; the runtime checks the process again).
        Some(spec) => passwd::resolve(Path::new(&format!("/proc/{pid}/root")), spec)?,
    };
    let mut env = context.env.clone();
    for (key, value) in &settings.env {
        env.retain(|kv| kv.split_once('=').map_or(kv != key, |(k, _)| k != key));
        env.push(format!("{key}={value}"));
    }
    runtime::add_default_env(&mut env, &context.hostname, &user.home, settings.tty);
    let confinement = match settings.privileged {
        true => Confinement::privileged(Resources::default()),
        false => context.confinement(),
    };
    Ok(ExecSpec {
        container_pid: pid,
        id: dir.id.clone(),
        cgroup_root: None,
        argv: settings.argv.clone(),
        env,
        cwd: settings.workdir.clone().unwrap_or(context.cwd),
        uid: user.uid,
        gid: user.gid,
        groups: user.groups,
        confinement,
        tty: settings.tty,
        interactive: settings.interactive,
        detach: settings.detach,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confinement_survives_the_round_trip_through_the_file() {
        let mut confinement = Confinement {
            capabilities: CapabilitySet::resolve(&["NET_ADMIN".into()], &["CHOWN".into()], false)
                .unwrap(),
            no_new_privileges: false,
            seccomp: SeccompPolicy::Profile(br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#.to_vec()),
            resources: Resources::default(),
            rlimits: vec![Rlimit::new("nofile", 100, 200).unwrap()],
        };
        let context = ExecContext {
            env: vec!["PATH=/bin".into()],
            hostname: "box".into(),
            cwd: "/srv".into(),
            uid: 1,
            gid: 2,
            groups: vec![3],
            home: "/home/a".into(),
            capabilities: Capabilities {
                bounding: 0,
                effective: 0,
                permitted: 0,
                inheritable: 0,
                ambient: 0,
            },
            no_new_privileges: true,
            seccomp: Seccomp::Default,
            ulimits: vec![],
        };
        let user = User {
            uid: 1,
            gid: 2,
            groups: vec![3],
            home: "/home/a".into(),
        };
        let config = ContainerConfig {
            argv: vec!["sh".into()],
            env: context.env.clone(),
            cwd: context.cwd.clone(),
            user: None,
            hostname: None,
            extra_hosts: vec![],
            network: runtime::NetworkMode::None,
            mounts: vec![],
            tmpfs: vec![],
            shm_size: None,
            sysctls: vec![],
            devices: vec![],
            confinement: confinement.clone(),
            read_only: false,
            init: true,
            health: None,
            restart: Default::default(),
            publish: vec![],
            rates: Default::default(),
            networks: vec![],
            userns: Default::default(),
        };
        let made = ExecContext::new(&config, &user, "box");
        let json = serde_json::to_vec(&made).unwrap();
        let back: ExecContext = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, made);
        assert_eq!(back.confinement(), confinement);
        confinement.seccomp = SeccompPolicy::Unconfined;
        let config = ContainerConfig {
            confinement: confinement.clone(),
            ..config
        };
        let made = ExecContext::new(&config, &user, "box");
        assert_eq!(made.confinement(), confinement);
        assert_eq!(made.env, context.env);
        assert_ne!(made.capabilities, context.capabilities);
    }
}
