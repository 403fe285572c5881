//! The client-facing HTTP API: etcd's v2 keys, members, machines, stats, version and health.
//!
//! Handlers only translate between HTTP and [`Node`](crate::node::Node): parsing and the
//! store's semantics live in [`crate::v2`], routing to the leader in [`crate::node`].

mod cluster;
mod keys;
pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

pub use serve::{serve, Body};

use crate::node::{MemberInfo, Node};
use crate::raft::Applied;
use crate::v2;

/// Renders a store event the way etcd writes it (JSON plus a newline).
pub fn render_event(event: &v2::Event, no_value_on_success: bool) -> Applied {
    // Decide 201 vs 200 before stripping: a stripped set would look created.
    let status = if event.is_created() { 201 } else { 200 };
    let mut body = if no_value_on_success {
        let mut stripped = event.clone();
        stripped.strip_value_for_no_value_on_success();
        stripped.to_json()
    } else {
        event.to_json()
    };
    if body.last() != Some(&b'\n') {
        body.push(b'\n');
    }
    Applied {
        status,
        etcd_index: event.etcd_index,
        body,
    }
}

/// Renders a v2 error the way etcd writes it.
pub fn render_error(err: &v2::V2Error) -> Applied {
    let mut body = err.to_json();
    if body.last() != Some(&b'\n') {
        body.push(b'\n');
    }
    Applied {
        status: err.status(),
        etcd_index: err.index,
        body,
    }
}

/// etcd's JSON for one member.
pub fn member_json(m: &MemberInfo) -> Vec<u8> {
    serde_json::to_vec(&member_value(m)).expect("member serialises")
}

pub(crate) fn member_value(m: &MemberInfo) -> serde_json::Value {
    serde_json::json!({
        "id": format!("{:x}", m.id),
        "name": m.name,
        "peerURLs": m.peer_urls,
        "clientURLs": m.client_urls,
    })
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn text(status: StatusCode, msg: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("X-Content-Type-Options", "nosniff")
        .body(full(format!("{msg}\n")))
        .expect("valid response")
}

pub(crate) fn json(status: u16, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(full(body))
        .expect("valid response")
}

/// Reads a request body up to `limit` bytes; `None` when it is larger or broken.
pub(crate) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(BodyError::TooLarge)
            } else {
                Err(BodyError::Broken(e.to_string()))
            }
        }
    }
}

pub(crate) enum BodyError {
    TooLarge,
    Broken(String),
}

/// Whether every `%` in `raw` starts a valid escape (Go rejects the request otherwise).
fn valid_escapes(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// Go's `path.Clean` plus ServeMux's rule of keeping a trailing slash.
pub(crate) fn clean_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut cleaned = format!("/{}", out.join("/"));
    if p.ends_with('/') && cleaned != "/" {
        cleaned.push('/');
    }
    cleaned
}

/// Go's ServeMux answer to an unclean path: a 301 to the cleaned one.
fn redirect(req: &Request<Incoming>, cleaned: &str) -> Response<Body> {
    let location = match req.uri().query() {
        Some(q) => format!("{cleaned}?{q}"),
        None => cleaned.to_string(),
    };
    let builder = Response::builder()
        .status(301)
        .header("Location", &location);
    if matches!(*req.method(), hyper::Method::GET | hyper::Method::HEAD) {
        let escaped = location
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        let body = if req.method() == hyper::Method::HEAD {
            String::new()
        } else {
            format!("<a href=\"{escaped}\">Moved Permanently</a>.\n\n")
        };
        builder
            .header("Content-Type", "text/html; charset=utf-8")
            .body(full(body))
            .expect("valid response")
    } else {
        builder.body(full(Vec::new())).expect("valid response")
    }
}

/// Routes one client request.
pub async fn handle(node: Arc<Node>, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_string();
    if !valid_escapes(&path) {
        // What Go's server answers to a request line it cannot parse.
        return Response::builder()
            .status(400)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Connection", "close")
            .body(full("400 Bad Request"))
            .expect("valid response");
    }
    let cleaned = clean_path(&path);
    if cleaned != path {
        return redirect(&req, &cleaned);
    }
    if req.method() == hyper::Method::OPTIONS {
        // etcd's CORS layer answers preflight requests with an empty 200.
        return Response::builder()
            .status(200)
            .body(full(Vec::new()))
            .expect("valid response");
    }
    let with_cluster_id =
        (path == "/v2/keys" || path.starts_with("/v2/keys/") || path.starts_with("/v2/members"))
            && matches!(
                req.method().as_str(),
                "GET" | "HEAD" | "PUT" | "POST" | "DELETE"
            );
    let mut resp = if path == "/v2/keys" || path.starts_with("/v2/keys/") {
        keys::handle(&node, req).await
    } else if path == "/v2/members" || path.starts_with("/v2/members/") {
        cluster::members(&node, req).await
    } else if path == "/v2/machines" {
        cluster::machines(&node, &req)
    } else if let Some(which) = path.strip_prefix("/v2/stats/") {
        cluster::stats(&node, which, &req)
    } else if path == "/version" {
        cluster::version(&req)
    } else if path == "/health" {
        cluster::health(&node, &req).await
    } else {
        text(StatusCode::NOT_FOUND, "404 page not found")
    };
    if with_cluster_id {
        resp.headers_mut().insert(
            "X-Etcd-Cluster-ID",
            format!("{:x}", node.cluster_id)
                .parse()
                .expect("hex is a valid header"),
        );
    }
    resp
}
