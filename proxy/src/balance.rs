//! Choosing an instance: round-robin or least-connections over the instances that are not
//! ejected. An instance is ejected after a failed connect and re-admitted after a backoff that
//! doubles with each consecutive failure (passive health); an active check, when configured,
//! ejects and re-admits the same way. When every instance is ejected the least recently
//! ejected one is tried anyway: a guess beats a certain 503.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::shard::{self, Padded, Shard};
use crate::table::{Backend, Pool};

/// How the proxy spreads requests over a route's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Each instance in turn.
    RoundRobin,
    /// The instance with the fewest requests in flight (ties go round-robin).
    LeastConn,
}

/// Milliseconds on a process-wide monotonic clock.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// What one shard ([`crate::shard`]) counts of an instance's load.
#[derive(Debug, Default)]
struct Load {
    /// Requests (or L4 connections) in flight.
    in_flight: AtomicUsize,
    /// Requests or connections sent.
    sent: AtomicU64,
}

/// Health and load of one instance address.
#[derive(Debug)]
pub struct Upstream {
    /// Written by every request: one slot per shard, added up when read.
    load: Box<[Padded<Load>]>,
    /// Ejected until this [`now_ms`] time; 0 when admitted.
    ejected_until: AtomicU64,
    /// Consecutive failures.
    failures: AtomicU32,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream::new(1)
    }
}

/// Longest ejection after repeated failures.
pub const EJECT_MAX: Duration = Duration::from_secs(30);

impl Upstream {
    /// An admitted, idle instance whose load is counted in `shards` slots.
    pub fn new(shards: usize) -> Upstream {
        Upstream {
            load: shard::slots(shards),
            ejected_until: AtomicU64::new(0),
            failures: AtomicU32::new(0),
        }
    }

