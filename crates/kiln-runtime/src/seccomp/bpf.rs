//! kiln's seccomp compiler: a [`Policy`] to a classic BPF program.
//!
//! Exists because kiln needs what seccompiler cannot express: one action per rule (allow
//! this, `ENOSYS` that, `EPERM` for the rest), 64-bit argument comparisons of every
//! libseccomp kind, and Docker-format profiles with any mix of actions.
//!
//! The program: check the architecture (a foreign one kills the process: its numbers mean
//! other calls), refuse the x32 ABI on x86_64 with `EPERM`, answer numbers above kiln's
//! table with `ENOSYS`, then find the call's rules by a balanced binary search over runs of
//! numbers that share their rules, and try the rules in order. Classic BPF jumps only
//! forward, conditional ones at most 255 instructions, so the program is emitted backwards:
//! every target exists before the jump to it, and a target out of reach gets a `BPF_JA`
//! (32-bit offset) right after the jump.
//!
//! Arguments are 64-bit; the kernel hands them to BPF as 32-bit words, so each comparison
//! checks the high word first and the low word only when the high words are equal.

use std::collections::HashMap;

use super::model::{Action, ArgCmp, Op, Policy, Rule};
use super::table;

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == std::mem::size_of::<libc::sock_filter>());

/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
pub(super) const MAX_INSNS: usize = 4096;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offsets in `struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; }`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARGS: u32 = 16;

#[cfg(not(target_endian = "little"))]
compile_error!("the argument word offsets below assume a little-endian architecture");

/// The low and high 32-bit words of `args[index]`.
fn arg_words(index: u8) -> (u32, u32) {
    let lo = ARGS + 8 * u32::from(index);
    (lo, lo + 4)
}

/// A conditional jump reaches at most this far.
const MAX_JUMP: usize = u8::MAX as usize;
/// A `ret` already emitted is reused while it is this close, so that reusing it never
/// needs a long jump.
const REUSE_RET: usize = 128;

/// An emitted instruction, as its index in the backwards-growing program.
type Label = usize;

/// Builds the program backwards: `rev[0]` is the last instruction.
#[derive(Default)]
struct Emitter<'p> {
    rev: Vec<Insn>,
    rets: HashMap<Action, Label>,
    bodies: HashMap<&'p [Rule], Label>,
}

impl<'p> Emitter<'p> {
    fn push(&mut self, code: u16, jt: u8, jf: u8, k: u32) -> Label {
        self.rev.push(Insn { code, jt, jf, k });
        self.rev.len() - 1
    }

    /// The jump offset from the instruction emitted next to `target`.
    fn offset(&self, target: Label) -> usize {
        self.rev.len() - 1 - target
    }

    /// An unconditional jump to `target`.
    fn ja(&mut self, target: Label) -> Label {
        let k = self.offset(target) as u32;
        self.push(JA, 0, 0, k)
    }

    /// Makes `next` the instruction that runs after the one emitted next.
    fn fall_to(&mut self, next: Label) {
        if self.offset(next) != 0 {
            self.ja(next);
        }
    }

    fn ret(&mut self, action: Action) -> Label {
        if let Some(&label) = self.rets.get(&action) {
            if self.offset(label) <= REUSE_RET {
                return label;
            }
        }
        let label = self.push(RET_K, 0, 0, action.ret());
        self.rets.insert(action, label);
        label
    }

    /// `A = seccomp_data[offset]`, then `next`.
    fn load(&mut self, offset: u32, next: Label) -> Label {
        self.fall_to(next);
        self.push(LD_W_ABS, 0, 0, offset)
    }

    /// `A &= mask`, then `next`.
    fn and(&mut self, mask: u32, next: Label) -> Label {
        self.fall_to(next);
        self.push(AND_K, 0, 0, mask)
    }

