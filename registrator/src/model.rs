//! The service model: which catalog entries a container stands for.
//!
//! Pure functions over [`ContainerInfo`] (a Docker-independent snapshot of `docker inspect`),
//! following Registrator's rules:
//!
//! - Metadata comes from `SERVICE_*` environment variables and labels (labels win);
//!   `SERVICE_<port>_<KEY>` applies to one container port and beats `SERVICE_<KEY>`.
//! - Keys: `NAME`, `ID`, `TAGS`, `IGNORE`, plus berth's `COLOR`, `HTTP_DOMAIN`, `HTTP_PATH`,
//!   `WEIGHT` and (container-wide) `NETWORK`.
//! - The default name is the image's base name without its tag; with more than one port it
//!   gets `-<port>` appended unless the port has its own `SERVICE_<port>_NAME`. With
//!   `--explicit`, containers without a name are skipped.
//! - The instance id is `<hostname>:<container-name>:<port>` (`:udp` appended for UDP), or
//!   `SERVICE_ID` (`-<port>` appended when one container-wide id covers several ports).
//! - Published ports by default (host address and host port); with `--internal`, the
//!   container's address on `SERVICE_NETWORK` or its first user network, and the container port.
//!
//! Service names must be DNS labels (`[a-z0-9]`, inner `-`, at most 63); instance ids are
//! `:`-separated parts of letters, digits, `-`, `_` and `.`. Anything else is rejected with a
//! [`ModelError`] naming the container, the port and the offending value.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Transport protocol of a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A container port as Docker names it (`80/tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortProto {
    pub port: u16,
    pub proto: Proto,
}

impl PortProto {
    /// Parses Docker's `80/tcp` form (`80` alone means TCP). Other protocols (sctp) give None.
    pub fn parse(s: &str) -> Option<PortProto> {
        let (p, proto) = match s.split_once('/') {
            Some((p, "tcp")) => (p, Proto::Tcp),
            Some((p, "udp")) => (p, Proto::Udp),
            Some(_) => return None,
            None => (s, Proto::Tcp),
        };
        let port = p.parse().ok().filter(|p| *p > 0)?;
        Some(PortProto { port, proto })
    }
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto.as_str())
    }
}

/// A host binding of a published port.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Binding {
    pub host_ip: String,
    pub host_port: u16,
}

/// What the model needs to know about a container (filled from `docker inspect`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub image: String,
    /// `KEY=value` strings, as Docker lists them.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub running: bool,
    pub paused: bool,
    pub exit_code: i64,
    /// Health status (`starting`, `healthy`, `unhealthy`) when the container has a healthcheck.
    pub health: Option<String>,
    /// `HostConfig.NetworkMode` (`default`, `bridge`, `host`, a network name, `container:..`).
    pub network_mode: String,
    /// Every port the container exposes or publishes.
    pub ports: Vec<PortProto>,
    /// Host bindings of published ports.
    pub published: BTreeMap<PortProto, Vec<Binding>>,
    /// Network name -> the container's IPv4 address on it.
    pub networks: BTreeMap<String, String>,
}

/// Registrator-side settings that shape the model (the relevant flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// `node` of every entry and first part of the default instance id.
    pub hostname: String,
    /// `--ip`: the address for published ports, overriding the binding's address.
    pub ip: Option<String>,
    /// Address used when a binding is on all interfaces and no `--ip` is given.
    pub default_ip: String,
    /// `--internal`: container address and container port instead of published ones.
    pub internal: bool,
    /// `--explicit`: only containers with a `SERVICE_NAME` (or `SERVICE_<port>_NAME`).
    pub explicit: bool,
    /// `--tags`: tags added to every entry.
    pub force_tags: Vec<String>,
}

/// The `http` object of a catalog value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A catalog value (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceValue {
    pub host: String,
    pub port: u16,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl ServiceValue {
    /// The JSON written to the registry.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a ServiceValue always serialises")
    }
}

/// One catalog entry: `<prefix>/<service>/<id>` = value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub service: String,
    pub id: String,
    pub value: ServiceValue,
}

impl Registration {
    /// The registry key under `prefix` (e.g. `/services`).
    pub fn key(&self, prefix: &str) -> String {
        format!(
            "{}/{}/{}",
            prefix.trim_end_matches('/'),
            self.service,
            self.id
        )
    }
}

