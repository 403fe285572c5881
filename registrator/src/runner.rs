//! The registrator process: Docker connection and event loop, reconciliation after every
//! gap, TTL refresh and periodic resync, all feeding the [`Engine`].

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use registry::client::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::announce::now_unix;
use crate::config::{check_hostname, default_host_ip, system_hostname, Config, Deregister};
use crate::docker::DockerClient;
use crate::error::{DockerError, Error};
use crate::model::{eligibility, registrations, ContainerInfo, Eligibility, ModelConfig};
use crate::sync::{backoff, Engine, EngineConfig, Entries, EvalFuture, Evaluation, Evaluator, Job};

/// Turns an inspection (None: the container is gone) into the container's entries.
pub fn evaluate(
    info: Option<&ContainerInfo>,
    stopping: bool,
    model: &ModelConfig,
    deregister: Deregister,
    prefix: &str,
) -> Evaluation {
    let empty = Evaluation::Desired {
        entries: Entries::new(),
        errors: Vec::new(),
    };
    let Some(c) = info else { return empty };
    match eligibility(c) {
        Eligibility::Withdraw(_) => {
            if !c.running && deregister == Deregister::OnSuccess && c.exit_code != 0 {
                return Evaluation::Retain;
            }
            return empty;
        }
        Eligibility::Register if stopping && deregister == Deregister::Always => return empty,
        Eligibility::Register => {}
    }
    let mut entries = Entries::new();
    let mut errors = Vec::new();
    for r in registrations(c, model) {
        match r {
            Ok(reg) => {
                entries.insert(reg.key(prefix), reg.value.to_json());
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    Evaluation::Desired { entries, errors }
}

type Slot = Arc<RwLock<Option<DockerClient>>>;

/// Runs the registrator until `shutdown` fires. Docker and registry outages are retried
/// forever; only an invalid configuration returns an error.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    config.validate()?;
    let hostname = match &config.hostname {
        Some(h) => h.clone(),
        None => {
            let h = system_hostname();
            check_hostname(&h).map_err(|e| {
                Error::Config(format!(
                    "{e}; the system host name cannot be used, pass --hostname"
                ))
            })?;
            h
        }
    };
    let client = Client::new(&config.endpoints)?;
    let model = ModelConfig {
        hostname: hostname.clone(),
        ip: config.ip.clone(),
        default_ip: default_host_ip(),
        internal: config.internal,
        explicit: config.explicit,
        force_tags: config.tags.clone(),
    };
    let prefix = config.prefix.trim_end_matches('/').to_string();
    info!(
        node = %hostname,
        endpoints = %config.endpoints.join(","),
        docker = %config.docker_socket,
        prefix = %prefix,
        ttl = config.ttl,
        internal = config.internal,
        explicit = config.explicit,
        default_ip = %model.default_ip,
        "registrator starting"
    );
    let slot: Slot = Arc::new(RwLock::new(None));
    let evaluator: Evaluator = {
        let slot = slot.clone();
        let model = Arc::new(model);
        let deregister = config.deregister;
        let prefix = prefix.clone();
        let socket = config.docker_socket.clone();
        Arc::new(move |id: String, stopping: bool| -> EvalFuture {
            let docker = slot.read().unwrap().clone();
            let model = model.clone();
            let prefix = prefix.clone();
            let socket = socket.clone();
            Box::pin(async move {
                if stopping && deregister == Deregister::Always {
                    // Stopping, dead or destroyed: withdraw without waiting on Docker.
                    return Ok(evaluate(None, true, &model, deregister, &prefix));
                }
                let docker = docker.ok_or_else(|| DockerError::Unreachable {
                    socket,
                    detail: "not connected".into(),
                })?;
                let info = docker.inspect(&id).await?;
                Ok(evaluate(
                    info.as_ref(),
                    stopping,
                    &model,
                    deregister,
                    &prefix,
                ))
            })
        })
    };
    let engine = Engine::new(
        EngineConfig {
            hostname,
            prefix,
            ttl: (config.ttl > 0).then_some(config.ttl as i64),
            concurrency: config.concurrency,
        },
        client,
        evaluator,
        shutdown.clone(),
    );
    let maintenance = tokio::spawn(
        maintain(
            engine.clone(),
            slot.clone(),
            config.clone(),
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("maintenance")),
    );
    event_loop(engine, slot, &config, shutdown.clone())
        .instrument(tracing::info_span!("events"))
        .await;
    let _ = maintenance.await;
    info!("registrator stopped");
    Ok(())
}

/// Connects, reconciles, follows events; on any gap, reconnects with backoff and does it again.
async fn event_loop(engine: Engine, slot: Slot, config: &Config, shutdown: CancellationToken) {
    let mut failures = 0u32;
    let mut connected_once = false;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let docker = match DockerClient::connect(&config.docker_socket).await {
            Ok(d) => d,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    warn!(error = %e, "Docker unreachable; keeping the catalog as it is and retrying with backoff");
                } else {
                    debug!(error = %e, "Docker still unreachable");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff(failures)) => continue,
                }
            }
        };
        if connected_once {
            info!("Docker reachable again; reconciling");
        }
        connected_once = true;
        *slot.write().unwrap() = Some(docker.clone());
        // Events from a second before the reconciliation's listing: nothing falls in between.
        let since = now_unix() - 1;
        let mut events = Box::pin(docker.triggers(since));
        let reconcile = tokio::spawn(reconcile_until_done(
            engine.clone(),
            docker.clone(),
            shutdown.clone(),
        ));
        let connected_at = Instant::now();
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => { reconcile.abort(); return; }
                ev = events.next() => ev,
            };
            match ev {
                Some(Ok(Some(t))) => {
                    debug!(container = %crate::sync::short(&t.container), action = %t.action, "event");
                    engine.submit(
                        &t.container,
                        Job {
                            reinspect: true,
                            stopping: t.stopping,
                            ..Default::default()
                        },
                    );
                }
                Some(Ok(None)) => {}
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
        reconcile.abort();
        if connected_at.elapsed() > Duration::from_secs(10) {
            failures = 0;
        }
        failures += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff(failures)) => {}
        }
    }
}

