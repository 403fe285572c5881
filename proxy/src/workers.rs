//! The HTTP data plane: `--threads` OS threads, each running its own single-threaded tokio
//! runtime with its own keep-alive pool to the instances.
//!
//! One accept loop (on the caller's runtime) hands each new connection to the worker with
//! the fewest open connections; from then on the client connection, the upstream connection
//! and every task of the request live on that one thread. Compared with one work-stealing
//! runtime this saves the cross-thread wake-ups, and tasks run in the order they became
//! ready: a batch of readable clients is read and forwarded before the answers are handled,
//! so the instance and the client are woken once per batch rather than once per request.
//! The routing table, catalog and metrics are shared ([`State`]); the control work (catalog
//! watch, VIP listeners, health checks, admin, TLS) stays on the caller's runtime.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::server::graceful::GracefulShutdown;
use registry::http::serve::{connection, ServeOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::Error;
use crate::http::ip_header_value;
use crate::server::{State, Worker};

/// An accepted client connection on its way to a worker.
type Accepted = (std::net::TcpStream, SocketAddr);

/// The acceptor's view of one worker.
struct Slot {
    tx: mpsc::UnboundedSender<Accepted>,
    open: Arc<AtomicUsize>,
}

/// Index of the live worker (`Some(open connections)`) with the fewest open connections, the
/// first of equals; `None` when every worker has stopped.
fn least_loaded(loads: impl IntoIterator<Item = Option<usize>>) -> Option<usize> {
    loads
        .into_iter()
        .enumerate()
        .filter_map(|(i, n)| Some((n?, i)))
        .min()
        .map(|(_, i)| i)
}

/// Serves HTTP clients of `listener` on `state.config.threads` worker threads until
/// `shutdown`; returns once every worker has finished (open connections get
/// `state.config.drain` to end).
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let options = ServeOptions {
        header_read_timeout: Some(state.config.header_timeout),
        grace: state.config.drain,
        half_close: true,
    };
    let mut workers = Vec::new();
    let mut threads = Vec::new();
    for id in 0..state.config.threads {
        let (tx, rx) = mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Worker)?;
        let (st, op, opts, stop) = (
            Worker {
                state: state.clone(),
                conns: state.new_pool(),
                shard: id,
            },
            open.clone(),
            options.clone(),
            shutdown.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("berth-proxy-{id}"))
            .spawn(move || {
                let span = tracing::info_span!("worker", id);
                runtime.block_on(run_worker(rx, st, op, opts, stop).instrument(span));
            })
            .map_err(Error::Worker)?;
        workers.push(Slot { tx, open });
        threads.push(thread);
    }

    let span = tracing::info_span!("listener", kind = "http", addr = ?listener.local_addr().ok());
    async {
        tracing::info!(threads = workers.len(), "listening");
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = registry::http::serve::accept(&listener) => accepted,
            };
            // The worker registers the socket with its own runtime.
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "cannot hand the connection over");
                    continue;
                }
            };
            let mut conn = Some((stream, peer));
            while let Some(c) = conn.take() {
                let loads = workers
                    .iter()
                    .map(|w| (!w.tx.is_closed()).then(|| w.open.load(Ordering::Relaxed)));
                let Some(w) = least_loaded(loads).map(|i| &workers[i]) else {
                    tracing::error!(%peer, "every HTTP worker thread has stopped; connection dropped");
                    break;
                };
                w.open.fetch_add(1, Ordering::Relaxed);
                if let Err(mpsc::error::SendError(c)) = w.tx.send(c) {
                    // That worker's thread ended (it panicked): try the next one.
                    w.open.fetch_sub(1, Ordering::Relaxed);
                    tracing::error!("an HTTP worker thread has stopped");
                    conn = Some(c);
                }
            }
        }
    }
    .instrument(span)
    .await;
    drop(listener);
    drop(workers);
    // Joining blocks: do it off the runtime.
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    tracing::info!("stopped");
    Ok(())
}

/// A connection counted in its worker's `open` load: uncounted when dropped, so a
/// connection task that panics (or is dropped at shutdown) does not leave the worker looking
/// busier than it is to `least_loaded`.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker: serves the connections it is handed until `shutdown` (or the acceptor goes),
/// then gives open ones the grace period.
async fn run_worker(
    mut rx: mpsc::UnboundedReceiver<Accepted>,
    worker: Worker,
    open: Arc<AtomicUsize>,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let worker = Arc::new(worker);
    let graceful = GracefulShutdown::new();
    // Ends with the runtime, when this worker's thread finishes.
    tokio::spawn(keep_a_timer_armed());
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = rx.recv() => match next {
                Some(a) => a,
                None => break,
            },
        };
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                open.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(error = %e, %peer, "cannot register a client connection");
                continue;
            }
        };
        let handler = {
            let worker = worker.clone();
            let ip = ip_header_value(peer.ip());
            move |req: Request<Incoming>, peer: SocketAddr| {
                crate::http::handle(worker.clone(), req, peer, ip.clone(), false)
            }
        };
        let conn = connection(stream, peer, handler, &options, &graceful);
        let counted = Counted(open.clone());
        tokio::spawn(async move {
            let _counted = counted;
            conn.await;
        });
    }
    let _ = tokio::time::timeout(options.grace, graceful.shutdown()).await;
}

/// How far ahead [`keep_a_timer_armed`] keeps its timer: inside every per-request timeout
/// (`--header-timeout` is whole seconds, at least 1).
const TIMER_ANCHOR: std::time::Duration = std::time::Duration::from_millis(500);

/// Keeps one timer of this runtime always pending, less than [`TIMER_ANCHOR`] away.
///
/// hyper starts a header-read timer each time a keep-alive connection waits for its next
/// request, and tokio wakes the runtime's I/O driver (a write to its eventfd, and an early
/// return from the next `epoll_wait`) whenever a new timer is due before every timer the
/// driver last parked with, which includes the case of no timer at all. Under load that was
/// one `write` syscall per two or three requests (perf trace, 2 workers under wrk). With
/// this timer pending, a header timeout is never the earliest, and registering it costs no
/// syscall; the anchor itself re-arms twice a second.
async fn keep_a_timer_armed() {
    let mut tick = tokio::time::interval(TIMER_ANCHOR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::least_loaded;
    use super::Counted;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_connection_task_that_panics_is_uncounted() {
        let open = Arc::new(AtomicUsize::new(2));
        let counted = Counted(open.clone());
        let task = tokio::spawn(async move {
            let _counted = counted;
            panic!("a handler bug");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(open.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn new_connections_go_to_the_least_loaded_live_worker() {
        assert_eq!(least_loaded([Some(3), Some(1), Some(2)]), Some(1));
        assert_eq!(least_loaded([Some(2), Some(2), Some(2)]), Some(0));
        // A stopped worker is skipped even with the fewest connections.
        assert_eq!(least_loaded([Some(5), None, Some(4)]), Some(2));
        assert_eq!(least_loaded([None, None]), None);
    }
}
