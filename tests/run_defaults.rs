//! The spec's `run:` defaults kept with a tag in index.json: when they cannot be read, the
//! image does not run without them (no limits, no dropped capabilities); `kiln run`,
//! `kiln bundle` and `kiln inspect` say so, say how to fix it, and exit 1.

mod common;

use common::{text, Env};

const SPEC: &str = r#"
image: limited:latest
from: base
steps:
  - run: echo built > /built
run:
  memory: 64m
  pids: 64
  capabilities: { drop: [ALL] }
"#;

/// Replaces the run-defaults annotation of the tag `name` in index.json with `value`.
fn set_run_defaults(env: &Env, name: &str, value: &str) {
    let path = env.root().join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut edited = 0;
    for entry in index["manifests"].as_array_mut().unwrap() {
        let annotations = &mut entry["annotations"];
        if annotations["org.opencontainers.image.ref.name"] == name {
            assert!(
                annotations.get("dev.kiln.run-defaults").is_some(),
                "{index}"
            );
            annotations["dev.kiln.run-defaults"] = value.into();
            edited += 1;
        }
    }
    assert_eq!(edited, 1, "{index}");
    std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// `kiln build` in the project folder.
fn build(env: &Env) {
    let out = env.kiln_in("project", &["build"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn unreadable_run_settings_stop_run_bundle_and_inspect_with_the_remedy() {
    common::require_root!("namespaces, overlayfs, cgroups");
    // Failed before: the broken settings read as none, so `kiln run` started the
    // container without the memory limit and with Docker's capabilities, exit 0.
    let env = Env::new();
    let rootfs = common::busybox_rootfs(&env, "rootfs");
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "base"]);
    env.write("project/kiln.yaml", SPEC);
    build(&env);
    // Intact, the settings apply: no capabilities at all.
    let caps = env.kiln_ok(&[
        "run",
        "--rm",
        "limited",
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert!(caps.ends_with("0000000000000000"), "{caps}");

    let name = "localhost/limited:latest";
    set_run_defaults(&env, name, r#"{"memory": 67108864, "cap_drop": ["AL"#);
    let bundle = env.path("bundle");
    let bundle = bundle.to_str().unwrap();
    for args in [
        &["run", "--rm", "limited", "true"][..],
        &["bundle", "limited", bundle],
        &["inspect", "limited"],
    ] {
        let out = env.kiln(args);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "kiln {args:?}: {all}");
        assert!(
            all.contains(
                "error: localhost/limited:latest: the stored run settings \
                 (dev.kiln.run-defaults in index.json) are unreadable"
            ),
            "kiln {args:?}: {all}"
        );
        assert!(
            all.contains("hint: rebuild it with kiln build"),
            "kiln {args:?}: {all}"
        );
        assert!(out.stdout.is_empty(), "kiln {args:?} printed: {all}");
    }
    assert!(!env.path("bundle/config.json").exists());

    // A rebuild stores the settings again; another name of the same image with intact
    // settings is offered as the source of a retag.
    build(&env);
    env.kiln_ok(&["tag", "limited", "limited:good"]);
    set_run_defaults(&env, name, "not json");
    let out = env.kiln(&["run", "--rm", "limited", "true"]);
    assert!(
        text(&out).contains("kiln tag localhost/limited:good localhost/limited:latest"),
        "{}",
        text(&out)
    );
    env.kiln_ok(&["tag", "limited:good", "limited"]);
    env.kiln_ok(&["run", "--rm", "limited", "true"]);
}

/// A spec whose `run:` settings restrict (a memory limit, a read-only root, no
/// capabilities, a user), grant one privilege (NET_ADMIN) and set environment from the
/// spec and from an env file on the build machine.
const TRAVELLING: &str = r#"
image: travels:1
from: base
steps:
  - run: echo built > /built
    network: none
run:
  memory: 64m
  read_only: true
  user: "65534"
  network: none
  capabilities: { drop: [ALL], add: [NET_ADMIN] }
  env:
    GREETING: hello
  env_file: [secret.env]
"#;

#[test]
fn run_settings_travel_with_the_image_through_a_registry() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    let rootfs = common::busybox_rootfs(&env, "rootfs");
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "base"]);
    env.write("project/kiln.yaml", TRAVELLING);
    env.write("project/secret.env", "TOKEN=s3cret\n");
    build(&env);
    // The image carries them as a config label, without the build machine's env file.
    let label = env.kiln_ok(&[
        "inspect",
        "-f",
        r#"{{index .config.config.Labels "dev.kiln.run"}}"#,
        "travels:1",
    ]);
    assert!(
        label.contains("GREETING") && label.contains("67108864"),
        "{label}"
    );
    assert!(
        !label.contains("s3cret") && !label.contains("secret.env"),
        "{label}"
    );

    let registry = common::registry::Registry::start(env.dir.path());
    let reference = format!("{}/travel/t:1", registry.host());
    env.kiln_ok(&["push", "travels:1", &reference]);
    let other = Env::new();
    other.kiln_ok(&["pull", &reference]);
    let from = other.kiln_ok(&[
        "inspect",
        "-f",
        "{{.run_settings_from}} {{.run_settings.memory}} {{.run_settings.read_only}}",
        &reference,
    ]);
    assert_eq!(from, "elsewhere 67108864 true");

    // Pulled elsewhere, the restrictions apply; the privilege is refused, and said so.
    // (A user other than root has no effective capabilities: the bounding set tells.)
    let script = "id -u; touch /x 2>/dev/null || echo read-only; grep CapBnd /proc/self/status; echo $GREETING ${TOKEN:-no-token}";
    let out = other.kiln(&["run", "--rm", &reference, "sh", "-c", script]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "65534",
            "read-only",
            "CapBnd: 0000000000000000",
            "hello no-token"
        ],
        "{said}"
    );
    assert!(
        said.contains("refused") && said.contains("NET_ADMIN"),
        "{said}"
    );
    let out = other.kiln(&[
        "run",
        "--rm",
        "--allow-image-privileges",
        &reference,
        "grep",
        "CapBnd",
        "/proc/self/status",
    ]);
    assert!(text(&out).contains("0000000000001000"), "{}", text(&out));
    // The memory limit is the container's too.
    other.kiln_ok(&["run", "-d", "--name", "limited", &reference, "sleep", "60"]);
    assert_eq!(
        other.kiln_ok(&["inspect", "-f", "{{.HostConfig.Memory}}", "limited"]),
        (64u64 << 20).to_string()
    );
    other.kiln_ok(&["rm", "-f", "limited"]);
}

