//! A running registry member: Raft, the state machine, peer client, and the operations the
//! HTTP layers call (writes and quorum reads routed to the leader, membership changes).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{member_id, ClusterState, Config};
use crate::error::Error;
use crate::raft::durable::Durability;
use crate::raft::election::{nudge_elections, Hints, Timing};
use crate::raft::log_store::{LogStore, CF_LOGS, CF_META};
use crate::raft::network::{NetworkFactory, PeerClient, PeerError};
use crate::raft::state_machine::{AppState, Shared, StateMachine, CF_SM};
use crate::raft::thread::RaftThread;
use crate::raft::{Applied, Member, NodeId, Proposal, Raft};
use crate::stats::PeerCounters;
use crate::v2::{self, KeyRequest};

/// How long a client request waits for a leader before failing (etcd: ~5 s plus election).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// A request that must run on the leader. Followers forward it over the peer URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderRequest {
    Key(KeyRequest),
    QuorumGet(KeyRequest),
    MemberAdd {
        peer_urls: Vec<String>,
    },
    MemberRemove {
        id: NodeId,
    },
    MemberUpdate {
        id: NodeId,
        peer_urls: Vec<String>,
    },
    Attributes {
        id: NodeId,
        name: String,
        client_urls: Vec<String>,
    },
}

/// The leader's answer to a forwarded request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderReply {
    Done(Applied),
    /// The receiver is not the leader (nothing was proposed): ask again.
    NotLeader,
}

/// What a joining member learns from the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: u64,
    pub members: Vec<MemberInfo>,
    /// Who answered, and whom it follows: a leader's committed view is authoritative.
    #[serde(default)]
    pub responder: NodeId,
    #[serde(default)]
    pub leader: Option<NodeId>,
    /// Whether `members` comes from a committed (applied) membership entry.
    #[serde(default)]
    pub committed: bool,
}

/// One member as `/v2/members` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: NodeId,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// The identity written to the data dir on first start.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Identity {
    id: NodeId,
    cluster_id: u64,
}

const KEY_IDENTITY: &[u8] = b"identity";

/// A registry member.
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub cluster_id: u64,
    pub raft: Raft,
    pub shared: Arc<Shared>,
    pub peers: PeerClient,
    pub counters: Arc<PeerCounters>,
    pub client_urls: Vec<String>,
    pub max_request_bytes: usize,
    pub start_time: SystemTime,
    token: String,
    reads: mpsc::UnboundedSender<ReadWaiter>,
    writes: mpsc::UnboundedSender<WriteWaiter>,
    forwards: mpsc::UnboundedSender<ForwardWaiter>,
    /// Where openraft, the write batcher, the ReadIndex rounds and the peer listener run.
    raft_thread: Arc<RaftThread>,
    /// Write batches in flight hold these; draining waits until all are back.
    write_permits: Arc<tokio::sync::Semaphore>,
    /// Set when the member is stopping: it proposes nothing new.
    draining: Arc<AtomicBool>,
    /// How far this member's log is fsync'ed: a leader acknowledges an entry only after
    /// its own copy is on disk (it writes it in parallel with replication).
    durable: Arc<Durability>,
    /// What the peer layer tells the election nudger (`raft::election`).
    pub(crate) election_hints: Arc<Hints>,
}

/// Why a forward to the leader failed.
#[derive(Debug, Clone)]
pub enum ForwardError {
    /// Not delivered: safe to try again.
    Unreachable,
    /// Delivered or maybe delivered: the outcome is unknown.
    Failed(String),
}

impl From<PeerError> for ForwardError {
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::Unreachable { .. } => ForwardError::Unreachable,
            other => ForwardError::Failed(other.to_string()),
        }
    }
}

type ForwardWaiter = (
    String,
    LeaderRequest,
    oneshot::Sender<Result<LeaderReply, ForwardError>>,
);

/// Forward batches in flight at once, per member.
const FORWARD_BATCHES_IN_FLIGHT: usize = 4;

/// Sends concurrent writes that a follower received to the leader in one peer request
/// (`/raft/forward-batch`), in arrival order.
async fn forward_batches(peers: PeerClient, mut rx: mpsc::UnboundedReceiver<ForwardWaiter>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(FORWARD_BATCHES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let base = first.0.clone();
        let mut bytes = request_bytes(&first.1);
        let mut batch = vec![first];
        let mut leftover = None;
        while batch.len() < WRITE_BATCH_MAX && bytes < WRITE_BATCH_MAX_BYTES {
            match rx.try_recv() {
                // A leader change mid-batch: the rest goes in the next batch.
                Ok(w) if w.0 != base => {
                    leftover = Some(w);
                    break;
                }
                Ok(w) => {
                    bytes += request_bytes(&w.1);
                    batch.push(w);
                }
                Err(_) => break,
            }
        }
        let batch_peers = peers.clone();
        let send = async move {
            let _permit = permit;
            let (reqs, waiters): (Vec<LeaderRequest>, Vec<_>) =
                batch.into_iter().map(|(_, r, w)| (r, w)).unzip();
            let url = format!("{base}/raft/forward-batch");
            let result: Result<Vec<LeaderReply>, PeerError> =
                batch_peers.call(&url, &reqs, REQUEST_TIMEOUT).await;
            match result {
                Ok(replies) if replies.len() == waiters.len() => {
                    for (w, r) in waiters.into_iter().zip(replies) {
                        let _ = w.send(Ok(r));
                    }
                }
                Ok(_) => {
                    for w in waiters {
                        let _ = w.send(Err(ForwardError::Failed(
                            "leader answered a different number of replies".into(),
                        )));
                    }
                }
                Err(e) => {
                    let e = ForwardError::from(e);
                    for w in waiters {
                        let _ = w.send(Err(e.clone()));
                    }
                }
            }
        };
        tokio::spawn(send);
        if let Some((base, req, tx)) = leftover {
            // Bound for another leader: send it on its own.
            let peers = peers.clone();
            tokio::spawn(async move {
                let url = format!("{base}/raft/forward");
                let r: Result<LeaderReply, PeerError> =
                    peers.call(&url, &req, REQUEST_TIMEOUT).await;
                let _ = tx.send(r.map_err(ForwardError::from));
            });
        }
    }
}

