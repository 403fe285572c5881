//! The consensus thread: one OS thread with a current-thread tokio runtime of its own.
//!
//! openraft's tasks (the core, the state-machine worker, one replication task per follower),
//! the peer listener and the leader's write batcher run there, apart from the runtime that
//! serves clients. Two things follow:
//!
//! - A write hops between those tasks a dozen times on its way to commit (batcher, core,
//!   replication, peer connection, state machine, and back). On one thread each hop is a
//!   queue push; spread over a multi-threaded runtime many of them wake a parked worker,
//!   which on a small VM costs tens of microseconds each.
//! - Heartbeats and AppendEntries are answered even while the client runtime is busy with
//!   thousands of connections opening or closing (a watch storm), so such a storm cannot make
//!   the leader time out on a follower.
//!
//! Work that takes long (serialising and persisting a snapshot) goes to the blocking pool,
//! so it never holds this thread.

use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A running consensus thread. Tasks are spawned on it through [`RaftThread::handle`].
pub struct RaftThread {
    handle: Handle,
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl RaftThread {
    /// Starts the thread; `name` is its OS thread name (shown by `top -H`).
    pub fn start(name: &str) -> std::io::Result<RaftThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Tasks still there (idle peer connections, the batcher's loop) are dropped;
                // a blocking snapshot write gets a moment to finish.
                runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            })?;
        Ok(RaftThread {
            handle,
            stop: std::sync::Mutex::new(Some(stop)),
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Where to spawn consensus tasks.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Ends the thread and waits for it (blocking: call it from the blocking pool or a plain
    /// thread). Tasks still on it are dropped. Later calls do nothing.
    pub fn stop(&self) {
        self.signal_stop();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    fn signal_stop(&self) {
        let stop = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    }
}

impl Drop for RaftThread {
    /// A member dropped without [`RaftThread::stop`] (a failed start) still ends the thread;
    /// it is not joined, since the drop may happen inside an async context.
    fn drop(&mut self) {
        self.signal_stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_the_named_thread_and_stop_ends_it() {
        let t = RaftThread::start("raft-test").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        t.handle().spawn(async move {
            let name = std::thread::current().name().map(str::to_string);
            tx.send(name).unwrap();
        });
        assert_eq!(rx.recv().unwrap().as_deref(), Some("raft-test"));

        // A task that never ends does not keep the thread alive past stop().
        let (alive_tx, alive_rx) = std::sync::mpsc::channel::<()>();
        t.handle().spawn(async move {
            let _keep = alive_tx;
            std::future::pending::<()>().await;
        });
        t.stop();
        assert!(
            matches!(
                alive_rx.recv_timeout(std::time::Duration::from_secs(5)),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
            ),
            "the pending task was dropped with the runtime"
        );
        t.stop();
    }
}