#[test]
fn an_image_from_elsewhere_publishes_no_host_port_on_its_own() {
    common::require_root!("namespaces, overlayfs, cgroups, network");
    let env = Env::new();
    let rootfs = common::busybox_rootfs(&env, "rootfs");
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "base"]);
    let port = common::free_port();
    env.write(
        "project/kiln.yaml",
        &format!("image: opens:1\nfrom: base\nrun:\n  ports: [\"{port}:80\"]\n"),
    );
    build(&env);
    // Built here, its ports are published (and named, as a grant).
    env.kiln_ok(&["run", "-d", "--name", "here", "opens:1", "sleep", "60"]);
    assert_eq!(
        env.kiln_ok(&["port", "here"]),
        format!("80/tcp -> 0.0.0.0:{port}")
    );
    env.kiln_ok(&["rm", "-f", "here"]);

    // The same image pulled elsewhere carries the setting, but does not open the port.
    let registry = common::registry::Registry::start(env.dir.path());
    let reference = format!("{}/open/o:1", registry.host());
    env.kiln_ok(&["push", "opens:1", &reference]);
    let other = Env::new();
    other.kiln_ok(&["pull", &reference]);
    let out = other.kiln(&["run", "-d", "--name", "there", &reference, "sleep", "60"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("publish 0.0.0.0:{port}:80/tcp")),
        "{}",
        text(&out)
    );
    assert_eq!(other.kiln_ok(&["port", "there"]), "");
    other.kiln_ok(&["rm", "-f", "there"]);
    let out = other.kiln(&[
        "run",
        "-d",
        "--name",
        "allowed",
        "--allow-image-privileges",
        &reference,
        "sleep",
        "60",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        other.kiln_ok(&["port", "allowed"]),
        format!("80/tcp -> 0.0.0.0:{port}")
    );
    other.kiln_ok(&["rm", "-f", "allowed"]);
}
