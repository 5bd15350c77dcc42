//! `kiln check` as root and as ordinary users the test makes: one with subordinate id ranges
//! in /etc/subuid and /etc/subgid and one without. The users (and their ranges) are removed
//! when the test ends, failed or not.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{require_root, run, text};
use serde_json::Value;

/// The checks, in the order kiln prints them.
const CHECKS: [&str; 6] = [
    "user-namespaces",
    "subordinate-ids",
    "id-mappers",
    "overlay-userns",
    "cgroups",
    "network",
];

/// A throwaway system user (no home, no login, no subordinate ids of its own), removed with
/// its ranges on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    /// `START-END` given to it in both files, if any.
    ranges: Option<String>,
}

impl TestUser {
    fn create(tag: &str) -> TestUser {
        common::require("useradd", "passwd");
        let name = format!("kiln-check-{}-{tag}", std::process::id());
        run(Command::new("useradd").args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            &name,
        ]));
        let user = nix::unistd::User::from_name(&name)
            .unwrap()
            .expect("the user just made");
        TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            ranges: None,
        }
    }

    /// Gives the user 65536 subordinate uids and gids, from a range no real user has.
    fn add_ranges(&mut self) {
        let start = 1_000_000_000 + (std::process::id() % 10_000) * 65_536;
        let range = format!("{start}-{}", start + 65_535);
        self.ranges = Some(range.clone());
        run(Command::new("usermod").args([
            "--add-subuids",
            &range,
            "--add-subgids",
            &range,
            &self.name,
        ]));
    }

    /// The lines of /etc/subuid and /etc/subgid that name the user.
    fn subid_lines(&self) -> Vec<String> {
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

    /// Runs `kiln ARGS` as the user, from a copy of the binary it can read.
    fn kiln(&self, bin: &Path, args: &[&str]) -> Output {
        Command::new("setpriv")
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .arg(bin)
            .args(args)
            .current_dir(bin.parent().unwrap())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", "/nonexistent")
            .output()
            .expect("run kiln as the test user")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Some(range) = &self.ranges {
            let _ = Command::new("usermod")
                .args(["--del-subuids", range, "--del-subgids", range, &self.name])
                .output();
        }
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// The kiln binary in a dir anyone may enter and read (the build's target dir may not be).
fn readable_kiln() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("kiln-check-bin")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("kiln");
    std::fs::copy(common::kiln_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

/// The JSON report, checked for shape: every check once, in order, with its fields; and the
/// exit code the rule gives (1 when a needed check is not ok).
fn report(out: &Output) -> Vec<Value> {
    let items: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not a JSON array: {e}\n{}", text(out)));
    let names: Vec<&str> = items.iter().map(|i| i["check"].as_str().unwrap()).collect();
    assert_eq!(names, CHECKS, "{}", text(out));
    for item in &items {
        assert!(
            item["ok"].is_boolean() && item["needed"].is_boolean(),
            "{item}"
        );
        assert!(!item["detail"].as_str().unwrap().is_empty(), "{item}");
        if item["ok"] == true {
            assert!(item["fix"].is_null(), "{item}");
        }
    }
    let works = items
        .iter()
        .all(|i| i["ok"] == true || i["needed"] == false);
    assert_eq!(
        out.status.code(),
        Some(if works { 0 } else { 1 }),
        "{}",
        text(out)
    );
    items
}

fn item<'a>(items: &'a [Value], check: &str) -> &'a Value {
    items.iter().find(|i| i["check"] == check).unwrap()
}

#[test]
fn as_root_every_check_is_reported_and_subordinate_ids_are_not_needed() {
    require_root!("kiln check as root");
    let env = common::Env::new();
    let out = env.kiln(&["check", "--json"]);
    let items = report(&out);
    let subids = item(&items, "subordinate-ids");
    assert_eq!(subids["ok"], true);
    assert_eq!(subids["needed"], false);
    assert_eq!(subids["detail"], "not needed as root");
    // Root's containers always get a cgroup, and this host has one.
    assert_eq!(item(&items, "cgroups")["needed"], true);
    assert_eq!(item(&items, "cgroups")["ok"], true, "{}", text(&out));

    let out = env.kiln(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("ok")
            && l.contains("subordinate-ids")
            && l.ends_with("not needed as root")),
        "{stdout}"
    );
    assert!(
        lines.last().unwrap().contains("as root (uid 0)"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_user_with_subordinate_ranges_has_them_reported_ok() {
    require_root!("useradd and setpriv");
    let (_bin_dir, bin) = readable_kiln();
    let mut user = TestUser::create("r");
    user.add_ranges();
    let range = user.ranges.clone().unwrap();
    assert_eq!(
        user.subid_lines().len(),
        2,
        "usermod wrote one line per file"
    );

    let out = user.kiln(&bin, &["check", "--json"]);
    let items = report(&out);
    let subids = item(&items, "subordinate-ids");
    assert_eq!(subids["ok"], true, "{}", text(&out));
    assert_eq!(subids["needed"], true);
    let detail = subids["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("/etc/subuid: {range} (65536 ids)")),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("/etc/subgid: {range} (65536 ids)")),
        "{detail}"
    );
    // The setuid mappers Debian's uidmap installs.
    assert_eq!(item(&items, "id-mappers")["ok"], true, "{}", text(&out));
    // This host is on cgroup v1 (hybrid): no delegation, reported but not needed.
    let cgroups = item(&items, "cgroups");
    assert_eq!(cgroups["needed"], false);
    if cgroups["ok"] == false {
        assert!(
            cgroups["fix"].as_str().is_some_and(|f| !f.is_empty()),
            "{cgroups}"
        );
    }

    let out = user.kiln(&bin, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ok ") && l.contains("subordinate-ids")),
        "{stdout}"
    );
    assert!(!stdout.contains("usermod"), "{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .contains(&format!("{} (uid {})", user.name, user.uid)),
        "{stdout}"
    );

    let name = user.name.clone();
    drop(user);
    assert!(
        nix::unistd::User::from_name(&name).unwrap().is_none(),
        "the user is removed"
    );
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(!text.contains(&name), "{file} still names {name}:\n{text}");
    }
}

#[test]
fn a_user_without_subordinate_ranges_is_told_the_usermod_line_and_fails() {
    require_root!("useradd and setpriv");
    let (_bin_dir, bin) = readable_kiln();
    let user = TestUser::create("n");
    assert_eq!(
        user.subid_lines(),
        Vec::<String>::new(),
        "a system user gets no ranges"
    );

    let out = user.kiln(&bin, &["check", "--json"]);
    let items = report(&out);
    let subids = item(&items, "subordinate-ids");
    assert_eq!(subids["ok"], false);
    assert_eq!(subids["needed"], true);
    assert!(
        subids["detail"]
            .as_str()
            .unwrap()
            .contains("/etc/subuid: none"),
        "{subids}"
    );
    let fix = subids["fix"].as_str().unwrap();
    assert!(
        fix.starts_with("usermod --add-subuids ")
            && fix.contains(" --add-subgids ")
            && fix.ends_with(&format!(" {}", user.name)),
        "{fix}"
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // The overlay probe's scratch dir is gone (with overlayfs's mode-000 work dir).
    let scratch: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".kiln-check-"))
        .filter(|e| std::os::unix::fs::MetadataExt::uid(&e.metadata().unwrap()) == user.uid)
        .map(|e| e.path())
        .collect();
    assert!(scratch.is_empty(), "left behind: {scratch:?}");

    let out = user.kiln(&bin, &["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("missing") && l.contains("subordinate-ids"))
        .unwrap_or_else(|| panic!("{stdout}"));
    // The range is the first free one, which another test's user may have taken meanwhile.
    let fix_line = lines[at + 1].trim();
    assert!(
        fix_line.starts_with("fix: usermod --add-subuids ")
            && fix_line.ends_with(&format!(" {}", user.name)),
        "{stdout}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .contains("until this is fixed: subordinate-ids"),
        "{stdout}"
    );
}

#[test]
fn help_explains_with_an_example() {
    let env = common::Env::unprivileged();
    let help = env.kiln_ok(&["check", "--help"]);
    assert!(help.contains("Examples:\n  kiln check"), "{help}");
    assert!(help.contains("--json"), "{help}");
}
