//! Authentication: none, HTTP basic, or Docker Hub-style bearer tokens.
//!
//! The token flow, as clients see it on Docker Hub or GHCR: a request without a token gets
//! `401` and `WWW-Authenticate: Bearer realm="http://HOST/token",service="registry-mock",
//! scope="repository:NAME:pull,push"`; the client asks the realm for a token (with basic
//! credentials, or anonymously), then repeats the request with `Authorization: Bearer`.
//! Tokens here are opaque random strings remembered server-side with the scopes granted
//! and an expiry, which is all a client can rely on anyway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;

use crate::config::{Action, AuthMode, Config, User};
use crate::errors::{error, Code};
use crate::http::{Request, Response};

pub const SERVICE: &str = "registry-mock";

/// What a request may do, decided before it is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// 401: credentials missing, wrong or expired; `error` goes into the challenge.
    Challenge {
        error: Option<&'static str>,
    },
    /// 403: the caller is known and may not do this.
    Denied(String),
}

/// A repository and an action on it, such as `repository:app:push`.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub repository: &'a str,
    pub action: Action,
}

struct Grant {
    user: Option<String>,
    access: Vec<(String, Action)>,
    expires: Instant,
}

pub struct Auth {
    mode: AuthMode,
    users: Vec<User>,
    anonymous_pull: bool,
    token_lifetime: Duration,
    tokens: Mutex<HashMap<String, Grant>>,
}

