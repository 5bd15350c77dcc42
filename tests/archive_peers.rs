//! `kiln save` and `kiln load` with the peers docker and podman users move images with:
//! podman loads and runs kiln's archives (Docker and OCI), and kiln loads what `podman save`
//! (every format it has, several images at once) and `buildah push` write, under the names
//! those tools gave them, as `docker load` would name them.
//!
//! podman and buildah run as root on a private store in the test's temp dir (vfs, so no
//! mount outlives the test), with runc and no systemd, so the host's own podman store is
//! never touched.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::containers::env_with_app_image;
use common::{require, run, text, Env};

/// podman (and buildah, which shares its store) on a store of the test's own.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new(env: &Env) -> Podman {
        require("podman", "podman");
        require("buildah", "buildah");
        require("runc", "runc");
        Podman {
            dir: env.path("podman"),
        }
    }

    fn store_args(&self, cmd: &mut Command) {
        cmd.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs"]);
    }

    fn podman(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("podman");
        self.store_args(&mut cmd);
        cmd.arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(args);
        run(&mut cmd)
    }

    fn buildah(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("buildah");
        self.store_args(&mut cmd);
        run(cmd.args(args))
    }

    /// `podman run --rm` without a network; nofile and nproc are set low because podman's
    /// defaults are above the hard limits of a root without CAP_SYS_RESOURCE (as in some CI
    /// machines), where runc could not set them.
    fn run(&self, image: &str, command: &[&str]) -> String {
        let mut args = vec!["run", "--rm", "--network", "none"];
        args.extend([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
        args.push(image);
        args.extend(command);
        self.podman(&args)
    }
}

impl Drop for Podman {
    /// podman keeps nothing running after `run --rm`; its store is removed with the env,
    /// but its images are removed first so that no lock or layer is held by podman.
    fn drop(&mut self) {
        let mut cmd = Command::new("podman");
        self.store_args(&mut cmd);
        let _ = cmd.args(["rmi", "-a", "-f"]).output();
    }
}

/// `kiln images` as (repository, tag) pairs, sorted.
fn names(env: &Env) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = env
        .kiln_ok(&["images"])
        .lines()
        .skip(1)
        .map(|l| {
            let mut cols = l.split_whitespace();
            let repo = cols.next().unwrap().to_owned();
            (repo, cols.next().unwrap().to_owned())
        })
        .collect();
    names.sort();
    names
}

fn pair(repo: &str, tag: &str) -> (String, String) {
    (repo.to_owned(), tag.to_owned())
}

#[test]
fn podman_loads_and_runs_kilns_docker_and_oci_archives() {
    common::require_root!("namespaces, overlayfs, podman as root");
    let env = env_with_app_image();
    let podman = Podman::new(&env);
    for format in ["docker", "oci"] {
        let tar = env.path(&format!("{format}.tar"));
        env.kiln_ok(&[
            "save",
            "--format",
            format,
            "-o",
            tar.to_str().unwrap(),
            "app:1",
        ]);
        let said = podman.podman(&["load", "-q", "-i", tar.to_str().unwrap()]);
        assert!(
            said.contains("Loaded image: localhost/app:1"),
            "{format}: {said}"
        );
        let out = podman.run("localhost/app:1", &["cat", "/hello"]);
        assert_eq!(out.trim(), "saved-and-loaded", "{format}");
        // The image ID podman shows is kiln's config digest: the same image.
        let id = podman.podman(&["image", "inspect", "-f", "{{.Id}}", "localhost/app:1"]);
        let config = env.kiln_ok(&["inspect", "-f", "{{.config_digest}}", "app:1"]);
        assert_eq!(format!("sha256:{}", id.trim()), config, "{format}");
        podman.podman(&["rmi", "-f", "localhost/app:1"]);
    }
}

