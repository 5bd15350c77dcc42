//! One request through the registry: version check, token endpoint, then for repository
//! endpoints: authorization, faults that replace the answer, the endpoint's handler, and
//! faults that change how the answer's body is delivered.
//!
//! Authorization comes before faults so that a client's unauthenticated first try does not
//! use up an `x<N>` fault meant for its real request.

use std::cell::RefCell;

use serde_json::json;

use crate::auth::{Scope, Verdict};
use crate::config::Action;
use crate::errors::{error, Code};
use crate::faults::{Aim, FaultKind, Faults, Fired, Target};
use crate::http::{Request, Response};
use crate::routes::{self, Endpoint, Route, RouteError};
use crate::server::State;
use crate::storage::Store;
use crate::{blobs, listing, manifests, uploads};

/// The answer to one request, and the fault that shaped it, if any.
pub struct Reply {
    pub response: Response,
    pub fault: Option<Fired>,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Reply {
            response,
            fault: None,
        }
    }
}

/// Everything a repository endpoint handler needs.
pub struct Ctx<'a> {
    pub state: &'a State,
    pub request: &'a Request,
    pub route: &'a Route,
    faults: Faults,
    fired: RefCell<Option<Fired>>,
}

impl Ctx<'_> {
    /// Fires the first armed fault of the kinds `wanted` accepts, unaimed or aimed at this
    /// endpoint; remembered for the log.
    pub fn fire(&self, wanted: impl Fn(FaultKind) -> bool) -> Option<FaultKind> {
        self.fire_at(false, wanted)
    }

    /// Like [`Ctx::fire`], for what only a fault aimed at this endpoint does (an unaimed
    /// `reset` never cut uploads, and still does not).
    pub fn fire_aimed(&self, wanted: impl Fn(FaultKind) -> bool) -> Option<FaultKind> {
        self.fire_at(true, wanted)
    }

    fn fire_at(&self, aimed_only: bool, wanted: impl Fn(FaultKind) -> bool) -> Option<FaultKind> {
        let key = format!("{} {}", self.request.method, self.request.target);
        let at = Target {
            endpoint: aim_of(&self.route.endpoint),
            aimed_only,
        };
        let fired = self.state.counters.fire(&self.faults, &key, at, wanted)?;
        let kind = fired.kind;
        *self.fired.borrow_mut() = Some(fired);
        Some(kind)
    }

    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.state.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `/v2/<name as the client wrote it>/<rest>`, for `Location` headers.
    pub fn location(&self, rest: &str) -> String {
        format!("/v2/{}/{rest}", self.route.visible_name)
    }

    /// `HOST:PORT` of the token realm named in challenges.
    pub fn realm_host(&self) -> String {
        realm_host(self.state, self.request)
    }
}

/// The kind of endpoint a fault can be aimed at, if the route is one.
fn aim_of(endpoint: &Endpoint) -> Option<Aim> {
    match endpoint {
        Endpoint::Blob(_) => Some(Aim::Blob),
        Endpoint::Manifest(_) => Some(Aim::Manifest),
        Endpoint::UploadStart | Endpoint::Upload(_) => Some(Aim::Upload),
        Endpoint::Tags | Endpoint::Referrers(_) => None,
    }
}

/// The token service's `HOST:PORT`: its own listener under `Config::token_host`, else the
/// host clients reached the registry by.
fn realm_host(state: &State, request: &Request) -> String {
    if let (Some(host), Some(addr)) = (&state.config.token_host, state.token_addr) {
        return format!("{host}:{}", addr.port());
    }
    request
        .header("host")
        .map(str::to_string)
        .unwrap_or_else(|| state.addr.to_string())
}

/// A request to the token service's own listener: `/token` and nothing else.
pub fn handle_token(state: &State, request: &Request) -> Response {
    match request.path.as_str() {
        "/token" => state.auth.issue_token(request),
        _ => error(404, Code::Unsupported, "this listener serves /token only"),
    }
}

pub fn handle(state: &State, request: &Request) -> Reply {
    match request.path.as_str() {
        "/v2" | "/v2/" => return version_check(state, request).into(),
        // With a token listener of its own, the registry does not issue tokens itself.
        "/token" if state.token_addr.is_some() => {
            return error(
                404,
                Code::Unsupported,
                "tokens are issued by the token service",
            )
            .into()
        }
        "/token" => return token(state, request),
        _ => {}
    }
    let route = match routes::parse(&request.path) {
        Ok(route) => route,
        Err(RouteError::NotFound) => {
            return error(404, Code::Unsupported, "no such endpoint").into()
        }
        Err(err) => return error(400, Code::NameInvalid, err.to_string()).into(),
    };
    let ctx = Ctx {
        state,
        request,
        faults: state.config.faults.and(&route.faults),
        route: &route,
        fired: RefCell::new(None),
    };
    let response = handle_repository(&ctx);
    Reply {
        response,
        fault: ctx.fired.into_inner(),
    }
}

