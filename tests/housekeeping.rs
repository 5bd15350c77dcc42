//! `kiln fsck` and `kiln gc` on real stores made by real builds, runs and rmi's: what gc
//! removes and keeps, what fsck finds, and gc waiting for a writer's content guard.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Output;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{text, Env};
use kiln_image::Image;
use kiln_store::{Digest, StepRecord, Store};

/// Two images on the same busybox base layer, each with one layer of its own.
fn two_images(env: &Env) {
    common::busybox_rootfs(env, "base");
    for name in ["a", "b"] {
        env.write(
            &format!("{name}.yaml"),
            &format!(
                "image: {name}:latest\nfrom: rootfs:./base\nsteps:\n  - run: [/bin/sh, -c, \"echo {name} > /{name}\"]\n"
            ),
        );
        let ctx = env.dir.path().to_str().unwrap();
        let spec = env.path(&format!("{name}.yaml"));
        env.kiln_ok(&["build", ctx, "-f", spec.to_str().unwrap(), "-q"]);
    }
}

fn store(env: &Env) -> Store {
    Store::open_existing(&env.root()).expect("the store exists")
}

/// Blobs (manifest, config, layers) and layer dirs (diff_ids) of a tagged image.
#[derive(Debug, Clone, Default, PartialEq)]
struct Content {
    blobs: BTreeSet<String>,
    layer_dirs: BTreeSet<String>,
}

impl Content {
    fn minus(&self, other: &Content) -> Content {
        Content {
            blobs: self.blobs.difference(&other.blobs).cloned().collect(),
            layer_dirs: self
                .layer_dirs
                .difference(&other.layer_dirs)
                .cloned()
                .collect(),
        }
    }
}

fn image_content(env: &Env, name: &str) -> Content {
    let store = store(env);
    let tagged = store.find(name).unwrap().expect("image is tagged");
    let manifest = Digest::try_from(&tagged.manifest).unwrap();
    let image = Image::load(&store, &manifest).unwrap();
    let layers = image.layers().unwrap();
    let mut blobs: BTreeSet<String> = layers.iter().map(|l| l.digest.to_string()).collect();
    blobs.insert(manifest.to_string());
    blobs.insert(image.config_digest.to_string());
    Content {
        blobs,
        layer_dirs: layers.iter().map(|l| l.diff_id.to_string()).collect(),
    }
}

/// What the build cache's records keep alive (the build may or may not record steps).
fn cached_content(env: &Env) -> Content {
    let mut content = Content::default();
    for (blob, diff_id) in store(env)
        .step_records()
        .unwrap()
        .iter()
        .filter_map(StepRecord::content)
    {
        content.blobs.insert(blob.to_string());
        content.layer_dirs.insert(diff_id.to_string());
    }
    content
}

/// Every blob and layer dir in the store, as digests.
fn listing(env: &Env) -> Content {
    let names = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(env.root().join(dir))
            .unwrap()
            .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
            .collect()
    };
    Content {
        blobs: names("blobs/sha256"),
        layer_dirs: names("layers"),
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// Runs `kiln gc ARGS --json`, checks it succeeded, and returns what it removed.
fn gc(env: &Env, args: &[&str]) -> (Content, serde_json::Value) {
    let mut all = vec!["gc", "--json"];
    all.extend_from_slice(args);
    let out = env.kiln(&all);
    assert!(out.status.success(), "kiln gc failed: {}", text(&out));
    let report = json(&out);
    let set = |key: &str, field: &str| -> BTreeSet<String> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[field].as_str().unwrap().to_owned())
            .collect()
    };
    let removed = Content {
        blobs: set("blobs", "digest"),
        layer_dirs: set("layer_dirs", "diff_id"),
    };
    (removed, report)
}

/// Runs `kiln fsck --json` and returns the exit code and the problems as (kind, path).
fn fsck(env: &Env) -> (i32, Vec<(String, String)>, String) {
    let out = env.kiln(&["fsck", "--json"]);
    let report = json(&out);
    let problems = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (out.status.code().unwrap(), problems, text(&out))
}

