//! The examples of `examples/` (issue 17, section 7), built and run as their READMEs say.
//!
//! Each README's ```console blocks are a shell session: every `$ ` line is run with `sh -c`
//! in the example's own folder, with `kiln` on `PATH` and `KILN_ROOT` naming the test's
//! private store, and must exit 0; every line the README shows under it must be a line of
//! what it printed (stdout or stderr; runs of blanks count as one; `...` stands for any
//! text, and a line of only `...` for lines the README leaves out). ```sh blocks are not
//! run: they show what a test cannot do as written (a fixed port of the host). Each test
//! then checks what its README only says in words.
//!
//! The Debian base of c-multistage and python-app is made by `examples/debian-base.sh`,
//! as the READMEs run it; its tarball is kept under cargo's `target/tmp`, keyed by the
//! script's text, so mmdebstrap runs once (the script's lock makes the tests that run it
//! at the same time wait for one another) and not again until the script changes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::containers::{run_detached, wait_until};
use common::{require, text, Env};
use serde_json::Value;
use sha2::Digest;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// One `$ ` line of a README's console blocks and the lines shown under it.
struct Shown {
    /// `examples/NAME/README.md:LINE`.
    place: String,
    command: String,
    lines: Vec<String>,
}

fn session(name: &str) -> Vec<Shown> {
    let readme = example(name).join("README.md");
    let content = std::fs::read_to_string(&readme).unwrap();
    let mut shown: Vec<Shown> = Vec::new();
    let mut open = false;
    for (index, line) in content.lines().enumerate() {
        match line.trim_end() {
            "```console" if !open => open = true,
            "```" if open => open = false,
            _ if !open => {}
            line => match line.strip_prefix("$ ") {
                Some(command) => shown.push(Shown {
                    place: format!("examples/{name}/README.md:{}", index + 1),
                    command: command.to_owned(),
                    lines: Vec::new(),
                }),
                None => shown
                    .last_mut()
                    .unwrap_or_else(|| panic!("{readme:?}: a console block starts with output"))
                    .lines
                    .push(line.to_owned()),
            },
        }
    }
    assert!(!open, "{readme:?}: a ```console block is not closed");
    assert!(!shown.is_empty(), "{readme:?} has no ```console session");
    shown
}

