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

/// Idle connections kept per instance.
const MAX_IDLE_PER_ADDR: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

/// The pool.
pub struct ConnPool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
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
            if idle.sender.is_closed() || idle.since.elapsed() > IDLE_TIMEOUT {
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

    /// A new connection to `addr`.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Conn, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(self.connect_timeout))?
            .map_err(ConnectError::Io)?;
        let _ = stream.set_nodelay(true);
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
