//! Hostile layers (SECURITY.md G1): each is refused or applied strictly inside `dest`,
//! checked the way moby does, with a victim directory beside `dest`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::{snapshot, Node};
use crate::write::pax_record;
use crate::{apply_layer, ApplyLimits, LayerError, MEDIA_TYPE_TAR};
use kiln_store::Digest;

/// A tar stream written header by header, lies included.
#[derive(Default)]
pub(crate) struct TarBuilder {
    buf: Vec<u8>,
}

impl TarBuilder {
    /// An entry whose header says `size` whatever `data` holds.
    pub fn raw(
        &mut self,
        path: &[u8],
        kind: EntryType,
        size: u64,
        link: &[u8],
        data: &[u8],
    ) -> &mut Self {
        let mut h = Header::new_ustar();
        let n = path.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&path[..n]);
        let n = link.len().min(100);
        h.as_old_mut().linkname[..n].copy_from_slice(&link[..n]);
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h.set_size(size);
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().next_multiple_of(512), 0);
        self
    }
    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.raw(
            path.as_bytes(),
            EntryType::Regular,
            data.len() as u64,
            b"",
            data,
        )
    }
    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.raw(path.as_bytes(), EntryType::Directory, 0, b"", b"")
    }
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            path.as_bytes(),
            EntryType::Symlink,
            0,
            target.as_bytes(),
            b"",
        )
    }
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(path.as_bytes(), EntryType::Link, 0, target.as_bytes(), b"")
    }
    pub fn pax(&mut self, kind: EntryType, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            pax_record(&mut data, k.as_bytes(), v);
        }
        self.raw(
            b"././@PaxHeader",
            kind,
            data.len() as u64,
            b"",
            &data.clone(),
        )
    }
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        out.extend_from_slice(&[0; 1024]);
        out
    }
}

/// `dest` (empty) and `victim` (with content) side by side in a temp dir.
struct Arena {
    tmp: tempfile::TempDir,
    dest: PathBuf,
    before: BTreeMap<String, Node>,
    passwd: (u64, i64, u64),
}

fn passwd_state() -> (u64, i64, u64) {
    let m = fs::metadata("/etc/passwd").unwrap();
    (m.nlink(), m.mtime(), m.mode().into())
}

impl Arena {
    fn new() -> Arena {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let victim = tmp.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("f"), "precious").unwrap();
        fs::create_dir(victim.join("sub")).unwrap();
        let before = snapshot(tmp.path().join("victim").parent().unwrap());
        Arena {
            before,
            dest,
            tmp,
            passwd: passwd_state(),
        }
    }

    fn apply(&self, tar: &[u8]) -> Result<Digest, LayerError> {
        apply_layer(
            &mut &tar[..],
            MEDIA_TYPE_TAR,
            &self.dest,
            &[],
            &ApplyLimits::default(),
        )
    }

    /// Nothing outside `dest` changed: the victim, its siblings, /etc/passwd.
    fn check_contained(&self) {
        let mut after = snapshot(self.tmp.path());
        after.retain(|k, _| !k.starts_with("dest/"));
        let mut before = self.before.clone();
        before.retain(|k, _| !k.starts_with("dest/"));
        // the dest dir's own mtime moves, everything else must not
        after.remove("dest");
        before.remove("dest");
        assert_eq!(after, before, "something outside dest changed");
        assert_eq!(passwd_state(), self.passwd);
    }

    fn refused(&self, tar: &[u8], why: &str) -> String {
        let err = self
            .apply(tar)
            .expect_err("hostile layer accepted")
            .to_string();
        self.check_contained();
        assert!(err.contains(why), "{err:?} does not mention {why:?}");
        err
    }

    fn accepted(&self, tar: &[u8]) {
        self.apply(tar).unwrap();
        self.check_contained();
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }
}

#[test]
fn parent_traversal_is_refused() {
    let a = Arena::new();
    a.refused(
        &TarBuilder::default().file("../victim/x", b"evil").finish(),
        "'..'",
    );
    let a = Arena::new();
    a.refused(
        &TarBuilder::default()
            .file("a/../../victim/f", b"evil")
            .finish(),
        "'..'",
    );
}

