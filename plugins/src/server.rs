//! `run`: serves the plugin protocol (HTTP/1.1 on a unix socket), and [`Plugin::handle`],
//! the request path from (method, path, body) to (status, body).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use registry::client::Client;
use serde::Serialize;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{ConfigError, Error};
use crate::ipam::Ipam;
use crate::netdriver::Networks;
use crate::protocol::{self, decode, ActivateResponse, Empty, ErrorBody, Method};
use crate::volume::Volumes;

/// Largest request body accepted (Docker's requests are a few hundred bytes).
pub const MAX_BODY: usize = 1024 * 1024;

/// The three drivers behind one socket.
pub struct Plugin {
    pub ipam: Ipam,
    pub volumes: Volumes,
    pub networks: Arc<Networks>,
}

/// A rendered answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Answer {
    fn ok<T: Serialize>(v: &T) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: serde_json::to_vec(v).expect("responses serialize"),
        }
    }

    fn err(status: StatusCode, body: ErrorBody) -> Answer {
        Answer {
            status,
            body: serde_json::to_vec(&body).expect("errors serialize"),
        }
    }
}

impl Plugin {
    pub fn new(config: &Config) -> Result<Plugin, ConfigError> {
        let client = Client::new(&config.endpoints).map_err(ConfigError::Endpoints)?;
        Ok(Plugin {
            ipam: Ipam::new(
                client.clone(),
                config.default_pool,
                config.pool_size,
                config.node.clone(),
            ),
            networks: Arc::new(
                Networks::new(
                    client.clone(),
                    config.node.clone(),
                    config
                        .socket
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "berth".into()),
                    config.vtep,
                )
                .map_err(|e| ConfigError::Netlink(e.to_string()))?,
            ),
            volumes: Volumes::new(
                client,
                config.node.clone(),
                config.volume_root.clone(),
                config.key_file.clone(),
            ),
        })
    }

    /// Answers one request. Unknown paths get 404 (Docker reads that as "not supported" for
    /// optional methods); methods other than POST 405; failures 500 with `{"Err": ...}`.
    /// A body that does not decode changes nothing.
    pub async fn handle(&self, http_method: &hyper::Method, path: &str, body: &[u8]) -> Answer {
        let Some(method) = Method::from_path(path) else {
            return Answer::err(
                StatusCode::NOT_FOUND,
                ErrorBody::new(format!(
                    "unknown plugin endpoint {path}: berth implements {}",
                    protocol::IMPLEMENTS.join(", ")
                )),
            );
        };
        if http_method != hyper::Method::POST {
            return Answer::err(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorBody::new(format!("{path} takes POST, not {http_method}")),
            );
        }
        let result = self.dispatch(method, body).await;
        match result {
            Ok(a) => a,
            Err(msg) => {
                tracing::warn!(endpoint = path, "refused: {msg}");
                let body = if method.is_ipam() {
                    ErrorBody::ipam(msg)
                } else {
                    ErrorBody::new(msg)
                };
                Answer::err(StatusCode::INTERNAL_SERVER_ERROR, body)
            }
        }
    }

    async fn dispatch(&self, method: Method, body: &[u8]) -> Result<Answer, String> {
        use Method::*;
        let e = |e: &dyn std::fmt::Display| e.to_string();
        Ok(match method {
            Activate => Answer::ok(&ActivateResponse::default()),
            // --- IPAM ---
            IpamCapabilities => Answer::ok(&self.ipam.capabilities()),
            IpamAddressSpaces => Answer::ok(&self.ipam.address_spaces()),
            IpamRequestPool => {
                let r = decode(body)?;
                Answer::ok(&self.ipam.request_pool(&r).await.map_err(|x| e(&x))?)
            }
            IpamReleasePool => {
                let r = decode(body)?;
                self.ipam.release_pool(&r).await.map_err(|x| e(&x))?;
                Answer::ok(&Empty {})
            }
            IpamRequestAddress => {
                let r = decode(body)?;
                Answer::ok(&self.ipam.request_address(&r).await.map_err(|x| e(&x))?)
            }
            IpamReleaseAddress => {
                let r = decode(body)?;
                self.ipam.release_address(&r).await.map_err(|x| e(&x))?;
                Answer::ok(&Empty {})
            }
            // --- volumes ---
            VolumeCreate => {
                let r = decode(body)?;
                self.volumes.create(&r).await.map_err(|x| e(&x))?;
                Answer::ok(&Empty {})
            }
            VolumeRemove => {
                let r = decode(body)?;
                self.volumes.remove(&r).await.map_err(|x| e(&x))?;
                Answer::ok(&Empty {})
            }
            VolumeMount => {
                let r = decode(body)?;
                Answer::ok(&self.volumes.mount(&r).await.map_err(|x| e(&x))?)
            }
            VolumeUnmount => {
                let r = decode(body)?;
                self.volumes.unmount(&r).await.map_err(|x| e(&x))?;
                Answer::ok(&Empty {})
            }
            VolumePath => {
                let r = decode(body)?;
                Answer::ok(&self.volumes.path(&r).await.map_err(|x| e(&x))?)
            }
            VolumeGet => {
                let r = decode(body)?;
                Answer::ok(&self.volumes.get(&r).await.map_err(|x| e(&x))?)
            }
            VolumeList => {
                decode::<Empty>(body)?;
                Answer::ok(&self.volumes.list().await.map_err(|x| e(&x))?)
            }
            VolumeCapabilities => Answer::ok(&self.volumes.capabilities()),
            // --- network ---
            NetCapabilities => Answer::ok(&protocol::NetworkCapabilities {
                // The state is kept in the registry by berth itself; each host's Docker
                // sees a local network that berth creates on every host.
                scope: "local".into(),
                connectivity_scope: "global".into(),
            }),
            NetDiscoverNew | NetDiscoverDelete => {
                decode::<protocol::DiscoveryNotification>(body)?;
                Answer::ok(&Empty {})
            }
            NetCreateNetwork => {
                let r = decode(body)?;
                self.networks.create_network(&r).await.map_err(|x| e(&x))?;
                Answer::ok(&Empty {})
            }
            NetDeleteNetwork => {
                let r: protocol::NetworkIdRequest = decode(body)?;
                self.networks
                    .delete_network(&r.network_id)
                    .await
                    .map_err(|x| e(&x))?;
                Answer::ok(&Empty {})
            }
            NetAllocateNetwork => {
                // Only Swarm managers call this; berth needs no cluster-wide allocation
                // beyond what CreateNetwork does.
                decode::<protocol::AllocateNetworkRequest>(body)?;
                Answer::ok(&protocol::AllocateNetworkResponse::default())
            }
            NetFreeNetwork => {
                decode::<protocol::NetworkIdRequest>(body)?;
                Answer::ok(&Empty {})
            }
            NetCreateEndpoint => {
                let r = decode(body)?;
                Answer::ok(&self.networks.create_endpoint(&r).await.map_err(|x| e(&x))?)
            }
            NetEndpointOperInfo => {
                let r = decode(body)?;
                Answer::ok(&self.networks.endpoint_info(&r).await.map_err(|x| e(&x))?)
            }
            NetDeleteEndpoint => {
                let r = decode(body)?;
                self.networks.delete_endpoint(&r).await.map_err(|x| e(&x))?;
                Answer::ok(&Empty {})
            }
            NetJoin => {
                let r = decode(body)?;
                Answer::ok(&self.networks.join(&r).await.map_err(|x| e(&x))?)
            }
            NetLeave => {
                let r = decode(body)?;
                self.networks.leave(&r).await.map_err(|x| e(&x))?;
                Answer::ok(&Empty {})
            }
            NetProgramExternalConnectivity => {
                // No port publishing on overlay networks (as with Swarm's overlay without
                // the ingress network): nothing to program.
                decode::<protocol::ProgramExternalConnectivityRequest>(body)?;
                Answer::ok(&Empty {})
            }
            NetRevokeExternalConnectivity => {
                decode::<protocol::EndpointRequest>(body)?;
                Answer::ok(&Empty {})
            }
        })
    }
}