impl Auth {
    pub fn new(config: &Config) -> Auth {
        Auth {
            mode: config.auth,
            users: config.users.clone(),
            anonymous_pull: config.anonymous_pull,
            token_lifetime: config.token_lifetime,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Decides a request; `scope` is `None` for the `/v2/` version check.
    pub fn check(&self, request: &Request, scope: Option<Scope>) -> Verdict {
        match self.mode {
            AuthMode::None => Verdict::Allowed,
            AuthMode::Basic => self.check_basic(request, scope),
            AuthMode::Token => self.check_token(request, scope),
        }
    }

    fn check_basic(&self, request: &Request, scope: Option<Scope>) -> Verdict {
        let Some((name, password)) = basic_credentials(request) else {
            let anonymous_ok =
                self.anonymous_pull && scope.is_some_and(|s| s.action == Action::Pull);
            return match anonymous_ok {
                true => Verdict::Allowed,
                false => Verdict::Challenge { error: None },
            };
        };
        match (self.user(&name, &password), scope) {
            (None, _) => Verdict::Challenge { error: None },
            (Some(_), None) => Verdict::Allowed,
            (Some(user), Some(scope)) if user.may(scope.action) => Verdict::Allowed,
            (Some(user), Some(scope)) => Verdict::Denied(denial(&user.name, scope)),
        }
    }

    fn check_token(&self, request: &Request, scope: Option<Scope>) -> Verdict {
        let Some(token) = bearer_token(request) else {
            return Verdict::Challenge { error: None };
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let invalid = Verdict::Challenge {
            error: Some("invalid_token"),
        };
        let Some(grant) = tokens.get(token) else {
            return invalid;
        };
        if grant.expires <= Instant::now() {
            tokens.remove(token);
            return invalid;
        }
        let Some(scope) = scope else {
            return Verdict::Allowed;
        };
        let granted = grant
            .access
            .iter()
            .any(|(repo, action)| repo == scope.repository && *action == scope.action);
        if granted {
            return Verdict::Allowed;
        }
        // A token for other scopes: a fresh token may help (401), unless its user can never
        // have this one (403). Anonymous callers could always log in.
        let user = grant.user.as_deref().and_then(|name| self.user_named(name));
        match user {
            Some(user) if !user.may(scope.action) => Verdict::Denied(denial(&user.name, scope)),
            _ => Verdict::Challenge {
                error: Some("insufficient_scope"),
            },
        }
    }

    fn user_named(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    fn user(&self, name: &str, password: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.name == name && u.password == password)
    }

    /// The 401 or 403 answer for a verdict other than `Allowed`.
    pub fn refusal(&self, verdict: &Verdict, realm_host: &str, scope: Option<Scope>) -> Response {
        match verdict {
            Verdict::Denied(why) => error(403, Code::Denied, why.clone()),
            _ => {
                let challenge = self.challenge(verdict, realm_host, scope);
                error(401, Code::Unauthorized, "authentication required")
                    .header("WWW-Authenticate", challenge)
            }
        }
    }

    fn challenge(&self, verdict: &Verdict, realm_host: &str, scope: Option<Scope>) -> String {
        if self.mode == AuthMode::Basic {
            return format!("Basic realm=\"{SERVICE}\"");
        }
        let mut challenge =
            format!("Bearer realm=\"http://{realm_host}/token\",service=\"{SERVICE}\"");
        if let Some(scope) = scope {
            let actions = match scope.action {
                Action::Pull => "pull",
                Action::Push => "pull,push",
                Action::Delete => "delete",
            };
            challenge.push_str(&format!(
                ",scope=\"repository:{}:{actions}\"",
                scope.repository
            ));
        }
        if let Verdict::Challenge { error: Some(e) } = verdict {
            challenge.push_str(&format!(",error=\"{e}\""));
        }
        challenge
    }

    /// `GET /token?service=...&scope=...`: trades credentials (or none) for a token.
    pub fn issue_token(&self, request: &Request) -> Response {
        if self.mode != AuthMode::Token {
            return error(
                404,
                Code::Unsupported,
                "this registry does not issue tokens",
            );
        }
        if request.method != "GET" {
            // No OAuth2 POST flow: clients such as containerd then fall back to GET.
            return error(405, Code::Unsupported, "tokens are issued by GET only");
        }
        let user = match basic_credentials(request) {
            None => None,
            Some((name, password)) => match self.user(&name, &password) {
                Some(user) => Some(user),
                None => return error(401, Code::Unauthorized, "incorrect username or password"),
            },
        };
        let may = |action: Action| match user {
            Some(user) => user.may(action),
            None => self.anonymous_pull && action == Action::Pull,
        };
        let access: Vec<(String, Action)> = request
            .query_all("scope")
            .flat_map(str::split_whitespace)
            .filter_map(parse_scope)
            .flatten()
            .filter(|(_, action)| may(*action))
            .collect();
        let token = crate::random_hex(32);
        let grant = Grant {
            user: user.map(|u| u.name.clone()),
            access,
            expires: Instant::now() + self.token_lifetime,
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        tokens.retain(|_, g| g.expires > now);
        tokens.insert(token.clone(), grant);
        Response::json(
            200,
            &json!({
                "token": token,
                "access_token": token,
                "expires_in": self.token_lifetime.as_secs(),
            }),
        )
    }
}

fn denial(user: &str, scope: Scope) -> String {
    format!(
        "user {user:?} may not {} repository {:?}",
        scope.action.name(),
        scope.repository
    )
}

/// `repository:NAME:pull,push` into (NAME, action) pairs; `*` means every action.
fn parse_scope(scope: &str) -> Option<Vec<(String, Action)>> {
    let (name, actions) = scope.strip_prefix("repository:")?.rsplit_once(':')?;
    let every = [Action::Pull, Action::Push, Action::Delete];
    let actions = actions.split(',').flat_map(|a| match a {
        "*" => every.to_vec(),
        other => Action::parse(other).into_iter().collect(),
    });
    Some(actions.map(|a| (name.to_string(), a)).collect())
}

fn basic_credentials(request: &Request) -> Option<(String, String)> {
    let encoded = authorization_param(request, "Basic")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

fn bearer_token(request: &Request) -> Option<&str> {
    authorization_param(request, "Bearer")
}

fn authorization_param<'a>(request: &'a Request, scheme: &str) -> Option<&'a str> {
    let (given, param) = request.header("authorization")?.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| param.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scopes() {
        let pairs = parse_scope("repository:fault/e503x2/app:pull,push").unwrap();
        assert_eq!(
            pairs,
            [
                ("fault/e503x2/app".to_string(), Action::Pull),
                ("fault/e503x2/app".to_string(), Action::Push)
            ]
        );
        assert_eq!(parse_scope("repository:a:*").unwrap().len(), 3);
        assert!(parse_scope("registry:catalog:*").is_none());
    }
}
