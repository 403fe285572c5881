//! `/v2/keys`: reads, writes, and long-poll or streaming watches.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc;

use super::{json, read_body, text, Body, BodyError};
use crate::node::{LeaderRequest, Node};
use crate::raft::state_machine::Shared;
use crate::raft::Applied;
use crate::v2::{self, Method, Watch};

const KEYS_PREFIX: &str = "/v2/keys";

fn with_index(mut resp: Response<Body>, node: &Node, etcd_index: u64) -> Response<Body> {
    let (raft_index, term) = node.raft_position();
    let h = resp.headers_mut();
    h.insert("X-Etcd-Index", etcd_index.into());
    h.insert("X-Raft-Index", raft_index.into());
    h.insert("X-Raft-Term", term.into());
    resp
}

fn respond(node: &Node, applied: Applied, head: bool) -> Response<Body> {
    let body = if head { Vec::new() } else { applied.body };
    let success = applied.status < 300;
    let mut resp = json(applied.status, body);
    if success {
        return with_index(resp, node, applied.etcd_index);
    }
    // etcd writes only X-Etcd-Index on errors.
    resp.headers_mut()
        .insert("X-Etcd-Index", applied.etcd_index.into());
    resp
}

pub(super) async fn handle(node: &Arc<Node>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    if !matches!(method.as_str(), "GET" | "HEAD" | "PUT" | "POST" | "DELETE") {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        resp.headers_mut().insert(
            "Allow",
            "HEAD,GET,PUT,POST,DELETE".parse().expect("valid header"),
        );
        return resp;
    }
    // Go hands etcd the decoded path; the parser expects the same.
    let raw_path = &req.uri().path()[KEYS_PREFIX.len()..];
    let key_path = percent_encoding::percent_decode_str(raw_path)
        .decode_utf8_lossy()
        .into_owned();
    let query = req.uri().query().unwrap_or("").to_string();
    // Like Go's ParseForm, only a form-encoded body carries parameters.
    let is_form = req
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.split(';').next().unwrap_or("").trim() == "application/x-www-form-urlencoded")
        .unwrap_or(false);
    let body = match read_body(req.into_body(), node.max_request_bytes).await {
        Ok(_) if !is_form => bytes::Bytes::new(),
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            let err = v2::V2Error::new(300, "etcdserver: request is too large", 0);
            return respond(node, super::render_error(&err), false);
        }
        Err(BodyError::Broken(reason)) => {
            let err =
                v2::V2Error::new(210, format!("could not read the request body: {reason}"), 0);
            return respond(node, super::render_error(&err), false);
        }
    };
    let key_req = match v2::parse_key_request(&method, &key_path, &query, &body) {
        Ok(r) => r,
        Err(err) => return respond(node, super::render_error(&err), false),
    };
    let head = method == "HEAD";
    match key_req.method {
        Method::Get if key_req.wait => watch(node, &key_req, head),
        Method::Get if key_req.quorum => {
            let applied = node.submit(LeaderRequest::QuorumGet(key_req)).await;
            respond(node, applied, head)
        }
        Method::Get => respond(node, node.local_get(&key_req), head),
        _ => {
            let applied = node.submit(LeaderRequest::Key(key_req)).await;
            respond(node, applied, head)
        }
    }
}

/// Removes a watcher from the store when the HTTP side of a watch goes away, unless the
/// store removed it already (`shared` taken).
struct WatchGuard {
    shared: Option<Arc<Shared>>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.lock().store.unwatch(self.id);
        }
    }
}

/// The body of a pending watch: the watcher's events as the store sends them (the first only,
/// for a one-shot watch, whose body then ends in the same write), straight from the store's
/// channel. Dropping it (response complete, or client gone) unregisters the watcher.
struct WatchBody {
    rx: mpsc::Receiver<v2::WatchEvent>,
    stream: bool,
    done: bool,
    guard: WatchGuard,
}

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                if !self.stream {
                    // The store drops a one-shot watcher as it sends the event: nothing to
                    // unregister (10,000 watchers woken by one write would otherwise take
                    // the store lock 10,000 more times).
                    self.done = true;
                    self.guard.shared = None;
                }
                Poll::Ready(Some(Ok(Frame::data(event.json()))))
            }
            // The store dropped the watcher (it fell behind, or a snapshot replaced the store).
            Poll::Ready(None) => {
                self.done = true;
                self.guard.shared = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

fn watch(node: &Arc<Node>, req: &v2::KeyRequest, head: bool) -> Response<Body> {
    let watch =
        node.shared
            .lock()
            .store
            .watch(&req.path, req.recursive, req.stream, req.wait_index);
    match watch {
        Err(err) => respond(node, super::render_error(&err), head),
        Ok(Watch::Immediate(event)) => {
            let index = event.etcd_index;
            let body = if head { Vec::new() } else { event.to_json() };
            with_index(json(200, body), node, index)
        }
        Ok(Watch::Pending { id, rx, etcd_index }) => {
            let body = WatchBody {
                rx,
                stream: req.stream,
                done: false,
                guard: WatchGuard {
                    shared: Some(node.shared.clone()),
                    id,
                },
            };
            let resp = Response::builder()
                .status(200)
                .header("Content-Type", "application/json")
                .body(BodyExt::boxed(body))
                .expect("valid response");
            with_index(resp, node, etcd_index)
        }
    }
}
