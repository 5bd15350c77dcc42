//! `kiln run --userns=auto|keep-id`, root's hardening: a container with a user namespace of
//! its own, so that root in it is not root on the host. Checked end to end with the real
//! binary: the maps the container sees, its files (the image's owners inside, in-container
//! owners, whiteouts and opaque dirs in its upper dir on disk), what its root can and
//! cannot do to host files on a bind mount, the leases of host id slots between containers
//! running at once, and the values and combinations that are refused.
//!
//! The slots' leases are machine-wide (`/run/kiln/userns`), whatever store a test uses: the
//! test that checks which slot a container gets has them to itself (see [`SLOTS`]).

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use common::containers::{busybox_image, run_detached, state_file, state_of, wait_until};
use common::users::{shared_dir, TestUser};
use common::{require, text, Env};

/// The first host id of kiln's default pool (no `kiln` user in `/etc/subuid` here).
const POOL_START: u32 = 1 << 30;

/// The ids of one slot.
const SLOT_IDS: u32 = 65_536;

/// Where kiln keeps the lock files of the slots.
const LEASE_DIR: &str = "/run/kiln/userns";

/// The slots of this test binary: tests that only need some slot share them; the test
/// that checks which slot is free takes them all, so no other test holds one meanwhile.
static SLOTS: RwLock<()> = RwLock::new(());

fn some_slots() -> RwLockReadGuard<'static, ()> {
    SLOTS.read().unwrap_or_else(|e| e.into_inner())
}

fn all_slots() -> RwLockWriteGuard<'static, ()> {
    SLOTS.write().unwrap_or_else(|e| e.into_inner())
}

/// An image with an `app` user (uid 1000) that owns `/home/app/w`, and two dirs with a
/// file each under `/data`: one to delete a file from, one to delete and make again.
const SPEC: &str = r#"
image: uns:1
from: bb
steps:
  - run: |
      echo 'app:x:1000:1000:app:/home/app:/bin/sh' >> /etc/passwd
      printf 'root:x:0:\napp:x:1000:\nnogroup:x:65534:\n' > /etc/group
      mkdir -p /home/app/w /data/keep /data/gone
      chown -R 1000:1000 /home/app
      echo keep > /data/keep/f
      echo gone > /data/gone/f
    network: none
"#;

/// The env of a test, with `bb` and [`SPEC`]'s `uns:1` built from it in its store.
fn env_with_image() -> Env {
    let env = Env::new();
    busybox_image(&env);
    env.write("app/kiln.yaml", SPEC);
    env.kiln_ok(&["build", env.path("app").to_str().unwrap()]);
    env
}