#[test]
fn absolute_paths_stay_inside() {
    require_root!("chown, mknod");
    let a = Arena::new();
    a.accepted(&TarBuilder::default().file("/victim/f", b"inside").finish());
    assert_eq!(fs::read(a.path("victim/f")).unwrap(), b"inside");
}

#[test]
fn writing_through_an_escaping_symlink_is_refused() {
    require_root!("chown, mknod");
    let a = Arena::new();
    let tar = TarBuilder::default()
        .symlink("a", "../../victim")
        .file("a/x", b"evil")
        .finish();
    a.refused(&tar, "not a directory");
    let a = Arena::new();
    let tar = TarBuilder::default()
        .symlink("a", "/")
        .file("a/victim/f", b"inside")
        .finish();
    a.accepted(&tar);
    assert_eq!(
        fs::read(a.path("victim/f")).unwrap(),
        b"inside",
        "a -> / must mean dest"
    );
}

#[test]
fn a_directory_over_a_symlink_replaces_it() {
    require_root!("chown, mknod");
    let a = Arena::new();
    let victim = a.tmp.path().join("victim");
    let tar = TarBuilder::default()
        .symlink("d", "../victim")
        .raw(b"d", EntryType::Directory, 0, b"", b"")
        .finish();
    // The same path twice is refused anyway, so use a symlink made by an earlier layer.
    a.refused(&tar, "twice");
    let a = Arena::new();
    std::os::unix::fs::symlink(&victim, a.path("d")).unwrap();
    let mut h = TarBuilder::default();
    h.raw(b"d/", EntryType::Directory, 0, b"", b"");
    a.accepted(&h.finish());
    let m = fs::symlink_metadata(a.path("d")).unwrap();
    assert!(m.is_dir(), "the symlink was not replaced");
    assert_eq!(m.mode() & 0o7777, 0o755);
}

#[test]
fn hardlinks_out_of_the_layer_are_refused() {
    require_root!("chown, mknod");
    let a = Arena::new();
    a.refused(
        &TarBuilder::default().hardlink("l", "../victim/f").finish(),
        "invalid hard link target",
    );
    let a = Arena::new();
    a.refused(
        &TarBuilder::default().hardlink("l", "/etc/passwd").finish(),
        "does not exist",
    );
    let a = Arena::new();
    let tar = TarBuilder::default()
        .symlink("s", "/")
        .hardlink("l", "s/etc/passwd")
        .finish();
    a.refused(&tar, "does not exist");
}

#[test]
fn whiteout_tricks_are_refused() {
    require_root!("chown, mknod");
    for name in [".wh..", ".wh...", ".wh.", "sub/.wh..", ".wh..wh.foo"] {
        let a = Arena::new();
        a.refused(
            &TarBuilder::default().dir("sub/").file(name, b"").finish(),
            "whiteout",
        );
    }
    let a = Arena::new();
    a.refused(
        &TarBuilder::default().file(".wh..wh..opq", b"data").finish(),
        "empty regular file",
    );
}

#[test]
fn a_symlink_cannot_replace_the_root() {
    for name in [".", "./", "/"] {
        let a = Arena::new();
        a.refused(
            &TarBuilder::default()
                .symlink(name, "../victim")
                .file("x", b"evil")
                .finish(),
            "root",
        );
    }
}

#[test]
fn duplicate_entries_are_refused() {
    require_root!("chown, mknod");
    let a = Arena::new();
    a.refused(
        &TarBuilder::default()
            .file("x", b"one")
            .file("./x", b"two")
            .finish(),
        "twice",
    );
}

#[test]
fn pax_and_ustar_sizes_must_agree() {
    // TARmageddon: a PAX size that hides a second entry inside the first one's "data".
    let inner = TarBuilder::default().file("smuggled", b"evil").finish();
    let a = Arena::new();
    let tar = TarBuilder::default()
        .pax(
            EntryType::XHeader,
            &[("size", inner.len().to_string().as_bytes())],
        )
        .raw(b"cover", EntryType::Regular, 0, b"", &inner)
        .finish();
    a.refused(&tar, "PAX size");
    assert!(!a.path("smuggled").exists());
    let a = Arena::new();
    let tar = TarBuilder::default()
        .pax(EntryType::XHeader, &[("size", b"0")])
        .raw(b"cover", EntryType::Regular, 512, b"", &[b'x'; 512])
        .finish();
    a.refused(&tar, "PAX size");
}

