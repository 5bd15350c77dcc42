//! `kiln check`: whether this host lets the running user build and run containers, and the
//! command that fixes each thing that does not.
//!
//! Exists because rootless container tools fail far from the cause: a missing subuid range
//! shows up as an `EINVAL` from `newuidmap` at the first `chown` in a build, a missing
//! cgroup delegation as a limit that does nothing. Each check here tries the real thing
//! where it can (a user namespace, an overlay mounted inside one) rather than guessing from
//! configuration, and reports the errno.
//!
//! What is *needed* depends on the user: as root kiln uses no user namespace, no subordinate
//! ids and its own bridge network, but always a cgroup; as an ordinary user it needs the
//! user namespace, the ids, the setuid mappers, overlayfs in the namespace and a user-mode
//! network (pasta, with /dev/net/tun), while cgroup delegation only makes resource limits
//! possible (`kiln run` without limits works without it). The exit code is 1 when something
//! needed is missing; what is missing but optional is reported without failing.
//!
//! The probes fork: kiln has threads by now, so a forked child makes raw system calls only,
//! on C strings prepared before the fork, and reports (stage, errno) over a pipe.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use kiln_cgroups::rootless::{describe, CgroupReport, DelegationError};
use kiln_cgroups::{CgroupMode, DEFAULT_CGROUP_ROOT};
use kiln_runtime::idmap::{subordinate_ranges, unused_range, IdRange};

use super::{CmdResult, Globals, EXIT_USER_ERROR};

#[derive(Args, Debug)]
#[command(
    about = "Check that this host lets the running user build and run containers",
    long_about = "Check that this host lets the running user build and run containers: user \
                  namespaces, subordinate ids, newuidmap/newgidmap, overlayfs in a user \
                  namespace, cgroups (delegation, for limits as an ordinary user) and pasta with \
                  /dev/net/tun. Each missing piece comes with the command that fixes it. Exits 1 \
                  when something kiln needs as this user is missing.",
    after_help = "Examples:\n  kiln check                       # one line per check, then a summary\n  kiln check --json | jq '.[] | select(.ok | not)'"
)]
pub struct CheckArgs {
    /// Print a JSON array of {check, ok, needed, detail, fix} instead of lines
    #[arg(long)]
    json: bool,
}

/// One line of the report.
struct Check {
    /// A stable name, also the JSON's `check`.
    name: &'static str,
    ok: bool,
    /// Whether kiln cannot work as this user without it (exit code 1 if not ok).
    needed: bool,
    detail: String,
    /// The command(s) that fix it, when not ok.
    fix: Option<String>,
}

/// Who kiln runs as.
struct User {
    uid: u32,
    gid: u32,
    /// The login name, or the uid when the passwd database has none.
    name: String,
}

impl User {
    fn current() -> User {
        let uid = nix::unistd::geteuid().as_raw();
        let name = nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        User {
            uid,
            gid: nix::unistd::getegid().as_raw(),
            name,
        }
    }

    fn is_root(&self) -> bool {
        self.uid == 0
    }
}

pub fn check(globals: &Globals, args: CheckArgs) -> CmdResult {
    let user = User::current();
    let checks = [
        user_namespaces(&user),
        subordinate_ids(&user),
        id_mappers(&user),
        overlay_in_user_namespace(&user, &globals.root),
        cgroups(&user),
        user_mode_network(&user),
    ];
    if args.json {
        println!("{}", json_report(&checks));
    } else {
        print_report(&user, &checks);
    }
    let works = checks.iter().all(|c| c.ok || !c.needed);
    Ok(if works { 0 } else { EXIT_USER_ERROR })
}

fn print_report(user: &User, checks: &[Check]) {
    for c in checks {
        let status = match (c.ok, c.needed) {
            (true, _) => "ok",
            (false, true) => "missing",
            (false, false) => "optional",
        };
        println!("{status:<9}{:<18}{}", c.name, c.detail);
        if let (false, Some(fix)) = (c.ok, &c.fix) {
            println!("{:27}fix: {fix}", "");
        }
    }
    println!("{}", summary(user, checks));
}

