//! IPAM through the plugin protocol: two plugin instances (two sockets) sharing one
//! registry never hand out one address; a bridge network on Docker with berth's IPAM.

mod support;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde_json::json;
use support::{call, docker, docker_ready, uniq, Guard, Harness, Image};

fn two_plugins() -> (Harness, PathBuf, PathBuf) {
    let mut h = Harness::start();
    let a = h.dir.path().join("a.sock");
    let b = h.dir.path().join("b.sock");
    let args_a = h.args(&a);
    let mut args_b = h.args(&b);
    args_b.node = Some("other-node".into());
    h.plugin(&args_a);
    h.plugin(&args_b);
    (h, a, b)
}

#[test]
fn a_thousand_concurrent_requests_from_two_instances_never_collide() {
    let (h, a, b) = two_plugins();
    let (st, pool) = h.call(
        &a,
        "/IpamDriver.RequestPool",
        r#"{"AddressSpace":"berth","Pool":"10.90.0.0/22","SubPool":"","Options":{},"V6":false}"#,
    );
    assert_eq!(st, 200, "{pool}");
    assert_eq!(
        pool,
        json!({"PoolID": "10.90.0.0-22", "Pool": "10.90.0.0/22", "Data": {}})
    );
    let results: Vec<(u16, serde_json::Value)> = h.rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..1000 {
            let socket = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                call(
                    &socket,
                    "POST",
                    "/IpamDriver.RequestAddress",
                    r#"{"PoolID":"10.90.0.0-22","Address":"","Options":{}}"#.into(),
                )
                .await
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let net: Ipv4Net = "10.90.0.0/22".parse().unwrap();
    let mut seen = BTreeSet::new();
    for (st, body) in &results {
        assert_eq!(*st, 200, "{body}");
        let addr = body["Address"].as_str().unwrap();
        let (ip, len) = addr.split_once('/').unwrap();
        assert_eq!(len, "22");
        let ip: Ipv4Addr = ip.parse().unwrap();
        assert!(net.contains(&ip) && ip != net.network() && ip != net.broadcast());
        assert_ne!(
            ip.to_string(),
            "10.90.0.1",
            "the gateway is never handed out"
        );
        assert!(seen.insert(ip), "{ip} handed out twice");
    }
    assert_eq!(seen.len(), 1000);
    let stored = h.children("/_berth/ipam/addrs/10.90.0.0-22");
    assert_eq!(stored.len(), 1000);

    // Both see every reservation: a specific address taken through A is refused by B.
    let taken = seen.iter().next().unwrap().to_string();
    let (st, body) = h.call(
        &b,
        "/IpamDriver.RequestAddress",
        &format!(r#"{{"PoolID":"10.90.0.0-22","Address":"{taken}"}}"#),
    );
    assert_eq!(st, 500);
    assert!(
        body["Err"].as_str().unwrap().contains("already allocated"),
        "{body}"
    );
    assert_eq!(body["Error"], body["Err"]);

    // Release through B, re-request through A: the address comes back.
    let (st, _) = h.call(
        &b,
        "/IpamDriver.ReleaseAddress",
        &format!(r#"{{"PoolID":"10.90.0.0-22","Address":"{taken}"}}"#),
    );
    assert_eq!(st, 200);
    let (st, body) = h.call(
        &a,
        "/IpamDriver.RequestAddress",
        &format!(r#"{{"PoolID":"10.90.0.0-22","Address":"{taken}"}}"#),
    );
    assert_eq!(
        (st, body["Address"].as_str().unwrap()),
        (200, format!("{taken}/22").as_str())
    );

    // A pool is counted per host: B never requested it, so B's release leaves it to A.
    let (st, _) = h.call(
        &b,
        "/IpamDriver.ReleasePool",
        r#"{"PoolID":"10.90.0.0-22"}"#,
    );
    assert_eq!(st, 200);
    assert_eq!(h.children("/_berth/ipam/addrs/10.90.0.0-22").len(), 1000);
    // A's release (the last user) removes the pool and its reservations.
    let (st, _) = h.call(
        &a,
        "/IpamDriver.ReleasePool",
        r#"{"PoolID":"10.90.0.0-22"}"#,
    );
    assert_eq!(st, 200);
    assert!(h.children("/_berth/ipam/addrs/10.90.0.0-22").is_empty());
    assert_eq!(h.raw("/_berth/ipam/pools").unwrap().0, "{}");
}

/// A host whose view of a pool is far behind (another host allocated hundreds of addresses
/// since it last read the pool) re-reads the registry after its first lost race, rather
/// than finding the other host's addresses one conflict at a time until it gives up.
#[test]
fn a_host_far_behind_catches_up_after_one_conflict() {
    let (h, a, b) = two_plugins();
    let (st, _) = h.call(&a, "/IpamDriver.RequestPool", r#"{"Pool":"10.90.8.0/22"}"#);
    assert_eq!(st, 200);
    let request = r#"{"PoolID":"10.90.8.0-22"}"#;
    // B reads the pool now (and takes the first address) ...
    let (st, body) = h.call(&b, "/IpamDriver.RequestAddress", request);
    assert_eq!((st, body["Address"].clone()), (200, json!("10.90.8.2/22")));
    // ... then A takes the next 300, more than a request's attempt budget.
    let taken: BTreeSet<String> = h.rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..300 {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                call(&a, "POST", "/IpamDriver.RequestAddress", request.into()).await
            }));
        }
        let mut out = BTreeSet::new();
        for t in tasks {
            let (st, body) = t.await.unwrap();
            assert_eq!(st, 200, "{body}");
            out.insert(body["Address"].as_str().unwrap().to_string());
        }
        out
    });
    assert_eq!(taken.len(), 300);
    assert!(taken.contains("10.90.8.3/22") && taken.contains("10.90.8.254/22"));
    // B's view still ends at .2; its next request must still succeed, on a free address.
    let (st, body) = h.call(&b, "/IpamDriver.RequestAddress", request);
    assert_eq!(st, 200, "{body}");
    let got = body["Address"].as_str().unwrap().to_string();
    assert!(!taken.contains(&got), "{got} handed out twice");
    assert_eq!(h.children("/_berth/ipam/addrs/10.90.8.0-22").len(), 302);
}

