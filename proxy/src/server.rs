//! [`run`]: follows the catalog, rebuilds and swaps the routing table on every change,
//! reconciles the VIP listeners, runs active health checks, and serves HTTP and the admin
//! endpoints until `shutdown`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use registry::catalog::Shared;
use registry::client::Client;
use registry::http::serve::{serve_with, ServeOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::balance::{now_ms, Upstreams};
use crate::config::Config;
use crate::error::Error;
use crate::http::{upstream_client, ProxyBody, UpstreamClient};
use crate::l4::Listeners;
use crate::metrics::Metrics;
use crate::pool::ConnPool;
use crate::shard::{self, Padded, Shard};
use crate::table::Table;

/// Everything the request handlers share.
pub struct State {
    pub config: Config,
    /// The current routing table of each shard ([`crate::shard`]): one per HTTP worker
    /// thread, then the control runtime's. All are built from the same catalog snapshot.
    tables: Box<[Padded<RwLock<Arc<Table>>>]>,
    pub catalog: Arc<Shared>,
    pub metrics: Metrics,
    upstreams: Mutex<Upstreams>,
    /// For active health checks.
    pub client: UpstreamClient,
    /// Keep-alive connections for requests forwarded from the TLS listener (each HTTP worker
    /// thread has its own).
    pub pool: Arc<ConnPool>,
    /// Every keep-alive pool (`pool` and each worker's), for [`State::sweep_pools`].
    pools: Mutex<Vec<Arc<ConnPool>>>,
    vip_addrs: Mutex<Vec<SocketAddr>>,
}

impl State {
    /// State for `config` with empty tables.
    pub fn new(config: Config) -> State {
        let shards = config.threads + 1;
        let pool = ConnPool::new(config.connect_timeout);
        State {
            client: upstream_client(&config),
            pools: Mutex::new(vec![pool.clone()]),
            pool,
            tables: (0..shards).map(|_| Padded::default()).collect(),
            config,
            catalog: Arc::new(Shared::default()),
            metrics: Metrics::new(shards),
            upstreams: Mutex::new(Upstreams::new(shards)),
            vip_addrs: Mutex::new(Vec::new()),
        }
    }

    /// The control runtime's shard.
    pub fn control_shard(&self) -> Shard {
        shard::control(self.config.threads)
    }

    /// The current routing table of the control runtime (admin, health checks, VIPs, TLS).
    pub fn table(&self) -> Arc<Table> {
        self.table_of(self.control_shard())
    }

    /// The current routing table of `shard`.
    pub fn table_of(&self, shard: Shard) -> Arc<Table> {
        shard::slot(&self.tables, shard)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A new keep-alive pool (for one HTTP worker thread), swept with the others.
    pub fn new_pool(&self) -> Arc<ConnPool> {
        let pool = ConnPool::new(self.config.connect_timeout);
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pool.clone());
        pool
    }

    /// Closes idle keep-alive connections to addresses no route has any more, and those
    /// past their idle timeout or closed by the instance ([`ConnPool::sweep`]).
    pub fn sweep_pools(&self) {
        let table = self.table();
        let routed: HashSet<SocketAddr> = table
            .http_routes()
            .flat_map(|r| r.pool.backends.iter().map(|b| b.addr))
            .collect();
        drop(table);
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let closed: usize = pools.iter().map(|p| p.sweep(|a| routed.contains(&a))).sum();
        if closed > 0 {
            tracing::debug!(closed, "idle connections to instances closed");
        }
    }

    /// Idle keep-alive connections to instances, in every pool.
    pub fn idle_connections(&self) -> usize {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.iter().map(|p| p.idle_count()).sum()
    }

    /// Builds every shard's table from the current catalog and swaps them in.
    pub fn rebuild(&self) {
        let tables: Vec<Table> = {
            let catalog = self.catalog.read();
            let mut ups = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
            (0..self.tables.len())
                .map(|shard| Table::build(&catalog, &mut ups, &self.metrics, shard))
                .collect()
        };
        for c in &tables[0].conflicts {
            tracing::warn!(conflict = %c, "two services claim one route");
        }
        self.metrics.tables.fetch_add(1, Ordering::Relaxed);
        for (slot, table) in self.tables.iter().zip(tables) {
            *slot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        }
    }
}

/// What the request handlers of one HTTP worker thread (or of the TLS listener) share.
/// Cloning its `Arc` and reading its table touch only that thread's cache lines, unlike
/// [`State`], which every thread reads.
pub struct Worker {
    pub state: Arc<State>,
    /// Keep-alive connections to instances.
    pub conns: Arc<ConnPool>,
    pub shard: Shard,
}

/// The proxy's bound listeners: HTTP, and optionally HTTPS and the admin endpoints.
pub struct Bound {
    pub http: TcpListener,
    pub tls: Option<TcpListener>,
    pub admin: Option<TcpListener>,
}

/// Binds the listeners of the flags `--http-listen`, `--tls-listen` and `--admin-listen`
/// (inside a tokio runtime).
pub fn bind(args: &crate::Args) -> Result<Bound, Error> {
    fn b(addr: SocketAddr, flag: &'static str) -> Result<TcpListener, Error> {
        registry::http::serve::listen(addr).map_err(|source| Error::Bind { addr, flag, source })
    }
    Ok(Bound {
        http: b(args.http_listen, "--http-listen")?,
        tls: args.tls_listen.map(|a| b(a, "--tls-listen")).transpose()?,
        admin: args
            .admin_listen
            .map(|a| b(a, "--admin-listen"))
            .transpose()?,
    })
}

/// Runs the proxy until `shutdown`.
pub async fn run(
    config: Config,
    listeners: Bound,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let client = Client::new(&config.endpoints)?;
    let state = Arc::new(State::new(config));
    tracing::info!(
        http = ?listeners.http.local_addr().ok(),
        admin = ?listeners.admin.as_ref().and_then(|l| l.local_addr().ok()),
        vip_range = %state.config.vip_range,
        endpoints = ?state.config.endpoints,
        "proxy starting"
    );
    // The background tasks log under `proxy{http=...}`, as DNS's do under `dns{...}`.
    let span = tracing::info_span!("proxy", http = ?listeners.http.local_addr().ok());
    tokio::spawn(
        registry::catalog::follow(client, state.catalog.clone(), shutdown.child_token())
            .instrument(span.clone()),
    );
    tokio::spawn(follow_table(state.clone(), shutdown.child_token()).instrument(span.clone()));
    if let Some(path) = state.config.health_path.clone() {
        tokio::spawn(
            health_checks(state.clone(), path, shutdown.child_token()).instrument(span.clone()),
        );
    }
    if let Some(admin) = listeners.admin {
        let st = state.clone();
        let handler = move |req: Request<Incoming>, _peer: SocketAddr| {
            let st = st.clone();
            async move { admin_handler(&st, req) }
        };
        tokio::spawn(serve_with(
            admin,
            "admin",
            handler,
            shutdown.child_token(),
            ServeOptions::default(),
        ));
    }
    if let (Some(listener), Some(tls)) = (listeners.tls, state.config.tls.clone()) {
        tokio::spawn(crate::tls::serve(
            listener,
            tls,
            state.clone(),
            shutdown.child_token(),
        ));
    }
    crate::workers::serve(listeners.http, state, shutdown).await?;
    Ok(())
}

/// Rebuilds the table whenever the catalog changes (watch events arrive one by one; the
/// version channel coalesces bursts) and reconciles the VIP listeners.
async fn follow_table(state: Arc<State>, shutdown: CancellationToken) {
    let mut changes = state.catalog.subscribe();
    let mut vips = Listeners::default();
    loop {
        state.rebuild();
        state.sweep_pools();
        vips.reconcile(&state, &shutdown).await;
        *state.vip_addrs.lock().unwrap_or_else(|e| e.into_inner()) = vips.addrs();
        tokio::select! {
            _ = shutdown.cancelled() => {
                vips.release().await;
                return;
            }
            r = changes.changed() => if r.is_err() { return },
            // Retry failed VIP binds, and sweep the pools, now and then even without a change.
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Active checks: GET `path` on every instance with an HTTP route each interval; a refused
/// connect, a timeout or a status >= 500 ejects it, a good answer re-admits it.
async fn health_checks(state: Arc<State>, path: String, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.health_interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let table = state.table();
        let mut seen = std::collections::HashSet::new();
        let mut checks = Vec::new();
        for route in table.http_routes() {
            for b in &route.pool.backends {
                if !seen.insert(b.addr) {
                    continue;
                }
                let (b, state, path) = (b.clone(), state.clone(), path.clone());
                let host = route.pool.service.to_string();
                checks.push(async move {
                    let req = Request::get(format!("http://{}{}", b.addr, path))
                        .header("host", host)
                        .header("user-agent", "berth-proxy-health")
                        .body(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
                    let Ok(req) = req else { return };
                    let ok = match tokio::time::timeout(state.config.connect_timeout * 2, state.client.request(req)).await {
                        Ok(Ok(r)) => r.status().as_u16() < 500,
                        _ => false,
                    };
                    if ok {
                        b.upstream.succeed();
                    } else if !b.upstream.is_ejected(now_ms()) {
                        let d = b.upstream.fail(now_ms(), state.config.eject);
                        tracing::warn!(instance = %b.addr, eject_ms = d.as_millis() as u64, "health check failed; instance ejected");
                    }
                });
            }
        }
        drop(table);
        futures::future::join_all(checks).await;
    }
}

fn text(status: StatusCode, ctype: &'static str, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    r
}

/// `/metrics`, `/routes`, `/health`.
fn admin_handler(state: &State, req: Request<Incoming>) -> Response<ProxyBody> {
    match req.uri().path() {
        "/metrics" => {
            let table = state.table();
            let routes = table.http_routes().count() as f64;
            let l4 = state
                .vip_addrs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len() as f64;
            let live = if state.catalog.is_live() { 1.0 } else { 0.0 };
            let idle = state.idle_connections() as f64;
            let body = state.metrics.render(&[
                (
                    "berth_proxy_http_routes",
                    "HTTP routes in the current table.",
                    routes,
                ),
                ("berth_proxy_vip_listeners", "VIP:port listeners open.", l4),
                (
                    "berth_proxy_registry_live",
                    "1 while the registry watch is connected.",
                    live,
                ),
                (
                    "berth_proxy_idle_upstream_connections",
                    "Keep-alive connections to instances, idle in the pools.",
                    idle,
                ),
            ]);
            text(StatusCode::OK, "text/plain; version=0.0.4", body)
        }
        "/routes" => {
            let table = state.table();
            let backends = |p: &crate::table::Pool| -> Vec<serde_json::Value> {
                p.backends
                    .iter()
                    .map(|b| {
                        serde_json::json!({
                            "id": &*b.id,
                            "addr": b.addr.to_string(),
                            "ejected": b.upstream.is_ejected(now_ms()),
                            "in_flight": b.upstream.in_flight(),
                            "sent": b.upstream.sent(),
                        })
                    })
                    .collect()
            };
            let http: Vec<serde_json::Value> = table
                .http_routes()
                .map(|r| {
                    serde_json::json!({
                        "domain": r.domain,
                        "path": r.prefix,
                        "service": &*r.pool.service,
                        "backends": backends(&r.pool),
                    })
                })
                .collect();
            let l4: Vec<serde_json::Value> = table
                .l4_routes()
                .map(|(addr, p)| {
                    serde_json::json!({
                        "vip": addr.to_string(),
                        "service": &*p.service,
                        "backends": backends(p),
                    })
                })
                .collect();
            let listening: Vec<String> = state
                .vip_addrs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|a| a.to_string())
                .collect();
            let body = serde_json::json!({
                "synced": state.catalog.is_synced(),
                "http": http,
                "l4": l4,
                "vip_listeners": listening,
                "conflicts": table.conflicts,
            });
            text(StatusCode::OK, "application/json", format!("{body:#}\n"))
        }
        "/health" => {
            if state.catalog.is_synced() {
                text(StatusCode::OK, "text/plain", "ok\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "registry not read yet\n".into(),
                )
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "berth proxy admin: /metrics, /routes, /health\n".into(),
        ),
    }
}
