//! Linux capabilities of a container: Docker's default set, `--cap-add`/`--cap-drop`,
//! `--privileged`, and applying the sets in the clone child.
//!
//! Sets are plain `u64` masks (bit N = capability N), computed in the parent; the child
//! applies them with `prctl` and a raw `capset(2)`, allocating nothing. The order matters:
//! the bounding set is narrowed first (that needs `CAP_SETPCAP`, which root still has),
//! then `PR_SET_KEEPCAPS` lets the permitted set survive a switch to a non-root user, then
//! effective, permitted and inheritable are set exactly and the ambient set is rebuilt.
//!
//! What the command sees after `execve` follows the kernel's rules: for uid 0 the
//! permitted and effective sets become the bounding set (which is why [`CapabilitySet`]
//! keeps them equal); for another uid they become the ambient set (empty by default, so a
//! non-root command has no capabilities, as with Docker).

use std::str::FromStr;

use super::sys::{self, Errno};

/// Docker's default capabilities.
pub const DEFAULT_CAPABILITIES: [caps::Capability; 14] = [
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_FSETID,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_MKNOD,
    caps::Capability::CAP_NET_RAW,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETFCAP,
    caps::Capability::CAP_SETPCAP,
    caps::Capability::CAP_NET_BIND_SERVICE,
    caps::Capability::CAP_SYS_CHROOT,
    caps::Capability::CAP_KILL,
    caps::Capability::CAP_AUDIT_WRITE,
];

/// Used when `/proc/sys/kernel/cap_last_cap` cannot be read (CAP_CHECKPOINT_RESTORE).
const FALLBACK_LAST_CAP: u32 = 40;
/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets as two 32-bit halves.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapabilityError {
    #[error("unknown capability {0:?} (names look like NET_ADMIN or CAP_NET_ADMIN, or ALL)")]
    Unknown(String),
    #[error("capability {name} is not supported by this kernel (its last capability is {last})")]
    Unsupported { name: String, last: u32 },
    #[error("capability {0} is both added and dropped")]
    Conflict(String),
    #[error("ALL cannot be both added and dropped")]
    AllConflict,
    #[error("capability {0} cannot be given: kiln itself does not have it")]
    NotHeld(String),
}

/// The five capability sets of a container's process, as masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapabilitySet {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

impl Default for CapabilitySet {
    fn default() -> Self {
        CapabilitySet::uniform(default_mask())
    }
}

impl CapabilitySet {
    /// Bounding, effective and permitted all `mask`; inheritable and ambient empty.
    pub fn uniform(mask: u64) -> CapabilitySet {
        CapabilitySet {
            bounding: mask,
            effective: mask,
            permitted: mask,
            inheritable: 0,
            ambient: 0,
        }
    }

    /// Every capability the running kernel knows that kiln itself holds (`--privileged`):
    /// a process cannot hand out what is not in its own bounding set.
    pub fn privileged() -> CapabilitySet {
        CapabilitySet::uniform(all_mask(last_cap()) & own_bounding())
    }

    /// Docker's rules: `--privileged` gives everything (add and drop are ignored);
    /// otherwise start from the default set, or from nothing with `--cap-drop ALL`, or from
    /// everything with `--cap-add ALL`, then drop and add the named ones. Names are
    /// case-insensitive, with or without `CAP_`. "Everything" and the default set are
    /// limited to what kiln itself holds; adding a capability kiln lacks is an error.
    pub fn resolve(
        add: &[String],
        drop: &[String],
        privileged: bool,
    ) -> Result<CapabilitySet, CapabilityError> {
        let last = last_cap();
        let add = parse_list(add, last)?;
        let drop = parse_list(drop, last)?;
        let held = all_mask(last) & own_bounding();
        if privileged {
            return Ok(CapabilitySet::uniform(held));
        }
        if let Some(missing) = mask_names(add.mask & !held).into_iter().next() {
            return Err(CapabilityError::NotHeld(missing));
        }
        if add.all && drop.all {
            return Err(CapabilityError::AllConflict);
        }
        if let Some(both) = mask_names(add.mask & drop.mask).into_iter().next() {
            return Err(CapabilityError::Conflict(both));
        }
        let base = match (add.all, drop.all) {
            (true, _) => held,
            (_, true) => 0,
            _ => default_mask() & held,
        };
        Ok(CapabilitySet::uniform((base & !drop.mask) | add.mask))
    }

    /// Adds `mask` to the inheritable and ambient sets (and to the others, which ambient
    /// capabilities require), so that a non-root command keeps them across `execve`.
    pub fn with_ambient(mut self, mask: u64) -> CapabilitySet {
        self.bounding |= mask;
        self.permitted |= mask;
        self.effective |= mask;
        self.inheritable |= mask;
        self.ambient |= mask;
        self
    }

