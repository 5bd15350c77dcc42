//! Turning `/v2/<name>/...` paths into endpoints.
//!
//! Repository names contain slashes, so a path is read from its end: the last one or two
//! segments say which endpoint it is, and everything before is the name. A name starting
//! with `fault/<spec>/` selects faults and is stored under the rest of the name, so an
//! image pushed as `NAME` can be pulled through `fault/e503x2/NAME`.

use crate::faults::{FaultError, Faults};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/manifests/<tag or digest>`
    Manifest(String),
    /// `/blobs/<digest>`
    Blob(String),
    /// `/blobs/uploads/`
    UploadStart,
    /// `/blobs/uploads/<session>`
    Upload(String),
    /// `/tags/list`
    Tags,
    /// `/referrers/<digest>`
    Referrers(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    /// The name storage uses (without any fault prefix).
    pub name: String,
    /// The name as the client wrote it; used in `Location` headers and token scopes.
    pub visible_name: String,
    /// Faults selected by a `fault/<spec>/` prefix.
    pub faults: Faults,
    pub endpoint: Endpoint,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no such endpoint")]
    NotFound,
    #[error("invalid repository name {0:?}: use lower-case letters, digits and . _ - separators")]
    NameInvalid(String),
    #[error(transparent)]
    Fault(#[from] FaultError),
}

/// Parses a path below `/v2/` (not `/v2/` itself).
pub fn parse(path: &str) -> Result<Route, RouteError> {
    let rest = path.strip_prefix("/v2/").ok_or(RouteError::NotFound)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let (name_segments, endpoint) = split_endpoint(&segments).ok_or(RouteError::NotFound)?;
    let visible_name = name_segments.join("/");
    if !is_valid_name(&visible_name) {
        return Err(RouteError::NameInvalid(visible_name));
    }
    let (name, faults) = match name_segments {
        ["fault", spec, name @ ..] if !name.is_empty() => (name.join("/"), spec.parse()?),
        _ => (visible_name.clone(), Faults::default()),
    };
    Ok(Route {
        name,
        visible_name,
        faults,
        endpoint,
    })
}

fn split_endpoint<'a>(segments: &'a [&'a str]) -> Option<(&'a [&'a str], Endpoint)> {
    let n = segments.len();
    let last = |k: usize| segments.get(n.checked_sub(k)?).copied();
    let endpoint = match (last(3), last(2), last(1)) {
        (_, Some("tags"), Some("list")) => (2, Endpoint::Tags),
        (Some("blobs"), Some("uploads"), Some("")) => (3, Endpoint::UploadStart),
        (_, Some("blobs"), Some("uploads")) => (2, Endpoint::UploadStart),
        (Some("blobs"), Some("uploads"), Some(id)) => (3, Endpoint::Upload(id.to_string())),
        (_, Some("blobs"), Some(d)) => (2, Endpoint::Blob(d.to_string())),
        (_, Some("manifests"), Some(r)) => (2, Endpoint::Manifest(r.to_string())),
        (_, Some("referrers"), Some(d)) => (2, Endpoint::Referrers(d.to_string())),
        _ => return None,
    };
    let name = &segments[..n.checked_sub(endpoint.0).filter(|&len| len > 0)?];
    Some((name, endpoint.1))
}

/// The spec's name grammar: `/`-separated components of lower-case letters and digits,
/// joined inside a component by `.`, `_`, `__` or runs of `-`.
pub fn is_valid_name(name: &str) -> bool {
    name.len() <= 255 && name.split('/').all(is_valid_component)
}

fn is_valid_component(component: &str) -> bool {
    let is_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let separators_ok = component
        .split(is_alnum)
        .filter(|s| !s.is_empty())
        .all(|sep| matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-'));
    component.starts_with(is_alnum) && component.ends_with(is_alnum) && separators_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_endpoints_from_the_end() {
        let route = parse("/v2/library/blobs/blobs/uploads/").unwrap();
        assert_eq!(route.name, "library/blobs");
        assert_eq!(route.endpoint, Endpoint::UploadStart);
        let route = parse("/v2/a/b/manifests/latest").unwrap();
        assert_eq!(
            (route.name.as_str(), route.endpoint),
            ("a/b", Endpoint::Manifest("latest".into()))
        );
        assert_eq!(parse("/v2/a/tags/list").unwrap().endpoint, Endpoint::Tags);
        assert_eq!(
            parse("/v2/a/blobs/uploads/abc").unwrap().endpoint,
            Endpoint::Upload("abc".into())
        );
        assert!(matches!(
            parse("/v2/manifests/x"),
            Err(RouteError::NotFound)
        ));
        assert!(matches!(
            parse("/v1/a/tags/list"),
            Err(RouteError::NotFound)
        ));
    }

    #[test]
    fn strips_the_fault_prefix() {
        let route = parse("/v2/fault/e503x2/team/app/manifests/v1").unwrap();
        assert_eq!(route.name, "team/app");
        assert_eq!(route.visible_name, "fault/e503x2/team/app");
        assert!(!route.faults.is_empty());
        assert!(matches!(
            parse("/v2/fault/bogus/app/tags/list"),
            Err(RouteError::Fault(_))
        ));
    }

    #[test]
    fn validates_names() {
        for good in ["a", "a/b", "a.b_c__d--e", "x9/y-z"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "A", "a//b", "-a", "a.", "a..b", "a___b", "a/../b"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
