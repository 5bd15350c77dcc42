//! Basic and Docker Hub-style token authentication, driven by hand the way clients do it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use registry_mock::{AuthMode, Config, Server, User};

fn start(auth: AuthMode, tweak: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config {
        auth,
        users: vec![
            User::new("alice", "secret"),
            User::read_only("bob", "reader"),
        ],
        ..Config::default()
    };
    tweak(&mut config);
    Server::start(config).expect("start registry")
}

/// Asks the token endpoint for `scopes`, with basic credentials if given.
fn token(addr: SocketAddr, scopes: &[&str], credentials: Option<(&str, &str)>) -> Reply {
    let query: Vec<String> = scopes
        .iter()
        .map(|s| format!("scope={}", s.replace(':', "%3A").replace('/', "%2F")))
        .collect();
    let target = format!("/token?service=registry-mock&{}", query.join("&"));
    let auth = credentials.map(|(u, p)| basic(u, p));
    call(addr, req("GET", &target).auth(auth.as_deref()))
}

fn bearer(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "token request: {:?}", reply.json());
    format!("Bearer {}", reply.json()["token"].as_str().unwrap())
}

#[test]
fn basic_auth_checks_credentials_and_actions() {
    let server = start(AuthMode::Basic, |c| c.anonymous_pull = false);
    let addr = server.addr();
    let alice = basic("alice", "secret");
    let bob = basic("bob", "reader");

    let anonymous = call(addr, req("GET", "/v2/"));
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("WWW-Authenticate"),
        Some("Basic realm=\"registry-mock\"")
    );
    assert_eq!(anonymous.error_code(), "UNAUTHORIZED");
    let wrong = basic("alice", "guess");
    assert_eq!(
        call(addr, req("GET", "/v2/").auth(Some(&wrong))).status,
        401
    );
    assert_eq!(
        call(addr, req("GET", "/v2/").auth(Some(&alice))).status,
        200
    );

    let image = TestImage::new("basic");
    image.push(addr, "app", "v1", Some(&alice));
    let pull = req("GET", "/v2/app/manifests/v1");
    assert_eq!(call(addr, pull.clone()).status, 401, "no anonymous pull");
    assert_eq!(call(addr, pull.auth(Some(&bob))).status, 200);

    let push = call(addr, req("POST", "/v2/app/blobs/uploads/").auth(Some(&bob)));
    assert_eq!((push.status, push.error_code().as_str()), (403, "DENIED"));
    let delete = req("DELETE", "/v2/app/manifests/v1").auth(Some(&bob));
    assert_eq!(call(addr, delete).status, 403);
}

#[test]
fn basic_auth_allows_anonymous_pull_by_default() {
    let server = start(AuthMode::Basic, |_| {});
    let image = TestImage::new("anon");
    image.push(server.addr(), "app", "v1", Some(&basic("alice", "secret")));
    assert_eq!(
        call(server.addr(), req("GET", "/v2/app/manifests/v1")).status,
        200
    );
    assert_eq!(
        call(server.addr(), req("POST", "/v2/app/blobs/uploads/")).status,
        401
    );
}

#[test]
fn token_auth_challenges_like_docker_hub() {
    let server = start(AuthMode::Token, |_| {});
    let addr = server.addr();
    let realm = "Bearer realm=\"http://registry/token\",service=\"registry-mock\"";

    let ping = call(addr, req("GET", "/v2/"));
    assert_eq!(
        (ping.status, ping.header("WWW-Authenticate")),
        (401, Some(realm))
    );

    let pull = call(addr, req("GET", "/v2/team/app/manifests/v1"));
    let expected = format!("{realm},scope=\"repository:team/app:pull\"");
    assert_eq!(pull.header("WWW-Authenticate"), Some(expected.as_str()));
    let push = call(addr, req("POST", "/v2/team/app/blobs/uploads/"));
    let expected = format!("{realm},scope=\"repository:team/app:pull,push\"");
    assert_eq!(push.header("WWW-Authenticate"), Some(expected.as_str()));

    // Basic credentials are for the token endpoint, not for the registry.
    let basic_at_registry = req("GET", "/v2/").auth(Some(&basic("alice", "secret")));
    assert_eq!(call(addr, basic_at_registry).status, 401);
}

