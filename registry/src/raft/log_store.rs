//! The Raft log on RocksDB.
//!
//! Column family `logs` maps a big-endian log index to the JSON of the entry; `meta` holds
//! the vote, the committed log id and the last purged log id.
//!
//! A follower's append is one RocksDB batch written with `sync = true`; only then is openraft
//! told it is durable (the `LogFlushed` callback), because the leader counts this copy
//! towards the quorum as soon as the follower answers. The leader's append of its *own*
//! entries (this member leads the term they carry) is written without sync and reported at
//! once, so openraft replicates while the disk works; [`Durability`] fsyncs it on its own
//! thread, and the leader acknowledges a client only after that (see [`super::durable`]).
//! A member that is the only voter has nothing to overlap with and syncs its appends inline.
//! The vote, truncation and purge are always written with sync.
//!
//! The committed log id is a hint for a restart (how far to re-apply before a leader says
//! more), so it costs no write of its own: [`LogStore::save_committed`] keeps it in memory
//! and the next write to the log (an append, the vote, a truncation or purge) carries it in
//! the same batch. A restart may therefore find it one write behind, and a member then
//! applies less until the leader repeats the commit index, never more.
//!
//! The newest entries are also kept in memory ([`Tail`]), as written: openraft reads every
//! entry back right after appending it (a replication task, to send it to a follower) and
//! again once it commits (to apply it), and opening a RocksDB iterator for each such read
//! cost more of the consensus thread than the write itself.
//!
//! The store is used only from the consensus thread ([`super::thread`]), which is built to
//! block in these calls; clients are served elsewhere. Batching many client writes into one
//! entry is the leader's write batcher's job (`node.rs`).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;

use super::durable::Durability;
use super::{LogId, NodeId, StorageError, TypeConfig};

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_META: &str = "meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

use super::{codec, Entry};

/// The log store; cheap to clone (it shares the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// This member's id: entries of a term it leads are its own appends.
    id: NodeId,
    /// The vote last saved or read: whom this member follows or whether it leads.
    vote: Option<Vote<NodeId>>,
    durable: Arc<Durability>,
    /// The committed log id openraft last saved, not yet written: the next batch takes it.
    committed: Option<Option<LogId>>,
    /// The newest entries, shared with the log readers (clones of this store).
    tail: Arc<Mutex<Tail>>,
    /// Set while this member is the only voter (see [`LogStore::sole_voter_flag`]).
    sole_voter: Arc<AtomicBool>,
}

/// At most this many of the newest entries, and about this many encoded bytes, stay in
/// memory. Reads of recent entries come right after they are written, so a short tail
/// serves them; older ones (a follower catching up) are read from RocksDB.
const TAIL_MAX_ENTRIES: usize = 256;
const TAIL_MAX_BYTES: usize = 4 * 1024 * 1024;

