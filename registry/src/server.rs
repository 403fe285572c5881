//! Running a registry member: bound listeners in, a shutdown signal to stop.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::Error;
use crate::node::Node;

/// Runs one registry member until `shutdown` fires.
///
/// The listeners are bound by the caller (tests bind port 0); `config` says what to advertise.
pub async fn run(
    config: Config,
    client_listeners: Vec<TcpListener>,
    peer_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // The peer listener is already bound, so peers' connections wait in its backlog until
    // the node is ready to answer them; nobody sees a half-started member.
    let node = Node::start(&config).await?;
    tracing::info!(id = %format!("{:x}", node.id), name = %node.name, cluster = %format!("{:x}", node.cluster_id), "registry member started");
    // Peer traffic is served on the consensus thread, apart from client connections: the
    // listener moves to that thread's runtime, and so does every connection it accepts.
    let peer_listener = peer_listener.into_std()?;
    let peer_task = {
        let node = node.clone();
        let shutdown = shutdown.clone();
        let on_raft = node.raft_runtime().clone();
        on_raft.spawn(async move {
            let peer_listener = match TcpListener::from_std(peer_listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot serve the peer listener; stopping");
                    shutdown.cancel();
                    return;
                }
            };
            crate::http::serve(
                peer_listener,
                "peer",
                move |req, addr| crate::peer::handle(node.clone(), req, addr),
                shutdown,
            )
            .await
        })
    };

    let mut tasks = vec![peer_task];
    for listener in client_listeners {
        let node = node.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            crate::http::serve(
                listener,
                "client",
                move |req, addr| crate::http::handle(node.clone(), req, addr),
                shutdown,
            )
            .await
        }));
    }
    let background = tokio::spawn(node.clone().run_background(shutdown.clone()));

    shutdown.cancelled().await;
    for t in tasks {
        let _ = t.await;
    }
    let _ = background.await;
    node.shutdown().await;
    tracing::info!("registry member stopped");
    Ok(())
}