#[test]
fn small_pool_is_exhausted_cleanly() {
    let (h, a, b) = two_plugins();
    let (st, _) = h.call(&a, "/IpamDriver.RequestPool", r#"{"Pool":"10.90.5.0/29"}"#);
    assert_eq!(st, 200);
    // 8 addresses - network - broadcast - gateway = 5 dynamic.
    let mut got = BTreeSet::new();
    for i in 0..5 {
        let s = if i % 2 == 0 { &a } else { &b };
        let (st, body) = h.call(
            s,
            "/IpamDriver.RequestAddress",
            r#"{"PoolID":"10.90.5.0-29"}"#,
        );
        assert_eq!(st, 200, "{body}");
        assert!(got.insert(body["Address"].as_str().unwrap().to_string()));
    }
    let (st, body) = h.call(
        &b,
        "/IpamDriver.RequestAddress",
        r#"{"PoolID":"10.90.5.0-29"}"#,
    );
    assert_eq!(st, 500);
    assert_eq!(body["Err"], "no free address left in pool 10.90.5.0/29");
    // The gateway is still available on request.
    let (st, body) = h.call(
        &a,
        "/IpamDriver.RequestAddress",
        r#"{"PoolID":"10.90.5.0-29","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
    );
    assert_eq!((st, body["Address"].clone()), (200, json!("10.90.5.1/29")));
}

#[test]
fn docker_bridge_network_with_berth_ipam() {
    if !docker_ready() {
        return;
    }
    let mut h = Harness::start();
    let driver = uniq("berth-test");
    let socket = PathBuf::from(format!("/run/docker/plugins/{driver}.sock"));
    let args = h.args(&socket);
    h.plugin(&args);
    let img = Image::busybox();
    let net = uniq("bnet");
    let _net_guard = Guard {
        kind: "network",
        name: net.clone(),
    };
    docker(&[
        "network",
        "create",
        "-d",
        "bridge",
        "--ipam-driver",
        &driver,
        "--subnet",
        "10.90.77.0/24",
        &net,
    ]);
    let table = h.raw("/_berth/ipam/pools").unwrap().0;
    assert!(table.contains("\"10.90.77.0-24\""), "{table}");
    let name = uniq("c");
    let _c_guard = Guard {
        kind: "container",
        name: name.clone(),
    };
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &net,
        &img.tag,
        "sleep",
        "60",
    ]);
    let out = docker(&[
        "exec",
        &name,
        "sh",
        "-c",
        "ip -4 -o addr show eth0 | awk '{print $4}'",
    ]);
    let addr = String::from_utf8(out).unwrap().trim().to_string();
    assert!(
        addr.starts_with("10.90.77.") && addr.ends_with("/24"),
        "{addr}"
    );
    // The container's address and the gateway are reserved in the registry.
    let ip = addr.split('/').next().unwrap().to_string();
    let keys = h.children("/_berth/ipam/addrs/10.90.77.0-24");
    assert!(keys.iter().any(|k| k.ends_with("/10.90.77.1")), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.ends_with(&format!("/{ip}"))),
        "{keys:?}"
    );
    // Removing the container releases its address.
    drop(_c_guard);
    assert!(support::eventually(
        std::time::Duration::from_secs(10),
        || {
            !h.children("/_berth/ipam/addrs/10.90.77.0-24")
                .iter()
                .any(|k| k.ends_with(&format!("/{ip}")))
        }
    ));
    // An overlapping subnet is refused with the reason.
    let o = support::docker_out(&[
        "network",
        "create",
        "-d",
        "bridge",
        "--ipam-driver",
        &driver,
        "--subnet",
        "10.90.77.128/25",
        &uniq("bnet"),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("overlaps 10.90.77.0/24"), "{err}");
    drop(_net_guard);
    // Removing the network released its pool.
    assert!(support::eventually(
        std::time::Duration::from_secs(10),
        || {
            !h.raw("/_berth/ipam/pools")
                .unwrap()
                .0
                .contains("10.90.77.0-24")
        }
    ));
}