fn assert_fsck_clean(env: &Env) {
    let (code, problems, output) = fsck(env);
    assert!(code == 0 && problems.is_empty(), "fsck: {output}");
}

fn blob_path(env: &Env, digest: &str) -> PathBuf {
    let digest = Digest::parse(digest).unwrap();
    env.root().join("blobs/sha256").join(digest.hex())
}

fn layer_path(env: &Env, diff_id: &str) -> PathBuf {
    let diff_id = Digest::parse(diff_id).unwrap();
    env.root().join("layers").join(diff_id.hex())
}

#[test]
fn fsck_is_clean_on_fresh_builds_and_says_so() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    two_images(&env);
    assert_fsck_clean(&env);
    let out = env.kiln(&["fsck"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("no problems (7 blobs, 2 images, 3 layer dirs)"),
        "{}",
        text(&out)
    );
    let report = json(&env.kiln(&["fsck", "--json"]));
    assert_eq!(report["images"], 2);
    assert_eq!(report["layer_dirs"], 3);

    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(env.path("none"))
        .arg("fsck")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing).contains("there is no kiln store at"));
    assert!(!env.path("none").exists(), "fsck must not create a store");
}

#[test]
fn fsck_finds_a_corrupted_blob() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    two_images(&env);
    let base_layer = image_content(&env, "a")
        .blobs
        .into_iter()
        .max_by_key(|d| std::fs::metadata(blob_path(&env, d)).unwrap().len())
        .unwrap();
    let path = blob_path(&env, &base_layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();

    let (code, problems, output) = fsck(&env);
    assert_eq!(code, 1, "{output}");
    assert_eq!(
        problems,
        [(
            "corrupt-blob".to_owned(),
            path.to_string_lossy().into_owned()
        )],
        "{output}"
    );
    let human = env.kiln(&["fsck"]);
    let human_text = text(&human);
    assert!(human_text.contains(&format!("blob {base_layer} is corrupt")));
    assert!(human_text.contains("hint: a corrupt blob is never fetched again"));
}

#[test]
fn fsck_finds_a_missing_layer_dir_and_names_the_image() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    two_images(&env);
    let only_b = image_content(&env, "b").minus(&image_content(&env, "a"));
    let diff_id = only_b.layer_dirs.iter().next().unwrap();
    std::fs::remove_dir_all(layer_path(&env, diff_id)).unwrap();

    let (code, problems, output) = fsck(&env);
    assert_eq!(code, 1, "{output}");
    let path = layer_path(&env, diff_id).to_string_lossy().into_owned();
    assert!(problems.contains(&("missing-layer-dir".to_owned(), path.clone())));
    // The build cache's record of the step that made the layer is stale too.
    for (kind, p) in &problems {
        assert!(
            p == &path && (kind == "missing-layer-dir" || kind == "stale-cache-record"),
            "{output}"
        );
    }
    let human = text(&env.kiln(&["fsck"]));
    assert!(
        human.contains(&format!(
            "image localhost/b:latest needs layer dir layers/{}",
            &diff_id["sha256:".len()..]
        )),
        "{human}"
    );
}

#[test]
fn fsck_finds_a_file_with_a_bad_name_and_gc_leaves_it() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    two_images(&env);
    let stray = env.root().join("blobs/sha256/notes.txt");
    std::fs::write(&stray, "not a blob").unwrap();

    let (code, problems, output) = fsck(&env);
    assert_eq!(code, 1, "{output}");
    assert_eq!(
        problems,
        [(
            "unknown-file".to_owned(),
            stray.to_string_lossy().into_owned()
        )]
    );
    gc(&env, &[]);
    assert!(stray.exists(), "gc removed a file kiln did not write");
}

