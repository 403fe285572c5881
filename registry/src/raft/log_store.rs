//! The Raft log on RocksDB, with group commit.
//!
//! Column family `logs` maps a big-endian log index to the JSON of the entry; `meta` holds
//! the vote, the committed log id and the last purged log id.
//!
//! Appends do not block openraft: [`LogStore::append`] puts the entries in an in-memory
//! `pending` map (so readers see them at once) and queues them for a dedicated IO thread.
//! That thread writes every append queued meanwhile as one RocksDB batch with `sync = true`
//! (one fsync for many client writes) and only then tells openraft the entries are durable,
//! through the `LogFlushed` callback: an acknowledged write still survives `kill -9`.
//! Truncate and purge go through the same queue and are awaited, so disk order equals call
//! order and a reader never sees a truncated entry once `truncate` has returned.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use super::{LogId, NodeId, StorageError, TypeConfig};

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_META: &str = "meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"last_purged";

type Entry = openraft::Entry<TypeConfig>;

/// Entries handed to the IO thread but not yet on disk, by index.
type Pending = Arc<Mutex<BTreeMap<u64, Entry>>>;

/// One queued append: (index, encoded entry, log id) rows and openraft's callback.
type QueuedAppend = (Vec<(u64, Vec<u8>, LogId)>, LogFlushed<TypeConfig>);

