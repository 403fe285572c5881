//! One service instance as the registry stores it (`/services/<service>/<instance-id>`), parsed
//! from either of the two accepted value formats, and the DNS-safe label check for names.

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

/// Transport of an instance, from its `proto` field or a Registrator id ending in `:udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

/// A live instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub addr: IpAddr,
    pub port: u16,
    /// Blue-green color ("blue"/"green"), if the writer set one.
    pub color: Option<String>,
    pub proto: Proto,
    /// SRV weight (the `weight` field, default 1).
    pub weight: u16,
    /// HTTP routing for the proxy (the `http` field), if the writer set one.
    pub http: Option<HttpRoute>,
}

/// Where the proxy routes HTTP requests to an instance: by `Host` (`domain`, without port,
/// lower case) and path prefix (`path`, starting with `/`). A missing domain matches any host;
/// a missing path is `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct HttpRoute {
    pub domain: Option<String>,
    pub path: String,
}

/// Why an instance value was not accepted (the instance is then left out of DNS).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceError {
    #[error("value is neither JSON {{\"host\":..,\"port\":..}} nor \"ip:port\": {0:?}")]
    Format(String),
    #[error("host {0:?} is not an IP address")]
    Host(String),
    #[error("port {0:?} is not a number in 1..=65535")]
    Port(String),
    #[error("http {0} is not {{\"domain\": \"name\", \"path\": \"/prefix\"}}")]
    Http(String),
}

#[derive(Deserialize)]
struct Json {
    host: serde_json::Value,
    port: serde_json::Value,
    #[serde(default)]
    color: Option<String>,
    #[serde(default)]
    proto: Option<String>,
    #[serde(default)]
    weight: Option<serde_json::Value>,
    #[serde(default)]
    http: Option<serde_json::Value>,
}

/// The `http` field: `{"domain": "shop.example", "path": "/api"}`; either may be missing.
/// Anything else (not an object, non-string members, a path not starting with `/`) is refused
/// so that a typo does not silently route a service to every request.
fn parse_http(v: &serde_json::Value) -> Result<Option<HttpRoute>, InstanceError> {
    let bad = || InstanceError::Http(v.to_string());
    let m = match v {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::Object(m) => m,
        _ => return Err(bad()),
    };
    let field = |name: &str| -> Result<Option<String>, InstanceError> {
        match m.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(_) => Err(bad()),
        }
    };
    let domain = field("domain")?.map(|d| {
        let d = d.to_ascii_lowercase();
        d.trim_end_matches('.').to_string()
    });
    if let Some(d) = &domain {
        let ok = d.split('.').all(|l| is_dns_label(l) || l == "*");
        if !ok {
            return Err(bad());
        }
    }
    let path = match field("path")? {
        None => "/".to_string(),
        Some(p) if p.starts_with('/') => p,
        Some(_) => return Err(bad()),
    };
    if domain.is_none() && path == "/" && m.is_empty() {
        return Ok(None);
    }
    Ok(Some(HttpRoute { domain, path }))
}

