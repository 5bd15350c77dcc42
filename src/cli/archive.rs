//! `kiln save` and `kiln load`: images to and from OCI image layouts (a directory or a tar
//! archive, a file or a pipe) and Docker archives (`docker save`/`load`'s format), so they
//! go wherever skopeo, podman, containerd or docker take them, without a registry.
//!
//! Saving copies the store's blobs as they are (kiln's store is itself an OCI layout) and
//! names each image in `index.json` by its full reference; the tar is reproducible (fixed
//! order, owners and times). Loading is a pull from an untrusted source: the layout goes
//! through the same checks as `from: oci:` (`kiln_build::import_oci_layout`); a tar is
//! first unpacked, entry by entry, into a private staging dir of the store, where only a
//! layout's or a Docker archive's own names are accepted (a Docker archive's symlinks
//! between its files are remembered, never made); a Docker archive is then turned into a
//! layout there (`docker_to_oci`).

use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use oci_spec::image::{Descriptor, ImageIndex};

use super::{CmdResult, Failure, Globals};
use kiln_image::Image;
use kiln_store::oci::{OCI_LAYOUT, REF_NAME};
use kiln_store::{Bounds, Digest, Reference, Store};

#[derive(Args, Debug)]
#[command(
    about = "Write images to an OCI image layout: a tar archive, a directory or stdout",
    after_help = "Examples:\n  kiln save -o hello.tar hello\n  kiln save -o layout/ hello web:1    # a directory (made when missing)\n  kiln save hello | ssh other kiln load\n  skopeo copy oci-archive:hello.tar:localhost/hello:latest docker-daemon:hello:latest"
)]
pub struct SaveArgs {
    /// Images to save (names or IDs)
    #[arg(required = true)]
    images: Vec<String>,
    /// Where: a tar file, a directory (existing, or named with a trailing /), or - for
    /// stdout [default: stdout, when it is not a terminal]
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// The archive's format: oci (an OCI image layout, what skopeo and podman read) or
    /// docker (what `docker load` reads, every version: gzip layers)
    #[arg(long, default_value = "oci", value_parser = ["oci", "docker"])]
    format: String,
}

#[derive(Args, Debug)]
#[command(
    about = "Read images from an OCI image layout (a tar archive, a directory or stdin) into the store",
    after_help = "Examples:\n  kiln load -i hello.tar\n  kiln load -i layout/\n  kiln load < hello.tar\n  skopeo copy docker://… oci-archive:img.tar:me/img:1 && kiln load -i img.tar"
)]
pub struct LoadArgs {
    /// The tar archive or layout directory; - or nothing for stdin
    #[arg(short, long, value_name = "PATH")]
    input: Option<PathBuf>,
}

/// One image to save: the name it gets and what it is.
struct Saved {
    name: String,
    manifest: Descriptor,
    image: Image,
}

impl Saved {
    /// Its blobs: manifest, config, layers.
    fn blobs(&self) -> Result<Vec<Digest>, Failure> {
        let mut blobs = vec![self.image.digest.clone(), self.image.config_digest.clone()];
        for layer in self.image.manifest.layers() {
            blobs.push(Digest::try_from(layer)?);
        }
        Ok(blobs)
    }
}

pub fn save(globals: &Globals, args: SaveArgs) -> CmdResult {
    let store = globals.store()?;
    let saved = args
        .images
        .iter()
        .map(|name| saved(&store, name))
        .collect::<Result<Vec<_>, _>>()?;
    let docker = args.format == "docker";
    let archive = |out: &mut dyn Write| match docker {
        true => write_docker_tar(&store, &saved, out),
        false => write_oci_tar(&store, &saved, out),
    };
    let target = match &args.output {
        Some(path) if path.as_os_str() != "-" => path.clone(),
        _ if io::stdout().is_terminal() => {
            return Err(
                Failure::user("refusing to write an archive to a terminal").hint(Some(
                    "give a file with -o hello.tar, or redirect: kiln save hello > hello.tar"
                        .into(),
                )),
            )
        }
        _ => {
            let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
            archive(&mut out)?;
            out.flush().map_err(failed("write the archive".into()))?;
            return Ok(0);
        }
    };
    let as_dir = target.is_dir() || target.as_os_str().to_string_lossy().ends_with('/');
    match (as_dir, docker) {
        (true, true) => {
            return Err(Failure::user(format!(
                "{}: a docker archive is a tar file, not a directory",
                target.display()
            ))
            .hint(Some("kiln save --format docker -o hello.tar hello".into())))
        }
        (true, false) => write_oci_dir(&store, &saved, &target)?,
        (false, _) => to_file(&target, archive)?,
    }
    if !globals.quiet {
        eprintln!(
            "saved {} image{} to {}",
            saved.len(),
            if saved.len() == 1 { "" } else { "s" },
            target.display()
        );
    }
    Ok(0)
}