/// Why a container (or one of its ports) gives no entry although it is not ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("container {container} port {port}: invalid service name {name:?}: {reason} (set SERVICE_NAME or SERVICE_{}_NAME to a DNS label such as \"web\")", .port.port)]
    InvalidServiceName {
        container: String,
        port: PortProto,
        name: String,
        reason: &'static str,
    },
    #[error("container {container} port {port}: invalid instance id {id:?}: {reason}")]
    InvalidId {
        container: String,
        port: PortProto,
        id: String,
        reason: &'static str,
    },
    #[error("container {container} port {port}: invalid SERVICE_{key}={value:?}: {reason}")]
    InvalidValue {
        container: String,
        port: PortProto,
        key: String,
        value: String,
        reason: &'static str,
    },
    #[error("container {container} port {port}: no address on network {network:?} (--internal); the container is on: {available}")]
    NoAddress {
        container: String,
        port: PortProto,
        network: String,
        available: String,
    },
}

/// Whether a container should be in the catalog right now, judged by its state alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    Register,
    /// Not running, paused, or its healthcheck does not say healthy.
    Withdraw(&'static str),
}

/// Running, not paused, and healthy if it has a healthcheck.
pub fn eligibility(c: &ContainerInfo) -> Eligibility {
    if !c.running {
        return Eligibility::Withdraw("not running");
    }
    if c.paused {
        return Eligibility::Withdraw("paused");
    }
    match c.health.as_deref() {
        None | Some("") | Some("none") | Some("healthy") => Eligibility::Register,
        Some("starting") => Eligibility::Withdraw("health: starting"),
        Some(_) => Eligibility::Withdraw("health: unhealthy"),
    }
}

/// Metadata of one port: `SERVICE_*` keys lowercased, and which came from a port-specific key.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    pub values: BTreeMap<String, String>,
    pub from_port: std::collections::BTreeSet<String>,
}

impl Metadata {
    fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }
}

/// Registrator's `serviceMetaData`: env first, then labels (labels win); port-specific keys
/// beat container-wide ones.
pub fn metadata(c: &ContainerInfo, port: u16) -> Metadata {
    let mut md = Metadata::default();
    let env = c.env.iter().filter_map(|kv| kv.split_once('='));
    let labels = c.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    // Two passes so that port-specific keys win regardless of order.
    let all: Vec<(&str, &str)> = env.chain(labels).collect();
    for (k, v) in &all {
        let Some(key) = k.strip_prefix("SERVICE_") else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        match key.split_once('_') {
            Some((p, rest)) if p.parse::<u16>().is_ok() => {
                if p.parse::<u16>() == Ok(port) && !rest.is_empty() {
                    md.values.insert(rest.to_string(), v.to_string());
                    md.from_port.insert(rest.to_string());
                }
            }
            _ => {
                if !md.from_port.contains(&key) {
                    md.values.insert(key, v.to_string());
                }
            }
        }
    }
    md
}

/// Container-wide metadata (no port).
fn container_metadata(c: &ContainerInfo) -> Metadata {
    metadata(c, 0)
}

/// `SERVICE_IGNORE` (any non-empty value) on the container.
pub fn ignored(c: &ContainerInfo) -> bool {
    container_metadata(c)
        .get("ignore")
        .is_some_and(|v| !v.is_empty())
}

/// The image's base name without tag or digest: `registry:5000/team/web:1.2` -> `web`.
pub fn image_base_name(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    let base = no_digest.rsplit('/').next().unwrap_or(no_digest);
    base.split(':').next().unwrap_or(base).to_string()
}

/// Checks a service name: a DNS label (RFC 1123), lowercase.
pub fn check_service_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 63 {
        return Err("longer than 63 characters");
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("must be lowercase");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only a-z, 0-9 and '-' are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must not start or end with '-'");
    }
    Ok(())
}

/// Checks an instance id: `:`-separated non-empty parts of `[A-Za-z0-9_.-]`, at most 253.
pub fn check_instance_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("empty");
    }
    if id.len() > 253 {
        return Err("longer than 253 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err("only letters, digits, '-', '_', '.' and ':' are allowed");
    }
    if id.split(':').any(|p| p.is_empty() || p == "." || p == "..") {
        return Err("empty part between ':'");
    }
    Ok(())
}

