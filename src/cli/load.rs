//! `kiln load`: images from an OCI image layout (a directory, or a tar archive from a file
//! or a pipe) or a Docker archive, into the store.
//!
//! Loading is a pull from an untrusted source: the layout goes through the same checks as
//! `from: oci:` (`kiln_build::import_oci_layout`). A tar (plain, or gzip or zstd compressed
//! as `docker load` takes it) is read, entry by entry, with the tar reader audited for
//! layers, by a thread of its own into a private staging dir of the store, where only a
//! layout's or a Docker archive's own names are accepted (a Docker archive's symlinks
//! between its files are remembered, never made); a layout's blobs go straight into the
//! store's blob staging, hashed on the way. Meanwhile the import takes each blob as it arrives (`Arrivals`), so
//! with `index.json` first (as `kiln save` writes it) a layer unpacks while the next one is
//! read. Nothing is published before the whole archive was read (a second entry of a name,
//! or a bad one after the last blob, refuses it all), and nothing tagged before every
//! image checked out.
//! A Docker archive is turned into a layout in the staging dir once it is all there
//! (`docker_archive::to_oci`).

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Condvar, Mutex};

use clap::Args;
use oci_spec::image::{Descriptor, ImageIndex};

use super::archive::failed;
use super::{CmdResult, Failure, Globals};
use kiln_build::StagedBlobs;
use kiln_image::Image;
use kiln_layer::{TarEntry, TarKind, TarReader};
use kiln_store::oci::REF_NAME;
use kiln_store::{BlobWriter, Bounds, Digest, Reference, Store};

mod docker_archive;

