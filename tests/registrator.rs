//! The registrator and the announcer against the real Docker daemon and a real berth registry.
//!
//! Workload images are built here FROM scratch from Debian's busybox-static; every container,
//! network and image tag a test creates is removed by a Drop guard. Without a reachable
//! daemon the tests are skipped, except under CI=true where that is a failure.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::docker::{docker_out, docker_ready, uniq, Container, Image, Network};
use support::proc::Proc;
use support::{eventually, free_port, http, Cluster, OpenRegistry, BERTH};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A registrator for `cluster` with a unique node name; waits for its first reconciliation.
fn registrator(cluster: &Cluster, node: &str, extra: &[&str]) -> Proc {
    let mut args = s(&[
        "registrator",
        "--endpoints",
        cluster.url(0),
        "--hostname",
        node,
        "--ip",
        "127.0.0.1",
    ]);
    args.extend(extra.iter().map(|x| x.to_string()));
    let p = Proc::start(&args);
    p.wait_log("reconciling", Duration::from_secs(20));
    p
}

// ---------------------------------------------------------------------------
// Registry helpers
// ---------------------------------------------------------------------------

/// The JSON value of `key`, if it exists.
fn entry(cluster: &Cluster, key: &str) -> Option<serde_json::Value> {
    let r = http::get(&cluster.key_url(0, key)).ok()?;
    if r.status != 200 {
        return None;
    }
    let v = r.json();
    let raw = v["node"]["value"].as_str()?.to_string();
    Some(serde_json::from_str(&raw).unwrap_or(serde_json::Value::String(raw)))
}

/// Every key (with its raw value) under `dir`.
fn keys_under(cluster: &Cluster, dir: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(r) = http::get(&format!("{}?recursive=true", cluster.key_url(0, dir))) else {
        return out;
    };
    if r.status != 200 {
        return out;
    }
    fn walk(n: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        if let Some(v) = n["value"].as_str() {
            out.insert(n["key"].as_str().unwrap_or("").to_string(), v.to_string());
        }
        if let Some(ns) = n["nodes"].as_array() {
            for c in ns {
                walk(c, out);
            }
        }
    }
    walk(&r.json()["node"], &mut out);
    out
}

fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let ok = eventually(timeout, || f().then_some(()));
    assert!(ok.is_some(), "{what} (waited {timeout:?})");
}

fn key_of(svc: &str, node: &str, c: &Container, port: u16) -> String {
    format!("/services/{svc}/{node}:{}:{port}", c.name)
}

// ---------------------------------------------------------------------------
// 1. docker run / docker stop
// ---------------------------------------------------------------------------

#[test]
fn registers_published_port_and_removes_on_stop() {
    if !docker_ready() {
        return;
    }
    let cluster = Cluster::start(1);
    let img = Image::busybox();
    let node = uniq("node");
    let _reg = registrator(&cluster, &node, &[]);
    let svc = uniq("web");
    let port = free_port();
    let web = Container::run(
        &uniq("web"),
        &[
            "-p",
            &format!("{port}:80"),
            "-e",
            &format!("SERVICE_NAME={svc}"),
            "-e",
            "SERVICE_TAGS=a,b",
            "-l",
            "SERVICE_COLOR=blue",
            &img.tag,
        ],
    );
    let key = key_of(&svc, &node, &web, 80);
    let started = Instant::now();
    let v = eventually(Duration::from_secs(1), || entry(&cluster, &key));
    let v = v.unwrap_or_else(|| {
        panic!(
            "{key} not registered within 1 s of `docker run`; keys: {:?}",
            keys_under(&cluster, "/services")
        )
    });
    eprintln!("registered after {:?}", started.elapsed());
    assert_eq!(v["host"], "127.0.0.1");
    assert_eq!(v["port"], port);
    assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(v["color"], "blue");
    assert_eq!(v["node"], node.as_str());
    assert_eq!(v["container"], web.id.as_str());
    assert_eq!(v["proto"], "tcp");
    // The entry carries a TTL.
    let raw = http::get(&cluster.key_url(0, &key)).unwrap().json();
    assert!(raw["node"]["ttl"].as_i64().unwrap_or(0) > 0, "{raw}");
    // The registered address serves.
    let page = http::get(&format!("http://127.0.0.1:{port}/")).unwrap();
    assert_eq!(page.body.trim(), "hello");

    web.stop();
    let gone = eventually(Duration::from_secs(1), || {
        entry(&cluster, &key).is_none().then_some(())
    });
    assert!(
        gone.is_some(),
        "{key} still registered 1 s after `docker stop`"
    );
}

