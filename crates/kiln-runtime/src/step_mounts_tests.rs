//! Real tests of cache mounts and secrets of build steps: real overlayfs, namespaces and
//! busybox steps, as root. What persists on the host, what stays out of the upper dir (the
//! layer), and that no target or shared cache reaches outside the root.

use std::fs;
use std::os::unix::fs::{chown, symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;

use super::tests::{tree, Fixture, Outcome};
use super::*;

const SECRET: &[u8] = b"kiln-secret-7f3a9c-do-not-leak";

fn cache(source: &Path, target: &str) -> StepMount {
    StepMount::Cache {
        source: source.to_path_buf(),
        target: target.into(),
    }
}

fn secret(target: &str) -> StepMount {
    StepMount::Secret {
        content: SECRET.to_vec().into(),
        target: target.into(),
    }
}

impl Fixture {
    /// A fresh host cache dir (root-owned, like the store's).
    fn cache_dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join("caches").join(name);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn run_with(&self, lowers: &[&str], script: &str, mounts: Vec<StepMount>) -> Outcome {
        let mut sb = self.sandbox(lowers, &["/bin/sh", "-c", script]);
        sb.mounts = mounts;
        self.run(sb)
    }

    /// A layer `name` on top of busybox holding `dirs`.
    fn layer_with_dirs(&self, name: &str, dirs: &[&str]) {
        let layer = self.layer(name);
        for dir in dirs {
            fs::create_dir_all(layer.join(dir)).unwrap();
        }
    }
}

fn assert_ran(out: &Outcome) {
    assert!(
        out.ok().success(),
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
}

/// Files under `dir` (not following symlinks) whose content holds `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let grep = Command::new("grep")
        .arg("-r")
        .arg("-l")
        .arg("-a")
        .arg("-F")
        .arg(std::str::from_utf8(needle).unwrap())
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&grep.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_cache_written_by_a_step_persists_and_its_missing_parents_leave_the_upper() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let cache_dir = fx.cache_dir("pkg");
    let script = "echo run >> /var/cache/pkg/log; wc -l < /var/cache/pkg/log > /seen";
    for expected in ["1", "2"] {
        let out = fx.run_with(&["base"], script, vec![cache(&cache_dir, "/var/cache/pkg")]);
        assert_ran(&out);
        assert_eq!(tree(&out.upper), ["seen"], "only the step's own change");
        let seen = fs::read_to_string(out.upper.join("seen")).unwrap();
        assert_eq!(seen.trim(), expected);
    }
    assert_eq!(
        fs::read_to_string(cache_dir.join("log")).unwrap(),
        "run\nrun\n"
    );
}

#[test]
fn a_cache_whose_parents_exist_in_the_image_leaves_no_copied_up_dirs() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    fx.layer_with_dirs("var", &["var/cache/other"]);
    let cache_dir = fx.cache_dir("pkg");
    let out = fx.run_with(
        &["var", "base"],
        "echo x > /var/cache/pkg/f; ls /var/cache",
        vec![cache(&cache_dir, "/var/cache/pkg")],
    );
    assert_ran(&out);
    assert_eq!(out.stdout, "other\npkg\n");
    assert!(tree(&out.upper).is_empty(), "upper: {:?}", tree(&out.upper));
    assert_eq!(fs::read_to_string(cache_dir.join("f")).unwrap(), "x\n");

    // A target that is in the image already is used as it is.
    fx.layer_with_dirs("var-pkg", &["var/cache/pkg"]);
    let out = fx.run_with(
        &["var-pkg", "base"],
        "cat /var/cache/pkg/f",
        vec![cache(&cache_dir, "/var/cache/pkg")],
    );
    assert_ran(&out);
    assert_eq!(out.stdout, "x\n");
    assert!(tree(&out.upper).is_empty(), "upper: {:?}", tree(&out.upper));
}

