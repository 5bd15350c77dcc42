//! How a registry is set up: listen address, authentication, users, storage, faults.
//!
//! One struct with public fields and a `Default`, so a test states only what it cares
//! about: `Config { auth: AuthMode::Token, ..Config::default() }`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::faults::Faults;

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Everyone may do everything.
    #[default]
    None,
    /// `Authorization: Basic` on every request, like a registry behind an htpasswd file.
    Basic,
    /// Docker Hub's scheme: a 401 names a token endpoint (`/token` on this same listener, or
    /// on a listener of its own with `Config::token_host`), which trades basic credentials (or nothing, for anonymous pull) for a bearer token
    /// carrying scopes and an expiry.
    Token,
}

impl FromStr for AuthMode {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(AuthMode::None),
            "basic" => Ok(AuthMode::Basic),
            "token" => Ok(AuthMode::Token),
            other => Err(ConfigError::AuthMode(other.to_string())),
        }
    }
}

/// An action on a repository, as in a token scope `repository:NAME:pull,push`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        [Action::Pull, Action::Push, Action::Delete]
            .into_iter()
            .find(|a| a.name() == text)
    }
}

/// An account: a user file line is `name:password` (may do everything) or
/// `name:password:pull` (read-only; any comma-separated list of pull, push, delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: String,
    pub actions: Vec<Action>,
}

impl User {
    /// A user who may pull, push and delete.
    pub fn new(name: &str, password: &str) -> User {
        User {
            name: name.to_string(),
            password: password.to_string(),
            actions: vec![Action::Pull, Action::Push, Action::Delete],
        }
    }

    /// A user who may only pull: pushing gets 403 DENIED.
    pub fn read_only(name: &str, password: &str) -> User {
        User {
            actions: vec![Action::Pull],
            ..User::new(name, password)
        }
    }

    pub fn may(&self, action: Action) -> bool {
        self.actions.contains(&action)
    }
}

impl FromStr for User {
    type Err = ConfigError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::UserLine(line.to_string());
        let mut fields = line.splitn(3, ':');
        let (Some(name), Some(password)) = (fields.next(), fields.next()) else {
            return Err(bad());
        };
        if name.is_empty() {
            return Err(bad());
        }
        let mut user = User::new(name, password);
        if let Some(actions) = fields.next() {
            user.actions = actions
                .split(',')
                .map(|a| Action::parse(a.trim()).ok_or_else(bad))
                .collect::<Result<_, _>>()?;
        }
        Ok(user)
    }
}

/// Reads a users file: one user per line, `#` comments and blank lines ignored.
pub fn read_users_file(path: &Path) -> Result<Vec<User>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::UsersFile {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::parse)
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Storage {
    #[default]
    Memory,
    /// Kept in this directory (created if missing) and still there after shutdown.
    Directory(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free port (see `Server::addr`).
    pub listen: SocketAddr,
    pub auth: AuthMode,
    pub users: Vec<User>,
    /// Lets requests without credentials pull (basic mode), or get pull tokens (token mode).
    pub anonymous_pull: bool,
    /// How long a bearer token stays valid; short lifetimes make clients renew.
    pub token_lifetime: Duration,
    pub storage: Storage,
    /// Faults for every repository request, as if each name had this `fault/SPEC/` prefix.
    pub faults: Faults,
    /// Answer every cross-repository mount with 202 (a fresh upload) instead of mounting.
    pub decline_mounts: bool,
    /// Host name in the `Location` of redirected blob GETs. It defaults to `localhost`, not
    /// the registry's `127.0.0.1`, so clients see a different host and must not send
    /// credentials there.
    pub redirect_host: String,
    /// Serve `/token` on a listener of its own (same address, its own port) and name it in
    /// challenges as `http://TOKEN_HOST:PORT/token`, so that the token service is another
    /// origin than the registry (`localhost` for a registry on `127.0.0.1`). `None`: `/token`
    /// is on the registry's listener, named by the host the client used.
    pub token_host: Option<String>,
    /// Longest a `stall` or `hang` fault holds a connection (shutdown ends it sooner).
    pub stall_limit: Duration,
    /// Also print each request log entry on stderr (the binary does).
    pub log_to_stderr: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth: AuthMode::None,
            users: Vec::new(),
            anonymous_pull: true,
            token_lifetime: Duration::from_secs(300),
            storage: Storage::Memory,
            faults: Faults::default(),
            decline_mounts: false,
            redirect_host: "localhost".to_string(),
            token_host: None,
            stall_limit: Duration::from_secs(120),
            log_to_stderr: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown auth mode {0:?}: expected none, basic or token")]
    AuthMode(String),
    #[error("bad user entry {0:?}: expected name:password or name:password:pull[,push,delete]")]
    UserLine(String),
    #[error("cannot read users file {path}: {source}")]
    UsersFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_lines() {
        assert_eq!("alice:s3cret".parse::<User>().unwrap().password, "s3cret");
        let bob: User = "bob:pw:pull".parse().unwrap();
        assert!(bob.may(Action::Pull) && !bob.may(Action::Push));
        assert!("carol:pw".parse::<User>().unwrap().may(Action::Delete));
        assert!("nopassword".parse::<User>().is_err());
        assert!("dave:pw:fly".parse::<User>().is_err());
    }

    #[test]
    fn reads_a_users_file_with_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "# accounts\nalice:pw\n\nbob:pw:pull\n").unwrap();
        let users = read_users_file(&path).unwrap();
        assert_eq!(users.len(), 2);
        assert!(read_users_file(&dir.path().join("missing")).is_err());
    }
}
