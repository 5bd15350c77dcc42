//! `kiln run --sysctl`: kernel parameters of the container's own namespaces, written by
//! the clone child into its fresh `/proc/sys` before that is made read-only.
//!
//! Which keys may be set at all is decided above (`kiln_spec::values::sysctl`: the IPC,
//! UTS and network namespaces' keys only, as Docker and runc allow). What makes the write
//! land in the container and not on the host is where it happens: the child is already in
//! its new IPC, UTS and network namespaces, and the kernel resolves `/proc/sys` entries
//! for the namespaces of the process that opens (network) or writes (IPC, UTS) them. The
//! file is opened beneath the container's own `/proc` mount, through no symlink and no
//! other mount, so a key can only name a file of that `/proc/sys`.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd};

use super::error::{InvalidSandbox, Report, Stage};
use super::plan::c_string;
use super::sys::{self, Errno};
use super::RuntimeError;

/// One sysctl, prepared for the allocation-free child.
#[derive(Debug)]
pub(crate) struct PreparedSysctl {
    /// The dotted key, for messages.
    pub key: String,
    /// The file beneath `/proc`: `sys/kernel/shmmax`.
    pub rel: CString,
    /// What is written, with the newline `sysctl -w` writes.
    pub value: CString,
}

/// Checks the keys' form (the words between dots; which keys are allowed is the caller's
/// decision) and turns each into a path beneath `/proc`.
pub(crate) fn prepare(sysctls: &[(String, String)]) -> Result<Vec<PreparedSysctl>, RuntimeError> {
    sysctls
        .iter()
        .map(|(key, value)| {
            let well_formed = key.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
            if !well_formed {
                return Err(InvalidSandbox::SysctlKey(key.clone()).into());
            }
            Ok(PreparedSysctl {
                key: key.clone(),
                rel: c_string(&format!("sys/{}", key.replace('.', "/")), "sysctl")?,
                value: c_string(&format!("{value}\n"), "sysctl value")?,
            })
        })
        .collect()
}

/// Writes each sysctl through the container's `/proc` (mounted at `proc` in `root`, not yet
/// read-only). Runs in the clone child, in the container's namespaces.
pub(crate) fn write_all(root: BorrowedFd, sysctls: &[PreparedSysctl]) -> Result<(), Report> {
    if sysctls.is_empty() {
        return Ok(());
    }
    let fail = |i: usize| {
        move |errno: Errno| Report {
            stage: Stage::Sysctl,
            errno,
            detail: i as u32,
        }
    };
    let proc = sys::open_in_root(root, c"proc", libc::O_DIRECTORY).map_err(fail(0))?;
    for (i, sysctl) in sysctls.iter().enumerate() {
        write_one(proc.as_fd(), sysctl).map_err(fail(i))?;
    }
    Ok(())
}

fn write_one(proc: BorrowedFd, sysctl: &PreparedSysctl) -> Result<(), Errno> {
    let file = sys::open_beneath(proc, &sysctl.rel, libc::O_WRONLY)?;
    sys::write_all(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        sysctl.value.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_paths_beneath_proc() {
        let p = prepare(&[("net.ipv4.ip_forward".into(), "1".into())]).unwrap();
        assert_eq!(p[0].rel.as_c_str(), c"sys/net/ipv4/ip_forward");
        assert_eq!(p[0].value.as_c_str(), c"1\n");
        for bad in ["net/../../x", "net..x", "", "kernel.shm max"] {
            assert!(prepare(&[(bad.into(), "1".into())]).is_err(), "{bad}");
        }
    }
}
