//! Long-poll and stream watches over raw HTTP/1.1 connections: a watcher is registered while
//! its client waits and released when the client goes away; a one-shot answer ends its body;
//! a stream delivers every event in order; many watchers of one key all get the write.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{eventually, http, Cluster};

fn addr(cluster: &Cluster) -> String {
    cluster.url(0).trim_start_matches("http://").to_string()
}

/// Opens a connection and sends `GET <path>`; returns it once the response head has arrived
/// (the watcher is registered by then).
fn open_watch(addr: &str, path: &str) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line:?}");
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    r
}

/// Reads one chunk of a chunked body; `None` at the last chunk.
fn read_chunk(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut size = String::new();
    r.read_line(&mut size).unwrap();
    let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
    let mut data = vec![0u8; n + 2];
    r.read_exact(&mut data).unwrap();
    if n == 0 {
        return None;
    }
    data.truncate(n);
    Some(String::from_utf8(data).unwrap())
}

fn watchers(cluster: &Cluster) -> u64 {
    http::get(&format!("{}/v2/stats/store", cluster.url(0)))
        .unwrap()
        .json()["watchers"]
        .as_u64()
        .unwrap()
}

#[test]
fn watchers_are_released_with_their_clients_and_events_arrive_in_order() {
    let cluster = Cluster::start(1);
    let a = addr(&cluster);

    // 50 long polls are 50 watchers; closing the connections releases them.
    let polls: Vec<_> = (0..50)
        .map(|_| open_watch(&a, "/v2/keys/w?wait=true"))
        .collect();
    assert_eq!(watchers(&cluster), 50);
    drop(polls);
    let gone = eventually(Duration::from_secs(5), || {
        (watchers(&cluster) == 0).then_some(())
    });
    assert!(
        gone.is_some(),
        "{} watchers left after their clients went away",
        watchers(&cluster)
    );

    // 200 one-shot watchers of one key all get the one write, each in a body that ends
    // right after it; the connections stay usable (keep-alive).
    let mut many: Vec<_> = (0..200)
        .map(|_| open_watch(&a, "/v2/keys/k?wait=true"))
        .collect();
    http::put(&cluster.key_url(0, "/k"), "value=v1").unwrap();
    for r in &mut many {
        let body = read_chunk(r).expect("an event");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["action"], "set");
        assert_eq!(v["node"]["value"], "v1");
        assert_eq!(read_chunk(r), None, "the one-shot body did not end");
    }
    assert_eq!(watchers(&cluster), 0);
    let s = many[0].get_mut();
    write!(s, "GET /v2/keys/k HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut line = String::new();
    many[0].read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line:?}");
    drop(many);

    // A stream watcher sees every change, in order, and stays registered.
    let mut stream = open_watch(&a, "/v2/keys/s?wait=true&stream=true&recursive=true");
    for i in 0..20 {
        http::put(
            &cluster.key_url(0, &format!("/s/k{}", i % 3)),
            &format!("value={i}"),
        )
        .unwrap();
    }
    for i in 0..20 {
        let body = read_chunk(&mut stream).expect("an event");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["node"]["value"], i.to_string(), "event {i} out of order");
    }
    assert_eq!(watchers(&cluster), 1);
    drop(stream);
    let gone = eventually(Duration::from_secs(5), || {
        (watchers(&cluster) == 0).then_some(())
    });
    assert!(gone.is_some(), "the stream watcher outlived its client");
}
