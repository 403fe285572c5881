//! The L7 path: route a request by host and path, pick an instance, forward it with
//! X-Forwarded-* headers over a keep-alive pool, retry a failed connect on another instance,
//! splice WebSocket (any `Upgrade`) connections, and answer 404/503/502/504/413/400 with a
//! short reason when there is nothing to forward to.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tracing::Instrument;

use crate::balance::{now_ms, pick, InFlight};
use crate::config::Config;
use crate::pool::{ConnPool, ConnectError, PooledBody};
use crate::server::Worker;
use crate::table::Pool;
use crate::upstream;

/// Boxed errors of bodies passing through.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Request and response bodies of the proxy.
pub type ProxyBody = BoxBody<Bytes, BoxError>;
/// The pooled HTTP/1.1 client to instances.
pub type UpstreamClient = Client<HttpConnector, ProxyBody>;

/// Headers that describe one connection and are not forwarded (RFC 9110 §7.6.1). Names
/// are built once: a `&str` key would be parsed and validated on every use.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The client to instances: keep-alive pool, `TCP_NODELAY`, connect timeout.
pub fn upstream_client(config: &Config) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build(connector)
}

fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

fn empty() -> ProxyBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A response made by the proxy itself, with a one-line reason.
pub fn reply(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    let mut r = Response::new(full(format!("berth proxy: {reason}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert("x-berth-proxy", HeaderValue::from_static("1"));
    r
}

/// Whether the request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .map(|s| {
                    s.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                })
                .unwrap_or(false)
        })
}

/// Removes hop-by-hop headers, including those named in `Connection`.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages have none: one pass over the names instead of a lookup per name.
    if !h.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in HOP_BY_HOP.iter() {
        h.remove(n);
    }
}

/// An IP address as a header value, formatted without an intermediate `String`. Computed
/// once per client connection.
pub fn ip_header_value(ip: std::net::IpAddr) -> HeaderValue {
    use std::io::Write;
    let mut buf = [0u8; 64];
    let mut w = &mut buf[..];
    write!(w, "{ip}").expect("an IP address fits in 64 bytes");
    let n = 64 - w.len();
    HeaderValue::from_bytes(&buf[..n]).expect("an IP address is a valid header value")
}

/// Whether the request has no body (so it can be sent again to another instance).
fn bodiless(h: &HeaderMap) -> bool {
    !h.contains_key(header::TRANSFER_ENCODING)
        && h.get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}

