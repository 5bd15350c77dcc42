//! `kiln load`: images from an OCI image layout (a directory, or a tar archive from a file
//! or a pipe) or a Docker archive, into the store.
//!
//! Loading is a pull from an untrusted source: the layout goes through the same checks as
//! `from: oci:` (`kiln_build::import_oci_layout`). A tar is read, entry by entry, by a
//! thread of its own into a private staging dir of the store, where only a layout's or a
//! Docker archive's own names are accepted (a Docker archive's symlinks between its files
//! are remembered, never made); a layout's blobs go straight into the store's blob staging,
//! hashed on the way. Meanwhile the import takes each blob as it arrives (`Arrivals`), so
//! with `index.json` first (as `kiln save` writes it) a layer unpacks while the next one is
//! read. Nothing is tagged before the whole archive was read and every image checked out.
//! A Docker archive is turned into a layout in the staging dir once it is all there
//! (`docker_to_oci`).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use clap::Args;
use oci_spec::image::{Descriptor, ImageIndex};

use super::archive::{blob_name, failed};
use super::{CmdResult, Failure, Globals};
use kiln_build::StagedBlobs;
use kiln_image::Image;
use kiln_store::oci::{OCI_LAYOUT, REF_NAME};
use kiln_store::{BlobWriter, Bounds, Digest, Reference, Store};

#[derive(Args, Debug)]
#[command(
    about = "Read images from an OCI image layout (a tar archive, a directory or stdin) into the store",
    after_help = "Examples:\n  kiln load -i hello.tar\n  kiln load hello.tar\n  kiln load layout/\n  kiln load < hello.tar\n  skopeo copy docker://… oci-archive:img.tar:me/img:1 && kiln load -i img.tar"
)]
pub struct LoadArgs {
    /// The tar archive or layout directory; - or nothing for stdin
    #[arg(short, long, value_name = "PATH")]
    input: Option<PathBuf>,
    /// The same as -i (docker and podman take -i, the path alone reads as well)
    #[arg(value_name = "PATH", conflicts_with = "input")]
    path: Option<PathBuf>,
}

pub fn load(globals: &Globals, args: LoadArgs) -> CmdResult {
    let store = globals.store()?;
    // What is loaded is unreachable until it is tagged: no gc meanwhile.
    let _guard = store.content_guard()?;
    let bounds = super::pull::kiln_config()?.bounds;
    let input = args.input.or(args.path).filter(|p| p.as_os_str() != "-");
    let images = match &input {
        Some(path) if path.is_dir() => {
            if !path.join("index.json").exists() && path.join("manifest.json").exists() {
                // A directory given is never changed, so never converted.
                return Err(Failure::user(format!(
                    "{}: a Docker archive is read as a tar file",
                    path.display()
                ))
                .hint(Some(
                    "tar -C DIR -cf image.tar . && kiln load -i image.tar".into(),
                )));
            }
            import_images(&store, path, &bounds, &mut HashMap::new())?
        }
        Some(path) => {
            let file = File::open(path).map_err(failed(format!("open {}", path.display())))?;
            load_archive(&store, move || file, &bounds)?
        }
        None if io::stdin().is_terminal() => {
            return Err(
                Failure::user("no archive to load: stdin is a terminal").hint(Some(
                    "kiln load -i hello.tar, or kiln load < hello.tar".into(),
                )),
            )
        }
        None => load_archive(&store, || io::stdin().lock(), &bounds)?,
    };
    for (name, digest) in images {
        let descriptor = manifest_descriptor(&store, &digest)?;
        match name.as_deref().map(|n| Reference::parse(n, "localhost")) {
            Some(Ok(reference)) => {
                store.set_tag(&reference, &descriptor)?;
                println!("Loaded image: {reference}");
            }
            // An image without a name in the archive is kept under its ID, as a tag, so
            // that gc keeps it and `kiln run` finds it.
            _ => {
                let reference =
                    Reference::parse(&format!("loaded:{}", digest.short()), "localhost")
                        .map_err(Failure::user)?;
                store.set_tag(&reference, &descriptor)?;
                println!("Loaded image: {reference} (unnamed in the archive)");
            }
        }
    }
    Ok(0)
}