#[test]
fn what_a_step_writes_beside_a_mount_point_stays_and_the_mount_point_goes() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let cache_dir = fx.cache_dir("pip");
    let out = fx.run_with(
        &["base"],
        "echo mine > /root/.cache/other; touch /root/.cache/pip/cached",
        vec![cache(&cache_dir, "/root/.cache/pip")],
    );
    assert_ran(&out);
    assert_eq!(
        tree(&out.upper),
        ["root", "root/.cache", "root/.cache/other"]
    );
    assert!(cache_dir.join("cached").exists());

    // A made dir the step only chmods is the step's change too.
    let out = fx.run_with(&["base"], "chmod 700 /a", vec![cache(&cache_dir, "/a/b/c")]);
    assert_ran(&out);
    assert_eq!(tree(&out.upper), ["a"]);
    let mode = fs::metadata(out.upper.join("a")).unwrap().mode();
    assert_eq!(mode & 0o7777, 0o700);
}

#[test]
fn a_secret_is_a_0400_file_of_the_step_user_readable_by_it_only() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let etc = fx.layer("users");
    fs::create_dir_all(etc.join("etc")).unwrap();
    fs::write(
        etc.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/sh\nother:x:1001:1001::/:/bin/sh\n",
    )
    .unwrap();
    fs::write(etc.join("etc/group"), "root:x:0:\nother:x:1001:\n").unwrap();
    let mut sb = fx.sandbox(
        &["users", "base"],
        &[
            "/bin/sh",
            "-c",
            "stat -c '%a %u %g' /run/secrets/token; \
             [ \"$(cat /run/secrets/token)\" = kiln-secret-7f3a9c-do-not-leak ] && echo same; \
             echo x > /run/secrets/token 2>/dev/null || echo read-only; \
             chmod 644 /run/secrets/token 2>/dev/null || echo no-chmod",
        ],
    );
    (sb.process.uid, sb.process.gid) = (1000, 1000);
    sb.mounts = vec![secret("/run/secrets/token")];
    let out = fx.run(sb);
    assert_ran(&out);
    assert_eq!(out.stdout, "400 1000 1000\nsame\nread-only\nno-chmod\n");
    assert!(tree(&out.upper).is_empty(), "upper: {:?}", tree(&out.upper));

    // Owned by root for a root step: another user of the step cannot read it.
    let out = fx.run_with(
        &["users", "base"],
        "su other -c 'cat /run/secrets/token' || echo denied; id -u",
        vec![secret("/run/secrets/token")],
    );
    assert_ran(&out);
    assert_eq!(out.stdout, "denied\n0\n");
    assert!(
        out.stderr.contains("Permission denied"),
        "stderr: {}",
        out.stderr
    );
    assert!(tree(&out.upper).is_empty(), "upper: {:?}", tree(&out.upper));
    assert_eq!(
        files_containing(fx.tmp.path(), SECRET),
        Vec::<String>::new(),
        "the secret reached the disk"
    );
}

#[test]
fn a_secret_target_through_an_image_symlink_lands_inside_the_root() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let layer = fx.layer("run-link");
    fs::create_dir_all(layer.join("var/run")).unwrap();
    fs::write(layer.join("var/run/pid"), "1\n").unwrap();
    symlink("/var/run", layer.join("run")).unwrap();
    let out = fx.run_with(
        &["run-link", "base"],
        "cat /var/run/secrets/token; echo; ls /var/run",
        vec![secret("/run/secrets/token")],
    );
    assert_ran(&out);
    let secret_text = std::str::from_utf8(SECRET).unwrap();
    assert_eq!(out.stdout, format!("{secret_text}\npid\nsecrets\n"));
    // Neither the created secrets/ and token nor the copied-up var/ and var/run/ remain.
    assert!(tree(&out.upper).is_empty(), "upper: {:?}", tree(&out.upper));

    // A step writing next to it keeps its file and the copied-up dirs it needs.
    let out = fx.run_with(
        &["run-link", "base"],
        "echo 2 > /run/other",
        vec![secret("/run/secrets/token")],
    );
    assert_ran(&out);
    assert_eq!(tree(&out.upper), ["var", "var/run", "var/run/other"]);
}

