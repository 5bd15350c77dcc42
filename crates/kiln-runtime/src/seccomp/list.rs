//! kiln's default seccomp profile: an allow-list in the shape of Docker's default profile.
//!
//! Exists because a deny-list fails open: every call it forgot (a socket family, a
//! `personality` flag, a call a later kernel adds) is allowed. Here everything not listed
//! fails with `EPERM`, and numbers above kiln's table with `ENOSYS` (compiler's prelude).
//!
//! The list follows Docker's choices (moby's `profiles/seccomp`), checked call by call:
//! - allowed for everyone: ordinary process, file, memory, signal, time-reading, IPC and
//!   socket work, including `adjtimex`/`clock_adjtime` (they only read without
//!   `CAP_SYS_TIME`) and `name_to_handle_at` (harmless without `open_by_handle_at`);
//! - `clone` only without namespace flags, `clone3` `ENOSYS` (its flags are behind a
//!   pointer seccomp cannot read; libc falls back to `clone`), `personality` only with the
//!   values programs query or set in practice, `socket` for every family but `AF_VSOCK`
//!   (host/guest sockets are not namespaced: a container could reach the host's VMs);
//! - calls that need a capability are allowed only when the bounding set has it;
//! - never: kernel keyrings (`keyctl`, `add_key`, `request_key`: not namespaced),
//!   `userfaultfd` (a tool for kernel race exploits), `io_uring_*` (a large attack surface
//!   that bypasses this filter for the I/O it does), `kexec_*`, `pivot_root`, `swapon`,
//!   `swapoff`, `nfsservctl`, `uselib`, `ustat`, `sysfs`, `_sysctl` and the unimplemented
//!   `afs_syscall`, `getpmsg`, `putpmsg`, `security`, `tuxcall`, `vserver`.
//!
//! Where kiln differs from Docker: `migrate_pages` and `move_pages` are allowed with
//! `CAP_SYS_NICE` (Docker lists neither), `open_tree_attr` (6.15) goes with the other
//! mount-API calls under `CAP_SYS_ADMIN`, and `file_getattr`/`file_setattr` (6.17, the
//! `FS_IOC_FS[GS]ETXATTR` ioctls as calls) are allowed; Docker's list predates them.
//! `socket`'s rules compare all 64 bits of the family, so a family with high bits set
//! (which the kernel would truncate to `AF_VSOCK`) is refused too. (Docker's newest list
//! allows named families only and also refuses `AF_ALG`; kiln refuses `AF_VSOCK` only, as
//! SECURITY.md rule 14 says.)
//!
//! Of the calls newer than libseccomp 2.5: `cachestat`, `fchmodat2`, `map_shadow_stack`,
//! `futex_wake`/`wait`/`requeue`, `statmount`/`listmount` (read the caller's own mount
//! namespace), `mseal`, `uretprobe` and the `*xattrat` calls are allowed, as Docker does;
//! `lsm_get_self_attr`/`lsm_set_self_attr`/`lsm_list_modules` need `CAP_SYS_ADMIN`, as in
//! Docker (they read and change the process's LSM labels, the confinement itself).

use caps::Capability as Cap;

use super::model::{Action, ArgCmp, Condition, Entry, Op, Profile, Rule};

