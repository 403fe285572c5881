//! `run`: wires the registry watch, the VIP allocator, the UDP threads and the hickory-server
//! TCP listener.

use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use registry::client::Client;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{ConfigError, Error};
use crate::handler::Handler;
use crate::udp::{Access, UdpServer};
use registry::catalog::Shared;

/// Idle time after which a TCP client connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Responses buffered per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 64;

/// Serves DNS on the bound `udp` socket and `tcp` listener until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    udp: UdpSocket,
    tcp: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let addr = udp.local_addr().map_err(|e| Error::Io {
        what: "the UDP socket".into(),
        source: e,
    })?;
    let span = tracing::info_span!("dns", listen = %addr, domain = %config.domain);
    async move {
        let client = Client::new(&config.endpoints).map_err(ConfigError::Endpoints)?;
        let shared = Arc::new(Shared::default());
        let (vip_tx, vip_rx) = mpsc::channel(1024);
        let sync = tokio::spawn(
            registry::catalog::follow(client.clone(), shared.clone(), shutdown.child_token())
                .in_current_span(),
        );
        let alloc = tokio::spawn(
            crate::allocator::run(
                client,
                shared.clone(),
                config.vip_range,
                config.vip_grace,
                vip_rx,
                shutdown.child_token(),
            )
            .instrument(tracing::info_span!("vips", range = %config.vip_range)),
        );
        // UDP: berth's own threads (answer cache); TCP: hickory-server.
        let udp_handler = Arc::new(Handler::new(&config, shared.clone(), Some(vip_tx.clone())));
        let threads = config.udp_threads;
        let udp = UdpServer::start(
            udp,
            udp_handler,
            shared.clone(),
            Access::new(config.allow.clone()),
            threads,
        )
        .map_err(|e| Error::Io {
            what: "the UDP socket".into(),
            source: e,
        })?;
        let handler = Handler::new(&config, shared, Some(vip_tx));
        let mut server = Server::with_access(handler, [], config.allow.clone());
        server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
        tracing::info!(
            upstreams = ?config.upstreams,
            recursion = config.recursion,
            udp_threads = threads,
            "serving DNS (UDP and TCP)"
        );
        let token = server.shutdown_token().clone();
        let stop = shutdown.clone();
        let relay = tokio::spawn(async move {
            stop.cancelled().await;
            token.cancel();
        });
        let result = server.block_until_done().await;
        shutdown.cancel();
        udp.stop().await;
        relay.abort();
        let _ = sync.await;
        let _ = alloc.await;
        result.map_err(|e| Error::Listener(e.to_string()))
    }
    .instrument(span)
    .await
}
