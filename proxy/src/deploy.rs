//! `berth deploy`: blue-green deploys of a service's containers.
//!
//! A deploy starts the next color's containers (`SERVICE_NAME`, `SERVICE_COLOR` set, so the
//! registrator registers them with their color), waits until every one runs, passes its
//! Docker health check if it has one, and is registered in the catalog, then flips
//! `/_berth/routes/<service>` to the new color by compare-and-swap (the proxy and DNS follow
//! within milliseconds), waits for requests in flight on the old color to drain, and stops
//! the old color (`--keep-old` leaves it running for an instant `--rollback`). If any new
//! container fails to start, the route is not touched and the new containers are removed.
//!
//! Containers carry labels `berth.service`, `berth.color` and are named
//! `<service>-<color>-<n>`.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HealthStatusEnum, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use registry::catalog::{is_dns_label, Instance};
use registry::client::{codes, Client, GetOptions, SetOptions};

use crate::error::Error;

/// Label naming the service a container belongs to.
pub const LABEL_SERVICE: &str = "berth.service";
/// Label naming the container's color.
pub const LABEL_COLOR: &str = "berth.color";

/// Flags of `berth deploy`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The service (a DNS label).
    pub service: String,
    /// Image of the new color (required unless --rollback).
    #[arg(long, env = "BERTH_DEPLOY_IMAGE")]
    pub image: Option<String>,
    /// Containers of the new color.
    #[arg(long, env = "BERTH_DEPLOY_REPLICAS", default_value_t = 1)]
    pub replicas: u32,
    /// Container port to publish (on --publish-ip, a port Docker picks); without it every
    /// port the image exposes is published.
    #[arg(long, env = "BERTH_DEPLOY_PORT")]
    pub port: Option<u16>,
    /// Host address published ports bind to.
    #[arg(long, env = "BERTH_DEPLOY_PUBLISH_IP", default_value = "127.0.0.1")]
    pub publish_ip: String,
    /// Environment of the new containers, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Route HTTP requests for this domain to the service (SERVICE_HTTP_DOMAIN).
    #[arg(long, env = "BERTH_DEPLOY_HTTP_DOMAIN")]
    pub http_domain: Option<String>,
    /// Route HTTP requests under this path prefix to the service (SERVICE_HTTP_PATH).
    #[arg(long, env = "BERTH_DEPLOY_HTTP_PATH")]
    pub http_path: Option<String>,
    /// Docker network of the new containers (default: Docker's bridge).
    #[arg(long, env = "BERTH_DEPLOY_NETWORK")]
    pub network: Option<String>,
    /// Seconds to wait for the new color to be running, healthy and registered.
    #[arg(long, env = "BERTH_DEPLOY_TIMEOUT", default_value_t = 60)]
    pub timeout: u64,
    /// Seconds between the flip and stopping the old color (requests in flight finish).
    #[arg(long, env = "BERTH_DEPLOY_DRAIN", default_value_t = 3)]
    pub drain: u64,
    /// Leave the old color running (registered but receiving no traffic) for --rollback.
    #[arg(long)]
    pub keep_old: bool,
    /// Flip the route back to the other color (which must still be running: --keep-old).
    #[arg(long, conflicts_with = "image")]
    pub rollback: bool,
    /// Registry client URLs, comma-separated.
    #[arg(long, env = "BERTH_ENDPOINTS", default_value = "http://127.0.0.1:2379")]
    pub endpoints: String,
    /// Docker's API socket.
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker: String,
    /// Command and arguments of the new containers (after `--`).
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

/// The other color.
pub fn other(color: &str) -> &'static str {
    if color == "blue" {
        "green"
    } else {
        "blue"
    }
}

/// The color a deploy starts: the one that is not serving. Without a route record the
/// serving color is that of the running containers, if they agree on one.
pub fn next_color(active: Option<&str>, running_colors: &[String]) -> &'static str {
    match active {
        Some(c) => other(c),
        None => match running_colors.first() {
            Some(c) if running_colors.iter().all(|x| x == c) => other(c),
            _ => "blue",
        },
    }
}

/// The route record for `color`.
pub fn route_value(color: &str) -> String {
    format!("{{\"active\":\"{color}\"}}")
}

/// The active color in a route record value, as the catalog reads it.
pub fn parse_route(value: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(value) {
        Ok(serde_json::Value::Object(m)) => m.get("active")?.as_str().map(str::to_ascii_lowercase),
        _ => None,
    }
}

