//! One registry repository over HTTP: URLs, plain http for local registries, answering
//! auth challenges (basic, and Docker Hub-style bearer tokens), status codes turned into
//! errors, and retries of idempotent requests. Every request runs within the time limits
//! of [`crate::deadline`]: a connect timeout (30 s, or the `timeout` when smaller), a read
//! timeout, and an overall deadline that grows with the size of the transfer.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};

use super::auth::{find_credential, parse_challenge, Challenge, Credential};
use super::deadline::{Deadline, Timeouts};
use super::error::{ChallengeError, Withheld};
use super::realm;
use super::retry::{self, Transient};
use super::{RegistryError, Result, Settings};
use kiln_store::reference::DOCKER_HUB;
use kiln_store::Reference;

/// Where Docker Hub's API lives (the `docker.io` in names is not a host).
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Error bodies are read this far, for their message.
const MAX_ERROR_BODY: usize = 64 << 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an error body (read only for its message) may take.
const ERROR_BODY_TIME: Duration = Duration::from_secs(10);

/// A failed try, with `Some` when trying again may help.
pub(super) type Attempt<T> = std::result::Result<T, (RegistryError, Option<Transient>)>;

pub(super) struct Client {
    http: reqwest::Client,
    base: Url,
    registry: String,
    repository: String,
    /// `pull` or `pull,push`: the scope asked of a token service.
    actions: &'static str,
    /// Other repositories of the registry a token must also let kiln pull from: the
    /// sources of cross-repository mounts.
    pull_from: Vec<String>,
    credential: Option<Credential>,
    insecure: Vec<String>,
    /// `trusted_token_realms:` hosts ([`realm::trust`]).
    trusted_realms: Vec<String>,
    /// The token service the credentials were withheld from, and why: a refusal then says
    /// so instead of asking to log in.
    withheld: Mutex<Option<(String, Withheld)>>,
    /// The `Authorization` value in use for the registry's own host.
    authorization: Mutex<Option<String>>,
    timeouts: Timeouts,
}

impl Client {
    /// A client for the repository of `reference`, with the user's stored credentials.
    pub fn new(settings: &Settings, reference: &Reference, push: bool) -> Result<Client> {
        let credential = find_credential(&settings.auth_files, &reference.domain)?;
        let actions = if push { "pull,push" } else { "pull" };
        Self::build(
            settings,
            &reference.domain,
            &reference.path,
            actions,
            credential,
        )
    }

    /// A client that only checks `credential` against the registry (`kiln login`).
    pub fn for_login(
        settings: &Settings,
        registry: &str,
        credential: Credential,
    ) -> Result<Client> {
        Self::build(settings, registry, "", "pull", Some(credential))
    }

