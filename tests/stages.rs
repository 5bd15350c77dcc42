//! Multi-stage builds with the real binary: a Debian builder stage (mmdebstrap, gcc)
//! compiling a static program into a scratch image; stages built in parallel; `--target`.

mod common;

use std::process::Command;

use common::{require, run, text, Env};

const HELLO_C: &str = r#"
#include <stdio.h>
int main(void) { puts("hello from a static binary"); return 0; }
"#;

const GCC_SPEC: &str = r#"
image: hello-static:latest
stages:
  builder:
    from: debian-gcc
    steps:
      - copy: hello.c
        to: /src/
      - run: gcc -static -O2 -o /src/hello /src/hello.c
  final:
    from: scratch
    steps:
      - copy: /src/hello
        from: builder
        to: /hello
config:
  entrypoint: [/hello]
"#;

#[test]
fn a_builder_stage_compiles_a_static_binary_for_a_scratch_image() {
    common::require_root!("namespaces, overlayfs");
    require("mmdebstrap", "mmdebstrap");
    let env = Env::new();
    let tarball = env.path("debian.tar");
    // A minimal Debian with gcc, from Debian's mirror (the one network the machine has).
    run(Command::new("mmdebstrap")
        .args([
            "--quiet",
            "--variant=apt",
            "--include=gcc,libc6-dev",
            "bookworm",
        ])
        .arg(&tarball));
    env.kiln_ok(&["import", tarball.to_str().unwrap(), "-t", "debian-gcc"]);
    env.write("ctx/hello.c", HELLO_C);
    env.write("ctx/kiln.yaml", GCC_SPEC);
    env.kiln_ok(&["build", env.path("ctx").to_str().unwrap()]);

    let out = env.kiln(&["run", "--rm", "hello-static"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello from a static binary"
    );
    // Only the final stage is the image: one small layer, nothing of Debian.
    let inspect: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["inspect", "hello-static"])).unwrap();
    let layers = inspect["manifest"]["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{inspect}");
    let size = layers[0]["size"].as_u64().unwrap();
    assert!(
        size < 2 << 20,
        "the image should hold one static binary, got {size} bytes"
    );
}

const PARALLEL_SPEC: &str = r#"
image: joined:latest
stages:
  left:
    from: base
    steps:
      - run: sleep 1; cut -d' ' -f1 /proc/uptime > /left
  right:
    from: base
    steps:
      - run: sleep 1; cut -d' ' -f1 /proc/uptime > /right
  unused:
    from: base
    steps:
      - run: "false"
  final:
    from: left
    steps:
      - copy: [/right]
        from: right
        to: /
      - run: cat /left /right > /both
"#;

#[test]
fn independent_stages_build_in_parallel_and_unused_ones_not_at_all() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let rootfs = common::busybox_rootfs(&env, "rootfs");
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "base"]);
    env.write("ctx/kiln.yaml", PARALLEL_SPEC);
    let out = env.kiln(&["build", env.path("ctx").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Every line of a stage is marked with its name; `unused` (which would fail) never ran.
    assert!(stderr.contains("[left 1/1]"), "{stderr}");
    assert!(stderr.contains("[right 1/1]"), "{stderr}");
    assert!(!stderr.contains("unused"), "{stderr}");

    // Both stages sleep one second and then note the uptime: run one after the other, the
    // notes would be at least a second apart.
    let both = env.kiln_ok(&["run", "--rm", "joined", "cat", "/both"]);
    let stamps: Vec<f64> = both.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(stamps.len(), 2, "{both}");
    let apart = (stamps[0] - stamps[1]).abs();
    assert!(
        apart < 0.9,
        "left and right stages did not overlap: {apart} s apart"
    );
}

#[test]
fn target_builds_a_named_stage_and_plan_names_stages() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let rootfs = common::busybox_rootfs(&env, "rootfs");
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "base"]);
    env.write("ctx/kiln.yaml", PARALLEL_SPEC);
    let ctx = env.path("ctx");
    env.kiln_ok(&[
        "build",
        ctx.to_str().unwrap(),
        "--target",
        "right",
        "-t",
        "right-only",
    ]);
    let out = env.kiln_ok(&["run", "--rm", "right-only", "ls", "/"]);
    assert!(out.contains("right") && !out.contains("left"), "{out}");

    let plan: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["build", "--plan", "--json", ctx.to_str().unwrap()]))
            .unwrap();
    let steps = plan["steps"].as_array().unwrap();
    let right: Vec<&serde_json::Value> = steps.iter().filter(|s| s["stage"] == "right").collect();
    assert_eq!(right.len(), 1);
    assert_eq!(right[0]["decision"], "cached", "{plan}");
    let left: Vec<&serde_json::Value> = steps.iter().filter(|s| s["stage"] == "left").collect();
    assert_eq!(left[0]["decision"], "run", "{plan}");

    let out = env.kiln(&["build", ctx.to_str().unwrap(), "--target", "rigth"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no stage named \"rigth\""),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("did you mean \"right\""),
        "{}",
        text(&out)
    );
}