/// The last line: whether kiln works as this user, and what is missing.
fn summary(user: &User, checks: &[Check]) -> String {
    let names = |needed: bool| -> Vec<&str> {
        checks
            .iter()
            .filter(|c| !c.ok && c.needed == needed)
            .map(|c| c.name)
            .collect()
    };
    let (missing, optional) = (names(true), names(false));
    let who = format!("{} (uid {})", user.name, user.uid);
    let mut line = if missing.is_empty() {
        format!("kiln can build and run containers as {who}")
    } else {
        format!(
            "kiln cannot work as {who} until this is fixed: {}",
            missing.join(", ")
        )
    };
    if !optional.is_empty() {
        line.push_str(&format!("; optional, missing: {}", optional.join(", ")));
    }
    line
}

fn json_report(checks: &[Check]) -> String {
    let items: Vec<_> = checks
        .iter()
        .map(|c| {
            json!({
                "check": c.name,
                "ok": c.ok,
                "needed": c.needed,
                "detail": c.detail,
                "fix": if c.ok { None } else { c.fix.clone() },
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

// ---- 1. user namespaces ----------------------------------------------------------------

/// The sysctls that switch unprivileged user namespaces off, and a try.
fn user_namespaces(user: &User) -> Check {
    let max = read_sysctl("/proc/sys/user/max_user_namespaces");
    let clone = read_sysctl("/proc/sys/kernel/unprivileged_userns_clone");
    let tried = in_child(&|| unshare_user_namespace());
    let mut check = Check {
        name: "user-namespaces",
        ok: false,
        // Root's containers share the host's user namespace.
        needed: !user.is_root(),
        detail: String::new(),
        fix: None,
    };
    let persist = |key: &str, value: &str| {
        format!("sysctl -w {key}={value} && echo {key}={value} > /etc/sysctl.d/50-kiln-userns.conf")
    };
    match (max, clone, tried) {
        (Some(0), ..) => {
            check.detail = "user.max_user_namespaces is 0: user namespaces are off".into();
            check.fix = Some(persist("user.max_user_namespaces", "28633"));
        }
        (_, Some(0), _) if !user.is_root() => {
            check.detail =
                "kernel.unprivileged_userns_clone is 0: only root may make user namespaces".into();
            check.fix = Some(persist("kernel.unprivileged_userns_clone", "1"));
        }
        (_, _, Err(e)) => check.detail = format!("cannot try unshare(CLONE_NEWUSER): {e}"),
        (_, _, Ok(Err((_, errno)))) => {
            check.detail = format!("unshare(CLONE_NEWUSER) fails: {}", errno_text(errno));
            check.fix = Some(match errno {
                libc::ENOSPC | libc::EUSERS => persist("user.max_user_namespaces", "28633"),
                _ => "run kiln on the host: a container engine's seccomp profile or a \
                      security module forbids user namespaces here"
                    .into(),
            });
        }
        (max, _, Ok(Ok(()))) => {
            check.ok = true;
            let max = max.map_or_else(|| "?".into(), |m| m.to_string());
            check.detail = format!("unshare(CLONE_NEWUSER) works (user.max_user_namespaces {max})");
        }
    }
    check
}

fn read_sysctl(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The child's probe: a user namespace and nothing else.
fn unshare_user_namespace() -> Result<(), (usize, i32)> {
    // SAFETY: a plain system call in the forked child.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return Err((0, errno()));
    }
    Ok(())
}

// ---- 2. subordinate ids ----------------------------------------------------------------

const SUBUID: &str = "/etc/subuid";
const SUBGID: &str = "/etc/subgid";
/// The ids a full mapping needs: every uid and gid an image may use (podman's default).
const FULL_RANGE: u32 = 65_536;

fn subordinate_ids(user: &User) -> Check {
    let mut check = Check {
        name: "subordinate-ids",
        ok: true,
        needed: !user.is_root(),
        detail: "not needed as root".into(),
        fix: None,
    };
    if user.is_root() {
        return check;
    }
    let (uids, gids) = (read_or_empty(SUBUID), read_or_empty(SUBGID));
    let uid_ranges = subordinate_ranges(&uids, &user.name, user.uid);
    let gid_ranges = subordinate_ranges(&gids, &user.name, user.uid);
    let (uid_ids, gid_ids) = (total(&uid_ranges), total(&gid_ranges));
    check.ok = uid_ids >= u64::from(FULL_RANGE) && gid_ids >= u64::from(FULL_RANGE);
    check.detail = format!(
        "{SUBUID}: {}; {SUBGID}: {}",
        describe_ranges(&uid_ranges),
        describe_ranges(&gid_ranges)
    );
    if !check.ok {
        check.detail.push_str(&format!(
            " (at least {FULL_RANGE} of each are needed to map an image's users)"
        ));
        check.fix = Some(match unused_range(&[&uids, &gids], FULL_RANGE) {
            Some(r) => {
                let range = format!("{}-{}", r.start, r.start + (r.count - 1));
                format!(
                    "usermod --add-subuids {range} --add-subgids {range} {}",
                    user.name
                )
            }
            None => format!(
                "free {FULL_RANGE} ids in {SUBUID} and {SUBGID} for {}",
                user.name
            ),
        });
    }
    check
}

/// A missing file grants nothing; so does one this user cannot read (kiln would fail the
/// same way newuidmap's caller does).
fn read_or_empty(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

fn total(ranges: &[IdRange]) -> u64 {
    ranges.iter().map(|r| u64::from(r.count)).sum()
}

/// `100000-165535 (65536 ids)`, or `none`.
fn describe_ranges(ranges: &[IdRange]) -> String {
    if ranges.is_empty() {
        return "none".into();
    }
    let listed: Vec<String> = ranges
        .iter()
        .map(|r| {
            format!(
                "{}-{}",
                r.start,
                u64::from(r.start) + u64::from(r.count) - 1
            )
        })
        .collect();
    format!("{} ({} ids)", listed.join(", "), total(ranges))
}

// ---- 3. newuidmap and newgidmap --------------------------------------------------------

/// `CAP_SETGID` and `CAP_SETUID`, the capabilities the mappers need.
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;

fn id_mappers(user: &User) -> Check {
    let results = [
        mapper("newuidmap", CAP_SETUID, "cap_setuid"),
        mapper("newgidmap", CAP_SETGID, "cap_setgid"),
    ];
    let ok = results.iter().all(|r| r.is_ok());
    let detail: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(d) | Err((d, _)) => d.clone(),
        })
        .collect();
    let mut fixes: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|(_, fix)| fix.clone()))
        .collect();
    // Both missing is one package to install.
    fixes.dedup();
    let mut detail = detail.join("; ");
    if user.is_root() {
        detail.push_str(" (not needed as root)");
    }
    Check {
        name: "id-mappers",
        ok,
        needed: !user.is_root(),
        detail,
        fix: (!ok).then(|| fixes.join(" && ")),
    }
}

/// One mapper: found, and able to act as root (setuid root, or the file capability).
/// `Ok(detail)` or `Err((detail, fix))`.
fn mapper(tool: &str, cap: u32, cap_name: &str) -> Result<String, (String, String)> {
    let Some(path) = find_program(tool) else {
        return Err((
            format!("{tool} not found"),
            "apt-get install uidmap".to_owned(),
        ));
    };
    let shown = path.display();
    let meta = fs::metadata(&path).map_err(|e| {
        (
            format!("{shown}: {e}"),
            "apt-get install --reinstall uidmap".to_owned(),
        )
    })?;
    let setuid_root = meta.uid() == 0 && meta.mode() & libc::S_ISUID != 0;
    let capable = file_capability(&path).is_some_and(|data| grants(&data, cap));
    if mounted_nosuid(&path) {
        return Err((
            format!("{shown} is on a filesystem mounted nosuid, which ignores setuid and file capabilities"),
            format!("mount {} without nosuid", mount_hint(&path)),
        ));
    }
    if nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK).is_err() {
        return Err((
            format!("{shown} is not executable by this user"),
            format!("chmod 4755 {shown}"),
        ));
    }
    match (setuid_root, capable) {
        (true, _) => Ok(format!("{shown} is setuid root")),
        (false, true) => Ok(format!("{shown} has {cap_name}")),
        (false, false) => Err((
            format!("{shown} is neither setuid root nor has {cap_name}"),
            format!("chmod 4755 {shown} (or: setcap {cap_name}+ep {shown})"),
        )),
    }
}

/// The first `name` in `$PATH`, then in the usual system dirs (a user's PATH may lack
/// `/usr/sbin`).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The raw `security.capability` extended attribute, if the file has one.
fn file_capability(path: &Path) -> Option<Vec<u8>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated; the buffer is ours and its length given.
    let n = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c"security.capability".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n > 0).then(|| buf[..n as usize].to_vec())
}

