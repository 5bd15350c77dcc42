//! The build cache shared through a registry (`kiln build --cache-to/--cache-from`),
//! against the real registry (Debian's `docker-registry`): a second store rebuilds an
//! unchanged spec without running a step, a changed step reruns from there on, and a
//! cache that lies is caught.

#[macro_use]
mod common;

use std::path::Path;
use std::process::Command;

use common::registry::Registry;
use common::{run, text, Env};

/// A ten-step spec on a busybox copied from the host: a copy, the install, an env step
/// and seven runs (steps 4–10), every run step off the network. `changed` alters step 7.
fn write_spec(env: &Env, project: &str, changed: bool) {
    let mut spec = String::from(
        "image: app:latest\nfrom: scratch\ncontexts: { hostbin: /bin }\nsteps:\n  - copy: busybox\n    from: hostbin\n    to: /bin/busybox\n    mode: \"0755\"\n  - run: [/bin/busybox, --install, -s, /bin]\n    network: none\n  - env: { GREETING: hello }\n",
    );
    for n in 4..=10 {
        let suffix = if changed && n == 7 { ", changed" } else { "" };
        spec.push_str(&format!(
            "  - run: echo \"step{n}{suffix}\" > /step{n}\n    network: none\n"
        ));
    }
    spec.push_str("config:\n  cmd: [cat, /step7]\n");
    env.write(&format!("{project}/kiln.yaml"), &spec);
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "kiln failed: {}", text(out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Blob downloads the registry served since its start.
fn blob_gets(registry: &Registry) -> usize {
    std::fs::read_to_string(&registry.log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
        .count()
}

#[test]
fn an_empty_store_rebuilds_from_the_registry_cache_without_running_a_step() {
    require_root!("build steps run in namespaces over overlayfs");
    let a = Env::new();
    let registry = Registry::start(a.dir.path());
    let cache = format!("{}/app:buildcache", registry.host());
    write_spec(&a, "app", false);
    let out = a.kiln_in("app", &["build", "--cache-to", &cache]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("exported build cache to {cache}: 9 step records")),
        "{}",
        text(&out)
    );
    let built = a.kiln_ok(&["images", "--json"]);
    let digest_a = image_digest(&built);

    // Store B is empty: every step comes from the cache, none runs.
    let b = Env::new();
    write_spec(&b, "app", false);
    let out = b.kiln_in("app", &["build", "--cache-from", &cache]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert_eq!(
        shown
            .matches(&format!("cached, from registry cache {cache}"))
            .count(),
        9,
        "{shown}"
    );
    assert!(
        shown.contains("0 steps run, 10 cached") || shown.contains("; 0 steps run"),
        "{shown}"
    );
    let digest_b = image_digest(&b.kiln_ok(&["images", "--json"]));
    assert_eq!(digest_a, digest_b, "the same image, digest for digest");
    // The layers arrived whole: the image runs and the store checks out.
    let out = b.kiln(&["run", "--rm", "--network", "none", "app"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "step7",
        "{}",
        text(&out)
    );
    b.kiln_ok(&["fsck"]);
    // The records joined B's own cache: offline, the next build is cached too.
    let out = b.kiln_in("app", &["build", "--json"]);
    assert_eq!(json_of(&out)["steps_run"], 0);

    // A changed step 7 on another empty store: steps 1–6 come from the cache (their
    // layers only: the cache's later ones are not fetched), 7–10 run.
    let c = Env::new();
    write_spec(&c, "app", true);
    let before = blob_gets(&registry);
    let out = c.kiln_in("app", &["build", "--cache-from", &cache, "--json"]);
    let result = json_of(&out);
    assert_eq!(result["steps_run"], 4, "{}", text(&out));
    assert_eq!(result["steps_cached"], 5, "{}", text(&out));
    let fetched = blob_gets(&registry) - before;
    // The cache document, and the layers of the copy, the install and steps 4–6.
    assert_eq!(
        fetched,
        1 + 5,
        "{}",
        std::fs::read_to_string(&registry.log).unwrap()
    );
    let out = c.kiln(&["run", "--rm", "--network", "none", "app"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "step7, changed"
    );
}

#[test]
fn a_multi_stage_build_is_cached_whole_and_its_plan_fetches_only_what_a_copy_reads() {
    require_root!("build steps run in namespaces over overlayfs");
    let a = Env::new();
    let registry = Registry::start(a.dir.path());
    let cache = format!("{}/multi:cache", registry.host());
    let spec = "image: multi:latest\ncontexts: { hostbin: /bin }\nstages:\n  builder:\n    from: scratch\n    steps:\n      - copy: busybox\n        from: hostbin\n        to: /bin/busybox\n        mode: \"0755\"\n      - run: [/bin/busybox, sh, -c, \"echo built > /artifact\"]\n        network: none\n  final:\n    from: scratch\n    steps:\n      - copy: /artifact\n        from: builder\n        to: /artifact\n";
    a.write("p/kiln.yaml", spec);
    let out = a.kiln_in(
        "p",
        &[
            "build",
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let digest_a = image_digest(&a.kiln_ok(&["images", "--json"]));

    let b = Env::new();
    b.write("p/kiln.yaml", spec);
    let before = blob_gets(&registry);
    let out = b.kiln_in("p", &["build", "--plan", "--cache-from", &cache]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).matches("cached, from registry cache").count(),
        3,
        "{}",
        text(&out)
    );
    // The records, and the builder's two layers the final stage's copy must read to know
    // its key; the final stage's own layer stays in the registry.
    assert_eq!(blob_gets(&registry) - before, 1 + 2, "{}", text(&out));
    assert!(b.kiln_ok(&["images", "-q"]).is_empty());

    let out = b.kiln_in("p", &["build", "--cache-from", &cache, "--json"]);
    assert_eq!(json_of(&out)["steps_run"], 0, "{}", text(&out));
    assert_eq!(digest_a, image_digest(&b.kiln_ok(&["images", "--json"])));
}

#[test]
fn a_missing_or_foreign_cache_is_passed_over_with_a_warning() {
    require_root!("build steps run in namespaces over overlayfs");
    let env = Env::new();
    let registry = Registry::start(env.dir.path());
    write_spec(&env, "app", false);
    let missing = format!("{}/nothing:here", registry.host());
    let out = env.kiln_in("app", &["build", "--cache-from", &missing]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "warning: registry cache {missing} not found: building without it"
        )),
        "{}",
        text(&out)
    );
    // An image is not a cache.
    let image = format!("{}/app:latest", registry.host());
    env.kiln_ok(&["push", "app", &image]);
    let other = Env::new();
    write_spec(&other, "app", false);
    let out = other.kiln_in("app", &["build", "--cache-from", &image, "--json"]);
    assert!(
        text(&out).contains("not a kiln build cache"),
        "{}",
        text(&out)
    );
    assert_eq!(json_of(&out)["steps_run"], 9);
    // Flags a docker user types: a type kiln has no such cache for is a usage error.
    let out = env.kiln_in("app", &["build", "--cache-to", "type=local,dest=/tmp/x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("type=local"), "{}", text(&out));
}

/// A registry that cannot be reached: exporting fails the build (the image is built and
/// tagged, and the error says so), unless BuildKit's `ignore-error=true` makes it a warning.
#[test]
fn a_failed_export_fails_the_build_unless_ignore_error_is_given() {
    require_root!("build steps run in namespaces over overlayfs");
    let env = Env::new();
    write_spec(&env, "app", false);
    let closed = format!("127.0.0.1:{}/app:buildcache", common::free_port());
    let out = env.kiln_in("app", &["build", "--cache-to", &closed]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "the image was built, but exporting its build cache to {closed} failed"
        )),
        "{}",
        text(&out)
    );
    let buildkit_line = format!(
        "type=registry,ref={closed},mode=max,image-manifest=true,oci-mediatypes=true,ignore-error=true"
    );
    let out = env.kiln_in("app", &["build", "--cache-to", &buildkit_line]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("warning: the image was built, but exporting"),
        "{}",
        text(&out)
    );
    assert!(env.kiln_ok(&["images"]).contains("localhost/app"));
}

/// A cache whose record gives a layer another diff_id than its content has: the build
/// stops when the layer is fetched, names the cache, and tags nothing.
#[test]
fn a_cache_that_lies_about_a_layer_fails_the_build_and_tags_nothing() {
    require_root!("build steps run in namespaces over overlayfs");
    let a = Env::new();
    let registry = Registry::start(a.dir.path());
    let cache = format!("{}/app:buildcache", registry.host());
    write_spec(&a, "app", false);
    let out = a.kiln_in("app", &["build", "--cache-to", &cache]);
    assert!(out.status.success(), "{}", text(&out));
    let evil = forge_cache(a.dir.path(), &registry, "app", "buildcache", "evil");

    let b = Env::new();
    write_spec(&b, "app", false);
    let out = b.kiln_in("app", &["build", "--cache-from", &evil]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("fetching a cached layer from {evil}")),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("diff"), "{}", text(&out));
    assert!(b.kiln_ok(&["images", "-q"]).is_empty(), "nothing tagged");
    b.kiln_ok(&["fsck"]);
}

/// Copies the cache `repo:tag` to `repo:new_tag` with every record's diff_id swapped for
/// the next record's, through the registry's own API (curl), and returns its reference.
fn forge_cache(dir: &Path, registry: &Registry, repo: &str, tag: &str, new_tag: &str) -> String {
    common::require("curl", "curl");
    let base = format!("http://{}/v2/{repo}", registry.host());
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json";
    let manifest =
        run(Command::new("curl").args(["-fsS", "-H", accept, &format!("{base}/manifests/{tag}")]));
    let mut manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let document =
        run(Command::new("curl").args(["-fsS", &format!("{base}/blobs/{config_digest}")]));
    let mut document: serde_json::Value = serde_json::from_str(&document).unwrap();
    let records = document["records"].as_array_mut().unwrap();
    let diff_ids: Vec<serde_json::Value> = records.iter().map(|r| r["diff_id"].clone()).collect();
    let with_layers: Vec<usize> = (0..records.len())
        .filter(|&i| !diff_ids[i].is_null())
        .collect();
    for (n, &i) in with_layers.iter().enumerate() {
        let next = with_layers[(n + 1) % with_layers.len()];
        records[i]["diff_id"] = diff_ids[next].clone();
    }
    let bytes = serde_json::to_vec(&document).unwrap();
    let file = dir.join("forged-config.json");
    std::fs::write(&file, &bytes).unwrap();
    let digest = run(Command::new("sha256sum").arg(&file));
    let digest = format!("sha256:{}", digest.split_whitespace().next().unwrap());
    let location = run(Command::new("curl").args([
        "-fsS",
        "-X",
        "POST",
        "-o",
        "/dev/null",
        "-w",
        "%header{location}",
        &format!("{base}/blobs/uploads/"),
    ]));
    let sep = if location.contains('?') { '&' } else { '?' };
    let upload = match location.starts_with("http") {
        true => format!("{location}{sep}digest={digest}"),
        false => format!("http://{}{location}{sep}digest={digest}", registry.host()),
    };
    run(Command::new("curl").args([
        "-fsS",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &upload,
    ]));
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = bytes.len().into();
    let manifest_file = dir.join("forged-manifest.json");
    std::fs::write(&manifest_file, serde_json::to_vec(&manifest).unwrap()).unwrap();
    run(Command::new("curl").args([
        "-fsS",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &format!("@{}", manifest_file.display()),
        &format!("{base}/manifests/{new_tag}"),
    ]));
    format!("{}/{repo}:{new_tag}", registry.host())
}

fn image_digest(images_json: &str) -> String {
    let images: serde_json::Value = serde_json::from_str(images_json).unwrap();
    let list = images.as_array().expect("a JSON list");
    assert_eq!(list.len(), 1, "{images_json}");
    list[0]["digest"].as_str().unwrap().to_owned()
}