fn saved(store: &Store, name: &str) -> Result<Saved, Failure> {
    let tagged = super::images::find(store, name)?;
    let image = Image::load(store, &Digest::try_from(&tagged.manifest)?)?;
    Ok(Saved {
        name: tagged.reference.to_string(),
        manifest: tagged.manifest,
        image,
    })
}

/// Every blob of the saved images, once, in digest order.
fn all_blobs(saved: &[Saved]) -> Result<Vec<Digest>, Failure> {
    let mut blobs = Vec::new();
    for s in saved {
        blobs.extend(s.blobs()?);
    }
    blobs.sort_by_key(|d| d.to_string());
    blobs.dedup();
    Ok(blobs)
}

/// `index.json`: each image's manifest descriptor, named by its full reference (and
/// nothing of kiln's own annotations).
fn index_json(saved: &[Saved]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = saved
        .iter()
        .map(|s| {
            let mut desc = serde_json::to_value(&s.manifest).expect("descriptors serialise");
            desc["annotations"] = serde_json::json!({ REF_NAME: s.name });
            desc
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    serde_json::to_vec(&index).expect("JSON values serialise")
}

/// kiln's digests are sha256's (`kiln_store::Digest` refuses others).
fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn failed(what: String) -> impl Fn(io::Error) -> Failure {
    move |e| Failure::user(format!("{what}: {e}"))
}

fn write_oci_dir(store: &Store, saved: &[Saved], dir: &Path) -> Result<(), Failure> {
    fs::create_dir_all(dir.join("blobs/sha256"))
        .map_err(failed(format!("create {}", dir.display())))?;
    for digest in all_blobs(saved)? {
        let to = dir.join(blob_name(&digest));
        if !to.exists() {
            fs::copy(store.blob_path(&digest), &to)
                .map_err(failed(format!("write {}", to.display())))?;
        }
    }
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        fs::write(&path, bytes).map_err(failed(format!("write {}", path.display())))
    };
    write("oci-layout", OCI_LAYOUT)?;
    // Last: a layout whose index is there names only blobs that are.
    write("index.json", &index_json(saved))
}

/// An archive written to `path` through a temporary file renamed into place, so a failed
/// or interrupted save never leaves half an archive under the name.
fn to_file(
    path: &Path,
    archive: impl FnOnce(&mut dyn Write) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = path.with_file_name(format!(".{name}.partial"));
    let file = File::create(&partial).map_err(failed(format!("create {}", partial.display())))?;
    let mut out = io::BufWriter::with_capacity(1 << 20, file);
    let written = archive(&mut out)
        .and_then(|()| {
            out.flush()
                .map_err(failed(format!("write {}", partial.display())))
        })
        .and_then(|()| {
            fs::rename(&partial, path).map_err(failed(format!("write {}", path.display())))
        });
    if written.is_err() {
        let _ = fs::remove_file(&partial);
    }
    written
}

/// A tar of fixed owners, modes and times, so the same images give the same bytes.
struct Tar<'a> {
    builder: tar::Builder<&'a mut dyn Write>,
}

impl<'a> Tar<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        Tar {
            builder: tar::Builder::new(out),
        }
    }

    fn header(size: u64, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dir(&mut self, name: &str) -> Result<(), Failure> {
        let mut h = Self::header(0, tar::EntryType::Directory);
        self.builder
            .append_data(&mut h, name, io::empty())
            .map_err(failed("write the archive".into()))
    }

    fn file(&mut self, name: &str, size: u64, data: impl Read) -> Result<(), Failure> {
        let mut h = Self::header(size, tar::EntryType::Regular);
        self.builder
            .append_data(&mut h, name, data)
            .map_err(failed("write the archive".into()))
    }

    /// A file of the store (a blob, a staged layer) as the entry `name`.
    fn host_file(&mut self, name: &str, path: &Path) -> Result<(), Failure> {
        let file = File::open(path).map_err(failed(format!("read {}", path.display())))?;
        let size = file
            .metadata()
            .map_err(failed(format!("read {}", path.display())))?
            .len();
        self.file(name, size, io::BufReader::with_capacity(1 << 20, file))
    }

    fn finish(self) -> Result<(), Failure> {
        self.builder
            .into_inner()
            .and_then(|w| w.flush())
            .map_err(failed("write the archive".into()))
    }
}

fn write_oci_tar(store: &Store, saved: &[Saved], out: &mut dyn Write) -> Result<(), Failure> {
    let mut tar = Tar::new(out);
    tar.file("oci-layout", OCI_LAYOUT.len() as u64, OCI_LAYOUT)?;
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;
    for digest in all_blobs(saved)? {
        tar.host_file(&blob_name(&digest), &store.blob_path(&digest))?;
    }
    let index = index_json(saved);
    tar.file("index.json", index.len() as u64, &index[..])?;
    tar.finish()
}

