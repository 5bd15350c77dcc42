//! The default seccomp profile of `kiln run`: Docker's default profile expressed as a deny
//! list, compiled to BPF with seccompiler in the parent and installed by the clone child.
//!
//! Everything is allowed except the system calls Docker's profile withholds: kernel
//! keyrings, module loading, kexec, reboot, mounting and namespaces, `bpf`, tracing other
//! processes, clock setting, swap, accounting, raw I/O ports, obsolete calls, `io_uring`.
//! Like Docker, a call is allowed again when the container holds the capability that
//! guards it (e.g. `mount` with `CAP_SYS_ADMIN`). Blocked calls fail with `EPERM`; `clone`
//! with a namespace flag is blocked like `unshare`, and `clone3` fails with `ENOSYS`
//! (seccomp cannot look into its argument struct) so that libc falls back to `clone`.
//!
//! On x86_64 the x32 ABI (syscall numbers with bit 30 set) is refused as a whole, and a
//! 32-bit (i386) syscall kills the process (seccompiler checks the architecture first).
//! The same list is exported for the OCI `config.json` by [`oci_profile`].

use std::collections::BTreeMap;

use caps::Capability as Cap;
use seccompiler::{
    sock_filter, BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp,
    SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use super::sys::{self, Errno};

/// A deny-list entry: the call, and the capability that allows it again (if any).
struct Denied {
    name: &'static str,
    nr: libc::c_long,
    unless: Option<Cap>,
}

const fn deny(name: &'static str, nr: libc::c_long, unless: Option<Cap>) -> Denied {
    Denied { name, nr, unless }
}

/// Docker's default profile, as the calls it does not allow.
const DENIED: &[Denied] = &[
    deny("add_key", libc::SYS_add_key, None),
    deny("keyctl", libc::SYS_keyctl, None),
    deny("request_key", libc::SYS_request_key, None),
    deny("userfaultfd", libc::SYS_userfaultfd, None),
    deny("io_uring_setup", libc::SYS_io_uring_setup, None),
    deny("io_uring_enter", libc::SYS_io_uring_enter, None),
    deny("io_uring_register", libc::SYS_io_uring_register, None),
    deny("bpf", libc::SYS_bpf, Some(Cap::CAP_SYS_ADMIN)),
    deny(
        "perf_event_open",
        libc::SYS_perf_event_open,
        Some(Cap::CAP_SYS_ADMIN),
    ),
    deny(
        "lookup_dcookie",
        libc::SYS_lookup_dcookie,
        Some(Cap::CAP_SYS_ADMIN),
    ),
    deny("mount", libc::SYS_mount, Some(Cap::CAP_SYS_ADMIN)),
    deny("umount2", libc::SYS_umount2, Some(Cap::CAP_SYS_ADMIN)),
    deny("pivot_root", libc::SYS_pivot_root, Some(Cap::CAP_SYS_ADMIN)),
    deny("fsopen", libc::SYS_fsopen, Some(Cap::CAP_SYS_ADMIN)),
    deny("fsconfig", libc::SYS_fsconfig, Some(Cap::CAP_SYS_ADMIN)),
    deny("fsmount", libc::SYS_fsmount, Some(Cap::CAP_SYS_ADMIN)),
    deny("fspick", libc::SYS_fspick, Some(Cap::CAP_SYS_ADMIN)),
    deny("move_mount", libc::SYS_move_mount, Some(Cap::CAP_SYS_ADMIN)),
    deny("open_tree", libc::SYS_open_tree, Some(Cap::CAP_SYS_ADMIN)),
    deny(
        "mount_setattr",
        libc::SYS_mount_setattr,
        Some(Cap::CAP_SYS_ADMIN),
    ),
    deny("unshare", libc::SYS_unshare, Some(Cap::CAP_SYS_ADMIN)),
    deny("setns", libc::SYS_setns, Some(Cap::CAP_SYS_ADMIN)),
    deny("quotactl", libc::SYS_quotactl, Some(Cap::CAP_SYS_ADMIN)),
    deny(
        "quotactl_fd",
        libc::SYS_quotactl_fd,
        Some(Cap::CAP_SYS_ADMIN),
    ),
    deny(
        "name_to_handle_at",
        libc::SYS_name_to_handle_at,
        Some(Cap::CAP_SYS_ADMIN),
    ),
    deny(
        "open_by_handle_at",
        libc::SYS_open_by_handle_at,
        Some(Cap::CAP_DAC_READ_SEARCH),
    ),
    deny("ptrace", libc::SYS_ptrace, Some(Cap::CAP_SYS_PTRACE)),
    deny(
        "process_vm_readv",
        libc::SYS_process_vm_readv,
        Some(Cap::CAP_SYS_PTRACE),
    ),
    deny(
        "process_vm_writev",
        libc::SYS_process_vm_writev,
        Some(Cap::CAP_SYS_PTRACE),
    ),
    deny("kcmp", libc::SYS_kcmp, Some(Cap::CAP_SYS_PTRACE)),
    deny("kexec_load", libc::SYS_kexec_load, Some(Cap::CAP_SYS_BOOT)),
    deny(
        "kexec_file_load",
        libc::SYS_kexec_file_load,
        Some(Cap::CAP_SYS_BOOT),
    ),
    deny("reboot", libc::SYS_reboot, Some(Cap::CAP_SYS_BOOT)),
    deny(
        "init_module",
        libc::SYS_init_module,
        Some(Cap::CAP_SYS_MODULE),
    ),
    deny(
        "finit_module",
        libc::SYS_finit_module,
        Some(Cap::CAP_SYS_MODULE),
    ),
    deny(
        "delete_module",
        libc::SYS_delete_module,
        Some(Cap::CAP_SYS_MODULE),
    ),
    deny("swapon", libc::SYS_swapon, Some(Cap::CAP_SYS_ADMIN)),
    deny("swapoff", libc::SYS_swapoff, Some(Cap::CAP_SYS_ADMIN)),
    deny("acct", libc::SYS_acct, Some(Cap::CAP_SYS_PACCT)),
    deny(
        "settimeofday",
        libc::SYS_settimeofday,
        Some(Cap::CAP_SYS_TIME),
    ),
    deny(
        "clock_settime",
        libc::SYS_clock_settime,
        Some(Cap::CAP_SYS_TIME),
    ),
    deny(
        "clock_adjtime",
        libc::SYS_clock_adjtime,
        Some(Cap::CAP_SYS_TIME),
    ),
    deny("adjtimex", libc::SYS_adjtimex, Some(Cap::CAP_SYS_TIME)),
    deny("syslog", libc::SYS_syslog, Some(Cap::CAP_SYSLOG)),
    deny("mbind", libc::SYS_mbind, Some(Cap::CAP_SYS_NICE)),
    deny(
        "set_mempolicy",
        libc::SYS_set_mempolicy,
        Some(Cap::CAP_SYS_NICE),
    ),
    deny(
        "migrate_pages",
        libc::SYS_migrate_pages,
        Some(Cap::CAP_SYS_NICE),
    ),
    deny("move_pages", libc::SYS_move_pages, Some(Cap::CAP_SYS_NICE)),
    #[cfg(target_arch = "x86_64")]
    deny("iopl", libc::SYS_iopl, Some(Cap::CAP_SYS_RAWIO)),
    #[cfg(target_arch = "x86_64")]
    deny("ioperm", libc::SYS_ioperm, Some(Cap::CAP_SYS_RAWIO)),
    #[cfg(target_arch = "x86_64")]
    deny("nfsservctl", libc::SYS_nfsservctl, None),
    #[cfg(target_arch = "x86_64")]
    deny("uselib", libc::SYS_uselib, None),
    #[cfg(target_arch = "x86_64")]
    deny("ustat", libc::SYS_ustat, None),
    #[cfg(target_arch = "x86_64")]
    deny("sysfs", libc::SYS_sysfs, None),
    #[cfg(target_arch = "x86_64")]
    deny("_sysctl", libc::SYS__sysctl, None),
];

/// `clone` flags that create namespaces; `clone` with any of them needs `CAP_SYS_ADMIN`.
const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// x86_64 marks x32-ABI system call numbers with this bit.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// seccompiler starts every program with this many instructions checking the architecture.
const ARCH_CHECK_LEN: usize = 3;

#[derive(Debug, thiserror::Error)]
#[error("build the seccomp profile: {0}")]
pub struct SeccompError(#[from] BackendError);

/// A compiled filter, ready for the clone child to install.
#[derive(Debug, Clone)]
pub(crate) struct SeccompProgram {
    program: BpfProgram,
}

fn has(capabilities: u64, cap: Cap) -> bool {
    capabilities & cap.bitmask() != 0
}

/// The calls blocked for a container whose bounding set is `capabilities`.
fn denied_for(capabilities: u64) -> impl Iterator<Item = &'static Denied> {
    DENIED
        .iter()
        .filter(move |d| d.unless.is_none_or(|cap| !has(capabilities, cap)))
}

impl SeccompProgram {
    /// The default profile for a container with the given bounding set.
    pub(crate) fn default_profile(capabilities: u64) -> Result<SeccompProgram, SeccompError> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = denied_for(capabilities)
            .map(|d| (d.nr, Vec::new()))
            .collect();
        let sys_admin = has(capabilities, Cap::CAP_SYS_ADMIN);
        if !sys_admin {
            let any_namespace_flag = NAMESPACE_FLAGS
                .iter()
                .map(|flag| {
                    let flag = *flag as u64;
                    let cond = SeccompCondition::new(
                        0,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::MaskedEq(flag),
                        flag,
                    )?;
                    SeccompRule::new(vec![cond])
                })
                .collect::<Result<Vec<_>, _>>()?;
            rules.insert(libc::SYS_clone, any_namespace_flag);
        }
        let arch = TargetArch::try_from(std::env::consts::ARCH)?;
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )?;
        let mut program: BpfProgram = filter.try_into()?;
        let prelude = prelude(sys_admin);
        program.splice(ARCH_CHECK_LEN..ARCH_CHECK_LEN, prelude);
        Ok(SeccompProgram { program })
    }

    /// Installs the filter on the calling thread. Needs `PR_SET_NO_NEW_PRIVS` or
    /// `CAP_SYS_ADMIN`. Allocation-free.
    pub(crate) fn install(&self) -> Result<(), Errno> {
        let prog = libc::sock_fprog {
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: prog points to the program, which outlives the call; the kernel copies it.
        sys::check(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0 as libc::c_uint,
                &prog as *const libc::sock_fprog,
            )
        })
        .map(drop)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.program.len()
    }
}

