//! The seccomp filter of `kiln run`: an allow-list compiled to BPF in the parent and
//! installed by the clone child (SECURITY.md §3 rule 14).
//!
//! Exists so that a container makes only the system calls a container needs: everything
//! not allowed fails with `EPERM`, a call newer than kiln's table with `ENOSYS` (so libc
//! falls back to an older call), and calls that need a capability are allowed only when
//! the container's bounding set has it, as in Docker's profile.
//!
//! Files, in the order data flows:
//! - `table`: the native architecture's calls, name ↔ number;
//! - `list`: kiln's default profile (the allow-list, and why each choice);
//! - `docker`: Docker-format profiles for `--security-opt seccomp=FILE`;
//! - `model`: what both mean — entries with conditions, resolved for one container into a
//!   policy (rules per syscall number);
//! - `bpf`: the compiler from a policy to a BPF program, written for kiln because rules
//!   need their own actions and 64-bit argument comparisons.
//!
//! [`oci_profile`] writes the default profile in the OCI runtime spec's form for
//! `kiln bundle`, so that runc applies the same list.

mod bpf;
mod docker;
mod list;
mod model;
mod table;

#[cfg(test)]
mod tests;

use bpf::Insn;
use model::{Profile, Target};

use super::sys::{self, Errno};

/// Largest Docker-format profile kiln reads.
pub const MAX_PROFILE_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("the seccomp profile is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the seccomp profile is {0} bytes; kiln reads at most {MAX_PROFILE_BYTES}")]
    TooLarge(usize),
    #[error("the seccomp profile's {field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error(
        "the seccomp filter needs {0} instructions; the kernel takes at most {max}",
        max = bpf::MAX_INSNS
    )]
    TooLong(usize),
}

/// A compiled filter, ready for the clone child to install.
#[derive(Debug, Clone)]
pub struct SeccompProgram {
    insns: Vec<Insn>,
    /// `SECCOMP_FILTER_FLAG_*` for `seccomp(2)`.
    flags: libc::c_uint,
}

impl SeccompProgram {
    /// kiln's default profile for a container with the given bounding set.
    pub fn default_profile(capabilities: u64) -> Result<SeccompProgram, SeccompError> {
        let (program, _skipped) = Self::compile(&list::default_profile(), 0, capabilities)?;
        Ok(program)
    }

    /// A Docker-format profile (`docker run --security-opt seccomp=FILE`), resolved for a
    /// container with the given bounding set on the running kernel. Also returns the
    /// syscall names this architecture does not have, which were skipped (as runc does),
    /// so that the caller can warn about them.
    pub fn from_docker_profile(
        json: &[u8],
        capabilities: u64,
    ) -> Result<(SeccompProgram, Vec<String>), SeccompError> {
        let loaded = docker::parse(json)?;
        Self::compile(&loaded.profile, loaded.flags, capabilities)
    }

    fn compile(
        profile: &Profile,
        flags: libc::c_uint,
        capabilities: u64,
    ) -> Result<(SeccompProgram, Vec<String>), SeccompError> {
        let target = Target {
            capabilities,
            kernel: model::running_kernel(),
        };
        let (policy, skipped) = profile.resolve(&target);
        let insns = bpf::compile(&policy);
        if insns.len() > bpf::MAX_INSNS {
            return Err(SeccompError::TooLong(insns.len()));
        }
        Ok((SeccompProgram { insns, flags }, skipped))
    }

    /// Installs the filter on the calling thread. Needs `PR_SET_NO_NEW_PRIVS` or
    /// `CAP_SYS_ADMIN`. Allocation-free: it runs in the clone child.
    pub(crate) fn install(&self) -> Result<(), Errno> {
        let prog = libc::sock_fprog {
            len: self.insns.len() as libc::c_ushort,
            // Insn has sock_filter's layout (checked at compile time in bpf.rs).
            filter: self.insns.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prog points to the program, which outlives the call; the kernel copies it.
        sys::check(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        })
        .map(drop)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.insns.len()
    }
}

/// kiln's default profile for a container with the bounding set `capabilities`, in the
/// OCI runtime spec's form (libseccomp names and actions), for `config.json`.
pub fn oci_profile(capabilities: u64) -> serde_json::Value {
    oci_form(&list::default_profile(), capabilities)
}

/// A Docker-format profile (`--security-opt seccomp=FILE`) in the OCI runtime spec's form,
/// resolved for the bounding set `capabilities` like [`SeccompProgram::from_docker_profile`].
pub fn oci_profile_of_docker(
    json: &[u8],
    capabilities: u64,
) -> Result<serde_json::Value, SeccompError> {
    Ok(oci_form(&docker::parse(json)?.profile, capabilities))
}

fn oci_form(profile: &Profile, capabilities: u64) -> serde_json::Value {
    let target = Target {
        capabilities,
        kernel: model::running_kernel(),
    };
    let syscalls: Vec<serde_json::Value> = profile
        .applicable(&target)
        .map(|entry| {
            let (action, errno) = entry.rule.action.oci();
            let mut json = serde_json::json!({"names": entry.names, "action": action});
            if let Some(errno) = errno {
                json["errnoRet"] = errno.into();
            }
            if !entry.rule.args.is_empty() {
                let args: Vec<_> = entry.rule.args.iter().map(|a| a.oci()).collect();
                json["args"] = args.into();
            }
            json
        })
        .collect();
    let (default_action, default_errno) = profile.default.oci();
    serde_json::json!({
        "defaultAction": default_action,
        "defaultErrnoRet": default_errno,
        "architectures": [table::NATIVE.scmp],
        "syscalls": syscalls,
    })
}