/// Handles one request from `peer` (`client_ip`: its address as a header value; over TLS
/// when `https`) on `worker`'s table and connections.
pub async fn handle(
    worker: Arc<Worker>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    client_ip: HeaderValue,
    https: bool,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let (state, conns) = (&worker.state, &worker.conns);
    let config = &state.config;
    // The authority as a header value: from the URI (HTTP/2, absolute form) or the Host
    // header (cloned, not copied). It becomes Host (when missing) and X-Forwarded-Host.
    let host_value = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    };
    let host = host_value.as_ref().and_then(|v| v.to_str().ok());
    let Some(host) = host.filter(|h| !h.is_empty()) else {
        state.metrics.rejected.fetch_add(1, Ordering::Relaxed);
        return reply(StatusCode::BAD_REQUEST, "request without a Host header");
    };
    // Request smuggling: hyper's parser has already settled the framing (with both
    // Content-Length and Transfer-Encoding it drops Content-Length and reads chunked, RFC
    // 9112 §6.3), and the proxy writes a fresh message to the instance, so the two sides can
    // never disagree on where a request ends.
    if let Some(max) = config.max_body {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            state.metrics.rejected.fetch_add(1, Ordering::Relaxed);
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {max} bytes"),
            );
        }
    }
    let uri = req.uri().clone();
    let path = uri.path();
    let table = state.table_of(worker.shard);
    let route = match table.route(host, path) {
        Ok(r) => r,
        Err(_) => {
            state.metrics.no_route.fetch_add(1, Ordering::Relaxed);
            let why = if state.catalog.is_synced() {
                format!(
                    "no route for {}{}",
                    crate::table::normalize_host(host),
                    path
                )
            } else {
                "the registry has not been read yet".to_string()
            };
            let r = reply(
                if state.catalog.is_synced() {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                &why,
            );
            Outcome::new(config, peer, req.method(), path, host, start).record(
                None,
                r.status(),
                "-",
                "-",
            );
            return r;
        }
    };
    let pool = route.pool.clone();
    drop(table);

    let upgrade = wants_upgrade(req.headers());
    let mut client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let retryable = bodiless(req.headers()) && !upgrade;
    let (mut parts, body) = req.into_parts();
    let outcome = Outcome::new(config, peer, &parts.method, path, host, start);
    let mut body = Some(match config.max_body {
        Some(max) => Limited::new(body, max as usize).boxed(),
        None => body.map_err(|e| Box::new(e) as BoxError).boxed(),
    });

    let mut headers = std::mem::take(&mut parts.headers);
    let upgrade_proto = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut headers);
    if let Some(p) = upgrade_proto {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, p);
    }
    let host_value = host_value.clone().expect("checked: the request has a host");
    let missing_host = !headers.contains_key(header::HOST);
    let xff = match headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .and_then(|prev| HeaderValue::from_str(&format!("{prev}, {}", peer.ip())).ok())
    {
        Some(v) => v,
        None => client_ip.clone(),
    };
    // Set by the proxy, replacing whatever the client sent under these names.
    let forwarded = [
        (&X_FORWARDED_FOR, xff),
        (
            &X_FORWARDED_PROTO,
            HeaderValue::from_static(if https { "https" } else { "http" }),
        ),
        (&X_FORWARDED_HOST, host_value.clone()),
        (&X_REAL_IP, client_ip),
    ];
    // Instances get the request target in origin form (h2 and absolute-form requests
    // carry scheme and authority in the URI; the Host header has the authority).
    let absolute = parts.uri.scheme().is_some() || parts.uri.authority().is_some();
    // A request without a body goes out on the proxy's own client: its head is written
    // once here, straight from the client's headers and the forwarding ones, and sent as
    // is to each instance tried.
    let raw_head = retryable.then(|| {
        let mut head = Vec::with_capacity(512);
        let target = match parts.uri.path_and_query() {
            Some(pq) => pq.as_str(),
            None if absolute => "/",
            None => parts.uri.path(),
        };
        let host = missing_host.then_some(&host_value);
        upstream::encode_request(&mut head, &parts.method, target, host, &headers, &forwarded);
        head
    });
    let is_head = parts.method == hyper::Method::HEAD;
    let idempotent = idempotent(&parts.method);

    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_error = String::new();
    let attempts = if retryable { config.retries + 1 } else { 1 };
    for attempt in 0..attempts {
        let Some(backend) = pick(&pool, config.balance, now_ms(), &tried) else {
            break;
        };
        tried.push(backend.addr);
        if attempt > 0 {
            pool.metrics.retries.fetch_add(1, Ordering::Relaxed);
        }
        let _in_flight = InFlight::new(&backend.upstream, pool.shard);
        let exchange = async {
            if let Some(head) = &raw_head {
                let resp = send_raw(conns, backend.addr, head, is_head, idempotent).await?;
                return Ok(resp.map(|b| b.boxed()));
            }
            // The one attempt of a request with a body or an upgrade: hyper's client.
            let mut up = Request::new(body.take().unwrap_or_else(empty));
            *up.method_mut() = parts.method.clone();
            *up.uri_mut() = if absolute {
                parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .map_or_else(|| Uri::from_static("/"), Uri::from)
            } else {
                parts.uri.clone()
            };
            *up.version_mut() = Version::HTTP_11;
            let mut headers = std::mem::take(&mut headers);
            if missing_host {
                headers.insert(header::HOST, host_value.clone());
            }
            for (name, value) in &forwarded {
                headers.insert((*name).clone(), value.clone());
            }
            *up.headers_mut() = headers;
            let (mut resp, sender) = send(conns, backend.addr, up).await?;
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                if let Some(client_upgrade) = client_upgrade.take() {
                    let upstream_upgrade = hyper::upgrade::on(&mut resp);
                    let span = tracing::debug_span!("upgrade", %peer, instance = %backend.addr);
                    tokio::spawn(
                        async move {
                            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                                Ok((c, u)) => {
                                    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                                    let r = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                                    tracing::debug!(?r, "upgraded connection closed");
                                }
                                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                            }
                        }
                        .instrument(span),
                    );
                }
                return Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed()));
            }
            let resp =
                resp.map(|b| PooledBody::new(b, conns.clone(), backend.addr, sender).boxed());
            Ok::<Response<ProxyBody>, SendError>(resp)
        };
        match tokio::time::timeout(config.response_timeout, exchange).await {
            Ok(Ok(mut resp)) => {
                backend.upstream.succeed();
                let status = resp.status();
                outcome.record(Some(&*pool), status, &pool.service, &backend.id);
                // A 101 keeps Connection and Upgrade: they are what it answers.
                if status != StatusCode::SWITCHING_PROTOCOLS {
                    strip_hop_by_hop(resp.headers_mut());
                }
                return resp;
            }
            Ok(Err(SendError::Connect(e))) => {
                let d = backend.upstream.fail(now_ms(), config.eject);
                tracing::warn!(service = %pool.service, instance = %backend.addr, error = %e, eject_ms = d.as_millis() as u64, "connect failed; instance ejected");
                last_error = format!("cannot connect to {} ({e})", backend.addr);
                continue;
            }
            // The instance accepted the connection and closed it without a byte of answer
            // (e.g. Docker's port proxy in front of a container whose server is not up yet):
            // an idempotent request without a body is safe to send to another instance, and
            // one that was not even sent whole is safe whatever its method.
            Ok(Err(SendError::Raw(e))) if e.safe_to_resend(idempotent) => {
                let d = backend.upstream.fail(now_ms(), config.eject);
                tracing::warn!(service = %pool.service, instance = %backend.addr, error = %e, eject_ms = d.as_millis() as u64, "instance closed the connection without answering; instance ejected");
                last_error = format!(
                    "instance {} closed the connection without answering",
                    backend.addr
                );
                continue;
            }
            Ok(Err(SendError::Raw(e))) => {
                outcome.record(
                    Some(&*pool),
                    StatusCode::BAD_GATEWAY,
                    &pool.service,
                    &backend.id,
                );
                return reply(
                    StatusCode::BAD_GATEWAY,
                    &format!("instance {} failed: {e}", backend.addr),
                );
            }
            Ok(Err(SendError::Http(e))) => {
                let status = if body_too_large(&e) {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_GATEWAY
                };
                outcome.record(Some(&*pool), status, &pool.service, &backend.id);
                let why = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    format!(
                        "request body larger than {} bytes",
                        config.max_body.unwrap_or(0)
                    )
                } else {
                    format!("instance {} failed: {}", backend.addr, source_text(&e))
                };
                return reply(status, &why);
            }
            Err(_) => {
                outcome.record(
                    Some(&*pool),
                    StatusCode::GATEWAY_TIMEOUT,
                    &pool.service,
                    &backend.id,
                );
                return reply(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "instance {} did not answer within {:?}",
                        backend.addr, config.response_timeout
                    ),
                );
            }
        }
    }
    let (status, why) = if tried.is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no live instance of service {}", pool.service),
        )
    } else {
        (StatusCode::BAD_GATEWAY, last_error)
    };
    outcome.record(Some(&*pool), status, &pool.service, "-");
    reply(status, &why)
}