fn request_bytes(req: &LeaderRequest) -> usize {
    match req {
        LeaderRequest::Key(k) => k.val.len() + k.path.len(),
        _ => 64,
    }
}

type WriteWaiter = (KeyRequest, oneshot::Sender<LeaderReply>);

/// Batches in flight at once: while they commit, new writes gather into the next batch.
const WRITE_BATCHES_IN_FLIGHT: usize = 2;
/// A batch stops growing at this many writes or this many value bytes.
const WRITE_BATCH_MAX: usize = 1000;
const WRITE_BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Proposes concurrent writes as one log entry. openraft 0.9 flushes one append before it
/// issues the next, so proposing writes one by one costs an fsync each; a batch costs one.
/// Writes keep their arrival order inside a batch and batches keep theirs in the log.
async fn write_batches(
    raft: Raft,
    permits: Arc<tokio::sync::Semaphore>,
    draining: Arc<AtomicBool>,
    durable: Arc<Durability>,
    mut rx: mpsc::UnboundedReceiver<WriteWaiter>,
) {
    while let Some(first) = rx.recv().await {
        if draining.load(Ordering::SeqCst) {
            let _ = first.1.send(LeaderReply::NotLeader);
            continue;
        }
        // Wait for a slot first, so the batch takes in everything that arrived meanwhile.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.0.val.len();
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH_MAX && bytes < WRITE_BATCH_MAX_BYTES {
            match rx.try_recv() {
                Ok(w) => {
                    bytes += w.0.val.len();
                    batch.push(w);
                }
                Err(_) => break,
            }
        }
        let now = now_ns();
        let (reqs, waiters): (Vec<KeyRequest>, Vec<oneshot::Sender<LeaderReply>>) =
            batch.into_iter().unzip();
        if draining.load(Ordering::SeqCst) {
            // Stopping: propose nothing more; the senders try the next leader.
            for w in waiters {
                let _ = w.send(LeaderReply::NotLeader);
            }
            continue;
        }
        let proposal = Proposal::Batch(
            reqs.into_iter()
                .map(|req| v2::Command::Key { req, now })
                .collect(),
        );
        let raft = raft.clone();
        let durable = durable.clone();
        // Proposed here, in arrival order; only the wait for the commit runs concurrently.
        let pending = raft.client_write_ff(proposal).await;
        tokio::spawn(async move {
            let _permit = permit;
            let replies: Vec<LeaderReply> = match pending {
                Err(e) => vec![LeaderReply::Done(raft_internal(&e.to_string())); waiters.len()],
                Ok(rx) => match rx.await {
                    Ok(Ok(resp)) => {
                        // Committed; acknowledged once the leader's own copy is on disk too.
                        durable.wait(resp.log_id.index).await;
                        resp.data.into_iter().map(LeaderReply::Done).collect()
                    }
                    Ok(Err(ClientWriteError::ForwardToLeader(_))) => {
                        vec![LeaderReply::NotLeader; waiters.len()]
                    }
                    Ok(Err(e)) => {
                        vec![LeaderReply::Done(raft_internal(&e.to_string())); waiters.len()]
                    }
                    Err(e) => vec![LeaderReply::Done(raft_internal(&e.to_string())); waiters.len()],
                },
            };
            for (waiter, reply) in waiters.into_iter().zip(replies) {
                let _ = waiter.send(reply);
            }
        });
    }
}

