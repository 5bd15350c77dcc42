//! Blob uploads: `POST /v2/<name>/blobs/uploads/` and the session it opens.
//!
//! The three ways to push a blob, as the spec has them:
//! monolithic (`POST ?digest=` with the body), session then one `PUT ?digest=` with the body,
//! and chunked (`PATCH`es with `Content-Range`, then `PUT ?digest=`). `GET` on a session
//! reports how much arrived (`Range: 0-<last byte>`) so a client can resume. A mount
//! (`POST ?mount=<digest>&from=<repo>`) links an existing blob without sending it.
//! Sessions live in memory even with directory storage: they die with the registry anyway.

use crate::auth::{Scope, Verdict};
use crate::config::Action;
use crate::digest::Digest;
use crate::errors::{error, storage_failure, Code};
use crate::faults::FaultKind;
use crate::http::Response;
use crate::registry::Ctx;
use crate::routes;

/// An upload session: the repository it belongs to and the bytes received so far.
#[derive(Debug)]
pub struct Upload {
    repository: String,
    data: Vec<u8>,
}

pub fn start(ctx: &Ctx) -> Response {
    if let Some(mount) = ctx.request.query("mount") {
        return mount_or_open(ctx, mount, ctx.request.query("from"));
    }
    let Some(digest) = ctx.request.query("digest") else {
        return open_session(ctx);
    };
    match digest.parse::<Digest>() {
        Ok(digest) => commit(ctx, &digest, ctx.request.body.clone()),
        Err(e) => error(400, Code::DigestInvalid, e.to_string()),
    }
}

fn open_session(ctx: &Ctx) -> Response {
    let id = crate::random_hex(16);
    let upload = Upload {
        repository: ctx.route.name.clone(),
        data: Vec::new(),
    };
    ctx.state.uploads().insert(id.clone(), upload);
    session_response(ctx, 202, &id, 0)
}

/// `Location`, `Range` and `Docker-Upload-UUID` for a session holding `size` bytes.
fn session_response(ctx: &Ctx, status: u16, id: &str, size: usize) -> Response {
    Response::new(status)
        .header("Location", ctx.location(&format!("blobs/uploads/{id}")))
        .header("Range", format!("0-{}", size.saturating_sub(1)))
        .header("Docker-Upload-UUID", id)
}

/// Mounts the blob when `from` has it and the caller may pull from there; otherwise (or
/// when mounts are declined) opens an ordinary session, as the spec allows.
fn mount_or_open(ctx: &Ctx, mount: &str, from: Option<&str>) -> Response {
    let declined =
        ctx.state.config.decline_mounts || ctx.fire(|k| k == FaultKind::NoMount).is_some();
    let (Ok(digest), Some(from), false) = (mount.parse::<Digest>(), from, declined) else {
        return open_session(ctx);
    };
    let Some(source) = readable_source(ctx, from) else {
        return open_session(ctx);
    };
    let mut store = ctx.store();
    match store.has_blob(&source, &digest) {
        Ok(true) => match store.link_blob(&ctx.route.name, &digest) {
            Ok(()) => blob_created(ctx, &digest),
            Err(e) => storage_failure(&e),
        },
        Ok(false) => {
            drop(store);
            open_session(ctx)
        }
        Err(e) => storage_failure(&e),
    }
}

/// The storage name of mount source `from`, if it is valid and the caller may pull it.
fn readable_source(ctx: &Ctx, from: &str) -> Option<String> {
    let route = routes::parse(&format!("/v2/{from}/tags/list")).ok()?;
    let scope = Scope {
        repository: from,
        action: Action::Pull,
    };
    (ctx.state.auth.check(ctx.request, Some(scope)) == Verdict::Allowed).then_some(route.name)
}

pub fn append(ctx: &Ctx, id: &str) -> Response {
    let mut uploads = ctx.state.uploads();
    let Some(upload) = uploads
        .get_mut(id)
        .filter(|u| u.repository == ctx.route.name)
    else {
        return unknown_session(id);
    };
    let received = upload.data.len();
    if let Some(range) = ctx.request.header("content-range") {
        let body_len = ctx.request.body.len();
        match parse_content_range(range) {
            Some((start, _)) if start != received => {
                // Tell the client where we really are, so it can resume from there.
                return session_response(ctx, 416, id, received);
            }
            Some((start, end)) if end + 1 - start != body_len => {
                let why = format!("Content-Range {range} does not match a {body_len}-byte body");
                return error(400, Code::BlobUploadInvalid, why);
            }
            Some(_) => {}
            None => {
                let why = format!("bad Content-Range {range:?}: expected <start>-<end>");
                return error(400, Code::BlobUploadInvalid, why);
            }
        }
    }
    if let Some(kept) = cut_short(ctx) {
        upload.data.extend_from_slice(&ctx.request.body[..kept]);
        return no_answer();
    }
    upload.data.extend_from_slice(&ctx.request.body);
    let size = upload.data.len();
    if ctx.fire(|k| k == FaultKind::Forget).is_some() {
        // Acknowledge the bytes, then lose them: the next chunk or the final PUT exposes it.
        upload.data.clear();
    }
    session_response(ctx, 202, id, size)
}

