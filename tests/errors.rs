//! Errors say what is wrong, where, and what works instead, and exit codes follow one rule
//! (README, "Exit codes"): 1 for bad input of any kind, 2 for a command line clap rejects,
//! 125 only when a valid container could not be started, 126/127 when its command cannot
//! run, else the container's or step's own code. Every command runs from a project folder
//! with relative paths, as a user types it, and each check names the exact exit code and
//! message.

mod common;

use std::path::PathBuf;
use std::process::{Output, Stdio};

use common::{text, Env};

/// A project folder `proj` with a busybox root filesystem (`base`) imported as `bb`.
fn project(env: &Env) -> PathBuf {
    common::busybox_rootfs(env, "proj/base");
    let dir = env.path("proj");
    let out = kiln_in(env, &dir, &["import", "base", "-t", "bb"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    dir
}

fn kiln_in(env: &Env, dir: &std::path::Path, args: &[&str]) -> Output {
    env.command().current_dir(dir).args(args).output().unwrap()
}

/// Runs kiln in `dir`, checks its exit code, and returns its stderr.
fn fails(env: &Env, dir: &std::path::Path, args: &[&str], code: i32) -> String {
    let out = kiln_in(env, dir, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "kiln {args:?}: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn exit_codes_follow_one_rule() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let dir = project(&env);
    // 1: bad input of any kind.
    let err = fails(&env, &dir, &["run", "--rm", "nosuch", "true"], 1);
    assert!(err.starts_with("error: no such image: nosuch\n"), "{err}");
    let err = fails(
        &env,
        &dir,
        &["run", "--rm", "--pids-limit", "0", "bb", "true"],
        1,
    );
    assert_eq!(err, "error: --pids-limit must be at least 1\n");
    let err = fails(
        &env,
        &dir,
        &["run", "--rm", "-v", "nope:/x", "bb", "true"],
        1,
    );
    assert!(err.contains("bind mount source"), "{err}");
    // 2: clap's usage errors.
    let err = fails(&env, &dir, &["run", "--no-such-flag", "bb"], 2);
    assert!(
        err.contains("unexpected argument '--no-such-flag'"),
        "{err}"
    );
    // 125: a valid container that could not be started.
    let err = fails(
        &env,
        &dir,
        &["run", "--rm", "-w", "/bin/busybox", "bb", "true"],
        125,
    );
    assert_eq!(err, "error: chdir \"/bin/busybox\": Not a directory\n");
    // 126/127: the command cannot run; else the container's own code.
    let err = fails(&env, &dir, &["run", "--rm", "bb", "/etc"], 126);
    assert!(err.contains("exec \"/etc\": Permission denied"), "{err}");
    fails(&env, &dir, &["run", "--rm", "bb", "nosuchcommand"], 127);
    fails(&env, &dir, &["run", "--rm", "bb", "sh", "-c", "exit 7"], 7);
}

/// An `image:` or `from:` that is no image reference is a spec error at its value.
#[test]
fn invalid_image_references_are_located_spec_errors() {
    let env = Env::unprivileged();
    let dir = project(&env);
    std::fs::write(
        dir.join("kiln.yaml"),
        "image: \"Bad:Name:x\"\nfrom: \"UPPER/x\"\n",
    )
    .unwrap();
    let err = fails(&env, &dir, &["build"], 1);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("error: kiln.yaml:1:8: invalid image reference \"Bad:Name:x\""),
        "{err}"
    );
    assert!(
        lines[1].starts_with("error: kiln.yaml:2:7: invalid image reference \"UPPER/x\""),
        "{err}"
    );
    assert_eq!(lines[2], "kiln.yaml: 2 problems", "{err}");
    assert_eq!(lines.len(), 3, "{err}");
}

/// Every problem of a spec, each with FILE:LINE:COL, then how many.
#[test]
fn all_errors_of_a_spec_are_reported_together() {
    let env = Env::unprivileged();
    let dir = project(&env);
    std::fs::write(
        dir.join("kiln.yaml"),
        "\
from: scratch
stesp: []
steps:
  - rnu: make
  - workdir: /srv/${GRETING}
  - copy: x
  - workdir: relative
config: { stop_signal: SIGTREM }
run: { memory: 64X, pids: 0 }
",
    )
    .unwrap();
    let err = fails(&env, &dir, &["build", "-t", "x"], 1);
    let lines: Vec<&str> = err.lines().collect();
    let expected = [
        "error: kiln.yaml:2:1: unknown top-level key \"stesp\" (did you mean \"steps\"?)",
        "error: kiln.yaml:4:5: unknown step key \"rnu\" (did you mean \"run\"?)",
        "error: kiln.yaml:5:14: undefined variable \"GRETING\"",
        "error: kiln.yaml:6:5: copy needs \"to\"",
        "error: kiln.yaml:7:14: ",
        "error: kiln.yaml:8:24: unknown signal \"SIGTREM\" (did you mean \"SIGTERM\"?)",
        "error: kiln.yaml:9:16: invalid size \"64X\": unknown unit \"X\"",
        "error: kiln.yaml:9:27: pids must be at least 1",
        "kiln.yaml: 8 problems",
    ];
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, start) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(start),
            "expected {start:?}, got {line:?} in\n{err}"
        );
    }
    // Nothing was built: the store holds `bb` alone.
    assert_eq!(kiln_in(&env, &dir, &["images", "-q"]).stdout.len(), 13);
}

