//! The peer RPC client: openraft's messages as JSON over HTTP/1.1 to each member's peer URL.
//!
//! Every member serves the matching endpoints in [`crate::peer`]. Snapshot chunks travel as a
//! raw body with the chunk's metadata in the `x-berth-snapshot` header, so large snapshots are
//! not inflated by JSON-encoding bytes.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::election::Hints;
use super::{codec, Member, NodeId, TypeConfig};
use crate::stats::PeerCounters;

/// Why a peer request failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The request could not be delivered (connection refused, reset, DNS...).
    #[error("peer {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// The peer did not answer in time; the request may or may not have been processed.
    #[error("peer {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// The peer answered with an unexpected status.
    #[error("peer {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// The peer's answer could not be decoded.
    #[error("peer {url} sent an undecodable answer: {reason}")]
    Decode { url: String, reason: String },
}

/// Header on every Raft/forwarding answer of a member that reads the binary codec.
pub(crate) const CODEC_HEADER: &str = "x-berth-codec";

/// Start of the 400 answer to a peer message a member cannot decode (the same text in
/// versions that read only JSON).
pub(crate) const BAD_MESSAGE: &str = "bad peer message";

/// A pooled HTTP client for peer traffic. Cheap to clone.
#[derive(Clone)]
pub struct PeerClient {
    http: Client<HttpConnector, Full<Bytes>>,
    /// Peers that read only JSON (see [`JsonPeers`]).
    json_peers: Arc<JsonPeers>,
}

/// Peers (`scheme://host:port`) that answered a binary message with [`BAD_MESSAGE`]: an
/// older berth that reads only JSON, as in the middle of a rolling upgrade. They get JSON
/// until an answer carries [`CODEC_HEADER`]. Outside an upgrade the set is empty, and every
/// peer call checks one atomic flag, not the lock.
#[derive(Default)]
struct JsonPeers {
    any: std::sync::atomic::AtomicBool,
    set: std::sync::Mutex<HashSet<String>>,
}

impl JsonPeers {
    fn contains(&self, url: &str) -> bool {
        self.any.load(Ordering::Relaxed)
            && self.set.lock().expect("not poisoned").contains(origin(url))
    }

    /// Records whether the peer of `url` reads only JSON; true if that changed.
    fn mark(&self, url: &str, json_only: bool) -> bool {
        let mut set = self.set.lock().expect("not poisoned");
        let changed = if json_only {
            set.insert(origin(url).to_string())
        } else {
            set.remove(origin(url))
        };
        self.any.store(!set.is_empty(), Ordering::Relaxed);
        changed
    }
}

/// `scheme://host:port` of a peer URL.
fn origin(url: &str) -> &str {
    let rest = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[rest..].find('/') {
        Some(i) => &url[..rest + i],
        None => url,
    }
}