fn is_unspecified(ip: &str) -> bool {
    matches!(ip, "" | "0.0.0.0" | "::")
}

/// Networks that are not "user networks" for `--internal`.
fn is_builtin_network(name: &str) -> bool {
    matches!(name, "bridge" | "host" | "none")
}

/// The catalog entries of a container, whatever its state (see [`eligibility`]). Ignored
/// containers and ports, and unpublished ports without `--internal`, give nothing; invalid
/// names, ids and values give an error for that port and nothing for it.
pub fn registrations(
    c: &ContainerInfo,
    cfg: &ModelConfig,
) -> Vec<Result<Registration, ModelError>> {
    if ignored(c) {
        return Vec::new();
    }
    let mut ports: Vec<PortProto> = c.ports.clone();
    ports.extend(c.published.keys().copied());
    ports.sort();
    ports.dedup();
    let group = ports.len() > 1;
    let host_mode = c.network_mode == "host";
    let wide = container_metadata(c);
    let mut out = Vec::new();
    for pp in ports {
        let md = metadata(c, pp.port);
        if md.get("ignore").is_some_and(|v| !v.is_empty()) {
            continue;
        }
        // Address and port.
        let (host, port) = if host_mode {
            (
                cfg.ip.clone().unwrap_or_else(|| cfg.default_ip.clone()),
                pp.port,
            )
        } else if cfg.internal {
            let wanted = wide.get("network").filter(|n| !n.is_empty());
            let addr = match wanted {
                Some(n) => c.networks.get(n).map(|ip| (n.to_string(), ip.clone())),
                None => c
                    .networks
                    .iter()
                    .find(|(n, ip)| !is_builtin_network(n) && !ip.is_empty())
                    .or_else(|| c.networks.iter().find(|(_, ip)| !ip.is_empty()))
                    .map(|(n, ip)| (n.clone(), ip.clone())),
            };
            match addr {
                Some((_, ip)) if !ip.is_empty() => (ip, pp.port),
                _ => {
                    out.push(Err(ModelError::NoAddress {
                        container: c.name.clone(),
                        port: pp,
                        network: wanted.unwrap_or("<first user network>").to_string(),
                        available: if c.networks.is_empty() {
                            "no network".to_string()
                        } else {
                            c.networks.keys().cloned().collect::<Vec<_>>().join(", ")
                        },
                    }));
                    continue;
                }
            }
        } else {
            let Some(b) = c
                .published
                .get(&pp)
                .and_then(|bs| bs.iter().find(|b| b.host_port > 0))
            else {
                continue; // not published
            };
            let host = match (&cfg.ip, is_unspecified(&b.host_ip)) {
                (Some(ip), _) => ip.clone(),
                (None, false) => b.host_ip.clone(),
                (None, true) => cfg.default_ip.clone(),
            };
            (host, b.host_port)
        };
        // Name.
        let name = match md.get("name").filter(|n| !n.is_empty()) {
            Some(n) => {
                if group && !md.from_port.contains("name") {
                    format!("{n}-{}", pp.port)
                } else {
                    n.to_string()
                }
            }
            None => {
                if cfg.explicit {
                    continue;
                }
                let base = image_base_name(&c.image);
                if group {
                    format!("{base}-{}", pp.port)
                } else {
                    base
                }
            }
        };
        if let Err(reason) = check_service_name(&name) {
            out.push(Err(ModelError::InvalidServiceName {
                container: c.name.clone(),
                port: pp,
                name,
                reason,
            }));
            continue;
        }
        // Id.
        let id = match md.get("id").filter(|i| !i.is_empty()) {
            Some(i) if group && !md.from_port.contains("id") => format!("{i}-{}", pp.port),
            Some(i) => i.to_string(),
            None => {
                let mut id = format!("{}:{}:{}", cfg.hostname, c.name, pp.port);
                if pp.proto == Proto::Udp {
                    id.push_str(":udp");
                }
                id
            }
        };
        if let Err(reason) = check_instance_id(&id) {
            out.push(Err(ModelError::InvalidId {
                container: c.name.clone(),
                port: pp,
                id,
                reason,
            }));
            continue;
        }
        match value_fields(c, pp, &md, cfg) {
            Ok((tags, color, http, weight)) => out.push(Ok(Registration {
                service: name,
                id,
                value: ServiceValue {
                    host,
                    port,
                    tags,
                    color,
                    node: Some(cfg.hostname.clone()),
                    container: Some(c.id.clone()),
                    proto: Some(pp.proto),
                    http,
                    weight,
                },
            })),
            Err(e) => out.push(Err(e)),
        }
    }
    out
}

