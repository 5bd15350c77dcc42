//! The value languages of a container's process-level controls, with Docker's names and
//! rules: `--ulimit NAME=SOFT[:HARD]`, `--sysctl KEY=VALUE` and
//! `--device HOST[:CONTAINER[:PERMISSIONS]]`, and the same values under `run:`.
//!
//! Here, in the spec crate, so that a flag and a spec key are read by one parser and
//! refused with the same words. What they mean to the kernel (rlimit numbers, `/proc/sys`
//! paths, device numbers) is the runtime's business; this file only decides which values
//! are well formed and, for sysctls, which keys a container may set at all.

use std::path::PathBuf;

use super::error::did_you_mean;
use super::model::{Device, Ulimit};
use super::units::Invalid;

type Parsed<T> = Result<T, Invalid>;

/// The limit names `docker run --ulimit` takes, in its order (each is `RLIMIT_<NAME>`).
#[rustfmt::skip]
pub(crate) const ULIMIT_NAMES: [&str; 15] = [
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
    "rss", "rtprio", "rttime", "sigpending", "stack",
];

/// The value that means "no limit" (the kernel's `RLIM_INFINITY`).
pub const UNLIMITED: u64 = u64::MAX;

const ULIMIT_HINT: &str =
    "write NAME=SOFT[:HARD], e.g. nofile=1024:4096; -1 or unlimited for no limit";

/// `NAME=SOFT[:HARD]`; HARD defaults to SOFT.
pub(crate) fn parse_ulimit(text: &str) -> Parsed<Ulimit> {
    let (name, limits) = text
        .split_once('=')
        .ok_or_else(|| Invalid::new(format!("{text:?} is not NAME=SOFT[:HARD]"), ULIMIT_HINT))?;
    let (soft, hard) = match limits.split_once(':') {
        Some((soft, hard)) => (soft, Some(hard)),
        None => (limits, None),
    };
    let soft = ulimit_value(name, soft)?;
    let hard = hard.map(|h| ulimit_value(name, h)).transpose()?;
    ulimit(name, soft, hard.unwrap_or(soft))
}

/// A checked limit: a known name and soft ≤ hard.
pub(crate) fn ulimit(name: &str, soft: u64, hard: u64) -> Parsed<Ulimit> {
    let name = ulimit_name(name)?;
    if soft > hard {
        return Err(Invalid::new(
            format!(
                "the soft limit {} of {name} is above its hard limit {}",
                limit_text(soft),
                limit_text(hard)
            ),
            "the soft limit must be at most the hard limit, e.g. nofile=1024:4096",
        ));
    }
    Ok(Ulimit {
        name: name.to_owned(),
        soft,
        hard,
    })
}

/// A known ulimit name, in Docker's spelling (lower case).
pub(crate) fn ulimit_name(name: &str) -> Parsed<&'static str> {
    let lower = name.trim().to_ascii_lowercase();
    ULIMIT_NAMES
        .iter()
        .find(|n| **n == lower)
        .copied()
        .ok_or_else(|| Invalid {
            message: format!("unknown ulimit {name:?}"),
            hint: Some(
                did_you_mean(&lower, ULIMIT_NAMES).unwrap_or_else(|| {
                    format!("the names are docker's: {}", ULIMIT_NAMES.join(", "))
                }),
            ),
        })
}

/// A number, `-1` or `unlimited`.
pub(crate) fn ulimit_value(name: &str, text: &str) -> Parsed<u64> {
    match text.trim() {
        "-1" | "unlimited" | "infinity" => Ok(UNLIMITED),
        t => t.parse::<u64>().map_err(|_| {
            Invalid::new(
                format!("{text:?} is not a limit for {name}"),
                "a limit is a whole number of at least 0, or -1 or unlimited for no limit",
            )
        }),
    }
}

/// A limit as docker prints it.
fn limit_text(value: u64) -> String {
    match value {
        UNLIMITED => "unlimited".into(),
        n => n.to_string(),
    }
}

/// The System V IPC sysctls a container's own IPC namespace has (Docker's list).
pub(crate) const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

const SYSCTL_HINT: &str = "a container may set only the sysctls of its own namespaces: \
    kernel.msgmax, kernel.msgmnb, kernel.msgmni, kernel.sem, kernel.shmall, kernel.shmmax, \
    kernel.shmmni, kernel.shm_rmid_forced, kernel.domainname, fs.mqueue.* and net.*";

