//! Talking to OCI distribution registries: `kiln pull`, `kiln push` and `kiln login`.
//!
//! Exists so images move between the local store and a registry with the same guarantees
//! the store gives locally: nothing becomes visible before it is complete and verified
//! (SECURITY.md rules 6–8). Pulled blobs stream into staged store blobs with the
//! descriptor's size as a hard stop and are checked against their digest; their layers
//! unpack while they arrive ([`unpack`]) and are checked against their diff_id; then one
//! sync makes everything durable and only then is it renamed into place. Manifests are read
//! with a 4 MiB cap and their media type must agree with how they were served
//! (CVE-2021-41190). Pushes send each blob the registry lacks straight from the blob file
//! (monolithic PUT, or for large blobs a resumable session, [`push`]), or have the
//! registry mount it from another of its repositories ([`blob_mounts`]), and the manifest
//! last, byte for byte as stored.
//!
//! Why reqwest directly rather than oci-client (ARCHITECTURE.md, `registry`): every
//! step kiln needs is one oci-client does differently — it uploads every layer, pushes in
//! 4 MiB PATCH chunks, has no progress, reads manifests without kiln's media-type rules
//! and buffers blobs its own way. What would remain is the token dance, about a hundred
//! lines ([`auth`]), while oci-client would add chrono, regex, olpc-cjson, http-auth and
//! tracing to the build. reqwest strips `Authorization` on cross-host redirects, and kiln
//! attaches credentials only to URLs on the registry's own host (upload `Location`s may
//! point elsewhere), and to a token service only when [`realm`] trusts it (SECURITY.md §3
//! rule 16).
//!
//! The rest of kiln is synchronous: each public function here builds a small tokio
//! runtime, runs one operation on it and drops it. Nothing here prints; events go to a
//! [`Progress`]. The caller (the CLI, or a build's `from:`) tags a pulled image, so this
//! module needs nothing above `image`, `layer` and `store`. Registries reached over plain
//! http come from the command line and kiln's config file ([`config`]).

mod auth;
mod blob_mounts;
mod build_cache;
mod config;
mod deadline;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod manifest;
mod pull;
mod push;
mod realm;
mod retry;
mod sink;
mod transport;
mod unpack;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use auth::{login_key, logout, save_login, Credential};
pub use build_cache::{fetch_cache, push_cache, RemoteCache, CACHE_MEDIA_TYPE};
pub use config::{read as read_config, FileConfig, Located};
pub use deadline::{Timeouts, MIN_RATE, READ_TIMEOUT, TIMEOUT};
pub use error::{
    ChallengeError, CredentialsError, InsecureHostError, PlatformError, RegistryError,
    TrustedRealmError, Withheld,
};
pub use manifest::Platform;
pub use pull::{pull, Pulled};
pub use push::{push, Pushed};
pub use retry::RETRY_TIME;

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// How to reach registries: which hosts speak plain http and where credentials live.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `HOST[:PORT]` of registries reached over plain http besides the loopback ones.
    pub insecure: Vec<String>,
    /// Credential files in lookup order (podman's `auth.json`, docker's `config.json`).
    pub auth_files: Vec<PathBuf>,
    /// What kiln's config file says ([`read_config`]): its `insecure_registries` add to
    /// `insecure`, its `trusted_token_realms` say which token services may see credentials,
    /// its `image_limits` bound what a pull accepts.
    pub config: FileConfig,
    /// `--timeout`: the base of every request's deadline, over the config file's `timeout`.
    pub timeout: Option<Duration>,
    /// `--read-timeout`: how long a request may send nothing, over `read_timeout`.
    pub read_timeout: Option<Duration>,
}

impl Settings {
    /// What applies to a client: the config file's registry settings (or the defaults when
    /// there is none) with the command line's on top — its insecure registries added, its
    /// `--timeout`/`--read-timeout` over the file's.
    fn effective(&self) -> FileConfig {
        let mut config = self.config.clone();
        config
            .insecure_registries
            .splice(0..0, self.insecure.iter().cloned());
        if let Some(t) = self.timeout {
            config.timeouts.base = t;
        }
        if let Some(t) = self.read_timeout {
            config.timeouts.read = t;
        }
        config
    }
}

/// Checks `user`/`password` against the registry's `/v2/` (including a bearer token
/// exchange when the registry asks for one). Nothing is stored.
pub fn verify_login(settings: &Settings, registry: &str, credential: &Credential) -> Result<()> {
    block_on(async {
        let client = transport::Client::for_login(settings, registry, credential.clone())?;
        client.ping().await
    })
}

/// Runs one registry operation on a fresh single-threaded runtime.
fn block_on<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    runtime()?.block_on(fut)
}

/// A single-threaded runtime. One thread is enough for the network: the work is waiting
/// on sockets and hashing bytes as they arrive; a pull unpacks on a thread of its own.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RegistryError::Runtime)
}

/// How many blobs a push sends at once (ARCHITECTURE.md, `registry`); a pull has its own figure.
const PARALLEL_BLOBS: usize = 4;
