//! Keep-alive HTTP/1.1 connections to instances, by address.
//!
//! A request checks out an idle connection to its instance (or opens one: TCP connect with
//! a timeout, `TCP_NODELAY`, hyper's client handshake with upgrades, the connection driven
//! by its own task), sends on it, and the connection comes back to the pool when the
//! response body has been read to its end ([`PooledBody`]). A connection is never shared by
//! two requests at once, and one that the instance closed is dropped at checkout.
//!
//! This replaces hyper-util's general-purpose pool on the hot path: no URI is built or
//! parsed to find a connection, and the request goes to the instance in origin form.
//!
//! Requests without a body use the proxy's own client ([`crate::upstream`]) and its
//! connections, kept here too (`checkout_raw`/`checkin_raw`): plain sockets, no task each.
//!
//! [`ConnPool::sweep`], called from the control runtime, closes idle connections to
//! addresses that are no longer routed to, past the idle timeout, or closed by the instance.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::http::{BoxError, ProxyBody};
use crate::upstream::RawConn;

/// Idle connections kept per instance.
const MAX_IDLE_PER_ADDR: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

impl Idle {
    /// Still open and not idle too long.
    fn usable(&self) -> bool {
        !self.sender.is_closed() && self.since.elapsed() <= IDLE_TIMEOUT
    }
}

/// Whether an idle raw connection may serve another request: not idle too long, and not
/// closed by the instance (one non-blocking read).
fn raw_usable(conn: &mut RawConn) -> bool {
    conn.since.elapsed() <= IDLE_TIMEOUT && conn.still_open()
}

/// The pool.
pub struct ConnPool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    raw: Mutex<HashMap<SocketAddr, Vec<RawConn>>>,
    connect_timeout: Duration,
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    Io(std::io::Error),
    Timeout(Duration),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Io(e) => write!(f, "{e}"),
            ConnectError::Timeout(d) => write!(f, "connect timed out after {d:?}"),
            ConnectError::Handshake(e) => write!(f, "handshake: {e}"),
        }
    }
}

/// A connection out of the pool, for one request.
pub struct Conn {
    pub sender: SendRequest<ProxyBody>,
    /// Whether it served requests before (so the instance may have closed it meanwhile).
    pub reused: bool,
}

impl ConnPool {
    pub fn new(connect_timeout: Duration) -> Arc<ConnPool> {
        Arc::new(ConnPool {
            idle: Mutex::new(HashMap::new()),
            raw: Mutex::new(HashMap::new()),
            connect_timeout,
        })
    }

