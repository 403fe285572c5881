//! Bad input: every malformed request, flag or peer message gets a clear error (etcd's where
//! etcd has one) and changes nothing.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support::{http, Cluster, BERTH};

/// The whole visible state: every key (hidden ones too, by reading them) and the index.
fn state(cluster: &Cluster) -> (String, String) {
    // Quorum reads: a follower's local view may trail the writes just acknowledged.
    let r = http::get(&format!(
        "{}/v2/keys/?recursive=true&sorted=true&quorum=true",
        cluster.url(0)
    ))
    .unwrap();
    let hidden = http::get(&format!(
        "{}/v2/keys/_hidden?recursive=true&quorum=true",
        cluster.url(0)
    ))
    .unwrap();
    (
        format!("{}|{}", r.body, hidden.body),
        r.header("X-Etcd-Index").unwrap_or_default(),
    )
}

/// Runs `berth registry` with `args`, expects it to refuse to start, and returns its stderr.
fn registry_refuses(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let out = Command::new(BERTH)
        .arg("registry")
        .args(&args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn seed(cluster: &Cluster) {
    for (k, v) in [("/a", "1"), ("/dir/b", "2"), ("/_hidden/c", "3")] {
        let r = http::put(&cluster.key_url(0, k), &format!("value={v}")).unwrap();
        assert!(r.status / 100 == 2, "{}", r.body);
    }
}

/// (method, path, form body, status, etcd error code, text the message or cause contains)
type Case<'a> = (&'a str, &'a str, Option<&'a str>, u16, u64, &'a str);

#[test]
fn malformed_key_requests_get_etcd_errors_and_change_nothing() {
    let cluster = Cluster::start(1);
    seed(&cluster);
    let before = state(&cluster);
    let big_value = format!("value={}", "x".repeat(2 * 1024 * 1024));
    let cases: Vec<Case> = vec![
        (
            "PUT",
            "/v2/keys/a",
            Some("value=b&ttl=abc"),
            400,
            202,
            "The given TTL in POST form is not a number",
        ),
        (
            "PUT",
            "/v2/keys/a",
            Some("value=b&ttl=-1"),
            400,
            202,
            "invalid value for \"ttl\"",
        ),
        (
            "PUT",
            "/v2/keys/a",
            Some("value=b&prevIndex=abc"),
            400,
            203,
            "The given index in POST form is not a number",
        ),
        (
            "PUT",
            "/v2/keys/a",
            Some("value=b&prevExist=maybe"),
            400,
            209,
            "Invalid field",
        ),
        (
            "PUT",
            "/v2/keys/a",
            Some("refresh=true"),
            400,
            212,
            "No TTL value set",
        ),
        (
            "PUT",
            "/v2/keys/a",
            Some("refresh=true&ttl=5&value=x"),
            400,
            211,
            "A value was provided on a refresh",
        ),
        (
            "GET",
            "/v2/keys/a?recursive=maybe",
            None,
            400,
            209,
            "invalid value for \"recursive\"",
        ),
        (
            "GET",
            "/v2/keys/a?wait=true&waitIndex=abc",
            None,
            400,
            203,
            "invalid value for \"waitIndex\"",
        ),
        (
            "PUT",
            "/v2/keys/",
            Some("value=x"),
            400,
            107,
            "Root is read only",
        ),
        (
            "DELETE",
            "/v2/keys/?recursive=true",
            None,
            400,
            107,
            "Root is read only",
        ),
        (
            "PUT",
            "/v2/keys/a/below-a-file",
            Some("value=x"),
            400,
            104,
            "Not a directory",
        ),
        (
            "PUT",
            "/v2/keys/dir",
            Some("value=x"),
            403,
            102,
            "Not a file",
        ),
        (
            "DELETE",
            "/v2/keys/dir?dir=true",
            None,
            403,
            108,
            "Directory not empty",
        ),
        (
            "PUT",
            "/v2/keys/a",
            Some("value=x&prevExist=false"),
            412,
            105,
            "Key already exists",
        ),
        (
            "PUT",
            "/v2/keys/a",
            Some("value=x&prevValue=nope"),
            412,
            101,
            "[nope != 1]",
        ),
        (
            "DELETE",
            "/v2/keys/a?prevIndex=999999",
            None,
            412,
            101,
            "Compare failed",
        ),
        ("GET", "/v2/keys/missing", None, 404, 100, "Key not found"),
        (
            "PUT",
            "/v2/keys/big",
            Some(big_value.as_str()),
            500,
            300,
            "etcdserver: request is too large",
        ),
    ];
    for (method, path, body, status, code, text) in &cases {
        let r = http::send(method, &format!("{}{path}", cluster.url(0)), *body).unwrap();
        assert_eq!(r.status, *status, "{method} {path}: {}", r.body);
        let json = r.json();
        assert_eq!(json["errorCode"], *code, "{method} {path}: {}", r.body);
        assert!(
            json["message"].as_str().unwrap_or("").contains(text)
                || json["cause"].as_str().unwrap_or("").contains(text),
            "{method} {path}: expected {text:?} in {}",
            r.body
        );
        assert_eq!(state(&cluster), before, "{method} {path} changed the store");
    }

    // Unknown methods: 405 with the allowed list, nothing changes.
    for method in ["PATCH", "FOO"] {
        let r = http::send(method, &cluster.key_url(0, "/a"), Some("value=zzz")).unwrap();
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(
            r.header("Allow").as_deref(),
            Some("HEAD,GET,PUT,POST,DELETE")
        );
        assert_eq!(r.body, "Method Not Allowed\n");
    }
    // An invalid escape in the path: Go's 400, nothing changes.
    let mut s = TcpStream::connect(cluster.url(0).trim_start_matches("http://")).unwrap();
    s.write_all(b"PUT /v2/keys/%zz HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\nvalue=1")
        .unwrap();
    let mut reply = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.ends_with("400 Bad Request"), "{reply}");
    assert_eq!(state(&cluster), before);
}

#[test]
fn truncated_bodies_apply_nothing() {
    let cluster = Cluster::start(1);
    seed(&cluster);
    let before = state(&cluster);
    let addr = cluster.url(0).trim_start_matches("http://").to_string();
    // Promise 100 bytes, send 9, then close: the write must not happen.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"PUT /v2/keys/trunc HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nvalue=abc")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut sink = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut sink);
    // A chunked body cut off mid-chunk: same.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"PUT /v2/keys/trunc2 HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n20\r\nvalue=ab")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = s.read_to_end(&mut sink);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        http::get(&cluster.key_url(0, "/trunc")).unwrap().status,
        404
    );
    assert_eq!(
        http::get(&cluster.key_url(0, "/trunc2")).unwrap().status,
        404
    );
    assert_eq!(state(&cluster), before);
}