#[test]
fn staging_left_by_a_dead_kiln_is_reported_by_fsck_and_removed_by_gc() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    two_images(&env);
    // No process has pid i32::MAX - 1 (far above pid_max).
    let dead = env.root().join(format!("tmp/step-{}-0-0", i32::MAX - 1));
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("half-written"), "x").unwrap();
    let live = env
        .root()
        .join(format!("tmp/step-{}-0-0", std::process::id()));
    std::fs::create_dir(&live).unwrap();

    let (code, problems, output) = fsck(&env);
    assert_eq!(code, 1, "{output}");
    assert_eq!(
        problems,
        [(
            "stale-staging".to_owned(),
            dead.to_string_lossy().into_owned()
        )]
    );
    let (_, report) = gc(&env, &[]);
    assert_eq!(report["staging"].as_array().unwrap().len(), 1, "{report}");
    assert!(!dead.exists() && live.exists());
    assert_fsck_clean(&env);
}

#[test]
fn gc_after_rmi_removes_exactly_the_images_own_content() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    two_images(&env);
    let (removed, _) = gc(&env, &[]);
    assert_eq!(removed, Content::default(), "builds left garbage behind");

    let a = image_content(&env, "a");
    let b = image_content(&env, "b");
    let before = listing(&env);
    env.kiln_ok(&["rmi", "--no-prune", "a"]);
    let (removed, report) = gc(&env, &[]);

    let expected = a.minus(&b).minus(&cached_content(&env));
    assert_eq!(removed, expected);
    assert!(removed.blobs.len() >= 2, "manifest and config must go");
    assert_eq!(listing(&env), before.minus(&removed));
    assert!(report["bytes"].as_u64().unwrap() > 0);

    // b is whole: fsck is clean and it runs.
    assert_fsck_clean(&env);
    assert_eq!(env.kiln_ok(&["run", "--rm", "b", "cat", "/b"]), "b");
    // The run remembered its user lookup in b's layers; gc keeps it while they stay.
    assert_eq!(user_lookups(&env), 1);
    let summary = env.kiln_ok(&["gc"]);
    assert_eq!(summary, "removed 0 blobs, 0 layer dirs, 0 B");
    assert_eq!(user_lookups(&env), 1);

    // Without the build cache, the rest of a's own content goes too, and with layer dirs
    // gone, the remembered lookups (which name layer dirs) go.
    let (removed_with_cache, _) = gc(&env, &["--cache"]);
    assert_eq!(removed_with_cache, a.minus(&b).minus(&removed));
    assert_eq!(user_lookups(&env), 0);
    assert_fsck_clean(&env);
    assert_eq!(env.kiln_ok(&["run", "--rm", "b", "cat", "/b"]), "b");
    assert_eq!(user_lookups(&env), 1);
}

/// How many user lookups `kiln run` remembered in the store.
fn user_lookups(env: &Env) -> usize {
    let dir = store(env).cache_dir().join(kiln_store::USER_LOOKUPS);
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn gc_keeps_a_build_cache_records_layer_until_gc_cache() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    two_images(&env);
    let only_a = image_content(&env, "a").minus(&image_content(&env, "b"));
    let store = store(&env);
    // A record for a's own layer, as a build would write it.
    let layer = store
        .find("a")
        .unwrap()
        .map(|t| {
            let manifest = Digest::try_from(&t.manifest).unwrap();
            let image = Image::load(&store, &manifest).unwrap();
            image.layers().unwrap().pop().unwrap()
        })
        .unwrap();
    assert!(only_a.layer_dirs.contains(&layer.diff_id.to_string()));
    let key = Digest::of_bytes(b"a test step");
    store
        .record_step(&StepRecord {
            key: key.clone(),
            layer: Some(layer.blob.clone()),
            diff_id: Some(layer.diff_id.clone()),
            created_by: "run: echo a > /a".into(),
        })
        .unwrap();
    let mount = store.cache_mount_dir(&key).unwrap();
    std::fs::write(mount.join("downloaded.pkg"), vec![7u8; 1000]).unwrap();

    env.kiln_ok(&["rmi", "--no-prune", "a"]);
    let (removed, _) = gc(&env, &[]);
    assert!(!removed.blobs.contains(&layer.digest.to_string()));
    assert!(store.has_blob(&layer.digest) && store.has_layer(&layer.diff_id));
    assert!(mount.join("downloaded.pkg").exists());
    assert_fsck_clean(&env);

    let (removed, report) = gc(&env, &["--cache"]);
    assert!(removed.blobs.contains(&layer.digest.to_string()));
    assert!(removed.layer_dirs.contains(&layer.diff_id.to_string()));
    assert!(!store.has_blob(&layer.digest) && !store.has_layer(&layer.diff_id));
    assert!(report["cache_records"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["cache_mounts"].as_array().unwrap().len(), 1);
    assert!(!mount.exists());
    assert!(store.step_records().unwrap().is_empty());
    assert_fsck_clean(&env);
    // b, whose layers no record held, is untouched.
    assert_eq!(env.kiln_ok(&["run", "--rm", "b", "cat", "/b"]), "b");
}

#[test]
fn gc_keeps_a_stopped_containers_image() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    two_images(&env);
    let a = image_content(&env, "a");
    env.kiln_ok(&["run", "--name", "kept", "a", "true"]);
    env.kiln_ok(&["rmi", "--no-prune", "a"]);

    let (removed, _) = gc(&env, &[]);
    assert_eq!(removed, Content::default());
    assert_eq!(
        a.minus(&listing(&env)),
        Content::default(),
        "a's content is gone"
    );
    assert_fsck_clean(&env);

    env.kiln_ok(&["rm", "kept"]);
    let (removed, _) = gc(&env, &[]);
    let expected = a
        .minus(&image_content(&env, "b"))
        .minus(&cached_content(&env));
    assert_eq!(removed, expected);
    assert_fsck_clean(&env);
}

