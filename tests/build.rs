//! End-to-end builds with the real binary on real overlayfs, checked by real peers
//! (umoci unpacks the image, oci-image-tool validates the store).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{require, run, text, Env};

/// A base rootfs dir: busybox with its applets, and a file carrying an xattr.
fn busybox_rootfs(env: &Env) -> std::path::PathBuf {
    let root = common::busybox_rootfs(env, "base");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(root.join("xattr-file"), "x").unwrap();
    set_xattr(&root.join("xattr-file"), "user.kiln", "yes");
    root
}

fn set_xattr(path: &Path, name: &str, value: &str) {
    require("setfattr", "attr");
    run(Command::new("setfattr")
        .args(["-n", name, "-v", value])
        .arg(path));
}

fn get_xattr(path: &Path, name: &str) -> String {
    run(Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(path))
}

const TREE_SPEC: &str = r#"
image: tree:latest
from: rootfs:./base
steps:
  - run: |
      mkdir -p /data/keep /opq
      echo keep > /data/keep/file
      echo old > /opq/old
      echo bye > /data/deleted
  - copy: hello.txt
    to: /data/
    mode: "0640"
  - run: |
      rm /data/deleted
      rm -rf /opq && mkdir /opq && echo new > /opq/new
      echo linked > /data/a && ln /data/a /data/b
      ln -s ../data/keep/file /data/sym
      echo s > /data/suid && chmod 4755 /data/suid
      echo u > "/data/with space ünï"
  - run: "true"
  - env: { GREETING: hi }
  - workdir: /data
config:
  entrypoint: [/bin/sh]
  cmd: [-c, "echo $GREETING"]
  labels: { org.opencontainers.image.title: tree }
"#;

/// Lists a tree as `path → description`, the way the tests compare trees.
fn describe_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let desc = if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            walk(root, &path, out);
            format!("dir {mode:o}")
        } else {
            format!(
                "file {mode:o} {}:{} {:?}",
                meta.uid(),
                meta.gid(),
                std::fs::read_to_string(&path).unwrap_or_default()
            )
        };
        out.insert(rel, desc);
    }
}

/// Unpacks `image` of the OCI layout `layout` with umoci and returns the rootfs path.
fn umoci_unpack(env: &Env, layout: &Path, image: &str, name: &str) -> std::path::PathBuf {
    let bundle = env.path(name);
    run(Command::new("umoci")
        .args([
            "unpack",
            "--image",
            &format!("{}:{image}", layout.display()),
        ])
        .arg(&bundle));
    bundle.join("rootfs")
}

