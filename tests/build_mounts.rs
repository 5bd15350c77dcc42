//! `cache:` mounts and `secrets:` of run steps, end to end: what persists, and what must
//! never reach a layer, the image's history, the build cache or the log.

mod common;

use std::path::Path;
use std::process::Command;

use common::{run, text, Env};

fn setup() -> Env {
    let env = Env::unprivileged();
    let rootfs = common::busybox_rootfs(&env, "rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    // /var exists in the image, /var/cache and /run do not: mount points are made for both.
    std::fs::create_dir_all(rootfs.join("var")).unwrap();
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "base"]);
    env
}

const CACHE_SPEC: &str = r#"
image: counted:latest
from: base
steps:
  - run: |
      echo run >> /var/cache/pkg/count
      wc -l < /var/cache/pkg/count > /seen
    cache: [/var/cache/pkg]
"#;

#[test]
fn cache_mounts_persist_between_builds_and_stay_out_of_the_image() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    env.write("ctx/kiln.yaml", CACHE_SPEC);
    let ctx = env.path("ctx");
    env.kiln_ok(&["build", ctx.to_str().unwrap()]);
    assert_eq!(
        env.kiln_ok(&["run", "--rm", "counted", "cat", "/seen"]),
        "1"
    );
    // The cache mount is not part of the key: an unchanged step stays cached...
    env.kiln_ok(&["build", ctx.to_str().unwrap()]);
    assert_eq!(
        env.kiln_ok(&["run", "--rm", "counted", "cat", "/seen"]),
        "1"
    );
    // ...and when it runs again, it finds what the last run left.
    env.kiln_ok(&["build", "--no-cache", ctx.to_str().unwrap()]);
    assert_eq!(
        env.kiln_ok(&["run", "--rm", "counted", "cat", "/seen"]),
        "2"
    );
    // Neither the cache's content nor its mount point is in the image.
    let listing = env.kiln_ok(&["run", "--rm", "counted", "ls", "-A", "/var"]);
    assert_eq!(listing, "", "/var should be as empty as in the base image");
    for layer in layer_listings(&env, "counted") {
        assert!(
            !layer.contains("var/cache"),
            "a layer holds the cache: {layer}"
        );
    }
}

const SECRET_VALUE: &str = "s3cr3t-kiln-value-0451";

const SECRET_SPEC: &str = r#"
image: secretive:latest
from: base
steps:
  - run: |
      wc -c < /run/secrets/token > /token-length
      stat -c %a /run/secrets/token > /mode
      wc -c < /etc/apitoken > /length
    secrets:
      - { id: token, source: ./token.txt }
      - { id: api, env: KILN_TEST_API_TOKEN, target: /etc/apitoken }
"#;

#[test]
fn secrets_are_readable_in_their_step_and_nowhere_else() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    env.write("ctx/kiln.yaml", SECRET_SPEC);
    env.write("ctx/token.txt", SECRET_VALUE);
    let out = build_with_api_token(&env);
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret_in(&String::from_utf8_lossy(&out.stderr), "the build log");
    assert_eq!(
        env.kiln_ok(&["run", "--rm", "secretive", "cat", "/mode"]),
        "400"
    );
    assert_eq!(
        env.kiln_ok(&["run", "--rm", "secretive", "cat", "/token-length"]),
        SECRET_VALUE.len().to_string()
    );
    assert_eq!(
        env.kiln_ok(&["run", "--rm", "secretive", "cat", "/length"]),
        SECRET_VALUE.len().to_string()
    );
    let absent = env.kiln_ok(&[
        "run",
        "--rm",
        "secretive",
        "sh",
        "-c",
        "test ! -e /run && test ! -e /etc/apitoken && echo absent",
    ]);
    assert_eq!(absent, "absent", "a secret's mount point is in the image");
    assert_store_has_no_secret(&env);
}

#[test]
fn a_failing_step_with_a_secret_leaks_nothing() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    env.write(
        "ctx/kiln.yaml",
        &SECRET_SPEC.replace("wc -c < /etc/apitoken > /length", "exit 3"),
    );
    env.write("ctx/token.txt", SECRET_VALUE);
    let out = build_with_api_token(&env);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_no_secret_in(&text(&out), "the failed build's output");
    assert_store_has_no_secret(&env);
}

#[test]
fn a_missing_secret_is_a_clear_error_before_any_step() {
    let env = setup();
    env.write("ctx/kiln.yaml", SECRET_SPEC);
    let out = build_with_api_token(&env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("secret \"token\""), "{all}");
    assert!(all.contains("token.txt"), "{all}");
    assert!(!all.contains("[1/1]"), "a step ran: {all}");
}

/// `kiln build ctx` with the `api` secret's variable set.
fn build_with_api_token(env: &Env) -> std::process::Output {
    env.command()
        .args(["build", env.path("ctx").to_str().unwrap()])
        .env("KILN_TEST_API_TOKEN", SECRET_VALUE)
        .output()
        .unwrap()
}

fn assert_no_secret_in(haystack: &str, what: &str) {
    assert!(!haystack.contains(SECRET_VALUE), "the secret is in {what}");
}

/// Greps every file of the store, with every layer blob decompressed.
fn assert_store_has_no_secret(env: &Env) {
    let root = env.root();
    let grep = Command::new("grep")
        .args(["-r", "-l", SECRET_VALUE])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "the secret is in the store: {}",
        String::from_utf8_lossy(&grep.stdout)
    );
    for layer in all_blob_contents(&root) {
        assert_no_secret_in(&layer, "a decompressed blob");
    }
}

/// Every blob of the store as text, decompressed when it is a zstd or gzip stream.
fn all_blob_contents(root: &Path) -> Vec<String> {
    let blobs = root.join("blobs/sha256");
    std::fs::read_dir(blobs)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let raw = std::fs::read(&path).unwrap();
            let decompressed = match raw.get(..4) {
                Some([0x28, 0xb5, 0x2f, 0xfd]) => {
                    run(Command::new("zstd").args(["-dc"]).arg(&path))
                }
                Some([0x1f, 0x8b, ..]) => run(Command::new("gzip").args(["-dc"]).arg(&path)),
                _ => String::from_utf8_lossy(&raw).into_owned(),
            };
            decompressed
        })
        .collect()
}

/// The file list of each layer of `image` (zstd tar blobs), via `tar -t`.
fn layer_listings(env: &Env, image: &str) -> Vec<String> {
    let inspect: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["inspect", image])).unwrap();
    inspect["manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
            let blob = env.root().join("blobs/sha256").join(digest);
            run(Command::new("sh")
                .arg("-c")
                .arg("zstd -dc \"$1\" | tar -t")
                .arg("sh")
                .arg(blob))
        })
        .collect()
}

#[test]
fn a_non_root_step_can_keep_its_cache() {
    common::require_root!("namespaces, overlayfs");
    let env = setup();
    env.write(
        "ctx/kiln.yaml",
        r#"
image: nobody-cache:latest
from: base
steps:
  - user: nobody
  - run: echo kept >> /home-cache/file
    cache: [/home-cache]
"#,
    );
    let ctx = env.path("ctx");
    env.kiln_ok(&["build", ctx.to_str().unwrap()]);
    env.kiln_ok(&["build", "--no-cache", ctx.to_str().unwrap()]);
    // The cache dir is the store's; find it and check both runs wrote to it as nobody.
    let mounts = env.root().join("cache/mounts");
    let dir = std::fs::read_dir(&mounts)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = dir.join("file");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "kept\nkept\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), 65534);
}