/// `<start>-<end>` (inclusive), also accepting the `bytes ` prefix some clients send.
fn parse_content_range(header: &str) -> Option<(usize, usize)> {
    let range = header.trim();
    let range = range.strip_prefix("bytes ").unwrap_or(range);
    let (start, end) = range.split('/').next()?.split_once('-')?;
    let (start, end) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    (start <= end).then_some((start, end))
}

pub fn finish(ctx: &Ctx, id: &str) -> Response {
    let digest = match ctx.request.query("digest").map(str::parse::<Digest>) {
        Some(Ok(digest)) => digest,
        Some(Err(e)) => return error(400, Code::DigestInvalid, e.to_string()),
        None => {
            return error(
                400,
                Code::DigestInvalid,
                "finishing an upload needs ?digest=",
            )
        }
    };
    if let Some(kept) = cut_short(ctx) {
        // The session lives on with what arrived, for the client to resume.
        let mut uploads = ctx.state.uploads();
        let Some(upload) = uploads
            .get_mut(id)
            .filter(|u| u.repository == ctx.route.name)
        else {
            return unknown_session(id);
        };
        upload.data.extend_from_slice(&ctx.request.body[..kept]);
        return no_answer();
    }
    let Some(mut upload) = take_session(ctx, id) else {
        return unknown_session(id);
    };
    upload.data.extend_from_slice(&ctx.request.body);
    commit(ctx, &digest, upload.data)
}

/// `uploadreset<K>` on a body longer than K bytes: how many bytes "arrived" before the
/// connection broke. Only a fault aimed at uploads does this.
fn cut_short(ctx: &Ctx) -> Option<usize> {
    let len = ctx.request.body.len();
    match ctx.fire_aimed(|k| matches!(k, FaultKind::Reset(keep) if len > keep))? {
        FaultKind::Reset(keep) => Some(keep),
        _ => None,
    }
}

/// No answer at all: with the `reset` fault that fired, the wire resets the connection.
fn no_answer() -> Response {
    Response::new(0)
}

/// Verifies `data` against `digest`, then stores it as a blob of the repository.
fn commit(ctx: &Ctx, digest: &Digest, data: Vec<u8>) -> Response {
    if !digest.matches(&data) {
        let actual = Digest::compute(digest.algorithm(), &data);
        let why = format!(
            "uploaded content ({} bytes) has digest {actual}, not {digest}",
            data.len()
        );
        return error(400, Code::DigestInvalid, why);
    }
    match ctx.store().put_blob(&ctx.route.name, digest, &data) {
        Ok(()) => blob_created(ctx, digest),
        Err(e) => storage_failure(&e),
    }
}

fn blob_created(ctx: &Ctx, digest: &Digest) -> Response {
    Response::new(201)
        .header("Location", ctx.location(&format!("blobs/{digest}")))
        .header("Docker-Content-Digest", digest.to_string())
}

pub fn status(ctx: &Ctx, id: &str) -> Response {
    let uploads = ctx.state.uploads();
    match uploads.get(id).filter(|u| u.repository == ctx.route.name) {
        Some(upload) => session_response(ctx, 204, id, upload.data.len()),
        None => unknown_session(id),
    }
}

pub fn cancel(ctx: &Ctx, id: &str) -> Response {
    match take_session(ctx, id) {
        Some(_) => Response::new(204),
        None => unknown_session(id),
    }
}

/// Removes and returns session `id` if it belongs to this request's repository.
fn take_session(ctx: &Ctx, id: &str) -> Option<Upload> {
    let mut uploads = ctx.state.uploads();
    let ours = uploads.get(id)?.repository == ctx.route.name;
    ours.then(|| uploads.remove(id)).flatten()
}

fn unknown_session(id: &str) -> Response {
    error(
        404,
        Code::BlobUploadUnknown,
        format!("upload session {id} is unknown (finished, cancelled or never opened)"),
    )
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn reads_content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("9-3"), None);
        assert_eq!(parse_content_range("x"), None);
    }
}