/// Keeps the log store told whether this member is the only voter of the effective
/// membership (see [`LogStore::sole_voter_flag`]). Server metrics change only with the
/// vote, the role, the leader or the membership, so this wakes rarely.
async fn track_sole_voter(
    mut metrics: tokio::sync::watch::Receiver<openraft::metrics::RaftServerMetrics<NodeId, Member>>,
    id: NodeId,
    sole_voter: Arc<AtomicBool>,
) {
    loop {
        let alone = {
            let m = metrics.borrow_and_update();
            let mut voters = m.membership_config.membership().voter_ids();
            voters.next() == Some(id) && voters.next().is_none()
        };
        sole_voter.store(alone, Ordering::Relaxed);
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Why a linearizable read could not get a read index.
#[derive(Debug, Clone)]
enum ReadIndexError {
    NotLeader,
    Other(String),
}

type ReadWaiter = oneshot::Sender<Result<u64, ReadIndexError>>;

/// Confirms leadership for many `quorum=true` reads at once (etcd batches ReadIndex too).
/// Each round starts after every read it answers arrived, so each read stays linearizable.
async fn read_index_rounds(raft: Raft, mut rx: mpsc::UnboundedReceiver<ReadWaiter>) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let result = match raft.ensure_linearizable().await {
            Ok(read_log_id) => Ok(read_log_id.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(_))) => {
                Err(ReadIndexError::NotLeader)
            }
            Err(e) => Err(ReadIndexError::Other(e.to_string())),
        };
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// Wall-clock time in unix nanoseconds.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Memtable size of the Raft log's column family.
const LOG_MEMTABLE_BYTES: usize = 8 << 20;

pub(crate) fn open_db(path: &Path) -> Result<Arc<DB>, Error> {
    std::fs::create_dir_all(path).map_err(|source| Error::CreateDataDir {
        path: path.display().to_string(),
        source,
    })?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = [CF_LOGS, CF_META, CF_SM].map(|n| {
        let mut cf = Options::default();
        if n == CF_LOGS {
            // Log entries live briefly (purged after each snapshot), so a small memtable is
            // enough; RocksDB's 64 MiB default would hold ~100,000 entries in memory.
            cf.set_write_buffer_size(LOG_MEMTABLE_BYTES);
        }
        ColumnFamilyDescriptor::new(n, cf)
    });
    opts.set_recycle_log_file_num(WAL_RECYCLE_FILES);
    // Write SST files (memtable flushes, compactions) back to disk a MiB at a time, not in
    // one burst at their final fsync, which can hold the WAL fsyncs queued behind it.
    opts.set_bytes_per_sync(SST_BYTES_PER_SYNC);
    let data_dir_err = |source| Error::DataDir {
        path: path.display().to_string(),
        source,
    };
    let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(data_dir_err)?;
    prefill_wal(&db).map_err(data_dir_err)?;
    Ok(Arc::new(db))
}

/// Incremental writeback of SST files.
const SST_BYTES_PER_SYNC: u64 = 1 << 20;
/// WAL files kept for reuse once obsolete.
const WAL_RECYCLE_FILES: usize = 4;
/// Size of the WAL files made at open for reuse: above what the log column family's memtable
/// (the usual reason for a new WAL) holds.
const WAL_PREFILL_BYTES: usize = 12 << 20;

/// Makes the WAL that writes land in a recycled, already written file.
///
/// An fdatasync after an append that grows a file must also commit the new file size to
/// the file system's journal: a second device write. Writes into a file that is already
/// that long need only their data written (on this project's test machine a 512-byte
/// O_DSYNC write took 0.13 ms overwriting a file, 0.22 ms appending to it). RocksDB reuses
/// obsolete WAL files when `recycle_log_file_num` is set, but only files this process made,
/// so a fresh process would append to new files until its own WALs grew old. So at open,
/// twice: a filler of `WAL_PREFILL_BYTES` is put and deleted (no data remains) and every
/// column family is flushed, which starts a new WAL and makes the filled one obsolete. The
/// first filled file becomes the WAL writes go to, the second waits for the next switch.
fn prefill_wal(db: &DB) -> Result<(), rocksdb::Error> {
    let meta = db
        .cf_handle(CF_META)
        .expect("column family created at open");
    let key = b"__wal_prefill";
    let filler = vec![0u8; WAL_PREFILL_BYTES];
    for _ in 0..2 {
        db.put_cf(meta, key, &filler)?;
        db.delete_cf(meta, key)?;
        for name in [CF_LOGS, CF_META, CF_SM] {
            db.flush_cf(db.cf_handle(name).expect("column family created at open"))?;
        }
    }
    db.flush_wal(true)
}

fn raft_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Raft(e.to_string())
}

impl Node {
    /// Opens the data dir, starts Raft, and bootstraps or joins as the config says.
    pub async fn start(config: &Config) -> Result<Arc<Node>, Error> {
        config.validate()?;
        let db = open_db(&config.data_dir.join("db"))?;
        let peers = PeerClient::new();
        let identity = Self::identity(&db, config, &peers).await?;

        let (sm, shared) =
            StateMachine::open(&db, &config.data_dir.join("snap")).map_err(raft_err)?;
        let sm = sm.answer_only_for(identity.id);
        let log = LogStore::open(db.clone(), identity.id).map_err(raft_err)?;
        let durable = log.durability();
        let sole_voter = log.sole_voter_flag();
        let counters = Arc::new(PeerCounters::default());
        // Raft RPCs get a connection pool of their own: its connections are opened from the
        // consensus thread and so are driven there, never by the client runtime.
        let election_hints = Arc::new(Hints::default());
        let network =
            NetworkFactory::new(PeerClient::new(), counters.clone(), election_hints.clone());
        let raft_config = openraft::Config {
            cluster_name: config.initial_cluster_token.clone(),
            heartbeat_interval: config.heartbeat_ms,
            // openraft campaigns only after the leader lease (= election_timeout_max) *plus*
            // a random timeout in [min, max): with E/2 and 3E/4 a follower campaigns 1.25 E to
            // 1.5 E after the last heartbeat (etcd: E to 2 E).
            election_timeout_min: config.election_ms / 2,
            election_timeout_max: config.election_ms * 3 / 4,
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_count),
            max_in_snapshot_log_to_keep: 1000,
            // With `APPEND_BUDGET_BYTES` bounding what one AppendEntries carries, reading more
            // entries than that per call would only decode them again next time.
            max_payload_entries: 128,
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate().map_err(raft_err)?);
        let timing = Timing::from_config(&raft_config);
        // openraft spawns its tasks on the runtime that creates it: the consensus thread.
        let raft_thread = Arc::new(RaftThread::start("raft")?);
        let id = identity.id;
        let raft = raft_thread
            .handle()
            .spawn(async move { Raft::new(id, raft_config, network, log, sm).await })
            .await
            .map_err(raft_err)?
            .map_err(raft_err)?;

