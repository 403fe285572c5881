//! Fixtures: a one-member berth registry and plugin servers, in process, on a tokio
//! runtime owned by the test; a raw client for the plugin socket; Docker helpers.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use registry::client::{Client, GetOptions};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A registry member and the plugins started against it.
pub struct Harness {
    pub rt: Runtime,
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    pub client: Client,
    registry_stop: CancellationToken,
    registry: Option<JoinHandle<Result<(), registry::Error>>>,
    plugins: Vec<(CancellationToken, JoinHandle<Result<(), plugins::Error>>)>,
}

impl Harness {
    /// Starts a one-member registry on port-0 listeners and waits until it takes writes.
    pub fn start() -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let (client_l, peer_l) = rt.block_on(async {
            (
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            )
        });
        let endpoint = format!("http://{}", client_l.local_addr().unwrap());
        let peer = format!("http://{}", peer_l.local_addr().unwrap());
        let config = registry::Config::single("t", dir.path().join("registry"), &endpoint, &peer);
        let stop = CancellationToken::new();
        let registry = rt.spawn(registry::run(config, vec![client_l], peer_l, stop.clone()));
        let client = Client::new(std::slice::from_ref(&endpoint)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = rt.block_on(client.set("/_test/ready", "1", Default::default()));
            if ok.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "registry did not start: {ok:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Harness {
            rt,
            dir,
            endpoint,
            client,
            registry_stop: stop,
            registry: Some(registry),
            plugins: Vec::new(),
        }
    }

    /// Plugin flags for this registry, with the key file and volume root in the temp dir.
    pub fn args(&self, socket: &Path) -> plugins::Args {
        plugins::Args {
            endpoints: self.endpoint.clone(),
            socket: socket.to_path_buf(),
            key_file: self.key_file(),
            volume_root: self.dir.path().join("volumes"),
            node: Some("test-node".into()),
            // Overlay networks are tested by the root suite (tests/overlay.rs), with real
            // processes; these in-process plugins leave Docker's networks alone.
            docker: "none".into(),
            ..plugins::Args::defaults()
        }
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("secrets.key")
    }

    /// Serves a plugin on `args.socket` (the socket is removed when it stops).
    pub fn plugin(&mut self, args: &plugins::Args) {
        let config = args.config().expect("plugin config");
        let listener = {
            let _guard = self.rt.enter();
            plugins::bind(&args.socket).expect("bind plugin socket")
        };
        let stop = CancellationToken::new();
        let task = self.rt.spawn(plugins::run(config, listener, stop.clone()));
        self.plugins.push((stop, task));
    }

    /// Stops every plugin started so far (as on SIGTERM) and waits for them.
    pub fn stop_plugins(&mut self) {
        let plugins = std::mem::take(&mut self.plugins);
        self.rt.block_on(async move {
            for (stop, task) in plugins {
                stop.cancel();
                let r = tokio::time::timeout(Duration::from_secs(10), task).await;
                assert!(
                    matches!(r, Ok(Ok(Ok(())))),
                    "plugin did not stop cleanly: {r:?}"
                );
            }
        });
    }

    /// POSTs `body` to `path` on the plugin socket; returns status and JSON body.
    pub fn call(&self, socket: &Path, path: &str, body: &str) -> (u16, serde_json::Value) {
        self.rt
            .block_on(call(socket, "POST", path, body.to_string()))
    }

    /// The raw registry value of `key`, if any.
    pub fn raw(&self, key: &str) -> Option<(String, u64)> {
        self.rt
            .block_on(self.client.get(key, GetOptions::default()))
            .ok()
            .map(|r| (r.node.value.unwrap_or_default(), r.node.modified_index))
    }

    /// Keys directly under `dir`.
    pub fn children(&self, dir: &str) -> Vec<String> {
        match self
            .rt
            .block_on(self.client.get(dir, GetOptions::default()))
        {
            Ok(r) => r.node.nodes.into_iter().map(|n| n.key).collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for (stop, _) in &self.plugins {
            stop.cancel();
        }
        let plugins = std::mem::take(&mut self.plugins);
        let registry = self.registry.take();
        let stop = self.registry_stop.clone();
        self.rt.block_on(async move {
            for (_, t) in plugins {
                let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
            }
            stop.cancel();
            if let Some(r) = registry {
                let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
            }
        });
    }
}

/// One HTTP/1.1 request over a fresh unix-socket connection.
pub async fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: String,
) -> (u16, serde_json::Value) {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("Host", "plugin")
        .header("Content-Type", "application/vnd.docker.plugins.v1.2+json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{path}: answer is not JSON ({e}): {bytes:?}"));
    (status, json)
}

// ---------------------------------------------------------------------------
// Docker
// ---------------------------------------------------------------------------

// The daemon check, the FROM-scratch busybox image and unique names are the root suite's.
#[path = "../../../tests/support/docker.rs"]
pub mod docker_fixtures;
pub use docker_fixtures::{docker_out, docker_ready, uniq, Image, BUSYBOX};

pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Runs `docker ARGS`, panics with its stderr on failure, returns stdout bytes.
pub fn docker(args: &[&str]) -> Vec<u8> {
    let o = docker_out(args);
    assert!(
        o.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// A Docker object removed on drop with `docker <kind> rm -f <name>`.
pub struct Guard {
    pub kind: &'static str,
    pub name: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = docker_out(&[self.kind, "rm", "-f", &self.name]);
    }
}

/// Polls `f` until true or the deadline.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
