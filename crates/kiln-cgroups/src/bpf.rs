//! cgroup v2 device confinement: an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`
//! generated from the allow-list and attached to the container's cgroup.
//!
//! cgroup v2 has no `devices` controller; the kernel instead runs the device programs
//! attached to a task's cgroup (and its ancestors) whenever the task creates or opens a
//! device node, and refuses with EPERM unless every one returns 1. kiln writes the program
//! itself (a few instructions per rule, no helpers, no maps), so no compiler, libbpf or
//! object file is involved, and loads and attaches it with the raw `bpf(2)` syscall.
//!
//! Attach flag: `BPF_F_ALLOW_MULTI`, as runc uses. A program attached below ours (by a
//! nested runtime in a privileged container) then runs *in addition* to ours, and since
//! the kernel needs all of them to allow, it can only narrow what ours allows, never widen
//! it. `BPF_F_ALLOW_OVERRIDE` would let such a program replace ours, and no flag at all
//! would forbid nested runtimes from confining their own containers.

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::devices::{Access, DeviceKind, DeviceRule};
use super::CgroupError;

// bpf(2) commands, program and attach types, flags (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

// The device types in `bpf_cgroup_dev_ctx.access_type` (`BPF_DEVCG_DEV_*`).
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

// Instruction encodings: class | operation | source.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
                              // 32-bit compares (BPF_JMP32), so a major or minor above i32::MAX is not sign-extended.
const JMP32_JNE_K: u8 = 0x56; // BPF_JMP32 | BPF_JNE | BPF_K
const JMP32_JNE_X: u8 = 0x5e; // BPF_JMP32 | BPF_JNE | BPF_X
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// Registers: r0 is the return value, r1 the context on entry and scratch later.
const R0: u8 = 0;
const R_CTX: u8 = 1;
const R_SCRATCH: u8 = 1;
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

// Offsets in `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;

const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// The verifier's log, read only when a load fails.
const LOG_SIZE: usize = 64 * 1024;
/// The license is only checked against GPL-only helpers, and the program calls none.
const LICENSE: &std::ffi::CStr = c"Apache-2.0";
const PROG_NAME: &[u8] = b"kiln_devices";

/// `struct bpf_insn`: opcode, dst and src registers in one byte (dst in the low nibble, as
/// on a little-endian machine), offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Insn {
    pub(super) code: u8,
    pub(super) regs: u8,
    pub(super) off: i16,
    pub(super) imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

/// The program for `rules`: allow when any rule matches, deny otherwise.
pub(super) fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut prog = read_context();
    for rule in rules {
        prog.extend(rule_block(rule));
    }
    prog.extend(verdict(DENY));
    prog
}

/// Loads type, access, major and minor into their registers.
fn read_context() -> Vec<Insn> {
    vec![
        insn(LDX_MEM_W, R_TYPE, R_CTX, CTX_ACCESS_TYPE, 0),
        insn(ALU32_AND_K, R_TYPE, 0, 0, 0xffff),
        insn(LDX_MEM_W, R_ACCESS, R_CTX, CTX_ACCESS_TYPE, 0),
        insn(ALU32_RSH_K, R_ACCESS, 0, 0, 16),
        insn(LDX_MEM_W, R_MAJOR, R_CTX, CTX_MAJOR, 0),
        insn(LDX_MEM_W, R_MINOR, R_CTX, CTX_MINOR, 0),
    ]
}

fn verdict(value: i32) -> [Insn; 2] {
    [
        insn(ALU32_MOV_K, R0, 0, 0, value),
        insn(JMP_EXIT, 0, 0, 0, 0),
    ]
}

/// One rule: a check per constrained field, each jumping past the block (to the next
/// rule) on a mismatch, then "allow".
fn rule_block(rule: &DeviceRule) -> Vec<Insn> {
    let mut block = RuleBlock::default();
    match rule.kind {
        DeviceKind::Char => block.next_rule_unless(R_TYPE, DEV_CHAR),
        DeviceKind::Block => block.next_rule_unless(R_TYPE, DEV_BLOCK),
        DeviceKind::All => {}
    }
    if rule.access != Access::ALL {
        // Every requested operation must be allowed: requested & allowed == requested.
        block.push(insn(ALU32_MOV_X, R_SCRATCH, R_ACCESS, 0, 0));
        block.push(insn(
            ALU32_AND_K,
            R_SCRATCH,
            0,
            0,
            rule.access.bits().into(),
        ));
        block.next_rule_unless_same(R_SCRATCH, R_ACCESS);
    }
    if let Some(major) = rule.major {
        // The immediate is the number's bit pattern; the compare is 32-bit.
        block.next_rule_unless(R_MAJOR, major as i32);
    }
    if let Some(minor) = rule.minor {
        block.next_rule_unless(R_MINOR, minor as i32);
    }
    block.finish()
}

