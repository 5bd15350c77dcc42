//! `kiln save` and `kiln load` (issue 17, section 1): images to and from OCI image layouts,
//! as tar archives, directories and pipes, read and written by skopeo too; and a loaded
//! archive is as untrusted as a registry: a hostile one changes nothing.

mod common;

use std::process::Command;

use common::containers::{busybox_image, env_with_app_image};
use common::{require, run, text, Env};

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
    let env = env_with_app_image();
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
    let env = env_with_app_image();
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
    let env = env_with_app_image();
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
    let env = env_with_app_image();
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
    let env = env_with_app_image();
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

/// The files of a tar, in order (directories left out: no archive needs them).
fn files_of(tar: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(std::fs::File::open(tar).unwrap());
    let mut files = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            files.push((name, bytes));
        }
    }
    files
}

/// A tar of `files`, then whatever `extra` appends.
fn tar_of(files: &[(String, Vec<u8>)], extra: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, &bytes[..]).unwrap();
    }
    extra(&mut builder);
    builder.into_inner().unwrap()
}

/// `files` with the content of `name` replaced.
fn with(files: &[(String, Vec<u8>)], name: &str, bytes: Vec<u8>) -> Vec<(String, Vec<u8>)> {
    let mut files = files.to_vec();
    files.iter_mut().find(|(n, _)| n == name).unwrap().1 = bytes;
    files
}

/// A header whose name is written by hand (the tar crate refuses absolute ones).
fn raw_header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_cksum();
    header
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, bytes).unwrap();
    gz.finish().unwrap()
}

