//! The request log: what clients asked and what they got, for tests to assert on
//! ("no blob was uploaded", "no credentials reached the redirect host").
//!
//! Entries are recorded before the response is written, so a client that has read its
//! answer always finds the entry already there.

use std::sync::Mutex;

/// Which socket a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The registry itself.
    Registry,
    /// The second listener that redirected blob GETs lead to.
    Redirect,
    /// The token service's own listener (`Config::token_host`).
    Token,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub listener: Listener,
    pub method: String,
    /// Path and query string, as sent.
    pub target: String,
    /// Status sent, or 0 when the request got no status line (a `stall`, or an upload
    /// body cut by `uploadreset`).
    pub status: u16,
    /// Body bytes received with the request (an upload's size).
    pub request_bytes: u64,
    /// Body bytes the response carries (before a fault cuts or stretches them).
    pub response_bytes: u64,
    /// Whether the request carried an `Authorization` header.
    pub authorization: bool,
    /// The fault token that fired on this request, if any.
    pub fault: Option<String>,
}

impl LogEntry {
    /// A body-carrying request to an upload endpoint: bytes of a blob were sent.
    pub fn uploaded_blob_data(&self) -> bool {
        self.request_bytes > 0 && self.target.contains("/blobs/uploads")
    }
}

#[derive(Debug, Default)]
pub struct RequestLog {
    entries: Mutex<Vec<LogEntry>>,
    /// `Authorization` values the redirect listener received: each one is a leaked secret.
    redirect_authorizations: Mutex<Vec<String>>,
}

impl RequestLog {
    pub fn record(&self, entry: LogEntry) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }

    pub fn record_redirect_authorization(&self, value: &str) {
        self.redirect_authorizations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(value.to_string());
    }

    pub fn entries(&self) -> Vec<LogEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn redirect_authorizations(&self) -> Vec<String> {
        self.redirect_authorizations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.redirect_authorizations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
