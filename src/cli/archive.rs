//! `kiln save` (and, in `load.rs`, `kiln load`): images to and from OCI image layouts (a
//! directory or a tar archive, a file or a pipe) and Docker archives (`docker save`/`load`'s
//! format), so they go wherever skopeo, podman, containerd or docker take them, without a
//! registry.
//!
//! Saving copies the store's blobs as they are (kiln's store is itself an OCI layout) and
//! names each image in `index.json` by its full reference; the tar is reproducible (fixed
//! order, owners and times) and in reading order: `index.json`, then each image's
//! manifest, config and layers bottom first, so a `kiln load` can unpack each layer while
//! the next one still arrives.

use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use oci_spec::image::Descriptor;

use super::{CmdResult, Failure, Globals};
use kiln_image::Image;
use kiln_store::oci::{OCI_LAYOUT, REF_NAME};
use kiln_store::{Digest, Store};

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

/// Every blob of the saved images, once, in reading order: each image's manifest, config
/// and layers bottom first, as an import needs them.
fn all_blobs(saved: &[Saved]) -> Result<Vec<Digest>, Failure> {
    let mut blobs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for s in saved {
        blobs.extend(s.blobs()?.into_iter().filter(|d| seen.insert(d.clone())));
    }
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
pub(super) fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

pub(super) fn failed(what: String) -> impl Fn(io::Error) -> Failure {
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
    // The index first and the blobs in reading order: `kiln load` imports while it reads.
    let index = index_json(saved);
    tar.file("index.json", index.len() as u64, &index[..])?;
    tar.dir("blobs/")?;
    tar.dir("blobs/sha256/")?;
    for digest in all_blobs(saved)? {
        tar.host_file(&blob_name(&digest), &store.blob_path(&digest))?;
    }
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
