//! Differential conformance: berth's v2 keys API versus real etcd 3.4.
//!
//! Needs `etcd` (3.4, on PATH or `ETCD_BIN`). The berth side is
//! `BERTH_CONFORMANCE_BIN` (an `etcd*` file name is run as etcd), else the
//! package's `berth` binary run as `berth registry <etcd flags>`, else etcd
//! itself (self-check). `CONFORMANCE_SELFTEST_MUTATE=N` corrupts berth's
//! response to case N to demonstrate failure reporting.

#[path = "support/conformance.rs"]
mod conformance_support;
#[path = "support/ports.rs"]
mod ports;

use conformance_support::*;
use std::time::Instant;

const CORPUS: &str = include_str!("conformance/cases.txt");

#[test]
fn etcd_v2_conformance() {
    let steps = parse_corpus(CORPUS);
    let etcd_spec = TargetSpec::etcd("etcd");
    let (berth_spec, how) = TargetSpec::berth();
    eprintln!(
        "conformance: etcd = {:?}; berth = {:?} {:?} ({how})",
        etcd_spec.program, berth_spec.program, berth_spec.pre_args
    );

    let t0 = Instant::now();
    let etcd = Target::launch(&etcd_spec).unwrap_or_else(|e| panic!("starting etcd: {e}"));
    let berth = Target::launch(&berth_spec).unwrap_or_else(|e| panic!("starting berth: {e}"));
    eprintln!("conformance: both targets ready in {:?}", t0.elapsed());

    let t1 = Instant::now();
    let etcd_run = run_corpus(&etcd, &steps);
    let etcd_time = t1.elapsed();
    let t2 = Instant::now();
    let mut berth_run = run_corpus(&berth, &steps);
    let berth_time = t2.elapsed();
    drop((etcd, berth));

    if let Some(n) = maybe_mutate(&mut berth_run) {
        eprintln!(
            "conformance: CONFORMANCE_SELFTEST_MUTATE: corrupted berth's response to case #{n}"
        );
    }
    assert!(
        etcd_run.base.is_some(),
        "corpus must start with an @base write that etcd answers"
    );
    dump(&steps, &etcd_run, &berth_run);
    let report = compare(&steps, &etcd_run, &berth_run);
    eprintln!(
        "conformance: {} cases ({} HTTP requests per target); etcd run {:?}, berth run {:?}; {} differing case(s), {} allow-listed difference(s)",
        report.cases, etcd_run.http_requests, etcd_time, berth_time, report.failures, report.allowed
    );
    if report.failures > 0 {
        panic!(
            "{} of {} conformance cases differ (etcd vs berth):{}",
            report.failures, report.cases, report.text
        );
    }
}

/// Fast, process-free check of the normaliser and differ.
#[test]
fn normaliser_and_differ_selftest() {
    let steps = parse_corpus(
        "@base PUT /v2/keys/a value=1\n\
         POST /v2/keys/q value=x\n\
         PUT /v2/keys/a?prevIndex=7 value=2\n",
    );
    let mk = |base: u64, port: u16, value: &str, ttl: u64| {
        let hdr = |i: u64| {
            vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("x-etcd-index".to_string(), i.to_string()),
                ("x-raft-term".into(), "9".into()),
            ]
        };
        let r1 = Observation { status: 201, headers: hdr(base), body: format!(r#"{{"action":"set","node":{{"key":"/a","value":"{value}","expiration":"2030-01-01T00:00:00.5Z","ttl":{ttl},"modifiedIndex":{base},"createdIndex":{base}}}}}"#).into_bytes(), events: None };
        let q = base + 1;
        let r2 = Observation { status: 201, headers: hdr(q), body: format!(r#"{{"action":"create","node":{{"key":"/q/{q:020}","value":"x","modifiedIndex":{q},"createdIndex":{q}}}}}"#).into_bytes(), events: None };
        let r3 = Observation { status: 412, headers: hdr(q), body: format!(r#"{{"errorCode":101,"message":"Compare failed","cause":"[{} != {base}]","index":{q}}}"#, base - 1).into_bytes(), events: None };
        Run {
            label: "x".into(),
            base: Some(base),
            client_url: format!("http://127.0.0.1:{port}"),
            peer_url: "http://127.0.0.1:1".into(),
            results: vec![Some(Ok(r1)), Some(Ok(r2)), Some(Ok(r3))],
            sent: vec![
                "/v2/keys/a".into(),
                "/v2/keys/q".into(),
                "/v2/keys/a?prevIndex=7".into(),
            ],
            http_requests: 3,
        }
    };
    // Different base indexes, ports, and ttl off by one: no difference.
    let r = compare(&steps, &mk(4, 1000, "1", 100), &mk(17, 2000, "1", 99));
    assert_eq!(r.failures, 0, "{}", r.text);
    // A changed value and a ttl off by two are reported.
    let r = compare(&steps, &mk(4, 1000, "1", 100), &mk(17, 2000, "2", 98));
    assert_eq!(r.failures, 1, "{}", r.text);
    assert!(
        r.text.contains("body.node.value") && r.text.contains("body.node.ttl"),
        "{}",
        r.text
    );
}
