//! The accept loop shared by the client and peer listeners.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The response body type of every berth HTTP server.
pub type Body = BoxBody<Bytes, Infallible>;

/// Connection settings of [`serve_with`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Close a connection whose request headers do not arrive within this time (slowloris).
    pub header_read_timeout: Option<Duration>,
    /// How long open connections get to finish after `shutdown`.
    pub grace: Duration,
    /// Answer a client that ends its write side after its request (`nc`, some HTTP/1.0
    /// tools), as HAProxy and nginx do. Off, a read EOF closes the connection at once: what
    /// the registry wants, where a long-poll watcher whose client went away must not linger.
    pub half_close: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: None,
            grace: Duration::from_millis(500),
            half_close: false,
        }
    }
}

/// Serves HTTP/1.1 (and h2c) on `listener` until `shutdown` fires, then gives open
/// connections a moment to finish.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    kind: &'static str,
    handler: F,
    shutdown: CancellationToken,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_with(listener, kind, handler, shutdown, ServeOptions::default()).await
}

/// [`serve`] with any response body type and explicit connection settings.
pub async fn serve_with<F, Fut, B>(
    listener: TcpListener,
    kind: &'static str,
    handler: F,
    shutdown: CancellationToken,
    options: ServeOptions,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let local = listener.local_addr().ok();
    let span = tracing::info_span!("listener", kind, addr = ?local);
    async move {
        tracing::info!("listening");
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = accept(&listener) => accepted,
            };
            tokio::spawn(connection(
                stream,
                peer,
                handler.clone(),
                &options,
                &graceful,
            ));
        }
        drop(listener);
        // Long-poll watches never finish on their own: give the rest a short grace period.
        let _ = tokio::time::timeout(options.grace, graceful.shutdown()).await;
        tracing::info!("stopped");
    }
    .instrument(span)
    .await
}

/// Accept-queue length asked of the kernel for every berth server socket (the kernel caps it
/// at `net.core.somaxconn`, 4096 by default). tokio's `TcpListener::bind` asks for 128, as
/// Rust's standard library does: when thousands of clients connect at once (10,000 long-poll
/// watchers, a proxy behind a burst) the queue overflows, the kernel drops the SYNs
/// (`TcpExtListenOverflows`) and each client waits out a 1 s, then 3 s retransmission.
/// Opening 10,000 watchers took 5.7 s that way, 0.9 s with this queue. Go servers such as
/// etcd ask for `somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a TCP server socket on `addr` (`SO_REUSEADDR`, [`LISTEN_BACKLOG`]). Must be called
/// inside a tokio runtime.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The next connection on `listener`. A failed accept (usually EMFILE: out of descriptors)
/// is logged and retried after 50 ms instead of spinning.
pub async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(a) => return a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One accepted connection (HTTP/1.1 or h2c, with upgrades), served until it closes and
/// watched by `graceful`; the caller spawns it (the proxy's workers count it when it ends).
pub fn connection<F, Fut, B>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    handler: F,
    options: &ServeOptions,
    graceful: &GracefulShutdown,
) -> impl Future<Output = ()> + Send + 'static
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req| {
        let fut = handler(req, peer);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Head and body in one buffer, one plain write: most answers are small, and a vectored
    // write costs the kernel a copy and a check per piece (a large body costs one more copy).
    builder.http1().writev(false).half_close(options.half_close);
    if let Some(t) = options.header_read_timeout {
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(t);
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let conn = graceful.watch(conn.into_owned());
    async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
    .instrument(tracing::debug_span!("conn", %peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// More clients than tokio's default queue of 128 connect to a listener that is not
    /// accepting yet: each handshake completes at once. With the default queue the kernel drops
    /// the 130th SYN and that connect waits a second for the retransmission.
    #[tokio::test]
    async fn listener_queues_a_burst_of_connects() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let n = 300;
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            let c = tokio::time::timeout(
                Duration::from_millis(900),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .unwrap_or_else(|_| {
                panic!("connect {i} waited for a SYN retransmission: the accept queue overflowed")
            })
            .unwrap();
            clients.push(c);
        }
        for _ in 0..n {
            listener.accept().await.unwrap();
        }
    }
}
