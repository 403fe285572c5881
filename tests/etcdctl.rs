//! The seed walkthrough with the real `etcdctl` (ETCDCTL_API=2) against a 3-member berth
//! cluster, each command sent to a different member with `--no-sync`.

mod support;

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{require_tool, Cluster};

struct Ctl {
    bin: String,
    endpoints: Vec<String>,
    next: std::cell::Cell<usize>,
}

impl Ctl {
    /// Runs etcdctl against the next member in turn.
    fn run(&self, args: &[&str]) -> Output {
        let i = self.next.get();
        self.next.set((i + 1) % self.endpoints.len());
        self.cmd(i, args).output().expect("run etcdctl")
    }

    fn cmd(&self, member: usize, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("ETCDCTL_API", "2")
            .args(["--no-sync", "--endpoints", &self.endpoints[member]])
            .args(args);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }
}

#[test]
fn seed_walkthrough_with_real_etcdctl() {
    let bin = require_tool("/usr/bin/etcdctl", "etcd-client");
    let cluster = Cluster::start(3);
    let ctl = Ctl {
        bin,
        endpoints: (0..3).map(|i| cluster.url(i).to_string()).collect(),
        next: std::cell::Cell::new(0),
    };

    assert_eq!(ctl.ok(&["mk", "/hello", "world"]), "world\n");
    assert_eq!(ctl.ok(&["get", "/hello"]), "world\n");
    // mk on an existing key fails with etcd's error and exit code 4.
    let dup = ctl.run(&["mk", "/hello", "again"]);
    assert_eq!(dup.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("105: Key already exists (/hello)"));

    assert_eq!(ctl.ok(&["mkdir", "/hello-dir"]), "");
    assert_eq!(ctl.ok(&["mk", "/hello-dir/child", "c"]), "c\n");
    assert_eq!(
        ctl.ok(&["ls", "/", "--recursive", "--sort"]),
        "/hello\n/hello-dir\n/hello-dir/child\n"
    );

    // A key with a TTL disappears once it expires (the leader expires it through the log).
    assert_eq!(ctl.ok(&["mk", "/hello2", "world", "--ttl", "2"]), "world\n");
    assert_eq!(ctl.ok(&["get", "/hello2"]), "world\n");
    std::thread::sleep(Duration::from_millis(3200));
    let gone = ctl.run(&["get", "/hello2"]);
    assert_eq!(gone.status.code(), Some(4), "expired key still readable");
    assert!(String::from_utf8_lossy(&gone.stderr).contains("100: Key not found (/hello2)"));

    // watch on member 0 is answered by a set on member 1.
    let mut watcher = ctl
        .cmd(0, &["watch", "/hello3"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("watch");
    std::thread::sleep(Duration::from_millis(500));
    let set_out = ctl
        .cmd(1, &["set", "/hello3", "from-member-2"])
        .output()
        .expect("set");
    assert!(set_out.status.success());
    let status = wait_child(&mut watcher, Duration::from_secs(5));
    assert!(status, "watch did not return after the set");
    let mut watched = String::new();
    watcher
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut watched)
        .unwrap();
    assert_eq!(watched, "from-member-2\n");

    // exec-watch runs a command per change with the event in its environment.
    let marker = cluster.dir.path().join("exec-watch.out");
    let script = format!(
        "echo \"$ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE\" >> {}",
        marker.display()
    );
    let mut exec = ctl
        .cmd(
            2,
            &[
                "exec-watch",
                "--recursive",
                "/hello4",
                "--",
                "sh",
                "-c",
                &script,
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("exec-watch");
    std::thread::sleep(Duration::from_millis(500));
    assert!(ctl
        .cmd(0, &["set", "/hello4", "one"])
        .output()
        .unwrap()
        .status
        .success());
    let seen = support::eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&marker)
            .ok()
            .filter(|s| s.contains("set /hello4 one"))
    });
    let _ = exec.kill();
    let _ = exec.wait();
    assert!(seen.is_some(), "exec-watch did not run its command");

    // rm and rmdir.
    assert_eq!(ctl.ok(&["rm", "/hello"]), "PrevNode.Value: world\n");
    assert_eq!(ctl.run(&["get", "/hello"]).status.code(), Some(4));
    assert_eq!(ctl.ok(&["mkdir", "/empty-dir"]), "");
    assert_eq!(ctl.ok(&["rmdir", "/empty-dir"]), "");
    let not_empty = ctl.run(&["rmdir", "/hello-dir"]);
    assert!(String::from_utf8_lossy(&not_empty.stderr)
        .contains("108: Directory not empty (/hello-dir)"));

    // setdir, update --ttl, updatedir --ttl.
    assert_eq!(ctl.ok(&["setdir", "/conf"]), "");
    assert_eq!(ctl.ok(&["set", "/conf/a", "1"]), "1\n");
    assert_eq!(ctl.ok(&["update", "/conf/a", "2", "--ttl", "100"]), "2\n");
    let ext = ctl.ok(&["-o", "extended", "get", "/conf/a"]);
    assert!(
        ext.contains("TTL: 100") || ext.contains("TTL: 99"),
        "update --ttl not applied: {ext}"
    );
    assert_eq!(ctl.ok(&["updatedir", "/conf", "--ttl", "200"]), "");
    let dir = ctl.ok(&["-o", "json", "get", "/conf/a"]);
    assert!(dir.contains("\"value\":\"2\""), "{dir}");
    let raw = support::http::get(&cluster.key_url(0, "/conf"))
        .unwrap()
        .json();
    let ttl = raw["node"]["ttl"].as_i64().unwrap();
    assert!(
        (198..=200).contains(&ttl),
        "updatedir --ttl not applied: {raw}"
    );

    // The sidekick's announcement.
    let value = r#"{ "host": "172.17.8.102", "port": 80 }"#;
    assert_eq!(
        ctl.ok(&["set", "/services/web/nginx", value, "--ttl", "60"]),
        format!("{value}\n")
    );
    for i in 0..3 {
        let r = support::http::get(&cluster.key_url(i, "/services/web/nginx"))
            .unwrap()
            .json();
        assert_eq!(r["node"]["value"], value, "member {i}");
        assert!(r["node"]["ttl"].as_i64().unwrap() > 55, "member {i}: {r}");
    }
    assert_eq!(ctl.ok(&["ls", "/services/web"]), "/services/web/nginx\n");

    // member list shows the three members with their client URLs.
    let members = ctl.ok(&["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    for i in 0..3 {
        assert!(members.contains(cluster.url(i)), "{members}");
    }
    assert_eq!(members.matches("isLeader=true").count(), 1, "{members}");
    let health = ctl.ok(&["cluster-health"]);
    assert!(health.contains("cluster is healthy"), "{health}");
}

fn wait_child(child: &mut std::process::Child, timeout: Duration) -> bool {
    support::eventually(timeout, || child.try_wait().ok().flatten().map(|_| ())).is_some()
}
