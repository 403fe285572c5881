//! A reference etcd 3.4 (Debian's etcd-server) with the v2 API enabled.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port, http, require_tool};

pub struct Etcd {
    pub client_url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        let bin = require_tool("/usr/bin/etcd", "etcd-server");
        let dir = tempfile::tempdir().expect("temp dir");
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let child = Command::new(bin)
            .args(["--name", "n1", "--enable-v2"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("n1={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        let etcd = Etcd {
            client_url,
            child,
            _dir: dir,
        };
        eventually(Duration::from_secs(15), || {
            http::get(&format!("{}/v2/keys/", etcd.client_url))
                .ok()
                .filter(|r| r.status == 200)
        })
        .expect("etcd did not start within 15 s");
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
