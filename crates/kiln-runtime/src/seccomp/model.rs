//! What a seccomp profile means, independent of where it came from.
//!
//! Exists so that kiln's built-in profile and a user's Docker-format profile go through one
//! resolver and one compiler. A [`Profile`] is Docker's shape: entries of names with an
//! action, argument comparisons and `includes`/`excludes` conditions on capabilities,
//! architecture and kernel version. [`Profile::resolve`] applies the conditions for one
//! container and turns names into numbers, giving a [`Policy`]: per syscall number, the
//! rules in the order they are tried. [`super::bpf`] compiles a `Policy`.

use std::collections::BTreeMap;

use caps::Capability as Cap;

use super::table;

/// What the filter does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Action {
    Allow,
    Errno(u16),
    KillProcess,
    KillThread,
    Trap,
    Log,
    Trace(u16),
}

impl Action {
    /// The filter's return value (`SECCOMP_RET_*` | data).
    pub(super) fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(e) => libc::SECCOMP_RET_ERRNO | u32::from(e),
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Log => libc::SECCOMP_RET_LOG,
            Action::Trace(d) => libc::SECCOMP_RET_TRACE | u32::from(d),
        }
    }

    /// The libseccomp name and the `errnoRet` of the OCI form.
    pub(super) fn oci(self) -> (&'static str, Option<u16>) {
        match self {
            Action::Allow => ("SCMP_ACT_ALLOW", None),
            Action::Errno(e) => ("SCMP_ACT_ERRNO", Some(e)),
            Action::KillProcess => ("SCMP_ACT_KILL_PROCESS", None),
            Action::KillThread => ("SCMP_ACT_KILL_THREAD", None),
            Action::Trap => ("SCMP_ACT_TRAP", None),
            Action::Log => ("SCMP_ACT_LOG", None),
            Action::Trace(d) => ("SCMP_ACT_TRACE", Some(d)),
        }
    }
}

/// A comparison of one 64-bit argument, as libseccomp defines them (unsigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(arg & mask) == value`.
    MaskedEq(u64),
}

impl Op {
    pub(super) fn oci(self) -> &'static str {
        match self {
            Op::Eq => "SCMP_CMP_EQ",
            Op::Ne => "SCMP_CMP_NE",
            Op::Lt => "SCMP_CMP_LT",
            Op::Le => "SCMP_CMP_LE",
            Op::Gt => "SCMP_CMP_GT",
            Op::Ge => "SCMP_CMP_GE",
            Op::MaskedEq(_) => "SCMP_CMP_MASKED_EQ",
        }
    }
}

/// `args[index] <op> value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ArgCmp {
    pub index: u8,
    pub op: Op,
    pub value: u64,
}

impl ArgCmp {
    #[cfg(test)]
    pub(super) fn matches(&self, args: &[u64; 6]) -> bool {
        let arg = args[usize::from(self.index)];
        match self.op {
            Op::Eq => arg == self.value,
            Op::Ne => arg != self.value,
            Op::Lt => arg < self.value,
            Op::Le => arg <= self.value,
            Op::Gt => arg > self.value,
            Op::Ge => arg >= self.value,
            Op::MaskedEq(mask) => arg & mask == self.value,
        }
    }

    /// The OCI form: libseccomp keeps a mask in `value` and the datum in `valueTwo`.
    pub(super) fn oci(&self) -> serde_json::Value {
        let (value, value_two) = match self.op {
            Op::MaskedEq(mask) => (mask, self.value),
            _ => (self.value, 0),
        };
        serde_json::json!({
            "index": self.index,
            "value": value,
            "valueTwo": value_two,
            "op": self.op.oci(),
        })
    }
}

/// A rule: when every comparison holds, the action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Rule {
    pub args: Vec<ArgCmp>,
    pub action: Action,
}

#[cfg(test)]
impl Rule {
    pub(super) fn matches(&self, args: &[u64; 6]) -> bool {
        self.args.iter().all(|c| c.matches(args))
    }
}

/// When an entry applies (Docker's `includes` / `excludes`). Empty means "no condition".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Condition {
    pub caps: Vec<Cap>,
    /// Docker's architecture names (`amd64`, `arm64`, …).
    pub arches: Vec<String>,
    pub min_kernel: Option<(u32, u32)>,
}

/// One entry of a profile: these names, under these conditions, get this rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub names: Vec<String>,
    pub rule: Rule,
    pub includes: Condition,
    pub excludes: Condition,
}

/// What the entries are resolved against.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target {
    /// The container's bounding set.
    pub capabilities: u64,
    /// `(major, minor)` of the running kernel.
    pub kernel: (u32, u32),
}

impl Target {
    fn has(&self, cap: Cap) -> bool {
        self.capabilities & cap.bitmask() != 0
    }
}

