//! Damaged, hostile and oversized images through each door kiln has for them:
//! `from: oci:` (a layout on disk), `kiln pull` (registry-mock serving planted, unchecked
//! content, which no real registry does on demand) and, for layer content, `kiln import`.
//! Each door must refuse the same input with the same exit code and an error that names
//! the blob (index, manifest, config, layer n of m), its descriptor and what is wrong, and
//! leave the store as it was.
//!
//! Then the bounds of `image_limits:` in kiln's config file (README, "Bounds on images
//! from elsewhere"): each one at its limit passes, one past it fails, naming its key.

mod common;

use std::path::Path;
use std::process::Output;

use common::{text, Env};
use registry_mock::{Config, Server};
use serde_json::json;
use sha2::Digest as _;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A blob as an image lists it: the digest and size its descriptor claims, and the bytes
/// that are really there.
#[derive(Clone, Debug)]
struct Blob {
    media_type: String,
    digest: String,
    size: u64,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.into(),
            digest: sha256(&bytes),
            size: bytes.len() as u64,
            bytes,
        }
    }

    fn json(media_type: &str, value: &serde_json::Value) -> Blob {
        Blob::new(media_type, serde_json::to_vec(value).unwrap())
    }

    fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }

    fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap()
    }

    /// The same length, other bytes: what a digest check must catch.
    fn altered(mut self) -> Blob {
        let last = self.bytes.len() - 1;
        self.bytes[last] ^= 1;
        self
    }
}

/// A layer: its blob and the digest of its uncompressed tar.
#[derive(Clone)]
struct Layer {
    blob: Blob,
    diff_id: String,
}

/// A plain tar of regular files (empty names a directory).
fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn plain_layer(tar: Vec<u8>) -> Layer {
    Layer {
        diff_id: sha256(&tar),
        blob: Blob::new(TAR, tar),
    }
}

fn gzip_layer(tar: &[u8]) -> Layer {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(tar).unwrap();
    Layer {
        diff_id: sha256(tar),
        blob: Blob::new(TAR_GZIP, gz.finish().unwrap()),
    }
}

fn files_layer(names: &[&str]) -> Layer {
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (*n, &b"x\n"[..])).collect();
    plain_layer(tar_of(&entries))
}

fn config_for(layers: &[Layer]) -> Blob {
    let (arch, _) = common::host_and_other_arch();
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    Blob::json(
        CONFIG,
        &json!({"architecture": arch, "os": "linux",
                "config": {"Cmd": ["/hello"]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids}}),
    )
}

fn manifest_for(config: &Blob, layers: &[Blob]) -> Blob {
    let layers: Vec<_> = layers.iter().map(Blob::descriptor).collect();
    Blob::json(
        MANIFEST,
        &json!({"schemaVersion": 2, "mediaType": MANIFEST,
                "config": config.descriptor(), "layers": layers}),
    )
}

/// An index listing `child` for this machine's platform.
fn index_of(child: &Blob) -> Blob {
    let (arch, _) = common::host_and_other_arch();
    let mut entry = child.descriptor();
    entry["platform"] = json!({"os": "linux", "architecture": arch});
    Blob::json(
        INDEX,
        &json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [entry]}),
    )
}

/// An image as a registry or layout holds it: every blob (documents too) and the one its
/// tag names.
struct Image {
    blobs: Vec<Blob>,
    top: Blob,
}

impl Image {
    /// A well-formed image of `layers`, to be damaged by the caller.
    fn of(layers: &[Layer]) -> Image {
        let config = config_for(layers);
        let layer_blobs: Vec<Blob> = layers.iter().map(|l| l.blob.clone()).collect();
        Image::assemble(config, layer_blobs)
    }

    fn assemble(config: Blob, layers: Vec<Blob>) -> Image {
        let manifest = manifest_for(&config, &layers);
        let mut blobs = layers;
        blobs.push(config);
        Image {
            blobs,
            top: manifest,
        }
    }

    /// The same image under `depth` nested indexes.
    fn nested(mut self, depth: usize) -> Image {
        for _ in 0..depth {
            let index = index_of(&self.top);
            self.blobs.push(std::mem::replace(&mut self.top, index));
        }
        self
    }

