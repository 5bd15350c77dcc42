//! Content digests (`sha256:<64 hex>`), checked by grammar before they are ever used as a
//! file name or URL (SECURITY.md rule 6).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A validated `sha256:` digest. Other algorithms are rejected: kiln only writes sha256 and
/// refuses to use unknown digests as paths.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid digest {0:?}: expected sha256: followed by 64 lower-case hex digits")]
pub struct BadDigest(pub String);

impl Digest {
    /// Parses `sha256:<64 lower-case hex>`.
    pub fn parse(s: &str) -> Result<Self, BadDigest> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| BadDigest(s.into()))?;
        Self::from_hex(hex).map_err(|_| BadDigest(s.into()))
    }

    /// Accepts the 64 hex digits alone (as used in store file names).
    pub fn from_hex(hex: &str) -> Result<Self, BadDigest> {
        let ok = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(Digest {
                hex: hex.to_owned(),
            })
        } else {
            Err(BadDigest(hex.into()))
        }
    }

    /// The digest of a finished hasher.
    pub fn from_hasher(h: Sha256) -> Self {
        Self::from_sha256(h.finalize().into())
    }

    /// The digest whose raw sha256 value is `raw` (a hash computed elsewhere, e.g. by a
    /// parallel walk), without a trip through text.
    pub fn from_sha256(raw: [u8; 32]) -> Self {
        Digest {
            hex: hex::encode(raw),
        }
    }

    /// The digest of an in-memory document (manifests, configs).
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(bytes);
        Self::from_hasher(h)
    }

    /// The digest of everything `reader` yields, read in large pieces.
    pub fn of_reader(reader: &mut dyn std::io::Read) -> std::io::Result<Self> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(Self::from_hasher(h)),
                Ok(n) => h.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// A short form for humans (12 hex digits), as docker prints image IDs.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// As its `sha256:…` text, the form every kiln document and OCI document uses.
impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reading a document is a boundary: a digest that breaks the grammar makes the document
/// unreadable rather than reaching a path.
impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_is_enforced() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().to_string(), good);
        for bad in [
            "sha256:".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}/..", "a".repeat(61)),
            format!("sha256:{}", "a".repeat(65)),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn serde_uses_the_text_form_and_refuses_bad_digests() {
        let digest = Digest::of_bytes(b"x");
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"{digest}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        let err = serde_json::from_str::<Digest>("\"sha256:nope\"").unwrap_err();
        assert!(err.to_string().contains("invalid digest"), "{err}");
    }

    #[test]
    fn empty_input_hashes_to_the_known_value() {
        assert_eq!(
            Digest::of_bytes(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
