//! Image references (`[registry/]path[:tag][@digest]`) and their normalised form.
//!
//! A store tag is the normalised reference, so `hello`, `hello:latest` and
//! `localhost/hello:latest` name the same image. Names given to local images (build `-t`,
//! `tag`, `import`) without a registry go under `localhost/`, like podman; when looking an
//! image up, `alpine` also matches `docker.io/library/alpine:latest`, where a later `pull`
//! will put it.

use std::fmt;

use super::Digest;

/// Where a bare name without a registry lives when it names a local image.
pub const LOCAL_DOMAIN: &str = "localhost";
/// Docker Hub, the registry of bare names that are pulled.
pub const DOCKER_HUB: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {input:?}: {why}")]
pub struct BadReference {
    pub input: String,
    pub why: String,
}

impl Reference {
    /// Parses a reference and fills in the registry for a bare name with `default_domain`
    /// (`localhost` for local names, `docker.io` for pulls). A reference without tag or
    /// digest gets `:latest`.
    pub fn parse(input: &str, default_domain: &str) -> Result<Self, BadReference> {
        let bad = |why: &str| BadReference {
            input: input.into(),
            why: why.into(),
        };
        if input.is_empty() || input.len() > 255 {
            return Err(bad("must be 1 to 255 characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(|e| bad(&e.to_string()))?)),
            None => (input, None),
        };
        let (name, tag) = split_tag(rest);
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad(
                    "a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let (domain, path) = split_domain(name, default_domain);
        if !path.split('/').all(valid_path_component) {
            return Err(bad(
                "repository names are lower-case letters, digits and separators (. _ __ -), \
                 with / between components",
            ));
        }
        let path = if domain == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            (t, _) => t.map(str::to_owned),
        };
        Ok(Reference {
            domain: domain.to_owned(),
            path,
            tag,
            digest,
        })
    }

    /// A reference for a local image name (`hello` → `localhost/hello:latest`).
    pub fn local(input: &str) -> Result<Self, BadReference> {
        Self::parse(input, LOCAL_DOMAIN)
    }

    /// Every normalised form a user-typed name may refer to, most likely first: a bare
    /// `hello` is first `localhost/hello:latest`, then `docker.io/library/hello:latest`.
    pub fn candidates(input: &str) -> Result<Vec<Self>, BadReference> {
        let local = Self::local(input)?;
        let mut out = vec![local];
        if !has_explicit_domain(input) {
            out.push(Self::parse(input, DOCKER_HUB)?);
        }
        Ok(out)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Splits `name:tag`; a `:` followed by a `/` belongs to a registry port instead.
fn split_tag(s: &str) -> (&str, Option<&str>) {
    match s.rfind(':') {
        Some(i) if !s[i + 1..].contains('/') => (&s[..i], Some(&s[i + 1..])),
        _ => (s, None),
    }
}

fn has_explicit_domain(name: &str) -> bool {
    match name.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == LOCAL_DOMAIN,
        None => false,
    }
}

fn split_domain<'a>(name: &'a str, default_domain: &'a str) -> (&'a str, &'a str) {
    if has_explicit_domain(name) {
        name.split_once('/').unwrap_or((default_domain, name))
    } else {
        (default_domain, name)
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, as in the distribution reference grammar.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok || start == i {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str) -> String {
        Reference::local(s).unwrap().to_string()
    }

    #[test]
    fn local_names_normalise_under_localhost() {
        assert_eq!(local("hello"), "localhost/hello:latest");
        assert_eq!(local("hello:1.0"), "localhost/hello:1.0");
        assert_eq!(local("me/hello"), "localhost/me/hello:latest");
        assert_eq!(local("localhost/hello"), "localhost/hello:latest");
        assert_eq!(local("reg.example:5000/a/b:v2"), "reg.example:5000/a/b:v2");
    }

    #[test]
    fn hub_names_get_library() {
        let r = Reference::parse("alpine", DOCKER_HUB).unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        let c = Reference::candidates("alpine:3").unwrap();
        assert_eq!(c[1].to_string(), "docker.io/library/alpine:3");
    }

    #[test]
    fn bad_references_are_rejected() {
        for bad in [
            "",
            "Hello",
            "a//b",
            "a:",
            "a:-x",
            "-a",
            "a@sha256:xyz",
            "a b",
        ] {
            assert!(Reference::local(bad).is_err(), "{bad:?} accepted");
        }
    }
}
