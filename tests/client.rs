//! registry::client against a berth registry (and, for one case, a real etcd 3.4).

mod common;

use std::time::Duration;

use futures::StreamExt;
use registry::client::{
    codes, Client, ClientError, DeleteOptions, GetOptions, SetOptions, WatchOptions,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_watch_members_and_failover() {
    if !common::available() {
        return;
    }
    let etcd = common::Etcd::start().await;
    // A dead endpoint first: the client must fail over to the live one.
    let dead = "http://127.0.0.1:1".to_string();
    let c = Client::new(&[format!("{dead},{}", etcd.client_url)]).unwrap();

    // set / get / headers
    let r = c.set("/k", "v1", SetOptions::default()).await.unwrap();
    assert_eq!(r.action, "set");
    assert_eq!(r.node.value.as_deref(), Some("v1"));
    assert!(r.etcd_index > 0 && r.etcd_index == r.node.modified_index);
    assert!(r.raft_index > 0 && r.raft_term > 0);
    let g = c
        .get(
            "k",
            GetOptions {
                quorum: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(g.node.key, "/k");

    // create only if absent; update only if present; CAS
    let e = c
        .set(
            "/k",
            "x",
            SetOptions {
                prev_exist: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.etcd_code(), Some(codes::NODE_EXIST));
    let e = c
        .set(
            "/k",
            "x",
            SetOptions {
                prev_value: Some("nope".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.etcd_code(), Some(codes::TEST_FAILED));
    let r = c
        .set(
            "/k",
            "v2",
            SetOptions {
                prev_index: Some(g.node.modified_index),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.action, "compareAndSwap");
    assert_eq!(r.prev_node.unwrap().value.as_deref(), Some("v1"));

    // ttl + refresh
    let r = c
        .set(
            "/t",
            "tv",
            SetOptions {
                ttl: Some(60),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.node.ttl, Some(60));
    assert!(r.node.expiration.is_some());
    let r = c
        .set(
            "/t",
            "",
            SetOptions {
                ttl: Some(90),
                refresh: true,
                prev_exist: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.node.ttl, Some(90));
    assert_eq!(r.node.value.as_deref(), Some("tv"));

    // directories, in-order keys, sorted recursive get
    c.set(
        "/dir",
        "",
        SetOptions {
            dir: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let a = c.create_in_order("/dir", "first", None).await.unwrap();
    let b = c.create_in_order("/dir", "second", None).await.unwrap();
    assert_eq!(a.action, "create");
    assert!(a.node.key < b.node.key);
    let l = c
        .get(
            "/dir",
            GetOptions {
                recursive: true,
                sorted: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(l.node.dir);
    let vals: Vec<_> = l
        .node
        .nodes
        .iter()
        .map(|n| n.value.clone().unwrap())
        .collect();
    assert_eq!(vals, ["first", "second"]);
    let e = c
        .delete(
            "/dir",
            DeleteOptions {
                dir: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.etcd_code(), Some(codes::DIR_NOT_EMPTY));
    let d = c
        .delete(
            "/dir",
            DeleteOptions {
                recursive: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(d.action, "delete");
    let e = c.get("/dir", GetOptions::default()).await.unwrap_err();
    assert!(e.is_key_not_found());
    assert!(
        e.to_string().starts_with("100: Key not found (/dir) ["),
        "{e}"
    );

    // one long-polled watch event
    let c2 = c.clone();
    let w = tokio::spawn(async move { c2.watch("/w", WatchOptions::default()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.set("/w", "fired", SetOptions::default()).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), w)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.action.as_str(), ev.node.value.as_deref()),
        ("set", Some("fired"))
    );

    // a stream of events, none lost between polls
    let start = ev.node.modified_index + 1;
    for i in 0..5 {
        c.set(&format!("/s/{i}"), &i.to_string(), SetOptions::default())
            .await
            .unwrap();
    }
    let stream = c.watch_stream(
        "/s",
        WatchOptions {
            recursive: true,
            wait_index: Some(start),
        },
    );
    let got: Vec<_> =
        tokio::time::timeout(Duration::from_secs(10), stream.take(5).collect::<Vec<_>>())
            .await
            .unwrap();
    let keys: Vec<_> = got.into_iter().map(|r| r.unwrap().node.key).collect();
    assert_eq!(keys, ["/s/0", "/s/1", "/s/2", "/s/3", "/s/4"]);

    // members, leader, health, version, machines
    let ms = c.member_list().await.unwrap();
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0].name, "default");
    assert_eq!(ms[0].client_urls, std::slice::from_ref(&etcd.client_url));
    assert_eq!(c.member_leader().await.unwrap().id, ms[0].id);
    assert!(c.health().await.unwrap());
    assert!(c.health_of(&etcd.client_url).await.unwrap());
    assert!(c.version().await.unwrap().etcdserver.starts_with("3.4"));
    assert_eq!(
        c.machines().await.unwrap(),
        std::slice::from_ref(&etcd.client_url)
    );
    let e = c.member_add(&etcd.peer_url).await.unwrap_err();
    assert!(
        matches!(e, ClientError::Member { status: 409, .. }),
        "{e:?}"
    );
    let e = c.member_remove("1234").await.unwrap_err();
    assert!(
        matches!(e, ClientError::Member { status: 404, .. }),
        "{e:?}"
    );

    // the failover picked the live endpoint and sticks to it
    let t0 = std::time::Instant::now();
    c.get("/k", GetOptions::default()).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn unreachable_registry_says_what_to_do() {
    let c = Client::new(&["http://127.0.0.1:1".to_string()]).unwrap();
    let e = c.get("/x", GetOptions::default()).await.unwrap_err();
    assert!(e.is_unavailable());
    let msg = e.to_string();
    assert!(
        msg.starts_with("no registry reachable at http://127.0.0.1:1: is `berth up` or `berth registry` running?"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_without_v2_is_reported() {
    if !common::available() {
        return;
    }
    // Same scratch etcd but the v2 API off: keys calls get a hint.
    let etcd = common::Etcd::start_with(&[]).await;
    let c = Client::new(std::slice::from_ref(&etcd.client_url)).unwrap();
    let e = c.get("/x", GetOptions::default()).await.unwrap_err();
    assert!(matches!(e, ClientError::V2Disabled { .. }), "{e:?}");
}
