//! Claims and releases VIPs in the registry by compare-and-swap (see the key schema in the
//! crate documentation). Every service with instances gets a VIP; one that has had none for
//! the grace period loses it. Any number of DNS servers may run this at once: the
//! `prevExist=false` create of `/_berth/vips/service/<service>` decides every race.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use registry::client::{codes, Client, ClientError, DeleteOptions, GetOptions, SetOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::VipError;
use crate::vip::{ip_key, service_key, Release, ReleaseTracker, VipRange};
use registry::catalog::Shared;

/// Conflicts tolerated while claiming one VIP before giving up until the next round.
const MAX_CONFLICTS: usize = 64;

/// Claims VIPs for services that need one and releases idle ones, until `shutdown`.
/// `requests` carries services a query is waiting for (they go first).
pub async fn run(
    client: Client,
    shared: Arc<Shared>,
    range: VipRange,
    grace: Duration,
    mut requests: mpsc::Receiver<String>,
    shutdown: CancellationToken,
) {
    let mut changes = shared.subscribe();
    let mut tracker = ReleaseTracker::default();
    let mut tick =
        tokio::time::interval(Duration::from_secs(1).min(grace.max(Duration::from_millis(200))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing_until: Option<Instant> = None;
    // Claimed here but not yet seen through the watch: not claimed again for a while.
    let mut recent: HashMap<String, Instant> = HashMap::new();
    loop {
        let mut wanted = Vec::new();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = requests.recv() => match r {
                Some(s) => { wanted.push(s); failing_until = None; }
                None => return,
            },
            r = changes.changed() => if r.is_err() { return },
            _ = tick.tick() => {
                release_due(&client, &shared, &mut tracker, grace).await;
            }
        }
        while let Ok(s) = requests.try_recv() {
            wanted.push(s);
        }
        if !shared.is_synced() {
            continue;
        }
        if failing_until.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        let missing: Vec<String> = {
            let c = shared.read();
            let mut v: Vec<String> = wanted
                .into_iter()
                .filter(|s| c.has_instances(s) && c.vip(s).is_none())
                .collect();
            v.extend(c.services_without_vip().map(str::to_string));
            let mut seen = HashSet::new();
            v.retain(|s| seen.insert(s.clone()));
            v
        };
        let now = Instant::now();
        recent.retain(|_, t| now.duration_since(*t) < Duration::from_secs(2));
        for service in missing {
            if shutdown.is_cancelled() {
                return;
            }
            if shared.read().vip(&service).is_some() || recent.contains_key(&service) {
                continue;
            }
            match claim(&client, &shared, range, &service).await {
                Ok(ip) => {
                    tracing::info!(service, %ip, "VIP claimed");
                    recent.insert(service, Instant::now());
                }
                Err(e) => {
                    tracing::warn!(service, error = %e, "cannot claim a VIP; retrying shortly");
                    failing_until = Some(Instant::now() + Duration::from_secs(1));
                    break;
                }
            }
        }
    }
}

/// Claims a VIP for `service` (or learns the one another server claimed first) and returns it.
pub async fn claim(
    client: &Client,
    shared: &Shared,
    range: VipRange,
    service: &str,
) -> Result<Ipv4Addr, VipError> {
    let mut tried: HashSet<Ipv4Addr> = HashSet::new();
    let skey = service_key(service);
    for _ in 0..MAX_CONFLICTS {
        let candidate = {
            let c = shared.read();
            range.candidate(service, |ip| {
                tried.contains(&ip)
                    || c.reservations()
                        .get(&ip)
                        .is_some_and(|r| r.service != service)
                    || c.service_of_vip(ip).is_some_and(|s| s != service)
            })
        };
        let Some(ip) = candidate else {
            return Err(VipError::Exhausted(range.to_string()));
        };
        tried.insert(ip);
        // 1. Reserve the address (or take over our own earlier reservation, bumping its index
        //    so that a concurrent orphan sweep cannot delete it under us).
        let create = SetOptions {
            prev_exist: Some(false),
            ..Default::default()
        };
        match client.set(&ip_key(ip), service, create).await {
            Ok(_) => {}
            Err(e) if e.etcd_code() == Some(codes::NODE_EXIST) => {
                let cur = match client.get(&ip_key(ip), GetOptions::default()).await {
                    Ok(r) => r.node,
                    Err(e) if e.is_key_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                if cur.value.as_deref() != Some(service) {
                    continue;
                }
                let cas = SetOptions {
                    prev_index: Some(cur.modified_index),
                    ..Default::default()
                };
                match client.set(&ip_key(ip), service, cas).await {
                    Ok(_) => {}
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
        // 2. Claim the service: whoever creates this key first decides the VIP.
        let create = SetOptions {
            prev_exist: Some(false),
            ..Default::default()
        };
        match client.set(&skey, &ip.to_string(), create).await {
            Ok(_) => return Ok(ip),
            Err(e) if e.etcd_code() == Some(codes::NODE_EXIST) => {
                let winner = client
                    .get(&skey, GetOptions::default())
                    .await?
                    .node
                    .value
                    .unwrap_or_default();
                let winner: Option<Ipv4Addr> = winner.trim().parse().ok();
                if winner != Some(ip) {
                    // Lost the race with another address: give ours back.
                    let del = DeleteOptions {
                        prev_value: Some(service.to_string()),
                        ..Default::default()
                    };
                    if let Err(e) = client.delete(&ip_key(ip), del).await {
                        tracing::debug!(%ip, error = %e, "could not return a reservation");
                    }
                }
                return winner.ok_or_else(|| VipError::Contended(service.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(VipError::Contended(service.to_string()))
}

fn is_conflict(e: &ClientError) -> bool {
    matches!(
        e.etcd_code(),
        Some(codes::TEST_FAILED | codes::KEY_NOT_FOUND | codes::NODE_EXIST)
    )
}

async fn release_due(
    client: &Client,
    shared: &Shared,
    tracker: &mut ReleaseTracker,
    grace: Duration,
) {
    if !shared.is_synced() || !shared.is_live() {
        return;
    }
    let due = {
        let c = shared.read();
        tracker.due(&c, Instant::now(), grace)
    };
    for r in due {
        if let Err(e) = release(client, &r).await {
            tracing::debug!(release = ?r, error = %e, "release skipped");
        }
    }
}

/// Carries out one release, re-checking with a quorum read that the service still has no
/// instances (the catalog may lag behind the registry).
pub async fn release(client: &Client, r: &Release) -> Result<(), VipError> {
    match r {
        Release::Service { service, ip, index } => {
            let quorum = GetOptions {
                recursive: true,
                quorum: true,
                ..Default::default()
            };
            match client.get(&format!("/services/{service}"), quorum).await {
                Ok(resp) if resp.node.nodes.iter().any(|n| !n.dir) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.is_key_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            let del = DeleteOptions {
                prev_index: Some(*index),
                ..Default::default()
            };
            client.delete(&service_key(service), del).await?;
            let del = DeleteOptions {
                prev_value: Some(service.clone()),
                ..Default::default()
            };
            match client.delete(&ip_key(*ip), del).await {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!(service, %ip, "VIP released after the grace period");
            Ok(())
        }
        Release::Orphan { ip, service, index } => {
            let del = DeleteOptions {
                prev_index: Some(*index),
                ..Default::default()
            };
            client.delete(&ip_key(*ip), del).await?;
            tracing::info!(service, %ip, "stale VIP reservation removed");
            Ok(())
        }
    }
}
