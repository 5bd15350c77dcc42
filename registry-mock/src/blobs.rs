//! `/v2/<name>/blobs/<digest>`: GET (with `Range`), HEAD and DELETE; and the second
//! listener that a `redirect` fault sends blob GETs to, standing in for a CDN or object
//! store on another host. That listener serves the same blobs and records any
//! `Authorization` header it receives: a client that sends one there leaks credentials.

use crate::digest::Digest;
use crate::errors::{error, storage_failure, Code};
use crate::faults::FaultKind;
use crate::http::{Request, Response};
use crate::registry::Ctx;
use crate::server::State;

fn parse_digest(raw: &str) -> Result<Digest, Response> {
    raw.parse()
        .map_err(|e: crate::digest::DigestError| error(400, Code::DigestInvalid, e.to_string()))
}

pub fn get(ctx: &Ctx, raw: &str, head: bool) -> Response {
    let digest = match parse_digest(raw) {
        Ok(d) => d,
        Err(response) => return response,
    };
    let data = match ctx.store().blob(&ctx.route.name, &digest) {
        Ok(Some(data)) => data,
        Ok(None) => return blob_unknown(&digest, &ctx.route.visible_name),
        Err(e) => return storage_failure(&e),
    };
    if !head && ctx.fire(|k| k == FaultKind::Redirect).is_some() {
        let target = format!(
            "http://{}:{}/redirected/{}/{digest}",
            ctx.state.config.redirect_host,
            ctx.state.redirect_addr.port(),
            ctx.route.name
        );
        return Response::new(307).header("Location", target);
    }
    serve_range(data, &digest, ctx.request.header("range"))
}

fn blob_unknown(digest: &Digest, repository: &str) -> Response {
    error(
        404,
        Code::BlobUnknown,
        format!("blob {digest} not found in repository {repository}"),
    )
}

/// The whole blob (200), the requested part (206), or 416 when the range lies beyond it.
fn serve_range(data: Vec<u8>, digest: &Digest, range: Option<&str>) -> Response {
    let len = data.len() as u64;
    let base = |status| {
        Response::new(status)
            .header("Docker-Content-Digest", digest.to_string())
            .header("Accept-Ranges", "bytes")
    };
    match range.and_then(|r| parse_range(r, len)) {
        None => base(200).body("application/octet-stream", data),
        Some(None) => error(416, Code::SizeInvalid, "requested range is beyond the blob")
            .header("Content-Range", format!("bytes */{len}")),
        Some(Some((start, end))) => base(206)
            .header("Content-Range", format!("bytes {start}-{end}/{len}"))
            .body(
                "application/octet-stream",
                data[start as usize..=end as usize].to_vec(),
            ),
    }
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N` as inclusive offsets: `None` if the header is not
/// one of those (serve everything), `Some(None)` if it cannot be satisfied.
fn parse_range(header: &str, len: u64) -> Option<Option<(u64, u64)>> {
    let (first, last) = header.trim().strip_prefix("bytes=")?.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u64>().ok();
    let suffix = first.is_empty();
    let start = match suffix {
        true => len.saturating_sub(number(last)?),
        false => number(first)?,
    };
    // Exclusive end, clamped to the blob.
    let end = match suffix || last.is_empty() {
        true => len,
        false => number(last)?.saturating_add(1).min(len),
    };
    Some((start < end).then(|| (start, end - 1)))
}

pub fn delete(ctx: &Ctx, raw: &str) -> Response {
    let digest = match parse_digest(raw) {
        Ok(d) => d,
        Err(response) => return response,
    };
    match ctx.store().unlink_blob(&ctx.route.name, &digest) {
        Ok(true) => Response::new(202),
        Ok(false) => blob_unknown(&digest, &ctx.route.visible_name),
        Err(e) => storage_failure(&e),
    }
}

/// The redirect listener: `GET /redirected/<name>/<digest>`.
pub fn serve_redirected(state: &State, request: &Request) -> Response {
    if let Some(value) = request.header("authorization") {
        state.log.record_redirect_authorization(value);
    }
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        return error(405, Code::Unsupported, "the blob host only serves GET");
    }
    let Some((name, raw)) = request
        .path
        .strip_prefix("/redirected/")
        .and_then(|p| p.rsplit_once('/'))
        .filter(|(name, _)| crate::routes::is_valid_name(name))
    else {
        return error(404, Code::BlobUnknown, "no such blob");
    };
    let digest = match parse_digest(raw) {
        Ok(d) => d,
        Err(response) => return response,
    };
    let store = state.store.lock().unwrap_or_else(|e| e.into_inner());
    match store.blob(name, &digest) {
        Ok(Some(data)) => serve_range(data, &digest, request.header("range")),
        Ok(None) => blob_unknown(&digest, name),
        Err(e) => storage_failure(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn reads_byte_ranges() {
        assert_eq!(parse_range("bytes=2-4", 10), Some(Some((2, 4))));
        assert_eq!(parse_range("bytes=5-", 10), Some(Some((5, 9))));
        assert_eq!(parse_range("bytes=-3", 10), Some(Some((7, 9))));
        assert_eq!(parse_range("bytes=8-100", 10), Some(Some((8, 9))));
        assert_eq!(parse_range("bytes=10-", 10), Some(None));
        assert_eq!(parse_range("bytes=-3", 0), Some(None));
        assert_eq!(parse_range("items=1-2", 10), None);
    }
}
