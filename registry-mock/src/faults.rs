//! Injected faults: the grammar of a fault spec, and which request each fault fires on.
//!
//! A spec is `.`-separated tokens such as `e503x2.trickle5`; it is written into a repository
//! name (`fault/e503x2/NAME`) or set for the whole registry in `Config::faults`. The grammar
//! is all lower-case letters and digits so that `127.0.0.1:PORT/fault/SPEC/NAME` is still a
//! valid image reference for any client. The README lists every fault.
//!
//! A token ending in `x<N>` fires only the first N times for each distinct request
//! (method, path and query), then the request succeeds: this is how "fails twice, then works" is
//! spelled. Without it the fault fires every time.
//!
//! A token starting with an endpoint kind (`blob`, `manifest`, `upload`) fires only on
//! requests to that kind of endpoint: `blobcorrupt` corrupts blobs but serves manifests
//! intact. Aimed at uploads, `reset<K>` cuts upload bodies (see [`FaultKind::Reset`]).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `e<status>`: answer with this status and a spec error body.
    Status(u16),
    /// `stall`: read the request, never answer.
    Stall,
    /// `reset<K>`: send headers and K body bytes, then reset the connection (TCP RST).
    /// As `uploadreset<K>`: keep the first K bytes of an upload PATCH or PUT body, as if
    /// the connection broke there, and reset the connection without answering.
    Reset(usize),
    /// `hang<K>`: send headers and K body bytes, then go silent.
    Hang(usize),
    /// `trickle<MS>`: send the body one byte every MS milliseconds (default 10).
    Trickle(u64),
    /// `longlen`: declare one byte more than the body has, send the body, close.
    LongLength,
    /// `shortlen`: declare (and send) one byte less than the body has.
    ShortLength,
    /// `corrupt`: flip the bits of one byte in the middle of the body.
    Corrupt,
    /// `endless`: a chunked body of spaces that never ends.
    Endless,
    /// `redirect`: answer blob GETs with 307 to the second listener.
    Redirect,
    /// `nomount`: decline cross-repository mounts with 202 and a fresh upload.
    NoMount,
    /// `forget`: after accepting an upload chunk, lose everything uploaded so far.
    Forget,
}

impl FaultKind {
    /// Faults that change how a successful blob or manifest GET body is delivered.
    pub fn shapes_body(self) -> bool {
        matches!(
            self,
            FaultKind::Reset(_)
                | FaultKind::Hang(_)
                | FaultKind::Trickle(_)
                | FaultKind::LongLength
                | FaultKind::ShortLength
                | FaultKind::Corrupt
                | FaultKind::Endless
        )
    }

    pub fn trickle_interval(self) -> Duration {
        match self {
            FaultKind::Trickle(ms) => Duration::from_millis(ms),
            _ => Duration::ZERO,
        }
    }
}

/// The kinds of endpoint a fault can be aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aim {
    /// `/blobs/<digest>`
    Blob,
    /// `/manifests/<reference>`
    Manifest,
    /// `/blobs/uploads/...`: starting (and mounting), sending and finishing uploads.
    Upload,
    /// `/token`, for a scope naming a `fault/SPEC/` repository (only aimed faults fire
    /// there).
    Token,
}