/// Instructions inserted after the architecture check: refuse the x32 ABI, and make
/// `clone3` fail with `ENOSYS` unless namespaces are allowed.
fn prelude(sys_admin: bool) -> Vec<sock_filter> {
    // Classic BPF opcodes: class | size/op | source.
    const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const BPF_JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    #[cfg(target_arch = "x86_64")]
    const BPF_JMP_JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let errno = |e: libc::c_int| libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA);
    // seccomp_data.nr is the first field.
    let mut out = vec![op(BPF_LD_W_ABS, 0, 0, 0)];
    #[cfg(target_arch = "x86_64")]
    out.extend([
        op(BPF_JMP_JGE_K, 0, 1, X32_SYSCALL_BIT),
        op(BPF_RET_K, 0, 0, errno(libc::EPERM)),
    ]);
    if !sys_admin {
        out.extend([
            op(BPF_JMP_JEQ_K, 0, 1, libc::SYS_clone3 as u32),
            op(BPF_RET_K, 0, 0, errno(libc::ENOSYS)),
        ]);
    }
    out
}

/// The same profile in the OCI runtime spec's form (libseccomp names and actions).
pub fn oci_profile(capabilities: u64) -> serde_json::Value {
    let names: Vec<&str> = denied_for(capabilities).map(|d| d.name).collect();
    let mut syscalls = vec![serde_json::json!({
        "names": names,
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": libc::EPERM,
    })];
    if !has(capabilities, Cap::CAP_SYS_ADMIN) {
        // One entry per flag: the arguments of one entry must all match.
        for flag in NAMESPACE_FLAGS {
            syscalls.push(serde_json::json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": libc::EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }));
        }
        syscalls.push(serde_json::json!({
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::ENOSYS,
        }));
    }
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": [oci_arch()],
        "syscalls": syscalls,
    })
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "SCMP_ARCH_AARCH64",
        "riscv64" => "SCMP_ARCH_RISCV64",
        _ => "SCMP_ARCH_X86_64",
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    use super::*;
    use crate::runtime::capabilities;

    /// Runs `script` under busybox sh with the default profile for `caps` installed.
    fn sh_under_filter(caps: u64, script: &str) -> String {
        let program = SeccompProgram::default_profile(caps).unwrap();
        let mut cmd = Command::new("/bin/busybox");
        cmd.args(["sh", "-c", script]);
        // SAFETY: only system calls in the forked child.
        unsafe {
            cmd.pre_exec(move || {
                let io = |e: Errno| std::io::Error::from_raw_os_error(e);
                capabilities::set_no_new_privs().map_err(io)?;
                program.install().map_err(io)
            })
        };
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    #[test]
    fn the_profile_compiles_small() {
        let default = SeccompProgram::default_profile(capabilities::default_mask()).unwrap();
        assert!(default.len() < 400, "{}", default.len());
        let all = SeccompProgram::default_profile(u64::MAX).unwrap();
        assert!(all.len() < default.len());
    }

    #[test]
    fn blocked_calls_fail_with_eperm_and_the_rest_works() {
        let out = sh_under_filter(
            capabilities::default_mask(),
            "grep Seccomp: /proc/self/status; \
             mount -t tmpfs none /nonexistent-kiln; unshare -n true; \
             hostname >/dev/null && echo still-works",
        );
        assert!(out.contains("Seccomp:\t2\n"), "{out}");
        // busybox mount words EPERM this way.
        assert!(out.contains("mount: permission denied"), "{out}");
        assert!(
            out.contains("unshare: unshare(0x40000000): Operation not permitted"),
            "{out}"
        );
        assert!(out.contains("still-works"), "{out}");
    }

    #[test]
    fn capabilities_lift_the_matching_blocks() {
        let with_admin = capabilities::default_mask() | Cap::CAP_SYS_ADMIN.bitmask();
        let out = sh_under_filter(with_admin, "unshare -n true && echo unshared");
        assert!(out.contains("unshared"), "{out}");
    }

    #[test]
    fn clone_with_namespace_flags_is_blocked_and_clone3_says_enosys() {
        let program = SeccompProgram::default_profile(capabilities::default_mask()).unwrap();
        let child = std::thread::spawn(move || {
            capabilities::set_no_new_privs().unwrap();
            program.install().unwrap();
            // SAFETY: clone3 with a null struct pointer only returns an error.
            let clone3 = unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) };
            let clone3_errno = sys::last_errno();
            // SAFETY: clone with CLONE_NEWNET would fork; the filter refuses it first.
            let clone = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    libc::CLONE_NEWNET | libc::SIGCHLD,
                    0,
                    0,
                    0,
                    0,
                )
            };
            (clone3, clone3_errno, clone, sys::last_errno())
        });
        let (clone3, clone3_errno, clone, clone_errno) = child.join().unwrap();
        assert_eq!((clone3, clone3_errno), (-1, libc::ENOSYS));
        assert_eq!((clone, clone_errno), (-1, libc::EPERM));
    }

    #[test]
    fn the_oci_profile_lists_the_same_calls() {
        let profile = oci_profile(capabilities::default_mask());
        let names = profile["syscalls"][0]["names"].as_array().unwrap();
        assert!(names.iter().any(|n| n == "keyctl"));
        assert!(names.iter().any(|n| n == "mount"));
        assert_eq!(
            names.len(),
            denied_for(capabilities::default_mask()).count()
        );
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ALLOW");
        let privileged = oci_profile(u64::MAX);
        assert_eq!(privileged["syscalls"].as_array().unwrap().len(), 1);
    }
}
