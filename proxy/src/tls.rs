//! The TLS listener: rustls with the *ring* provider, ALPN `h2` and `http/1.1`, one
//! certificate chain and key from PEM files. Requests arriving here are forwarded with
//! `X-Forwarded-Proto: https`; everything after the handshake is the same path as plain HTTP.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::ConfigError;
use crate::server::{State, Worker};

/// Loads the certificate chain and key and builds the rustls server configuration.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, ConfigError> {
    let bad = |what: String| ConfigError::Tls(what);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(format!("--tls-cert {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("--tls-cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(bad(format!(
            "--tls-cert {}: no PEM certificate in it",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad(format!("--tls-key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(format!("the certificate and key do not go together: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves HTTPS (HTTP/1.1 and HTTP/2 by ALPN) on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(config);
    let span = tracing::info_span!("listener", kind = "https", addr = ?listener.local_addr().ok());
    async move {
        tracing::info!("listening");
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, peer): (_, SocketAddr) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = registry::http::serve::accept(&listener) => r,
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, state) = (acceptor.clone(), state.clone());
            let watcher = graceful.watcher();
            tokio::spawn(
                async move {
                    let handshake =
                        tokio::time::timeout(state.config.header_timeout, acceptor.accept(stream))
                            .await;
                    let tls = match handshake {
                        Ok(Ok(t)) => t,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                    let ip = crate::http::ip_header_value(peer.ip());
                    let worker = Arc::new(Worker {
                        conns: state.pool.clone(),
                        shard: state.control_shard(),
                        state,
                    });
                    let service = hyper::service::service_fn(move |req| {
                        let fut = crate::http::handle(worker.clone(), req, peer, ip.clone(), true);
                        async move { Ok::<_, std::convert::Infallible>(fut.await) }
                    });
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder
                        .http1()
                        .half_close(true)
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10));
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                .instrument(tracing::debug_span!("conn", %peer)),
            );
        }
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
        tracing::info!("stopped");
    }
    .instrument(span)
    .await
}
