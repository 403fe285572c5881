//! The proxy's own HTTP/1.1 client for requests without a body (GET, HEAD, DELETE, ...: the
//! bulk of proxied traffic), run inside the request's task.
//!
//! hyper's client drives each connection from a task of its own and hands requests and
//! responses to it through channels, so every request costs two task hand-offs and a second
//! buffer. Here the request's task writes the request head, reads and parses the response
//! head (`httparse`), and the response body ([`RawBody`]) reads the socket itself while the
//! server side streams it to the client; the connection goes back to the pool at the body's
//! last byte. Requests with a body, and upgrades, stay on hyper's client ([`crate::pool`]).
//!
//! Framing follows RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked when it is the
//! last transfer coding (the chunks are decoded and the trailers passed on as a trailers
//! frame); otherwise `Content-Length` (values that disagree are an error); otherwise the body
//! runs to the end of the connection, which is then not reused. Interim 1xx answers before
//! the final one are skipped; a `101` (never asked for on this path) is an error.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http::BoxError;
use crate::pool::ConnPool;

/// Largest response head accepted (status line and header fields).
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a response head or trailer section.
const MAX_HEADERS: usize = 100;
/// Largest chunk-size line (with extensions) accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// How much the read buffer grows by before a read.
const READ_CHUNK: usize = 16 * 1024;

/// An open connection to an instance.
pub struct RawConn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// When it last went idle (for the pool's idle timeout).
    pub(crate) since: Instant,
}

impl RawConn {
    pub(crate) fn new(stream: TcpStream) -> RawConn {
        RawConn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            since: Instant::now(),
        }
    }

    /// Whether an idle connection is still usable: the instance has not closed it and sent
    /// nothing unasked. Costs a system call only when the socket was reported readable or was
    /// never found empty, and that call is one a read after the request would have made.
    pub(crate) fn still_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads more of the answer into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_CHUNK);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// The connection failed or ended before the first byte of an answer: the instance may
    /// or may not have seen the request.
    NothingReceived(io::Error),
    /// The request could not be written: the instance did not get all of it.
    NotSent(io::Error),
    /// The connection failed after part of the answer.
    Io(io::Error),
    /// The answer is not valid HTTP/1.1.
    Protocol(String),
}

impl ExchangeError {
    /// Whether the request may be sent again (to a new connection or another instance):
    /// it did not leave whole, or no answer began and it is `idempotent`.
    pub fn safe_to_resend(&self, idempotent: bool) -> bool {
        match self {
            ExchangeError::NotSent(_) => true,
            ExchangeError::NothingReceived(_) => idempotent,
            ExchangeError::Io(_) | ExchangeError::Protocol(_) => false,
        }
    }
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::NothingReceived(e) => {
                write!(f, "connection closed before an answer ({e})")
            }
            ExchangeError::NotSent(e) => write!(f, "sending the request: {e}"),
            ExchangeError::Io(e) => write!(f, "reading the answer: {e}"),
            ExchangeError::Protocol(why) => write!(f, "invalid answer: {why}"),
        }
    }
}

impl std::error::Error for ExchangeError {}