/// Reads the tar `open` gives on a thread of its own into a staging dir of the store,
/// importing its images meanwhile; returns them (name, manifest digest) once the whole
/// archive was read and every image checked out.
fn load_archive<R: Read>(
    store: &Store,
    open: impl FnOnce() -> R + Send,
    bounds: &Bounds,
) -> Result<Vec<(Option<String>, Digest)>, Failure> {
    let staging = store.temp_dir("load")?;
    let root = staging.path();
    let arrivals = Arrivals::default();
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let _end = EndOfArchive(&arrivals);
            read_archive(store, open(), bounds, root, &arrivals)
        });
        let finish = |reader: std::thread::ScopedJoinHandle<'_, _>| {
            reader
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        if !arrivals.wait_for_file("index.json") {
            // No layout index (or the archive failed): a Docker archive, converted once it
            // is all there.
            let aliases: HashMap<String, String> = finish(reader)?;
            if root.join("manifest.json").exists() {
                docker_to_oci(root, &aliases)?;
            }
            return import_images(store, root, bounds, &mut &arrivals);
        }
        let imported = import_images(store, root, bounds, &mut &arrivals);
        if imported.is_err() {
            arrivals.cancel();
        }
        // The archive's own failure explains a failed import (a blob that never came).
        finish(reader)?;
        imported
    })
}

/// Imports every image of the layout at `dir` (its `index.json`'s), taking blobs from
/// `staged` where it has them; returns each one's name and manifest digest, tagging none.
fn import_images(
    store: &Store,
    dir: &Path,
    bounds: &Bounds,
    staged: &mut dyn StagedBlobs,
) -> Result<Vec<(Option<String>, Digest)>, Failure> {
    image_names(dir)?
        .into_iter()
        .map(|name| {
            let digest = kiln_build::import_oci_layout(store, dir, name.as_deref(), bounds, staged)
                .map_err(|e| Failure::user(format!("{e}")).hint(e.hint()))?;
            Ok((name, digest))
        })
        .collect()
}
/// The descriptor a tag of the loaded manifest `digest` gets: its media type and size.
fn manifest_descriptor(store: &Store, digest: &Digest) -> Result<Descriptor, Failure> {
    let image = Image::load(store, digest)?;
    let media_type = image
        .manifest
        .media_type()
        .clone()
        .unwrap_or(oci_spec::image::MediaType::ImageManifest);
    let size = fs::metadata(store.blob_path(digest))
        .map_err(failed(format!("read {digest}")))?
        .len();
    Ok(kiln_store::oci::descriptor(media_type, digest, size))
}

/// The names of the layout's images (its `index.json`'s `ref.name`s), `None` for an
/// image without one (taken only when it is the layout's only image).
fn image_names(dir: &Path) -> Result<Vec<Option<String>>, Failure> {
    let path = dir.join("index.json");
    let bytes =
        kiln_store::read_document(&path).map_err(failed(format!("read {}", path.display())))?;
    let index: ImageIndex = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::user(format!("{}: not an OCI image index: {e}", path.display())))?;
    let names: Vec<Option<String>> = index
        .manifests()
        .iter()
        .map(|d| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .cloned()
        })
        .collect();
    if names.is_empty() {
        return Err(Failure::user(format!(
            "{}: the layout holds no image",
            dir.display()
        )));
    }
    Ok(names)
}

/// What the thread reading an archive has staged so far, for the import that runs
/// meanwhile: the layout's blobs (verified, in the store's blob staging), the names of the
/// other files written to the staging dir, and whether the archive has ended.
#[derive(Default)]
struct Arrivals {
    arrived: Mutex<Arrived>,
    changed: Condvar,
}

#[derive(Default)]
struct Arrived {
    blobs: HashMap<Digest, BlobWriter>,
    files: HashSet<String>,
    ended: bool,
    /// The import failed: the reader stops at its next entry.
    cancelled: bool,
}

