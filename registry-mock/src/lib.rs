#![doc = include_str!("../README.md")]

mod auth;
mod blobs;
mod config;
mod digest;
mod errors;
mod faults;
/// Public for the fuzz target `fuzz/` only (read_request); not an API.
#[doc(hidden)]
pub mod http;
mod listing;
mod log;
mod manifests;
mod registry;
mod routes;
mod server;
mod storage;
mod uploads;
mod wire;

pub use config::{read_users_file, Action, AuthMode, Config, ConfigError, Storage, User};
pub use faults::{FaultError, Faults};
pub use log::{Listener, LogEntry};
pub use server::{Server, StartError};

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

/// `bytes` random bytes as hex, for upload session ids and tokens.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if random.is_err() {
        // Without /dev/urandom, ids need only be unique, not secret: this is a test tool.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = format!(
            "{:?} {} {}",
            std::time::SystemTime::now(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let hash = digest::Digest::sha256(seed.as_bytes()).to_string();
        let hex = hash.trim_start_matches("sha256:");
        return hex.chars().cycle().take(bytes * 2).collect();
    }
    hex::encode(buf)
}