#[test]
fn dry_run_removes_nothing_and_lists_what_gc_then_removes() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    two_images(&env);
    env.kiln_ok(&["rmi", "--no-prune", "a"]);
    let before = listing(&env);

    let (listed, report) = gc(&env, &["--dry-run"]);
    assert_eq!(report["dry_run"], true);
    assert!(!listed.blobs.is_empty());
    assert_eq!(listing(&env), before);
    let human = env.kiln_ok(&["gc", "--dry-run"]);
    assert!(human.contains("would remove blob sha256:"), "{human}");
    assert_eq!(listing(&env), before);

    let (removed, _) = gc(&env, &[]);
    assert_eq!(removed, listed);
}

#[test]
fn gc_waits_while_a_writer_holds_a_content_guard() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    two_images(&env);
    env.kiln_ok(&["rmi", "--no-prune", "a"]);
    let before = listing(&env);
    let guard = store(&env).content_guard().unwrap();

    let mut child = env.command().arg("gc").spawn().unwrap();
    // gc says when it starts waiting; its stderr lines come through a channel so the test
    // waits for that event rather than for a guessed time.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (lines_tx, lines_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let said_waiting = lines_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("gc says that it waits");
    assert!(said_waiting.contains("waiting for other kiln processes"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "gc finished while a content guard was held"
    );
    assert_eq!(listing(&env), before, "gc removed content under a guard");

    drop(guard);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "gc still waits after the guard was dropped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(listing(&env), before);
    assert_fsck_clean(&env);
}

/// A container's cgroup dir: in the v1 pids hierarchy, or the v2 one.
fn container_cgroup(id: &str) -> PathBuf {
    let v1 = PathBuf::from(format!("/sys/fs/cgroup/pids/kiln/kiln-{id}"));
    match std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        true => PathBuf::from(format!("/sys/fs/cgroup/kiln/kiln-{id}")),
        false => v1,
    }
}