impl Arrivals {
    fn update(&self, change: impl FnOnce(&mut Arrived)) {
        change(&mut self.arrived.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_all();
    }

    /// Waits until `test` holds or the archive has ended; `test`'s last answer.
    fn wait_until<T>(&self, mut test: impl FnMut(&mut Arrived) -> Option<T>) -> Option<T> {
        let mut arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(found) = test(&mut arrived) {
                return Some(found);
            }
            if arrived.ended {
                return None;
            }
            arrived = self
                .changed
                .wait(arrived)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether the file `name` was staged (waiting for it while the archive goes on).
    fn wait_for_file(&self, name: &str) -> bool {
        self.wait_until(|a| a.files.contains(name).then_some(()))
            .is_some()
    }

    fn cancel(&self) {
        self.update(|a| a.cancelled = true);
    }

    fn is_cancelled(&self) -> bool {
        self.arrived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancelled
    }
}

/// The import takes each blob as it arrives; one the archive never brings is read from
/// the staging dir, where it is not, which the import reports.
impl StagedBlobs for &Arrivals {
    fn take(&mut self, digest: &Digest) -> Option<BlobWriter> {
        self.wait_until(|a| a.blobs.remove(digest))
    }
}

/// However the reader ends, the import stops waiting.
struct EndOfArchive<'a>(&'a Arrivals);

impl Drop for EndOfArchive<'_> {
    fn drop(&mut self) {
        self.0.update(|a| a.ended = true);
    }
}

/// Reads `archive` into `root` (and a layout's blobs into the store's blob staging),
/// bounded as a pull is: no document above `bounds.document_size`, no file, and not all of
/// them together, above `bounds.image_size`. Returns a Docker archive's symlinks between
/// its own files (`HEX/layer.tar` → `../HEX.tar`, as skopeo writes them): never made, only
/// remembered.
fn read_archive(
    store: &Store,
    archive: impl Read,
    bounds: &Bounds,
    root: &Path,
    arrivals: &Arrivals,
) -> Result<HashMap<String, String>, Failure> {
    let mut aliases = HashMap::new();
    let bad = |why: String| Failure::user(format!("not an image archive: {why}"));
    let mut total = 0u64;
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
        if arrivals.is_cancelled() {
            break;
        }
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let name = entry
            .path()
            .map_err(|e| bad(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let name = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        let kind = entry.header().entry_type();
        match staged_path(&name) {
            Some(Staged::Dir) if kind.is_dir() => {}
            Some(Staged::File(rel)) if kind.is_file() => {
                let size = entry.header().size().map_err(|e| bad(e.to_string()))?;
                let limit = match rel.ends_with(".json") || !rel.contains('/') && !rel.ends_with(".tar") {
                    true => ("document_size", bounds.document_size),
                    false => ("image_size", bounds.image_size),
                };
                total = total.saturating_add(size);
                if size > limit.1 || total > bounds.image_size {
                    return Err(bad(format!(
                        "{name:?} ({size} bytes) is over the bound {} = {} (image_limits in kiln's config file)",
                        limit.0, limit.1
                    )));
                }
                aliases.remove(&rel);
                match layout_blob_digest(&rel) {
                    Some(digest) => {
                        let blob = stage_blob(store, &digest, &mut entry)?;
                        arrivals.update(|a| drop(a.blobs.insert(digest, blob)));
                    }
                    None => {
                        stage_file(root, &rel, &mut entry)?;
                        arrivals.update(|a| {
                            a.files.insert(rel);
                        });
                    }
                }
            }
            Some(Staged::File(rel)) if kind.is_symlink() => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad(e.to_string()))?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let resolved = resolve_link(&rel, &target)
                    .filter(|t| matches!(staged_path(t), Some(Staged::File(_))))
                    .ok_or_else(|| bad(format!("{name:?} links to {target:?}, outside the archive's own files")))?;
                aliases.insert(rel, resolved);
            }
            _ if name.is_empty() || name == "." => {}
            _ => return Err(bad(format!("unexpected entry {name:?} (an OCI layout holds oci-layout, index.json and blobs/ALG/HEX files; a Docker archive manifest.json, repositories, HEX.json and HEX/layer.tar)"))),
        }
    }
    Ok(aliases)
}

/// Writes the archive's file `rel` (not a layout blob) into the staging dir.
fn stage_file(root: &Path, rel: &str, content: &mut impl Read) -> Result<(), Failure> {
    let to = root.join(rel);
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(failed(format!("create {}", parent.display())))?;
    }
    let mut out = File::create(&to).map_err(failed(format!("write {}", to.display())))?;
    io::copy(content, &mut out).map_err(failed(format!("write {}", to.display())))?;
    Ok(())
}