#[test]
fn data_on_entries_without_data_is_refused() {
    let a = Arena::new();
    let inner = TarBuilder::default().file("smuggled", b"evil").finish();
    let tar = TarBuilder::default()
        .raw(b"d/", EntryType::Directory, inner.len() as u64, b"", &inner)
        .finish();
    a.refused(&tar, "carries");
}

#[test]
fn global_headers_cannot_rename_entries() {
    let a = Arena::new();
    let tar = TarBuilder::default()
        .pax(EntryType::XGlobalHeader, &[("path", b"../victim/f")])
        .file("x", b"")
        .finish();
    a.refused(&tar, "global");
}

#[test]
fn pax_path_wins_over_the_ustar_name() {
    require_root!("chown, mknod");
    let a = Arena::new();
    let tar = TarBuilder::default()
        .pax(EntryType::XHeader, &[("path", b"real")])
        .file("decoy", b"data")
        .finish();
    a.accepted(&tar);
    assert_eq!(fs::read(a.path("real")).unwrap(), b"data");
    assert!(!a.path("decoy").exists());
    let a = Arena::new();
    let tar = TarBuilder::default()
        .pax(EntryType::XHeader, &[("path", b"../victim/f")])
        .file("decoy", b"x")
        .finish();
    a.refused(&tar, "'..'");
}

#[test]
fn device_zero_zero_is_refused_other_devices_applied() {
    require_root!("chown, mknod");
    let a = Arena::new();
    a.refused(
        &TarBuilder::default()
            .raw(b"dev0", EntryType::Char, 0, b"", b"")
            .finish(),
        "whiteout",
    );
    let a = Arena::new();
    let mut h = Header::new_ustar();
    h.as_old_mut().name[..4].copy_from_slice(b"null");
    h.set_entry_type(EntryType::Char);
    h.set_mode(0o4666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_size(0);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[0; 1024]);
    a.accepted(&tar);
    let m = fs::symlink_metadata(a.path("null")).unwrap();
    assert_eq!(
        (m.rdev(), m.mode() & 0o7777),
        (nix::sys::stat::makedev(1, 3), 0o4666)
    );
}

#[test]
fn an_entry_size_near_u64_max_is_an_error_not_an_overflow() {
    require_root!("mknod");
    // Found by the fuzz target layer_apply: a whiteout, whose data is never read, with a
    // base-256 size of 2^64-1 made the skip to the next header (`size + padding`)
    // overflow: a panic with debug assertions, a wrap to 0 without them.
    let tar = TarBuilder::default()
        .raw(b".wh.x", EntryType::Regular, u64::MAX, b"", b"")
        .finish();
    Arena::new().refused(&tar, "more data than any archive can hold");
}

#[test]
fn truncated_and_corrupt_archives_are_errors() {
    let good = TarBuilder::default().file("x", &[7; 2000]).finish();
    for cut in [100, 700, 1500] {
        let a = Arena::new();
        a.refused(&good[..cut], "ends in the middle");
    }
    let mut bad = good.clone();
    bad[10] ^= 1;
    let a = Arena::new();
    a.refused(&bad, "checksum");
}

