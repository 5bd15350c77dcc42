//! Crash consistency: each store-writing command is killed with SIGKILL at a random moment,
//! then the store must keep its promises (ARCHITECTURE.md, store invariants).
//!
//! For each operation (`build`, `pull`, `push`, `import`, `run`, `run --rm`, `rmi`, `gc`)
//! every trial starts from a prepared store (a `cp -a` of a template), starts kiln in a
//! process group of its own, sleeps a random delay over the operation's typical duration
//! (the faster of two uninterrupted runs first) and kills the whole group with SIGKILL. Then:
//!
//! - no half-written object is visible under its final name: every blob in `blobs/sha256/`
//!   hashes to its name, every `layers/<hex>` dir has exactly the tree the uninterrupted run
//!   unpacked (names, types, modes, sizes, contents, link targets), `index.json` parses;
//! - `kiln fsck --json` is clean, or reports only leftovers of the killed process (staging,
//!   an abandoned `--rm` container, its cgroup), which the next kiln command removes;
//! - rerunning the operation (the next kiln command) succeeds, after which fsck is clean,
//!   nothing is mounted under the test's dir and no kiln cgroup of the killed process is
//!   left.
//!
//! Each trial is `clean` (fsck clean right after the kill), `leftovers` (fsck named only
//! leftovers and the rerun removed them) or a failure; a summary per operation goes to
//! stderr (`cargo test --test crash -- --nocapture` shows it).
//!
//! Knobs (environment):
//! - `KILN_CRASH_TRIALS=N`: trials per operation; 20 by default (CI), 200 for the long run:
//!   `KILN_CRASH_TRIALS=200 cargo test --release --test crash -- --nocapture`.
//! - `KILN_CRASH_SEED=S`: the base seed (else taken from the clock; always printed). Trial
//!   `i` of an operation has its own seed derived from it and the operation's name.
//! - `KILN_CRASH_ONLY=I`: run just trial `I` (its store and arguments depend on `I`, its
//!   kill moment on its seed and on the measured duration: pass the printed
//!   `KILN_CRASH_DELAY_US=D` too, which forces the delay). A failure prints all three:
//!   `KILN_CRASH_SEED=S KILN_CRASH_ONLY=I KILN_CRASH_DELAY_US=D cargo test --test crash
//!   OPERATION_survives_sigkill -- --nocapture` replays it.
//! - Timing: CI mode (20 trials) takes about 2 minutes on 2 cores (107 s measured); the
//!   long run about ten times that.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::registry::Registry;
use common::{kiln_bin, mounts_under, run, text, Env};
use sha2::{Digest as _, Sha256};

/// Trials per operation.
fn trials() -> usize {
    std::env::var("KILN_CRASH_TRIALS")
        .ok()
        .map(|v| v.parse().expect("KILN_CRASH_TRIALS is a number"))
        .unwrap_or(20)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
}

/// splitmix64: small, seeded, good enough to spread kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn base_seed() -> u64 {
    env_u64("KILN_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    })
}

/// The trials of an operation, `(index, seed)`: seeds derived from the base seed and the
/// operation name; with `KILN_CRASH_ONLY=I`, trial `I` alone.
fn trial_seeds(op: &str, base: u64, n: usize) -> Vec<(usize, u64)> {
    let only = env_u64("KILN_CRASH_ONLY").map(|i| i as usize);
    let mut rng = Rng(base ^ op.bytes().fold(0u64, |h, b| h.wrapping_mul(31) ^ b as u64));
    let count = only.map_or(n, |i| i + 1);
    (0..count)
        .map(|i| (i, rng.next()))
        .filter(|(i, _)| only.is_none_or(|o| o == *i))
        .collect()
}

