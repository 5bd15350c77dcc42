//! `kiln kube` (issue 17, section 3): the Pod or Deployment that runs an image or a
//! container as kiln does, checked against Kubernetes' own schemas offline
//! (kubernetes-validate, `--strict`: no field Kubernetes does not know) and read back for
//! what it must keep: limits, capabilities, user, read-only root, ports, command, env.

mod common;

use common::containers::busybox_image;
use common::{text, Env};
use serde_json::Value;

const SPEC: &str = r#"
image: locked:1
from: bb
steps:
  - run: |
      echo 'app:x:1000:1000:app:/home/app:/bin/sh' >> /etc/passwd
      mkdir -p /home/app && chown 1000 /home/app
    network: none
config:
  cmd: [httpd, -f, -p, "8080"]
  workdir: /home/app
run:
  memory: 64m
  cpus: 0.5
  read_only: true
  user: app
  capabilities: { drop: [ALL], add: [NET_BIND_SERVICE] }
  ports: ["8080:8080"]
  env:
    MODE: production
"#;

fn kube(env: &Env, args: &[&str]) -> Value {
    common::kube_validated(env, args)
}

#[test]
fn an_images_run_settings_become_a_valid_pod_and_deployment() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    busybox_image(&env);
    env.write("app/kiln.yaml", SPEC);
    env.kiln_ok(&["build", env.path("app").to_str().unwrap()]);

    let pod = kube(&env, &["locked:1"]);
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["name"], "locked");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], "localhost/locked:1");
    assert_eq!(c["command"], serde_json::json!(["httpd"]));
    assert_eq!(c["args"], serde_json::json!(["-f", "-p", "8080"]));
    assert_eq!(c["workingDir"], "/home/app");
    assert!(c["env"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!({"name": "MODE", "value": "production"})));
    assert_eq!(
        c["ports"],
        serde_json::json!([{"containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(c["resources"]["limits"]["memory"], "67108864");
    assert_eq!(c["resources"]["limits"]["cpu"], "500m");
    let security = &c["securityContext"];
    assert_eq!(
        security["capabilities"],
        serde_json::json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})
    );
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["runAsUser"], 1000);
    assert_eq!(security["runAsGroup"], 1000);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");

    let deployment = kube(&env, &["--deployment", "--name", "web-1", "locked:1"]);
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"]["app"],
        "web-1"
    );
    let template = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(template["securityContext"], *security);

    let out = env.kiln(&["kube", "--name", "Web_1", "locked:1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not a Kubernetes name"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_containers_own_flags_become_its_pod() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    env.kiln_ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "--network",
        "none",
        "--memory",
        "32m",
        "--memory-reservation",
        "16m",
        "--pids-limit",
        "64",
        "--ulimit",
        "nofile=128",
        "--sysctl",
        "net.ipv4.ip_unprivileged_port_start=0",
        "--userns",
        "auto",
        "--cap-drop",
        "ALL",
        "-e",
        "LEVEL=debug",
        "bb",
        "sleep",
        "60",
    ]);
    let pod = kube(&env, &["svc"]);
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["command"], serde_json::json!(["sleep"]));
    assert_eq!(c["args"], serde_json::json!(["60"]));
    assert_eq!(c["resources"]["limits"]["memory"], "33554432");
    assert_eq!(c["resources"]["requests"]["memory"], "16777216");
    assert_eq!(
        pod["spec"]["securityContext"]["sysctls"],
        serde_json::json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}])
    );
    assert_eq!(pod["spec"]["hostUsers"], false);
    // What a Pod cannot hold the container to is said, each once, on stderr.
    let out = env.kiln(&["kube", "svc"]);
    let said = String::from_utf8_lossy(&out.stderr);
    for lost in ["the pids limit", "ulimits", "network none"] {
        assert!(
            said.contains(&format!("warning: a Pod cannot carry {lost}")),
            "{said}"
        );
    }
    assert_eq!(said.matches("warning:").count(), 3, "{said}");
    // Its image is only in the store: said, and --image names where it was pushed.
    assert!(
        said.contains("note: localhost/bb:latest is in kiln's store only"),
        "{said}"
    );
    let pushed = kube(&env, &["svc", "--image", "reg.example:5000/team/bb@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"]);
    assert_eq!(
        pushed["spec"]["containers"][0]["image"],
        "reg.example:5000/team/bb@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    let out = env.kiln(&["kube", "svc", "--image", "Not A Reference"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        c["securityContext"]["capabilities"],
        serde_json::json!({"drop": ["ALL"]})
    );
    assert!(c["env"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!({"name": "LEVEL", "value": "debug"})));
    env.kiln_ok(&["rm", "-f", "svc"]);
}