fn expected_data_tree() -> BTreeMap<String, String> {
    [
        ("data", "dir 755"),
        ("data/a", "file 644 0:0 \"linked\\n\""),
        ("data/b", "file 644 0:0 \"linked\\n\""),
        ("data/hello.txt", "file 640 0:0 \"hello\\n\""),
        ("data/keep", "dir 755"),
        ("data/keep/file", "file 644 0:0 \"keep\\n\""),
        ("data/suid", "file 4755 0:0 \"s\\n\""),
        ("data/sym", "link ../data/keep/file"),
        ("data/with space ünï", "file 644 0:0 \"u\\n\""),
        ("opq", "dir 755"),
        ("opq/new", "file 644 0:0 \"new\\n\""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Checks an unpacked image of TREE_SPEC: whiteout, opaque dir, hardlink, symlink, setuid,
/// xattr, a name with a space and UTF-8, and no sandbox mountpoints.
fn check_tree(rootfs: &Path) {
    let tree = describe_tree(rootfs);
    let data: BTreeMap<String, String> = tree
        .iter()
        .filter(|(k, _)| k.starts_with("data") || k.starts_with("opq"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(data, expected_data_tree());
    let a = std::fs::metadata(rootfs.join("data/a")).unwrap();
    let b = std::fs::metadata(rootfs.join("data/b")).unwrap();
    assert_eq!(
        a.ino(),
        b.ino(),
        "data/a and data/b must be one hardlinked file"
    );
    assert_eq!(get_xattr(&rootfs.join("xattr-file"), "user.kiln"), "yes");
    assert!(tree.contains_key("bin/busybox"));
    for mountpoint in ["proc", "dev", "sys"] {
        assert!(
            !tree.contains_key(mountpoint),
            "sandbox mountpoint {mountpoint} leaked into a layer: {tree:?}"
        );
    }
}

#[test]
fn multi_step_build_gives_the_expected_tree() {
    common::require_root!("namespaces, overlayfs");
    require("umoci", "umoci");
    require("skopeo", "skopeo");
    let env = Env::new();
    busybox_rootfs(&env);
    env.write("hello.txt", "hello\n");
    env.write("kiln.yaml", TREE_SPEC);
    let ctx = env.dir.path().to_str().unwrap();
    env.kiln_ok(&["build", ctx, "--compression", "gzip", "-t", "tree:gzip"]);
    env.kiln_ok(&["build", ctx]);

    // gzip layers: umoci reads the store directly.
    check_tree(&umoci_unpack(
        &env,
        &env.root(),
        "localhost/tree:gzip",
        "bundle-gzip",
    ));
    // zstd layers (the default): Debian's umoci predates zstd, so skopeo (which reads them)
    // recompresses the image first.
    let converted = env.path("converted");
    run(Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-compress-format",
            "gzip",
            "--dest-compress",
        ])
        .arg(format!(
            "oci:{}:localhost/tree:latest",
            env.root().display()
        ))
        .arg(format!("oci:{}:tree", converted.display())));
    check_tree(&umoci_unpack(&env, &converted, "tree", "bundle-zstd"));

    // The config carries the spec's config and one history entry per step.
    let inspect: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["inspect", "tree"])).unwrap();
    let cfg = &inspect["config"];
    assert_eq!(cfg["config"]["Entrypoint"], serde_json::json!(["/bin/sh"]));
    assert_eq!(cfg["config"]["WorkingDir"], "/data");
    assert!(cfg["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "GREETING=hi"));
    assert_eq!(
        cfg["config"]["Labels"]["org.opencontainers.image.title"],
        "tree"
    );
    let history = cfg["history"].as_array().unwrap();
    assert_eq!(history.len(), 7, "import + 6 steps: {history:?}");
    // `run: "true"` changes no file: no layer. Layers: import, run, copy, run.
    assert_eq!(inspect["manifest"]["layers"].as_array().unwrap().len(), 4);
    assert_eq!(history[4]["empty_layer"], true);
}

#[test]
fn store_is_a_valid_oci_layout() {
    common::require_root!("namespaces, overlayfs");
    require("oci-image-tool", "oci-image-tool");
    require("skopeo", "skopeo");
    let env = Env::new();
    busybox_rootfs(&env);
    env.write("hello.txt", "hello\n");
    env.write("kiln.yaml", TREE_SPEC);
    // Debian's oci-image-tool predates zstd layers: validate a gzip build.
    env.kiln_ok(&[
        "build",
        env.dir.path().to_str().unwrap(),
        "-t",
        "valid:1",
        "--compression",
        "gzip",
    ]);
    // The tool opens every file under the directory it is given, including the whiteout
    // devices of kiln's unpacked layer dirs: validate the layout part (linked, not copied).
    let layout = env.path("layout");
    std::fs::create_dir(&layout).unwrap();
    run(Command::new("cp")
        .arg("-al")
        .arg(env.root().join("blobs"))
        .arg(env.root().join("index.json"))
        .arg(env.root().join("oci-layout"))
        .arg(&layout));
    run(Command::new("oci-image-tool")
        .args([
            "validate",
            "--type",
            "image",
            "--ref",
            "name=localhost/valid:1",
        ])
        .arg(&layout));
    let out = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:localhost/valid:1", env.root().display())));
    assert!(
        out.contains("application/vnd.oci.image.manifest.v1+json"),
        "{out}"
    );
}

#[test]
fn same_spec_built_twice_gives_identical_digests() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    busybox_rootfs(&env);
    env.write("hello.txt", "hello\n");
    env.write("kiln.yaml", TREE_SPEC);
    let ctx = env.dir.path().to_str().unwrap();
    let first = env.kiln_ok(&["build", ctx, "-t", "one", "-q"]);
    // A second store: nothing shared, every layer made again.
    let other = Env::new();
    std::fs::rename(env.path("base"), other.path("base")).unwrap();
    other.write("hello.txt", "hello\n");
    other.write("kiln.yaml", TREE_SPEC);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // different mtimes
    let second = other.kiln_ok(&[
        "build",
        other.dir.path().to_str().unwrap(),
        "-t",
        "two",
        "-q",
    ]);
    assert_eq!(first, second, "manifest digests differ");
    assert!(first.starts_with("sha256:"), "{first}");
}

#[test]
fn gzip_compression_is_available() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    busybox_rootfs(&env);
    env.write(
        "kiln.yaml",
        "image: gz\nfrom: rootfs:./base\nsteps:\n  - run: echo hi > /hi\n",
    );
    env.kiln_ok(&[
        "build",
        env.dir.path().to_str().unwrap(),
        "--compression",
        "gzip",
    ]);
    let inspect: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["inspect", "gz"])).unwrap();
    for l in inspect["manifest"]["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
}

