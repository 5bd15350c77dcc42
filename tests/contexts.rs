//! Build contexts and host paths as a user types them: kiln run from a directory other than
//! the context, with relative `CONTEXT`, `-f` and spec paths. Every case checks what landed
//! in the image, because the bug these guard against copied the *host's* files: a relative
//! context was resolved after the copy thread had done `chdir("/")`, so `copy: etc/` took
//! the host's `/etc` (shadow included).
//!
//! Also: `from: rootfs:`, `kiln import` and secret sources that name a FIFO or a character
//! device are refused at once, never read (a FIFO hung kiln, `/dev/zero` burned CPU). Those
//! tests run kiln under a deadline, so a regression fails instead of hanging the suite.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{text, Env};

/// Longest a refusal may take before the test kills kiln and fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// What the context's own `etc/marker` holds: the proof that `etc/` came from the context.
const MARKER: &str = "the context's etc\n";

/// An env with a busybox image `base` and a context `ctx/` holding `app.txt` and `etc/marker`.
fn setup() -> Env {
    let env = Env::new();
    let root = common::busybox_rootfs(&env, "base");
    env.kiln_ok(&["import", root.to_str().unwrap(), "-t", "base"]);
    env.write("ctx/app.txt", "app from ctx\n");
    env.write("ctx/etc/marker", MARKER);
    std::fs::create_dir_all(env.path("elsewhere")).unwrap();
    env
}

/// A spec copying the context's `etc/` and `app.txt`, tagged `image`.
fn copy_spec(image: &str) -> String {
    format!(
        "image: {image}\nfrom: base\nsteps:\n  - copy: etc/\n    to: /copied-etc/\n  - copy: app.txt\n    to: /app.txt\n"
    )
}

/// Runs kiln in `cwd` (relative to the env) with the env's store.
fn kiln_in(env: &Env, cwd: &str, args: &[&str]) -> Output {
    env.command()
        .current_dir(env.path(cwd))
        .args(args)
        .output()
        .expect("run kiln")
}

fn kiln_ok_in(env: &Env, cwd: &str, args: &[&str]) {
    let out = kiln_in(env, cwd, args);
    assert!(
        out.status.success(),
        "kiln {args:?} in {cwd}: {}",
        text(&out)
    );
}

/// Output of `cmd` run in `image` (from the env's dir, not the build's cwd).
fn in_image(env: &Env, image: &str, cmd: &[&str]) -> String {
    let mut args = vec!["run", "--rm", image];
    args.extend_from_slice(cmd);
    env.kiln_ok(&args)
}

/// The image's `/copied-etc` is the context's `etc/`: the marker, nothing of the host's `/etc`.
fn assert_contexts_etc(env: &Env, image: &str) {
    let listed = in_image(env, image, &["ls", "-A", "/copied-etc"]);
    for host_file in ["hostname", "passwd", "shadow"] {
        assert!(
            !listed.lines().any(|name| name == host_file),
            "copy: etc/ copied the host's /etc/{host_file}; /copied-etc holds: {listed}"
        );
    }
    assert_eq!(
        listed, "marker",
        "copy: etc/ took files that are not the context's"
    );
    assert_eq!(
        in_image(env, image, &["cat", "/copied-etc/marker"]),
        MARKER.trim()
    );
}

/// The image holds the context's `etc/` and the context's `app.txt`.
fn assert_context_copied(env: &Env, image: &str, app: &str) {
    assert_contexts_etc(env, image);
    assert_eq!(in_image(env, image, &["cat", "/app.txt"]), app.trim());
}

#[test]
fn kiln_build_in_the_context_copies_the_contexts_etc_not_the_hosts() {
    common::require_root!("namespaces, overlayfs");
    // Failed before the fix: the build succeeded with the host's /etc in the image.
    let env = setup();
    env.write(
        "ctx/kiln.yaml",
        "image: plain\nfrom: base\nsteps:\n  - copy: etc/\n    to: /copied-etc/\n",
    );
    kiln_ok_in(&env, "ctx", &["build"]);
    assert_contexts_etc(&env, "plain");
}

