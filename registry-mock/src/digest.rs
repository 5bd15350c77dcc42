//! Content digests and manifest references, parsed strictly.
//!
//! Every blob and manifest the registry stores is verified against its digest, and digests
//! become storage paths, so only well-formed `sha256:`/`sha512:` digests get past here.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated `algorithm:hex` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid digest {0:?}: expected sha256:<64 hex> or sha512:<128 hex>")]
pub struct DigestError(String);

impl Digest {
    pub fn compute(algorithm: Algorithm, data: &[u8]) -> Digest {
        let hex = match algorithm {
            Algorithm::Sha256 => hex::encode(Sha256::digest(data)),
            Algorithm::Sha512 => hex::encode(Sha512::digest(data)),
        };
        Digest { algorithm, hex }
    }

    pub fn sha256(data: &[u8]) -> Digest {
        Digest::compute(Algorithm::Sha256, data)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// True when `data` hashes to this digest.
    pub fn matches(&self, data: &[u8]) -> bool {
        Digest::compute(self.algorithm, data) == *self
    }

    /// `sha256/<hex>`: the digest as a relative storage path.
    pub fn storage_key(&self) -> String {
        format!("{}/{}", self.algorithm.name(), self.hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || DigestError(text.to_string());
        let (name, hex) = text.split_once(':').ok_or_else(invalid)?;
        let algorithm = match name {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid()),
        };
        let well_formed = hex.len() == algorithm.hex_len()
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !well_formed {
            return Err(invalid());
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    pub fn parse(text: &str) -> Option<Reference> {
        if text.contains(':') {
            return text.parse().ok().map(Reference::Digest);
        }
        is_valid_tag(text).then(|| Reference::Tag(text.to_string()))
    }
}

/// The distribution spec's tag grammar: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    first_ok && tag.len() <= 128 && bytes.all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_verifies() {
        let d = Digest::sha256(b"hello");
        let again: Digest = d.to_string().parse().unwrap();
        assert_eq!(d, again);
        assert!(again.matches(b"hello"));
        assert!(!again.matches(b"hullo"));
        assert!(Digest::compute(Algorithm::Sha512, b"x")
            .to_string()
            .starts_with("sha512:"));
    }

    #[test]
    fn rejects_malformed_digests_and_tags() {
        for bad in ["sha256:abc", "md5:00", "sha256:../../etc", "nocolon"] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
        assert!(is_valid_tag("v1.0_rc-1"));
        assert!(!is_valid_tag(".hidden"));
        assert!(!is_valid_tag("a/b"));
        assert!(Reference::parse("..").is_none());
    }
}