    fn all(&self) -> impl Iterator<Item = &Blob> {
        self.blobs.iter().chain(std::iter::once(&self.top))
    }
}

/// A test's store, project folder and config file.
struct Doors {
    env: Env,
    config: std::path::PathBuf,
}

impl Doors {
    fn new(config: &str) -> Doors {
        let env = Env::new();
        // The store exists before anything is tried, so "as it was" means something.
        env.kiln_ok(&["images", "-q"]);
        let config_path = env.write("kiln-config.yaml", config);
        env.write(
            "project/kiln.yaml",
            "image: hostile\nfrom: oci:./img:1\nsteps: []\n",
        );
        Doors {
            env,
            config: config_path,
        }
    }

    fn kiln_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.env
            .command()
            .current_dir(dir)
            .env("KILN_CONFIG", &self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// `kiln build` of a spec `from: oci:./img:1`, the layout holding `image`.
    fn via_layout(&self, image: &Image) -> Output {
        let dir = self.env.path("project/img");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let mut top = image.top.descriptor();
        top["annotations"] = json!({"org.opencontainers.image.ref.name": "1"});
        let index = json!({"schemaVersion": 2, "manifests": [top]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        for blob in image.all() {
            std::fs::write(dir.join("blobs/sha256").join(blob.hex()), &blob.bytes).unwrap();
        }
        self.kiln_in(&self.env.path("project"), &["build", "-q"])
    }

    /// `kiln pull` of `image` planted in `server` as `hostile/img:1` (or by the digest its
    /// tag claims, with `by_digest`).
    fn via_registry(&self, server: &Server, image: &Image, by_digest: bool) -> Output {
        let repo = "hostile/img";
        for blob in image.all() {
            if blob.media_type == MANIFEST || blob.media_type == INDEX {
                let tag = std::ptr::eq(blob, &image.top).then_some("1");
                server.plant_manifest(repo, &blob.digest, &blob.media_type, &blob.bytes, tag);
            } else {
                server.plant_blob(repo, &blob.digest, &blob.bytes);
            }
        }
        let reference = match by_digest {
            true => format!("{}/{repo}@{}", server.host(), image.top.digest),
            false => format!("{}/{repo}:1", server.host()),
        };
        self.kiln_in(self.env.dir.path(), &["pull", "-q", &reference])
    }

    /// `kiln import` of a layer's tar as a root filesystem.
    fn via_import(&self, tar: &[u8]) -> Output {
        std::fs::write(self.env.path("layer.tar"), tar).unwrap();
        self.kiln_in(
            self.env.dir.path(),
            &["import", "./layer.tar", "-t", "imported"],
        )
    }
}

fn mock() -> Server {
    Server::start(Config::default()).unwrap()
}

/// The door refused with exit code 1, saying each of `words`, and the store is as before.
fn refused(doors: &Doors, door: &str, before: &[String], out: &Output, words: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{door}: {}", text(out));
    for w in words {
        assert!(err.contains(w), "{door}: expected {w:?} in:\n{err}");
    }
    assert_eq!(
        common::store_listing(&doors.env.root()),
        before,
        "{door} changed the store: {err}"
    );
}

fn accepted(door: &str, out: &Output) {
    assert!(out.status.success(), "{door}: {}", text(out));
}

/// Runs `image` through the layout and the registry doors, expecting both to refuse it.
fn both_refuse(image: &Image, by_digest: bool, words: &[&str]) {
    let doors = Doors::new("");
    let server = mock();
    let before = common::store_listing(&doors.env.root());
    let out = doors.via_layout(image);
    refused(&doors, "from: oci:", &before, &out, words);
    let out = doors.via_registry(&server, image, by_digest);
    refused(&doors, "kiln pull", &before, &out, words);
}

#[test]
fn a_layer_of_the_wrong_size_is_refused_naming_both_sizes() {
    common::require_root!("layer dirs keep owners and device nodes");
    let layer = files_layer(&["a", "b"]);
    let real = layer.blob.size;
    let claimed = real - 99;
    let mut short = layer.blob.clone();
    short.size = claimed;
    let image = Image::assemble(config_for(&[layer]), vec![short]);
    let doors = Doors::new("");
    let server = mock();
    let before = common::store_listing(&doors.env.root());
    let words = [
        "layer 1 of 1",
        "size mismatch",
        &format!("its descriptor says {claimed} bytes"),
    ];
    let out = doors.via_layout(&image);
    refused(&doors, "from: oci:", &before, &out, &words);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("the file has {real}")),
        "{}",
        text(&out)
    );
    let out = doors.via_registry(&server, &image, false);
    refused(&doors, "kiln pull", &before, &out, &words);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("the registry has {real}")),
        "{}",
        text(&out)
    );
}

