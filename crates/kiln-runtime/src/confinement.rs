//! [`Confinement`]: what a build step or a container may do — capabilities, `no_new_privs`,
//! seccomp, cgroup limits and the device allow-list — and the one place where the clone
//! child applies it.
//!
//! SECURITY.md rule 11: a build step is a container. Both `run_step` and `start_container`
//! take a `Confinement`, turn it into a [`ConfinePlan`] with [`Confinement::plan`] before
//! `clone`, and the child calls [`ConfinePlan::apply`]; there is no second path that could
//! drift. The default is Docker's default container; anything beyond it is a *grant*
//! ([`Confinement::grants`]) that callers print where the user sees it (a step's line,
//! `kiln run`'s stderr).

use super::capabilities::{self, CapabilitySet, CapsPlan};
use super::cgroups::{DevicePolicy, Resources};
use super::error::{Report, Stage, NO_DETAIL};
use super::rlimits::{self, Rlimit};
use super::seccomp::SeccompProgram;
use super::sys::Errno;
use super::RuntimeError;

/// The seccomp filter a step or container gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SeccompPolicy {
    /// kiln's default profile for the capability set (Docker's).
    #[default]
    Default,
    /// No filter (`--privileged`, `--security-opt seccomp=unconfined`).
    Unconfined,
    /// A Docker-format profile (`--security-opt seccomp=FILE`), as JSON.
    Profile(Vec<u8>),
}

/// Capabilities, `no_new_privs`, seccomp and cgroup limits of one step or container.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Confinement {
    /// The capability sets, exactly as the command gets them (see `capabilities`).
    pub capabilities: CapabilitySet,
    pub no_new_privileges: bool,
    pub seccomp: SeccompPolicy,
    /// Memory, CPU and pids limits of the cgroup the process runs in.
    pub resources: Resources,
    /// Process resource limits (`--ulimit`), set before anything else; the others are
    /// inherited from kiln.
    pub rlimits: Vec<Rlimit>,
}

impl Default for Confinement {
    /// A default `docker run`: Docker's capability set, `no_new_privs` (kiln's choice, also
    /// podman's with `--security-opt no-new-privileges`), the default seccomp profile and
    /// the default pids limit.
    fn default() -> Self {
        Confinement {
            capabilities: CapabilitySet::default(),
            no_new_privileges: true,
            seccomp: SeccompPolicy::Default,
            resources: Resources::default(),
            rlimits: Vec::new(),
        }
    }
}

impl Confinement {
    /// `--privileged` / `privileged: true`: every capability kiln holds, no seccomp filter,
    /// setuid gains allowed, every device. Limits still apply.
    pub fn privileged(resources: Resources) -> Confinement {
        Confinement {
            capabilities: CapabilitySet::privileged(),
            no_new_privileges: false,
            seccomp: SeccompPolicy::Unconfined,
            resources: Resources {
                devices: DevicePolicy::All,
                ..resources
            },
            rlimits: Vec::new(),
        }
    }

    /// What this confinement allows beyond the default, in the words of the flags that ask
    /// for it: `privileged`, `cap-add NET_ADMIN`, `seccomp=unconfined`,
    /// `no-new-privileges=false`. Empty for the default or anything narrower.
    pub fn grants(&self) -> Vec<String> {
        let privileged = Confinement::privileged(self.resources.clone());
        if self.capabilities == privileged.capabilities
            && self.seccomp == SeccompPolicy::Unconfined
            && !self.no_new_privileges
        {
            return vec!["privileged".into()];
        }
        let extra = self.capabilities.bounding & !capabilities::default_mask();
        let mut grants: Vec<String> = CapabilitySet::names(extra)
            .into_iter()
            .map(|name| format!("cap-add {}", name.trim_start_matches("CAP_")))
            .collect();
        if self.capabilities.ambient != 0 {
            grants.push("ambient capabilities".into());
        }
        match self.seccomp {
            SeccompPolicy::Default => {}
            SeccompPolicy::Unconfined => grants.push("seccomp=unconfined".into()),
            SeccompPolicy::Profile(_) => grants.push("seccomp profile from a file".into()),
        }
        if !self.no_new_privileges {
            grants.push("no-new-privileges=false".into());
        }
        if self.resources.devices == DevicePolicy::All {
            grants.push("all devices".into());
        }
        grants
    }

