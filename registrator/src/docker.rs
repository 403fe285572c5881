//! Docker Engine API access (bollard over the unix socket): connecting, listing, inspecting
//! into a [`ContainerInfo`], and the event stream reduced to [`Trigger`]s.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, EventMessage};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use bollard::Docker;
use futures::{Stream, StreamExt};

use crate::error::DockerError;
use crate::model::{Binding, ContainerInfo, PortProto};

/// A connected Docker client (cheap to clone; every request opens its own connection).
#[derive(Clone, Debug)]
pub struct DockerClient {
    docker: Docker,
    socket: String,
}

/// What an event asks the registrator to do for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub container: String,
    /// The event's action (`start`, `die`, `health_status: healthy`, `connect`, ...).
    pub action: String,
    /// `Some(true)`: the container is being stopped or is gone (stop, die, destroy, or kill
    /// with a terminating signal) and leaves the catalog without waiting for an inspect
    /// (which Docker holds while it kills and removes); `Some(false)`: it (re)started.
    pub stopping: Option<bool>,
    /// Event time in nanoseconds since the epoch (0 if Docker did not say).
    pub time_nano: i64,
}

fn socket_path(socket: &str) -> &str {
    socket.strip_prefix("unix://").unwrap_or(socket)
}

fn api_error(e: bollard::errors::Error) -> DockerError {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            message,
        } => DockerError::NotFound(message),
        other => DockerError::Api(other.to_string()),
    }
}

impl DockerClient {
    /// Connects and negotiates the API version (one `/version` round trip).
    pub async fn connect(socket: &str) -> Result<DockerClient, DockerError> {
        let path = socket_path(socket);
        let unreachable = |detail: String| DockerError::Unreachable {
            socket: path.to_string(),
            detail,
        };
        let docker = Docker::connect_with_unix(path, 30, bollard::API_DEFAULT_VERSION)
            .map_err(|e| unreachable(e.to_string()))?;
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| unreachable("no answer within 10s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(DockerClient {
            docker,
            socket: path.to_string(),
        })
    }

    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Ids of the running containers.
    pub async fn running(&self) -> Result<Vec<String>, DockerError> {
        let opts = ListContainersOptionsBuilder::default().all(false).build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(api_error)?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Inspects a container; `None` when it does not exist (any more).
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, DockerError> {
        match self.docker.inspect_container(id, None).await {
            Ok(r) => Ok(Some(container_info(r))),
            Err(e) => match api_error(e) {
                DockerError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Container and network events since `since` (unix seconds), reduced to triggers.
    /// The stream ends (or yields an error) when the connection to Docker is lost.
    pub fn triggers(
        &self,
        since: i64,
    ) -> impl Stream<Item = Result<Option<Trigger>, DockerError>> + Send + 'static {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        filters.insert(
            "type".to_string(),
            vec!["container".to_string(), "network".to_string()],
        );
        let opts = EventsOptionsBuilder::default()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        self.docker
            .events(Some(opts))
            .map(|r| r.map(|ev| trigger(&ev)).map_err(api_error))
    }

    /// Events of one container (by name or id) since `since`.
    pub fn container_events(
        &self,
        container: &str,
        since: i64,
    ) -> impl Stream<Item = Result<Option<Trigger>, DockerError>> + Send + 'static {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        filters.insert("type".to_string(), vec!["container".to_string()]);
        filters.insert("container".to_string(), vec![container.to_string()]);
        let opts = EventsOptionsBuilder::default()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        self.docker
            .events(Some(opts))
            .map(|r| r.map(|ev| trigger(&ev)).map_err(api_error))
    }
}

/// Reduces an event to a trigger, or None for events that change nothing (exec_*, create,
/// attach, top, ...).
pub fn trigger(ev: &EventMessage) -> Option<Trigger> {
    let typ = ev.typ.as_ref().map(|t| t.to_string()).unwrap_or_default();
    let action = ev.action.clone().unwrap_or_default();
    let actor = ev.actor.as_ref()?;
    let attrs = actor.attributes.clone().unwrap_or_default();
    classify(
        &typ,
        &action,
        actor.id.as_deref().unwrap_or(""),
        &attrs,
        ev.time_nano.unwrap_or(0),
    )
}

