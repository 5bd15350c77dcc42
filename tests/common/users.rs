//! Ordinary users made by a test, to run kiln as (rootless kiln): each with a home, and
//! optionally subordinate id ranges in `/etc/subuid` and `/etc/subgid`. Removed — user,
//! home and range lines — when dropped, also when the test panics.

use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{kiln_bin, require, run};

/// How many ids a test user's subordinate range has (what rootless kiln maps).
pub const SUBIDS: u32 = 65_536;

pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
    /// The first host id of the user's subordinate range, if it has one.
    pub subid_start: Option<u32>,
    /// A copy of kiln the user can run (the build tree may be private to root).
    kiln: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestUser {
    /// A new user; with `subids`, a range of [`SUBIDS`] ids of its own.
    pub fn create(subids: bool) -> TestUser {
        require("useradd", "passwd");
        require("setpriv", "util-linux");
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("kt{}u{n}", std::process::id());
        // useradd gives a new user subordinate ranges of its own (login.defs): replaced
        // by the test's, or removed, so the user has exactly what the test says.
        let prefix = format!("{name}:");
        with_subid_lock(|| {
            run(Command::new("useradd").args([
                "--create-home",
                "--shell",
                "/bin/sh",
                "--user-group",
                &name,
            ]));
            rewrite_subid_files(|text| without_lines_of(text, &prefix));
        });
        let uid: u32 = run(Command::new("id").args(["-u", &name]))
            .trim()
            .parse()
            .unwrap();
        // Far above useradd's own allocations (100000…), one slot per user of this run.
        let subid_start =
            subids.then(|| 3_000_000 + (std::process::id() % 1000) * 8 * SUBIDS + n * SUBIDS);
        let mut user = TestUser {
            home: PathBuf::from(format!("/home/{name}")),
            name,
            uid,
            subid_start,
            kiln: PathBuf::new(),
        };
        if let Some(start) = subid_start {
            with_subid_lock(|| {
                rewrite_subid_files(|text| format!("{text}{}:{start}:{SUBIDS}\n", user.name))
            });
        }
        user.kiln = user.home.join("kiln");
        std::fs::copy(kiln_bin(), &user.kiln).unwrap();
        std::fs::set_permissions(&user.kiln, std::fs::Permissions::from_mode(0o755)).unwrap();
        user
    }

    /// `kiln ARGS` as this user in `dir`, with the environment a login gives.
    pub fn kiln_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.command_in(dir, &self.kiln, args)
    }

    /// `kiln ARGS` as this user in its home.
    pub fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_in(&self.home, args)
    }

    /// Any program as this user.
    pub fn command_in(&self, dir: &Path, program: &Path, args: &[&str]) -> Output {
        Command::new("setpriv")
            .args([
                "--reuid",
                &self.name,
                "--regid",
                &self.name,
                "--init-groups",
            ])
            .args(["--reset-env", "--"])
            .arg(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The user's default store.
    pub fn store(&self) -> PathBuf {
        self.home.join(".local/share/kiln")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Its processes first (a detached container's monitor), or userdel refuses.
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let prefix = format!("{}:", self.name);
        with_subid_lock(|| {
            let _ = Command::new("userdel")
                .args(["--remove", &self.name])
                .stderr(Stdio::null())
                .status();
            rewrite_subid_files(|text| without_lines_of(text, &prefix));
        });
    }
}

fn without_lines_of(text: &str, prefix: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with(prefix))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Runs `f` holding a lock shared by every test process: tests make and remove users,
/// and so change the subordinate id files, concurrently.
fn with_subid_lock<T>(f: impl FnOnce() -> T) -> T {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/kiln-test-subid.lock")
        .unwrap();
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    f()
}

/// Rewrites `/etc/subuid` and `/etc/subgid` with `edit`, each replaced whole by a rename:
/// a kiln reading them meanwhile (another test's) sees the old or the new file, never a
/// half-written one.
fn rewrite_subid_files(edit: impl Fn(&str) -> String) {
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let temp = format!("{file}.kiln-test-{}", std::process::id());
        std::fs::write(&temp, edit(&text)).unwrap();
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&temp, file).unwrap();
    }
}

/// A directory every user can read (the tests' own temp dirs are root's, mode 0700).
pub fn shared_dir(env: &super::Env, rel: &str) -> PathBuf {
    let dir = env.path(rel);
    std::fs::create_dir_all(&dir).unwrap();
    for d in [env.dir.path(), dir.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}
