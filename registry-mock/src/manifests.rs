//! `/v2/<name>/manifests/<reference>`: GET, HEAD, PUT and DELETE, by tag or by digest.
//!
//! A manifest is stored byte for byte and served with the media type it was pushed with,
//! so its digest stays what the client computed. On push, the blobs (or, for an index, the
//! manifests) it references must already be in the repository, as on a real registry.

use serde_json::Value;

use crate::digest::{Digest, Reference};
use crate::errors::{error, storage_failure, Code};
use crate::http::Response;
use crate::registry::Ctx;
use crate::storage::StoredManifest;

/// Manifests larger than this are refused, as the spec suggests (4 MiB).
const MAX_MANIFEST: usize = 4 << 20;

fn parse_reference(raw: &str) -> Result<Reference, Response> {
    Reference::parse(raw).ok_or_else(|| match raw.contains(':') {
        true => error(400, Code::DigestInvalid, format!("invalid digest {raw:?}")),
        false => error(400, Code::ManifestInvalid, format!("invalid tag {raw:?}")),
    })
}

pub fn get(ctx: &Ctx, raw: &str) -> Response {
    let reference = match parse_reference(raw) {
        Ok(r) => r,
        Err(response) => return response,
    };
    match ctx.store().manifest(&ctx.route.name, &reference) {
        Ok(Some(manifest)) => Response::new(200)
            .header("Docker-Content-Digest", manifest.digest.to_string())
            .body(&manifest.media_type, manifest.bytes),
        Ok(None) => error(
            404,
            Code::ManifestUnknown,
            format!(
                "manifest {raw} not found in repository {}",
                ctx.route.visible_name
            ),
        ),
        Err(e) => storage_failure(&e),
    }
}

pub fn put(ctx: &Ctx, raw: &str) -> Response {
    match store_manifest(ctx, raw) {
        Ok(response) | Err(response) => response,
    }
}

fn store_manifest(ctx: &Ctx, raw: &str) -> Result<Response, Response> {
    let reference = parse_reference(raw)?;
    let bytes = &ctx.request.body;
    if bytes.len() > MAX_MANIFEST {
        return Err(error(
            413,
            Code::SizeInvalid,
            format!("manifest is larger than {MAX_MANIFEST} bytes"),
        ));
    }
    let json: Value = serde_json::from_slice(bytes).map_err(|e| {
        error(
            400,
            Code::ManifestInvalid,
            format!("manifest is not JSON: {e}"),
        )
    })?;
    let media_type = media_type(ctx, &json)?;
    let digest = match &reference {
        Reference::Digest(claimed) => {
            let actual = Digest::compute(claimed.algorithm(), bytes);
            if actual != *claimed {
                let why = format!("manifest digest is {actual}, not {claimed}");
                return Err(error(400, Code::DigestInvalid, why));
            }
            actual
        }
        Reference::Tag(_) => Digest::sha256(bytes),
    };
    check_references(ctx, &json)?;
    let manifest = StoredManifest {
        digest: digest.clone(),
        media_type,
        bytes: bytes.clone(),
    };
    let tag = match &reference {
        Reference::Tag(tag) => Some(tag.as_str()),
        Reference::Digest(_) => None,
    };
    ctx.store()
        .put_manifest(&ctx.route.name, &manifest, tag)
        .map_err(|e| storage_failure(&e))?;
    let mut response = Response::new(201)
        .header("Location", ctx.location(&format!("manifests/{digest}")))
        .header("Docker-Content-Digest", digest.to_string());
    if let Some(subject) = json.pointer("/subject/digest").and_then(Value::as_str) {
        response = response.header("OCI-Subject", subject);
    }
    Ok(response)
}

/// The `Content-Type` sent (without parameters), or else the manifest's own `mediaType`.
fn media_type(ctx: &Ctx, json: &Value) -> Result<String, Response> {
    let header = ctx
        .request
        .header("content-type")
        .map(|t| t.split(';').next().unwrap_or_default().trim().to_string())
        .filter(|t| !t.is_empty());
    let declared = json.get("mediaType").and_then(Value::as_str);
    header.or(declared.map(str::to_string)).ok_or_else(|| {
        error(
            400,
            Code::ManifestInvalid,
            "manifest has no media type: send it as Content-Type",
        )
    })
}

/// Refuses a manifest whose config, layers or child manifests are not in the repository.
fn check_references(ctx: &Ctx, json: &Value) -> Result<(), Response> {
    let descriptors = |key: &str| json.get(key).and_then(Value::as_array).cloned();
    let blobs = json
        .get("config")
        .cloned()
        .into_iter()
        .chain(descriptors("layers").unwrap_or_default());
    for descriptor in blobs {
        let digest = descriptor_digest(&descriptor)?;
        let present = ctx.store().has_blob(&ctx.route.name, &digest);
        if !present.map_err(|e| storage_failure(&e))? {
            let why = format!(
                "manifest references blob {digest}, which was not pushed to this repository"
            );
            return Err(error(400, Code::ManifestBlobUnknown, why));
        }
    }
    for descriptor in descriptors("manifests").unwrap_or_default() {
        let digest = descriptor_digest(&descriptor)?;
        let child = ctx
            .store()
            .manifest(&ctx.route.name, &Reference::Digest(digest.clone()));
        if child.map_err(|e| storage_failure(&e))?.is_none() {
            let why = format!(
                "index references manifest {digest}, which was not pushed to this repository"
            );
            return Err(error(400, Code::ManifestBlobUnknown, why));
        }
    }
    Ok(())
}

fn descriptor_digest(descriptor: &Value) -> Result<Digest, Response> {
    let text = descriptor
        .get("digest")
        .and_then(Value::as_str)
        .unwrap_or_default();
    text.parse().map_err(|e: crate::digest::DigestError| {
        error(400, Code::ManifestInvalid, format!("descriptor has an {e}"))
    })
}

pub fn delete(ctx: &Ctx, raw: &str) -> Response {
    let reference = match parse_reference(raw) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let mut store = ctx.store();
    let deleted = match &reference {
        Reference::Digest(digest) => store.delete_manifest(&ctx.route.name, digest),
        Reference::Tag(tag) => store.delete_tag(&ctx.route.name, tag),
    };
    match deleted {
        Ok(true) => Response::new(202),
        Ok(false) => error(
            404,
            Code::ManifestUnknown,
            format!("manifest {raw} not found"),
        ),
        Err(e) => storage_failure(&e),
    }
}