#[test]
fn failing_step_stops_the_build_and_tags_nothing() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    busybox_rootfs(&env);
    env.write("kiln.yaml", "image: broken\nfrom: rootfs:./base\nsteps:\n  - run: echo ok > /ok\n  - run: |\n      echo failing >&2\n      exit 3\n  - run: echo never\n");
    let before = common::kiln_mounts(&env);
    let out = env.kiln(&["build", env.dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kiln.yaml:5:5"),
        "error must point at the step: {stderr}"
    );
    assert!(
        stderr.contains("failing"),
        "step output must be shown: {stderr}"
    );
    assert!(
        !stderr.contains("never"),
        "later steps must not run: {stderr}"
    );
    let images = env.kiln_ok(&["images", "--json"]);
    assert_eq!(images.trim(), "[]", "nothing may be tagged: {images}");
    assert_eq!(
        common::kiln_mounts(&env),
        before,
        "no mount may be left behind"
    );
    let tmp: Vec<_> = std::fs::read_dir(env.root().join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "staging dirs left behind: {tmp:?}");
}

#[test]
fn images_tag_and_rmi() {
    let env = Env::unprivileged();
    busybox_rootfs(&env);
    let digest = env.kiln_ok(&["import", env.path("base").to_str().unwrap(), "-t", "base"]);
    env.kiln_ok(&["tag", "base", "base:2"]);
    let list: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["images", "--json"])).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["localhost/base:latest", "localhost/base:2"]);
    assert!(list[0]["digest"].as_str() == Some(digest.as_str()));
    env.kiln_ok(&["rmi", "base:2"]);
    let out = env.kiln(&["rmi", "base:2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such image: base:2"));
    let out = env.kiln(&["inspect", "nope"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn build_from_an_image_in_the_store_and_from_an_oci_layout() {
    common::require_root!("namespaces, overlayfs");
    require("skopeo", "skopeo");
    let env = Env::new();
    busybox_rootfs(&env);
    env.kiln_ok(&["import", env.path("base").to_str().unwrap(), "-t", "base"]);
    env.write(
        "kiln.yaml",
        "image: child\nfrom: base\nsteps:\n  - run: echo child > /child\n",
    );
    env.kiln_ok(&["build", env.dir.path().to_str().unwrap()]);
    // Copy the image out with skopeo to a separate OCI layout, then build from it.
    let layout = env.path("layout");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!(
            "oci:{}:localhost/child:latest",
            env.root().display()
        ))
        .arg(format!("oci:{}:v1", layout.display())));
    env.write(
        "b/kiln.yaml",
        "image: grandchild\nfrom: oci:../layout:v1\nsteps:\n  - run: cat /child > /grandchild\n",
    );
    let other = Env::new();
    let out = other.kiln(&["build", env.path("b").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn two_builds_into_one_store_at_once_both_land() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    busybox_rootfs(&env);
    for i in 0..4 {
        env.write(&format!("c{i}/kiln.yaml"), &format!("image: par{i}\nfrom: rootfs:../base\nsteps:\n  - run: echo {i} > /n\n  - run: echo shared > /s\n"));
    }
    let children: Vec<_> = (0..4)
        .map(|i| {
            env.command()
                .args(["build", "-q"])
                .arg(env.path(&format!("c{i}")))
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let list: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["images", "--json"])).unwrap();
    let mut names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "localhost/par0:latest",
            "localhost/par1:latest",
            "localhost/par2:latest",
            "localhost/par3:latest"
        ]
    );
}

