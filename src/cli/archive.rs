//! `kiln save` and `kiln load`: images to and from OCI image layouts, as a directory or a
//! tar archive (a file or a pipe), so they go wherever skopeo, podman or containerd take
//! them, without a registry.
//!
//! Saving copies the store's blobs as they are (kiln's store is itself an OCI layout) and
//! names each image in `index.json` by its full reference; the tar is reproducible (fixed
//! order, owners and times). Loading is a pull from an untrusted source: the layout goes
//! through the same checks as `from: oci:` (`kiln_build::import_oci_layout`); a tar is
//! first unpacked, entry by entry, into a private staging dir of the store, where only
//! `oci-layout`, `index.json` and `blobs/ALG/HEX` regular files are accepted.

use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use oci_spec::image::{Descriptor, ImageIndex};

use super::{CmdResult, Failure, Globals};
use kiln_image::Image;
use kiln_store::{oci::REF_NAME, Digest, Reference, Store};

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
    /// The archive's format (OCI image layout)
    #[arg(long, default_value = "oci", value_parser = ["oci"])]
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

/// One image to save: the name it gets in `index.json` and its manifest.
struct Saved {
    name: String,
    manifest: Descriptor,
    blobs: Vec<Digest>,
}

pub fn save(globals: &Globals, args: SaveArgs) -> CmdResult {
    let store = globals.store()?;
    let saved = args
        .images
        .iter()
        .map(|name| saved(&store, name))
        .collect::<Result<Vec<_>, _>>()?;
    let index = index_json(&saved)?;
    let mut blobs: Vec<&Digest> = saved.iter().flat_map(|s| &s.blobs).collect();
    blobs.sort_by_key(|d| d.to_string());
    blobs.dedup();
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
            write_tar(&store, &index, &blobs, io::stdout().lock())?;
            return Ok(0);
        }
    };
    let as_dir = target.is_dir() || target.as_os_str().to_string_lossy().ends_with('/');
    match as_dir {
        true => write_dir(&store, &index, &blobs, &target)?,
        false => write_tar_file(&store, &index, &blobs, &target)?,
    }
    if !globals.quiet {
        eprintln!(
            "saved {} image{} ({} blobs) to {}",
            saved.len(),
            if saved.len() == 1 { "" } else { "s" },
            blobs.len(),
            target.display()
        );
    }
    Ok(0)
}

fn saved(store: &Store, name: &str) -> Result<Saved, Failure> {
    let tagged = super::images::find(store, name)?;
    let digest = Digest::try_from(&tagged.manifest)?;
    let image = Image::load(store, &digest)?;
    let mut blobs = vec![digest, image.config_digest.clone()];
    for layer in image.manifest.layers() {
        blobs.push(Digest::try_from(layer)?);
    }
    Ok(Saved {
        name: tagged.reference.to_string(),
        manifest: tagged.manifest,
        blobs,
    })
}

/// `index.json`: each image's manifest descriptor, named by its full reference (and
/// nothing of kiln's own annotations).
fn index_json(saved: &[Saved]) -> Result<Vec<u8>, Failure> {
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
    Ok(serde_json::to_vec(&index).expect("JSON values serialise"))
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// kiln's digests are sha256's (`kiln_store::Digest` refuses others).
fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn failed(what: String) -> impl Fn(io::Error) -> Failure {
    move |e| Failure::user(format!("{what}: {e}"))
}

fn write_dir(store: &Store, index: &[u8], blobs: &[&Digest], dir: &Path) -> Result<(), Failure> {
    fs::create_dir_all(dir.join("blobs/sha256"))
        .map_err(failed(format!("create {}", dir.display())))?;
    for digest in blobs {
        let to = dir.join(blob_name(digest));
        if !to.exists() {
            fs::copy(store.blob_path(digest), &to)
                .map_err(failed(format!("write {}", to.display())))?;
        }
    }
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        fs::write(&path, bytes).map_err(failed(format!("write {}", path.display())))
    };
    write("oci-layout", OCI_LAYOUT)?;
    // Last: a layout whose index is there names only blobs that are.
    write("index.json", index)
}

/// A tar written to `path` through a temporary file renamed into place, so a failed or
/// interrupted save never leaves half an archive under the name.
fn write_tar_file(
    store: &Store,
    index: &[u8],
    blobs: &[&Digest],
    path: &Path,
) -> Result<(), Failure> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = path.with_file_name(format!(".{name}.partial"));
    let file = File::create(&partial).map_err(failed(format!("create {}", partial.display())))?;
    let written = write_tar(
        store,
        index,
        blobs,
        io::BufWriter::with_capacity(1 << 20, file),
    )
    .and_then(|()| fs::rename(&partial, path).map_err(failed(format!("write {}", path.display()))));
    if written.is_err() {
        let _ = fs::remove_file(&partial);
    }
    written
}

