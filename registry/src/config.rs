//! Member configuration with etcd's flag semantics, and etcd-style member and cluster ids.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::ConfigError;
use crate::raft::NodeId;

/// Whether this member bootstraps a new cluster or joins an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

impl std::str::FromStr for ClusterState {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "new" => Ok(ClusterState::New),
            "existing" => Ok(ClusterState::Existing),
            other => Err(ConfigError::Invalid(format!(
                "--initial-cluster-state must be \"new\" or \"existing\", not {other:?}"
            ))),
        }
    }
}

/// Everything a registry member needs to start (listeners are passed separately).
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub advertise_client_urls: Vec<String>,
    pub advertise_peer_urls: Vec<String>,
    /// name -> peer URLs, from `--initial-cluster`.
    pub initial_cluster: BTreeMap<String, Vec<String>>,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    /// Take a snapshot after this many applied entries.
    pub snapshot_count: u64,
    /// Largest accepted client request body (etcd: 1.5 MiB).
    pub max_request_bytes: usize,
    /// Raft heartbeat interval in milliseconds (etcd's `--heartbeat-interval`).
    pub heartbeat_ms: u64,
    /// Raft election timeout in milliseconds (etcd's `--election-timeout`).
    pub election_ms: u64,
}

impl Config {
    /// A single-member configuration with etcd's defaults, for tests and `berth up`.
    pub fn single(name: &str, data_dir: PathBuf, client_url: &str, peer_url: &str) -> Config {
        let mut initial = BTreeMap::new();
        initial.insert(name.to_string(), vec![peer_url.to_string()]);
        Config {
            name: name.to_string(),
            data_dir,
            advertise_client_urls: vec![client_url.to_string()],
            advertise_peer_urls: vec![peer_url.to_string()],
            initial_cluster: initial,
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etcd-cluster".to_string(),
            snapshot_count: 10_000,
            max_request_bytes: 1536 * 1024,
            heartbeat_ms: 100,
            election_ms: 1000,
        }
    }

    /// This member's id for a new cluster: derived from its peer URLs and the cluster token.
    pub fn member_id(&self) -> NodeId {
        member_id(&self.advertise_peer_urls, &self.initial_cluster_token, None)
    }

    /// The cluster id of a new cluster: derived from all initial member ids.
    pub fn cluster_id(&self) -> u64 {
        let mut ids: Vec<NodeId> = self
            .initial_cluster
            .values()
            .map(|urls| member_id(urls, &self.initial_cluster_token, None))
            .collect();
        ids.sort_unstable();
        let mut h = Fnv::new();
        for id in ids {
            h.write(&id.to_be_bytes());
        }
        h.finish()
    }

    /// Checks the flags agree with each other, with messages that say what to change.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::Invalid("--name must not be empty".into()));
        }
        if self.heartbeat_ms == 0 || self.election_ms < 5 * self.heartbeat_ms {
            return Err(ConfigError::Invalid(format!(
                "--election-timeout ({} ms) must be at least 5 times --heartbeat-interval ({} ms), as in etcd",
                self.election_ms, self.heartbeat_ms
            )));
        }
        for url in self
            .advertise_client_urls
            .iter()
            .chain(&self.advertise_peer_urls)
        {
            parse_http_url(url)?;
        }
        if self.initial_cluster_state == ClusterState::New {
            match self.initial_cluster.get(&self.name) {
                None => {
                    return Err(ConfigError::Invalid(format!(
                        "--initial-cluster has no entry for this member's --name {:?}; add {}={}",
                        self.name,
                        self.name,
                        self.advertise_peer_urls.join(",")
                    )))
                }
                Some(urls) => {
                    let mut a = urls.clone();
                    let mut b = self.advertise_peer_urls.clone();
                    a.sort();
                    b.sort();
                    if a != b {
                        return Err(ConfigError::Invalid(format!(
                            "--initial-cluster must include {}={} given --initial-advertise-peer-urls={}",
                            self.name,
                            self.advertise_peer_urls.join(","),
                            self.advertise_peer_urls.join(",")
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Parses `--initial-cluster` (`n1=http://a:2380,n2=http://b:2380`).
pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part.split_once('=').ok_or_else(|| {
            ConfigError::Invalid(format!(
                "--initial-cluster entry {part:?} is not NAME=URL (example: n1=http://127.0.0.1:2380)"
            ))
        })?;
        parse_http_url(url)?;
        out.entry(name.to_string())
            .or_default()
            .push(url.to_string());
    }
    if out.is_empty() {
        return Err(ConfigError::Invalid("--initial-cluster is empty".into()));
    }
    Ok(out)
}

/// Parses a comma-separated URL list flag.
pub fn parse_urls(flag: &str, s: &str) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|u| u.trim_end_matches('/').to_string())
        .collect();
    if urls.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{flag} needs at least one URL"
        )));
    }
    for u in &urls {
        parse_http_url(u).map_err(|e| ConfigError::Invalid(format!("{flag}: {e}")))?;
    }
    Ok(urls)
}

