//! Fetching manifests and indexes, checking what they claim to be, and picking the
//! host's platform out of an index.
//!
//! A document is read up to the `document_size` bound (SECURITY.md rule 7). Its kind must be unambiguous
//! (CVE-2021-41190): a document with both `manifests` and `layers`/`config` is refused,
//! its `mediaType` (when present) must be the one it was served as, and a manifest reached
//! through a descriptor must have the descriptor's media type and digest.

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Method;

use super::retry::{self, Transient};
use super::transport::{header, read_body, Client};
use super::{PlatformError, RegistryError, Result};
use kiln_image::incoming::{IncomingError, Role};
use kiln_store::oci::{
    MEDIA_TYPE_DOCKER_LIST as DOCKER_LIST, MEDIA_TYPE_DOCKER_MANIFEST as DOCKER_MANIFEST,
    MEDIA_TYPE_INDEX as OCI_INDEX, MEDIA_TYPE_MANIFEST as OCI_MANIFEST,
};
use kiln_store::{Bounds, Digest};

/// What a fetched document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Manifest,
    Index,
}

/// A document as fetched: exact bytes, digest, and the media type it is known by.
pub(super) struct Document {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
    pub kind: Kind,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Manifest),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// Fetches the manifest or index named by a tag or digest. When `expected` is given (a
/// digest from the reference or an index), the bytes must hash to it.
pub(super) async fn fetch(
    client: &Client,
    tag_or_digest: &str,
    expected: Option<&Digest>,
    bounds: &Bounds,
) -> Result<Document> {
    let name = format!("{}:{tag_or_digest}", client.repository());
    let url = client.url(&format!("manifests/{tag_or_digest}"));
    let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
    let what = format!("manifest {name}");
    // The body is part of each try: a manifest cut mid-transfer is fetched again, like a
    // blob (which resumes instead; a manifest is small).
    let (content_type, bytes) = retry::with_retries(client.retry_time(), || async {
        let deadline = client.deadline(0);
        let response = client
            .exchange_within(&deadline, || {
                client
                    .http()
                    .get(url.clone())
                    .header(ACCEPT, accept.as_str())
            })
            .await?;
        let response = client
            .expect_success(response, Method::GET.as_str(), &what)
            .await?;
        let content_type = header(response.headers(), CONTENT_TYPE.as_str()).unwrap_or_default();
        let limit = usize::try_from(bounds.document_size).unwrap_or(usize::MAX);
        let bytes = read_body(response, limit, &deadline)
            .await
            .map_err(|e| match e {
                RegistryError::BodyTooLarge { .. } => {
                    let too_large = RegistryError::incoming(
                        name.clone(),
                        IncomingError::DocumentTooLarge {
                            role: Role::Manifest,
                            what: tag_or_digest.to_owned(),
                            limit: bounds.document_size,
                        },
                    );
                    (too_large, None)
                }
                e => {
                    let transient = e.is_transient();
                    (e, transient.then_some(Transient { retry_after: None }))
                }
            })?;
        Ok((content_type, bytes))
    })
    .await?;
    let digest = Digest::of_bytes(&bytes);
    if let Some(expected) = expected {
        if &digest != expected {
            return Err(bad(
                &name,
                format!("digest mismatch: its content has digest {digest}, expected {expected}"),
            ));
        }
    }
    let (media_type, kind) = classify(&name, &bytes, &content_type)?;
    Ok(Document {
        bytes,
        digest,
        media_type,
        kind,
    })
}

fn bad(name: &str, why: String) -> RegistryError {
    RegistryError::BadManifest {
        reference: name.to_owned(),
        why,
    }
}

/// Decides what a document is from its own `mediaType`, its shape and the Content-Type it
/// was served with, refusing any disagreement.
pub(super) fn classify(name: &str, bytes: &[u8], content_type: &str) -> Result<(String, Kind)> {
    let doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(name, format!("not JSON: {e}")))?;
    let has_manifests = doc.get("manifests").is_some();
    let has_image_fields = doc.get("layers").is_some() || doc.get("config").is_some();
    if has_manifests && has_image_fields {
        return Err(bad(
            name,
            "it has both `manifests` and `layers`/`config`: refusing an ambiguous document".into(),
        ));
    }
    let served = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let declared = doc.get("mediaType").and_then(|m| m.as_str());
    let media_type = match declared {
        Some(declared) => {
            if kind_of(&served).is_some() && served != declared {
                return Err(bad(
                    name,
                    format!("served as {served} but its mediaType is {declared}"),
                ));
            }
            declared.to_owned()
        }
        None => served,
    };
    let kind = kind_of(&media_type).ok_or_else(|| {
        bad(
            name,
            format!("unsupported media type {media_type:?} (kiln reads OCI and Docker schema 2)"),
        )
    })?;
    let shape_agrees = match kind {
        Kind::Index => has_manifests,
        Kind::Manifest => has_image_fields,
    };
    if !shape_agrees {
        return Err(bad(
            name,
            format!("its content does not look like a {media_type}"),
        ));
    }
    Ok((media_type, kind))
}

