//! The context's ignore files and digest against what `layer::copy_in_filtered` really
//! copies: the digest that keys a `copy:` step must list exactly the files the step copies.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{copy_sources_digest, EntryKind, HashMemo, Ignore};
use kiln_layer::{copy_in_filtered, ContextDir, CopyOptions, Exclusions, LayerError};

struct Setup {
    _tmp: tempfile::TempDir,
    ctx: PathBuf,
    root: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let (ctx, root) = (tmp.path().join("ctx"), tmp.path().join("root"));
    for d in [&ctx, &root] {
        fs::create_dir(d).unwrap();
    }
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
    }
}

impl Setup {
    /// The context, opened as a build opens it.
    fn context(&self) -> ContextDir {
        ContextDir::open(&self.ctx).unwrap()
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn copy_ignoring(s: &Setup, sources: &[&str], dest: &str) -> Result<(), LayerError> {
    let context = s.context();
    let ignore = Ignore::load(&context).unwrap();
    let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    let opts = CopyOptions::default();
    copy_in_filtered(
        &context,
        &sources,
        &s.root,
        dest,
        "/",
        &opts,
        &ignore.as_exclusions(),
    )?;
    Ok(())
}

/// Every path below `dir`, relative to it, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(dir.join(&rel)).unwrap() {
            let rel = rel.join(e.unwrap().file_name());
            if fs::symlink_metadata(dir.join(&rel)).unwrap().is_dir() {
                stack.push(rel.clone());
            }
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[test]
fn kilnignore_leaves_paths_out_and_refuses_them_by_name() {
    require_root!("chown, mknod");
    let s = setup();
    fs::write(
        s.ctx.join(".kilnignore"),
        "*.conf\nsite/css/\n!site/css/a.css\n",
    )
    .unwrap();
    fs::write(s.ctx.join("site/keep.conf.txt"), "kept").unwrap();
    copy_ignoring(&s, &["."], "/app/").unwrap();
    assert_eq!(
        tree(&s.root.join("app")),
        [
            ".kilnignore",
            "site",
            "site/home.html",
            "site/index.html",
            "site/keep.conf.txt"
        ]
    );
    for (source, line) in [
        ("app.conf", "line 1 (*.conf)"),
        ("site/css/a.css", "line 2 (site/css/)"),
    ] {
        let err = copy_ignoring(&s, &[source], "/x").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot copy {source}: it is excluded by .kilnignore {line}")
        );
    }
    // A symlink does not smuggle an excluded directory in, named or inside a copied dir.
    symlink("site/css", s.ctx.join("styles")).unwrap();
    let err = copy_ignoring(&s, &["styles"], "/x/").unwrap_err();
    assert!(
        err.to_string().contains("excluded by .kilnignore line 2"),
        "{err}"
    );
    assert!(!s.root.join("x").exists());
}

#[test]
fn dockerignore_exceptions_bring_paths_back_and_the_digest_agrees() {
    require_root!("chown, mknod");
    let s = setup();
    fs::write(
        s.ctx.join(".dockerignore"),
        "site\n!site/css/a.css\n*.conf\nempty\n!empty/missing\n",
    )
    .unwrap();
    fs::create_dir(s.ctx.join("empty")).unwrap();
    copy_ignoring(&s, &["."], "/app/").unwrap();
    let copied = tree(&s.root.join("app"));
    assert_eq!(
        copied,
        [".dockerignore", "site", "site/css", "site/css/a.css"],
        "an excluded directory is copied only as the parent of what comes back"
    );
    let context = s.context();
    let ignore = Ignore::load(&context).unwrap();
    let digest =
        copy_sources_digest(&context, &[".".into()], &ignore, &mut HashMemo::in_memory()).unwrap();
    let listed: Vec<String> = digest.files.iter().map(|e| e.path.clone()).collect();
    assert_eq!(listed, copied);
    let err = copy_ignoring(&s, &["site/index.html"], "/x").unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot copy site/index.html: it is excluded by .dockerignore line 1 (site)"
    );
}

#[test]
fn the_context_digest_lists_exactly_what_is_copied() {
    require_root!("chown, mknod");
    let s = setup();
    let ctx = &s.ctx;
    fs::write(ctx.join(".kilnignore"), "*.tmp\nsite/private/\n").unwrap();
    fs::create_dir_all(ctx.join("site/private")).unwrap();
    fs::write(ctx.join("site/private/key"), "k").unwrap();
    fs::write(ctx.join("site/x.tmp"), "t").unwrap();
    fs::create_dir(ctx.join("site/empty")).unwrap();
    fs::write(ctx.join("site/run.sh"), "#!/bin/sh").unwrap();
    fs::set_permissions(ctx.join("site/run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
    symlink("site", ctx.join("www")).unwrap();
    nix::unistd::mkfifo(&ctx.join("site/pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(ctx.join("site/sock")).unwrap();

    let context = s.context();
    let ignore = Ignore::load(&context).unwrap();
    let digest = copy_sources_digest(
        &context,
        &["www".into()],
        &ignore,
        &mut HashMemo::in_memory(),
    )
    .unwrap();
    // Copied from another thread, as builds do (inside `runtime::with_overlay`).
    let exclusions: &Exclusions = &ignore.as_exclusions();
    let sources = ["www".to_string()];
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let opts = CopyOptions::default();
            copy_in_filtered(&context, &sources, &s.root, "/dst", "/", &opts, exclusions).unwrap();
        });
    });
    let listed: Vec<String> = digest
        .files
        .iter()
        .map(|e| e.path.strip_prefix("www/").unwrap().to_owned())
        .collect();
    assert_eq!(listed, tree(&s.root.join("dst")));
    for entry in &digest.files {
        if let EntryKind::File { exec, .. } = entry.kind {
            let copied = s
                .root
                .join("dst")
                .join(entry.path.strip_prefix("www/").unwrap());
            let want = if exec { 0o755 } else { 0o644 };
            assert_eq!(mode(&copied), want, "{}", entry.path);
        }
    }
}