#[test]
fn a_config_whose_digest_does_not_match_is_a_digest_mismatch() {
    common::require_root!("layer dirs keep owners and device nodes");
    let layer = files_layer(&["a"]);
    let config = config_for(std::slice::from_ref(&layer)).altered();
    let image = Image::assemble(config, vec![layer.blob]);
    both_refuse(
        &image,
        false,
        &["config sha256:", "digest mismatch: its content has digest"],
    );
}

#[test]
fn a_layer_digest_mismatch_names_which_layer() {
    common::require_root!("layer dirs keep owners and device nodes");
    let (a, b) = (files_layer(&["a"]), files_layer(&["b"]));
    let config = config_for(&[a.clone(), b.clone()]);
    let image = Image::assemble(config, vec![a.blob, b.blob.clone().altered()]);
    both_refuse(
        &image,
        false,
        &[
            &format!(
                "layer 2 of 2 {} ({} bytes, {TAR})",
                b.blob.digest, b.blob.size
            ),
            "digest mismatch",
        ],
    );
}

/// A new blob that claims the diff_id of a layer the store already has a dir for: kiln
/// does not need to unpack it, but must still not keep it, or the image would run one
/// content and carry another on (push, save).
#[test]
fn a_new_blob_claiming_a_layer_the_store_has_is_checked_all_the_same() {
    common::require_root!("layer dirs keep owners and device nodes");
    let honest = files_layer(&["a"]);
    let mut forged = files_layer(&["evil"]);
    forged.diff_id = honest.diff_id.clone();
    let doors = Doors::new("");
    let server = mock();
    accepted(
        "from: oci:",
        &doors.via_layout(&Image::of(std::slice::from_ref(&honest))),
    );
    let before = common::store_listing(&doors.env.root());
    let image = Image::of(std::slice::from_ref(&forged));
    let words = [
        format!("layer 1 of 1 {}", forged.blob.digest),
        honest.diff_id.clone(),
    ];
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let out = doors.via_layout(&image);
    refused(&doors, "from: oci:", &before, &out, &words);
    let out = doors.via_registry(&server, &image, false);
    refused(&doors, "kiln pull", &before, &out, &words);
}

#[test]
fn a_manifest_whose_digest_does_not_match_is_a_digest_mismatch() {
    common::require_root!("layer dirs keep owners and device nodes");
    let mut image = Image::of(&[files_layer(&["a"])]);
    image.top = image.top.altered();
    // A pull by tag cannot know the manifest's digest; by digest it can.
    both_refuse(&image, true, &["manifest", "digest mismatch"]);
}

#[test]
fn indexes_nested_past_the_bound_say_so() {
    common::require_root!("layer dirs keep owners and device nodes");
    let image = Image::of(&[files_layer(&["a"])]).nested(5);
    both_refuse(
        &image,
        false,
        &["nested more than 4 deep", "image_limits: index_depth"],
    );
}

#[test]
fn an_index_that_lists_itself_is_refused_as_a_digest_mismatch() {
    common::require_root!("layer dirs keep owners and device nodes");
    // An index cannot hold its own digest: one that claims to is another blob.
    let image = Image::of(&[files_layer(&["a"])]).nested(1);
    let (arch, _) = common::host_and_other_arch();
    let claimed = image.top.digest.clone();
    let looping = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": INDEX,
        "manifests": [{"mediaType": INDEX, "digest": claimed, "size": image.top.size,
                       "platform": {"os": "linux", "architecture": arch}}]}))
    .unwrap();
    let mut top = image.top.clone();
    top.bytes = looping;
    top.size = top.bytes.len() as u64;
    let self_listing = Image {
        blobs: image.blobs,
        top,
    };
    both_refuse(&self_listing, true, &["digest mismatch"]);
}