/// An image platform, as `--platform os/arch[/variant]` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This machine: linux and its architecture, with the variant an index usually gives.
    pub fn host() -> Platform {
        let architecture = kiln_image::go_arch().to_owned();
        let variant = match architecture.as_str() {
            "arm64" => Some("v8".to_owned()),
            "arm" => Some("v7".to_owned()),
            _ => None,
        };
        Platform {
            os: "linux".into(),
            architecture,
            variant,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> std::result::Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(PlatformError(s.into())),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The index entry for `wanted`: os and architecture must match; an entry with the same
/// variant wins over one without a variant (which Docker treats as the default).
pub(super) fn pick_platform(
    name: &str,
    index: &oci_spec::image::ImageIndex,
    wanted: &Platform,
) -> Result<oci_spec::image::Descriptor> {
    let candidates = index.manifests().iter().filter_map(|d| {
        let p = d.platform().as_ref()?;
        let same =
            p.os().to_string() == wanted.os && p.architecture().to_string() == wanted.architecture;
        same.then_some((d, p.variant().clone()))
    });
    let mut fallback = None;
    for (desc, variant) in candidates {
        match (&variant, &wanted.variant) {
            (Some(v), Some(w)) if v == w => return Ok(desc.clone()),
            (None, _) if fallback.is_none() => fallback = Some(desc.clone()),
            (Some(_), None) if fallback.is_none() => fallback = Some(desc.clone()),
            _ => {}
        }
    }
    fallback.ok_or_else(|| RegistryError::NoPlatform {
        reference: name.to_owned(),
        wanted: wanted.to_string(),
        available: available_platforms(index),
    })
}

fn available_platforms(index: &oci_spec::image::ImageIndex) -> String {
    let list: Vec<String> = index
        .manifests()
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| {
            let mut s = format!("{}/{}", p.os(), p.architecture());
            if let Some(v) = p.variant() {
                s.push('/');
                s.push_str(v);
            }
            s
        })
        .collect();
    if list.is_empty() {
        "no platforms".into()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;

    #[test]
    fn media_types_must_agree() {
        assert_eq!(
            classify(
                "x",
                MANIFEST.as_bytes(),
                "application/vnd.oci.image.manifest.v1+json; charset=utf-8"
            )
            .unwrap()
            .1,
            Kind::Manifest
        );
        // Served as an index but says it is a manifest.
        assert!(classify("x", MANIFEST.as_bytes(), OCI_INDEX).is_err());
        // Generic content types defer to the document.
        assert!(classify("x", MANIFEST.as_bytes(), "application/json").is_ok());
        let ambiguous = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[],"manifests":[]}"#;
        assert!(classify("x", ambiguous.as_bytes(), OCI_MANIFEST).is_err());
        // No mediaType: the Content-Type decides, and the shape must agree with it.
        let index = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            classify("x", index.as_bytes(), OCI_INDEX).unwrap().1,
            Kind::Index
        );
        assert!(classify("x", index.as_bytes(), OCI_MANIFEST).is_err());
        assert!(classify("x", index.as_bytes(), "text/plain").is_err());
    }

    #[test]
    fn platforms_match_variant_first() {
        let index: oci_spec::image::ImageIndex = serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{a}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{b}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{c}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            a = "a".repeat(64),
            b = "b".repeat(64),
            c = "c".repeat(64)
        ))
        .unwrap();
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert!(pick_platform("x", &index, &arm)
            .unwrap()
            .digest()
            .as_ref()
            .contains("bbbb"));
        let arm_plain = Platform::parse("linux/arm64").unwrap();
        assert!(pick_platform("x", &index, &arm_plain)
            .unwrap()
            .digest()
            .as_ref()
            .contains("aaaa"));
        let amd = Platform::parse("linux/amd64").unwrap();
        assert!(pick_platform("x", &index, &amd)
            .unwrap()
            .digest()
            .as_ref()
            .contains("cccc"));
        let err = pick_platform("x", &index, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        assert!(err.to_string().contains("linux/arm64/v8"), "{err}");
        assert!(Platform::parse("linux").is_err());
    }
}