impl Default for PeerClient {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(500)));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        PeerClient {
            http,
            json_peers: Arc::default(),
        }
    }

    /// Sends one request and returns the body of a 200 answer.
    pub async fn request(
        &self,
        method: hyper::Method,
        url: &str,
        header: Option<(&str, String)>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes, PeerError> {
        let mut builder = hyper::Request::builder().method(method).uri(url);
        if let Some((name, value)) = header {
            builder = builder.header(name, value);
        }
        let req =
            builder
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| PeerError::Unreachable {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
        let fut = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| PeerError::Unreachable {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
            let status = resp.status().as_u16();
            if resp.headers().contains_key(CODEC_HEADER)
                && self.json_peers.contains(url)
                && self.json_peers.mark(url, false)
            {
                tracing::info!(peer = origin(url), "peer reads binary peer messages again");
            }
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| PeerError::Decode {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            if status != 200 {
                return Err(PeerError::Status {
                    url: url.to_string(),
                    status,
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
            Ok(bytes)
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(PeerError::Timeout {
                url: url.to_string(),
                timeout,
            }),
        }
    }

    /// POSTs `req` in the peer encoding ([`codec`]) and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        url: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let json = || serde_json::to_vec(req).expect("peer messages serialise");
        let bytes = if self.json_peers.contains(url) {
            self.request(hyper::Method::POST, url, None, json(), timeout)
                .await?
        } else {
            let sent = self
                .request(hyper::Method::POST, url, None, codec::encode(req), timeout)
                .await;
            match sent {
                // Nothing was done with a message the peer could not read: resend it as JSON.
                Err(PeerError::Status {
                    status: 400, body, ..
                }) if body.starts_with(BAD_MESSAGE) => {
                    if self.json_peers.mark(url, true) {
                        tracing::info!(
                            peer = origin(url),
                            "peer reads only JSON peer messages (an older berth); sending it JSON"
                        );
                    }
                    self.request(hyper::Method::POST, url, None, json(), timeout)
                        .await?
                }
                other => other?,
            }
        };
        codec::decode(&bytes).map_err(|e| PeerError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }
}

/// Snapshot chunk metadata carried in the `x-berth-snapshot` header.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotChunkHeader {
    pub vote: openraft::Vote<NodeId>,
    pub meta: super::SnapshotMeta,
    pub offset: u64,
    pub done: bool,
}

pub(crate) const SNAPSHOT_HEADER: &str = "x-berth-snapshot";

/// Creates a [`PeerNetwork`] per target member.
pub struct NetworkFactory {
    client: PeerClient,
    counters: Arc<PeerCounters>,
    hints: Arc<Hints>,
}

impl NetworkFactory {
    /// `hints` hears of every vote a peer refused because its log is longer.
    pub fn new(client: PeerClient, counters: Arc<PeerCounters>, hints: Arc<Hints>) -> Self {
        NetworkFactory {
            client,
            counters,
            hints,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerNetwork {
        PeerNetwork {
            target,
            base: node.peer_urls.first().cloned().unwrap_or_default(),
            client: self.client.clone(),
            counters: self.counters.clone(),
            hints: self.hints.clone(),
        }
    }
}

/// The RPC client to one member.
pub struct PeerNetwork {
    target: NodeId,
    base: String,
    client: PeerClient,
    counters: Arc<PeerCounters>,
    hints: Arc<Hints>,
}

fn to_rpc_error<E: std::error::Error>(target: NodeId, e: PeerError) -> RPCError<NodeId, Member, E> {
    match e {
        PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        _ => {
            let _ = target;
            RPCError::Network(NetworkError::new(&e))
        }
    }
}

impl PeerNetwork {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("{}{}", self.base, path);
        let res: Result<Resp, E> = self
            .client
            .call(&url, req, option.hard_ttl())
            .await
            .map_err(|e| to_rpc_error(self.target, e))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Log bytes (roughly) sent in one AppendEntries call. openraft 0.9 gives every call the
/// heartbeat interval (100 ms by default) to complete, and one entry can be a batch of up to
/// 1,000 writes: a follower far behind that is sent hundreds of entries at once cannot take
/// them in time, and openraft then resends the same payload forever (seen: a leader spinning
/// on encoding entries while every write timed out).
pub(crate) const APPEND_BUDGET_BYTES: usize = 512 * 1024;

/// The approximate encoded size of one log entry.
fn entry_bytes(entry: &openraft::Entry<TypeConfig>) -> usize {
    use crate::raft::Proposal;
    use crate::v2::Command;
    let command = |c: &Command| match c {
        Command::Key { req, .. } => 48 + req.path.len() + req.val.len() + req.prev_value.len(),
        Command::Expire { .. } => 64,
    };
    64 + match &entry.payload {
        openraft::EntryPayload::Normal(Proposal::V2(c)) => command(c),
        openraft::EntryPayload::Normal(Proposal::Batch(cs)) => cs.iter().map(command).sum(),
        openraft::EntryPayload::Normal(Proposal::Attributes { .. }) => 256,
        openraft::EntryPayload::Membership(_) => 512,
        openraft::EntryPayload::Blank => 0,
    }
}

/// Keeps the longest prefix of `entries` within `budget` bytes (at least one entry). Returns
/// the log id of the last entry kept if any were dropped.
pub(crate) fn trim_to_budget(
    entries: &mut Vec<openraft::Entry<TypeConfig>>,
    budget: usize,
) -> Option<openraft::LogId<NodeId>> {
    let mut total = 0;
    let keep = entries
        .iter()
        .position(|e| {
            total += entry_bytes(e);
            total > budget
        })
        .map_or(entries.len(), |i| i.max(1));
    if keep == entries.len() {
        return None;
    }
    entries.truncate(keep);
    entries.last().map(|e| e.log_id)
}

/// Trims a request's entries to `budget` (see [`trim_to_budget`]). When entries were dropped,
/// the commit index sent is lowered to the last entry sent: a follower must never learn of a
/// commit beyond the log it holds. (openraft 0.9 followers already commit only up to what
/// they received; this keeps the request honest on its own.)
pub(crate) fn trim_request(
    rpc: &mut AppendEntriesRequest<TypeConfig>,
    budget: usize,
) -> Option<openraft::LogId<NodeId>> {
    let last_sent = trim_to_budget(&mut rpc.entries, budget)?;
    rpc.leader_commit = rpc.leader_commit.min(Some(last_sent));
    Some(last_sent)
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        if rpc.entries.is_empty() {
            // Most empty AppendEntries carry only a new commit index. openraft asks for them
            // (one per follower) just before it applies the entries that committed, on this
            // same thread, and a loopback send costs the sender tens of microseconds (it runs
            // the receiver's TCP input and wakes it). Let the tasks already runnable here, the
            // state machine and the client's answer among them, go first (`yield_now` on a
            // current-thread runtime waits until its queue is empty). Heartbeats and the
            // leadership checks of quorum reads (also empty) wait one such pass as well.
            tokio::task::yield_now().await;
        }
        let mut rpc = rpc;
        let last_sent = trim_request(&mut rpc, APPEND_BUDGET_BYTES);
        let res = self
            .rpc("/raft/append", &rpc, &option)
            .await
            .map(|r| match r {
                // The follower holds everything sent: tell openraft how far that is, so it
                // sends the rest next.
                AppendEntriesResponse::Success if last_sent.is_some() => {
                    AppendEntriesResponse::PartialSuccess(last_sent)
                }
                other => other,
            });
        let counter = if res.is_ok() {
            &self.counters.send_append_ok
        } else {
            &self.counters.send_append_fail
        };
        counter.fetch_add(1, Ordering::Relaxed);
        res
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let header = SnapshotChunkHeader {
            vote: rpc.vote,
            meta: rpc.meta,
            offset: rpc.offset,
            done: rpc.done,
        };
        let header = serde_json::to_string(&header).expect("snapshot header serialises");
        let url = format!("{}/raft/snapshot", self.base);
        let bytes = self
            .client
            .request(
                hyper::Method::POST,
                &url,
                Some((SNAPSHOT_HEADER, header)),
                rpc.data,
                option.hard_ttl(),
            )
            .await
            .map_err(|e| to_rpc_error(self.target, e))?;
        let res: Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> =
            codec::decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        let resp = self.rpc("/raft/vote", &rpc, &option).await?;
        self.hints.vote_answered(&rpc, &resp);
        Ok(resp)
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;
    use crate::raft::Proposal;
    use crate::v2::{Command, KeyRequest, Method};

    /// An entry at `index` holding a batch of `writes` writes of a 1,000-byte value.
    fn batch(index: u64, writes: usize) -> openraft::Entry<TypeConfig> {
        let mut req = KeyRequest::new(Method::Put, "/k");
        req.val = "v".repeat(1000);
        openraft::Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Normal(Proposal::Batch(vec![
                Command::Key {
                    req,
                    now: 0
                };
                writes
            ])),
        }
    }

    #[test]
    fn a_payload_within_the_budget_is_sent_whole() {
        let mut entries: Vec<_> = (1..=10).map(|i| batch(i, 10)).collect();
        assert_eq!(trim_to_budget(&mut entries, APPEND_BUDGET_BYTES), None);
        assert_eq!(entries.len(), 10);
    }

    #[test]
    fn a_large_payload_is_cut_to_a_prefix_and_the_last_id_sent_is_reported() {
        // 300 entries of 100 writes of ~1 KiB: ~30 MiB, far above the budget.
        let mut entries: Vec<_> = (1..=300).map(|i| batch(i, 100)).collect();
        let last = trim_to_budget(&mut entries, APPEND_BUDGET_BYTES).expect("cut");
        assert!(
            !entries.is_empty() && entries.len() < 10,
            "{}",
            entries.len()
        );
        assert_eq!(last, entries.last().unwrap().log_id);
        assert_eq!(last.index, entries.len() as u64);
        let sent: usize = entries.iter().map(entry_bytes).sum();
        assert!(sent <= APPEND_BUDGET_BYTES, "{sent}");
    }

    fn request(
        entries: Vec<openraft::Entry<TypeConfig>>,
        commit: u64,
    ) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: openraft::Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(1, 1),
                commit,
            )),
            entries,
        }
    }

    #[test]
    fn a_cut_request_commits_no_further_than_its_last_entry() {
        let mut rpc = request((1..=300).map(|i| batch(i, 100)).collect(), 290);
        let last = trim_request(&mut rpc, APPEND_BUDGET_BYTES).expect("cut");
        assert!(last.index < 10);
        assert_eq!(rpc.leader_commit, Some(last));

        // A commit index below the cut is kept as it is.
        let mut rpc = request((1..=300).map(|i| batch(i, 100)).collect(), 2);
        trim_request(&mut rpc, APPEND_BUDGET_BYTES).expect("cut");
        assert_eq!(rpc.leader_commit.map(|l| l.index), Some(2));

        // An uncut request is untouched.
        let mut rpc = request((1..=3).map(|i| batch(i, 1)).collect(), 290);
        assert_eq!(trim_request(&mut rpc, APPEND_BUDGET_BYTES), None);
        assert_eq!(rpc.leader_commit.map(|l| l.index), Some(290));
    }

    #[test]
    fn the_size_estimate_is_not_below_the_encoded_size() {
        use crate::raft::codec;
        let mut small = KeyRequest::new(Method::Put, "/services/web/a");
        small.val = "{\"host\":\"10.0.0.1\",\"port\":80}".into();
        small.ttl = Some(60);
        small.prev_value = "old".into();
        let small = Command::Key {
            req: small,
            now: i64::MAX,
        };
        let entries = [
            batch(u64::MAX, 1),
            batch(7, 100),
            openraft::Entry {
                log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), u64::MAX),
                payload: openraft::EntryPayload::Normal(Proposal::Batch(vec![small; 50])),
            },
        ];
        for e in &entries {
            let (estimate, actual) = (entry_bytes(e), codec::encode(e).len());
            assert!(
                estimate >= actual && estimate <= actual * 2,
                "estimate {estimate}, encoded {actual}"
            );
        }
    }

    #[test]
    fn one_entry_above_the_budget_is_still_sent() {
        let mut entries = vec![batch(7, 1000), batch(8, 1)];
        let last = trim_to_budget(&mut entries, APPEND_BUDGET_BYTES);
        assert_eq!(entries.len(), 1);
        assert_eq!(last.map(|l| l.index), Some(7));
    }
}

