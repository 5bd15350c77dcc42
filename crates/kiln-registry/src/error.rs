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
    /// No byte for the read timeout ([`crate::Timeouts::read`]).
    #[error("registry {host} stalled: no data for {} from {url}", seconds(.limit))]
    Stalled {
        host: String,
        url: String,
        limit: std::time::Duration,
    },
    /// A request that passed its overall deadline ([`crate::Timeouts::base`] plus its size
    /// at 10 KiB/s).
    #[error(
        "registry {host} is too slow: {url} did not finish within {} (the timeout of {} plus the size at 10 KiB/s); {received} bytes arrived",
        seconds(.limit),
        seconds(.base)
    )]
    TooSlow {
        host: String,
        url: String,
        limit: std::time::Duration,
        base: std::time::Duration,
        received: u64,
    },
    /// An answer longer than kiln reads (error bodies, tokens, manifests).
    #[error("{url}: the answer is larger than {limit} bytes")]
    BodyTooLarge { url: String, limit: usize },
    #[error("{registry}: authentication required{}", hint_suffix(.detail))]
    Unauthorized { registry: String, detail: String },
    /// The registry's token service was not trusted with the credentials (SECURITY.md §3
    /// rule 16), so kiln asked it for an anonymous token, and that was not enough.
    #[error(
        "{registry}: authentication required: the token service {realm} is not trusted with \
         credentials ({why}), so kiln asked it for an anonymous token{}",
        hint_suffix(.detail)
    )]
    CredentialsWithheld {
        registry: String,
        /// The realm's `HOST[:PORT]`.
        realm: String,
        why: Withheld,
        detail: String,
    },
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
    #[error("no image for {wanted} in {reference} (it has: {available})")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    /// A document or blob that is not what its descriptor says, or past a bound.
    #[error("{reference}: {source}")]
    Incoming {
        reference: String,
        source: Box<kiln_image::incoming::IncomingError>,
    },
    #[error("blob {digest}: {why}")]
    Blob { digest: Digest, why: String },
    #[error("blob {digest}: {why}")]
    Unpack { digest: Digest, why: String },
    #[error("{layer}: {source}")]
    Layer {
        layer: Box<kiln_image::incoming::Described>,
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

/// Why a token service does not get the registry's credentials (`realm::trust`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Withheld {
    #[error(
        "its host is not the registry's, shares no registrable domain with it and is not \
         listed under trusted_token_realms"
    )]
    Host,
    #[error(
        "it is plain http and the registry is not a plain-http registry on its host or loopback"
    )]
    PlainHttp,
}

/// A `trusted_token_realms:` entry that is not a `HOST`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrustedRealmError {
    #[error("a trusted token realm is empty")]
    Empty,
    #[error("trusted token realm {0:?}: give the HOST only, without a scheme or path")]
    SchemeOrPath(String),
    #[error("trusted token realm {0:?}: give the HOST only, without a port (any port of the host is trusted)")]
    Port(String),
    #[error("trusted token realm {0:?} is not a HOST")]
    NotAHost(String),
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

fn seconds(d: &std::time::Duration) -> String {
    crate::deadline::seconds(d)
}

/// `HOST` of a `HOST[:PORT]` (`[v6]:port` keeps its brackets).
fn realm_host(host_port: &str) -> &str {
    match host_port.rsplit_once(':') {
        Some((host, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            host
        }
        _ => host_port,
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
    /// The image `reference` names is refused: `source` says why.
    pub(crate) fn incoming(
        reference: impl Into<String>,
        source: kiln_image::incoming::IncomingError,
    ) -> RegistryError {
        RegistryError::Incoming {
            reference: reference.into(),
            source: Box::new(source),
        }
    }

    /// Whether trying the same request again may succeed (5xx, 429, broken connections).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            RegistryError::Connect { .. } | RegistryError::Stalled { .. } => true,
            RegistryError::Status { status, .. } => *status == 429 || *status >= 500,
            RegistryError::Challenge {
                source: ChallengeError::TokenStatus(status),
                ..
            } => *status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
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
            RegistryError::Incoming { source, .. } => Some(source.hint()),
            RegistryError::Layer { source, .. } => source.hint(),
            RegistryError::Stalled { .. } => Some(
                "a registry may send nothing for read_timeout: seconds (default 60) in kiln's config file".into(),
            ),
            RegistryError::TooSlow { .. } => Some(
                "each request may take timeout: seconds (default 60) in kiln's config file, plus its size at 10 KiB/s".into(),
            ),
            RegistryError::CredentialsWithheld {
                realm,
                why: Withheld::Host,
                ..
            } => {
                let host = realm_host(realm);
                Some(format!(
                    "if {host} is the registry's own token service, list {host} under \
                     trusted_token_realms: in kiln's config file"
                ))
            }
            RegistryError::CredentialsWithheld {
                why: Withheld::PlainHttp,
                ..
            } => Some("the registry must name an https token service".into()),
            e @ RegistryError::Connect { .. } if e.is_tls() => {
                Some("a registry without TLS must be listed under insecure_registries: in kiln's config file".into())
            }
            _ => None,
        }
    }
}