#[derive(Args, Debug)]
#[command(
    about = "Read images from an OCI image layout (a tar archive, a directory or stdin) into the store",
    after_help = "Examples:\n  kiln load -i hello.tar\n  kiln load -i hello.tar.gz            # gzip or zstd, as docker load takes it\n  kiln load hello.tar\n  kiln load layout/\n  kiln load < hello.tar\n  skopeo copy docker://… oci-archive:img.tar:me/img:1 && kiln load -i img.tar"
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
            if is_dir_transport(path) {
                return Err(Failure::user(format!(
                    "{}: a containers/image dir: transport directory (podman save --format \
                     docker-dir), not an OCI image layout",
                    path.display()
                ))
                .hint(Some(
                    "podman save --format oci-dir, or skopeo copy dir:DIR oci:LAYOUT:NAME".into(),
                )));
            }
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
            let shown = path.display().to_string();
            import_images(&store, path, &shown, &bounds, &mut HashMap::new())?
        }
        Some(path) => {
            let file = File::open(path).map_err(failed(format!("open {}", path.display())))?;
            load_archive(&store, move || file, &path.display().to_string(), &bounds)?
        }
        None if io::stdin().is_terminal() => {
            return Err(
                Failure::user("no archive to load: stdin is a terminal").hint(Some(
                    "kiln load -i hello.tar, or kiln load < hello.tar".into(),
                )),
            )
        }
        None => load_archive(&store, || io::stdin().lock(), "stdin", &bounds)?,
    };
    for (reference, digest) in images {
        let descriptor = manifest_descriptor(&store, &digest)?;
        match reference {
            Some(reference) => {
                say_if_retagged(&store, &reference, &digest, globals.quiet)?;
                store.set_tag(&reference, &descriptor)?;
                println!("Loaded image: {reference}");
            }
            // An image without a name in the archive is kept under its ID, as a tag, so
            // that gc keeps it and `kiln run` finds it.
            None => {
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

/// Whether `dir` is what containers/image's `dir:` transport writes (a `version` file
/// saying so beside `manifest.json`), which has a Docker archive's `manifest.json` name
/// but not its content.
fn is_dir_transport(dir: &Path) -> bool {
    fs::read(dir.join("version")).is_ok_and(|v| v.starts_with(b"Directory Transport Version"))
}

/// A name the archive gives to an image that already names another one moves, as with
/// `docker load`; the image it named is said, so that it can be found by its ID.
fn say_if_retagged(
    store: &Store,
    reference: &Reference,
    digest: &Digest,
    quiet: bool,
) -> Result<(), Failure> {
    let name = reference.to_string();
    let before = store
        .tags()?
        .into_iter()
        .find(|t| t.reference.to_string() == name);
    if let Some(before) = before.filter(|t| t.manifest.digest().digest() != digest.hex()) {
        if !quiet {
            eprintln!(
                "The image {name} already existed: the name moves to the loaded image (the one \
                 it named was {})",
                &before.manifest.digest().digest()[..12]
            );
        }
    }
    Ok(())
}

/// An image the archive names (its name, as it appears, and as a reference) and the
/// digest of its manifest.
type Loaded = (Option<Reference>, Digest);

/// Reads the tar `open` gives on a thread of its own into a staging dir of the store,
/// importing its images meanwhile; returns them (name, manifest digest) once the whole
/// archive was read and every image checked out.
fn load_archive<R: Read>(
    store: &Store,
    open: impl FnOnce() -> R + Send,
    shown: &str,
    bounds: &Bounds,
) -> Result<Vec<Loaded>, Failure> {
    let staging = store.temp_dir("load")?;
    let root = staging.path();
    let arrivals = Arrivals::default();
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let _end = EndOfArchive(&arrivals);
            let read = read_archive(store, open(), bounds, root, &arrivals);
            if read.is_err() {
                arrivals.update(|a| a.failed = true);
            }
            read
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
                docker_archive::to_oci(root, &aliases)?;
            }
            return import_images(store, root, shown, bounds, &mut &arrivals);
        }
        let imported = import_images(store, root, shown, bounds, &mut &arrivals);
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
/// Errors name the layout `shown` (the archive, for a staging dir the user never saw).
fn import_images(
    store: &Store,
    dir: &Path,
    shown: &str,
    bounds: &Bounds,
    staged: &mut dyn StagedBlobs,
) -> Result<Vec<Loaded>, Failure> {
    let staging = dir.display().to_string();
    let in_words = |text: String| text.replace(&staging, shown);
    image_names(dir)
        .map_err(|e| Failure::user(in_words(e.message)))?
        .into_iter()
        .map(|name| {
            let (raw, reference) = name.unzip();
            let digest = kiln_build::import_oci_layout(store, dir, raw.as_deref(), bounds, staged)
                .map_err(|e| Failure::user(in_words(e.to_string())).hint(e.hint()))?;
            Ok((reference, digest))
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

/// The names of the layout's images (its `index.json`'s `ref.name`s, each once), `None`
/// for an image without one (taken only when it is the layout's only image). Every name
/// must be one an image can have — `docker load` refuses an invalid tag too — and name
/// one image: nothing is loaded otherwise.
fn image_names(dir: &Path) -> Result<Vec<Option<(String, Reference)>>, Failure> {
    let path = dir.join("index.json");
    let bytes =
        kiln_store::read_document(&path).map_err(failed(format!("read {}", path.display())))?;
    let index: ImageIndex = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::user(format!("{}: not an OCI image index: {e}", path.display())))?;
    let mut names = Vec::new();
    let mut digests: HashMap<&str, String> = HashMap::new();
    for descriptor in index.manifests() {
        let digest = descriptor.digest().to_string();
        let Some(name) = descriptor
            .annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
        else {
            names.push(None);
            continue;
        };
        match digests.insert(name, digest.clone()) {
            Some(other) if other != digest => {
                return Err(Failure::user(format!(
                    "{}: the archive names two images {}",
                    path.display(),
                    shown(name)
                )))
            }
            Some(_) => continue,
            None => names.push(Some((name.clone(), loaded_name(name)?))),
        }
    }
    if names.is_empty() {
        return Err(Failure::user(format!(
            "{}: the layout holds no image",
            dir.display()
        )));
    }
    Ok(names)
}

/// The reference an archive's image name stands for: NAME[:TAG], as `docker load` takes
/// (a name with a digest would be a tag that looks like a digest).
fn loaded_name(name: &str) -> Result<Reference, Failure> {
    let bad = |why: String| {
        Failure::user(format!(
            "the archive names an image {}, which is not a valid image name: {why}",
            shown(name)
        ))
    };
    let reference = Reference::parse(name, "localhost").map_err(|e| bad(e.to_string()))?;
    if reference.digest.is_some() {
        return Err(bad("a name with a digest cannot be a tag".into()));
    }
    Ok(reference)
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
    /// The reader refused the archive.
    failed: bool,
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

    /// Nothing is published before the whole archive was read and found good.
    fn before_publish(&mut self) -> Result<(), String> {
        self.wait_until(|_| None::<()>);
        match self
            .arrived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed
        {
            true => Err("the archive was refused".into()),
            false => Ok(()),
        }
    }
}

/// However the reader ends, the import stops waiting.
struct EndOfArchive<'a>(&'a Arrivals);

impl Drop for EndOfArchive<'_> {
    fn drop(&mut self) {
        self.0.update(|a| a.ended = true);
    }
}

/// Entries an image archive may hold: a config, a manifest and layers (500 at most, by
/// default) for each of hundreds of images. Layers' own bound (a million) is far more
/// than any archive needs and would let a compressed archive of empty entries spin.
const ARCHIVE_ENTRIES: u64 = 100_000;
/// Bytes of one PAX or GNU long-name header: an archive's own names are short.
const ARCHIVE_HEADER_BYTES: u64 = 64 << 10;

/// Reads `archive` (a tar, or one compressed by gzip or zstd, as its first bytes say) into
/// `root` (and a layout's blobs into the store's blob staging), bounded as a pull is: no
/// document above `bounds.document_size`, no file, and not all of them together, above
/// `bounds.image_size`, and a compressed archive no more than `bounds.compression_ratio`
/// times its size. Returns a Docker archive's symlinks between its own files
/// (`HEX/layer.tar` → `../HEX.tar`, as skopeo writes them): never made, only remembered.
///
/// The tar is read by kiln-layer's reader, the one audited for layers (SECURITY.md rule
/// 5): the `tar` crate reads a long name into memory whatever its size.
fn read_archive(
    store: &Store,
    archive: impl Read,
    bounds: &Bounds,
    root: &Path,
    arrivals: &Arrivals,
) -> Result<HashMap<String, String>, Failure> {
    let compressed = Rc::new(Cell::new(0));
    let counted = Counted {
        inner: archive,
        count: Rc::clone(&compressed),
    };
    let stream = kiln_layer::decompressed(counted).map_err(|e| bad_archive(e.to_string()))?;
    let stream = RatioBound {
        inner: stream,
        compressed,
        total: 0,
        bounds,
    };
    let mut limits = kiln_layer::ApplyLimits::from(bounds);
    limits.max_entries = ARCHIVE_ENTRIES;
    limits.max_header_bytes = ARCHIVE_HEADER_BYTES;
    let mut tar = TarReader::new(stream, &limits);
    let mut staging = Staging {
        store,
        bounds,
        root,
        arrivals,
        aliases: HashMap::new(),
        seen: HashSet::new(),
        total: 0,
    };
    while !arrivals.is_cancelled() {
        let entry = match tar.next_entry() {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) => return Err(archive_failure(e, staging.seen.is_empty())),
        };
        staging.entry(entry, &mut EntryData(&mut tar))?;
    }
    Ok(staging.aliases)
}

/// The archive being staged: what came so far.
struct Staging<'a> {
    store: &'a Store,
    bounds: &'a Bounds,
    root: &'a Path,
    arrivals: &'a Arrivals,
    aliases: HashMap<String, String>,
    /// The names of the files and links staged: a second entry of one name is refused,
    /// since which of the two counts is a matter of reader (tar keeps the last, an import
    /// that began takes the first).
    seen: HashSet<String>,
    /// Bytes of all the entries so far.
    total: u64,
}