    fn build(
        settings: &Settings,
        registry: &str,
        repository: &str,
        actions: &'static str,
        credential: Option<Credential>,
    ) -> Result<Client> {
        // Several calls may race to install it; the loser's error only says it is there.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = settings.effective();
        let timeouts = config.timeouts;
        let http = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            // No reqwest read timeout: it runs from the start of a request to its answer,
            // so an upload taking longer would fail; `send` and `Deadline::chunk` keep the
            // read timeout instead.
            .connect_timeout(CONNECT_TIMEOUT.min(timeouts.base))
            .build()
            .map_err(|e| RegistryError::Tls(error_chain(&e)))?;
        let host = if registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            registry
        };
        let insecure = config.insecure_registries;
        let trusted_realms = config.trusted_token_realms;
        let scheme = if plain_http(host, &insecure) {
            "http"
        } else {
            "https"
        };
        let base =
            Url::parse(&format!("{scheme}://{host}/")).map_err(|e| RegistryError::Connect {
                url: host.to_owned(),
                why: e.to_string(),
            })?;
        Ok(Client {
            http,
            base,
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            actions,
            pull_from: Vec::new(),
            credential,
            insecure,
            trusted_realms,
            withheld: Mutex::new(None),
            authorization: Mutex::new(None),
            timeouts,
        })
    }

    /// Asks tokens for pull access to `repositories` too (mount sources), as docker does:
    /// a registry mounts a blob only for a client that may read it where it is.
    pub fn also_pull_from(&mut self, repositories: std::collections::BTreeSet<String>) {
        self.pull_from = repositories
            .into_iter()
            .filter(|r| *r != self.repository)
            .collect();
    }

    /// The time limits of a request starting now that moves `expected` bytes (0: unknown).
    pub fn deadline(&self, expected: u64) -> Deadline {
        self.timeouts.deadline(expected)
    }

    /// How long a failing request is retried.
    pub fn retry_time(&self) -> Duration {
        self.timeouts.retry_time
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The registry as named in references (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// `/v2/<repository>/<rest>` on the registry.
    pub fn url(&self, rest: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("/v2/{}/{rest}", self.repository));
        url
    }

    /// Resolves an upload `Location` header, which may be relative to the registry.
    pub fn resolve(&self, location: &str) -> Result<Url> {
        self.base
            .join(location)
            .map_err(|e| RegistryError::Connect {
                url: location.to_owned(),
                why: format!("the registry sent an unusable upload location: {e}"),
            })
    }

    /// Checks that the registry accepts kiln's credentials (or none) at `/v2/`.
    pub async fn ping(&self) -> Result<()> {
        let mut url = self.base.clone();
        url.set_path("/v2/");
        let response = retry::with_retries(self.retry_time(), || async {
            let r = self.exchange(|| self.http.get(url.clone())).await?;
            self.expect_success(r, "GET", "registry").await
        })
        .await?;
        drop(response);
        Ok(())
    }

    /// Sends an idempotent request (GET, HEAD, or a PUT whose body `make` rebuilds),
    /// retrying transient failures, and returns the response when its status is a success,
    /// or 404 when `allow_404` (a HEAD probe). `what` names the object in errors.
    pub async fn idempotent(
        &self,
        method: Method,
        what: &str,
        allow_404: bool,
        make: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response> {
        retry::with_retries(self.retry_time(), || async {
            let response = self.exchange(|| make(&self.http)).await?;
            if allow_404 && response.status() == StatusCode::NOT_FOUND {
                return Ok(response);
            }
            self.expect_success(response, method.as_str(), what).await
        })
        .await
    }

    /// Sends a request with the registry's `Authorization` (only to the registry's own
    /// host), answering one auth challenge by authenticating and sending it again. The
    /// answer must come within a deadline for a request without a body of known size.
    pub async fn exchange(&self, make: impl Fn() -> RequestBuilder) -> Attempt<Response> {
        self.exchange_within(&self.deadline(0), make).await
    }

    /// [`Client::exchange`] within `deadline` (an upload's, or a blob download's).
    pub async fn exchange_within(
        &self,
        deadline: &Deadline,
        make: impl Fn() -> RequestBuilder,
    ) -> Attempt<Response> {
        let response = self.send_authorized(deadline, &make).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let detail = error_detail(response).await;
        let Some(challenge) = challenge else {
            return Err((self.unauthorized(detail), None));
        };
        // A token service that fails for a moment (5xx, a cut answer) is tried again with
        // the request it authenticates.
        self.authenticate(&challenge).await.map_err(|e| {
            let transient = e.is_transient();
            (e, transient.then_some(Transient { retry_after: None }))
        })?;
        let response = self.send_authorized(deadline, &make).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let detail = error_detail(response).await;
            return Err((self.unauthorized(detail), None));
        }
        Ok(response)
    }

    async fn send_authorized(
        &self,
        deadline: &Deadline,
        make: &impl Fn() -> RequestBuilder,
    ) -> Attempt<Response> {
        let mut request = make().build().map_err(|e| (connect_error(&e), None))?;
        if self.same_host(request.url()) {
            if let Some(value) = self.current_authorization() {
                if let Ok(v) = value.parse() {
                    request.headers_mut().insert(AUTHORIZATION, v);
                }
            }
        }
        let url = request.url().clone();
        let method = request.method().clone();
        let response = send(&self.http, request, deadline).await?;
        match &response {
            Ok(r) => {
                tracing::debug!(%method, url = %loggable(&url), status = r.status().as_u16(), "registry request")
            }
            Err(e) => {
                tracing::debug!(%method, url = %loggable(&url), error = %connect_failure(e), "registry request failed")
            }
        }
        response.map_err(|e| {
            if e.is_timeout() && !e.is_connect() {
                return (
                    deadline.stalled(&url),
                    Some(Transient { retry_after: None }),
                );
            }
            let err = RegistryError::Connect {
                url: url.to_string(),
                why: connect_failure(&e),
            };
            // A name that does not resolve will not resolve in a second either, nor will
            // a server that does not speak TLS start to.
            let permanent = e.is_builder() || e.is_redirect() || err_is_dns(&err) || err.is_tls();
            let transient = !permanent;
            (err, transient.then_some(Transient { retry_after: None }))
        })
    }

    fn current_authorization(&self) -> Option<String> {
        self.authorization.lock().ok().and_then(|a| a.clone())
    }

    fn set_authorization(&self, value: String) {
        if let Ok(mut a) = self.authorization.lock() {
            *a = Some(value);
        }
    }

    /// Credentials go to the registry's own scheme, host and port, nowhere else.
    fn same_host(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str() == self.base.host_str()
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    fn unauthorized(&self, detail: String) -> RegistryError {
        let withheld = self.withheld.lock().ok().and_then(|w| w.clone());
        if let Some((realm, why)) = withheld {
            return RegistryError::CredentialsWithheld {
                registry: self.registry.clone(),
                realm,
                why,
                detail,
            };
        }
        let detail = match (&self.credential, detail.is_empty()) {
            (Some(_), true) => "the registry refused the credentials".into(),
            (None, true) => "no credentials are stored for it".into(),
            (_, false) => detail,
        };
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            detail,
        }
    }

    async fn authenticate(&self, header: &str) -> Result<()> {
        let challenge = parse_challenge(header).map_err(|source| RegistryError::Challenge {
            registry: self.registry.clone(),
            source,
        })?;
        match challenge {
            Challenge::Basic => {
                let value = self
                    .credential
                    .as_ref()
                    .and_then(Credential::basic_header)
                    .ok_or_else(|| self.unauthorized(String::new()))?;
                self.set_authorization(value);
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let token = self.fetch_token(&realm, service, scope).await?;
                self.set_authorization(format!("Bearer {token}"));
            }
        }
        Ok(())
    }

    /// The token flow of Docker Hub and the distribution spec: ask the realm for a token
    /// for this repository's scope, with the user's credentials when there are any.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<String>,
        challenge_scope: Option<String>,
    ) -> Result<String> {
        let bad = |source| RegistryError::Challenge {
            registry: self.registry.clone(),
            source,
        };
        let mut url = Url::parse(realm).map_err(|source| {
            bad(ChallengeError::BadRealm {
                realm: realm.into(),
                source,
            })
        })?;
        let realm_host = host_port(&url);
        if url.scheme() != "https"
            && !(url.scheme() == "http" && plain_http(&realm_host, &self.insecure))
        {
            return Err(bad(ChallengeError::InsecureRealm(realm.into())));
        }
        // SECURITY.md §3 rule 16: the user's credentials only go to a trusted realm.
        let credential = match (
            &self.credential,
            realm::trust(&self.base, &url, &self.trusted_realms),
        ) {
            (Some(credential), Ok(())) => Some(credential),
            (None, _) => None,
            (Some(_), Err(why)) => {
                let realm = realm_host;
                tracing::debug!(%realm, %why, "credentials withheld from the token service");
                if self.repository.is_empty() {
                    // `kiln login`: an anonymous token would check nothing.
                    return Err(RegistryError::CredentialsWithheld {
                        registry: self.registry.clone(),
                        realm,
                        why,
                        detail: "an anonymous token cannot check a login".into(),
                    });
                }
                if let Ok(mut w) = self.withheld.lock() {
                    *w = Some((realm, why));
                }
                None
            }
        };
        let scopes: Vec<String> = if self.repository.is_empty() {
            challenge_scope.into_iter().collect()
        } else {
            std::iter::once(format!("repository:{}:{}", self.repository, self.actions))
                .chain(
                    self.pull_from
                        .iter()
                        .map(|r| format!("repository:{r}:pull")),
                )
                .collect()
        };
        let request = match credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", refresh.clone()),
                    ("client_id", "kiln".to_owned()),
                ];
                form.extend(service.map(|s| ("service", s)));
                // OAuth's form takes the scopes space-separated in one field.
                if !scopes.is_empty() {
                    form.push(("scope", scopes.join(" ")));
                }
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish();
                self.http
                    .post(url)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body)
            }
            credential => {
                {
                    let mut q = url.query_pairs_mut();
                    q.extend_pairs(service.iter().map(|s| ("service", s)));
                    q.extend_pairs(scopes.iter().map(|s| ("scope", s)));
                }
                let mut r = self.http.get(url);
                if let Some(basic) = credential.and_then(Credential::basic_header) {
                    r = r.header(AUTHORIZATION, basic);
                }
                r
            }
        };
        let deadline = self.deadline(0);
        let request = request.build().map_err(|e| connect_error(&e))?;
        let url = request.url().clone();
        let response = match send(&self.http, request, &deadline)
            .await
            .map_err(|(e, _)| e)?
        {
            Ok(r) => r,
            Err(e) if e.is_timeout() && !e.is_connect() => return Err(deadline.stalled(&url)),
            Err(e) => return Err(connect_error(&e)),
        };
        tracing::debug!(
            url = %loggable(response.url()),
            status = response.status().as_u16(),
            "registry token request"
        );
        if matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            let detail = error_detail(response).await;
            return Err(self.unauthorized(detail));
        }
        if !response.status().is_success() {
            return Err(bad(ChallengeError::TokenStatus(response.status())));
        }
        let bytes = read_body(response, MAX_ERROR_BODY, &deadline).await?;
        let answer: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(ChallengeError::TokenAnswer(e)))?;
        ["token", "access_token"]
            .iter()
            .find_map(|k| answer.get(*k).and_then(|t| t.as_str()))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| bad(ChallengeError::NoToken))
    }

    /// Turns a non-success status into an error (transient for 429 and 5xx).
    pub async fn expect_success(
        &self,
        response: Response,
        method: &str,
        what: &str,
    ) -> Attempt<Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let url = response.url().to_string();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        let detail = error_detail(response).await;
        let err = match status {
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                what: what.to_owned(),
                url,
            },
            StatusCode::FORBIDDEN => RegistryError::Denied {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                detail,
            },
            _ => RegistryError::Status {
                method: method.to_owned(),
                url,
                status: status.as_u16(),
                detail,
            },
        };
        let transient = err.is_transient().then_some(Transient { retry_after });
        Err((err, transient))
    }
}

