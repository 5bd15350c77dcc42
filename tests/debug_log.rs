//! The debug channel: the library's `tracing` events appear on stderr with `--verbose` (or
//! `KILN_LOG`), and nothing extra is printed without them. Root-free: `kiln build --plan`
//! on a one-step spec runs nothing.

mod common;

use std::process::Output;

use common::{text, Env};

fn plan(env: &Env, flags: &[&str], kiln_log: Option<&str>) -> Output {
    let spec = env.write(
        "proj/kiln.yaml",
        "image: debug-log\nfrom: scratch\nsteps:\n  - run: echo hi\n",
    );
    let mut cmd = env.command();
    cmd.args(flags)
        .args(["build", "--plan", "-f"])
        .arg(&spec)
        .arg(env.path("proj"));
    if let Some(filter) = kiln_log {
        cmd.env("KILN_LOG", filter);
    }
    let out = cmd.output().expect("run kiln");
    assert!(out.status.success(), "{}", text(&out));
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn verbose_shows_debug_events_on_stderr() {
    let env = Env::unprivileged();
    let out = plan(&env, &["--verbose"], None);
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.contains("DEBUG") && l.contains("store opened")),
        "{err}"
    );
    // The cache decision names the step's key.
    assert!(
        err.lines()
            .any(|l| l.contains("DEBUG") && l.contains("cache miss") && l.contains("key=sha256:")),
        "{err}"
    );
    // The plan itself is unchanged, and nothing goes to stdout.
    assert!(err.contains("would run (not in the cache)"), "{err}");
    assert!(out.stdout.is_empty(), "{}", text(&out));
}

#[test]
fn without_the_flag_nothing_extra_is_printed() {
    let env = Env::unprivileged();
    let quiet = stderr(&plan(&env, &[], None));
    assert!(!quiet.contains("DEBUG"), "{quiet}");
    assert!(!quiet.contains("store opened"), "{quiet}");
    assert_eq!(
        quiet.trim(),
        "[1/1] run: echo hi  would run (not in the cache)"
    );
}

#[test]
fn kiln_log_sets_the_filter() {
    let env = Env::unprivileged();
    // Only the store's events: the build's are filtered out.
    let err = stderr(&plan(&env, &[], Some("kiln_store=debug")));
    assert!(err.contains("store opened"), "{err}");
    assert!(!err.contains("step cache key"), "{err}");
    // A filter that does not parse is an error with a hint, before anything is done.
    let out = env
        .command()
        .env("KILN_LOG", "kiln=notalevel")
        .arg("images")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: KILN_LOG=\"kiln=notalevel\": "),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
}
