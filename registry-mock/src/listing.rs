//! Read-only listings: `GET /v2/<name>/tags/list` (paginated with `n` and `last`, the next
//! page announced in a `Link` header) and `GET /v2/<name>/referrers/<digest>` (an image
//! index of the manifests whose `subject` is that digest, filterable by `artifactType`).

use serde_json::{json, Map, Value};

use crate::digest::Digest;
use crate::errors::{error, storage_failure, Code};
use crate::http::{percent_encode, Response};
use crate::registry::Ctx;
use crate::storage::StoredManifest;

const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

pub fn tags(ctx: &Ctx) -> Response {
    let (exists, tags) = {
        let store = ctx.store();
        let name = &ctx.route.name;
        match (store.repository_exists(name), store.tags(name)) {
            (Ok(exists), Ok(tags)) => (exists, tags),
            (Err(e), _) | (_, Err(e)) => return storage_failure(&e),
        }
    };
    if !exists {
        let why = format!("repository {} is not known", ctx.route.visible_name);
        return error(404, Code::NameUnknown, why);
    }
    let after_last: Vec<String> = match ctx.request.query("last") {
        Some(last) => tags.into_iter().filter(|t| t.as_str() > last).collect(),
        None => tags,
    };
    let limit = match ctx.request.query("n").map(str::parse::<usize>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return error(400, Code::Unsupported, "n must be a number"),
    };
    let page: Vec<&String> = after_last
        .iter()
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    let body = json!({ "name": ctx.route.visible_name, "tags": page });
    let mut response = Response::json(200, &body);
    if let (Some(n), Some(last)) = (limit, page.last()) {
        if after_last.len() > page.len() {
            let next = format!(
                "<{}?n={n}&last={}>; rel=\"next\"",
                ctx.location("tags/list"),
                percent_encode(last)
            );
            response = response.header("Link", next);
        }
    }
    response
}

pub fn referrers(ctx: &Ctx, raw: &str) -> Response {
    let subject: Digest = match raw.parse() {
        Ok(d) => d,
        Err(e) => return error(400, Code::DigestInvalid, format!("{e}")),
    };
    let manifests = match ctx.store().manifests(&ctx.route.name) {
        Ok(m) => m,
        Err(e) => return storage_failure(&e),
    };
    let wanted_type = ctx.request.query("artifactType");
    let mut descriptors: Vec<Value> = manifests
        .iter()
        .filter_map(|m| referrer_descriptor(m, &subject))
        .filter(|d| wanted_type.is_none_or(|t| d["artifactType"] == t))
        .collect();
    descriptors.sort_by_key(|d| d["digest"].to_string());
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": descriptors,
    });
    let mut response = Response::new(200).body(INDEX_MEDIA_TYPE, index.to_string().into_bytes());
    if wanted_type.is_some() {
        response = response.header("OCI-Filters-Applied", "artifactType");
    }
    response
}

/// The descriptor of `manifest` if its `subject` is `subject`. Its artifact type is the
/// manifest's `artifactType`, or else its config's media type, as the spec says.
fn referrer_descriptor(manifest: &StoredManifest, subject: &Digest) -> Option<Value> {
    let json: Value = serde_json::from_slice(&manifest.bytes).ok()?;
    let points_here = json.pointer("/subject/digest").and_then(Value::as_str)
        == Some(subject.to_string().as_str());
    if !points_here {
        return None;
    }
    let mut descriptor = Map::new();
    descriptor.insert("mediaType".into(), json!(manifest.media_type));
    descriptor.insert("digest".into(), json!(manifest.digest.to_string()));
    descriptor.insert("size".into(), json!(manifest.bytes.len()));
    let artifact_type = json
        .get("artifactType")
        .or_else(|| json.pointer("/config/mediaType"));
    if let Some(artifact_type) = artifact_type {
        descriptor.insert("artifactType".into(), artifact_type.clone());
    }
    if let Some(annotations) = json.get("annotations") {
        descriptor.insert("annotations".into(), annotations.clone());
    }
    Some(Value::Object(descriptor))
}