    /// `if A <op> k goto t else goto f`. A target out of reach gets a `ja` placed right
    /// after the jump; with at most two of them, a target 253 away is still in reach.
    fn cond(&mut self, op: u16, k: u32, t: Label, f: Label) -> Label {
        if t == f {
            return t;
        }
        let far = |e: &Self, target| e.offset(target) > MAX_JUMP - 2;
        let f = if far(self, f) { self.ja(f) } else { f };
        let t = if far(self, t) { self.ja(t) } else { t };
        let (jt, jf) = (self.offset(t), self.offset(f));
        debug_assert!(jt <= MAX_JUMP && jf <= MAX_JUMP, "{jt} {jf}");
        self.push(op, jt as u8, jf as u8, k)
    }

    /// `((args[i] & mask) == value)` on one 32-bit word; no mask for a plain compare.
    fn word_eq(&mut self, offset: u32, mask: Option<u32>, value: u32, t: Label, f: Label) -> Label {
        let test = self.cond(JEQ_K, value, t, f);
        let next = match mask {
            Some(mask) => self.and(mask, test),
            None => test,
        };
        self.load(offset, next)
    }

    /// `(args[index] & mask) == value` on all 64 bits.
    fn eq64(&mut self, index: u8, mask: Option<u64>, value: u64, t: Label, f: Label) -> Label {
        let (lo, hi) = arg_words(index);
        let low = self.word_eq(lo, mask.map(|m| m as u32), value as u32, t, f);
        if mask.is_some_and(|m| m >> 32 == 0) && value >> 32 == 0 {
            // The high word is masked away entirely.
            return low;
        }
        let high_mask = mask.map(|m| (m >> 32) as u32);
        self.word_eq(hi, high_mask, (value >> 32) as u32, low, f)
    }

    /// `args[index] > value` (`strict`) or `>= value`, unsigned 64-bit.
    fn above64(&mut self, index: u8, value: u64, strict: bool, t: Label, f: Label) -> Label {
        let (lo, hi) = arg_words(index);
        let low_op = if strict { JGT_K } else { JGE_K };
        let low_test = self.cond(low_op, value as u32, t, f);
        let low = self.load(lo, low_test);
        let high = (value >> 32) as u32;
        let high_equal = self.cond(JEQ_K, high, low, f);
        let high_above = self.cond(JGT_K, high, t, high_equal);
        self.load(hi, high_above)
    }

    /// Jumps to `t` when the comparison holds, else to `f`.
    fn compare(&mut self, c: &ArgCmp, t: Label, f: Label) -> Label {
        match c.op {
            Op::Eq => self.eq64(c.index, None, c.value, t, f),
            Op::Ne => self.eq64(c.index, None, c.value, f, t),
            Op::MaskedEq(mask) => self.eq64(c.index, Some(mask), c.value, t, f),
            Op::Gt => self.above64(c.index, c.value, true, t, f),
            Op::Ge => self.above64(c.index, c.value, false, t, f),
            Op::Le => self.above64(c.index, c.value, true, f, t),
            Op::Lt => self.above64(c.index, c.value, false, f, t),
        }
    }

    /// The rule's comparisons in order, then its action; `fail` when one does not hold.
    fn rule(&mut self, rule: &Rule, fail: Label) -> Label {
        let mut next = self.ret(rule.action);
        for c in rule.args.iter().rev() {
            next = self.compare(c, next, fail);
        }
        next
    }

    /// A syscall's rules, tried in order, then `default`. Shared between the runs of
    /// numbers that have the same rules.
    fn body(&mut self, rules: Option<&'p [Rule]>, default: Action) -> Label {
        let rules = match rules {
            None => return self.ret(default),
            Some([only]) if only.args.is_empty() => return self.ret(only.action),
            Some(rules) => rules,
        };
        if let Some(&label) = self.bodies.get(rules) {
            return label;
        }
        let mut next = self.ret(default);
        for rule in rules.iter().rev() {
            next = self.rule(rule, next);
        }
        self.bodies.insert(rules, next);
        next
    }

