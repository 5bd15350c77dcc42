//! Credentials as docker and podman keep them, and the registry auth challenges.
//!
//! Reading goes through the docker_credential crate (which also runs `credsStore` and
//! `credHelpers` helpers), over the files the caller lists in lookup order. Writing
//! (`kiln login`) keeps everything else in the file and stores `auths.KEY.auth`, mode 0600.
//! Secrets are wrapped so that `Debug` never shows them.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine as _;

use super::{ChallengeError, CredentialsError, RegistryError, Result};
use kiln_store::reference::DOCKER_HUB;

/// Docker Hub's key in `config.json`, a remnant of the v1 API that every tool still uses.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        user: String,
        password: String,
    },
    /// A refresh token from an OAuth login (`identitytoken` in `config.json`).
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    /// The value of a `Basic` `Authorization` header.
    pub(super) fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

/// The key a registry's credentials are stored under (`docker.io` → Docker Hub's v1 URL).
pub fn login_key(registry: &str) -> String {
    if registry == DOCKER_HUB || registry == "index.docker.io" {
        DOCKER_HUB_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

/// The credentials for `registry` from the first file that has some.
pub(super) fn find_credential(
    files: &[std::path::PathBuf],
    registry: &str,
) -> Result<Option<Credential>> {
    // podman's auth.json uses `docker.io` where docker uses the v1 URL: try both.
    let mut keys = vec![login_key(registry)];
    if keys[0] != registry {
        keys.push(registry.to_owned());
    }
    for file in files {
        let Ok(bytes) = read_small(file) else {
            continue;
        };
        for key in &keys {
            use docker_credential::CredentialRetrievalError as E;
            match docker_credential::get_credential_from_reader(&bytes[..], key) {
                Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
                    return Ok(Some(Credential::Basic { user, password }))
                }
                Ok(docker_credential::DockerCredential::IdentityToken(t)) => {
                    return Ok(Some(Credential::IdentityToken(t)))
                }
                Err(E::NoCredentialConfigured | E::ConfigNotFound) => {}
                Err(E::HelperFailure { helper, .. }) => {
                    // The helper's output is not shown: it may hold secrets.
                    return Err(CredentialsError::Helper {
                        helper,
                        key: key.clone(),
                    }
                    .into());
                }
                Err(e) => {
                    return Err(CredentialsError::Lookup {
                        file: file.to_path_buf(),
                        source: e,
                    }
                    .into())
                }
            }
        }
    }
    Ok(None)
}

fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(kiln_store::MAX_DOCUMENT)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Stores `user`/`password` for `registry` in the docker config file `path`, keeping every
/// other entry. The file is replaced atomically and is readable by its owner only.
pub fn save_login(path: &Path, registry: &str, user: &str, password: &str) -> Result<()> {
    let mut config = read_config(path)?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let auths = config
        .as_object_mut()
        .ok_or_else(|| RegistryError::from(CredentialsError::NotAnObject(path.into())))?
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}));
    let auths = auths
        .as_object_mut()
        .ok_or_else(|| RegistryError::from(CredentialsError::AuthsNotAnObject(path.into())))?;
    auths.insert(login_key(registry), serde_json::json!({ "auth": auth }));
    write_config(path, &config)
}

/// Removes the stored credentials for `registry`. Returns false when there were none.
pub fn logout(path: &Path, registry: &str) -> Result<bool> {
    let mut config = read_config(path)?;
    let removed = config
        .get_mut("auths")
        .and_then(|a| a.as_object_mut())
        .and_then(|a| a.remove(&login_key(registry)))
        .is_some();
    if removed {
        write_config(path, &config)?;
    }
    Ok(removed)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    |source| {
        CredentialsError::Io {
            path: path.to_owned(),
            source,
        }
        .into()
    }
}

fn json_error(path: &Path) -> impl FnOnce(serde_json::Error) -> RegistryError + '_ {
    |source| {
        CredentialsError::Json {
            path: path.to_owned(),
            source,
        }
        .into()
    }
}

fn read_config(path: &Path) -> Result<serde_json::Value> {
    match read_small(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(json_error(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(io_error(path)(e)),
    }
}

fn write_config(path: &Path, config: &serde_json::Value) -> Result<()> {
    let io_err = |e: std::io::Error| io_error(path)(e);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err)?;
    let tmp = dir.join(format!(".config.json.kiln-{}", std::process::id()));
    let bytes = serde_json::to_vec_pretty(config).map_err(json_error(path))?;
    let written = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io_err)
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"`.
pub(super) fn parse_challenge(header: &str) -> std::result::Result<Challenge, ChallengeError> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ChallengeError::Scheme(scheme.into()));
    }
    let params = parse_params(rest)?;
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    Ok(Challenge::Bearer {
        realm: get("realm").ok_or(ChallengeError::NoRealm)?,
        service: get("service"),
        scope: get("scope"),
    })
}

/// `key="quoted, value",key2=token` → pairs. Quoted values may hold commas (scopes do).
fn parse_params(s: &str) -> std::result::Result<Vec<(String, String)>, ChallengeError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if chars.next() != Some('=') {
            return Err(ChallengeError::NoValue(key.trim().into()));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(ChallengeError::Unterminated),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ',')));
        }
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_keep_commas_inside_quotes() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#).unwrap(),
            Challenge::Basic
        );
        assert!(parse_challenge("Bearer service=x").is_err());
        assert!(parse_challenge("Negotiate").is_err());
    }

    #[test]
    fn login_round_trips_through_docker_credential() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths":{"other":{"auth":"eDp5"}},"psFormat":"x"}"#,
        )
        .unwrap();
        save_login(&path, "docker.io", "me", "p:w").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(DOCKER_HUB_KEY) && text.contains("psFormat") && text.contains("other")
        );
        let found = find_credential(std::slice::from_ref(&path), "docker.io").unwrap();
        assert_eq!(
            found,
            Some(Credential::Basic {
                user: "me".into(),
                password: "p:w".into()
            })
        );
        assert!(!format!("{found:?}").contains("p:w"));
        assert!(logout(&path, "docker.io").unwrap());
        assert!(!logout(&path, "docker.io").unwrap());
        assert_eq!(find_credential(&[path], "docker.io").unwrap(), None);
    }
}
