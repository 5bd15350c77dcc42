//! What can go wrong talking to a registry, worded for docker and podman users. No
//! message ever includes a password, a token or an `Authorization` header.

use kiln_image::ImageError;
use kiln_store::{Digest, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot start the network runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("{url}: {why}")]
    Connect { url: String, why: String },
    #[error("{registry}: authentication required{}", hint_suffix(.detail))]
    Unauthorized { registry: String, detail: String },
    #[error("{registry}: access denied to {repository}: {detail}")]
    Denied {
        registry: String,
        repository: String,
        detail: String,
    },
    #[error("{what} not found: {url}")]
    NotFound { what: String, url: String },
    #[error("{method} {url}: the registry answered {status}{}", hint_suffix(.detail))]
    Status {
        method: String,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{registry}: the authentication challenge is unusable: {source}")]
    Challenge {
        registry: String,
        source: ChallengeError,
    },
    #[error("manifest {reference}: {why}")]
    BadManifest { reference: String, why: String },
    #[error("manifest {reference} is larger than 4 MiB")]
    ManifestTooLarge { reference: String },
    #[error("no image for {wanted} in {reference} (it has: {available})")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    #[error("blob {digest}: the registry sent {got} bytes, the manifest says {expected}")]
    BlobSize {
        digest: Digest,
        expected: u64,
        got: u64,
    },
    #[error("blob {digest}: {why}")]
    Blob { digest: Digest, why: String },
    #[error("blob {digest}: {why}")]
    Unpack { digest: Digest, why: String },
    #[error("layer {digest}: {source}")]
    Layer {
        digest: Digest,
        source: kiln_layer::LayerError,
    },
    #[error("credentials: {0}")]
    Credentials(#[from] CredentialsError),
    #[error("{}: {why}", at(path, *line, *column))]
    Config {
        path: std::path::PathBuf,
        /// 1-based; 0 when the file could not be read at all.
        line: u64,
        column: u64,
        why: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// A descriptor's digest that is not kiln's is the image's fault, as when an image is
/// loaded.
impl From<kiln_store::digest::BadDigest> for RegistryError {
    fn from(e: kiln_store::digest::BadDigest) -> Self {
        RegistryError::Image(ImageError::BadDigest(e))
    }
}

/// Why stored credentials cannot be read or written. Never holds a secret: a helper's
/// output is not kept.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("credential helper docker-credential-{helper} failed for {key}")]
    Helper { helper: String, key: String },
    #[error("{}: {source}", file.display())]
    Lookup {
        file: std::path::PathBuf,
        source: docker_credential::CredentialRetrievalError,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The file is JSON, but not an object as docker's `config.json` is.
    #[error("{}: not a JSON object", .0.display())]
    NotAnObject(std::path::PathBuf),
    #[error("{}: `auths` is not an object", .0.display())]
    AuthsNotAnObject(std::path::PathBuf),
    #[error("{}: {source}", path.display())]
    Json {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
}

/// What is wrong with a `WWW-Authenticate` challenge, or the token flow it asks for.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    #[error("unsupported scheme {0:?}")]
    Scheme(String),
    #[error("no realm")]
    NoRealm,
    #[error("parameter {0:?} has no value")]
    NoValue(String),
    #[error("unterminated quoted value")]
    Unterminated,
    #[error("realm {realm:?}: {source}")]
    BadRealm {
        realm: String,
        source: url::ParseError,
    },
    /// A realm over plain http on a host that is not allowed to be insecure.
    #[error("refusing to send credentials to {0}")]
    InsecureRealm(String),
    #[error("the token service answered {0}")]
    TokenStatus(reqwest::StatusCode),
    #[error("token answer: {0}")]
    TokenAnswer(#[source] serde_json::Error),
    #[error("the token service sent no token")]
    NoToken,
}

/// An `insecure_registries:` entry that is not `HOST[:PORT]`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InsecureHostError {
    #[error("an insecure registry is empty")]
    Empty,
    #[error("insecure registry {0:?}: give HOST[:PORT] only, without a scheme or path")]
    SchemeOrPath(String),
    #[error("insecure registry {0:?} is not a HOST[:PORT]")]
    NotAHost(String),
}

/// An `OS/ARCH[/VARIANT]` platform that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64")]
pub struct PlatformError(pub String);

/// `FILE:LINE:COLUMN`, or just `FILE` when there is no position.
fn at(path: &std::path::Path, line: u64, column: u64) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}:{column}", path.display())
    }
}

fn hint_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

/// rustls' words for "the other side does not speak TLS" or "its certificate is bad".
fn looks_like_tls_failure(why: &str) -> bool {
    [
        "certificate",
        "corrupt message",
        "InvalidContentType",
        "tls handshake",
    ]
    .iter()
    .any(|w| why.contains(w))
}

impl RegistryError {
    /// Whether trying the same request again may succeed (5xx, 429, broken connections).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            RegistryError::Connect { .. } => true,
            RegistryError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// A TLS handshake that failed: the registry speaks plain http, or its certificate
    /// is not trusted. Trying again does not help.
    pub fn is_tls(&self) -> bool {
        matches!(self, RegistryError::Connect { why, .. } if looks_like_tls_failure(why))
    }

    /// A hint for the user, when one helps. It names kiln's config file, not a flag: a
    /// caller with a command line may name its own (see [`RegistryError::is_tls`]).
    pub fn hint(&self) -> Option<String> {
        match self {
            RegistryError::Unauthorized { registry, .. } => {
                Some(format!("log in with: kiln login {registry}"))
            }
            e @ RegistryError::Connect { .. } if e.is_tls() => {
                Some("a registry without TLS must be listed under insecure_registries: in kiln's config file".into())
            }
            _ => None,
        }
    }
}
