//! The distribution spec's error responses: a status and `{"errors":[{code,message,detail}]}`.
//!
//! Clients show `code` and `message` to users, so messages say what went wrong in the
//! terms of whoever is pushing or pulling.

use serde_json::json;

use crate::http::Response;

/// The spec's error codes (plus `UNAVAILABLE`, which Docker's registry uses for 5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    Unavailable,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::Unavailable => "UNAVAILABLE",
        }
    }

    /// The code an injected `e<status>` fault reports.
    pub fn for_status(status: u16) -> Code {
        match status {
            401 => Code::Unauthorized,
            403 => Code::Denied,
            404 => Code::NameUnknown,
            429 => Code::TooManyRequests,
            500..=599 => Code::Unavailable,
            _ => Code::Unsupported,
        }
    }
}

/// An error response with one spec error in its body.
pub fn error(status: u16, code: Code, message: impl Into<String>) -> Response {
    let body = json!({ "errors": [{
        "code": code.as_str(),
        "message": message.into(),
        "detail": null,
    }]});
    Response::json(status, &body)
}

/// Storage failed underneath us: a registry bug or a full disk, never the client's fault.
pub fn storage_failure(err: &std::io::Error) -> Response {
    error(
        500,
        Code::Unavailable,
        format!("registry storage failed: {err}"),
    )
}