#[test]
fn kiln_build_in_the_context_copies_its_files() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    env.write("ctx/kiln.yaml", &copy_spec("plain"));
    kiln_ok_in(&env, "ctx", &["build"]);
    assert_context_copied(&env, "plain", "app from ctx");
}

#[test]
fn kiln_build_dot_copies_from_the_cwd() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    env.write("ctx/kiln.yaml", &copy_spec("dot"));
    kiln_ok_in(&env, "ctx", &["build", "."]);
    assert_context_copied(&env, "dot", "app from ctx");
}

#[test]
fn kiln_build_of_a_sibling_dir_copies_from_it() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    env.write("ctx/kiln.yaml", &copy_spec("sibling"));
    kiln_ok_in(&env, "elsewhere", &["build", "../ctx"]);
    assert_context_copied(&env, "sibling", "app from ctx");
}

#[test]
fn a_relative_spec_file_is_found_from_the_cwd() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    env.write("ctx/rel.yaml", &copy_spec("relspec"));
    kiln_ok_in(&env, "ctx", &["build", "-f", "rel.yaml"]);
    assert_context_copied(&env, "relspec", "app from ctx");
}

#[test]
fn spec_paths_are_relative_to_the_spec_and_the_context_to_the_cwd() {
    common::require_root!("namespaces, overlayfs");
    // The spec lives away from the context: its own paths (a named context, the rootfs, a
    // secret, a run mount) are taken from its folder; CONTEXT and -f from the cwd.
    let env = setup();
    env.write("shared/assets/logo.txt", "logo from shared\n");
    env.write("other/dir/token.txt", "s3cret\n");
    env.write("other/dir/data/file", "mounted data\n");
    env.write(
        "other/dir/kiln.yaml",
        r#"image: split
from: rootfs:../../base
contexts: { assets: ../../shared/assets }
steps:
  - copy: etc/
    to: /copied-etc/
  - copy: app.txt
    to: /app.txt
  - copy: logo.txt
    from: assets
    to: /logo.txt
  - run: cp /run/secrets/token /token-seen
    secrets: [{ id: token, source: ./token.txt }]
run:
  mounts: [{ source: ./data, target: /data, readonly: true }]
"#,
    );
    kiln_ok_in(&env, "", &["build", "ctx", "-f", "other/dir/kiln.yaml"]);
    assert_context_copied(&env, "split", "app from ctx");
    assert_eq!(
        in_image(&env, "split", &["cat", "/logo.txt"]),
        "logo from shared"
    );
    assert_eq!(in_image(&env, "split", &["cat", "/token-seen"]), "s3cret");
    // The run mount was made absolute when the spec was read: `kiln run` from anywhere
    // binds the spec's data dir (before, its relative source was taken from kiln run's cwd).
    let out = kiln_in(
        &env,
        "elsewhere",
        &["run", "--rm", "split", "cat", "/data/file"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "mounted data");
}

#[test]
fn a_named_context_written_relatively_is_the_one_beside_the_spec() {
    common::require_root!("namespaces, overlayfs");
    // cwd holds a decoy with the same relative name: only the spec's folder counts.
    let env = setup();
    env.write("app/kiln.yaml", "image: named\nfrom: base\ncontexts: { conf: ./conf }\nsteps:\n  - copy: .\n    from: conf\n    to: /conf/\n");
    env.write("app/conf/settings", "from app/conf\n");
    env.write("elsewhere/conf/settings", "decoy in the cwd\n");
    kiln_ok_in(&env, "elsewhere", &["build", "../app"]);
    assert_eq!(
        in_image(&env, "named", &["cat", "/conf/settings"]),
        "from app/conf"
    );
}

#[test]
fn the_context_dir_fd_does_not_reach_run_steps() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    env.write(
        "ctx/kiln.yaml",
        "image: fds\nfrom: base\nsteps:\n  - copy: app.txt\n    to: /app.txt\n  - run: ls -l /proc/self/fd/ > /fds\n",
    );
    kiln_ok_in(&env, "ctx", &["build"]);
    let fds = in_image(&env, "fds", &["cat", "/fds"]);
    assert!(
        fds.contains("0 -> "),
        "the step could not list its fds: {fds}"
    );
    let ctx = std::fs::canonicalize(env.path("ctx")).unwrap();
    assert!(
        !fds.contains(ctx.to_str().unwrap()),
        "the build context's fd leaked into a run step: {fds}"
    );
}