#[test]
fn image_symlinks_cannot_take_a_target_out_of_the_root() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let victim = fx.tmp.path().join("victim");
    fs::create_dir(&victim).unwrap();
    let in_root = victim.strip_prefix("/").unwrap();
    let ups = "../".repeat(victim.components().count() + 3);
    let escapes = |name: &str| {
        let layer = fx.layer(name);
        symlink(format!("{ups}{}", in_root.display()), layer.join("rel")).unwrap();
        symlink(&victim, layer.join("abs")).unwrap();
        symlink("/proc/self/root/etc", layer.join("magic")).unwrap();
        layer
    };
    // The image has the victim's path too: the links lead there, inside the root.
    fs::create_dir_all(escapes("escapes").join(in_root)).unwrap();
    let cache_dir = fx.cache_dir("c");
    let script = format!("ls -d {0}/cache {0}/token", victim.display());
    let out = fx.run_with(
        &["escapes", "base"],
        &script,
        vec![cache(&cache_dir, "/rel/cache"), secret("/abs/token")],
    );
    assert_ran(&out);
    assert_eq!(
        out.stdout,
        format!("{0}/cache\n{0}/token\n", victim.display())
    );
    assert!(tree(&out.upper).is_empty(), "upper: {:?}", tree(&out.upper));

    // Without it, they lead nowhere: an error, not a host path.
    escapes("dangling");
    for target in ["/rel/x", "/abs/x"] {
        let out = fx.run_with(&["dangling", "base"], "true", vec![secret(target)]);
        assert_eq!(
            out.err().to_string(),
            format!("secret target \"{target}\": a symbolic link on the path leads nowhere")
        );
        assert!(tree(&out.upper).is_empty(), "upper: {:?}", tree(&out.upper));
    }

    for target in ["/magic/x", "/proc/x", "/dev/shm/x", "/sys/x"] {
        let out = fx.run_with(&["escapes", "base"], "true", vec![secret(target)]);
        let err = out.err();
        assert!(
            matches!(err, RuntimeError::MountTarget { target: t, errno: Errno::EXDEV, .. } if t == target),
            "{target}: {err:?}"
        );
        assert!(
            err.to_string().starts_with(&format!(
                "secret target \"{target}\": the path leads into another mount"
            )),
            "{err}"
        );
        assert!(tree(&out.upper).is_empty(), "upper: {:?}", tree(&out.upper));
    }
    assert_eq!(
        fs::read_dir(&victim).unwrap().count(),
        0,
        "the host was touched"
    );
}

#[test]
fn unusable_targets_are_clear_errors_and_leave_nothing_in_the_upper() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let cache_dir = fx.cache_dir("c");
    let out = fx.run_with(
        &["base"],
        "true",
        vec![cache(&cache_dir, "/new/cache"), secret("/etc/hosts/x")],
    );
    let err = out.err();
    assert_eq!(
        err.to_string(),
        "secret target \"/etc/hosts/x\": Not a directory"
    );
    assert!(
        matches!(
            err,
            RuntimeError::MountTarget {
                kind: "secret target",
                ..
            }
        ),
        "{err:?}"
    );
    // The first mount's made dirs are removed although setup failed.
    assert!(tree(&out.upper).is_empty(), "upper: {:?}", tree(&out.upper));

    let out = fx.run_with(&["base"], "true", vec![secret("/etc")]);
    assert_eq!(
        out.err().to_string(),
        "secret target \"/etc\": is a directory, a secret needs a file"
    );
    let out = fx.run_with(&["base"], "true", vec![cache(&cache_dir, "/etc/hosts")]);
    assert_eq!(
        out.err().to_string(),
        "cache mount target \"/etc/hosts\": Not a directory"
    );
}