    /// Requests (or L4 connections) in flight, over all shards.
    pub fn in_flight(&self) -> usize {
        self.load
            .iter()
            .map(|l| l.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    /// Requests or connections sent, over all shards.
    pub fn sent(&self) -> u64 {
        self.load
            .iter()
            .map(|l| l.sent.load(Ordering::Relaxed))
            .sum()
    }

    /// Whether the instance is ejected at `now`.
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Records a failure (refused or timed-out connect, failed check) at `now`: ejects for
    /// `base` doubled for each earlier consecutive failure, at most [`EJECT_MAX`].
    pub fn fail(&self, now: u64, base: Duration) -> Duration {
        let n = self.failures.fetch_add(1, Ordering::Relaxed).min(16);
        let d = base.saturating_mul(1 << n).min(EJECT_MAX);
        self.ejected_until
            .store(now + d.as_millis() as u64, Ordering::Relaxed);
        d
    }

    /// Records a success: the instance is admitted and its failure count reset.
    pub fn succeed(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejected_until.load(Ordering::Relaxed) != 0 {
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }

    /// When the current ejection ends (0 when admitted).
    pub fn ejected_until(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
    }
}

/// Per-address [`Upstream`]s, kept across routing tables so health and load follow an
/// address from one table to the next.
#[derive(Debug)]
pub struct Upstreams {
    map: HashMap<SocketAddr, Arc<Upstream>>,
    /// Load slots of each [`Upstream`].
    shards: usize,
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams::new(1)
    }
}

impl Upstreams {
    /// No addresses yet; each will count its load in `shards` slots.
    pub fn new(shards: usize) -> Upstreams {
        Upstreams {
            map: HashMap::new(),
            shards,
        }
    }

    /// The state of `addr`, created when new.
    pub fn get(&mut self, addr: SocketAddr) -> Arc<Upstream> {
        let shards = self.shards;
        self.map
            .entry(addr)
            .or_insert_with(|| Arc::new(Upstream::new(shards)))
            .clone()
    }

    /// Keeps only the addresses in `used`.
    pub fn retain(&mut self, used: &[SocketAddr]) {
        self.map.retain(|a, _| used.contains(a));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Picks an instance of `pool` at `now`, skipping those in `tried` (earlier attempts of the
/// same request). `None` when the pool has nothing left to try.
pub fn pick<'a>(
    pool: &'a Pool,
    policy: Policy,
    now: u64,
    tried: &[SocketAddr],
) -> Option<&'a Backend> {
    let n = pool.backends.len();
    if n == 0 {
        return None;
    }
    let start = pool.cursor.fetch_add(1, Ordering::Relaxed);
    let candidates = (0..n)
        .map(|k| &pool.backends[(start + k) % n])
        .filter(|b| !tried.contains(&b.addr));
    let mut best: Option<(&Backend, usize)> = None;
    let mut fallback: Option<&Backend> = None;
    for b in candidates {
        if b.upstream.is_ejected(now) {
            if fallback.is_none_or(|f| b.upstream.ejected_until() < f.upstream.ejected_until()) {
                fallback = Some(b);
            }
            continue;
        }
        match policy {
            Policy::RoundRobin => return Some(b),
            Policy::LeastConn => {
                let load = b.upstream.in_flight();
                if best.is_none_or(|(_, least)| load < least) {
                    best = Some((b, load));
                    if load == 0 {
                        break;
                    }
                }
            }
        }
    }
    best.map(|(b, _)| b).or(fallback)
}

/// Counts a request or connection in flight on an upstream, in `shard`'s slot, while alive.
pub struct InFlight<'a>(&'a Load);

impl<'a> InFlight<'a> {
    pub fn new(u: &'a Upstream, shard: Shard) -> InFlight<'a> {
        let load = shard::slot(&u.load, shard);
        load.in_flight.fetch_add(1, Ordering::Relaxed);
        load.sent.fetch_add(1, Ordering::Relaxed);
        InFlight(load)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn pool(addrs: &[&str], ups: &mut Upstreams) -> Pool {
        Pool {
            service: Arc::from("s"),
            backends: addrs
                .iter()
                .map(|a| {
                    let addr: SocketAddr = a.parse().unwrap();
                    Backend {
                        id: Arc::from(*a),
                        addr,
                        upstream: ups.get(addr),
                    }
                })
                .collect(),
            cursor: AtomicUsize::new(0),
            metrics: Metrics::default().service("s"),
            shard: 0,
        }
    }

    #[test]
    fn round_robin_cycles_and_skips_ejected() {
        let mut ups = Upstreams::default();
        let p = pool(&["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"], &mut ups);
        let seq: Vec<String> = (0..6)
            .map(|_| {
                pick(&p, Policy::RoundRobin, 10, &[])
                    .unwrap()
                    .addr
                    .to_string()
            })
            .collect();
        assert_eq!(seq[0..3], seq[3..6]);
        let mut uniq = seq[0..3].to_vec();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 3);
        let d = p.backends[1].upstream.fail(10, Duration::from_millis(100));
        assert_eq!(d, Duration::from_millis(100));
        for _ in 0..6 {
            assert_ne!(
                pick(&p, Policy::RoundRobin, 50, &[]).unwrap().addr,
                p.backends[1].addr
            );
        }
        // Re-admitted when the backoff has passed.
        let seen: Vec<SocketAddr> = (0..3)
            .map(|_| pick(&p, Policy::RoundRobin, 111, &[]).unwrap().addr)
            .collect();
        assert!(seen.contains(&p.backends[1].addr));
    }

    #[test]
    fn backoff_doubles_and_success_resets() {
        let u = Upstream::default();
        let base = Duration::from_millis(100);
        assert_eq!(u.fail(0, base), Duration::from_millis(100));
        assert_eq!(u.fail(0, base), Duration::from_millis(200));
        assert_eq!(u.fail(0, base), Duration::from_millis(400));
        for _ in 0..20 {
            u.fail(0, base);
        }
        assert_eq!(u.fail(0, base), EJECT_MAX);
        u.succeed();
        assert!(!u.is_ejected(1));
        assert_eq!(u.fail(0, base), Duration::from_millis(100));
    }

    #[test]
    fn all_ejected_tries_least_recently_ejected() {
        let mut ups = Upstreams::default();
        let p = pool(&["10.0.0.1:1", "10.0.0.2:1"], &mut ups);
        p.backends[0]
            .upstream
            .fail(100, Duration::from_millis(1000));
        p.backends[1].upstream.fail(0, Duration::from_millis(1000));
        assert_eq!(
            pick(&p, Policy::RoundRobin, 200, &[]).unwrap().addr,
            p.backends[1].addr
        );
    }

    #[test]
    fn tried_instances_are_skipped() {
        let mut ups = Upstreams::default();
        let p = pool(&["10.0.0.1:1", "10.0.0.2:1"], &mut ups);
        let a = p.backends[0].addr;
        let b = p.backends[1].addr;
        assert_eq!(pick(&p, Policy::RoundRobin, 1, &[a]).unwrap().addr, b);
        assert!(pick(&p, Policy::RoundRobin, 1, &[a, b]).is_none());
        assert!(pick(&pool(&[], &mut ups), Policy::LeastConn, 1, &[]).is_none());
    }

    #[test]
    fn least_conn_prefers_idle() {
        // Loads counted by different shards add up.
        let mut ups = Upstreams::new(2);
        let p = pool(&["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"], &mut ups);
        let _g1 = InFlight::new(&p.backends[0].upstream, 0);
        let _g2 = InFlight::new(&p.backends[0].upstream, 1);
        let _g3 = InFlight::new(&p.backends[2].upstream, 1);
        assert_eq!(p.backends[0].upstream.in_flight(), 2);
        for _ in 0..5 {
            assert_eq!(
                pick(&p, Policy::LeastConn, 1, &[]).unwrap().addr,
                p.backends[1].addr
            );
        }
        drop(_g3);
        assert_eq!(p.backends[2].upstream.in_flight(), 0);
        assert_eq!(p.backends[2].upstream.sent(), 1);
        let picks: Vec<SocketAddr> = (0..4)
            .map(|_| pick(&p, Policy::LeastConn, 1, &[]).unwrap().addr)
            .collect();
        assert!(!picks.contains(&p.backends[0].addr));
        assert!(picks.contains(&p.backends[2].addr));
    }
}