impl Instance {
    /// Parses a registry value: JSON (`{"host": "10.0.0.5", "port": 80, "color": "blue", ...}`,
    /// the fleet sidekick format) or a bare `ip:port` string (Registrator's etcd format, also
    /// accepted JSON-quoted). `id` is the instance id; a Registrator id ending in `:udp` marks
    /// a UDP instance.
    pub fn parse(id: &str, value: &str) -> Result<Instance, InstanceError> {
        let v = value.trim();
        let id_proto = if id.ends_with(":udp") {
            Proto::Udp
        } else {
            Proto::Tcp
        };
        if v.starts_with('{') {
            let j: Json =
                serde_json::from_str(v).map_err(|_| InstanceError::Format(value.to_string()))?;
            let host = match &j.host {
                serde_json::Value::String(s) => s.clone(),
                other => return Err(InstanceError::Host(other.to_string())),
            };
            let addr = parse_ip(&host).ok_or(InstanceError::Host(host.clone()))?;
            let port = match &j.port {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| InstanceError::Port(j.port.to_string()))? as u16;
            let proto = match j.proto.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("udp") => Proto::Udp,
                Some(_) => Proto::Tcp,
                None => id_proto,
            };
            let weight = match &j.weight {
                Some(serde_json::Value::Number(n)) => n.as_u64(),
                Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
                _ => None,
            }
            .map(|w| w.min(u16::MAX as u64) as u16)
            .unwrap_or(1);
            let color = j
                .color
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty());
            let http = match &j.http {
                Some(v) => parse_http(v)?,
                None => None,
            };
            return Ok(Instance {
                addr,
                port,
                color,
                proto,
                weight,
                http,
            });
        }
        let bare = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
            serde_json::from_str::<String>(v).map_err(|_| InstanceError::Format(value.into()))?
        } else {
            v.to_string()
        };
        let sa: SocketAddr = bare
            .parse()
            .map_err(|_| InstanceError::Format(value.to_string()))?;
        if sa.port() == 0 {
            return Err(InstanceError::Port("0".into()));
        }
        Ok(Instance {
            addr: sa.ip(),
            port: sa.port(),
            color: None,
            proto: id_proto,
            weight: 1,
            http: None,
        })
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// Whether `s` is a DNS-safe label (RFC 1123: letters, digits and inner hyphens, 1-63
/// characters), the rule for service names.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_format() {
        let i = Instance::parse(
            "a",
            r#"{"host":"10.0.0.5","port":80,"color":"Green","tags":["x"],"weight":3}"#,
        )
        .unwrap();
        assert_eq!(i.addr, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(i.port, 80);
        assert_eq!(i.color.as_deref(), Some("green"));
        assert_eq!(i.proto, Proto::Tcp);
        assert_eq!(i.weight, 3);
        let i = Instance::parse("a", r#"{ "host": "::1", "port": "53", "proto": "udp" }"#).unwrap();
        assert_eq!(i.addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!((i.port, i.proto), (53, Proto::Udp));
    }

    #[test]
    fn registrator_format() {
        let i = Instance::parse("h:web:80", "172.17.0.2:80").unwrap();
        assert_eq!((i.addr.to_string(), i.port), ("172.17.0.2".into(), 80));
        let i = Instance::parse("h:dns:53:udp", "\"10.1.1.1:53\"").unwrap();
        assert_eq!((i.port, i.proto), (53, Proto::Udp));
        let i = Instance::parse("x", "[fd00::1]:8080").unwrap();
        assert!(i.addr.is_ipv6());
    }

    #[test]
    fn rejects_bad_values() {
        for v in [
            "",
            "nope",
            "10.0.0.1",
            "10.0.0.1:0",
            "10.0.0.1:70000",
            "{\"host\":\"web\",\"port\":80}",
            "{\"host\":\"10.0.0.1\"}",
            "{\"host\":\"10.0.0.1\",\"port\":0}",
            "{\"host\":1,\"port\":1}",
            "{broken",
        ] {
            assert!(Instance::parse("i", v).is_err(), "{v:?} accepted");
        }
    }

    #[test]
    fn http_routes() {
        let i = Instance::parse(
            "a",
            r#"{"host":"10.0.0.5","port":80,"http":{"domain":"Shop.Example.","path":"/api"}}"#,
        )
        .unwrap();
        let h = i.http.unwrap();
        assert_eq!(h.domain.as_deref(), Some("shop.example"));
        assert_eq!(h.path, "/api");
        let i =
            Instance::parse("a", r#"{"host":"10.0.0.5","port":80,"http":{"path":"/x"}}"#).unwrap();
        assert_eq!(i.http.unwrap().domain, None);
        let i = Instance::parse("a", r#"{"host":"10.0.0.5","port":80,"http":{}}"#).unwrap();
        assert_eq!(i.http, None);
        let i = Instance::parse("a", r#"{"host":"10.0.0.5","port":80,"http":null}"#).unwrap();
        assert_eq!(i.http, None);
        for bad in [
            r#"{"host":"10.0.0.5","port":80,"http":"shop"}"#,
            r#"{"host":"10.0.0.5","port":80,"http":{"path":"api"}}"#,
            r#"{"host":"10.0.0.5","port":80,"http":{"domain":"a b"}}"#,
            r#"{"host":"10.0.0.5","port":80,"http":{"domain":7}}"#,
        ] {
            assert!(
                matches!(Instance::parse("a", bad), Err(InstanceError::Http(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn labels() {
        assert!(is_dns_label("web"));
        assert!(is_dns_label("web-2"));
        assert!(is_dns_label("A1"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label("-web"));
        assert!(!is_dns_label("web_1"));
        assert!(!is_dns_label("a.b"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