/// A kiln command on `store`, output captured.
fn kiln(store: &Path) -> Command {
    let mut cmd = Command::new(kiln_bin());
    cmd.arg("--root")
        .arg(store)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn kiln_out(store: &Path, args: &[String]) -> Output {
    kiln(store).args(args).output().expect("run kiln")
}

fn kiln_ok(store: &Path, args: &[String]) -> Result<String, String> {
    let out = kiln_out(store, args);
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(format!(
            "kiln {args:?} failed: {}\n{}",
            out.status,
            text(&out)
        )),
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn cp_a(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

/// A digest of a directory tree: every entry's path, type, mode, size, content hash or link
/// target (not times, which differ between runs).
fn tree_digest(dir: &Path) -> String {
    let mut entries = BTreeMap::new();
    walk(dir, dir, &mut entries);
    let mut h = Sha256::new();
    for (path, what) in entries {
        h.update(path.as_bytes());
        h.update(b"\0");
        h.update(what.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mode = meta.permissions().mode();
        let what = if meta.is_symlink() {
            format!("link {mode:o} {}", fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            walk(root, &path, out);
            format!("dir {mode:o} {}:{}", meta.uid(), meta.gid())
        } else if meta.is_file() {
            let data = fs::read(&path).unwrap();
            format!(
                "file {mode:o} {}:{} {} {}",
                meta.uid(),
                meta.gid(),
                meta.len(),
                hex::encode(Sha256::digest(&data))
            )
        } else {
            format!("other {mode:o} {}", meta.rdev())
        };
        out.insert(rel, what);
    }
}

/// The trees of the layer dirs in `store`, by diff_id hex.
fn layer_trees(store: &Path) -> BTreeMap<String, String> {
    let Ok(dir) = fs::read_dir(store.join("layers")) else {
        return BTreeMap::new();
    };
    dir.map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                tree_digest(&e.path()),
            )
        })
        .collect()
}

/// No half-written object under its final name: blobs hash to their names, layer dirs are
/// the trees `known` says (the uninterrupted run's), `index.json` parses.
fn check_objects(store: &Path, known: &BTreeMap<String, String>) -> Result<(), String> {
    if let Ok(dir) = fs::read_dir(store.join("blobs/sha256")) {
        for entry in dir {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let data = fs::read(entry.path()).map_err(|e| format!("blob {name}: {e}"))?;
            let actual = hex::encode(Sha256::digest(&data));
            if actual != name {
                return Err(format!(
                    "blob {name} hashes to {actual} ({} bytes)",
                    data.len()
                ));
            }
        }
    }
    for (hex, tree) in layer_trees(store) {
        match known.get(&hex) {
            Some(want) if *want == tree => {}
            Some(_) => return Err(format!("layer dir {hex} differs from the complete one")),
            None => return Err(format!("layer dir {hex} is not one the operation makes")),
        }
    }
    let index = store.join("index.json");
    if index.exists() {
        let bytes = fs::read(&index).unwrap();
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| format!("index.json does not parse: {e}"))?;
    }
    Ok(())
}

/// Problem kinds that are leftovers of a killed kiln, which later commands remove.
const LEFTOVERS: [&str; 4] = [
    "stale-staging",
    "abandoned-container",
    "stale-cgroup",
    "unfinished-store",
];

/// `kiln fsck --json`: the problems as `kind: message` lines; `None` when the store does not
/// exist yet (a kiln killed before it made one).
fn fsck(store: &Path) -> Result<Option<Vec<(String, String)>>, String> {
    if !store.exists() {
        return Ok(None);
    }
    let out = kiln_out(store, &strings(&["fsck", "--json"]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("fsck --json: {e}\n{}", text(&out)))?;
    let problems: Vec<(String, String)> = report["problems"]
        .as_array()
        .ok_or_else(|| format!("fsck --json has no problems list: {report}"))?
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap_or("?").to_owned(),
                p["message"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    if problems.is_empty() != out.status.success() {
        return Err(format!(
            "fsck's exit code disagrees with its report\n{}",
            text(&out)
        ));
    }
    Ok(Some(problems))
}

/// kiln cgroup dirs named `kiln-<name>` for any of `names`, in any hierarchy.
fn kiln_cgroups(matches: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut parents = vec![root.join("kiln")];
    if !root.join("cgroup.controllers").exists() {
        parents = fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("kiln"))
            .collect();
    }
    parents
        .iter()
        .filter_map(|p| fs::read_dir(p).ok())
        .flatten()
        .flatten()
        .filter(|e| matches(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect()
}

fn container_ids(store: &Path) -> BTreeSet<String> {
    common::container_dirs(store).into_iter().collect()
}

/// The containers kiln's index says may still run (`containers/.live/`).
fn live_markers(store: &Path) -> BTreeSet<String> {
    common::names_in(&store.join("containers/.live"))
        .into_iter()
        .collect()
}

/// The tags in `index.json`.
fn tags(store: &Path) -> BTreeSet<String> {
    let Ok(bytes) = fs::read(store.join("index.json")) else {
        return BTreeSet::new();
    };
    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .map(str::to_owned)
        .collect()
}

/// Makes trial `i`'s store (and whatever else it needs) at the given path.
type Prepare<'a> = Box<dyn Fn(&Path, usize) + 'a>;
/// A kiln command on a trial's store after the kill; returns its stdout.
type Rerun<'a> = Box<dyn Fn(&Path, usize) -> Result<String, String> + 'a>;
/// A check of a trial's store after the rerun, given the rerun's stdout.
type After<'a> = Box<dyn Fn(&Path, usize, &str) -> Result<(), String> + 'a>;

/// One operation under test.
struct Op<'a> {
    name: &'static str,
    /// Makes trial `i`'s store (and whatever else it needs) at the given path.
    prepare: Prepare<'a>,
    /// The kiln arguments of trial `i`.
    args: Box<dyn Fn(usize) -> Vec<String> + 'a>,
    /// The next kiln command after the kill: by default the same operation again, which
    /// must succeed. Returns its stdout.
    rerun: Option<Rerun<'a>>,
    /// Checks after the rerun, beyond the store's invariants.
    after: Option<After<'a>>,
}

#[derive(Default)]
struct Summary {
    trials: usize,
    /// Kill delays, in µs.
    delays: Vec<u64>,
    /// kiln finished before the kill came.
    finished: usize,
    clean: usize,
    leftovers: usize,
    /// Kinds of leftovers seen, with counts.
    leftover_kinds: BTreeMap<String, usize>,
    failures: Vec<String>,
}

enum Outcome {
    Clean,
    Leftovers(Vec<String>),
}

/// Runs the trials of `op` in `env` and panics, after printing the summary, if any failed.
fn crash_trials(env: &Env, op: Op<'_>) {
    let base = base_seed();
    let n = trials();
    eprintln!(
        "crash {}: base seed {base} (KILN_CRASH_SEED={base}), {n} trials",
        op.name
    );

    // One uninterrupted run: its duration sets the kill window, its layer dirs are the
    // complete trees every trial's layer dirs must equal.
    let reference = env.path("reference");
    (op.prepare)(&reference, usize::MAX);
    let start = Instant::now();
    if let Err(e) = kiln_ok(&reference, &(op.args)(usize::MAX)) {
        panic!("the uninterrupted {} failed: {e}", op.name);
    }
    let mut typical = start.elapsed();
    // A first run is slower (cold caches): the window is the faster of two, else most
    // kills land after kiln finished.
    let second = env.path("reference-2");
    (op.prepare)(&second, usize::MAX - 2);
    let start = Instant::now();
    if let Err(e) = kiln_ok(&second, &(op.args)(usize::MAX - 2)) {
        panic!("the second uninterrupted {} failed: {e}", op.name);
    }
    typical = typical.min(start.elapsed());
    let _ = fs::remove_dir_all(&second);
    let mut known = layer_trees(&reference);
    // A layer the operation does not make (the template's) is known too.
    let template_layers = env.path("template-layers");
    (op.prepare)(&template_layers, usize::MAX - 1);
    known.extend(layer_trees(&template_layers));
    let _ = fs::remove_dir_all(&template_layers);
    eprintln!(
        "crash {}: an uninterrupted run takes {} ms",
        op.name,
        typical.as_millis()
    );
    // Kills land from kiln's start to a bit past the typical end (+ process start).
    let window_us = (typical.as_micros() as u64 * 5 / 4).max(2_000);

    let mut summary = Summary::default();
    for (i, seed) in trial_seeds(op.name, base, n) {
        let delay = env_u64("KILN_CRASH_DELAY_US").unwrap_or(Rng(seed).next() % window_us);
        summary.trials += 1;
        summary.delays.push(delay);
        let store = env.path(&format!("trial-{i}"));
        match trial(&op, &store, i, delay, &known) {
            Ok((finished, outcome)) => {
                summary.finished += finished as usize;
                match outcome {
                    Outcome::Clean => summary.clean += 1,
                    Outcome::Leftovers(kinds) => {
                        summary.leftovers += 1;
                        for k in kinds {
                            *summary.leftover_kinds.entry(k).or_default() += 1;
                        }
                    }
                }
            }
            Err(why) => summary.failures.push(format!(
                "trial {i} (KILN_CRASH_SEED={base} KILN_CRASH_ONLY={i} KILN_CRASH_DELAY_US={delay}, \
                 trial seed {seed}): {why}\n\
                 the killed kiln's output:\n{}",
                fs::read_to_string(store.with_extension("log")).unwrap_or_default()
            )),
        }
        if summary.failures.is_empty() {
            let _ = fs::remove_dir_all(&store);
        }
    }
    print_summary(op.name, typical, window_us, &summary);
    assert!(
        summary.failures.is_empty(),
        "crash {}: {} of {} trials failed (base seed {base}):\n{}",
        op.name,
        summary.failures.len(),
        summary.trials,
        summary.failures.join("\n\n")
    );
}

fn print_summary(name: &str, typical: Duration, window_us: u64, s: &Summary) {
    let mut delays = s.delays.clone();
    delays.sort_unstable();
    let pct = |p: usize| {
        delays
            .get(delays.len().saturating_sub(1) * p / 100)
            .copied()
    };
    let ms = |us: Option<u64>| us.map_or("-".into(), |us| format!("{:.1}", us as f64 / 1000.0));
    let kinds: Vec<String> = s
        .leftover_kinds
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect();
    eprintln!(
        "crash summary {name}: {} trials; run takes {} ms, kills at 0–{:.1} ms \
         (min {} / median {} / max {} ms); {} finished before the kill; outcomes: \
         {} clean, {} leftovers removed by the next command{}, {} failures",
        s.trials,
        typical.as_millis(),
        window_us as f64 / 1000.0,
        ms(pct(0)),
        ms(pct(50)),
        ms(pct(100)),
        s.finished,
        s.clean,
        s.leftovers,
        match kinds.is_empty() {
            true => String::new(),
            false => format!(" ({})", kinds.join(", ")),
        },
        s.failures.len()
    );
}

/// One trial: prepare, start, kill, check, rerun, check. `Ok((finished before the kill,
/// outcome))`.
fn trial(
    op: &Op<'_>,
    store: &Path,
    i: usize,
    delay_us: u64,
    known: &BTreeMap<String, String>,
) -> Result<(bool, Outcome), String> {
    let _ = fs::remove_dir_all(store);
    (op.prepare)(store, i);
    let log = store.with_extension("log");
    let out = fs::File::create(&log).unwrap();
    let mut child = kiln(store)
        .args((op.args)(i))
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("start kiln");
    let pid = child.id() as i32;
    std::thread::sleep(Duration::from_micros(delay_us));
    // The whole group: kiln and whatever it started that is still in it.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let status = child.wait().unwrap();
    let finished = status.signal().is_none();
    if finished && !status.success() {
        return Err(format!(
            "kiln failed on its own: {status}\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        ));
    }
    // The store right after the kill.
    let containers_after_kill = container_ids(store);
    check_objects(store, known).map_err(|e| format!("after the kill: {e}"))?;
    let problems = fsck(store)?.unwrap_or_default();
    let bad: Vec<&(String, String)> = problems
        .iter()
        .filter(|(kind, _)| !LEFTOVERS.contains(&kind.as_str()))
        .collect();
    if !bad.is_empty() {
        return Err(format!("fsck after the kill: {bad:?}"));
    }
    let outcome = match problems.is_empty() {
        true => Outcome::Clean,
        false => {
            let kinds: BTreeSet<String> = problems.into_iter().map(|(k, _)| k).collect();
            Outcome::Leftovers(kinds.into_iter().collect())
        }
    };

    // The next kiln command: the operation again.
    let stdout = match &op.rerun {
        Some(rerun) => rerun(store, i),
        None => kiln_ok(store, &(op.args)(i)),
    }
    .map_err(|e| format!("the rerun: {e}"))?;
    check_objects(store, known).map_err(|e| format!("after the rerun: {e}"))?;
    match fsck(store)? {
        Some(p) if p.is_empty() => {}
        Some(p) => return Err(format!("fsck after the rerun: {p:?}")),
        None => return Err("no store after the rerun".into()),
    }
    if let Some(after) = &op.after {
        after(store, i, &stdout)?;
    }
    // Nothing of the killed process group lives on (a build step, a container's init). A
    // member may take a moment to die after kiln, and the orphaned zombies of this
    // machine's init may wait to be reaped: only a live member that stays is a failure.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !live_group_members(pid).is_empty() {
        if Instant::now() > deadline {
            return Err(format!(
                "processes of the killed group {pid} are still running:\n{}",
                group_processes(pid)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mounts = mounts_under(store);
    if !mounts.is_empty() {
        return Err(format!("mounts left: {mounts:?}"));
    }
    let step_prefix = format!("kiln-step-{pid}-");
    let cgroups = kiln_cgroups(|name| {
        name.starts_with(&step_prefix)
            || name
                .strip_prefix("kiln-")
                .is_some_and(|id| containers_after_kill.contains(id))
    });
    // A container of the rerun that is still running (none here: every run ends) would be
    // listed too; the killed one's must be gone.
    if !cgroups.is_empty() {
        return Err(format!("cgroups left: {cgroups:?}"));
    }
    // The rerun's attach to the bridge network reclaimed the killed container's address
    // (other tests of this binary may have stale leases of their own meanwhile).
    let stale: Vec<String> = stale_leases()
        .into_iter()
        .filter(|(_, owner)| containers_after_kill.contains(owner))
        .map(|(address, owner)| format!("{address} ({owner})"))
        .collect();
    if !stale.is_empty() {
        return Err(format!("addresses leased to dead kilns: {stale:?}"));
    }
    Ok((finished, outcome))
}

/// The default network's leases (address, owner) whose holder is gone (nobody holds the
/// lease file's lock), read under the network's own lock as kiln does.
fn stale_leases() -> Vec<(String, String)> {
    use nix::fcntl::{Flock, FlockArg};
    let dir = Path::new("/run/kiln/networks");
    let Ok(lock) = fs::File::open(dir.join("kiln.lock")) else {
        return Vec::new(); // no network was ever used
    };
    let _held = Flock::lock(lock, FlockArg::LockExclusive).unwrap();
    let state: serde_json::Value = match fs::read(dir.join("kiln.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(_) => return Vec::new(),
    };
    let leases = state["leases"].as_object().cloned().unwrap_or_default();
    leases
        .iter()
        .filter(|(address, _)| {
            let file = fs::File::open(dir.join("kiln.leases").join(address.as_str()));
            file.is_ok_and(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok())
        })
        .map(|(address, lease)| {
            let owner = lease["owner"].as_str().unwrap_or_default().to_owned();
            (address.clone(), owner)
        })
        .collect()
}

/// The processes of group `pgid` that are not zombies, from `/proc/<pid>/stat`.
fn live_group_members(pgid: i32) -> Vec<i32> {
    let mut live = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (state, pgrp) = (fields.first(), fields.get(2));
        if pgrp.and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && state != Some(&"Z") {
            live.push(pid);
        }
    }
    live
}

/// `ps` lines of the processes in group `pgid`.
fn group_processes(pgid: i32) -> String {
    let out = Command::new("ps")
        .args(["-eo", "pid,ppid,pgid,stat,args"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.split_whitespace().nth(2) == Some(&pgid.to_string()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An env with busybox imported as `bb` in a template store; returns the template's path.
fn busybox_template(env: &Env) -> PathBuf {
    let rootfs = common::busybox_rootfs(env, "bb-rootfs");
    let template = env.path("template");
    kiln_ok(
        &template,
        &strings(&["import", rootfs.to_str().unwrap(), "-t", "bb"]),
    )
    .unwrap();
    template
}

/// Trial stores are copies of `template`.
fn copy_of(template: &Path) -> impl Fn(&Path, usize) + '_ {
    move |store, _| cp_a(template, store)
}

/// A build context: a multi-step spec on `bb` with run and copy steps, a few MB of layers.
fn build_context(env: &Env) -> PathBuf {
    env.write(
        "ctx/kiln.yaml",
        "image: built:latest\nfrom: bb\nsteps:\n\
         \x20 - run: mkdir -p /data && for i in 1 2 3 4; do cat /bin/busybox > /data/f$i; done\n\
         \x20 - copy: files\n    to: /files\n\
         \x20 - run: cat /files/* > /all && rm /data/f2\n\
         \x20 - copy: big\n    to: /big\n",
    );
    for n in 0..8 {
        env.write(
            &format!("ctx/files/f{n}"),
            &format!("file {n}\n").repeat(1000),
        );
    }
    let big: String = (0..200_000).map(|i| format!("{i}\n")).collect();
    env.write("ctx/big", &big);
    env.path("ctx")
}

#[test]
fn build_survives_sigkill() {
    common::require_root!("build steps need namespaces and overlayfs");
    let env = Env::new();
    let template = busybox_template(&env);
    let ctx = build_context(&env);
    let ctx = ctx.to_str().unwrap().to_owned();
    crash_trials(
        &env,
        Op {
            name: "build",
            prepare: Box::new(copy_of(&template)),
            args: Box::new(move |_| strings(&["build", &ctx, "-q"])),
            rerun: None,
            after: Some(Box::new(|store, _, _| {
                match tags(store).contains("localhost/built:latest") {
                    true => Ok(()),
                    false => Err("the rerun did not tag built".into()),
                }
            })),
        },
    );
}

#[test]
fn import_survives_sigkill() {
    common::require_root!("the rootfs has root-owned files; as the other store tests");
    let env = Env::new();
    let rootfs = common::busybox_rootfs(&env, "bb-rootfs");
    let tar = env.path("bb.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let (rootfs, tar) = (rootfs.to_str().unwrap(), tar.to_str().unwrap());
    crash_trials(
        &env,
        Op {
            name: "import",
            // A fresh store, so a kill can also land while kiln creates it.
            prepare: Box::new(|_, _| {}),
            // A directory in even trials, a tarball in odd ones.
            args: Box::new(move |i| {
                let source = if i % 2 == 0 { rootfs } else { tar };
                strings(&["import", source, "-t", "bb"])
            }),
            rerun: None,
            after: Some(Box::new(|store, _, _| {
                match tags(store).contains("localhost/bb:latest") {
                    true => Ok(()),
                    false => Err("the rerun did not tag bb".into()),
                }
            })),
        },
    );
}

/// `bb` pushed to a fresh registry; returns it and the pushed reference.
fn registry_with_bb(env: &Env, template: &Path) -> (Registry, String) {
    common::require("docker-registry", "docker-registry");
    let registry = Registry::start(env.dir.path());
    let target = format!("{}/crash/bb:1", registry.host());
    kiln_ok(template, &strings(&["push", "-q", "bb", &target])).unwrap();
    (registry, target)
}

fn digest_of(stdout: &str) -> String {
    stdout.trim().lines().last().unwrap_or_default().to_owned()
}

#[test]
fn pull_survives_sigkill() {
    common::require_root!("as the other store tests (layer dirs hold root-owned files)");
    let env = Env::new();
    let template = busybox_template(&env);
    let (_registry, target) = registry_with_bb(&env, &template);
    let target2 = target.clone();
    crash_trials(
        &env,
        Op {
            name: "pull",
            // Into an empty store.
            prepare: Box::new(|_, _| {}),
            args: Box::new(move |_| strings(&["pull", "-q", &target])),
            rerun: None,
            after: Some(Box::new(move |store, _, _| {
                match tags(store).contains(&target2) {
                    true => Ok(()),
                    false => Err(format!("the rerun did not tag {target2}")),
                }
            })),
        },
    );
}

#[test]
fn push_survives_sigkill() {
    common::require_root!("as the other store tests (layer dirs hold root-owned files)");
    let env = Env::new();
    let template = busybox_template(&env);
    let (registry, _) = registry_with_bb(&env, &template);
    // The manifest digest `push -q` prints, from the uninterrupted push.
    let pushed = digest_of(
        &kiln_ok(
            &template,
            &strings(&[
                "push",
                "-q",
                "bb",
                &format!("{}/once/bb:1", registry.host()),
            ]),
        )
        .unwrap(),
    );
    let host = registry.host();
    crash_trials(
        &env,
        Op {
            name: "push",
            prepare: Box::new(copy_of(&template)),
            // A repository per trial, so each push uploads its blobs.
            args: Box::new(move |i| {
                strings(&["push", "-q", "bb", &format!("{host}/trial{i}/bb:1")])
            }),
            rerun: None,
            after: Some(Box::new(move |_, i, stdout| {
                match digest_of(stdout) == pushed {
                    true => Ok(()),
                    false => Err(format!(
                        "the rerun pushed {stdout:?}, not {pushed} (trial {i})"
                    )),
                }
            })),
        },
    );
}

#[test]
fn run_survives_sigkill() {
    common::require_root!("containers need namespaces and overlayfs");
    let env = Env::new();
    let template = busybox_template(&env);
    crash_trials(
        &env,
        Op {
            name: "run",
            prepare: Box::new(copy_of(&template)),
            args: Box::new(|_| {
                strings(&[
                    "run",
                    "bb",
                    "sh",
                    "-c",
                    "echo written > /f; sleep 0.1; cat /f",
                ])
            }),
            rerun: None,
            after: Some(Box::new(|_, _, stdout| match stdout.trim() == "written" {
                true => Ok(()),
                false => Err(format!("the rerun printed {stdout:?}")),
            })),
        },
    );
}

#[test]
fn run_rm_survives_sigkill() {
    common::require_root!("containers need namespaces and overlayfs");
    let env = Env::new();
    let template = busybox_template(&env);
    crash_trials(
        &env,
        Op {
            name: "run --rm",
            prepare: Box::new(copy_of(&template)),
            args: Box::new(|_| {
                strings(&[
                    "run",
                    "--rm",
                    "bb",
                    "sh",
                    "-c",
                    "echo written > /f; sleep 0.1; cat /f",
                ])
            }),
            rerun: None,
            after: Some(Box::new(|store, _, _| {
                // The rerun's own container is gone, and so is the killed one's.
                match container_ids(store).is_empty() && live_markers(store).is_empty() {
                    true => Ok(()),
                    false => Err(format!(
                        "containers left: {:?}, marked as live: {:?}",
                        container_ids(store),
                        live_markers(store)
                    )),
                }
            })),
        },
    );
}

/// The template with more to remove: a built image (with build-cache records), tagged
/// twice more.
fn template_with_built(env: &Env) -> PathBuf {
    let template = busybox_template(env);
    let ctx = build_context(env);
    kiln_ok(&template, &strings(&["build", ctx.to_str().unwrap(), "-q"])).unwrap();
    for t in ["built2", "built3"] {
        kiln_ok(&template, &strings(&["tag", "built", t])).unwrap();
    }
    template
}

const RMI_TAGS: [&str; 3] = ["built", "built2", "built3"];

#[test]
fn rmi_survives_sigkill() {
    common::require_root!("the template is built (namespaces, overlayfs)");
    let env = Env::new();
    let template = template_with_built(&env);
    let mut args = vec!["rmi"];
    args.extend(RMI_TAGS);
    let args = strings(&args);
    let normalised = |t: &str| format!("localhost/{t}:latest");
    crash_trials(
        &env,
        Op {
            name: "rmi",
            prepare: Box::new(copy_of(&template)),
            args: Box::new(move |_| args.clone()),
            // Again for the tags that are left; with none left, any command (`kiln images`).
            rerun: Some(Box::new(move |store, _| {
                let left: Vec<&str> = RMI_TAGS
                    .into_iter()
                    .filter(|t| tags(store).contains(&normalised(t)))
                    .collect();
                let mut args = vec!["images"];
                if !left.is_empty() {
                    args = vec!["rmi"];
                    args.extend(left);
                }
                kiln_ok(store, &strings(&args))
            })),
            after: Some(Box::new(move |store, _, _| {
                let tags = tags(store);
                match tags == BTreeSet::from(["localhost/bb:latest".to_owned()]) {
                    true => Ok(()),
                    false => Err(format!("tags after the rerun: {tags:?}")),
                }
            })),
        },
    );
}

#[test]
fn gc_survives_sigkill() {
    common::require_root!("the template is built (namespaces, overlayfs)");
    let env = Env::new();
    let template = template_with_built(&env);
    // Unreferenced content: the built image's tags are gone, and `--cache` drops the
    // build-cache records that keep its layers.
    let mut args = vec!["rmi", "--no-prune"];
    args.extend(RMI_TAGS);
    kiln_ok(&template, &strings(&args)).unwrap();
    crash_trials(
        &env,
        Op {
            name: "gc",
            prepare: Box::new(copy_of(&template)),
            args: Box::new(|_| strings(&["gc", "--cache"])),
            rerun: None,
            after: Some(Box::new(|store, _, _| {
                // Only bb's one layer is left, and bb still runs.
                let layers = layer_trees(store).len();
                if layers != 1 {
                    return Err(format!("{layers} layer dirs after gc --cache"));
                }
                let out = kiln_ok(store, &strings(&["run", "--rm", "bb", "echo", "ok"]))?;
                match out.trim() == "ok" {
                    true => Ok(()),
                    false => Err(format!("bb printed {out:?}")),
                }
            })),
        },
    );
}
