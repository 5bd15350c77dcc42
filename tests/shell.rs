//! Shell and variable semantics a Dockerfile or CI user expects (issue 11, section 2): a
//! `run:` script is the shell's text, run with `-e` unless a `shell:` says otherwise; args
//! reach the steps that name them as environment variables; steps and containers get
//! Docker's HOME, HOSTNAME and TERM. Every build runs the real binary in the project folder
//! with relative paths, as a user does.

mod common;

use std::process::Output;

use common::{text, Env};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/sh\n";

/// A store with a busybox image `base` (root, and `www` whose home is /var/www) and an
/// empty project folder `proj`.
fn setup() -> Env {
    let env = Env::unprivileged();
    let rootfs = common::busybox_rootfs(&env, "rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nwww:x:33:\n").unwrap();
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "base"]);
    std::fs::create_dir_all(env.path("proj")).unwrap();
    env
}

/// `kiln build ARGS...` started in the project folder, after writing its `kiln.yaml`; the
/// image is `test` unless the spec names one.
fn build(env: &Env, spec: &str, args: &[&str]) -> Output {
    env.write("proj/kiln.yaml", spec);
    let tag: &[&str] = match spec.contains("image:") {
        true => &[],
        false => &["-t", "test"],
    };
    env.command()
        .current_dir(env.path("proj"))
        .arg("build")
        .args(tag)
        .args(args)
        .output()
        .expect("run kiln build")
}

fn build_ok(env: &Env, spec: &str, args: &[&str]) -> String {
    let out = build(env, spec, args);
    assert!(out.status.success(), "kiln build failed\n{}", text(&out));
    stderr(&out)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The progress lines of `kiln build` as (prefix, rest): `("[2/3]", "| output")` for a
/// step's output, `("[2/3]", "run: …  ran in …")` for how it was settled.
fn progress_lines(progress: &str) -> impl Iterator<Item = (&str, &str)> {
    progress
        .lines()
        .filter(|line| line.starts_with('['))
        .filter_map(|line| line.split_once("] "))
}

/// What the steps printed on stdout, in order.
fn step_output(progress: &str) -> Vec<String> {
    progress_lines(progress)
        .filter_map(|(_, rest)| rest.strip_prefix("| ").map(str::to_owned))
        .collect()
}

/// The line reporting how step `n` (1-based) of `total` was settled.
fn step_line(progress: &str, n: usize, total: usize) -> String {
    let prefix = format!("[{n}/{total}");
    progress_lines(progress)
        .filter(|(p, rest)| *p == prefix && !rest.starts_with("| ") && !rest.starts_with("! "))
        .map(|(_, rest)| rest.to_owned())
        .last()
        .unwrap_or_else(|| panic!("no line for step {n} in:\n{progress}"))
}

#[test]
fn a_failing_command_stops_a_run_block() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    let spec = "from: base\nsteps:\n  - run: |\n      echo before\n      false\n      echo after\n";
    let out = build(&env, spec, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let progress = stderr(&out);
    assert_eq!(step_output(&progress), ["before"], "{progress}");
    assert!(progress.contains("kiln.yaml:3:5"), "{progress}");
}

#[test]
fn a_step_shell_without_e_runs_on_after_a_failure() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    let spec = "image: lenient\nfrom: base\nsteps:\n  - run: |\n      echo before\n      false\n      echo after > /after\n    shell: [/bin/sh, -c]\n";
    build_ok(&env, spec, &[]);
    let out = env.kiln_ok(&["run", "--rm", "lenient", "cat", "/after"]);
    assert_eq!(out, "after");
}

#[test]
fn the_spec_and_a_stage_set_the_shell() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    // pipefail makes a failing pipeline fail the step, which plain `sh -e` does not.
    let strict =
        "shell: [/bin/sh, -e, -o, pipefail, -c]\nfrom: base\nsteps:\n  - run: false | true\n";
    let out = build(&env, strict, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("kiln.yaml:4:5"), "{}", text(&out));

    // -x traces each command on stderr (`[a 1/1] ! + echo …`): the spec's shell for stage
    // a, stage b's own, and a step's own over that.
    let layered = r#"shell: [/bin/sh, -x, -c]
stages:
  a:
    from: base
    steps:
      - run: echo from-a
  b:
    from: a
    shell: [/bin/sh, -c]
    steps:
      - run: echo from-b
      - run: echo from-step
        shell: [/bin/sh, -e, -x, -c]
"#;
    let progress = build_ok(&env, layered, &[]);
    assert!(progress.contains("! + echo from-a"), "{progress}");
    assert!(!progress.contains("+ echo from-b"), "{progress}");
    assert!(progress.contains("! + echo from-step"), "{progress}");
}

#[test]
fn run_text_is_expanded_by_the_shell() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    let spec = "from: base\nenv: { GREETING: hi }\nsteps:\n  - run: echo \"${HOME} $$ ${X:-dflt} ${GREETING}\"\n";
    let progress = build_ok(&env, spec, &[]);
    let output = step_output(&progress);
    let words: Vec<&str> = output[0].split(' ').collect();
    assert_eq!(words.len(), 4, "{progress}");
    assert_eq!(words[0], "/root");
    assert!(
        words[1].parse::<u32>().is_ok(),
        "$$ is not a PID: {progress}"
    );
    assert_eq!(words[2..], ["dflt", "hi"]);
}