/// `kiln run --rm --network none ARGS`: (exit code, stdout, stderr).
fn kiln_run(env: &Env, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["run", "--rm", "--network", "none"];
    all.extend_from_slice(args);
    let out = env.kiln(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kiln run --rm --network none ARGS` that must exit 0: its stdout.
fn kiln_run_ok(env: &Env, args: &[&str]) -> String {
    let (code, out, err) = kiln_run(env, args);
    assert_eq!(code, 0, "kiln run {args:?}:\n{out}{err}");
    out
}

/// `kiln exec ARGS` that must exit 0: its stdout.
fn exec_ok(env: &Env, args: &[&str]) -> String {
    let out = env
        .command()
        .arg("exec")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "kiln exec {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of a `uid_map` or `gid_map` (several files' worth at once) as
/// `[inside, outside, count]`.
fn id_maps(text: &str) -> Vec<[u32; 3]> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let n: Vec<u32> = l
                .split_whitespace()
                .map(|f| f.parse().unwrap_or_else(|e| panic!("{l:?}: {e}")))
                .collect();
            assert_eq!(n.len(), 3, "not a map line: {l:?}");
            [n[0], n[1], n[2]]
        })
        .collect()
}

/// The first host id of an `auto` container's map, checked to be a whole slot of the pool
/// given to in-container id 0 for `count` ids.
fn slot_start(map: [u32; 3], count: u32) -> u32 {
    let [inside, outside, n] = map;
    assert_eq!((inside, n), (0, count), "map {map:?}");
    assert!(outside >= POOL_START, "host ids below the pool: {map:?}");
    assert_eq!((outside - POOL_START) % SLOT_IDS, 0, "not a slot: {map:?}");
    outside
}

/// The lock file of the slot that starts at host id `start`.
fn slot_file(start: u32) -> PathBuf {
    Path::new(LEASE_DIR).join(format!("slot-{}", (start - POOL_START) / SLOT_IDS))
}

/// Whether a process holds a `flock` on `path` now, as `/proc/locks` says (waiters, listed
/// with `->`, hold nothing).
fn flocked(path: &Path) -> bool {
    let meta = std::fs::metadata(path).unwrap();
    let key = format!(
        "{:02x}:{:02x}:{}",
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev()),
        meta.ino()
    );
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&key.as_str())
        })
}

/// The owner of a host path, as `(uid, gid)`.
fn owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    (meta.uid(), meta.gid())
}

/// An extended attribute's value, read with getfattr.
fn get_xattr(path: &Path, name: &str) -> String {
    common::run(
        std::process::Command::new("getfattr")
            .args(["--only-values", "-n", name])
            .arg(path),
    )
}

/// Every path under `dir` with its owner.
fn owners_under(dir: &Path) -> Vec<(PathBuf, u32, u32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let (uid, gid) = owner(&path);
        out.push((path.clone(), uid, gid));
        if entry.file_type().unwrap().is_dir() {
            out.extend(owners_under(&path));
        }
    }
    out
}

#[test]
fn auto_maps_root_to_an_unprivileged_host_range_and_keep_id_to_the_hosts_own_ids() {
    common::require_root!("namespaces, overlayfs, user namespaces");
    let _slots = some_slots();
    let env = env_with_image();
    let show = "cat /proc/self/uid_map /proc/self/gid_map; readlink /proc/self/ns/user; id -u";
    let host_maps = id_maps(
        &["/proc/self/uid_map", "/proc/self/gid_map"]
            .map(|f| std::fs::read_to_string(f).unwrap())
            .concat(),
    );
    let host_ns = std::fs::read_link("/proc/self/ns/user").unwrap();
    let host_ns = host_ns.to_string_lossy();
    let run = |flags: &[&str]| {
        let out = kiln_run_ok(&env, &[flags, &["uns:1", "sh", "-c", show]].concat());
        let lines: Vec<&str> = out.lines().collect();
        let [.., ns, uid] = lines[..] else {
            panic!("{out}")
        };
        assert_eq!(
            uid, "0",
            "{flags:?}: the command runs as the container's root"
        );
        let maps = id_maps(&lines[..lines.len() - 2].join("\n"));
        (maps, ns.to_owned())
    };

    // auto: in-container 0…65535 are a whole slot of host ids from 2^30 up; gids the same.
    let (maps, ns) = run(&["--userns=auto"]);
    assert_eq!(maps.len(), 2, "{maps:?}");
    slot_start(maps[0], SLOT_IDS);
    assert_eq!(maps[1], maps[0], "the gids are the same slot");
    assert_ne!(ns, host_ns, "a user namespace of the container's own");

    // auto:size=N: fewer ids, still from a slot.
    let (maps, _) = run(&["--userns=auto:size=1024"]);
    assert_eq!(maps.len(), 2, "{maps:?}");
    slot_start(maps[0], 1024);
    slot_start(maps[1], 1024);

    // keep-id: every id is the host's, but the namespace is the container's.
    let (maps, ns) = run(&["--userns=keep-id"]);
    assert_eq!(maps, [[0, 0, u32::MAX], [0, 0, u32::MAX]]);
    assert_ne!(ns, host_ns, "keep-id still has a user namespace of its own");

    // host (and no flag): the host's namespace and map.
    for flags in [&["--userns=host"][..], &[]] {
        let (maps, ns) = run(flags);
        assert_eq!(maps, host_maps, "{flags:?}");
        assert_eq!(ns, host_ns, "{flags:?}: the host's user namespace");
    }
}

#[test]
fn image_owners_are_kept_and_writes_land_in_the_upper_dir_under_in_container_ids() {
    common::require_root!("namespaces, overlayfs, user namespaces");
    require("getfattr", "attr");
    let _slots = some_slots();
    let env = env_with_image();
    // Idempotent, so that `kiln start` can run it again on the same files.
    let script = "set -e
        stat -c '%u:%g %n' /home/app/w
        su app -c 'touch /home/app/w/by-app'
        touch /by-root
        rm -f /data/keep/f
        rm -rf /data/gone && mkdir /data/gone && echo new > /data/gone/n
        stat -c '%u:%g %n' /home/app/w/by-app /by-root /data/gone/n
        echo keep: $(ls -A /data/keep) gone: $(ls -A /data/gone)
        head -n1 /proc/self/uid_map";
    let out = env.kiln(&[
        "run",
        "--network",
        "none",
        "--name",
        "w",
        "--userns=auto",
        "uns:1",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let expected = [
        "1000:1000 /home/app/w",
        "1000:1000 /home/app/w/by-app",
        "0:0 /by-root",
        "0:0 /data/gone/n",
        "keep: gone: n",
    ];
    let lines: Vec<&str> = said.lines().map(str::trim).collect();
    assert_eq!(lines[..5], expected, "{said}");
    let start = slot_start(id_maps(lines[5])[0], SLOT_IDS);

    let id = state_of(&env, "w")["id"].as_str().unwrap().to_owned();
    let inspect: serde_json::Value = serde_json::from_str(&env.kiln_ok(&["inspect", "w"])).unwrap();
    assert_eq!(inspect["HostConfig"]["UsernsMode"], "auto");

    // On disk, the container's upper dir holds in-container ids, not the slot's.
    let upper = env.root().join("containers").join(&id).join("upper");
    assert_eq!(owner(&upper.join("by-root")), (0, 0));
    assert_eq!(owner(&upper.join("home/app/w/by-app")), (1000, 1000));
    assert_eq!(owner(&upper.join("home/app/w")), (1000, 1000));
    assert_eq!(owner(&upper.join("data/gone/n")), (0, 0));
    for (path, uid, gid) in owners_under(&upper) {
        assert!(
            uid < SLOT_IDS && gid < SLOT_IDS,
            "{path:?} is owned by host ids {uid}:{gid} (the slot starts at {start})"
        );
    }
    // A deleted file is a whiteout; a dir deleted and made again is opaque.
    let whiteout = std::fs::symlink_metadata(upper.join("data/keep/f")).unwrap();
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "data/keep/f is not a whiteout: {whiteout:?}"
    );
    assert_eq!(
        get_xattr(&upper.join("data/gone"), "trusted.overlay.opaque"),
        "y"
    );
    assert!(!upper.join("data/gone/f").exists());

    // Started again (maybe on another slot), it sees the same owners and the same changes.
    let out = env.kiln(&["start", "-a", "w"]);
    assert!(out.status.success(), "{}", text(&out));
    let again = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = again.lines().map(str::trim).collect();
    assert_eq!(lines[..5], expected, "{again}");
    assert_eq!(owner(&upper.join("home/app/w/by-app")), (1000, 1000));
}

#[test]
fn root_in_an_auto_container_is_not_root_on_the_host() {
    common::require_root!("namespaces, overlayfs, user namespaces");
    let _slots = some_slots();
    let env = env_with_image();
    let share = env.path("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::set_permissions(&share, std::fs::Permissions::from_mode(0o777)).unwrap();
    let secret = share.join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let bind = format!("{}:/mnt", share.display());
    let mode_of = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;

    // The host's ids: the container's root reads the host root's 0600 file, what it makes
    // is the host root's, and it makes device nodes (CAP_MKNOD of the host's namespace).
    let out = kiln_run_ok(
        &env,
        &[
            "-v",
            &bind,
            "uns:1",
            "sh",
            "-c",
            "cat /mnt/secret; touch /mnt/by-host-root; mknod /tmp/null c 1 3 && echo made-node",
        ],
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["s3cret", "made-node"]);
    assert_eq!(owner(&share.join("by-host-root")), (0, 0));

    // auto: the host root's file is nobody's inside and unreadable; what root makes on the
    // bind is the slot's first host id's.
    let (code, out, err) = kiln_run(
        &env,
        &[
            "--userns=auto",
            "-v",
            &bind,
            "uns:1",
            "sh",
            "-c",
            "head -n1 /proc/self/uid_map
             stat -c %u:%g /mnt/secret
             touch /mnt/made && stat -c %u:%g /mnt/made
             cat /mnt/secret",
        ],
    );
    assert_ne!(code, 0, "the secret was read:\n{out}{err}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let start = slot_start(id_maps(lines[0])[0], SLOT_IDS);
    assert_eq!(lines[1..], ["65534:65534", "0:0"], "{out}{err}");
    assert!(!out.contains("s3cret"), "{out}");
    assert!(err.contains("Permission denied"), "{err}");
    assert_eq!(owner(&share.join("made")), (start, start));

    // auto with every capability: still no hold on host ids outside the slot, nor on
    // devices. The host root's file can be neither read nor taken; a setuid "root"
    // binary it leaves on the bind is the slot's, not the host root's.
    let (code, out, err) = kiln_run(
        &env,
        &[
            "--userns=auto",
            "--privileged",
            "-v",
            &bind,
            "uns:1",
            "sh",
            "-c",
            "head -n1 /proc/self/uid_map
             chown 0:0 /mnt/secret; echo chown=$?
             chmod 0644 /mnt/secret; echo chmod=$?
             cat /mnt/secret; echo cat=$?
             mknod /tmp/null c 1 3; echo mknod=$?
             cp /bin/busybox /mnt/suid && chown 0:0 /mnt/suid && chmod 4755 /mnt/suid; echo suid=$?",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    let start = slot_start(id_maps(lines[0])[0], SLOT_IDS);
    assert_eq!(
        lines[1..],
        ["chown=1", "chmod=1", "cat=1", "mknod=1", "suid=0"],
        "{out}{err}"
    );
    assert!(!out.contains("s3cret"), "{out}");
    assert_eq!(owner(&secret), (0, 0));
    assert_eq!(mode_of(&secret), 0o600);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret\n");
    let suid = share.join("suid");
    assert_eq!(owner(&suid), (start, start), "setuid binary's host owner");
    assert_eq!(mode_of(&suid), 0o4755);
}

#[test]
fn containers_running_at_once_get_disjoint_slots_which_are_free_again_when_they_end() {
    common::require_root!("namespaces, overlayfs, user namespaces");
    let _slots = all_slots();
    let env = env_with_image();
    let args = ["--network", "none", "--userns=auto", "uns:1", "sleep", "30"];
    let first = run_detached(&env, &args);
    let second = run_detached(&env, &args);

    let mut starts = Vec::new();
    for id in [&first.id, &second.id] {
        // exec joins PID 1's namespace: the same maps, also as the host reads them.
        let own = exec_ok(
            &env,
            &[id, "cat", "/proc/self/uid_map", "/proc/self/gid_map"],
        );
        let pid1 = exec_ok(&env, &[id, "cat", "/proc/1/uid_map", "/proc/1/gid_map"]);
        assert_eq!(id_maps(&own), id_maps(&pid1), "{own}\n{pid1}");
        let host_pid = state_file(&env, id)["init_pid"].as_i64().unwrap();
        let host_view = std::fs::read_to_string(format!("/proc/{host_pid}/uid_map")).unwrap();
        assert_eq!(id_maps(&host_view)[0], id_maps(&own)[0]);
        let maps = id_maps(&own);
        let start = slot_start(maps[0], SLOT_IDS);
        assert_eq!(maps[1], maps[0], "the gids are the same slot");
        // The slot's lease: its lock file names the container and is locked.
        let lease = slot_file(start);
        assert_eq!(
            std::fs::read_to_string(&lease).unwrap().trim(),
            id.as_str(),
            "{lease:?}"
        );
        assert!(flocked(&lease), "{lease:?} is not locked");
        starts.push(start);
    }
    let (low, high) = (starts[0].min(starts[1]), starts[0].max(starts[1]));
    assert!(
        high - low >= SLOT_IDS,
        "the two containers share host ids: {starts:?}"
    );

    // Removed, they free their slots; the next container gets the lower one again.
    env.kiln_ok(&["rm", "-f", &first.id, &second.id]);
    for start in [low, high] {
        wait_until(
            Duration::from_secs(10),
            "the slot's lock is dropped",
            || !flocked(&slot_file(start)),
        );
    }
    let third = run_detached(&env, &args);
    let maps = id_maps(&exec_ok(&env, &[&third, "cat", "/proc/self/uid_map"]));
    assert_eq!(slot_start(maps[0], SLOT_IDS), low, "the first free slot");
    assert!(flocked(&slot_file(low)));

    // A container that ends by itself (killed, not removed) frees its slot too.
    env.kiln_ok(&["kill", &third]);
    wait_until(Duration::from_secs(10), "the container ends", || {
        state_of(&env, &third)["state"] == "exited"
    });
    wait_until(
        Duration::from_secs(10),
        "the slot's lock is dropped",
        || !flocked(&slot_file(low)),
    );
}

#[test]
fn bad_userns_values_are_refused_and_devices_work_in_a_namespace_of_its_own() {
    common::require_root!("namespaces, overlayfs, user namespaces");
    let _slots = some_slots();
    let env = env_with_image();
    for value in [
        "bogus",
        "auto:size=0",
        "auto:size=65537",
        "auto:size=",
        "auto:size=-1",
        "keepid",
    ] {
        let flag = format!("--userns={value}");
        let (code, out, err) = kiln_run(&env, &[&flag, "uns:1", "true"]);
        assert_eq!(code, 1, "{flag}: {out}{err}");
        assert!(err.contains("--userns"), "{flag}: {err}");
        assert!(err.contains(value), "{flag}: {err}");
    }
    // Nothing was left behind.
    assert_eq!(env.kiln_ok(&["ps", "-a", "-q"]), "");

    // A device node made in a tmpfs of the container's user namespace could not be
    // opened: kiln makes it in one of the host's and binds it in. It belongs to the
    // container's root, and the cgroup still decides what may be done with it.
    let loop_dev = common::LoopDevice::new(&env);
    let device = format!("{}:/dev/xloop:r", loop_dev.path);
    for mode in ["--userns=auto", "--userns=keep-id"] {
        let script = "ls -ln /dev/xnull /dev/xloop; echo x > /dev/xnull && echo wrote-null; \
                      head -c 4 /dev/xloop; echo; (exec 3>/dev/xloop) || echo no-write-loop";
        let (code, out, err) = kiln_run(
            &env,
            &[
                mode,
                "--device",
                "/dev/null:/dev/xnull",
                "--device",
                &device,
                "uns:1",
                "sh",
                "-c",
                script,
            ],
        );
        assert_eq!(code, 0, "{mode}: {out}{err}");
        let null = out
            .lines()
            .find(|l| l.ends_with("/dev/xnull"))
            .unwrap_or_default();
        assert!(null.starts_with("crw-rw-rw-"), "{mode}: {out}");
        assert_eq!(null.split_whitespace().nth(2), Some("0"), "{mode}: {out}");
        // The loop device's backing file is 0x5a bytes: "ZZZZ".
        for said in ["wrote-null", "ZZZZ", "no-write-loop"] {
            assert!(out.lines().any(|l| l == said), "{mode}: {said}: {out}{err}");
        }
    }
}

#[test]
fn an_ordinary_users_kiln_refuses_a_user_namespace_of_the_containers_own() {
    common::require_root!("useradd, user namespaces");
    let env = Env::new();
    let user = TestUser::create(false);
    // A rootfs the user owns (the user has no other id to keep the host root's files as).
    let rootfs = common::busybox_rootfs(&env, "share/bb");
    shared_dir(&env, "share");
    common::run(
        std::process::Command::new("chown")
            .args(["-R", "-h", &format!("{0}:{0}", user.name)])
            .arg(&rootfs),
    );
    let out = user.kiln(&["import", rootfs.to_str().unwrap(), "-t", "bb"]);
    assert!(out.status.success(), "{}", text(&out));

    for mode in ["--userns=auto", "--userns=keep-id"] {
        let out = user.kiln(&["run", "--rm", "--network", "none", mode, "bb", "true"]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{mode}: {said}");
        assert!(
            said.contains("a user namespace of the container's own needs root"),
            "{mode}: {said}"
        );
    }
    let out = user.kiln(&["ps", "-a", "-q"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "nothing left"
    );
    // The user's containers run as before.
    let out = user.kiln(&["run", "--rm", "--network", "none", "bb", "id", "-u"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
}

#[test]
fn the_config_files_userns_is_the_default_that_the_flag_overrides() {
    common::require_root!("user namespaces, idmapped mounts");
    let _slots = some_slots();
    let env = env_with_image();
    env.write(
        "config.yaml",
        "# hardening for every container\nuserns: auto\n",
    );
    let with_config = |args: &[&str]| {
        let out = env
            .command()
            .env("KILN_CONFIG", env.path("config.yaml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), stdout, text(&out))
    };
    let run = ["run", "--rm", "--network", "none"];
    let cat_map = ["uns:1", "cat", "/proc/self/uid_map"];

    let (code, maps, said) = with_config(&[&run[..], &cat_map[..]].concat());
    assert_eq!(code, Some(0), "{said}");
    let map = id_maps(&maps)[0];
    assert!(map[1] >= POOL_START && map[2] == SLOT_IDS, "{said}");

    let (code, maps, said) = with_config(&[&run[..], &["--userns=host"], &cat_map[..]].concat());
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(id_maps(&maps), vec![[0, 0, u32::MAX]], "{said}");

    // A bundle is a plain rootfs with the host's ids: the default is not for it.
    let bundle = env.path("bundle");
    let (code, _, said) = with_config(&["bundle", "uns:1", bundle.to_str().unwrap(), "true"]);
    assert_eq!(code, Some(0), "{said}");

    env.write("config.yaml", "userns: sideways\n");
    let (code, _, said) = with_config(&[&run[..], &["uns:1", "true"]].concat());
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("config.yaml:1:9: userns:"), "{said}");
}

#[test]
fn an_auto_container_gets_a_terminal_of_its_own() {
    common::require_root!("user namespaces, idmapped mounts");
    let _slots = some_slots();
    let env = env_with_image();
    let script = "test -t 0 && echo on-a-terminal; ls -ln $(tty); read line; echo got-$line";
    let mut command = env.command();
    command
        .args(["run", "--rm", "-it", "--network", "none", "--userns=auto"])
        .args(["uns:1", "sh", "-c", script]);
    let (ok, output) = common::on_a_terminal(command, b"typed\n");
    assert!(ok, "{output}");
    assert!(output.contains("on-a-terminal"), "{output}");
    // devpts made in the container's namespace: its pty is owned by its root and tty group.
    assert!(
        output.contains(" 0        5 ") && output.contains("/dev/pts/0"),
        "{output}"
    );
    assert!(output.contains("got-typed"), "{output}");
}
