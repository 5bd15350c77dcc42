//! Which token services may see the registry's credentials (SECURITY.md §3 rule 16).
//!
//! A registry that answers `401` with `WWW-Authenticate: Bearer realm="URL"` chooses where
//! a client sends the user's credentials to get a token. That choice alone is not enough to
//! trust the place: a registry (or whoever can change its answers) could name any host. So
//! kiln sends the credentials to a realm only when [`trust`] allows it, and otherwise asks
//! the realm for an anonymous token, which is all a public pull needs.
//!
//! The rule, origin by host (ports are not compared):
//!
//! * **Host**: the realm's host is the registry's own host; or both are DNS names with the
//!   same *registrable domain* ([`registrable_domain`]: `auth.docker.io` for
//!   `registry-1.docker.io`); or the realm's host is listed, exactly, under
//!   `trusted_token_realms:` in kiln's config file.
//! * **Transport**: the realm is https; or it is plain http, the registry itself is reached
//!   over plain http (loopback, or listed as insecure), and the realm is on the registry's
//!   own host or on loopback. An https registry never sends credentials to a plain-http
//!   realm, even a trusted one.

use std::net::IpAddr;

use reqwest::Url;
use url::Host;

use super::error::Withheld;

/// Second-level domains under which unrelated owners get sibling names (shared hosting and
/// dynamic DNS): two hosts that share only one of these share no owner.
const SHARED_SUFFIXES: &[&str] = &[
    "amazonaws.com",
    "appspot.com",
    "azurecr.io",
    "azurewebsites.net",
    "blogspot.com",
    "cloudapp.net",
    "cloudfront.net",
    "ddns.net",
    "duckdns.org",
    "dyndns.org",
    "firebaseapp.com",
    "fly.dev",
    "github.io",
    "gitlab.io",
    "herokuapp.com",
    "netlify.app",
    "ngrok-free.app",
    "ngrok.io",
    "nip.io",
    "no-ip.org",
    "onrender.com",
    "pages.dev",
    "sslip.io",
    "trycloudflare.com",
    "vercel.app",
    "web.app",
    "workers.dev",
];

/// Second-level labels that registries hand out to the public below a top-level domain
/// (`co.uk`, `com.au`, `gov.br`, `com.io`).
const PUBLIC_SECOND_LEVELS: &[&str] = &[
    "ac", "co", "com", "edu", "go", "gob", "gov", "gv", "int", "ltd", "mil", "ne", "net", "nic",
    "nom", "or", "org", "plc", "sch",
];

/// Two-letter (country-code) top-level domains known to register names directly at the
/// second level. Under any other country code a two-label suffix may be public
/// (`tokyo.jp`, `ca.us`), so no registrable domain is assumed there.
const FLAT_COUNTRY_CODES: &[&str] = &["ai", "ch", "co", "de", "eu", "io", "me", "nl", "tv"];

/// A host as compared here: a lower-case DNS name without a trailing dot, or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostName {
    Name(String),
    Ip(IpAddr),
}

impl HostName {
    fn of(host: Host<&str>) -> HostName {
        match host {
            Host::Domain(d) => HostName::parse(d),
            Host::Ipv4(a) => HostName::Ip(a.into()),
            Host::Ipv6(a) => HostName::Ip(a.into()),
        }
    }

    /// A host as written in `trusted_token_realms:` (`[::1]` and `::1` alike).
    fn parse(text: &str) -> HostName {
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        match bare.parse::<IpAddr>() {
            Ok(ip) => HostName::Ip(ip),
            Err(_) => HostName::Name(bare.trim_end_matches('.').to_ascii_lowercase()),
        }
    }

    fn is_loopback(&self) -> bool {
        match self {
            HostName::Name(n) => n == "localhost",
            HostName::Ip(ip) => ip.is_loopback(),
        }
    }
}

/// Whether the token service at `realm` may receive the credentials of the registry at
/// `registry` (its base URL: the scheme and host kiln reaches it by); `trusted` are the
/// hosts of `trusted_token_realms:`. `Err` says why not; kiln then asks anonymously.
pub(super) fn trust(registry: &Url, realm: &Url, trusted: &[String]) -> Result<(), Withheld> {
    let (Some(registry_host), Some(realm_host)) = (registry.host(), realm.host()) else {
        return Err(Withheld::Host);
    };
    let registry_host = HostName::of(registry_host);
    let realm_host = HostName::of(realm_host);
    let same_host = registry_host == realm_host;
    let same_domain = match (&registry_host, &realm_host) {
        (HostName::Name(a), HostName::Name(b)) => {
            registrable_domain(a).is_some_and(|d| registrable_domain(b) == Some(d))
        }
        _ => false,
    };
    let listed = trusted.iter().any(|t| HostName::parse(t) == realm_host);
    if !(same_host || same_domain || listed) {
        return Err(Withheld::Host);
    }
    match realm.scheme() {
        "https" => Ok(()),
        "http" if registry.scheme() == "http" && (same_host || realm_host.is_loopback()) => Ok(()),
        _ => Err(Withheld::PlainHttp),
    }
}