    /// Binary search on `A` (the syscall number) over runs; each leaf is the run's body.
    fn dispatch(&mut self, runs: &[Run<'p>], default: Action) -> Label {
        if let [run] = runs {
            return self.body(run.rules, default);
        }
        let mid = runs.len() / 2;
        let upper = self.dispatch(&runs[mid..], default);
        let lower = self.dispatch(&runs[..mid], default);
        self.cond(JGE_K, runs[mid].first, upper, lower)
    }

    /// The program in execution order.
    fn finish(self) -> Vec<Insn> {
        self.rev.into_iter().rev().collect()
    }
}

/// Consecutive syscall numbers from `first` on that share their rules.
struct Run<'p> {
    first: u32,
    rules: Option<&'p [Rule]>,
}

/// The runs from 0 on; the last one reaches `u32::MAX`, so numbers above the table belong
/// to the default unless the prelude answered them already.
fn runs(policy: &Policy) -> Vec<Run<'_>> {
    let mut runs: Vec<Run> = Vec::new();
    let mut push = |first, rules| {
        if runs.last().is_none_or(|run: &Run| run.rules != rules) {
            runs.push(Run { first, rules });
        }
    };
    for nr in 0..=policy.max_nr {
        push(nr, policy.effective_rules(nr));
    }
    if !policy.enosys_above_max() {
        push(policy.max_nr + 1, None);
    }
    runs
}

/// Compiles `policy` for the native architecture.
pub(super) fn compile(policy: &Policy) -> Vec<Insn> {
    let mut e = Emitter::default();
    let runs = runs(policy);
    let mut next = e.dispatch(&runs, policy.default);
    if policy.enosys_above_max() {
        let enosys = e.ret(Action::Errno(libc::ENOSYS as u16));
        next = e.cond(JGT_K, policy.max_nr, enosys, next);
    }
    #[cfg(target_arch = "x86_64")]
    {
        let eperm = e.ret(Action::Errno(libc::EPERM as u16));
        next = e.cond(JGE_K, table::X32_SYSCALL_BIT, eperm, next);
    }
    let native = e.load(NR, next);
    let kill = e.ret(Action::KillProcess);
    let arch_ok = e.cond(JEQ_K, table::NATIVE.audit, native, kill);
    e.load(ARCH, arch_ok);
    e.finish()
}

#[cfg(test)]
pub(super) mod interpreter {
    //! A classic BPF interpreter for the instructions the compiler emits, with the
    //! kernel's static checks, so that compiled programs can be run against the model.

    use super::*;

    /// `struct seccomp_data`.
    #[derive(Debug, Clone, Copy)]
    pub struct Data {
        pub nr: u32,
        pub arch: u32,
        pub args: [u64; 6],
    }

    impl Data {
        fn bytes(&self) -> [u8; 64] {
            let mut b = [0u8; 64];
            b[0..4].copy_from_slice(&self.nr.to_ne_bytes());
            b[4..8].copy_from_slice(&self.arch.to_ne_bytes());
            for (i, arg) in self.args.iter().enumerate() {
                b[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
            }
            b
        }
    }

    /// The checks the kernel makes before it accepts a filter.
    pub fn check(prog: &[Insn]) {
        assert!(
            !prog.is_empty() && prog.len() <= MAX_INSNS,
            "{}",
            prog.len()
        );
        for (pc, insn) in prog.iter().enumerate() {
            let reach = |off: usize| assert!(pc + 1 + off < prog.len(), "jump out at {pc}");
            match insn.code {
                LD_W_ABS => assert!(insn.k % 4 == 0 && insn.k < 64, "load at {pc}"),
                AND_K | RET_K => {}
                JA => reach(insn.k as usize),
                JEQ_K | JGT_K | JGE_K => {
                    reach(usize::from(insn.jt));
                    reach(usize::from(insn.jf));
                }
                code => panic!("opcode {code:#x} at {pc}"),
            }
        }
        assert_eq!(
            prog.last().unwrap().code,
            RET_K,
            "the last instruction returns"
        );
    }