#[test]
fn a_missing_context_is_reported_before_any_step_and_an_unused_one_is_not_opened() {
    let env = Env::unprivileged();
    env.write("spec/kiln.yaml", "image: m\nfrom: scratch\ncontexts: { unused: ./nope, assets: ./gone }\nsteps:\n  - run: [/bin/false]\n  - copy: x\n    to: /x\n");
    let out = kiln_in(&env, "", &["build", "missing", "-f", "spec/kiln.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let missing = env.path("missing");
    assert!(
        stderr.contains(&format!(
            "cannot open the build context {}: No such file or directory",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("hint: "), "{stderr}");
    assert!(
        !stderr.contains("[1/2]"),
        "a step ran before the context was opened: {stderr}"
    );

    env.write("spec/kiln.yaml", "image: m\nfrom: scratch\ncontexts: { unused: ./nope, assets: ./gone }\nsteps:\n  - copy: x\n    from: assets\n    to: /x\n");
    let out = kiln_in(&env, "", &["build", "missing", "-f", "spec/kiln.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot open build context \"assets\" at {}/spec/gone",
            env.dir.path().display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("nope"),
        "an unused context was opened: {stderr}"
    );
}

/// Runs kiln under [`DEADLINE`]; kills it and fails the test when it takes longer.
fn kiln_bounded(env: &Env, args: &[&str]) -> Output {
    let mut child = env
        .command()
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("run kiln");
    let started = Instant::now();
    while child.try_wait().expect("wait for kiln").is_none() {
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap kiln");
            panic!(
                "kiln {args:?} still ran after {DEADLINE:?}: killed\n{}",
                text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("collect kiln's output")
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// Fails unless `out` is a quick user error naming `path` as `kind`.
fn assert_refused(out: &Output, path: &Path, kind: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains(kind),
        "expected an error naming {} as {kind}: {stderr}",
        path.display()
    );
    assert!(stderr.contains("hint: "), "no hint: {stderr}");
}

#[test]
fn a_rootfs_that_is_a_fifo_or_a_device_is_refused_at_once() {
    let env = Env::unprivileged();
    let fifo = env.path("rootfs.fifo");
    mkfifo(&fifo);
    for (from, path, kind) in [
        ("rootfs:./rootfs.fifo", fifo.as_path(), "a FIFO"),
        (
            "rootfs:/dev/zero",
            Path::new("/dev/zero"),
            "a character device",
        ),
    ] {
        env.write("kiln.yaml", &format!("image: bad\nfrom: {from}\n"));
        let out = kiln_bounded(&env, &["build", env.dir.path().to_str().unwrap()]);
        assert_refused(&out, path, kind);
    }
}

#[test]
fn kiln_import_of_a_fifo_or_a_device_is_refused_at_once() {
    let env = Env::unprivileged();
    let fifo = env.path("rootfs.fifo");
    mkfifo(&fifo);
    for (path, kind) in [
        (fifo.as_path(), "a FIFO"),
        (Path::new("/dev/zero"), "a character device"),
    ] {
        let out = kiln_bounded(&env, &["import", path.to_str().unwrap(), "-t", "bad"]);
        assert_refused(&out, path, kind);
    }
}

#[test]
fn a_secret_source_that_is_a_fifo_is_refused_at_once() {
    let env = Env::unprivileged();
    let root = common::busybox_rootfs(&env, "base");
    env.kiln_ok(&["import", root.to_str().unwrap(), "-t", "base"]);
    let fifo = env.path("token");
    mkfifo(&fifo);
    env.write(
        "kiln.yaml",
        "image: bad\nfrom: base\nsteps:\n  - run: cat /run/secrets/token\n    secrets: [{ id: token, source: ./token }]\n",
    );
    let out = kiln_bounded(&env, &["build", env.dir.path().to_str().unwrap()]);
    assert_refused(&out, &fifo, "a FIFO");
}