/// Whether `host` (`HOST[:PORT]`) is reached over plain http: loopback addresses,
/// `localhost`, and registries the user marked insecure.
/// A URL for the debug log: without a user name or password, should one be in it (the
/// registry's credentials travel in headers, which are never logged).
pub(super) fn loggable(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

pub(super) fn plain_http(host: &str, insecure: &[String]) -> bool {
    if insecure.iter().any(|i| i == host) {
        return true;
    }
    let name = strip_port(host);
    if insecure.iter().any(|i| i == name) {
        return true;
    }
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn err_is_dns(err: &RegistryError) -> bool {
    matches!(err, RegistryError::Connect { why, .. } if why.contains("dns error"))
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// Sends `request`, failing with [`RegistryError::TooSlow`] when no answer came by the
/// deadline, and, for a request without a body, with [`RegistryError::Stalled`] (worth
/// another try) when none came within the read timeout. An upload's answer comes only
/// once its body is sent, which takes as long as it takes within the deadline.
/// reqwest's own errors are left to the caller.
async fn send(
    http: &reqwest::Client,
    request: reqwest::Request,
    deadline: &Deadline,
) -> Attempt<reqwest::Result<Response>> {
    let url = request.url().clone();
    let by = deadline.at(0);
    let until = match request.body() {
        None => by.min(tokio::time::Instant::now() + deadline.read()),
        Some(_) => by,
    };
    match tokio::time::timeout_at(until, http.execute(request)).await {
        Ok(answer) => Ok(answer),
        Err(_) if tokio::time::Instant::now() >= by => Err((deadline.too_slow(&url, 0), None)),
        Err(_) => Err((
            deadline.stalled(&url),
            Some(Transient { retry_after: None }),
        )),
    }
}

/// The message of a registry error body (`{"errors":[{"code","message"}]}`), or nothing.
pub(super) async fn error_detail(response: Response) -> String {
    let limits = Timeouts {
        base: ERROR_BODY_TIME,
        read: ERROR_BODY_TIME,
        retry_time: Duration::ZERO,
    };
    let Ok(bytes) = read_body(response, MAX_ERROR_BODY, &limits.deadline(0)).await else {
        return String::new();
    };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return String::new();
    };
    let first = body.get("errors").and_then(|e| e.get(0));
    let field = |k: &str| first.and_then(|e| e.get(k)).and_then(|v| v.as_str());
    match (field("code"), field("message")) {
        (Some(code), Some(msg)) => format!("{msg} ({code})"),
        (None, Some(msg)) => msg.to_owned(),
        (Some(code), None) => code.to_owned(),
        (None, None) => String::new(),
    }
}

/// Reads a whole body within `deadline`, failing once it passes `limit` bytes (the rest
/// is never read).
pub(super) async fn read_body(
    mut response: Response,
    limit: usize,
    deadline: &Deadline,
) -> Result<Vec<u8>> {
    let url = response.url().to_string();
    let mut out = Vec::new();
    while let Some(chunk) = deadline.chunk(&mut response, out.len() as u64).await? {
        if out.len() + chunk.len() > limit {
            return Err(RegistryError::BodyTooLarge { url, limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

pub(super) fn connect_error(e: &reqwest::Error) -> RegistryError {
    RegistryError::Connect {
        url: e.url().map(Url::to_string).unwrap_or_default(),
        why: error_chain(e),
    }
}

/// reqwest's message and its causes ("error sending request" alone says little).
/// Why a request failed, without reqwest's outer "error sending request for url (URL)":
/// the error already names the URL once.
fn connect_failure(e: &reqwest::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => error_chain(cause),
        None => e.to_string(),
    }
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The header map's value as text, if it is text.
pub(super) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_registries_use_plain_http() {
        let none: Vec<String> = Vec::new();
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.8.9.1",
            "[::1]:5000",
            "::1",
        ] {
            assert!(plain_http(host, &none), "{host}");
        }
        for host in [
            "docker.io",
            "ghcr.io",
            "10.0.0.1:5000",
            "localhost.example.com",
        ] {
            assert!(!plain_http(host, &none), "{host}");
        }
        let insecure = vec!["reg.lan:5000".to_owned(), "other.lan".to_owned()];
        assert!(plain_http("reg.lan:5000", &insecure));
        assert!(!plain_http("reg.lan", &insecure));
        assert!(plain_http("other.lan:443", &insecure));
    }
}