#[test]
fn tokens_carry_the_scopes_their_user_may_have() {
    let server = start(AuthMode::Token, |_| {});
    let addr = server.addr();
    let scope = "repository:team/app:pull,push";

    let alice = bearer(&token(addr, &[scope], Some(("alice", "secret"))));
    assert_eq!(
        call(addr, req("GET", "/v2/").auth(Some(&alice))).status,
        200
    );
    let image = TestImage::new("token");
    image.push(addr, "team/app", "v1", Some(&alice));

    let elsewhere = call(
        addr,
        req("POST", "/v2/other/blobs/uploads/").auth(Some(&alice)),
    );
    assert_eq!(
        elsewhere.status, 401,
        "a token for one repository is no good for another"
    );
    let challenge = elsewhere.header("WWW-Authenticate").unwrap();
    assert!(
        challenge.ends_with(",error=\"insufficient_scope\""),
        "{challenge}"
    );

    let bob = bearer(&token(addr, &[scope], Some(("bob", "reader"))));
    assert_eq!(
        call(
            addr,
            req("GET", "/v2/team/app/manifests/v1").auth(Some(&bob))
        )
        .status,
        200
    );
    let push = call(
        addr,
        req("POST", "/v2/team/app/blobs/uploads/").auth(Some(&bob)),
    );
    assert_eq!((push.status, push.error_code().as_str()), (403, "DENIED"));

    let anonymous = bearer(&token(addr, &[scope], None));
    let pull = req("GET", "/v2/team/app/manifests/v1").auth(Some(&anonymous));
    assert_eq!(call(addr, pull).status, 200, "anonymous pull");
    let push = call(
        addr,
        req("POST", "/v2/team/app/blobs/uploads/").auth(Some(&anonymous)),
    );
    assert_eq!(push.status, 401, "anonymous callers may still log in");

    let refused = token(addr, &[scope], Some(("alice", "wrong")));
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (401, "UNAUTHORIZED")
    );
    let forged = call(addr, req("GET", "/v2/").auth(Some("Bearer forged")));
    let challenge = forged.header("WWW-Authenticate").unwrap();
    assert!(
        challenge.ends_with(",error=\"invalid_token\""),
        "{challenge}"
    );
}

#[test]
fn a_token_with_several_scopes_allows_a_mount() {
    let server = start(AuthMode::Token, |_| {});
    let addr = server.addr();
    let scopes = ["repository:dest:pull,push", "repository:source:pull,push"];
    let alice = bearer(&token(addr, &scopes, Some(("alice", "secret"))));
    let digest = push_blob(addr, "source", b"layer", Some(&alice));
    let mount = format!("/v2/dest/blobs/uploads/?mount={digest}&from=source");
    assert_eq!(
        call(addr, req("POST", &mount).auth(Some(&alice))).status,
        201
    );

    // Without pull on the source the mount quietly becomes an upload, as on Docker Hub.
    let narrow = bearer(&token(
        addr,
        &["repository:third:pull,push"],
        Some(("alice", "secret")),
    ));
    let mount = format!("/v2/third/blobs/uploads/?mount={digest}&from=source");
    assert_eq!(
        call(addr, req("POST", &mount).auth(Some(&narrow))).status,
        202
    );
}

#[test]
fn tokens_expire_and_must_be_renewed() {
    let server = start(AuthMode::Token, |c| {
        c.token_lifetime = Duration::from_secs(2)
    });
    let addr = server.addr();
    let reply = token(addr, &["repository:app:pull"], None);
    assert_eq!(reply.json()["expires_in"], 2);
    let anonymous = bearer(&reply);
    assert_eq!(
        call(addr, req("GET", "/v2/").auth(Some(&anonymous))).status,
        200
    );
    std::thread::sleep(Duration::from_millis(2100));
    let expired = call(addr, req("GET", "/v2/").auth(Some(&anonymous)));
    assert_eq!(expired.status, 401);
    assert!(expired
        .header("WWW-Authenticate")
        .unwrap()
        .contains("error=\"invalid_token\""));
    let renewed = bearer(&token(addr, &["repository:app:pull"], None));
    assert_eq!(
        call(addr, req("GET", "/v2/").auth(Some(&renewed))).status,
        200
    );
}

#[test]
fn without_anonymous_pull_anonymous_tokens_grant_nothing() {
    let server = start(AuthMode::Token, |c| c.anonymous_pull = false);
    let addr = server.addr();
    let alice = bearer(&token(
        addr,
        &["repository:app:push"],
        Some(("alice", "secret")),
    ));
    TestImage::new("private").push(addr, "app", "v1", Some(&alice));
    let anonymous = bearer(&token(addr, &["repository:app:pull"], None));
    let pull = call(
        addr,
        req("GET", "/v2/app/manifests/v1").auth(Some(&anonymous)),
    );
    assert_eq!(pull.status, 401);
}

#[test]
fn the_token_endpoint_exists_only_in_token_mode() {
    let server = start(AuthMode::None, |_| {});
    assert_eq!(call(server.addr(), req("GET", "/token")).status, 404);
    let server = start(AuthMode::Token, |_| {});
    let oauth = req("POST", "/token").body(b"grant_type=password&username=alice");
    assert_eq!(
        call(server.addr(), oauth).status,
        405,
        "GET is the only flow"
    );
}