// ---------------------------------------------------------------------------
// 2. kill -9, changes while down, restart
// ---------------------------------------------------------------------------

#[test]
fn reconciles_after_kill_9() {
    if !docker_ready() {
        return;
    }
    let cluster = Cluster::start(1);
    let img = Image::busybox();
    let node = uniq("node");
    let mut reg = registrator(&cluster, &node, &["--ttl", "60", "--ttl-refresh", "20"]);
    let svc = uniq("app");
    let env = format!("SERVICE_NAME={svc}");
    let run = |name: &str| Container::run(name, &["-p", "80", "-e", &env, &img.tag]);
    let a = run(&uniq("a"));
    let b = run(&uniq("b"));
    let c = run(&uniq("c"));
    let dir = format!("/services/{svc}");
    let ids = |cs: &[&Container]| -> Vec<String> {
        let mut v: Vec<String> = cs.iter().map(|c| key_of(&svc, &node, c, 80)).collect();
        v.sort();
        v
    };
    wait_until(Duration::from_secs(10), "a, b, c registered", || {
        keys_under(&cluster, &dir).into_keys().collect::<Vec<_>>() == ids(&[&a, &b, &c])
    });

    reg.kill9();
    a.stop();
    b.stop();
    let d = run(&uniq("d"));
    // Nobody watched: the registry still lists a and b (their TTL is 60 s) and not d.
    assert_eq!(
        keys_under(&cluster, &dir).into_keys().collect::<Vec<_>>(),
        ids(&[&a, &b, &c])
    );

    reg.spawn();
    wait_until(
        Duration::from_secs(10),
        "after restart the registry lists exactly c and d",
        || keys_under(&cluster, &dir).into_keys().collect::<Vec<_>>() == ids(&[&c, &d]),
    );
    let v = entry(&cluster, &key_of(&svc, &node, &d, 80)).unwrap();
    assert_eq!(v["container"], d.id.as_str());
}

// ---------------------------------------------------------------------------
// 3. the event stream is cut while containers change
// ---------------------------------------------------------------------------