/// `kiln load` of each hostile archive fails with exit 1 and a message naming what is
/// wrong, in the archive's words (never kiln's staging dir), and leaves the store exactly
/// as it was, though it already holds images (one sharing the archive's bottom layer).
#[test]
fn hostile_archives_are_refused_by_name_and_leave_the_store_as_it_was() {
    common::require_root!("namespaces, overlayfs");
    let env = env_with_app_image();
    let docker_tar = env.path("docker.tar");
    let oci_tar = env.path("oci.tar");
    env.kiln_ok(&[
        "save",
        "--format",
        "docker",
        "-o",
        docker_tar.to_str().unwrap(),
        "app:1",
    ]);
    env.kiln_ok(&["save", "-o", oci_tar.to_str().unwrap(), "app:1"]);
    let docker = files_of(&docker_tar);
    let oci = files_of(&oci_tar);
    let manifest: serde_json::Value =
        serde_json::from_slice(&docker.iter().find(|(n, _)| n == "manifest.json").unwrap().1)
            .unwrap();
    let config = manifest[0]["Config"].as_str().unwrap().to_owned();
    let layer = manifest[0]["Layers"][0].as_str().unwrap().to_owned();
    let with_manifest = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut m = manifest.clone();
        change(&mut m);
        tar_of(
            &with(&docker, "manifest.json", serde_json::to_vec(&m).unwrap()),
            |_| {},
        )
    };
    let biggest_blob = oci.iter().max_by_key(|(_, b)| b.len()).unwrap().0.clone();
    let nested = |open: &str, close: &str| [open.repeat(100_000), close.repeat(100_000)].concat();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a manifest.json over the document bound",
            tar_of(
                &with(
                    &docker,
                    "manifest.json",
                    [b"[".to_vec(), vec![b' '; 5 << 20], b"]".to_vec()].concat(),
                ),
                |_| {},
            ),
            "document_size",
        ),
        (
            "a manifest.json nested 100,000 deep",
            tar_of(
                &with(&docker, "manifest.json", nested("[", "]").into_bytes()),
                |_| {},
            ),
            "not a Docker archive: manifest.json",
        ),
        (
            "an index.json nested 100,000 deep",
            tar_of(
                &with(&oci, "index.json", nested("{\"a\":", "}").into_bytes()),
                |_| {},
            ),
            "not an OCI image index",
        ),
        (
            "a layer twice, the second different",
            tar_of(&docker, |b| {
                let mut h = tar::Header::new_gnu();
                h.set_size(4);
                b.append_data(&mut h, &layer, &b"evil"[..]).unwrap();
            }),
            "is in it twice",
        ),
        (
            "a verified blob twice, the second different",
            tar_of(&oci, |b| {
                let mut h = tar::Header::new_gnu();
                h.set_size(4);
                b.append_data(&mut h, &biggest_blob, &b"evil"[..]).unwrap();
            }),
            "is in it twice",
        ),
        (
            "a hard link",
            tar_of(&docker, |b| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, "abc/layer.tar", "manifest.json")
                    .unwrap();
            }),
            "a hard link",
        ),
        (
            "a device node",
            tar_of(&docker, |b| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Char);
                h.set_size(0);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                b.append_data(&mut h, "abc.tar", std::io::empty()).unwrap();
            }),
            "a device node",
        ),
        (
            "an absolute path",
            tar_of(&docker, |b| {
                let h = raw_header("/etc/kiln-was-here", tar::EntryType::Regular, 4);
                b.append(&h, &b"evil"[..]).unwrap();
            }),
            "an absolute path",
        ),
        (
            "a GNU long name of 1 MiB",
            tar_of(&docker, |b| {
                let h = raw_header("././@LongLink", tar::EntryType::GNULongName, 1 << 20);
                b.append(&h, &vec![b'a'; 1 << 20][..]).unwrap();
            }),
            "extension header",
        ),
        (
            "RepoTags with an invalid name",
            with_manifest(&|m| m[0]["RepoTags"] = serde_json::json!(["Upper/Case:1"])),
            "not a valid image name",
        ),
        (
            "RepoTags with a digest",
            with_manifest(&|m| {
                m[0]["RepoTags"] = serde_json::json!([format!("x@sha256:{}", "a".repeat(64))])
            }),
            "a name with a digest",
        ),
        (
            "a layer listed twice",
            with_manifest(&|m| m[0]["Layers"] = serde_json::json!([layer, layer])),
            "the image config says its diff_id is",
        ),
        (
            "a config that is not JSON",
            tar_of(&with(&docker, &config, b"\0not json".to_vec()), |_| {}),
            "not valid JSON",
        ),
        (
            "not a tar at all",
            b"hello, this is no archive\n".repeat(100),
            "not a tar archive",
        ),
    ];

    let victim = Env::new();
    busybox_image(&victim);
    let before = common::store_listing(&victim.root());
    for (what, bytes, why) in cases {
        let file = victim.path("hostile.tar");
        std::fs::write(&file, &bytes).unwrap();
        let out = victim.kiln(&["load", "-i", file.to_str().unwrap()]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {said}");
        assert!(said.contains(why), "{what}: expected {why:?} in {said}");
        assert!(
            said.len() < 2000,
            "{what}: the message is {} bytes",
            said.len()
        );
        let staging = victim.root().join("tmp").display().to_string();
        assert!(
            !said.contains(&staging),
            "{what}: names kiln's staging: {said}"
        );
        assert_eq!(common::store_listing(&victim.root()), before, "{what}");
    }
    assert!(!std::path::Path::new("/etc/kiln-was-here").exists());

    // A valid name moves, as with docker load, and the message says which image it left.
    let moved = with_manifest(&|m| m[0]["RepoTags"] = serde_json::json!(["localhost/bb:latest"]));
    std::fs::write(victim.path("moved.tar"), moved).unwrap();
    let old = victim.kiln_ok(&["images", "-q"]);
    let out = victim.kiln(&["load", "-i", victim.path("moved.tar").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Loaded image: localhost/bb:latest"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains(&format!("the one it named was {old}")),
        "{}",
        text(&out)
    );
    let out = victim.kiln_ok(&["run", "--rm", "--network", "none", "bb", "cat", "/hello"]);
    assert_eq!(out, "saved-and-loaded");

    // `docker save`'s names have no registry when they are Docker Hub's, and are read so,
    // as docker and podman do.
    let hub = with_manifest(&|m| m[0]["RepoTags"] = serde_json::json!(["web:3", "team/app:4"]));
    std::fs::write(victim.path("hub.tar"), hub).unwrap();
    let said = victim.kiln_ok(&["load", "-i", victim.path("hub.tar").to_str().unwrap()]);
    assert!(
        said.contains("Loaded image: docker.io/library/web:3"),
        "{said}"
    );
    assert!(
        said.contains("Loaded image: docker.io/team/app:4"),
        "{said}"
    );
    let out = victim.kiln_ok(&["run", "--rm", "--network", "none", "web:3", "cat", "/hello"]);
    assert_eq!(out, "saved-and-loaded");
}

/// A compressed archive is refused once it decompresses to more than `compression_ratio`
/// times its size (after `ratio_after` bytes), as a layer is: a few KiB must not fill the
/// disk; the store is left as it was.
#[test]
fn a_compressed_archive_bomb_stops_at_the_compression_ratio() {
    common::require_root!("namespaces, overlayfs");
    let victim = Env::new();
    let blob = format!("blobs/sha256/{}", "0".repeat(64));
    let bomb = tar_of(&[(blob, vec![0; 64 << 20])], |_| {});
    std::fs::write(victim.path("bomb.tar.gz"), gzip(&bomb)).unwrap();
    victim.write(
        "config.yaml",
        "image_limits:\n  ratio_after: 1m\n  compression_ratio: 100\n",
    );
    victim.kiln_ok(&["images"]);
    let before = common::store_listing(&victim.root());
    let out = victim
        .command()
        .env("KILN_CONFIG", victim.path("config.yaml"))
        .args(["load", "-i", victim.path("bomb.tar.gz").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("compression_ratio"), "{}", text(&out));
    assert_eq!(common::store_listing(&victim.root()), before);
}

/// `docker load` takes a gzip-compressed archive as well; kiln takes gzip and zstd, known
/// by their first bytes, from a file and from a pipe.
#[test]
fn gzip_and_zstd_compressed_archives_load_from_files_and_pipes() {
    common::require_root!("namespaces, overlayfs");
    require("gzip", "gzip");
    require("zstd", "zstd");
    let env = env_with_app_image();
    for format in ["oci", "docker"] {
        let tar = env.path(&format!("{format}.tar"));
        env.kiln_ok(&[
            "save",
            "--format",
            format,
            "-o",
            tar.to_str().unwrap(),
            "app:1",
        ]);
        run(Command::new("gzip").arg("-k").arg(&tar));
        run(Command::new("zstd").arg("-q").arg(&tar));
        for compressed in [format!("{format}.tar.gz"), format!("{format}.tar.zst")] {
            let other = Env::new();
            let file = env.path(&compressed);
            let said = other.kiln_ok(&["load", "-i", file.to_str().unwrap()]);
            assert!(
                said.contains("Loaded image: localhost/app:1"),
                "{compressed}: {said}"
            );
            let args = ["run", "--rm", "--network", "none", "app:1", "cat", "/hello"];
            assert_eq!(other.kiln_ok(&args), "saved-and-loaded", "{compressed}");
            let piped = Env::new();
            let out = piped
                .command()
                .arg("load")
                .stdin(std::fs::File::open(&file).unwrap())
                .output()
                .unwrap();
            assert!(out.status.success(), "{compressed} piped: {}", text(&out));
            assert_eq!(ids(&piped), ids(&other), "{compressed}");
        }
    }
}

/// As docker does, `kiln save` writes no archive to a terminal and `kiln load` reads none
/// from one: both say what to do instead, and nothing changes.
#[test]
fn save_to_and_load_from_a_terminal_are_refused() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    busybox_image(&env);
    let before = common::store_listing(&env.root());
    let mut save = env.command();
    save.args(["save", "bb"]);
    let (ok, said) = common::on_a_terminal(save, b"");
    assert!(!ok, "{said}");
    assert!(
        said.contains("refusing to write an archive to a terminal"),
        "{said}"
    );
    assert!(said.contains("-o"), "{said}");
    let mut load = env.command();
    load.arg("load");
    let (ok, said) = common::on_a_terminal(load, b"");
    assert!(!ok, "{said}");
    assert!(said.contains("stdin is a terminal"), "{said}");
    assert_eq!(common::store_listing(&env.root()), before);
}

/// An image saved by its ID or digest keeps its name; one saved under two names is loaded
/// under both, as one image, from either format.
#[test]
fn images_saved_by_id_digest_or_two_names_load_under_their_names() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    busybox_image(&env);
    env.kiln_ok(&["tag", "bb", "team/bb:2"]);
    let id = env
        .kiln_ok(&["images", "-q"])
        .lines()
        .next()
        .unwrap()
        .to_owned();
    let digest = env.kiln_ok(&["inspect", "-f", "{{.digest}}", "bb"]);
    let config = env.kiln_ok(&["inspect", "-f", "{{.config_digest}}", "bb"]);
    for (what, images) in [
        ("id", vec![id.as_str()]),
        ("digest", vec![digest.as_str()]),
        ("two names", vec!["bb", "team/bb:2"]),
    ] {
        for format in ["oci", "docker"] {
            let tar = env.path("saved.tar");
            let mut args = vec!["save", "--format", format, "-o", tar.to_str().unwrap()];
            args.extend(&images);
            env.kiln_ok(&args);
            let other = Env::new();
            let said = other.kiln_ok(&["load", "-i", tar.to_str().unwrap()]);
            assert!(
                said.contains("Loaded image: localhost/bb:latest"),
                "{what} {format}: {said}"
            );
            if images.len() == 2 {
                assert!(
                    said.contains("Loaded image: localhost/team/bb:2"),
                    "{what}: {said}"
                );
            }
            // One image, kiln's own (a Docker archive's layers are gzip, so it is the same
            // config under another manifest, as docker's image IDs have it).
            let configs: std::collections::BTreeSet<String> = ["bb", "team/bb:2"][..images.len()]
                .iter()
                .map(|name| other.kiln_ok(&["inspect", "-f", "{{.config_digest}}", name]))
                .collect();
            assert_eq!(configs, [config.clone()].into(), "{what} {format}");
        }
    }
}
