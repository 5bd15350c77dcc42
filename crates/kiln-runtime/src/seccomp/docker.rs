//! Docker-format seccomp profiles (`--security-opt seccomp=PROFILE.json`).
//!
//! Exists so that the profiles people already have for Docker (its default, or one derived
//! from it) work with kiln unchanged. The format is the OCI `LinuxSeccomp` plus Docker's
//! additions: `archMap`, legacy `name`, and `includes`/`excludes` conditions on
//! capabilities, architectures and kernel version. It is read into the same
//! [`Profile`] as kiln's own list, then resolved and compiled the same way.
//!
//! Unknown syscall names are skipped, as runc does (a profile is written for many kernels
//! and architectures); the caller gets them back to warn. Anything else kiln cannot apply
//! exactly — an unknown action, operator, architecture or capability, an argument index
//! above 5, `SCMP_ACT_NOTIFY` (kiln has no seccomp agent) — is an error naming the field,
//! never a silently weaker filter. Two semantics worth knowing: the comparisons of one
//! entry must *all* hold (the runtime spec's meaning; runc instead splits repeated
//! comparisons of one argument into alternatives, opencontainers/runc#2735), and for one
//! syscall, rules with comparisons are tried before unconditional ones (see
//! [`Profile::resolve`]).

use std::str::FromStr;

use caps::Capability as Cap;
use serde::Deserialize;

use super::model::{Action, ArgCmp, Condition, Entry, Op, Profile, Rule};
use super::{SeccompError, MAX_PROFILE_BYTES};