impl Aim {
    /// The prefixes of the grammar; no fault name starts with one of them.
    const PREFIXES: [(&'static str, Aim); 4] = [
        ("blob", Aim::Blob),
        ("manifest", Aim::Manifest),
        ("upload", Aim::Upload),
        ("token", Aim::Token),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fault {
    token: String,
    kind: FaultKind,
    times: Option<u32>,
    /// `None`: wherever the kind applies.
    aim: Option<Aim>,
}

/// A parsed fault spec; the default is no fault at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    spec: String,
    faults: Vec<Fault>,
    /// `after<S>`: the `Retry-After` seconds sent with `e<status>` answers (429 defaults to 1).
    retry_after: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("bad fault {token:?} in spec {spec:?}: {why}")]
    Token {
        spec: String,
        token: String,
        why: &'static str,
    },
}

impl FromStr for Faults {
    type Err = FaultError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut parsed = Faults {
            spec: spec.to_string(),
            ..Faults::default()
        };
        for token in spec.split('.').filter(|t| !t.is_empty()) {
            let bad = |why| FaultError::Token {
                spec: spec.to_string(),
                token: token.to_string(),
                why,
            };
            let (body, times) = split_times(token);
            let kind_len = body.bytes().take_while(u8::is_ascii_lowercase).count();
            let (name, digits) = body.split_at(kind_len);
            let (aim, name) = split_aim(name);
            let arg = match digits {
                "" => None,
                d => Some(
                    d.parse::<u64>()
                        .map_err(|_| bad("expected digits after the name"))?,
                ),
            };
            if name == "after" {
                if aim.is_some() {
                    return Err(bad("after applies to every answer and takes no endpoint"));
                }
                parsed.retry_after = Some(arg.ok_or_else(|| bad("after needs seconds"))?);
                continue;
            }
            let kind = fault_kind(name, arg).map_err(bad)?;
            parsed.faults.push(Fault {
                token: token.to_string(),
                kind,
                times,
                aim,
            });
        }
        Ok(parsed)
    }
}

/// Splits `reset10x3` into (`reset10`, Some(3)); no fault name ends in `x` and digits.
fn split_times(token: &str) -> (&str, Option<u32>) {
    let Some((body, count)) = token.rsplit_once('x') else {
        return (token, None);
    };
    match count.parse::<u32>() {
        Ok(times) if !body.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) => {
            (body, Some(times))
        }
        _ => (token, None),
    }
}

/// Splits `blobcorrupt` into (Some(Blob), `corrupt`); a name without a known endpoint
/// prefix (or that is nothing but one) is left whole.
fn split_aim(name: &str) -> (Option<Aim>, &str) {
    for (prefix, aim) in Aim::PREFIXES {
        if let Some(rest) = name.strip_prefix(prefix) {
            if !rest.is_empty() {
                return (Some(aim), rest);
            }
        }
    }
    (None, name)
}

fn fault_kind(name: &str, arg: Option<u64>) -> Result<FaultKind, &'static str> {
    let bytes = || usize::try_from(arg.unwrap_or(0)).map_err(|_| "byte count too large");
    let no_arg = |kind| match arg {
        None => Ok(kind),
        Some(_) => Err("this fault takes no number"),
    };
    match name {
        "e" => match arg {
            Some(status @ 400..=599) => Ok(FaultKind::Status(status as u16)),
            _ => Err("e needs an HTTP status from 400 to 599, as in e503"),
        },
        "stall" => no_arg(FaultKind::Stall),
        "reset" => Ok(FaultKind::Reset(bytes()?)),
        "hang" => Ok(FaultKind::Hang(bytes()?)),
        "trickle" => Ok(FaultKind::Trickle(arg.unwrap_or(10))),
        "longlen" => no_arg(FaultKind::LongLength),
        "shortlen" => no_arg(FaultKind::ShortLength),
        "corrupt" => no_arg(FaultKind::Corrupt),
        "endless" => no_arg(FaultKind::Endless),
        "redirect" => no_arg(FaultKind::Redirect),
        "nomount" => no_arg(FaultKind::NoMount),
        "forget" => no_arg(FaultKind::Forget),
        _ => Err("unknown fault (see registry-mock's README for the list)"),
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

impl Faults {
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// Combines two specs (the registry's and a name's), the first one's faults first.
    pub fn and(&self, other: &Faults) -> Faults {
        Faults {
            spec: [self.spec.as_str(), other.spec.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("."),
            faults: self.faults.iter().chain(&other.faults).cloned().collect(),
            retry_after: other.retry_after.or(self.retry_after),
        }
    }

    pub fn retry_after(&self, status: u16) -> Option<u64> {
        self.retry_after.or((status == 429).then_some(1))
    }
}

/// A fault that fired, named by its token for the request log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub kind: FaultKind,
    pub token: String,
}

/// Where a request goes, for faults aimed at an endpoint kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target {
    /// The request's endpoint kind; `None` for tags, referrers and the like.
    pub endpoint: Option<Aim>,
    /// Only faults aimed at `endpoint` may fire (for what unaimed faults never did).
    pub aimed_only: bool,
}

