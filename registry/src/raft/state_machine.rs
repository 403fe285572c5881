//! The replicated state machine: the v2 store and member attributes, applied in log order.
//!
//! The state lives in memory behind [`Shared`], which the HTTP layer reads directly (GETs and
//! watches are served locally, as etcd serves them). Durability comes from the log: after a
//! restart, openraft re-applies committed entries on top of the last snapshot, which is kept
//! in a file of its own ([`SnapshotFiles`]).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::DB;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::codec;
use super::snapshot_file::SnapshotFiles;
use super::{
    Applied, LogId, NodeId, Proposal, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::v2::{self, Store};

/// The column family that held snapshots before they moved to files; a data dir written by
/// such a version still has it, so it is opened, read once and emptied.
pub(crate) const CF_SM: &str = "sm";
const LEGACY_KEY_SNAPSHOT: &[u8] = b"snapshot";

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

impl AppState {
    /// A copy of everything a snapshot holds (no watchers), to encode without the lock. The
    /// tree's paths, names and values are shared with the live state, not copied.
    pub fn snapshot_copy(&self) -> AppState {
        AppState {
            store: self.store.clone_without_watchers(),
            attributes: self.attributes.clone(),
        }
    }
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

    /// Runs `f` on the state from a task that must not wait for the lock on its own thread
    /// (the consensus thread: a recursive read of a large directory or the restore of a
    /// received snapshot can hold the lock for tens of milliseconds, and heartbeats would stop
    /// meanwhile). An uncontended lock is taken at once; a contended one is waited for on
    /// the blocking pool.
    pub async fn with_state_off_thread<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut AppState) -> R + Send + 'static,
    ) -> R {
        {
            // Scoped so that no guard lives across the await below.
            let guard = match self.state.try_lock() {
                Ok(g) => Some(g),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(mut g) = guard {
                return f(&mut g);
            }
        }
        let shared = self.clone();
        tokio::task::spawn_blocking(move || f(&mut shared.lock()))
            .await
            .expect("a read of the state does not panic")
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

/// A snapshot as versions before [`SnapshotFiles`] stored it: one JSON value in `sm`.
#[derive(Serialize, Deserialize)]
struct LegacySnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Moves a snapshot left in RocksDB by an older version into a file, once.
fn migrate_legacy_snapshot(db: &DB, files: &SnapshotFiles) -> Result<(), StorageError> {
    let cf = db.cf_handle(CF_SM).expect("column family created at open");
    let Some(bytes) = db
        .get_cf(cf, LEGACY_KEY_SNAPSHOT)
        .map_err(|e| StorageIOError::read_snapshot(None, &e))?
    else {
        return Ok(());
    };
    if files.load_latest().map_err(read_err)?.is_none() {
        let snap: LegacySnapshot =
            serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        files.save(&snap.meta, &snap.data).map_err(write_err)?;
        tracing::info!(last_log_id = ?snap.meta.last_log_id, "snapshot moved from RocksDB to a file");
    }
    // The file is durable before the old copy goes.
    db.delete_cf(cf, LEGACY_KEY_SNAPSHOT)
        .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
}

fn read_err(e: super::snapshot_file::SnapshotFileError) -> StorageError {
    StorageIOError::read_snapshot(None, &e).into()
}

fn write_err(e: super::snapshot_file::SnapshotFileError) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

/// Runs blocking file work off the consensus thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &io_err(e)))?
}

/// The openraft state machine.
pub struct StateMachine {
    files: SnapshotFiles,
    shared: Arc<Shared>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot_counter: u64,
    /// Set by [`StateMachine::answer_only_for`]: whose entries get their HTTP answers
    /// rendered (`None`: every entry's).
    answers_for: Option<NodeId>,
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

/// Applies one v2 command and, if `answer`, renders its HTTP answer (else an empty one).
fn apply_command(store: &mut Store, cmd: &v2::Command, answer: bool) -> Applied {
    let no_value = match cmd {
        v2::Command::Key { req, .. } => req.no_value_on_success,
        _ => false,
    };
    let result = store.apply(cmd);
    if !answer {
        return Applied::default();
    }
    let index = store.index();
    render(result, no_value, index)
}

impl StateMachine {
    /// Opens the state machine, restoring the newest snapshot in `snap_dir` if any (first
    /// moving one an older version left in `db` there).
    pub fn open(db: &DB, snap_dir: &std::path::Path) -> Result<(Self, Arc<Shared>), StorageError> {
        let files = SnapshotFiles::open(snap_dir).map_err(read_err)?;
        migrate_legacy_snapshot(db, &files)?;
        let (state, last_applied, membership) = match files.load_latest().map_err(read_err)? {
            None => (AppState::default(), None, StoredMembership::default()),
            Some((meta, data)) => {
                let state: AppState = codec::decode(&data)
                    .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
                (state, meta.last_log_id, meta.last_membership)
            }
        };
        let shared = Shared::new(state, last_applied.map(|l| l.index).unwrap_or(0));
        let sm = StateMachine {
            files,
            shared: shared.clone(),
            last_applied,
            membership,
            snapshot_counter: 0,
            answers_for: None,
        };
        Ok((sm, shared))
    }

    /// Renders the HTTP answers only for entries member `id` proposed as leader. Only the
    /// member that proposed an entry has clients waiting for its answers (a follower
    /// forwards writes, and the leader's answers travel back); anywhere else openraft drops
    /// them, so rendering them, under the state lock, was wasted (about 2.5% of a follower's
    /// consensus thread under round-robin writes in the eighth session's profile).
    pub fn answer_only_for(mut self, id: NodeId) -> Self {
        self.answers_for = Some(id);
        self
    }

    /// Are the answers of the entry at `log_id` wanted here?
    fn answers_wanted(&self, log_id: &LogId) -> bool {
        self.answers_for
            .is_none_or(|id| log_id.leader_id.node_id == id)
    }
}

/// Builds snapshots from a consistent copy of the state.
pub struct SnapshotBuilder {
    files: SnapshotFiles,
    /// How long the state was locked to copy it (for the log line).
    copy_ms: u64,
    /// The copy, as of `meta.last_log_id`; encoded by [`SnapshotBuilder::build_snapshot`].
    state: Option<AppState>,
    meta: SnapshotMeta,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let meta = self.meta.clone();
        // Encoding a default in its place would write an empty snapshot under this log id.
        let state = self.state.take().ok_or_else(|| {
            StorageIOError::write_snapshot(
                Some(meta.signature()),
                &io_err("the builder's state was already encoded"),
            )
        })?;
        // openraft runs this in a task of its own while the state machine goes on applying.
        // Encoding, writing and fsync'ing a large snapshot go to the blocking pool: they hold
        // neither the consensus thread nor the state lock.
        let files = self.files.clone();
        let started = std::time::Instant::now();
        let (meta, data, encode_ms) = blocking(move || {
            let data = codec::encode(&state);
            let encode_ms = started.elapsed().as_millis() as u64;
            drop(state);
            files.save(&meta, &data).map_err(write_err)?;
            Ok((meta, data, encode_ms))
        })
        .await?;
        tracing::info!(
            last_log_id = ?meta.last_log_id,
            bytes = data.len(),
            lock_ms = self.copy_ms,
            encode_ms,
            write_ms = (started.elapsed().as_millis() as u64).saturating_sub(encode_ms),
            "snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
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
                let answer = self.answers_wanted(&entry.log_id);
                let applied = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                        Vec::new()
                    }
                    EntryPayload::Normal(Proposal::V2(cmd)) => {
                        vec![apply_command(&mut state.store, &cmd, answer)]
                    }
                    EntryPayload::Normal(Proposal::Batch(cmds)) => cmds
                        .iter()
                        .map(|cmd| apply_command(&mut state.store, cmd, answer))
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
        // Copy the state under the lock, so the snapshot matches `last_applied` exactly
        // (nothing is applied meanwhile: openraft awaits this before it applies more).
        // Directories and the expiry queue are persistent maps (`v2::node::Children`), so the
        // copy is a pointer per map plus the event history: 0-9 ms measured, where
        // encoding here held the lock 58-186 ms for 29-97 MB. openraft encodes the copy in
        // `build_snapshot` while applying goes on; a write meanwhile copies only the few
        // B-tree nodes it changes. On the blocking pool all the same.
        let shared = self.shared.clone();
        let started = std::time::Instant::now();
        let state = tokio::task::spawn_blocking(move || shared.lock().snapshot_copy())
            .await
            .expect("copying the state does not panic");
        let copy_ms = started.elapsed().as_millis() as u64;
        self.snapshot_counter += 1;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.snapshot_counter),
            None => format!("0-0-{}", self.snapshot_counter),
        };
        SnapshotBuilder {
            files: self.files.clone(),
            copy_ms,
            state: Some(state),
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
        // Decoding and fsync'ing a large snapshot must not hold the consensus thread.
        let files = self.files.clone();
        let owned_meta = meta.clone();
        let state = blocking(move || {
            let state: AppState = codec::decode(&data).map_err(|e| {
                StorageIOError::read_snapshot(Some(owned_meta.signature()), &io_err(e))
            })?;
            files.save(&owned_meta, &data).map_err(write_err)?;
            Ok(state)
        })
        .await?;
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
        let files = self.files.clone();
        let latest = blocking(move || files.load_latest().map_err(read_err)).await?;
        Ok(latest.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_off_the_consensus_thread_does_not_stall_that_thread_while_the_lock_is_held() {
        let shared = Shared::new(AppState::default(), 0);
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (ticked_tx, ticked_rx) = std::sync::mpsc::channel::<()>();
        // Another thread holds the lock (as a long read does) until the runtime below
        // has shown it still runs other tasks, or gives up after 10 s.
        let holder = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let _guard = shared.lock();
                held_tx.send(()).unwrap();
                ticked_rx
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .is_ok()
            })
        };
        held_rx.recv().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let index = rt.block_on(async {
            let read = {
                let shared = shared.clone();
                tokio::spawn(async move {
                    shared
                        .with_state_off_thread(|state| state.store.index())
                        .await
                })
            };
            // Runs on the same thread as the waiting read.
            for _ in 0..5 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            ticked_tx.send(()).unwrap();
            read.await.unwrap()
        });
        assert!(
            holder.join().unwrap(),
            "the runtime stopped while the read waited for the lock"
        );
        assert_eq!(index, 0);
    }

    fn put(index: u64, key: &str, value: &str) -> openraft::Entry<TypeConfig> {
        let mut req = v2::KeyRequest::new(v2::Method::Put, key);
        req.val = value.into();
        openraft::Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal::V2(v2::Command::Key { req, now: 0 })),
        }
    }

    fn value_of(state: &AppState, key: &str) -> Option<String> {
        let event = state.store.get(key, false, false, 0).ok()?;
        event.node.and_then(|n| n.value)
    }

    /// A member renders answers only for the entries it proposed; the state changes alike.
    #[tokio::test]
    async fn answers_are_rendered_only_for_the_members_own_entries() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::open_db(&dir.path().join("db")).unwrap();
        let (sm, shared) = StateMachine::open(&db, &dir.path().join("snap")).unwrap();
        let mut sm = sm.answer_only_for(2);
        let mut theirs = put(1, "/a", "1");
        theirs.log_id = LogId::new(openraft::CommittedLeaderId::new(1, 1), 1);
        let mut ours = put(2, "/b", "2");
        ours.log_id = LogId::new(openraft::CommittedLeaderId::new(2, 2), 2);
        let out = sm.apply([theirs, ours]).await.unwrap();
        assert_eq!(
            out[0],
            vec![Applied::default()],
            "member 1's entry: nobody waits here"
        );
        assert_eq!(out[1][0].status, 201);
        assert_eq!(out[1][0].etcd_index, 2);
        let body = String::from_utf8(out[1][0].body.clone()).unwrap();
        assert!(body.contains(r#""key":"/b""#), "{body}");
        let live = shared.lock();
        assert_eq!(value_of(&live, "/a").as_deref(), Some("1"));
        assert_eq!(value_of(&live, "/b").as_deref(), Some("2"));
    }

    /// The snapshot is the state as of the moment openraft asked for it, although openraft
    /// builds it in a task of its own while the state machine goes on applying entries.
    #[tokio::test]
    async fn a_snapshot_holds_the_state_it_was_asked_at_while_later_entries_apply() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::open_db(&dir.path().join("db")).unwrap();
        let (mut sm, shared) = StateMachine::open(&db, &dir.path().join("snap")).unwrap();
        sm.apply([put(1, "/a", "1"), put(2, "/b", "x")])
            .await
            .unwrap();

        let mut builder = sm.get_snapshot_builder().await;
        sm.apply([put(3, "/a", "2"), put(4, "/c", "new")])
            .await
            .unwrap();
        let snapshot = builder.build_snapshot().await.unwrap();

        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(2));
        let data = snapshot.snapshot.into_inner();
        let taken: AppState = codec::decode(&data).unwrap();
        assert_eq!(value_of(&taken, "/a").as_deref(), Some("1"));
        assert_eq!(value_of(&taken, "/b").as_deref(), Some("x"));
        assert_eq!(value_of(&taken, "/c"), None);
        assert_eq!(taken.store.index(), 2);
        // The live state went on.
        {
            let live = shared.lock();
            assert_eq!(value_of(&live, "/a").as_deref(), Some("2"));
            assert_eq!(live.store.index(), 4);
        }
        // A builder encodes its copy once; a second build is an error, not an empty snapshot.
        assert!(builder.build_snapshot().await.is_err());

        // What was written to disk is that same snapshot, and a restart starts from it.
        drop(sm);
        let (sm, shared) = StateMachine::open(&db, &dir.path().join("snap")).unwrap();
        assert_eq!(sm.last_applied.map(|l| l.index), Some(2));
        assert_eq!(value_of(&shared.lock(), "/a").as_deref(), Some("1"));
    }

    /// A data dir from a version that kept the snapshot in RocksDB opens with that snapshot's
    /// state, and the snapshot is then a file and no longer in RocksDB.
    #[test]
    fn a_snapshot_left_in_rocksdb_by_an_older_version_moves_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::node::open_db(&dir.path().join("db")).unwrap();
        let mut state = AppState::default();
        state.attributes.insert(
            9,
            Attributes {
                name: "n9".into(),
                client_urls: vec!["http://127.0.0.1:2379".into()],
            },
        );
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(4, 9), 42)),
            last_membership: StoredMembership::default(),
            snapshot_id: "4-42-1".into(),
        };
        let legacy = LegacySnapshot {
            meta: meta.clone(),
            data: serde_json::to_vec(&state).unwrap(),
        };
        let cf = db.cf_handle(CF_SM).unwrap();
        db.put_cf(
            cf,
            LEGACY_KEY_SNAPSHOT,
            serde_json::to_vec(&legacy).unwrap(),
        )
        .unwrap();

        let snap_dir = dir.path().join("snap");
        let (sm, shared) = StateMachine::open(&db, &snap_dir).unwrap();
        assert_eq!(sm.last_applied, meta.last_log_id);
        assert_eq!(shared.applied_index(), 42);
        assert_eq!(shared.lock().attributes, state.attributes);
        assert!(db.get_cf(cf, LEGACY_KEY_SNAPSHOT).unwrap().is_none());
        let (file_meta, _) = SnapshotFiles::open(&snap_dir)
            .unwrap()
            .load_latest()
            .unwrap()
            .expect("a snapshot file");
        assert_eq!(file_meta, meta);

        // Opening again reads the file.
        drop(sm);
        let (sm, _) = StateMachine::open(&db, &snap_dir).unwrap();
        assert_eq!(sm.last_applied, meta.last_log_id);
    }
}