/// A rule's instructions, with the jumps to the next rule patched once its length is known.
#[derive(Default)]
struct RuleBlock {
    insns: Vec<Insn>,
    to_next_rule: Vec<usize>,
}

impl RuleBlock {
    fn push(&mut self, insn: Insn) {
        self.insns.push(insn);
    }

    /// Skips to the next rule unless `reg == value`.
    fn next_rule_unless(&mut self, reg: u8, value: i32) {
        self.to_next_rule.push(self.insns.len());
        self.push(insn(JMP32_JNE_K, reg, 0, 0, value));
    }

    /// Skips to the next rule unless `reg == other`.
    fn next_rule_unless_same(&mut self, reg: u8, other: u8) {
        self.to_next_rule.push(self.insns.len());
        self.push(insn(JMP32_JNE_X, reg, other, 0, 0));
    }

    /// Ends the block with "allow" and points its jumps past it.
    fn finish(mut self) -> Vec<Insn> {
        self.insns.extend(verdict(ALLOW));
        let len = self.insns.len();
        for at in self.to_next_rule {
            // Offsets count from the next instruction; a block is a few instructions.
            self.insns[at].off = (len - at - 1) as i16;
        }
        self.insns
    }
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`; the kernel
/// takes the fields after it as zero.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

// The uapi layout, checked at compile time (no padding the kernel would read as garbage).
const _: () = {
    assert!(offset_of!(ProgLoadAttr, insns) == 8);
    assert!(offset_of!(ProgLoadAttr, log_buf) == 32);
    assert!(offset_of!(ProgLoadAttr, prog_name) == 48);
    assert!(offset_of!(ProgLoadAttr, expected_attach_type) == 68);
    assert!(size_of::<ProgLoadAttr>() == 72);
    assert!(size_of::<Insn>() == 8);
};

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// Loads the program for `rules` and attaches it to the cgroup v2 directory `cgroup_dir`
/// (an fd opened on a real cgroup2 filesystem). Processes in that cgroup and below can
/// then create and open only the devices the rules allow. The program stays attached
/// until the cgroup is removed; its fd is closed here.
pub fn attach_device_filter(
    cgroup_dir: BorrowedFd,
    rules: &[DeviceRule],
) -> Result<(), CgroupError> {
    let prog = load(&program(rules))?;
    let mut attr = ProgAttachAttr {
        target_fd: fd_number(cgroup_dir),
        attach_bpf_fd: fd_number(prog.as_fd()),
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|source| CgroupError::DeviceFilter {
        what: "attach",
        source,
        log: String::new(),
    })?;
    Ok(())
}

fn fd_number(fd: BorrowedFd) -> u32 {
    // An open fd is never negative.
    fd.as_raw_fd() as u32
}

/// Loads `prog`; on failure loads it again with the verifier's log, for the error.
fn load(prog: &[Insn]) -> Result<OwnedFd, CgroupError> {
    let source = match load_with_log(prog, &mut []) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; LOG_SIZE];
    if let Ok(fd) = load_with_log(prog, &mut log) {
        return Ok(fd);
    }
    let text = String::from_utf8_lossy(log.split(|b| *b == 0).next().unwrap_or_default());
    let log = match text.trim() {
        "" => String::new(),
        text => format!("\nverifier log:\n{text}"),
    };
    Err(CgroupError::DeviceFilter {
        what: "load",
        source,
        log,
    })
}

/// `BPF_PROG_LOAD`, with the verifier writing its log into `log` unless it is empty.
fn load_with_log(prog: &[Insn], log: &mut [u8]) -> io::Result<OwnedFd> {
    let mut prog_name = [0u8; 16];
    prog_name[..PROG_NAME.len()].copy_from_slice(PROG_NAME);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_DEVICE,
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: BPF_PROG_LOAD returns a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// How often a load interrupted by a signal is retried (libbpf's number).
const ATTEMPTS: usize = 5;

/// The `bpf(2)` syscall with `attr` as its (prefix of) `union bpf_attr`.
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    let mut attempt = 1;
    loop {
        // SAFETY: `attr` is a fully initialised #[repr(C)] bpf_attr prefix without
        // padding, of the size passed; the pointers in it outlive the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut T,
                size_of::<T>() as libc::c_uint,
            )
        };
        if ret >= 0 {
            return Ok(ret);
        }
        let err = io::Error::last_os_error();
        // The verifier answers EAGAIN when a signal interrupted it.
        let interrupted =
            err.raw_os_error() == Some(libc::EAGAIN) || err.kind() == io::ErrorKind::Interrupted;
        if !interrupted || attempt == ATTEMPTS {
            return Err(err);
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::devices::{DevicePolicy, ALLOW_ALL, DEFAULT_RULES};
    use super::*;

    /// Where the interpreter pretends the context lives.
    const CTX_ADDR: u64 = 0x1000;

    /// Runs `prog` on a device context the way the kernel would, for the instructions
    /// [`program`] emits; anything else fails the test.
    fn run(prog: &[Insn], access_type: u32, major: u32, minor: u32) -> u64 {
        let ctx = [access_type, major, minor];
        let mut reg = [0u64; 11];
        reg[R_CTX as usize] = CTX_ADDR;
        let mut pc = 0;
        loop {
            let i = prog[pc];
            pc += 1;
            let (dst, src) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
            let imm32 = i.imm as u32;
            let jump = |taken: bool| if taken { i.off as usize } else { 0 };
            match i.code {
                LDX_MEM_W => {
                    assert_eq!(reg[src], CTX_ADDR, "load through a non-context register");
                    reg[dst] = ctx[i.off as usize / 4].into();
                }
                ALU32_AND_K => reg[dst] = (reg[dst] as u32 & imm32).into(),
                ALU32_RSH_K => reg[dst] = (reg[dst] as u32 >> imm32).into(),
                ALU32_MOV_K => reg[dst] = imm32.into(),
                ALU32_MOV_X => reg[dst] = (reg[src] as u32).into(),
                JMP32_JNE_K => pc += jump(reg[dst] as u32 != imm32),
                JMP32_JNE_X => pc += jump(reg[dst] as u32 != reg[src] as u32),
                JMP_EXIT => return reg[R0 as usize],
                code => panic!("unexpected opcode {code:#x} at {}", pc - 1),
            }
        }
    }

    /// Compares the program's verdicts with the rules' meaning over a grid of devices:
    /// numbers next to the allowed ones, extremes, and all 7 access combinations.
    fn assert_program_means(rules: &[DeviceRule]) {
        let prog = program(rules);
        let kinds = [(DeviceKind::Block, DEV_BLOCK), (DeviceKind::Char, DEV_CHAR)];
        let numbers = [
            0,
            1,
            2,
            3,
            4,
            5,
            7,
            8,
            9,
            10,
            11,
            135,
            136,
            137,
            200,
            0xfffff,
            u32::MAX,
        ];
        for (kind, type_bits) in kinds {
            for major in numbers {
                for minor in numbers {
                    for requested in every_access() {
                        let ctx_access = (u32::from(requested.bits()) << 16) | type_bits as u32;
                        let want = rules
                            .iter()
                            .any(|r| r.allows(kind, major, minor, requested));
                        assert_eq!(
                            run(&prog, ctx_access, major, minor),
                            u64::from(want),
                            "{kind:?} {major}:{minor} {}",
                            requested.letters()
                        );
                    }
                }
            }
        }
    }

    /// The 7 non-empty combinations of read, write and mknod.
    fn every_access() -> impl Iterator<Item = Access> {
        let ops = [Access::MKNOD, Access::READ, Access::WRITE];
        (1..8usize).map(move |set| {
            (0..3)
                .filter(|i| set & (1 << i) != 0)
                .fold(Access::NONE, |acc, i| acc.union(ops[i]))
        })
    }

    #[test]
    fn the_default_program_allows_exactly_the_default_rules() {
        assert_program_means(&DEFAULT_RULES);
        assert_eq!(DevicePolicy::Default.rules(), DEFAULT_RULES);
    }

    #[test]
    fn a_given_device_is_allowed_beside_the_defaults_with_its_own_access() {
        let loop_read = DeviceRule::device(DeviceKind::Block, 7, 3, Access::READ);
        let policy = DevicePolicy::Default.and(&[loop_read]);
        assert_eq!(policy.rules().len(), DEFAULT_RULES.len() + 1);
        assert_program_means(&policy.rules());
        assert!(policy.allows(DeviceKind::Block, 7, 3, Access::READ));
        assert!(!policy.allows(DeviceKind::Block, 7, 3, Access::WRITE));
        assert!(!policy.allows(DeviceKind::Block, 7, 4, Access::READ));
        assert_eq!(DevicePolicy::All.and(&[loop_read]), DevicePolicy::All);
        assert_eq!(DevicePolicy::Default.and(&[]), DevicePolicy::Default);
    }

    #[test]
    fn the_allow_all_program_allows_everything() {
        assert_program_means(&ALLOW_ALL);
    }

    #[test]
    fn partial_access_and_wildcard_rules_mean_what_they_say() {
        let rules = [
            DeviceRule {
                kind: DeviceKind::Char,
                major: Some(1),
                minor: Some(3),
                access: Access::READ,
            },
            DeviceRule {
                kind: DeviceKind::Block,
                major: Some(7),
                minor: None,
                access: Access::READ.union(Access::WRITE),
            },
            DeviceRule {
                kind: DeviceKind::All,
                major: None,
                minor: Some(9),
                access: Access::MKNOD,
            },
        ];
        assert_program_means(&rules);
        assert_program_means(&[]);
    }
}