#[test]
fn limits_are_enforced() {
    require_root!("chown, mknod");
    let a = Arena::new();
    let mut b = TarBuilder::default();
    for i in 0..20 {
        b.file(&format!("f{i}"), b"");
    }
    let tar = b.finish();
    let limits = ApplyLimits {
        max_entries: 10,
        ..ApplyLimits::default()
    };
    let err = apply_layer(&mut &tar[..], MEDIA_TYPE_TAR, &a.dest, &[], &limits).unwrap_err();
    assert!(
        matches!(
            err,
            LayerError::Limit {
                bound: kiln_store::Bound::LayerEntries,
                ..
            }
        ),
        "{err}"
    );

    let a = Arena::new();
    let tar = TarBuilder::default()
        .file("big", &vec![1; 100_000])
        .finish();
    let limits = ApplyLimits {
        max_bytes: 50_000,
        ..ApplyLimits::default()
    };
    let err = apply_layer(&mut &tar[..], MEDIA_TYPE_TAR, &a.dest, &[], &limits).unwrap_err();
    assert!(matches!(err, LayerError::Limit { .. }), "{err}");

    let a = Arena::new();
    let tar = TarBuilder::default()
        .pax(EntryType::XHeader, &[("comment", &vec![b'x'; 2 << 20])])
        .file("x", b"")
        .finish();
    a.refused(&tar, "extension header");

    let a = Arena::new();
    let long = "d/".repeat(3000) + "f";
    a.refused(
        &TarBuilder::default()
            .pax(EntryType::XHeader, &[("path", long.as_bytes())])
            .file("x", b"")
            .finish(),
        "more than kiln's limit of 4096",
    );
}

#[test]
fn a_decompression_bomb_stops_early() {
    let a = Arena::new();
    let tar = TarBuilder::default()
        .file("zeros", &vec![0; 32 << 20])
        .finish();
    let blob = zstd::encode_all(&tar[..], 3).unwrap();
    let limits = ApplyLimits {
        ratio_grace: 1 << 20,
        max_ratio: 100,
        ..ApplyLimits::default()
    };
    let err = apply_layer(
        &mut &blob[..],
        crate::MEDIA_TYPE_TAR_ZSTD,
        &a.dest,
        &[],
        &limits,
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::Limit { .. }), "{err}");
    a.check_contained();
}

