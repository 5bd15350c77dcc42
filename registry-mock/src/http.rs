//! The small part of HTTP/1.1 this registry speaks: reading requests and building responses.
//!
//! Written by hand on `std::net` rather than on hyper, because the faults this crate exists
//! for live below HTTP's guarantees (a `Content-Length` that lies, a reset after K bytes, a
//! body that never ends). How a response actually goes onto the socket is in `wire.rs`.
//! The subset: request line, headers, `Content-Length` or chunked request bodies,
//! keep-alive and `Expect: 100-continue`.

use std::io::{self, BufRead, Read, Write};

/// Largest request body accepted; a test registry never needs more.
pub const MAX_BODY: usize = 512 << 20;
const MAX_LINE: u64 = 16 << 10;
const MAX_HEADERS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("not an HTTP/1.x request (is a TLS client talking to this plain-HTTP registry?)")]
    NotHttp,
    #[error("malformed HTTP request: {0}")]
    Malformed(&'static str),
    #[error("request body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A fully read request; bodies are small enough in tests to hold in memory.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without the query string, as sent (not percent-decoded).
    pub path: String,
    /// The path with its query string, for the request log.
    pub target: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn query_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.query
            .iter()
            .filter(move |(k, _)| k.as_str() == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the next request; `Ok(None)` when the client closed an idle connection.
pub fn read_request<R: BufRead, W: Write>(
    reader: &mut R,
    writer: &mut W,
) -> Result<Option<Request>, HttpError> {
    let first = reader.fill_buf()?;
    if first.is_empty() {
        return Ok(None);
    }
    // Checked before waiting for a line end: a TLS ClientHello has none, and clients such
    // as skopeo only fall back to plain HTTP once they get an answer.
    if !first[0].is_ascii_uppercase() {
        return Err(HttpError::NotHttp);
    }
    let line = read_line(reader)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(
            "request line is not METHOD TARGET VERSION",
        ));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::NotHttp);
    }
    let headers = read_headers(reader)?;
    let mut request = Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or_default().to_string(),
        target: target.to_string(),
        query: parse_query(target.split_once('?').map(|(_, q)| q).unwrap_or("")),
        headers,
        body: Vec::new(),
        keep_alive: version == "HTTP/1.1",
    };
    if let Some(connection) = request.header("connection") {
        request.keep_alive &= !connection.eq_ignore_ascii_case("close");
    }
    if request
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        writer.flush()?;
    }
    request.body = read_body(reader, &request)?;
    Ok(Some(request))
}

fn read_line<R: BufRead>(reader: &mut R) -> Result<String, HttpError> {
    let mut buf = Vec::new();
    reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf)?;
    if !buf.ends_with(b"\n") {
        return Err(if buf.is_empty() {
            HttpError::Io(io::ErrorKind::UnexpectedEof.into())
        } else {
            HttpError::Malformed("line too long or cut short")
        });
    }
    buf.pop();
    if buf.ends_with(b"\r") {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| HttpError::Malformed("line is not UTF-8"))
}

fn read_headers<R: BufRead>(reader: &mut R) -> Result<Vec<(String, String)>, HttpError> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::Malformed("too many headers"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Malformed("header without a colon"))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
}

fn read_body<R: BufRead>(reader: &mut R, request: &Request) -> Result<Vec<u8>, HttpError> {
    if request
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        return read_chunked(reader);
    }
    let length = match request.header("content-length") {
        None => return Ok(Vec::new()),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| HttpError::Malformed("Content-Length is not a number"))?,
    };
    if length > MAX_BODY {
        return Err(HttpError::TooLarge);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

fn read_chunked<R: BufRead>(reader: &mut R) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size_field = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_field, 16)
            .map_err(|_| HttpError::Malformed("bad chunk size"))?;
        if size == 0 {
            // Skip trailers up to the blank line that ends the message.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        // `body` never exceeds MAX_BODY, so this cannot overflow (a sum could).
        if size > MAX_BODY - body.len() {
            return Err(HttpError::TooLarge);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader)?.is_empty() {
            return Err(HttpError::Malformed("chunk data not followed by CRLF"));
        }
    }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (clients encode `sha256:` as `sha256%3A` in queries).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', None) => out.push(b' '),
            (other, None) => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes a query value (only what the names, tags and digests used here need).
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A response before it is written; `wire.rs` decides how honestly it is sent.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(self, content_type: &str, body: Vec<u8>) -> Self {
        let mut with_type = self.header("Content-Type", content_type);
        with_type.body = body;
        with_type
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Response::new(status).body("application/json", value.to_string().into_bytes())
    }
}

/// The status line and headers; `content_length` is `None` for a chunked body.
pub fn head_bytes(response: &Response, content_length: Option<u64>, close: bool) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Docker-Distribution-API-Version: registry/2.0\r\n");
    match content_length {
        Some(len) => head.push_str(&format!("Content-Length: {len}\r\n")),
        None => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<Request>, HttpError> {
        read_request(&mut io::BufReader::new(raw), &mut Vec::new())
    }

    #[test]
    fn reads_a_chunked_body_and_decodes_the_query() {
        let raw = b"PUT /v2/a/blobs/uploads/x?digest=sha256%3Aab&n=1 HTTP/1.1\r\n\
                    Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n";
        let request = parse(raw).unwrap().unwrap();
        assert_eq!(request.path, "/v2/a/blobs/uploads/x");
        assert_eq!(request.query("digest"), Some("sha256:ab"));
        assert_eq!(request.body, b"abcde");
        assert!(request.keep_alive);
    }

    #[test]
    fn rejects_tls_and_garbage_without_waiting_for_a_line() {
        assert!(matches!(parse(&[0x16, 3, 1]), Err(HttpError::NotHttp)));
        assert!(matches!(
            parse(b"GET /\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(parse(b"").unwrap().is_none());
    }

    #[test]
    fn a_huge_chunk_size_is_too_large_not_an_overflow() {
        // Found by the fuzz target mock_http: `body.len() + size` overflowed.
        let raw = b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                    1\r\na\r\nffffffffffffffff\r\n";
        assert!(matches!(parse(raw), Err(HttpError::TooLarge)));
    }

    #[test]
    fn percent_encoding_round_trips() {
        let text = "sha256:abc/def ghi";
        assert_eq!(percent_decode(&percent_encode(text)), text);
    }
}