#[cfg(test)]
mod codec_fallback_tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    use hyper::body::Incoming;

    use super::*;

    /// A peer that sums a list of numbers. Until `upgraded` is set it behaves like a berth
    /// that reads only JSON: a binary message gets the 400 such a version answers. It records
    /// whether each message it got was binary.
    async fn fake_peer(upgraded: Arc<AtomicBool>, seen: Arc<Mutex<Vec<bool>>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (upgraded, seen) = (upgraded.clone(), seen.clone());
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let (upgraded, seen) = (upgraded.clone(), seen.clone());
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let binary = codec::is_binary(&body);
                        seen.lock().unwrap().push(binary);
                        let new = upgraded.load(Ordering::SeqCst);
                        let answer = if binary && !new {
                            hyper::Response::builder()
                                .status(400)
                                .body(Full::new(Bytes::from(
                                    "bad peer message: expected value at line 1 column 1",
                                )))
                        } else {
                            let sum: u64 = codec::decode::<Vec<u64>>(&body).unwrap().iter().sum();
                            let bytes = if binary {
                                codec::encode(&sum)
                            } else {
                                serde_json::to_vec(&sum).unwrap()
                            };
                            let mut b = hyper::Response::builder().status(200);
                            if new {
                                b = b.header(CODEC_HEADER, codec::NAME);
                            }
                            b.body(Full::new(Bytes::from(bytes)))
                        };
                        Ok::<_, std::convert::Infallible>(answer.unwrap())
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        format!("http://{addr}/raft/forward")
    }

    #[tokio::test]
    async fn an_older_peer_gets_json_until_it_answers_as_an_upgraded_one() {
        let upgraded = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let url = fake_peer(upgraded.clone(), seen.clone()).await;
        let client = PeerClient::new();
        let t = Duration::from_secs(5);
        let seen = move || std::mem::take(&mut *seen.lock().unwrap());

        // Binary first; refused, so the same message again as JSON.
        assert_eq!(
            client
                .call::<_, u64>(&url, &vec![1u64, 2, 3], t)
                .await
                .unwrap(),
            6
        );
        assert_eq!(seen(), [true, false]);
        // From then on JSON at once.
        assert_eq!(
            client.call::<_, u64>(&url, &vec![4u64], t).await.unwrap(),
            4
        );
        assert_eq!(seen(), [false]);

        // Upgraded, the peer still answers JSON to JSON, but says it reads binary: the next
        // message is binary again.
        upgraded.store(true, Ordering::SeqCst);
        assert_eq!(
            client.call::<_, u64>(&url, &vec![5u64], t).await.unwrap(),
            5
        );
        assert_eq!(
            client.call::<_, u64>(&url, &vec![6u64], t).await.unwrap(),
            6
        );
        assert_eq!(seen(), [false, true]);
    }

    #[test]
    fn origin_is_scheme_host_and_port() {
        assert_eq!(
            origin("http://127.0.0.1:2380/raft/append"),
            "http://127.0.0.1:2380"
        );
        assert_eq!(origin("http://[::1]:2380"), "http://[::1]:2380");
    }
}
