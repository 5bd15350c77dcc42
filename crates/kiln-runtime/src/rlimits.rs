//! Process resource limits (`kiln run --ulimit`): [`Rlimit`], by Docker's names, set by
//! the clone child (and by a process `kiln exec` starts) before it gives up its
//! capabilities, so that the command and everything it starts inherit them.
//!
//! Why there, and not in the parent: limits are per process and inherited through `fork`
//! and `execve`, so the container's first process is the one place that gives them to
//! every process of the container; and raising a hard limit above kiln's own needs
//! `CAP_SYS_RESOURCE`, which the child still holds at that point. A limit not given is
//! inherited from kiln, as Docker's containers inherit dockerd's (kiln raises its own
//! open-file soft limit to the hard one at start, so a container gets that too).

use libc::c_long;

use super::sys::{self, Errno};

/// Docker's `--ulimit` names and the kernel's resource numbers.
const RESOURCES: [(&str, u32); 15] = [
    ("core", libc::RLIMIT_CORE),
    ("cpu", libc::RLIMIT_CPU),
    ("data", libc::RLIMIT_DATA),
    ("fsize", libc::RLIMIT_FSIZE),
    ("locks", libc::RLIMIT_LOCKS),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("msgqueue", libc::RLIMIT_MSGQUEUE),
    ("nice", libc::RLIMIT_NICE),
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("rss", libc::RLIMIT_RSS),
    ("rtprio", libc::RLIMIT_RTPRIO),
    ("rttime", libc::RLIMIT_RTTIME),
    ("sigpending", libc::RLIMIT_SIGPENDING),
    ("stack", libc::RLIMIT_STACK),
];

/// The value meaning "no limit" (`RLIM_INFINITY`).
pub const RLIM_INFINITY: u64 = libc::RLIM_INFINITY;

/// One resource limit of a container's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rlimit {
    /// The kernel's `RLIMIT_*` number.
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// Why a limit cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RlimitError {
    #[error("unknown ulimit {0:?}")]
    UnknownName(String),
    #[error("ulimit {name}: the soft limit {soft} is above the hard limit {hard}")]
    SoftAboveHard { name: String, soft: u64, hard: u64 },
}

impl Rlimit {
    /// The limit of Docker's name `name` (`nofile`, `nproc`, …); soft at most hard.
    pub fn new(name: &str, soft: u64, hard: u64) -> Result<Rlimit, RlimitError> {
        let resource = RESOURCES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| *r)
            .ok_or_else(|| RlimitError::UnknownName(name.to_owned()))?;
        if soft > hard {
            return Err(RlimitError::SoftAboveHard {
                name: name.to_owned(),
                soft,
                hard,
            });
        }
        Ok(Rlimit {
            resource,
            soft,
            hard,
        })
    }

    /// Docker's name for the resource.
    pub fn name(&self) -> &'static str {
        RESOURCES
            .iter()
            .find(|(_, r)| *r == self.resource)
            .map_or("unknown", |(n, _)| n)
    }

    /// The OCI runtime spec's name for the resource (`RLIMIT_NOFILE`).
    pub fn oci_type(&self) -> String {
        format!("RLIMIT_{}", self.name().to_ascii_uppercase())
    }

    /// This process's current hard limit of the same resource.
    pub fn current_hard(&self) -> Option<u64> {
        let mut current = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit64 on this process with a valid out pointer and no new limit.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                self.resource as c_long,
                std::ptr::null::<libc::rlimit64>(),
                &mut current as *mut libc::rlimit64,
            )
        };
        (ret == 0).then_some(current.rlim_max)
    }
}

/// Sets every limit of `limits` on the calling process. Allocation-free (the clone
/// child and the exec'd process call it); the error carries the index of the limit that
/// failed.
pub(crate) fn apply(limits: &[Rlimit]) -> Result<(), (usize, Errno)> {
    for (i, limit) in limits.iter().enumerate() {
        let new = libc::rlimit64 {
            rlim_cur: limit.soft,
            rlim_max: limit.hard,
        };
        // SAFETY: prlimit64 on this process with a valid pointer to the new limit.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                limit.resource as c_long,
                &new as *const libc::rlimit64,
                std::ptr::null_mut::<libc::rlimit64>(),
            )
        };
        sys::check(ret).map_err(|e| (i, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dockers_and_checked() {
        let l = Rlimit::new("nofile", 1024, 4096).unwrap();
        assert_eq!(l.resource, libc::RLIMIT_NOFILE);
        assert_eq!(
            (l.name(), l.oci_type().as_str()),
            ("nofile", "RLIMIT_NOFILE")
        );
        assert!(matches!(
            Rlimit::new("files", 1, 1),
            Err(RlimitError::UnknownName(_))
        ));
        assert!(matches!(
            Rlimit::new("nofile", 2, 1),
            Err(RlimitError::SoftAboveHard { .. })
        ));
        assert!(Rlimit::new("core", 0, RLIM_INFINITY).is_ok());
        assert!(l.current_hard().is_some());
    }

    #[test]
    fn limits_are_set_on_a_forked_process() {
        // In a child process, so the test's own limits stay.
        // SAFETY: the child only makes system calls and exits.
        match unsafe { libc::fork() } {
            0 => {
                let ok = apply(&[Rlimit::new("nofile", 64, 128).unwrap()]).is_ok()
                    && Rlimit::new("nofile", 0, 0).unwrap().current_hard() == Some(128);
                // SAFETY: _exit in the forked child.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: waiting for the child just forked.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert_eq!(status, 0);
            }
        }
    }
}