/// The pure part of [`trigger`].
pub fn classify(
    typ: &str,
    action: &str,
    actor_id: &str,
    attrs: &HashMap<String, String>,
    time_nano: i64,
) -> Option<Trigger> {
    let (container, stopping) = match typ {
        "container" => {
            let base = action.split(':').next().unwrap_or("").trim();
            let stopping = match base {
                "start" | "restart" | "unpause" => Some(false),
                "stop" | "die" | "destroy" => Some(true),
                "kill" => {
                    let sig = attrs.get("signal").map(String::as_str).unwrap_or("");
                    let terminating = matches!(
                        sig,
                        "15" | "9"
                            | "2"
                            | "3"
                            | "SIGTERM"
                            | "SIGKILL"
                            | "SIGINT"
                            | "SIGQUIT"
                            | "TERM"
                            | "KILL"
                            | "INT"
                            | "QUIT"
                    );
                    terminating.then_some(true)
                }
                "pause" | "health_status" | "rename" | "update" | "oom" => None,
                _ => return None,
            };
            (actor_id.to_string(), stopping)
        }
        "network" => {
            if !matches!(action, "connect" | "disconnect") {
                return None;
            }
            (attrs.get("container")?.clone(), None)
        }
        _ => return None,
    };
    if container.is_empty() {
        return None;
    }
    Some(Trigger {
        container,
        action: action.to_string(),
        stopping,
        time_nano,
    })
}

/// Converts bollard's inspect answer into the model's snapshot.
pub fn container_info(r: ContainerInspectResponse) -> ContainerInfo {
    let mut info = ContainerInfo {
        id: r.id.unwrap_or_default(),
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        ..Default::default()
    };
    if let Some(config) = r.config {
        info.image = config.image.unwrap_or_default();
        info.env = config.env.unwrap_or_default();
        info.labels = config.labels.unwrap_or_default().into_iter().collect();
        if let Some(exposed) = config.exposed_ports {
            info.ports
                .extend(exposed.iter().filter_map(|k| PortProto::parse(k)));
        }
    }
    if let Some(state) = r.state {
        info.running = state.running.unwrap_or(false);
        info.paused = state.paused.unwrap_or(false);
        info.exit_code = state.exit_code.unwrap_or(0);
        info.health = state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none");
    }
    if let Some(hc) = r.host_config {
        info.network_mode = hc.network_mode.unwrap_or_default();
    }
    if let Some(ns) = r.network_settings {
        if let Some(ports) = ns.ports {
            for (k, bindings) in ports {
                let Some(pp) = PortProto::parse(&k) else {
                    continue;
                };
                info.ports.push(pp);
                let list: Vec<Binding> = bindings
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|b| {
                        Some(Binding {
                            host_ip: b.host_ip.unwrap_or_default(),
                            host_port: b.host_port?.parse().ok()?,
                        })
                    })
                    .collect();
                if !list.is_empty() {
                    info.published.insert(pp, list);
                }
            }
        }
        if let Some(nets) = ns.networks {
            info.networks = nets
                .into_iter()
                .map(|(name, ep)| (name, ep.ip_address.unwrap_or_default()))
                .collect::<BTreeMap<_, _>>();
        }
    }
    info.ports.sort();
    info.ports.dedup();
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn classifies_events() {
        let none = HashMap::new();
        let t = classify("container", "start", "abc", &none, 5).unwrap();
        assert_eq!(
            (t.container.as_str(), t.stopping, t.time_nano),
            ("abc", Some(false), 5)
        );
        assert_eq!(
            classify("container", "die", "abc", &none, 0)
                .unwrap()
                .stopping,
            Some(true)
        );
        assert_eq!(
            classify("container", "pause", "abc", &none, 0)
                .unwrap()
                .stopping,
            None
        );
        assert_eq!(
            classify("container", "stop", "abc", &none, 0)
                .unwrap()
                .stopping,
            Some(true)
        );
        let term = attrs(&[("signal", "15")]);
        assert_eq!(
            classify("container", "kill", "abc", &term, 0)
                .unwrap()
                .stopping,
            Some(true)
        );
        let hup = attrs(&[("signal", "1")]);
        assert_eq!(
            classify("container", "kill", "abc", &hup, 0)
                .unwrap()
                .stopping,
            None
        );
        assert!(classify("container", "health_status: unhealthy", "abc", &none, 0).is_some());
        assert!(classify("container", "exec_start: sh -c true", "abc", &none, 0).is_none());
        assert!(classify("container", "create", "abc", &none, 0).is_none());
        let net = attrs(&[("container", "abc"), ("name", "appnet")]);
        assert_eq!(
            classify("network", "connect", "netid", &net, 0)
                .unwrap()
                .container,
            "abc"
        );
        assert!(classify("network", "create", "netid", &net, 0).is_none());
        assert!(classify("image", "pull", "x", &none, 0).is_none());
    }
}