/// Allowed for every container.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "adjtimex", "bind", "brk", "cachestat", "capget", "capset", "chdir",
    "clock_adjtime", "clock_getres", "clock_gettime", "clock_nanosleep", "close",
    "close_range", "connect", "copy_file_range", "dup", "dup3", "epoll_create1", "epoll_ctl",
    "epoll_pwait", "epoll_pwait2", "eventfd2", "execve", "execveat", "exit", "exit_group",
    "faccessat", "faccessat2", "fadvise64", "fallocate", "fanotify_mark", "fchdir", "fchmod",
    "fchmodat", "fchmodat2", "fchown", "fchownat", "fcntl", "fdatasync", "fgetxattr",
    "file_getattr", "file_setattr", "flistxattr", "flock", "fremovexattr", "fsetxattr",
    "fstat", "fstatfs", "fsync", "ftruncate", "futex", "futex_requeue", "futex_wait",
    "futex_waitv", "futex_wake", "get_robust_list", "getcpu", "getcwd", "getdents64",
    "getegid", "geteuid", "getgid", "getgroups", "getitimer", "getpeername", "getpgid",
    "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresuid", "getrlimit",
    "getrusage", "getsid", "getsockname", "getsockopt", "gettid", "gettimeofday", "getuid",
    "getxattr", "getxattrat", "inotify_add_watch", "inotify_init1", "inotify_rm_watch",
    "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_setup", "io_submit",
    "ioctl", "ioprio_get", "ioprio_set", "kill", "landlock_add_rule",
    "landlock_create_ruleset", "landlock_restrict_self", "lgetxattr", "linkat", "listen",
    "listmount", "listxattr", "listxattrat", "llistxattr", "lremovexattr", "lseek",
    "lsetxattr", "madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret",
    "mincore", "mkdirat", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mprotect",
    "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedsend", "mq_unlink",
    "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "openat",
    "openat2", "pidfd_open", "pidfd_send_signal", "pipe2", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "ppoll", "prctl", "pread64", "preadv", "preadv2", "prlimit64",
    "process_mrelease", "pselect6", "pwrite64", "pwritev", "pwritev2", "read", "readahead",
    "readlinkat", "readv", "recvfrom", "recvmmsg", "recvmsg", "remap_file_pages",
    "removexattr", "removexattrat", "renameat2", "restart_syscall", "rseq", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_tgsigqueueinfo", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity", "sched_setattr",
    "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "semctl", "semget",
    "semop", "semtimedop", "sendfile", "sendmmsg", "sendmsg", "sendto", "set_robust_list",
    "set_tid_address", "setfsgid", "setfsuid", "setgid", "setgroups", "setitimer", "setpgid",
    "setpriority", "setregid", "setresgid", "setresuid", "setreuid", "setrlimit", "setsid",
    "setsockopt", "setuid", "setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget",
    "shutdown", "sigaltstack", "signalfd4", "socketpair", "splice", "statfs", "statmount",
    "statx", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill",
    "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime",
    "timerfd_create", "timerfd_gettime", "timerfd_settime", "times", "tkill", "truncate",
    "umask", "uname", "unlinkat", "utimensat", "vmsplice", "wait4", "waitid", "write",
    "writev",
];

/// Allowed on x86_64 only: the older file calls the generic table dropped, and the
/// architecture's own (`arch_prctl` sets the TLS base; `modify_ldt` is used by Wine and
/// old threading code; `uretprobe` returns from a user-space probe).
#[rustfmt::skip]
const ALLOWED_X86_64: &[&str] = &[
    "access", "alarm", "arch_prctl", "chmod", "chown", "creat", "dup2", "epoll_create",
    "epoll_ctl_old", "epoll_wait", "epoll_wait_old", "eventfd", "fork", "futimesat",
    "get_thread_area", "getdents", "getpgrp", "inotify_init", "lchown", "link", "lstat",
    "mkdir", "mknod", "modify_ldt", "open", "pause", "pipe", "poll", "readlink", "rename",
    "rmdir", "select", "set_thread_area", "signalfd", "stat", "symlink", "time", "unlink",
    "uretprobe", "utime", "utimes", "vfork",
];