type Fields = (Vec<String>, Option<String>, Option<HttpRoute>, Option<u32>);

fn value_fields(
    c: &ContainerInfo,
    pp: PortProto,
    md: &Metadata,
    cfg: &ModelConfig,
) -> Result<Fields, ModelError> {
    let invalid = |key: &str, value: &str, reason: &'static str| ModelError::InvalidValue {
        container: c.name.clone(),
        port: pp,
        key: key.to_ascii_uppercase(),
        value: value.to_string(),
        reason,
    };
    let mut tags: Vec<String> = md
        .get("tags")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    for t in &cfg.force_tags {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    if pp.proto == Proto::Udp && !tags.iter().any(|t| t == "udp") {
        tags.push("udp".to_string());
    }
    let color = match md.get("color").filter(|v| !v.is_empty()) {
        None => None,
        Some(v @ ("blue" | "green")) => Some(v.to_string()),
        Some(v) => return Err(invalid("color", v, "must be \"blue\" or \"green\"")),
    };
    let domain = match md.get("http_domain").filter(|v| !v.is_empty()) {
        None => None,
        Some(d) => {
            let ok = d.len() <= 253
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && (l == "*" || l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                });
            if !ok {
                return Err(invalid(
                    "http_domain",
                    d,
                    "must be a host name such as www.example.com",
                ));
            }
            Some(d.to_ascii_lowercase())
        }
    };
    let path = match md.get("http_path").filter(|v| !v.is_empty()) {
        None => None,
        Some(p) => {
            if !p.starts_with('/') || p.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20) {
                return Err(invalid(
                    "http_path",
                    p,
                    "must start with '/' and contain no spaces",
                ));
            }
            Some(p.to_string())
        }
    };
    let http = (domain.is_some() || path.is_some()).then_some(HttpRoute { domain, path });
    let weight = match md.get("weight").filter(|v| !v.is_empty()) {
        None => None,
        Some(w) => Some(
            w.parse::<u32>()
                .map_err(|_| invalid("weight", w, "must be a non-negative integer"))?,
        ),
    };
    Ok((tags, color, http, weight))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ModelConfig {
        ModelConfig {
            hostname: "node1".into(),
            ip: None,
            default_ip: "10.0.0.5".into(),
            internal: false,
            explicit: false,
            force_tags: vec![],
        }
    }

    fn web() -> ContainerInfo {
        let p80 = PortProto::parse("80/tcp").unwrap();
        ContainerInfo {
            id: "abc123".into(),
            name: "web".into(),
            image: "berth-test/busybox:latest".into(),
            running: true,
            network_mode: "default".into(),
            ports: vec![p80],
            published: [(
                p80,
                vec![Binding {
                    host_ip: "0.0.0.0".into(),
                    host_port: 8080,
                }],
            )]
            .into_iter()
            .collect(),
            networks: [("bridge".to_string(), "172.17.0.2".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    fn ok(v: Vec<Result<Registration, ModelError>>) -> Vec<Registration> {
        v.into_iter().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn published_port_default_name() {
        let r = ok(registrations(&web(), &cfg()));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].service, "busybox");
        assert_eq!(r[0].id, "node1:web:80");
        assert_eq!(r[0].key("/services"), "/services/busybox/node1:web:80");
        assert_eq!(
            r[0].value.to_json(),
            r#"{"host":"10.0.0.5","port":8080,"tags":[],"node":"node1","container":"abc123","proto":"tcp"}"#
        );
    }

    #[test]
    fn ip_flag_and_binding_address() {
        let mut c = cfg();
        c.ip = Some("192.0.2.1".into());
        assert_eq!(ok(registrations(&web(), &c))[0].value.host, "192.0.2.1");
        let mut w = web();
        w.published.values_mut().next().unwrap()[0].host_ip = "127.0.0.1".into();
        assert_eq!(ok(registrations(&w, &cfg()))[0].value.host, "127.0.0.1");
    }

    #[test]
    fn env_and_labels_metadata() {
        let mut w = web();
        w.env = vec![
            "SERVICE_NAME=api".into(),
            "SERVICE_TAGS=a, b,,c".into(),
            "SERVICE_COLOR=green".into(),
            "SERVICE_HTTP_DOMAIN=Example.COM".into(),
            "SERVICE_HTTP_PATH=/v1".into(),
            "SERVICE_WEIGHT=3".into(),
            "PATH=/bin".into(),
        ];
        w.labels.insert("SERVICE_NAME".into(), "api2".into());
        let r = ok(registrations(&w, &cfg()));
        assert_eq!(r[0].service, "api2", "labels win over env");
        let v = &r[0].value;
        assert_eq!(v.tags, vec!["a", "b", "c"]);
        assert_eq!(v.color.as_deref(), Some("green"));
        assert_eq!(
            v.http,
            Some(HttpRoute {
                domain: Some("example.com".into()),
                path: Some("/v1".into())
            })
        );
        assert_eq!(v.weight, Some(3));
        assert!(v
            .to_json()
            .contains(r#""http":{"domain":"example.com","path":"/v1"}"#));
    }

    #[test]
    fn multiple_ports_group_names_and_port_overrides() {
        let mut w = web();
        let p443 = PortProto::parse("443").unwrap();
        let p53 = PortProto::parse("53/udp").unwrap();
        w.ports.push(p443);
        w.ports.push(p53);
        w.published.insert(
            p443,
            vec![Binding {
                host_ip: "".into(),
                host_port: 8443,
            }],
        );
        w.published.insert(
            p53,
            vec![Binding {
                host_ip: "0.0.0.0".into(),
                host_port: 5353,
            }],
        );
        w.env = vec![
            "SERVICE_NAME=site".into(),
            "SERVICE_443_NAME=secure".into(),
            "SERVICE_53_ID=dns-one".into(),
        ];
        let mut r = ok(registrations(&w, &cfg()));
        r.sort_by(|a, b| a.service.cmp(&b.service));
        let names: Vec<(&str, &str)> = r
            .iter()
            .map(|r| (r.service.as_str(), r.id.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("secure", "node1:web:443"),
                ("site-53", "dns-one"),
                ("site-80", "node1:web:80"),
            ]
        );
        let udp = r.iter().find(|r| r.service == "site-53").unwrap();
        assert_eq!(udp.value.proto, Some(Proto::Udp));
        assert_eq!(udp.value.tags, vec!["udp"]);
    }

    #[test]
    fn udp_default_id_suffix() {
        let mut w = web();
        let p = PortProto::parse("53/udp").unwrap();
        w.ports = vec![p];
        w.published = [(
            p,
            vec![Binding {
                host_ip: "".into(),
                host_port: 53,
            }],
        )]
        .into_iter()
        .collect();
        assert_eq!(ok(registrations(&w, &cfg()))[0].id, "node1:web:53:udp");
    }

    #[test]
    fn ignore_explicit_and_unpublished() {
        let mut w = web();
        w.env = vec!["SERVICE_IGNORE=1".into()];
        assert!(registrations(&w, &cfg()).is_empty());
        let mut w = web();
        w.labels.insert("SERVICE_80_IGNORE".into(), "true".into());
        assert!(registrations(&w, &cfg()).is_empty());
        let mut c = cfg();
        c.explicit = true;
        assert!(registrations(&web(), &c).is_empty());
        let mut w = web();
        w.env = vec!["SERVICE_80_NAME=web".into()];
        assert_eq!(ok(registrations(&w, &c))[0].service, "web");
        let mut w = web();
        w.published.clear();
        assert!(
            registrations(&w, &cfg()).is_empty(),
            "unpublished ports are skipped"
        );
    }

    #[test]
    fn internal_uses_user_network_or_service_network() {
        let mut c = cfg();
        c.internal = true;
        let mut w = web();
        w.published.clear();
        w.networks.insert("appnet".into(), "10.9.0.3".into());
        w.networks.insert("zzz".into(), "10.8.0.3".into());
        let r = ok(registrations(&w, &c));
        assert_eq!(
            (r[0].value.host.as_str(), r[0].value.port),
            ("10.9.0.3", 80)
        );
        w.env = vec!["SERVICE_NETWORK=zzz".into()];
        assert_eq!(ok(registrations(&w, &c))[0].value.host, "10.8.0.3");
        w.env = vec!["SERVICE_NETWORK=nope".into()];
        let e = registrations(&w, &c).remove(0).unwrap_err();
        assert!(
            e.to_string().contains("no address on network \"nope\""),
            "{e}"
        );
        // Only the default bridge: use it.
        let mut w = web();
        w.published.clear();
        assert_eq!(ok(registrations(&w, &c))[0].value.host, "172.17.0.2");
    }

    #[test]
    fn host_network_mode_uses_exposed_ports() {
        let mut w = web();
        w.network_mode = "host".into();
        w.published.clear();
        w.networks.clear();
        let r = ok(registrations(&w, &cfg()));
        assert_eq!(
            (r[0].value.host.as_str(), r[0].value.port),
            ("10.0.0.5", 80)
        );
    }

    #[test]
    fn invalid_names_ids_and_values_are_rejected() {
        for bad in ["Web", "my_app", "-x", "x-", "a.b", &"a".repeat(64)] {
            let mut w = web();
            w.env = vec![format!("SERVICE_NAME={bad}")];
            let r = registrations(&w, &cfg());
            assert_eq!(r.len(), 1);
            let e = r[0].clone().unwrap_err();
            assert!(
                matches!(e, ModelError::InvalidServiceName { .. }),
                "{bad}: {e}"
            );
            assert!(e.to_string().contains("invalid service name"), "{e}");
        }
        let mut w = web();
        w.env = vec!["SERVICE_ID=a/b".into()];
        assert!(matches!(
            registrations(&w, &cfg())[0],
            Err(ModelError::InvalidId { .. })
        ));
        for (k, v) in [
            ("SERVICE_COLOR", "red"),
            ("SERVICE_HTTP_PATH", "v1"),
            ("SERVICE_HTTP_DOMAIN", "a b"),
            ("SERVICE_WEIGHT", "-1"),
        ] {
            let mut w = web();
            w.env = vec![format!("{k}={v}")];
            assert!(
                matches!(
                    registrations(&w, &cfg())[0],
                    Err(ModelError::InvalidValue { .. })
                ),
                "{k}={v}"
            );
        }
        // A default name that is not a label (image "my_app") is rejected too.
        let mut w = web();
        w.image = "team/my_app:1".into();
        assert!(registrations(&w, &cfg())[0].is_err());
    }

    #[test]
    fn eligibility_rules() {
        let mut w = web();
        assert_eq!(eligibility(&w), Eligibility::Register);
        w.health = Some("starting".into());
        assert!(matches!(eligibility(&w), Eligibility::Withdraw(_)));
        w.health = Some("unhealthy".into());
        assert!(matches!(eligibility(&w), Eligibility::Withdraw(_)));
        w.health = Some("healthy".into());
        assert_eq!(eligibility(&w), Eligibility::Register);
        w.paused = true;
        assert!(matches!(eligibility(&w), Eligibility::Withdraw("paused")));
        w.paused = false;
        w.running = false;
        assert!(matches!(
            eligibility(&w),
            Eligibility::Withdraw("not running")
        ));
    }

    #[test]
    fn helpers() {
        assert_eq!(image_base_name("registry:5000/team/web:1.2"), "web");
        assert_eq!(image_base_name("busybox"), "busybox");
        assert_eq!(image_base_name("a/b@sha256:abcd"), "b");
        assert_eq!(PortProto::parse("80"), PortProto::parse("80/tcp"));
        assert_eq!(PortProto::parse("80/sctp"), None);
        assert_eq!(PortProto::parse("0/tcp"), None);
        assert!(check_instance_id("h:web_1.x:80:udp").is_ok());
        assert!(check_instance_id("h::80").is_err());
        assert!(check_instance_id("h:a b:80").is_err());
        let v: ServiceValue = serde_json::from_str(r#"{"host":"1.2.3.4","port":80}"#).unwrap();
        assert_eq!(v.port, 80);
    }
}