    /// The capability names in `mask`, as `/proc` tools print them (`CAP_CHOWN` …).
    pub fn names(mask: u64) -> Vec<String> {
        mask_names(mask)
    }
}

/// Docker's default set as a mask.
pub fn default_mask() -> u64 {
    DEFAULT_CAPABILITIES.iter().map(|c| c.bitmask()).sum()
}

/// The highest capability number the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|n| *n < 64)
        .unwrap_or(FALLBACK_LAST_CAP)
}

/// This process's bounding set (`CapBnd` in `/proc/self/status`); everything if unreadable.
pub fn own_bounding() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

fn all_mask(last: u32) -> u64 {
    match last {
        63.. => u64::MAX,
        _ => (1u64 << (last + 1)) - 1,
    }
}

struct Parsed {
    all: bool,
    mask: u64,
}

fn parse_list(names: &[String], last: u32) -> Result<Parsed, CapabilityError> {
    let mut parsed = Parsed {
        all: false,
        mask: 0,
    };
    for name in names {
        match parse_capability(name, last)? {
            None => parsed.all = true,
            Some(bit) => parsed.mask |= 1 << bit,
        }
    }
    Ok(parsed)
}

/// A capability number, or `None` for `ALL`.
pub fn parse_capability(name: &str, last: u32) -> Result<Option<u32>, CapabilityError> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(None);
    }
    let full = match upper.starts_with("CAP_") {
        true => upper,
        false => format!("CAP_{upper}"),
    };
    let cap =
        caps::Capability::from_str(&full).map_err(|_| CapabilityError::Unknown(name.to_owned()))?;
    let bit = u32::from(cap.index());
    if bit > last {
        return Err(CapabilityError::Unsupported { name: full, last });
    }
    Ok(Some(bit))
}

fn mask_names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| mask & (1 << bit) != 0)
        .map(|bit| {
            caps::all()
                .into_iter()
                .find(|c| u32::from(c.index()) == bit)
                .map_or_else(|| format!("CAP_{bit}"), |c| c.to_string())
        })
        .collect()
}

/// The capability work of the clone child, prepared in the parent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CapsPlan {
    pub set: CapabilitySet,
    pub last_cap: u32,
}

impl CapsPlan {
    pub(crate) fn new(set: CapabilitySet) -> CapsPlan {
        CapsPlan {
            set,
            last_cap: last_cap(),
        }
    }

    /// Step one, while still root: narrow the bounding set and keep the permitted set
    /// across the coming change of uid.
    pub(crate) fn drop_bounding(&self) -> Result<(), Errno> {
        for cap in 0..=self.last_cap {
            if self.set.bounding & (1 << cap) == 0 {
                prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0)?;
            }
        }
        prctl(libc::PR_SET_KEEPCAPS, 1, 0)
    }

    /// Step two, after the uid change: effective, permitted and inheritable exactly, then
    /// the ambient set.
    pub(crate) fn set_process_sets(&self) -> Result<(), Errno> {
        let s = self.set;
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let half = |mask: u64, high: bool| (if high { mask >> 32 } else { mask }) as u32;
        let data = [false, true].map(|high| CapData {
            effective: half(s.effective, high),
            permitted: half(s.permitted, high),
            inheritable: half(s.inheritable, high),
        });
        // SAFETY: header and two data records, as version 3 requires.
        sys::check(unsafe {
            libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            )
        })?;
        prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
        )?;
        for cap in 0..=self.last_cap {
            if s.ambient & (1 << cap) != 0 {
                // SAFETY: prctl with integer arguments.
                sys::check(unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        cap as libc::c_ulong,
                        0 as libc::c_ulong,
                        0 as libc::c_ulong,
                    )
                } as libc::c_long)?;
            }
        }
        Ok(())
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn prctl(option: libc::c_int, arg: libc::c_ulong, arg2: libc::c_ulong) -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments.
    sys::check(
        unsafe { libc::prctl(option, arg, arg2, 0 as libc::c_ulong, 0 as libc::c_ulong) }
            as libc::c_long,
    )
    .map(drop)
}

