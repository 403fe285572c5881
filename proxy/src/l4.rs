//! L4 VIP listeners: for every VIP:port in the routing table, a TCP listener whose
//! connections are spliced to a live instance (round-robin or least-connections, a failed
//! connect ejects the instance and tries the next). Listeners follow the table: new VIP
//! ports are bound, vanished ones stop accepting (open connections are left to finish).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::balance::{now_ms, pick, InFlight};
use crate::server::State;
use crate::vipnet::VipNet;

/// The running VIP listeners, and the VIP interface when VIPs are not loopback addresses.
#[derive(Default)]
pub struct Listeners {
    running: HashMap<SocketAddr, CancellationToken>,
    vipnet: Option<VipNet>,
    /// Addresses this proxy put on the VIP interface.
    owned: HashSet<Ipv4Addr>,
}

impl Listeners {
    /// Binds the listeners the table wants and stops the others; VIPs outside 127.0.0.0/8 are
    /// added to (and removed from) the VIP interface first. A bind that fails (the address
    /// is not local, the port is taken) is logged and tried again on the next call.
    pub async fn reconcile(&mut self, state: &Arc<State>, shutdown: &CancellationToken) {
        let table = state.table();
        let want: Vec<SocketAddr> = table
            .l4_addrs()
            .filter(|a| match a.ip() {
                std::net::IpAddr::V4(ip) => state.config.serves_vip(ip),
                _ => false,
            })
            .collect();
        drop(table);
        self.running.retain(|addr, token| {
            let keep = want.contains(addr);
            if !keep {
                tracing::info!(%addr, "VIP listener stopped");
                token.cancel();
            }
            keep
        });
        let want_ips: HashSet<Ipv4Addr> = want
            .iter()
            .filter_map(|a| match a.ip() {
                std::net::IpAddr::V4(ip) if !ip.is_loopback() => Some(ip),
                _ => None,
            })
            .collect();
        if !want_ips.is_empty() && self.vipnet.is_none() {
            match VipNet::open(&state.config.vip_interface).await {
                Ok(v) => {
                    // Addresses of our range left by an earlier proxy that was killed are
                    // ours to keep or remove.
                    if let Ok(addrs) = v.addresses().await {
                        self.owned.extend(
                            addrs
                                .into_iter()
                                .filter(|ip| state.config.vip_range.contains(ip)),
                        );
                    }
                    self.vipnet = Some(v);
                }
                Err(e) => {
                    tracing::warn!(interface = %state.config.vip_interface, error = %e, "no VIP interface; VIPs outside 127.0.0.0/8 cannot be served")
                }
            }
        }
        if let Some(net) = &self.vipnet {
            for ip in want_ips.difference(&self.owned.clone()) {
                match net.add(*ip).await {
                    Ok(()) => {
                        self.owned.insert(*ip);
                        tracing::info!(%ip, interface = %state.config.vip_interface, "VIP address added");
                    }
                    Err(e) => tracing::warn!(%ip, error = %e, "cannot add the VIP address"),
                }
            }
            for ip in self.owned.clone().difference(&want_ips) {
                match net.remove(*ip).await {
                    Ok(()) => {
                        self.owned.remove(ip);
                        tracing::info!(%ip, "VIP address removed");
                    }
                    Err(e) => tracing::warn!(%ip, error = %e, "cannot remove the VIP address"),
                }
            }
        }
        for addr in want {
            if self.running.contains_key(&addr) {
                continue;
            }
            match registry::http::serve::listen(addr) {
                Ok(listener) => {
                    let token = shutdown.child_token();
                    self.running.insert(addr, token.clone());
                    let span = tracing::info_span!("vip", %addr);
                    tokio::spawn(
                        accept_loop(state.clone(), listener, addr, token).instrument(span),
                    );
                    tracing::info!(%addr, "VIP listener started");
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "cannot listen on VIP; is the address on a local interface (127.0.0.0/8 always is)?");
                }
            }
        }
    }

    /// Removes the addresses this proxy added to the VIP interface (on shutdown).
    pub async fn release(&mut self) {
        if let Some(net) = &self.vipnet {
            for ip in self.owned.drain() {
                if let Err(e) = net.remove(ip).await {
                    tracing::warn!(%ip, error = %e, "cannot remove the VIP address");
                }
            }
        }
    }

    /// The addresses listened on.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.running.keys().copied().collect();
        v.sort();
        v
    }
}

async fn accept_loop(
    state: Arc<State>,
    listener: TcpListener,
    addr: SocketAddr,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = registry::http::serve::accept(&listener) => r,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(
            async move { splice(state, stream, addr).await }
                .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
}

async fn splice(state: Arc<State>, mut client: TcpStream, vip: SocketAddr) {
    let Some(pool) = state.table().l4(vip).cloned() else {
        tracing::info!("VIP no longer in the table; connection closed");
        return;
    };
    pool.metrics.l4_connections.fetch_add(1, Ordering::Relaxed);
    let mut tried = Vec::new();
    loop {
        let Some(backend) = pick(&pool, state.config.balance, now_ms(), &tried) else {
            tracing::warn!(service = %pool.service, "no instance accepted the connection; closing it");
            return;
        };
        tried.push(backend.addr);
        let connect = tokio::time::timeout(
            state.config.connect_timeout,
            TcpStream::connect(backend.addr),
        )
        .await;
        match connect {
            Ok(Ok(mut upstream)) => {
                backend.upstream.succeed();
                let _ = upstream.set_nodelay(true);
                let _in_flight = InFlight::new(&backend.upstream, pool.shard);
                let r = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                tracing::debug!(instance = %backend.addr, ?r, "connection closed");
                return;
            }
            Ok(Err(e)) => {
                backend.upstream.fail(now_ms(), state.config.eject);
                tracing::warn!(service = %pool.service, instance = %backend.addr, error = %e, "connect failed; instance ejected");
            }
            Err(_) => {
                backend.upstream.fail(now_ms(), state.config.eject);
                tracing::warn!(service = %pool.service, instance = %backend.addr, "connect timed out; instance ejected");
            }
        }
    }
}