#[test]
fn cache_sources_must_be_root_owned_dirs_and_not_symlinks() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let real = fx.cache_dir("real");
    let link = fx.tmp.path().join("caches/link");
    symlink(&real, &link).unwrap();
    let file = fx.tmp.path().join("caches/file");
    fs::write(&file, "").unwrap();
    let foreign = fx.cache_dir("foreign");
    chown(&foreign, Some(1000), Some(1000)).unwrap();
    let cases = [
        (
            link.clone(),
            format!("cache mount source {} is a symbolic link", link.display()),
        ),
        (
            file.clone(),
            format!("cache mount source {} is not a directory", file.display()),
        ),
        (
            foreign.clone(),
            format!(
                "cache mount source {} must be owned by root, not by uid 1000",
                foreign.display()
            ),
        ),
    ];
    for (source, message) in cases {
        let out = fx.run_with(&["base"], "true", vec![cache(&source, "/c")]);
        assert_eq!(out.err().to_string(), format!("invalid sandbox: {message}"));
        let merged = out.upper.parent().unwrap().join("merged");
        assert!(!merged.exists(), "a rejected step prepared the overlay");
    }
    let missing = fx.tmp.path().join("caches/missing");
    let out = fx.run_with(&["base"], "true", vec![cache(&missing, "/c")]);
    assert!(
        matches!(out.err(), RuntimeError::Io { path, .. } if *path == missing),
        "{:?}",
        out.err()
    );
}

#[test]
fn oversized_secrets_and_nested_targets_are_refused_before_anything_runs() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let big = StepMount::Secret {
        content: vec![b'x'; MAX_SECRET_BYTES + 1].into(),
        target: "/run/big".into(),
    };
    let out = fx.run_with(&["base"], "true", vec![big]);
    assert!(
        matches!(out.err(), RuntimeError::Invalid(_)),
        "{:?}",
        out.err()
    );
    let cache_dir = fx.cache_dir("c");
    let out = fx.run_with(
        &["base"],
        "true",
        vec![cache(&cache_dir, "/c"), secret("/c/token")],
    );
    assert!(
        out.err().to_string().contains("must not nest"),
        "{}",
        out.err()
    );
    // The largest allowed secret fits its tmpfs exactly.
    let max = StepMount::Secret {
        content: vec![b'y'; MAX_SECRET_BYTES].into(),
        target: "/run/max".into(),
    };
    let out = fx.run_with(&["base"], "wc -c < /run/max", vec![max]);
    assert_ran(&out);
    assert_eq!(out.stdout.trim(), MAX_SECRET_BYTES.to_string());
}