impl Entry {
    /// Docker's rules: an entry is dropped if the native architecture is excluded, any
    /// excluded capability is in the bounding set or the kernel is at least the excluded
    /// version; and unless the architecture is included, every included capability is in
    /// the bounding set and the kernel is at least the included version.
    pub(super) fn applies(&self, target: &Target) -> bool {
        let arch = |c: &Condition| c.arches.iter().any(|a| a == table::NATIVE.docker);
        let kernel_at_least = |v: Option<(u32, u32)>| v.map(|v| target.kernel >= v);
        let ex = &self.excludes;
        let excluded = arch(ex)
            || ex.caps.iter().any(|&c| target.has(c))
            || kernel_at_least(ex.min_kernel) == Some(true);
        let inc = &self.includes;
        let included = (inc.arches.is_empty() || arch(inc))
            && inc.caps.iter().all(|&c| target.has(c))
            && kernel_at_least(inc.min_kernel) != Some(false);
        !excluded && included
    }
}

/// A whole profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Profile {
    pub default: Action,
    pub entries: Vec<Entry>,
}

/// A profile resolved for one container: numbers, rules in evaluation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Policy {
    pub default: Action,
    /// Per syscall number, its rules; the first that matches decides, none: `default`.
    pub syscalls: BTreeMap<u32, Vec<Rule>>,
    /// The highest number kiln knows; above it, calls get `ENOSYS` (see
    /// [`Policy::enosys_above_max`]).
    pub max_nr: u32,
}

impl Profile {
    /// The entries that apply to `target`.
    pub(super) fn applicable<'a>(&'a self, target: &'a Target) -> impl Iterator<Item = &'a Entry> {
        self.entries.iter().filter(move |e| e.applies(target))
    }

    /// The policy for `target`, and the names this architecture does not have (skipped,
    /// as runc does, so one profile serves kernels and architectures of every age).
    ///
    /// A syscall's rules keep the profile's order, except that rules with argument
    /// comparisons come before unconditional ones: an unconditional rule would otherwise
    /// make every later rule of that syscall dead, and a profile that lists a call both
    /// ways means "this action for these arguments, that one for the rest".
    pub(super) fn resolve(&self, target: &Target) -> (Policy, Vec<String>) {
        let mut syscalls: BTreeMap<u32, Vec<Rule>> = BTreeMap::new();
        let mut skipped = Vec::new();
        for entry in self.applicable(target) {
            for name in &entry.names {
                match table::number(name) {
                    Some(nr) => syscalls.entry(nr).or_default().push(entry.rule.clone()),
                    None if !skipped.contains(name) => skipped.push(name.clone()),
                    None => {}
                }
            }
        }
        for rules in syscalls.values_mut() {
            rules.sort_by_key(|r| r.args.is_empty());
        }
        let policy = Policy {
            default: self.default,
            syscalls,
            max_nr: table::max_nr(),
        };
        (policy, skipped)
    }
}

impl Policy {
    /// Whether numbers above [`Policy::max_nr`] get `ENOSYS`: only when the default refuses;
    /// a profile that allows by default allows newer calls too (runc does the same).
    pub(super) fn enosys_above_max(&self) -> bool {
        !matches!(self.default, Action::Allow | Action::Log)
    }

    /// The rules that can decide anything, for the compiler: nothing after an
    /// unconditional rule, and no trailing rule whose action is the default anyway.
    /// `None` when the default decides every call of the syscall.
    pub(super) fn effective_rules(&self, nr: u32) -> Option<&[Rule]> {
        let rules = self.syscalls.get(&nr)?;
        let end = rules
            .iter()
            .position(|r| r.args.is_empty())
            .map_or(rules.len(), |i| i + 1);
        let mut rules = &rules[..end];
        while let Some((last, rest)) = rules.split_last() {
            if last.action != self.default {
                break;
            }
            rules = rest;
        }
        (!rules.is_empty()).then_some(rules)
    }

    /// The filter's answer for a call of the native architecture, straight from the
    /// model; the compiled program must agree (see the bpf tests).
    #[cfg(test)]
    pub(super) fn decide(&self, arch: u32, nr: u32, args: &[u64; 6]) -> Action {
        if arch != table::NATIVE.audit {
            return Action::KillProcess;
        }
        #[cfg(target_arch = "x86_64")]
        if nr & table::X32_SYSCALL_BIT != 0 {
            return Action::Errno(libc::EPERM as u16);
        }
        if nr > self.max_nr && self.enosys_above_max() {
            return Action::Errno(libc::ENOSYS as u16);
        }
        self.syscalls
            .get(&nr)
            .and_then(|rules| rules.iter().find(|r| r.matches(args)))
            .map_or(self.default, |r| r.action)
    }
}

/// `(major, minor)` of the running kernel; `(0, 0)` if `uname` cannot say.
pub(super) fn running_kernel() -> (u32, u32) {
    // SAFETY: utsname is plain bytes; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uts is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return (0, 0);
    }
    // SAFETY: uname NUL-terminates release within the array.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    parse_kernel(&release.to_string_lossy()).unwrap_or((0, 0))
}

/// `"6.18.44-foo"` or `"4.8"` → `(6, 18)` / `(4, 8)`.
pub(super) fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}
