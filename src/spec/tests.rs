//! Tests for the spec format: a full spec, every class of error with its exact message and
//! position, the value languages, and robustness against hostile input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::names::{parse_capability, parse_signal};
use super::units::{parse_duration, parse_mode, parse_port, parse_size};
use super::*;

const FILE: &str = "kiln.yaml";

fn ok(text: &str) -> Spec {
    match parse(text, Path::new(FILE), &[]) {
        Ok(spec) => spec,
        Err(err) => panic!("expected a valid spec, got: {err}"),
    }
}

/// The error, as the user sees it.
fn err_with(text: &str, overrides: &[(&str, &str)]) -> String {
    let overrides: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match parse(text, Path::new(FILE), &overrides) {
        Ok(spec) => panic!("expected an error, got {spec:#?}"),
        Err(err) => err.to_string(),
    }
}

fn err(text: &str) -> String {
    err_with(text, &[])
}

fn at(line: usize, column: usize) -> Location {
    Location { line, column }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const FULL: &str = r#"image: hello:${TAG}
from: scratch
args: { GREETING: hello, TAG: latest, VERSION: 1.10 }
contexts: { hostbin: /usr/bin, assets: ./assets }
env: { PATH: /bin, MSG: "${GREETING} world" }
steps:
  - copy: busybox
    from: hostbin
    to: /bin/busybox
    mode: "0755"
  - run: [/bin/busybox, --install, -s, /bin]
  - run: |
      mkdir -p /srv/www
      echo "${GREETING} from kiln, pid $$$$, home $HOME" > /srv/www/index.html
    network: none
    cache: [/var/cache/pkg]
    secrets: [{ id: token, source: ./token.txt, target: /run/secrets/token }]
  - workdir: /srv/www
  - env: { STEP: "v${VERSION}" }
  - copy: [index.html, style.css]
    from: assets
    to: ./
    owner: 1000:1000
  - user: 1000
config:
  entrypoint: [/bin/httpd, -f, -p, "8080"]
  cmd: echo ${STEP}
  env: { MODE: production }
  user: "65534:65534"
  workdir: /srv/www
  expose: [8080/tcp, 53/udp, 9090]
  labels: { org.opencontainers.image.title: hello }
  volumes: [/data]
  stop_signal: TERM
  healthcheck: { test: [CMD, wget, -q, -O-, localhost:8080], interval: 30s, timeout: 1m30s, start_period: 500ms, retries: 3 }
run:
  memory: 64Mi
  cpus: 0.5
  pids: 64
  capabilities: { drop: [ALL], add: [net_bind_service, CAP_CHOWN] }
  read_only: true
  network: host
  hostname: web
  tmpfs: [/tmp]
  mounts: [{ source: ./data, target: /data, readonly: true }]
  env: { LOG: debug }
  user: nobody
"#;

#[test]
fn full_spec_parses_to_the_expected_model() {
    let spec = parse(FULL, Path::new("site/kiln.yaml"), &pairs(&[("TAG", "v2")]))
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = Path::new("site");
    let expected = Spec {
        file: PathBuf::from("site/kiln.yaml"),
        image: Some("hello:v2".into()),
        from: From::Scratch,
        args: BTreeMap::from([
            ("GREETING".into(), "hello".into()),
            ("TAG".into(), "v2".into()),
            ("VERSION".into(), "1.10".into()),
        ]),
        contexts: BTreeMap::from([
            ("assets".into(), dir.join("assets")),
            ("hostbin".into(), PathBuf::from("/usr/bin")),
        ]),
        env: pairs(&[("PATH", "/bin"), ("MSG", "hello world")]),
        steps: vec![
            Step {
                kind: StepKind::Copy(CopyStep {
                    sources: strings(&["busybox"]),
                    from: Some("hostbin".into()),
                    to: "/bin/busybox".into(),
                    mode: Some(0o755),
                    owner: None,
                }),
                location: at(7, 5),
            },
            Step {
                kind: StepKind::Run(RunStep {
                    command: Command::Argv(strings(&["/bin/busybox", "--install", "-s", "/bin"])),
                    network: Network::Host,
                    cache: vec![],
                    secrets: vec![],
                }),
                location: at(11, 5),
            },
            Step {
                kind: StepKind::Run(RunStep {
                    command: Command::Shell(
                        "mkdir -p /srv/www\necho \"hello from kiln, pid $$, home $HOME\" > /srv/www/index.html\n".into(),
                    ),
                    network: Network::None,
                    cache: strings(&["/var/cache/pkg"]),
                    secrets: vec![Secret {
                        id: "token".into(),
                        source: dir.join("token.txt"),
                        target: "/run/secrets/token".into(),
                    }],
                }),
                location: at(12, 5),
            },
            Step {
                kind: StepKind::Workdir("/srv/www".into()),
                location: at(18, 5),
            },
            Step {
                kind: StepKind::Env(pairs(&[("STEP", "v1.10")])),
                location: at(19, 5),
            },
            Step {
                kind: StepKind::Copy(CopyStep {
                    sources: strings(&["index.html", "style.css"]),
                    from: Some("assets".into()),
                    to: "./".into(),
                    mode: None,
                    owner: Some("1000:1000".into()),
                }),
                location: at(20, 5),
            },
            Step {
                kind: StepKind::User("1000".into()),
                location: at(24, 5),
            },
        ],
        config: Config {
            entrypoint: Some(strings(&["/bin/httpd", "-f", "-p", "8080"])),
            cmd: Some(strings(&["/bin/sh", "-c", "echo v1.10"])),
            env: pairs(&[("MODE", "production")]),
            user: Some("65534:65534".into()),
            workdir: Some("/srv/www".into()),
            expose: strings(&["8080/tcp", "53/udp", "9090/tcp"]),
            labels: BTreeMap::from([("org.opencontainers.image.title".into(), "hello".into())]),
            volumes: strings(&["/data"]),
            stop_signal: Some("SIGTERM".into()),
            healthcheck: Some(Healthcheck {
                test: strings(&["CMD", "wget", "-q", "-O-", "localhost:8080"]),
                interval_ns: Some(30_000_000_000),
                timeout_ns: Some(90_000_000_000),
                start_period_ns: Some(500_000_000),
                retries: Some(3),
            }),
        },
        run: RunDefaults {
            memory: Some(64 << 20),
            cpus: Some(0.5),
            pids: Some(64),
            cap_add: strings(&["NET_BIND_SERVICE", "CHOWN"]),
            cap_drop: strings(&["ALL"]),
            read_only: true,
            network: Some(Network::Host),
            hostname: Some("web".into()),
            tmpfs: strings(&["/tmp"]),
            mounts: vec![Mount {
                source: dir.join("data"),
                target: "/data".into(),
                readonly: true,
            }],
            env: pairs(&[("LOG", "debug")]),
            user: Some("nobody".into()),
        },
    };
    assert_eq!(spec, expected);
}

#[test]
fn minimal_spec_has_empty_defaults() {
    let spec = ok("from: alpine:3.20\n");
    assert_eq!(spec.from, From::Image("alpine:3.20".into()));
    assert_eq!(spec.image, None);
    assert!(spec.steps.is_empty() && spec.env.is_empty() && spec.args.is_empty());
    assert_eq!(spec.config, Config::default());
    assert_eq!(spec.run, RunDefaults::default());
    // Empty sections are the same as absent ones.
    assert_eq!(
        ok("from: scratch\nsteps:\nconfig:\nrun:\nenv:\n").steps,
        vec![]
    );
}

#[test]
fn from_forms() {
    let from = |text: &str| {
        parse(
            &format!("from: \"{text}\"\n"),
            Path::new("a/kiln.yaml"),
            &[],
        )
        .map(|s| s.from)
        .map_err(|e| e.to_string())
    };
    assert_eq!(from("scratch"), Ok(From::Scratch));
    assert_eq!(
        from("oci:./layout:v1"),
        Ok(From::OciLayout {
            path: "a/layout".into(),
            tag: Some("v1".into())
        })
    );
    assert_eq!(
        from("oci:/srv/x:y/layout"),
        Ok(From::OciLayout {
            path: "/srv/x:y/layout".into(),
            tag: None
        })
    );
    assert_eq!(
        from("rootfs:root.tar.zst"),
        Ok(From::Rootfs("a/root.tar.zst".into()))
    );
    assert_eq!(
        from("docker.io/library/alpine:3.20"),
        Ok(From::Image("docker.io/library/alpine:3.20".into()))
    );
    assert_eq!(
        from("oci:./x:"),
        Err("a/kiln.yaml:1:7: \"from: oci:./x:\" has an empty tag".into())
    );
    assert_eq!(
        from("rootfs:"),
        Err("a/kiln.yaml:1:7: \"from: rootfs:\" has an empty path".into())
    );
}

#[test]
fn unknown_top_level_key_suggests_the_nearest() {
    assert_eq!(
        err("from: scratch\nstepz: []\n"),
        "kiln.yaml:2:1: unknown top-level key \"stepz\" (did you mean \"steps\"?)"
    );
    assert_eq!(
        err("from: scratch\nread_only: true\n"),
        "kiln.yaml:2:1: unknown top-level key \"read_only\" (\"read_only\" belongs in run:)"
    );
}

#[test]
fn unknown_step_key_suggests_the_nearest() {
    assert_eq!(
        err("from: scratch\nsteps:\n  - run: make\n  - rnu: make test\n"),
        "kiln.yaml:4:5: unknown step key \"rnu\" (did you mean \"run\"?)"
    );
    assert_eq!(
        err("from: scratch\nconfig:\n  entrypint: [sh]\n"),
        "kiln.yaml:3:3: unknown config key \"entrypint\" (did you mean \"entrypoint\"?)"
    );
}

#[test]
fn duplicate_key_points_at_the_second_one() {
    assert_eq!(
        err("from: scratch\nsteps:\n  - run: a\n    network: none\n    run: b\n"),
        "kiln.yaml:5:5: duplicate key \"run\" (each key may appear only once in a mapping)"
    );
    assert_eq!(
        err("from: scratch\nfrom: alpine\n"),
        "kiln.yaml:2:1: duplicate key \"from\" (each key may appear only once in a mapping)"
    );
}

#[test]
fn modes() {
    let copy =
        |mode: &str| format!("from: scratch\nsteps:\n  - copy: a\n    to: /a\n    mode: {mode}\n");
    assert_eq!(
        err(&copy("755")),
        "kiln.yaml:5:11: write the mode as a quoted octal string, e.g. \"0755\" (an unquoted 755 is a decimal number in YAML)"
    );
    assert_eq!(
        err(&copy("\"0855\"")),
        "kiln.yaml:5:11: invalid mode \"0855\" (a mode is up to four octal digits, e.g. \"0755\")"
    );
    assert_eq!(
        err(&copy("\"17777\"")),
        "kiln.yaml:5:11: mode \"17777\" is out of range (a mode is up to four octal digits, e.g. \"0755\")"
    );
    let mode = |m: &str| match &ok(&copy(m)).steps[0].kind {
        StepKind::Copy(c) => c.mode,
        other => panic!("{other:?}"),
    };
    // A leading zero or 0o makes the base plain; so does a single digit.
    assert_eq!(mode("0755"), Some(0o755));
    assert_eq!(mode("0o644"), Some(0o644));
    assert_eq!(mode("\"4755\""), Some(0o4755));
    assert_eq!(mode("0"), Some(0));
    assert_eq!(parse_mode("0o7777"), Ok(0o7777));
    assert!(parse_mode("").is_err() && parse_mode("7a").is_err());
}

#[test]
fn sizes() {
    assert_eq!(
        err("from: scratch\nrun:\n  memory: 64X\n"),
        "kiln.yaml:3:11: invalid size \"64X\": unknown unit \"X\" (valid units are b, k, m, g and t, each a power of 1024: 64m = 64Mi = 64MiB = 64mb)"
    );
    for good in [
        ("64m", 64 << 20),
        ("64Mi", 64 << 20),
        ("64MiB", 64 << 20),
        ("64mb", 64 << 20),
        ("1g", 1 << 30),
        ("1.5g", 3 << 29),
        ("512", 512),
        ("2k", 2048),
        ("1t", 1 << 40),
        ("10b", 10),
    ] {
        assert_eq!(parse_size(good.0), Ok(good.1), "{}", good.0);
    }
    for bad in [
        "-1",
        "1.5.3m",
        "",
        "m",
        "0",
        "0m",
        ".m",
        "99999999999t",
        "64 X",
    ] {
        assert!(parse_size(bad).is_err(), "{bad} should be rejected");
    }
    assert_eq!(
        ok("from: scratch\nrun: { memory: 1048576 }\n").run.memory,
        Some(1 << 20)
    );
    assert_eq!(
        err("from: scratch\nrun: { memory: -1 }\n"),
        "kiln.yaml:2:16: invalid size \"-1\" (a size is more than 0 bytes, e.g. 64m)"
    );
}

#[test]
fn capabilities() {
    assert_eq!(
        err("from: scratch\nrun:\n  capabilities: { add: [NET_ADMIN, CAP_NET_BIND] }\n"),
        "kiln.yaml:3:36: unknown capability \"CAP_NET_BIND\" (did you mean \"NET_BIND_SERVICE\"?)"
    );
    assert_eq!(parse_capability("cap_sys_admin"), Ok("SYS_ADMIN".into()));
    assert_eq!(parse_capability("all"), Ok("ALL".into()));
    assert_eq!(
        parse_capability("CAP_CHECKPOINT_RESTORE"),
        Ok("CHECKPOINT_RESTORE".into())
    );
    assert!(parse_capability("CAP_").is_err());
}

#[test]
fn undefined_variable_suggests_the_nearest() {
    assert_eq!(
        err("args: { GREETING: hi }\nfrom: scratch\nsteps:\n  - run: echo ${GRETING}\n"),
        "kiln.yaml:4:10: undefined variable \"GRETING\" (did you mean \"GREETING\"?)"
    );
    assert_eq!(
        err("from: scratch\nsteps:\n  - run: echo ${HOME}\n"),
        "kiln.yaml:3:10: undefined variable \"HOME\" (declare it under args: or env:, or write $${HOME} to keep it literal)"
    );
    assert_eq!(
        err("from: scratch\nconfig: { cmd: \"echo ${A\" }\n"),
        "kiln.yaml:2:16: unterminated \"${\" in string (close it with \"}\", or write \"$${\" for a literal \"${\")"
    );
    assert_eq!(
        err("from: scratch\nimage: \"x:${A:-1}\"\n"),
        "kiln.yaml:2:8: invalid variable reference \"${A:-1}\" (names are letters, digits and _, e.g. ${VERSION}; no defaults or operators)"
    );
}

#[test]
fn variables_follow_file_order() {
    let spec = ok(r#"args: { V: "1" }
env: { A: "${V}", B: "${A}-b", V: "2" }
from: "img:${V}"
steps:
  - run: echo ${B} ${V} $${V} $V $$ $
  - env: { C: "${V}c" }
  - run: echo ${C}
config: { env: { X: "${C}", Y: "${X}" }, cmd: [echo, "${C}"] }
"#);
    assert_eq!(spec.env, pairs(&[("A", "1"), ("B", "1-b"), ("V", "2")]));
    assert_eq!(spec.from, From::Image("img:2".into()));
    let commands: Vec<_> = spec
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Run(r) => Some(r.command.argv()[2].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(commands, strings(&["echo 1-b 2 ${V} $V $ $", "echo 2c"]));
    assert_eq!(spec.config.env, pairs(&[("X", "2c"), ("Y", "2c")]));
    assert_eq!(spec.config.cmd, Some(strings(&["echo", "2c"])));
    // config.env entries do not leak into the rest of config.
    assert!(
        err("from: scratch\nconfig: { env: { X: a }, user: \"${X}\" }\n")
            .contains("undefined variable \"X\"")
    );
}

#[test]
fn two_kind_keys_or_none() {
    assert_eq!(
        err("from: scratch\nsteps:\n  - run: make\n    copy: src/\n"),
        "kiln.yaml:4:5: a step needs exactly one of run, copy, env, workdir, user (this step has both \"run\" and \"copy\"; make them two steps)"
    );
    assert_eq!(
        err("from: scratch\nsteps:\n  - to: /x\n"),
        "kiln.yaml:3:5: a step needs exactly one of run, copy, env, workdir, user"
    );
}

#[test]
fn modifier_on_the_wrong_kind() {
    assert_eq!(
        err("from: scratch\nsteps:\n  - run: make\n    to: /x\n"),
        "kiln.yaml:4:5: \"to\" is not allowed on a run step (\"to\" belongs to copy steps)"
    );
    assert_eq!(
        err("from: scratch\nsteps:\n  - workdir: /x\n    cache: [/c]\n"),
        "kiln.yaml:4:5: \"cache\" is not allowed on a workdir step (\"cache\" belongs to run steps)"
    );
}

#[test]
fn copy_from_unknown_context() {
    assert_eq!(
        err("from: scratch\ncontexts: { hostbin: /usr/bin }\nsteps:\n  - copy: x\n    from: hostbn\n    to: /x\n"),
        "kiln.yaml:5:11: unknown build context \"hostbn\" (did you mean \"hostbin\"?)"
    );
    assert_eq!(
        err("from: scratch\nsteps:\n  - copy: x\n    from: tools\n    to: /x\n"),
        "kiln.yaml:4:11: unknown build context \"tools\" (declare it under contexts:, e.g. tools: ./dir)"
    );
    assert_eq!(
        err("from: scratch\nsteps:\n  - copy: x\n"),
        "kiln.yaml:3:5: copy needs \"to\" (e.g. to: /usr/local/bin/)"
    );
}

#[test]
fn build_args_and_overrides() {
    let with = |o: &[(&str, &str)]| {
        parse(
            "args: { A: x, B: }\nfrom: scratch\n",
            Path::new(FILE),
            &pairs(o),
        )
    };
    let error = with(&[("NOPE", "1")]).unwrap_err();
    assert_eq!(error.location, None);
    assert_eq!(
        error.to_string(),
        "kiln.yaml: unknown build arg \"NOPE\" (declare it under args:)"
    );
    assert_eq!(
        with(&[("AA", "1")]).unwrap_err().to_string(),
        "kiln.yaml: unknown build arg \"AA\" (did you mean \"A\"? otherwise declare it under args:)"
    );
    assert_eq!(
        with(&[]).unwrap_err().to_string(),
        "kiln.yaml:1:15: build arg \"B\" has no value (give it a default here or pass --arg B=VALUE)"
    );
    let args = with(&[("B", "1"), ("A", "y"), ("B", "2")]).unwrap().args;
    assert_eq!(
        args,
        BTreeMap::from([("A".into(), "y".into()), ("B".into(), "2".into())])
    );
}

#[test]
fn yaml_syntax_errors_have_positions() {
    assert_eq!(
        err("from: scratch\nsteps: [\n"),
        "kiln.yaml:2:8: invalid YAML: unclosed bracket '['"
    );
    assert_eq!(
        err("from: scratch\n  steps: []\n"),
        "kiln.yaml:2:8: invalid YAML: mapping values are not allowed in this context"
    );
    assert_eq!(
        err("from: \"scratch\n"),
        "kiln.yaml:1:7: invalid YAML: unclosed quote"
    );
    assert_eq!(
        err("from: scratch\n---\nfrom: x\n"),
        "kiln.yaml:2:1: a spec holds a single YAML document (remove the `---` separator)"
    );
}

#[test]
fn other_errors() {
    let cases = [
        ("stages: {}\n", "kiln.yaml:1:1: multi-stage specs (stages:) are not supported yet"),
        ("image: x\n", "kiln.yaml:1:1: missing required key \"from\" (e.g. from: scratch, from: alpine:3.20, from: oci:./layout, from: rootfs:./root.tar)"),
        ("", "kiln.yaml:1:1: the spec is empty (start with `from: scratch` or `from: IMAGE`)"),
        ("- from: x\n", "kiln.yaml:1:1: a spec must be a mapping with keys such as from:, found a list"),
        ("from: scratch\nsteps: make\n", "kiln.yaml:2:8: steps must be a list, found a string"),
        ("from: scratch\nsteps:\n  - make\n", "kiln.yaml:3:5: a step must be a mapping, found a string (e.g. `- run: make` or `- copy: src/`)"),
        ("from: scratch\nsteps:\n  - copy: [a, ../b]\n    to: /\n", "kiln.yaml:3:15: copy source \"../b\" leaves the build context (sources are relative to the context folder and cannot use \"..\" or start with /)"),
        ("from: scratch\nsteps:\n  - workdir: srv\n", "kiln.yaml:3:14: \"srv\" is not an absolute path (paths inside the image start with /)"),
        ("from: scratch\nsteps:\n  - run: x\n    cache: [/a/../b]\n", "kiln.yaml:4:13: path \"/a/../b\" contains \"..\" (write the path without \"..\")"),
        ("from: scratch\nsteps:\n  - run: x\n    network: bridge\n", "kiln.yaml:4:14: invalid network \"bridge\" (use host or none)"),
        ("from: scratch\nsteps:\n  - user: root:wheel:x\n", "kiln.yaml:3:11: invalid user \"root:wheel:x\" (write NAME, UID, NAME:GROUP or UID:GID, e.g. \"65534:65534\")"),
        ("from: scratch\nenv:\n  A:\n", "kiln.yaml:3:3: A has no value (write A: \"\" for an empty value)"),
        ("from: scratch\nrun: { read_only: yes }\n", "kiln.yaml:2:19: read_only must be true or false, found a string"),
        ("from: scratch\nrun: { cpus: 0 }\n", "kiln.yaml:2:14: invalid cpus 0 (a number of CPUs greater than 0 and at most 1024, e.g. 0.5)"),
        ("from: scratch\nrun: { pids: 0 }\n", "kiln.yaml:2:14: pids must be at least 1"),
        ("from: scratch\nrun: { hostname: a_b }\n", "kiln.yaml:2:18: invalid hostname \"a_b\" (letters, digits, '-' and '.', at most 64 characters)"),
        ("from: scratch\nrun: { mounts: [{ target: /d }] }\n", "kiln.yaml:2:17: a mount needs \"source\" (e.g. { source: ./data, target: /data, readonly: true })"),
        ("from: scratch\nconfig: { expose: [8080, 0] }\n", "kiln.yaml:2:26: invalid port \"0\" (a port is a number from 1 to 65535, optionally with /tcp, /udp or /sctp)"),
        ("from: scratch\nconfig: { expose: [53/foo] }\n", "kiln.yaml:2:20: invalid protocol \"foo\" in port \"53/foo\" (use tcp, udp or sctp, e.g. 53/udp)"),
        ("from: scratch\nconfig: { expose: [80, 80/tcp] }\n", "kiln.yaml:2:24: port 80/tcp is listed twice"),
        ("from: scratch\nconfig: { stop_signal: SIGTREM }\n", "kiln.yaml:2:24: unknown signal \"SIGTREM\" (did you mean \"SIGTERM\"?)"),
        ("from: scratch\nconfig: { healthcheck: { test: [CMD] } }\n", "kiln.yaml:2:32: invalid healthcheck test (write [CMD, program, args...], [CMD-SHELL, \"script\"], [NONE] or a script string)"),
        ("from: scratch\nconfig: { healthcheck: { test: x, interval: 30 } }\n", "kiln.yaml:2:45: interval needs a unit (e.g. 30s)"),
        ("a: !foo bar\nfrom: scratch\n", "kiln.yaml:1:9: invalid YAML: unsupported tag `!foo`"),
    ];
    for (text, expected) in cases {
        assert_eq!(err(text), expected, "for spec:\n{text}");
    }
}

#[test]
fn scalars_keep_their_spelling() {
    let spec = ok("from: scratch\nenv: { V: 1.10, N: no, T: true, Z: 0755, H: 0x1F }\nconfig: { labels: { port: 8080 } }\n");
    assert_eq!(
        spec.env,
        pairs(&[
            ("V", "1.10"),
            ("N", "no"),
            ("T", "true"),
            ("Z", "0755"),
            ("H", "0x1F")
        ])
    );
    assert_eq!(spec.config.labels["port"], "8080");
}

#[test]
fn config_shell_forms() {
    let spec = ok("from: scratch\nconfig:\n  entrypoint: exec app\n  healthcheck: { test: curl -f localhost }\n");
    assert_eq!(
        spec.config.entrypoint,
        Some(strings(&["/bin/sh", "-c", "exec app"]))
    );
    let health = spec
        .config
        .healthcheck
        .unwrap_or_else(|| panic!("no healthcheck"));
    assert_eq!(health.test, strings(&["CMD-SHELL", "curl -f localhost"]));
    assert_eq!(health.interval_ns, None);
}

#[test]
fn value_languages() {
    assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
    assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
    assert_eq!(parse_duration("2h"), Ok(7_200_000_000_000));
    for bad in ["30", "s", "", "1x", "-1s", "500us"] {
        assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
    }
    assert_eq!(parse_signal("15"), Ok("SIGTERM".into()));
    assert_eq!(parse_signal("sigkill"), Ok("SIGKILL".into()));
    assert_eq!(parse_signal("RTMIN+3"), Ok("SIGRTMIN+3".into()));
    assert_eq!(parse_signal("SIGRTMAX"), Ok("SIGRTMIN+30".into()));
    for bad in ["0", "32", "65", "SIGFOO", "RTMIN+31", ""] {
        assert!(parse_signal(bad).is_err(), "{bad} should be rejected");
    }
    assert_eq!(parse_port("53/UDP"), Ok("53/udp".into()));
    for bad in ["65536", "-1", "80-90", "+80", "/tcp", "80/"] {
        assert!(parse_port(bad).is_err(), "{bad} should be rejected");
    }
}

#[test]
fn load_resolves_paths_against_the_spec_folder() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("kiln.yaml");
    std::fs::write(
        &path,
        "from: rootfs:./root\ncontexts: { c: ctx, abs: /opt }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let spec = load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.from, From::Rootfs(dir.path().join("root")));
    assert_eq!(spec.contexts["c"], dir.path().join("ctx"));
    assert_eq!(spec.contexts["abs"], PathBuf::from("/opt"));
    assert_eq!(spec.file, path);
}

#[test]
fn load_rejects_unreadable_oversized_and_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = load(&dir.path().join("nope.yaml"), &[]).unwrap_err();
    assert!(
        missing.message.starts_with("cannot read the spec:"),
        "{missing}"
    );
    assert_eq!(missing.location, None);

    let big = dir.path().join("big.yaml");
    std::fs::write(&big, format!("from: scratch\n#{}\n", "x".repeat(2 << 20)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        load(&big, &[]).unwrap_err().message,
        "the spec is larger than 1024 KiB"
    );

    let latin1 = dir.path().join("latin1.yaml");
    std::fs::write(&latin1, b"from: scratch\nenv: { A: caf\xe9 }\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let error = load(&latin1, &[]).unwrap_err();
    assert_eq!(error.location, Some(at(2, 14)));
    assert_eq!(error.message, "the spec is not valid UTF-8");
}

/// Hostile or random input must produce an error, never a panic, a hang or a stack overflow.
#[test]
fn junk_never_panics() {
    let deep_flow = "[".repeat(100_000);
    let deep_block: String = (0..200)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect();
    let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let nasty = [
        "",
        "[",
        "]",
        "{",
        ":",
        "- -",
        "&a *a",
        "x: &a [*a]",
        "? [a]\n: b",
        "from: !!binary AA==",
        "\u{feff}from: scratch\nsteps: [{run: x}]\n",
        "from: scratch\nsteps: [{run: [[x]]}]\n",
        "from: scratch\nsteps: [{copy: {a: b}, to: /x}]\n",
        "from: scratch\n<<: {x: 1}\n",
        "from: scratch\nenv: {[a]: b}\n",
        "from: scratch\nrun: {memory: 1e999}\n",
        "from: scratch\nrun: {cpus: .nan}\n",
        "from: scratch\nrun: {pids: 99999999999999999999999}\n",
        "from: scratch\nsteps: [{run: \"${\"}]\n",
        "from: \"\\0\"\n",
        &deep_flow,
        &deep_block,
        &laughs,
    ];
    for text in nasty {
        let started = std::time::Instant::now();
        let _ = parse(text, Path::new(FILE), &[]);
        assert!(
            started.elapsed().as_secs() < 10,
            "too slow on {:?}",
            &text[..text.len().min(40)]
        );
    }
    assert!(err(&deep_flow).contains("nested too deeply"));
    assert!(err(&laughs).contains("too large"), "{}", err(&laughs));

    // A little deterministic fuzzing from YAML's own punctuation and spec words.
    let pieces = [
        "from", ": ", "scratch", "\n", "  ", "- ", "[", "]", "{", "}", ",", "run", "copy", "${A}",
        "$$", "&a ", "*a", "!!str ", "\"", "'", "#", "|", ">", "? ", "steps", "0755", "64m", "-1",
        "\t", "é", "~", "to", "mode", "args", "env", "A",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..3000 {
        let mut text = String::new();
        for _ in 0..(state % 40) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(pieces[(state % pieces.len() as u64) as usize]);
        }
        let _ = parse(&text, Path::new(FILE), &pairs(&[("A", "1")]));
    }
}

#[test]
fn the_shipped_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello/kiln.yaml");
    let spec = load(&path, &pairs(&[("GREETING", "hi")])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.image.as_deref(), Some("hello:latest"));
    assert_eq!(spec.run.cap_drop, strings(&["ALL"]));
    assert!(
        matches!(&spec.steps[2].kind, StepKind::Run(r) if r.command.argv()[2].contains("hi from kiln"))
    );
}