/// `KEY=VALUE` with a key a container may set; the key keeps its dotted form.
pub(crate) fn parse_sysctl(text: &str) -> Parsed<(String, String)> {
    let (key, value) = text.split_once('=').ok_or_else(|| {
        Invalid::new(
            format!("{text:?} is not KEY=VALUE"),
            "e.g. kernel.shmmax=1073741824 or net.ipv4.ip_forward=1",
        )
    })?;
    sysctl(key, value)
}

/// A sysctl a container may set: one of its own namespaces' (SECURITY.md: a container
/// must never change the host's kernel), as Docker and runc decide it.
pub(crate) fn sysctl(key: &str, value: &str) -> Parsed<(String, String)> {
    let key = key.trim();
    let well_formed = !key.is_empty()
        && key
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(sysctl_byte));
    if !well_formed {
        return Err(Invalid::new(
            format!("{key:?} is not a sysctl name"),
            "a sysctl name is dotted words, e.g. kernel.shmmax or net.ipv4.ip_forward",
        ));
    }
    if key == "kernel.hostname" {
        return Err(Invalid::new(
            "sysctl kernel.hostname cannot be set: kiln sets the container's host name",
            "use --hostname (run: hostname:) instead",
        ));
    }
    if !is_namespaced(key) {
        return Err(Invalid::new(
            format!("sysctl {key} is not allowed: it is not in the container's own namespaces, so it would change the host's kernel"),
            SYSCTL_HINT,
        ));
    }
    if value.is_empty() || value.contains(['\n', '\0']) {
        return Err(Invalid::new(
            format!("sysctl {key}: the value {value:?} is empty or holds a line break"),
            "e.g. kernel.shmmax=1073741824; several numbers are separated by spaces",
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn sysctl_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Whether `key` belongs to a namespace every kiln container has of its own: IPC (the
/// System V list and POSIX message queues), UTS (`kernel.domainname`; runc allows it, and
/// kiln sets the host name itself) or network (`net.*`, only without `--network host`,
/// which the caller checks with [`needs_own_network`]).
fn is_namespaced(key: &str) -> bool {
    IPC_SYSCTLS.contains(&key)
        || key == "kernel.domainname"
        || key.starts_with("fs.mqueue.")
        || needs_own_network(key)
}

/// Whether the sysctl is the network namespace's, so a container sharing the host's
/// network must not set it.
pub fn needs_own_network(key: &str) -> bool {
    key.starts_with("net.")
}

const DEVICE_HINT: &str = "write HOST[:CONTAINER[:PERMISSIONS]], e.g. /dev/fuse or \
    /dev/sdb:/dev/xvdb:r; PERMISSIONS are letters of rwm (read, write, mknod)";

/// `HOST[:CONTAINER[:PERMISSIONS]]` as docker reads it: a second part made only of `rwm`
/// letters is the permissions; the container path defaults to the host's; the
/// permissions to `rwm`.
pub(crate) fn parse_device(text: &str) -> Parsed<Device> {
    let parts: Vec<&str> = text.split(':').collect();
    let (host, container, access) = match parts.as_slice() {
        [host] => (*host, *host, "rwm"),
        [host, perms] if is_access(perms) => (*host, *host, *perms),
        [host, container] => (*host, *container, "rwm"),
        [host, container, perms] => (*host, *container, *perms),
        _ => {
            return Err(Invalid::new(
                format!("{text:?} is not a device"),
                DEVICE_HINT,
            ))
        }
    };
    device(host, container, access)
}

/// A checked device request: absolute paths, the container's under `/dev`.
pub(crate) fn device(host: &str, container: &str, access: &str) -> Parsed<Device> {
    if !host.starts_with('/') {
        return Err(Invalid::new(
            format!("the host path {host:?} must be absolute"),
            DEVICE_HINT,
        ));
    }
    if !is_access(access) {
        return Err(Invalid::new(
            format!("invalid permissions {access:?}"),
            "permissions are one or more of r (read), w (write) and m (mknod), e.g. rw",
        ));
    }
    let container = normal_dev_path(container).ok_or_else(|| {
        Invalid::new(
            format!("the container path {container:?} must be a file under /dev"),
            "device nodes can be opened only on the container's /dev, e.g. /dev/sdb:/dev/xvdb",
        )
    })?;
    Ok(Device {
        host: PathBuf::from(host),
        container,
        access: ["r", "w", "m"]
            .into_iter()
            .filter(|l| access.contains(l))
            .collect(),
    })
}

/// `rwm` letters, each at most once, at least one.
fn is_access(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 3
        && text.chars().all(|c| "rwm".contains(c))
        && !text.char_indices().any(|(i, c)| text[i + 1..].contains(c))
}

/// `/dev/...` without empty, `.` or `..` components, normalised (`/dev//sdb` → `/dev/sdb`);
/// `None` for anything else, including `/dev` itself.
fn normal_dev_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/dev/")?;
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let valid = !parts.is_empty() && parts.iter().all(|p| *p != "." && *p != "..");
    valid.then(|| format!("/dev/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_follow_dockers_rules() {
        let u = parse_ulimit("nofile=1024:4096").unwrap();
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("nofile", 1024, 4096));
        let u = parse_ulimit("NPROC=512").unwrap();
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("nproc", 512, 512));
        let u = parse_ulimit("core=-1:unlimited").unwrap();
        assert_eq!((u.soft, u.hard), (UNLIMITED, UNLIMITED));
        assert_eq!(parse_ulimit("core=0:-1").unwrap().hard, UNLIMITED);
        let err = parse_ulimit("nofile=4096:1024").unwrap_err();
        assert!(err
            .message
            .contains("soft limit 4096 of nofile is above its hard limit 1024"));
        let err = parse_ulimit("nofiles=1").unwrap_err();
        assert_eq!(err.hint.as_deref(), Some("did you mean \"nofile\"?"));
        assert!(parse_ulimit("bogus=1")
            .unwrap_err()
            .hint
            .unwrap()
            .contains("memlock"));
        for bad in [
            "nofile",
            "nofile=",
            "nofile=x",
            "nofile=1:",
            "nofile=-2",
            "nofile=1:2:3",
        ] {
            assert!(parse_ulimit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_sysctls_of_the_containers_namespaces_are_allowed() {
        for ok in [
            "kernel.shmmax=1073741824",
            "kernel.sem=250 32000 100 128",
            "fs.mqueue.msg_max=100",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=2",
            "kernel.domainname=example.org",
        ] {
            assert!(parse_sysctl(ok).is_ok(), "{ok}");
        }
        let err = parse_sysctl("kernel.panic=1").unwrap_err();
        assert!(
            err.message.contains("kernel.panic is not allowed"),
            "{err:?}"
        );
        assert!(err.hint.unwrap().contains("fs.mqueue.*"));
        for bad in ["vm.swappiness=10", "kernel.shmmaxx=1", "fs.file-max=1"] {
            assert!(parse_sysctl(bad)
                .unwrap_err()
                .message
                .contains("not allowed"));
        }
        let err = parse_sysctl("kernel.hostname=x").unwrap_err();
        assert!(err.hint.unwrap().contains("--hostname"));
        for bad in [
            "kernel.shmmax",
            "=1",
            "net..ipv4=1",
            "net/ipv4/ip_forward=1",
            "net.ipv4.ip_forward=",
            "net.ipv4.ip_forward=1\n2",
        ] {
            assert!(parse_sysctl(bad).is_err(), "{bad:?}");
        }
        assert!(needs_own_network("net.core.somaxconn"));
        assert!(!needs_own_network("kernel.shmmax"));
    }

    #[test]
    fn devices_are_read_as_docker_reads_them() {
        let d = parse_device("/dev/fuse").unwrap();
        assert_eq!(
            (d.host, d.container.as_str(), d.access.as_str()),
            (PathBuf::from("/dev/fuse"), "/dev/fuse", "rwm")
        );
        let d = parse_device("/dev/loop3:r").unwrap();
        assert_eq!(
            (d.container.as_str(), d.access.as_str()),
            ("/dev/loop3", "r")
        );
        let d = parse_device("/dev/loop3:/dev//xvda:mr").unwrap();
        assert_eq!(
            (d.container.as_str(), d.access.as_str()),
            ("/dev/xvda", "rm")
        );
        let d = parse_device("/dev/snd:/dev/audio/snd").unwrap();
        assert_eq!(d.container, "/dev/audio/snd");
        for bad in [
            "dev/fuse",
            "/dev/fuse:/fuse",
            "/dev/fuse:/dev",
            "/dev/fuse:/dev/../etc/x",
            "/dev/fuse:/dev/fuse:rx",
            "/dev/fuse:/dev/fuse:rr",
            "/dev/fuse:/dev/fuse:",
            "/a:/dev/b:r:x",
        ] {
            assert!(parse_device(bad).is_err(), "{bad}");
        }
    }
}
