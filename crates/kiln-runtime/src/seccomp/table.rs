//! The system calls of the architecture kiln runs on: name ↔ number.
//!
//! Exists because an allow-list needs two facts a deny-list did not: the *whole* set of
//! calls the kernel has (so a profile's names resolve, and so that any number above the
//! highest one can be answered with `ENOSYS`, which tells a newer libc to fall back), and
//! one name for each number (so the same list can be written out for runc). Numbers come
//! from `libc::SYS_*`; the few calls libc 0.2.191 does not have yet on an architecture are
//! defined in [`nr`] from the kernel's tables. The native architecture's identities (the
//! `AUDIT_ARCH_*` value the filter checks, and its names in OCI and Docker profiles) live
//! here too.

use libc::c_long;

/// One system call of the native architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Syscall {
    pub name: &'static str,
    pub nr: u32,
}

/// How the native architecture is named by the kernel, OCI profiles and Docker profiles.
pub(super) struct Arch {
    /// `seccomp_data.arch`: `AUDIT_ARCH_*` (ELF machine | 64-bit | little-endian).
    pub audit: u32,
    /// The OCI / libseccomp name (`architectures` in a profile).
    pub scmp: &'static str,
    /// The name Docker profiles use in `includes`/`excludes` `arches`.
    pub docker: &'static str,
}

#[cfg(target_arch = "x86_64")]
pub(super) const NATIVE: Arch = Arch {
    audit: 0xC000_003E,
    scmp: "SCMP_ARCH_X86_64",
    docker: "amd64",
};
#[cfg(target_arch = "aarch64")]
pub(super) const NATIVE: Arch = Arch {
    audit: 0xC000_00B7,
    scmp: "SCMP_ARCH_AARCH64",
    docker: "arm64",
};
#[cfg(target_arch = "riscv64")]
pub(super) const NATIVE: Arch = Arch {
    audit: 0xC000_00F3,
    scmp: "SCMP_ARCH_RISCV64",
    docker: "riscv64",
};
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
compile_error!("kiln's seccomp table covers x86_64, aarch64 and riscv64");

/// x86_64 marks x32-ABI system call numbers with this bit; kiln refuses that ABI.
#[cfg(target_arch = "x86_64")]
pub(super) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// libc's numbers, plus those libc 0.2.191 lacks on some architecture. From 424 on the
/// kernel numbers new calls the same on every architecture kiln supports, so those are
/// defined once (where libc has one too, the local definition shadows an equal value; a
/// test checks that on x86_64).
#[allow(non_upper_case_globals)]
mod nr {
    use libc::c_long;
    pub(super) use libc::*;

    pub(super) const SYS_cachestat: c_long = 451; // 6.5
    pub(super) const SYS_fchmodat2: c_long = 452; // 6.6
    pub(super) const SYS_map_shadow_stack: c_long = 453; // 6.6
    pub(super) const SYS_futex_wake: c_long = 454; // 6.7
    pub(super) const SYS_futex_wait: c_long = 455;
    pub(super) const SYS_futex_requeue: c_long = 456;
    pub(super) const SYS_statmount: c_long = 457; // 6.8
    pub(super) const SYS_listmount: c_long = 458;
    pub(super) const SYS_lsm_get_self_attr: c_long = 459;
    pub(super) const SYS_lsm_set_self_attr: c_long = 460;
    pub(super) const SYS_lsm_list_modules: c_long = 461;
    pub(super) const SYS_mseal: c_long = 462; // 6.10
    pub(super) const SYS_setxattrat: c_long = 463; // 6.13
    pub(super) const SYS_getxattrat: c_long = 464;
    pub(super) const SYS_listxattrat: c_long = 465;
    pub(super) const SYS_removexattrat: c_long = 466;
    pub(super) const SYS_open_tree_attr: c_long = 467; // 6.15
    pub(super) const SYS_file_getattr: c_long = 468; // 6.17
    pub(super) const SYS_file_setattr: c_long = 469;

    #[cfg(target_arch = "x86_64")]
    pub(super) const SYS_io_pgetevents: c_long = 333;
    #[cfg(target_arch = "x86_64")]
    pub(super) const SYS_uretprobe: c_long = 335; // 6.11