    /// Runs `prog` on `data`; the filter's return value.
    pub fn run(prog: &[Insn], data: &Data) -> u32 {
        let bytes = data.bytes();
        let word = |k: u32| {
            let k = k as usize;
            u32::from_ne_bytes(bytes[k..k + 4].try_into().unwrap())
        };
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let insn = prog[pc];
            let branch = |taken: bool| 1 + usize::from(if taken { insn.jt } else { insn.jf });
            pc += match insn.code {
                LD_W_ABS => {
                    a = word(insn.k);
                    1
                }
                AND_K => {
                    a &= insn.k;
                    1
                }
                JA => 1 + insn.k as usize,
                JEQ_K => branch(a == insn.k),
                JGT_K => branch(a > insn.k),
                JGE_K => branch(a >= insn.k),
                RET_K => return insn.k,
                code => panic!("opcode {code:#x}"),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::interpreter::{check, run, Data};
    use super::*;
    use crate::capabilities;
    use crate::seccomp::list;
    use crate::seccomp::model::Target;

    /// Values around every comparison of `rules`, per argument, and some edges.
    fn probes(rules: &[Rule]) -> [Vec<u64>; 6] {
        let mut per_arg: [Vec<u64>; 6] = Default::default();
        for values in per_arg.iter_mut() {
            values.extend([0, 1, 0xffff_ffff, 1 << 32, u64::MAX]);
        }
        for c in rules.iter().flat_map(|r| &r.args) {
            let v = c.value;
            let mut near = vec![v, v.wrapping_sub(1), v.wrapping_add(1), v ^ (1 << 32)];
            near.extend([v ^ (1 << 63), v ^ 1, (v >> 32) << 32]);
            if let Op::MaskedEq(mask) = c.op {
                near.extend([mask, v | !mask, v | (mask & mask.wrapping_neg())]);
            }
            per_arg[usize::from(c.index)].extend(near);
        }
        per_arg
    }

    /// A small deterministic generator for argument mixes.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Every number of the table (and around it) with argument values around each of its
    /// comparisons: the compiled program answers what the model answers.
    fn agrees_with_model(policy: &Policy) -> usize {
        let prog = compile(policy);
        check(&prog);
        let arch = table::NATIVE.audit;
        let mut numbers: Vec<u32> = (0..=policy.max_nr + 3).collect();
        numbers.extend([1000, 0x3fff_ffff, 0x4000_0000, 0x4000_0001, u32::MAX]);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut checked = 0;
        for nr in numbers {
            let rules = policy.syscalls.get(&nr).map_or(&[][..], |r| r.as_slice());
            let per_arg = probes(rules);
            let mut cases = vec![[0u64; 6]];
            for (i, values) in per_arg.iter().enumerate() {
                for &v in values {
                    let mut args = [0u64; 6];
                    args[i] = v;
                    cases.push(args);
                }
            }
            for _ in 0..if rules.is_empty() { 2 } else { 64 } {
                let pick = |s: &mut u64, vs: &Vec<u64>| vs[xorshift(s) as usize % vs.len()];
                cases.push(std::array::from_fn(|i| pick(&mut seed, &per_arg[i])));
            }
            for args in cases {
                let want = policy.decide(arch, nr, &args).ret();
                let got = run(&prog, &Data { nr, arch, args });
                assert_eq!(got, want, "nr {nr} args {args:x?}");
                checked += 1;
            }
        }
        let foreign = Data {
            nr: 0,
            arch: 0x4000_0003,
            args: [0; 6],
        };
        assert_eq!(run(&prog, &foreign), libc::SECCOMP_RET_KILL_PROCESS);
        checked
    }

    fn default_policy(capabilities: u64) -> Policy {
        let target = Target {
            capabilities,
            kernel: (6, 18),
        };
        let (policy, skipped) = list::default_profile().resolve(&target);
        assert!(skipped.is_empty(), "{skipped:?}");
        policy
    }

    #[test]
    fn the_default_program_agrees_with_the_model() {
        for caps in [0, capabilities::default_mask(), u64::MAX] {
            assert!(agrees_with_model(&default_policy(caps)) > 1000);
        }
    }

    #[test]
    fn the_default_program_is_far_below_the_kernel_limit() {
        let default = compile(&default_policy(capabilities::default_mask())).len();
        let all = compile(&default_policy(u64::MAX)).len();
        assert!(default < 400, "{default}");
        assert!(all < 400, "{all}");
    }

    fn cmp(index: u8, op: Op, value: u64) -> ArgCmp {
        ArgCmp { index, op, value }
    }

    /// Every operator on both words, conjunctions, rules in order, and a different errno
    /// for every call, so that the program is long and most jumps need `BPF_JA`.
    #[test]
    fn every_operator_and_long_jumps_agree_with_the_model() {
        let ops = [
            Op::Eq,
            Op::Ne,
            Op::Lt,
            Op::Le,
            Op::Gt,
            Op::Ge,
            Op::MaskedEq(0xff00_0000_00ff),
        ];
        let mut syscalls = BTreeMap::new();
        // A third of the table keeps the program under the kernel's limit.
        for s in table::all().filter(|s| s.nr % 3 == 0) {
            let nr = u64::from(s.nr);
            let op = ops[s.nr as usize % ops.len()];
            let value = (nr << 32) | (nr * 7);
            let first = Rule {
                args: vec![
                    cmp((s.nr % 6) as u8, op, value),
                    cmp(((s.nr + 1) % 6) as u8, Op::Ne, nr),
                ],
                action: Action::Errno((s.nr % 4000) as u16 + 1),
            };
            let second = Rule {
                args: vec![cmp(5, Op::Ge, 1 << 40)],
                action: Action::Trace(s.nr as u16),
            };
            let actions = [Action::Allow, Action::Log, Action::Trap, Action::KillThread];
            let third = Rule {
                args: vec![],
                action: actions[s.nr as usize % actions.len()],
            };
            syscalls.insert(s.nr, vec![first, second, third]);
        }
        let policy = Policy {
            default: Action::Errno(libc::EACCES as u16),
            syscalls,
            max_nr: table::max_nr(),
        };
        let prog = compile(&policy);
        assert!(prog.len() > 2 * MAX_JUMP, "{}", prog.len());
        let long_jumps = prog
            .iter()
            .filter(|i| i.code == JA && i.k > MAX_JUMP as u32);
        assert!(long_jumps.count() > 2, "{prog:?}");
        agrees_with_model(&policy);
    }

    #[test]
    fn an_allow_by_default_policy_does_not_refuse_newer_calls() {
        let mut syscalls = BTreeMap::new();
        let keyctl = table::number("keyctl").unwrap();
        // The highest number has a rule too: it must not reach above the table.
        for nr in [keyctl, table::max_nr()] {
            let refuse = Rule {
                args: vec![],
                action: Action::Errno(1),
            };
            syscalls.insert(nr, vec![refuse]);
        }
        let policy = Policy {
            default: Action::Allow,
            syscalls,
            max_nr: table::max_nr(),
        };
        agrees_with_model(&policy);
        let prog = compile(&policy);
        let call = |nr| {
            let data = Data {
                nr,
                arch: table::NATIVE.audit,
                args: [0; 6],
            };
            run(&prog, &data)
        };
        assert_eq!(call(1000), libc::SECCOMP_RET_ALLOW);
        assert_eq!(call(keyctl), libc::SECCOMP_RET_ERRNO | 1);
    }
}