/// `kill -9` of `kiln run --rm` leaves the container dir and its cgroups: fsck names both,
/// gc removes and counts them, and fsck is clean afterwards.
#[test]
fn a_killed_run_rm_is_reported_by_fsck_and_removed_by_gc() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let root = common::busybox_rootfs(&env, "bb");
    env.kiln_ok(&["import", root.to_str().unwrap(), "-t", "bb"]);
    let mut kiln = env
        .command()
        .args(["run", "--rm", "bb", "sleep", "600"])
        .spawn()
        .unwrap();
    let containers = env.root().join("containers");
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let running = std::fs::read_dir(&containers)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|id| container_cgroup(id).exists());
        if let Some(id) = running {
            break id;
        }
        assert!(Instant::now() < deadline, "the container never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    kiln.kill().unwrap();
    kiln.wait().unwrap();
    // The container dies with kiln (PR_SET_PDEATHSIG); its cgroup and dir stay.
    let cgroup = container_cgroup(&id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(cgroup.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty()) {
        assert!(Instant::now() < deadline, "the container outlived kiln");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, problems, output) = fsck(&env);
    assert_eq!(code, 1, "{output}");
    let kinds: BTreeSet<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
    assert!(kinds.contains("abandoned-container"), "{output}");
    // Any kiln that starts a container removes stale cgroups, and the other tests of this
    // binary run in parallel: the cgroup may be gone already, but if it is there, fsck
    // must name it.
    assert!(
        kinds.contains("stale-cgroup") || !cgroup.exists(),
        "{output}"
    );
    // The human report names the container and counts it among what gc would remove.
    let dry = env.kiln_ok(&["gc", "--dry-run"]);
    assert!(
        dry.contains(&format!("would remove abandoned container {id}")),
        "{dry}"
    );
    assert!(dry.contains(", 1 abandoned container, "), "{dry}");
    let (_, report) = gc(&env, &[]);
    let removed: Vec<&str> = report["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(removed, [id.as_str()], "{report}");
    assert!(!containers.join(&id).exists());
    assert!(!cgroup.exists());
    assert_fsck_clean(&env);
}

/// Three images of one 1 MiB layer each (a `copy` of random data), built one after the
/// other in project `app`, so their step records are used in that order.
fn three_cached_images(env: &Env) {
    for name in ["one", "two", "three"] {
        let mut data = vec![0u8; 1 << 20];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut data)
            .unwrap();
        std::fs::create_dir_all(env.path("app")).unwrap();
        std::fs::write(env.path(&format!("app/{name}.bin")), data).unwrap();
        env.write(
            &format!("app/{name}.yaml"),
            &format!("image: {name}\nfrom: scratch\nsteps:\n  - copy: {name}.bin\n    to: /data\n"),
        );
        let out = env.kiln_in("app", &["build", "-f", &format!("{name}.yaml")]);
        assert!(out.status.success(), "{}", text(&out));
        // Record mtimes are whole-second apart at least on every filesystem.
        std::thread::sleep(Duration::from_millis(1100));
    }
}

/// BuildKit's gc policy: `kiln gc --keep-storage` keeps the most recently used steps that
/// fit and drops the others with what only they held; `--keep-duration` drops the unused
/// ones; the config file's `build_cache:` budget is applied after a build that ran a step.
#[test]
fn the_build_cache_keeps_its_budget_least_recently_used_first() {
    common::require_root!("builds");
    let env = Env::new();
    three_cached_images(&env);
    for name in ["one", "two", "three"] {
        env.kiln_ok(&["rmi", name]);
    }
    // Plain gc keeps the cache: each record still holds its layer (blob + dir, ~2 MiB).
    let out = env.kiln(&["gc", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["cache_records"], 0, "{}", text(&out));
    // Room for one layer's blob and dir: the two least recently used go.
    let out = env.kiln(&["gc", "--keep-storage", "3m", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["cache_records"], 2, "{}", text(&out));
    assert!(
        report["bytes"].as_u64().unwrap() > 2 << 20,
        "{}",
        text(&out)
    );
    let ran = |name: &str| {
        let out = env.kiln_in("app", &["build", "-f", &format!("{name}.yaml"), "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        result["steps_run"].as_u64().unwrap()
    };
    assert_eq!(ran("three"), 0, "the most recent step was kept");
    assert_eq!(ran("one"), 1, "the oldest was dropped");
    // Unused for longer than a second: everything but what an image needs goes.
    std::thread::sleep(Duration::from_millis(1100));
    env.kiln_ok(&["rmi", "one", "three"]);
    let out = env.kiln(&["gc", "--keep-duration", "1s", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["cache_records"], 2, "{}", text(&out));
    // The config file's budget, after a build that ran a step: "one" is cached again but
    // untagged, so its record alone holds its layer, and goes.
    assert_eq!(ran("one"), 1);
    env.kiln_ok(&["rmi", "one"]);
    env.write("config.yaml", "build_cache:\n  keep_storage: 1k\n");
    let out = env
        .command()
        .current_dir(env.path("app"))
        .env("KILN_CONFIG", env.path("config.yaml"))
        .args(["build", "-f", "two.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("build cache over its budget (build_cache: in kiln's config file): dropped 1 least recently used step, freed"),
        "{}",
        text(&out)
    );
    // The image just built holds its layer: its record costs nothing and stayed.
    assert_eq!(ran("two"), 0);
    assert_eq!(ran("one"), 1);
    let out = env.kiln(&["gc", "--keep-storage", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = env.kiln(&["gc", "--cache", "--keep-storage", "1g"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// `kiln rmi` frees what only the image needed at once, as docker's does, says how much,
/// and points at the build cache's copy of its layers; `--no-prune` only untags.
#[test]
fn rmi_frees_what_only_the_image_needed_and_names_what_the_cache_keeps() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    two_images(&env);
    let a = image_content(&env, "a");
    let b = image_content(&env, "b");
    let out = env.kiln(&["rmi", "a"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("untagged: localhost/a:latest"), "{shown}");
    assert!(
        shown.contains("freed 2 blobs, 0 layer dirs"),
        "manifest and config: {shown}"
    );
    assert!(
        shown.contains("hint: the build cache still holds"),
        "{shown}"
    );
    assert!(shown.contains("kiln gc --cache"), "{shown}");
    let left = listing(&env);
    for blob in &a.minus(&b).minus(&cached_content(&env)).blobs {
        assert!(!left.blobs.contains(blob), "{blob} was freed");
    }
    assert_eq!(env.kiln_ok(&["gc"]), "removed 0 blobs, 0 layer dirs, 0 B");
    assert_fsck_clean(&env);
    // --no-prune: the tag goes, the content stays for gc.
    let before = listing(&env);
    let out = env.kiln(&["rmi", "--no-prune", "b"]);
    assert!(!text(&out).contains("freed"), "{}", text(&out));
    assert_eq!(listing(&env), before);
}

/// `kiln system df` (docker's): images, containers and build cache, each piece of content
/// counted where it is charged; what `rmi` leaves to the cache shows as reclaimable there.
#[test]
fn system_df_shows_what_each_part_takes_and_gives_back() {
    common::require_root!("builds");
    let env = Env::new();
    three_cached_images(&env);
    let df = |env: &Env| -> serde_json::Value {
        serde_json::from_str(&env.kiln_ok(&["system", "df", "--json"])).unwrap()
    };
    let all = df(&env);
    assert_eq!(all["images"]["total"], 3);
    assert_eq!(all["images"]["active"], 0);
    assert!(all["images"]["size"].as_u64().unwrap() > 6 << 20, "{all}");
    assert_eq!(all["images"]["reclaimable"], all["images"]["size"]);
    assert_eq!(all["build_cache"]["total"], 3);
    assert_eq!(all["build_cache"]["active"], 3);
    assert_eq!(
        all["build_cache"]["size"], 0,
        "images hold every layer: {all}"
    );
    env.kiln_ok(&["rmi", "one"]);
    let after = df(&env);
    assert_eq!(after["images"]["total"], 2);
    assert_eq!(after["build_cache"]["active"], 2);
    let cached = after["build_cache"]["reclaimable"].as_u64().unwrap();
    assert!(cached > 2 << 20, "one's layer, blob and dir: {after}");
    let table = env.kiln_ok(&["system", "df"]);
    assert!(table.starts_with("TYPE"), "{table}");
    assert!(table.contains("Build Cache"), "{table}");
    env.kiln_ok(&["gc", "--cache"]);
    assert_eq!(df(&env)["build_cache"]["size"], 0);
}
