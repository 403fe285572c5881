//! `berth announce`: the sidekick announcer (fleet's web-discovery unit as a process).
//!
//! Writes one key with a TTL and keeps it alive: the first write sets the value, later ones
//! refresh the TTL every `--interval` (an expired key is written again). With `--check` the key
//! exists only while the check passes; with `--bind-container` only while that container runs,
//! and the announcer withdraws the key and exits when the container stops. On shutdown
//! (SIGTERM/SIGINT) the key is deleted, compare-and-swap on its value so that a newer
//! announcer's value is left alone.

use std::time::{Duration, Instant};

use registry::client::{Client, ClientError, DeleteOptions, SetOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::checks::Check;
use crate::config::{check_prefix, DEFAULT_DOCKER_SOCKET};
use crate::docker::DockerClient;
use crate::error::{DockerError, Error};
use crate::model::{check_instance_id, check_service_name, HttpRoute, Proto, ServiceValue};
use crate::sync::{backoff, refresh_ttl};

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct AnnounceConfig {
    pub endpoints: Vec<String>,
    pub key: String,
    pub value: String,
    /// TTL in seconds (0: none, the key is written once).
    pub ttl: u64,
    /// Time between refreshes.
    pub interval: Duration,
    pub check: Option<Check>,
    pub check_interval: Duration,
    pub check_timeout: Duration,
    /// Follow this container (name or id).
    pub bind_container: Option<String>,
    pub docker_socket: String,
}

impl AnnounceConfig {
    /// A config for `key` = `value` with fleet's defaults (TTL 60 s, every 45 s).
    pub fn new(endpoints: Vec<String>, key: String, value: String) -> AnnounceConfig {
        AnnounceConfig {
            endpoints,
            key,
            value,
            ttl: 60,
            interval: Duration::from_secs(45),
            check: None,
            check_interval: Duration::from_secs(2),
            check_timeout: Duration::from_secs(2),
            bind_container: None,
            docker_socket: DEFAULT_DOCKER_SOCKET.to_string(),
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        check_prefix(&self.key).map_err(|_| {
            Error::Config(format!(
                "--key {:?} must be an absolute key such as /services/web/host1",
                self.key
            ))
        })?;
        if self.value.is_empty() {
            return Err(Error::Config("--value must not be empty".into()));
        }
        if self.interval.is_zero() {
            return Err(Error::Config("--interval must be at least 1 second".into()));
        }
        if self.ttl > 0 && self.interval >= Duration::from_secs(self.ttl) {
            return Err(Error::Config(format!(
                "--interval ({}s) must be shorter than --ttl ({}s), or the key expires between refreshes",
                self.interval.as_secs(),
                self.ttl
            )));
        }
        Ok(())
    }
}

/// The `--service/--host/--port` form: builds the SPEC §3 key and value.
#[derive(Debug, Clone, Default)]
pub struct ServiceSpec {
    pub prefix: String,
    pub service: String,
    /// Instance id (default `<hostname>:<container or service>:<port>[:udp]`).
    pub id: Option<String>,
    pub host: String,
    pub port: u16,
    pub hostname: String,
    pub container: Option<String>,
    pub tags: Vec<String>,
    pub color: Option<String>,
    pub http_domain: Option<String>,
    pub http_path: Option<String>,
    pub proto: Option<Proto>,
    pub weight: Option<u32>,
}

impl ServiceSpec {
    /// `(key, value)`, or a clear error for an invalid name, id, color or path.
    pub fn entry(&self) -> Result<(String, String), Error> {
        check_prefix(&self.prefix)?;
        check_service_name(&self.service)
            .map_err(|r| Error::Config(format!("--service {:?}: {r}", self.service)))?;
        if self.port == 0 {
            return Err(Error::Config("--port must be between 1 and 65535".into()));
        }
        if self.host.is_empty() || self.host.contains(['/', ' ']) {
            return Err(Error::Config(format!(
                "--host {:?} must be an address or host name",
                self.host
            )));
        }
        let id = match &self.id {
            Some(id) => id.clone(),
            None => {
                let who = self.container.as_deref().unwrap_or(&self.service);
                let who = who.trim_start_matches('/');
                let mut id = format!("{}:{}:{}", self.hostname, who, self.port);
                if self.proto == Some(Proto::Udp) {
                    id.push_str(":udp");
                }
                id
            }
        };
        check_instance_id(&id).map_err(|r| Error::Config(format!("instance id {id:?}: {r}")))?;
        if let Some(c) = &self.color {
            if c != "blue" && c != "green" {
                return Err(Error::Config(format!(
                    "--color {c:?} must be \"blue\" or \"green\""
                )));
            }
        }
        if let Some(p) = &self.http_path {
            if !p.starts_with('/') {
                return Err(Error::Config(format!(
                    "--http-path {p:?} must start with '/'"
                )));
            }
        }
        let http = (self.http_domain.is_some() || self.http_path.is_some()).then(|| HttpRoute {
            domain: self.http_domain.clone(),
            path: self.http_path.clone(),
        });
        let value = ServiceValue {
            host: self.host.clone(),
            port: self.port,
            tags: self.tags.clone(),
            color: self.color.clone(),
            node: Some(self.hostname.clone()),
            // No `container`: entries naming a container belong to the registrator, which
            // reconciles them; the announcer's entry is its own.
            container: None,
            proto: Some(self.proto.unwrap_or(Proto::Tcp)),
            http,
            weight: self.weight,
        };
        Ok((
            format!(
                "{}/{}/{}",
                self.prefix.trim_end_matches('/'),
                self.service,
                id
            ),
            value.to_json(),
        ))
    }
}

/// State of the bound container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// Not known yet (Docker not reached).
    Unknown,
    /// Exists but does not run (yet).
    Waiting,
    Running,
    /// Stopped after it ran, or removed: withdraw and exit.
    Gone,
    /// Did not exist at start.
    Missing,
}

/// Runs the announcer until the bound container stops or `shutdown` fires; the key is
/// withdrawn in both cases.
pub async fn run(cfg: AnnounceConfig, shutdown: CancellationToken) -> Result<(), Error> {
    cfg.validate()?;
    let client = Client::new(&cfg.endpoints)?;
    let stop_tasks = shutdown.child_token();
    let _stop_guard = stop_tasks.clone().drop_guard();

    let (bound_tx, mut bound_rx) = watch::channel(if cfg.bind_container.is_some() {
        Bound::Unknown
    } else {
        Bound::Running
    });
    if let Some(name) = cfg.bind_container.clone() {
        tokio::spawn(follow_container(
            cfg.docker_socket.clone(),
            name,
            bound_tx,
            stop_tasks.clone(),
        ));
    }
    let (check_tx, mut check_rx) = watch::channel(cfg.check.is_none());
    if let Some(check) = cfg.check.clone() {
        tokio::spawn(run_check(
            check,
            cfg.check_interval,
            cfg.check_timeout,
            check_tx,
            stop_tasks.clone(),
        ));
    }

    let ttl = (cfg.ttl > 0).then_some(cfg.ttl as i64);
    let mut announced = false;
    let mut failures = 0u32;
    let mut next_due = Instant::now();
    let mut registry_ok = true;
    info!(key = %cfg.key, value = %cfg.value, ttl = cfg.ttl, interval_s = cfg.interval.as_secs_f64(), "announcer started");
    loop {
        let bound = *bound_rx.borrow_and_update();
        let healthy = *check_rx.borrow_and_update();
        match bound {
            Bound::Missing => {
                return Err(Error::NoSuchContainer(
                    cfg.bind_container.clone().unwrap_or_default(),
                ))
            }
            Bound::Gone => {
                info!(container = ?cfg.bind_container, "bound container stopped; withdrawing and exiting");
                withdraw(&client, &cfg.key, &cfg.value, announced).await;
                return Ok(());
            }
            _ => {}
        }
        let want = bound == Bound::Running && healthy;
        let now = Instant::now();
        if want && now >= next_due {
            match publish(&client, &cfg.key, &cfg.value, ttl, announced).await {
                Ok(()) => {
                    if !announced {
                        info!(key = %cfg.key, "announced");
                    }
                    if !registry_ok {
                        info!("registry reachable again");
                        registry_ok = true;
                    }
                    announced = true;
                    failures = 0;
                    next_due = now + cfg.interval;
                }
                Err(e) => {
                    failures += 1;
                    if registry_ok || !e.is_unavailable() {
                        warn!(key = %cfg.key, error = %e, "cannot announce; retrying");
                    }
                    registry_ok = !e.is_unavailable();
                    announced = false;
                    next_due = now + backoff(failures).min(cfg.interval);
                }
            }
        } else if !want && announced {
            info!(key = %cfg.key, reason = if bound != Bound::Running { "container not running" } else { "check failing" }, "withdrawing");
            withdraw(&client, &cfg.key, &cfg.value, true).await;
            announced = false;
            next_due = Instant::now();
        }
        let sleep_until = if want {
            next_due
        } else {
            Instant::now() + Duration::from_secs(3600)
        };
        tokio::select! {
            _ = shutdown.cancelled() => {
                withdraw(&client, &cfg.key, &cfg.value, announced).await;
                info!(key = %cfg.key, "stopped");
                return Ok(());
            }
            r = bound_rx.changed() => {
                let done = matches!(*bound_rx.borrow(), Bound::Gone | Bound::Missing);
                if r.is_err() && !done {
                    withdraw(&client, &cfg.key, &cfg.value, announced).await;
                    return Ok(());
                }
            }
            _ = check_rx.changed() => {}
            _ = tokio::time::sleep_until(sleep_until.into()) => {}
        }
        if !want {
            next_due = Instant::now();
        }
    }
}

/// Sets the key (first time, or after it expired) or refreshes its TTL.
async fn publish(
    client: &Client,
    key: &str,
    value: &str,
    ttl: Option<i64>,
    announced: bool,
) -> Result<(), ClientError> {
    if announced && ttl.is_some() {
        match refresh_ttl(client, key, ttl).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_key_not_found() => {
                debug!(%key, "key expired or was removed; writing it again");
            }
            Err(e) => return Err(e),
        }
    }
    if announced && ttl.is_none() {
        return Ok(());
    }
    client
        .set(
            key,
            value,
            SetOptions {
                ttl,
                ..Default::default()
            },
        )
        .await
        .map(|_| ())
}