/// Returns host:port of an `http://host:port` URL.
pub fn parse_http_url(s: &str) -> Result<String, ConfigError> {
    let url =
        url::Url::parse(s).map_err(|e| ConfigError::Invalid(format!("invalid URL {s:?}: {e}")))?;
    if url.scheme() != "http" {
        return Err(ConfigError::Invalid(format!(
            "URL {s:?}: only http:// is supported (TLS is not implemented yet)"
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| ConfigError::Invalid(format!("URL {s:?} has no host")))?;
    let port = url
        .port()
        .ok_or_else(|| ConfigError::Invalid(format!("URL {s:?} needs an explicit port")))?;
    Ok(format!("{host}:{port}"))
}

/// An etcd-style member id: a 64-bit hash of the sorted peer URLs and the cluster token
/// (plus a time for members added at run time, so a re-added URL gets a new id).
pub fn member_id(peer_urls: &[String], token: &str, time: Option<u64>) -> NodeId {
    let mut urls: Vec<&String> = peer_urls.iter().collect();
    urls.sort();
    let mut h = Fnv::new();
    for u in urls {
        h.write(u.as_bytes());
    }
    h.write(token.as_bytes());
    if let Some(t) = time {
        h.write(&t.to_be_bytes());
    }
    // 0 is reserved by openraft tooling and etcd alike.
    h.finish().max(1)
}

/// FNV-1a, 64 bit: stable across versions and platforms, unlike std's hasher.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_names_and_urls() {
        let c = parse_initial_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:2").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c["b"], vec!["http://127.0.0.1:2".to_string()]);
        assert!(parse_initial_cluster("a").is_err());
        assert!(parse_initial_cluster("a=ftp://x:1").is_err());
        assert!(parse_initial_cluster("").is_err());
    }

    #[test]
    fn ids_are_stable_and_order_independent() {
        let a = member_id(&["http://a:1".into(), "http://b:2".into()], "t", None);
        let b = member_id(&["http://b:2".into(), "http://a:1".into()], "t", None);
        assert_eq!(a, b);
        assert_ne!(a, member_id(&["http://a:1".into()], "t", None));
        assert_ne!(
            a,
            member_id(&["http://a:1".into(), "http://b:2".into()], "u", None)
        );
    }

    #[test]
    fn validate_requires_self_in_initial_cluster() {
        let mut c = Config::single(
            "n1",
            "/tmp/x".into(),
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
        );
        assert!(c.validate().is_ok());
        c.name = "n2".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("no entry"), "{err}");
    }

    #[test]
    fn urls_need_scheme_host_and_port() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:2379").unwrap(),
            "127.0.0.1:2379"
        );
        assert!(parse_http_url("127.0.0.1:2379").is_err());
        assert!(parse_http_url("http://127.0.0.1").is_err());
        assert!(parse_urls("--x", " , ").is_err());
    }
}
