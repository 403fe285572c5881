//! [`OpenRegistry`]: a one-member berth registry reachable from containers and namespaces.

use std::time::Duration;

use serde_json::Value;

use super::proc::Proc;
use super::{eventually, free_port, http};

/// A one-member registry listening on every address, so containers and network namespaces
/// reach it too (`Cluster` members listen on 127.0.0.1 only).
pub struct OpenRegistry {
    _proc: Proc,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl OpenRegistry {
    pub fn start() -> OpenRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let peer = format!("http://127.0.0.1:{}", free_port());
        let args: Vec<String> = [
            "registry",
            "--name",
            "r1",
            "--data-dir",
            &dir.path().join("data").to_string_lossy(),
            "--listen-client-urls",
            &format!("http://0.0.0.0:{port}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{port}"),
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("r1={peer}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let proc = Proc::start(&args);
        let r = OpenRegistry {
            _proc: proc,
            port,
            _dir: dir,
        };
        let up = eventually(Duration::from_secs(20), || {
            http::send("PUT", &r.key_url("/_test/ready"), Some("value=1"))
                .ok()
                .filter(|x| x.status == 201 || x.status == 200)
        });
        assert!(up.is_some(), "registry did not start");
        r
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn key_url(&self, key: &str) -> String {
        format!("{}/v2/keys{key}", self.url())
    }

    /// The node at `key` (recursive), if it exists.
    pub fn node(&self, key: &str) -> Option<Value> {
        let r = http::send(
            "GET",
            &format!("{}?recursive=true", self.key_url(key)),
            None,
        )
        .ok()?;
        (r.status == 200).then(|| r.json()["node"].clone())
    }

    pub fn value(&self, key: &str) -> Option<Value> {
        let n = self.node(key)?;
        serde_json::from_str(n["value"].as_str()?).ok()
    }

    pub fn children(&self, dir: &str) -> Vec<String> {
        self.node(dir)
            .and_then(|n| n["nodes"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|n| {
                n["key"]
                    .as_str()
                    .map(|k| k.rsplit('/').next().unwrap().to_string())
            })
            .collect()
    }
}