impl Staging<'_> {
    /// Stages one entry, or refuses it (and with it the archive).
    fn entry(&mut self, entry: TarEntry, data: &mut impl Read) -> Result<(), Failure> {
        let raw = String::from_utf8_lossy(&entry.path).into_owned();
        let name = raw
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        match (staged_path(&name), entry.kind) {
            (Some(Staged::Dir), TarKind::Dir) => Ok(()),
            (_, TarKind::Dir) if name.is_empty() || name == "." => Ok(()),
            (Some(Staged::File(rel)), TarKind::File) => {
                self.first_time(&rel)?;
                self.check_size(&rel, entry.size)?;
                self.file(rel, data)
            }
            (Some(Staged::File(rel)), TarKind::Symlink) => {
                self.first_time(&rel)?;
                let target = String::from_utf8_lossy(&entry.link).into_owned();
                let resolved = resolve_link(&rel, &target)
                    .filter(|t| matches!(staged_path(t), Some(Staged::File(_))))
                    .ok_or_else(|| {
                        bad_archive(format!(
                            "{} links to {}, outside the archive's own files",
                            shown(&rel),
                            shown(&target)
                        ))
                    })?;
                self.aliases.insert(rel, resolved);
                Ok(())
            }
            (_, kind) => Err(refused_entry(&raw, kind)),
        }
    }

    fn first_time(&mut self, rel: &str) -> Result<(), Failure> {
        match self.seen.insert(rel.to_owned()) {
            true => Ok(()),
            false => Err(bad_archive(format!(
                "{} is in it twice (which one is meant depends on the reader)",
                shown(rel)
            ))),
        }
    }

    /// A document (JSON, `oci-layout`, `repositories`) is bounded by `document_size`, a
    /// blob or layer by `image_size`, and so are all entries together.
    fn check_size(&mut self, rel: &str, size: u64) -> Result<(), Failure> {
        let document = rel.ends_with(".json") || !rel.contains('/') && !rel.ends_with(".tar");
        let limit = match document {
            true => ("document_size", self.bounds.document_size),
            false => ("image_size", self.bounds.image_size),
        };
        self.total = self.total.saturating_add(size);
        if size > limit.1 || self.total > self.bounds.image_size {
            return Err(bad_archive(format!(
                "{} ({size} bytes) is over the bound {} = {} (image_limits in kiln's config file)",
                shown(rel),
                limit.0,
                limit.1
            )));
        }
        Ok(())
    }

    /// A layout's blob goes to the store's blob staging (verified against its name), any
    /// other file to the staging dir; the import waiting for it is told.
    fn file(&mut self, rel: String, data: &mut impl Read) -> Result<(), Failure> {
        self.aliases.remove(&rel);
        match layout_blob_digest(&rel) {
            Some(digest) => {
                let blob = stage_blob(self.store, &digest, data)?;
                self.arrivals.update(|a| drop(a.blobs.insert(digest, blob)));
            }
            None => {
                stage_file(self.root, &rel, data)?;
                self.arrivals.update(|a| {
                    a.files.insert(rel);
                });
            }
        }
        Ok(())
    }
}