#[test]
fn kiln_loads_every_format_podman_saves_and_buildah_pushes() {
    common::require_root!("namespaces, overlayfs, podman as root");
    let env = env_with_app_image();
    let podman = Podman::new(&env);
    // Through a Docker archive: podman cannot write a zstd layer into a Docker archive.
    let from_kiln = env.path("from-kiln.tar");
    let args = [
        "save",
        "--format",
        "docker",
        "-o",
        from_kiln.to_str().unwrap(),
        "app:1",
    ];
    env.kiln_ok(&args);
    podman.podman(&["load", "-q", "-i", from_kiln.to_str().unwrap()]);
    podman.podman(&[
        "tag",
        "localhost/app:1",
        "docker.io/library/web:2",
        "quay.io/team/app",
    ]);

    let out = |name: &str| env.path(name).to_str().unwrap().to_owned();
    podman.podman(&[
        "save",
        "-q",
        "--format",
        "docker-archive",
        "-o",
        &out("p-docker.tar"),
        "localhost/app:1",
    ]);
    podman.podman(&[
        "save",
        "-q",
        "--format",
        "oci-archive",
        "-o",
        &out("p-oci.tar"),
        "localhost/app:1",
    ]);
    podman.podman(&[
        "save",
        "-q",
        "--format",
        "oci-dir",
        "-o",
        &out("p-oci-dir"),
        "localhost/app:1",
    ]);
    // Several images (names) in one archive: podman writes one entry with three RepoTags.
    let all = [
        "localhost/app:1",
        "docker.io/library/web:2",
        "quay.io/team/app",
    ];
    podman.podman(
        &[
            &[
                "save",
                "-q",
                "-m",
                "--format",
                "docker-archive",
                "-o",
                &out("p-multi.tar"),
            ][..],
            &all,
        ]
        .concat(),
    );
    podman.buildah(&[
        "push",
        "-q",
        "localhost/app:1",
        &format!("oci-archive:{}:team/app:7", out("b-oci.tar")),
    ]);
    podman.buildah(&[
        "push",
        "-q",
        "localhost/app:1",
        &format!("docker-archive:{}:team/app:8", out("b-docker.tar")),
    ]);

    for (archive, expected) in [
        ("p-docker.tar", vec![pair("localhost/app", "1")]),
        ("p-oci.tar", vec![pair("localhost/app", "1")]),
        ("p-oci-dir", vec![pair("localhost/app", "1")]),
        (
            "p-multi.tar",
            vec![
                pair("docker.io/library/web", "2"),
                pair("localhost/app", "1"),
                pair("quay.io/team/app", "latest"),
            ],
        ),
        ("b-oci.tar", vec![pair("localhost/team/app", "7")]),
        // buildah names the image by where it went and where it came from.
        (
            "b-docker.tar",
            vec![pair("docker.io/team/app", "8"), pair("localhost/app", "1")],
        ),
    ] {
        let other = Env::new();
        let said = other.kiln_ok(&["load", "-i", &out(archive)]);
        for (repo, tag) in &expected {
            assert!(
                said.contains(&format!("Loaded image: {repo}:{tag}")),
                "{archive}: {said}"
            );
        }
        assert_eq!(names(&other), expected, "{archive}");
        let (repo, tag) = &expected[0];
        let image = format!("{repo}:{tag}");
        let args = ["run", "--rm", "--network", "none", &image, "cat", "/hello"];
        assert_eq!(other.kiln_ok(&args), "saved-and-loaded", "{archive}");
    }
    // A name as docker users type it finds a Docker Hub image of the archive.
    let other = Env::new();
    other.kiln_ok(&["load", "-i", &out("p-multi.tar")]);
    let args = ["run", "--rm", "--network", "none", "web:2", "cat", "/hello"];
    assert_eq!(other.kiln_ok(&args), "saved-and-loaded");

    // podman's docker-dir (containers/image's `dir:` transport) is no layout kiln reads:
    // the error says what it is and how to turn it into one.
    podman.podman(&[
        "save",
        "-q",
        "--format",
        "docker-dir",
        "-o",
        &out("p-docker-dir"),
        "localhost/app:1",
    ]);
    let refused = other.kiln(&["load", "-i", &out("p-docker-dir")]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("dir: transport"),
        "{}",
        text(&refused)
    );
}