/// `docker save`'s format, which `docker load` of any version reads: `manifest.json` (each
/// image's config file, tags and layer files), `repositories`, `HEX.json` configs and
/// `HEX/layer.tar` layers (by diff_id), gzip-compressed — a zstd layer is recompressed
/// through a temporary file of the store, as the tar header needs its size first. The
/// configs are unchanged, so the image IDs are the same as kiln's.
fn write_docker_tar(store: &Store, saved: &[Saved], out: &mut dyn Write) -> Result<(), Failure> {
    let staging = store.temp_dir("save")?;
    let mut tar = Tar::new(out);
    let mut manifests = Vec::new();
    let mut repositories = serde_json::Map::new();
    let mut written = std::collections::BTreeSet::new();
    for s in saved {
        let config = format!("{}.json", s.image.config_digest.hex());
        if written.insert(config.clone()) {
            tar.host_file(&config, &store.blob_path(&s.image.config_digest))?;
        }
        let mut layers = Vec::new();
        for (blob, diff_id) in s
            .image
            .manifest
            .layers()
            .iter()
            .zip(&s.image.config.rootfs.diff_ids)
        {
            let dir = diff_id.hex().to_owned();
            let name = format!("{dir}/layer.tar");
            if written.insert(name.clone()) {
                tar.dir(&format!("{dir}/"))?;
                let gzip = gzip_layer(store, staging.path(), blob)?;
                tar.host_file(&name, &gzip)?;
                if gzip.starts_with(staging.path()) {
                    let _ = fs::remove_file(&gzip);
                }
            }
            layers.push(name);
        }
        let (repo, tag) = s.name.rsplit_once(':').unwrap_or((&s.name, "latest"));
        let top = s
            .image
            .config
            .rootfs
            .diff_ids
            .last()
            .map(|d| d.hex().to_owned());
        repositories
            .entry(repo.to_owned())
            .or_insert_with(|| serde_json::json!({}))[tag] =
            serde_json::json!(top.unwrap_or_default());
        manifests.push(serde_json::json!({
            "Config": config,
            "RepoTags": [s.name],
            "Layers": layers,
        }));
    }
    let manifest = serde_json::to_vec(&manifests).expect("JSON values serialise");
    tar.file("manifest.json", manifest.len() as u64, &manifest[..])?;
    let repositories = serde_json::to_vec(&repositories).expect("JSON values serialise");
    tar.file("repositories", repositories.len() as u64, &repositories[..])?;
    tar.finish()
}

/// The layer `blob` gzip-compressed: the store's blob itself when it is gzip already, else
/// a recompressed copy in `staging`.
fn gzip_layer(store: &Store, staging: &Path, blob: &Descriptor) -> Result<PathBuf, Failure> {
    let digest = Digest::try_from(blob)?;
    let source = store.blob_path(&digest);
    let media_type = blob.media_type().to_string();
    if media_type.ends_with("gzip") {
        return Ok(source);
    }
    let target = staging.join(digest.hex());
    let mut input = io::BufReader::with_capacity(
        1 << 20,
        File::open(&source).map_err(failed(format!("read {}", source.display())))?,
    );
    let mut output = io::BufWriter::with_capacity(
        1 << 20,
        File::create(&target).map_err(failed(format!("write {}", target.display())))?,
    );
    kiln_layer::copy_as_gzip(&mut input, &media_type, &mut output)
        .map_err(|e| Failure::user(format!("recompress layer {digest}: {e}")))?;
    output
        .flush()
        .map_err(failed(format!("write {}", target.display())))?;
    Ok(target)
}