fn write_tar(
    store: &Store,
    index: &[u8],
    blobs: &[&Digest],
    out: impl Write,
) -> Result<(), Failure> {
    let broken = failed("write the archive".into());
    let mut tar = tar::Builder::new(out);
    let header = |size: u64, kind: tar::EntryType, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    tar.append_data(
        &mut header(OCI_LAYOUT.len() as u64, tar::EntryType::Regular, 0o644),
        "oci-layout",
        OCI_LAYOUT,
    )
    .map_err(&broken)?;
    for dir in ["blobs/", "blobs/sha256/"] {
        tar.append_data(
            &mut header(0, tar::EntryType::Directory, 0o755),
            dir,
            io::empty(),
        )
        .map_err(&broken)?;
    }
    for digest in blobs {
        let path = store.blob_path(digest);
        let file = File::open(&path).map_err(failed(format!("read {}", path.display())))?;
        let size = file.metadata().map_err(&broken)?.len();
        let reader = io::BufReader::with_capacity(1 << 20, file);
        tar.append_data(
            &mut header(size, tar::EntryType::Regular, 0o644),
            blob_name(digest),
            reader,
        )
        .map_err(&broken)?;
    }
    tar.append_data(
        &mut header(index.len() as u64, tar::EntryType::Regular, 0o644),
        "index.json",
        index,
    )
    .map_err(&broken)?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(&broken)
}

pub fn load(globals: &Globals, args: LoadArgs) -> CmdResult {
    let store = globals.store()?;
    let input = args.input.filter(|p| p.as_os_str() != "-");
    let staged;
    let dir = match &input {
        Some(path) if path.is_dir() => path.clone(),
        Some(path) => {
            let file = File::open(path).map_err(failed(format!("open {}", path.display())))?;
            staged = Staging::unpack(&store, file)?;
            staged.dir.path().to_owned()
        }
        None if io::stdin().is_terminal() => {
            return Err(
                Failure::user("no archive to load: stdin is a terminal").hint(Some(
                    "kiln load -i hello.tar, or kiln load < hello.tar".into(),
                )),
            )
        }
        None => {
            staged = Staging::unpack(&store, io::stdin().lock())?;
            staged.dir.path().to_owned()
        }
    };
    let names = image_names(&dir)?;
    let bounds = super::pull::kiln_config()?.bounds;
    for name in &names {
        let digest = kiln_build::import_oci_layout(&store, &dir, name.as_deref(), &bounds)
            .map_err(|e| Failure::user(format!("{e}")).hint(e.hint()))?;
        match name.as_deref().map(|n| Reference::parse(n, "localhost")) {
            Some(Ok(reference)) => {
                store.set_tag(&reference, &manifest_descriptor(&store, &digest)?)?;
                println!("Loaded image: {reference}");
            }
            _ => println!("Loaded image ID: {digest}"),
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
}

impl Staging {
    fn unpack(store: &Store, archive: impl Read) -> Result<Staging, Failure> {
        let staging = Staging {
            dir: store.temp_dir("load")?,
        };
        let root = staging.dir.path();
        let bad = |why: String| Failure::user(format!("not an OCI image layout archive: {why}"));
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
                    let to = root.join(&rel);
                    if let Some(parent) = to.parent() {
                        fs::create_dir_all(parent).map_err(failed(format!("create {}", parent.display())))?;
                    }
                    let mut out = File::create(&to).map_err(failed(format!("write {}", to.display())))?;
                    io::copy(&mut entry, &mut out).map_err(failed(format!("write {}", to.display())))?;
                }
                _ if name.is_empty() || name == "." => {}
                _ => return Err(bad(format!("unexpected entry {name:?} (a layout holds oci-layout, index.json and blobs/ALG/HEX files)"))),
            }
        }
        Ok(staging)
    }
}

enum Staged {
    Dir,
    File(String),
}

/// Where an archive entry may go in the staging dir: only a layout's own names, so no
/// entry can reach outside it (no `..`, no absolute path, no link).
fn staged_path(name: &str) -> Option<Staged> {
    match name.split('/').collect::<Vec<_>>()[..] {
        ["oci-layout"] | ["index.json"] => Some(Staged::File(name.to_owned())),
        ["blobs"] => Some(Staged::Dir),
        ["blobs", alg] if is_word(alg) => Some(Staged::Dir),
        ["blobs", alg, hex] if is_word(alg) && is_word(hex) => Some(Staged::File(name.to_owned())),
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
    fn only_a_layouts_own_names_are_unpacked() {
        assert!(matches!(staged_path("index.json"), Some(Staged::File(_))));
        assert!(matches!(
            staged_path("blobs/sha256/ab12"),
            Some(Staged::File(_))
        ));
        assert!(matches!(staged_path("blobs/sha256"), Some(Staged::Dir)));
        for bad in [
            "../x",
            "blobs/../../etc/passwd",
            "/etc/passwd",
            "blobs/sha256/a/b",
            "blobs/sha-256/x",
            "manifest.json",
        ] {
            assert!(staged_path(bad).is_none(), "{bad}");
        }
    }
}
