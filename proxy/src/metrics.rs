//! Counters for Prometheus' text format (`GET /metrics` on the admin listener): requests by
//! service and status class, a latency histogram per service, L4 connections, proxy-level
//! errors, and the age and size of the routing table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::shard::{self, Padded, Shard};

/// Upper bounds of the latency histogram, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// What one shard counts of one service's responses.
#[derive(Debug, Default)]
struct Counts {
    /// Responses by status class: 1xx..5xx at index 0..4.
    responses: [AtomicU64; 5],
    /// Latency histogram (non-cumulative per bucket; the last slot is +Inf).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of latencies in microseconds.
    sum_us: AtomicU64,
}

/// The counters of one service. Response counts are kept per shard ([`crate::shard`]) and
/// added up when read.
#[derive(Debug)]
pub struct ServiceMetrics {
    counts: Box<[Padded<Counts>]>,
    /// Requests retried on another instance after a failed connect.
    pub retries: AtomicU64,
    /// L4 connections accepted on the service's VIPs.
    pub l4_connections: AtomicU64,
}

impl Default for ServiceMetrics {
    fn default() -> Self {
        ServiceMetrics::new(1)
    }
}

impl ServiceMetrics {
    /// Counters with `shards` slots for responses.
    pub fn new(shards: usize) -> ServiceMetrics {
        ServiceMetrics {
            counts: shard::slots(shards),
            retries: AtomicU64::new(0),
            l4_connections: AtomicU64::new(0),
        }
    }

    /// Records one response, counted in `shard`'s slot.
    pub fn observe(&self, shard: Shard, status: u16, took: Duration) {
        let c = shard::slot(&self.counts, shard);
        let class = (status / 100).clamp(1, 5) as usize - 1;
        c.responses[class].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        c.buckets[i].fetch_add(1, Ordering::Relaxed);
        c.sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Responses of status class `class` (1 for 1xx .. 5 for 5xx) over all shards.
    pub fn responses(&self, class: usize) -> u64 {
        self.sum(|c| &c.responses[class.clamp(1, 5) - 1])
    }

    fn sum(&self, field: impl Fn(&Counts) -> &AtomicU64) -> u64 {
        self.counts
            .iter()
            .map(|c| field(c).load(Ordering::Relaxed))
            .sum()
    }
}

/// All counters of a proxy.
#[derive(Debug)]
pub struct Metrics {
    /// Slots per service counter (see [`crate::shard`]).
    shards: usize,
    services: Mutex<BTreeMap<String, Arc<ServiceMetrics>>>,
    /// Requests answered 404 (no route).
    pub no_route: AtomicU64,
    /// Requests rejected before routing (bad request, body too large).
    pub rejected: AtomicU64,
    /// Routing tables built.
    pub tables: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(1)
    }
}

impl Metrics {
    /// Counters whose per-service response counts have `shards` slots.
    pub fn new(shards: usize) -> Metrics {
        Metrics {
            shards,
            services: Mutex::new(BTreeMap::new()),
            no_route: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            tables: AtomicU64::new(0),
        }
    }

    /// The counters of `service`, created when new. Counters are kept for the life of the
    /// process, as Prometheus expects of a counter.
    pub fn service(&self, service: &str) -> Arc<ServiceMetrics> {
        let mut m = self.services.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(service.to_string())
            .or_insert_with(|| Arc::new(ServiceMetrics::new(self.shards)))
            .clone()
    }

    /// The exposition text.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let services: Vec<(String, Arc<ServiceMetrics>)> = {
            let m = self.services.lock().unwrap_or_else(|e| e.into_inner());
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let _ = writeln!(
            out,
            "# HELP berth_proxy_responses_total HTTP responses by service and status class."
        );
        let _ = writeln!(out, "# TYPE berth_proxy_responses_total counter");
        for (s, m) in &services {
            for class in 1..=5 {
                let _ = writeln!(
                    out,
                    "berth_proxy_responses_total{{service=\"{s}\",code=\"{class}xx\"}} {}",
                    m.responses(class)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP berth_proxy_request_duration_seconds Time from request to response headers."
        );
        let _ = writeln!(out, "# TYPE berth_proxy_request_duration_seconds histogram");
        for (s, m) in &services {
            let mut cum = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cum += m.sum(|c| &c.buckets[i]);
                let _ = writeln!(
                    out,
                    "berth_proxy_request_duration_seconds_bucket{{service=\"{s}\",le=\"{b}\"}} {cum}"
                );
            }
            cum += m.sum(|c| &c.buckets[BUCKETS.len()]);
            let _ = writeln!(
                out,
                "berth_proxy_request_duration_seconds_bucket{{service=\"{s}\",le=\"+Inf\"}} {cum}"
            );
            let _ = writeln!(
                out,
                "berth_proxy_request_duration_seconds_sum{{service=\"{s}\"}} {}",
                m.sum(|c| &c.sum_us) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "berth_proxy_request_duration_seconds_count{{service=\"{s}\"}} {cum}"
            );
        }
        let _ = writeln!(out, "# HELP berth_proxy_retries_total Requests retried on another instance after a failed connect.");
        let _ = writeln!(out, "# TYPE berth_proxy_retries_total counter");
        for (s, m) in &services {
            let _ = writeln!(
                out,
                "berth_proxy_retries_total{{service=\"{s}\"}} {}",
                m.retries.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP berth_proxy_l4_connections_total TCP connections accepted on the service's VIPs.");
        let _ = writeln!(out, "# TYPE berth_proxy_l4_connections_total counter");
        for (s, m) in &services {
            let _ = writeln!(
                out,
                "berth_proxy_l4_connections_total{{service=\"{s}\"}} {}",
                m.l4_connections.load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in [
            (
                "berth_proxy_no_route_total",
                "Requests answered 404 for want of a route.",
                self.no_route.load(Ordering::Relaxed) as f64,
            ),
            (
                "berth_proxy_rejected_total",
                "Requests refused before routing (bad request, body too large).",
                self.rejected.load(Ordering::Relaxed) as f64,
            ),
            (
                "berth_proxy_tables_total",
                "Routing tables built from the catalog.",
                self.tables.load(Ordering::Relaxed) as f64,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        for (name, help, v) in extra {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histogram() {
        // Two shards: what each counts is added up.
        let m = Metrics::new(2);
        let web = m.service("web");
        web.observe(0, 200, Duration::from_micros(300));
        web.observe(1, 204, Duration::from_millis(3));
        web.observe(1, 503, Duration::from_secs(9));
        assert_eq!(web.responses(2), 2);
        let text = m.render(&[("berth_proxy_routes", "Routes.", 2.0)]);
        assert!(
            text.contains("berth_proxy_responses_total{service=\"web\",code=\"2xx\"} 2"),
            "{text}"
        );
        assert!(text.contains("berth_proxy_responses_total{service=\"web\",code=\"5xx\"} 1"));
        assert!(text.contains(
            "berth_proxy_request_duration_seconds_bucket{service=\"web\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "berth_proxy_request_duration_seconds_bucket{service=\"web\",le=\"0.005\"} 2"
        ));
        assert!(text
            .contains("berth_proxy_request_duration_seconds_bucket{service=\"web\",le=\"5\"} 2"));
        assert!(text.contains(
            "berth_proxy_request_duration_seconds_bucket{service=\"web\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("berth_proxy_request_duration_seconds_count{service=\"web\"} 3"));
        assert!(text.contains("berth_proxy_routes 2"));
        assert!(Arc::ptr_eq(&web, &m.service("web")));
    }
}