const COPY_FROM_SPEC: &str = r#"
image: copied:latest
args: { MESSAGE: hello }
stages:
  build:
    from: base
    steps:
      - run: mkdir -p /out && echo ${MESSAGE} > /out/app && date +%s%N > /out/built-at
  final:
    from: base
    steps:
      - copy: [/out/app]
        from: build
        to: /srv/
      - run: cat /srv/app > /srv/seen
"#;

/// `kiln build ARGS...` in the project folder; returns stderr.
fn build_in_project(env: &Env, args: &[&str]) -> String {
    let out = env
        .command()
        .current_dir(env.path("project"))
        .arg("build")
        .args(args)
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The line of `stderr` that reports the step titled `title`.
fn step_line<'a>(stderr: &'a str, title: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.contains(title) && !l.contains(" | "))
        .unwrap_or_else(|| panic!("no line for {title:?} in:\n{stderr}"))
}

#[test]
fn a_rebuilt_stage_with_the_same_copied_file_keeps_the_copy_cached() {
    common::require_root!("namespaces, overlayfs");
    // Failed before: the copy was keyed on the stage's layers, so it reran with
    // "copy: source changed" whenever the stage was rebuilt.
    let env = Env::new();
    let rootfs = common::busybox_rootfs(&env, "rootfs");
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "base"]);
    env.write("project/kiln.yaml", COPY_FROM_SPEC);
    build_in_project(&env, &[]);

    // The stage runs again and its layer differs (built-at), but /out/app does not.
    let stderr = build_in_project(&env, &["--no-cache-from", "build:1"]);
    assert!(
        step_line(&stderr, "[build 1/1]").contains("--no-cache-from"),
        "{stderr}"
    );
    let copy = step_line(&stderr, "copy: /out/app to /srv/");
    assert!(
        copy.ends_with("cached") || copy.contains("cached,"),
        "{stderr}"
    );
    assert!(
        step_line(&stderr, "run: cat /srv/app").contains("cached"),
        "{stderr}"
    );

    // A changed file misses, and the reason names it.
    let stderr = build_in_project(&env, &["--arg", "MESSAGE=changed"]);
    let copy = step_line(&stderr, "copy: /out/app to /srv/");
    assert!(copy.contains("(copy: /out/app changed)"), "{stderr}");
    assert_eq!(
        env.kiln_ok(&["run", "--rm", "copied", "cat", "/srv/seen"]),
        "changed"
    );
}

const UNBUILT_SPEC: &str = r#"
image: planned:latest
stages:
  deps:
    from: base
    steps:
      - run: mkdir -p /deps && echo lib > /deps/lib
  build:
    from: deps
    steps:
      - run: mkdir -p /out && cat /deps/lib > /out/app
  final:
    from: base
    steps:
      - copy: /out/app
        from: build
        to: /app
      - run: cat /app
"#;

#[test]
fn plan_of_an_unbuilt_multi_stage_spec_lists_what_would_run_and_what_uses_it() {
    common::require_root!("namespaces, overlayfs");
    // Failed before: "stage \"build\" has not been built", exit 1.
    let env = Env::new();
    let rootfs = common::busybox_rootfs(&env, "rootfs");
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "base"]);
    env.write("project/kiln.yaml", UNBUILT_SPEC);

    let stderr = build_in_project(&env, &["--plan"]);
    for (title, reason) in [
        ("[deps 1/1] run:", "(not in the cache)"),
        ("[build 1/1] run:", "(base stage \"deps\" will be rebuilt)"),
        (
            "[final 1/2] copy:",
            "(copies from stage \"build\", which will be rebuilt)",
        ),
        ("[final 2/2] run:", "(parent will be rebuilt)"),
    ] {
        let line = step_line(&stderr, title);
        assert!(line.contains(&format!("would run {reason}")), "{stderr}");
    }
    for summary in [
        "==> stage \"deps\" would run; used by \"build\"",
        "==> stage \"build\" would run; used by \"final\"",
        "==> stage \"final\" would run (the image)",
    ] {
        assert!(stderr.lines().any(|l| l == summary), "{summary}\n{stderr}");
    }

    let out = env
        .command()
        .current_dir(env.path("project"))
        .args(["build", "--plan", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let decisions: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["run"; 4], "{plan}");
    assert_eq!(
        plan["stages"],
        serde_json::json!([
            { "stage": "deps", "decision": "run", "used_by": ["build"] },
            { "stage": "build", "decision": "run", "used_by": ["final"] },
            { "stage": "final", "decision": "run", "used_by": [] },
        ])
    );
    // Nothing ran: a real build still runs every step.
    let stderr = build_in_project(&env, &[]);
    assert!(stderr.contains("4 steps run, 0 cached"), "{stderr}");
    let stderr = build_in_project(&env, &["--plan"]);
    assert!(
        stderr.contains("==> stage \"build\" is cached; used by \"final\""),
        "{stderr}"
    );
}
