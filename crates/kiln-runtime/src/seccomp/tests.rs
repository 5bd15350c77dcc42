//! The filter in real processes: each probe runs in a forked child with the filter
//! installed, and the same probe without the filter shows that the errno comes from the
//! filter, not from the kernel refusing the call anyway.

use std::os::unix::process::CommandExt;
use std::process::Command;

use caps::Capability as Cap;
use libc::{c_long, EACCES, EPERM};

use super::model::Target;
use super::*;
use crate::capabilities;

type Probe = fn() -> c_long;

/// Runs `probe` in a forked child under `program` (`None`: unfiltered); the errno it
/// failed with, 0 if it succeeded.
fn errno_of(program: Option<&SeccompProgram>, probe: Probe) -> i32 {
    // SAFETY: the child makes raw system calls only and leaves with _exit.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            let confined = program
                .is_none_or(|p| capabilities::set_no_new_privs().is_ok() && p.install().is_ok());
            let code = match (confined, probe()) {
                (false, _) => 255,
                (true, ret) if ret < 0 => sys::last_errno(),
                (true, _) => 0,
            };
            // SAFETY: ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waits for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(libc::WIFEXITED(status), "the probe died: {status:#x}");
            let code = libc::WEXITSTATUS(status);
            assert_ne!(code, 255, "installing the filter failed");
            code
        }
    }
}

fn default_program(caps: u64) -> SeccompProgram {
    SeccompProgram::default_profile(caps).unwrap()
}

/// Asserts that `probe` fails with `errno` under `program`, and not with it unfiltered.
fn assert_refused(program: &SeccompProgram, name: &str, probe: Probe, errno: i32) {
    assert_eq!(
        errno_of(Some(program), probe),
        errno,
        "{name} under the filter"
    );
    assert_ne!(errno_of(None, probe), errno, "{name} unfiltered");
}

macro_rules! raw {
    ($nr:expr $(, $arg:expr)*) => {
        // SAFETY: the probes pass integers and null pointers only.
        || unsafe { libc::syscall($nr as c_long $(, $arg)*) }
    };
}

const NULL: usize = 0;
const KEYCTL_GET_KEYRING_ID: c_long = 0;
const KEY_SPEC_SESSION_KEYRING: c_long = -3;
const SYSLOG_ACTION_SIZE_BUFFER: c_long = 10;
const READ_IMPLIES_EXEC: c_long = 0x0040_0000;
const ADDR_NO_RANDOMIZE: c_long = 0x0004_0000;

/// Calls a default container must not make, with arguments the kernel would answer with
/// something other than `EPERM`.
const REFUSED: &[(&str, Probe)] = &[
    (
        "keyctl",
        raw!(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_SESSION_KEYRING,
            0
        ),
    ),
    ("add_key", raw!(libc::SYS_add_key, NULL, NULL, NULL, 0, 0)),
    (
        "request_key",
        raw!(libc::SYS_request_key, NULL, NULL, NULL, 0),
    ),
    ("bpf", raw!(libc::SYS_bpf, -1, NULL, 0)),
    (
        "perf_event_open",
        raw!(libc::SYS_perf_event_open, NULL, 0, -1, -1, 0),
    ),
    ("userfaultfd", raw!(libc::SYS_userfaultfd, -1)),
    (
        "syslog",
        raw!(libc::SYS_syslog, SYSLOG_ACTION_SIZE_BUFFER, NULL, 0),
    ),
    (
        "socket(AF_VSOCK)",
        raw!(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0),
    ),
    // The kernel truncates the family to an int: this is AF_VSOCK too.
    (
        "socket(1 << 32 | AF_VSOCK)",
        raw!(libc::SYS_socket, 1u64 << 32 | 40, libc::SOCK_STREAM, 0),
    ),
    (
        "personality(READ_IMPLIES_EXEC)",
        raw!(libc::SYS_personality, READ_IMPLIES_EXEC),
    ),
    (
        "personality(ADDR_NO_RANDOMIZE)",
        raw!(libc::SYS_personality, ADDR_NO_RANDOMIZE),
    ),
    ("pidfd_getfd", raw!(libc::SYS_pidfd_getfd, -1, 0, 0)),
    (
        "process_madvise",
        raw!(libc::SYS_process_madvise, -1, NULL, 0, 0, 0),
    ),
    (
        "open_by_handle_at",
        raw!(libc::SYS_open_by_handle_at, -1, NULL, 0),
    ),
    ("mount", raw!(libc::SYS_mount, NULL, NULL, NULL, 0, NULL)),
    ("unshare", raw!(libc::SYS_unshare, libc::CLONE_NEWUTS)),
    // CLONE_FS makes the kernel refuse CLONE_NEWUSER with EINVAL: nothing is cloned.
    (
        "clone(CLONE_NEWUSER)",
        raw!(
            libc::SYS_clone,
            libc::CLONE_NEWUSER | libc::CLONE_FS | libc::SIGCHLD,
            0,
            0,
            0,
            0
        ),
    ),
    // Inside kiln's table but no call of this architecture.
    ("an unassigned number", raw!(400)),
];

