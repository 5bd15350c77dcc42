//! `copy:` steps: Docker COPY semantics, and nothing leaves the context or the root.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::layer::{copy_in, CopyOptions, LayerError};

struct Setup {
    _tmp: tempfile::TempDir,
    ctx: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let (ctx, root, outside) = (
        tmp.path().join("ctx"),
        tmp.path().join("root"),
        tmp.path().join("outside"),
    );
    for d in [&ctx, &root, &outside] {
        fs::create_dir(d).unwrap();
    }
    fs::write(outside.join("secret"), "host secret").unwrap();
    fs::write(ctx.join("app.conf"), "conf").unwrap();
    fs::set_permissions(ctx.join("app.conf"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::create_dir_all(ctx.join("site/css")).unwrap();
    fs::write(ctx.join("site/index.html"), "<h1>hi</h1>").unwrap();
    fs::write(ctx.join("site/css/a.css"), "body{}").unwrap();
    symlink("index.html", ctx.join("site/home.html")).unwrap();
    Setup {
        _tmp: tmp,
        ctx,
        root,
        outside,
    }
}

fn copy(
    s: &Setup,
    sources: &[&str],
    dest: &str,
    opts: &CopyOptions,
) -> Result<crate::layer::CopyStats, LayerError> {
    let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    copy_in(&s.ctx, &sources, &s.root, dest, "/work", opts)
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn a_file_goes_into_a_directory_or_becomes_the_destination() {
    let s = setup();
    copy(&s, &["app.conf"], "/etc/app/", &CopyOptions::default()).unwrap();
    assert_eq!(fs::read(s.root.join("etc/app/app.conf")).unwrap(), b"conf");
    assert_eq!(mode(&s.root.join("etc/app/app.conf")), 0o640);
    assert_eq!(mode(&s.root.join("etc/app")), 0o755);
    // an existing directory without a trailing slash also receives the file
    copy(&s, &["app.conf"], "/etc/app", &CopyOptions::default()).unwrap();
    copy(&s, &["app.conf"], "renamed.conf", &CopyOptions::default()).unwrap();
    assert_eq!(fs::read(s.root.join("work/renamed.conf")).unwrap(), b"conf");
    let err = copy(&s, &["app.conf", "site"], "/x", &CopyOptions::default()).unwrap_err();
    assert!(matches!(err, LayerError::CopyDest { .. }), "{err}");
}

#[test]
fn a_directory_has_its_content_copied() {
    let s = setup();
    let stats = copy(&s, &["site"], "/srv/www", &CopyOptions::default()).unwrap();
    assert_eq!(
        fs::read(s.root.join("srv/www/index.html")).unwrap(),
        b"<h1>hi</h1>"
    );
    assert_eq!(
        fs::read(s.root.join("srv/www/css/a.css")).unwrap(),
        b"body{}"
    );
    assert_eq!(
        fs::read_link(s.root.join("srv/www/home.html")).unwrap(),
        Path::new("index.html")
    );
    assert!(!s.root.join("srv/www/site").exists());
    assert_eq!(
        (stats.files, stats.dirs, stats.symlinks, stats.bytes),
        (2, 1, 1, 17)
    );
}

#[test]
fn mode_and_owner_are_applied_to_everything() {
    let s = setup();
    let opts = CopyOptions {
        mode: Some(0o700),
        uid: 1000,
        gid: 1001,
    };
    copy(&s, &["site"], "/srv/", &opts).unwrap();
    for p in ["srv/index.html", "srv/css", "srv/css/a.css"] {
        let m = fs::symlink_metadata(s.root.join(p)).unwrap();
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (0o700, 1000, 1001),
            "{p}"
        );
    }
    let link = fs::symlink_metadata(s.root.join("srv/home.html")).unwrap();
    assert_eq!((link.uid(), link.gid()), (1000, 1001));
    let srv = fs::metadata(s.root.join("srv")).unwrap();
    assert_eq!(
        (srv.mode() & 0o7777, srv.uid()),
        (0o755, 0),
        "new parents are 0755 root:root"
    );
}

#[test]
fn sources_outside_the_context_are_refused() {
    let s = setup();
    symlink(s.outside.join("secret"), s.ctx.join("abs-link")).unwrap();
    symlink("../outside/secret", s.ctx.join("rel-link")).unwrap();
    for source in [
        "../outside/secret",
        "abs-link",
        "rel-link",
        "site/../../outside",
    ] {
        let err = copy(&s, &[source], "/x", &CopyOptions::default()).unwrap_err();
        assert!(
            matches!(err, LayerError::CopyOutsideContext(_)),
            "{source}: {err}"
        );
        assert_eq!(
            err.to_string(),
            format!("copy source {source} is outside the build context")
        );
    }
    assert!(
        fs::read_dir(&s.root).unwrap().next().is_none(),
        "something was copied"
    );
    let err = copy(&s, &["missing"], "/x", &CopyOptions::default()).unwrap_err();
    assert!(matches!(err, LayerError::CopySourceMissing(_)), "{err}");
}

#[test]
fn destinations_through_image_symlinks_stay_in_the_root() {
    let s = setup();
    fs::create_dir_all(s.root.join("usr/bin")).unwrap();
    symlink("/usr/bin", s.root.join("bin")).unwrap();
    copy(&s, &["app.conf"], "/bin/tool", &CopyOptions::default()).unwrap();
    assert_eq!(fs::read(s.root.join("usr/bin/tool")).unwrap(), b"conf");
    // An absolute symlink to a host directory means that path inside the root.
    symlink(&s.outside, s.root.join("etc")).unwrap();
    let err = copy(&s, &["app.conf"], "/etc/", &CopyOptions::default());
    assert!(err.is_err(), "wrote through a dangling image symlink");
    symlink("../../..", s.root.join("up")).unwrap();
    copy(&s, &["app.conf"], "/up/up/landed", &CopyOptions::default()).unwrap();
    assert!(s.root.join("landed").exists());
    let host: Vec<_> = fs::read_dir(&s.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(host, ["secret"], "the host directory changed");
}
