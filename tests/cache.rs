//! The build cache, end to end with the real binary: what hits, what misses and why, and
//! that concurrent builds share it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{text, Env};

const SPEC: &str = r#"
image: cached:latest
from: base
args: { VERSION: "1", OTHER: "x" }
steps:
  - run: echo one > /one
  - copy: src/
    to: /src/
  - run: echo ${VERSION} > /version
  - run: cat /src/a.txt /version > /summary
"#;

/// A store with a busybox image `base` and a context with the spec and `src/`.
fn setup() -> Env {
    let env = Env::new();
    let rootfs = common::busybox_rootfs(&env, "rootfs");
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "base"]);
    env.write("ctx/kiln.yaml", SPEC);
    env.write("ctx/src/a.txt", "alpha\n");
    env.write("ctx/src/b/c.txt", "gamma\n");
    env
}

/// `(decision, reason)` of every step, from `kiln build --plan --json`.
fn plan(env: &Env, extra: &[&str]) -> Vec<(String, String)> {
    let ctx = env.path("ctx");
    let mut args = vec!["build", "--plan", "--json", ctx.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = env.kiln_ok(&args);
    let json: serde_json::Value = serde_json::from_str(&out).expect("plan JSON");
    json["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["decision"].as_str().unwrap().to_owned(),
                s["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn decisions(plan: &[(String, String)]) -> Vec<&str> {
    plan.iter().map(|(d, _)| d.as_str()).collect()
}

/// Builds the context; returns (steps run, steps cached, digest).
fn build(env: &Env, extra: &[&str]) -> (u64, u64, String) {
    let ctx = env.path("ctx");
    let mut args = vec!["build", "--json", ctx.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = env.kiln_ok(&args);
    let json: serde_json::Value = serde_json::from_str(&out).expect("build JSON");
    (
        json["steps_run"].as_u64().unwrap(),
        json["steps_cached"].as_u64().unwrap(),
        json["digest"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn unchanged_rebuild_runs_nothing_and_gives_the_same_image() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    let (ran, cached, first) = build(&env, &[]);
    assert_eq!((ran, cached), (4, 0));
    assert_eq!(decisions(&plan(&env, &[])), ["cached"; 4]);
    let (ran, cached, second) = build(&env, &[]);
    assert_eq!((ran, cached), (0, 4));
    assert_eq!(first, second);
    // The human output says so too.
    let out = env.kiln(&["build", env.path("ctx").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cached_lines = stderr.lines().filter(|l| l.contains("  cached")).count();
    assert_eq!(cached_lines, 4, "{stderr}");
    assert!(stderr.contains("0 steps run, 4 cached"), "{stderr}");
}

#[test]
fn touching_or_chmodding_a_copied_file_still_hits() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    build(&env, &[]);
    let file = env.path("ctx/src/a.txt");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .append(true)
        .open(&file)
        .unwrap()
        .set_modified(later)
        .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(decisions(&plan(&env, &[])), ["cached"; 4]);
    assert_eq!(build(&env, &[]).0, 0);
    // An execute bit is part of what is copied: that one misses.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = plan(&env, &[]);
    assert_eq!(
        p[1],
        ("run".into(), "copy: src/a.txt changed".into()),
        "{p:?}"
    );
}

#[test]
fn one_changed_byte_reruns_that_step_and_the_ones_after() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    build(&env, &[]);
    env.write("ctx/src/a.txt", "alphA\n");
    let p = plan(&env, &[]);
    assert_eq!(decisions(&p), ["cached", "run", "run", "run"], "{p:?}");
    assert_eq!(p[1].1, "copy: src/a.txt changed");
    assert_eq!(p[2].1, "parent will be rebuilt");
    let (ran, cached, _) = build(&env, &[]);
    assert_eq!((ran, cached), (3, 1));
}

#[test]
fn an_arg_misses_exactly_where_it_is_used() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    build(&env, &[]);
    // OTHER is used by no step.
    assert_eq!(build(&env, &["--arg", "OTHER=y"]).0, 0);
    let p = plan(&env, &["--arg", "VERSION=2"]);
    assert_eq!(decisions(&p), ["cached", "cached", "run", "run"], "{p:?}");
    assert_eq!(p[2].1, "arg VERSION changed");
    let (ran, cached, _) = build(&env, &["--arg", "VERSION=2"]);
    assert_eq!((ran, cached), (2, 2));
    // The explanation of the step after it, once run: its parent was rebuilt.
    let out = env.kiln(&[
        "build",
        env.path("ctx").to_str().unwrap(),
        "--arg",
        "VERSION=3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(arg VERSION changed)"), "{stderr}");
    assert!(stderr.contains("(parent rebuilt)"), "{stderr}");
}

#[test]
fn host_creation_order_does_not_change_the_key() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    let make = |dir: &str, order: &[&str]| {
        for name in order {
            env.write(&format!("{dir}/src/{name}"), &format!("{name}\n"));
        }
        env.write(&format!("{dir}/kiln.yaml"), SPEC);
    };
    // Same content, created in opposite orders in two separate contexts.
    std::fs::remove_dir_all(env.path("ctx")).unwrap();
    make("ctx", &["a.txt", "m.txt", "z.txt", "d/1", "d/2"]);
    let (_, _, first) = build(&env, &[]);
    std::fs::remove_dir_all(env.path("ctx")).unwrap();
    make("ctx", &["d/2", "d/1", "z.txt", "m.txt", "a.txt"]);
    let (ran, _, second) = build(&env, &[]);
    assert_eq!(ran, 0);
    assert_eq!(first, second);
}

#[test]
fn parallel_builds_share_the_cache() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    let ctx = env.path("ctx");
    let spawn = || {
        env.command()
            .args(["build", "--json", ctx.to_str().unwrap()])
            .spawn()
            .expect("start kiln")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", text(&a));
    assert!(b.status.success(), "{}", text(&b));
    let digest = |o: &std::process::Output| {
        let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        json["digest"].as_str().unwrap().to_owned()
    };
    assert_eq!(digest(&a), digest(&b));
    let (ran, cached, again) = build(&env, &[]);
    assert_eq!((ran, cached), (0, 4));
    assert_eq!(again, digest(&a));
}

#[test]
fn no_cache_flags_force_runs() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    build(&env, &[]);
    assert_eq!(build(&env, &["--no-cache"]).0, 4);
    let p = plan(&env, &["--no-cache-from", "3"]);
    assert_eq!(decisions(&p), ["cached", "cached", "run", "run"], "{p:?}");
    assert_eq!(p[2].1, "--no-cache-from");
    let out = env.kiln(&[
        "build",
        env.path("ctx").to_str().unwrap(),
        "--no-cache-from",
        "9",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("has 4 steps"), "{}", text(&out));
}

#[test]
fn a_cache_hit_needs_its_content() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    build(&env, &[]);
    // Remove every layer dir: the records must not hand out missing content.
    let layers = env.root().join("layers");
    for entry in std::fs::read_dir(&layers).unwrap() {
        let path = entry.unwrap().path();
        remove_tree(&path);
    }
    env.kiln_ok(&["import", env.path("rootfs").to_str().unwrap(), "-t", "base"]);
    let (ran, _, _) = build(&env, &[]);
    assert_eq!(ran, 4);
}

fn remove_tree(path: &Path) {
    // Layer dirs may hold whiteout device nodes; remove_dir_all handles them as root.
    std::fs::remove_dir_all(path).unwrap();
}

#[test]
fn a_hit_gives_the_image_a_fresh_build_would_even_with_a_recent_epoch() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    let build_with_epoch = |extra: &[&str]| {
        let ctx = env.path("ctx");
        let out = env
            .command()
            .args(["build", "--json", ctx.to_str().unwrap()])
            .args(extra)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["digest"].as_str().unwrap().to_owned()
    };
    build_with_epoch(&[]);
    // An mtime older than the epoch would survive the writer's clamp if copies kept it.
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    std::fs::File::options()
        .append(true)
        .open(env.path("ctx/src/a.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let cached = build_with_epoch(&[]);
    let fresh = build_with_epoch(&["--no-cache"]);
    assert_eq!(cached, fresh);
}

#[test]
fn a_rootfs_tarball_is_imported_once_until_it_changes() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    let tar = |content: &str| {
        env.write("rootfs/version", content);
        common::run(
            std::process::Command::new("tar")
                .arg("-cf")
                .arg(env.path("ctx/base.tar"))
                .arg("-C")
                .arg(env.path("rootfs"))
                .arg("."),
        );
    };
    env.write(
        "ctx/kiln.yaml",
        "image: fromtar:latest\nfrom: rootfs:./base.tar\nsteps:\n  - run: cat /version > /seen\n",
    );
    tar("one");
    // A tarball written in the last two seconds is not remembered (its times may not yet
    // tell a later write apart).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let first = build(&env, &[]).2;
    let records = std::fs::read_dir(env.root().join("cache/steps"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .filter(|r| r.contains("kiln import") && r.contains("base.tar"))
        .count();
    assert_eq!(records, 1, "the import should be in the build cache");
    assert_eq!(build(&env, &[]), (0, 1, first.clone()));
    tar("two");
    let (ran, _, second) = build(&env, &[]);
    assert_ne!(second, first, "a changed tarball must be imported again");
    assert_eq!(ran, 1);
    assert_eq!(
        env.kiln_ok(&["run", "--rm", "fromtar", "cat", "/seen"]),
        "two"
    );
}