fn bad_archive(why: String) -> Failure {
    Failure::user(format!("not an image archive: {why}"))
}

/// An entry no image archive holds, and what it is.
fn refused_entry(name: &str, kind: TarKind) -> Failure {
    let what = match kind {
        _ if name.starts_with('/') => "an absolute path",
        _ if name.split('/').any(|part| part == "..") => "a path with ..",
        TarKind::HardLink => "a hard link",
        TarKind::Char | TarKind::Block => "a device node",
        TarKind::Fifo => "a fifo",
        TarKind::Symlink => "a symlink",
        TarKind::Dir => "a directory",
        TarKind::File => "a file",
    };
    bad_archive(format!(
        "unexpected entry {}, {what} (an OCI layout holds oci-layout, index.json and \
         blobs/ALG/HEX files; a Docker archive manifest.json, repositories, HEX.json and \
         HEX/layer.tar, and symlinks between them)",
        shown(name)
    ))
}

/// A name from the archive as a message shows it: escaped, and cut if it is long (a
/// hostile archive's may be as long as its extension headers allow).
fn shown(name: &str) -> String {
    const MAX: usize = 120;
    let escaped: String = name.escape_debug().collect();
    match escaped.char_indices().nth(MAX) {
        Some((cut, _)) => format!("\"{}…\" ({} bytes)", &escaped[..cut], name.len()),
        None => format!("\"{escaped}\""),
    }
}

