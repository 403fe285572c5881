//! The routing table: a pure function of the catalog. HTTP routes by host and path prefix,
//! L4 listeners by VIP and port, each pointing at the live instances that should get traffic
//! (only the active color's when the service has a blue-green route record). A table is
//! never changed after it is built; the proxy swaps whole tables.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use registry::catalog::{Catalog, Instance, Proto};

use crate::balance::{Upstream, Upstreams};
use crate::metrics::{Metrics, ServiceMetrics};
use crate::shard::Shard;

/// An instance as a target of traffic.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The instance id (the last segment of its registry key).
    pub id: Arc<str>,
    pub addr: SocketAddr,
    /// Health and load of the address, shared by every route (and every later table) that
    /// points at it.
    pub upstream: Arc<Upstream>,
}

/// The instances of one service that one route (HTTP or L4) sends traffic to.
#[derive(Debug)]
pub struct Pool {
    pub service: Arc<str>,
    /// In instance-id order.
    pub backends: Vec<Backend>,
    /// Round-robin position, private to this table.
    pub cursor: AtomicUsize,
    pub metrics: Arc<ServiceMetrics>,
    /// The shard ([`crate::shard`]) whose table this is: the slot its requests count in.
    pub shard: Shard,
}

/// An HTTP route: requests for `domain` (any host when `None`) whose path starts with `prefix`.
#[derive(Debug)]
pub struct HttpRoute {
    pub domain: Option<String>,
    pub prefix: String,
    pub pool: Arc<Pool>,
}

/// Why a request found no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No route for this host and path: 404.
    NoRoute,
}

/// A routing table.
#[derive(Debug, Default)]
pub struct Table {
    /// Exact domains, each with its routes longest prefix first.
    exact: HashMap<String, Vec<HttpRoute>>,
    /// `*.example.com` routes keyed by `example.com`, longest prefix first.
    wildcard: HashMap<String, Vec<HttpRoute>>,
    /// Routes without a domain, longest prefix first.
    any_host: Vec<HttpRoute>,
    /// VIP:port -> the instances behind it.
    l4: BTreeMap<SocketAddr, Arc<Pool>>,
    /// Two services claiming one domain and path: the route went to the first by name.
    pub conflicts: Vec<String>,
}

/// Normalises a `Host` header or URI authority: lower case, no port, no trailing dot.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim();
    let h = if let Some(rest) = h.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => h,
        }
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `path` is under `prefix` at a segment boundary: `/api` covers `/api`, `/api/` and
/// `/api/x`, not `/apix`.
pub fn path_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" || prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

/// The port clients use on a service's VIP for an instance: the container port at the end
/// of a Registrator id (`host:name:80`, `host:name:53:udp`), else the instance's own port.
pub fn service_port(id: &str, inst: &Instance) -> u16 {
    let mut parts = id.rsplit(':');
    let last = parts.next().unwrap_or("");
    let candidate = if last == "udp" || last == "tcp" {
        parts.next().unwrap_or("")
    } else {
        last
    };
    if id.contains(':') {
        if let Ok(p) = candidate.parse::<u16>() {
            if p > 0 {
                return p;
            }
        }
    }
    inst.port
}