#[test]
fn hardlinks_to_lower_layers_are_copied_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (lower, dest) = (tmp.path().join("lower"), tmp.path().join("dest"));
    fs::create_dir_all(lower.join("usr/bin")).unwrap();
    fs::write(lower.join("usr/bin/a"), "from below").unwrap();
    super::chmod(&lower.join("usr/bin"), 0o711);
    fs::create_dir(&dest).unwrap();
    let tar = TarBuilder::default()
        .hardlink("usr/bin/b", "usr/bin/a")
        .finish();
    apply_layer(
        &mut &tar[..],
        MEDIA_TYPE_TAR,
        &dest,
        std::slice::from_ref(&lower),
        &ApplyLimits::default(),
    )
    .unwrap();
    let (a, b) = (
        fs::metadata(dest.join("usr/bin/a")).unwrap(),
        fs::metadata(dest.join("usr/bin/b")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(fs::read(dest.join("usr/bin/b")).unwrap(), b"from below");
    assert_eq!(
        fs::metadata(dest.join("usr/bin")).unwrap().mode() & 0o7777,
        0o711,
        "parent not copied up"
    );
    assert_eq!(
        fs::metadata(lower.join("usr/bin/a")).unwrap().nlink(),
        1,
        "the lower layer changed"
    );

    // A whiteout in a layer in between hides the lower file.
    let (mid, dest2) = (tmp.path().join("mid"), tmp.path().join("dest2"));
    fs::create_dir_all(mid.join("usr/bin")).unwrap();
    super::mknod(&mid.join("usr/bin/a"), libc::S_IFCHR, 0, 0);
    fs::create_dir(&dest2).unwrap();
    let err = apply_layer(
        &mut &tar[..],
        MEDIA_TYPE_TAR,
        &dest2,
        &[mid, lower],
        &ApplyLimits::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

/// The unpacked layer really works as an overlay lowerdir: whiteouts hide, opaque dirs hide.
#[test]
fn applied_whiteouts_work_in_a_real_overlay() {
    require_root!("chown, mknod");
    use nix::mount::{mount, umount, MsFlags};
    let tmp = tempfile::tempdir().unwrap();
    let (lower, dest, mnt) = (
        tmp.path().join("lower"),
        tmp.path().join("dest"),
        tmp.path().join("mnt"),
    );
    fs::create_dir_all(lower.join("d")).unwrap();
    fs::write(lower.join("gone"), "").unwrap();
    fs::write(lower.join("kept"), "").unwrap();
    fs::write(lower.join("d/old"), "").unwrap();
    fs::create_dir_all(lower.join("e")).unwrap();
    fs::write(lower.join("e/old"), "").unwrap();
    fs::create_dir(&dest).unwrap();
    fs::create_dir(&mnt).unwrap();
    let tar = TarBuilder::default()
        .file(".wh.gone", b"")
        .dir("d/")
        .file("d/.wh..wh..opq", b"")
        .file("d/new", b"")
        .file(".wh.e", b"")
        .dir("e/")
        .file("e/new", b"")
        .finish();
    apply_layer(
        &mut &tar[..],
        MEDIA_TYPE_TAR,
        &dest,
        std::slice::from_ref(&lower),
        &ApplyLimits::default(),
    )
    .unwrap();
    let opts = format!("lowerdir={}:{}", dest.display(), lower.display());
    mount(
        Some("overlay"),
        &mnt,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .unwrap();
    let names = |p: &Path| {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let (top, d, e) = (names(&mnt), names(&mnt.join("d")), names(&mnt.join("e")));
    umount(&mnt).unwrap();
    assert_eq!(top, ["d", "e", "kept"]);
    assert_eq!(d, ["new"]);
    assert_eq!(
        e,
        ["new"],
        "a directory replacing a whiteout must be opaque"
    );
}

#[test]
fn symlinks_of_lower_layers_are_never_written_through() {
    require_root!("chown, mknod");
    let a = Arena::new();
    let lower = a.tmp.path().join("lower");
    fs::create_dir(&lower).unwrap();
    std::os::unix::fs::symlink("../victim", lower.join("d")).unwrap();
    let before = snapshot(a.tmp.path());
    let apply = |tar: &[u8], dest: &Path| {
        apply_layer(
            &mut &tar[..],
            MEDIA_TYPE_TAR,
            dest,
            std::slice::from_ref(&lower),
            &ApplyLimits::default(),
        )
    };
    let err = apply(
        &TarBuilder::default().file("d/x", b"evil").finish(),
        &a.dest,
    )
    .unwrap_err();
    assert!(err.to_string().contains("lower layer"), "{err}");
    let mut after = snapshot(a.tmp.path());
    after.remove("dest");
    let mut before = before;
    before.remove("dest");
    assert_eq!(after, before);
    // A directory entry of the same name shadows the lower symlink instead.
    let dest2 = a.tmp.path().join("dest2");
    fs::create_dir(&dest2).unwrap();
    apply(
        &TarBuilder::default()
            .dir("d/")
            .file("d/x", b"fine")
            .finish(),
        &dest2,
    )
    .unwrap();
    assert_eq!(fs::read(dest2.join("d/x")).unwrap(), b"fine");
    let victim = |m: &BTreeMap<String, Node>| {
        m.clone()
            .into_iter()
            .filter(|(k, _)| k.starts_with("victim"))
            .collect::<Vec<_>>()
    };
    assert_eq!(victim(&snapshot(a.tmp.path())), victim(&a.before));
}

#[test]
fn old_style_directories_and_gnu_headers_are_read() {
    require_root!("chown, mknod");
    let a = Arena::new();
    let mut b = TarBuilder::default();
    b.raw(b"olddir/", EntryType::Regular, 0, b"", b"");
    let mut gnu = Header::new_gnu();
    gnu.as_old_mut().name[..9].copy_from_slice(b"olddir/gn");
    gnu.set_entry_type(EntryType::Regular);
    gnu.set_mode(0o600);
    gnu.set_size(3);
    gnu.set_cksum();
    let mut tar = b.finish();
    tar.truncate(tar.len() - 1024);
    // type '\0' ("regular" in old tars) with a trailing slash: a directory
    let mut h = Header::new_old();
    h.as_mut_bytes().copy_from_slice(&tar[..512]);
    h.as_old_mut().linkflag = [0];
    h.set_cksum();
    tar[..512].copy_from_slice(h.as_bytes());
    tar.extend_from_slice(gnu.as_bytes());
    tar.extend_from_slice(b"gnu");
    tar.resize(tar.len().next_multiple_of(512) + 1024, 0);
    a.accepted(&tar);
    assert!(a.path("olddir").is_dir());
    assert_eq!(fs::read(a.path("olddir/gn")).unwrap(), b"gnu");
}

/// An entry of `kind` owned by `uid`/`gid` (PAX records, which can carry any number).
fn owned_entry(kind: EntryType, uid: &str, gid: &str) -> Vec<u8> {
    let mut tar = TarBuilder::default();
    tar.file("target", b"x");
    tar.pax(
        EntryType::XHeader,
        &[("uid", uid.as_bytes()), ("gid", gid.as_bytes())],
    );
    let mut h = Header::new_ustar();
    h.as_old_mut().name[..5].copy_from_slice(b"entry");
    h.set_entry_type(kind);
    h.set_mode(0o4755);
    if kind == EntryType::Symlink || kind == EntryType::Link {
        h.as_old_mut().linkname[..6].copy_from_slice(b"target");
    }
    if kind == EntryType::Char || kind == EntryType::Block {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    h.set_size(0);
    h.set_cksum();
    let mut out = tar.finish();
    out.truncate(out.len() - 1024);
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&[0; 1024]);
    out
}

/// `chown(path, -1, -1)` leaves the owner unchanged, so an id of 4294967295 would have made
/// a setuid file owned by the applier (root): refused for every kind of entry, as are ids a
/// `uid_t` cannot hold; the largest real id still works.
#[test]
fn owner_ids_that_are_not_ids_are_refused_for_every_entry_kind() {
    require_root!("chown, mknod");
    let kinds = [
        EntryType::Regular,
        EntryType::Directory,
        EntryType::Symlink,
        EntryType::Link,
        EntryType::Fifo,
        EntryType::Char,
        EntryType::Block,
    ];
    for kind in kinds {
        for (uid, gid) in [
            ("4294967295", "0"),
            ("0", "4294967295"),
            ("4294967296", "0"),
            ("0", "18446744073709551615"),
        ] {
            let a = Arena::new();
            let err = a.refused(&owned_entry(kind, uid, gid), "is not a valid id");
            assert!(err.contains("entry"), "{kind:?}: {err}");
            assert!(
                fs::symlink_metadata(a.path("entry")).is_err(),
                "{kind:?} {uid}:{gid} was created"
            );
        }
        let a = Arena::new();
        a.accepted(&owned_entry(kind, "4294967294", "4294967294"));
        let m = fs::symlink_metadata(a.path("entry")).unwrap();
        if kind != EntryType::Link {
            assert_eq!((m.uid(), m.gid()), (4294967294, 4294967294), "{kind:?}");
        }
    }
}

#[test]
fn a_name_longer_than_the_filesystem_allows_names_its_entry() {
    require_root!("chown, mknod");
    for (path, kind) in [
        ("d/".to_string() + &"n".repeat(300), EntryType::Regular),
        (
            "d/".to_string() + &"n".repeat(300) + "/f",
            EntryType::Regular,
        ),
        ("d/".to_string() + &"n".repeat(300), EntryType::Directory),
        ("d/".to_string() + &"n".repeat(300), EntryType::Symlink),
    ] {
        let a = Arena::new();
        let tar = TarBuilder::default()
            .dir("d")
            .pax(EntryType::XHeader, &[("path", path.as_bytes())])
            .raw(b"x", kind, 0, b"target", b"")
            .finish();
        let err = a.apply(&tar).unwrap_err();
        let LayerError::BadEntry { path: named, why } = &err else {
            panic!("{kind:?}: not a refused entry: {err}");
        };
        assert_eq!(named, &path, "{kind:?}");
        assert_eq!(
            why, "a name in the path is 300 bytes long; Linux filesystems allow at most 255",
            "{kind:?}"
        );
        a.check_contained();
    }
    // A name of exactly 255 bytes is the limit, and applies.
    let a = Arena::new();
    let name = "n".repeat(255);
    let tar = TarBuilder::default()
        .pax(EntryType::XHeader, &[("path", name.as_bytes())])
        .raw(b"x", EntryType::Regular, 0, b"", b"")
        .finish();
    a.apply(&tar).unwrap();
    assert!(a.dest.join(&name).is_file());
}