/// A layer whose content is refused, through all three doors: same exit code, the entry
/// named.
fn all_three_refuse(tar: Vec<u8>, config: &str, words: &[&str]) {
    let doors = Doors::new(config);
    let server = mock();
    let before = common::store_listing(&doors.env.root());
    let image = Image::of(&[plain_layer(tar.clone())]);
    let out = doors.via_layout(&image);
    refused(&doors, "from: oci:", &before, &out, words);
    let out = doors.via_registry(&server, &image, false);
    refused(&doors, "kiln pull", &before, &out, words);
    let out = doors.via_import(&tar);
    refused(&doors, "kiln import", &before, &out, words);
}

#[test]
fn a_name_too_long_for_linux_is_refused_naming_the_entry() {
    common::require_root!("layer dirs keep owners and device nodes");
    let long = format!("dir/{}", "n".repeat(256));
    all_three_refuse(
        tar_of(&[(long.as_str(), b"x")]),
        "",
        &[&format!("layer entry \"{long}\" refused"), "256 bytes long"],
    );
}

#[test]
fn a_symlink_target_too_long_for_linux_names_the_entry() {
    common::require_root!("layer dirs keep owners and device nodes");
    let mut b = tar::Builder::new(Vec::new());
    let target = "t/".repeat(2100);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, "link", &target).unwrap();
    let tar = b.into_inner().unwrap();
    all_three_refuse(
        tar,
        "",
        &["layer entry \"link\" (create): File name too long"],
    );
}

// --- bounds -----------------------------------------------------------------------------

/// Which way an image comes in.
#[derive(Clone, Copy, Debug)]
enum Door {
    Layout,
    Registry,
}

/// `image` through `door` with `bound: limit`, then with `limit - 1`: the first passes,
/// the second fails naming the key.
fn at_and_past(image: &Image, key: &str, limit: u64, door: Door) {
    let server = mock();
    let through = |doors: &Doors| match door {
        Door::Layout => doors.via_layout(image),
        Door::Registry => doors.via_registry(&server, image, false),
    };
    let doors = Doors::new(&format!("image_limits:\n  {key}: {limit}\n"));
    accepted(&format!("{door:?}, {key}: {limit}"), &through(&doors));
    let doors = Doors::new(&format!("image_limits:\n  {key}: {}\n", limit - 1));
    let before = common::store_listing(&doors.env.root());
    let out = through(&doors);
    let door = format!("{door:?}, {key}: {}", limit - 1);
    refused(
        &doors,
        &door,
        &before,
        &out,
        &[&format!("image_limits: {key}")],
    );
}

#[test]
fn document_size_bounds_manifests_indexes_and_configs() {
    common::require_root!("layer dirs keep owners and device nodes");
    let image = Image::of(&[files_layer(&["a"])]).nested(1);
    let largest = image
        .all()
        .filter(|b| b.media_type != TAR)
        .map(|b| b.size)
        .max();
    at_and_past(&image, "document_size", largest.unwrap(), Door::Layout);
    at_and_past(&image, "document_size", largest.unwrap(), Door::Registry);
}

#[test]
fn index_depth_bounds_nested_indexes() {
    common::require_root!("layer dirs keep owners and device nodes");
    let image = Image::of(&[files_layer(&["a"])]).nested(3);
    at_and_past(&image, "index_depth", 3, Door::Layout);
    at_and_past(&image, "index_depth", 3, Door::Registry);
}

#[test]
fn layers_bounds_the_layers_of_an_image() {
    common::require_root!("layer dirs keep owners and device nodes");
    let layers: Vec<Layer> = ["a", "b", "c"].iter().map(|n| files_layer(&[n])).collect();
    let image = Image::of(&layers);
    at_and_past(&image, "layers", 3, Door::Layout);
    at_and_past(&image, "layers", 3, Door::Registry);
}

