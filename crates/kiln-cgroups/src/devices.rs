//! The device allow-list: which device nodes a container may create and open.
//!
//! Without it a container that holds `CAP_MKNOD` (a default one does, as with Docker) can
//! `mknod` a node for any host device — a loop device backing a host file, `/dev/kmsg`, a
//! disk — and open it, and a device node shipped in an image layer can be opened too. The
//! list is runc's default set: the handful of character devices every container needs,
//! `mknod` of any device (so images that carry or create nodes still unpack and build), and
//! nothing else may be opened.
//!
//! The list is written down once, as data, and every enforcement point is derived from it,
//! so they cannot drift apart: the v1 `devices.allow` lines, the v2 eBPF program
//! ([`super::bpf`]) and the `linux.resources.devices` entries of a runc `config.json`.
//! Everything not listed is denied.

/// The kind of device a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceKind {
    Char,
    Block,
    /// Both character and block devices.
    All,
}

impl DeviceKind {
    /// The letter cgroup v1 and the OCI runtime spec use for the kind.
    pub fn letter(self) -> char {
        match self {
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
            DeviceKind::All => 'a',
        }
    }
}

/// A set of device operations. The bit values are the kernel's `BPF_DEVCG_ACC_*`, so the
/// eBPF program can compare them with what the kernel asks for as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Access(u8);

impl Access {
    pub const NONE: Access = Access(0);
    /// Creating a node with `mknod`.
    pub const MKNOD: Access = Access(1);
    pub const READ: Access = Access(2);
    pub const WRITE: Access = Access(4);
    /// Read, write and mknod.
    pub const ALL: Access = Access(7);

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn union(self, other: Access) -> Access {
        Access(self.0 | other.0)
    }

    /// Whether every operation of `other` is in `self`.
    pub const fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// The operations `letters` names (any of `r`, `w`, `m`, as `--device` takes them);
    /// `None` for any other letter.
    pub fn from_letters(letters: &str) -> Option<Access> {
        letters.chars().try_fold(Access::NONE, |acc, c| {
            let op = match c {
                'r' => Access::READ,
                'w' => Access::WRITE,
                'm' => Access::MKNOD,
                _ => return None,
            };
            Some(acc.union(op))
        })
    }

    /// `rwm`-style letters, in the order cgroup v1 and runc print them.
    pub fn letters(self) -> String {
        [
            (Access::READ, 'r'),
            (Access::WRITE, 'w'),
            (Access::MKNOD, 'm'),
        ]
        .into_iter()
        .filter(|(a, _)| self.contains(*a))
        .map(|(_, letter)| letter)
        .collect()
    }
}

/// One allowed (kind, major, minor, access) combination; `None` numbers match any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRule {
    pub kind: DeviceKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: Access,
}

impl DeviceRule {
    /// Exactly one device, `kind` `Char` or `Block`, with `access`.
    pub const fn device(kind: DeviceKind, major: u32, minor: u32, access: Access) -> DeviceRule {
        DeviceRule {
            kind,
            major: Some(major),
            minor: Some(minor),
            access,
        }
    }

    const fn char(major: u32, minor: Option<u32>) -> DeviceRule {
        DeviceRule {
            kind: DeviceKind::Char,
            major: Some(major),
            minor,
            access: Access::ALL,
        }
    }

    const fn mknod_any(kind: DeviceKind) -> DeviceRule {
        DeviceRule {
            kind,
            major: None,
            minor: None,
            access: Access::MKNOD,
        }
    }

    /// The rule as a cgroup v1 `devices.allow` line, e.g. `c 1:3 rwm` or `c 136:* rwm`.
    pub fn v1_line(&self) -> String {
        let number = |n: Option<u32>| n.map_or_else(|| "*".to_owned(), |n| n.to_string());
        format!(
            "{} {}:{} {}",
            self.kind.letter(),
            number(self.major),
            number(self.minor),
            self.access.letters()
        )
    }

    /// Whether the rule allows `access` to the device `kind` (`Char` or `Block`)
    /// `major:minor`: the meaning every backend implements.
    pub fn allows(&self, kind: DeviceKind, major: u32, minor: u32, access: Access) -> bool {
        (self.kind == DeviceKind::All || self.kind == kind)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && self.access.contains(access)
    }
}

/// runc's default allow-list (minus the tun device, which kiln does not offer).
pub const DEFAULT_RULES: [DeviceRule; 11] = [
    // Creating nodes is harmless once opening them is denied, and image layers and build
    // steps (package installs) create them.
    DeviceRule::mknod_any(DeviceKind::Char),
    DeviceRule::mknod_any(DeviceKind::Block),
    DeviceRule::char(1, Some(3)), // null
    DeviceRule::char(1, Some(5)), // zero
    DeviceRule::char(1, Some(7)), // full
    DeviceRule::char(1, Some(8)), // random
    DeviceRule::char(1, Some(9)), // urandom
    DeviceRule::char(5, Some(0)), // tty
    DeviceRule::char(5, Some(1)), // console
    DeviceRule::char(5, Some(2)), // ptmx
    DeviceRule::char(136, None),  // pts/*
];

/// Every device, every operation: Docker's `a *:* rwm` for `--privileged`.
pub const ALLOW_ALL: [DeviceRule; 1] = [DeviceRule {
    kind: DeviceKind::All,
    major: None,
    minor: None,
    access: Access::ALL,
}];

/// Which devices a container may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DevicePolicy {
    /// [`DEFAULT_RULES`]; everything else denied.
    #[default]
    Default,
    /// [`DEFAULT_RULES`] and these: the devices the container was given (`--device`).
    DefaultAnd(Vec<DeviceRule>),
    /// No device confinement (`--privileged`).
    All,
}

impl DevicePolicy {
    /// The rules allowed on top of "deny everything".
    pub fn rules(&self) -> Vec<DeviceRule> {
        match self {
            DevicePolicy::Default => DEFAULT_RULES.to_vec(),
            DevicePolicy::DefaultAnd(extra) => DEFAULT_RULES.iter().chain(extra).copied().collect(),
            DevicePolicy::All => ALLOW_ALL.to_vec(),
        }
    }

    /// This policy with `extra` devices allowed too; every device is already allowed
    /// by [`DevicePolicy::All`].
    pub fn and(self, extra: &[DeviceRule]) -> DevicePolicy {
        match self {
            _ if extra.is_empty() => self,
            DevicePolicy::Default => DevicePolicy::DefaultAnd(extra.to_vec()),
            DevicePolicy::DefaultAnd(mut rules) => {
                rules.extend_from_slice(extra);
                DevicePolicy::DefaultAnd(rules)
            }
            DevicePolicy::All => DevicePolicy::All,
        }
    }

    /// Whether the policy restricts anything, i.e. whether a host that cannot enforce it
    /// must refuse to run the container.
    pub fn confines(&self) -> bool {
        *self != DevicePolicy::All
    }

    /// Whether the policy allows `access` to a `Char` or `Block` device `major:minor`.
    pub fn allows(&self, kind: DeviceKind, major: u32, minor: u32, access: Access) -> bool {
        self.rules()
            .iter()
            .any(|r| r.allows(kind, major, minor, access))
    }
}