/// A unix-socket proxy in front of the Docker socket that can be cut (listener closed, every
/// connection shut down) and restored.
struct SocketProxy {
    path: PathBuf,
    enabled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
    listening: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl SocketProxy {
    fn start(target: &str) -> SocketProxy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let p = SocketProxy {
            path: path.clone(),
            enabled: Arc::new(AtomicBool::new(true)),
            stop: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
            listening: Arc::new(AtomicBool::new(false)),
            _dir: dir,
        };
        let (enabled, stop, conns, listening) = (
            p.enabled.clone(),
            p.stop.clone(),
            p.conns.clone(),
            p.listening.clone(),
        );
        let target = target.to_string();
        std::thread::spawn(move || {
            let mut listener: Option<UnixListener> = None;
            while !stop.load(Ordering::SeqCst) {
                if !enabled.load(Ordering::SeqCst) {
                    if listener.take().is_some() {
                        let _ = std::fs::remove_file(&path);
                    }
                    listening.store(false, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                if listener.is_none() {
                    let _ = std::fs::remove_file(&path);
                    let l = UnixListener::bind(&path).expect("bind proxy socket");
                    l.set_nonblocking(true).unwrap();
                    listener = Some(l);
                    listening.store(true, Ordering::SeqCst);
                }
                match listener.as_ref().unwrap().accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(upstream) = UnixStream::connect(&target) else {
                            continue;
                        };
                        let mut list = conns.lock().unwrap();
                        list.push(client.try_clone().unwrap());
                        list.push(upstream.try_clone().unwrap());
                        drop(list);
                        pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                        pipe(upstream, client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            let _ = std::fs::remove_file(&path);
        });
        let p2 = &p;
        wait_until(Duration::from_secs(5), "proxy listening", || {
            p2.listening.load(Ordering::SeqCst)
        });
        p
    }

    fn cut(&self) {
        self.enabled.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        wait_until(Duration::from_secs(5), "proxy closed", || {
            !self.listening.load(Ordering::SeqCst)
        });
    }

    fn restore(&self) {
        self.enabled.store(true, Ordering::SeqCst);
        wait_until(Duration::from_secs(5), "proxy listening again", || {
            self.listening.load(Ordering::SeqCst)
        });
    }
}

fn pipe(mut from: UnixStream, mut to: UnixStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn recovers_from_a_cut_event_stream_without_restart() {
    if !docker_ready() {
        return;
    }
    let cluster = Cluster::start(1);
    let img = Image::busybox();
    let proxy = SocketProxy::start("/var/run/docker.sock");
    let node = uniq("node");
    let sock = proxy.path.to_string_lossy().to_string();
    let mut reg = registrator(
        &cluster,
        &node,
        &["--docker-socket", &sock, "--resync", "0"],
    );
    let svc = uniq("api");
    let env = format!("SERVICE_NAME={svc}");
    let run = |name: &str| Container::run(name, &["-p", "80", "-e", &env, &img.tag]);
    let dir = format!("/services/{svc}");
    let a = run(&uniq("a"));
    let ka = key_of(&svc, &node, &a, 80);
    wait_until(Duration::from_secs(5), "a registered", || {
        entry(&cluster, &ka).is_some()
    });

    proxy.cut();
    reg.wait_log("Docker event stream", Duration::from_secs(5));
    a.stop();
    let b = run(&uniq("b"));
    let kb = key_of(&svc, &node, &b, 80);
    // Blind while cut: a stays, b is unknown.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        keys_under(&cluster, &dir).into_keys().collect::<Vec<_>>(),
        vec![ka.clone()]
    );

    proxy.restore();
    wait_until(
        Duration::from_secs(15),
        "after the stream is back the registry lists exactly b",
        || keys_under(&cluster, &dir).into_keys().collect::<Vec<_>>() == vec![kb.clone()],
    );
    assert!(reg.running(), "the registrator exited");
    // And it follows events again.
    b.stop();
    wait_until(Duration::from_secs(5), "b withdrawn after stop", || {
        entry(&cluster, &kb).is_none()
    });
}

#[test]
fn starts_without_docker_and_catches_up_when_it_appears() {
    if !docker_ready() {
        return;
    }
    let cluster = Cluster::start(1);
    let img = Image::busybox();
    let proxy = SocketProxy::start("/var/run/docker.sock");
    proxy.cut(); // Docker is "down": nothing answers on the socket
    let node = uniq("node");
    let svc = uniq("late");
    let env = format!("SERVICE_NAME={svc}");
    let a = Container::run(&uniq("a"), &["-p", "80", "-e", &env, &img.tag]);
    let key = key_of(&svc, &node, &a, 80);
    let sock = proxy.path.to_string_lossy().to_string();
    let mut reg = Proc::start(&s(&[
        "registrator",
        "--endpoints",
        cluster.url(0),
        "--hostname",
        &node,
        "--ip",
        "127.0.0.1",
        "--docker-socket",
        &sock,
    ]));
    reg.wait_log("Docker unreachable", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    assert!(reg.running(), "the registrator gave up without Docker");
    assert!(entry(&cluster, &key).is_none());
    proxy.restore();
    wait_until(
        Duration::from_secs(20),
        "registered once Docker answers",
        || entry(&cluster, &key).is_some(),
    );
    // And it follows events from then on.
    a.stop();
    wait_until(Duration::from_secs(5), "withdrawn after stop", || {
        entry(&cluster, &key).is_none()
    });
}

#[test]
fn deregister_on_success_keeps_the_entries_of_failed_containers() {
    if !docker_ready() {
        return;
    }
    let cluster = Cluster::start(1);
    let img = Image::busybox();
    let node = uniq("node");
    let mut reg = registrator(&cluster, &node, &["--deregister", "on-success"]);
    let svc = uniq("job");
    let env = format!("SERVICE_NAME={svc}");
    // Serve for a few seconds, then exit with the given code.
    let job = |code: u8| {
        let cmd = format!("httpd -f -p 80 -h /www & sleep 4; exit {code}");
        Container::run(
            &uniq("job"),
            &["-p", "80", "-e", &env, &img.tag, "sh", "-c", &cmd],
        )
    };
    let ok = job(0);
    let failed = job(3);
    let (k_ok, k_failed) = (
        key_of(&svc, &node, &ok, 80),
        key_of(&svc, &node, &failed, 80),
    );
    wait_until(Duration::from_secs(5), "both registered", || {
        entry(&cluster, &k_ok).is_some() && entry(&cluster, &k_failed).is_some()
    });
    wait_until(Duration::from_secs(15), "both exited", || {
        ok.inspect("{{.State.Status}}") == "exited"
            && failed.inspect("{{.State.Status}}") == "exited"
    });
    assert_eq!(failed.inspect("{{.State.ExitCode}}"), "3");
    wait_until(
        Duration::from_secs(5),
        "the clean exit deregistered",
        || entry(&cluster, &k_ok).is_none(),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        entry(&cluster, &k_failed).is_some(),
        "a failed container's entry was removed under --deregister on-success"
    );
    // A restart's full reconciliation keeps it too.
    reg.kill9();
    let reg = registrator(&cluster, &node, &["--deregister", "on-success"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        entry(&cluster, &k_failed).is_some(),
        "dropped by the reconciliation"
    );
    // Removing the container removes the entry.
    drop(failed);
    wait_until(Duration::from_secs(5), "removed with its container", || {
        entry(&cluster, &k_failed).is_none()
    });
    drop(reg);
}

// ---------------------------------------------------------------------------
// 4. healthchecks
// ---------------------------------------------------------------------------

#[test]
fn unhealthy_containers_are_withdrawn_and_healthy_ones_registered() {
    if !docker_ready() {
        return;
    }
    let cluster = Cluster::start(1);
    let img = Image::busybox();
    let node = uniq("node");
    let _reg = registrator(&cluster, &node, &[]);
    let svc = uniq("hc");
    let c = Container::run(
        &uniq("hc"),
        &[
            "-p",
            "80",
            "-e",
            &format!("SERVICE_NAME={svc}"),
            "--health-cmd",
            "test -f /tmp/healthy",
            "--health-interval",
            "500ms",
            "--health-timeout",
            "2s",
            "--health-retries",
            "1",
            &img.tag,
        ],
    );
    let key = key_of(&svc, &node, &c, 80);
    let health = || c.inspect("{{.State.Health.Status}}");
    wait_until(Duration::from_secs(15), "container unhealthy", || {
        health() == "unhealthy"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        entry(&cluster, &key).is_none(),
        "registered while unhealthy"
    );

    c.exec(&["touch", "/tmp/healthy"]);
    wait_until(Duration::from_secs(15), "registered once healthy", || {
        entry(&cluster, &key).is_some()
    });
    assert_eq!(health(), "healthy");

    c.exec(&["rm", "/tmp/healthy"]);
    wait_until(Duration::from_secs(15), "withdrawn once unhealthy", || {
        entry(&cluster, &key).is_none()
    });

    c.exec(&["touch", "/tmp/healthy"]);
    wait_until(
        Duration::from_secs(15),
        "registered again once healthy",
        || entry(&cluster, &key).is_some(),
    );
}

// ---------------------------------------------------------------------------
// 5. --internal
// ---------------------------------------------------------------------------

#[test]
fn internal_registers_the_container_address_on_its_user_network() {
    if !docker_ready() {
        return;
    }
    let cluster = Cluster::start(1);
    let img = Image::busybox();
    let net = Network::create();
    let node = uniq("node");
    let _reg = registrator(&cluster, &node, &["--internal"]);
    let svc = uniq("int");
    let c = Container::run(
        &uniq("int"),
        &[
            "--network",
            &net.name,
            "-e",
            &format!("SERVICE_NAME={svc}"),
            &img.tag,
        ],
    );
    let ip = c.inspect(&format!(
        "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
        net.name
    ));
    assert!(!ip.is_empty());
    let key = key_of(&svc, &node, &c, 80);
    let v = eventually(Duration::from_secs(5), || entry(&cluster, &key))
        .unwrap_or_else(|| panic!("{key} not registered"));
    assert_eq!(v["host"], ip.as_str());
    assert_eq!(v["port"], 80);
}

// ---------------------------------------------------------------------------
// 6. the announcer (fleet's web + web-discovery pair)
// ---------------------------------------------------------------------------

#[test]
fn announcer_follows_its_container_refreshes_and_withdraws() {
    if !docker_ready() {
        return;
    }
    let cluster = Cluster::start(1);
    let img = Image::busybox();
    let port = free_port();
    let web = Container::run(&uniq("web"), &["-p", &format!("{port}:80"), &img.tag]);
    let key = format!("/services/website/{}", web.name);
    let value = format!("{{ \"host\": \"127.0.0.1\", \"port\": {port} }}");
    let mut ann = Proc::start(&s(&[
        "announce",
        "--endpoints",
        cluster.url(0),
        "--bind-container",
        &web.name,
        "--key",
        &key,
        "--value",
        &value,
        "--ttl",
        "2",
        "--interval",
        "1",
    ]));
    wait_until(Duration::from_secs(5), "key announced", || {
        entry(&cluster, &key).is_some()
    });
    assert_eq!(entry(&cluster, &key).unwrap()["port"], port);
    let first = http::get(&cluster.key_url(0, &key)).unwrap().json();
    assert_eq!(first["node"]["value"], value.as_str());
    // Past two TTLs the key is still there: it is refreshed (same value, same createdIndex).
    std::thread::sleep(Duration::from_secs(5));
    let later = http::get(&cluster.key_url(0, &key)).unwrap().json();
    assert_eq!(later["node"]["value"], value.as_str(), "{later}");
    assert!(later["node"]["ttl"].as_i64().unwrap() > 0);
    assert!(ann.running());

    web.stop();
    wait_until(
        Duration::from_secs(5),
        "key withdrawn after the container stopped",
        || entry(&cluster, &key).is_none(),
    );
    wait_until(Duration::from_secs(5), "announcer exited", || {
        ann.exited().is_some()
    });
    assert!(ann.exited().unwrap().success());

    // The --service form with an HTTP check; SIGTERM deletes the key at once.
    let web2 = Container::run(&uniq("web"), &["-p", &format!("{port}:80"), &img.tag]);
    let svc = uniq("site");
    let node = uniq("node");
    let mut ann2 = Proc::start(&s(&[
        "announce",
        "--endpoints",
        cluster.url(0),
        "--bind-container",
        &web2.name,
        "--service",
        &svc,
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--hostname",
        &node,
        "--check",
        &format!("http://127.0.0.1:{port}/"),
        "--check-interval",
        "1",
        "--ttl",
        "60",
        "--interval",
        "20",
    ]));
    let key2 = format!("/services/{svc}/{node}:{}:{port}", web2.name);
    wait_until(Duration::from_secs(10), "service announced", || {
        entry(&cluster, &key2).is_some()
    });
    let v = entry(&cluster, &key2).unwrap();
    assert_eq!(
        (v["host"].as_str(), v["port"].as_u64(), v["node"].as_str()),
        (Some("127.0.0.1"), Some(port as u64), Some(node.as_str()))
    );
    ann2.signal("-TERM");
    wait_until(
        Duration::from_secs(1),
        "key deleted at once on SIGTERM",
        || entry(&cluster, &key2).is_none(),
    );
    wait_until(
        Duration::from_secs(5),
        "announcer exited on SIGTERM",
        || ann2.exited().is_some(),
    );
    assert!(ann2.exited().unwrap().success());
}

#[test]
fn announcer_withdraws_while_its_check_fails() {
    let cluster = Cluster::start(1);
    // A listener we open and close plays the service.
    let port = free_port();
    let key = format!("/services/checked/{}", uniq("i"));
    let ann = Proc::start(&s(&[
        "announce",
        "--endpoints",
        cluster.url(0),
        "--key",
        &key,
        "--value",
        &format!("{{\"host\":\"127.0.0.1\",\"port\":{port}}}"),
        "--check",
        &format!("tcp://127.0.0.1:{port}"),
        "--check-interval",
        "1",
        "--ttl",
        "30",
        "--interval",
        "10",
    ]));
    ann.wait_log("check fails", Duration::from_secs(5));
    assert!(
        entry(&cluster, &key).is_none(),
        "announced while the check fails"
    );
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    wait_until(
        Duration::from_secs(5),
        "announced once the check passes",
        || entry(&cluster, &key).is_some(),
    );
    drop(listener);
    wait_until(
        Duration::from_secs(5),
        "withdrawn once the check fails",
        || entry(&cluster, &key).is_none(),
    );
}

/// The FROM-scratch berth image (`scripts/image`) as the registrator and as a sidekick.
#[test]
fn image_runs_the_registrator_and_a_sidekick_announcer() {
    if !docker_ready() {
        return;
    }
    let cluster = Cluster::start(1);
    let img = Image::busybox();
    let berth = BerthImage::build();
    // The registrator as a container: `docker run -v /var/run/docker.sock:... berth registrator`.
    let node = uniq("node");
    let _reg = Container::run(
        &uniq("reg"),
        &[
            "--network",
            "host",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            &berth.tag,
            "registrator",
            "--endpoints",
            cluster.url(0),
            "--hostname",
            &node,
            "--ip",
            "127.0.0.1",
        ],
    );
    let svc = uniq("web");
    let port = free_port();
    let web = Container::run(
        &uniq("web"),
        &[
            "-p",
            &format!("{port}:80"),
            "-e",
            &format!("SERVICE_NAME={svc}"),
            &img.tag,
        ],
    );
    let reg_key = key_of(&svc, &node, &web, 80);
    wait_until(
        Duration::from_secs(15),
        "registered by the registrator container",
        || entry(&cluster, &reg_key).is_some_and(|v| v["port"] == port),
    );
    let key = format!("/services/website/{}", web.name);
    // Host networking reaches the test registry on 127.0.0.1; in production the sidekick
    // joins the main container's namespace (--network container:web) and reaches a
    // registry on a routable address.
    let side = Container::run(
        &uniq("side"),
        &[
            "--network",
            "host",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            &berth.tag,
            "announce",
            "--endpoints",
            cluster.url(0),
            "--bind-container",
            &web.name,
            "--key",
            &key,
            "--value",
            &format!("{{\"host\":\"127.0.0.1\",\"port\":{port}}}"),
            "--ttl",
            "10",
            "--interval",
            "2",
            "--check",
            &format!("tcp://127.0.0.1:{port}"),
            "--check-interval",
            "1",
        ],
    );
    wait_until(
        Duration::from_secs(10),
        "sidekick container announced",
        || entry(&cluster, &key).is_some(),
    );
    web.stop();
    wait_until(Duration::from_secs(5), "sidekick withdrew", || {
        entry(&cluster, &key).is_none()
    });
    wait_until(
        Duration::from_secs(5),
        "registrator container withdrew",
        || entry(&cluster, &reg_key).is_none(),
    );
    wait_until(Duration::from_secs(10), "sidekick container exited", || {
        side.inspect("{{.State.Status}}") == "exited"
    });
    assert_eq!(side.inspect("{{.State.ExitCode}}"), "0");
}

#[test]
fn sidekick_runs_in_the_main_containers_network_namespace() {
    if !docker_ready() {
        return;
    }
    // Containers reach this registry through the docker0 gateway.
    let reg = OpenRegistry::start();
    let img = Image::busybox();
    let berth = BerthImage::build();
    let web = Container::run(&uniq("web"), &[&img.tag]);
    let web_ip = web.inspect("{{.NetworkSettings.IPAddress}}");
    let gateway = web.inspect("{{.NetworkSettings.Gateway}}");
    assert!(!gateway.is_empty(), "web has no gateway");
    let key = format!("/services/website/{}", web.name);
    // fleet's web-discovery unit as a container sharing web's network namespace: its check
    // of 127.0.0.1:80 is web's own server, and nothing is published on the host.
    let side = Container::run(
        &uniq("side"),
        &[
            "--network",
            &format!("container:{}", web.name),
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            &berth.tag,
            "announce",
            "--endpoints",
            &format!("http://{gateway}:{}", reg.port),
            "--bind-container",
            &web.name,
            "--key",
            &key,
            "--value",
            &format!("{{\"host\":\"{web_ip}\",\"port\":80}}"),
            "--ttl",
            "4",
            "--interval",
            "1",
            "--check",
            "tcp://127.0.0.1:80",
            "--check-interval",
            "1",
        ],
    );
    wait_until(
        Duration::from_secs(15),
        "announced from web's namespace",
        || reg.node(&key).is_some(),
    );
    let value = reg.value(&key).unwrap();
    assert_eq!(value["host"], web_ip.as_str());
    // Refreshed past its TTL.
    std::thread::sleep(Duration::from_secs(6));
    assert!(reg.node(&key).is_some(), "not refreshed past its 4 s TTL");
    web.stop();
    // Deleted by the sidekick, or (if web's interface went first, taking the sidekick's
    // route to the registry with it) expired by its TTL: either way gone within TTL + 1 s.
    wait_until(Duration::from_secs(8), "withdrawn when web stops", || {
        reg.node(&key).is_none()
    });
    wait_until(Duration::from_secs(10), "sidekick exited", || {
        side.inspect("{{.State.Status}}") == "exited"
    });
    assert_eq!(side.inspect("{{.State.ExitCode}}"), "0");
}

/// The berth image built by `scripts/image` from this test run's binary; untagged on drop.
struct BerthImage {
    tag: String,
}

impl BerthImage {
    fn build() -> BerthImage {
        let tag = format!("berth-test/berth:{}", uniq("t"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/image");
        let o = Command::new(script)
            .arg(&tag)
            .env("BERTH_BIN", BERTH)
            .output()
            .expect("run scripts/image");
        assert!(
            o.status.success(),
            "scripts/image failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        BerthImage { tag }
    }
}

impl Drop for BerthImage {
    fn drop(&mut self) {
        let _ = docker_out(&["rmi", "-f", &self.tag]);
    }
}

// ---------------------------------------------------------------------------
// 7. bad input
// ---------------------------------------------------------------------------

#[test]
fn bad_flags_are_refused_clearly() {
    // (arguments, exit code, what stderr must name): 2 is clap's usage error, 1 berth's own.
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["registrator", "--bogus"],
            2,
            "unexpected argument '--bogus'",
        ),
        (
            &["registrator", "--deregister", "sometimes"],
            2,
            "on-success",
        ),
        (
            &["registrator", "--ttl", "10", "--ttl-refresh", "10"],
            1,
            "--ttl-refresh",
        ),
        (&["registrator", "--prefix", "services"], 1, "--prefix"),
        (
            &[
                "announce",
                "--key",
                "/a",
                "--value",
                "x",
                "--ttl",
                "5",
                "--interval",
                "10",
            ],
            1,
            "--interval",
        ),
        (
            &["announce", "--service", "Bad_Name", "--port", "80"],
            1,
            "--service \"Bad_Name\"",
        ),
        (&["announce", "--ttl", "5"], 1, "--key and --value"),
        (
            &[
                "announce",
                "--key",
                "/a",
                "--value",
                "x",
                "--check",
                "ftp://h:1",
            ],
            1,
            "invalid --check",
        ),
    ];
    for (args, code, needle) in cases {
        let o = Command::new(BERTH).args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn invalid_names_and_refused_writes_leave_nothing_half_written() {
    if !docker_ready() {
        return;
    }
    let cluster = Cluster::start(1);
    let img = Image::busybox();
    let node = uniq("node");
    let mut reg = registrator(&cluster, &node, &[]);

    // An invalid SERVICE_NAME: a clear log line, nothing written, the process goes on.
    let bad = Container::run(
        &uniq("bad"),
        &["-p", "80", "-e", "SERVICE_NAME=Bad_Name", &img.tag],
    );
    reg.wait_log(
        "invalid service name \"Bad_Name\": must be lowercase",
        Duration::from_secs(5),
    );
    let all = keys_under(&cluster, "/services");
    assert!(
        !all.keys().any(|k| k.contains(&bad.name)),
        "something was written for {}: {all:?}",
        bad.name
    );
    assert!(reg.running());
    // A good container next to it still registers.
    let svc = uniq("good");
    let good = Container::run(
        &uniq("good"),
        &["-p", "80", "-e", &format!("SERVICE_NAME={svc}"), &img.tag],
    );
    wait_until(Duration::from_secs(5), "good container registered", || {
        entry(&cluster, &key_of(&svc, &node, &good, 80)).is_some()
    });

    // A registry that refuses the writes: the prefix is a plain key, so every write under it
    // fails with "Not a directory".
    let blocked = format!("/{}", uniq("blocked"));
    let r = http::put(&cluster.key_url(0, &blocked), "value=keep").unwrap();
    assert_eq!(r.status, 201);
    let node2 = uniq("node");
    let mut reg2 = registrator(&cluster, &node2, &["--prefix", &blocked]);
    let svc2 = uniq("refused");
    let c = Container::run(
        &uniq("refused"),
        &["-p", "80", "-e", &format!("SERVICE_NAME={svc2}"), &img.tag],
    );
    reg2.wait_log("the registry refused a write", Duration::from_secs(5));
    reg2.wait_log("Not a directory", Duration::from_secs(1));
    assert!(reg2.running());
    let v = http::get(&cluster.key_url(0, &blocked)).unwrap().json();
    assert_eq!(
        v["node"]["value"], "keep",
        "the refused prefix changed: {v}"
    );
    // Once the registry accepts writes, the retries get the entry in.
    let r = http::send("DELETE", &cluster.key_url(0, &blocked), None).unwrap();
    assert_eq!(r.status, 200);
    let key = format!("{blocked}/{svc2}/{node2}:{}:80", c.name);
    wait_until(
        Duration::from_secs(15),
        "registered after the refusal ended",
        || entry(&cluster, &key).is_some(),
    );
    assert!(reg.running() && reg2.running());
}