/// Whether a `vfs_cap_data` value puts capability `cap` in the permitted set with the
/// effective flag (the mappers are not capability-aware, so they need it effective). A
/// revision 3 value for a namespace's root (a non-zero root id) grants nothing on the host.
fn grants(data: &[u8], cap: u32) -> bool {
    let word = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            data.get(i * 4..i * 4 + 4)?.try_into().ok()?,
        ))
    };
    let Some(magic) = word(0) else {
        return false;
    };
    let words = match magic & 0xff00_0000 {
        0x0100_0000 => 1,
        0x0200_0000 => 2,
        0x0300_0000 if word(5) == Some(0) => 2,
        _ => return false,
    };
    let effective = magic & 1 != 0;
    let index = (cap / 32) as usize;
    // Words: magic, then (permitted, inheritable) per 32 capabilities.
    index < words
        && effective
        && word(1 + 2 * index).is_some_and(|permitted| permitted & (1 << (cap % 32)) != 0)
}

fn mounted_nosuid(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_NOSUID))
}

/// The dir holding `path`, to name in a remount hint.
fn mount_hint(path: &Path) -> String {
    path.parent()
        .map_or_else(|| "/".into(), |p| p.display().to_string())
}

// ---- 4. overlayfs in a user namespace --------------------------------------------------