/// Sets `PR_SET_NO_NEW_PRIVS`: no setuid bit or file capability can raise privileges.
pub(crate) fn set_no_new_privs() -> Result<(), Errno> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_default_set_is_dockers() {
        assert_eq!(default_mask(), 0xa80425fb);
        assert_eq!(CapabilitySet::default(), CapabilitySet::uniform(0xa80425fb));
        assert_eq!(
            CapabilitySet::resolve(&[], &[], false).unwrap(),
            CapabilitySet::default()
        );
    }

    #[test]
    fn add_and_drop_follow_dockers_rules() {
        let set = |add: &[&str], drop: &[&str]| {
            CapabilitySet::resolve(&strings(add), &strings(drop), false).map(|s| s.effective)
        };
        assert_eq!(set(&["NET_BIND_SERVICE"], &["ALL"]), Ok(1 << 10));
        assert_eq!(set(&["net_admin"], &[]), Ok(0xa80425fb | 1 << 12));
        assert_eq!(
            set(&[], &["cap_chown", "Kill"]),
            Ok(0xa80425fb & !1 & !(1 << 5))
        );
        let held = all_mask(last_cap()) & own_bounding();
        assert_eq!(set(&["ALL"], &["SYS_ADMIN"]), Ok(held & !(1 << 21)));
        if held & (1 << 24) == 0 {
            assert_eq!(
                set(&["SYS_RESOURCE"], &[]),
                Err(CapabilityError::NotHeld("CAP_SYS_RESOURCE".into()))
            );
        }
        assert_eq!(set(&["ALL"], &["ALL"]), Err(CapabilityError::AllConflict));
        assert_eq!(
            set(&["CHOWN"], &["chown"]),
            Err(CapabilityError::Conflict("CAP_CHOWN".into()))
        );
        assert_eq!(
            set(&["NET_BOGUS"], &[]),
            Err(CapabilityError::Unknown("NET_BOGUS".into()))
        );
        let all = CapabilitySet::resolve(&[], &strings(&["ALL"]), false).unwrap();
        assert_eq!(all, CapabilitySet::uniform(0));
    }

    #[test]
    fn privileged_is_every_capability_of_the_kernel() {
        let last = last_cap();
        assert_eq!(last, 40, "this kernel (6.18) knows 41 capabilities");
        let p = CapabilitySet::resolve(&[], &strings(&["ALL"]), true).unwrap();
        assert_eq!(p, CapabilitySet::privileged());
        // All 41, less what this test environment withholds from kiln itself.
        assert_eq!(p.bounding, 0x1ff_ffff_ffff & own_bounding());
        assert_ne!(p.bounding, 0);
        assert_eq!((p.inheritable, p.ambient), (0, 0));
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(
            CapabilitySet::names(1 | 1 << 10),
            ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]
        );
        assert_eq!(parse_capability(" cap_sys_admin ", 40), Ok(Some(21)));
        assert_eq!(parse_capability("all", 40), Ok(None));
        assert!(matches!(
            parse_capability("CHECKPOINT_RESTORE", 39),
            Err(CapabilityError::Unsupported { last: 39, .. })
        ));
    }

    /// The `Cap*` lines of a process that applied `plan` (as root, then as `uid`).
    fn status_after(plan: CapsPlan, uid: u32) -> String {
        let mut cmd = Command::new("/bin/busybox");
        cmd.args(["grep", "-E", "^(Cap|NoNewPrivs)", "/proc/self/status"]);
        // SAFETY: the closure only makes system calls (no allocation) in the forked child.
        unsafe {
            cmd.pre_exec(move || {
                let io = |e: Errno| std::io::Error::from_raw_os_error(e);
                plan.drop_bounding().map_err(io)?;
                sys::syscall3(libc::SYS_setresuid, uid.into(), uid.into(), uid.into())
                    .map_err(io)?;
                plan.set_process_sets().map_err(io)?;
                set_no_new_privs().map_err(io)
            })
        };
        String::from_utf8(cmd.output().unwrap().stdout).unwrap()
    }

    #[test]
    fn applied_sets_are_exactly_what_proc_shows() {
        require_root!("capabilities");
        let plan = CapsPlan::new(CapabilitySet::default());
        assert_eq!(
            status_after(plan, 0),
            "CapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\n\
             CapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n"
        );
        // A non-root command keeps only ambient capabilities across execve.
        let plan = CapsPlan::new(CapabilitySet::uniform(1 << 10).with_ambient(1 << 10));
        assert_eq!(
            status_after(plan, 1000),
            "CapInh:\t0000000000000400\nCapPrm:\t0000000000000400\nCapEff:\t0000000000000400\n\
             CapBnd:\t0000000000000400\nCapAmb:\t0000000000000400\nNoNewPrivs:\t1\n"
        );
        let plan = CapsPlan::new(CapabilitySet::default());
        assert!(status_after(plan, 1000).contains("CapEff:\t0000000000000000\n"));
    }
}
