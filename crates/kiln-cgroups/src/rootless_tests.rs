//! Delegation tests against imitation cgroupfs trees shaped like systemd's, the user's part
//! chowned to a uid no one has (the tests run as root, who owns everything else).

use std::os::unix::fs::chown;

use super::rootless::{describe, DelegationError};
use super::tests::{fake_v1_root, fake_v2_root};
use super::*;

/// The user the imitations delegate to.
const UID: u32 = 4242;
const SESSION: &str = "user.slice/user-4242.slice/user@4242.service";
/// The process's own cgroup, as `/proc/self/cgroup` shows it on a v2 host.
const SELF_CGROUP: &str = "0::/user.slice/user-4242.slice/user@4242.service/app.slice/kiln.scope\n";

/// Makes the cgroup `rel` below `root` with its interface files; `owner` gets the dir and the
/// files delegation chowns (`cgroup.procs`, `cgroup.subtree_control`).
fn cgroup(root: &Path, rel: &str, owner: u32, controllers: &str, procs: &str) -> PathBuf {
    let dir = root.join(rel);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("cgroup.controllers"), format!("{controllers}\n")).unwrap();
    fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
    fs::write(dir.join("cgroup.procs"), procs).unwrap();
    fs::write(dir.join("cgroup.type"), "domain\n").unwrap();
    for path in [
        dir.clone(),
        dir.join("cgroup.procs"),
        dir.join("cgroup.subtree_control"),
    ] {
        chown(&path, Some(owner), Some(owner)).unwrap();
    }
    dir
}

/// systemd's tree for a logged-in user: root's slices, then the user's manager, delegated
/// to `UID` when `delegated`, with `controllers`, and the process in `app.slice/kiln.scope`.
fn session_tree(delegated: bool, controllers: &str) -> tempfile::TempDir {
    let root = fake_v2_root();
    let user = if delegated { UID } else { 0 };
    cgroup(root.path(), "user.slice", 0, "cpu io memory pids", "");
    cgroup(
        root.path(),
        "user.slice/user-4242.slice",
        0,
        "cpu io memory pids",
        "",
    );
    cgroup(root.path(), SESSION, user, controllers, "");
    let app = format!("{SESSION}/app.slice");
    cgroup(root.path(), &app, user, controllers, "");
    cgroup(
        root.path(),
        &format!("{app}/kiln.scope"),
        user,
        controllers,
        "1234\n",
    );
    root
}

#[test]
fn the_users_manager_is_found_in_a_delegated_tree() {
    require_root!("chown to a fake uid");
    let root = session_tree(true, "cpu io memory pids");
    let dir = delegated_root(root.path(), SELF_CGROUP, UID).unwrap();
    assert_eq!(dir, root.path().join(SESSION));
    let report = describe(root.path(), SELF_CGROUP, UID);
    assert_eq!(report.mode, Some(CgroupMode::V2));
    assert_eq!(report.dir, Some(dir.clone()));
    assert_eq!(report.present, ["memory", "cpu", "pids", "io"]);
    assert!(report.missing.is_empty());
    assert!(report.problem.is_none(), "{:?}", report.problem);
    // What the runtime does with it: kiln's cgroups below it, as below a root.
    let cg = Cgroup::create(&dir, "rootless", &Resources::default()).unwrap();
    assert_eq!(cg.paths(), [dir.join("kiln/kiln-rootless")]);
    cg.remove().unwrap();
}

