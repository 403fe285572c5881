//! A berth registry cluster of real processes on loopback ports, with temp data dirs, that
//! can kill (-9), pause (SIGSTOP), resume, restart, add and remove members.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port, http, BERTH};

/// One member process.
pub struct MemberProc {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub initial_cluster: String,
    pub state: &'static str,
    pub child: Option<Child>,
}

impl MemberProc {
    fn spawn(&mut self, token: &str, extra: &[String]) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("member log file");
        let child = Command::new(BERTH)
            .arg("registry")
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", self.state])
            .args(["--initial-cluster-token", token])
            .args(extra)
            .env(
                "BERTH_LOG",
                std::env::var("TEST_BERTH_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth registry");
        self.child = Some(child);
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A cluster of berth registry members.
pub struct Cluster {
    pub members: Vec<MemberProc>,
    pub dir: tempfile::TempDir,
    pub token: String,
    pub extra: Vec<String>,
}

impl Cluster {
    /// Starts `n` members and waits until they agree on a leader.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    /// Starts `n` members with extra flags for each, and waits for a leader.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = format!("test-{}", free_port());
        let specs: Vec<(String, String, String)> = (0..n)
            .map(|i| {
                (
                    format!("n{}", i + 1),
                    format!("http://127.0.0.1:{}", free_port()),
                    format!("http://127.0.0.1:{}", free_port()),
                )
            })
            .collect();
        let initial: Vec<String> = specs.iter().map(|(n, _, p)| format!("{n}={p}")).collect();
        let initial = initial.join(",");
        let mut cluster = Cluster {
            members: Vec::new(),
            dir,
            token,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for (name, client_url, peer_url) in specs {
            let data_dir = cluster.dir.path().join(&name);
            let log = cluster.dir.path().join(format!("{name}.log"));
            let mut m = MemberProc {
                name,
                client_url,
                peer_url,
                data_dir,
                log,
                initial_cluster: initial.clone(),
                state: "new",
                child: None,
            };
            m.spawn(&cluster.token, &cluster.extra);
            cluster.members.push(m);
        }
        cluster.wait_ready();
        cluster
    }

    /// Client URL of member `i`.
    pub fn url(&self, i: usize) -> &str {
        &self.members[i].client_url
    }

    /// `/v2/keys` URL of `key` on member `i`.
    pub fn key_url(&self, i: usize, key: &str) -> String {
        format!("{}/v2/keys{}", self.members[i].client_url, key)
    }

    /// Comma-separated client URLs of the running members.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| m.client_url.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every running member knows a leader and has published its attributes.
    pub fn wait_ready(&self) {
        let ok = eventually(Duration::from_secs(20), || {
            let running: Vec<&MemberProc> =
                self.members.iter().filter(|m| m.is_running()).collect();
            let all = running.iter().all(|m| {
                http::get(&format!("{}/v2/members/leader", m.client_url))
                    .map(|r| r.status == 200)
                    .unwrap_or(false)
            });
            let published = http::get(&format!("{}/v2/machines", running[0].client_url))
                .map(|r| r.body.split(", ").filter(|s| !s.is_empty()).count() >= running.len())
                .unwrap_or(false);
            (all && published).then_some(())
        });
        if ok.is_none() {
            self.dump_logs();
            panic!("cluster did not become ready within 20 s");
        }
    }

    /// Index of the member that currently leads, as the members report it.
    pub fn leader(&self) -> Option<usize> {
        for m in self.members.iter().filter(|m| m.is_running()) {
            if let Ok(r) = http::get(&format!("{}/v2/members/leader", m.client_url)) {
                if r.status == 200 {
                    let urls = r.json()["peerURLs"].clone();
                    return self.members.iter().position(|x| {
                        urls.as_array()
                            .map(|a| a.iter().any(|u| u == &x.peer_url))
                            .unwrap_or(false)
                    });
                }
            }
        }
        None
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `sig` to the running ones of `members` with one `kill`, so that they get it
    /// in step.
    fn signal(&self, sig: &str, members: &[usize]) {
        let pids: Vec<String> = members
            .iter()
            .filter_map(|&i| self.members[i].child.as_ref())
            .map(|c| c.id().to_string())
            .collect();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg(sig).args(&pids).status();
        }
    }

    /// SIGSTOP: the process stays but answers nothing.
    pub fn pause(&self, i: usize) {
        self.signal("-STOP", &[i]);
    }

    /// SIGCONT.
    pub fn resume(&self, i: usize) {
        self.signal("-CONT", &[i]);
    }

    /// SIGCONT to several members at once, so that they resume in step.
    pub fn resume_together(&self, members: &[usize]) {
        self.signal("-CONT", members);
    }

    /// Starts a stopped member again on the same data dir.
    pub fn restart(&mut self, i: usize) {
        assert!(
            self.members[i].child.is_none(),
            "member {i} is still running"
        );
        let token = self.token.clone();
        let extra = self.extra.clone();
        self.members[i].spawn(&token, &extra);
    }

    /// Adds a member through `/v2/members` on member `via`, then starts it with
    /// `--initial-cluster-state existing`. Returns its index.
    pub fn add_member(&mut self, via: usize) -> usize {
        let name = format!("n{}", self.members.len() + 1);
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let c = http::client(Duration::from_secs(15));
        let resp = c
            .post(format!("{}/v2/members", self.url(via)))
            .header("Content-Type", "application/json")
            .body(format!("{{\"peerURLs\":[\"{peer_url}\"]}}"))
            .send()
            .expect("member add request");
        assert_eq!(
            resp.status().as_u16(),
            201,
            "member add failed: {:?}",
            resp.text()
        );
        let mut initial: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        initial.push(format!("{name}={peer_url}"));
        let mut m = MemberProc {
            data_dir: self.dir.path().join(&name),
            log: self.dir.path().join(format!("{name}.log")),
            name,
            client_url,
            peer_url,
            initial_cluster: initial.join(","),
            state: "existing",
            child: None,
        };
        m.spawn(&self.token, &self.extra);
        self.members.push(m);
        self.members.len() - 1
    }

    /// Prints every member's log tail (used when a test fails).
    pub fn dump_logs(&self) {
        for m in &self.members {
            eprintln!(
                "----- {} ({}) -----\n{}",
                m.name,
                m.client_url,
                m.log_tail(40)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
