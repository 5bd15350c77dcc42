//! From the spec's words to a [`Confinement`]: one function for build steps and for
//! `kiln run`, so that `capabilities:`, `privileged:` and limits mean the same in both.
//!
//! A run step's `capabilities:`/`privileged:`/`resources:` and `kiln build --memory` etc.
//! go through [`confinement`]; `kiln run` first merges the image's `run:` defaults with its
//! flags into the same [`Privileges`] and [`Limits`], then calls it too. Both live here,
//! below the build engine, so running an image does not depend on building one.

use kiln_runtime::{
    CapabilityError, CapabilitySet, Confinement, DevicePolicy, Resources, SeccompPolicy,
};
use kiln_spec::{Limits, Privileges};

/// `--security-opt` settings that are not capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityOptions {
    /// `seccomp=unconfined`.
    pub seccomp_unconfined: bool,
    /// `seccomp=FILE`: a Docker-format profile, as JSON.
    pub seccomp_profile: Option<Vec<u8>>,
    /// `no-new-privileges[=true|false]`; `None` keeps the default (on, off when privileged).
    pub no_new_privileges: Option<bool>,
}

/// The confinement that `privileges` and `limits` describe; everything else is a default
/// `kiln run`'s.
pub fn confinement(
    privileges: &Privileges,
    limits: &Limits,
    options: &SecurityOptions,
) -> Result<Confinement, CapabilityError> {
    let resources = Resources {
        memory: limits.memory,
        cpus: limits.cpus,
        pids: limits.pids,
        devices: DevicePolicy::Default,
    };
    let mut confinement = match privileges.privileged {
        true => Confinement::privileged(resources),
        false => Confinement {
            capabilities: CapabilitySet::resolve(&privileges.cap_add, &privileges.cap_drop, false)?,
            resources,
            ..Confinement::default()
        },
    };
    if let Some(json) = &options.seccomp_profile {
        confinement.seccomp = SeccompPolicy::Profile(json.clone());
    }
    if options.seccomp_unconfined {
        confinement.seccomp = SeccompPolicy::Unconfined;
    }
    if let Some(on) = options.no_new_privileges {
        confinement.no_new_privileges = on;
    }
    Ok(confinement)
}

/// `limits` with `fallback`'s values where `limits` has none (a step's `resources:` over
/// `kiln build --memory`, `kiln run --memory` over the image's `run:`).
pub fn limits_over(limits: &Limits, fallback: &Limits) -> Limits {
    Limits {
        memory: limits.memory.or(fallback.memory),
        cpus: limits.cpus.or(fallback.cpus),
        pids: limits.pids.or(fallback.pids),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_step_is_a_default_container() {
        let c = confinement(
            &Privileges::default(),
            &Limits::default(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(c, Confinement::default());
        assert!(c.grants().is_empty());
    }

    #[test]
    fn privileges_and_limits_are_applied() {
        let privileged = Privileges {
            privileged: true,
            ..Default::default()
        };
        let limits = Limits {
            pids: Some(10),
            ..Default::default()
        };
        let c = confinement(&privileged, &limits, &Default::default()).unwrap();
        assert_eq!(c.grants(), ["privileged"]);
        assert_eq!(c.resources.pids, Some(10));
        let admin = Privileges {
            cap_add: vec!["SYS_ADMIN".into()],
            ..Default::default()
        };
        let c = confinement(&admin, &Limits::default(), &Default::default()).unwrap();
        assert_eq!(c.grants(), ["cap-add SYS_ADMIN"]);
        assert_eq!(c.seccomp, SeccompPolicy::Default);
    }

    #[test]
    fn step_limits_win_over_build_flags() {
        let step = Limits {
            memory: Some(1),
            ..Default::default()
        };
        let flags = Limits {
            memory: Some(2),
            pids: Some(3),
            cpus: None,
        };
        let merged = limits_over(&step, &flags);
        assert_eq!((merged.memory, merged.pids), (Some(1), Some(3)));
    }
}