/// Work for the IO thread, done strictly in queue order.
enum IoOp {
    Append(QueuedAppend),
    /// Delete `[from, to)` from the log; `purged` also records the last purged id.
    Delete {
        from: u64,
        to: u64,
        purged: Option<LogId>,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Flush what is queued before this and end the thread.
    Stop,
}

/// The log store; cheap to clone (it shares the database, the pending entries and the queue).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    pending: Pending,
    io: std::sync::mpsc::Sender<IoOp>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// Stops the log's IO thread; the process must not exit while it is inside RocksDB.
#[derive(Clone)]
pub struct LogCloser {
    io: std::sync::mpsc::Sender<IoOp>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl LogCloser {
    /// Flushes queued appends, ends the IO thread and waits for it (blocking).
    pub fn close(&self) {
        let _ = self.io.send(IoOp::Stop);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
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

fn io_error(msg: impl Into<String>) -> StorageError {
    StorageIOError::write_logs(&std::io::Error::other(msg.into())).into()
}

impl LogStore {
    /// Opens the log on `db` and starts its IO thread (it ends with the last clone).
    pub fn new(db: Arc<DB>) -> Self {
        let pending: Pending = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let (thread_db, thread_pending) = (db.clone(), pending.clone());
        let handle = std::thread::Builder::new()
            .name("raft-log-io".into())
            .spawn(move || io_thread(&thread_db, &thread_pending, rx))
            .expect("spawn the log IO thread");
        LogStore {
            db,
            pending,
            io: tx,
            thread: Arc::new(Mutex::new(Some(handle))),
        }
    }

    /// A handle that stops the IO thread at shutdown.
    pub fn closer(&self) -> LogCloser {
        LogCloser {
            io: self.io.clone(),
            thread: self.thread.clone(),
        }
    }

    fn pending(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// Queues a delete of `[from, to)` behind earlier appends and waits until it is on disk.
    async fn delete(&self, from: u64, to: u64, purged: Option<LogId>) -> Result<(), StorageError> {
        let (done, wait) = oneshot::channel();
        self.io
            .send(IoOp::Delete {
                from,
                to,
                purged,
                done,
            })
            .map_err(|_| io_error("the log IO thread has stopped"))?;
        wait.await
            .map_err(|_| io_error("the log IO thread has stopped"))?
            .map_err(io_error)
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
        sync: bool,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write_logs(&e))?;
        let opts = if sync {
            sync_writes()
        } else {
            WriteOptions::default()
        };
        self.db
            .put_cf_opt(self.cf(CF_META), key, bytes, &opts)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        if let Some((_, e)) = self.pending().iter().next_back() {
            return Ok(Some(e.log_id));
        }
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
        let mut out: BTreeMap<u64, Entry> = BTreeMap::new();
        for item in self.db.iterator_cf(self.cf(CF_LOGS), mode) {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = key_index(&key);
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = serde_json::from_slice(&value)
                .map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
            out.insert(index, entry);
        }
        // Entries not yet on disk are newer than anything there at the same index.
        for (i, e) in self.pending().range(range) {
            out.insert(*i, e.clone());
        }
        Ok(out.into_values().collect())
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
        let mut rows = Vec::new();
        {
            let mut pending = self.pending();
            for entry in entries {
                let bytes =
                    serde_json::to_vec(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
                rows.push((entry.log_id.index, bytes, entry.log_id));
                pending.insert(entry.log_id.index, entry);
            }
        }
        self.io
            .send(IoOp::Append((rows, callback)))
            .map_err(|_| io_error("the log IO thread has stopped"))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.pending().split_off(&log_id.index);
        self.delete(log_id.index, u64::MAX, None).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.delete(0, log_id.index + 1, Some(log_id)).await
    }
}

/// The IO thread: takes every op queued so far, writes runs of appends as one synced batch,
/// and runs deletes in between, all in queue order.
fn io_thread(db: &DB, pending: &Pending, rx: std::sync::mpsc::Receiver<IoOp>) {
    while let Ok(first) = rx.recv() {
        let mut appends: Vec<QueuedAppend> = Vec::new();
        let mut stop = false;
        for op in std::iter::once(first).chain(rx.try_iter()) {
            if stop {
                break;
            }
            match op {
                IoOp::Stop => stop = true,
                IoOp::Append(append) => appends.push(append),
                IoOp::Delete {
                    from,
                    to,
                    purged,
                    done,
                } => {
                    flush_appends(db, pending, &mut appends);
                    let mut batch = WriteBatch::default();
                    if let Some(p) = purged {
                        let bytes = serde_json::to_vec(&Some(p)).expect("log ids serialise");
                        batch.put_cf(
                            db.cf_handle(CF_META).expect("column family"),
                            KEY_PURGED,
                            bytes,
                        );
                    }
                    batch.delete_range_cf(
                        db.cf_handle(CF_LOGS).expect("column family"),
                        index_key(from),
                        index_key(to),
                    );
                    let res = db
                        .write_opt(batch, &sync_writes())
                        .map_err(|e| e.to_string());
                    let _ = done.send(res);
                }
            }
        }
        flush_appends(db, pending, &mut appends);
        if stop {
            return;
        }
    }
}

/// Writes all queued appends with one fsync, then reports each of them flushed.
fn flush_appends(db: &DB, pending: &Pending, appends: &mut Vec<QueuedAppend>) {
    if appends.is_empty() {
        return;
    }
    let cf = db
        .cf_handle(CF_LOGS)
        .expect("column family created at open");
    let mut batch = WriteBatch::default();
    for (rows, _) in appends.iter() {
        for (index, bytes, _) in rows {
            batch.put_cf(cf, index_key(*index), bytes);
        }
    }
    let started = std::time::Instant::now();
    let res = db.write_opt(batch, &sync_writes());
    tracing::debug!(
        appends = appends.len(),
        entries = appends.iter().map(|(r, _)| r.len()).sum::<usize>(),
        micros = started.elapsed().as_micros() as u64,
        "log flush"
    );
    if res.is_ok() {
        // Readers find these on disk now. Keep a pending entry that was replaced meanwhile
        // (a truncate and a new append at the same index).
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        for (rows, _) in appends.iter() {
            for (index, _, log_id) in rows {
                if p.get(index).is_some_and(|e| e.log_id == *log_id) {
                    p.remove(index);
                }
            }
        }
    }
    for (_, callback) in appends.drain(..) {
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
    }
}