    fn pop(&self, addr: SocketAddr) -> Option<Idle> {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&addr)?
            .pop()
    }

    /// An idle connection to `addr` that is still open, or a new one.
    pub async fn checkout(&self, addr: SocketAddr) -> Result<Conn, ConnectError> {
        while let Some(mut idle) = self.pop(addr) {
            if !idle.usable() {
                continue;
            }
            // Ready at once unless the last response's end is still being processed.
            if idle.sender.ready().await.is_ok() {
                return Ok(Conn {
                    sender: idle.sender,
                    reused: true,
                });
            }
        }
        self.connect(addr).await
    }

    /// A connection to `addr` for [`crate::upstream::exchange`]: an idle one that is still
    /// open (`true`), or a new one (`false`).
    pub async fn checkout_raw(&self, addr: SocketAddr) -> Result<(RawConn, bool), ConnectError> {
        loop {
            let idle = self
                .raw
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&addr)
                .and_then(Vec::pop);
            let Some(mut conn) = idle else { break };
            if raw_usable(&mut conn) {
                return Ok((conn, true));
            }
        }
        Ok((self.connect_raw(addr).await?, false))
    }

    /// A new connection to `addr` for [`crate::upstream::exchange`].
    pub async fn connect_raw(&self, addr: SocketAddr) -> Result<RawConn, ConnectError> {
        Ok(RawConn::new(self.open(addr).await?))
    }

    /// Returns a connection whose exchange is complete.
    pub fn checkin_raw(&self, addr: SocketAddr, conn: RawConn) {
        let mut idle = self.raw.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_ADDR {
            list.push(conn);
        }
    }

    /// A TCP connection to `addr` with `TCP_NODELAY`, within the connect timeout.
    async fn open(&self, addr: SocketAddr) -> Result<TcpStream, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(self.connect_timeout))?
            .map_err(ConnectError::Io)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// A new connection to `addr`.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Conn, ConnectError> {
        let stream = self.open(addr).await?;
        // Requests are small: head and body in one buffer, one plain write.
        let (sender, conn) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        let span = tracing::debug_span!("upstream", instance = %addr);
        tokio::spawn(
            async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "connection to the instance ended");
                }
            }
            .instrument(span),
        );
        Ok(Conn {
            sender,
            reused: false,
        })
    }

    /// Closes the idle connections that are past the idle timeout, that the instance has
    /// closed, or whose address `routed` rejects (an instance no longer in any route, e.g.
    /// the old color after a flip): without this, an address that gets no more requests
    /// keeps its sockets, in CLOSE_WAIT once the instance is gone, for as long as the proxy
    /// runs. Returns how many were closed.
    pub fn sweep(&self, routed: impl Fn(SocketAddr) -> bool) -> usize {
        fn split<T>(
            map: &Mutex<HashMap<SocketAddr, Vec<T>>>,
            routed: &impl Fn(SocketAddr) -> bool,
            mut usable: impl FnMut(&mut T) -> bool,
        ) -> Vec<T> {
            let mut gone = Vec::new();
            let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|addr, list| {
                if routed(*addr) {
                    gone.extend(list.extract_if(.., |c| !usable(c)));
                } else {
                    gone.append(list);
                }
                !list.is_empty()
            });
            gone
        }
        // Dropped (closed) after the locks are released.
        let hyper = split(&self.idle, &routed, |c| c.usable());
        let raw = split(&self.raw, &routed, raw_usable);
        hyper.len() + raw.len()
    }

    /// Idle connections held, of both kinds.
    pub fn idle_count(&self) -> usize {
        let hyper = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let raw = self.raw.lock().unwrap_or_else(|e| e.into_inner());
        hyper.values().map(Vec::len).sum::<usize>() + raw.values().map(Vec::len).sum::<usize>()
    }

    /// Returns a connection whose exchange is complete.
    pub fn checkin(&self, addr: SocketAddr, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_ADDR {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// A response body that gives its connection back to the pool once read to the end (or
/// when dropped at its end, e.g. an empty body the server never polls).
pub struct PooledBody {
    body: Incoming,
    slot: Option<(Arc<ConnPool>, SocketAddr, SendRequest<ProxyBody>)>,
}

impl PooledBody {
    pub fn new(
        body: Incoming,
        pool: Arc<ConnPool>,
        addr: SocketAddr,
        sender: SendRequest<ProxyBody>,
    ) -> PooledBody {
        PooledBody {
            body,
            slot: Some((pool, addr, sender)),
        }
    }

    fn release(&mut self) {
        if let Some((pool, addr, sender)) = self.slot.take() {
            pool.checkin(addr, sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.body.is_end_stream() {
                    this.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The connection is broken: never reuse it.
                this.slot = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A listener that accepts and keeps every connection until told to close them.
    async fn instance() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (close, mut closed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut open = Vec::new();
            loop {
                tokio::select! {
                    a = listener.accept() => open.push(a.unwrap().0),
                    _ = &mut closed => return,
                }
            }
        });
        (addr, close)
    }

    #[tokio::test]
    async fn sweep_closes_idle_connections_to_unrouted_or_closed_instances() {
        let pool = ConnPool::new(Duration::from_secs(2));
        let (kept, close_kept) = instance().await;
        let (dropped, _close_dropped) = instance().await;
        for addr in [kept, dropped] {
            for _ in 0..2 {
                let conn = pool.connect_raw(addr).await.unwrap();
                pool.checkin_raw(addr, conn);
            }
        }
        let hyper = pool.connect(dropped).await.unwrap();
        pool.checkin(dropped, hyper.sender);
        assert_eq!(pool.idle_count(), 5);

        // Nothing changed: nothing is closed.
        assert_eq!(pool.sweep(|_| true), 0);
        assert_eq!(pool.idle_count(), 5);

        // `dropped` is no longer routed: its three go, `kept`'s two stay.
        assert_eq!(pool.sweep(|a| a == kept), 3);
        assert_eq!(pool.idle_count(), 2);
        assert!(pool.raw.lock().unwrap().get(&dropped).is_none());

        // The instance closes its side: the next sweep notices.
        close_kept.send(()).unwrap();
        let mut swept = 0;
        for _ in 0..100 {
            swept += pool.sweep(|a| a == kept);
            if swept == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!((swept, pool.idle_count()), (2, 0));
        assert!(pool.raw.lock().unwrap().is_empty());
    }
}
