//! `kiln check` as root and as ordinary users the test makes: one with subordinate id ranges
//! in /etc/subuid and /etc/subgid and one without. The users (and their ranges) are removed
//! when the test ends, failed or not.

mod common;

use std::process::Output;

use common::users::TestUser;
use common::{require_root, text};
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
    let user = TestUser::create(true);
    let range = user.subid_range().unwrap();
    assert_eq!(
        user.subid_lines().len(),
        2,
        "usermod wrote one line per file"
    );

    let out = user.kiln(&["check", "--json"]);
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

    let out = user.kiln(&["check"]);
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
    let user = TestUser::create(false);
    assert_eq!(
        user.subid_lines(),
        Vec::<String>::new(),
        "a system user gets no ranges"
    );

    let out = user.kiln(&["check", "--json"]);
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

    let out = user.kiln(&["check"]);
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