pub fn load(globals: &Globals, args: LoadArgs) -> CmdResult {
    let store = globals.store()?;
    // What is loaded is unreachable until it is tagged: no gc meanwhile.
    let _guard = store.content_guard()?;
    let bounds = super::pull::kiln_config()?.bounds;
    let input = args.input.filter(|p| p.as_os_str() != "-");
    let mut staged = None;
    let dir = match &input {
        Some(path) if path.is_dir() => path.clone(),
        Some(path) => {
            let file = File::open(path).map_err(failed(format!("open {}", path.display())))?;
            staged
                .insert(Staging::unpack(&store, file, &bounds)?)
                .dir
                .path()
                .to_owned()
        }
        None if io::stdin().is_terminal() => {
            return Err(
                Failure::user("no archive to load: stdin is a terminal").hint(Some(
                    "kiln load -i hello.tar, or kiln load < hello.tar".into(),
                )),
            )
        }
        None => staged
            .insert(Staging::unpack(&store, io::stdin().lock(), &bounds)?)
            .dir
            .path()
            .to_owned(),
    };
    if !dir.join("index.json").exists() && dir.join("manifest.json").exists() {
        // A Docker archive (docker save before 25, skopeo's docker-archive): the same
        // images as an OCI layout, in the staging dir (a directory given is never changed).
        if staged.is_none() {
            return Err(Failure::user(format!(
                "{}: a Docker archive is read as a tar file",
                dir.display()
            ))
            .hint(Some(
                "tar -C DIR -cf image.tar . && kiln load -i image.tar".into(),
            )));
        }
        let aliases = staged
            .as_ref()
            .map(|s| s.aliases.clone())
            .unwrap_or_default();
        docker_to_oci(&dir, &aliases)?;
    }
    let names = image_names(&dir)?;
    let mut prestaged = staged
        .as_mut()
        .map(|s| std::mem::take(&mut s.blobs))
        .unwrap_or_default();
    for name in &names {
        let digest =
            kiln_build::import_oci_layout(&store, &dir, name.as_deref(), &bounds, &mut prestaged)
                .map_err(|e| Failure::user(format!("{e}")).hint(e.hint()))?;
        match name.as_deref().map(|n| Reference::parse(n, "localhost")) {
            Some(Ok(reference)) => {
                store.set_tag(&reference, &manifest_descriptor(&store, &digest)?)?;
                println!("Loaded image: {reference}");
            }
            // An image without a name in the archive is kept under its ID, as a tag, so
            // that gc keeps it and `kiln run` finds it.
            _ => {
                let reference =
                    Reference::parse(&format!("loaded:{}", digest.short()), "localhost")
                        .map_err(Failure::user)?;
                store.set_tag(&reference, &manifest_descriptor(&store, &digest)?)?;
                println!("Loaded image: {reference} (unnamed in the archive)");
            }
        }
    }
    Ok(0)
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

/// A tar unpacked into a private staging dir of the store (removed when dropped, also when
/// kiln is interrupted).
struct Staging {
    dir: kiln_store::TempDir,
    /// An OCI layout's `blobs/sha256/HEX` files, written straight into the store's blob
    /// staging and hashed on the way (so the import takes them instead of copying them).
    blobs: kiln_build::StagedBlobs,
    /// Docker archives' symlinks between their own files (`HEX/layer.tar` →
    /// `../HEX.tar`, as skopeo writes them): never made, only remembered.
    aliases: std::collections::HashMap<String, String>,
}

impl Staging {
    /// Unpacks `archive`, bounded as a pull is: no document above `bounds.document_size`,
    /// no file, and not all of them together, above `bounds.image_size`.
    fn unpack(store: &Store, archive: impl Read, bounds: &Bounds) -> Result<Staging, Failure> {
        let mut staging = Staging {
            dir: store.temp_dir("load")?,
            blobs: Default::default(),
            aliases: Default::default(),
        };
        let root = staging.dir.path().to_owned();
        let bad = |why: String| Failure::user(format!("not an image archive: {why}"));
        let mut total = 0u64;
        let mut tar = tar::Archive::new(archive);
        for entry in tar.entries().map_err(|e| bad(e.to_string()))? {
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
                    staging.aliases.remove(&rel);
                    if let Some(digest) = layout_blob_digest(&rel) {
                        staging.stage_blob(store, digest, &mut entry)?;
                        continue;
                    }
                    let to = root.join(&rel);
                    if let Some(parent) = to.parent() {
                        fs::create_dir_all(parent).map_err(failed(format!("create {}", parent.display())))?;
                    }
                    let mut out = File::create(&to).map_err(failed(format!("write {}", to.display())))?;
                    io::copy(&mut entry, &mut out).map_err(failed(format!("write {}", to.display())))?;
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
                    staging.aliases.insert(rel, resolved);
                }
                _ if name.is_empty() || name == "." => {}
                _ => return Err(bad(format!("unexpected entry {name:?} (an OCI layout holds oci-layout, index.json and blobs/ALG/HEX files; a Docker archive manifest.json, repositories, HEX.json and HEX/layer.tar)"))),
            }
        }
        Ok(staging)
    }
}

impl Staging {
    /// Writes the archive's blob `digest` into the store's staging, refusing content that
    /// does not hash to its name, and starts writing it to disk.
    fn stage_blob(
        &mut self,
        store: &Store,
        digest: Digest,
        content: &mut impl Read,
    ) -> Result<(), Failure> {
        let mut blob = store.new_blob()?;
        io::copy(content, &mut blob).map_err(failed(format!("write blob {digest}")))?;
        match blob.verify(&digest) {
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
        self.blobs.insert(digest, blob);
        Ok(())
    }
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