/// A token, unless a fault aimed at `token` fires for the repository its scope names
/// (`repository:fault/SPEC/NAME:pull`): a status or a stall instead, or a body cut,
/// trickled, hung… as for blobs.
fn token(state: &State, request: &Request) -> Reply {
    let faults = request
        .query_all("scope")
        .flat_map(str::split_whitespace)
        .find_map(|scope| {
            let spec = scope.strip_prefix("repository:fault/")?.split('/').next()?;
            spec.parse::<Faults>().ok()
        })
        .unwrap_or_default();
    let faults = state.config.faults.and(&faults);
    let key = format!("{} {}", request.method, request.target);
    let at = Target {
        endpoint: Some(Aim::Token),
        aimed_only: true,
    };
    let status_or_stall = |k| matches!(k, FaultKind::Status(_) | FaultKind::Stall);
    if let Some(fired) = state.counters.fire(&faults, &key, at, status_or_stall) {
        let response = match fired.kind {
            FaultKind::Status(status) => {
                let mut response = error(
                    status,
                    Code::for_status(status),
                    format!("injected fault: status {status}"),
                );
                if let Some(seconds) = faults.retry_after(status) {
                    response = response.header("Retry-After", seconds.to_string());
                }
                response
            }
            _ => Response::new(0),
        };
        return Reply {
            response,
            fault: Some(fired),
        };
    }
    let response = state.auth.issue_token(request);
    let fault = (response.status == 200)
        .then(|| {
            state
                .counters
                .fire(&faults, &key, at, FaultKind::shapes_body)
        })
        .flatten();
    Reply { response, fault }
}

fn version_check(state: &State, request: &Request) -> Response {
    match state.auth.check(request, None) {
        Verdict::Allowed => Response::json(200, &json!({})),
        refused => state
            .auth
            .refusal(&refused, &realm_host(state, request), None),
    }
}

fn handle_repository(ctx: &Ctx) -> Response {
    let method = ctx.request.method.as_str();
    let scope = Scope {
        repository: &ctx.route.visible_name,
        action: match method {
            "GET" | "HEAD" => Action::Pull,
            "DELETE" => Action::Delete,
            _ => Action::Push,
        },
    };
    let verdict = ctx.state.auth.check(ctx.request, Some(scope));
    if verdict != Verdict::Allowed {
        return ctx
            .state
            .auth
            .refusal(&verdict, &ctx.realm_host(), Some(scope));
    }
    if let Some(kind) = ctx.fire(|k| matches!(k, FaultKind::Status(_) | FaultKind::Stall)) {
        return injected_answer(ctx, kind);
    }
    let mut response = route_to_handler(ctx, method);
    let body_bearing = method == "GET"
        && matches!(
            ctx.route.endpoint,
            Endpoint::Manifest(_) | Endpoint::Blob(_)
        )
        && matches!(response.status, 200 | 206);
    if body_bearing && ctx.fire(FaultKind::shapes_body) == Some(FaultKind::Corrupt) {
        crate::wire::corrupt(&mut response.body);
    }
    response
}

fn injected_answer(ctx: &Ctx, kind: FaultKind) -> Response {
    let FaultKind::Status(status) = kind else {
        // A stall sends nothing; the wire layer holds the connection.
        return Response::new(0);
    };
    let mut response = error(
        status,
        Code::for_status(status),
        format!("injected fault: status {status}"),
    );
    if let Some(seconds) = ctx.faults.retry_after(status) {
        response = response.header("Retry-After", seconds.to_string());
    }
    response
}

fn route_to_handler(ctx: &Ctx, method: &str) -> Response {
    let head = method == "HEAD";
    match (&ctx.route.endpoint, method) {
        (Endpoint::Manifest(r), "GET" | "HEAD") => manifests::get(ctx, r),
        (Endpoint::Manifest(r), "PUT") => manifests::put(ctx, r),
        (Endpoint::Manifest(r), "DELETE") => manifests::delete(ctx, r),
        (Endpoint::Blob(d), "GET" | "HEAD") => blobs::get(ctx, d, head),
        (Endpoint::Blob(d), "DELETE") => blobs::delete(ctx, d),
        (Endpoint::UploadStart, "POST") => uploads::start(ctx),
        (Endpoint::Upload(id), "PATCH") => uploads::append(ctx, id),
        (Endpoint::Upload(id), "PUT") => uploads::finish(ctx, id),
        (Endpoint::Upload(id), "GET") => uploads::status(ctx, id),
        (Endpoint::Upload(id), "DELETE") => uploads::cancel(ctx, id),
        (Endpoint::Tags, "GET") => listing::tags(ctx),
        (Endpoint::Referrers(d), "GET") => listing::referrers(ctx, d),
        _ => error(
            405,
            Code::Unsupported,
            format!("{method} is not supported on this endpoint"),
        ),
    }
}
