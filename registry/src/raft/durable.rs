//! The leader's own log fsync, taken off the consensus thread.
//!
//! Raft lets a leader write its log entries to its disk in parallel with sending them to the
//! followers (Raft thesis §10.2.1; etcd's leader does the same): the entries commit once a
//! majority holds them, and the followers' copies are fsync'ed before they answer. openraft
//! 0.9 runs nothing else while an append is outstanding, so the leader's log store writes
//! its own entries to RocksDB's WAL *without* waiting for the disk, tells openraft at once,
//! and asks this module's thread for the fsync. Meanwhile openraft replicates.
//!
//! What a client is told stays as durable as before: a write is acknowledged only after it
//! committed **and** [`Durability::wait`] saw the leader's copy on disk, so every
//! acknowledged write is fsync'ed on the leader and on at least one more member of a
//! three-member cluster (a majority in general). Until then it is visible to reads on the
//! leader, as in etcd; a power cut of the leader inside that window (one fsync) can
//! lose such an unacknowledged write. A killed process loses nothing: the WAL write is in
//! the kernel's page cache before openraft hears of it.
//!
//! One fsync covers every entry written before it started, so appends that arrive while the
//! disk is busy share the next one (group commit).

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rocksdb::DB;
use tokio::sync::watch;

/// The highest log index known to be on this member's disk, and the thread that moves it.
pub struct Durability {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    state: Mutex<SyncState>,
    wake: Condvar,
    /// Highest log index fsync'ed. Only grows.
    durable: watch::Sender<u64>,
}

#[derive(Default)]
struct SyncState {
    /// Highest log index written and waiting for an fsync.
    requested: u64,
    /// Bumped by every truncation: an fsync that began before one must not mark the
    /// replaced indexes durable.
    epoch: u64,
    stop: bool,
}

impl Durability {
    /// Syncs what a previous run left in the WAL (a killed process's writes may still be only
    /// in the page cache), then starts the sync thread (named `wal-sync`). The caller marks
    /// the log it found as durable with [`Durability::synced`].
    pub fn start(db: Arc<DB>) -> Result<Arc<Durability>, rocksdb::Error> {
        db.flush_wal(true)?;
        let inner = Arc::new(Inner {
            state: Mutex::new(SyncState::default()),
            wake: Condvar::new(),
            durable: watch::channel(0).0,
        });
        let thread = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("wal-sync".into())
                .spawn(move || inner.run(&db))
                .expect("spawn the wal-sync thread")
        };
        Ok(Arc::new(Durability {
            inner,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Entries up to `index` were written without sync: fsync them soon.
    pub fn request(&self, index: u64) {
        let mut state = self.inner.lock();
        if index > state.requested {
            state.requested = index;
            self.inner.wake.notify_one();
        }
    }

    /// Entries up to `index` were written with sync: they are durable already.
    pub fn synced(&self, index: u64) {
        self.inner.advance(index);
    }

    /// The log was cut back to end before `index` (a follower's conflicting suffix): the
    /// indexes from `index` on will hold other entries, not yet on disk.
    pub fn truncated(&self, index: u64) {
        let keep = index.saturating_sub(1);
        let mut state = self.inner.lock();
        state.epoch += 1;
        state.requested = state.requested.min(keep);
        self.inner.durable.send_if_modified(|d| {
            let cut = *d > keep;
            if cut {
                *d = keep;
            }
            cut
        });
    }

    /// The highest log index on disk.
    pub fn index(&self) -> u64 {
        *self.inner.durable.borrow()
    }

    /// Returns once the entries up to `index` are on disk.
    pub async fn wait(&self, index: u64) {
        let mut rx = self.inner.durable.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we borrow it.
        let _ = rx.wait_for(|d| *d >= index).await;
    }

    /// Stops the thread after its current fsync and waits for it. Idempotent.
    pub fn stop(&self) {
        self.inner.lock().stop = true;
        self.inner.wake.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Durability {
    fn drop(&mut self) {
        // The thread holds the database open; a member restarted in the same process must
        // find it closed.
        self.stop();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn advance(&self, index: u64) {
        self.durable.send_if_modified(|d| {
            let grew = index > *d;
            if grew {
                *d = index;
            }
            grew
        });
    }

    fn run(&self, db: &DB) {
        loop {
            let (target, epoch) = {
                let mut state = self.lock();
                while !state.stop && state.requested <= *self.durable.borrow() {
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                if state.stop {
                    return;
                }
                (state.requested, state.epoch)
            };
            // Covers every write that finished before this call, `target` included.
            match db.flush_wal(true) {
                Ok(()) => {
                    // Under the lock, so a truncation cannot slip in between check and mark.
                    let state = self.lock();
                    if state.epoch == epoch {
                        self.advance(target);
                    }
                }
                Err(e) => {
                    // Nothing is acknowledged until this works (etcd would stop here).
                    tracing::error!(error = %e, "fsync of the Raft log failed; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocksdb::{Options, WriteOptions};

    fn db() -> (tempfile::TempDir, Arc<DB>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, dir.path()).expect("open RocksDB");
        (dir, Arc::new(db))
    }

    /// A task waiting until `index` is durable.
    fn waiting(d: &Arc<Durability>, index: u64) -> tokio::task::JoinHandle<()> {
        let d = d.clone();
        tokio::spawn(async move { d.wait(index).await })
    }

    async fn finishes(waiter: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the fsync finished within 5 s")
            .expect("the waiter did not panic");
    }

    #[tokio::test]
    async fn requested_indexes_become_durable_and_waiters_wake() {
        let (_dir, db) = db();
        let d = Durability::start(db.clone()).unwrap();
        d.synced(3);
        assert_eq!(d.index(), 3);
        d.wait(3).await; // already durable: returns at once
        db.put_opt(b"k", b"v", &WriteOptions::default()).unwrap();
        let waiter = waiting(&d, 7);
        d.request(7);
        finishes(waiter).await;
        assert_eq!(d.index(), 7);
        // A synced write moves the mark without the thread; it never goes back.
        d.synced(9);
        d.synced(8);
        assert_eq!(d.index(), 9);
        d.request(5);
        assert_eq!(d.index(), 9);
    }

    /// A follower that had index 10 on disk and then lost its suffix from 6 on must not count
    /// 6..=10 as durable when it later writes other entries there.
    #[tokio::test]
    async fn truncation_lowers_the_mark_until_the_new_entries_are_synced() {
        let (_dir, db) = db();
        let d = Durability::start(db.clone()).unwrap();
        d.synced(10);
        d.truncated(6);
        assert_eq!(d.index(), 5);
        let waiter = waiting(&d, 8);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "index 8 is not on disk after the truncation"
        );
        d.request(8);
        finishes(waiter).await;
        assert_eq!(d.index(), 8);
    }

    #[test]
    fn stop_joins_the_thread_and_releases_the_database() {
        let (dir, db) = db();
        let d = Durability::start(db.clone()).unwrap();
        d.request(1);
        drop(db);
        drop(d);
        // The thread held the last other reference: the RocksDB lock is free again.
        let reopened = DB::open(&Options::default(), dir.path());
        assert!(reopened.is_ok(), "{:?}", reopened.err());
    }
}
