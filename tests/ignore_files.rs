//! Ignore files as a project written for Docker or podman has them: `.dockerignore` and
//! `.containerignore` are honoured with Docker's rules when there is no `.kilnignore`, the
//! first of `.kilnignore`, `.containerignore`, `.dockerignore` is the only one used, and the
//! build's first line says which. kiln runs in the project folder, with relative paths.

mod common;

use std::process::Output;

use common::{text, Env};

const SPEC: &str = "image: ignoring\nfrom: base\nsteps:\n  - copy: .\n    to: /app/\n";

/// A store with a busybox image `base` and a project folder with files to leave out.
fn setup() -> Env {
    let env = Env::new();
    let root = common::busybox_rootfs(&env, "rootfs");
    env.kiln_ok(&["import", root.to_str().unwrap(), "-t", "base"]);
    env.write("project/kiln.yaml", SPEC);
    for file in [
        "keep.txt",
        "secret.txt",
        "sub/secret.txt",
        "docs/README.md",
        "docs/notes.md",
    ] {
        env.write(&format!("project/{file}"), file);
    }
    env
}

/// `kiln build` in the project folder, as a user types it.
fn build(env: &Env) -> Output {
    let out = env
        .command()
        .current_dir(env.path("project"))
        .arg("build")
        .output()
        .expect("run kiln");
    assert!(out.status.success(), "{}", text(&out));
    out
}

fn first_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.lines().next().unwrap_or_default().to_owned()
}

/// The files under /app in the built image, sorted.
fn copied(env: &Env) -> Vec<String> {
    let listed = env.kiln_ok(&["run", "--rm", "ignoring", "find", "/app", "-type", "f"]);
    let mut files: Vec<String> = listed.lines().map(str::to_owned).collect();
    files.sort();
    files
}

#[test]
fn a_dockerignore_alone_is_used_with_dockers_rules_and_named_first() {
    common::require_root!("namespaces, overlayfs");
    // Failed before: .dockerignore was not read, so every file was copied.
    let env = setup();
    env.write(
        "project/.dockerignore",
        "secret.txt\ndocs\n!docs/README.md\n",
    );
    let out = build(&env);
    assert_eq!(
        first_line(&out),
        "==> using .dockerignore (Docker's .dockerignore syntax) for the build context",
        "{}",
        text(&out)
    );
    assert_eq!(
        copied(&env),
        [
            "/app/.dockerignore",
            "/app/docs/README.md", // an exception reaches into an excluded directory
            "/app/keep.txt",
            "/app/kiln.yaml",
            "/app/sub/secret.txt", // Docker's patterns are anchored at the context root
        ]
    );
}

#[test]
fn a_kilnignore_beside_a_dockerignore_wins_and_containerignore_comes_next() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    env.write("project/.dockerignore", "secret.txt\n");
    env.write("project/.kilnignore", "secret.txt\ndocs/\n");
    let out = build(&env);
    assert_eq!(
        first_line(&out),
        "==> using .kilnignore (gitignore syntax) for the build context",
        "{}",
        text(&out)
    );
    // gitignore syntax: `secret.txt` matches at any depth.
    assert_eq!(
        copied(&env),
        [
            "/app/.dockerignore",
            "/app/.kilnignore",
            "/app/keep.txt",
            "/app/kiln.yaml"
        ]
    );

    std::fs::remove_file(env.path("project/.kilnignore")).unwrap();
    env.write("project/.containerignore", "keep.txt\n");
    let out = build(&env);
    assert_eq!(
        first_line(&out),
        "==> using .containerignore (Docker's .dockerignore syntax) for the build context"
    );
    let files = copied(&env);
    assert!(!files.contains(&"/app/keep.txt".to_string()), "{files:?}");
    assert!(files.contains(&"/app/secret.txt".to_string()), "{files:?}");
}
