//! Consensus: the openraft type configuration and the three pieces openraft drives.
//!
//! - [`log_store`]: the Raft log, vote, committed and last-purged ids in RocksDB; a
//!   follower's appends are fsync'ed before openraft is told they are durable.
//! - [`codec`]: the binary encoding of log entries, peer messages and snapshot data
//!   (JSON from older versions is still read).
//! - [`durable`]: the thread that fsyncs the leader's own appends in parallel with
//!   replication, and the durable index a leader waits for before it acknowledges a write.
//! - [`state_machine`]: the v2 [`Store`](crate::v2::Store) plus member attributes, applied
//!   in log order; snapshots are persisted so a restart needs the disk alone.
//! - [`election`]: starts an election openraft would leave waiting too long (a stale
//!   "greater log" flag, a round that elected no one).
//! - [`snapshot_file`]: snapshot files in `<data-dir>/snap`, written atomically, checksummed.
//! - [`network`]: the peer RPC client (HTTP/1.1 to each member's peer URL).
//! - [`thread`]: the consensus thread all of the above (and the peer listener) run on.

pub mod codec;
pub mod durable;
pub mod election;
// openraft's StorageError is large; it is the error type the storage traits require.
#[allow(clippy::result_large_err)]
pub mod log_store;
pub mod network;
pub mod snapshot_file;
#[allow(clippy::result_large_err)]
pub mod state_machine;
pub mod thread;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::v2;

/// A member's Raft id; shown in hex like etcd's member ids.
pub type NodeId = u64;

/// What openraft knows of a member: its name and peer URLs (client URLs are published
/// separately, through [`Proposal::Attributes`], as etcd does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub peer_urls: Vec<String>,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.peer_urls.join(","))
    }
}

/// One entry of the replicated log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Proposal {
    /// A v2 keys-API write or expiry, stamped with the leader's clock.
    V2(v2::Command),
    /// Concurrent v2 writes proposed as one entry (one fsync and one replication round for
    /// all of them), applied in order.
    Batch(Vec<v2::Command>),
    /// A member publishes its name and client URLs.
    Attributes {
        id: NodeId,
        name: String,
        client_urls: Vec<String>,
    },
}

/// The outcome of applying one command: the HTTP answer to give the client, rendered by the
/// state machine so that a forwarded write returns byte-for-byte what the leader produced.
/// An entry yields one per command it carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub status: u16,
    /// The store index after the write (X-Etcd-Index).
    pub etcd_index: u64,
    pub body: Vec<u8>,
}

openraft::declare_raft_types!(
    /// berth's openraft configuration.
    pub TypeConfig:
        D = Proposal,
        R = Vec<Applied>,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
