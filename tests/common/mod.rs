//! Scratch v2 servers for the client and ctl suites: a single berth registry member by
//! default, or the real etcd 3.4 where a test needs etcd itself.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// A running single-member etcd with the v2 API; killed (and its data dir
/// removed) on drop.
pub struct Etcd {
    child: Child,
    dir: PathBuf,
    pub client_url: String,
    pub peer_url: String,
}

#[path = "../support/ports.rs"]
mod ports;
use ports::free_port;

/// The berth binary under test.
pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// True when etcd and etcdctl are installed. Outside CI a missing tool skips the test;
/// under CI=true it is a failure.
pub fn available() -> bool {
    let ok = Path::new(ETCD).exists() && Path::new(ETCDCTL).exists();
    if !ok {
        let ci = std::env::var("CI").map(|v| v == "true").unwrap_or(false);
        assert!(
            !ci,
            "{ETCD} / {ETCDCTL} missing under CI: run scripts/setup"
        );
        eprintln!("skipping: {ETCD} / {ETCDCTL} not installed (run scripts/setup)");
    }
    ok
}

impl Etcd {
    /// A single-member berth registry.
    pub async fn start() -> Etcd {
        Etcd::launch(true, &["--enable-v2"]).await
    }

    /// The real etcd 3.4 with `extra` flags.
    pub async fn start_with(extra: &[&str]) -> Etcd {
        Etcd::launch(false, extra).await
    }

    async fn launch(berth: bool, extra: &[&str]) -> Etcd {
        let (cp, pp) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{cp}");
        let peer_url = format!("http://127.0.0.1:{pp}");
        let dir = std::env::temp_dir().join(format!("wip-ctl-etcd-{}-{cp}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cmd = if berth {
            let mut c = Command::new(BERTH);
            c.arg("registry").args(["--name", "default"]);
            c
        } else {
            Command::new(ETCD)
        };
        let child = cmd
            .args(extra)
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let etcd = Etcd {
            child,
            dir,
            client_url,
            peer_url,
        };
        let client = registry::client::Client::new(std::slice::from_ref(&etcd.client_url)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Ready once healthy and the member has published its name.
            if let Ok(true) = client.health().await {
                if !extra.contains(&"--enable-v2") {
                    break;
                }
                if let Ok(ms) = client.member_list().await {
                    if ms.iter().all(|m| !m.name.is_empty()) {
                        break;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd at {} did not become healthy",
                etcd.client_url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