/// The end of the log in memory: consecutive entries, the last of which is the last entry
/// in RocksDB. Every change to the log's column family goes through it as well.
#[derive(Default)]
pub(crate) struct Tail {
    /// Entries with their encoded size.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Tail {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    /// Entries just written after the current last one.
    fn push(&mut self, written: Vec<(Entry, usize)>) {
        let Some(first) = written.first().map(|(e, _)| e.log_id.index) else {
            return;
        };
        // openraft truncates before it overwrites, so `first` follows the last entry; if it
        // does not (a gap after a snapshot), the tail starts again here.
        self.truncate(first);
        let follows = self
            .entries
            .back()
            .is_none_or(|(e, _)| e.log_id.index + 1 == first);
        if !follows {
            self.clear();
        }
        for (entry, size) in written {
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        // Oldest first, keeping at least the newest entry.
        while self.entries.len() > 1
            && (self.entries.len() > TAIL_MAX_ENTRIES || self.bytes > TAIL_MAX_BYTES)
        {
            self.remove(..1);
        }
    }

    /// The log now ends before `index`.
    fn truncate(&mut self, index: u64) {
        if let Some(keep) = self.position(index) {
            self.remove(keep..);
        }
    }

    /// The log now starts after `index`.
    fn purge(&mut self, index: u64) {
        let upto = self.position(index.saturating_add(1));
        self.remove(..upto.unwrap_or(self.entries.len()));
    }

    /// Where the entry at `index` is or would be (entries are consecutive): `None` past the
    /// end.
    fn position(&self, index: u64) -> Option<usize> {
        let first = self.first_index()?;
        let at = usize::try_from(index.saturating_sub(first)).ok()?;
        (at < self.entries.len()).then_some(at)
    }

    fn remove(&mut self, range: impl RangeBounds<usize>) {
        for (_, size) in self.entries.drain(range) {
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries of `range`, if the tail holds all of the log from its start on; `None`
    /// when part of it may be older than the tail.
    fn get<RB: RangeBounds<u64>>(&self, start: u64, range: &RB) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
        Some(
            self.entries
                .iter()
                .skip(skip)
                .map(|(e, _)| e)
                .take_while(|e| range.contains(&e.log_id.index))
                .cloned()
                .collect(),
        )
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[..8]);
    u64::from_be_bytes(b)
}

fn sync_writes() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

impl LogStore {
    /// Opens the log on `db` for member `id`, and starts the thread that fsyncs the leader's
    /// appends (everything already in the log is fsync'ed first).
    pub fn open(db: Arc<DB>, id: NodeId) -> Result<Self, StorageError> {
        let mut store = LogStore {
            durable: Durability::start(db.clone()).map_err(|e| StorageIOError::write_logs(&e))?,
            db,
            id,
            vote: None,
            committed: None,
            tail: Arc::default(),
            sole_voter: Arc::default(),
        };
        let last = store.last_entry_id()?.map(|l| l.index).unwrap_or(0);
        store.durable.synced(last);
        store.vote = store.get_meta(KEY_VOTE)?;
        Ok(store)
    }

    /// How far this member's log is on disk; a leader waits on it before acknowledging.
    pub fn durability(&self) -> Arc<Durability> {
        self.durable.clone()
    }

    /// The flag to set while this member is the only voter. A sole voter writes its own
    /// appends with sync, since there is no replication to overlap the fsync with and the
    /// hand-off to the `wal-sync` thread costs two wake-ups (one member, one connection:
    /// p50 0.39–0.50 vs 0.46–0.56 ms in interleaved rounds; BENCHMARKS.md). Either way is
    /// durable, so a stale flag costs only time.
    pub fn sole_voter_flag(&self) -> Arc<AtomicBool> {
        self.sole_voter.clone()
    }

    /// Is `log_id` an entry of the term this member leads (its own append as leader)?
    fn leads(&self, log_id: &LogId) -> bool {
        self.vote.as_ref().is_some_and(|v| {
            v.is_committed()
                && v.leader_id().node_id == self.id
                && log_id.leader_id == *v.leader_id()
        })
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// Deletes `[from, to)` from the log, and records `purged` as the last purged id, in one
    /// synced write.
    fn delete(&mut self, from: u64, to: u64, purged: Option<LogId>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        self.take_committed(&mut batch);
        if let Some(p) = purged {
            batch.put_cf(self.cf(CF_META), KEY_PURGED, codec::encode(&p));
        }
        batch.delete_range_cf(self.cf(CF_LOGS), index_key(from), index_key(to));
        self.db.write_opt(batch, &sync_writes()).map_err(|e| {
            // What the log holds now is not known here: read it back from RocksDB.
            self.tail().clear();
            StorageIOError::write_logs(&e).into()
        })
    }

    /// Adds the committed id waiting to be written, if any, to `batch`.
    fn take_committed(&mut self, batch: &mut WriteBatch) {
        if let Some(committed) = self.committed.take() {
            batch.put_cf(self.cf(CF_META), KEY_COMMITTED, codec::encode(&committed));
        }
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let raw = self
            .db
            .get_cf(self.cf(CF_META), key)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        match raw {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes)
                .map(Some)
                .map_err(|e| StorageIOError::read_logs(&e).into()),
        }
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut it = self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry =
                    codec::decode(&value).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => *i + 1,
            Bound::Unbounded => 0,
        };
        if let Some(entries) = self.tail().get(start, &range) {
            return Ok(entries);
        }
        let mode = IteratorMode::From(&index_key(start), Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_LOGS), mode) {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = key_index(&key);
            if !range.contains(&index) {
                break;
            }
            let entry: Entry =
                codec::decode(&value).map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last = self.last_entry_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        self.take_committed(&mut batch);
        batch.put_cf(self.cf(CF_META), KEY_VOTE, codec::encode(vote));
        self.db
            .write_opt(batch, &sync_writes())
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.vote = self.get_meta(KEY_VOTE)?;
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Kept for the next write (see the module doc): a write of its own here cost a system
        // call on every commit, on the leader right before it applies.
        self.committed = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        if let Some(committed) = self.committed {
            return Ok(committed);
        }
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        self.take_committed(&mut batch);
        let cf = self.cf(CF_LOGS);
        let mut last = 0;
        let mut own = true;
        let mut written = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry);
            batch.put_cf(cf, index_key(entry.log_id.index), &bytes);
            own &= self.leads(&entry.log_id);
            last = entry.log_id.index;
            written.push((entry, bytes.len()));
        }
        // A follower's copy is durable before openraft hears of it: the leader counts it
        // towards the quorum as soon as this member answers. The leader's own copy is
        // fsync'ed in parallel with replication, and clients wait for it (`Durability`);
        // a sole voter has nothing to overlap the fsync with, so it syncs here.
        let parallel = own && !self.sole_voter.load(Ordering::Relaxed);
        let opts = if parallel {
            WriteOptions::default()
        } else {
            sync_writes()
        };
        match self.db.write_opt(batch, &opts) {
            Ok(()) => {
                self.tail().push(written);
                callback.log_io_completed(Ok(()));
                if parallel {
                    self.durable.request(last);
                } else {
                    self.durable.synced(last);
                }
            }
            Err(e) => {
                // What RocksDB kept of a failed write is not known here: read it back.
                self.tail().clear();
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())))
            }
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.delete(log_id.index, u64::MAX, None)?;
        self.tail().truncate(log_id.index);
        self.durable.truncated(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.delete(0, log_id.index + 1, Some(log_id))?;
        self.tail().purge(log_id.index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;
    use crate::raft::state_machine::StateMachine;

    /// A log store and state machine on a fresh RocksDB in a temp dir (kept for the test).
    struct Fresh;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Fresh {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().expect("temp dir");
            let db = crate::node::open_db(&dir.path().join("db")).expect("open RocksDB");
            let (sm, _shared) = StateMachine::open(&db, &dir.path().join("snap"))?;
            Ok((dir, LogStore::open(db, 0)?, sm))
        }
    }

    /// The committed id costs no write of its own: it is on disk once the next batch (here the
    /// vote) is, and a restart before that finds the older id, never a newer one.
    #[tokio::test]
    async fn the_committed_id_rides_on_the_next_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::node::open_db(&dir.path().join("db")).expect("open RocksDB");
        let mut store = LogStore::open(db.clone(), 1).expect("open the log");
        let id = |index| LogId::new(openraft::CommittedLeaderId::new(2, 1), index);
        store.save_committed(Some(id(4))).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(id(4)));
        let mut reopened = LogStore::open(db.clone(), 1).expect("reopen");
        assert_eq!(
            reopened.read_committed().await.unwrap(),
            None,
            "not written yet: a restart now re-learns it from the leader"
        );
        store.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        store.save_committed(Some(id(5))).await.unwrap();
        let mut reopened = LogStore::open(db.clone(), 1).expect("reopen");
        assert_eq!(reopened.read_committed().await.unwrap(), Some(id(4)));
        assert_eq!(
            reopened.read_vote().await.unwrap(),
            Some(Vote::new_committed(2, 1))
        );
        store.purge(id(0)).await.unwrap();
        let mut reopened = LogStore::open(db, 1).expect("reopen");
        assert_eq!(reopened.read_committed().await.unwrap(), Some(id(5)));
    }

    /// Only entries of a term this member leads, by a vote a quorum granted, skip the inline
    /// fsync: a follower's copy must be on disk before it answers the leader.
    #[test]
    fn only_the_leaders_own_entries_are_written_without_sync() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = crate::node::open_db(&dir.path().join("db")).expect("open RocksDB");
        let mut store = LogStore::open(db, 7).expect("open the log");
        let entry_of = |term, node| LogId::new(openraft::CommittedLeaderId::new(term, node), 5);
        assert!(!store.leads(&entry_of(2, 7)), "no vote yet");
        store.vote = Some(Vote::new(2, 7));
        assert!(!store.leads(&entry_of(2, 7)), "candidate, not leader yet");
        store.vote = Some(Vote::new_committed(2, 3));
        assert!(!store.leads(&entry_of(2, 3)), "following member 3");
        store.vote = Some(Vote::new_committed(3, 7));
        assert!(store.leads(&entry_of(3, 7)));
        assert!(
            !store.leads(&entry_of(2, 7)),
            "its own entry from an earlier term comes back as a follower's copy"
        );
    }

    fn blank(term: u64, index: u64) -> (Entry, usize) {
        let log_id = LogId::new(openraft::CommittedLeaderId::new(term, 1), index);
        let entry = Entry {
            log_id,
            payload: openraft::EntryPayload::Blank,
        };
        (entry, 10)
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<(u64, u64)>> {
        entries.map(|es| {
            es.iter()
                .map(|e| (e.log_id.leader_id.term, e.log_id.index))
                .collect()
        })
    }

    /// The in-memory tail answers only for ranges that start inside it, follows truncation
    /// and purge, starts again after a gap, and stays within its bounds.
    #[test]
    fn the_tail_mirrors_the_end_of_the_log() {
        let mut tail = Tail::default();
        assert_eq!(indexes(tail.get(1, &(1..))), None, "empty: read RocksDB");
        tail.push((1..=5).map(|i| blank(1, i)).collect());
        assert_eq!(indexes(tail.get(2, &(2..4))), Some(vec![(1, 2), (1, 3)]));
        assert_eq!(
            indexes(tail.get(4, &(4..))),
            Some(vec![(1, 4), (1, 5)]),
            "an open range ends at the last entry, which is the log's"
        );
        assert_eq!(indexes(tail.get(9, &(9..12))), Some(vec![]), "past the end");

        // A follower's conflicting suffix is cut, and the leader's entries take its place.
        tail.truncate(4);
        tail.push(vec![blank(2, 4)]);
        assert_eq!(indexes(tail.get(3, &(3..=9))), Some(vec![(1, 3), (2, 4)]));
        // Overwriting without a truncation first cuts the tail there too.
        tail.push(vec![blank(3, 3)]);
        assert_eq!(
            indexes(tail.get(1, &(1..))),
            Some(vec![(1, 1), (1, 2), (3, 3)])
        );

        tail.purge(2);
        assert_eq!(
            indexes(tail.get(2, &(2..))),
            None,
            "purged: not the tail's to answer"
        );
        assert_eq!(indexes(tail.get(3, &(3..))), Some(vec![(3, 3)]));

        // After a snapshot the log may go on further up: the tail starts again there.
        tail.push(vec![blank(3, 100), blank(3, 101)]);
        assert_eq!(indexes(tail.get(3, &(3..))), None);
        assert_eq!(
            indexes(tail.get(100, &(100..))),
            Some(vec![(3, 100), (3, 101)])
        );

        // Bounded by count, and by bytes (keeping at least the newest entry).
        tail.push(
            (102..102 + TAIL_MAX_ENTRIES as u64)
                .map(|i| blank(3, i))
                .collect(),
        );
        assert_eq!(tail.entries.len(), TAIL_MAX_ENTRIES);
        assert_eq!(tail.first_index(), Some(102));
        let big = |i| {
            let (e, _) = blank(3, i);
            (e, TAIL_MAX_BYTES)
        };
        let next = 102 + TAIL_MAX_ENTRIES as u64;
        tail.push(vec![big(next), big(next + 1)]);
        assert_eq!(tail.first_index(), Some(next + 1));
        assert_eq!(tail.bytes, TAIL_MAX_BYTES);
        tail.clear();
        assert_eq!((tail.entries.len(), tail.bytes), (0, 0));
    }

    /// openraft's own compliance suite for storage implementations: log state, reads,
    /// truncate, purge, vote, membership, apply and snapshot transfer. Its reads come from
    /// the in-memory tail wherever it holds them, so this checks that it agrees with the log.
    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(Fresh).expect("openraft storage suite");
    }
}
