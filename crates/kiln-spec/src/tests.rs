//! Tests for the spec format: a full spec, every class of error with its exact message and
//! position, the value languages, and robustness against hostile input.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::names::{parse_capability, parse_signal};
use super::units::{self, parse_duration, parse_mode, parse_port, parse_size};
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

/// Every problem reported, as the user sees each.
fn errs(text: &str) -> Vec<String> {
    match parse(text, Path::new(FILE), &[]) {
        Ok(spec) => panic!("expected errors, got {spec:#?}"),
        Err(err) => err.all().map(ToString::to_string).collect(),
    }
}

fn at(line: usize, column: usize) -> Location {
    Location { line, column }
}

fn names(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A string `run:` as the parser keeps it: verbatim, with the default shell.
fn script(text: &str) -> Command {
    Command::Shell {
        script: text.into(),
        shell: strings(&DEFAULT_SHELL),
    }
}

/// The argv of run step `index` of the final stage.
fn run_argv(spec: &Spec, index: usize) -> Vec<String> {
    match &spec.final_stage().steps[index].kind {
        StepKind::Run(run) => run.command.argv(),
        other => panic!("{other:?}"),
    }
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
      echo "${GREETING} from kiln, pid $$, home $HOME, ${UNDECLARED:-x}" > /srv/www/index.html
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
  env_file: [./app.env, /etc/app.env]
  extra_hosts: ["db:10.0.0.5", "v6:[2001:db8::5]"]
  ulimits: { nofile: { soft: 1024, hard: 4096 }, nproc: 512, core: "0:unlimited" }
  shm_size: 128m
  sysctls: { kernel.shmmax: 1073741824, net.ipv4.ip_forward: 1 }
  devices: [/dev/fuse, "/dev/loop3:/dev/xvda:r"]
  init: false
"#;

#[test]
fn full_spec_parses_to_the_expected_model() {
    let spec = parse(FULL, Path::new("site/kiln.yaml"), &pairs(&[("TAG", "v2")]))
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = cwd().join("site");
    let expected = Spec {
        file: PathBuf::from("site/kiln.yaml"),
        image: Some("hello:v2".into()),
        image_location: Some(at(1, 8)),
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
        stages: vec![Stage {
            name: "main".into(),
            from: From::Scratch,
            from_args_used: names(&[]),
            env: pairs(&[("PATH", "/bin"), ("MSG", "hello world")]),
            env_args_used: names(&["GREETING"]),
            location: at(2, 1),
            from_location: at(2, 7),
            steps: vec![
                Step {
                    kind: StepKind::Copy(CopyStep {
                        sources: strings(&["busybox"]),
                        from: CopyFrom::Context("hostbin".into()),
                        to: "/bin/busybox".into(),
                        mode: Some(0o755),
                        owner: None,
                    }),
                    args_used: names(&[]),
                    location: at(7, 5),
                },
                Step {
                    kind: StepKind::Run(RunStep {
                        command: Command::Argv(strings(&["/bin/busybox", "--install", "-s", "/bin"])),
                        network: Network::Bridge,
                        privileges: Default::default(),
                        limits: Default::default(),
                        cache: vec![],
                        secrets: vec![],
                    }),
                    args_used: names(&[]),
                    location: at(11, 5),
                },
                Step {
                    kind: StepKind::Run(RunStep {
                        // The shell's text: kiln substitutes nothing in it.
                        command: script(
                            "mkdir -p /srv/www\necho \"${GREETING} from kiln, pid $$, home $HOME, ${UNDECLARED:-x}\" > /srv/www/index.html\n",
                        ),
                        network: Network::None,
                        privileges: Default::default(),
                        limits: Default::default(),
                        cache: strings(&["/var/cache/pkg"]),
                        secrets: vec![Secret {
                            id: "token".into(),
                            source: SecretSource::File(dir.join("token.txt")),
                            target: "/run/secrets/token".into(),
                            location: at(17, 15),
                    }],
                }),
                args_used: names(&["GREETING"]),
                location: at(12, 5),
            },
            Step {
                kind: StepKind::Workdir("/srv/www".into()),
                args_used: names(&[]),
                location: at(18, 5),
            },
            Step {
                kind: StepKind::Env(pairs(&[("STEP", "v1.10")])),
                args_used: names(&["VERSION"]),
                location: at(19, 5),
            },
            Step {
                kind: StepKind::Copy(CopyStep {
                    sources: strings(&["index.html", "style.css"]),
                    from: CopyFrom::Context("assets".into()),
                    to: "./".into(),
                    mode: None,
                    owner: Some("1000:1000".into()),
                }),
                args_used: names(&[]),
                location: at(20, 5),
            },
            Step {
                kind: StepKind::User("1000".into()),
                args_used: names(&[]),
                location: at(24, 5),
            },
        ],
        }],
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
            privileged: false,
            limits: Limits {
                memory: Some(64 << 20),
                cpus: Some(0.5),
                pids: Some(64),
                ..Limits::default()
            },
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
            env_file: vec![dir.join("app.env"), PathBuf::from("/etc/app.env")],
            extra_hosts: vec![
                ("db".into(), "10.0.0.5".parse().unwrap()),
                ("v6".into(), "2001:db8::5".parse().unwrap()),
            ],
            ulimits: vec![
                Ulimit {
                    name: "nofile".into(),
                    soft: 1024,
                    hard: 4096,
                },
                Ulimit {
                    name: "nproc".into(),
                    soft: 512,
                    hard: 512,
                },
                Ulimit {
                    name: "core".into(),
                    soft: 0,
                    hard: UNLIMITED,
                },
            ],
            shm_size: Some(128 << 20),
            sysctls: pairs(&[
                ("kernel.shmmax", "1073741824"),
                ("net.ipv4.ip_forward", "1"),
            ]),
            devices: vec![
                Device {
                    host: "/dev/fuse".into(),
                    container: "/dev/fuse".into(),
                    access: "rwm".into(),
                },
                Device {
                    host: "/dev/loop3".into(),
                    container: "/dev/xvda".into(),
                    access: "r".into(),
                },
            ],
            init: Some(false),
            restart: None,
            ..RunDefaults::default()
        },
    };
    assert_eq!(spec, expected);
}

#[test]
fn minimal_spec_has_empty_defaults() {
    let spec = ok("from: alpine:3.20\n");
    assert_eq!(spec.stages.len(), 1);
    let stage = spec.final_stage();
    assert_eq!(stage.name, "main");
    assert_eq!(stage.from, From::Image("alpine:3.20".into()));
    assert_eq!(spec.image, None);
    assert!(stage.steps.is_empty() && stage.env.is_empty());
    assert!(spec.env.is_empty() && spec.args.is_empty());
    assert_eq!(spec.config, Config::default());
    assert_eq!(spec.run, RunDefaults::default());
    // Empty sections are the same as absent ones.
    assert_eq!(
        ok("from: scratch\nsteps:\nconfig:\nrun:\nenv:\n")
            .final_stage()
            .steps,
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
        .map(|s| s.final_stage().from.clone())
        .map_err(|e| e.to_string())
    };
    assert_eq!(from("scratch"), Ok(From::Scratch));
    assert_eq!(
        from("oci:./layout:v1"),
        Ok(From::OciLayout {
            path: cwd().join("a/layout"),
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
        Ok(From::Rootfs(cwd().join("a/root.tar.zst")))
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
    let mode = |m: &str| match &ok(&copy(m)).final_stage().steps[0].kind {
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
        ok("from: scratch\nrun: { memory: 6291456 }\n")
            .run
            .limits
            .memory,
        Some(6 << 20)
    );
    assert_eq!(
        err("from: scratch\nrun: { memory: -1 }\n"),
        "kiln.yaml:2:16: invalid size \"-1\" (a size is more than 0 bytes, e.g. 64m)"
    );
}

/// Docker's rules for limits: at least 6 MiB of memory, from 0.01 CPUs up to the CPUs this
/// machine has; in `run:` and in a step's `resources:` alike.
#[test]
fn implausible_limits_are_located_errors() {
    let host = units::host_cpus();
    let range = format!("a number of CPUs from 0.01 up to this machine's {host}, e.g. 0.5");
    assert_eq!(
        err("from: scratch\nrun: { cpus: 0 }\n"),
        format!("kiln.yaml:2:14: invalid cpus 0 ({range})")
    );
    let cpus = if host == 1 { "CPU" } else { "CPUs" };
    assert_eq!(
        err(&format!(
            "from: scratch\nsteps:\n  - run: x\n    resources: {{ cpus: {} }}\n",
            host + 1
        )),
        format!(
            "kiln.yaml:4:24: cpus {} is more than the {host} {cpus} this machine has ({range})",
            host + 1
        )
    );
    let too_little = "memory limit 1 MiB is below the minimum of 6 MiB (a container needs more than that to start at all (Docker's minimum too); e.g. 64m)";
    assert_eq!(
        err("from: scratch\nrun: { memory: 1048576 }\n"),
        format!("kiln.yaml:2:16: {too_little}")
    );
    assert_eq!(
        err("from: scratch\nsteps:\n  - run: x\n    resources: { memory: 1m }\n"),
        format!("kiln.yaml:4:26: {too_little}")
    );
    let spec = ok("from: scratch\nrun: { memory: 6m, cpus: 0.01 }\n");
    assert_eq!(
        (spec.run.limits.memory, spec.run.limits.cpus),
        (Some(6 << 20), Some(0.01))
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
        err("args: { GREETING: hi }\nfrom: scratch\nsteps:\n  - run: [echo, \"${GRETING}\"]\n"),
        "kiln.yaml:4:17: undefined variable \"GRETING\" (did you mean \"GREETING\"?)"
    );
    assert_eq!(
        err("from: scratch\nsteps:\n  - copy: ${HOME}\n    to: /\n"),
        "kiln.yaml:3:11: undefined variable \"HOME\" (declare it under args: or env:, or write $${HOME} to keep it literal)"
    );
    assert_eq!(
        err("from: scratch\nconfig: { cmd: \"echo ${A\" }\n"),
        "kiln.yaml:2:16: unterminated \"${\" in string (close it with \"}\", or write \"$${\" for a literal \"${\")"
    );
    assert_eq!(
        err("from: scratch\nimage: \"x:${A:+1}\"\n"),
        "kiln.yaml:2:8: invalid variable reference \"${A:+1}\" (write ${NAME} or ${NAME:-default}, NAME being letters, digits and _; no other operators)"
    );
}

#[test]
fn variables_follow_file_order() {
    let spec = ok(r#"args: { V: "1" }
env: { A: "${V}", B: "${A}-b", V: "2" }
from: "img:${V}"
steps:
  - run: [echo, "${B} ${V} $${V} $V $$ $"]
  - env: { C: "${V}c" }
  - run: [echo, "${C}"]
config: { env: { X: "${C}", Y: "${X}" }, cmd: [echo, "${C}"] }
"#);
    assert_eq!(spec.env, pairs(&[("A", "1"), ("B", "1-b"), ("V", "2")]));
    assert_eq!(spec.final_stage().from, From::Image("img:2".into()));
    let commands: Vec<_> = spec
        .final_stage()
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Run(r) => Some(r.command.argv()[1].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(commands, strings(&["1-b 2 ${V} $V $ $", "2c"]));
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
        ("image: x\n", "kiln.yaml:1:1: missing required key \"from\" (e.g. from: scratch, from: alpine:3.20, from: oci:./layout, from: rootfs:./root.tar; or stages: for a multi-stage build)"),
        ("", "kiln.yaml:1:1: the spec is empty (start with `from: scratch` or `from: IMAGE`)"),
        ("- from: x\n", "kiln.yaml:1:1: a spec must be a mapping with keys such as from:, found a list"),
        ("from: scratch\nsteps: make\n", "kiln.yaml:2:8: steps must be a list, found a string"),
        ("from: scratch\nsteps:\n  - make\n", "kiln.yaml:3:5: a step must be a mapping, found a string (e.g. `- run: make` or `- copy: src/`)"),
        ("from: scratch\nsteps:\n  - copy: [a, ../b]\n    to: /\n", "kiln.yaml:3:15: copy source \"../b\" leaves the build context (sources are relative to the context folder and cannot use \"..\" or start with /)"),
        ("from: scratch\nsteps:\n  - workdir: srv\n", "kiln.yaml:3:14: \"srv\" is not an absolute path (paths inside the image start with /)"),
        ("from: scratch\nsteps:\n  - run: x\n    cache: [/a/../b]\n", "kiln.yaml:4:13: path \"/a/../b\" contains \"..\" (write the path without \"..\")"),
        ("from: scratch\nsteps:\n  - run: x\n    network: bridged\n", "kiln.yaml:4:14: invalid network \"bridged\" (use bridge (the default), host or none)"),
        ("from: scratch\nsteps:\n  - user: root:wheel:x\n", "kiln.yaml:3:11: invalid user \"root:wheel:x\" (write NAME, UID, NAME:GROUP or UID:GID, e.g. \"65534:65534\")"),
        ("from: scratch\nenv:\n  A:\n", "kiln.yaml:3:3: A has no value (write A: \"\" for an empty value)"),
        ("from: scratch\nrun: { read_only: yes }\n", "kiln.yaml:2:19: read_only must be true or false, found a string"),
        ("from: scratch\nrun: { pids: 0 }\n", "kiln.yaml:2:14: pids must be at least 1"),
        ("from: scratch\nrun: { ulimits: { nofiles: 5 } }\n", "kiln.yaml:2:19: unknown ulimit \"nofiles\" (did you mean \"nofile\"?)"),
        ("from: scratch\nrun: { ulimits: { nofile: \"9:8\" } }\n", "kiln.yaml:2:27: the soft limit 9 of nofile is above its hard limit 8 (the soft limit must be at most the hard limit, e.g. nofile=1024:4096)"),
        ("from: scratch\nrun: { ulimits: { nofile: { soft: 9, hard: 8 } } }\n", "kiln.yaml:2:19: the soft limit 9 of nofile is above its hard limit 8 (the soft limit must be at most the hard limit, e.g. nofile=1024:4096)"),
        ("from: scratch\nrun: { ulimits: { nofile: { soft: 9 } } }\n", "kiln.yaml:2:27: ulimit nofile needs \"hard\" (e.g. nofile: { soft: 1024, hard: 4096 })"),
        ("from: scratch\nrun: { ulimits: { nofile: x } }\n", "kiln.yaml:2:27: \"x\" is not a limit for nofile (a limit is a whole number of at least 0, or -1 or unlimited for no limit)"),
        ("from: scratch\nrun: { shm_size: 0 }\n", "kiln.yaml:2:18: invalid size \"0\" (a size is more than 0 bytes, e.g. 64m)"),
        ("from: scratch\nrun: { sysctls: { vm.swappiness: 10 } }\n", "kiln.yaml:2:19: sysctl vm.swappiness is not allowed: it is not in the container's own namespaces, so it would change the host's kernel (a container may set only the sysctls of its own namespaces: kernel.msgmax, kernel.msgmnb, kernel.msgmni, kernel.sem, kernel.shmall, kernel.shmmax, kernel.shmmni, kernel.shm_rmid_forced, kernel.domainname, fs.mqueue.* and net.*)"),
        ("from: scratch\nrun: { devices: [/dev/fuse:/fuse] }\n", "kiln.yaml:2:18: the container path \"/fuse\" must be a file under /dev (device nodes can be opened only on the container's /dev, e.g. /dev/sdb:/dev/xvdb)"),
        ("from: scratch\nrun: { devices: [/dev/a:/dev/x, /dev/b:/dev/x] }\n", "kiln.yaml:2:33: two devices at /dev/x in the container"),
        ("from: scratch\nrun: { extra_hosts: [db] }\n", "kiln.yaml:2:22: extra_hosts: \"db\" is not NAME:IP (write NAME:IP, e.g. db:10.0.0.5 or db:[2001:db8::5])"),
        ("from: scratch\nrun: { init: 1 }\n", "kiln.yaml:2:14: init must be true or false, found an integer"),
        ("from: scratch\nrun: { hostname: a_b }\n", "kiln.yaml:2:18: invalid hostname \"a_b\" (letters, digits, '-' and '.', at most 64 characters)"),
        ("from: scratch\nrun: { mounts: [{ target: /d }] }\n", "kiln.yaml:2:17: a mount needs \"source\" (e.g. { source: ./data, target: /data, readonly: true })"),
        ("from: scratch\nconfig: { expose: [8080, 0] }\n", "kiln.yaml:2:26: invalid port \"0\" (a port is a number from 1 to 65535, optionally with /tcp, /udp or /sctp)"),
        ("from: scratch\nconfig: { expose: [53/foo] }\n", "kiln.yaml:2:20: invalid protocol \"foo\" in port \"53/foo\" (use tcp, udp or sctp, e.g. 53/udp)"),
        ("from: scratch\nconfig: { expose: [80, 80/tcp] }\n", "kiln.yaml:2:24: port 80/tcp is listed twice"),
        ("from: scratch\nconfig: { stop_signal: SIGTREM }\n", "kiln.yaml:2:24: unknown signal \"SIGTREM\" (did you mean \"SIGTERM\"?)"),
        ("from: scratch\nconfig: { healthcheck: { test: [CMD] } }\n", "kiln.yaml:2:32: invalid healthcheck test (write [CMD, program, args...], [CMD-SHELL, \"script\"], [NONE] or a script string)"),
        ("from: scratch\nconfig: { healthcheck: { test: x, interval: 30 } }\n", "kiln.yaml:2:45: interval needs a unit (e.g. 30s)"),
        ("a: !foo bar\nfrom: scratch\n", "kiln.yaml:1:9: invalid YAML: unsupported tag `!foo`"),
        ("from: scratch\nrun: { ports: [\"8080:80/icmp\"] }\n", "kiln.yaml:2:16: invalid port mapping \"8080:80/icmp\": unknown protocol \"icmp\" (write [IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp|/sctp], e.g. 8080:80, 127.0.0.1:8080:80/tcp, 53:53/udp or 8000-8009:80-89)"),
        ("from: scratch\nrun:\n  ports:\n    - 8080:80\n    - 127.0.0.1:8080:81\n", "kiln.yaml:5:7: host port 8080/tcp is published twice"),
        ("from: scratch\nrun: { ports: [{ published: 8080 }] }\n", "kiln.yaml:2:16: a port needs \"target\" (e.g. { target: 80, published: \"8080\", host_ip: 127.0.0.1, protocol: tcp })"),
        ("from: scratch\nrun: { ports: [{ target: 80, mode: host }] }\n", "kiln.yaml:2:30: unknown port key \"mode\" (valid keys: target, published, host_ip, protocol)"),
        ("from: scratch\nrun: { ports: 8080:80 }\n", "kiln.yaml:2:15: ports must be a list, found a string"),
        ("from: scratch\nrun: { network_rate_out: 8mb }\n", "kiln.yaml:2:26: invalid rate \"8mb\": unknown unit \"mb\" (tc's units: bit (or none), kbit, mbit, gbit, tbit (powers of 1000) and kibit, mibit, gibit, tibit (of 1024) in bits per second; bps, kbps, mbps, gbps, kibps, … in bytes per second; e.g. 8mbit)"),
        ("from: scratch\nrun: { network_rate_in: 100 }\n", "kiln.yaml:2:25: rate \"100\" is below the least one, 8kbit (tc's units: bit (or none), kbit, mbit, gbit, tbit (powers of 1000) and kibit, mibit, gibit, tibit (of 1024) in bits per second; bps, kbps, mbps, gbps, kibps, … in bytes per second; e.g. 8mbit)"),
        ("from: scratch\nrun: { network: bridges }\n", "kiln.yaml:2:17: invalid network \"bridges\" (use bridge (the default), host or none)"),
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
    assert_eq!(
        spec.final_stage().from,
        From::Rootfs(dir.path().join("root"))
    );
    assert_eq!(spec.contexts["c"], dir.path().join("ctx"));
    assert_eq!(spec.contexts["abs"], PathBuf::from("/opt"));
    assert_eq!(spec.file, path);
}

/// The working directory the tests run in: relative spec paths end up below it.
fn cwd() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn host_paths_are_absolute_and_taken_from_the_spec_folder() {
    // The spec named relatively, in a subfolder, as `kiln build -f conf/kiln.yaml` does.
    let spec = parse(
        "from: rootfs:../base\ncontexts: { here: ., dot: ./a, up: ../b, abs: /opt/c }\nrun: { mounts: [{ source: data, target: /d }] }\n",
        Path::new("conf/kiln.yaml"),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = cwd().join("conf");
    assert_eq!(spec.final_stage().from, From::Rootfs(dir.join("../base")));
    assert_eq!(spec.contexts["here"], dir);
    assert_eq!(spec.contexts["dot"], dir.join("a"));
    assert_eq!(spec.contexts["up"], dir.join("../b"));
    assert_eq!(spec.contexts["abs"], PathBuf::from("/opt/c"));
    assert_eq!(spec.run.mounts[0].source, dir.join("data"));
    // A spec named by its bare file name lives in the working directory.
    let spec = parse(
        "from: scratch\ncontexts: { c: ctx }\n",
        Path::new(FILE),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.contexts["c"], cwd().join("ctx"));
    assert_eq!(
        spec.file,
        Path::new(FILE),
        "messages name the file as given"
    );
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
        "\t", "é", "~", "to", "mode", "args", "env", "A", "stages", "b", "${A:-x}", "secrets",
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
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello/kiln.yaml");
    let spec = load(&path, &pairs(&[("GREETING", "hi")])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.image.as_deref(), Some("hello:latest"));
    assert_eq!(spec.run.cap_drop, strings(&["ALL"]));
    // The page's text is the shell's: the arg reaches it in the step's environment.
    assert!(run_argv(&spec, 2)[3].contains("\"${GREETING} from kiln\""));
    assert_eq!(spec.final_stage().steps[2].args_used, names(&["GREETING"]));
}

const TWO_STAGES: &str = r#"image: app:${VERSION}
args: { VERSION: "1.2", DEBIAN: bookworm, CFLAGS: -O2 }
contexts: { tools: ./tools }
env: { LANG: C.UTF-8, TAG: "v${VERSION}" }
stages:
  build:
    from: "debian:${DEBIAN}"
    env: { CC: gcc, FLAGS: "${CFLAGS}" }
    steps:
      - copy: hello.c
        to: /src/
      - run: ${CC} ${CFLAGS} -static -o /out/hello /src/hello.c ${CFLAGS:-x}
      - env: { OUT: /out }
  final:
    from: scratch
    steps:
      - copy: [out/hello, /etc/passwd]
        from: build
        to: /bin/
      - copy: x
        from: tools
        to: /x
config: { entrypoint: [/bin/hello], labels: { version: "${TAG}" } }
"#;

#[test]
fn multi_stage_spec_parses_to_stages() {
    let spec = parse(TWO_STAGES, Path::new("p/kiln.yaml"), &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.image.as_deref(), Some("app:1.2"));
    assert_eq!(spec.env, pairs(&[("LANG", "C.UTF-8"), ("TAG", "v1.2")]));
    assert_eq!(spec.stages.len(), 2);
    let build = &spec.stages[0];
    assert_eq!(build.name, "build");
    assert_eq!(build.location, at(6, 3));
    assert_eq!(build.from, From::Image("debian:bookworm".into()));
    assert_eq!(build.from_args_used, names(&["DEBIAN"]));
    // The top-level env first, then the stage's own.
    assert_eq!(
        build.env,
        pairs(&[
            ("LANG", "C.UTF-8"),
            ("TAG", "v1.2"),
            ("CC", "gcc"),
            ("FLAGS", "-O2")
        ])
    );
    assert_eq!(build.env_args_used, names(&["CFLAGS", "VERSION"]));
    assert_eq!(
        build.steps[1].kind,
        StepKind::Run(RunStep {
            command: script("${CC} ${CFLAGS} -static -o /out/hello /src/hello.c ${CFLAGS:-x}"),
            network: Network::Bridge,
            privileges: Default::default(),
            limits: Default::default(),
            cache: vec![],
            secrets: vec![],
        })
    );
    assert_eq!(build.steps[1].args_used, names(&["CFLAGS"]));
    assert!(build.dependencies().is_empty());

    let last = spec.final_stage();
    assert_eq!(last.name, "final");
    assert_eq!(last.from, From::Scratch);
    assert_eq!(last.env, pairs(&[("LANG", "C.UTF-8"), ("TAG", "v1.2")]));
    assert_eq!(last.env_args_used, names(&["VERSION"]));
    // Paths in a stage are made absolute.
    assert_eq!(
        last.steps[0].kind,
        StepKind::Copy(CopyStep {
            sources: strings(&["/out/hello", "/etc/passwd"]),
            from: CopyFrom::Stage("build".into()),
            to: "/bin/".into(),
            mode: None,
            owner: None,
        })
    );
    assert!(
        matches!(&last.steps[1].kind, StepKind::Copy(c) if c.from == CopyFrom::Context("tools".into()))
    );
    assert_eq!(last.dependencies(), BTreeSet::from(["build"]));
    assert_eq!(spec.stage_index("build"), Some(0));
    assert_eq!(spec.stage_index("final"), Some(1));
    assert_eq!(spec.stage_index("main"), None);
    assert_eq!(spec.config.labels["version"], "v1.2");
}

#[test]
fn a_stage_built_on_another_sees_its_variables() {
    let spec = ok(r#"args: { V: "1" }
env: { PATH: /bin }
stages:
  base:
    from: scratch
    env: { HOME_DIR: /app }
    steps:
      - env: { PATH: /usr/bin, MODE: fast }
  test:
    from: base
    steps:
      - run: [echo, "${HOME_DIR} ${MODE} ${PATH} ${V}"]
config: { cmd: [echo, "${HOME_DIR}"] }
"#);
    let test = spec.final_stage();
    assert_eq!(test.from, From::Stage("base".into()));
    assert_eq!(test.dependencies(), BTreeSet::from(["base"]));
    // Like the build, the top-level env is set again on top of the base stage's.
    assert_eq!(test.env, pairs(&[("PATH", "/bin")]));
    assert_eq!(run_argv(&spec, 0), strings(&["echo", "/app fast /bin 1"]));
    assert_eq!(test.steps[0].args_used, names(&["V"]));
    // config: sees the scope at the end of the last stage.
    assert_eq!(spec.config.cmd, Some(strings(&["echo", "/app"])));
}

#[test]
fn a_stage_name_wins_over_an_image_reference() {
    let spec = ok(
        "stages:\n  alpine:\n    from: alpine:3.20\n  app.v2:\n    from: alpine\n  x_1-y:\n    from: app.v2\n",
    );
    let froms: Vec<_> = spec.stages.iter().map(|s| s.from.clone()).collect();
    assert_eq!(
        froms,
        vec![
            From::Image("alpine:3.20".into()),
            From::Stage("alpine".into()),
            From::Stage("app.v2".into())
        ]
    );
    // Without stages:, the single stage's name is not a stage reference.
    assert_eq!(
        ok("from: main\n").final_stage().from,
        From::Image("main".into())
    );
}

#[test]
fn stage_errors() {
    let cases = [
        (
            "stages:\n  a:\n    from: b\n  b:\n    from: scratch\n",
            "kiln.yaml:3:11: stage \"b\" is defined after \"a\" (a stage can only use the stages above it; move \"b\" above \"a\")",
        ),
        (
            "stages:\n  a:\n    from: a\n",
            "kiln.yaml:3:11: stage \"a\" cannot be built from itself (a stage name wins over an image of the same name; to use the image \"a\", rename the stage)",
        ),
        (
            "stages:\n  a:\n    from: scratch\n    steps:\n      - copy: /x\n        from: a\n        to: /y\n",
            "kiln.yaml:6:15: stage \"a\" cannot copy from itself",
        ),
        (
            "stages:\n  a:\n    from: scratch\n    steps:\n      - copy: /x\n        from: b\n        to: /y\n  b:\n    from: scratch\n",
            "kiln.yaml:6:15: stage \"b\" is defined after \"a\" (a stage can only use the stages above it; move \"b\" above \"a\")",
        ),
        (
            "from: scratch\nstages:\n  a:\n    from: scratch\n",
            "kiln.yaml:1:1: top-level \"from\" cannot be used together with stages: (move it into a stage: each stage has its own from: and steps:)",
        ),
        (
            "stages:\n  a:\n    from: scratch\nsteps: []\n",
            "kiln.yaml:4:1: top-level \"steps\" cannot be used together with stages: (move it into a stage: each stage has its own from: and steps:)",
        ),
        (
            "stages: {}\n",
            "kiln.yaml:1:1: stages: needs at least one stage (e.g. stages: { build: { from: alpine, steps: [...] } })",
        ),
        (
            "stages:\n",
            "kiln.yaml:1:1: stages: needs at least one stage (e.g. stages: { build: { from: alpine, steps: [...] } })",
        ),
        (
            "stages: [a, b]\n",
            "kiln.yaml:1:9: stages must be a mapping, found a list (stages: maps each stage's name to its from: and steps:)",
        ),
        (
            "stages:\n  Build:\n    from: scratch\n",
            "kiln.yaml:2:3: invalid stage name \"Build\" (lower-case letters, digits, '-', '_' and '.', starting with a letter or digit, at most 128 characters)",
        ),
        (
            "stages:\n  -x:\n    from: scratch\n",
            "kiln.yaml:2:3: invalid stage name \"-x\" (lower-case letters, digits, '-', '_' and '.', starting with a letter or digit, at most 128 characters)",
        ),
        (
            "stages:\n  scratch:\n    from: alpine\n",
            "kiln.yaml:2:3: \"scratch\" cannot be a stage name (from: scratch means an empty base; pick another name)",
        ),
        (
            "stages:\n  a:\n    steps: []\n",
            "kiln.yaml:2:3: stage \"a\" needs \"from\" (e.g. from: scratch, from: alpine:3.20, from: oci:./layout, from: rootfs:./root.tar, or the name of an earlier stage)",
        ),
        (
            "stages:\n  a:\n",
            "kiln.yaml:2:3: stage \"a\" must be a mapping, found nothing (e.g. { from: alpine:3.20, steps: [...] })",
        ),
        (
            "stages:\n  a:\n    form: scratch\n",
            "kiln.yaml:3:5: unknown stage key \"form\" (did you mean \"from\"?)",
        ),
        (
            "stages:\n  a:\n    from: scratch\n    config: {}\n",
            "kiln.yaml:4:5: unknown stage key \"config\" (\"config\" belongs at the top level: it applies to the final image)",
        ),
        (
            "stages:\n  a:\n    from: scratch\n    args: {}\n",
            "kiln.yaml:4:5: unknown stage key \"args\" (\"args\" belongs at the top level: it is shared by all stages)",
        ),
        (
            "stages:\n  a:\n    from: scratch\n    run: make\n",
            "kiln.yaml:4:5: unknown stage key \"run\" (\"run\" belongs in a step under the stage's steps:)",
        ),
        (
            "stages:\n  a:\n    from: scratch\n    expose: [80]\n",
            "kiln.yaml:4:5: unknown stage key \"expose\" (\"expose\" belongs in config: at the top level)",
        ),
        (
            "stages:\n  a:\n    from: \"\"\n",
            "kiln.yaml:3:11: invalid base image \"\" (use scratch, an image reference, oci:PATH[:TAG], rootfs:PATH or an earlier stage)",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(err(text), expected, "for spec:\n{text}");
    }
}

#[test]
fn copy_from_a_stage_or_a_context() {
    let two = |copy_from: &str, contexts: &str| {
        format!("contexts: {{ {contexts} }}\nstages:\n  builder:\n    from: scratch\n  out:\n    from: scratch\n    steps:\n      - copy: /bin/app\n        from: {copy_from}\n        to: /app\n")
    };
    assert_eq!(
        err(&two("builder", "builder: ./b")),
        "kiln.yaml:9:15: \"builder\" is both a build context and a stage (rename one of them so that copy from: is not ambiguous)"
    );
    assert_eq!(
        err(&two("biulder", "tools: ./t")),
        "kiln.yaml:9:15: unknown build context or stage \"biulder\" (did you mean \"builder\"?)"
    );
    assert_eq!(
        err(&two("tols", "tools: ./t")),
        "kiln.yaml:9:15: unknown build context or stage \"tols\" (did you mean \"tools\"?)"
    );
    assert_eq!(
        err(&two("zzz", "tools: ./t")),
        "kiln.yaml:9:15: unknown build context or stage \"zzz\" (declare it under contexts:, e.g. zzz: ./dir, or name an earlier stage)"
    );
    // A later stage is not offered as a suggestion: it cannot be used.
    assert_eq!(
        err("stages:\n  a:\n    from: scratch\n    steps:\n      - copy: x\n        from: bb\n        to: /x\n  b:\n    from: scratch\n"),
        "kiln.yaml:6:15: unknown build context or stage \"bb\" (declare it under contexts:, e.g. bb: ./dir, or name an earlier stage)"
    );
    // `..` stays forbidden; absolute paths are fine in a stage but not in a context.
    let copy = |sources: &str, from: &str| {
        format!("contexts: {{ c: ./c }}\nstages:\n  b:\n    from: scratch\n  f:\n    from: scratch\n    steps:\n      - copy: {sources}\n        from: {from}\n        to: /x\n")
    };
    assert_eq!(
        err(&copy("[/ok, /a/../b]", "b")),
        "kiln.yaml:8:21: copy source \"/a/../b\" contains \"..\" (write the path inside the stage without \"..\", e.g. /usr/local/bin/app)"
    );
    assert_eq!(
        err(&copy("/etc/passwd", "c")),
        "kiln.yaml:8:15: copy source \"/etc/passwd\" leaves the build context (sources are relative to the context folder and cannot use \"..\" or start with /)"
    );
    let spec = ok(&copy("[dir/, /abs]", "b"));
    assert!(
        matches!(&spec.final_stage().steps[0].kind, StepKind::Copy(c) if c.sources == strings(&["/dir/", "/abs"]))
    );
}

#[test]
fn secrets_come_from_a_file_or_the_environment() {
    let spec = parse(
        "from: scratch\nargs: { T: tok }\nsteps:\n  - run: make\n    secrets:\n      - { id: a, source: ./a.txt }\n      - { id: \"${T}\", env: GITHUB_TOKEN, target: /t }\n",
        Path::new("d/kiln.yaml"),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let step = &spec.final_stage().steps[0];
    let StepKind::Run(run) = &step.kind else {
        panic!("{step:?}")
    };
    assert_eq!(
        run.secrets,
        vec![
            Secret {
                id: "a".into(),
                source: SecretSource::File(cwd().join("d/a.txt")),
                target: "/run/secrets/a".into(),
                location: at(6, 9),
            },
            Secret {
                id: "tok".into(),
                source: SecretSource::Env("GITHUB_TOKEN".into()),
                target: "/t".into(),
                location: at(7, 9),
            },
        ]
    );
    assert_eq!(step.args_used, names(&["T"]));
    let secret = |body: &str| {
        err(&format!(
            "from: scratch\nsteps:\n  - run: make\n    secrets: [{body}]\n"
        ))
    };
    assert_eq!(
        secret("{ id: a, source: ./a, env: A }"),
        "kiln.yaml:4:37: a secret takes \"source\" or \"env\", not both (source: reads a file, env: reads a variable of kiln build's environment)"
    );
    assert_eq!(
        secret("{ id: a }"),
        "kiln.yaml:4:15: a secret needs \"source\" or \"env\" (e.g. { id: token, source: ./token.txt } or { id: token, env: TOKEN })"
    );
    assert_eq!(
        secret("{ env: A }"),
        "kiln.yaml:4:15: a secret needs \"id\" (e.g. { id: token, source: ./token.txt } or { id: token, env: TOKEN })"
    );
    assert_eq!(
        secret("{ id: a, env: \"A B\" }"),
        "kiln.yaml:4:29: invalid environment variable name \"A B\" (names cannot be empty or contain '=', spaces or NUL)"
    );
    assert_eq!(
        secret("{ id: a, source: \"\" }"),
        "kiln.yaml:4:32: secret source is empty (give the path of a file, relative to the spec's folder)"
    );
    assert_eq!(
        secret("{ id: a, file: x }"),
        "kiln.yaml:4:24: unknown secret key \"file\" (valid keys: id, source, env, target)"
    );
    assert_eq!(
        secret("{ id: a, env: A }, { id: b, env: B, target: /run/secrets/a }"),
        "kiln.yaml:4:34: secret \"b\" clashes with secret \"a\" (each secret needs its own id and target)"
    );
}

#[test]
fn defaults_in_variable_references() {
    let text = r#"args: { SET: "x", EMPTY: "" }
env: { E: "" }
from: scratch
steps:
  - run: [echo, "${SET:-d1} ${EMPTY:-d2} ${UNSET:-d3} ${E:-d4} ${UNSET:-} ${UNSET:-$$HOME $(pwd)}"]
"#;
    let spec = ok(text);
    let step = &spec.final_stage().steps[0];
    // The default is used as written: `$$` stays two dollars.
    assert_eq!(run_argv(&spec, 0)[1], "x d2 d3 d4  $$HOME $(pwd)");
    // An empty arg that fell back to its default was still read.
    assert_eq!(step.args_used, names(&["EMPTY", "SET"]));
    let overridden =
        parse(text, Path::new(FILE), &pairs(&[("EMPTY", "y")])).unwrap_or_else(|e| panic!("{e}"));
    assert!(run_argv(&overridden, 0)[1].starts_with("x y d3"));
    assert_eq!(
        err("from: scratch\nsteps:\n  - workdir: /${A:-${B}}\n"),
        "kiln.yaml:3:14: the default in \"${A:-${B}\" cannot use ${...} (a default is used as written; write the value itself)"
    );
    assert_eq!(
        err("from: scratch\nsteps:\n  - workdir: /${:-x}\n"),
        "kiln.yaml:3:14: invalid variable reference \"${:-x}\" (write ${NAME} or ${NAME:-default}, NAME being letters, digits and _; no other operators)"
    );
}

#[test]
fn steps_record_the_args_they_use_directly() {
    let spec = ok(r#"args: { A: a, B: b, C: c, D: d }
env: { FROM_A: "${A}", B: shadowed }
from: "img:${D}"
steps:
  - run: echo ${A} $B ${FROM_A}
  - env: { STEP_C: "${C}" }
  - run: echo ${STEP_C} $${C} \$D \${D:-x}
  - copy: "${C}"
    to: /${A}
    mode: "0755"
  - workdir: /${D}
  - user: "${D}"
  - run: make
    cache: ["/cache/${A}"]
    secrets: [{ id: s, env: "${B}", target: "/run/${C}" }]
  - env: { A: changed }
  - run: echo ${A}
  - run: [echo, "${B}", "${C}"]
config: { cmd: ["${C}"] }
"#);
    let stage = spec.final_stage();
    let used: Vec<BTreeSet<String>> = stage.steps.iter().map(|s| s.args_used.clone()).collect();
    assert_eq!(
        used,
        vec![
            // B is shadowed by the env entry; FROM_A reaches A only through env.
            names(&["A"]),
            names(&["C"]),
            names(&[]),
            names(&["A", "C"]),
            names(&["D"]),
            names(&["D"]),
            names(&["A", "C"]),
            names(&[]),
            // A now means the env variable of the step above.
            names(&[]),
            names(&["C"]),
        ]
    );
    assert_eq!(stage.env_args_used, names(&["A"]));
    assert_eq!(stage.from_args_used, names(&["D"]));
}

#[test]
fn target_keeps_the_stages_up_to_the_named_one() {
    let mut spec =
        parse(TWO_STAGES, Path::new("p/kiln.yaml"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let mut full = spec.clone();
    assert_eq!(full.truncate_to("final"), Ok(()));
    assert_eq!(full, spec);
    assert_eq!(spec.truncate_to("build"), Ok(()));
    assert_eq!(spec.stages.len(), 1);
    assert_eq!(spec.final_stage().name, "build");

    let mut spec =
        parse(TWO_STAGES, Path::new("p/kiln.yaml"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let error = spec.truncate_to("biuld").unwrap_err();
    assert_eq!(
        error.to_string(),
        "p/kiln.yaml: no stage named \"biuld\" to build (did you mean \"build\"?)"
    );
    assert_eq!(
        spec.truncate_to("zzz").unwrap_err().to_string(),
        "p/kiln.yaml: no stage named \"zzz\" to build (the stages are \"build\", \"final\")"
    );
    assert_eq!(spec.stages.len(), 2, "a failed --target changes nothing");
    let mut single = ok("from: scratch\n");
    assert_eq!(single.truncate_to("main"), Ok(()));
    assert_eq!(
        single.truncate_to("build").unwrap_err().to_string(),
        "kiln.yaml: no stage named \"build\" to build (the stages are \"main\")"
    );
}

/// Every complete spec shown in the format's documentation parses (tests/docs_examples.rs
/// builds them).
#[test]
fn the_documented_examples_are_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs/spec.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut checked = 0;
    for block in doc.split("```yaml\n").skip(1) {
        let Some((yaml, _)) = block.split_once("```") else {
            panic!("unterminated yaml block in spec.md")
        };
        let complete = yaml
            .lines()
            .any(|line| line.starts_with("from:") || line.starts_with("stages:"));
        if complete {
            // `# kiln build --arg K=V` on the first line: how the example is built.
            let args: Vec<(String, String)> = yaml
                .lines()
                .next()
                .and_then(|first| first.strip_prefix("# kiln build"))
                .into_iter()
                .flat_map(|command| command.split_whitespace())
                .filter_map(|word| word.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            if let Err(error) = parse(yaml, Path::new(FILE), &args) {
                panic!("spec.md example does not parse: {error}\n{yaml}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} complete examples found");
}

#[test]
fn run_scripts_are_the_shells_text() {
    let spec = ok(r#"args: { V: "1", W: "2" }
env: { E: e }
from: scratch
steps:
  - run: echo ${UNDEFINED} ${HOME:-/} $$ ${V%.*} $E ${#W} "${"
"#);
    assert_eq!(
        run_argv(&spec, 0),
        strings(&[
            "/bin/sh",
            "-e",
            "-c",
            r#"echo ${UNDEFINED} ${HOME:-/} $$ ${V%.*} $E ${#W} "${""#
        ])
    );
    assert_eq!(spec.final_stage().steps[0].args_used, names(&["V", "W"]));
}

#[test]
fn shells_come_from_the_step_then_the_stage_then_the_spec() {
    let spec = ok(r#"args: { SH: /bin/bash, X: "-x" }
shell: ["${SH}", -eu, -c]
env: { DASH: /bin/dash }
stages:
  a:
    from: scratch
    steps:
      - run: one
      - run: two
        shell: ["${DASH}", "${X}", -c]
      - run: [three]
  b:
    from: a
    shell: [/bin/sh, -c]
    steps:
      - run: four
"#);
    let argv = |stage: usize, step: usize| match &spec.stages[stage].steps[step].kind {
        StepKind::Run(run) => run.command.argv(),
        other => panic!("{other:?}"),
    };
    let used = |stage: usize, step: usize| spec.stages[stage].steps[step].args_used.clone();
    assert_eq!(argv(0, 0), strings(&["/bin/bash", "-eu", "-c", "one"]));
    assert_eq!(used(0, 0), names(&["SH"]));
    assert_eq!(argv(0, 1), strings(&["/bin/dash", "-x", "-c", "two"]));
    assert_eq!(used(0, 1), names(&["X"]));
    // A list is exec'd: no shell, and the spec's shell's args are not its own.
    assert_eq!(argv(0, 2), strings(&["three"]));
    assert_eq!(used(0, 2), names(&[]));
    assert_eq!(argv(1, 0), strings(&["/bin/sh", "-c", "four"]));
    assert_eq!(used(1, 0), names(&[]));
}

#[test]
fn shell_mistakes_are_located() {
    let cases = [
        (
            "from: scratch\nshell: /bin/bash -c\n",
            "kiln.yaml:2:8: shell must be a list of strings, found a string (e.g. shell: [/bin/bash, -euo, pipefail, -c]; the script becomes the last argument)",
        ),
        (
            "from: scratch\nsteps:\n  - run: make\n    shell: []\n",
            "kiln.yaml:4:12: shell needs at least a program (e.g. shell: [/bin/bash, -euo, pipefail, -c]; the script becomes the last argument)",
        ),
        (
            "from: scratch\nsteps:\n  - run: make\n    shell: [\"\", -c]\n",
            "kiln.yaml:4:13: the shell's program is empty (e.g. shell: [/bin/bash, -euo, pipefail, -c]; the script becomes the last argument)",
        ),
        (
            "from: scratch\nsteps:\n  - run: make\n    shell: [/bin/sh, [-c]]\n",
            "kiln.yaml:4:22: each shell entry must be a string, found a list",
        ),
        (
            "from: scratch\nsteps:\n  - run: [make]\n    shell: [/bin/sh, -c]\n",
            "kiln.yaml:4:5: shell: does not apply to a list run: (it is executed without a shell) (write run: as a string to run it with this shell, or remove shell:)",
        ),
        (
            "from: scratch\nsteps:\n  - copy: a\n    to: /a\n    shell: [/bin/sh, -c]\n",
            "kiln.yaml:5:5: \"shell\" is not allowed on a copy step (\"shell\" belongs to run steps)",
        ),
        (
            "from: scratch\nsteps:\n  - run: make\n    shel: [/bin/sh, -c]\n",
            "kiln.yaml:4:5: unknown step key \"shel\" (did you mean \"shell\"?)",
        ),
        (
            "from: scratch\nshell: [\"${SH}\", -c]\n",
            "kiln.yaml:2:9: undefined variable \"SH\" (declare it under args: or env:, or write $${SH} to keep it literal)",
        ),
        (
            "stages:\n  a:\n    from: scratch\n    shell: {}\n",
            "kiln.yaml:4:12: shell must be a list of strings, found a mapping (e.g. shell: [/bin/bash, -euo, pipefail, -c]; the script becomes the last argument)",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(err(text), expected, "for\n{text}");
    }
}

/// A spec's problems are reported together, in file order: each section, stage and step is
/// checked after another had a problem. A name that a broken section would have defined
/// is not reported as undefined.
#[test]
fn every_problem_of_a_spec_is_reported_in_file_order() {
    let spec = "\
from: scratch
stesp: []
env:
  A:
steps:
  - rnu: make
  - run: echo ${A}
  - copy: x
  - run: echo ok
config: { stop_signal: SIGTREM }
run: { memory: 64X, pids: 0 }
";
    let found = errs(spec);
    let at: Vec<&str> = found
        .iter()
        .map(|e| e.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        at,
        [
            "kiln.yaml:2:1",
            "kiln.yaml:4:3",
            "kiln.yaml:6:5",
            "kiln.yaml:8:5",
            "kiln.yaml:10:24",
            "kiln.yaml:11:16",
            "kiln.yaml:11:27"
        ],
        "{found:#?}"
    );
    assert!(
        found[0].contains("unknown top-level key \"stesp\""),
        "{found:#?}"
    );
    assert!(found[3].contains("copy needs \"to\""), "{found:#?}");
    // Display shows the first problem, as before.
    assert_eq!(err(spec), found[0]);
}

#[test]
fn a_broken_env_step_or_stage_silences_undefined_names_after_it() {
    let found =
        errs("from: scratch\nsteps:\n  - env: { A: }\n  - run: echo ${A}\n  - workdir: rel\n");
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("kiln.yaml:3:12: A has no value"),
        "{found:#?}"
    );
    assert!(found[1].starts_with("kiln.yaml:5:14: "), "{found:#?}");

    let stages = "\
stages:
  base:
    from: scratch
    env: { A: }
  app:
    from: base
    steps:
      - run: echo ${A} ${B}
      - copy: x
        from: nowhere
        to: /x
  bad name:
    from: scratch
  last:
    from: bad name
    steps:
      - copy: x
        from: bad name
        to: /x
      - user: \"a:b:c\"
";
    let found = errs(stages);
    let at: Vec<&str> = found
        .iter()
        .map(|e| e.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        at,
        [
            "kiln.yaml:4:12",
            "kiln.yaml:10:15",
            "kiln.yaml:12:3",
            "kiln.yaml:20:15"
        ],
        "{found:#?}"
    );
}

#[test]
fn at_most_twenty_problems_are_reported() {
    let steps: String = (0..30).map(|i| format!("  - rnu{i}: x\n")).collect();
    let found = errs(&format!("from: scratch\nsteps:\n{steps}"));
    assert_eq!(found.len(), 20);
    assert!(
        found[19].starts_with("kiln.yaml:22:5: unknown step key \"rnu19\""),
        "{found:#?}"
    );
}

/// Docker's finer cgroup controls: every key in `run:` and in a step's `resources:`, with
/// the flags' parsers, Docker's ranges and its cross rules, each problem located.
#[test]
fn the_finer_cgroup_controls_parse_with_dockers_rules() {
    let spec = ok("from: scratch\n\
         run:\n  memory: 64m\n  memory_reservation: 32m\n  memory_swap: 128m\n  \
         cpu_shares: 512\n  cpuset_cpus: 0\n  cpuset_mems: \"0\"\n  blkio_weight: 300\n  \
         device_read_bps: [{ path: /dev/sda, rate: 1mb }]\n  \
         device_write_bps: [\"/dev/sdb:512kb\"]\n  \
         device_read_iops: [{ path: /dev/sda, rate: 100 }]\n  \
         device_write_iops: [/dev/sda:20]\n");
    let limits = &spec.run.limits;
    assert_eq!(limits.memory_reservation, Some(32 << 20));
    assert_eq!(limits.memory_swap, Some(MemorySwap::Limit(128 << 20)));
    assert_eq!(limits.cpu_weight, Some(CpuWeight::Shares(512)));
    assert_eq!(limits.cpuset_cpus.as_deref(), Some("0"));
    assert_eq!(limits.cpuset_mems.as_deref(), Some("0"));
    assert_eq!(limits.blkio_weight, Some(300));
    let throttle = |kind, path: &str, rate| DeviceThrottle {
        kind,
        path: path.into(),
        rate,
    };
    assert_eq!(
        limits.device_throttles,
        [
            throttle(ThrottleKind::DeviceReadBps, "/dev/sda", 1 << 20),
            throttle(ThrottleKind::DeviceWriteBps, "/dev/sdb", 512 << 10),
            throttle(ThrottleKind::DeviceReadIops, "/dev/sda", 100),
            throttle(ThrottleKind::DeviceWriteIops, "/dev/sda", 20),
        ]
    );
    let step = ok(
        "from: scratch\nsteps:\n  - run: x\n    resources: { cpu_weight: 50, memory_swap: -1 }\n",
    );
    let StepKind::Run(run) = &step.final_stage().steps[0].kind else {
        panic!("a run step");
    };
    assert_eq!(run.limits.cpu_weight, Some(CpuWeight::Weight(50)));
    assert_eq!(run.limits.memory_swap, Some(MemorySwap::Unlimited));
    // Stored with the tag and read back: the same keys, flattened.
    let json = serde_json::to_string(&spec.run).unwrap();
    assert!(json.contains("\"memory\":67108864"), "{json}");
    assert_eq!(
        serde_json::from_str::<RunDefaults>(&json).unwrap(),
        spec.run
    );
    let old: RunDefaults =
        serde_json::from_str(r#"{"memory":67108864,"cpus":null,"pids":5}"#).unwrap();
    assert_eq!(
        (old.limits.memory, old.limits.pids),
        (Some(64 << 20), Some(5))
    );

    for (text, expected) in [
        ("cpu_shares: 1", "kiln.yaml:2:20: cpu shares 1 is out of range (from 2 to 262144, e.g. 512)"),
        ("cpu_weight: 10001", "kiln.yaml:2:20: cpu weight 10001 is out of range (from 1 to 10000, e.g. 50)"),
        ("blkio_weight: 5", "kiln.yaml:2:22: blkio weight 5 is out of range (from 10 to 1000, e.g. 500)"),
        ("cpuset_cpus: 1-0", "kiln.yaml:2:21: invalid CPU list \"1-0\" (a list of CPUs like 0-1,3)"),
        ("memory_reservation: 1m", "kiln.yaml:2:28: memory reservation 1 MiB is below the minimum of 6 MiB (Docker's minimum too; e.g. 32m)"),
        ("memory_swap: lots", "kiln.yaml:2:21: invalid size \"lots\" (memory plus swap as a size, e.g. 128m, or -1 for unlimited swap)"),
        ("device_read_bps: [{ path: sda, rate: 1mb }]", "kiln.yaml:2:34: invalid device path \"sda\" (a host block device under /dev/, e.g. /dev/sda)"),
        ("device_read_iops: [/dev/sda:1mb]", "kiln.yaml:2:27: invalid rate \"1mb\" (operations per second, a whole number of at least 1, e.g. 1000)"),
        ("device_write_bps: [{ path: /dev/sda }]", "kiln.yaml:2:27: a device_write_bps entry needs \"rate\" (e.g. { path: /dev/sda, rate: 1mb })"),
        ("cpu_shares: 512, cpu_weight: 50", "kiln.yaml:2:25: cpu_shares and cpu_weight are both set (they are one control in two scales (v1 shares 2-262144, v2 weight 1-10000): keep one)"),
        ("memory: 64m, memory_swap: 32m", "kiln.yaml:2:34: memory_swap 32 MiB is less than memory 64 MiB (memory_swap is memory plus swap: at least memory (equal means no swap), or -1 for unlimited swap)"),
        ("memory: 64m, memory_reservation: 1g", "kiln.yaml:2:41: memory_reservation 1 GiB is more than memory 64 MiB (memory_reservation is a soft limit, kept below the hard limit memory)"),
    ] {
        let spec = format!("from: scratch\nrun: {{ {text} }}\n");
        assert_eq!(err(&spec), expected, "{text}");
    }
    // A swap limit alone may get its memory from a flag: checked when the container starts.
    assert_eq!(
        ok("from: scratch\nrun: { memory_swap: 1g }\n")
            .run
            .limits
            .memory_swap,
        Some(MemorySwap::Limit(1 << 30))
    );
    // CPUs and nodes are this machine's.
    let host = units::host_cpus();
    assert!(err(&format!(
        "from: scratch\nrun: {{ cpuset_cpus: \"0,{host}\" }}\n"
    ))
    .contains(&format!(
        "CPU {host} is not on this machine (this machine has CPUs 0"
    )));
    assert!(err("from: scratch\nrun: { cpuset_mems: 1-2 }\n")
        .contains("memory nodes 1,2 are not on this machine (this machine has memory nodes 0)"));
}

#[test]
fn restart_takes_docker_composes_words_and_a_bare_no() {
    let restart = |value: &str| {
        ok(&format!(
            "image: a:1\nfrom: scratch\nrun:\n  restart: {value}\n"
        ))
        .run
        .restart
    };
    assert_eq!(restart("no"), Some(RestartPolicy::No));
    assert_eq!(restart("\"no\""), Some(RestartPolicy::No));
    assert_eq!(restart("always"), Some(RestartPolicy::Always));
    assert_eq!(
        restart("unless-stopped"),
        Some(RestartPolicy::UnlessStopped)
    );
    assert_eq!(
        restart("on-failure:3"),
        Some(RestartPolicy::OnFailure { max: Some(3) })
    );
    assert_eq!(ok("image: a:1\nfrom: scratch\n").run.restart, None);
}

#[test]
fn run_ports_and_rates_read_as_docker_compose_and_tc_write_them() {
    use crate::{PortMapping, Protocol};
    let spec = ok(r#"from: scratch
run:
  network: bridge
  ports:
    - 80
    - "8080:80"
    - 127.0.0.1::53/udp
    - 8000-8001:90-91
    - { target: 443, published: "8443", host_ip: 127.0.0.1, protocol: tcp }
    - { target: 5353, protocol: udp }
    - { target: 22, host_ip: "::1" }
  network_rate_in: 1gbit
  network_rate_out: 8000000
"#);
    let map = |ip: Option<&str>, host: Option<u16>, container: u16, protocol| PortMapping {
        host_ip: ip.map(|i| i.parse().unwrap()),
        host_port: host,
        container_port: container,
        protocol,
    };
    use Protocol::*;
    assert_eq!(
        spec.run.ports,
        [
            map(None, None, 80, Tcp),
            map(None, Some(8080), 80, Tcp),
            map(Some("127.0.0.1"), None, 53, Udp),
            map(None, Some(8000), 90, Tcp),
            map(None, Some(8001), 91, Tcp),
            map(Some("127.0.0.1"), Some(8443), 443, Tcp),
            map(None, None, 5353, Udp),
            map(Some("::1"), None, 22, Tcp),
        ]
    );
    assert_eq!(spec.run.network, Some(Network::Bridge));
    assert_eq!(spec.run.network_rate_in, Some(1_000_000_000));
    assert_eq!(spec.run.network_rate_out, Some(8_000_000));
}
