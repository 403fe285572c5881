//! The Raft log on RocksDB.
//!
//! Column family `logs` maps a big-endian log index to the JSON of the entry; `meta` holds
//! the vote, the committed log id and the last purged log id. Appends are written with
//! `sync = true`, so openraft learns an entry is on disk only once it has been fsync'ed:
//! that is what makes an acknowledged write survive `kill -9`.

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

/// The log store; cheap to clone (it shares the database handle).
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
    pub fn new(db: Arc<DB>) -> Self {
        LogStore { db }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let raw = self
            .db
            .get_cf(self.cf(CF_META), key)
            .map_err(|e| StorageIOError::read(&e))?;
        match raw {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StorageIOError::read(&e).into()),
        }
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write(&e))?;
        let opts = if sync {
            sync_writes()
        } else {
            WriteOptions::default()
        };
        self.db
            .put_cf_opt(self.cf(CF_META), key, bytes, &opts)
            .map_err(|e| StorageIOError::write(&e).into())
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
        self.put_meta(KEY_VOTE, vote, true)
            .map_err(|_| StorageIOError::write_vote(&std::io::Error::other("save vote")).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsync'ed: a committed id that lags after a crash is only re-learned from the leader.
        self.put_meta(KEY_COMMITTED, &committed, false)
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
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_LOGS);
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(cf, index_key(entry.log_id.index), bytes);
        }
        let res = self.db.write_opt(batch, &sync_writes());
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let io = std::io::Error::other(e.to_string());
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&io).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(CF_LOGS),
            index_key(log_id.index),
            index_key(u64::MAX),
        );
        self.db
            .write_opt(batch, &sync_writes())
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put_meta(KEY_PURGED, &Some(log_id), true)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOGS), index_key(0), index_key(log_id.index + 1));
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