/// The steps of the overlay probe, in order; the child reports the index of the one that
/// failed.
const OVERLAY_STAGES: [&str; 7] = [
    "unshare(CLONE_NEWUSER|CLONE_NEWNS)",
    "write /proc/self/setgroups",
    "write /proc/self/uid_map",
    "write /proc/self/gid_map",
    "make / private",
    "mount overlay (userxattr)",
    "remove a lower file (whiteout)",
];

/// Everything the child needs, as C strings made before the fork.
struct OverlayPlan {
    uid_map: CString,
    gid_map: CString,
    merged: CString,
    options: CString,
    /// A file of the lower dir, seen through the overlay: removing it makes a whiteout.
    lower_file: CString,
}

fn overlay_in_user_namespace(user: &User, store_root: &Path) -> Check {
    let mut check = Check {
        name: "overlay-userns",
        ok: false,
        needed: !user.is_root(),
        detail: String::new(),
        fix: None,
    };
    let result = ScratchDir::near(store_root).and_then(|scratch| {
        let plan = overlay_plan(user, &scratch.0)?;
        let outcome = in_child(&|| mount_overlay(&plan))?;
        Ok((scratch, outcome))
    });
    match result {
        Err(e) => check.detail = format!("cannot try: {e}"),
        Ok((scratch, Ok(()))) => {
            check.ok = true;
            check.detail = format!(
                "an overlay with userxattr mounts and takes whiteouts in a user namespace (on {})",
                scratch.0.parent().unwrap_or(Path::new("/")).display()
            );
        }
        Ok((scratch, Err((stage, errno)))) => {
            let stage = OVERLAY_STAGES.get(stage).copied().unwrap_or("?");
            check.detail = format!(
                "{stage} fails in a user namespace: {} (on {})",
                errno_text(errno),
                scratch.0.parent().unwrap_or(Path::new("/")).display()
            );
            check.fix = Some(
                "overlayfs in a user namespace needs Linux 5.11 or later and a filesystem \
                 with user xattrs (ext4, xfs, btrfs; tmpfs from 6.6): upgrade the kernel \
                 (Debian 12: apt-get install -t bookworm-backports linux-image-amd64)"
                    .into(),
            );
        }
    }
    if user.is_root() && !check.ok {
        check.detail.push_str(" (not needed as root)");
    }
    check
}