    // The asm-generic table (aarch64, riscv64).
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) const SYS_io_pgetevents: c_long = 292;
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) const SYS_kexec_file_load: c_long = 294;
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) const SYS_sync_file_range: c_long = 84;
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) const SYS_getrlimit: c_long = 163;
    #[cfg(not(target_arch = "x86_64"))]
    pub(super) const SYS_setrlimit: c_long = 164;
    #[cfg(target_arch = "aarch64")]
    pub(super) const SYS_renameat: c_long = 38;
    #[cfg(target_arch = "riscv64")]
    pub(super) const SYS_riscv_hwprobe: c_long = 258;
    #[cfg(target_arch = "riscv64")]
    pub(super) const SYS_riscv_flush_icache: c_long = 259;
}

/// `"SYS_read"` → `"read"`, at compile time.
const fn strip_sys(ident: &'static str) -> &'static str {
    match ident.as_bytes() {
        [b'S', b'Y', b'S', b'_', name @ ..] => match std::str::from_utf8(name) {
            Ok(name) => name,
            Err(_) => panic!("not UTF-8"),
        },
        _ => panic!("a syscall constant starts with SYS_"),
    }
}

const fn syscall(ident: &'static str, nr: c_long) -> Syscall {
    Syscall {
        name: strip_sys(ident),
        nr: nr as u32,
    }
}

/// `syscalls![SYS_read, SYS_write]` → `[Syscall { name: "read", nr: 0 }, …]`.
macro_rules! syscalls {
    ($($sys:ident),* $(,)?) => {
        &[$(syscall(stringify!($sys), nr::$sys)),*]
    };
}

/// Calls every supported architecture has.
#[rustfmt::skip]
const COMMON: &[Syscall] = syscalls![
    SYS_accept, SYS_accept4, SYS_acct, SYS_add_key, SYS_adjtimex, SYS_bind, SYS_bpf, SYS_brk,
    SYS_cachestat, SYS_capget, SYS_capset, SYS_chdir, SYS_chroot, SYS_clock_adjtime,
    SYS_clock_getres, SYS_clock_gettime, SYS_clock_nanosleep, SYS_clock_settime, SYS_clone,
    SYS_clone3, SYS_close, SYS_close_range, SYS_connect, SYS_copy_file_range,
    SYS_delete_module, SYS_dup, SYS_dup3, SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait,
    SYS_epoll_pwait2, SYS_eventfd2, SYS_execve, SYS_execveat, SYS_exit, SYS_exit_group,
    SYS_faccessat, SYS_faccessat2, SYS_fadvise64, SYS_fallocate, SYS_fanotify_init,
    SYS_fanotify_mark, SYS_fchdir, SYS_fchmod, SYS_fchmodat, SYS_fchmodat2, SYS_fchown,
    SYS_fchownat, SYS_fcntl, SYS_fdatasync, SYS_fgetxattr, SYS_file_getattr,
    SYS_file_setattr, SYS_finit_module, SYS_flistxattr, SYS_flock, SYS_fremovexattr,
    SYS_fsconfig, SYS_fsetxattr, SYS_fsmount, SYS_fsopen, SYS_fspick, SYS_fstat, SYS_fstatfs,
    SYS_fsync, SYS_ftruncate, SYS_futex, SYS_futex_requeue, SYS_futex_wait, SYS_futex_waitv,
    SYS_futex_wake, SYS_get_mempolicy, SYS_get_robust_list, SYS_getcpu, SYS_getcwd,
    SYS_getdents64, SYS_getegid, SYS_geteuid, SYS_getgid, SYS_getgroups, SYS_getitimer,
    SYS_getpeername, SYS_getpgid, SYS_getpid, SYS_getppid, SYS_getpriority, SYS_getrandom,
    SYS_getresgid, SYS_getresuid, SYS_getrlimit, SYS_getrusage, SYS_getsid, SYS_getsockname,
    SYS_getsockopt, SYS_gettid, SYS_gettimeofday, SYS_getuid, SYS_getxattr, SYS_getxattrat,
    SYS_init_module, SYS_inotify_add_watch, SYS_inotify_init1, SYS_inotify_rm_watch,
    SYS_io_cancel, SYS_io_destroy, SYS_io_getevents, SYS_io_pgetevents, SYS_io_setup,
    SYS_io_submit, SYS_io_uring_enter, SYS_io_uring_register, SYS_io_uring_setup, SYS_ioctl,
    SYS_ioprio_get, SYS_ioprio_set, SYS_kcmp, SYS_kexec_file_load, SYS_kexec_load,
    SYS_keyctl, SYS_kill, SYS_landlock_add_rule, SYS_landlock_create_ruleset,
    SYS_landlock_restrict_self, SYS_lgetxattr, SYS_linkat, SYS_listen, SYS_listmount,
    SYS_listxattr, SYS_listxattrat, SYS_llistxattr, SYS_lookup_dcookie, SYS_lremovexattr,
    SYS_lseek, SYS_lsetxattr, SYS_lsm_get_self_attr, SYS_lsm_list_modules,
    SYS_lsm_set_self_attr, SYS_madvise, SYS_map_shadow_stack, SYS_mbind, SYS_membarrier,
    SYS_memfd_create, SYS_memfd_secret, SYS_migrate_pages, SYS_mincore, SYS_mkdirat,
    SYS_mknodat, SYS_mlock, SYS_mlock2, SYS_mlockall, SYS_mmap, SYS_mount, SYS_mount_setattr,
    SYS_move_mount, SYS_move_pages, SYS_mprotect, SYS_mq_getsetattr, SYS_mq_notify,
    SYS_mq_open, SYS_mq_timedreceive, SYS_mq_timedsend, SYS_mq_unlink, SYS_mremap, SYS_mseal,
    SYS_msgctl, SYS_msgget, SYS_msgrcv, SYS_msgsnd, SYS_msync, SYS_munlock, SYS_munlockall,
    SYS_munmap, SYS_name_to_handle_at, SYS_nanosleep, SYS_newfstatat, SYS_nfsservctl,
    SYS_open_by_handle_at, SYS_open_tree, SYS_open_tree_attr, SYS_openat, SYS_openat2,
    SYS_perf_event_open, SYS_personality, SYS_pidfd_getfd, SYS_pidfd_open,
    SYS_pidfd_send_signal, SYS_pipe2, SYS_pivot_root, SYS_pkey_alloc, SYS_pkey_free,
    SYS_pkey_mprotect, SYS_ppoll, SYS_prctl, SYS_pread64, SYS_preadv, SYS_preadv2,
    SYS_prlimit64, SYS_process_madvise, SYS_process_mrelease, SYS_process_vm_readv,
    SYS_process_vm_writev, SYS_pselect6, SYS_ptrace, SYS_pwrite64, SYS_pwritev, SYS_pwritev2,
    SYS_quotactl, SYS_quotactl_fd, SYS_read, SYS_readahead, SYS_readlinkat, SYS_readv,
    SYS_reboot, SYS_recvfrom, SYS_recvmmsg, SYS_recvmsg, SYS_remap_file_pages,
    SYS_removexattr, SYS_removexattrat, SYS_renameat2, SYS_request_key, SYS_restart_syscall,
    SYS_rseq, SYS_rt_sigaction, SYS_rt_sigpending, SYS_rt_sigprocmask, SYS_rt_sigqueueinfo,
    SYS_rt_sigreturn, SYS_rt_sigsuspend, SYS_rt_sigtimedwait, SYS_rt_tgsigqueueinfo,
    SYS_sched_get_priority_max, SYS_sched_get_priority_min, SYS_sched_getaffinity,
    SYS_sched_getattr, SYS_sched_getparam, SYS_sched_getscheduler, SYS_sched_rr_get_interval,
    SYS_sched_setaffinity, SYS_sched_setattr, SYS_sched_setparam, SYS_sched_setscheduler,
    SYS_sched_yield, SYS_seccomp, SYS_semctl, SYS_semget, SYS_semop, SYS_semtimedop,
    SYS_sendfile, SYS_sendmmsg, SYS_sendmsg, SYS_sendto, SYS_set_mempolicy,
    SYS_set_mempolicy_home_node, SYS_set_robust_list, SYS_set_tid_address,
    SYS_setdomainname, SYS_setfsgid, SYS_setfsuid, SYS_setgid, SYS_setgroups,
    SYS_sethostname, SYS_setitimer, SYS_setns, SYS_setpgid, SYS_setpriority, SYS_setregid,
    SYS_setresgid, SYS_setresuid, SYS_setreuid, SYS_setrlimit, SYS_setsid, SYS_setsockopt,
    SYS_settimeofday, SYS_setuid, SYS_setxattr, SYS_setxattrat, SYS_shmat, SYS_shmctl,
    SYS_shmdt, SYS_shmget, SYS_shutdown, SYS_sigaltstack, SYS_signalfd4, SYS_socket,
    SYS_socketpair, SYS_splice, SYS_statfs, SYS_statmount, SYS_statx, SYS_swapoff,
    SYS_swapon, SYS_symlinkat, SYS_sync, SYS_sync_file_range, SYS_syncfs, SYS_sysinfo,
    SYS_syslog, SYS_tee, SYS_tgkill, SYS_timer_create, SYS_timer_delete,
    SYS_timer_getoverrun, SYS_timer_gettime, SYS_timer_settime, SYS_timerfd_create,
    SYS_timerfd_gettime, SYS_timerfd_settime, SYS_times, SYS_tkill, SYS_truncate, SYS_umask,
    SYS_umount2, SYS_uname, SYS_unlinkat, SYS_unshare, SYS_userfaultfd, SYS_utimensat,
    SYS_vhangup, SYS_vmsplice, SYS_wait4, SYS_waitid, SYS_write, SYS_writev,
];

/// x86_64's own calls: the pre-`*at` file calls the generic table dropped, and its
/// architecture-specific ones.
#[rustfmt::skip]
#[cfg(target_arch = "x86_64")]
const ARCH_ONLY: &[Syscall] = syscalls![
    SYS__sysctl, SYS_access, SYS_afs_syscall, SYS_alarm, SYS_arch_prctl, SYS_chmod, SYS_chown,
    SYS_creat, SYS_dup2, SYS_epoll_create, SYS_epoll_ctl_old, SYS_epoll_wait,
    SYS_epoll_wait_old, SYS_eventfd, SYS_fork, SYS_futimesat, SYS_get_thread_area,
    SYS_getdents, SYS_getpgrp, SYS_getpmsg, SYS_inotify_init, SYS_ioperm, SYS_iopl,
    SYS_lchown, SYS_link, SYS_lstat, SYS_mkdir, SYS_mknod, SYS_modify_ldt, SYS_open, SYS_pause,
    SYS_pipe, SYS_poll, SYS_putpmsg, SYS_readlink, SYS_rename, SYS_renameat, SYS_rmdir,
    SYS_security, SYS_select, SYS_set_thread_area, SYS_signalfd, SYS_stat, SYS_symlink,
    SYS_sysfs, SYS_time, SYS_tuxcall, SYS_unlink, SYS_uretprobe, SYS_uselib, SYS_ustat,
    SYS_utime, SYS_utimes, SYS_vfork, SYS_vserver,
];
#[cfg(target_arch = "aarch64")]
const ARCH_ONLY: &[Syscall] = syscalls![SYS_renameat];
#[cfg(target_arch = "riscv64")]
const ARCH_ONLY: &[Syscall] = syscalls![SYS_riscv_flush_icache, SYS_riscv_hwprobe];

/// Every call of the native architecture.
pub(super) fn all() -> impl Iterator<Item = Syscall> {
    COMMON.iter().chain(ARCH_ONLY).copied()
}

/// The number of `name`, if this architecture has such a call.
pub(super) fn number(name: &str) -> Option<u32> {
    all().find(|s| s.name == name).map(|s| s.nr)
}

/// The highest number in the table: anything above is newer than kiln's list.
pub(super) fn max_nr() -> u32 {
    all().map(|s| s.nr).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_and_numbers_are_unique() {
        let mut names = HashSet::new();
        let mut numbers = HashSet::new();
        for s in all() {
            assert!(names.insert(s.name), "{} twice", s.name);
            assert!(
                numbers.insert(s.nr),
                "{} ({}) shares its number",
                s.name,
                s.nr
            );
        }
    }

    #[test]
    fn the_table_ends_with_the_newest_calls() {
        assert_eq!(max_nr(), 469);
        assert_eq!(number("file_setattr"), Some(469));
        assert_eq!(number("read"), Some(libc::SYS_read as u32));
        assert_eq!(number("_sysctl"), Some(libc::SYS__sysctl as u32));
        assert_eq!(number("no_such_call"), None);
    }

    /// The numbers defined here agree with libc where libc has them too.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn local_numbers_agree_with_libc() {
        assert_eq!(nr::SYS_fchmodat2, libc::SYS_fchmodat2);
        assert_eq!(nr::SYS_mseal, libc::SYS_mseal);
        assert_eq!(
            number("kexec_file_load"),
            Some(libc::SYS_kexec_file_load as u32)
        );
        assert_eq!(number("io_pgetevents"), Some(libc::SYS_rseq as u32 - 1));
        assert_eq!(number("uretprobe"), Some(libc::SYS_rseq as u32 + 1));
    }
}