/// `line` as the README shows it matches `printed`: the same words, `...` any text.
fn matches(shown: &str, printed: &str) -> bool {
    let squeeze = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let (shown, printed) = (squeeze(shown), squeeze(printed));
    let parts: Vec<&str> = shown.split("...").collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if parts.len() == 1 {
        return shown == printed;
    }
    let Some(mut rest) = printed.strip_prefix(first) else {
        return false;
    };
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Where `debian-base.sh` keeps its tarball for these tests (`XDG_CACHE_HOME`): a folder
/// of cargo's target dir named by the script's digest, so a changed script makes a new one
/// (and the tarballs of its earlier versions, 450 MB each, are removed).
fn debian_cache() -> PathBuf {
    let script = std::fs::read(example("debian-base.sh")).unwrap();
    let digest = hex::encode(sha2::Sha256::digest(&script));
    let name = format!("examples-debian-{}", &digest[..12]);
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let other = entry.file_name().to_string_lossy().into_owned();
        if other.starts_with("examples-debian-") && other != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    tmp.join(name)
}

/// Runs the README session of example `name` as a user types it, checking each command's
/// output against the README; returns what each command printed.
fn play(env: &Env, name: &str) -> Vec<String> {
    // `kiln` on PATH is the binary under test.
    let bin = env.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    if !bin.join("kiln").exists() {
        std::os::unix::fs::symlink(common::kiln_bin(), bin.join("kiln")).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cache = debian_cache();
    std::fs::create_dir_all(&cache).unwrap();
    let mut printed_all = Vec::new();
    for shown in session(name) {
        let out = Command::new("timeout")
            .args(["600", "sh", "-c", &shown.command])
            .current_dir(example(name))
            .env("PATH", &path)
            .env("KILN_ROOT", env.root())
            .env("XDG_CACHE_HOME", &cache)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("KILN_LOG")
            .output()
            .unwrap();
        let printed = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{}: `{}` failed: {}\n{}",
            shown.place,
            shown.command,
            out.status,
            text(&out)
        );
        for line in shown.lines.iter().filter(|l| l.trim() != "...") {
            assert!(
                printed.lines().any(|p| matches(line, p)),
                "{}: `{}` did not print the README's line\n  {line}\nit printed:\n{printed}",
                shown.place,
                shown.command
            );
        }
        printed_all.push(printed);
    }
    printed_all
}

fn kube(env: &Env, args: &[&str]) -> Value {
    common::kube_validated(env, args)
}

fn inspect(env: &Env, name: &str) -> Value {
    serde_json::from_str(&env.kiln_ok(&["inspect", name])).unwrap()
}

#[test]
fn readme_sessions_parse_and_lines_match() {
    assert!(matches("hello from kiln", "hello  from kiln"));
    assert!(!matches("hello from kiln", "hello from kiln!"));
    assert!(matches(
        "built ... in ...: 3 layers",
        "built x:1 in 3ms: 3 layers"
    ));
    assert!(matches("sha256:...", "sha256:abc"));
    assert!(!matches("sha256:...", "built sha256:abc"));
    assert!(!matches("a ... b", "a b"));
    for name in ["hello", "c-multistage", "python-app", "locked-down"] {
        assert!(session(name).len() >= 3, "{name}");
    }
}

/// hello: built, run with its page published on a free port of 127.0.0.1, fetched with
/// curl from the host (the one test here on kiln's bridge network).
#[test]
fn hello_serves_its_page_on_a_published_port() {
    common::require_root!("namespaces, overlayfs, kiln's bridge");
    require("busybox", "busybox-static");
    require("curl", "curl");
    require("nft", "nftables");
    let env = Env::new();
    play(&env, "hello");
    let image = inspect(&env, "hello");
    assert_eq!(image["config"]["config"]["User"], "65534:65534", "{image}");
}

/// c-multistage: a Debian builder stage compiles a static binary; the image is that one
/// file, with no shell.
#[test]
fn c_multistage_builds_a_static_binary_into_a_scratch_image() {
    common::require_root!("namespaces, overlayfs");
    require("mmdebstrap", "mmdebstrap");
    require("flock", "util-linux");
    let env = Env::new();
    play(&env, "c-multistage");
    let image = inspect(&env, "hello-c");
    let layers = image["manifest"]["layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        1,
        "only the final stage is the image: {image}"
    );
    let size = layers[0]["size"].as_u64().unwrap();
    assert!(size < 2 << 20, "one static binary, not {size} bytes");
    // Nothing of Debian: the binary is alone.
    let out = env.kiln(&["run", "--rm", "--entrypoint", "/bin/ls", "hello-c"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
}

/// python-app: a pip-installed package, offline, run as its own user, healthy by its own
/// healthcheck, with pip's cache mount kept out of the image.
#[test]
fn python_app_answers_as_a_non_root_user() {
    common::require_root!("namespaces, overlayfs, cgroups");
    require("mmdebstrap", "mmdebstrap");
    require("flock", "util-linux");
    let env = Env::new();
    let printed = play(&env, "python-app");
    // Every build step ran without a network: the spec says so on each run step.
    let spec = std::fs::read_to_string(example("python-app/kiln.yaml")).unwrap();
    assert_eq!(
        spec.matches("  - run:").count(),
        spec.matches("network: none").count(),
        "every run step of python-app is offline"
    );
    assert!(printed
        .iter()
        .any(|p| p.contains("Successfully installed greeter-1.0.0")));

    let app = run_detached(&env, &["--name", "app", "--network", "none", "python-app"]);
    wait_until(Duration::from_secs(60), "python-app healthy", || {
        env.kiln_ok(&["inspect", "-f", "{{.State.Health.Status}}", &app]) == "healthy"
    });
    let status = env.kiln_ok(&["exec", &app, "grep", "CapEff", "/proc/self/status"]);
    assert!(status.ends_with("0000000000000000"), "{status}");
    assert_eq!(env.kiln_ok(&["exec", &app, "id", "-u"]), "1000");
    assert_eq!(
        env.kiln_ok(&["exec", &app, "greeter", "--get", "/health"]),
        "ok"
    );
    let missing = env.kiln(&["exec", &app, "greeter", "--get", "/nothing"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    // pip's cache was a mount: nothing of it is in the image.
    let out = env.kiln(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-u",
        "0",
        "--entrypoint",
        "ls",
        "python-app",
        "/root/.cache",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    // The spec's limits hold.
    let container = inspect(&env, &app);
    assert_eq!(container["HostConfig"]["Memory"], 128 << 20, "{container}");
    assert_eq!(container["HostConfig"]["ReadonlyRootfs"], true);
}

/// locked-down: read-only root, no capabilities, a user of its own, limits, and a Pod and
/// a Deployment Kubernetes accepts, with the same restrictions.
#[test]
fn locked_down_is_confined_and_becomes_a_valid_pod() {
    common::require_root!("namespaces, overlayfs, cgroups");
    require("busybox", "busybox-static");
    let env = Env::new();
    play(&env, "locked-down");

    let svc = run_detached(&env, &["--name", "svc", "--network", "none", "locked-down"]);
    wait_until(Duration::from_secs(10), "the service's page", || {
        env.kiln(&["exec", &svc, "wget", "-q", "-O-", "http://127.0.0.1:8080/"])
            .status
            .success()
    });
    // The service's own process, not only what exec gets.
    let status = env.kiln_ok(&[
        "exec",
        &svc,
        "sh",
        "-c",
        "grep Cap /proc/$(pidof httpd)/status",
    ]);
    assert_eq!(status.lines().count(), 5, "{status}");
    for line in status.lines() {
        assert!(line.ends_with("0000000000000000"), "{status}");
    }
    let out = env.kiln(&["exec", &svc, "sh", "-c", "echo x > /probe"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Read-only file system"),
        "{}",
        text(&out)
    );
    let container = inspect(&env, &svc);
    let host = &container["HostConfig"];
    assert_eq!(host["Memory"], 32 << 20, "{container}");
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(host["PidsLimit"], 16);
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(container["Config"]["User"], "1000:1000");

    for args in [
        &["locked-down"][..],
        &["--deployment", "locked-down"],
        &["svc"],
    ] {
        let manifest = kube(&env, args);
        let pod = match manifest["kind"].as_str() {
            Some("Pod") => &manifest["spec"],
            Some("Deployment") => &manifest["spec"]["template"]["spec"],
            other => panic!("{other:?}: {manifest}"),
        };
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "localhost/locked-down:latest");
        assert_eq!(c["resources"]["limits"]["memory"], "33554432", "{manifest}");
        assert_eq!(c["resources"]["limits"]["cpu"], "500m");
        let security = &c["securityContext"];
        assert_eq!(
            security["capabilities"],
            serde_json::json!({"drop": ["ALL"]})
        );
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["runAsUser"], 1000);
        assert_eq!(security["runAsGroup"], 1000);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
        // The tmpfs a read-only root writes to: a memory-backed emptyDir at its path.
        assert_eq!(
            c["volumeMounts"],
            serde_json::json!([{"name": "tmpfs-1", "mountPath": "/run/www"}]),
            "{manifest}"
        );
        assert_eq!(
            pod["volumes"],
            serde_json::json!([{"name": "tmpfs-1", "emptyDir": {"medium": "Memory"}}])
        );
    }
}