/// A dir of the probe's, removed on drop. Made beside the store (its parent dir), whose
/// filesystem the layers live on, so its xattr support is what is tried; in the temp dir
/// when that is not writable.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn near(store_root: &Path) -> io::Result<ScratchDir> {
        let name = format!(".kiln-check-{}", std::process::id());
        let bases = [
            store_root.parent().map(Path::to_path_buf),
            Some(std::env::temp_dir()),
        ];
        let mut last = io::Error::from(io::ErrorKind::NotFound);
        for base in bases.into_iter().flatten() {
            let dir = base.join(&name);
            match fs::create_dir(&dir) {
                Ok(()) => {
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
                    return Ok(ScratchDir(dir));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if fs::remove_dir_all(&self.0).is_err() {
            // overlayfs leaves `work/work` with mode 000, which only root can empty.
            let _ =
                fs::set_permissions(self.0.join("work/work"), fs::Permissions::from_mode(0o700));
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn overlay_plan(user: &User, dir: &Path) -> io::Result<OverlayPlan> {
    for sub in ["lower", "upper", "work", "merged"] {
        fs::create_dir(dir.join(sub))?;
    }
    fs::write(dir.join("lower/file"), "kiln check\n")?;
    let c = |s: &OsStr| CString::new(s.as_bytes()).map_err(io::Error::other);
    let options = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        dir.join("lower").display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    Ok(OverlayPlan {
        uid_map: c(OsStr::new(&format!("0 {} 1\n", user.uid)))?,
        gid_map: c(OsStr::new(&format!("0 {} 1\n", user.gid)))?,
        merged: c(dir.join("merged").as_os_str())?,
        options: c(OsStr::new(&options))?,
        lower_file: c(dir.join("merged/file").as_os_str())?,
    })
}

/// The child's probe: its own user and mount namespaces, itself mapped to root in them, an
/// overlay as kiln mounts it rootless, and a whiteout. Everything dies with the child.
fn mount_overlay(plan: &OverlayPlan) -> Result<(), (usize, i32)> {
    let fail = |stage| (stage, errno());
    // SAFETY: system calls on C strings prepared before the fork.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
            return Err(fail(0));
        }
        write_proc(c"/proc/self/setgroups", c"deny").map_err(|()| fail(1))?;
        write_proc(c"/proc/self/uid_map", &plan.uid_map).map_err(|()| fail(2))?;
        write_proc(c"/proc/self/gid_map", &plan.gid_map).map_err(|()| fail(3))?;
        let private = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            private,
            std::ptr::null(),
        ) != 0
        {
            return Err(fail(4));
        }
        let options = plan.options.as_ptr().cast();
        if libc::mount(
            c"overlay".as_ptr(),
            plan.merged.as_ptr(),
            c"overlay".as_ptr(),
            0,
            options,
        ) != 0
        {
            return Err(fail(5));
        }
        if libc::unlink(plan.lower_file.as_ptr()) != 0 {
            return Err(fail(6));
        }
    }
    Ok(())
}

/// One `write` of `value` to a /proc file, as the kernel wants id maps written.
///
/// # Safety
/// Raw system calls; fine in a forked child.
unsafe fn write_proc(path: &std::ffi::CStr, value: &std::ffi::CStr) -> Result<(), ()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(());
    }
    let bytes = value.to_bytes();
    let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
    let saved = errno();
    libc::close(fd);
    if written != bytes.len() as isize {
        *libc::__errno_location() = saved;
        return Err(());
    }
    Ok(())
}

// ---- 5. cgroups ------------------------------------------------------------------------

fn cgroups(user: &User) -> Check {
    let self_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let report = describe(Path::new(DEFAULT_CGROUP_ROOT), &self_cgroup, user.uid);
    let layout = match report.mode {
        Some(CgroupMode::V1) => "cgroup v1",
        Some(CgroupMode::Hybrid) => "cgroup v1 (hybrid)",
        Some(CgroupMode::V2) => "cgroup v2",
        None => "no cgroups",
    };
    let mut check = Check {
        name: "cgroups",
        ok: report.problem.is_none() && report.mode.is_some() && report.missing.is_empty(),
        // Root's containers always get a cgroup; a user's only when they ask for limits.
        needed: user.is_root(),
        detail: cgroup_detail(layout, &report),
        fix: None,
    };
    if let Some(problem) = &report.problem {
        check.detail = match problem {
            // Its words name the layout already.
            DelegationError::V1 { .. } => problem.to_string(),
            _ => format!("{layout}: {problem}"),
        };
        check.fix = problem.hint();
    } else if !report.missing.is_empty() {
        check.fix = Some(format!(
            "enable the {} controller(s) (kernel and boot options)",
            report.missing.join(", ")
        ));
    }
    if !check.ok && !user.is_root() {
        check.detail.push_str(
            "; kiln runs without limits, and a limit (--memory, --cpus, --pids-limit) fails",
        );
    }
    check
}

fn cgroup_detail(layout: &str, report: &CgroupReport) -> String {
    let dir = report
        .dir
        .as_ref()
        .map_or_else(|| "nowhere".into(), |d| d.display().to_string());
    let mut detail = format!(
        "{layout}; kiln's cgroups under {dir}; controllers: {}",
        report.present.join(" ")
    );
    if !report.missing.is_empty() {
        detail.push_str(&format!("; missing: {}", report.missing.join(" ")));
    }
    detail
}

// ---- 6. user-mode networking -----------------------------------------------------------

