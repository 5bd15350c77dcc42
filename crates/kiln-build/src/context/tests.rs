//! Tests of the build context on real files in temp dirs.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::*;
use kiln_store::Store;

struct Ctx {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Ctx {
    fn new() -> Ctx {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ctx");
        fs::create_dir(&dir).unwrap();
        Ctx { _tmp: tmp, dir }
    }

    /// The context, opened as a build opens it.
    fn open(&self) -> ContextDir {
        ContextDir::open(&self.dir).unwrap()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn chmod(&self, rel: &str, mode: u32) {
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(mode)).unwrap();
    }

    fn digest(&self, sources: &[&str]) -> Result<SourcesDigest> {
        let ignore = Ignore::load(&self.open())?;
        self.digest_with(sources, &ignore, &mut HashMemo::in_memory())
    }

    fn digest_with(
        &self,
        sources: &[&str],
        ignore: &Ignore,
        memo: &mut HashMemo,
    ) -> Result<SourcesDigest> {
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        copy_sources_digest(&self.open(), &sources, ignore, memo)
    }

    fn listed(&self, sources: &[&str]) -> Vec<String> {
        let d = self.digest(sources).unwrap();
        d.files.into_iter().map(|e| e.path).collect()
    }
}

/// A memo that remembers files however recently they changed (tests write and hash in the
/// same millisecond; the racy rule has its own test).
fn eager_memo() -> HashMemo {
    let mut memo = HashMemo::in_memory();
    memo.racy_margin = Duration::ZERO;
    memo
}

fn set_mtime(p: &Path, secs_ago: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    fs::File::open(p).unwrap().set_modified(t).unwrap();
}

#[test]
fn kilnignore_patterns_exceptions_and_directories() {
    let c = Ctx::new();
    c.write(
        ".kilnignore",
        "# build output\n*.log\n!keep.log\nbuild/\n!build/wanted\n/secret\ndocs/**/*.tmp\n",
    );
    for f in [
        "a.log",
        "keep.log",
        "sub/b.log",
        "sub/keep.log",
        "build/out",
        "build/wanted",
        "sub/build", // a file: `build/` only matches directories
        "secret",
        "sub/secret", // `/secret` is anchored at the context root
        "docs/z.tmp",
        "docs/x/y.tmp",
        "docs/x/y.md",
        "main.rs",
    ] {
        c.write(f, "x");
    }
    assert_eq!(
        c.listed(&["."]),
        [
            ".kilnignore",
            "docs",
            "docs/x",
            "docs/x/y.md",
            "keep.log",
            "main.rs",
            "sub",
            "sub/build",
            "sub/keep.log",
            "sub/secret",
        ]
    );
    // Only what the step names is walked, with the same rules.
    assert_eq!(
        c.listed(&["sub"]),
        ["sub/build", "sub/keep.log", "sub/secret"]
    );
    // Without a .kilnignore everything is there.
    fs::remove_file(c.path(".kilnignore")).unwrap();
    assert_eq!(c.listed(&["."]).len(), 17);
}

#[test]
fn dockerignore_patterns_are_anchored_and_exceptions_reach_into_excluded_dirs() {
    let c = Ctx::new();
    c.write(
        ".dockerignore",
        "# Docker's rules\n*.log\n/secret\ndocs\n!docs/README.md\nbuild/\n**/*.tmp\ncache\n!cache/nothing\n",
    );
    for f in [
        "a.log",
        "sub/b.log", // `*.log` is anchored at the root
        "secret",
        "sub/secret",
        "docs/README.md",
        "docs/api/x.md",
        "build", // a file: `build/` is cleaned to `build` and matches it
        "x/y/z.tmp",
        "cache/data",
        "main.rs",
    ] {
        c.write(f, "x");
    }
    assert_eq!(
        c.listed(&["."]),
        [
            ".dockerignore",
            "docs",
            "docs/README.md",
            "main.rs",
            "sub",
            "sub/b.log",
            "sub/secret",
            "x",
            "x/y",
        ]
    );
    // A path an exception brings back can be named; the rest of the directory cannot.
    assert_eq!(c.listed(&["docs"]), ["docs/README.md"]);
    assert_eq!(c.listed(&["docs/README.md"]), ["docs/README.md"]);
    let err = c.digest(&["docs/api/x.md"]).unwrap_err().to_string();
    assert_eq!(
        err,
        "cannot copy docs/api/x.md: it is excluded by .dockerignore line 4 (docs)"
    );
}

#[test]
fn the_first_ignore_file_found_is_the_only_one_used() {
    let c = Ctx::new();
    for f in ["a.txt", "b.txt", "c.txt", "sub/a.txt"] {
        c.write(f, "x");
    }
    c.write(".dockerignore", "b.txt\n");
    let ignore = Ignore::load(&c.open()).unwrap();
    assert_eq!(ignore.file(), Some((".dockerignore", IgnoreSyntax::Docker)));
    assert!(!c.listed(&["."]).contains(&"b.txt".to_string()));
    c.write(".containerignore", "c.txt\n");
    let listed = c.listed(&["."]);
    assert!(listed.contains(&"b.txt".to_string()) && !listed.contains(&"c.txt".to_string()));
    // .kilnignore wins, read as gitignore: `a.txt` matches at any depth.
    c.write(".kilnignore", "a.txt\n");
    let ignore = Ignore::load(&c.open()).unwrap();
    assert_eq!(
        ignore.file(),
        Some((".kilnignore", IgnoreSyntax::Gitignore))
    );
    let listed = c.listed(&["."]);
    assert!(!listed.contains(&"a.txt".to_string()) && !listed.contains(&"sub/a.txt".to_string()));
    assert!(listed.contains(&"c.txt".to_string()));
    // A broken Docker pattern is reported with its file and line.
    fs::remove_file(c.path(".kilnignore")).unwrap();
    c.write(".containerignore", "ok\n[ab\n");
    let err = Ignore::load(&c.open()).unwrap_err().to_string();
    assert!(err.contains(".containerignore:2: "), "{err}");
}

#[test]
fn an_excluded_source_named_explicitly_is_an_error_with_its_line() {
    let c = Ctx::new();
    c.write(".kilnignore", "*.log\n\nbuild/\n");
    c.write("app.log", "x");
    c.write("build/out", "x");
    symlink("build", c.path("alias")).unwrap();
    let cases = [
        ("app.log", ".kilnignore line 1 (*.log)"),
        ("build", ".kilnignore line 3 (build/)"),
        ("./build/out", ".kilnignore line 3 (build/)"),
        // a symlink does not bring an excluded directory back
        ("alias", ".kilnignore line 3 (build/)"),
        ("alias/out", ".kilnignore line 3 (build/)"),
    ];
    for (source, rule) in cases {
        let err = c.digest(&[source]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot copy {source}: it is excluded by {rule}"),
        );
    }
}

#[test]
fn sources_fail_as_copy_in_fails() {
    let c = Ctx::new();
    let outside = c._tmp.path().join("outside");
    fs::write(&outside, "host").unwrap();
    symlink(&outside, c.path("abs-link")).unwrap();
    symlink("../outside", c.path("rel-link")).unwrap();
    let root = c._tmp.path().join("root");
    fs::create_dir(&root).unwrap();
    for source in ["../outside", "abs-link", "rel-link", "missing"] {
        let ours = c.digest(&[source]).unwrap_err().to_string();
        let sources = [source.to_string()];
        let theirs =
            kiln_layer::copy_in(&c.open(), &sources, &root, "/x", "/", &Default::default())
                .unwrap_err()
                .to_string();
        assert_eq!(ours, theirs, "{source}");
    }
}

#[test]
fn digest_ignores_mtimes_mode_bits_and_creation_order() {
    let (a, b) = (Ctx::new(), Ctx::new());
    let names = ["z", "a", "m/1", "m/2", "b"];
    for n in names {
        a.write(n, n);
    }
    for n in names.iter().rev() {
        b.write(n, n);
    }
    a.chmod("b", 0o755);
    b.chmod("b", 0o700); // still executable
    let (da, db) = (a.digest(&["."]).unwrap(), b.digest(&["."]).unwrap());
    assert_eq!(da, db);
    // touch, a chmod that keeps the exec bit, an odd umask: nothing changes
    set_mtime(&a.path("z"), 3600);
    set_mtime(&a.path("m"), 7200);
    a.chmod("a", 0o600);
    a.chmod("m", 0o700);
    a.chmod("b", 0o4711);
    assert_eq!(a.digest(&["."]).unwrap().digest, da.digest);
}

#[test]
fn digest_changes_with_content_exec_bit_names_and_link_targets() {
    let c = Ctx::new();
    c.write("src/main.rs", "fn main() {}");
    c.write("src/lib.rs", "pub fn f() {}");
    symlink("main.rs", c.path("src/link")).unwrap();
    let mut previous = c.digest(&["."]).unwrap();
    let mut expect_change = |what: &str, change: &dyn Fn(), paths: &[&str]| {
        change();
        let now = c.digest(&["."]).unwrap();
        assert_ne!(now.digest, previous.digest, "{what}");
        assert_eq!(changed_paths(&previous.files, &now.files), paths, "{what}");
        previous = now;
    };
    expect_change(
        "one byte",
        &|| c.write("src/main.rs", "fn main(){}"),
        &["src/main.rs"],
    );
    expect_change("+x", &|| c.chmod("src/lib.rs", 0o744), &["src/lib.rs"]);
    expect_change(
        "rename",
        &|| fs::rename(c.path("src/lib.rs"), c.path("src/lib2.rs")).unwrap(),
        &["src/lib.rs", "src/lib2.rs"],
    );
    expect_change("new file", &|| c.write("README", ""), &["README"]);
    expect_change(
        "link target",
        &|| {
            fs::remove_file(c.path("src/link")).unwrap();
            symlink("lib2.rs", c.path("src/link")).unwrap();
        },
        &["src/link"],
    );
    expect_change(
        "new empty dir",
        &|| fs::create_dir(c.path("e")).unwrap(),
        &["e"],
    );
}

#[test]
fn listing_follows_copy_semantics() {
    let c = Ctx::new();
    c.write("site/index.html", "hi");
    c.write("conf", "c");
    symlink("site", c.path("site-link")).unwrap();
    nix::unistd::mkfifo(&c.path("site/fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(c.path("site/sock")).unwrap();
    // A directory source lists its content; an explicit file its own path; symlinks named
    // as sources are followed, symlinks inside are kept; sockets are skipped.
    let d = c.digest(&["site-link", "./conf", "site/../conf"]).unwrap();
    let kinds: Vec<(String, &str)> = d
        .files
        .iter()
        .map(|e| {
            let k = match e.kind {
                EntryKind::File { .. } => "file",
                EntryKind::Fifo => "fifo",
                _ => "other",
            };
            (e.path.clone(), k)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("conf".to_string(), "file"),
            ("site-link/fifo".to_string(), "fifo"),
            ("site-link/index.html".to_string(), "file"),
        ]
    );
    let json = serde_json::to_string(&d.files[0]).unwrap();
    assert!(json.starts_with(r#"{"path":"conf","kind":"file","exec":false,"content":"sha256:"#));
    assert_eq!(
        serde_json::from_str::<SourceEntry>(&json).unwrap(),
        d.files[0]
    );
}

#[test]
fn the_memo_spares_reading_unchanged_files() {
    let c = Ctx::new();
    for i in 0..20 {
        c.write(&format!("d/{i}"), &format!("file {i}"));
    }
    let ignore = Ignore::none();
    let mut memo = eager_memo();
    let first = c.digest_with(&["."], &ignore, &mut memo).unwrap();
    assert_eq!((first.files_read, memo.len()), (20, 20));
    let second = c.digest_with(&["."], &ignore, &mut memo).unwrap();
    assert_eq!(second.files_read, 0, "unchanged files were read again");
    assert_eq!(second.digest, first.digest);
    // Same size, new content: the ctime moves, the memo misses, the digest changes.
    std::thread::sleep(Duration::from_millis(20));
    c.write("d/7", "file X");
    let third = c.digest_with(&["."], &ignore, &mut memo).unwrap();
    assert_eq!((third.files_read, third.bytes_read), (1, 6));
    assert_eq!(changed_paths(&first.files, &third.files), ["d/7"]);
    // A chmod moves the ctime too: read again, same digest.
    c.chmod("d/3", 0o600);
    let fourth = c.digest_with(&["."], &ignore, &mut memo).unwrap();
    assert_eq!((fourth.files_read, fourth.digest), (1, third.digest));
}

#[test]
fn recently_changed_files_are_not_remembered() {
    let c = Ctx::new();
    c.write("fresh", "just written");
    let mut memo = HashMemo::in_memory();
    let ignore = Ignore::none();
    c.digest_with(&["."], &ignore, &mut memo).unwrap();
    assert!(
        memo.is_empty(),
        "a file written within the racy margin was remembered"
    );
    let again = c.digest_with(&["."], &ignore, &mut memo).unwrap();
    assert_eq!(again.files_read, 1);
}

#[test]
fn the_memo_is_saved_per_context_and_keeps_only_what_was_used() {
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let c = Ctx::new();
    c.write("a", "a");
    c.write("b", "b");
    let ignore = Ignore::none();
    let mut memo = HashMemo::load(&store, &c.open());
    memo.racy_margin = Duration::ZERO;
    c.digest_with(&["."], &ignore, &mut memo).unwrap();
    memo.save(&store).unwrap();
    let saved: Vec<_> = fs::read_dir(store.cache_dir().join("context"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let canonical = fs::canonicalize(&c.dir).unwrap();
    let name = kiln_store::Digest::of_bytes(canonical.as_os_str().as_encoded_bytes());
    assert_eq!(saved, [name.hex()]);

    // Found again through another spelling of the same directory.
    let other_spelling = c.dir.join("../ctx/.");
    let mut memo = HashMemo::load(&store, &ContextDir::open(&other_spelling).unwrap());
    assert_eq!(memo.len(), 2);
    let d = c.digest_with(&["a"], &ignore, &mut memo).unwrap();
    assert_eq!(d.files_read, 0);
    memo.save(&store).unwrap();
    assert_eq!(
        HashMemo::load(&store, &c.open()).len(),
        1,
        "b was not dropped"
    );

    // A torn or corrupt memo is ignored.
    let file = store.cache_dir().join("context").join(name.hex());
    let mut bytes = fs::read(&file).unwrap();
    bytes.truncate(bytes.len() - 1);
    fs::write(&file, &bytes).unwrap();
    assert!(HashMemo::load(&store, &c.open()).is_empty());
    fs::write(&file, b"garbage").unwrap();
    assert!(HashMemo::load(&store, &c.open()).is_empty());
    assert!(
        fs::read_dir(store.tmp_dir()).unwrap().next().is_none(),
        "temp files left behind"
    );
}

#[test]
fn bad_kilnignore_files_are_reported_with_their_line() {
    let c = Ctx::new();
    fs::write(c.path(".kilnignore"), b"ok\n\xff\xfe\n").unwrap();
    let err = Ignore::load(&c.open()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:2: the pattern is not valid UTF-8",
            c.path(".kilnignore").display()
        )
    );
    c.write(".kilnignore", "a\n{b,c\n");
    let err = Ignore::load(&c.open()).unwrap_err().to_string();
    assert!(err.contains(".kilnignore:2: "), "{err}");

    fs::remove_file(c.path(".kilnignore")).unwrap();
    let outside = c._tmp.path().join("host-ignore");
    fs::write(&outside, "*").unwrap();
    symlink(&outside, c.path(".kilnignore")).unwrap();
    let err = Ignore::load(&c.open()).unwrap_err().to_string();
    assert_eq!(err, "copy source .kilnignore is outside the build context");
}

#[test]
fn non_utf8_names_are_hashed_exactly_and_shown_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let c = Ctx::new();
    fs::write(c.dir.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), "1").unwrap();
    let d = c.digest(&["."]).unwrap();
    assert_eq!(d.files[0].path, "caf\\xe9");
    fs::rename(
        c.dir.join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
        c.dir.join("caf\\xe9"),
    )
    .unwrap();
    let renamed = c.digest(&["."]).unwrap();
    assert_eq!(renamed.files[0].path, "caf\\xe9");
    assert_ne!(renamed.digest, d.digest, "two names collided in the digest");
}
