//! The replicated state machine: the v2 store and member attributes, applied in log order.
//!
//! The state lives in memory behind [`Shared`], which the HTTP layer reads directly (GETs and
//! watches are served locally, as etcd serves them). Durability comes from the log: after a
//! restart, openraft re-applies committed entries on top of the last snapshot, which is kept
//! in RocksDB (column family `sm`).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{
    Applied, LogId, NodeId, Proposal, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::v2::{self, Store};

pub(crate) const CF_SM: &str = "sm";
const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// A member's published attributes (etcd's `name` and `clientURLs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    pub name: String,
    pub client_urls: Vec<String>,
}

/// Everything the log determines.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AppState {
    pub store: Store,
    pub attributes: BTreeMap<NodeId, Attributes>,
}

/// State shared between the state machine (writer) and the HTTP layer (readers).
pub struct Shared {
    state: Mutex<AppState>,
    applied: watch::Sender<u64>,
}

impl Shared {
    fn new(state: AppState, applied: u64) -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(state),
            applied: watch::channel(applied).0,
        })
    }

    /// Locks the application state; hold it only for in-memory work.
    pub fn lock(&self) -> MutexGuard<'_, AppState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The index of the last applied log entry.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the log is applied at least up to `index`.
    pub async fn wait_applied(&self, index: u64) {
        let mut rx = self.applied.subscribe();
        // The sender lives as long as `self`, so this only returns once the index is reached.
        let _ = rx.wait_for(|applied| *applied >= index).await;
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Writes `snap` to the `sm` column family, fsync'ed.
fn persist_snapshot(db: &DB, snap: &StoredSnapshot) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(snap).map_err(|e| StorageIOError::write_state_machine(&e))?;
    let cf = db.cf_handle(CF_SM).expect("column family created at open");
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.put_cf_opt(cf, KEY_SNAPSHOT, bytes, &opts)
        .map_err(|e| StorageIOError::write_state_machine(&e).into())
}

/// The openraft state machine.
pub struct StateMachine {
    db: Arc<DB>,
    shared: Arc<Shared>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot_counter: u64,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Renders the HTTP answer for one v2 write.
fn render(
    result: Result<Vec<v2::Event>, v2::V2Error>,
    no_value_on_success: bool,
    index: u64,
) -> Applied {
    match result {
        Ok(events) => match events.into_iter().next() {
            Some(event) => crate::http::render_event(&event, no_value_on_success),
            None => Applied {
                status: 200,
                etcd_index: index,
                body: Vec::new(),
            },
        },
        Err(err) => crate::http::render_error(&err),
    }
}

/// Applies one v2 command and renders its HTTP answer.
fn apply_command(store: &mut Store, cmd: &v2::Command) -> Applied {
    let no_value = match cmd {
        v2::Command::Key { req, .. } => req.no_value_on_success,
        _ => false,
    };
    let result = store.apply(cmd);
    let index = store.index();
    render(result, no_value, index)
}

impl StateMachine {
    /// Opens the state machine, restoring the last snapshot persisted in `db` if any.
    pub fn open(db: Arc<DB>) -> Result<(Self, Arc<Shared>), StorageError> {
        let cf = db.cf_handle(CF_SM).expect("column family created at open");
        let stored = db
            .get_cf(cf, KEY_SNAPSHOT)
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let (state, last_applied, membership) = match stored {
            None => (AppState::default(), None, StoredMembership::default()),
            Some(bytes) => {
                let snap: StoredSnapshot = serde_json::from_slice(&bytes)
                    .map_err(|e| StorageIOError::read_state_machine(&e))?;
                let state: AppState = serde_json::from_slice(&snap.data)
                    .map_err(|e| StorageIOError::read_state_machine(&e))?;
                (
                    state,
                    snap.meta.last_log_id,
                    snap.meta.last_membership.clone(),
                )
            }
        };
        let shared = Shared::new(state, last_applied.map(|l| l.index).unwrap_or(0));
        let sm = StateMachine {
            db,
            shared: shared.clone(),
            last_applied,
            membership,
            snapshot_counter: 0,
        };
        Ok((sm, shared))
    }

    fn load_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let cf = self
            .db
            .cf_handle(CF_SM)
            .expect("column family created at open");
        match self
            .db
            .get_cf(cf, KEY_SNAPSHOT)
            .map_err(|e| StorageIOError::read_state_machine(&e))?
        {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StorageIOError::read_state_machine(&e).into()),
        }
    }
}

/// Builds snapshots from a consistent copy of the state.
pub struct SnapshotBuilder {
    sm_db: Arc<DB>,
    data: Vec<u8>,
    meta: SnapshotMeta,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let stored = StoredSnapshot {
            meta: self.meta.clone(),
            data: std::mem::take(&mut self.data),
        };
        // Encoding and fsync'ing a large snapshot must not hold the consensus thread.
        let db = self.sm_db.clone();
        let stored =
            tokio::task::spawn_blocking(move || persist_snapshot(&db, &stored).map(|()| stored))
                .await
                .map_err(|e| StorageIOError::write_state_machine(&io_err(e)))??;
        tracing::info!(last_log_id = ?stored.meta.last_log_id, bytes = stored.data.len(), "snapshot built");
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Applied>>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let mut last = None;
        {
            let mut state = self.shared.lock();
            for entry in entries {
                last = Some(entry.log_id);
                let applied = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                        Vec::new()
                    }
                    EntryPayload::Normal(Proposal::V2(cmd)) => {
                        vec![apply_command(&mut state.store, &cmd)]
                    }
                    EntryPayload::Normal(Proposal::Batch(cmds)) => cmds
                        .iter()
                        .map(|cmd| apply_command(&mut state.store, cmd))
                        .collect(),
                    EntryPayload::Normal(Proposal::Attributes {
                        id,
                        name,
                        client_urls,
                    }) => {
                        state
                            .attributes
                            .insert(id, Attributes { name, client_urls });
                        vec![Applied::default()]
                    }
                };
                out.push(applied);
            }
        }
        if let Some(last) = last {
            self.last_applied = Some(last);
            self.shared.applied.send_replace(last.index);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Serialise under the lock so the snapshot matches `last_applied` exactly (nothing is
        // applied meanwhile: openraft awaits this before it applies more), on the blocking
        // pool so a large store does not hold the consensus thread.
        let shared = self.shared.clone();
        let data = tokio::task::spawn_blocking(move || {
            let state = shared.lock();
            serde_json::to_vec(&*state).expect("state serialises")
        })
        .await
        .expect("snapshot serialisation does not panic");
        self.snapshot_counter += 1;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.snapshot_counter),
            None => format!("0-0-{}", self.snapshot_counter),
        };
        SnapshotBuilder {
            sm_db: self.db.clone(),
            data,
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: AppState = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &io_err(e)))?;
        persist_snapshot(
            &self.db,
            &StoredSnapshot {
                meta: meta.clone(),
                data,
            },
        )?;
        {
            // Keep live watchers: they go on from the snapshot's state, as in etcd's recovery.
            let mut current = self.shared.lock();
            current.store.restore(state.store);
            current.attributes = state.attributes;
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        if let Some(l) = meta.last_log_id {
            self.shared.applied.send_replace(l.index);
        }
        tracing::info!(last_log_id = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.load_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