fn user_mode_network(user: &User) -> Check {
    let pasta = find_program("pasta");
    // pasta makes the container's interface from /dev/net/tun, opened as the user.
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun");
    let (ok, mut detail, fix) = match (&pasta, &tun) {
        (Some(path), Ok(_)) => (true, format!("{} and /dev/net/tun", path.display()), None),
        (None, _) => (
            false,
            "pasta not found: an ordinary user's containers have only --network none or host"
                .into(),
            Some("apt-get install passt".to_owned()),
        ),
        (Some(_), Err(e)) => (
            false,
            format!("pasta cannot open /dev/net/tun: {e}"),
            Some("chmod 0666 /dev/net/tun (udev's default mode)".to_owned()),
        ),
    };
    if user.is_root() {
        detail.push_str(" (not needed as root: kiln's bridge network)");
    }
    Check {
        name: "network",
        ok,
        needed: !user.is_root(),
        detail,
        fix,
    }
}

// ---- forked probes ---------------------------------------------------------------------

/// Runs `probe` in a forked child and returns what it reported: `Ok(())`, or the stage it
/// failed at and the errno. The outer error is the parent's own (fork, pipe, a crashed
/// child).
fn in_child(probe: &dyn Fn() -> Result<(), (usize, i32)>) -> io::Result<Result<(), (usize, i32)>> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array with two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: each fd is owned from here on.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child makes raw system calls only, then _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let record: [i32; 2] = match probe() {
            Ok(()) => [-1, 0],
            Err((stage, errno)) => [stage as i32, errno],
        };
        // SAFETY: a write of a stack array and _exit, in the child.
        unsafe {
            libc::write(
                std::os::fd::AsRawFd::as_raw_fd(&write),
                record.as_ptr().cast(),
                std::mem::size_of_val(&record),
            );
            libc::_exit(0);
        }
    }
    drop(write);
    let mut bytes = Vec::new();
    let read_result = fs::File::from(read).read_to_end(&mut bytes);
    let status =
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).map_err(io::Error::from)?;
    read_result?;
    let field = |i: usize| {
        bytes
            .get(i * 4..i * 4 + 4)
            .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
    };
    match (field(0), field(1)) {
        (Some(-1), Some(_)) => Ok(Ok(())),
        (Some(stage), Some(errno)) => Ok(Err((stage as usize, errno))),
        _ => Err(io::Error::other(format!(
            "the probe process ended without a report ({status:?})"
        ))),
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `EPERM (Operation not permitted)`.
fn errno_text(errno: i32) -> String {
    let e = nix::errno::Errno::from_raw(errno);
    format!("{e:?} ({})", e.desc())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `vfs_cap_data` of `revision` with `permitted` as the first word.
    fn caps(revision: u32, effective: bool, permitted: u32, rootid: u32) -> Vec<u8> {
        let mut words = vec![revision | u32::from(effective), permitted, 0];
        if revision >= 0x0200_0000 {
            words.extend([0, 0]);
        }
        if revision == 0x0300_0000 {
            words.push(rootid);
        }
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn file_capabilities_grant_only_permitted_effective_host_capabilities() {
        let setuid = 1 << CAP_SETUID;
        assert!(grants(&caps(0x0200_0000, true, setuid, 0), CAP_SETUID));
        assert!(!grants(&caps(0x0200_0000, true, setuid, 0), CAP_SETGID));
        assert!(!grants(&caps(0x0200_0000, false, setuid, 0), CAP_SETUID));
        assert!(grants(&caps(0x0100_0000, true, setuid, 0), CAP_SETUID));
        assert!(grants(&caps(0x0300_0000, true, setuid, 0), CAP_SETUID));
        // Set for a user namespace's root, not the host's.
        assert!(!grants(
            &caps(0x0300_0000, true, setuid, 100_000),
            CAP_SETUID
        ));
        assert!(!grants(&[], CAP_SETUID));
        assert!(!grants(&caps(0x0400_0000, true, setuid, 0), CAP_SETUID));
        // Capability 40 lives in the second word, which revision 1 does not have.
        assert!(!grants(&caps(0x0100_0000, true, u32::MAX, 0), 40));
    }

    #[test]
    fn ranges_are_shown_inclusive_with_their_total() {
        let r = |start, count| IdRange { start, count };
        assert_eq!(describe_ranges(&[]), "none");
        assert_eq!(
            describe_ranges(&[r(100_000, 65_536), r(300_000, 10)]),
            "100000-165535, 300000-300009 (65546 ids)"
        );
    }
}