/// The registrable domain of a DNS name under kiln's conservative rule: its last two
/// labels, unless those may be a suffix the public registers names under — a known shared
/// hosting domain, a second label of two letters or less or a common public one (`co`,
/// `com`, `gov`, …), or any country code but a few that register names directly. Then there
/// is none, and only the exact host (or `trusted_token_realms:`) counts. Wrongly saying
/// "none" costs an anonymous token and a hint; wrongly saying "same" would leak credentials.
pub(super) fn registrable_domain(name: &str) -> Option<&str> {
    let mut labels = name.rsplit('.');
    let tld = labels.next()?;
    let second = labels.next()?;
    if tld.is_empty() || second.is_empty() || tld.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let domain = &name[name.len() - tld.len() - second.len() - 1..];
    let public = SHARED_SUFFIXES.contains(&domain)
        || second.len() <= 2
        || PUBLIC_SECOND_LEVELS.contains(&second)
        || (tld.len() == 2 && !FLAT_COUNTRY_CODES.contains(&tld));
    (!public).then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(registry: &str, realm: &str, trusted: &[&str]) -> Result<(), Withheld> {
        let trusted: Vec<String> = trusted.iter().map(|t| t.to_string()).collect();
        trust(
            &Url::parse(registry).unwrap(),
            &Url::parse(realm).unwrap(),
            &trusted,
        )
    }

    #[test]
    fn docker_hub_sends_credentials_to_auth_docker_io() {
        for registry in [
            "https://registry-1.docker.io/",
            "https://index.docker.io/",
            "https://docker.io/",
        ] {
            assert_eq!(check(registry, "https://auth.docker.io/token", &[]), Ok(()));
        }
        assert_eq!(registrable_domain("auth.docker.io"), Some("docker.io"));
        assert_eq!(
            registrable_domain("registry.gitlab.com"),
            Some("gitlab.com")
        );
        assert_eq!(
            check(
                "https://registry.gitlab.com/",
                "https://gitlab.com/jwt/auth",
                &[]
            ),
            Ok(())
        );
    }

    #[test]
    fn the_same_host_on_any_port_is_the_same_origin() {
        assert_eq!(
            check("https://reg.lan:5000/", "https://reg.lan:8443/token", &[]),
            Ok(())
        );
        assert_eq!(
            check("https://reg.lan/", "https://REG.LAN./token", &[]),
            Ok(())
        );
        // A single-label name has no registrable domain: only itself.
        assert_eq!(
            check("https://reg/", "https://auth/token", &[]),
            Err(Withheld::Host)
        );
    }

    #[test]
    fn subdomains_share_their_registrable_domain() {
        for realm in [
            "https://auth.example.com/token",
            "https://example.com/token",
            "https://a.b.c.example.com/token",
        ] {
            assert_eq!(check("https://registry.example.com/", realm, &[]), Ok(()));
        }
        assert_eq!(
            check(
                "https://registry.example.com/",
                "https://example.org/token",
                &[]
            ),
            Err(Withheld::Host)
        );
    }

    #[test]
    fn lookalike_domains_are_other_domains() {
        for realm in [
            "https://docker.io.evil.com/token",
            "https://evil-docker.io/token",
            "https://dockerio.com/token",
            "https://auth.docker.io-evil.com/token",
            "https://auth.docker.com/token",
        ] {
            assert_eq!(
                check("https://registry-1.docker.io/", realm, &[]),
                Err(Withheld::Host),
                "{realm}"
            );
        }
    }

    #[test]
    fn ip_literals_match_only_themselves() {
        assert_eq!(
            check("https://10.0.0.7:5000/", "https://10.0.0.7:5001/token", &[]),
            Ok(())
        );
        // Addresses have no registrable domain: the same "last two labels" mean nothing.
        for realm in [
            "https://10.0.0.8/token",
            "https://9.9.0.7/token",
            "https://0.7/token",
        ] {
            assert_eq!(
                check("https://10.0.0.7:5000/", realm, &[]),
                Err(Withheld::Host),
                "{realm}"
            );
        }
        assert_eq!(
            check(
                "http://[::1]:5000/",
                "http://[0:0:0:0:0:0:0:1]:6000/token",
                &[]
            ),
            Ok(())
        );
        assert_eq!(
            check("http://127.0.0.1:5000/", "http://127.0.0.2:5000/token", &[]),
            Err(Withheld::Host)
        );
        assert_eq!(
            check("https://10.0.0.7/", "https://10.0.0.8/token", &["10.0.0.8"]),
            Ok(())
        );
        assert_eq!(
            check(
                "http://[::1]:5000/",
                "http://localhost:6000/token",
                &["[::1]"]
            ),
            Err(Withheld::Host)
        );
    }

    #[test]
    fn public_suffixes_are_not_registrable_domains() {
        for (registry, realm) in [
            (
                "https://reg.example.co.uk/",
                "https://auth.example.co.uk/token",
            ),
            ("https://reg.shop.com.au/", "https://evil.com.au/token"),
            (
                "https://victim.github.io/",
                "https://attacker.github.io/token",
            ),
            ("https://a.azurecr.io/", "https://b.azurecr.io/token"),
            ("https://reg.a.br.com/", "https://b.br.com/token"),
            ("https://reg.example.jp/", "https://auth.example.jp/token"),
            ("https://reg.city.ca.us/", "https://evil.ca.us/token"),
            ("https://a.com.io/", "https://b.com.io/token"),
        ] {
            assert_eq!(check(registry, realm, &[]), Err(Withheld::Host), "{realm}");
        }
        for name in ["co.uk", "github.io", "uk", "example.co.uk", "x.hp.com"] {
            assert_eq!(registrable_domain(name), None, "{name}");
        }
        // Listed in the config, an exact host is trusted wherever it is.
        assert_eq!(
            check(
                "https://reg.example.co.uk/",
                "https://auth.example.co.uk/token",
                &["auth.example.co.uk"]
            ),
            Ok(())
        );
    }

    #[test]
    fn trusted_realms_are_exact_hosts() {
        let registry = "https://registry.example.com/";
        assert_eq!(
            check(
                registry,
                "https://login.other.net/token",
                &["LOGIN.other.net."]
            ),
            Ok(())
        );
        assert_eq!(
            check(registry, "https://login.other.net/token", &["other.net"]),
            Err(Withheld::Host)
        );
        assert_eq!(
            check(registry, "https://other.net/token", &["login.other.net"]),
            Err(Withheld::Host)
        );
    }

    #[test]
    fn plain_http_realms_get_credentials_only_from_plain_http_registries() {
        // An https registry: never to http, whatever the host.
        for trusted in [&[][..], &["reg.example.com"][..]] {
            assert_eq!(
                check(
                    "https://reg.example.com/",
                    "http://reg.example.com/token",
                    trusted
                ),
                Err(Withheld::PlainHttp)
            );
        }
        assert_eq!(
            check(
                "https://127.0.0.1:5000/",
                "http://127.0.0.1:5001/token",
                &[]
            ),
            Err(Withheld::PlainHttp)
        );
        // A loopback registry over http: to its own host, or a trusted loopback realm.
        assert_eq!(
            check("http://127.0.0.1:5000/", "http://127.0.0.1:5001/token", &[]),
            Ok(())
        );
        assert_eq!(
            check("http://127.0.0.1:5000/", "http://localhost:5001/token", &[]),
            Err(Withheld::Host)
        );
        assert_eq!(
            check(
                "http://127.0.0.1:5000/",
                "http://localhost:5001/token",
                &["localhost"]
            ),
            Ok(())
        );
        // An insecure registry: its own host only; a trusted non-loopback http realm on
        // another host never.
        assert_eq!(
            check("http://reg.lan:5000/", "http://reg.lan:5001/token", &[]),
            Ok(())
        );
        assert_eq!(
            check(
                "http://reg.lan:5000/",
                "http://auth.lan/token",
                &["auth.lan"]
            ),
            Err(Withheld::PlainHttp)
        );
        // An https realm for a plain-http registry is fine by the host rule.
        assert_eq!(
            check(
                "http://127.0.0.1:5000/",
                "https://auth.example.com/token",
                &[]
            ),
            Err(Withheld::Host)
        );
    }
}