/// Deletes the key if it still holds our value.
async fn withdraw(client: &Client, key: &str, value: &str, announced: bool) {
    let r = client
        .delete(
            key,
            DeleteOptions {
                prev_value: Some(value.to_string()),
                ..Default::default()
            },
        )
        .await;
    match r {
        Ok(_) => info!(%key, "withdrawn"),
        Err(e) if e.is_key_not_found() => debug!(%key, "already gone"),
        Err(e) if e.etcd_code() == Some(registry::client::codes::TEST_FAILED) => {
            info!(%key, "the key holds another value now; left alone")
        }
        Err(e) if announced => {
            warn!(%key, error = %e, "cannot withdraw; the key expires with its TTL")
        }
        Err(e) => debug!(%key, error = %e, "withdraw failed"),
    }
}

async fn run_check(
    check: Check,
    every: Duration,
    timeout: Duration,
    tx: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut last: Option<bool> = None;
    loop {
        let r = check.run(timeout).await;
        let ok = r.is_ok();
        if last != Some(ok) {
            last = Some(ok);
            match &r {
                Ok(()) => info!(check = %check, "check passes"),
                Err(e) => warn!(check = %check, error = %e, "check fails"),
            }
        }
        tx.send_replace(ok);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Follows a container through Docker events; reconnects with backoff.
async fn follow_container(
    socket: String,
    name: String,
    tx: watch::Sender<Bound>,
    stop: CancellationToken,
) {
    use futures::StreamExt;
    let mut failures = 0u32;
    let mut first = true;
    let mut ran = false;
    loop {
        let docker = match DockerClient::connect(&socket).await {
            Ok(d) => d,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    warn!(error = %e, "cannot reach Docker; retrying (the announcement keeps its last state)");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff(failures)) => continue,
                }
            }
        };
        let since = now_unix() - 1;
        let mut events = Box::pin(docker.container_events(&name, since));
        let state = |docker: &DockerClient| {
            let docker = docker.clone();
            let name = name.clone();
            async move { docker.inspect(&name).await }
        };
        let update = |r: Result<Option<crate::model::ContainerInfo>, DockerError>,
                      first: &mut bool,
                      ran: &mut bool|
         -> Result<bool, DockerError> {
            let b = match r? {
                None if *first => Bound::Missing,
                None => Bound::Gone,
                Some(c) if c.running => {
                    *ran = true;
                    Bound::Running
                }
                Some(_) if *ran => Bound::Gone,
                Some(_) => Bound::Waiting,
            };
            *first = false;
            if b == Bound::Waiting && *tx.borrow() != Bound::Waiting {
                info!(container = %name, "waiting for the container to run");
            }
            tx.send_replace(b);
            Ok(matches!(b, Bound::Gone | Bound::Missing))
        };
        match update(state(&docker).await, &mut first, &mut ran) {
            Ok(true) => return,
            Ok(false) => failures = 0,
            Err(e) => {
                failures += 1;
                warn!(error = %e, "cannot inspect the bound container; retrying");
                tokio::time::sleep(backoff(failures)).await;
                continue;
            }
        }
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = events.next() => ev,
            };
            match ev {
                Some(Ok(None)) => continue,
                Some(Ok(Some(_))) => match update(state(&docker).await, &mut first, &mut ran) {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => {
                        warn!(error = %e, "cannot inspect the bound container; reconnecting");
                        break;
                    }
                },
                Some(Err(e)) => {
                    warn!(error = %e, "Docker event stream lost; reconnecting");
                    break;
                }
                None => {
                    warn!("Docker event stream ended; reconnecting");
                    break;
                }
            }
        }
        failures += 1;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff(failures)) => {}
        }
    }
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            prefix: "/services".into(),
            service: "website".into(),
            host: "10.0.0.5".into(),
            port: 8080,
            hostname: "core-01".into(),
            ..Default::default()
        }
    }

    #[test]
    fn builds_spec_entries() {
        let (k, v) = spec().entry().unwrap();
        assert_eq!(k, "/services/website/core-01:website:8080");
        assert_eq!(
            v,
            r#"{"host":"10.0.0.5","port":8080,"tags":[],"node":"core-01","proto":"tcp"}"#
        );
        let mut s = spec();
        s.container = Some("apache1".into());
        s.color = Some("blue".into());
        s.http_domain = Some("example.com".into());
        let (k, v) = s.entry().unwrap();
        assert_eq!(k, "/services/website/core-01:apache1:8080");
        assert!(
            v.contains(r#""color":"blue""#) && v.contains(r#""http":{"domain":"example.com"}"#)
        );
    }

    #[test]
    fn rejects_bad_specs() {
        let mut s = spec();
        s.service = "Web_Site".into();
        assert!(s.entry().unwrap_err().to_string().contains("--service"));
        let mut s = spec();
        s.id = Some("a b".into());
        assert!(s.entry().is_err());
        let mut s = spec();
        s.color = Some("red".into());
        assert!(s.entry().is_err());
        let mut s = spec();
        s.port = 0;
        assert!(s.entry().is_err());
    }

    #[test]
    fn validates_config() {
        let c = AnnounceConfig::new(vec![], "/services/w/1".into(), "{}".into());
        assert!(c.validate().is_ok());
        let mut c2 = c.clone();
        c2.interval = Duration::from_secs(60);
        assert!(c2
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--interval"));
        let mut c3 = c.clone();
        c3.key = "services/w".into();
        assert!(c3.validate().is_err());
        let mut c4 = c;
        c4.value = String::new();
        assert!(c4.validate().is_err());
    }
}
