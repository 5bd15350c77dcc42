//! Ordinary users made by a test, to run kiln as (rootless kiln): each with a home, and
//! optionally a subordinate id range in `/etc/subuid` and `/etc/subgid`. Removed — user,
//! home and ranges — when dropped, also when the test panics. Every change goes through
//! shadow's own tools (useradd, usermod, userdel), which lock and replace those files
//! whole, so tests making users at once never lose each other's lines.

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
    /// A new user (a system account: useradd gives it no ranges of its own); with
    /// `subids`, a range of [`SUBIDS`] ids no real user has.
    pub fn create(subids: bool) -> TestUser {
        require("useradd", "passwd");
        require("setpriv", "util-linux");
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("kt{}u{n}", std::process::id());
        let home = PathBuf::from(format!("/home/{name}"));
        run(Command::new("useradd").args([
            "--system",
            "--create-home",
            "--home-dir",
            home.to_str().unwrap(),
            "--shell",
            "/bin/sh",
            "--user-group",
            &name,
        ]));
        let uid: u32 = run(Command::new("id").args(["-u", &name]))
            .trim()
            .parse()
            .unwrap();
        let mut user = TestUser {
            home,
            name,
            uid,
            subid_start: None,
            kiln: PathBuf::new(),
        };
        if subids {
            // Far above useradd's own allocations (100000…), one slot per user of a run.
            let start = 1_000_000_000 + (std::process::id() % 1000) * 16 * SUBIDS + n * SUBIDS;
            user.subid_start = Some(start);
            let range = user.subid_range().unwrap();
            run(Command::new("usermod").args([
                "--add-subuids",
                &range,
                "--add-subgids",
                &range,
                &user.name,
            ]));
        }
        user.kiln = shared_kiln().to_owned();
        user
    }

    /// `START-END` of the user's range, as usermod takes it.
    pub fn subid_range(&self) -> Option<String> {
        self.subid_start
            .map(|start| format!("{start}-{}", start + SUBIDS - 1))
    }

    /// The lines of /etc/subuid and /etc/subgid that name the user.
    pub fn subid_lines(&self) -> Vec<String> {
        ["/etc/subuid", "/etc/subgid"]
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter(|l| l.split(':').next() == Some(self.name.as_str()))
            .collect()
    }

    /// `kiln ARGS` as this user in `dir`, with the environment a login gives.
    pub fn kiln_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.command_in(dir, &self.kiln, args)
    }

    /// kiln as this user in its home, for a caller that gives the arguments and stdio
    /// (a pty); run [`TestUser::kiln`] once before, which waits out a fresh copy's
    /// `ETXTBSY`.
    pub fn kiln_command(&self) -> Command {
        self.command(&self.home, &self.kiln)
    }

    /// `kiln ARGS` as this user in its home.
    pub fn kiln(&self, args: &[&str]) -> Output {
        self.kiln_in(&self.home, args)
    }

    /// `program` to be run as this user in `dir`, with the environment a login gives; the
    /// caller adds arguments and stdio.
    pub fn command(&self, dir: &Path, program: &Path) -> Command {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid", &self.name, "--regid", &self.name])
            .args(["--init-groups", "--reset-env", "--"])
            .arg(program)
            .current_dir(dir);
        command
    }

    /// Any program as this user.
    pub fn command_in(&self, dir: &Path, program: &Path, args: &[&str]) -> Output {
        let run = || {
            self.command(dir, program)
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        };
        // A file just written may be held open for writing a moment longer by a child
        // another test thread forked meanwhile (its copy of the fd lives until its exec):
        // executing it then fails with ETXTBSY, which is the test's race, not kiln's.
        for _ in 0..50 {
            let out = run();
            if !String::from_utf8_lossy(&out.stderr).contains("Text file busy") {
                return out;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        run()
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
        if let Some(range) = self.subid_range() {
            let _ = Command::new("usermod")
                .args(["--del-subuids", &range, "--del-subgids", &range, &self.name])
                .output();
        }
        let _ = Command::new("userdel")
            .args(["--remove", &self.name])
            .output();
    }
}

/// One copy of kiln per test process that every user can run (the build tree may be
/// private to root), in a 0755 directory that lives as long as the process.
fn shared_kiln() -> &'static Path {
    static KILN: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_, path) = KILN.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("kiln-users-bin")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("kiln");
        // A hard link costs no disk (the binary is large); a copy where /tmp is elsewhere.
        if std::fs::hard_link(kiln_bin(), &path).is_err() {
            std::fs::copy(kiln_bin(), &path).unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, path)
    });
    path
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