/// Validates `KEY=VALUE` environment entries.
pub fn check_env(env: &[String]) -> Result<(), String> {
    for e in env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => {}
            _ => return Err(format!("--env {e:?} is not KEY=VALUE")),
        }
    }
    Ok(())
}

/// Where one new container stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Created,
    Running,
    /// Running, its health check has not passed yet.
    Starting,
    /// Running and healthy (or without a check), not yet in the catalog.
    Unregistered,
    /// In the catalog at this address, but nothing answers HTTP there yet.
    Silent(String),
    /// In the catalog at this address.
    Ready(String),
    Failed(String),
}

/// One line of progress, in the manner of `docker service create`.
pub fn progress_line(ready: usize, total: usize) -> String {
    format!("overall progress: {ready} out of {total} tasks")
}

struct Deployer {
    docker: Docker,
    registry: Client,
    args: Args,
    out: Box<dyn FnMut(&str) + Send>,
}

fn docker_err(e: bollard::errors::Error) -> Error {
    Error::Docker(e.to_string())
}

/// Runs a deploy (or `--rollback`), printing progress through `out`.
pub async fn run(args: Args, out: Box<dyn FnMut(&str) + Send>) -> Result<(), Error> {
    if !is_dns_label(&args.service) {
        return Err(Error::Deploy(format!(
            "service name {:?} is not a DNS label (letters, digits, inner hyphens, at most 63)",
            args.service
        )));
    }
    if !args.rollback && args.image.is_none() {
        return Err(Error::Deploy(
            "--image is required (or --rollback to flip back)".into(),
        ));
    }
    if args.replicas == 0 {
        return Err(Error::Deploy("--replicas must be at least 1".into()));
    }
    check_env(&args.env).map_err(Error::Deploy)?;
    let endpoints = registry::client::split_endpoints(&args.endpoints);
    let registry = Client::new(&endpoints)?;
    let socket = args
        .docker
        .strip_prefix("unix://")
        .unwrap_or(&args.docker)
        .to_string();
    let docker = Docker::connect_with_unix(&socket, 60, bollard::API_DEFAULT_VERSION)
        .map_err(|e| Error::Docker(format!("{socket}: {e}; is Docker running?")))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| Error::Docker(format!("{socket}: {e}; is Docker running?")))?;
    let mut d = Deployer {
        docker,
        registry,
        args,
        out,
    };
    if d.args.rollback {
        d.rollback().await
    } else {
        d.deploy().await
    }
}

/// A container of the service: (id, name, color, running).
type Member = (String, String, String, bool);

impl Deployer {
    fn say(&mut self, line: &str) {
        (self.out)(line);
    }

    fn route_key(&self) -> String {
        format!("/_berth/routes/{}", self.args.service)
    }

