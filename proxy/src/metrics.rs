//! Counters for Prometheus' text format (`GET /metrics` on the admin listener): requests by
//! service and status class, a latency histogram per service, L4 connections, proxy-level
//! errors, and the age and size of the routing table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The counters of one service.
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    /// Responses by status class: 1xx..5xx at index 0..4.
    pub responses: [AtomicU64; 5],
    /// Latency histogram (non-cumulative per bucket; the last slot is +Inf).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of latencies in microseconds.
    sum_us: AtomicU64,
    /// Requests retried on another instance after a failed connect.
    pub retries: AtomicU64,
    /// L4 connections accepted on the service's VIPs.
    pub l4_connections: AtomicU64,
}

impl ServiceMetrics {
    /// Records one response.
    pub fn observe(&self, status: u16, took: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

/// All counters of a proxy.
#[derive(Debug, Default)]
pub struct Metrics {
    services: Mutex<BTreeMap<String, Arc<ServiceMetrics>>>,
    /// Requests answered 404 (no route).
    pub no_route: AtomicU64,
    /// Requests rejected before routing (bad request, body too large).
    pub rejected: AtomicU64,
    /// Routing tables built.
    pub tables: AtomicU64,
}

impl Metrics {
    /// The counters of `service`, created when new. Counters are kept for the life of the
    /// process, as Prometheus expects of a counter.
    pub fn service(&self, service: &str) -> Arc<ServiceMetrics> {
        let mut m = self.services.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(service.to_string()).or_default().clone()
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
            for (i, c) in m.responses.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "berth_proxy_responses_total{{service=\"{s}\",code=\"{}xx\"}} {}",
                    i + 1,
                    c.load(Ordering::Relaxed)
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
                cum += m.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "berth_proxy_request_duration_seconds_bucket{{service=\"{s}\",le=\"{b}\"}} {cum}"
                );
            }
            cum += m.buckets[BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "berth_proxy_request_duration_seconds_bucket{{service=\"{s}\",le=\"+Inf\"}} {cum}"
            );
            let _ = writeln!(
                out,
                "berth_proxy_request_duration_seconds_sum{{service=\"{s}\"}} {}",
                m.sum_us.load(Ordering::Relaxed) as f64 / 1e6
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
        let m = Metrics::default();
        let web = m.service("web");
        web.observe(200, Duration::from_micros(300));
        web.observe(204, Duration::from_millis(3));
        web.observe(503, Duration::from_secs(9));
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