#[test]
fn args_named_in_run_text_are_in_the_environment_and_the_key() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    let spec = r#"image: args
from: base
args: { VERSION: "1", OTHER: x }
steps:
  - run: echo "o=${OTHER:-none}" > /o
  - run: echo "$${VERSION} \$VERSION" > /escaped
  - run: echo "v=$VERSION" > /v && env | grep ^VERSION= > /v-env
"#;
    let first = build_ok(&env, spec, &[]);
    for n in 1..=3 {
        assert!(step_line(&first, n, 3).contains("ran"), "{first}");
    }
    let cat = ["run", "--rm", "args", "cat", "/v", "/v-env", "/o"];
    assert_eq!(env.kiln_ok(&cat), "v=1\nVERSION=1\no=x");

    let second = build_ok(&env, spec, &["--arg", "VERSION=2"]);
    // The escaped references in step 2 are not uses of VERSION.
    for n in [1, 2] {
        assert!(step_line(&second, n, 3).contains("cached"), "{second}");
    }
    let line = step_line(&second, 3, 3);
    assert!(
        line.contains("ran") && line.contains("(arg VERSION changed)"),
        "{second}"
    );
    assert_eq!(env.kiln_ok(&cat), "v=2\nVERSION=2\no=x");
}

#[test]
fn undefined_variables_in_kiln_fields_are_still_located_errors() {
    let env = setup();
    for (spec, location) in [
        (
            "from: base\nsteps:\n  - copy: ${UNDEFINED}\n    to: /x\n",
            "kiln.yaml:3:11",
        ),
        ("from: \"base:${UNDEFINED}\"\n", "kiln.yaml:1:7"),
    ] {
        let out = build(&env, spec, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let message = format!("{location}: undefined variable \"UNDEFINED\"");
        assert!(stderr(&out).contains(&message), "{}", text(&out));
    }
}

/// Shows the variables Docker sets that the process inherited. sh keeps a HOSTNAME of its
/// own without exporting it, so only `env` tells whether kiln set one.
const DOCKER_VARS: &str = "env | grep -E '^(HOME|HOSTNAME|TERM)=' | sort";

#[test]
fn steps_get_home_and_hostname() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    let spec = format!(
        r#"from: base
steps:
  - run: {DOCKER_VARS}
  - user: www
  - run: {DOCKER_VARS}
  - user: "4321"
  - run: {DOCKER_VARS}
  - user: root
  - env: {{ HOME: /custom }}
  - run: {DOCKER_VARS}
"#
    );
    let progress = build_ok(&env, &spec, &[]);
    let host = "HOSTNAME=kiln-build";
    assert_eq!(
        step_output(&progress),
        [
            ["HOME=/root", host],
            ["HOME=/var/www", host],
            ["HOME=/", host],
            ["HOME=/custom", host]
        ]
        .concat(),
        "{progress}"
    );
}

/// What [`DOCKER_VARS`] shows in `kiln run --rm FLAGS base`, after the hostname.
fn container_vars(env: &Env, flags: &[&str]) -> String {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    let script = format!("hostname; {DOCKER_VARS}");
    args.extend_from_slice(&["base", "sh", "-c", &script]);
    env.kiln_ok(&args).replace('\n', " ")
}

#[test]
fn containers_get_home_and_hostname() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    let root = container_vars(&env, &[]);
    let hostname = root.split(' ').next().unwrap();
    assert_eq!(root, format!("{hostname} HOME=/root HOSTNAME={hostname}"));
    let cases: [(&[&str], &str); 4] = [
        (&[], "box HOME=/root HOSTNAME=box"),
        (&["-u", "www"], "box HOME=/var/www HOSTNAME=box"),
        (&["-u", "4321"], "box HOME=/ HOSTNAME=box"),
        (
            &["-e", "HOME=/x", "-e", "HOSTNAME=h"],
            "box HOME=/x HOSTNAME=h",
        ),
    ];
    for (flags, expected) in cases {
        let flags = [flags, &["--hostname", "box"]].concat();
        assert_eq!(container_vars(&env, &flags), expected, "{flags:?}");
    }
}

/// `kiln run -t` with a terminal as kiln's stdio, as in an interactive shell: what the
/// container printed, through both terminals.
fn run_on_a_terminal(env: &Env, flags: &[&str]) -> String {
    let mut command = env.command();
    command
        .args(["run", "--rm", "-t", "--hostname", "box"])
        .args(flags)
        .args(["base", "sh", "-c", DOCKER_VARS]);
    let (ok, output) = common::on_a_terminal(command, b"");
    assert!(ok, "{output}");
    // Both terminals turn "\n" into "\r\n".
    output.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn a_terminal_sets_term() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    assert_eq!(
        run_on_a_terminal(&env, &[]),
        "HOME=/root HOSTNAME=box TERM=xterm"
    );
    assert_eq!(
        run_on_a_terminal(&env, &["-e", "TERM=vt100"]),
        "HOME=/root HOSTNAME=box TERM=vt100"
    );
}