/// Writes the archive's blob `digest` into the store's staging, refusing content that
/// does not hash to its name, and starts writing it to disk.
fn stage_blob(
    store: &Store,
    digest: &Digest,
    content: &mut impl Read,
) -> Result<BlobWriter, Failure> {
    let mut blob = store.new_blob()?;
    io::copy(content, &mut blob).map_err(failed(format!("write blob {digest}")))?;
    match blob.verify(digest) {
        Ok(()) => {}
        Err(kiln_store::StoreError::DigestMismatch { actual, .. }) => {
            return Err(Failure::user(format!(
                "not an image archive: blobs/sha256/{} holds content whose digest is {actual}",
                digest.hex()
            )))
        }
        Err(e) => return Err(e.into()),
    }
    blob.start_writeback();
    Ok(blob)
}

/// The digest an OCI layout's blob file is named by (`blobs/sha256/HEX`).
fn layout_blob_digest(rel: &str) -> Option<Digest> {
    Digest::from_hex(rel.strip_prefix("blobs/sha256/")?).ok()
}

/// One image of a Docker archive's `manifest.json`.
#[derive(serde::Deserialize)]
struct DockerImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Turns the staged Docker archive in `dir` into an OCI layout beside it: every file its
/// `manifest.json` names becomes a blob under its digest, each image an OCI manifest, each
/// tag an `index.json` entry. What the files are is then checked by the import as for any
/// layout (diff_ids against the unpacked layers, sizes, bounds).
fn docker_to_oci(
    dir: &Path,
    aliases: &std::collections::HashMap<String, String>,
) -> Result<(), Failure> {
    let bad = |why: String| Failure::user(format!("not a Docker archive: {why}"));
    let path = dir.join("manifest.json");
    let bytes =
        kiln_store::read_document(&path).map_err(failed(format!("read {}", path.display())))?;
    let images: Vec<DockerImage> =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("manifest.json: {e}")))?;
    fs::create_dir_all(dir.join("blobs/sha256"))
        .map_err(failed(format!("create {}", dir.display())))?;
    let mut blobs = std::collections::HashMap::new();
    let mut entries = Vec::new();
    for image in &images {
        let real = |name: &String| aliases.get(name).unwrap_or(name).clone();
        let config = as_blob(dir, &real(&image.config), &mut blobs)?;
        let mut layers = Vec::new();
        for layer in &image.layers {
            let (digest, size, media_type) = as_blob(dir, &real(layer), &mut blobs)?;
            layers.push(serde_json::json!({ "mediaType": media_type, "digest": digest.to_string(), "size": size }));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.0.to_string(),
                "size": config.1,
            },
            "layers": layers,
        });
        let manifest = serde_json::to_vec(&manifest).expect("JSON values serialise");
        let digest = Digest::of_bytes(&manifest);
        let to = dir.join(blob_name(&digest));
        fs::write(&to, &manifest).map_err(failed(format!("write {}", to.display())))?;
        let descriptor = |name: Option<&String>| {
            let mut entry = serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest.to_string(),
                "size": manifest.len(),
            });
            if let Some(name) = name {
                entry["annotations"] = serde_json::json!({ REF_NAME: name });
            }
            entry
        };
        match image.repo_tags.as_deref().unwrap_or_default() {
            [] => entries.push(descriptor(None)),
            tags => entries.extend(tags.iter().map(|t| descriptor(Some(t)))),
        }
    }
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": entries });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("JSON values serialise"),
    )
    .map_err(failed(format!("write {}", dir.display())))?;
    fs::write(dir.join("oci-layout"), OCI_LAYOUT)
        .map_err(failed(format!("write {}", dir.display())))
}