/// Writes the head of a request without a body: request line; `host` when the client sent
/// none; the client's `headers` (hop-by-hop fields already removed) except those named in
/// `set`; then `set`, the forwarding fields the proxy adds; then the empty line.
pub fn encode_request(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    host: Option<&HeaderValue>,
    headers: &HeaderMap,
    set: &[(&HeaderName, HeaderValue)],
) {
    fn field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = host {
        field(out, &header::HOST, host);
    }
    for (name, value) in headers {
        if !set.iter().any(|(n, _)| *n == name) {
            field(out, name, value);
        }
    }
    for (name, value) in set {
        field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    Close,
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Whether a comma-separated header list has `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The framing of an answer with `status` to a request that was (`head`) or was not a HEAD.
fn framing(status: StatusCode, head: bool, headers: &HeaderMap) -> Result<Framing, String> {
    if head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if let Some(last) = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        let chunked = last
            .as_bytes()
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let n = std::str::from_utf8(part.trim_ascii())
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| {
                    format!(
                        "invalid Content-Length {:?}",
                        String::from_utf8_lossy(v.as_bytes())
                    )
                })?;
            if length.is_some_and(|l| l != n) {
                return Err("Content-Length values disagree".to_string());
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

/// Parses a complete head at the start of `buf` (consuming it), or returns `None` when more
/// bytes are needed.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, String> {
    // Left uninitialised: zeroing 100 fields cost more than parsing a typical head.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Err(format!("response head larger than {MAX_HEAD} bytes"));
            }
            return Ok(None);
        }
        Err(e) => return Err(format!("malformed response head ({e})")),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| format!("invalid status {code}"))?;
    let http11 = resp.version == Some(1);
    // Where each field sits in the head, so the values can share its bytes.
    let base = buf.as_ptr() as usize;
    let spans: Vec<[usize; 4]> = resp
        .headers
        .iter()
        .map(|f| {
            let (n0, v0) = (
                f.name.as_ptr() as usize - base,
                f.value.as_ptr() as usize - base,
            );
            [n0, n0 + f.name.len(), v0, v0 + f.value.len()]
        })
        .collect();
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &[n0, n1, v0, v1] in &spans {
        let name = HeaderName::from_bytes(&head[n0..n1]).map_err(|_| {
            format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(&head[n0..n1])
            )
        })?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v1))
            .map_err(|_| format!("invalid value of header {name}"))?;
        headers.append(name, value);
    }
    let framing = framing(status, head_request, &headers)?;
    if framing == Framing::Chunked {
        // The body is passed on decoded; the server side frames it again.
        headers.remove(header::CONTENT_LENGTH);
    }
    let keep_alive =
        http11 && framing != Framing::Close && !has_token(&headers, &header::CONNECTION, "close");
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive,
    }))
}

/// Sends the request head `request` on `conn` and reads the answer's head. The body follows
/// as a [`RawBody`], which returns the connection to `pool` (under `addr`) at its end.
pub async fn exchange(
    mut conn: RawConn,
    request: &[u8],
    head_request: bool,
    pool: &Arc<ConnPool>,
    addr: SocketAddr,
) -> Result<Response<RawBody>, ExchangeError> {
    conn.stream
        .write_all(request)
        .await
        .map_err(ExchangeError::NotSent)?;
    let mut received = false;
    let head = loop {
        if !conn.buf.is_empty() {
            match parse_head(&mut conn.buf, head_request).map_err(ExchangeError::Protocol)? {
                Some(h) if h.status == StatusCode::SWITCHING_PROTOCOLS => {
                    return Err(ExchangeError::Protocol(
                        "101 Switching Protocols to a request that asked for no upgrade".into(),
                    ))
                }
                // An interim answer (100 Continue, 103 Early Hints): the final one follows.
                Some(h) if h.status.is_informational() => continue,
                Some(h) => break h,
                None => {}
            }
        }
        match conn.fill().await {
            Ok(0) if !received => {
                return Err(ExchangeError::NothingReceived(
                    io::ErrorKind::UnexpectedEof.into(),
                ))
            }
            Ok(0) => {
                return Err(ExchangeError::Protocol(
                    "connection closed in the middle of the response head".into(),
                ))
            }
            Ok(_) => received = true,
            Err(e) if !received => return Err(ExchangeError::NothingReceived(e)),
            Err(e) => return Err(ExchangeError::Io(e)),
        }
    };
    let state = match head.framing {
        Framing::Empty | Framing::Length(0) => State::Done,
        Framing::Length(n) => State::Length(n),
        Framing::Chunked => State::ChunkSize,
        Framing::Close => State::Close,
    };
    let mut body = RawBody {
        conn: Some(conn),
        state,
        keep_alive: head.keep_alive,
        home: Some((pool.clone(), addr)),
    };
    if body.state == State::Done {
        body.finish();
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.version_mut() = Version::HTTP_11;
    *resp.headers_mut() = head.headers;
    Ok(resp)
}

/// Where a [`RawBody`] is in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many body bytes are still to come.
    Length(u64),
    /// Up to the end of the connection.
    Close,
    /// At a chunk-size line.
    ChunkSize,
    /// Inside a chunk, this many bytes still to come.
    ChunkData(u64),
    /// At the CRLF after a chunk's data.
    ChunkEnd,
    /// At the trailer section after the last chunk.
    Trailers,
    /// All of the body has been read.
    Done,
}

/// An answer's body, read from the instance's connection as the client side asks for it.
pub struct RawBody {
    conn: Option<RawConn>,
    state: State,
    keep_alive: bool,
    home: Option<(Arc<ConnPool>, SocketAddr)>,
}

impl RawBody {
    /// At the last byte: the connection goes back to the pool if it can carry another
    /// exchange (kept alive, and nothing unasked after the answer).
    fn finish(&mut self) {
        self.state = State::Done;
        if let (Some(mut conn), Some((pool, addr))) = (self.conn.take(), self.home.take()) {
            if self.keep_alive && conn.buf.is_empty() {
                conn.since = Instant::now();
                pool.checkin_raw(addr, conn);
            }
        }
    }

    fn fail(&mut self, why: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.state = State::Done;
        Poll::Ready(Some(Err(why.into())))
    }
}

fn truncated(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the instance closed the connection {what}"),
    )
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) | State::ChunkData(left) if !conn.buf.is_empty() => {
                    let n = (conn.buf.len() as u64).min(left) as usize;
                    let data = conn.buf.split_to(n).freeze();
                    let left = left - n as u64;
                    match this.state {
                        State::Length(_) if left == 0 => this.finish(),
                        State::Length(_) => this.state = State::Length(left),
                        _ if left == 0 => this.state = State::ChunkEnd,
                        _ => this.state = State::ChunkData(left),
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Close if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::ChunkSize if !conn.buf.is_empty() => {
                    match httparse::parse_chunk_size(&conn.buf) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            conn.buf.advance(used);
                            this.state = if size == 0 {
                                State::Trailers
                            } else {
                                State::ChunkData(size)
                            };
                            continue;
                        }
                        Ok(httparse::Status::Partial) if conn.buf.len() <= MAX_CHUNK_LINE => {}
                        _ => return this.fail("invalid chunk size line from the instance"),
                    }
                }
                State::ChunkEnd if conn.buf.len() >= 2 => {
                    if &conn.buf[..2] != b"\r\n" {
                        return this.fail("chunk data not followed by CRLF");
                    }
                    conn.buf.advance(2);
                    this.state = State::ChunkSize;
                    continue;
                }
                State::Trailers if !conn.buf.is_empty() => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(&conn.buf, &mut fields) {
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for f in fields.iter() {
                                if let (Ok(n), Ok(v)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) {
                                    trailers.append(n, v);
                                }
                            }
                            conn.buf.advance(used);
                            this.finish();
                            if trailers.is_empty() {
                                return Poll::Ready(None);
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(httparse::Status::Partial) if conn.buf.len() <= MAX_HEAD => {}
                        _ => return this.fail("invalid trailer section from the instance"),
                    }
                }
                _ => {}
            }
            // More bytes are needed.
            let conn = this.conn.as_mut().expect("checked above");
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.state == State::Close => {
                    this.conn = None;
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(truncated("before the end of the body")),
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A scripted instance: for each accepted connection, reads one request head per answer
    /// in `answers[i]` and writes that answer (in pieces of `piece` bytes), then closes the
    /// connection if `close`. Returns the address and a receiver of the request heads seen.
    async fn instance(
        conns: Vec<(Vec<&'static [u8]>, bool)>,
        piece: usize,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for (answers, close) in conns {
                let (mut s, _) = l.accept().await.unwrap();
                let mut pending = Vec::new();
                for answer in answers {
                    let head = loop {
                        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head: Vec<u8> = pending.drain(..i + 4).collect();
                            break String::from_utf8(head).unwrap();
                        }
                        let mut b = [0u8; 4096];
                        let n = s.read(&mut b).await.unwrap();
                        assert!(n > 0, "client closed before a full request");
                        pending.extend_from_slice(&b[..n]);
                    };
                    tx.send(head).unwrap();
                    for p in answer.chunks(piece) {
                        s.write_all(p).await.unwrap();
                        if piece < answer.len() {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
                if close {
                    drop(s);
                } else {
                    // Keep the connection open until the test ends.
                    tokio::spawn(async move {
                        let mut b = [0u8; 1];
                        let _ = s.read(&mut b).await;
                    });
                }
            }
        });
        (addr, rx)
    }

    fn get(path: &str) -> Vec<u8> {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.9.9.9"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let xff = HeaderName::from_static("x-forwarded-for");
        let host = HeaderValue::from_static("svc.test");
        let mut out = Vec::new();
        let set = [(&xff, HeaderValue::from_static("10.9.9.9, 10.0.0.1"))];
        encode_request(&mut out, &Method::GET, path, Some(&host), &h, &set);
        out
    }

    /// One exchange through the pool; returns status, headers, body and trailers.
    async fn fetch(
        pool: &Arc<ConnPool>,
        addr: SocketAddr,
        req: &[u8],
        head: bool,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>, Option<HeaderMap>), String> {
        let (conn, _) = pool.checkout_raw(addr).await.map_err(|e| e.to_string())?;
        let resp = exchange(conn, req, head, pool, addr)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned();
        Ok((
            parts.status,
            parts.headers,
            collected.to_bytes().to_vec(),
            trailers,
        ))
    }

    fn pool() -> Arc<ConnPool> {
        ConnPool::new(Duration::from_secs(2))
    }

    #[tokio::test]
    async fn content_length_answers_reuse_the_connection() {
        let (addr, mut seen) = instance(
            vec![(
                vec![
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\nno!",
                ],
                false,
            )],
            1024,
        )
        .await;
        let pool = pool();
        let (s, h, b, _) = fetch(&pool, addr, &get("/a?x=1"), false).await.unwrap();
        assert_eq!(
            (s, &b[..], h["x-a"].as_bytes()),
            (StatusCode::OK, &b"hello"[..], &b"1"[..])
        );
        assert_eq!(
            seen.recv().await.unwrap(),
            "GET /a?x=1 HTTP/1.1\r\nhost: svc.test\r\naccept: */*\r\nx-forwarded-for: 10.9.9.9, 10.0.0.1\r\n\r\n"
        );
        // The instance accepts one connection only: the second exchange must reuse it.
        let (s, _, b, _) = fetch(&pool, addr, &get("/b"), false).await.unwrap();
        assert_eq!((s, &b[..]), (StatusCode::NOT_FOUND, &b"no!"[..]));
        assert!(seen
            .recv()
            .await
            .unwrap()
            .starts_with("GET /b HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn answers_split_into_tiny_pieces_are_reassembled() {
        let answer: &'static [u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Checksum: abc\r\n\r\n";
        let (addr, _seen) = instance(vec![(vec![answer, answer], false)], 3).await;
        let pool = pool();
        for _ in 0..2 {
            let (s, h, b, t) = fetch(&pool, addr, &get("/"), false).await.unwrap();
            assert_eq!(s, StatusCode::OK);
            assert_eq!(b, b"Wikipedia in \r\n\r\nchunks.");
            assert!(h.get("content-length").is_none(), "{h:?}");
            assert_eq!(t.expect("trailers")["x-checksum"], "abc");
        }
    }

    #[tokio::test]
    async fn bodies_without_framing_end_with_the_connection() {
        let (addr, _seen) = instance(
            vec![
                (vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end"], true),
                (
                    vec![b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"],
                    true,
                ),
                (
                    vec![b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
                    true,
                ),
                (
                    vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
                    false,
                ),
            ],
            1024,
        )
        .await;
        let pool = pool();
        let (_, _, b, _) = fetch(&pool, addr, &get("/"), false).await.unwrap();
        assert_eq!(b, b"until the end");
        // Each of these must not be reused: the instance accepts a new connection each time
        // and would hang a client that reused the closed one.
        for _ in 0..3 {
            let (_, _, b, _) = fetch(&pool, addr, &get("/"), false).await.unwrap();
            assert_eq!(b, b"ok");
        }
    }

    #[tokio::test]
    async fn head_204_304_and_interim_answers_have_no_body() {
        let (addr, _seen) = instance(
            vec![(
                vec![
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                    b"HTTP/1.1 204 No Content\r\n\r\n",
                    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
                ],
                false,
            )],
            1024,
        )
        .await;
        let pool = pool();
        let mut head = Vec::new();
        encode_request(&mut head, &Method::HEAD, "/", None, &HeaderMap::new(), &[]);
        let (s, h, b, _) = fetch(&pool, addr, &head, true).await.unwrap();
        assert_eq!(
            (s, b.len(), h["content-length"].as_bytes()),
            (StatusCode::OK, 0, &b"5"[..])
        );
        let (s, _, b, _) = fetch(&pool, addr, &get("/"), false).await.unwrap();
        assert_eq!((s, b.len()), (StatusCode::NO_CONTENT, 0));
        let (s, _, b, _) = fetch(&pool, addr, &get("/"), false).await.unwrap();
        assert_eq!((s, b.len()), (StatusCode::NOT_MODIFIED, 0));
        let (s, h, b, _) = fetch(&pool, addr, &get("/"), false).await.unwrap();
        assert_eq!((s, &b[..]), (StatusCode::OK, &b"x"[..]));
        assert!(h.get("link").is_none(), "interim headers leaked: {h:?}");
    }

    #[tokio::test]
    async fn invalid_answers_are_errors() {
        let cases: [(&'static [u8], &str); 6] = [
            (b"HTTP/1.1 2OO OK\r\n\r\n", "malformed response head"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
                "disagree",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "invalid Content-Length",
            ),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                "before the end of the body",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "chunk size",
            ),
        ];
        for (answer, want) in cases {
            let (addr, _seen) = instance(vec![(vec![answer], true)], 1024).await;
            let err = fetch(&pool(), addr, &get("/"), false).await.unwrap_err();
            assert!(err.contains(want), "{answer:?}: {err}");
        }
        // Nothing at all: the caller may retry an idempotent request elsewhere.
        let (addr, _seen) = instance(vec![(vec![b""], true)], 1024).await;
        let pool = pool();
        let (conn, _) = pool.checkout_raw(addr).await.unwrap();
        let Err(err) = exchange(conn, &get("/"), false, &pool, addr).await else {
            panic!("an answer from an instance that sent nothing");
        };
        assert!(matches!(err, ExchangeError::NothingReceived(_)), "{err}");
        // Only an idempotent request may go again: the instance may have acted on it.
        assert!(err.safe_to_resend(true) && !err.safe_to_resend(false));
    }

    #[tokio::test]
    async fn a_connection_the_instance_closed_while_idle_is_not_used_again() {
        // Keep-alive answer, then the instance closes: the next checkout must open a new
        // connection (the instance accepts a second one) instead of failing on the old one.
        let (addr, mut seen) = instance(
            vec![
                (vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"], true),
                (
                    vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"],
                    false,
                ),
            ],
            1024,
        )
        .await;
        let pool = pool();
        assert_eq!(fetch(&pool, addr, &get("/"), false).await.unwrap().2, b"a");
        seen.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (conn, reused) = pool.checkout_raw(addr).await.unwrap();
        assert!(!reused, "a closed connection was handed out");
        let resp = exchange(conn, &get("/"), false, &pool, addr).await.unwrap();
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&b[..], b"b");
    }
}
