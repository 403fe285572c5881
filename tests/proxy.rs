//! `berth proxy` as a real process in front of real `berth-echo` instances, with the routing
//! table coming from a real registry: host/path routing, balancing, retries, WebSocket,
//! HTTP/2, hostile requests, zero-error reconfiguration under wrk load, VIP listeners found
//! through `berth dns`, and blue-green deploys of real containers with `berth deploy`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::docker::{docker, docker_out, docker_ready, uniq, Image};
use support::proc::Proc;
use support::{eventually, free_port, http, Cluster, BERTH};

const ECHO: &str = env!("CARGO_BIN_EXE_berth-echo");

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A `berth-echo` instance process.
struct Echo {
    child: Child,
    addr: SocketAddr,
}

impl Echo {
    fn start(name: &str) -> Echo {
        Echo::start_with(name, &[])
    }

    fn start_with(name: &str, extra: &[&str]) -> Echo {
        let mut child = Command::new(ECHO)
            .args(["--name", name, "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn berth-echo");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("berth-echo prints its address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected berth-echo output {line:?}"));
        Echo { child, addr }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A registry with a `berth proxy` in front of it.
struct Stack {
    cluster: Cluster,
    proxy: Proc,
    http: SocketAddr,
    admin: SocketAddr,
}

impl Stack {
    fn start(extra: &[&str]) -> Stack {
        Stack::start_proxy(extra, Proc::start)
    }

    /// `start` runs the proxy process with its arguments.
    fn start_proxy(extra: &[&str], start: fn(&[String]) -> Proc) -> Stack {
        let cluster = Cluster::start(1);
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut args: Vec<String> = [
            "proxy",
            "--endpoints",
            cluster.url(0),
            "--http-listen",
            &http.to_string(),
            "--admin-listen",
            &admin.to_string(),
            "--access-log",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        // The catalog watch at debug: a proxy that never becomes ready shows how far it got.
        args.extend([
            "--log".to_string(),
            "info,registry::catalog=debug".to_string(),
        ]);
        let mut proxy = start(&args);
        let ok = eventually(Duration::from_secs(15), || {
            http::get(&format!("http://{admin}/health"))
                .ok()
                .filter(|r| r.status == 200)
        });
        if ok.is_none() {
            let last = http::get(&format!("http://{admin}/health"));
            panic!(
                "proxy not ready within 15 s (last /health: {last:?}; exited: {:?}):\n{}\nthreads:\n{}",
                proxy.exited(),
                proxy.log(),
                proxy.stacks()
            );
        }
        Stack {
            cluster,
            proxy,
            http,
            admin,
        }
    }

    /// Writes an instance key (`ttl` 0: none).
    fn register(&self, service: &str, id: &str, value: &str, ttl: u64) {
        let mut form = format!("value={}", urlencode(value));
        if ttl > 0 {
            form.push_str(&format!("&ttl={ttl}"));
        }
        let r = http::put(
            &self
                .cluster
                .key_url(0, &format!("/services/{service}/{id}")),
            &form,
        )
        .expect("register");
        assert!(r.status < 300, "register {id}: {} {}", r.status, r.body);
    }

    /// Registers `addr` as instance `id` of `service` with an HTTP route for `domain`.
    fn register_http(&self, service: &str, id: &str, addr: SocketAddr, domain: &str) {
        let extra = format!(r#""http":{{"domain":"{domain}"}}"#);
        self.register(service, id, &inst(addr, &extra), 0);
    }

    fn deregister(&self, service: &str, id: &str) {
        let r = http::send(
            "DELETE",
            &self
                .cluster
                .key_url(0, &format!("/services/{service}/{id}")),
            None,
        )
        .expect("deregister");
        assert_eq!(r.status, 200, "{}", r.body);
    }

    fn set(&self, key: &str, value: &str) {
        let r = http::put(
            &self.cluster.key_url(0, key),
            &format!("value={}", urlencode(value)),
        )
        .expect("set");
        assert!(r.status < 300, "{}", r.body);
    }

    /// The proxy's `/routes`.
    fn routes(&self) -> serde_json::Value {
        http::get(&format!("http://{}/routes", self.admin))
            .expect("routes")
            .json()
    }

    fn metrics(&self) -> String {
        http::get(&format!("http://{}/metrics", self.admin))
            .expect("metrics")
            .body
    }

    /// Waits until the route for `host` has exactly these backends.
    fn wait_backends(&self, host: &str, want: &[SocketAddr]) {
        let mut want: Vec<String> = want.iter().map(|a| a.to_string()).collect();
        want.sort();
        let got = eventually(Duration::from_secs(5), || {
            let r = self.routes();
            let mut have: Vec<String> = r["http"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["domain"].as_str() == Some(host))
                .flat_map(|x| x["backends"].as_array().unwrap().clone())
                .map(|b| b["addr"].as_str().unwrap().to_string())
                .collect();
            have.sort();
            (have == want).then_some(())
        });
        assert!(
            got.is_some(),
            "route {host} never had {want:?}: {:#}",
            self.routes()
        );
    }

    fn get(&self, host: &str, path: &str) -> Resp {
        request(
            self.http,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn inst(addr: SocketAddr, extra: &str) -> String {
    format!(
        r#"{{"host":"{}","port":{}{}}}"#,
        addr.ip(),
        addr.port(),
        if extra.is_empty() {
            String::new()
        } else {
            format!(",{extra}")
        }
    )
}

/// A parsed HTTP/1.1 response read to EOF.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

fn parse(raw: &str) -> Resp {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Resp {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Sends raw bytes, reads until the server closes (or 10 s).
fn request(addr: SocketAddr, raw: &str) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect to proxy");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse(&String::from_utf8_lossy(&out))
}

// ---------------------------------------------------------------------------------------------
// L7 routing
// ---------------------------------------------------------------------------------------------

#[test]
fn routes_by_host_and_path_with_forwarded_headers_and_clear_errors() {
    let st = Stack::start(&[]);
    let shop = Echo::start("shop");
    let api = Echo::start("api");
    let any = Echo::start("fallback");
    st.register_http("shop", "a", shop.addr, "shop.test");
    st.register(
        "api",
        "a",
        &inst(api.addr, r#""http":{"domain":"shop.test","path":"/api"}"#),
        0,
    );
    st.register(
        "blog",
        "a",
        &inst(any.addr, r#""http":{"domain":"*.blog.test"}"#),
        0,
    );
    st.wait_backends("shop.test", &[shop.addr, api.addr]);
    st.wait_backends("*.blog.test", &[any.addr]);

    let r = st.get("shop.test", "/");
    assert_eq!((r.status, r.body.as_str()), (200, "shop\n"), "{r:?}");
    assert_eq!(st.get("SHOP.test:8800", "/cart").body, "shop\n");
    assert_eq!(st.get("shop.test", "/api").body, "api\n");
    assert_eq!(st.get("shop.test", "/api/v1/x?q=1").body, "api\n");
    assert_eq!(st.get("shop.test", "/apix").body, "shop\n");
    assert_eq!(st.get("a.blog.test", "/").body, "fallback\n");
    // A client that ends its write side after the request (as `nc` does) is answered.
    for i in 0..10 {
        let mut s = TcpStream::connect(st.http).expect("connect to the proxy");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let r = parse(&String::from_utf8_lossy(&out));
        assert_eq!(r.status, 200, "half-closed request {i}: {r:?}");
    }

    let h = st.get("shop.test", "/headers");
    assert!(h.body.contains("x-forwarded-for: 127.0.0.1"), "{}", h.body);
    assert!(h.body.contains("x-forwarded-proto: http"), "{}", h.body);
    assert!(h.body.contains("x-forwarded-host: shop.test"), "{}", h.body);
    assert!(h.body.contains("host: shop.test"), "{}", h.body);

    let r = st.get("nowhere.test", "/x");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "berth proxy: no route for nowhere.test/x\n");
    assert_eq!(r.header("x-berth-proxy").as_deref(), Some("1"), "{r:?}");

    // The active color has no instance: the route exists, nothing serves it.
    st.set("/_berth/routes/shop", r#"{"active":"green"}"#);
    let r = eventually(Duration::from_secs(5), || {
        let r = st.get("shop.test", "/");
        (r.status == 503).then_some(r)
    })
    .expect("503 once the active color has no instance");
    assert_eq!(r.body, "berth proxy: no live instance of service shop\n");
    // Requests without Host are refused.
    let r = request(st.http, "GET / HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        st.proxy.log().contains("berth::access"),
        "access log missing"
    );
    let m = st.metrics();
    assert!(
        m.contains("berth_proxy_responses_total{service=\"api\",code=\"2xx\"}"),
        "{m}"
    );
    assert!(m.contains("berth_proxy_no_route_total 1"), "{m}");
}

#[test]
fn least_connections_avoids_the_busy_instance() {
    let st = Stack::start(&["--balance", "least-conn"]);
    let a = Echo::start("a");
    let b = Echo::start("b");
    st.register_http("lc", "a", a.addr, "lc.test");
    st.register_http("lc", "b", b.addr, "lc.test");
    st.wait_backends("lc.test", &[a.addr, b.addr]);
    // Two long requests: least-connections puts one on each instance.
    let http_addr = st.http;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                request(
                    http_addr,
                    "GET /slow?ms=3000 HTTP/1.1\r\nHost: lc.test\r\nConnection: close\r\n\r\n",
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A third long one goes to either; then every short request must avoid the instance
    // holding two.
    let third = std::thread::spawn(move || {
        request(
            http_addr,
            "GET /slow?ms=3000 HTTP/1.1\r\nHost: lc.test\r\nConnection: close\r\n\r\n",
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let routes = st.routes();
    let backends = routes["http"][0]["backends"].as_array().unwrap().clone();
    let busy: Vec<(String, u64)> = backends
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_string(),
                b["in_flight"].as_u64().unwrap(),
            )
        })
        .collect();
    let loads: Vec<u64> = busy.iter().map(|x| x.1).collect();
    assert!(
        loads.contains(&2) && loads.contains(&1),
        "least-conn spread 3 long requests as {busy:?}"
    );
    let idle_name = &busy.iter().find(|x| x.1 == 1).unwrap().0;
    for _ in 0..5 {
        let r = st.get("lc.test", "/");
        assert_eq!(
            r.body.trim(),
            idle_name,
            "short request went to the busier instance"
        );
    }
    for t in slow {
        assert_eq!(t.join().unwrap().status, 200);
    }
    assert_eq!(third.join().unwrap().status, 200);
}

#[test]
fn connect_failures_are_retried_on_another_instance_and_ejected() {
    let st = Stack::start(&["--eject-ms", "60000"]);
    let live = Echo::start("live");
    let dead: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    st.register("r", "dead", &inst(dead, r#""http":{"domain":"r.test"}"#), 0);
    st.register_http("r", "live", live.addr, "r.test");
    st.wait_backends("r.test", &[dead, live.addr]);
    for _ in 0..10 {
        let r = st.get("r.test", "/");
        assert_eq!((r.status, r.body.as_str()), (200, "live\n"), "{r:?}");
    }
    let routes = st.routes();
    let b = routes["http"][0]["backends"].as_array().unwrap();
    let dead_state = b.iter().find(|x| x["id"] == "dead").unwrap();
    assert_eq!(dead_state["ejected"], true, "{routes:#}");
    assert!(
        st.metrics()
            .contains("berth_proxy_retries_total{service=\"r\"} 1"),
        "{}",
        st.metrics()
    );
    // A request with a body is not sent twice: with only the dead instance it gets 502.
    st.deregister("r", "live");
    st.wait_backends("r.test", &[dead]);
    let r = request(
        st.http,
        "POST / HTTP/1.1\r\nHost: r.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        r.body.contains("cannot connect to") || r.body.contains("failed"),
        "{}",
        r.body
    );
}

#[test]
fn active_health_checks_eject_and_readmit() {
    let st = Stack::start(&[
        "--health-path",
        "/health",
        "--health-interval-ms",
        "200",
        "--eject-ms",
        "100",
    ]);
    let good = Echo::start("good");
    let mut sick = Echo::start_with("sick", &["--health-status", "503"]);
    st.register_http("hc", "good", good.addr, "hc.test");
    st.register_http("hc", "sick", sick.addr, "hc.test");
    st.wait_backends("hc.test", &[good.addr, sick.addr]);
    let ejected = eventually(Duration::from_secs(5), || {
        let r = st.routes();
        let b = r["http"][0]["backends"].as_array()?.clone();
        b.iter()
            .any(|x| x["id"] == "sick" && x["ejected"] == true)
            .then_some(())
    });
    assert!(
        ejected.is_some(),
        "failing check did not eject: {:#}",
        st.routes()
    );
    for _ in 0..10 {
        assert_eq!(st.get("hc.test", "/").body, "good\n");
    }
    // The same instance, healthy again, is re-admitted by the next passing check.
    let addr = sick.addr;
    sick.kill9();
    let _healed = Command::new(ECHO)
        .args(["--name", "healed", "--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .map(|c| Echo { child: c, addr })
        .expect("restart on the same port");
    let back = eventually(Duration::from_secs(10), || {
        (0..4)
            .any(|_| st.get("hc.test", "/").body == "healed\n")
            .then_some(())
    });
    assert!(
        back.is_some(),
        "healthy instance never re-admitted: {:#}",
        st.routes()
    );
}

#[test]
fn websocket_echo_and_http2_through_the_proxy() {
    let st = Stack::start(&[]);
    let e = Echo::start("ws");
    st.register_http("ws", "a", e.addr, "ws.test");
    st.wait_backends("ws.test", &[e.addr]);

    let mut s = TcpStream::connect(st.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("handshake response");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    for msg in ["hello", "through berth"] {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | msg.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(msg.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        s.write_all(&frame).unwrap();
        let mut hdr = [0u8; 2];
        s.read_exact(&mut hdr).unwrap();
        assert_eq!(hdr[0], 0x81);
        let mut payload = vec![0u8; (hdr[1] & 0x7f) as usize];
        s.read_exact(&mut payload).unwrap();
        assert_eq!(String::from_utf8_lossy(&payload), msg);
    }

    // HTTP/2 (h2c prior knowledge) from the client; HTTP/1.1 to the instance.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-H",
            "Host: ws.test",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .arg(format!("http://{}/", st.http))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        "ws\n\n2 200",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hostile_requests_are_refused_without_hurting_other_clients() {
    let st = Stack::start(&["--max-body", "1024", "--header-timeout", "2"]);
    let e = Echo::start("h");
    st.register("h", "a", &inst(e.addr, r#""http":{"domain":"h.test"}"#), 0);
    st.wait_backends("h.test", &[e.addr]);

    // Slowloris: a client that never finishes its headers is cut off...
    let mut slow = TcpStream::connect(st.http).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: h.test\r\nX-Slow: ")
        .unwrap();
    let started = Instant::now();
    // ...while others are served.
    for _ in 0..3 {
        assert_eq!(st.get("h.test", "/").status, 200);
    }
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "slow client kept for {waited:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // Smuggling: both framings. hyper drops Content-Length in favour of chunked (RFC 9112
    // §6.3) and the proxy re-frames what it forwards, so the instance sees one request with
    // an empty body; the tail is never glued onto a request to the instance.
    let r = request(
        st.http,
        "POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n",
    );
    assert!(
        r.status == 400 || (r.status == 200 && r.body == "h 0\n"),
        "{r:?}"
    );
    assert_eq!(
        r.body.matches("HTTP/1.1").count(),
        0,
        "a second response came back: {r:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !st.proxy.log().contains("/smuggled"),
        "the smuggled request was forwarded"
    );
    // Two different Content-Lengths.
    let r = request(
        st.http,
        "POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 3\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(r.status, 400, "{r:?}");
    // A header with a bad byte, a bad request line.
    let r = request(
        st.http,
        "GET / HTTP/1.1\r\nHost: h.test\r\nBad Header: x\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{r:?}");
    let r = request(st.http, "NOT A REQUEST\r\n\r\n");
    assert_eq!(r.status, 400, "{r:?}");
    // Bodies over --max-body: declared, and streamed (chunked).
    let big = "x".repeat(2000);
    let r = request(
        st.http,
        &format!("POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n{big}"),
    );
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.body.contains("larger than 1024 bytes"), "{}", r.body);
    let r = request(
        st.http,
        &format!("POST / HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n7d0\r\n{big}\r\n0\r\n\r\n"),
    );
    assert!(r.status == 413 || r.status == 502 || r.status == 0, "{r:?}");
    assert!(
        !r.body.contains("h 2000"),
        "the instance got the whole oversized body: {r:?}"
    );
    // A body within the limit passes.
    let r = request(
        st.http,
        "POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!((r.status, r.body.as_str()), (200, "h 5\n"), "{r:?}");
    assert_eq!(st.get("h.test", "/").status, 200);
}

// ---------------------------------------------------------------------------------------------
// Reconfiguration under load
// ---------------------------------------------------------------------------------------------

/// wrk's totals.
#[derive(Debug, Default)]
struct WrkResult {
    requests: u64,
    non2xx: u64,
    socket_errors: u64,
    raw: String,
}

#[test]
fn a_proxy_whose_stderr_is_not_read_keeps_serving() {
    // With --access-log every request writes a line of about 170 bytes. 20,000 requests
    // fill the 64 KiB of an unread stderr pipe and then the proxy's 16,384-line log queue.
    // Logging must not make a request wait for stderr: lines that cannot be queued are
    // dropped, and counted once stderr drains.
    let mut st = Stack::start_proxy(&[], Proc::start_unread_stderr);
    let echo = Echo::start("quiet");
    st.register_http("quiet", "a", echo.addr, "quiet.test");
    st.wait_backends("quiet.test", &[echo.addr]);
    for i in 0..20_000 {
        let r = st.get("quiet.test", &format!("/n/{i}"));
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "quiet\n"),
            "request {i} with stderr unread: {r:?}"
        );
    }
    // The control side (catalog watch, table rebuild, admin) is not held up either.
    let second = Echo::start("second");
    st.register_http("quiet", "b", second.addr, "quiet.test");
    st.wait_backends("quiet.test", &[echo.addr, second.addr]);
    let bodies: Vec<String> = (0..8).map(|_| st.get("quiet.test", "/").body).collect();
    assert!(
        bodies.iter().any(|b| b == "second\n"),
        "the new instance gets requests: {bodies:?}"
    );

    // Once someone reads stderr, the queued lines arrive and a warning counts the dropped.
    let stderr = st.proxy.take_stderr().expect("stderr pipe");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("log lines dropped") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let warning = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no 'log lines dropped' warning within 30 s of reading stderr");
    let total: u64 = warning
        .split_whitespace()
        .find_map(|w| w.strip_prefix("total="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no total in {warning:?}"));
    assert!(
        (1..20_000).contains(&total),
        "dropped lines counted: {warning}"
    );
}

/// The proxy's sockets to `to`, by state (`ss`), leaving out TIME-WAIT (already closed).
fn sockets_to(to: SocketAddr) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-Htan", "dst", &to.to_string()])
        .output()
        .expect("ss (apt-get install iproute2)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|state| state != "TIME-WAIT")
        .collect()
}

#[test]
fn idle_connections_to_a_removed_instance_are_closed() {
    let st = Stack::start(&[]);
    let stay = Echo::start("stay");
    let go = Echo::start("go");
    for (id, e) in [("stay", &stay), ("go", &go)] {
        st.register_http("idle", id, e.addr, "idle.test");
    }
    st.wait_backends("idle.test", &[stay.addr, go.addr]);
    for _ in 0..20 {
        assert_eq!(st.get("idle.test", "/").status, 200);
    }
    // Each instance now has keep-alive connections from the proxy, idle in its pools.
    assert!(
        !sockets_to(go.addr).is_empty(),
        "no pooled connection to {}",
        go.addr
    );
    assert!(!sockets_to(stay.addr).is_empty());

    st.deregister("idle", "go");
    st.wait_backends("idle.test", &[stay.addr]);
    let swept = eventually(Duration::from_secs(10), || {
        sockets_to(go.addr).is_empty().then_some(())
    });
    assert!(
        swept.is_some(),
        "the proxy still holds {:?} to the removed instance",
        sockets_to(go.addr)
    );
    // The instance still routed keeps its pooled connections, and /metrics counts them.
    assert!(!sockets_to(stay.addr).is_empty());
    let idle = st
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix("berth_proxy_idle_upstream_connections "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(
        matches!(idle, Some(n) if n >= 1.0 && n as usize <= sockets_to(stay.addr).len()),
        "idle connections in /metrics: {idle:?}"
    );
    assert_eq!(st.get("idle.test", "/").body, "stay\n");
}

fn wrk_start(addr: SocketAddr, host: &str, secs: u64, conns: u32) -> Child {
    let wrk = support::require_tool("/usr/bin/wrk", "wrk");
    Command::new(wrk)
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--timeout",
            "5s",
        ])
        .args(["-H", &format!("Host: {host}")])
        .arg(format!("http://{addr}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wrk")
}

fn wrk_finish(child: Child) -> WrkResult {
    let out = child.wait_with_output().expect("wrk");
    let raw = String::from_utf8_lossy(&out.stdout).to_string();
    let mut r = WrkResult {
        raw: raw.clone(),
        ..Default::default()
    };
    for line in raw.lines() {
        let l = line.trim();
        if let Some(rest) = l.split_once(" requests in ") {
            r.requests = rest.0.trim().parse().unwrap_or(0);
        }
        if let Some(n) = l.strip_prefix("Non-2xx or 3xx responses:") {
            r.non2xx = n.trim().parse().unwrap_or(u64::MAX);
        }
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            r.socket_errors = rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        }
    }
    r
}

#[test]
fn reconfiguration_under_load_costs_no_request() {
    // Three HTTP worker threads, so wrk's 16 connections are handed across threads.
    let st = Stack::start(&["--threads", "3"]);
    st.proxy.wait_log("threads=3", Duration::from_secs(5));
    let route = r#""http":{"domain":"load.test"}"#;
    let blue1 = Echo::start("blue1");
    let blue2 = Echo::start("blue2");
    let blue = |a: SocketAddr| inst(a, &format!(r#""color":"blue",{route}"#));
    st.register("load", "b1", &blue(blue1.addr), 0);
    st.register("load", "b2", &blue(blue2.addr), 0);
    st.set("/_berth/routes/load", r#"{"active":"blue"}"#);
    st.wait_backends("load.test", &[blue1.addr, blue2.addr]);

    let wrk = wrk_start(st.http, "load.test", 14, 16);
    std::thread::sleep(Duration::from_secs(1));
    // Scale up.
    let mut blue3 = Echo::start("blue3");
    st.register("load", "b3", &blue(blue3.addr), 0);
    st.wait_backends("load.test", &[blue1.addr, blue2.addr, blue3.addr]);
    std::thread::sleep(Duration::from_secs(1));
    // Scale down: deregister, then stop the instance.
    st.deregister("load", "b3");
    st.wait_backends("load.test", &[blue1.addr, blue2.addr]);
    std::thread::sleep(Duration::from_millis(500));
    blue3.kill9();
    std::thread::sleep(Duration::from_secs(1));
    // An instance whose TTL runs out (its writer died): gone from the table by expiry.
    let ttl = Echo::start("ttl");
    st.register("load", "t", &blue(ttl.addr), 2);
    st.wait_backends("load.test", &[blue1.addr, blue2.addr, ttl.addr]);
    let expired = eventually(Duration::from_secs(8), || {
        let r = st.routes();
        let n = r["http"][0]["backends"]
            .as_array()
            .map(|b| b.len())
            .unwrap_or(0);
        (n == 2).then_some(())
    });
    assert!(expired.is_some(), "TTL instance never expired");
    // Blue-green flip.
    let green1 = Echo::start("green1");
    let green2 = Echo::start("green2");
    let green = |a: SocketAddr| inst(a, &format!(r#""color":"green",{route}"#));
    st.register("load", "g1", &green(green1.addr), 0);
    st.register("load", "g2", &green(green2.addr), 0);
    std::thread::sleep(Duration::from_millis(500));
    st.set("/_berth/routes/load", r#"{"active":"green"}"#);
    st.wait_backends("load.test", &[green1.addr, green2.addr]);
    let served = eventually(Duration::from_secs(3), || {
        let r = st.get("load.test", "/");
        r.body.starts_with("green").then_some(())
    });
    assert!(served.is_some(), "flip to green not served");
    let r = wrk_finish(wrk);
    drop(ttl);
    assert!(r.requests > 1000, "wrk made too few requests: {}", r.raw);
    assert_eq!(
        r.non2xx, 0,
        "non-2xx responses during reconfiguration:\n{}",
        r.raw
    );
    assert_eq!(
        r.socket_errors, 0,
        "socket errors during reconfiguration:\n{}",
        r.raw
    );

    // kill -9 of a serving instance: at most the requests in flight on it fail (wrk keeps
    // at most 16 in flight in total).
    let wrk = wrk_start(st.http, "load.test", 5, 16);
    std::thread::sleep(Duration::from_secs(2));
    let mut green1 = green1;
    green1.kill9();
    let r = wrk_finish(wrk);
    assert!(r.requests > 500, "{}", r.raw);
    assert!(
        r.non2xx + r.socket_errors <= 16,
        "killing one instance cost more than the requests in flight:\n{}",
        r.raw
    );
    drop(green2);
}

// ---------------------------------------------------------------------------------------------
// L4: VIPs
// ---------------------------------------------------------------------------------------------

/// A `berth dns` allocating VIPs from `range` for the stack's registry, and its port.
fn berth_dns(st: &Stack, range: &str) -> (Proc, u16) {
    let port = free_port();
    let p = Proc::start(&[
        "dns".into(),
        "--endpoints".into(),
        st.cluster.url(0).into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--vip-range".into(),
        range.to_string(),
        "--no-recursion".into(),
    ]);
    (p, port)
}

fn dig_a(port: u16, name: &str) -> Option<String> {
    let out = Command::new(support::require_tool("/usr/bin/dig", "dnsutils"))
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+short",
            "+time=1",
            "+tries=1",
            name,
            "A",
        ])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty() && !s.contains(';')).then_some(s)
}

#[test]
fn a_vip_from_dns_accepts_tcp_and_reaches_an_instance() {
    // A /24 of our own so a berth up on this host does not collide.
    let third = 100 + (std::process::id() % 100) as u8;
    let range = format!("127.77.{third}.0/24");
    let st = Stack::start(&["--vip-range", &range]);
    let (_dns, dns_port) = berth_dns(&st, &range);
    let a = Echo::start("tcp-a");
    let b = Echo::start("tcp-b");
    // Registrator-style ids: the VIP port is the container port at the end of the id.
    st.register(
        "tcpsvc",
        &format!("h1:a:{}", 9000),
        &format!("\"{}\"", a.addr),
        0,
    );
    st.register(
        "tcpsvc",
        &format!("h1:b:{}", 9000),
        &format!("\"{}\"", b.addr),
        0,
    );
    let vip = eventually(Duration::from_secs(10), || dig_a(dns_port, "tcpsvc.berth"))
        .expect("berth dns gives tcpsvc a VIP");
    assert!(vip.starts_with(&format!("127.77.{third}.")), "{vip}");
    let target: SocketAddr = format!("{vip}:9000").parse().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let ok = eventually(Duration::from_secs(10), || {
        let s = TcpStream::connect_timeout(&target, Duration::from_millis(500)).ok()?;
        drop(s);
        Some(())
    });
    assert!(
        ok.is_some(),
        "nothing listens on {target}: {:#}\n{}",
        st.routes(),
        st.proxy.log()
    );
    for _ in 0..6 {
        let r = request(
            target,
            "GET / HTTP/1.1\r\nHost: anything\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{r:?}");
        seen.insert(r.body.trim().to_string());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["tcp-a", "tcp-b"]);
    // A client that ends its write side right after the request (as `nc` does) still gets
    // the answer: the splice passes the half-close on and keeps reading.
    for i in 0..20 {
        let mut s = TcpStream::connect(target).expect("connect to the VIP");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let r = parse(&String::from_utf8_lossy(&out));
        assert_eq!(r.status, 200, "half-closed request {i}: {r:?}");
    }
    // Instances gone: the listener closes.
    st.deregister("tcpsvc", "h1:a:9000");
    st.deregister("tcpsvc", "h1:b:9000");
    let closed = eventually(Duration::from_secs(5), || {
        TcpStream::connect_timeout(&target, Duration::from_millis(300))
            .is_err()
            .then_some(())
    });
    assert!(
        closed.is_some(),
        "VIP listener still open after the instances left"
    );
}

// ---------------------------------------------------------------------------------------------
// Blue-green deploys with real containers
// ---------------------------------------------------------------------------------------------

/// A busybox httpd image FROM scratch whose index page says `text`.
fn page_image(text: &str, cmd: Option<&str>) -> Image {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(support::docker::BUSYBOX, dir.path().join("busybox")).unwrap();
    let cmd = cmd.unwrap_or("trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin /tmp /www && /bin/busybox --install -s && echo {text} > /www/index.html\"]\nEXPOSE 80\nCMD [\"/bin/sh\", \"-c\", \"{cmd}\"]\n"
        ),
    )
    .unwrap();
    let tag = format!("berth-test/page:{}", uniq(text));
    let o = Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Image { tag }
}

/// Removes every container of a service on drop.
struct ServiceContainers(String);

impl Drop for ServiceContainers {
    fn drop(&mut self) {
        let ids = docker_out(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.service={}", self.0),
        ]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = docker_out(&["rm", "-f", id]);
        }
    }
}

fn deploy(st: &Stack, args: &[&str]) -> (bool, String) {
    let out = Command::new(BERTH)
        .arg("deploy")
        .args(["--endpoints", st.cluster.url(0)])
        .args(args)
        .output()
        .expect("berth deploy");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn running(svc: &str, color: &str) -> usize {
    docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=berth.service={svc}"),
        "--filter",
        &format!("label=berth.color={color}"),
    ])
    .split_whitespace()
    .count()
}

#[test]
fn blue_green_deploy_and_rollback_with_containers() {
    if !docker_ready() {
        return;
    }
    let st = Stack::start(&[]);
    let node = uniq("node");
    let _reg = Proc::start(&[
        "registrator".into(),
        "--endpoints".into(),
        st.cluster.url(0).into(),
        "--hostname".into(),
        node,
        "--ttl".into(),
        "30".into(),
        "--ttl-refresh".into(),
        "10".into(),
    ]);
    let v1 = page_image("v1", None);
    let v2 = page_image("v2", None);
    let broken = page_image("broken", Some("echo cannot start >&2; exit 3"));
    let svc = uniq("web");
    let _cleanup = ServiceContainers(svc.clone());
    let domain = format!("{svc}.test");

    let (ok, out) = deploy(
        &st,
        &[
            &svc,
            "--image",
            &v1.tag,
            "--replicas",
            "2",
            "--port",
            "80",
            "--http-domain",
            &domain,
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("overall progress: 2 out of 2 tasks"), "{out}");
    assert!(
        out.contains(&format!("route: /_berth/routes/{svc} -> blue")),
        "{out}"
    );
    let serves = |want: &str| {
        eventually(Duration::from_secs(5), || {
            let r = st.get(&domain, "/");
            (r.status == 200 && r.body.trim() == want).then_some(())
        })
        .is_some()
    };
    assert!(serves("v1"), "v1 not served: {:?}", st.get(&domain, "/"));

    // Deploy v2 under load, keeping blue for a rollback.
    let wrk = wrk_start(st.http, &domain, 8, 8);
    std::thread::sleep(Duration::from_millis(500));
    let (ok, out) = deploy(
        &st,
        &[
            &svc,
            "--image",
            &v2.tag,
            "--replicas",
            "2",
            "--port",
            "80",
            "--http-domain",
            &domain,
            "--keep-old",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("deploying green"), "{out}");
    assert!(serves("v2"), "v2 not served after the flip");
    let r = wrk_finish(wrk);
    assert!(r.requests > 100, "{}", r.raw);
    assert_eq!(
        (r.non2xx, r.socket_errors),
        (0, 0),
        "errors during the deploy:\n{}",
        r.raw
    );
    assert_eq!(running(&svc, "blue"), 2, "--keep-old keeps blue running");

    let (ok, out) = deploy(&st, &[&svc, "--rollback", "--drain", "1"]);
    assert!(ok, "{out}");
    assert!(out.contains("rolling back from green to blue"), "{out}");
    assert!(serves("v1"), "rollback did not restore v1");
    assert_eq!(
        running(&svc, "green"),
        0,
        "rollback stops the abandoned color"
    );

    // A new color that cannot start leaves the serving one alone.
    let (ok, out) = deploy(
        &st,
        &[
            &svc,
            "--image",
            &broken.tag,
            "--port",
            "80",
            "--http-domain",
            &domain,
            "--timeout",
            "20",
        ],
    );
    assert!(!ok, "a failing deploy succeeded: {out}");
    assert!(out.contains("exited with code 3"), "{out}");
    assert!(out.contains("the route was not changed"), "{out}");
    assert!(
        serves("v1"),
        "the old color stopped serving after a failed deploy"
    );
    assert_eq!(running(&svc, "green"), 0);
    let route = http::get(&st.cluster.key_url(0, &format!("/_berth/routes/{svc}")))
        .unwrap()
        .json();
    assert_eq!(route["node"]["value"], r#"{"active":"blue"}"#);

    // Bad input.
    let (ok, out) = deploy(&st, &["Not_A_Label", "--image", &v1.tag]);
    assert!(!ok && out.contains("is not a DNS label"), "{out}");
    let (ok, out) = deploy(&st, &[&svc]);
    assert!(!ok && out.contains("--image is required"), "{out}");
}

#[test]
fn a_vip_outside_loopback_is_put_on_berth0_and_reachable_from_a_container() {
    if !docker_ready() {
        return;
    }
    let third = 100 + (std::process::id() % 100) as u8;
    let range = format!("10.199.{third}.0/24");
    let st = Stack::start(&["--vip-range", &range]);
    let (_dns, dns_port) = berth_dns(&st, &range);
    let e = Echo::start("ctr-a");
    st.register("ctrsvc", "h1:a:9000", &format!("\"{}\"", e.addr), 0);
    let vip = eventually(Duration::from_secs(10), || dig_a(dns_port, "ctrsvc.berth"))
        .expect("berth dns gives ctrsvc a VIP");
    let target: SocketAddr = format!("{vip}:9000").parse().unwrap();
    let on_berth0 = || {
        docker_free_cmd("ip", &["-4", "-o", "addr", "show", "dev", "berth0"])
            .contains(&format!("{vip}/32"))
    };
    let up = eventually(Duration::from_secs(10), || {
        (on_berth0() && TcpStream::connect_timeout(&target, Duration::from_millis(300)).is_ok())
            .then_some(())
    });
    assert!(
        up.is_some(),
        "{vip} not on berth0 or not listening: {:#}\n{}",
        st.routes(),
        st.proxy.log()
    );
    let img = Image::busybox();
    // busybox's static wget crashes in a scratch image; nc speaks the HTTP by hand (and ends
    // its write side after the request). nc exits silently when the connection is closed
    // or reset, so its exit code goes to stderr.
    let script = format!(
        "printf 'GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' | nc -w 5 {vip} 9000; echo \"nc exit $?\" >&2"
    );
    let out = docker_out(&["run", "--rm", &img.tag, "sh", "-c", &script]);
    let reply = parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "ctr-a\n"),
        "from a container ({}): stdout {:?}, stderr {:?}\n{:#}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr).trim(),
        st.routes(),
        st.proxy.log()
    );
    st.deregister("ctrsvc", "h1:a:9000");
    let gone = eventually(Duration::from_secs(5), || (!on_berth0()).then_some(()));
    assert!(
        gone.is_some(),
        "{vip} left on berth0 after its service lost its instances"
    );
}

/// Output of a host command (used to look at state, never to change it).
fn docker_free_cmd(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().expect(cmd);
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn tls_with_http2_and_http1_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=tls.test",
        ])
        .args(["-addext", "subjectAltName=DNS:tls.test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tls_port = free_port();
    let st = Stack::start(&[
        "--tls-listen",
        &format!("127.0.0.1:{tls_port}"),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let e = Echo::start("secure");
    st.register_http("sec", "a", e.addr, "tls.test");
    st.wait_backends("tls.test", &[e.addr]);
    let curl = |version: &str| {
        let out = Command::new("curl")
            .args(["-sS", version, "--cacert", cert.to_str().unwrap()])
            .args(["--resolve", &format!("tls.test:{tls_port}:127.0.0.1")])
            .args(["-w", "%{http_version}"])
            .arg(format!("https://tls.test:{tls_port}/headers"))
            .output()
            .expect("curl");
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (body, err) = curl("--http2");
    assert!(body.ends_with('2'), "not HTTP/2: {body} {err}");
    assert!(body.contains("x-forwarded-proto: https"), "{body}");
    assert!(body.contains("x-forwarded-host: tls.test"), "{body}");
    let (body, err) = curl("--http1.1");
    assert!(body.ends_with("1.1"), "not HTTP/1.1: {body} {err}");
    // Plain HTTP still says http.
    assert!(st
        .get("tls.test", "/headers")
        .body
        .contains("x-forwarded-proto: http\n"));
    // A certificate that is not there is a clear start-up error.
    let out = Command::new(BERTH)
        .args([
            "proxy",
            "--http-listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.pem",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-cert /nonexistent.pem"), "{err}");
}

/// A listener that cannot be bound is named by its flag, with the cause given once.
#[test]
fn a_busy_admin_address_is_named_by_its_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BERTH)
        .args([
            "proxy",
            "--http-listen",
            "127.0.0.1:0",
            "--admin-listen",
            &addr,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot bind {addr}")) && err.contains("--admin-listen"),
        "{err}"
    );
    assert!(!err.contains("--http-listen"), "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
}
