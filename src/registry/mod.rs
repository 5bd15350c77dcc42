//! Talking to OCI distribution registries: `kiln pull`, `kiln push` and `kiln login`.
//!
//! Exists so images move between the local store and a registry with the same guarantees
//! the store gives locally: nothing becomes visible before it is complete and verified
//! (SECURITY.md rules 6–8). Pulled blobs stream into [`Store::new_blob`] with the
//! descriptor's size as a hard stop and are committed only when their digest matches;
//! manifests are read with a 4 MiB cap and their media type must agree with how they were
//! served (CVE-2021-41190). Pushes send each blob the registry lacks as one streaming PUT
//! straight from the blob file (or have the registry mount it from another of its
//! repositories, [`mounts`]), and the manifest last, byte for byte as stored.
//!
//! Why reqwest directly rather than oci-client (DESIGN.md §7 proposed the latter): every
//! step kiln needs is one oci-client does differently — it uploads every layer, pushes in
//! 4 MiB PATCH chunks, has no progress, reads manifests without kiln's media-type rules
//! and buffers blobs its own way. What would remain is the token dance, about a hundred
//! lines ([`auth`]), while oci-client would add chrono, regex, olpc-cjson, http-auth and
//! tracing to the build. reqwest strips `Authorization` on cross-host redirects, and kiln
//! attaches credentials only to URLs on the registry's own host (upload `Location`s may
//! point elsewhere).
//!
//! The rest of kiln is synchronous: each public function here builds a small tokio
//! runtime, runs one operation on it and drops it. Nothing here prints; events go to a
//! [`Progress`]. The caller (the CLI) unpacks layers and tags a pulled image, so this
//! module needs nothing above `image` and `store`.

mod auth;
mod error;
mod manifest;
mod mounts;
mod progress;
mod pull;
mod push;
mod retry;
mod transport;

use std::future::Future;
use std::path::PathBuf;

pub use auth::{login_key, logout, save_login, Credential};
pub use error::RegistryError;
pub use manifest::Platform;
pub use progress::{BlobOutcome, Progress, Silent};
pub use pull::{pull, Pulled};
pub use push::{push, Pushed};

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// How to reach registries: which hosts speak plain http and where credentials live.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `HOST[:PORT]` of registries reached over plain http besides the loopback ones.
    pub insecure: Vec<String>,
    /// Credential files in lookup order (podman's `auth.json`, docker's `config.json`).
    pub auth_files: Vec<PathBuf>,
}

/// Checks `user`/`password` against the registry's `/v2/` (including a bearer token
/// exchange when the registry asks for one). Nothing is stored.
pub fn verify_login(settings: &Settings, registry: &str, credential: &Credential) -> Result<()> {
    block_on(async {
        let client = transport::Client::for_login(settings, registry, credential.clone())?;
        client.ping().await
    })
}

/// Runs one registry operation on a fresh single-threaded runtime. One thread is enough:
/// the work is waiting on sockets; hashing runs as bytes arrive.
fn block_on<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RegistryError::Runtime)?;
    runtime.block_on(fut)
}

/// How many blobs move at once (DESIGN.md §7).
const PARALLEL_BLOBS: usize = 4;