#[test]
fn image_size_bounds_all_blobs_of_an_image_together() {
    common::require_root!("layer dirs keep owners and device nodes");
    let image = Image::of(&[files_layer(&["a"]), files_layer(&["b"])]);
    let total: u64 = image.all().map(|b| b.size).sum();
    at_and_past(&image, "image_size", total, Door::Layout);
    at_and_past(&image, "image_size", total, Door::Registry);
}

#[test]
fn layer_entries_bounds_the_entries_of_a_layer() {
    common::require_root!("layer dirs keep owners and device nodes");
    let image = Image::of(&[files_layer(&["a", "b", "c", "d", "e"])]);
    at_and_past(&image, "layer_entries", 5, Door::Layout);
    at_and_past(&image, "layer_entries", 5, Door::Registry);
    // kiln import reads a tarball under the same bound.
    let tar = tar_of(&[("a", b"1"), ("b", b"2")]);
    let doors = Doors::new("image_limits:\n  layer_entries: 2\n");
    accepted("import, layer_entries: 2", &doors.via_import(&tar));
    let doors = Doors::new("image_limits:\n  layer_entries: 1\n");
    let before = common::store_listing(&doors.env.root());
    let out = doors.via_import(&tar);
    refused(
        &doors,
        "import",
        &before,
        &out,
        &["image_limits: layer_entries"],
    );
}

#[test]
fn path_length_bounds_the_paths_in_a_layer() {
    common::require_root!("layer dirs keep owners and device nodes");
    let path = format!("d/{}", "p".repeat(98));
    assert_eq!(path.len(), 100);
    let image = Image::of(&[files_layer(&[&path])]);
    at_and_past(&image, "path_length", 100, Door::Layout);
    at_and_past(&image, "path_length", 100, Door::Registry);
}

#[test]
fn layer_size_bounds_the_uncompressed_tar_of_a_layer() {
    common::require_root!("layer dirs keep owners and device nodes");
    let layer = gzip_layer(&tar_of(&[("zeros", &[0u8; 20_000])]));
    let tar_len = tar_of(&[("zeros", &[0u8; 20_000])]).len() as u64;
    let image = Image::of(&[layer]);
    at_and_past(&image, "layer_size", tar_len, Door::Layout);
    at_and_past(&image, "layer_size", tar_len, Door::Registry);
}

#[test]
fn compression_ratio_applies_after_ratio_after_bytes() {
    common::require_root!("layer dirs keep owners and device nodes");
    let tar = tar_of(&[("zeros", &[0u8; 200_000])]);
    let image = Image::of(&[gzip_layer(&tar)]);
    // Far more compressed than 2:1: refused once the check applies, at ratio_after bytes.
    let config = "image_limits:\n  compression_ratio: 2\n  ratio_after: {after}\n";
    let doors = Doors::new(&config.replace("{after}", &tar.len().to_string()));
    accepted("ratio_after at the tar's size", &doors.via_layout(&image));
    let doors = Doors::new(&config.replace("{after}", &(tar.len() - 1).to_string()));
    let before = common::store_listing(&doors.env.root());
    let out = doors.via_layout(&image);
    refused(
        &doors,
        "ratio_after one less",
        &before,
        &out,
        &["image_limits: compression_ratio"],
    );
    // A plain tar is 1:1, which a bound of 1 allows.
    let image = Image::of(&[plain_layer(tar)]);
    let doors = Doors::new("image_limits:\n  compression_ratio: 1\n  ratio_after: 1k\n");
    accepted(
        "a plain tar at compression_ratio: 1",
        &doors.via_layout(&image),
    );
}

#[test]
fn a_bad_image_limits_key_is_an_error_at_its_line() {
    common::require_root!("layer dirs keep owners and device nodes");
    let image = Image::of(&[files_layer(&["a"])]);
    let doors = Doors::new("timeout: 30\nimage_limits:\n  layer: 3\n");
    let out = doors.via_layout(&image);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        err.contains("kiln-config.yaml:3:3") && err.contains("layer"),
        "{err}"
    );
}