/// Why a request got no response from an instance.
enum SendError {
    /// No connection (refused, unreachable, timed out): nothing was sent.
    Connect(ConnectError),
    /// The exchange failed on an open connection.
    Http(hyper::Error),
    /// The exchange on the proxy's own client failed.
    Raw(upstream::ExchangeError),
}

impl From<hyper::Error> for SendError {
    fn from(e: hyper::Error) -> Self {
        SendError::Http(e)
    }
}

/// Sends the bodiless request `head` to `addr` on the proxy's own client. When a kept-alive
/// connection turns out to have been closed by the instance as the request went out, the
/// request goes once more on a new connection if that is safe: it was not sent whole, or
/// it is `idempotent`.
async fn send_raw(
    pool: &Arc<ConnPool>,
    addr: SocketAddr,
    head: &[u8],
    is_head: bool,
    idempotent: bool,
) -> Result<Response<upstream::RawBody>, SendError> {
    let (conn, reused) = pool.checkout_raw(addr).await.map_err(SendError::Connect)?;
    match upstream::exchange(conn, head, is_head, pool, addr).await {
        Err(e) if reused && e.safe_to_resend(idempotent) => {}
        r => return r.map_err(SendError::Raw),
    }
    let conn = pool.connect_raw(addr).await.map_err(SendError::Connect)?;
    upstream::exchange(conn, head, is_head, pool, addr)
        .await
        .map_err(SendError::Raw)
}