#[test]
fn a_tree_the_user_cannot_write_is_never_returned() {
    require_root!("chown to a fake uid");
    // systemd without delegation: the user's manager is root's.
    let root = session_tree(false, "cpu io memory pids");
    let err = delegated_root(root.path(), SELF_CGROUP, UID).unwrap_err();
    match &err {
        DelegationError::NotDelegated { dir, uid } => {
            assert_eq!(dir, &root.path().join(SESSION));
            assert_eq!(*uid, UID);
        }
        other => panic!("{other:?}"),
    }
    assert!(err
        .hint()
        .unwrap()
        .contains("Delegate=cpu cpuset io memory pids"));
    assert!(err.hint().unwrap().contains("systemctl daemon-reload"));

    // The dir is the user's but a file kiln writes is not, or lacks its owner's write bit:
    // the level below, which is wholly the user's, is chosen instead.
    let root = session_tree(true, "cpu io memory pids");
    chown(
        root.path().join(SESSION).join("cgroup.subtree_control"),
        Some(0),
        Some(0),
    )
    .unwrap();
    let app = root.path().join(SESSION).join("app.slice");
    assert_eq!(delegated_root(root.path(), SELF_CGROUP, UID).unwrap(), app);
    let procs = app.join("cgroup.procs");
    fs::set_permissions(&procs, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    assert!(matches!(
        delegated_root(root.path(), SELF_CGROUP, UID),
        Err(DelegationError::NoFreeCgroup { .. })
    ));
}

#[test]
fn a_process_outside_a_user_session_is_told_how_to_get_one() {
    require_root!("chown to a fake uid");
    let root = session_tree(true, "cpu io memory pids");
    cgroup(
        root.path(),
        "system.slice/ssh.service",
        0,
        "cpu memory pids",
        "77\n",
    );
    let err = delegated_root(root.path(), "0::/system.slice/ssh.service\n", UID).unwrap_err();
    assert!(
        matches!(&err, DelegationError::NotInUserSession { uid: UID, .. }),
        "{err:?}"
    );
    assert!(err.hint().unwrap().contains("systemd-run --user --scope"));
    assert!(err.hint().unwrap().contains("loginctl enable-linger"));
}

#[test]
fn cgroup_v1_and_hybrid_hosts_have_no_delegation() {
    let v1 = fake_v1_root(&["memory", "cpu", "pids"]);
    let err = delegated_root(v1.path(), "4:memory:/\n0::/\n", UID).unwrap_err();
    assert!(
        matches!(err, DelegationError::V1 { hybrid: false }),
        "{err:?}"
    );
    assert!(err.to_string().contains("cgroup v1"));
    assert!(err
        .hint()
        .unwrap()
        .contains("systemd.unified_cgroup_hierarchy=1"));
    fs::create_dir(v1.path().join("unified")).unwrap();
    fs::write(v1.path().join("unified/cgroup.controllers"), "").unwrap();
    let err = delegated_root(v1.path(), "4:memory:/\n0::/\n", UID).unwrap_err();
    assert!(
        matches!(err, DelegationError::V1 { hybrid: true }),
        "{err:?}"
    );
    assert!(err.to_string().contains("hybrid"));
    let nothing = tempfile::tempdir().unwrap();
    assert!(matches!(
        delegated_root(nothing.path(), SELF_CGROUP, UID),
        Err(DelegationError::NotMounted(_))
    ));
}

#[test]
fn missing_controllers_are_listed() {
    require_root!("chown to a fake uid");
    // systemd's default delegation: memory and pids only.
    let root = session_tree(true, "memory pids");
    let err = delegated_root(root.path(), SELF_CGROUP, UID).unwrap_err();
    match &err {
        DelegationError::ControllersMissing { dir, missing } => {
            assert_eq!(dir, &root.path().join(SESSION));
            assert_eq!(missing, &["cpu"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().ends_with("lacks the cpu controller"),
        "{err}"
    );
    assert!(err.hint().unwrap().contains("delegate.conf"));
    let report = describe(root.path(), SELF_CGROUP, UID);
    assert_eq!(report.dir, Some(root.path().join(SESSION)));
    assert_eq!(report.present, ["memory", "pids"]);
    assert_eq!(report.missing, ["cpu"]);
    assert!(matches!(
        report.problem,
        Some(DelegationError::ControllersMissing { .. })
    ));

    let root = session_tree(true, "io");
    let err = delegated_root(root.path(), SELF_CGROUP, UID).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("lacks the memory, cpu, pids controllers"),
        "{err}"
    );
}

#[test]
fn a_cgroup_with_processes_is_skipped_and_the_own_leaf_never_returned() {
    require_root!("chown to a fake uid");
    // The manager itself holds a process: the next level down without one is chosen.
    let root = session_tree(true, "cpu io memory pids");
    fs::write(root.path().join(SESSION).join("cgroup.procs"), "99\n").unwrap();
    assert_eq!(
        delegated_root(root.path(), SELF_CGROUP, UID).unwrap(),
        root.path().join(SESSION).join("app.slice")
    );
    // Only the process's own cgroup is the user's, and it holds the process.
    let root = session_tree(false, "cpu io memory pids");
    let leaf = root.path().join(SESSION).join("app.slice/kiln.scope");
    for path in [
        leaf.clone(),
        leaf.join("cgroup.procs"),
        leaf.join("cgroup.subtree_control"),
    ] {
        chown(&path, Some(UID), Some(UID)).unwrap();
    }
    let err = delegated_root(root.path(), SELF_CGROUP, UID).unwrap_err();
    match &err {
        DelegationError::NoFreeCgroup { top, uid } => {
            assert_eq!(top, &leaf);
            assert_eq!(*uid, UID);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.hint().unwrap().contains("systemd-run --user --scope"));
}

#[test]
fn membership_text_without_a_v2_path_is_refused() {
    let root = fake_v2_root();
    for text in ["", "4:memory:/x\n", "0::relative\n", "0::/a/../b\n"] {
        assert!(
            matches!(
                delegated_root(root.path(), text, UID),
                Err(DelegationError::NoV2Membership(_))
            ),
            "{text:?}"
        );
    }
    assert!(matches!(
        delegated_root(root.path(), "0::/not/there\n", UID),
        Err(DelegationError::OwnCgroupMissing(_))
    ));
}

#[test]
fn root_uses_the_cgroupfs_root_in_either_version() {
    let v1 = fake_v1_root(&["memory", "cpu", "pids"]);
    let report = describe(v1.path(), "4:memory:/\n0::/\n", 0);
    assert_eq!(report.mode, Some(CgroupMode::V1));
    assert_eq!(report.dir.as_deref(), Some(v1.path()));
    assert_eq!(report.present, ["memory", "cpu", "pids"]);
    assert_eq!(report.missing, ["devices"]);
    assert!(report.problem.is_none());

    let v2 = fake_v2_root();
    let report = describe(v2.path(), "0::/init.scope\n", 0);
    assert_eq!(report.mode, Some(CgroupMode::V2));
    assert_eq!(report.dir.as_deref(), Some(v2.path()));
    assert_eq!(report.present, ["memory", "cpu", "pids", "io", "cpuset"]);
    assert!(report.missing.is_empty());
    assert!(report.problem.is_none());
}