/// Calls allowed only with a capability in the bounding set.
#[rustfmt::skip]
const WITH_CAPABILITY: &[(Cap, &[&str])] = &[
    (
        Cap::CAP_SYS_ADMIN,
        &[
            "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
            "lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr",
            "mount", "mount_setattr", "move_mount", "open_tree", "open_tree_attr",
            "perf_event_open", "quotactl", "quotactl_fd", "setdomainname", "sethostname",
            "setns", "syslog", "umount2", "unshare",
        ],
    ),
    (Cap::CAP_DAC_READ_SEARCH, &["open_by_handle_at"]),
    (
        Cap::CAP_SYS_PTRACE,
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    (Cap::CAP_SYS_BOOT, &["reboot"]),
    (Cap::CAP_SYS_CHROOT, &["chroot"]),
    (
        Cap::CAP_SYS_MODULE,
        &["delete_module", "finit_module", "init_module"],
    ),
    (Cap::CAP_SYS_PACCT, &["acct"]),
    (Cap::CAP_SYS_TIME, &["clock_settime", "settimeofday"]),
    (Cap::CAP_SYS_TTY_CONFIG, &["vhangup"]),
    (
        Cap::CAP_SYS_NICE,
        &[
            "get_mempolicy", "mbind", "migrate_pages", "move_pages", "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Cap::CAP_SYSLOG, &["syslog"]),
    (Cap::CAP_BPF, &["bpf"]),
    (Cap::CAP_PERFMON, &["perf_event_open"]),
];

/// `clone` flags that create namespaces.
pub(super) const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// `personality` values allowed: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `PER_LINUX32|UNAME26`, and `0xffffffff`, which only queries.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `AF_VSOCK`, the one socket family refused.
const AF_VSOCK: u64 = libc::AF_VSOCK as u64;
/// The families Linux has above `AF_VSOCK` (`AF_KCM` … `AF_MCTP`); the kernel refuses
/// higher ones itself. Listed so that the rules are exact 64-bit comparisons.
const FAMILIES_ABOVE_VSOCK: std::ops::RangeInclusive<u64> = 41..=45;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| n.to_string()).collect()
}

fn entry(list: &[&str], action: Action, args: Vec<ArgCmp>) -> Entry {
    Entry {
        names: names(list),
        rule: Rule { args, action },
        includes: Condition::default(),
        excludes: Condition::default(),
    }
}

fn allow(list: &[&str]) -> Entry {
    entry(list, Action::Allow, Vec::new())
}

fn arg0(op: Op, value: u64) -> Vec<ArgCmp> {
    vec![ArgCmp {
        index: 0,
        op,
        value,
    }]
}

fn if_cap(mut e: Entry, cap: Cap) -> Entry {
    e.includes.caps.push(cap);
    e
}

fn unless_cap(mut e: Entry, cap: Cap) -> Entry {
    e.excludes.caps.push(cap);
    e
}

fn on_arch(mut e: Entry, arch: &str) -> Entry {
    e.includes.arches.push(arch.to_string());
    e
}

/// kiln's default profile, before it is resolved for a container.
pub(super) fn default_profile() -> Profile {
    let mut entries = vec![
        allow(ALLOWED),
        on_arch(allow(ALLOWED_X86_64), "amd64"),
        on_arch(allow(&["renameat"]), "amd64"),
        on_arch(allow(&["renameat"]), "arm64"),
        on_arch(allow(&["riscv_flush_icache", "riscv_hwprobe"]), "riscv64"),
        // Docker allows these (the kernel's ptrace access checks still apply) from 4.8
        // on, where a tracer can no longer change a call after seccomp has checked it.
        Entry {
            includes: Condition {
                min_kernel: Some((4, 8)),
                ..Condition::default()
            },
            ..allow(&["process_vm_readv", "process_vm_writev", "ptrace"])
        },
        on_arch(
            if_cap(allow(&["ioperm", "iopl"]), Cap::CAP_SYS_RAWIO),
            "amd64",
        ),
        unless_cap(
            entry(
                &["clone"],
                Action::Allow,
                arg0(Op::MaskedEq(NAMESPACE_FLAGS), 0),
            ),
            Cap::CAP_SYS_ADMIN,
        ),
        unless_cap(
            entry(&["clone3"], Action::Errno(libc::ENOSYS as u16), Vec::new()),
            Cap::CAP_SYS_ADMIN,
        ),
    ];
    entries.extend(
        PERSONALITIES
            .iter()
            .map(|&p| entry(&["personality"], Action::Allow, arg0(Op::Eq, p))),
    );
    entries.push(entry(&["socket"], Action::Allow, arg0(Op::Lt, AF_VSOCK)));
    entries.extend(
        FAMILIES_ABOVE_VSOCK.map(|family| entry(&["socket"], Action::Allow, arg0(Op::Eq, family))),
    );
    entries.extend(
        WITH_CAPABILITY
            .iter()
            .map(|(cap, list)| if_cap(allow(list), *cap)),
    );
    Profile {
        default: Action::Errno(libc::EPERM as u16),
        entries,
    }
}

/// Calls no default container may make, whatever its capabilities (a test checks them).
#[cfg(test)]
#[rustfmt::skip]
pub(super) const NEVER: &[&str] = &[
    "keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "kexec_load", "kexec_file_load", "pivot_root", "swapon", "swapoff",
];