#[test]
fn a_default_container_gets_eperm_for_what_is_not_allowed() {
    require_root!("namespaces, seccomp");
    let program = default_program(capabilities::default_mask());
    for &(name, probe) in REFUSED {
        assert_refused(&program, name, probe, EPERM);
    }
}

/// io_uring may be disabled by sysctl, in which case the kernel says EPERM itself.
#[test]
fn io_uring_is_refused() {
    let program = default_program(u64::MAX);
    let setup: Probe = raw!(libc::SYS_io_uring_setup, 0, NULL);
    assert_eq!(errno_of(Some(&program), setup), EPERM);
}

#[test]
fn clone3_and_numbers_above_the_table_get_enosys() {
    let program = default_program(capabilities::default_mask());
    assert_refused(
        &program,
        "clone3",
        raw!(libc::SYS_clone3, NULL, 0),
        libc::ENOSYS,
    );
    for probe in [raw!(470), raw!(1000)] {
        assert_eq!(errno_of(Some(&program), probe), libc::ENOSYS);
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_x32_abi_is_refused() {
    let program = default_program(u64::MAX);
    let getpid: Probe = raw!(0x4000_0000 | libc::SYS_getpid);
    assert_eq!(errno_of(Some(&program), getpid), EPERM);
}

#[test]
fn ordinary_calls_work() {
    let program = default_program(capabilities::default_mask());
    let allowed: &[(&str, Probe)] = &[
        (
            "socket(AF_INET)",
            raw!(libc::SYS_socket, libc::AF_INET, libc::SOCK_DGRAM, 0),
        ),
        (
            "socket(AF_UNIX)",
            raw!(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0),
        ),
        (
            "socket(AF_NETLINK)",
            raw!(libc::SYS_socket, libc::AF_NETLINK, libc::SOCK_RAW, 0),
        ),
        (
            "personality query",
            raw!(libc::SYS_personality, 0xffff_ffffu64),
        ),
        ("personality(PER_LINUX)", raw!(libc::SYS_personality, 0)),
        ("getpid", raw!(libc::SYS_getpid)),
        ("uname", raw!(libc::SYS_uname, NULL)),
    ];
    for &(name, probe) in allowed {
        // uname(NULL) faults: reaching the kernel is what counts.
        let errno = errno_of(Some(&program), probe);
        assert!(errno == 0 || errno == libc::EFAULT, "{name}: {errno}");
    }
}

/// Runs `script` under busybox sh with `program` installed; stdout and stderr.
fn sh_under(program: SeccompProgram, script: &str) -> String {
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
fn a_shell_does_ordinary_work() {
    let program = default_program(capabilities::default_mask());
    let out = sh_under(
        program,
        "grep Seccomp: /proc/self/status; ls / >/dev/null && echo listed; \
         echo piped | cat; cat /proc/self/stat >/dev/null && echo read; \
         (sleep 0; echo subshell) & wait; hostname >/dev/null && echo hostname; \
         mount -t tmpfs none /nonexistent-kiln; unshare -n true",
    );
    for want in [
        "Seccomp:\t2\n",
        "listed\n",
        "piped\n",
        "read\n",
        "subshell\n",
        "hostname\n",
        // busybox words EPERM this way.
        "mount: permission denied",
        "unshare: unshare(0x40000000): Operation not permitted",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
}

#[test]
fn capabilities_allow_their_calls() {
    require_root!("namespaces, seccomp");
    let caps = capabilities::default_mask();
    let with = |cap: Cap| default_program(caps | cap.bitmask());
    let unshare: Probe = raw!(libc::SYS_unshare, libc::CLONE_NEWUTS);
    assert_eq!(errno_of(Some(&with(Cap::CAP_SYS_ADMIN)), unshare), 0);
    let clone3: Probe = raw!(libc::SYS_clone3, NULL, 0);
    assert_eq!(
        errno_of(Some(&with(Cap::CAP_SYS_ADMIN)), clone3),
        libc::EINVAL
    );
    let pidfd_getfd: Probe = raw!(libc::SYS_pidfd_getfd, -1, 0, 0);
    assert_eq!(
        errno_of(Some(&with(Cap::CAP_SYS_PTRACE)), pidfd_getfd),
        libc::EBADF
    );
    let syslog: Probe = raw!(libc::SYS_syslog, SYSLOG_ACTION_SIZE_BUFFER, NULL, 0);
    assert_eq!(errno_of(Some(&with(Cap::CAP_SYSLOG)), syslog), 0);
    let out = sh_under(with(Cap::CAP_SYS_ADMIN), "unshare -n true && echo unshared");
    assert!(out.contains("unshared"), "{out}");
}

#[test]
fn the_default_program_is_small() {
    for caps in [0, capabilities::default_mask(), u64::MAX] {
        let len = default_program(caps).len();
        assert!(len < 400, "{len}");
    }
}

#[test]
fn never_allowed_whatever_the_capabilities() {
    let target = Target {
        capabilities: u64::MAX,
        kernel: (6, 18),
    };
    let (policy, _) = list::default_profile().resolve(&target);
    for name in list::NEVER {
        let nr = table::number(name).unwrap();
        assert_eq!(policy.syscalls.get(&nr), None, "{name}");
    }
    let oci = oci_profile(u64::MAX).to_string();
    for name in list::NEVER {
        assert!(!oci.contains(&format!("\"{name}\"")), "{name}");
    }
}

#[test]
fn the_oci_profile_is_the_allow_list() {
    let profile = oci_profile(capabilities::default_mask());
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(profile["defaultErrnoRet"], 1);
    assert_eq!(profile["architectures"][0], table::NATIVE.scmp);
    let names = |p: &serde_json::Value| -> Vec<String> {
        let entries = p["syscalls"].as_array().unwrap();
        entries
            .iter()
            .flat_map(|e| e["names"].as_array().unwrap())
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    };
    let default = names(&profile);
    assert!(default.iter().any(|n| n == "read"));
    assert!(!default.iter().any(|n| n == "mount" || n == "keyctl"));
    let admin = names(&oci_profile(u64::MAX));
    assert!(admin.iter().any(|n| n == "mount"));
}

/// The OCI form read back as a Docker profile is the same policy, compiled the same.
#[test]
fn the_oci_profile_loads_back_as_the_same_filter() {
    for caps in [capabilities::default_mask(), u64::MAX] {
        let json = oci_profile(caps).to_string();
        let (loaded, skipped) = SeccompProgram::from_docker_profile(json.as_bytes(), caps).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(loaded.insns, default_program(caps).insns);
    }
}

const DOCKER_PROFILE: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
  "syscalls": [
    {"names": ["socket", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
     "args": [{"index": 0, "value": 2, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
     "comment": "no IPv4"},
    {"name": "getppid", "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
     "includes": {"caps": ["CAP_SYS_ADMIN"]}},
    {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
     "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
    {"names": ["getsid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33,
     "includes": {"minKernel": "99.0"}},
    {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 34,
     "includes": {"arches": ["amd64", "arm64", "riscv64"]}, "excludes": {"arches": ["s390x"]}},
    {"names": ["sched_yield"], "action": "SCMP_ACT_ERRNO", "errnoRet": 35,
     "args": [{"index": 1, "value": 255, "valueTwo": 7, "op": "SCMP_CMP_MASKED_EQ"}]},
    {"names": ["sched_yield"], "action": "SCMP_ACT_ERRNO", "errnoRet": 36, "args": null}
  ]
}"#;

#[test]
fn a_docker_profile_does_what_it_says() {
    let caps = capabilities::default_mask();
    let (program, skipped) =
        SeccompProgram::from_docker_profile(DOCKER_PROFILE.as_bytes(), caps).unwrap();
    assert_eq!(skipped, ["no_such_call"]);
    let run = |probe: Probe| errno_of(Some(&program), probe);
    assert_eq!(
        run(raw!(libc::SYS_socket, libc::AF_INET, libc::SOCK_DGRAM, 0)),
        EACCES
    );
    assert_eq!(
        run(raw!(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0)),
        0
    );
    // Allowed by default: the kernel answers.
    assert_eq!(run(raw!(libc::SYS_clone3, NULL, 0)), libc::EINVAL);
    // Only with CAP_SYS_ADMIN, which the container lacks.
    assert_eq!(run(raw!(libc::SYS_getppid)), 0);
    assert_eq!(run(raw!(libc::SYS_getpgid, 0)), 22);
    // Only from kernel 99.0 on.
    assert_eq!(run(raw!(libc::SYS_getsid, 0)), 0);
    assert_eq!(run(raw!(libc::SYS_getpriority, libc::PRIO_PROCESS, 0)), 34);
    // The rule with a comparison comes first; the unconditional one takes the rest.
    assert_eq!(run(raw!(libc::SYS_sched_yield, 0, 0x1107)), 35);
    assert_eq!(run(raw!(libc::SYS_sched_yield, 0, 0x1106)), 36);

    let admin = caps | Cap::CAP_SYS_ADMIN.bitmask();
    let (program, _) =
        SeccompProgram::from_docker_profile(DOCKER_PROFILE.as_bytes(), admin).unwrap();
    assert_eq!(errno_of(Some(&program), raw!(libc::SYS_getppid)), 38);
    assert_eq!(errno_of(Some(&program), raw!(libc::SYS_getpgid, 0)), 0);
}

/// The error's text for a profile kiln must refuse.
fn refusal(json: &str) -> String {
    match SeccompProgram::from_docker_profile(json.as_bytes(), 0) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

/// A profile whose second entry is `{"names": ["write"], FIELDS}`.
fn with_entry(fields: &str) -> String {
    let first = r#"{"names": ["read"], "action": "SCMP_ACT_ALLOW"}"#;
    format!(
        r#"{{"defaultAction": "SCMP_ACT_ERRNO",
             "syscalls": [{first}, {{"names": ["write"], {fields}}}]}}"#
    )
}

#[test]
fn a_bad_profile_is_a_clear_error() {
    let allow_with = |fields: &str| with_entry(&format!(r#""action": "SCMP_ACT_ALLOW", {fields}"#));
    let arg = |index: u32, op: &str| {
        allow_with(&format!(
            r#""args": [{{"index": {index}, "value": 1, "op": "{op}"}}]"#
        ))
    };
    let top = |fields: &str| format!(r#"{{"defaultAction": "SCMP_ACT_ERRNO", {fields}}}"#);
    let cases = [
        ("{\"defaultAction\": ".to_string(), "not valid JSON"),
        ("{}".into(), "defaultAction: missing"),
        (
            r#"{"defaultAction": "SCMP_ACT_DENY"}"#.into(),
            "defaultAction: unknown action \"SCMP_ACT_DENY\"",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}"#.into(),
            "defaultErrnoRet: SCMP_ACT_ALLOW takes no errno",
        ),
        (
            with_entry(r#""action": "SCMP_ACT_NOTIFY""#),
            "syscalls[1].action: SCMP_ACT_NOTIFY needs a seccomp agent",
        ),
        (
            with_entry(r#""action": "SCMP_ACT_ERRNO", "errnoRet": 5000"#),
            "syscalls[1].errnoRet: 5000 is above 4095",
        ),
        (
            arg(6, "SCMP_CMP_EQ"),
            "syscalls[1].args[0].index: 6 is not an argument",
        ),
        (
            arg(0, "SCMP_CMP_LIKE"),
            "syscalls[1].args[0].op: unknown operator \"SCMP_CMP_LIKE\"",
        ),
        (
            allow_with(r#""name": "read""#),
            "syscalls[1]: has both name and names",
        ),
        (
            allow_with(r#""includes": {"caps": ["CAP_FLY"]}"#),
            "syscalls[1].includes.caps[0]: unknown capability \"CAP_FLY\"",
        ),
        (
            allow_with(r#""excludes": {"minKernel": "six"}"#),
            "syscalls[1].excludes.minKernel: \"six\" is not MAJOR.MINOR",
        ),
        (with_entry(r#""errnoRet": 1"#), "missing field `action`"),
        (
            top(r#""architectures": ["SCMP_ARCH_Z80"]"#),
            "architectures[0]: unknown architecture \"SCMP_ARCH_Z80\"",
        ),
        (
            top(r#""flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]"#),
            "flags[0]: unknown or unsupported flag",
        ),
        (
            top(r#""listenerPath": "/run/agent.sock""#),
            "listenerPath: seccomp notifications need an agent",
        ),
    ];
    for (json, want) in cases {
        let got = refusal(&json);
        assert!(
            got.contains(want),
            "{json}\n  gave {got:?}\n  want {want:?}"
        );
    }
    let huge = top(&format!(
        r#""comment": "{}""#,
        "x".repeat(MAX_PROFILE_BYTES)
    ));
    assert!(refusal(&huge).contains("kiln reads at most 1048576"));
}

/// Three rules with comparisons for every call of the table, different for each call (the
/// compiler shares equal rules): more than the kernel takes.
#[test]
fn a_profile_too_long_for_the_kernel_is_refused() {
    let rule = |name: &str, value: u32| {
        serde_json::json!({
            "names": [name],
            "action": "SCMP_ACT_ERRNO",
            "args": [
                {"index": 0, "value": value, "op": "SCMP_CMP_GT"},
                {"index": 1, "value": value, "op": "SCMP_CMP_NE"},
            ],
        })
    };
    let syscalls: Vec<_> = table::all()
        .flat_map(|s| (0..3).map(move |i| rule(s.name, s.nr * 3 + i)))
        .collect();
    let json = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": syscalls});
    let err = SeccompProgram::from_docker_profile(json.to_string().as_bytes(), 0).unwrap_err();
    assert!(
        matches!(err, SeccompError::TooLong(n) if n > bpf::MAX_INSNS),
        "{err}"
    );
    assert!(
        err.to_string().contains("the kernel takes at most 4096"),
        "{err}"
    );
}