impl Table {
    /// Builds the table of `shard` for `catalog`. `upstreams` and `metrics` carry per-address
    /// health and per-service counters across tables (and shards); entries no longer used are
    /// dropped from them.
    pub fn build(
        catalog: &Catalog,
        upstreams: &mut Upstreams,
        metrics: &Metrics,
        shard: Shard,
    ) -> Table {
        let mut t = Table::default();
        // (domain, prefix) -> (service, backends); services visited in name order so a
        // conflict always resolves the same way.
        let mut http: BTreeMap<(Option<String>, String), (String, Vec<Backend>)> = BTreeMap::new();
        let mut names: Vec<&str> = catalog.service_names().collect();
        names.sort_unstable();
        let mut used = Vec::new();
        for service in names {
            // Every route an instance of any color declares exists, so a service whose
            // active color has no live instance answers 503 rather than 404.
            for (_, inst) in catalog.instances(service) {
                if let Some(h) = &inst.http {
                    let key = (h.domain.clone(), h.path.clone());
                    match http.get(&key) {
                        Some((owner, _)) if owner != service => {
                            let c = format!(
                                "{}{} is claimed by {owner} and {service}; routed to {owner}",
                                h.domain.as_deref().unwrap_or("*"),
                                h.path
                            );
                            if !t.conflicts.contains(&c) {
                                t.conflicts.push(c);
                            }
                        }
                        Some(_) => {}
                        None => {
                            http.insert(key, (service.to_string(), Vec::new()));
                        }
                    }
                }
            }
            let vip = catalog.vip(service);
            let mut l4: BTreeMap<u16, Vec<Backend>> = BTreeMap::new();
            for (id, inst) in catalog.active_instances(service) {
                if inst.proto != Proto::Tcp {
                    continue;
                }
                let addr = SocketAddr::new(inst.addr, inst.port);
                let backend = Backend {
                    id: Arc::from(id),
                    addr,
                    upstream: upstreams.get(addr),
                };
                used.push(addr);
                if let Some(h) = &inst.http {
                    if let Some((owner, list)) = http.get_mut(&(h.domain.clone(), h.path.clone())) {
                        if owner == service {
                            list.push(backend.clone());
                        }
                    }
                }
                if vip.is_some() {
                    l4.entry(service_port(id, inst)).or_default().push(backend);
                }
            }
            if let Some(vip) = vip {
                for (port, backends) in l4 {
                    t.l4.insert(
                        SocketAddr::new(IpAddr::V4(vip), port),
                        Arc::new(Pool {
                            service: Arc::from(service),
                            backends,
                            cursor: AtomicUsize::new(0),
                            metrics: metrics.service(service),
                            shard,
                        }),
                    );
                }
            }
        }
        for ((domain, prefix), (service, backends)) in http {
            let route = HttpRoute {
                domain: domain.clone(),
                prefix,
                pool: Arc::new(Pool {
                    metrics: metrics.service(&service),
                    service: Arc::from(service.as_str()),
                    backends,
                    cursor: AtomicUsize::new(0),
                    shard,
                }),
            };
            match domain {
                None => t.any_host.push(route),
                Some(d) => match d.strip_prefix("*.") {
                    Some(base) => t.wildcard.entry(base.to_string()).or_default().push(route),
                    None => t.exact.entry(d).or_default().push(route),
                },
            }
        }
        let by_len = |v: &mut Vec<HttpRoute>| v.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        t.exact.values_mut().for_each(by_len);
        t.wildcard.values_mut().for_each(by_len);
        by_len(&mut t.any_host);
        upstreams.retain(&used);
        t
    }

