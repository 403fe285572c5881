//! Cluster endpoints: `/v2/members`, `/v2/machines`, `/v2/stats/*`, `/version`, `/health`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::{member_value, read_body, text, Body};
use crate::node::{now_ns, LeaderRequest, Node};
use crate::v2::timefmt::format_rfc3339_nano as format_time;

/// The etcd release whose v2 API berth implements, as `/version` reports it.
pub const ETCD_SERVER_VERSION: &str = "3.4.23";
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";

fn message(status: u16, msg: &str) -> Response<Body> {
    super::json(
        status,
        format!("{}\n", json!({ "message": msg })).into_bytes(),
    )
}

fn only(req: &Request<Incoming>, allowed: &[Method]) -> Option<Response<Body>> {
    if allowed.contains(req.method()) {
        return None;
    }
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    let list: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
    resp.headers_mut()
        .insert("Allow", list.join(",").parse().expect("valid header"));
    Some(resp)
}

#[derive(serde::Deserialize)]
struct PeerUrlsBody {
    #[serde(rename = "peerURLs")]
    peer_urls: Vec<String>,
}

async fn peer_urls_body(
    node: &Node,
    req: Request<Incoming>,
) -> Result<Vec<String>, Response<Body>> {
    let ct = req
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !ct.starts_with("application/json") {
        return Err(message(
            415,
            &format!("Bad Content-Type {ct}, accept application/json"),
        ));
    }
    let body = read_body(req.into_body(), node.max_request_bytes)
        .await
        .map_err(|_| message(400, "could not read the request body"))?;
    let parsed: PeerUrlsBody =
        serde_json::from_slice(&body).map_err(|e| message(400, &e.to_string()))?;
    if parsed.peer_urls.is_empty() {
        return Err(message(400, "peerURLs must not be empty"));
    }
    let mut urls = Vec::new();
    for u in &parsed.peer_urls {
        crate::config::parse_http_url(u).map_err(|e| message(400, &e.to_string()))?;
        urls.push(u.trim_end_matches('/').to_string());
    }
    Ok(urls)
}

fn applied_response(applied: crate::raft::Applied) -> Response<Body> {
    if applied.status == 204 {
        return Response::builder()
            .status(204)
            .body(super::full(Vec::new()))
            .expect("valid response");
    }
    super::json(applied.status, applied.body)
}

pub(super) async fn members(node: &Arc<Node>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let rest = path
        .strip_prefix("/v2/members")
        .unwrap_or("")
        .trim_start_matches('/');
    if rest.is_empty() {
        if let Some(r) = only(&req, &[Method::GET, Method::POST]) {
            return r;
        }
        if req.method() == Method::GET {
            let list: Vec<_> = node.members().iter().map(member_value).collect();
            return super::json(
                200,
                format!("{}\n", json!({ "members": list })).into_bytes(),
            );
        }
        let urls = match peer_urls_body(node, req).await {
            Ok(u) => u,
            Err(r) => return r,
        };
        return applied_response(
            node.submit(LeaderRequest::MemberAdd { peer_urls: urls })
                .await,
        );
    }
    if rest == "leader" {
        if let Some(r) = only(&req, &[Method::GET]) {
            return r;
        }
        let leader = node.leader();
        return match leader.and_then(|l| node.members().into_iter().find(|m| m.id == l)) {
            Some(m) => super::json(200, format!("{}\n", member_value(&m)).into_bytes()),
            None => message(503, "During election"),
        };
    }
    if let Some(r) = only(&req, &[Method::DELETE, Method::PUT]) {
        return r;
    }
    let Ok(id) = u64::from_str_radix(rest, 16) else {
        return message(404, &format!("No such member: {rest}"));
    };
    if req.method() == Method::DELETE {
        return applied_response(node.submit(LeaderRequest::MemberRemove { id }).await);
    }
    let urls = match peer_urls_body(node, req).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    applied_response(
        node.submit(LeaderRequest::MemberUpdate {
            id,
            peer_urls: urls,
        })
        .await,
    )
}