/// The reader's refusal of the archive, in an archive's words; the first header's is that
/// the input is no tar at all.
fn archive_failure(e: kiln_layer::LayerError, first: bool) -> Failure {
    use kiln_layer::LayerError;
    match e {
        LayerError::BadArchive(why) if first => bad_archive(format!(
            "not a tar archive, nor a gzip or zstd compressed one ({why})"
        )),
        LayerError::BadArchive(why) => bad_archive(why),
        LayerError::BadEntry { path, why } => {
            bad_archive(format!("entry {} refused: {why}", shown(&path)))
        }
        LayerError::Limit { limit, .. } => bad_archive(format!(
            "it holds more than {limit} entries, more than any image archive needs"
        )),
        LayerError::ExtensionTooLarge { limit } => bad_archive(format!(
            "it has an extension header (a long name) of more than {limit} bytes"
        )),
        LayerError::Stream(e) => match e.get_ref().and_then(|i| i.downcast_ref::<ArchiveError>()) {
            Some(ArchiveError(why)) => bad_archive(why.clone()),
            None => bad_archive(format!("cannot read it: {e}")),
        },
        other => bad_archive(other.to_string()),
    }
}

/// Why the archive stream was cut off (a bound it exceeded), carried through `io::Error`.
#[derive(Debug)]
struct ArchiveError(String);

impl std::fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ArchiveError {}

/// The data of the reader's current entry, as a `Read`; the reader's errors carry their
/// archive message.
struct EntryData<'a, R>(&'a mut TarReader<R>);

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read_data(buf)
            .map_err(|e| io::Error::other(ArchiveError(archive_failure(e, false).message)))
    }
}

/// Counts the bytes of the archive as it came (compressed, or not).
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The decompressed archive, cut off once it is more than `compression_ratio` times what
/// came (after `ratio_after` bytes, as for a layer): a small archive of zeros must not
/// fill the store's disk.
struct RatioBound<'a, R> {
    inner: R,
    compressed: Rc<Cell<u64>>,
    total: u64,
    bounds: &'a Bounds,
}

impl<R: Read> Read for RatioBound<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        let ratio = self.bounds.compression_ratio;
        if ratio > 0
            && self.total > self.bounds.ratio_after
            && self.total / self.compressed.get().max(1) > ratio
        {
            return Err(io::Error::other(ArchiveError(format!(
                "it decompresses to more than {ratio} times its size, the bound \
                 compression_ratio (image_limits in kiln's config file)"
            ))));
        }
        Ok(n)
    }
}

/// Copies an entry's data to `out`: a failure of the archive is reported as the archive's,
/// any other as a failure to `what`.
fn copy_entry(data: &mut impl Read, out: &mut impl io::Write, what: &str) -> Result<(), Failure> {
    io::copy(data, out).map(drop).map_err(|e| {
        match e.get_ref().and_then(|i| i.downcast_ref::<ArchiveError>()) {
            Some(ArchiveError(why)) => Failure::user(why),
            None => Failure::user(format!("{what}: {e}")),
        }
    })
}

/// Writes the archive's file `rel` (not a layout blob) into the staging dir.
fn stage_file(root: &Path, rel: &str, content: &mut impl Read) -> Result<(), Failure> {
    let to = root.join(rel);
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(failed(format!("create {}", parent.display())))?;
    }
    let mut out = File::create(&to).map_err(failed(format!("write {}", to.display())))?;
    copy_entry(content, &mut out, &format!("write {}", to.display()))
}

/// Writes the archive's blob `digest` into the store's staging, refusing content that
/// does not hash to its name, and starts writing it to disk.
fn stage_blob(
    store: &Store,
    digest: &Digest,
    content: &mut impl Read,
) -> Result<BlobWriter, Failure> {
    let mut blob = store.new_blob()?;
    copy_entry(content, &mut blob, &format!("write blob {digest}"))?;
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

pub(super) enum Staged {
    Dir,
    File(String),
}

/// Where an archive entry may go in the staging dir: only the names of an OCI layout or a
/// Docker archive, so no entry can reach outside it (no `..`, no absolute path, no link).
pub(super) fn staged_path(name: &str) -> Option<Staged> {
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