/// A missing secret file is a located error that says it does not exist.
#[test]
fn secret_errors_carry_their_location() {
    let env = Env::unprivileged();
    let dir = project(&env);
    std::fs::write(
        dir.join("kiln.yaml"),
        "\
from: rootfs:./base
steps:
  - run: cat /run/secrets/a
    secrets:
      - { id: a, source: ./missing.txt }
      - { id: b, env: KILN_TEST_NO_SUCH_VARIABLE }
",
    )
    .unwrap();
    let err = fails(&env, &dir, &["build", "-t", "x"], 1);
    let missing = dir.join("missing.txt");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "error: kiln.yaml:5:9: secret \"a\": {} does not exist",
            missing.display()
        ),
        "{err}"
    );
    assert!(lines[1].starts_with("hint: a relative source: is taken from the spec's folder"));
    assert_eq!(
        lines[2],
        "error: kiln.yaml:6:9: secret \"b\": environment variable KILN_TEST_NO_SUCH_VARIABLE is not set",
        "{err}"
    );
    assert_eq!(lines[3], "kiln.yaml: 2 problems", "{err}");
}

/// `kiln push IMAGE` of a local name (`localhost/…`) would connect to port 80 of this
/// machine: kiln asks for a destination instead.
#[test]
fn push_of_a_local_image_asks_where_to() {
    let env = Env::unprivileged();
    let dir = project(&env);
    let err = fails(&env, &dir, &["push", "bb"], 1);
    assert_eq!(
        err,
        "error: bb is a local image (localhost/bb:latest): name the registry to push it to\n\
         hint: kiln push bb registry.example:5000/bb\n"
    );
}

/// `rm` of a running container: the hint names what works.
#[test]
fn rm_of_a_running_container_hints_at_what_exists() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let dir = project(&env);
    let mut running = env
        .command()
        .current_dir(&dir)
        .args(["run", "--name", "web", "bb", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while kiln_in(&env, &dir, &["ps", "-q"]).stdout.is_empty() {
        assert!(
            started.elapsed().as_secs() < 20,
            "the container did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let err = fails(&env, &dir, &["rm", "web"], 1);
    assert_eq!(
        err,
        "error: container web is running\n\
         hint: kiln stop web stops it first; kiln rm -f web kills and removes it\n"
    );
    let out = kiln_in(&env, &dir, &["rm", "-f", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    running.wait().unwrap();
}

/// Docker's rules: at least 6 MiB of memory, at most this machine's CPUs; for flags of
/// run and build and for the spec's `run:` and `resources:`, those located.
#[test]
fn implausible_limits_are_errors_with_a_hint() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let dir = project(&env);
    let cpus = std::thread::available_parallelism().unwrap().get();
    let too_many = (cpus + 1).to_string();
    let memory_hint =
        "hint: a container needs more than that to start at all (Docker's minimum too); e.g. 64m\n";
    let err = fails(
        &env,
        &dir,
        &["run", "--rm", "--memory", "1m", "bb", "true"],
        1,
    );
    assert_eq!(
        err,
        format!("error: --memory: memory limit 1 MiB is below the minimum of 6 MiB\n{memory_hint}")
    );
    let err = fails(&env, &dir, &["build", "--memory", "4000k", "-t", "x"], 1);
    assert_eq!(
        err,
        format!(
            "error: --memory: memory limit 4000 KiB is below the minimum of 6 MiB\n{memory_hint}"
        )
    );
    let err = fails(
        &env,
        &dir,
        &["run", "--rm", "--cpus", &too_many, "bb", "true"],
        1,
    );
    assert!(
        err.starts_with(&format!(
            "error: --cpus: cpus {too_many} is more than the {cpus} CPU"
        )),
        "{err}"
    );
    assert!(
        err.ends_with(&format!(
            "hint: a number of CPUs from 0.01 up to this machine's {cpus}, e.g. 0.5\n"
        )),
        "{err}"
    );
    fails(&env, &dir, &["build", "--cpus", &too_many, "-t", "x"], 1);

    std::fs::write(
        dir.join("kiln.yaml"),
        format!(
            "from: rootfs:./base\nsteps:\n  - run: \"true\"\n    resources: {{ cpus: {too_many} }}\nrun: {{ memory: 1m }}\n"
        ),
    )
    .unwrap();
    let err = fails(&env, &dir, &["build", "-t", "x"], 1);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "error: kiln.yaml:4:24: cpus {too_many} is more than"
        )),
        "{err}"
    );
    assert!(
        lines[1]
            .starts_with("error: kiln.yaml:5:16: memory limit 1 MiB is below the minimum of 6 MiB"),
        "{err}"
    );
    // 6 MiB and 0.01 CPUs are allowed.
    let out = kiln_in(
        &env,
        &dir,
        &[
            "run", "--rm", "--memory", "6m", "--cpus", "0.01", "bb", "true",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