    /// The route for a request: the longest matching prefix among the routes of the exact
    /// host, then of the closest wildcard domain, then of the routes without a domain.
    pub fn route(&self, host: &str, path: &str) -> Result<&HttpRoute, Miss> {
        let host = normalize_host(host);
        let pick = |routes: &'_ [HttpRoute]| -> Option<usize> {
            routes.iter().position(|r| path_matches(&r.prefix, path))
        };
        if let Some(routes) = self.exact.get(&host) {
            if let Some(i) = pick(routes) {
                return Ok(&routes[i]);
            }
        }
        let mut rest = host.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(routes) = self.wildcard.get(parent) {
                if let Some(i) = pick(routes) {
                    return Ok(&routes[i]);
                }
            }
            rest = parent;
        }
        pick(&self.any_host)
            .map(|i| &self.any_host[i])
            .ok_or(Miss::NoRoute)
    }

    /// The L4 pool behind `vip:port`.
    pub fn l4(&self, addr: SocketAddr) -> Option<&Arc<Pool>> {
        self.l4.get(&addr)
    }

    /// Every VIP:port the proxy should listen on.
    pub fn l4_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.l4.keys().copied()
    }

    /// Every HTTP route, for `/routes` and logs: (domain or `*`, prefix, service, backends).
    pub fn http_routes(&self) -> impl Iterator<Item = &HttpRoute> + '_ {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .flatten()
            .chain(self.any_host.iter())
    }

    /// Every L4 listener with its pool.
    pub fn l4_routes(&self) -> impl Iterator<Item = (&SocketAddr, &Arc<Pool>)> + '_ {
        self.l4.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry::client::{Node, Response};

    fn catalog(entries: &[(&str, &str)]) -> Catalog {
        let mut c = Catalog::new();
        for (i, (k, v)) in entries.iter().enumerate() {
            c.apply(&Response {
                action: "set".into(),
                node: Node {
                    key: k.to_string(),
                    value: Some(v.to_string()),
                    modified_index: i as u64 + 1,
                    created_index: i as u64 + 1,
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        c
    }

    fn build(c: &Catalog) -> Table {
        Table::build(c, &mut Upstreams::default(), &Metrics::default(), 0)
    }

    fn addrs(r: &HttpRoute) -> Vec<String> {
        r.pool.backends.iter().map(|b| b.addr.to_string()).collect()
    }

    #[test]
    fn host_and_path_routing() {
        let c = catalog(&[
            (
                "/services/shop/a",
                r#"{"host":"10.0.0.1","port":80,"http":{"domain":"shop.example"}}"#,
            ),
            (
                "/services/api/a",
                r#"{"host":"10.0.0.2","port":80,"http":{"domain":"shop.example","path":"/api"}}"#,
            ),
            (
                "/services/apiv2/a",
                r#"{"host":"10.0.0.3","port":80,"http":{"domain":"shop.example","path":"/api/v2"}}"#,
            ),
            (
                "/services/blog/a",
                r#"{"host":"10.0.0.4","port":80,"http":{"domain":"*.blog.example"}}"#,
            ),
            (
                "/services/fallback/a",
                r#"{"host":"10.0.0.5","port":80,"http":{"path":"/"}}"#,
            ),
            ("/services/plain/a", r#"{"host":"10.0.0.6","port":80}"#),
        ]);
        let t = build(&c);
        let svc = |h: &str, p: &str| t.route(h, p).map(|r| r.pool.service.to_string());
        assert_eq!(svc("shop.example", "/").unwrap(), "shop");
        assert_eq!(svc("SHOP.example:8800", "/cart").unwrap(), "shop");
        assert_eq!(svc("shop.example.", "/api").unwrap(), "api");
        assert_eq!(svc("shop.example", "/api/x").unwrap(), "api");
        assert_eq!(svc("shop.example", "/apix").unwrap(), "shop");
        assert_eq!(svc("shop.example", "/api/v2/y").unwrap(), "apiv2");
        assert_eq!(svc("a.blog.example", "/").unwrap(), "blog");
        assert_eq!(svc("x.a.blog.example", "/").unwrap(), "blog");
        assert_eq!(svc("blog.example", "/").unwrap(), "fallback");
        assert_eq!(svc("other", "/z").unwrap(), "fallback");
        assert_eq!(t.http_routes().count(), 5);
        assert!(t.conflicts.is_empty());
    }

    #[test]
    fn no_route_without_fallback() {
        let c = catalog(&[(
            "/services/shop/a",
            r#"{"host":"10.0.0.1","port":80,"http":{"domain":"shop.example","path":"/shop"}}"#,
        )]);
        let t = build(&c);
        assert_eq!(t.route("shop.example", "/").unwrap_err(), Miss::NoRoute);
        assert_eq!(
            t.route("other.example", "/shop").unwrap_err(),
            Miss::NoRoute
        );
    }

    #[test]
    fn blue_green_keeps_route_but_only_active_backends() {
        let mut entries = vec![
            (
                "/services/web/b1",
                r#"{"host":"10.0.0.1","port":80,"color":"blue","http":{"domain":"web"}}"#,
            ),
            (
                "/services/web/g1",
                r#"{"host":"10.0.0.2","port":80,"color":"green","http":{"domain":"web"}}"#,
            ),
        ];
        let t = build(&catalog(&entries));
        assert_eq!(
            addrs(t.route("web", "/").unwrap()),
            ["10.0.0.1:80", "10.0.0.2:80"]
        );
        entries.push(("/_berth/routes/web", r#"{"active":"green"}"#));
        let t = build(&catalog(&entries));
        assert_eq!(addrs(t.route("web", "/").unwrap()), ["10.0.0.2:80"]);
        entries.push(("/_berth/routes/web", r#"{"active":"red"}"#));
        let t = build(&catalog(&entries));
        let r = t.route("web", "/").unwrap();
        assert!(
            r.pool.backends.is_empty(),
            "route stays, with no live instance (503)"
        );
    }

    #[test]
    fn conflicting_claims_go_to_first_service() {
        let c = catalog(&[
            (
                "/services/b/x",
                r#"{"host":"10.0.0.2","port":80,"http":{"domain":"d"}}"#,
            ),
            (
                "/services/a/x",
                r#"{"host":"10.0.0.1","port":80,"http":{"domain":"d"}}"#,
            ),
        ]);
        let t = build(&c);
        assert_eq!(addrs(t.route("d", "/").unwrap()), ["10.0.0.1:80"]);
        assert_eq!(t.conflicts.len(), 1);
        assert!(t.conflicts[0].contains("routed to a"), "{:?}", t.conflicts);
    }

    #[test]
    fn l4_listeners_per_vip_and_service_port() {
        let c = catalog(&[
            ("/services/db/h1:db1:5432", "172.17.0.2:32768"),
            ("/services/db/h1:db2:5432", "172.17.0.3:32769"),
            ("/services/db/side", r#"{"host":"10.0.0.9","port":6000}"#),
            ("/services/dns/h1:dns:53:udp", "172.17.0.4:53"),
            ("/services/novip/a", r#"{"host":"10.0.0.1","port":80}"#),
            ("/_berth/vips/service/db", "127.77.0.5"),
            ("/_berth/vips/service/dns", "127.77.0.6"),
        ]);
        let t = build(&c);
        let got: Vec<String> = t.l4_addrs().map(|a| a.to_string()).collect();
        assert_eq!(got, ["127.77.0.5:5432", "127.77.0.5:6000"]);
        let pool = t.l4("127.77.0.5:5432".parse().unwrap()).unwrap();
        let b: Vec<String> = pool.backends.iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(b, ["172.17.0.2:32768", "172.17.0.3:32769"]);
    }

    #[test]
    fn upstream_state_survives_rebuilds_and_is_pruned() {
        let mut ups = Upstreams::default();
        let m = Metrics::default();
        let c = catalog(&[(
            "/services/w/a",
            r#"{"host":"10.0.0.1","port":80,"http":{"path":"/"}}"#,
        )]);
        let c = {
            let mut c = c;
            c.apply(&Response {
                action: "set".into(),
                node: Node {
                    key: "/services/w/b".into(),
                    value: Some(r#"{"host":"10.0.0.2","port":80,"http":{"path":"/"}}"#.into()),
                    ..Default::default()
                },
                ..Default::default()
            });
            c
        };
        let t1 = Table::build(&c, &mut ups, &m, 0);
        let t2 = Table::build(&c, &mut ups, &m, 1);
        let u1 = &t1.route("x", "/").unwrap().pool.backends[0].upstream;
        let u2 = &t2.route("x", "/").unwrap().pool.backends[0].upstream;
        assert!(Arc::ptr_eq(u1, u2));
        // Each shard's table has pools (and round-robin cursors) of its own.
        let (p1, p2) = (
            &t1.route("x", "/").unwrap().pool,
            &t2.route("x", "/").unwrap().pool,
        );
        assert!(!Arc::ptr_eq(p1, p2));
        assert_eq!((p1.shard, p2.shard), (0, 1));
        assert!(Arc::ptr_eq(&p1.metrics, &p2.metrics));
        assert_eq!(ups.len(), 2);
        let t3 = Table::build(&Catalog::new(), &mut ups, &m, 0);
        assert_eq!(ups.len(), 0);
        assert!(t3.route("x", "/").is_err());
    }

    #[test]
    fn helpers() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "::1");
        assert_eq!(normalize_host("a.b."), "a.b");
        assert!(path_matches("/", "/anything"));
        assert!(path_matches("/api", "/api"));
        assert!(path_matches("/api", "/api/"));
        assert!(!path_matches("/api", "/apix"));
        assert!(path_matches("/api/", "/api/x"));
        assert!(!path_matches("/api/", "/api"));
    }
}
