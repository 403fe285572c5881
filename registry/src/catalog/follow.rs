//! Keeps the catalog in step with the registry: a recursive read of `/services` and of
//! `/_berth`, then a recursive watch of each from the index after the read, resuming from the
//! last event seen. An index that fell out of the registry's history (etcd error 401) means
//! reading everything again. While the registry is unreachable the catalog is left as it is
//! (readers keep serving from it) and the connection is retried with backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::client::{codes, Client, ClientError, GetOptions, Node, WatchOptions};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Shared;

/// Longest a single long-poll waits before it is issued again (guards against a registry
/// that stopped answering without closing the connection).
const POLL_LIMIT: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug)]
enum Part {
    Services,
    Berth,
}

impl Part {
    fn prefix(self) -> &'static str {
        match self {
            Part::Services => "/services",
            Part::Berth => "/_berth",
        }
    }
}

/// Follows the registry until `shutdown`.
pub async fn follow(client: Client, shared: Arc<Shared>, shutdown: CancellationToken) {
    let loaded = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
    let live = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
    let parts = [Part::Services, Part::Berth];
    let mut tasks = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        let (client, shared, loaded, live) =
            (client.clone(), shared.clone(), loaded.clone(), live.clone());
        let span = tracing::info_span!("watch", prefix = part.prefix());
        tasks.push(tokio::spawn(
            async move { follow_part(client, shared, part, i, loaded, live).await }
                .instrument(span),
        ));
    }
    shutdown.cancelled().await;
    for t in tasks {
        t.abort();
    }
}

async fn follow_part(
    client: Client,
    shared: Arc<Shared>,
    part: Part,
    me: usize,
    loaded: Arc<[AtomicBool; 2]>,
    live: Arc<[AtomicBool; 2]>,
) {
    let mut backoff = BACKOFF_MIN;
    let set_live = |v: bool| {
        live[me].store(v, Ordering::Release);
        shared.set_live(live.iter().all(|l| l.load(Ordering::Acquire)));
    };
    'resync: loop {
        tracing::debug!("reading the registry");
        let index = match read(&client, part).await {
            Ok((node, index)) => {
                tracing::debug!(index, "registry read");
                shared.update(|c| {
                    match part {
                        Part::Services => c.load_services(node.as_ref()),
                        Part::Berth => c.load_berth(node.as_ref()),
                    }
                    c.observe_index(index);
                });
                loaded[me].store(true, Ordering::Release);
                if loaded.iter().all(|l| l.load(Ordering::Acquire)) && !shared.is_synced() {
                    shared.set_synced();
                    tracing::info!("catalog loaded from the registry");
                }
                set_live(true);
                backoff = BACKOFF_MIN;
                index
            }
            Err(e) => {
                set_live(false);
                tracing::warn!(error = %e, "cannot read the registry; answering from the last known state");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue 'resync;
            }
        };
        let mut next = index + 1;
        loop {
            let opts = WatchOptions {
                recursive: true,
                wait_index: Some(next),
            };
            let r = tokio::time::timeout(POLL_LIMIT, client.watch(part.prefix(), opts)).await;
            match r {
                Err(_elapsed) => continue,
                Ok(Ok(event)) => {
                    next = next.max(event.node.modified_index + 1);
                    let idx = event.node.modified_index;
                    shared.update(|c| {
                        c.apply(&event);
                        c.observe_index(idx);
                    });
                    if backoff != BACKOFF_MIN {
                        tracing::info!("registry watch resumed");
                    }
                    set_live(true);
                    backoff = BACKOFF_MIN;
                }
                Ok(Err(e)) if e.etcd_code() == Some(codes::EVENT_INDEX_CLEARED) => {
                    tracing::info!(error = %e, "watch index outdated; reading everything again");
                    continue 'resync;
                }
                Ok(Err(e)) => {
                    set_live(false);
                    tracing::warn!(error = %e, "registry watch failed; answering from the last known state");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    // Resume from `next`: a registry that lost its history answers 401.
                }
            }
        }
    }
}

/// A recursive GET of the part; a missing directory is an empty one.
async fn read(client: &Client, part: Part) -> Result<(Option<Node>, u64), ClientError> {
    let opts = GetOptions {
        recursive: true,
        ..Default::default()
    };
    match client.get(part.prefix(), opts).await {
        Ok(r) => Ok((Some(r.node), r.etcd_index)),
        Err(ClientError::Etcd { code, index, .. }) if code == codes::KEY_NOT_FOUND => {
            Ok((None, index))
        }
        Err(e) => Err(e),
    }
}