    /// Everything the clone child needs to apply this, prepared (and the seccomp program
    /// compiled) in the parent.
    pub(crate) fn plan(&self) -> Result<ConfinePlan, RuntimeError> {
        let bounding = self.capabilities.bounding;
        let invalid = RuntimeError::Seccomp;
        let seccomp = match &self.seccomp {
            SeccompPolicy::Default => {
                Some(SeccompProgram::default_profile(bounding).map_err(invalid)?)
            }
            SeccompPolicy::Unconfined => None,
            SeccompPolicy::Profile(json) => Some(
                SeccompProgram::from_docker_profile(json, bounding)
                    .map_err(invalid)?
                    .0,
            ),
        };
        Ok(ConfinePlan {
            rlimits: self.rlimits.clone(),
            caps: CapsPlan::new(self.capabilities),
            no_new_privs: self.no_new_privileges,
            seccomp,
        })
    }
}

/// A [`Confinement`] in the form the allocation-free child applies.
pub(crate) struct ConfinePlan {
    pub rlimits: Vec<Rlimit>,
    pub caps: CapsPlan,
    pub no_new_privs: bool,
    pub seccomp: Option<SeccompProgram>,
}

impl ConfinePlan {
    /// The privileges, in the only order that works: resource limits (raising a hard
    /// limit needs CAP_SYS_RESOURCE), bounding set (needs CAP_SETPCAP), `switch_user`, the
    /// other capability sets, no_new_privs, seccomp last. Without no_new_privs the filter
    /// needs CAP_SYS_ADMIN, so it goes in before the user switch.
    pub(crate) fn apply(
        &self,
        switch_user: impl FnOnce() -> Result<(), Report>,
    ) -> Result<(), Report> {
        rlimits::apply(&self.rlimits).map_err(|(i, errno)| Report {
            stage: Stage::SetRlimit,
            errno,
            detail: i as u32,
        })?;
        self.caps.drop_bounding().map_err(at(Stage::DropBounding))?;
        let early_seccomp = !self.no_new_privs;
        if let (Some(filter), true) = (&self.seccomp, early_seccomp) {
            filter.install().map_err(at(Stage::Seccomp))?;
        }
        switch_user()?;
        self.caps
            .set_process_sets()
            .map_err(at(Stage::SetCapabilities))?;
        if self.no_new_privs {
            capabilities::set_no_new_privs().map_err(at(Stage::NoNewPrivs))?;
        }
        if let (Some(filter), false) = (&self.seccomp, early_seccomp) {
            filter.install().map_err(at(Stage::Seccomp))?;
        }
        Ok(())
    }
}

fn at(stage: Stage) -> impl Fn(Errno) -> Report {
    move |errno| Report {
        stage,
        errno,
        detail: NO_DETAIL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_grants_nothing_and_grants_are_named() {
        assert!(Confinement::default().grants().is_empty());
        let narrower = Confinement {
            capabilities: CapabilitySet::uniform(0),
            ..Confinement::default()
        };
        assert!(narrower.grants().is_empty());
        assert_eq!(
            Confinement::privileged(Resources::default()).grants(),
            ["privileged"]
        );
        let admin = CapabilitySet::resolve(&["NET_ADMIN".into()], &[], false).unwrap();
        let c = Confinement {
            capabilities: admin,
            seccomp: SeccompPolicy::Unconfined,
            ..Confinement::default()
        };
        assert_eq!(c.grants(), ["cap-add NET_ADMIN", "seccomp=unconfined"]);
    }
}