#[test]
fn malformed_peer_and_member_requests_are_rejected() {
    let cluster = Cluster::start(3);
    seed(&cluster);
    let before = state(&cluster);
    let peer = cluster.members[0].peer_url.clone();
    for path in [
        "/raft/append",
        "/raft/vote",
        "/raft/forward",
        "/raft/snapshot",
    ] {
        let r = http::send("POST", &format!("{peer}{path}"), Some("{not json")).unwrap();
        assert_eq!(r.status, 400, "{path}: {}", r.body);
    }
    assert_eq!(http::get(&format!("{peer}/raft/nope")).unwrap().status, 404);

    let members = format!("{}/v2/members", cluster.url(1));
    let c = http::client(Duration::from_secs(10));
    let post = |ct: &str, body: &str| {
        let r = c
            .post(&members)
            .header("Content-Type", ct)
            .body(body.to_string())
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(
        post("text/plain", "{\"peerURLs\":[\"http://127.0.0.1:1\"]}").0,
        415
    );
    assert_eq!(post("application/json", "{\"peerURLs\":").0, 400);
    assert_eq!(post("application/json", "{\"peerURLs\":[]}").0, 400);
    let (status, body) = post("application/json", "{\"peerURLs\":[\"ftp://x:1\"]}");
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        "application/json",
        &format!("{{\"peerURLs\":[\"{peer}\"]}}"),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("peerURL exists"), "{body}");
    let r = http::send("DELETE", &format!("{members}/abcdef"), None).unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    let r = http::send("DELETE", &format!("{members}/not-hex"), None).unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    let listed = http::get(&members).unwrap().json();
    assert_eq!(listed["members"].as_array().unwrap().len(), 3);
    assert_eq!(state(&cluster), before);

    // A member whose peer URL was never added cannot join, and says what to do.
    let dir = tempfile::tempdir().unwrap();
    let stranger = format!("http://127.0.0.1:{}", support::free_port());
    let client = format!("http://127.0.0.1:{}", support::free_port());
    let initial = format!("n1={peer},stranger={stranger}");
    let err = registry_refuses(&[
        &"--name",
        &"stranger",
        &"--data-dir",
        &dir.path(),
        &"--listen-client-urls",
        &client,
        &"--listen-peer-urls",
        &stranger,
        &"--initial-cluster",
        &initial,
        &"--initial-cluster-state",
        &"existing",
    ]);
    assert!(
        err.contains("no member with peer URL") && err.contains("member add"),
        "{err}"
    );
    let listed = http::get(&members).unwrap().json();
    assert_eq!(listed["members"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_flags_are_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--initial-cluster-state", "bogus"],
            "must be \"new\" or \"existing\"",
        ),
        (
            vec!["--listen-client-urls", "127.0.0.1:2379"],
            "invalid URL",
        ),
        (
            vec!["--listen-peer-urls", "http://127.0.0.1"],
            "explicit port",
        ),
        (
            vec!["--initial-cluster", "other=http://127.0.0.1:9"],
            "no entry for this member",
        ),
        (vec!["--initial-cluster", "broken"], "is not NAME=URL"),
        (vec!["--snapshot-count", "many"], "invalid value"),
        (vec!["--no-such-flag"], "unexpected argument"),
        (
            vec!["--election-timeout", "200"],
            "at least 5 times --heartbeat-interval",
        ),
    ];
    let data = dir.path().join("d");
    for (args, hint) in cases {
        let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"--name", &"n1", &"--data-dir", &data];
        all.extend(args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
        let err = registry_refuses(&all);
        assert!(err.contains(hint), "{args:?}: expected {hint:?} in {err}");
    }
    // Nothing was written for refused configurations.
    assert!(!data.exists());
}

/// `registry_refuses` for a one-member cluster with its data in `data`, serving clients on
/// `client` (peers on any port).
fn single_member_refuses(data: &std::path::Path, client: &str) -> String {
    registry_refuses(&[
        &"--name",
        &"n1",
        &"--data-dir",
        &data,
        &"--listen-client-urls",
        &client,
        &"--listen-peer-urls",
        &"http://127.0.0.1:0",
    ])
}

/// A member that cannot start says which flag to change, and gives the cause once.
#[test]
fn an_unusable_data_dir_is_named_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "not a directory").unwrap();
    let err = single_member_refuses(&file.join("data"), "http://127.0.0.1:0");
    assert!(
        err.contains("cannot create the data dir") && err.contains("--data-dir"),
        "{err}"
    );
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory");
}

#[test]
fn a_busy_client_address_is_named_by_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let data = dir.path().join("d");
    let err = single_member_refuses(&data, &format!("http://{addr}"));
    assert!(
        err.contains(&format!("cannot listen for clients on {addr}"))
            && err.contains("--listen-client-urls"),
        "{err}"
    );
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    assert!(!data.exists(), "nothing is written");
}
