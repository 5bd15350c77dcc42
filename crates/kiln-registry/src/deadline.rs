//! Time limits of registry requests, so a registry that answers slowly or not at all
//! cannot hold kiln for long.
//!
//! Each request has two:
//!
//! * a **read timeout** (stall): no byte for [`Timeouts::read`] (default 60 s,
//!   `read_timeout:` in kiln's config file) fails the try with [`RegistryError::Stalled`].
//!   A stall may be a dead connection, so it is retried like a reset. It covers waiting
//!   for an answer (from the start of the request) and every read of a body; an upload
//!   waits for its answer within its deadline only, as the answer comes after the body.
//! * an **overall deadline** for the whole transfer, answer and body:
//!   `timeout + size / 10 KiB/s`, where `timeout` is [`Timeouts::base`] (default 60 s,
//!   `timeout:` in kiln's config file) and `size` the bytes expected (a blob's descriptor
//!   size, an upload's length) or, when unknown (manifests, tokens), the bytes received so
//!   far. A registry that sends at least [`MIN_RATE`] never hits it; one that sends a byte
//!   every 59 s (never stalling) fails a 5 kB manifest after about 60 s, not after three
//!   days. Hitting it fails with [`RegistryError::TooSlow`], which is not retried: the
//!   same registry would be as slow again. A blob download has one deadline over all its
//!   tries, resumes included.
//!
//! A `timeout` smaller than the read timeout lowers that too: nothing waits for a byte
//! longer than the whole request may take.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Response, Url};
use tokio::time::Instant;

use super::retry::RETRY_TIME;
use super::transport::error_chain;
use super::RegistryError;

/// The rate a transfer must keep up on average to meet its deadline: 10 KiB/s.
pub const MIN_RATE: u64 = 10 << 10;
/// The default base of every request's deadline.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// The default read timeout: a request with no byte for this long has stalled.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The time limits of registry requests; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// The base of each request's overall deadline (`timeout:`).
    pub base: Duration,
    /// No byte for this long is a stall (`read_timeout:`).
    pub read: Duration,
    /// How long a failing request is retried, from its first failure (`retry_time:`).
    pub retry_time: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            base: TIMEOUT,
            read: READ_TIMEOUT,
            retry_time: RETRY_TIME,
        }
    }
}

impl Timeouts {
    /// The read timeout in force: never longer than the base deadline.
    pub fn stall(&self) -> Duration {
        self.read.min(self.base)
    }

    /// The deadline of a request starting now that moves `expected` bytes (0: unknown).
    pub(super) fn deadline(&self, expected: u64) -> Deadline {
        Deadline {
            start: Instant::now(),
            base: self.base,
            read: self.stall(),
            expected,
        }
    }
}

/// The time limits of one request (or of one blob download, over all its tries).
#[derive(Debug, Clone)]
pub(super) struct Deadline {
    start: Instant,
    base: Duration,
    read: Duration,
    expected: u64,
}

impl Deadline {
    /// How long the request may take once `received` bytes arrived.
    pub fn limit(&self, received: u64) -> Duration {
        let bytes = self.expected.max(received);
        self.base + Duration::from_secs_f64(bytes as f64 / MIN_RATE as f64)
    }

    /// When the request must be done, once `received` bytes arrived.
    pub fn at(&self, received: u64) -> Instant {
        self.start + self.limit(received)
    }

    /// The read timeout: no byte for this long is a stall.
    pub fn read(&self) -> Duration {
        self.read
    }

    /// The error for a request to `url` that passed its deadline with `received` bytes.
    pub fn too_slow(&self, url: &Url, received: u64) -> RegistryError {
        RegistryError::TooSlow {
            host: host_of(url),
            url: super::transport::loggable(url),
            limit: self.limit(received),
            base: self.base,
            received,
        }
    }

    /// The error for a request to `url` that got no byte for the read timeout.
    pub fn stalled(&self, url: &Url) -> RegistryError {
        RegistryError::Stalled {
            host: host_of(url),
            url: super::transport::loggable(url),
            limit: self.read,
        }
    }

    /// The next piece of a body, within the read timeout and the deadline. A broken
    /// connection is a [`RegistryError::Connect`], a read timeout
    /// [`RegistryError::Stalled`], the deadline [`RegistryError::TooSlow`].
    pub async fn chunk(
        &self,
        response: &mut Response,
        received: u64,
    ) -> Result<Option<Bytes>, RegistryError> {
        let url = response.url().clone();
        let deadline = self.at(received);
        let stall = Instant::now() + self.read;
        match tokio::time::timeout_at(deadline.min(stall), response.chunk()).await {
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) if e.is_timeout() => Err(self.stalled(&url)),
            Ok(Err(e)) => Err(RegistryError::Connect {
                url: url.to_string(),
                why: error_chain(&e),
            }),
            Err(_) if Instant::now() >= deadline => Err(self.too_slow(&url, received)),
            Err(_) => Err(self.stalled(&url)),
        }
    }
}

/// `HOST[:PORT]` of a URL, as references name registries.
pub(super) fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// Seconds as people write them: `60 s`, `2.5 s`, `0.3 s`.
pub(super) fn seconds(d: &Duration) -> String {
    let s = d.as_secs_f64();
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", s.max(0.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_grows_with_the_size() {
        let t = Timeouts::default();
        let d = t.deadline(0);
        assert_eq!(d.limit(0), Duration::from_secs(60));
        assert_eq!(d.limit(5 * MIN_RATE), Duration::from_secs(65));
        let d = t.deadline(100 * MIN_RATE);
        assert_eq!(d.limit(0), Duration::from_secs(160));
        assert_eq!(d.limit(10), Duration::from_secs(160));
        assert_eq!(d.read(), READ_TIMEOUT);
        let short = Timeouts {
            base: Duration::from_secs(2),
            ..Timeouts::default()
        };
        assert_eq!(short.stall(), Duration::from_secs(2));
    }

    #[test]
    fn errors_name_the_host_and_the_config_key() {
        let d = Timeouts::default().deadline(0);
        let url = Url::parse("http://reg.lan:5000/v2/app/manifests/1").unwrap();
        let e = d.stalled(&url);
        let text = e.to_string();
        assert!(
            text.starts_with("registry reg.lan:5000 stalled: no data for 60 s"),
            "{text}"
        );
        assert!(e.hint().unwrap().contains("read_timeout:"));
        assert!(e.is_transient());
        let e = d.too_slow(&url, 7);
        let text = e.to_string();
        assert!(
            text.starts_with("registry reg.lan:5000 is too slow"),
            "{text}"
        );
        assert!(
            text.contains("within 60 s") && text.contains("7 bytes arrived"),
            "{text}"
        );
        assert!(e.hint().unwrap().contains("timeout:"));
        assert!(!e.is_transient());
    }

    #[test]
    fn seconds_read_well() {
        assert_eq!(seconds(&Duration::from_secs(60)), "60 s");
        assert_eq!(seconds(&Duration::from_millis(2500)), "2.5 s");
    }
}
