//! `copy:` steps: Docker COPY semantics, and nothing leaves the context or the root.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{copy_in, ContextDir, CopyOptions, LayerError};

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

impl Setup {
    /// The context, opened as a build opens it.
    fn context(&self) -> ContextDir {
        ContextDir::open(&self.ctx).unwrap()
    }
}

fn copy(
    s: &Setup,
    sources: &[&str],
    dest: &str,
    opts: &CopyOptions,
) -> Result<crate::CopyStats, LayerError> {
    let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    copy_in(&s.context(), &sources, &s.root, dest, "/work", opts)
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn a_file_goes_into_a_directory_or_becomes_the_destination() {
    require_root!("chown, mknod");
    let s = setup();
    copy(&s, &["app.conf"], "/etc/app/", &CopyOptions::default()).unwrap();
    assert_eq!(fs::read(s.root.join("etc/app/app.conf")).unwrap(), b"conf");
    // 0640 on the host: no execute bit, so 0644 in the image
    assert_eq!(mode(&s.root.join("etc/app/app.conf")), 0o644);
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
    require_root!("chown, mknod");
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
    require_root!("chown, mknod");
    let s = setup();
    let opts = CopyOptions {
        mode: Some(0o700),
        uid: 1000,
        gid: 1001,
        mtime: 1_000_000,
    };
    copy(&s, &["site"], "/srv/", &opts).unwrap();
    for p in ["srv/index.html", "srv/css", "srv/css/a.css"] {
        let m = fs::symlink_metadata(s.root.join(p)).unwrap();
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
            (0o700, 1000, 1001, 1_000_000),
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
    require_root!("chown, mknod");
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

#[test]
fn modes_follow_the_exec_bit_unless_declared() {
    require_root!("chown, mknod");
    let s = setup();
    let site = s.ctx.join("site");
    fs::set_permissions(&site, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(site.join("css"), fs::Permissions::from_mode(0o700)).unwrap();
    let files = [
        ("plain", 0o666, 0o644),
        ("private", 0o600, 0o644),
        ("tool", 0o4751, 0o755), // setuid and group write never come from the host
        ("owner-x", 0o744, 0o755), // any execute bit means 0755
        ("sticky", 0o1777, 0o755),
    ];
    for (name, host, _) in files {
        fs::write(site.join(name), name).unwrap();
        fs::set_permissions(site.join(name), fs::Permissions::from_mode(host)).unwrap();
    }
    nix::unistd::mkfifo(
        &site.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o666),
    )
    .unwrap();
    copy(&s, &["site"], "/srv/", &CopyOptions::default()).unwrap();
    for (name, _, want) in files {
        assert_eq!(mode(&s.root.join("srv").join(name)), want, "{name}");
    }
    for (path, want) in [
        ("srv/fifo", 0o644),
        ("srv/css", 0o755),
        ("srv/css/a.css", 0o644),
        ("srv", 0o755),
    ] {
        assert_eq!(mode(&s.root.join(path)), want, "{path}");
    }
    // A declared mode wins over everything.
    let opts = CopyOptions {
        mode: Some(0o640),
        ..CopyOptions::default()
    };
    copy(&s, &["site/tool"], "/declared", &opts).unwrap();
    assert_eq!(mode(&s.root.join("declared")), 0o640);
}

#[test]
fn a_context_opened_by_a_relative_path_is_still_that_directory_after_chdir() {
    require_root!("chown, mknod");
    // What `kiln build` with a relative CONTEXT met: the copy thread chdirs to `/` (as
    // `runtime::with_overlay` does), where `etc/` names the host's /etc.
    let s = setup();
    fs::create_dir(s.ctx.join("etc")).unwrap();
    fs::write(s.ctx.join("etc/marker"), "the context's etc").unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // A private working directory for this thread only (the test runner's is shared).
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).unwrap();
            nix::unistd::chdir(s._tmp.path()).unwrap();
            let context = ContextDir::open(Path::new("ctx")).unwrap();
            nix::unistd::chdir("/").unwrap();
            let sources = ["etc/".to_string()];
            copy_in(
                &context,
                &sources,
                &s.root,
                "/copied/",
                "/",
                &CopyOptions::default(),
            )
            .unwrap();
        });
    });
    let copied: Vec<_> = fs::read_dir(s.root.join("copied"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(copied, ["marker"]);
}

#[test]
fn a_context_dir_is_an_o_path_fd_closed_on_exec() {
    let s = setup();
    let context = s.context();
    let fd = &context;
    let fd_flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "a step would inherit it");
    let status_flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_ne!(
        status_flags & libc::O_PATH,
        0,
        "it should give no read access"
    );
}