/// A parsed profile: what to filter, and the `seccomp(2)` flags it asks for.
#[derive(Debug)]
pub(super) struct Loaded {
    pub profile: Profile,
    pub flags: libc::c_uint,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProfile {
    default_action: Option<String>,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<String>>,
    arch_map: Option<Vec<RawArchMap>>,
    flags: Option<Vec<String>>,
    listener_path: Option<String>,
    syscalls: Option<Vec<RawSyscall>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawArchMap {
    architecture: String,
    sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSyscall {
    name: Option<String>,
    names: Option<Vec<String>>,
    action: String,
    errno_ret: Option<u32>,
    args: Option<Vec<RawArg>>,
    includes: Option<RawFilter>,
    excludes: Option<RawFilter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawArg {
    index: u32,
    value: u64,
    value_two: Option<u64>,
    op: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFilter {
    caps: Option<Vec<String>>,
    arches: Option<Vec<String>>,
    min_kernel: Option<String>,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> SeccompError {
    SeccompError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Reads a Docker-format profile.
pub(super) fn parse(json: &[u8]) -> Result<Loaded, SeccompError> {
    if json.len() > MAX_PROFILE_BYTES {
        return Err(SeccompError::TooLarge(json.len()));
    }
    let raw: RawProfile = serde_json::from_slice(json)?;
    if raw.listener_path.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(invalid(
            "listenerPath",
            "seccomp notifications need an agent, which kiln does not have",
        ));
    }
    check_architectures(&raw)?;
    let flags = flags(raw.flags.as_deref().unwrap_or_default())?;
    let Some(default_name) = &raw.default_action else {
        return Err(invalid("defaultAction", "missing"));
    };
    let default = action(
        default_name,
        raw.default_errno_ret,
        "defaultAction",
        "defaultErrnoRet",
    )?;
    let entries = raw
        .syscalls
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, s)| entry(s, &format!("syscalls[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(Loaded {
        profile: Profile { default, entries },
        flags,
    })
}

/// The actions libseccomp (and so runc) knows, by their profile names.
const ACTIONS: &str = "SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, SCMP_ACT_KILL_PROCESS, \
                       SCMP_ACT_KILL_THREAD, SCMP_ACT_TRAP, SCMP_ACT_TRACE, SCMP_ACT_LOG";

/// `errno` is the entry's `errnoRet`: the errno of `SCMP_ACT_ERRNO` (`EPERM` if absent,
/// as runc does) or the tracer's value of `SCMP_ACT_TRACE`.
fn action(
    name: &str,
    errno: Option<u32>,
    field: &str,
    errno_field: &str,
) -> Result<Action, SeccompError> {
    let data = |max: u32| match errno {
        None => Ok(libc::EPERM as u16),
        Some(e) if e <= max => Ok(e as u16),
        Some(e) => Err(invalid(errno_field, format!("{e} is above {max}"))),
    };
    let action = match name {
        "SCMP_ACT_ALLOW" => Action::Allow,
        // The kernel caps an errno at MAX_ERRNO.
        "SCMP_ACT_ERRNO" => return data(4095).map(Action::Errno),
        "SCMP_ACT_TRACE" => return data(u32::from(u16::MAX)).map(Action::Trace),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_NOTIFY" => {
            return Err(invalid(
                field,
                "SCMP_ACT_NOTIFY needs a seccomp agent, which kiln does not have",
            ))
        }
        other => {
            return Err(invalid(
                field,
                format!("unknown action {other:?}; kiln knows {ACTIONS}"),
            ))
        }
    };
    match errno {
        Some(_) => Err(invalid(
            errno_field,
            format!("{name} takes no errno; only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do"),
        )),
        None => Ok(action),
    }
}

fn entry(raw: &RawSyscall, field: &str) -> Result<Entry, SeccompError> {
    let names = match (&raw.name, &raw.names) {
        (Some(_), Some(names)) if !names.is_empty() => {
            return Err(invalid(field, "has both name and names; use names"))
        }
        (Some(name), _) => vec![name.clone()],
        (None, names) => names.clone().unwrap_or_default(),
    };
    let action = action(
        &raw.action,
        raw.errno_ret,
        &format!("{field}.action"),
        &format!("{field}.errnoRet"),
    )?;
    let args = raw
        .args
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, a)| arg(a, &format!("{field}.args[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(Entry {
        names,
        rule: Rule { args, action },
        includes: condition(raw.includes.as_ref(), &format!("{field}.includes"))?,
        excludes: condition(raw.excludes.as_ref(), &format!("{field}.excludes"))?,
    })
}

fn arg(raw: &RawArg, field: &str) -> Result<ArgCmp, SeccompError> {
    let index = u8::try_from(raw.index)
        .ok()
        .filter(|&i| i < 6)
        .ok_or_else(|| {
            let problem = format!("{} is not an argument (a syscall has 6: 0-5)", raw.index);
            invalid(format!("{field}.index"), problem)
        })?;
    let (op, value) = match raw.op.as_str() {
        "SCMP_CMP_EQ" => (Op::Eq, raw.value),
        "SCMP_CMP_NE" => (Op::Ne, raw.value),
        "SCMP_CMP_LT" => (Op::Lt, raw.value),
        "SCMP_CMP_LE" => (Op::Le, raw.value),
        "SCMP_CMP_GT" => (Op::Gt, raw.value),
        "SCMP_CMP_GE" => (Op::Ge, raw.value),
        // libseccomp: `value` is the mask, `valueTwo` what the masked argument must be.
        "SCMP_CMP_MASKED_EQ" => (Op::MaskedEq(raw.value), raw.value_two.unwrap_or(0)),
        other => {
            let known = "SCMP_CMP_EQ, SCMP_CMP_NE, SCMP_CMP_LT, SCMP_CMP_LE, SCMP_CMP_GT, \
                         SCMP_CMP_GE, SCMP_CMP_MASKED_EQ";
            let problem = format!("unknown operator {other:?}; kiln knows {known}");
            return Err(invalid(format!("{field}.op"), problem));
        }
    };
    Ok(ArgCmp { index, op, value })
}

fn condition(raw: Option<&RawFilter>, field: &str) -> Result<Condition, SeccompError> {
    let Some(raw) = raw else {
        return Ok(Condition::default());
    };
    let caps = raw
        .caps
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, name)| {
            Cap::from_str(name).map_err(|_| {
                invalid(
                    format!("{field}.caps[{i}]"),
                    format!("unknown capability {name:?}"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let min_kernel = match &raw.min_kernel {
        None => None,
        Some(v) => Some(kernel_version(v).ok_or_else(|| {
            invalid(
                format!("{field}.minKernel"),
                format!("{v:?} is not MAJOR.MINOR, such as \"4.8\""),
            )
        })?),
    };
    Ok(Condition {
        caps,
        arches: raw.arches.clone().unwrap_or_default(),
        min_kernel,
    })
}

/// `"4.8"` → `(4, 8)`.
fn kernel_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The architectures libseccomp knows. A profile may list any of them; kiln filters the
/// native architecture only and kills a process that calls through another.
const SCMP_ARCHES: &[&str] = &[
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

fn check_architectures(raw: &RawProfile) -> Result<(), SeccompError> {
    let known = |name: &str, field: String| match SCMP_ARCHES.contains(&name) {
        true => Ok(()),
        false => Err(invalid(field, format!("unknown architecture {name:?}"))),
    };
    let listed = raw.architectures.as_deref().unwrap_or_default();
    let mapped = raw.arch_map.as_deref().unwrap_or_default();
    if !listed.is_empty() && !mapped.is_empty() {
        return Err(invalid(
            "architectures",
            "given together with archMap; use one of them",
        ));
    }
    for (i, name) in listed.iter().enumerate() {
        known(name, format!("architectures[{i}]"))?;
    }
    for (i, map) in mapped.iter().enumerate() {
        known(&map.architecture, format!("archMap[{i}].architecture"))?;
        for (j, sub) in map.sub_architectures.iter().flatten().enumerate() {
            known(sub, format!("archMap[{i}].subArchitectures[{j}]"))?;
        }
    }
    Ok(())
}

/// The `seccomp(2)` flags runc accepts in a profile.
fn flags(names: &[String]) -> Result<libc::c_uint, SeccompError> {
    names.iter().enumerate().try_fold(0, |flags, (i, name)| {
        let flag = match name.as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => libc::SECCOMP_FILTER_FLAG_TSYNC,
            "SECCOMP_FILTER_FLAG_LOG" => libc::SECCOMP_FILTER_FLAG_LOG,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            other => {
                let known = "SECCOMP_FILTER_FLAG_TSYNC, SECCOMP_FILTER_FLAG_LOG, \
                             SECCOMP_FILTER_FLAG_SPEC_ALLOW";
                let problem = format!("unknown or unsupported flag {other:?}; kiln knows {known}");
                return Err(invalid(format!("flags[{i}]"), problem));
            }
        };
        Ok(flags | flag as libc::c_uint)
    })
}
