//! Registry sync: keeps the catalog entries of each container equal to what it should have.
//!
//! Level-triggered: an event only says "look at container X again". Each container has a
//! *desired* key set (from inspecting it) and a *written* key set (what this process believes
//! the registry holds). A job for X makes written equal desired: deletes extra keys, sets new
//! or changed ones (with the TTL), and on a refresh tick refreshes the TTL of the others
//! (`refresh=true`, which does not wake watchers; an expired key is written again).
//!
//! Jobs of one container never run concurrently (a later job is merged and runs next), jobs
//! of different containers run in parallel up to a limit. A failed write leaves the state as
//! far as it got and retries with backoff; every key is one atomic write, so a value is never
//! half written. A full reconciliation seeds *written* from the registry itself (the entries
//! whose `node` is this host and that name a container) and re-inspects every container.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry::client::{Client, ClientError, DeleteOptions, GetOptions, Node, SetOptions};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::error::DockerError;
use crate::model::ServiceValue;

/// Keys (full registry paths) to JSON values.
pub type Entries = BTreeMap<String, String>;

/// What inspecting a container says about its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    /// Exactly these entries (empty: none), and the model errors of ports that were
    /// rejected (logged when they change).
    Desired {
        entries: Entries,
        errors: Vec<String>,
    },
    /// Keep whatever is written but stop refreshing it (`--deregister on-success` after a
    /// failed exit): the entries expire with their TTL.
    Retain,
}

/// What the [`Evaluator`] returns.
pub type EvalFuture = Pin<Box<dyn Future<Output = Result<Evaluation, DockerError>> + Send>>;

/// The inspection step, supplied by the caller: container id and whether it is being
/// stopped -> its evaluation.
pub type Evaluator = Arc<dyn Fn(String, bool) -> EvalFuture + Send + Sync>;

/// One unit of work for a container; jobs that arrive while one runs are merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Job {
    /// Inspect the container again.
    pub reinspect: bool,
    /// Refresh the TTL of entries that are already written.
    pub refresh: bool,
    /// Replace the written set with what the registry holds (reconciliation).
    pub seed: Option<Entries>,
    /// Mark (true) or clear (false) "being stopped".
    pub stopping: Option<bool>,
}

impl Job {
    pub fn reinspect() -> Job {
        Job {
            reinspect: true,
            ..Default::default()
        }
    }

    fn merge(&mut self, other: Job) {
        self.reinspect |= other.reinspect;
        self.refresh |= other.refresh;
        if other.seed.is_some() {
            self.seed = other.seed;
        }
        if other.stopping.is_some() {
            self.stopping = other.stopping;
        }
    }
}

#[derive(Debug, Default)]
struct ContainerState {
    desired: Entries,
    written: Entries,
    retained: bool,
    stopping_since: Option<Instant>,
    failures: u32,
    /// When the pending retry fires (one retry chain per container).
    retry_at: Option<Instant>,
    last_errors: Vec<String>,
}

/// How long a "being stopped" mark holds before the container's state decides again.
const STOPPING_HOLD: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Sched {
    busy: HashSet<String>,
    pending: HashMap<String, Job>,
}

/// Settings of the [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub hostname: String,
    pub prefix: String,
    /// TTL of written entries (None: no TTL).
    pub ttl: Option<i64>,
    pub concurrency: usize,
}

/// The sync engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: EngineConfig,
    client: Client,
    evaluator: Evaluator,
    states: Mutex<HashMap<String, ContainerState>>,
    sched: Mutex<Sched>,
    permits: Semaphore,
    /// False after a registry failure until the next success (logs once per outage).
    registry_ok: AtomicBool,
    /// Set by a registry failure: a full reconciliation is due.
    needs_reconcile: AtomicBool,
    shutdown: CancellationToken,
    reconcile_lock: tokio::sync::Mutex<()>,
}