pub(super) fn machines(node: &Node, req: &Request<Incoming>) -> Response<Body> {
    if let Some(r) = only(req, &[Method::GET, Method::HEAD]) {
        return r;
    }
    let urls: Vec<String> = node
        .members()
        .into_iter()
        .flat_map(|m| m.client_urls)
        .collect();
    Response::builder()
        .status(200)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(super::full(urls.join(", ")))
        .expect("valid response")
}

fn rfc3339(t: SystemTime) -> String {
    let ns = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    format_time(ns)
}

pub(super) fn stats(node: &Node, which: &str, req: &Request<Incoming>) -> Response<Body> {
    if let Some(r) = only(req, &[Method::GET]) {
        return r;
    }
    match which {
        "self" => {
            let metrics = node.raft.metrics().borrow().clone();
            let state = match metrics.state {
                openraft::ServerState::Leader => "StateLeader",
                openraft::ServerState::Candidate => "StateCandidate",
                _ => "StateFollower",
            };
            let uptime = node.start_time.elapsed().unwrap_or_default();
            let body = json!({
                "name": node.name,
                "id": format!("{:x}", node.id),
                "state": state,
                "startTime": rfc3339(node.start_time),
                "leaderInfo": {
                    "leader": metrics.current_leader.map(|l| format!("{l:x}")).unwrap_or_default(),
                    "uptime": format!("{:.9}s", uptime.as_secs_f64()),
                    "startTime": rfc3339(node.start_time),
                },
                "recvAppendRequestCnt": node.counters.recv_append(),
                "sendAppendRequestCnt": node.counters.send_append(),
            });
            super::json(200, format!("{body}\n").into_bytes())
        }
        "leader" => {
            if !node.is_leader() {
                return message(403, "not current leader");
            }
            let metrics = node.raft.metrics().borrow().clone();
            let mut followers = serde_json::Map::new();
            if let Some(repl) = &metrics.replication {
                for (id, matched) in repl {
                    if *id == node.id {
                        continue;
                    }
                    let success = matched.map(|l| l.index).unwrap_or(0);
                    followers.insert(
                        format!("{id:x}"),
                        json!({
                            "latency": {"current": 0.0, "average": 0.0, "standardDeviation": 0.0, "minimum": 0.0, "maximum": 0.0},
                            "counts": {"fail": 0, "success": success},
                        }),
                    );
                }
            }
            let body = json!({ "leader": format!("{:x}", node.id), "followers": followers });
            super::json(200, format!("{body}\n").into_bytes())
        }
        "store" => {
            let stats = node.shared.lock().store.stats();
            super::json(200, stats.to_json())
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

pub(super) fn version(req: &Request<Incoming>) -> Response<Body> {
    if let Some(r) = only(req, &[Method::GET]) {
        return r;
    }
    let body = json!({ "etcdserver": ETCD_SERVER_VERSION, "etcdcluster": ETCD_CLUSTER_VERSION });
    super::json(200, body.to_string().into_bytes())
}

pub(super) async fn health(node: &Arc<Node>, req: &Request<Incoming>) -> Response<Body> {
    if let Some(r) = only(req, &[Method::GET]) {
        return r;
    }
    // etcd 3.4 reports healthy when there is a leader and a quorum answers.
    let healthy = node.leader().is_some() && {
        let probe = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            node.raft.ensure_linearizable(),
        )
        .await;
        match probe {
            Ok(Ok(_)) => true,
            Ok(Err(_)) => node.leader().is_some(),
            Err(_) => false,
        }
    };
    let _ = now_ns;
    let body = json!({ "health": if healthy { "true" } else { "false" } });
    Response::builder()
        .status(if healthy { 200 } else { 503 })
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(super::full(body.to_string()))
        .expect("valid response")
}