/// Lists the running containers and reconciles; retries with backoff until it succeeds.
async fn reconcile_until_done(engine: Engine, docker: DockerClient, shutdown: CancellationToken) {
    let mut failures = 0u32;
    loop {
        let r = match docker.running().await {
            Ok(running) => engine.reconcile(running).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(()) => return,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    warn!(error = %e, "reconciliation failed; retrying with backoff");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff(failures)) => {}
                }
            }
        }
    }
}

/// TTL refreshes, periodic resync, and the reconciliation a registry outage asks for.
async fn maintain(engine: Engine, slot: Slot, config: Config, shutdown: CancellationToken) {
    let tick = Duration::from_millis(500);
    let mut next_refresh = config.ttl_refresh_interval().map(|d| Instant::now() + d);
    let mut next_resync =
        (config.resync > 0).then(|| Instant::now() + Duration::from_secs(config.resync));
    let mut next_retry = Instant::now();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        let now = Instant::now();
        if let Some(t) = next_refresh {
            if now >= t {
                engine.refresh_all();
                next_refresh = config.ttl_refresh_interval().map(|d| now + d);
            }
        }
        let docker = slot.read().unwrap().clone();
        let Some(docker) = docker else { continue };
        let resync_due = next_resync.is_some_and(|t| now >= t);
        if (engine.needs_reconcile() && now >= next_retry) || resync_due {
            if resync_due {
                next_resync = Some(now + Duration::from_secs(config.resync));
            }
            let r = match docker.running().await {
                Ok(running) => engine.reconcile(running).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match r {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    debug!(error = %e, "reconciliation failed");
                    next_retry = now + backoff(failures);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Binding, PortProto};

    fn model() -> ModelConfig {
        ModelConfig {
            hostname: "h".into(),
            ip: Some("127.0.0.1".into()),
            default_ip: "10.0.0.1".into(),
            internal: false,
            explicit: false,
            force_tags: vec![],
        }
    }

    fn web(running: bool, exit_code: i64) -> ContainerInfo {
        let p = PortProto::parse("80/tcp").unwrap();
        ContainerInfo {
            id: "c1".into(),
            name: "web".into(),
            image: "busybox".into(),
            running,
            exit_code,
            ports: vec![p],
            published: [(
                p,
                vec![Binding {
                    host_ip: "0.0.0.0".into(),
                    host_port: 8080,
                }],
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    fn keys(e: Evaluation) -> Vec<String> {
        match e {
            Evaluation::Desired { entries, .. } => entries.into_keys().collect(),
            Evaluation::Retain => vec!["<retain>".into()],
        }
    }

    #[test]
    fn evaluation() {
        let m = model();
        let a = Deregister::Always;
        assert_eq!(
            keys(evaluate(Some(&web(true, 0)), false, &m, a, "/services")),
            vec!["/services/busybox/h:web:80"]
        );
        assert!(keys(evaluate(Some(&web(true, 0)), true, &m, a, "/services")).is_empty());
        assert!(keys(evaluate(None, false, &m, a, "/services")).is_empty());
        assert!(keys(evaluate(Some(&web(false, 1)), false, &m, a, "/services")).is_empty());
        let os = Deregister::OnSuccess;
        assert_eq!(
            evaluate(Some(&web(false, 1)), false, &m, os, "/services"),
            Evaluation::Retain
        );
        assert!(keys(evaluate(Some(&web(false, 0)), false, &m, os, "/services")).is_empty());
        // on-success ignores the stopping mark (the exit code decides).
        assert_eq!(
            keys(evaluate(Some(&web(true, 0)), true, &m, os, "/services")).len(),
            1
        );
    }
}