/// The file `name` of a staged Docker archive moved to `blobs/sha256/` under its digest:
/// (digest, size, layer media type from its first bytes). A name given twice (a layer two
/// images share) is moved once.
fn as_blob(
    dir: &Path,
    name: &str,
    moved: &mut std::collections::HashMap<String, (Digest, u64, &'static str)>,
) -> Result<(Digest, u64, &'static str), Failure> {
    if let Some(found) = moved.get(name) {
        return Ok(found.clone());
    }
    if !matches!(staged_path(name), Some(Staged::File(_))) || name == "manifest.json" {
        return Err(Failure::user(format!(
            "not a Docker archive: manifest.json names {name:?}"
        )));
    }
    let path = dir.join(name);
    let mut file = File::open(&path).map_err(|_| {
        Failure::user(format!(
            "not a Docker archive: manifest.json names {name:?}, which it does not hold"
        ))
    })?;
    let size = file
        .metadata()
        .map_err(failed(format!("read {}", path.display())))?
        .len();
    let mut first = [0u8; 4];
    let n = file
        .read(&mut first)
        .map_err(failed(format!("read {}", path.display())))?;
    let media_type = match kiln_layer::detect_compression(&first[..n]) {
        Some(kiln_layer::Compression::Gzip) => kiln_store::oci::MEDIA_TYPE_TAR_GZIP,
        Some(kiln_layer::Compression::Zstd) => kiln_store::oci::MEDIA_TYPE_TAR_ZSTD,
        None => kiln_store::oci::MEDIA_TYPE_TAR,
    };
    let mut file = File::open(&path).map_err(failed(format!("read {}", path.display())))?;
    let digest =
        Digest::of_reader(&mut file).map_err(failed(format!("read {}", path.display())))?;
    let to = dir.join(blob_name(&digest));
    fs::rename(&path, &to).map_err(failed(format!("move {}", path.display())))?;
    let found = (digest, size, media_type);
    moved.insert(name.to_owned(), found.clone());
    Ok(found)
}

/// A symlink's target, relative to the link's dir, as a name at the archive's top level;
/// `None` if it leaves the archive.
fn resolve_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

enum Staged {
    Dir,
    File(String),
}

/// Where an archive entry may go in the staging dir: only the names of an OCI layout or a
/// Docker archive, so no entry can reach outside it (no `..`, no absolute path, no link).
fn staged_path(name: &str) -> Option<Staged> {
    let file = || Some(Staged::File(name.to_owned()));
    match name.split('/').collect::<Vec<_>>()[..] {
        ["oci-layout"] | ["index.json"] | ["manifest.json"] | ["repositories"] => file(),
        ["blobs"] => Some(Staged::Dir),
        ["blobs", alg] if is_word(alg) => Some(Staged::Dir),
        ["blobs", alg, hex] if is_word(alg) && is_word(hex) => file(),
        // Docker's `HEX.json` configs and skopeo's `HEX.tar` layers.
        [single] => match single.rsplit_once('.') {
            Some((hex, "json" | "tar")) if is_word(hex) => file(),
            _ if is_word(single) => Some(Staged::Dir),
            _ => None,
        },
        // Docker's `HEX/layer.tar` (with `HEX/json` and `HEX/VERSION` beside it).
        [dir, "layer.tar" | "json" | "VERSION"] if is_word(dir) => file(),
        _ => None,
    }
}

fn is_word(part: &str) -> bool {
    !part.is_empty() && part.len() <= 128 && part.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_only_inside_the_archive() {
        assert_eq!(
            resolve_link("abc/layer.tar", "../abc.tar").as_deref(),
            Some("abc.tar")
        );
        assert_eq!(
            resolve_link("abc/layer.tar", "./x/../def.tar").as_deref(),
            Some("abc/def.tar")
        );
        assert_eq!(resolve_link("abc/layer.tar", "../../etc/shadow"), None);
        assert_eq!(resolve_link("abc/layer.tar", "/etc/shadow"), None);
    }

    #[test]
    fn only_an_archives_own_names_are_unpacked() {
        for good in [
            "index.json",
            "blobs/sha256/ab12",
            "manifest.json",
            "ab12.json",
            "ab12/layer.tar",
            "ab12.tar",
        ] {
            assert!(matches!(staged_path(good), Some(Staged::File(_))), "{good}");
        }
        assert!(matches!(staged_path("blobs/sha256"), Some(Staged::Dir)));
        assert!(matches!(staged_path("ab12"), Some(Staged::Dir)));
        for bad in [
            "../x",
            "blobs/../../etc/passwd",
            "/etc/passwd",
            "blobs/sha256/a/b",
            "blobs/sha-256/x",
            "ab12/etc/passwd",
            "x.sh",
            "..",
        ] {
            assert!(staged_path(bad).is_none(), "{bad}");
        }
    }
}
