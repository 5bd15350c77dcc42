//! Layer dir → tar → layer dir gives the same tree, and the tar is reproducible.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::{chmod, chown, mknod, set_mtime, set_xattr, snapshot, tar_listing};
use crate::{apply_layer, write_tar, ApplyLimits, TarOptions, MEDIA_TYPE_TAR};

const EPOCH: u64 = 1_700_000_000;

/// A tree with every kind of node a layer can hold; `reverse` creates it in another order.
pub(crate) fn make_tree(root: &Path, reverse: bool) {
    let mut steps: Vec<fn(&Path)> = vec![
        |r| {
            fs::create_dir_all(r.join("etc")).unwrap();
            fs::write(r.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
            chmod(&r.join("etc/passwd"), 0o644);
            mknod(&r.join("etc/removed"), libc::S_IFCHR, 0, 0); // an overlay whiteout
            chmod(&r.join("etc/removed"), 0);
        },
        |r| {
            fs::create_dir_all(r.join("usr/bin")).unwrap();
            fs::write(r.join("usr/bin/su"), vec![0x7f; 3000]).unwrap();
            chmod(&r.join("usr/bin/su"), 0o4755);
            fs::write(r.join("usr/bin/a"), "shared").unwrap();
            fs::hard_link(r.join("usr/bin/a"), r.join("usr/bin/b")).unwrap();
            symlink("/usr/bin", r.join("bin")).unwrap();
        },
        |r| {
            fs::create_dir_all(r.join("tmp")).unwrap();
            chmod(&r.join("tmp"), 0o1777);
            fs::create_dir_all(r.join("dev")).unwrap();
            mknod(&r.join("dev/null"), libc::S_IFCHR, 1, 3);
            mknod(&r.join("dev/loop0"), libc::S_IFBLK, 7, 0);
            mknod(&r.join("dev/fifo"), libc::S_IFIFO, 0, 0);
        },
        |r| {
            let long = "a-very-long-directory-name-that-goes-on".repeat(3);
            fs::create_dir_all(r.join(&long)).unwrap();
            fs::write(
                r.join(&long).join("file-with-a-long-name-as-well.txt"),
                "deep",
            )
            .unwrap();
            symlink(
                format!("/{long}/file-with-a-long-name-as-well.txt"),
                r.join("longlink"),
            )
            .unwrap();
        },
        |r| {
            fs::create_dir_all(r.join("home/user")).unwrap();
            fs::write(r.join("home/user/notes"), "mine").unwrap();
            chown(&r.join("home/user/notes"), 1000, 1001);
            chown(&r.join("home/user"), 1000, 1000);
            chmod(&r.join("home/user"), 0o2750);
            set_xattr(&r.join("home/user/notes"), "user.comment", b"hello\0binary");
            set_xattr(&r.join("home/user"), "user.dir", b"d");
            fs::write(r.join("home/future"), "from the future").unwrap();
        },
        |r| {
            fs::create_dir_all(r.join("opt/opaque")).unwrap();
            fs::write(r.join("opt/opaque/kept"), "x").unwrap();
            set_xattr(&r.join("opt/opaque"), "trusted.overlay.opaque", b"y");
        },
    ];
    if reverse {
        steps.reverse();
    }
    for step in &steps {
        step(root);
    }
    set_mtime(&root.join("home/future"), 4_000_000_000);
    set_mtime(&root.join("etc/passwd"), 1_000_000_000);
    set_mtime(&root.join("bin"), 1_000_000_001);
}

fn tar_of(dir: &Path, epoch: u64) -> Vec<u8> {
    let mut out = Vec::new();
    write_tar(dir, &mut out, &TarOptions { epoch }).unwrap();
    out
}

#[test]
fn round_trip_reproduces_the_tree() {
    require_root!("chown, mknod");
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = (tmp.path().join("src"), tmp.path().join("dest"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dest).unwrap();
    make_tree(&src, false);
    let tar = tar_of(&src, EPOCH);
    let diff_id = apply_layer(
        &mut &tar[..],
        MEDIA_TYPE_TAR,
        &dest,
        &[],
        &ApplyLimits::default(),
    )
    .unwrap();
    assert_eq!(diff_id, kiln_store::Digest::of_bytes(&tar));

    let mut expected = snapshot(&src);
    for node in expected.values_mut() {
        node.mtime = node.mtime.min(EPOCH as i64);
    }
    assert_eq!(snapshot(&dest), expected);
    assert_eq!(expected["etc/passwd"].mtime, 1_000_000_000);
    assert_eq!(expected["home/future"].mtime, EPOCH as i64);
    assert_eq!(expected["usr/bin/b"].inode_group, "usr/bin/a");
    assert_eq!(expected["etc/removed"].rdev, 0);
    assert_eq!(
        expected["opt/opaque"].xattrs,
        vec![("trusted.overlay.opaque".to_string(), b"y".to_vec())]
    );
    // And the unpacked layer dir captures to the very same bytes.
    assert_eq!(tar_of(&dest, EPOCH), tar);
}

#[test]
fn tar_is_reproducible_whatever_the_creation_order() {
    require_root!("chown, mknod");
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    make_tree(&a, false);
    make_tree(&b, true);
    let first = tar_of(&a, EPOCH);
    assert_eq!(first, tar_of(&a, EPOCH), "two runs differ");
    assert_eq!(
        first,
        tar_of(&b, EPOCH),
        "creation order leaks into the tar"
    );
}

#[test]
fn whiteouts_and_opaque_dirs_become_oci_markers() {
    require_root!("chown, mknod");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    mknod(&src.join("gone"), libc::S_IFCHR, 0, 0);
    fs::create_dir(src.join("d")).unwrap();
    fs::write(src.join("d/!first"), "").unwrap();
    set_xattr(&src.join("d"), "trusted.overlay.opaque", b"y");
    fs::write(src.join("d-file"), "").unwrap();
    let tar = tar_of(src, 0);
    let listing = tar_listing(&tar);
    let expected = [
        (".wh.gone", b'0'),
        ("d-file", b'0'),
        ("d/", b'5'),
        ("d/.wh..wh..opq", b'0'),
        ("d/!first", b'0'),
    ];
    let expected: Vec<(String, u8)> = expected.iter().map(|(p, t)| (p.to_string(), *t)).collect();
    assert_eq!(listing, expected);
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        // overlay's own xattrs never leave the machine
        let pax: Vec<String> = entry
            .pax_extensions()
            .unwrap()
            .into_iter()
            .flatten()
            .map(|p| p.unwrap().key().unwrap().to_owned())
            .collect();
        assert!(pax.iter().all(|k| !k.contains("overlay")), "{pax:?}");
        let h = entry.header();
        assert!(h.username_bytes().unwrap_or_default().is_empty());
        if entry.path_bytes().starts_with(b".wh.") || entry.path_bytes().ends_with(b".wh..wh..opq")
        {
            assert_eq!(
                (
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.size().unwrap()
                ),
                (0, 0, 0, 0)
            );
        }
    }
}

#[test]
fn mtimes_are_clamped_to_the_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("old"), "").unwrap();
    fs::write(tmp.path().join("new"), "").unwrap();
    set_mtime(&tmp.path().join("old"), 500);
    set_mtime(&tmp.path().join("new"), 2_000_000_000);
    let tar = tar_of(tmp.path(), 1000);
    let mut archive = tar::Archive::new(&tar[..]);
    let times: Vec<(String, u64)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                e.header().mtime().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        times,
        vec![("new".to_string(), 1000), ("old".to_string(), 500)]
    );
    // The default epoch is 0: reproducible unless told otherwise.
    let mut out = Vec::new();
    write_tar(tmp.path(), &mut out, &TarOptions::default()).unwrap();
    assert!(tar::Archive::new(&out[..]).entries().unwrap().all(|e| e
        .unwrap()
        .header()
        .mtime()
        .unwrap()
        == 0));
}

#[test]
fn a_real_file_named_like_a_whiteout_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join(".wh.sneaky"), "").unwrap();
    let err = write_tar(tmp.path(), &mut Vec::new(), &TarOptions::default()).unwrap_err();
    assert!(err.to_string().contains(".wh."), "{err}");
}

#[test]
fn sockets_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(tmp.path().join("sock")).unwrap();
    fs::write(tmp.path().join("file"), "").unwrap();
    let listing = tar_listing(&tar_of(tmp.path(), 0));
    assert_eq!(listing, vec![("file".to_string(), b'0')]);
}
