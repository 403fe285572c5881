//! The Raft log on RocksDB.
//!
//! Column family `logs` maps a big-endian log index to the JSON of the entry; `meta` holds
//! the vote, the committed log id and the last purged log id.
//!
//! Every call writes synchronously: [`LogStore::append`] writes the entries as one RocksDB
//! batch with `sync = true` and only then tells openraft they are durable, through the
//! `LogFlushed` callback, so an acknowledged write survives `kill -9` and power loss.
//! openraft 0.9 waits for that callback before it runs its next command anyway, so handing
//! the write to another thread bought no overlap; it cost two thread wake-ups per append
//! (about 0.1 ms each on a small VM). The store is used only from the consensus thread
//! ([`super::thread`]), which is built to block in these calls; clients are served
//! elsewhere. Batching many client writes into one entry (and so one fsync) is the
//! leader's write batcher's job (`node.rs`).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{LogId, NodeId, StorageError, TypeConfig};

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_META: &str = "meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

type Entry = openraft::Entry<TypeConfig>;

/// The log store; cheap to clone (it shares the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
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
    /// Opens the log on `db`.
    pub fn new(db: Arc<DB>) -> Self {
        LogStore { db }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// Deletes `[from, to)` from the log, and records `purged` as the last purged id, in one
    /// synced write.
    fn delete(&self, from: u64, to: u64, purged: Option<LogId>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        if let Some(p) = purged {
            let bytes = serde_json::to_vec(&Some(p)).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(self.cf(CF_META), KEY_PURGED, bytes);
        }
        batch.delete_range_cf(self.cf(CF_LOGS), index_key(from), index_key(to));
        self.db
            .write_opt(batch, &sync_writes())
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let raw = self
            .db
            .get_cf(self.cf(CF_META), key)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        match raw {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StorageIOError::read_logs(&e).into()),
        }
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        opts: &WriteOptions,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write_logs(&e))?;
        self.db
            .put_cf_opt(self.cf(CF_META), key, bytes, opts)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut it = self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry =
                    serde_json::from_slice(&value).map_err(|e| StorageIOError::read_logs(&e))?;
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
        let mode = IteratorMode::From(&index_key(start), Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_LOGS), mode) {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = key_index(&key);
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = serde_json::from_slice(&value)
                .map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
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
        self.put_meta(KEY_VOTE, vote, &sync_writes())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Written to the WAL but not fsync'ed: it survives a killed process, and after a power
        // loss a committed id that lags is re-learned from the leader (the member applies
        // less until then, never more).
        self.put_meta(KEY_COMMITTED, &committed, &WriteOptions::default())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
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
        let cf = self.cf(CF_LOGS);
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(cf, index_key(entry.log_id.index), bytes);
        }
        // Durable before openraft hears of it: it counts this member's copy only then.
        match self.db.write_opt(batch, &sync_writes()) {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.delete(log_id.index, u64::MAX, None)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.delete(0, log_id.index + 1, Some(log_id))
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
            let (sm, _shared) = StateMachine::open(db.clone())?;
            Ok((dir, LogStore::new(db), sm))
        }
    }

    /// openraft's own compliance suite for storage implementations: log state, reads,
    /// truncate, purge, vote, membership, apply and snapshot transfer.
    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(Fresh).expect("openraft storage suite");
    }
}
