//! `kiln pull` against a registry that misbehaves (registry-mock's faults): what is
//! retried and recovers, what fails, how long failing may take (small limits from kiln's
//! config file keep these tests fast), and that a failed pull leaves the store clean.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{text, Env};
use registry_mock::{AuthMode, Config, Server, User};

/// A registry holding `app:1`, a small one-layer image, and a store to pull into.
struct Setup {
    /// Where the image was made; kept for the life of the test.
    _env: Env,
    server: Server,
    none: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        Setup::with_auth(AuthMode::None)
    }

    /// With `AuthMode::Token`, `alice` pushes (her credentials are in a docker config
    /// file) and pulls are anonymous, through the token service.
    fn with_auth(auth: AuthMode) -> Setup {
        let env = Env::new();
        let server = Server::start(Config {
            auth,
            users: vec![User::new("alice", "s3cret")],
            ..Config::default()
        })
        .unwrap();
        let none = env.path("none");
        // alice:s3cret
        let alice = env.write(
            "alice/config.json",
            &format!(
                "{{\"auths\":{{\"{}\":{{\"auth\":\"YWxpY2U6czNjcmV0\"}}}}}}",
                server.host()
            ),
        );
        env.write("rootfs/hello", "hello from the registry\n");
        env.write("rootfs/etc/motd", &"a few bytes of text\n".repeat(100));
        env.kiln_ok(&[
            "import",
            env.path("rootfs").to_str().unwrap(),
            "-t",
            "small",
        ]);
        let target = format!("{}/app:1", server.host());
        let out = env
            .command()
            .args(["push", "small", &target])
            .env("DOCKER_CONFIG", alice.parent().unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        Setup {
            _env: env,
            server,
            none,
        }
    }

    /// A fresh store with kiln's config file holding `config`.
    fn store(&self, name: &str, config: &str) -> (Env, PathBuf) {
        let other = Env::new();
        let path = other.write(&format!("{name}.yaml"), config);
        (other, path)
    }

    /// `kiln pull HOST/fault/SPEC/app:1 ARGS…` into `store`, with its elapsed time.
    fn pull(&self, store: &Env, config: &PathBuf, spec: &str, args: &[&str]) -> (Output, Duration) {
        let reference = match spec {
            "" => format!("{}/app:1", self.server.host()),
            spec => format!("{}/fault/{spec}/app:1", self.server.host()),
        };
        let started = Instant::now();
        let out = store
            .command()
            .arg("pull")
            .args(args)
            .arg(&reference)
            .env("DOCKER_CONFIG", &self.none)
            .env("KILN_CONFIG", config)
            .output()
            .unwrap();
        (out, started.elapsed())
    }

    fn requests(&self, spec: &str, endpoint: &str) -> Vec<registry_mock::LogEntry> {
        let prefix = format!("/v2/fault/{spec}/app/{endpoint}");
        self.server
            .log()
            .into_iter()
            .filter(|e| e.method == "GET" && e.target.starts_with(&prefix))
            .collect()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The store holds nothing `kiln fsck` complains about, and nothing staged.
fn assert_clean(store: &Env, what: &str) {
    let fsck = store.kiln(&["fsck"]);
    assert!(fsck.status.success(), "{what}: {}", text(&fsck));
    let tmp = store.root().join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{what}: left in tmp/: {left:?}");
}

#[test]
fn a_manifest_cut_mid_body_is_fetched_again() {
    common::require_root!("the pulled layer is unpacked with its owners");
    let setup = Setup::new();
    let (store, config) = setup.store("config", "# defaults\n");
    // 50 bytes of the manifest, then a TCP reset; the second try is served whole.
    let spec = "manifestreset50x1";
    let (out, _) = setup.pull(&store, &config, spec, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let gets = setup.requests(spec, "manifests/");
    assert!(
        gets.iter().any(|e| e.fault.is_some()) && gets.iter().any(|e| e.fault.is_none()),
        "{gets:#?}"
    );
    // A body that ends before its Content-Length says is fetched again too.
    let (out, _) = setup.pull(&store, &config, "manifestlonglenx1", &[]);
    assert!(out.status.success(), "{}", text(&out));
    // And so is the config blob (and the layer), resumed from where it was cut.
    let (fresh, config) = setup.store("config", "# defaults\n");
    let (out, _) = setup.pull(&fresh, &config, "blobreset20x1", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let cut = setup.requests("blobreset20x1", "blobs/");
    assert!(cut.iter().any(|e| e.status == 206), "not resumed: {cut:#?}");
    // What was pulled is the image that was pushed, whole.
    let out = fresh.kiln_ok(&["fsck"]);
    assert!(!out.contains("missing"), "{out}");
    assert_clean(&fresh, "blobreset20x1");
}

#[test]
fn a_trickling_registry_fails_within_the_timeout_and_is_named() {
    common::require_root!("the pulled layer is unpacked with its owners");
    let setup = Setup::new();
    let (store, config) = setup.store("config", "retry_time: 2\n");
    // One byte a second never stalls, but a manifest of a few hundred bytes would take
    // minutes: the deadline (2 s plus its size at 10 KiB/s) stops it.
    let (out, elapsed) = setup.pull(&store, &config, "manifesttrickle1000", &["--timeout", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains(&setup.server.host()), "{err}");
    assert!(err.contains("too slow"), "{err}");
    assert!(err.contains("--timeout SECONDS"), "{err}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}: {err}");
    assert_clean(&store, "trickle");
    // The same limit from the config file.
    let (store, config) = setup.store("config", "timeout: 2\nretry_time: 2\n");
    let (out, elapsed) = setup.pull(&store, &config, "blobtrickle1000", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("too slow"), "{}", stderr(&out));
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    assert_clean(&store, "blob trickle");
}

#[test]
fn a_stalled_registry_is_named_and_given_up_on() {
    common::require_root!("the pulled layer is unpacked with its owners");
    let setup = Setup::new();
    let (store, config) = setup.store("config", "read_timeout: 1\nretry_time: 2\n");
    // No answer at all, and an answer whose body stops after 50 bytes.
    for spec in ["manifeststall", "manifesthang50", "blobhang0"] {
        let (out, elapsed) = setup.pull(&store, &config, spec, &[]);
        assert_eq!(out.status.code(), Some(1), "{spec}: {}", text(&out));
        let err = stderr(&out);
        assert!(err.contains("stalled: no data for 1 s"), "{spec}: {err}");
        assert!(err.contains(&setup.server.host()), "{spec}: {err}");
        assert!(err.contains("--read-timeout SECONDS"), "{spec}: {err}");
        assert!(elapsed < Duration::from_secs(30), "{spec}: {elapsed:?}");
        assert_clean(&store, spec);
    }
    // A stall that happens once is retried.
    let (out, _) = setup.pull(&store, &config, "manifeststallx1", &[]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn retry_after_is_respected_but_capped_and_retrying_is_bounded() {
    common::require_root!("the pulled layer is unpacked with its owners");
    let setup = Setup::new();
    let (store, config) = setup.store("config", "retry_time: 3\n");
    // Asked to wait 2 s once: kiln waits, then succeeds.
    let (out, elapsed) = setup.pull(&store, &config, "manifeste429x1.after2", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    // Asked to wait 100 s every time: kiln waits no longer than its retrying time.
    let (store, config) = setup.store("config", "retry_time: 3\n");
    let (out, elapsed) = setup.pull(&store, &config, "manifeste503.after100", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("503"), "{}", stderr(&out));
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    assert_eq!(
        setup.requests("manifeste503.after100", "manifests/").len(),
        2
    );
    // Without Retry-After: backoff with jitter, stopped by the retrying time.
    let (store, config) = setup.store("config", "retry_time: 1\n");
    let (out, elapsed) = setup.pull(&store, &config, "e500", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    let tries = setup.requests("e500", "manifests/").len();
    assert!((2..6).contains(&tries), "{tries} tries");
    assert_clean(&store, "e500");
}

/// Every fault kind once: a pull either recovers or fails with exit 1, within a bounded
/// time, and leaves nothing behind. The table is printed (`--nocapture`) for the record.
#[test]
fn every_fault_kind_recovers_or_fails_cleanly() {
    common::require_root!("the pulled layer is unpacked with its owners");
    let setup = Setup::new();
    let limits = "timeout: 3\nread_timeout: 1\nretry_time: 2\n";
    // (spec, recovers)
    let cases = [
        ("e500x2", true),
        ("e500", false),
        ("e429x1", true),
        ("e404", false),
        ("stallx1", true),
        ("stall", false),
        ("reset50x1", true),
        ("manifestreset50", false),
        ("blobreset0", false),
        ("hang50x1", true),
        ("hang50", false),
        ("trickle1", true),
        ("trickle1000", false),
        ("longlenx1", true),
        ("longlen", false),
        ("shortlen", false),
        ("corrupt", false),
        ("blobcorrupt", false),
        ("endless", false),
    ];
    let mut table = Vec::new();
    for (spec, recovers) in cases {
        let (store, config) = setup.store("config", limits);
        let (out, elapsed) = setup.pull(&store, &config, spec, &[]);
        let outcome = if out.status.success() {
            "recovered"
        } else {
            "failed"
        };
        table.push(format!(
            "{spec:16} {outcome:9} {:5.1} s",
            elapsed.as_secs_f64()
        ));
        assert_eq!(out.status.success(), recovers, "{spec}: {}", text(&out));
        if !recovers {
            assert_eq!(out.status.code(), Some(1), "{spec}: {}", text(&out));
            let images = store.kiln_ok(&["images", "--json"]);
            assert_eq!(images, "[]", "{spec}");
        }
        assert!(elapsed < Duration::from_secs(40), "{spec}: {elapsed:?}");
        assert_clean(&store, spec);
    }
    eprintln!("{}", table.join("\n"));
}

/// A pull killed while a blob hangs leaves its staging in `tmp/`; the next kiln command
/// that opens the store removes it, before `kiln fsck` or `gc` would see it.
#[test]
fn the_staging_of_a_killed_pull_is_removed_by_the_next_kiln() {
    common::require_root!("the pulled layer is unpacked with its owners");
    let setup = Setup::new();
    let (store, config) = setup.store("config", "read_timeout: 120\n");
    let reference = format!("{}/fault/blobhang5/app:1", setup.server.host());
    let mut child = store
        .command()
        .args(["pull", &reference])
        .env("DOCKER_CONFIG", &setup.none)
        .env("KILN_CONFIG", &config)
        .spawn()
        .unwrap();
    let tmp = store.root().join("tmp");
    let staged = || {
        std::fs::read_dir(&tmp)
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    };
    let waited = Instant::now();
    while staged() == 0 && waited.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(staged() > 0, "the pull staged nothing before it was killed");
    store.kiln_ok(&["images"]);
    assert_eq!(staged(), 0);
    assert_clean(&store, "killed pull");
}

/// The token service is part of the request it authenticates: a token answer that fails
/// (5xx), stalls or is cut is asked for again.
#[test]
fn a_failing_token_service_is_retried() {
    common::require_root!("the pulled layer is unpacked with its owners");
    let setup = Setup::with_auth(AuthMode::Token);
    let (store, config) = setup.store("config", "read_timeout: 1\nretry_time: 5\n");
    for spec in [
        "tokene503x2",
        "tokenreset10x1",
        "tokenstallx1",
        "tokenlonglenx1",
    ] {
        let (store, _) = setup.store("config", "");
        let (out, _) = setup.pull(&store, &config, spec, &[]);
        assert!(out.status.success(), "{spec}: {}", text(&out));
        let faulted = setup
            .server
            .log()
            .into_iter()
            .filter(|e| e.target.starts_with("/token") && e.fault.is_some())
            .count();
        assert!(faulted >= 1, "{spec}: no token request was faulted");
        setup.server.clear_log();
    }
    // A token service that keeps failing fails the pull, cleanly.
    let (out, elapsed) = setup.pull(&store, &config, "tokene503", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("503"), "{}", stderr(&out));
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    assert_clean(&store, "tokene503");
}

/// Pushes have the same limits: an upload that fails once is retried; a registry that
/// never answers an upload is given up on within the timeout and named.
#[test]
fn a_push_to_a_stalling_registry_fails_within_the_timeout() {
    common::require_root!("the pulled layer is unpacked with its owners");
    let setup = Setup::new();
    let config = setup._env.write("limits.yaml", "retry_time: 2\n");
    // Each to a repository of its own, which holds none of the blobs yet.
    let push = |spec: &str, name: &str| {
        let target = format!("{}/fault/{spec}/{name}:1", setup.server.host());
        let started = Instant::now();
        let out = setup
            ._env
            .command()
            .args(["push", "--timeout", "2", "small", &target])
            .env("DOCKER_CONFIG", &setup.none)
            .env("KILN_CONFIG", &config)
            .output()
            .unwrap();
        (out, started.elapsed())
    };
    let (out, _) = push("uploade503x1", "first");
    assert!(out.status.success(), "{}", text(&out));
    let (out, elapsed) = push("uploadstall", "second");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains(&setup.server.host()), "{err}");
    assert!(err.contains("stalled") || err.contains("too slow"), "{err}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}: {err}");
}