#[test]
fn interrupt_during_a_step_cleans_up() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    busybox_rootfs(&env);
    env.write(
        "kiln.yaml",
        "image: slow\nfrom: rootfs:./base\nsteps:\n  - run: echo started; exec sleep 41\n",
    );
    let before = common::kiln_mounts(&env);
    let child = env
        .command()
        .arg("build")
        .arg(env.dir.path())
        .spawn()
        .unwrap();
    // Wait until the step runs: its staging dir exists and `sleep 41` is a process.
    let sleeping = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|p| std::fs::read(p.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x0041\x00"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !sleeping() {
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let tmp: Vec<_> = std::fs::read_dir(env.root().join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "staging dirs left behind: {tmp:?}");
    assert_eq!(
        common::kiln_mounts(&env),
        before,
        "no mount may be left behind"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!sleeping(), "the step's process outlived kiln");
    assert_eq!(env.kiln_ok(&["images", "--json"]), "[]");
}

#[test]
fn a_rootfs_tarball_and_its_directory_import_to_the_same_layer() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let base = busybox_rootfs(&env);
    let tarball = env.path("base.tar.gz");
    run(Command::new("tar")
        .arg("-C")
        .arg(&base)
        .args(["--xattrs", "--xattrs-include=*", "-czf"])
        .arg(&tarball)
        .arg("."));
    env.kiln_ok(&["import", base.to_str().unwrap(), "-t", "from-dir"]);
    env.kiln_ok(&["import", tarball.to_str().unwrap(), "-t", "from-tar"]);
    let layers = |name: &str| {
        let inspect: serde_json::Value =
            serde_json::from_str(&env.kiln_ok(&["inspect", name])).unwrap();
        inspect["manifest"]["layers"].clone()
    };
    assert_eq!(layers("from-dir"), layers("from-tar"));
    // And a build can start from the tarball directly.
    env.write(
        "kiln.yaml",
        "image: t\nfrom: rootfs:./base.tar.gz\nsteps:\n  - run: test -x /bin/busybox\n",
    );
    env.kiln_ok(&["build", env.dir.path().to_str().unwrap()]);
    let missing = env.kiln(&["import", env.path("nope.tar").to_str().unwrap(), "-t", "x"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("nope.tar"),
        "{}",
        text(&missing)
    );
}

/// A spec past the layer limit fails before its first step, `--plan` the same way, and
/// with the step that would add the layer too many (issue 18: an 800-step spec used to
/// plan "would run" and exit 0, then fail at step 500 after running 499 steps). Run as
/// a user types it, from the project folder.
#[test]
fn a_spec_past_the_layer_limit_fails_before_any_step_and_in_plan_alike() {
    common::require_root!("a build");
    let env = Env::new();
    busybox_rootfs(&env);
    let mut spec = String::from("image: tall\nfrom: rootfs:../base\nsteps:\n");
    for n in 1..=600 {
        spec.push_str(&format!("  - run: echo {n} > /n{n}\n    network: none\n"));
    }
    env.write("app/kiln.yaml", &spec);
    // The base is one layer, so step 499 would make layer 500.
    let line = 3 + 2 * 499 - 1;
    let expected = format!(
        "kiln.yaml:{line}:5: step 499 (run: echo 499 > /n499): it would make the image's layer 500"
    );
    for args in [&["build", "--plan"][..], &["build"]] {
        let out = env.kiln_in("app", args);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {shown}");
        assert!(shown.contains(&expected), "{args:?}: {shown}");
        assert!(shown.contains("merge steps"), "{args:?}: {shown}");
        assert!(
            !shown.contains("[1/600]"),
            "no step ran or was planned: {shown}"
        );
    }
    assert!(env.kiln_ok(&["images", "-q"]).is_empty());
}
