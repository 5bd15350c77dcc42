//! Test helpers: a tiny HTTP/1.1 client on `std::net::TcpStream`, and small images to push.
//!
//! A hand-written client, not a library one, because the fault tests must see exactly what
//! arrives on the wire: how many bytes before a reset, one byte at a time, a body that lies
//! about its length. Every socket has a timeout, so a broken registry fails a test instead
//! of hanging it.

// Each test binary uses a different part of these helpers.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// A request to send; built with `req(...)` and the chained setters.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub fn req(method: &str, target: &str) -> Req {
    Req {
        method: method.to_string(),
        target: target.to_string(),
        headers: Vec::new(),
        body: Vec::new(),
    }
}

impl Req {
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: &[u8]) -> Req {
        self.body = body.to_vec();
        self
    }

    pub fn auth(self, value: Option<&str>) -> Req {
        match value {
            Some(v) => self.header("Authorization", v),
            None => self,
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The first spec error code of an error body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One client connection, reusable for several requests (keep-alive).
pub struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect to registry");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Conn {
            writer: stream,
            reader,
        }
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.writer.set_read_timeout(Some(timeout)).unwrap();
    }

    pub fn send(&mut self, request: &Req) {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: registry\r\n",
            request.method, request.target
        );
        for (name, value) in &request.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let chunked = header_in(&request.headers, "transfer-encoding").is_some();
        if !chunked {
            head.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if chunked {
            // Two chunks, to exercise the server's chunk loop.
            let (a, b) = request.body.split_at(request.body.len() / 2);
            for chunk in [a, b].into_iter().filter(|c| !c.is_empty()) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend_from_slice(&request.body);
        }
        self.writer.write_all(&out).expect("send request");
    }

    /// Status line and headers.
    pub fn head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        let line = self.line()?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                return Ok((status, headers));
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| io::Error::other("bad header"))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    /// The body as framed by the headers (Content-Length, chunked, or until close).
    pub fn body(&mut self, headers: &[(String, String)], head_only: bool) -> io::Result<Vec<u8>> {
        if head_only {
            return Ok(Vec::new());
        }
        if header_in(headers, "transfer-encoding").is_some() {
            let mut body = Vec::new();
            loop {
                let size = usize::from_str_radix(&self.line()?, 16).map_err(io::Error::other)?;
                if size == 0 {
                    self.line()?;
                    return Ok(body);
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.reader.read_exact(&mut body[start..])?;
                self.line()?;
            }
        }
        match header_in(headers, "content-length") {
            Some(len) => {
                let mut body = vec![0; len.parse().map_err(io::Error::other)?];
                self.reader.read_exact(&mut body)?;
                Ok(body)
            }
            None => {
                let mut body = Vec::new();
                self.reader.read_to_end(&mut body)?;
                Ok(body)
            }
        }
    }

    /// Reads whatever arrives until EOF or an error, returning both.
    pub fn drain(&mut self) -> (Vec<u8>, io::Result<()>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return (got, Ok(())),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, Err(e)),
            }
        }
    }

    /// Reads up to `n` bytes in one read call.
    pub fn read_some(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; n];
        let got = self.reader.read(&mut buf)?;
        buf.truncate(got);
        Ok(buf)
    }

    pub fn call(&mut self, request: &Req) -> Reply {
        self.send(request);
        let (status, headers) = self.head().expect("response head");
        let body = self
            .body(&headers, request.method == "HEAD")
            .expect("response body");
        Reply {
            status,
            headers,
            body,
        }
    }
}

/// Sends one request on a fresh connection.
pub fn call(addr: SocketAddr, request: Req) -> Reply {
    Conn::open(addr).call(&request)
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// Pushes a blob in one `POST ?digest=`; returns its digest.
pub fn push_blob(addr: SocketAddr, name: &str, data: &[u8], auth: Option<&str>) -> String {
    let digest = sha256(data);
    let target = format!("/v2/{name}/blobs/uploads/?digest={digest}");
    let reply = call(addr, req("POST", &target).body(data).auth(auth));
    assert_eq!(
        reply.status,
        201,
        "blob push: {:?}",
        String::from_utf8_lossy(&reply.body)
    );
    digest
}

/// A small image: a config, one layer and the manifest tying them together.
pub struct TestImage {
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl TestImage {
    pub fn new(seed: &str) -> TestImage {
        let layer =
            format!("layer bytes of {seed}, not a real tar: the registry never looks").into_bytes();
        let config = json!({"architecture": "amd64", "os": "linux", "seed": seed})
            .to_string()
            .into_bytes();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": IMAGE_MANIFEST,
            "config": {"mediaType": IMAGE_CONFIG, "digest": sha256(&config), "size": config.len()},
            "layers": [{"mediaType": LAYER, "digest": sha256(&layer), "size": layer.len()}],
        })
        .to_string()
        .into_bytes();
        TestImage {
            config,
            layer,
            manifest,
        }
    }

    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    pub fn layer_digest(&self) -> String {
        sha256(&self.layer)
    }

    /// Pushes blobs, then the manifest under `tag`.
    pub fn push(&self, addr: SocketAddr, name: &str, tag: &str, auth: Option<&str>) {
        push_blob(addr, name, &self.config, auth);
        push_blob(addr, name, &self.layer, auth);
        let reply = put_manifest(addr, name, tag, &self.manifest, IMAGE_MANIFEST, auth);
        assert_eq!(reply.status, 201, "manifest push: {:?}", reply.json());
    }
}

pub fn put_manifest(
    addr: SocketAddr,
    name: &str,
    reference: &str,
    manifest: &[u8],
    media_type: &str,
    auth: Option<&str>,
) -> Reply {
    let target = format!("/v2/{name}/manifests/{reference}");
    call(
        addr,
        req("PUT", &target)
            .header("Content-Type", media_type)
            .body(manifest)
            .auth(auth),
    )
}
