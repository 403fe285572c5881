//! `berth dns` as a real process against a real registry, queried with `dig` (and, where a
//! deadline is measured, with a minimal in-test UDP client, since starting dig takes time).

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{eventually, http, Cluster, BERTH};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A port free for both UDP and TCP on 127.0.0.1.
fn free_dns_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = u.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A `berth dns` process.
struct Dns {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Dns {
    fn spawn(endpoints: &str, dir: &Path, name: &str, extra: &[&str]) -> Dns {
        let port = free_dns_port();
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BERTH)
            .arg("dns")
            .args(["--endpoints", endpoints])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env(
                "BERTH_LOG",
                std::env::var("TEST_BERTH_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn berth dns");
        Dns {
            child: Some(child),
            port,
            log,
        }
    }

    /// Starts one and waits until it has read the registry (the apex SOA answers).
    fn start(endpoints: &str, dir: &Path, name: &str, extra: &[&str]) -> Dns {
        let d = Dns::spawn(endpoints, dir, name, extra);
        d.wait_ready("berth.");
        d
    }

    fn wait_ready(&self, zone: &str) {
        let ok = eventually(Duration::from_secs(15), || {
            (status(&dig(self.port, &[zone, "SOA"])) == "NOERROR").then_some(())
        });
        if ok.is_none() {
            panic!("berth dns did not become ready:\n{}", self.log_tail());
        }
    }

    fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- berth dns :{} -----\n{}", self.port, self.log_tail());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn dig_bin() -> String {
    support::require_tool("/usr/bin/dig", "dnsutils")
}

/// Runs dig against the server and returns its output.
fn dig(port: u16, args: &[&str]) -> String {
    let out = Command::new(dig_bin())
        .arg("@127.0.0.1")
        .args(["-p", &port.to_string(), "+time=3", "+tries=1"])
        .args(args)
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short`, sorted.
fn short(port: u16, name: &str, qtype: &str) -> Vec<String> {
    let mut v: Vec<String> = dig(port, &["+short", name, qtype])
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty() && !l.starts_with(";;"))
        .collect();
    v.sort();
    v
}

/// The status of a dig answer (NOERROR, NXDOMAIN, ...), or "" when there was none.
fn status(out: &str) -> String {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
        .to_string()
}

/// Records of one section of a full dig answer: `(name, ttl, type, data)`.
fn section(out: &str, title: &str) -> Vec<(String, u32, String, String)> {
    let mut v = Vec::new();
    let mut inside = false;
    for line in out.lines() {
        if line.starts_with(";; ") && line.contains("SECTION:") {
            inside = line.contains(title);
            continue;
        }
        if !inside || line.trim().is_empty() || line.starts_with(';') {
            if line.trim().is_empty() {
                inside = false;
            }
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 5 {
            v.push((
                f[0].to_string(),
                f[1].parse().unwrap_or(0),
                f[3].to_string(),
                f[4..].join(" "),
            ));
        }
    }
    v
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn put(cluster: &Cluster, key: &str, value: &str) {
    put_ttl(cluster, key, value, None)
}

fn put_ttl(cluster: &Cluster, key: &str, value: &str, ttl: Option<u32>) {
    let mut form = format!("value={}", enc(value));
    if let Some(t) = ttl {
        form.push_str(&format!("&ttl={t}"));
    }
    let r = http::put(&cluster.key_url(0, key), &form).expect("registry PUT");
    assert!(r.status / 100 == 2, "PUT {key}: {} {}", r.status, r.body);
}

fn delete(cluster: &Cluster, key: &str) {
    let r = http::send("DELETE", &cluster.key_url(0, key), None).expect("registry DELETE");
    assert!(r.status / 100 == 2, "DELETE {key}: {} {}", r.status, r.body);
}

fn instance(host: &str, port: u16, color: Option<&str>) -> String {
    match color {
        Some(c) => format!(r#"{{"host":"{host}","port":{port},"color":"{c}"}}"#),
        None => format!(r#"{{"host":"{host}","port":{port}}}"#),
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal DNS client for deadline checks and malformed packets
// ---------------------------------------------------------------------------------------------

fn query_packet(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p
}

fn skip_name(p: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let l = *p.get(i)? as usize;
        if l == 0 {
            return Some(i + 1);
        }
        if l & 0xC0 == 0xC0 {
            return Some(i + 2);
        }
        i += 1 + l;
    }
}

/// rcode and the A records of the answer section.
fn parse_a(p: &[u8]) -> Option<(u8, Vec<Ipv4Addr>)> {
    if p.len() < 12 {
        return None;
    }
    let rcode = p[3] & 0x0F;
    let qd = u16::from_be_bytes([p[4], p[5]]) as usize;
    let an = u16::from_be_bytes([p[6], p[7]]) as usize;
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(p, i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(p, i)?;
        let t = u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]);
        let len = u16::from_be_bytes([*p.get(i + 8)?, *p.get(i + 9)?]) as usize;
        i += 10;
        if t == 1 && len == 4 {
            out.push(Ipv4Addr::new(p[i], p[i + 1], p[i + 2], p[i + 3]));
        }
        i += len;
    }
    out.sort();
    Some((rcode, out))
}

/// One UDP exchange; `None` on timeout.
fn udp_exchange(addr: SocketAddr, packet: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.send_to(packet, addr).unwrap();
    let mut buf = vec![0u8; 65535];
    match s.recv(&mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

fn query_a(addr: SocketAddr, name: &str) -> Option<(u8, Vec<Ipv4Addr>)> {
    let id: u16 = rand_id();
    let r = udp_exchange(addr, &query_packet(id, name, 1), Duration::from_secs(1))?;
    (r[..2] == id.to_be_bytes()).then_some(())?;
    parse_a(&r)
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        & 0xFFFF) as u16
}

/// Polls with the fast client until `want` holds, at most `deadline` after the change was
/// acknowledged; returns the time it took.
fn visible_within(
    addr: SocketAddr,
    name: &str,
    deadline: Duration,
    want: impl Fn(&(u8, Vec<Ipv4Addr>)) -> bool,
) -> Result<Duration, Option<(u8, Vec<Ipv4Addr>)>> {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() <= deadline {
        let r = query_a(addr, name);
        if let Some(r) = &r {
            if want(r) {
                return Ok(start.elapsed());
            }
        }
        last = r;
        std::thread::sleep(Duration::from_millis(2));
    }
    Err(last)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn answers_every_record_type() {
    let cluster = Cluster::start(1);
    put(
        &cluster,
        "/services/web/w1",
        &instance("10.0.0.1", 80, Some("blue")),
    );
    put(
        &cluster,
        "/services/web/w2",
        &instance("10.0.0.2", 8080, Some("green")),
    );
    put(&cluster, "/services/cache/h1:redis:6379", "10.0.3.1:6379");
    put(&cluster, "/services/cache/h2:redis:6379", "10.0.3.2:6380");
    let d = Dns::start(
        &cluster.endpoints(),
        cluster.dir.path(),
        "dns",
        &["--ttl", "42"],
    );
    let p = d.port;

    // <service>.<domain> A -> the VIP, from the default range, with the configured TTL.
    let out = dig(p, &["web.berth.", "A"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(out.contains(" aa"), "authoritative flag missing: {out}");
    let ans = section(&out, "ANSWER");
    assert_eq!(ans.len(), 1, "{out}");
    let vip: Ipv4Addr = ans[0].3.parse().expect("an IPv4 VIP");
    assert_eq!(ans[0].1, 42, "TTL: {out}");
    assert_eq!(
        vip.octets()[..2],
        [127, 77],
        "VIP outside 127.77.0.0/16: {vip}"
    );
    let cache_vip = short(p, "cache.berth.", "A");
    assert_eq!(cache_vip.len(), 1);
    assert_ne!(cache_vip[0], vip.to_string(), "two services share a VIP");

    // tasks.<service> -> instance addresses (JSON and Registrator formats).
    assert_eq!(short(p, "tasks.web.berth.", "A"), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(
        short(p, "tasks.cache.berth.", "A"),
        ["10.0.3.1", "10.0.3.2"]
    );

    // Bare names answer the same.
    assert_eq!(short(p, "web", "A"), [vip.to_string()]);
    assert_eq!(short(p, "tasks.web", "A"), ["10.0.0.1", "10.0.0.2"]);

    // SRV with the targets' A records in the additional section.
    let out = dig(p, &["_web._tcp.berth.", "SRV"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    let mut srv: Vec<String> = section(&out, "ANSWER").into_iter().map(|r| r.3).collect();
    srv.sort();
    assert_eq!(
        srv,
        ["1 1 80 10-0-0-1.web.berth.", "1 1 8080 10-0-0-2.web.berth."],
        "{out}"
    );
    let mut add: Vec<(String, String, String)> = section(&out, "ADDITIONAL")
        .into_iter()
        .map(|r| (r.0, r.2, r.3))
        .collect();
    add.sort();
    assert_eq!(
        add,
        [
            ("10-0-0-1.web.berth.".into(), "A".into(), "10.0.0.1".into()),
            ("10-0-0-2.web.berth.".into(), "A".into(), "10.0.0.2".into())
        ],
        "{out}"
    );
    assert_eq!(short(p, "10-0-0-2.web.berth.", "A"), ["10.0.0.2"]);
    assert_eq!(short(p, "_cache._tcp", "SRV").len(), 2);

    // PTR of a VIP.
    let out = dig(p, &["-x", &vip.to_string()]);
    assert_eq!(section(&out, "ANSWER")[0].3, "web.berth.", "{out}");
    let out = dig(p, &["-x", "127.77.255.254"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");

    // AAAA of an existing name: empty NOERROR with the SOA.
    for name in ["web.berth.", "tasks.web.berth."] {
        let out = dig(p, &[name, "AAAA"]);
        assert_eq!(status(&out), "NOERROR", "{out}");
        assert!(section(&out, "ANSWER").is_empty(), "{out}");
        assert_eq!(section(&out, "AUTHORITY")[0].2, "SOA", "{out}");
    }

    // Unknown names in the zone: NXDOMAIN with the zone's SOA.
    for name in [
        "nope.berth.",
        "tasks.nope.berth.",
        "_nope._tcp.berth.",
        "a.b.web.berth.",
    ] {
        let out = dig(p, &[name, "A"]);
        assert_eq!(status(&out), "NXDOMAIN", "{name}: {out}");
        let auth = section(&out, "AUTHORITY");
        assert_eq!(
            (auth[0].0.as_str(), auth[0].2.as_str()),
            ("berth.", "SOA"),
            "{out}"
        );
    }

    // Blue-green: with a route record only the active color appears.
    put(&cluster, "/_berth/routes/web", r#"{"active":"green"}"#);
    assert_eventually!(
        Duration::from_secs(5),
        short(p, "tasks.web.berth.", "A") == ["10.0.0.2"],
        "route record not applied"
    );
    let out = dig(p, &["_web._tcp.berth.", "SRV"]);
    assert_eq!(section(&out, "ANSWER").len(), 1, "{out}");
    // The VIP stays.
    assert_eq!(short(p, "web.berth.", "A"), [vip.to_string()]);

    // TCP answers the same.
    assert_eq!(short(p, "+tcp", "tasks.cache.berth.").len(), 2);
}

#[test]
fn large_answers_truncate_and_retry_over_tcp() {
    let cluster = Cluster::start(1);
    let d = Dns::start(&cluster.endpoints(), cluster.dir.path(), "dns", &[]);
    for i in 0..200u32 {
        let host = format!("10.1.{}.{}", i / 250, i % 250 + 1);
        put(
            &cluster,
            &format!("/services/big/i{i}"),
            &instance(&host, 80, None),
        );
    }
    assert_eventually!(
        Duration::from_secs(10),
        short(d.port, "+tcp", "tasks.big.berth.").len() == 200,
        "200 instances not visible over TCP"
    );
    // dig's default: UDP with EDNS (1232 bytes) -> TC -> retry over TCP, full answer.
    let out = dig(d.port, &["tasks.big.berth.", "A"]);
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert_eq!(section(&out, "ANSWER").len(), 200, "{out}");
    // Without retry: the UDP answer has TC set and fits the advertised size.
    for (args, limit) in [
        (vec!["+ignore"], 1232usize),
        (vec!["+ignore", "+noedns"], 512),
    ] {
        let mut a = args.clone();
        a.extend(["tasks.big.berth.", "A"]);
        let out = dig(d.port, &a);
        assert!(out.contains(" tc"), "TC flag missing for {args:?}: {out}");
        let size: usize = out
            .split("MSG SIZE  rcvd: ")
            .nth(1)
            .and_then(|s| s.trim().parse().ok())
            .expect("message size");
        assert!(size <= limit, "{size} > {limit}");
    }
    // SRV for 200 instances with additionals, over TCP.
    let out = dig(d.port, &["_big._tcp.berth.", "SRV"]);
    assert_eq!(section(&out, "ANSWER").len(), 200, "{out}");
    assert_eq!(section(&out, "ADDITIONAL").len(), 200, "{out}");
}

#[test]
fn forwards_other_names_upstream() {
    let cluster = Cluster::start(1);
    put(&cluster, "/services/api/a", &instance("10.2.0.1", 80, None));
    let dir = cluster.dir.path();
    let eps = cluster.endpoints();
    // The upstream: a second berth dns serving the zone `upstream.test.`.
    let up = Dns::spawn(
        &eps,
        dir,
        "upstream",
        &["--domain", "upstream.test", "--no-recursion"],
    );
    up.wait_ready("upstream.test.");
    // An upstream that always answers SERVFAIL (it forwards to a closed port).
    let broken = Dns::spawn(
        &eps,
        dir,
        "broken",
        &["--domain", "broken.test", "--upstream", "127.0.0.1:9"],
    );
    broken.wait_ready("broken.test.");
    let dead = free_dns_port(); // nothing listens there: a timeout over UDP, refused over TCP
    let upstreams = format!("127.0.0.1:{dead},{},{}", broken.addr(), up.addr());
    let d = Dns::start(&eps, dir, "dns", &["--upstream", &upstreams]);

    for proto in ["+notcp", "+tcp"] {
        let out = dig(d.port, &[proto, "+time=8", "tasks.api.upstream.test.", "A"]);
        assert_eq!(status(&out), "NOERROR", "{proto}: {out}");
        assert_eq!(section(&out, "ANSWER")[0].3, "10.2.0.1", "{proto}: {out}");
        assert!(out.contains(" ra"), "{out}");
        assert!(
            !out.contains(" aa"),
            "a forwarded answer is not authoritative: {out}"
        );
        let out = dig(d.port, &[proto, "+time=8", "nope.upstream.test.", "A"]);
        assert_eq!(status(&out), "NXDOMAIN", "{proto}: {out}");
    }
    // The zone itself is still answered locally.
    assert_eq!(short(d.port, "tasks.api.berth.", "A"), ["10.2.0.1"]);

    // --no-recursion: names outside the zone are refused.
    let out = dig(up.port, &["tasks.api.berth.", "A"]);
    assert_eq!(status(&out), "REFUSED", "{out}");
    // A broken upstream alone: SERVFAIL.
    let out = dig(broken.port, &["example.invalid.", "A"]);
    assert_eq!(status(&out), "SERVFAIL", "{out}");
}

#[test]
fn refuses_clients_outside_allow() {
    let cluster = Cluster::start(1);
    put(&cluster, "/services/web/a", &instance("10.0.0.1", 80, None));
    let d = Dns::spawn(
        &cluster.endpoints(),
        cluster.dir.path(),
        "dns",
        &["--allow", "10.0.0.0/8"],
    );
    assert_eventually!(
        Duration::from_secs(10),
        status(&dig(d.port, &["tasks.web.berth.", "A"])) == "REFUSED",
        "a client outside --allow was not refused"
    );
    assert_eq!(
        status(&dig(d.port, &["+tcp", "tasks.web.berth.", "A"])),
        "REFUSED"
    );
}

#[test]
fn registry_changes_are_visible_within_100ms() {
    let cluster = Cluster::start(1);
    put(
        &cluster,
        "/services/web/a",
        &instance("10.0.0.1", 80, Some("blue")),
    );
    let d = Dns::start(&cluster.endpoints(), cluster.dir.path(), "dns", &[]);
    let a = d.addr();
    let deadline = Duration::from_millis(100);
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert_eventually!(
        Duration::from_secs(5),
        query_a(a, "tasks.web.berth").is_some_and(|r| r.1 == [ip("10.0.0.1")]),
        "initial state"
    );

    // Added.
    put(
        &cluster,
        "/services/web/b",
        &instance("10.0.0.2", 80, Some("green")),
    );
    let r = visible_within(a, "tasks.web.berth", deadline, |r| r.1.len() == 2);
    assert!(r.is_ok(), "added instance not visible within 100 ms: {r:?}");
    // Color flipped.
    put(&cluster, "/_berth/routes/web", r#"{"active":"green"}"#);
    let r = visible_within(a, "tasks.web.berth", deadline, |r| r.1 == [ip("10.0.0.2")]);
    assert!(r.is_ok(), "color flip not visible within 100 ms: {r:?}");
    put(&cluster, "/_berth/routes/web", r#"{"active":"blue"}"#);
    let r = visible_within(a, "tasks.web.berth", deadline, |r| r.1 == [ip("10.0.0.1")]);
    assert!(
        r.is_ok(),
        "color flip back not visible within 100 ms: {r:?}"
    );
    delete(&cluster, "/_berth/routes/web");
    // Removed.
    delete(&cluster, "/services/web/a");
    let r = visible_within(a, "tasks.web.berth", deadline, |r| r.1 == [ip("10.0.0.2")]);
    assert!(
        r.is_ok(),
        "removed instance still visible after 100 ms: {r:?}"
    );
    // Expired by TTL: the registry expires it (its own 100 ms loop); the DNS change must
    // follow the registry's expire event within 100 ms.
    put_ttl(
        &cluster,
        "/services/web/t",
        &instance("10.0.0.3", 80, None),
        Some(1),
    );
    let r = visible_within(a, "tasks.web.berth", deadline, |r| r.1.len() == 2);
    assert!(r.is_ok(), "TTL instance not visible: {r:?}");
    let expired = eventually(Duration::from_secs(5), || {
        http::get(&cluster.key_url(0, "/services/web/t"))
            .ok()
            .filter(|r| r.status == 404)
            .map(|_| ())
    });
    assert!(expired.is_some(), "registry did not expire the key");
    let r = visible_within(a, "tasks.web.berth", deadline, |r| r.1 == [ip("10.0.0.2")]);
    assert!(
        r.is_ok(),
        "expired instance still visible 100 ms after the registry expired it: {r:?}"
    );
    // A new service: tasks at once, VIP as soon as it is claimed.
    put(
        &cluster,
        "/services/fresh/a",
        &instance("10.0.9.1", 80, None),
    );
    let r = visible_within(a, "tasks.fresh.berth", deadline, |r| {
        r.1 == [ip("10.0.9.1")]
    });
    assert!(r.is_ok(), "new service not visible within 100 ms: {r:?}");
    let vip = query_a(a, "fresh.berth").expect("answer");
    assert_eq!((vip.0, vip.1.len()), (0, 1), "{vip:?}");
}

/// The UDP answer cache: the same question asked with other ids (and many times, by every
/// UDP thread) gets byte-identical answers but for the id; a question differing only in the
/// case of its name gets that case back; a change made in the registry shows in the very
/// next answers from every thread.
#[test]
fn repeated_questions_get_their_own_id_and_follow_changes() {
    let cluster = Cluster::start(1);
    put(&cluster, "/services/web/a", &instance("10.0.0.1", 80, None));
    let d = Dns::start(
        &cluster.endpoints(),
        cluster.dir.path(),
        "dns",
        &["--udp-threads", "3"],
    );
    let a = d.addr();
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert_eventually!(
        Duration::from_secs(5),
        query_a(a, "tasks.web.berth").is_some_and(|r| r.1 == [ip("10.0.0.1")]),
        "initial state"
    );
    let first = udp_exchange(
        a,
        &query_packet(1, "tasks.web.berth", 1),
        Duration::from_secs(1),
    )
    .expect("an answer");
    for id in 2..200u16 {
        let r = udp_exchange(
            a,
            &query_packet(id, "tasks.web.berth", 1),
            Duration::from_secs(1),
        )
        .expect("an answer");
        assert_eq!(r[..2], id.to_be_bytes(), "id not echoed");
        assert_eq!(
            r[2..],
            first[2..],
            "answer to id {id} differs from the first"
        );
    }
    // Name case is echoed, also once the lower-case question is cached.
    let r = udp_exchange(
        a,
        &query_packet(7, "TASKS.Web.berth", 1),
        Duration::from_secs(1),
    )
    .expect("an answer");
    assert_eq!(&r[13..18], b"TASKS", "question case not echoed");
    assert_eq!(&r[19..22], b"Web", "question case not echoed");
    assert_eq!(parse_a(&r).unwrap().1, [ip("10.0.0.1")]);

    // A change: the next answers (whichever thread takes them) are the new ones.
    put(&cluster, "/services/web/b", &instance("10.0.0.2", 80, None));
    let r = visible_within(a, "tasks.web.berth", Duration::from_millis(100), |r| {
        r.1.len() == 2
    });
    assert!(r.is_ok(), "added instance not visible within 100 ms: {r:?}");
    for _ in 0..50 {
        let r = query_a(a, "tasks.web.berth").expect("an answer");
        assert_eq!(
            r.1,
            [ip("10.0.0.1"), ip("10.0.0.2")],
            "a stale answer after the change"
        );
    }
}

#[test]
fn two_servers_agree_on_every_vip() {
    let cluster = Cluster::start(1);
    for i in 0..40 {
        put(
            &cluster,
            &format!("/services/s{i}/a"),
            &instance("10.3.0.1", 80, None),
        );
    }
    let dir = cluster.dir.path();
    let eps = cluster.endpoints();
    // Started at once: both race for the same 40 services.
    let d1 = Dns::spawn(&eps, dir, "d1", &[]);
    let d2 = Dns::spawn(&eps, dir, "d2", &[]);
    d1.wait_ready("berth.");
    d2.wait_ready("berth.");
    // And services added while both run.
    for i in 40..60 {
        put(
            &cluster,
            &format!("/services/s{i}/a"),
            &instance("10.3.0.1", 80, None),
        );
    }
    let mut seen = std::collections::HashMap::new();
    for i in 0..60 {
        let name = format!("s{i}.berth.");
        let (a, b) = (query_a(d1.addr(), &name), query_a(d2.addr(), &name));
        let (a, b) = (a.expect("d1 answers"), b.expect("d2 answers"));
        assert_eq!((a.0, a.1.len()), (0, 1), "{name} on d1: {a:?}");
        assert_eq!(a, b, "{name}: the two servers disagree");
        if let Some(other) = seen.insert(a.1[0], name.clone()) {
            panic!("{} is the VIP of both {other} and {name}", a.1[0]);
        }
    }
    // The registry holds exactly one claim per service, and (once the losers have returned
    // their reservations) one reservation per VIP.
    let claims = http::get(&format!(
        "{}?recursive=true",
        cluster.key_url(0, "/_berth/vips/service")
    ))
    .unwrap()
    .json();
    assert_eq!(
        claims["node"]["nodes"].as_array().map(|a| a.len()),
        Some(60)
    );
    assert_eventually!(
        Duration::from_secs(5),
        http::get(&format!(
            "{}?recursive=true",
            cluster.key_url(0, "/_berth/vips/ip")
        ))
        .unwrap()
        .json()["node"]["nodes"]
            .as_array()
            .map(|a| a.len())
            == Some(60),
        "stray reservations left behind"
    );
}

#[test]
fn vip_is_released_after_the_grace_period() {
    let cluster = Cluster::start(1);
    put(&cluster, "/services/tmp/a", &instance("10.4.0.1", 80, None));
    let d = Dns::start(
        &cluster.endpoints(),
        cluster.dir.path(),
        "dns",
        &["--vip-grace", "1"],
    );
    let vip = short(d.port, "tmp.berth.", "A");
    assert_eq!(vip.len(), 1);
    delete(&cluster, "/services/tmp/a");
    // Within the grace period the name still answers with its VIP.
    assert_eq!(short(d.port, "tmp.berth.", "A"), vip);
    assert_eventually!(
        Duration::from_secs(10),
        status(&dig(d.port, &["tmp.berth.", "A"])) == "NXDOMAIN",
        "VIP not released"
    );
    // The service key goes first (DNS answers NXDOMAIN from then on), the reservation
    // right after it.
    let url = cluster.key_url(0, &format!("/_berth/vips/ip/{}", vip[0]));
    assert_eventually!(
        Duration::from_secs(5),
        http::get(&url).unwrap().status == 404,
        "reservation left behind: {}",
        http::get(&url).unwrap().body
    );
}

#[test]
fn keeps_answering_without_the_registry_and_catches_up() {
    // Three members; the DNS server knows only member 0, which is killed while the others
    // take changes.
    let mut cluster = Cluster::start(3);
    put(&cluster, "/services/web/a", &instance("10.5.0.1", 80, None));
    put_ttl(
        &cluster,
        "/services/web/t",
        &instance("10.5.0.9", 80, None),
        Some(3),
    );
    let ep0 = cluster.url(0).to_string();
    let d = Dns::start(&ep0, cluster.dir.path(), "dns", &[]);
    let vip = short(d.port, "web.berth.", "A");
    assert_eq!(vip.len(), 1);
    assert_eq!(
        short(d.port, "tasks.web.berth.", "A"),
        ["10.5.0.1", "10.5.0.9"]
    );
    cluster.kill(0);
    let via = |key: &str| cluster.key_url(1, key);
    let r = http::put(
        &via("/services/web/b"),
        &format!("value={}", enc(&instance("10.5.0.2", 80, None))),
    );
    assert_eq!(r.map(|r| r.status).ok(), Some(201));
    let r = http::send("DELETE", &via("/services/web/a"), None);
    assert_eq!(r.map(|r| r.status).ok(), Some(200));
    let r = http::put(
        &via("/services/new/a"),
        &format!("value={}", enc(&instance("10.5.0.3", 80, None))),
    );
    assert_eq!(r.map(|r| r.status).ok(), Some(201));
    // Meanwhile: the last known state, including the VIP and negative answers.
    for _ in 0..3 {
        assert_eq!(short(d.port, "web.berth.", "A"), vip);
        assert_eq!(status(&dig(d.port, &["new.berth.", "A"])), "NXDOMAIN");
    }
    // Let the TTL instance expire while member 0 is down.
    assert_eventually!(
        Duration::from_secs(10),
        http::get(&via("/services/web/t"))
            .map(|r| r.status == 404)
            .unwrap_or(false),
        "TTL key did not expire"
    );
    assert!(short(d.port, "tasks.web.berth.", "A").contains(&"10.5.0.1".to_string()));
    cluster.restart(0);
    assert_eventually!(
        Duration::from_secs(20),
        short(d.port, "tasks.web.berth.", "A") == ["10.5.0.2"]
            && short(d.port, "tasks.new.berth.", "A") == ["10.5.0.3"],
        "changes made while the registry was away did not appear"
    );
    assert_eq!(
        short(d.port, "web.berth.", "A"),
        vip,
        "VIP changed across the outage"
    );
    assert_eq!(
        short(d.port, "new.berth.", "A").len(),
        1,
        "no VIP for the new service"
    );
}

#[test]
fn rereads_everything_when_the_watch_falls_behind_the_history() {
    let cluster = Cluster::start(1);
    put(&cluster, "/services/web/a", &instance("10.7.0.1", 80, None));
    let d = Dns::start(&cluster.endpoints(), cluster.dir.path(), "dns", &[]);
    assert_eq!(short(d.port, "tasks.web.berth.", "A"), ["10.7.0.1"]);
    let pid = d.child.as_ref().unwrap().id().to_string();
    // Frozen, the server cannot follow; 1,100 changes push its index out of the registry's
    // 1,000-event history, so resuming the watch gets etcd error 401.
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let c = http::client(Duration::from_secs(10));
    for i in 0..1100u32 {
        let v = instance(&format!("10.8.{}.{}", i / 250, i % 250 + 1), 80, None);
        let url = cluster.key_url(0, &format!("/services/bulk/i{i}"));
        let r = http::send_with(&c, "PUT", &url, Some(&format!("value={}", enc(&v)))).unwrap();
        assert_eq!(r.status / 100, 2);
    }
    delete(&cluster, "/services/web/a");
    put(&cluster, "/services/web/b", &instance("10.7.0.2", 80, None));
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    assert_eventually!(
        Duration::from_secs(15),
        short(d.port, "tasks.web.berth.", "A") == ["10.7.0.2"]
            && short(d.port, "+tcp", "tasks.bulk.berth.").len() == 1100,
        "state after the history was outrun"
    );
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(
        log.contains("reading everything again"),
        "the 401 path was not taken:\n{}",
        d.log_tail()
    );
}

#[test]
fn malformed_packets_get_formerr_or_are_dropped() {
    let cluster = Cluster::start(1);
    put(&cluster, "/services/web/a", &instance("10.6.0.1", 80, None));
    let d = Dns::start(
        &cluster.endpoints(),
        cluster.dir.path(),
        "dns",
        &["--no-recursion"],
    );
    let a = d.addr();
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("one byte".into(), vec![0x12]),
        (
            "truncated header".into(),
            vec![0x12, 0x34, 0x01, 0x00, 0x00],
        ),
        // Header claims one question, none follows.
        (
            "missing question".into(),
            vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0],
        ),
        // A name that points at itself.
        (
            "compression loop".into(),
            vec![
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1,
            ],
        ),
        // Two pointers pointing at each other.
        (
            "pointer ping-pong".into(),
            vec![
                0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 14, 0xC0, 12, 0, 1, 0, 1,
            ],
        ),
        // A label running past the end.
        (
            "label overrun".into(),
            vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 40, b'a', b'b'],
        ),
        // Question fine, then 5 answers claimed but absent.
        ("missing records".into(), {
            let mut p = query_packet(0x1234, "web.berth", 1);
            p[7] = 5;
            p
        }),
        // A response (QR set) must not be answered.
        ("a response".into(), {
            let mut p = query_packet(0x1234, "web.berth", 1);
            p[2] |= 0x80;
            p
        }),
    ];
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for n in 0..300 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 64) as usize;
        let mut p: Vec<u8> = (0..len)
            .map(|i| (seed.rotate_left(i as u32 * 7) & 0xFF) as u8)
            .collect();
        if n % 2 == 0 && len > 12 {
            // Valid-looking header, garbage after it.
            p[2] = 0x01;
            p[3] = 0;
            p[4] = 0;
            p[5] = 1;
        }
        cases.push((format!("random #{n}"), p));
    }
    for (what, p) in &cases {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s.send_to(p, a).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.recv(&mut buf) {
            assert!(n >= 12, "{what}: short answer");
            // hickory-server answers FORMERR to anything with a header that does not parse,
            // responses included; a response that parses is never answered.
            assert!(
                p[2] & 0x80 == 0 || buf[3] & 0x0F == 1,
                "{what}: a response was answered"
            );
            assert_eq!(buf[..2], p[..2], "{what}: id not echoed");
            assert!(buf[2] & 0x80 != 0, "{what}: answer without QR");
            let rcode = buf[3] & 0x0F;
            // Garbage that happens to parse as a query gets a real answer; everything
            // else FORMERR (or NOTIMP for unknown opcodes).
            assert!(
                p.len() >= 12 && (rcode == 1 || rcode == 4 || parses(p)),
                "{what}: rcode {rcode} for {p:?}"
            );
        } else {
            assert!(
                p.len() < 12 || p[2] & 0x80 != 0 || what.starts_with("random"),
                "{what}: no answer"
            );
        }
    }
    // Over TCP: a garbage frame, then a truncated one; the server survives both.
    if let Ok(mut t) = TcpStream::connect(a) {
        use std::io::Write;
        let _ = t.write_all(&[0, 5, 1, 2, 3, 4, 5, 0, 40]);
    }
    // Still serving.
    assert_eq!(short(d.port, "tasks.web.berth.", "A"), ["10.6.0.1"]);
    assert_eq!(short(d.port, "+tcp", "tasks.web.berth.").len(), 1);
}

/// Whether a packet is a well-formed query (so it may get any answer).
fn parses(p: &[u8]) -> bool {
    let qd = u16::from_be_bytes([p[4], p[5]]) as usize;
    let mut i = 12;
    for _ in 0..qd {
        match skip_name(p, i) {
            Some(j) if j + 4 <= p.len() => i = j + 4,
            _ => return false,
        }
    }
    true
}