    /// The route record: (active color, modifiedIndex), `None` when there is none.
    async fn route(&self) -> Result<Option<(String, u64)>, Error> {
        let opts = GetOptions {
            quorum: true,
            ..Default::default()
        };
        match self.registry.get(&self.route_key(), opts).await {
            Ok(r) => Ok(parse_route(r.node.value.as_deref().unwrap_or(""))
                .map(|c| (c, r.node.modified_index))),
            Err(e) if e.is_key_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Flips the route to `color` if it is still what we read (`prev`).
    async fn flip(&self, prev: Option<u64>, color: &str) -> Result<(), Error> {
        let opts = match prev {
            Some(i) => SetOptions {
                prev_index: Some(i),
                ..Default::default()
            },
            None => SetOptions {
                prev_exist: Some(false),
                ..Default::default()
            },
        };
        match self
            .registry
            .set(&self.route_key(), &route_value(color), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.etcd_code(),
                    Some(codes::TEST_FAILED) | Some(codes::NODE_EXIST)
                ) =>
            {
                Err(Error::Deploy(format!(
                    "{} changed while deploying (another deploy?); the route was left as it is",
                    self.route_key()
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn members(&self) -> Result<Vec<Member>, Error> {
        let mut filters = HashMap::new();
        filters.insert(
            "label",
            vec![format!("{LABEL_SERVICE}={}", self.args.service)],
        );
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(docker_err)?;
        let mut v: Vec<Member> = list
            .into_iter()
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                let name = c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default();
                let running = c.state.map(|s| s.to_string() == "running").unwrap_or(false);
                (
                    c.id.unwrap_or_default(),
                    name,
                    labels.get(LABEL_COLOR).cloned().unwrap_or_default(),
                    running,
                )
            })
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(v)
    }

    async fn remove(&mut self, members: &[Member], why: &str) {
        for (id, name, _, _) in members {
            let stop = StopContainerOptionsBuilder::new().t(10).build();
            let _ = self.docker.stop_container(id, Some(stop)).await;
            let rm = RemoveContainerOptionsBuilder::new().force(true).build();
            match self.docker.remove_container(id, Some(rm)).await {
                Ok(()) => self.say(&format!("{why} {name}")),
                Err(e) => self.say(&format!("could not remove {name}: {e}")),
            }
        }
    }

    async fn deploy(&mut self) -> Result<(), Error> {
        let svc = self.args.service.clone();
        let route = self.route().await?;
        let members = self.members().await?;
        let running: Vec<String> = members
            .iter()
            .filter(|m| m.3)
            .map(|m| m.2.clone())
            .collect();
        let color = next_color(route.as_ref().map(|r| r.0.as_str()), &running);
        let old = other(color);
        // Leftovers of the color we are about to start (a kept or failed earlier deploy).
        let stale: Vec<Member> = members.iter().filter(|m| m.2 == color).cloned().collect();
        if !stale.is_empty() {
            self.remove(&stale, "removed leftover").await;
        }
        let serving = match &route {
            Some((c, _)) => format!("{c} is serving"),
            None if running.is_empty() => "first deploy".to_string(),
            None => format!("{old} is serving (no route record yet)"),
        };
        let image = self.args.image.clone().unwrap_or_default();
        let n = self.args.replicas as usize;
        self.say(&format!(
            "{svc}: deploying {color}, {n} x {image}; {serving}"
        ));
        let mut ids = Vec::new();
        for i in 1..=n {
            let name = format!("{svc}-{color}-{i}");
            match self.create(&name, color).await {
                Ok(id) => ids.push((id, name)),
                Err(e) => {
                    let created: Vec<Member> = ids
                        .iter()
                        .map(|(id, n)| (id.clone(), n.clone(), color.to_string(), true))
                        .collect();
                    self.remove(&created, "removed").await;
                    return Err(Error::Deploy(format!(
                        "{name}: {e}; {serving}, nothing was changed"
                    )));
                }
            }
        }
        let ready = self.wait_ready(&ids).await;
        if let Err(why) = ready {
            let created: Vec<Member> = ids
                .iter()
                .map(|(id, n)| (id.clone(), n.clone(), color.to_string(), true))
                .collect();
            self.remove(&created, "removed").await;
            return Err(Error::Deploy(format!(
                "{why}; the route was not changed ({serving})"
            )));
        }
        self.flip(route.as_ref().map(|r| r.1), color).await?;
        self.say(&format!("route: /_berth/routes/{svc} -> {color}"));
        let old_members: Vec<Member> = members.iter().filter(|m| m.2 == old).cloned().collect();
        if old_members.is_empty() {
            self.say(&format!("{svc}: {color} is serving ({n} instances)"));
            return Ok(());
        }
        if self.args.keep_old {
            self.say(&format!(
                "{svc}: {color} is serving ({n} instances); {old} kept running for --rollback"
            ));
            return Ok(());
        }
        self.say(&format!("draining {old} for {}s", self.args.drain));
        tokio::time::sleep(Duration::from_secs(self.args.drain)).await;
        self.remove(&old_members, "stopped").await;
        self.say(&format!("{svc}: {color} is serving ({n} instances)"));
        Ok(())
    }

    async fn rollback(&mut self) -> Result<(), Error> {
        let svc = self.args.service.clone();
        let Some((active, index)) = self.route().await? else {
            return Err(Error::Deploy(format!(
                "{svc} has no route record: nothing to roll back"
            )));
        };
        let back = other(&active);
        let members = self.members().await?;
        let waiting: Vec<(String, String)> = members
            .iter()
            .filter(|m| m.2 == back && m.3)
            .map(|m| (m.0.clone(), m.1.clone()))
            .collect();
        if waiting.is_empty() {
            return Err(Error::Deploy(format!(
                "no running {back} container of {svc} to roll back to (deploy with --keep-old to keep one); {active} is still serving"
            )));
        }
        self.say(&format!(
            "{svc}: rolling back from {active} to {back} ({} instances)",
            waiting.len()
        ));
        self.wait_ready(&waiting)
            .await
            .map_err(|why| Error::Deploy(format!("{why}; {active} is still serving")))?;
        self.flip(Some(index), back).await?;
        self.say(&format!("route: /_berth/routes/{svc} -> {back}"));
        let abandoned: Vec<Member> = members.iter().filter(|m| m.2 == active).cloned().collect();
        if !self.args.keep_old && !abandoned.is_empty() {
            self.say(&format!("draining {active} for {}s", self.args.drain));
            tokio::time::sleep(Duration::from_secs(self.args.drain)).await;
            self.remove(&abandoned, "stopped").await;
        }
        self.say(&format!("{svc}: {back} is serving"));
        Ok(())
    }

    async fn create(&mut self, name: &str, color: &str) -> Result<String, String> {
        let a = &self.args;
        let mut env = vec![
            format!("SERVICE_NAME={}", a.service),
            format!("SERVICE_COLOR={color}"),
        ];
        if let Some(d) = &a.http_domain {
            env.push(format!("SERVICE_HTTP_DOMAIN={d}"));
        }
        if let Some(p) = &a.http_path {
            env.push(format!("SERVICE_HTTP_PATH={p}"));
        }
        env.extend(a.env.iter().cloned());
        let mut labels = HashMap::new();
        labels.insert(LABEL_SERVICE.to_string(), a.service.clone());
        labels.insert(LABEL_COLOR.to_string(), color.to_string());
        let mut host = HostConfig {
            network_mode: a.network.clone(),
            ..Default::default()
        };
        let mut exposed = None;
        match a.port {
            Some(p) => {
                let key = format!("{p}/tcp");
                let mut map = HashMap::new();
                map.insert(
                    key.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some(a.publish_ip.clone()),
                        host_port: Some(String::new()),
                    }]),
                );
                host.port_bindings = Some(map);
                exposed = Some(vec![key]);
            }
            None => host.publish_all_ports = Some(true),
        }
        let body = ContainerCreateBody {
            image: a.image.clone(),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: exposed,
            cmd: (!a.cmd.is_empty()).then(|| a.cmd.clone()),
            host_config: Some(host),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::new().name(name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| e.to_string())?;
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| e.to_string())?;
        self.say(&format!(
            "{name}: started {}",
            &created.id[..12.min(created.id.len())]
        ));
        Ok(created.id)
    }

    /// Waits until every container runs, is healthy and is registered with its color.
    async fn wait_ready(&mut self, ids: &[(String, String)]) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(self.args.timeout);
        let total = ids.len();
        let mut states: Vec<TaskState> = vec![TaskState::Created; total];
        let mut last_ready = usize::MAX;
        loop {
            let registered = self.registered().await;
            for (k, (id, name)) in ids.iter().enumerate() {
                if matches!(states[k], TaskState::Ready(_)) {
                    continue;
                }
                let st = self.task_state(id, name, &registered).await;
                if st != states[k] {
                    let text = match &st {
                        TaskState::Created => "created".to_string(),
                        TaskState::Running => "running".to_string(),
                        TaskState::Starting => "running, health check not passed yet".to_string(),
                        TaskState::Unregistered => {
                            "running, waiting for its registration".to_string()
                        }
                        TaskState::Silent(a) => {
                            format!("registered at {a}, not answering HTTP yet")
                        }
                        TaskState::Ready(a) => format!("ready at {a}"),
                        TaskState::Failed(why) => format!("failed: {why}"),
                    };
                    self.say(&format!("{}/{total}: {name} {text}", k + 1));
                }
                if let TaskState::Failed(why) = &st {
                    return Err(format!("{name} {why}"));
                }
                states[k] = st;
            }
            let ready = states
                .iter()
                .filter(|s| matches!(s, TaskState::Ready(_)))
                .count();
            if ready != last_ready {
                self.say(&progress_line(ready, total));
                last_ready = ready;
            }
            if ready == total {
                return Ok(());
            }
            if Instant::now() > deadline {
                let waiting: Vec<String> = ids
                    .iter()
                    .zip(&states)
                    .filter(|(_, s)| !matches!(s, TaskState::Ready(_)))
                    .map(|((_, n), s)| format!("{n} ({s:?})"))
                    .collect();
                return Err(format!(
                    "not ready within {}s: {}; is `berth registrator` running and does the container publish a port (--port)?",
                    self.args.timeout,
                    waiting.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Instances of the service in the catalog: (key, container id if given, address).
    async fn registered(&self) -> Vec<(String, String, String, Option<String>)> {
        let opts = GetOptions {
            recursive: true,
            quorum: true,
            ..Default::default()
        };
        let Ok(r) = self
            .registry
            .get(&format!("/services/{}", self.args.service), opts)
            .await
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for n in r.node.nodes {
            let id = n.key.rsplit('/').next().unwrap_or("").to_string();
            let value = n.value.unwrap_or_default();
            let container = serde_json::from_str::<serde_json::Value>(&value)
                .ok()
                .and_then(|v| {
                    v.get("container")
                        .and_then(|c| c.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_default();
            if let Ok(inst) = Instance::parse(&id, &value) {
                out.push((
                    id,
                    container,
                    format!("{}:{}", inst.addr, inst.port),
                    inst.color,
                ));
            }
        }
        out
    }

    async fn task_state(
        &self,
        id: &str,
        name: &str,
        registered: &[(String, String, String, Option<String>)],
    ) -> TaskState {
        let info = match self.docker.inspect_container(id, None).await {
            Ok(i) => i,
            Err(e) => return TaskState::Failed(format!("cannot be inspected: {e}")),
        };
        let st = info.state.unwrap_or_default();
        if st.running != Some(true) {
            if st
                .finished_at
                .as_deref()
                .is_some_and(|f| !f.starts_with("0001"))
            {
                let logs = self.last_log_line(id).await;
                return TaskState::Failed(format!(
                    "exited with code {}{logs}",
                    st.exit_code.unwrap_or(-1)
                ));
            }
            return TaskState::Created;
        }
        match st.health.and_then(|h| h.status) {
            Some(HealthStatusEnum::UNHEALTHY) => {
                return TaskState::Failed(
                    "is unhealthy (docker inspect shows the check's output)".into(),
                )
            }
            Some(HealthStatusEnum::STARTING) => return TaskState::Starting,
            _ => {}
        }
        let color = self.color_of(name);
        let found = registered.iter().find(|(key, cid, _, c)| {
            let ours = (!cid.is_empty() && (id.starts_with(cid.as_str()) || cid.starts_with(id)))
                || key.split(':').any(|p| p == name);
            ours && c.as_deref() == Some(color)
        });
        match found {
            Some((_, _, addr, _)) if self.args.port.is_some() && !answers_http(addr).await => {
                TaskState::Silent(addr.clone())
            }
            Some((_, _, addr, _)) => TaskState::Ready(addr.clone()),
            None => TaskState::Unregistered,
        }
    }

    fn color_of<'a>(&self, name: &'a str) -> &'a str {
        // Names are <service>-<color>-<n>.
        name.strip_prefix(&format!("{}-", self.args.service))
            .and_then(|r| r.split('-').next())
            .unwrap_or("")
    }

    async fn last_log_line(&self, id: &str) -> String {
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail("3")
            .build();
        let mut s = Box::pin(self.docker.logs(id, Some(opts)));
        let mut text = String::new();
        while let Some(Ok(chunk)) = s.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        let line = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        if line.is_empty() {
            String::new()
        } else {
            format!(" (last log line: {line:?})")
        }
    }
}

/// Whether something at `addr` answers an HTTP request with a status line within a second
/// (a published port accepts connections before the container's server listens).
async fn answers_http(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"HEAD / HTTP/1.0\r\nHost: berth-deploy\r\n\r\n")
            .await
            .ok()?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.ok()?;
        (&buf == b"HTTP/").then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(()))
    )
}

/// Progress printer for the command line: one line each, flushed.
pub fn stdout_printer() -> Box<dyn FnMut(&str) + Send> {
    Box::new(|line: &str| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colors_alternate() {
        assert_eq!(next_color(None, &[]), "blue");
        assert_eq!(next_color(Some("blue"), &[]), "green");
        assert_eq!(next_color(Some("green"), &["green".into()]), "blue");
        assert_eq!(next_color(None, &["blue".into(), "blue".into()]), "green");
        assert_eq!(next_color(None, &["blue".into(), "green".into()]), "blue");
    }

    #[test]
    fn route_records() {
        assert_eq!(route_value("green"), r#"{"active":"green"}"#);
        assert_eq!(parse_route(&route_value("green")).as_deref(), Some("green"));
        assert_eq!(parse_route("garbage"), None);
    }

    #[test]
    fn env_entries() {
        assert!(check_env(&["A=1".into(), "B=".into()]).is_ok());
        assert!(check_env(&["=1".into()]).is_err());
        assert!(check_env(&["NOEQUALS".into()]).is_err());
        assert_eq!(progress_line(2, 3), "overall progress: 2 out of 3 tasks");
    }
}