/// How many times each counted fault has fired for each request.
#[derive(Debug, Default)]
pub struct Counters(Mutex<HashMap<String, u32>>);

impl Counters {
    /// The first fault of `faults` that applies (`wanted`), may fire at this endpoint
    /// (`at`: unaimed faults, and those aimed at it, unless `aimed_only`) and still has
    /// shots left for `request` (method and target); firing it uses one shot.
    pub fn fire(
        &self,
        faults: &Faults,
        request: &str,
        at: Target,
        wanted: impl Fn(FaultKind) -> bool,
    ) -> Option<Fired> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (index, fault) in faults.faults.iter().enumerate() {
            let here = match fault.aim {
                Some(aim) => at.endpoint == Some(aim),
                None => !at.aimed_only,
            };
            if !here || !wanted(fault.kind) {
                continue;
            }
            if let Some(times) = fault.times {
                let count = counts
                    .entry(format!("{}#{index} {request}", faults.spec))
                    .or_default();
                if *count >= times {
                    continue;
                }
                *count += 1;
            }
            return Some(Fired {
                kind: fault.kind,
                token: fault.token.clone(),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_grammar() {
        let faults: Faults = "e503x2.reset100.trickle.redirectx1.after0".parse().unwrap();
        let kinds: Vec<_> = faults.faults.iter().map(|f| (f.kind, f.times)).collect();
        assert_eq!(
            kinds,
            [
                (FaultKind::Status(503), Some(2)),
                (FaultKind::Reset(100), None),
                (FaultKind::Trickle(10), None),
                (FaultKind::Redirect, Some(1)),
            ]
        );
        assert_eq!(faults.retry_after(503), Some(0));
        assert_eq!(Faults::default().retry_after(429), Some(1));
    }

    #[test]
    fn endpoint_prefixes_aim_a_fault() {
        let faults: Faults = "blobcorrupt.manifeste503x1.uploadreset10.nomount"
            .parse()
            .unwrap();
        let aims: Vec<_> = faults.faults.iter().map(|f| (f.kind, f.aim)).collect();
        assert_eq!(
            aims,
            [
                (FaultKind::Corrupt, Some(Aim::Blob)),
                (FaultKind::Status(503), Some(Aim::Manifest)),
                (FaultKind::Reset(10), Some(Aim::Upload)),
                (FaultKind::NoMount, None),
            ]
        );
        let counters = Counters::default();
        let at = |endpoint, aimed_only| Target {
            endpoint,
            aimed_only,
        };
        let corrupt = |t| {
            counters
                .fire(&faults, "GET /x", t, |k| k == FaultKind::Corrupt)
                .is_some()
        };
        assert!(corrupt(at(Some(Aim::Blob), false)));
        assert!(!corrupt(at(Some(Aim::Manifest), false)));
        assert!(!corrupt(at(None, false)));
        // Unaimed faults stay out of what only aimed ones may do.
        let nomount = |t| {
            counters
                .fire(&faults, "POST /y", t, |k| k == FaultKind::NoMount)
                .is_some()
        };
        assert!(nomount(at(Some(Aim::Upload), false)));
        assert!(!nomount(at(Some(Aim::Upload), true)));
        for bad in ["blob", "blobafter1", "uploadboom", "blobx1"] {
            assert!(bad.parse::<Faults>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        for bad in [
            "e200", "e", "boom", "stall5", "e503x", "after", "reset-1", "explode", "x2",
        ] {
            assert!(bad.parse::<Faults>().is_err(), "{bad}");
        }
    }

    #[test]
    fn counted_faults_fire_n_times_per_request() {
        let faults: Faults = "e503x2".parse().unwrap();
        let counters = Counters::default();
        let fire = |req| {
            counters
                .fire(&faults, req, Target::default(), |_| true)
                .is_some()
        };
        assert!(fire("GET /a") && fire("GET /a"));
        assert!(!fire("GET /a"));
        assert!(fire("GET /b"), "each request has its own count");
        let never = counters.fire(&faults, "GET /c", Target::default(), |k| {
            k == FaultKind::Stall
        });
        assert!(never.is_none());
    }
}