/// Sends `req` to `addr` on a pooled connection. A pooled connection that turns out to be
/// closed before the request left (the instance closed it while idle) is replaced by a new
/// one, and the request sent there.
async fn send(
    pool: &ConnPool,
    addr: SocketAddr,
    req: Request<ProxyBody>,
) -> Result<(Response<Incoming>, SendRequest<ProxyBody>), SendError> {
    let mut conn = pool.checkout(addr).await.map_err(SendError::Connect)?;
    match conn.sender.try_send_request(req).await {
        Ok(resp) => Ok((resp, conn.sender)),
        Err(mut e) => match e.take_message() {
            Some(req) if conn.reused => {
                let mut fresh = pool.connect(addr).await.map_err(SendError::Connect)?;
                let resp = fresh
                    .sender
                    .send_request(req)
                    .await
                    .map_err(SendError::Http)?;
                Ok((resp, fresh.sender))
            }
            _ => Err(SendError::Http(e.into_error())),
        },
    }
}

/// Methods RFC 9110 calls idempotent: safe to send again when no answer came back.
fn idempotent(m: &hyper::Method) -> bool {
    use hyper::Method;
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn body_too_large(e: &hyper::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        src = s.source();
    }
    false
}

fn source_text(e: &hyper::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// What is known of a request when its answer is recorded: the service's metrics and,
/// with `--access-log`, one log line. Nothing is built when the access log is off.
struct Outcome<'a> {
    config: &'a Config,
    peer: SocketAddr,
    method: &'a hyper::Method,
    path: &'a str,
    host: &'a str,
    start: Instant,
}

impl<'a> Outcome<'a> {
    fn new(
        config: &'a Config,
        peer: SocketAddr,
        method: &'a hyper::Method,
        path: &'a str,
        host: &'a str,
        start: Instant,
    ) -> Self {
        Outcome {
            config,
            peer,
            method,
            path,
            host,
            start,
        }
    }

    fn record(&self, pool: Option<&Pool>, status: StatusCode, service: &str, instance: &str) {
        let took = self.start.elapsed();
        if let Some(p) = pool {
            p.metrics.observe(p.shard, status.as_u16(), took);
        }
        if self.config.access_log {
            tracing::info!(
                target: "berth::access",
                client = %self.peer,
                method = %self.method,
                host = self.host,
                path = self.path,
                status = status.as_u16(),
                service,
                instance,
                ms = took.as_secs_f64() * 1000.0,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn upgrade_detection() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(!wants_upgrade(&h));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(wants_upgrade(&h));
    }

    #[test]
    fn bodiless_requests() {
        let mut h = HeaderMap::new();
        assert!(bodiless(&h));
        h.insert("content-length", HeaderValue::from_static("0"));
        assert!(bodiless(&h));
        h.insert("content-length", HeaderValue::from_static("5"));
        assert!(!bodiless(&h));
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        assert!(!bodiless(&h));
        assert!(idempotent(&hyper::Method::PUT) && !idempotent(&hyper::Method::POST));
    }

    #[test]
    fn replies_carry_a_reason() {
        let r = reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "no live instance of service web",
        );
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["x-berth-proxy"], "1");
    }
}
