//! The running registry: two listeners (the registry, and the blob host that `redirect`
//! faults point to), a third for the token service when it is to be another origin, a thread
//! per connection, and a shutdown that leaves nothing behind.
//!
//! Threads rather than async: a test registry serves a handful of connections, and a
//! thread that simply blocks is the easiest way to stall, trickle or hang on purpose.
//! Shutdown wakes every thread (listeners by a connection to themselves, connections by
//! shutting their sockets, waiting faults through `Stop`) and joins them all.

use std::collections::HashMap;
use std::io::BufReader;
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::auth::Auth;
use crate::config::{Config, Storage};
use crate::errors::{error, Code};
use crate::faults::{Counters, FaultKind};
use crate::http::{read_request, HttpError, Request};
use crate::log::{Listener, LogEntry, RequestLog};
use crate::registry::{self, Reply};
use crate::storage::{Store, StoredManifest};
use crate::uploads::Upload;
use crate::wire::{self, Sending, Stop};

/// A connection idle (or stuck mid-request) this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A client that stops reading for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use storage directory {path}: {source}")]
    Storage {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Shared by every thread of one registry.
pub struct State {
    pub config: Config,
    pub addr: SocketAddr,
    pub redirect_addr: SocketAddr,
    /// The token service's own listener, when `Config::token_host` asks for one.
    pub token_addr: Option<SocketAddr>,
    pub store: Mutex<Store>,
    uploads: Mutex<HashMap<String, Upload>>,
    pub auth: Auth,
    pub counters: Counters,
    pub log: RequestLog,
    pub stop: Stop,
    connections: Mutex<Connections>,
}

impl State {
    pub fn uploads(&self) -> MutexGuard<'_, HashMap<String, Upload>> {
        self.uploads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Open connections, so shutdown can close them and wait for their threads.
#[derive(Default)]
struct Connections {
    next_id: u64,
    sockets: HashMap<u64, TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

/// A running registry; dropping it (or calling `shutdown`) stops it and waits for every
/// thread it started.
pub struct Server {
    state: Arc<State>,
    listener_threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds (port 0 picks a free port), starts serving, and returns at once.
    pub fn start(config: Config) -> Result<Server, StartError> {
        let bind = |addr: SocketAddr| {
            TcpListener::bind(addr)
                .and_then(|l| Ok((l.local_addr()?, l)))
                .map_err(|source| StartError::Listen { addr, source })
        };
        let (addr, listener) = bind(config.listen)?;
        let (redirect_addr, redirect_listener) = bind(SocketAddr::new(addr.ip(), 0))?;
        let token = match config.token_host {
            Some(_) => Some(bind(SocketAddr::new(addr.ip(), 0))?),
            None => None,
        };
        let token_addr = token.as_ref().map(|(a, _)| *a);
        let store = match &config.storage {
            Storage::Memory => Store::in_memory(),
            Storage::Directory(path) => {
                Store::in_directory(path).map_err(|source| StartError::Storage {
                    path: path.clone(),
                    source,
                })?
            }
        };
        let state = Arc::new(State {
            auth: Auth::new(&config),
            config,
            addr,
            redirect_addr,
            token_addr,
            store: Mutex::new(store),
            uploads: Mutex::default(),
            counters: Counters::default(),
            log: RequestLog::default(),
            stop: Stop::default(),
            connections: Mutex::default(),
        });
        let listener_threads = [
            (listener, Listener::Registry),
            (redirect_listener, Listener::Redirect),
        ]
        .into_iter()
        .chain(token.map(|(_, l)| (l, Listener::Token)))
        .map(|(socket, kind)| {
            let state = Arc::clone(&state);
            std::thread::spawn(move || accept_loop(&state, &socket, kind))
        })
        .collect();
        Ok(Server {
            state,
            listener_threads,
        })
    }

    /// The registry's address, with the real port when started on port 0.
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// `HOST:PORT`, the registry part of an image reference (`HOST:PORT/name:tag`).
    pub fn host(&self) -> String {
        self.state.addr.to_string()
    }

    /// `http://HOST:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    /// Where `redirect` faults send blob GETs.
    pub fn redirect_addr(&self) -> SocketAddr {
        self.state.redirect_addr
    }

    /// The token service's own listener, when `Config::token_host` set one up.
    pub fn token_addr(&self) -> Option<SocketAddr> {
        self.state.token_addr
    }

    /// Every request so far, oldest first.
    pub fn log(&self) -> Vec<LogEntry> {
        self.state.log.entries()
    }

    pub fn clear_log(&self) {
        self.state.log.clear();
    }

    /// `Authorization` header values that reached the redirect listener (should be none).
    pub fn redirect_authorizations(&self) -> Vec<String> {
        self.state.log.redirect_authorizations()
    }

    /// The digest `name:tag` points to, if any (for assertions after a push).
    pub fn tag_digest(&self, name: &str, tag: &str) -> Option<String> {
        let store = self.state.store.lock().unwrap_or_else(|e| e.into_inner());
        store.tag(name, tag).ok().flatten().map(|d| d.to_string())
    }

    /// Whether blob `digest` is in repository `name`.
    pub fn has_blob(&self, name: &str, digest: &str) -> bool {
        let Ok(digest) = digest.parse() else {
            return false;
        };
        let store = self.state.store.lock().unwrap_or_else(|e| e.into_inner());
        store.has_blob(name, &digest).unwrap_or(false)
    }

    /// Stores `bytes` as blob `digest` of repository `name` without checking that they hash
    /// to it: a registry that serves corrupt or mislabelled content, which no real registry
    /// does on demand.
    pub fn plant_blob(&self, name: &str, digest: &str, bytes: &[u8]) {
        let digest = digest.parse().expect("a digest");
        let mut store = self.state.store.lock().unwrap_or_else(|e| e.into_inner());
        store.put_blob(name, &digest, bytes).expect("plant a blob");
    }

    /// Stores `bytes` as manifest `digest` (served as `media_type`) of repository `name`,
    /// tagged `tag` when given, without checking them.
    pub fn plant_manifest(
        &self,
        name: &str,
        digest: &str,
        media_type: &str,
        bytes: &[u8],
        tag: Option<&str>,
    ) {
        let manifest = StoredManifest {
            digest: digest.parse().expect("a digest"),
            media_type: media_type.to_owned(),
            bytes: bytes.to_vec(),
        };
        let mut store = self.state.store.lock().unwrap_or_else(|e| e.into_inner());
        store
            .put_manifest(name, &manifest, tag)
            .expect("plant a manifest");
    }

    /// Stops serving and waits for every thread; the same as dropping the server.
    pub fn shutdown(self) {}

    fn stop_and_join(&mut self) {
        self.state.stop.trigger();
        let addrs = [self.state.addr, self.state.redirect_addr]
            .into_iter()
            .chain(self.state.token_addr);
        for addr in addrs {
            // A connection of our own wakes the blocked accept() to see the stop.
            let _ = TcpStream::connect_timeout(&reachable(addr), Duration::from_secs(1));
        }
        for thread in self.listener_threads.drain(..) {
            let _ = thread.join();
        }
        let threads = {
            let mut connections = self.state.connections();
            for socket in connections.sockets.values() {
                let _ = socket.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut connections.threads)
        };
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl State {
    fn connections(&self) -> MutexGuard<'_, Connections> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `addr` with an unspecified IP (0.0.0.0) replaced by loopback, to connect to.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        other => other,
    }
}

fn accept_loop(state: &Arc<State>, listener: &TcpListener, kind: Listener) {
    for stream in listener.incoming() {
        if state.stop.is_set() {
            break;
        }
        let Ok(stream) = stream else {
            // Out of file descriptors or similar: back off rather than spin.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let Ok(registered) = stream.try_clone() else {
            continue;
        };
        let mut connections = state.connections();
        connections.threads.retain(|t| !t.is_finished());
        let id = connections.next_id;
        connections.next_id += 1;
        connections.sockets.insert(id, registered);
        let thread_state = Arc::clone(state);
        connections.threads.push(std::thread::spawn(move || {
            serve_connection(&thread_state, stream, kind);
            thread_state.connections().sockets.remove(&id);
        }));
    }
}

fn serve_connection(state: &State, stream: TcpStream, kind: Listener) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    while !state.stop.is_set() {
        let request = match read_request(&mut reader, &mut &stream) {
            Ok(Some(request)) => request,
            Ok(None) | Err(HttpError::Io(_)) => return,
            Err(bad) => return refuse_garbage(state, &stream, kind, &bad),
        };
        let reply = match kind {
            Listener::Registry => registry::handle(state, &request),
            Listener::Redirect => crate::blobs::serve_redirected(state, &request).into(),
            Listener::Token => registry::handle_token(state, &request).into(),
        };
        record(state, kind, &request, &reply);
        let wire_fault = reply
            .fault
            .as_ref()
            .map(|f| f.kind)
            .filter(|k| k.shapes_body() || *k == FaultKind::Stall);
        let sending = Sending {
            response: &reply.response,
            head_only: request.method == "HEAD",
            keep_alive: request.keep_alive,
            fault: wire_fault,
            stop: &state.stop,
            stall_limit: state.config.stall_limit,
        };
        if !wire::send(&stream, &sending).unwrap_or(false) {
            return;
        }
    }
}

/// Answers something that is not HTTP (often TLS, which clients then retry as plain HTTP).
fn refuse_garbage(state: &State, stream: &TcpStream, kind: Listener, why: &HttpError) {
    let response = error(400, Code::Unsupported, why.to_string());
    state.log.record(LogEntry {
        listener: kind,
        method: String::new(),
        target: String::new(),
        status: 400,
        request_bytes: 0,
        response_bytes: response.body.len() as u64,
        authorization: false,
        fault: None,
    });
    let sending = Sending {
        response: &response,
        head_only: false,
        keep_alive: false,
        fault: None,
        stop: &state.stop,
        stall_limit: Duration::ZERO,
    };
    let _ = wire::send(stream, &sending);
}

fn record(state: &State, kind: Listener, request: &Request, reply: &Reply) {
    let stalled = reply
        .fault
        .as_ref()
        .is_some_and(|f| f.kind == FaultKind::Stall);
    let entry = LogEntry {
        listener: kind,
        method: request.method.clone(),
        target: request.target.clone(),
        status: if stalled { 0 } else { reply.response.status },
        request_bytes: request.body.len() as u64,
        response_bytes: match request.method.as_str() {
            "HEAD" => 0,
            _ => reply.response.body.len() as u64,
        },
        authorization: request.header("authorization").is_some(),
        fault: reply.fault.as_ref().map(|f| f.token.clone()),
    };
    if state.config.log_to_stderr {
        eprintln!(
            "{} {} {} -> {} ({} bytes in, {} out{}{})",
            match kind {
                Listener::Registry => "registry",
                Listener::Redirect => "redirect",
                Listener::Token => "token",
            },
            entry.method,
            entry.target,
            entry.status,
            entry.request_bytes,
            entry.response_bytes,
            if entry.authorization {
                ", authorized"
            } else {
                ""
            },
            entry
                .fault
                .as_deref()
                .map(|f| format!(", fault {f}"))
                .unwrap_or_default(),
        );
    }
    state.log.record(entry);
}