#[test]
fn two_steps_share_one_cache_dir_at_the_same_time() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let cache_dir = fx.cache_dir("shared");
    // Each step waits (up to 60 s, for a loaded machine) until it sees the other's file: both
    // run at once.
    let script = |me: &str, other: &str| {
        format!(
            "echo {me} > /cache/{me}; i=0; \
             while [ ! -e /cache/{other} ] && [ $i -lt 1200 ]; do usleep 50000; i=$((i+1)); done; \
             cat /cache/{other}"
        )
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            fx.run_with(
                &["base"],
                &script("a", "b"),
                vec![cache(&cache_dir, "/cache")],
            )
        });
        let b = s.spawn(|| {
            fx.run_with(
                &["base"],
                &script("b", "a"),
                vec![cache(&cache_dir, "/cache")],
            )
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ran(&a);
    assert_ran(&b);
    assert_eq!((a.stdout.as_str(), b.stdout.as_str()), ("b\n", "a\n"));
    assert!(tree(&a.upper).is_empty() && tree(&b.upper).is_empty());
    let mut names: Vec<_> = fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn symlinks_a_step_leaves_in_a_shared_cache_resolve_inside_the_next_steps_root() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let cache_dir = fx.cache_dir("shared");
    let victim = fx.tmp.path().join("victim");
    fs::create_dir(&victim).unwrap();
    let plant = format!(
        "ln -s / /cache/up; ln -s {} /cache/victim; mkdir /cache/d",
        victim.display()
    );
    assert_ran(&fx.run_with(&["base"], &plant, vec![cache(&cache_dir, "/cache")]));
    // The store's path to the cache is kiln's; what is inside is the steps'. A later step
    // mounting it elsewhere, or writing through the planted links, stays in its root.
    let out = fx.run_with(
        &["base"],
        "echo pwned > /c/up/pwned; echo pwned > /c/victim/x 2>/dev/null || echo no-victim-dir",
        vec![cache(&cache_dir, "/c")],
    );
    assert_ran(&out);
    assert_eq!(out.stdout, "no-victim-dir\n");
    assert_eq!(tree(&out.upper), ["pwned"]);
    assert!(!Path::new("/pwned").exists());
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
    // Replacing the cache dir itself with a symlink is refused, not followed.
    let moved = fx.tmp.path().join("caches/moved");
    fs::rename(&cache_dir, &moved).unwrap();
    symlink(&victim, &cache_dir).unwrap();
    let out = fx.run_with(&["base"], "true", vec![cache(&cache_dir, "/c")]);
    assert!(
        out.err().to_string().contains("is a symbolic link"),
        "{}",
        out.err()
    );
}

#[test]
fn step_mounts_leave_no_mounts_on_the_host() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let before = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cache_dir = fx.cache_dir("c");
    let out = fx.run_with(
        &["base"],
        "grep -c -e ' /c ' -e ' /run/secrets/t ' /proc/self/mountinfo",
        vec![cache(&cache_dir, "/c"), secret("/run/secrets/t")],
    );
    assert_ran(&out);
    assert_eq!(out.stdout, "2\n");
    assert_eq!(before, fs::read_to_string("/proc/self/mountinfo").unwrap());
}

#[test]
fn a_failing_step_leaves_no_mount_points_either() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let cache_dir = fx.cache_dir("c");
    let out = fx.run_with(
        &["base"],
        "echo partial > /var/cache/pkg/half; exit 3",
        vec![
            cache(&cache_dir, "/var/cache/pkg"),
            secret("/run/secrets/t"),
        ],
    );
    assert_eq!(out.ok(), ExitStatus::Exited(3));
    assert!(tree(&out.upper).is_empty(), "upper: {:?}", tree(&out.upper));
    assert!(cache_dir.join("half").exists());
}

#[test]
fn a_target_made_over_a_whiteout_stays_so_the_deleted_dir_stays_deleted() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let layer = fx.layer("with-run");
    fs::create_dir_all(layer.join("run")).unwrap();
    fs::write(layer.join("run/deleted-earlier"), "").unwrap();
    let mut sb = fx.sh("ls -a /run");
    sb.overlay.lowers = vec!["with-run".into(), "base".into()];
    // An upper dir that is not fresh: it already deleted /run (a whiteout).
    nix::sys::stat::mknod(
        &sb.overlay.upper.join("run"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    sb.mounts = vec![secret("/run/token")];
    let out = fx.run(sb);
    assert_ran(&out);
    assert_eq!(out.stdout, ".\n..\ntoken\n");
    assert_eq!(tree(&out.upper), ["run", "run/token"]);
    // The layer still deletes what the image had in /run.
    let same_layer = Overlay {
        layers_dir: fx.layers_dir(),
        lowers: vec!["with-run".into(), "base".into()],
        upper: out.upper.clone(),
        work: out.upper.parent().unwrap().join("work"),
    };
    let run = with_overlay(&same_layer, |root| {
        let mut names: Vec<_> = fs::read_dir(root.join("run"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    })
    .unwrap();
    assert_eq!(run, ["token"], "the deleted file came back");
}