/// Binds the plugin socket: creates its directory, replaces a stale socket file (one that
/// nobody answers on), refuses when another process serves it.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    let io = |what: String| move |source| Error::Io { what, source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(Error::Io {
                what: format!("{}", path.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another plugin is serving on this socket",
                ),
            });
        }
        std::fs::remove_file(path).map_err(io(format!("removing stale {}", path.display())))?;
    }
    UnixListener::bind(path).map_err(io(format!("binding {}", path.display())))
}

async fn respond(plugin: Arc<Plugin>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let answer = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => plugin.handle(&method, &path, &body.to_bytes()).await,
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            Answer::err(
                if too_large {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                },
                ErrorBody::new(if too_large {
                    format!("request body larger than {MAX_BODY} bytes")
                } else {
                    format!("cannot read the request body: {e}")
                }),
            )
        }
    };
    tracing::debug!(endpoint = %path, status = answer.status.as_u16(), "answered");
    Response::builder()
        .status(answer.status)
        .header(CONTENT_TYPE, protocol::CONTENT_TYPE)
        .body(Full::new(Bytes::from(answer.body)))
        .expect("valid response")
}

/// Serves the plugin protocol on `listener` until `shutdown` is cancelled; then removes the
/// socket file (mounted volumes stay for their containers, see [`Volumes::keep_on_shutdown`]).
pub async fn run(
    config: Config,
    listener: UnixListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let socket: Option<PathBuf> = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let span = tracing::info_span!("plugin", socket = ?socket, node = %config.node);
    async move {
        let plugin = Arc::new(Plugin::new(&config)?);
        let docker = match &config.docker {
            Some(path) => match bollard::Docker::connect_with_unix(
                &path.to_string_lossy(),
                60,
                bollard::API_DEFAULT_VERSION,
            ) {
                Ok(d) => match d.negotiate_version().await {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!(socket = %path.display(), error = %e, "no Docker: networks are not replicated into it");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(socket = %path.display(), error = %e, "no Docker: networks are not replicated into it");
                    None
                }
            },
            None => None,
        };
        let follow = tokio::spawn(plugin.networks.clone().follow(docker, shutdown.child_token()));
        tracing::info!(
            implements = ?protocol::IMPLEMENTS,
            volume_root = %config.volume_root.display(),
            vtep = ?config.vtep,
            "serving the Docker plugin protocol"
        );
        let graceful = GracefulShutdown::new();
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let plugin = plugin.clone();
            let service = hyper::service::service_fn(move |req| {
                let plugin = plugin.clone();
                async move { Ok::<_, Infallible>(respond(plugin, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(
                async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                .in_current_span(),
            );
        }
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
        follow.abort();
        plugin.volumes.keep_on_shutdown().await;
        if let Some(p) = &socket {
            let _ = std::fs::remove_file(p);
        }
        tracing::info!("stopped");
        Ok(())
    }
    .instrument(span)
    .await
}
