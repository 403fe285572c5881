//! The peer listener: Raft RPCs, writes forwarded by followers, and cluster info for joiners.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use openraft::raft::{AppendEntriesResponse, InstallSnapshotRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::http::{full, read_body, text, Body};
use crate::node::{LeaderRequest, Node};
use crate::raft::codec;
use crate::raft::network::{SnapshotChunkHeader, BAD_MESSAGE, CODEC_HEADER, SNAPSHOT_HEADER};

/// Peer messages may carry snapshot chunks and batches of entries: allow more than clients.
const PEER_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// A Raft or forwarding answer, in the encoding the request came in: binary ([`codec`]),
/// or JSON for a member still running a version that sends JSON. Every answer names the
/// codec this member reads ([`CODEC_HEADER`]), so such a sender switches back to binary
/// once it learns the peer understands it.
fn reply<T: Serialize>(binary: bool, value: &T) -> Response<Body> {
    let (content_type, body) = if binary {
        ("application/octet-stream", codec::encode(value))
    } else {
        (
            "application/json",
            serde_json::to_vec(value).expect("peer messages serialise"),
        )
    };
    Response::builder()
        .status(200)
        .header("Content-Type", content_type)
        .header(CODEC_HEADER, codec::NAME)
        .body(full(body))
        .expect("valid response")
}

fn ok_json<T: Serialize>(value: &T) -> Response<Body> {
    reply(false, value)
}

/// Reads a peer message; also says whether it was binary (else JSON).
async fn decode<T: DeserializeOwned>(req: Request<Incoming>) -> Result<(T, bool), Response<Body>> {
    let body = read_body(req.into_body(), PEER_BODY_LIMIT)
        .await
        .map_err(|_| text(StatusCode::BAD_REQUEST, "unreadable peer request body"))?;
    codec::decode(&body)
        .map(|v| (v, codec::is_binary(&body)))
        .map_err(|e| text(StatusCode::BAD_REQUEST, &format!("{BAD_MESSAGE}: {e}")))
}

/// Routes one peer request.
pub async fn handle(node: Arc<Node>, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/raft/append") => {
            node.counters.recv_append.fetch_add(1, Ordering::Relaxed);
            match decode(req).await {
                Ok((rpc, bin)) => {
                    let res = node.raft.append_entries(rpc).await;
                    // A leader this member follows spoke (not one with an older vote).
                    if matches!(&res, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                        node.election_hints.leader_heard();
                    }
                    reply(bin, &res)
                }
                Err(r) => r,
            }
        }
        (Method::POST, "/raft/vote") => match decode(req).await {
            Ok((rpc, bin)) => reply(bin, &node.raft.vote(rpc).await),
            Err(r) => r,
        },
        (Method::POST, "/raft/snapshot") => {
            let header: Option<SnapshotChunkHeader> = req
                .headers()
                .get(SNAPSHOT_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| serde_json::from_str(s).ok());
            let Some(header) = header else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "missing or invalid snapshot header",
                );
            };
            let data = match read_body(req.into_body(), PEER_BODY_LIMIT).await {
                Ok(b) => b.to_vec(),
                Err(_) => return text(StatusCode::BAD_REQUEST, "unreadable snapshot chunk"),
            };
            let rpc = InstallSnapshotRequest {
                vote: header.vote,
                meta: header.meta,
                offset: header.offset,
                data,
                done: header.done,
            };
            let vote = rpc.vote;
            let res = node.raft.install_snapshot(rpc).await;
            if matches!(&res, Ok(r) if r.vote == vote) {
                node.election_hints.leader_heard();
            }
            // The chunk itself is raw snapshot bytes; the small answer stays JSON, which
            // every version reads.
            ok_json(&res)
        }
        (Method::POST, "/raft/forward") => match decode::<LeaderRequest>(req).await {
            Ok((lr, bin)) => reply(bin, &node.execute(&lr).await),
            Err(r) => r,
        },
        // Run together, so they join the same write batch, in the order sent.
        (Method::POST, "/raft/forward-batch") => match decode::<Vec<LeaderRequest>>(req).await {
            Ok((batch, bin)) => reply(
                bin,
                &futures::future::join_all(batch.iter().map(|lr| node.execute(lr))).await,
            ),
            Err(r) => r,
        },
        (Method::GET, "/raft/cluster") => ok_json(&node.cluster_info()),
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}