impl Engine {
    pub fn new(
        cfg: EngineConfig,
        client: Client,
        evaluator: Evaluator,
        shutdown: CancellationToken,
    ) -> Engine {
        let permits = Semaphore::new(cfg.concurrency.max(1));
        Engine {
            inner: Arc::new(Inner {
                cfg,
                client,
                evaluator,
                states: Mutex::new(HashMap::new()),
                sched: Mutex::new(Sched::default()),
                permits,
                registry_ok: AtomicBool::new(true),
                needs_reconcile: AtomicBool::new(false),
                shutdown,
                reconcile_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Queues a job for a container (merged with a pending one).
    pub fn submit(&self, id: &str, job: Job) {
        let run_now = {
            let mut s = self.inner.sched.lock().unwrap();
            if s.busy.contains(id) {
                s.pending.entry(id.to_string()).or_default().merge(job);
                None
            } else {
                s.busy.insert(id.to_string());
                Some(job)
            }
        };
        if let Some(job) = run_now {
            let engine = self.clone();
            let id = id.to_string();
            let span = tracing::info_span!("container", id = %short(&id));
            tokio::spawn(async move { engine.drive(id, job).await }.instrument(span));
        }
    }

    /// Runs jobs for `id` until none is pending.
    async fn drive(&self, id: String, mut job: Job) {
        loop {
            if self.inner.shutdown.is_cancelled() {
                let mut s = self.inner.sched.lock().unwrap();
                s.busy.remove(&id);
                s.pending.remove(&id);
                return;
            }
            {
                let _permit = self.inner.permits.acquire().await;
                self.process(&id, job).await;
            }
            let mut s = self.inner.sched.lock().unwrap();
            match s.pending.remove(&id) {
                Some(next) => job = next,
                None => {
                    s.busy.remove(&id);
                    return;
                }
            }
        }
    }

    /// Queues a job after a delay (retries).
    fn submit_later(&self, id: &str, job: Job, delay: Duration) {
        let engine = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => engine.submit(&id, job),
                _ = engine.inner.shutdown.cancelled() => {}
            }
        });
    }

    async fn process(&self, id: &str, job: Job) {
        let mut st = self
            .inner
            .states
            .lock()
            .unwrap()
            .remove(id)
            .unwrap_or_default();
        if let Some(seed) = job.seed {
            st.written = seed;
        }
        match job.stopping {
            Some(true) => st.stopping_since = Some(Instant::now()),
            Some(false) => st.stopping_since = None,
            None => {}
        }
        let mut retry = false;
        if job.reinspect {
            let stopping = st
                .stopping_since
                .is_some_and(|t| t.elapsed() < STOPPING_HOLD);
            match (self.inner.evaluator)(id.to_string(), stopping).await {
                Ok(Evaluation::Desired { entries, errors }) => {
                    st.desired = entries;
                    st.retained = false;
                    if st.last_errors != errors {
                        for e in &errors {
                            warn!("{e}; nothing registered for it");
                        }
                        st.last_errors = errors;
                    }
                }
                Ok(Evaluation::Retain) => {
                    st.desired = st.written.clone();
                    st.retained = true;
                }
                Err(e) => {
                    warn!(error = %e, "cannot inspect the container; keeping its entries as they are and retrying");
                    retry = true;
                }
            }
        }
        match self.sync_keys(&mut st, job.refresh).await {
            Ok(()) => {
                if !self.inner.registry_ok.swap(true, Ordering::Relaxed) {
                    info!("registry reachable again");
                }
            }
            Err(e) => {
                retry = true;
                if e.is_unavailable() {
                    self.inner.needs_reconcile.store(true, Ordering::Relaxed);
                    if self.inner.registry_ok.swap(false, Ordering::Relaxed) {
                        warn!(error = %e, "registry unreachable; keeping state and retrying with backoff");
                    } else {
                        debug!(error = %e, "registry still unreachable");
                    }
                } else {
                    warn!(error = %e, "the registry refused a write; retrying with backoff");
                }
            }
        }
        if retry {
            st.failures = st.failures.saturating_add(1);
            let delay = backoff(st.failures);
            let now = Instant::now();
            if st.retry_at.is_none_or(|t| t <= now) {
                st.retry_at = Some(now + delay);
                self.submit_later(id, Job::reinspect(), delay);
            }
        } else {
            st.failures = 0;
            st.retry_at = None;
        }
        if !(st.desired.is_empty()
            && st.written.is_empty()
            && st.stopping_since.is_none()
            && st.last_errors.is_empty()
            && st.retry_at.is_none())
        {
            self.inner.states.lock().unwrap().insert(id.to_string(), st);
        }
    }

    /// Makes the registry hold `desired`; stops at the first failed write.
    async fn sync_keys(&self, st: &mut ContainerState, refresh: bool) -> Result<(), ClientError> {
        let c = &self.inner.client;
        let extra: Vec<String> = st
            .written
            .keys()
            .filter(|k| !st.desired.contains_key(*k))
            .cloned()
            .collect();
        for key in extra {
            match c.delete(&key, DeleteOptions::default()).await {
                Ok(_) => info!(%key, "deregistered"),
                Err(e) if e.is_key_not_found() => debug!(%key, "already gone"),
                Err(e) => return Err(e),
            }
            st.written.remove(&key);
        }
        let ttl = self.inner.cfg.ttl;
        for (key, value) in st.desired.clone() {
            if st.written.get(&key) == Some(&value) {
                if refresh && !st.retained && ttl.is_some() {
                    match refresh_ttl(c, &key, ttl).await {
                        Ok(()) => {}
                        Err(e) if e.is_key_not_found() => {
                            c.set(&key, &value, set_opts(ttl)).await?;
                            info!(%key, "registered again (its entry had expired)");
                        }
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            c.set(&key, &value, set_opts(ttl)).await?;
            info!(%key, %value, "registered");
            st.written.insert(key, value);
        }
        Ok(())
    }

    /// Queues a TTL refresh for every container with live entries.
    pub fn refresh_all(&self) {
        let ids: Vec<String> = self
            .inner
            .states
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| !s.desired.is_empty() && !s.retained)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.submit(
                &id,
                Job {
                    refresh: true,
                    ..Default::default()
                },
            );
        }
    }

    /// Whether a registry failure asked for a full reconciliation.
    pub fn needs_reconcile(&self) -> bool {
        self.inner.needs_reconcile.load(Ordering::Relaxed)
    }

    /// Full reconciliation: reads this node's entries from the registry, then re-inspects
    /// every running container, every container named by an entry and every tracked one.
    pub async fn reconcile(&self, running: Vec<String>) -> Result<(), ClientError> {
        let _guard = self.inner.reconcile_lock.lock().await;
        let started = Instant::now();
        self.inner.needs_reconcile.store(false, Ordering::Relaxed);
        let own = match self.owned_entries().await {
            Ok(o) => o,
            Err(e) => {
                self.inner.needs_reconcile.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        let mut ids: Vec<String> = running;
        ids.extend(own.keys().cloned());
        ids.extend(self.inner.states.lock().unwrap().keys().cloned());
        ids.sort();
        ids.dedup();
        let n_entries: usize = own.values().map(|e| e.len()).sum();
        let mut own = own;
        for id in &ids {
            self.submit(
                id,
                Job {
                    reinspect: true,
                    refresh: true,
                    seed: Some(own.remove(id).unwrap_or_default()),
                    stopping: None,
                },
            );
        }
        info!(
            containers = ids.len(),
            entries = n_entries,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconciling"
        );
        Ok(())
    }

    /// This node's entries under the prefix, grouped by container id.
    async fn owned_entries(&self) -> Result<HashMap<String, Entries>, ClientError> {
        let prefix = &self.inner.cfg.prefix;
        let root = match self
            .inner
            .client
            .get(
                prefix,
                GetOptions {
                    recursive: true,
                    quorum: true,
                    ..Default::default()
                },
            )
            .await
        {
            Ok(r) => r.node,
            Err(e) if e.is_key_not_found() => return Ok(HashMap::new()),
            Err(e) => return Err(e),
        };
        let mut out: HashMap<String, Entries> = HashMap::new();
        let mut stack: Vec<&Node> = vec![&root];
        while let Some(n) = stack.pop() {
            if n.dir {
                stack.extend(n.nodes.iter());
                continue;
            }
            let Some(value) = &n.value else { continue };
            let Ok(v) = serde_json::from_str::<ServiceValue>(value) else {
                continue;
            };
            if v.node.as_deref() != Some(self.inner.cfg.hostname.as_str()) {
                continue;
            }
            let Some(container) = v.container.filter(|c| !c.is_empty()) else {
                continue;
            };
            out.entry(container)
                .or_default()
                .insert(n.key.clone(), value.clone());
        }
        Ok(out)
    }

    /// Number of containers with state (for tests and logs).
    pub fn tracked(&self) -> usize {
        self.inner.states.lock().unwrap().len()
    }
}

fn set_opts(ttl: Option<i64>) -> SetOptions {
    SetOptions {
        ttl,
        ..Default::default()
    }
}

/// Refreshes a key's TTL without changing its value or waking watchers.
pub async fn refresh_ttl(c: &Client, key: &str, ttl: Option<i64>) -> Result<(), ClientError> {
    c.set(
        key,
        "",
        SetOptions {
            ttl,
            refresh: true,
            prev_exist: Some(true),
            ..Default::default()
        },
    )
    .await
    .map(|_| ())
}

/// 200 ms, doubling, at most 10 s.
pub fn backoff(failures: u32) -> Duration {
    let ms = 200u64.saturating_mul(1u64 << failures.saturating_sub(1).min(6));
    Duration::from_millis(ms.min(10_000))
}

/// The first 12 characters of a container id, as `docker ps` shows it.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_merge() {
        let mut a = Job::reinspect();
        a.merge(Job {
            refresh: true,
            stopping: Some(true),
            ..Default::default()
        });
        assert!(a.reinspect && a.refresh && a.stopping == Some(true) && a.seed.is_none());
        a.merge(Job {
            seed: Some(Entries::new()),
            ..Default::default()
        });
        assert_eq!(a.seed, Some(Entries::new()));
        assert_eq!(a.stopping, Some(true));
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(30), Duration::from_secs(10));
        assert_eq!(short("0123456789abcdef"), "0123456789ab");
    }
}