        if config.initial_cluster_state == ClusterState::New
            && !raft.is_initialized().await.map_err(raft_err)?
        {
            let members: BTreeMap<NodeId, Member> = config
                .initial_cluster
                .iter()
                .map(|(name, urls)| {
                    (
                        member_id(urls, &config.initial_cluster_token, None),
                        Member {
                            name: name.clone(),
                            peer_urls: urls.clone(),
                        },
                    )
                })
                .collect();
            // Every founding member initialises with the same membership: openraft accepts
            // that, and whichever wins the first election replicates it.
            if let Err(e) = raft.initialize(members).await {
                tracing::debug!(error = %e, "initialize skipped");
            }
        }

        let (reads, read_rx) = mpsc::unbounded_channel();
        let on_raft = raft_thread.handle();
        on_raft.spawn(track_sole_voter(raft.server_metrics(), id, sole_voter));
        let elector = raft.clone();
        on_raft.spawn(nudge_elections(
            raft.server_metrics(),
            timing,
            election_hints.clone(),
            move || {
                let raft = elector.clone();
                async move { raft.trigger().elect().await }
            },
        ));
        on_raft.spawn(read_index_rounds(raft.clone(), read_rx));
        let (writes, write_rx) = mpsc::unbounded_channel();
        let write_permits = Arc::new(tokio::sync::Semaphore::new(WRITE_BATCHES_IN_FLIGHT));
        let draining = Arc::new(AtomicBool::new(false));
        on_raft.spawn(write_batches(
            raft.clone(),
            write_permits.clone(),
            draining.clone(),
            durable.clone(),
            write_rx,
        ));
        let (forwards, forward_rx) = mpsc::unbounded_channel();
        tokio::spawn(forward_batches(peers.clone(), forward_rx));
        Ok(Arc::new(Node {
            id: identity.id,
            name: config.name.clone(),
            cluster_id: identity.cluster_id,
            raft,
            shared,
            peers,
            counters,
            client_urls: config.advertise_client_urls.clone(),
            max_request_bytes: config.max_request_bytes,
            start_time: SystemTime::now(),
            token: config.initial_cluster_token.clone(),
            reads,
            writes,
            forwards,
            raft_thread,
            write_permits,
            draining,
            durable,
            election_hints,
        }))
    }

    /// Reads this member's identity from disk, or establishes it: computed for a new cluster,
    /// learned from the running members when joining an existing one.
    async fn identity(db: &DB, config: &Config, peers: &PeerClient) -> Result<Identity, Error> {
        let cf = db
            .cf_handle(CF_META)
            .expect("column family created at open");
        if let Some(bytes) = db
            .get_cf(cf, KEY_IDENTITY)
            .map_err(|e| Error::Storage(e.to_string()))?
        {
            let id: Identity =
                serde_json::from_slice(&bytes).map_err(|e| Error::Storage(e.to_string()))?;
            return Ok(id);
        }
        let identity = match config.initial_cluster_state {
            ClusterState::New => Identity {
                id: config.member_id(),
                cluster_id: config.cluster_id(),
            },
            ClusterState::Existing => Self::learn_identity(config, peers).await?,
        };
        let bytes = serde_json::to_vec(&identity).expect("identity serialises");
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        db.put_cf_opt(cf, KEY_IDENTITY, bytes, &opts)
            .map_err(|e| Error::Storage(e.to_string()))?;
        Ok(identity)
    }

    async fn learn_identity(config: &Config, peers: &PeerClient) -> Result<Identity, Error> {
        let mut last_err = String::from("no other member in --initial-cluster");
        for (name, urls) in &config.initial_cluster {
            if *name == config.name {
                continue;
            }
            for url in urls {
                let info: Result<ClusterInfo, PeerError> = peers
                    .request(
                        hyper::Method::GET,
                        &format!("{url}/raft/cluster"),
                        None,
                        Vec::new(),
                        Duration::from_secs(3),
                    )
                    .await
                    .and_then(|b| {
                        serde_json::from_slice(&b).map_err(|e| PeerError::Decode {
                            url: url.clone(),
                            reason: e.to_string(),
                        })
                    });
                match info {
                    Ok(info) => {
                        let mine: BTreeSet<&String> = config.advertise_peer_urls.iter().collect();
                        return info
                            .members
                            .iter()
                            .find(|m| m.peer_urls.iter().any(|u| mine.contains(u)))
                            .map(|m| Identity {
                                id: m.id,
                                cluster_id: info.cluster_id,
                            })
                            .ok_or_else(|| {
                                Error::Join(format!(
                                    "no member with peer URL {} in the cluster; add it first with `berth ctl member add {} {}`",
                                    config.advertise_peer_urls.join(","),
                                    config.name,
                                    config.advertise_peer_urls.join(",")
                                ))
                            });
                    }
                    Err(e) => last_err = e.to_string(),
                }
            }
        }
        Err(Error::Join(format!(
            "could not reach any member of --initial-cluster ({last_err})"
        )))
    }

    /// Stops proposing and waits (up to 5 s) until the write batches in flight are answered,
    /// so a member that stops never fails a write it had already taken.
    pub async fn drain(&self) {
        if self.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        let all = WRITE_BATCHES_IN_FLIGHT as u32;
        let drained =
            tokio::time::timeout(Duration::from_secs(5), self.write_permits.acquire_many(all))
                .await;
        if let Ok(Ok(permits)) = drained {
            permits.forget();
        }
    }

    /// Stops Raft and then the consensus thread, so nothing is inside RocksDB at exit.
    pub async fn shutdown(&self) {
        self.drain().await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let raft_thread = self.raft_thread.clone();
        let durable = self.durable.clone();
        let _ = tokio::task::spawn_blocking(move || {
            raft_thread.stop();
            durable.stop();
        })
        .await;
    }

    /// The consensus thread's runtime: the peer listener is served there.
    pub fn raft_runtime(&self) -> &tokio::runtime::Handle {
        self.raft_thread.handle()
    }

    /// The current leader, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// (applied index, term) for X-Raft-Index and X-Raft-Term.
    pub fn raft_position(&self) -> (u64, u64) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.last_applied.map(|l| l.index).unwrap_or(0), m.current_term)
    }

    /// Members as `/v2/members` lists them: the Raft membership joined with the attributes.
    pub fn members(&self) -> Vec<MemberInfo> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let attrs = self.shared.lock().attributes.clone();
        let mut out: Vec<MemberInfo> = membership
            .membership()
            .nodes()
            .map(|(id, node)| {
                let a = attrs.get(id);
                MemberInfo {
                    id: *id,
                    name: a
                        .map(|a| a.name.clone())
                        .unwrap_or_else(|| node.name.clone()),
                    peer_urls: node.peer_urls.clone(),
                    client_urls: a.map(|a| a.client_urls.clone()).unwrap_or_default(),
                }
            })
            .collect();
        out.sort_by_key(|m| m.id);
        out
    }

    /// Runs `req` on the leader, forwarding it there if this member is not the leader, and
    /// waiting out elections up to the request timeout.
    pub async fn submit(&self, req: LeaderRequest) -> Applied {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut metrics = self.raft.metrics();
        loop {
            let leader = metrics.borrow().current_leader;
            if let Some(leader) = leader {
                let reply = if leader == self.id {
                    Ok(self.execute(&req).await)
                } else {
                    self.forward(leader, &req).await
                };
                match reply {
                    Ok(LeaderReply::Done(applied)) => return applied,
                    Ok(LeaderReply::NotLeader) => {}
                    Err(ForwardError::Unreachable) => {}
                    Err(ForwardError::Failed(e)) => {
                        // The request may have been applied; do not retry a non-idempotent write.
                        tracing::warn!(error = %e, "forwarding to the leader failed");
                        return etcd_timeout();
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return etcd_timeout();
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(wait, metrics.changed()).await;
        }
    }

    /// Sends `req` to the leader. Key writes go through the forward batcher, so concurrent
    /// writes share one peer request.
    async fn forward(
        &self,
        leader: NodeId,
        req: &LeaderRequest,
    ) -> Result<LeaderReply, ForwardError> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let Some(node) = membership.membership().get_node(&leader).cloned() else {
            return Ok(LeaderReply::NotLeader);
        };
        let Some(base) = node.peer_urls.first().cloned() else {
            return Ok(LeaderReply::NotLeader);
        };
        if let LeaderRequest::Key(_) = req {
            let (tx, rx) = oneshot::channel();
            if self.forwards.send((base.clone(), req.clone(), tx)).is_ok() {
                return rx
                    .await
                    .unwrap_or_else(|_| Err(ForwardError::Failed("member shutting down".into())));
            }
        }
        self.peers
            .call(&format!("{base}/raft/forward"), req, REQUEST_TIMEOUT)
            .await
            .map_err(ForwardError::from)
    }

    /// Executes a leader request here. Answers `NotLeader` without side effects when this
    /// member turns out not to be the leader.
    pub async fn execute(&self, req: &LeaderRequest) -> LeaderReply {
        if self.draining.load(Ordering::SeqCst) {
            // Nothing is proposed, so the sender can safely ask the next leader.
            return LeaderReply::NotLeader;
        }
        match req {
            LeaderRequest::Key(key) => {
                let (tx, rx) = oneshot::channel();
                if self.writes.send((key.clone(), tx)).is_err() {
                    return LeaderReply::Done(raft_internal("member shutting down"));
                }
                rx.await
                    .unwrap_or_else(|_| LeaderReply::Done(raft_internal("member shutting down")))
            }
            LeaderRequest::QuorumGet(key) => match self.read_index().await {
                Ok(index) => {
                    // Only what is acknowledged (durable here too) is read back.
                    self.durable.wait(index).await;
                    self.shared.wait_applied(index).await;
                    // A follower's quorum read runs here on the consensus thread (the
                    // peer listener's), which must not wait for the state lock.
                    let key = key.clone();
                    let (result, key) = self
                        .shared
                        .with_state_off_thread(move |state| (read(state, &key), key))
                        .await;
                    // A directory's listing can be large: built off this thread too.
                    let applied = match result {
                        Ok(view) if view.is_dir() => {
                            tokio::task::spawn_blocking(move || render_read(Ok(view), &key))
                                .await
                                .unwrap_or_else(|e| raft_internal(&e.to_string()))
                        }
                        other => render_read(other, &key),
                    };
                    LeaderReply::Done(applied)
                }
                Err(ReadIndexError::NotLeader) => LeaderReply::NotLeader,
                Err(ReadIndexError::Other(e)) => LeaderReply::Done(raft_internal(&e)),
            },
            LeaderRequest::Attributes {
                id,
                name,
                client_urls,
            } => {
                self.propose(Proposal::Attributes {
                    id: *id,
                    name: name.clone(),
                    client_urls: client_urls.clone(),
                })
                .await
            }
            LeaderRequest::MemberAdd { peer_urls } => self.member_add(peer_urls).await,
            LeaderRequest::MemberRemove { id } => self.member_remove(*id).await,
            LeaderRequest::MemberUpdate { id, peer_urls } => {
                self.member_update(*id, peer_urls).await
            }
        }
    }

    /// The index a linearizable read must wait for, from a shared ReadIndex round.
    async fn read_index(&self) -> Result<u64, ReadIndexError> {
        let (tx, rx) = oneshot::channel();
        self.reads
            .send(tx)
            .map_err(|_| ReadIndexError::Other("member shutting down".into()))?;
        rx.await
            .map_err(|_| ReadIndexError::Other("member shutting down".into()))?
    }

    async fn propose(&self, proposal: Proposal) -> LeaderReply {
        match self.raft.client_write(proposal).await {
            Ok(resp) => {
                self.durable.wait(resp.log_id.index).await;
                LeaderReply::Done(resp.data.into_iter().next().unwrap_or_default())
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                LeaderReply::NotLeader
            }
            Err(e) => LeaderReply::Done(raft_internal(&e.to_string())),
        }
    }

    /// A local (possibly stale) read, as etcd serves GETs without `quorum=true`.
    pub fn local_get(&self, req: &KeyRequest) -> Applied {
        // The lock is released before the answer is rendered.
        let result = read(&mut self.shared.lock(), req);
        render_read(result, req)
    }

    async fn member_add(&self, peer_urls: &[String]) -> LeaderReply {
        let existing = self.members();
        if existing
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return LeaderReply::Done(member_error(409, "etcdserver: peerURL exists"));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let id = member_id(peer_urls, &self.token, Some(now));
        let member = Member {
            name: String::new(),
            peer_urls: peer_urls.to_vec(),
        };
        // The new member joins as a learner: that commits with the current quorum, so the
        // add answers at once even when the new member is not running yet (as etcd's does).
        // The leader promotes it to a voter once it has caught up (see `promote_learners`).
        match self.raft.add_learner(id, member, false).await {
            Ok(resp) => {
                self.durable.wait(resp.log_id.index).await;
                let info = MemberInfo {
                    id,
                    name: String::new(),
                    peer_urls: peer_urls.to_vec(),
                    client_urls: Vec::new(),
                };
                LeaderReply::Done(Applied {
                    status: 201,
                    etcd_index: 0,
                    body: crate::http::member_json(&info),
                })
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                LeaderReply::NotLeader
            }
            Err(e) => LeaderReply::Done(member_error(500, &format!("etcdserver: {e}"))),
        }
    }

    async fn member_remove(&self, id: NodeId) -> LeaderReply {
        if !self.members().iter().any(|m| m.id == id) {
            return LeaderReply::Done(member_error(404, &format!("Member not found: {id:x}")));
        }
        let mut ids = BTreeSet::new();
        ids.insert(id);
        self.change_membership(ChangeMembers::RemoveVoters(ids))
            .await
    }

    /// Commits a membership change and answers 204, or says why not.
    async fn change_membership(&self, changes: ChangeMembers<NodeId, Member>) -> LeaderReply {
        match self.raft.change_membership(changes, false).await {
            Ok(resp) => {
                self.durable.wait(resp.log_id.index).await;
                LeaderReply::Done(Applied {
                    status: 204,
                    etcd_index: 0,
                    body: Vec::new(),
                })
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                LeaderReply::NotLeader
            }
            Err(e) => LeaderReply::Done(member_error(500, &format!("etcdserver: {e}"))),
        }
    }

    async fn member_update(&self, id: NodeId, peer_urls: &[String]) -> LeaderReply {
        let members = self.members();
        let Some(current) = members.iter().find(|m| m.id == id) else {
            return LeaderReply::Done(member_error(404, &format!("Member not found: {id:x}")));
        };
        if members
            .iter()
            .any(|m| m.id != id && m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return LeaderReply::Done(member_error(409, "etcdserver: peerURL exists"));
        }
        let mut nodes = BTreeMap::new();
        nodes.insert(
            id,
            Member {
                name: current.name.clone(),
                peer_urls: peer_urls.to_vec(),
            },
        );
        self.change_membership(ChangeMembers::SetNodes(nodes)).await
    }

    /// Background duties: publish this member's attributes, expire TTL keys while leader,
    /// and notice removal from the cluster. Returns when `shutdown` fires.
    pub async fn run_background(self: Arc<Self>, shutdown: CancellationToken) {
        let publish = {
            let node = self.clone();
            let shutdown = shutdown.clone();
            async move { node.publish_attributes(shutdown).await }
        };
        let expire = {
            let node = self.clone();
            let shutdown = shutdown.clone();
            async move { node.expire_loop(shutdown).await }
        };
        let promote = {
            let node = self.clone();
            let shutdown = shutdown.clone();
            async move { node.promote_learners(shutdown).await }
        };
        let removal = {
            let node = self.clone();
            let shutdown = shutdown.clone();
            async move { node.stop_when_removed(shutdown).await }
        };
        tokio::join!(publish, expire, promote, removal);
    }

    /// While leader, turns every learner whose log has caught up into a voter.
    async fn promote_learners(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let metrics = self.raft.metrics().borrow().clone();
            if metrics.state != ServerState::Leader {
                continue;
            }
            let membership = metrics.membership_config.membership().clone();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let last = metrics.last_log_index.unwrap_or(0);
            let Some(replication) = metrics.replication.as_ref() else {
                continue;
            };
            let ready: BTreeSet<NodeId> = membership
                .nodes()
                .map(|(id, _)| *id)
                .filter(|id| !voters.contains(id))
                .filter(|id| {
                    replication
                        .get(id)
                        .and_then(|m| m.map(|l| l.index))
                        .is_some_and(|matched| matched + 100 >= last)
                })
                .collect();
            if ready.is_empty() {
                continue;
            }
            tracing::info!(learners = ?ready, "promoting caught-up learners to voters");
            if let Err(e) = self
                .raft
                .change_membership(ChangeMembers::AddVoterIds(ready), true)
                .await
            {
                tracing::warn!(error = %e, "promoting learners failed; will retry");
            }
        }
    }

    async fn publish_attributes(&self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let current = self.shared.lock().attributes.get(&self.id).cloned();
            let wanted = crate::raft::state_machine::Attributes {
                name: self.name.clone(),
                client_urls: self.client_urls.clone(),
            };
            if current.as_ref() == Some(&wanted) {
                return;
            }
            let applied = self
                .submit(LeaderRequest::Attributes {
                    id: self.id,
                    name: wanted.name.clone(),
                    client_urls: wanted.client_urls.clone(),
                })
                .await;
            if applied.status == 0 || applied.status == 200 {
                // Applied: loop once more to confirm the state now holds it.
                backoff = Duration::from_millis(100);
            } else {
                tracing::debug!(
                    status = applied.status,
                    "publishing member attributes failed, retrying"
                );
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// While leader, proposes `Expire` with the leader's clock whenever a key's TTL is due.
    /// Replicas never expire keys on their own clock.
    async fn expire_loop(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !self.is_leader() {
                continue;
            }
            let due = self.shared.lock().store.next_expiration();
            let now = now_ns();
            if matches!(due, Some(t) if t <= now) {
                let _ = self
                    .raft
                    .client_write(Proposal::V2(v2::Command::Expire { now }))
                    .await;
            }
        }
    }

    /// This member's view of the cluster, as `/raft/cluster` serves it.
    pub fn cluster_info(&self) -> ClusterInfo {
        let m = self.raft.metrics().borrow().clone();
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let committed = m
            .membership_config
            .log_id()
            .map(|l| l.index <= applied)
            .unwrap_or(false);
        ClusterInfo {
            cluster_id: self.cluster_id,
            members: self.members(),
            responder: self.id,
            leader: m.current_leader,
            committed,
        }
    }

    /// Stops this member once it has been removed from the cluster, as etcd does.
    ///
    /// A removed member never receives the membership entry that drops it (the leader stops
    /// replicating to it), so once it has lost its leader it asks its peers: only the
    /// leader's committed membership counts as proof.
    async fn stop_when_removed(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A member that applied the membership without itself (e.g. the leader that
            // committed its own removal) knows already.
            let local = self.cluster_info();
            if local.committed && !local.members.iter().any(|m| m.id == self.id) {
                tracing::warn!(
                    "this member has been permanently removed from the cluster; shutting down"
                );
                self.drain().await;
                shutdown.cancel();
                return;
            }
            if self.leader().is_some() {
                continue;
            }
            let peers: Vec<String> = self
                .members()
                .into_iter()
                .filter(|m| m.id != self.id)
                .filter_map(|m| m.peer_urls.first().cloned())
                .collect();
            for base in peers {
                let reply = self
                    .peers
                    .request(
                        hyper::Method::GET,
                        &format!("{base}/raft/cluster"),
                        None,
                        Vec::new(),
                        Duration::from_millis(500),
                    )
                    .await;
                let Ok(bytes) = reply else { continue };
                let Ok(info) = serde_json::from_slice::<ClusterInfo>(&bytes) else {
                    continue;
                };
                let authoritative = info.leader == Some(info.responder) && info.committed;
                if authoritative
                    && info.cluster_id == self.cluster_id
                    && !info.members.iter().any(|m| m.id == self.id)
                {
                    tracing::warn!(
                        "this member has been permanently removed from the cluster; shutting down"
                    );
                    self.drain().await;
                    shutdown.cancel();
                    return;
                }
            }
        }
    }
}

fn etcd_timeout() -> Applied {
    raft_internal("etcdserver: request timed out")
}

fn raft_internal(cause: &str) -> Applied {
    let err = v2::V2Error::new(300, cause.to_string(), 0);
    crate::http::render_error(&err)
}

fn member_error(status: u16, message: &str) -> Applied {
    Applied {
        status,
        etcd_index: 0,
        body: format!(
            "{{\"message\":{}}}\n",
            serde_json::to_string(message).unwrap()
        )
        .into_bytes(),
    }
}

/// Reads `req` from the state, counting the GET in the stats (under the state lock). The view
/// shares the node's subtree with the state: the answer is built from it after the lock is
/// released, so a recursive listing of a large directory does not hold up applying.
fn read(state: &mut AppState, req: &KeyRequest) -> Result<v2::ReadView, v2::V2Error> {
    let result = state.store.read_view(&req.path);
    state.store.count_get(result.is_ok());
    result
}

/// etcd's answer to a read (outside the state lock).
fn render_read(result: Result<v2::ReadView, v2::V2Error>, req: &KeyRequest) -> Applied {
    match result {
        Ok(view) => crate::http::render_event(&view.into_event(req.recursive, now_ns()), false),
        Err(err) => crate::http::render_error(&err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flag the log store reads is set exactly while this member is the only voter:
    /// not when another voter joins (also in a joint configuration), nor when it is a
    /// learner or follower of someone else alone.
    #[tokio::test]
    async fn the_sole_voter_flag_follows_the_effective_membership() {
        use openraft::metrics::RaftServerMetrics;
        use openraft::{Membership, StoredMembership, Vote};
        let metrics = |configs: &[&[NodeId]]| RaftServerMetrics {
            id: 1,
            vote: Vote::new_committed(1, 1),
            state: ServerState::Leader,
            current_leader: Some(1),
            membership_config: Arc::new(StoredMembership::new(
                None,
                Membership::<NodeId, Member>::new(
                    configs
                        .iter()
                        .map(|c| c.iter().copied().collect())
                        .collect(),
                    BTreeSet::from([9]),
                ),
            )),
        };
        let (tx, rx) = tokio::sync::watch::channel(metrics(&[&[2]]));
        let flag = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(track_sole_voter(rx, 1, flag.clone()));
        let expect = |want: bool| {
            let flag = flag.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                while flag.load(Ordering::Relaxed) != want {
                    assert!(Instant::now() < deadline, "flag never became {want}");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        expect(false).await;
        let cases: [(&[&[NodeId]], bool); 5] = [
            (&[&[1]], true),
            (&[&[1], &[1, 2]], false),
            (&[&[1, 2]], false),
            (&[&[1]], true),
            (&[&[2]], false),
        ];
        for (configs, alone) in cases {
            tx.send(metrics(configs)).unwrap();
            expect(alone).await;
        }
        drop(tx);
        task.await.expect("the task ends with its sender");
    }

    /// The WAL files in a RocksDB directory, by number, with their lengths.
    fn wal_files(dir: &Path) -> BTreeMap<u64, u64> {
        std::fs::read_dir(dir)
            .expect("read the db dir")
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let number = name.strip_suffix(".log")?.parse().ok()?;
                Some((number, e.metadata().ok()?.len()))
            })
            .collect()
    }

    #[test]
    fn writes_go_to_a_recycled_wal_file_already_written_to_its_length() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let db = open_db(&path).expect("open RocksDB");
        let wals = wal_files(&path);
        // The current WAL (the newest) is a filled file renamed, and a second one waits.
        let (_, current) = wals.last_key_value().expect("a WAL");
        assert!(*current >= WAL_PREFILL_BYTES as u64, "{wals:?}");
        assert_eq!(
            wals.values()
                .filter(|&&len| len >= WAL_PREFILL_BYTES as u64)
                .count(),
            2,
            "{wals:?}"
        );
        // The filler left no data behind.
        let meta = db.cf_handle(CF_META).unwrap();
        assert_eq!(db.get_cf(meta, b"__wal_prefill").unwrap(), None);
    }

    /// A crash leaves the recycled WAL holding new records followed by the old file's: a
    /// copy of the directory taken while the database is open (what a kill -9 leaves on
    /// disk) must recover every synced write and nothing of the old contents.
    #[test]
    fn a_crash_image_of_a_recycled_wal_recovers_exactly_the_synced_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let db = open_db(&path).expect("open RocksDB");
        let logs = db.cf_handle(CF_LOGS).unwrap();
        let mut sync = rocksdb::WriteOptions::default();
        sync.set_sync(true);
        for i in 0u32..2000 {
            db.put_cf_opt(logs, i.to_be_bytes(), format!("entry {i}"), &sync)
                .unwrap();
        }
        let image = dir.path().join("image");
        std::fs::create_dir(&image).unwrap();
        for e in std::fs::read_dir(&path).unwrap() {
            let e = e.unwrap();
            if e.file_name() != "LOCK" {
                std::fs::copy(e.path(), image.join(e.file_name())).unwrap();
            }
        }
        let copy = open_db(&image).expect("recover the crash image");
        let logs = copy.cf_handle(CF_LOGS).unwrap();
        let mut recovered = 0;
        for (i, kv) in copy
            .iterator_cf(logs, rocksdb::IteratorMode::Start)
            .enumerate()
        {
            let (k, v) = kv.unwrap();
            recovered += 1;
            assert_eq!(&k[..], (i as u32).to_be_bytes());
            assert_eq!(&v[..], format!("entry {i}").as_bytes());
        }
        assert_eq!(recovered, 2000);
        let meta = copy.cf_handle(CF_META).unwrap();
        assert_eq!(copy.get_cf(meta, b"__wal_prefill").unwrap(), None);
    }
}
