//! The default network of an ordinary user's kiln: pasta instead of kiln's bridge.
//!
//! A bridge, veths and nftables rules need root in the host's network namespace, which an
//! ordinary user's kiln (root only in its own user namespace) does not have; pasta gives
//! the step's or container's namespace an interface, outbound traffic through the user's
//! own sockets and the published ports ([`kiln_network::pasta`] says why pasta). Started
//! in the same clone → first-instruction window the bridge uses, stopped when the run
//! ends (Debian 12's pasta does not notice its namespace's end by itself).
//!
//! pasta, started by a kiln that is root in its user namespace, takes itself for root and
//! opens the namespace without the capabilities it dropped: a `/proc/PID/ns/net` it may
//! not open, a namespace file bound elsewhere it may. So the namespace is bound on a file
//! of the run's directory, in kiln's own mount namespace (`kiln_runtime::userns`), for as
//! long as pasta runs.

use std::path::{Path, PathBuf};

use kiln_network::pasta::{self, Pasta, PastaOptions};
use kiln_network::PortMapping;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::resolv::{resolv_conf, ResolverFor};

/// Whether `bridge` means pasta for this process: an ordinary user's kiln.
pub fn uses_pasta() -> bool {
    kiln_runtime::userns::rootless()
}

/// pasta serving one run, and the file its namespace is bound on.
#[derive(Debug)]
pub struct PastaNetwork {
    pasta: Pasta,
    anchor: PathBuf,
}

impl PastaNetwork {
    /// Ends pasta (its ports are free once this returns) and unbinds the namespace.
    pub fn stop(self) {
        self.pasta.stop();
        let _ = umount2(&self.anchor, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&self.anchor);
    }
}

/// Starts pasta for the network namespace of `pid` (a step's or container's first
/// process, just cloned), publishing `ports`; `dir` (the run's, private to the user)
/// gets pasta's PID file and the namespace's anchor.
pub fn attach_pasta(
    pid: i32,
    ports: &[PortMapping],
    dir: &Path,
) -> std::result::Result<PastaNetwork, String> {
    let anchor = dir.join("netns");
    bind_netns(pid, &anchor)
        .map_err(|e| format!("bind the network namespace on {}: {e}", anchor.display()))?;
    // What `kiln port`, `ps` and `inspect` show while it runs (pasta keeps no record).
    let record = dir.join(PORTS_FILE);
    serde_json::to_vec(ports)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&record, json))
        .map_err(|e| format!("write {}: {e}", record.display()))?;
    let options = PastaOptions {
        ports: ports.to_vec(),
        pid_file: dir.join("pasta.pid"),
    };
    match pasta::start(&anchor, None, &options) {
        Ok(pasta) => Ok(PastaNetwork { pasta, anchor }),
        Err(e) => {
            let _ = umount2(&anchor, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&anchor);
            Err(match e.hint() {
                Some(hint) => format!("{e} ({hint})"),
                None => e.to_string(),
            })
        }
    }
}

/// The file in a container's dir naming the ports its pasta publishes.
const PORTS_FILE: &str = "pasta-ports.json";

/// The ports the container's pasta publishes (its last run's; empty without a record).
pub fn published_ports(dir: &Path) -> Vec<PortMapping> {
    std::fs::read(dir.join(PORTS_FILE))
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default()
}

fn bind_netns(pid: i32, anchor: &Path) -> nix::Result<()> {
    // A file left by a killed run may still have a namespace bound on it.
    let _ = umount2(anchor, MntFlags::MNT_DETACH);
    std::fs::File::create(anchor)
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    mount(
        Some(&netns),
        anchor,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
}

/// Ends a pasta a killed runner left for the container whose directory is `dir` (it
/// would keep the container's published ports bound); before the directory goes.
pub fn end_left_pasta(dir: &Path) {
    let _ = pasta::end_left(&dir.join("pasta.pid"));
}

/// The resolv.conf of a step or container on pasta, from the host's: pasta's resolver
/// address, and the host's search and options lines.
pub fn pasta_resolv_conf(host: &str) -> String {
    resolv_conf(
        host,
        ResolverFor::Pasta {
            nameserver: pasta::NAMESERVER,
        },
    )
    .text
}
