//! `kiln save` and `kiln load` (issue 17, section 1): images to and from OCI image layouts,
//! as tar archives, directories and pipes, read and written by skopeo too; and a loaded
//! archive is as untrusted as a registry: a hostile one changes nothing.

mod common;

use std::process::Command;

use common::containers::busybox_image;
use common::{require, run, text, Env};

/// An env whose store holds `bb` and `app:1` (a step's file on top of it).
fn env_with_images() -> Env {
    let env = Env::new();
    busybox_image(&env);
    env.write(
        "app/kiln.yaml",
        "image: app:1\nfrom: bb\nsteps:\n  - run: echo saved-and-loaded > /hello\n    network: none\n",
    );
    env.kiln_ok(&["build", env.path("app").to_str().unwrap()]);
    env
}

/// `kiln images -q` of a store, sorted.
fn ids(env: &Env) -> Vec<String> {
    let mut ids: Vec<String> = env
        .kiln_ok(&["images", "-q"])
        .lines()
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

#[test]
fn saved_archives_load_back_and_skopeo_reads_and_writes_them() {
    common::require_root!("namespaces, overlayfs");
    require("skopeo", "skopeo");
    let env = env_with_images();
    let tar = env.path("images.tar");
    env.kiln_ok(&["save", "-o", tar.to_str().unwrap(), "app:1", "bb"]);
    // Reproducible: the same images give the same bytes.
    let again = env.path("again.tar");
    env.kiln_ok(&["save", "-o", again.to_str().unwrap(), "app:1", "bb"]);
    assert_eq!(std::fs::read(&tar).unwrap(), std::fs::read(&again).unwrap());

    // Another store loads both, by name, with the same IDs, and runs them.
    let other = Env::new();
    let loaded = other.kiln_ok(&["load", "-i", tar.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: localhost/app:1"), "{loaded}");
    assert_eq!(ids(&other), ids(&env));
    let out = other.kiln_ok(&["run", "--rm", "--network", "none", "app:1", "cat", "/hello"]);
    assert_eq!(out, "saved-and-loaded");

    // skopeo reads kiln's archive, and kiln loads what skopeo writes: an archive and a dir.
    let name = format!("oci-archive:{}:localhost/app:1", tar.display());
    let skopeo_tar = env.path("skopeo.tar");
    run(Command::new("skopeo")
        .args(["copy", "-q", &name])
        .arg(format!("oci-archive:{}:team/app:2", skopeo_tar.display())));
    let skopeo_dir = env.path("skopeo-dir");
    run(Command::new("skopeo")
        .args(["copy", "-q", &name])
        .arg(format!("oci:{}:team/app:3", skopeo_dir.display())));
    // An image the layout does not name is kept under its ID.
    let unnamed = env.path("unnamed");
    run(Command::new("skopeo")
        .args(["copy", "-q", &name])
        .arg(format!("oci:{}", unnamed.display())));
    let third = Env::new();
    let said = third.kiln_ok(&["load", "-i", unnamed.to_str().unwrap()]);
    assert!(
        said.contains("localhost/loaded:") && said.contains("unnamed"),
        "{said}"
    );
    third.kiln_ok(&["load", "-i", skopeo_tar.to_str().unwrap()]);
    third.kiln_ok(&["load", "-i", skopeo_dir.to_str().unwrap()]);
    let out = third.kiln_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "team/app:3",
        "cat",
        "/hello",
    ]);
    assert_eq!(out, "saved-and-loaded");
    assert!(third.kiln_ok(&["images"]).contains("localhost/team/app"));
}

#[test]
fn save_and_load_go_through_a_pipe_and_a_directory() {
    common::require_root!("namespaces, overlayfs");
    let env = env_with_images();
    let other = Env::new();
    // `kiln save app:1 | kiln load`, as users pipe it over ssh.
    let pipe = format!(
        "{kiln} --root {a} save app:1 | {kiln} --root {b} load",
        kiln = common::kiln_bin().display(),
        a = env.root().display(),
        b = other.root().display()
    );
    let said = run(Command::new("sh").args(["-c", &pipe]));
    assert!(said.contains("Loaded image: localhost/app:1"), "{said}");
    let dir = env.path("layout/");
    env.kiln_ok(&["save", "-o", dir.to_str().unwrap(), "bb"]);
    for name in ["oci-layout", "index.json", "blobs/sha256"] {
        assert!(dir.join(name).exists(), "{name}");
    }
    other.kiln_ok(&["load", "-i", dir.to_str().unwrap()]);
    assert_eq!(ids(&other), ids(&env));
}

#[test]
fn a_hostile_archive_changes_nothing() {
    common::require_root!("namespaces, overlayfs");
    let env = env_with_images();
    let victim = Env::new();
    // An entry that would climb out of the staging dir is refused before anything is read.
    let evil = env.path("evil.tar");
    {
        let mut tar = tar::Builder::new(std::fs::File::create(&evil).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(4);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        let escape = env.path("escaped");
        // Written into the header by hand: the tar crate itself refuses to write `..`.
        let name = format!("../../../..{}", escape.display());
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        tar.append(&header, &b"evil"[..]).unwrap();
        tar.finish().unwrap();
        assert!(!escape.exists());
    }
    let out = victim.kiln(&["load", "-i", evil.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("unexpected entry"), "{}", text(&out));
    assert!(!env.path("escaped").exists());

    // A blob whose bytes are not its digest is refused as a pull's would be.
    let dir = env.path("tampered/");
    env.kiln_ok(&["save", "-o", dir.to_str().unwrap(), "app:1"]);
    let blobs = dir.join("blobs/sha256");
    let biggest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&biggest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&biggest, bytes).unwrap();
    let out = victim.kiln(&["load", "-i", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("sha256:"), "{}", text(&out));
    // Bounds apply while the archive is read, as a pull's do (kiln's config file).
    let tar = env.path("whole.tar");
    env.kiln_ok(&["save", "-o", tar.to_str().unwrap(), "app:1"]);
    victim.write("config.yaml", "image_limits:\n  image_size: 100k\n");
    let out = victim
        .command()
        .env("KILN_CONFIG", victim.path("config.yaml"))
        .args(["load", "-i", tar.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("image_size"), "{}", text(&out));
    // The store is as it was: no image, no blob, no staging left.
    assert!(ids(&victim).is_empty());
    let blobs = victim.root().join("blobs/sha256");
    assert_eq!(std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0), 0);
    assert_eq!(
        std::fs::read_dir(victim.root().join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn docker_archives_are_written_with_gzip_layers_and_read_back_from_skopeo_too() {
    common::require_root!("namespaces, overlayfs");
    require("skopeo", "skopeo");
    let env = env_with_images();
    let tar = env.path("docker.tar");
    env.kiln_ok(&[
        "save",
        "--format",
        "docker",
        "-o",
        tar.to_str().unwrap(),
        "app:1",
    ]);
    // docker load's format, with layers any docker reads: gzip, whatever the store holds.
    let mut archive = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    let mut manifest = None;
    let mut layers = 0;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        if name == "manifest.json" {
            manifest = Some(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap());
        } else if name.ends_with("/layer.tar") {
            assert_eq!(&bytes[..2], &[0x1f, 0x8b], "{name} is not gzip");
            layers += 1;
        }
    }
    let manifest = manifest.expect("manifest.json");
    assert_eq!(manifest[0]["RepoTags"][0], "localhost/app:1");
    assert_eq!(manifest[0]["Layers"].as_array().unwrap().len(), layers);

    // The config is kiln's own, so the image is the same one under docker's ID.
    let other = Env::new();
    other.kiln_ok(&["load", "-i", tar.to_str().unwrap()]);
    let config = |e: &Env| e.kiln_ok(&["inspect", "-f", "{{.config_digest}}", "app:1"]);
    assert_eq!(config(&other), config(&env));
    let out = other.kiln_ok(&["run", "--rm", "--network", "none", "app:1", "cat", "/hello"]);
    assert_eq!(out, "saved-and-loaded");

    // skopeo reads it, and its own docker-archive (layers linked by symlinks) loads.
    let name = format!("docker-archive:{}:localhost/app:1", tar.display());
    let copied = env.path("skopeo-docker.tar");
    run(Command::new("skopeo")
        .args(["copy", "-q", &name])
        .arg(format!("docker-archive:{}:team/app:4", copied.display())));
    let third = Env::new();
    let loaded = third.kiln_ok(&["load", "-i", copied.to_str().unwrap()]);
    assert!(loaded.contains("team/app:4"), "{loaded}");
    let out = third.kiln_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "team/app:4",
        "cat",
        "/hello",
    ]);
    assert_eq!(out, "saved-and-loaded");

    // A link out of the archive is refused.
    let evil = env.path("link.tar");
    {
        let mut builder = tar::Builder::new(std::fs::File::create(&evil).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "abc/layer.tar", "../../../etc/shadow")
            .unwrap();
        builder.finish().unwrap();
    }
    let out = third.kiln(&["load", "-i", evil.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("outside the archive"), "{}", text(&out));
}

/// Load imports while it reads (index first, as `kiln save` writes it): an archive cut in
/// its last layer, or with a blob whose bytes are not its name, must still tag nothing and
/// leave nothing, though the import had begun. Run from the project folder with relative
/// paths, as users type it.
#[test]
fn a_cut_or_tampered_archive_loads_nothing_though_the_import_had_begun() {
    common::require_root!("namespaces, overlayfs");
    let env = env_with_images();
    let out = env.kiln_in("app", &["save", "-o", "app.tar", "app:1"]);
    assert!(out.status.success(), "{}", text(&out));
    let whole = std::fs::read(env.path("app/app.tar")).unwrap();
    let entries = run(Command::new("tar").arg("tf").arg(env.path("app/app.tar")));
    let names: Vec<&str> = entries.lines().collect();
    assert_eq!(
        names[..2],
        ["oci-layout", "index.json"],
        "index first: {entries}"
    );

    let victim = Env::new();
    victim.write("in/.keep", "");
    std::fs::write(victim.path("in/cut.tar"), &whole[..whole.len() - 3000]).unwrap();
    // Tampered: the last byte of the largest blob's content flipped, the tar intact.
    let mut tampered = whole.clone();
    let biggest = largest_entry_end(&env.path("app/app.tar"));
    tampered[biggest - 1] ^= 0xff;
    std::fs::write(victim.path("in/tampered.tar"), &tampered).unwrap();
    for (archive, why) in [
        ("cut.tar", "not an image archive"),
        ("tampered.tar", "holds content whose digest is"),
    ] {
        let out = victim.kiln_in("in", &["load", "-i", archive]);
        assert_eq!(out.status.code(), Some(1), "{archive}: {}", text(&out));
        assert!(text(&out).contains(why), "{archive}: {}", text(&out));
        assert!(ids(&victim).is_empty(), "{archive}");
        let blobs = victim.root().join("blobs/sha256");
        assert_eq!(std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0), 0);
        assert_eq!(
            std::fs::read_dir(victim.root().join("tmp"))
                .unwrap()
                .count(),
            0
        );
    }
    std::fs::write(victim.path("in/app.tar"), &whole).unwrap();
    let out = victim.kiln_in("in", &["load", "app.tar"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = victim.kiln(&["run", "--rm", "--network", "none", "app:1", "cat", "/hello"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "saved-and-loaded",
        "{}",
        text(&out)
    );
}

/// Where the content of the archive's largest entry ends, in bytes from its start.
fn largest_entry_end(path: &std::path::Path) -> usize {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut largest = (0, 0);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let size = entry.header().size().unwrap();
        if size > largest.0 {
            largest = (size, entry.raw_file_position() + size);
        }
    }
    largest.1 as usize
}
