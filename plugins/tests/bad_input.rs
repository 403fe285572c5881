//! Malformed and refused requests: each answers an error with a clear reason and leaves
//! the registry unchanged.

mod support;

use plugins::secrets::{self, ClusterKey, Kind, MAX_SIZE};
use serde_json::json;
use support::Harness;

fn start() -> (Harness, std::path::PathBuf) {
    let mut h = Harness::start();
    let socket = h.dir.path().join("p.sock");
    let args = h.args(&socket);
    h.plugin(&args);
    (h, socket)
}

#[test]
fn handshake_unknown_endpoints_and_methods() {
    let (h, s) = start();
    assert_eq!(
        h.call(&s, "/Plugin.Activate", ""),
        (
            200,
            json!({"Implements": ["NetworkDriver", "IpamDriver", "VolumeDriver"]})
        )
    );
    let (st, body) = h.call(&s, "/NetworkDriver.Frobnicate", "{}");
    assert_eq!(st, 404);
    assert!(body["Err"]
        .as_str()
        .unwrap()
        .contains("unknown plugin endpoint /NetworkDriver.Frobnicate"));
    let (st, body) =
        h.rt.block_on(support::call(&s, "GET", "/Plugin.Activate", String::new()));
    assert_eq!(st, 405, "{body}");
    assert_eq!(
        h.call(&s, "/NetworkDriver.GetCapabilities", "null"),
        (
            200,
            json!({"Scope": "local", "ConnectivityScope": "global"})
        )
    );
    assert_eq!(
        h.call(&s, "/IpamDriver.GetCapabilities", ""),
        (
            200,
            json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
        )
    );
    assert_eq!(
        h.call(&s, "/IpamDriver.GetDefaultAddressSpaces", ""),
        (
            200,
            json!({"LocalDefaultAddressSpace": "berth", "GlobalDefaultAddressSpace": "berth"})
        )
    );
    assert_eq!(
        h.call(&s, "/VolumeDriver.Capabilities", ""),
        (200, json!({"Capabilities": {"Scope": "local"}}))
    );
    assert_eq!(
        h.call(&s, "/VolumeDriver.List", ""),
        (200, json!({"Volumes": []}))
    );
}

/// Every key under `/_berth` except the test's own marker, with its value.
fn berth_state(h: &Harness) -> Vec<(String, String)> {
    let r = h.rt.block_on(h.client.get(
        "/_berth",
        registry::client::GetOptions {
            recursive: true,
            ..Default::default()
        },
    ));
    let mut out = Vec::new();
    fn walk(n: &registry::client::Node, out: &mut Vec<(String, String)>) {
        if n.dir {
            n.nodes.iter().for_each(|c| walk(c, out));
        } else {
            out.push((n.key.clone(), n.value.clone().unwrap_or_default()));
        }
    }
    if let Ok(r) = r {
        walk(&r.node, &mut out);
    }
    out.sort();
    out
}

#[test]
fn network_bad_input_is_refused_with_a_reason_and_changes_nothing() {
    let (h, s) = start();
    let (st, _) = h.call(&s, "/IpamDriver.RequestPool", r#"{"Pool":"10.90.0.0/24"}"#);
    assert_eq!(st, 200);
    let before = berth_state(&h);
    let net = |opts: &str, space: &str, gw: &str| {
        format!(
            r#"{{"NetworkID":"n1","Options":{{"com.docker.network.generic":{opts}}},"IPv4Data":[{{"AddressSpace":"{space}","Pool":"10.90.0.0/24","Gateway":"{gw}"}}],"IPv6Data":[]}}"#
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "/NetworkDriver.CreateNetwork",
            r#"{"NetworkID":"n1","Options":{},"IPv4Data":[],"IPv6Data":[]}"#.into(),
            "no IPv4 pool",
        ),
        (
            "/NetworkDriver.CreateNetwork",
            net("{}", "LocalDefault", "10.90.0.1/24"),
            "--ipam-driver berth",
        ),
        (
            "/NetworkDriver.CreateNetwork",
            net("{}", "berth", "10.77.0.1/24"),
            "invalid gateway",
        ),
        (
            "/NetworkDriver.CreateNetwork",
            net(r#"{"berth.vni":"0"}"#, "berth", "10.90.0.1/24"),
            "invalid berth.vni",
        ),
        (
            "/NetworkDriver.CreateNetwork",
            net(r#"{"berth.frob":"1"}"#, "berth", "10.90.0.1/24"),
            "unknown driver option",
        ),
        (
            "/NetworkDriver.CreateNetwork",
            net(
                r#"{"com.docker.network.driver.mtu":"9000"}"#,
                "berth",
                "10.90.0.1/24",
            ),
            "does not fit",
        ),
        (
            "/NetworkDriver.CreateNetwork",
            net(r#"{"berth.join":"10.90.0.0-24"}"#, "berth", "10.90.0.1/24"),
            "not in the registry",
        ),
        (
            "/NetworkDriver.CreateEndpoint",
            r#"{"NetworkID":"nope","EndpointID":"e1","Interface":{"Address":"10.90.0.2/24"}}"#
                .into(),
            "network nope is unknown",
        ),
        (
            "/NetworkDriver.CreateEndpoint",
            r#"{"NetworkID":"n1","EndpointID":""}"#.into(),
            "missing EndpointID",
        ),
        (
            "/NetworkDriver.Join",
            r#"{"NetworkID":"nope","EndpointID":"e1","SandboxKey":"/x"}"#.into(),
            "network nope is unknown",
        ),
        (
            "/NetworkDriver.EndpointOperInfo",
            r#"{"NetworkID":"nope","EndpointID":"e1"}"#.into(),
            "unknown",
        ),
        (
            "/NetworkDriver.DeleteEndpoint",
            r#"{"NetworkID":"nope","EndpointID":"e1"}"#.into(),
            "unknown",
        ),
        (
            "/NetworkDriver.Leave",
            r#"{"NetworkID":"nope","EndpointID":"e1"}"#.into(),
            "unknown",
        ),
        (
            "/NetworkDriver.DeleteNetwork",
            r#"{"NetworkID":"nope"}"#.into(),
            "network nope is unknown",
        ),
        (
            "/NetworkDriver.DeleteNetwork",
            r#"{"NetworkID":""}"#.into(),
            "missing NetworkID",
        ),
        // Malformed JSON is reported as such.
        (
            "/NetworkDriver.Join",
            "{\"NetworkID\": 5}".into(),
            "malformed request body",
        ),
        (
            "/NetworkDriver.CreateNetwork",
            "{".into(),
            "malformed request body",
        ),
    ];
    for (path, body, want) in cases {
        let (st, resp) = h.call(&s, path, &body);
        assert_eq!(st, 500, "{path} {body}: {resp}");
        let err = resp["Err"].as_str().unwrap_or_default();
        assert!(
            err.contains(want),
            "{path} {body}: want {want:?}, got {resp}"
        );
        assert_eq!(
            berth_state(&h),
            before,
            "{path} {body} changed the registry"
        );
    }
    // What needs nothing answers plainly.
    assert_eq!(
        h.call(
            &s,
            "/NetworkDriver.DiscoverNew",
            r#"{"DiscoveryType":1,"DiscoveryData":{}}"#
        ),
        (200, json!({}))
    );
    assert_eq!(
        h.call(&s, "/NetworkDriver.GetCapabilities", ""),
        (
            200,
            json!({"Scope": "local", "ConnectivityScope": "global"})
        )
    );
}

#[test]
fn ipam_bad_input_changes_nothing() {
    let (h, s) = start();
    let (st, _) = h.call(&s, "/IpamDriver.RequestPool", r#"{"Pool":"10.90.0.0/24"}"#);
    assert_eq!(st, 200);
    let before = h.raw("/_berth/ipam/pools").unwrap();

    let cases = [
        (
            "/IpamDriver.RequestPool",
            "{\"Pool\": \"10.9",
            "malformed request body",
        ),
        (
            "/IpamDriver.RequestPool",
            r#"{"Pool": 5}"#,
            "malformed request body",
        ),
        (
            "/IpamDriver.RequestPool",
            r#"{"Pool":"10.90.0.0/16"}"#,
            "subnet 10.90.0.0/16 overlaps 10.90.0.0/24 (pool 10.90.0.0-24)",
        ),
        (
            "/IpamDriver.RequestPool",
            r#"{"Pool":"10.90.0.64/26"}"#,
            "overlaps 10.90.0.0/24",
        ),
        (
            "/IpamDriver.RequestPool",
            r#"{"Pool":"banana"}"#,
            "invalid subnet \"banana\"",
        ),
        (
            "/IpamDriver.RequestPool",
            r#"{"Pool":"fd00::/64","V6":true}"#,
            "IPv6 pools are not supported",
        ),
        (
            "/IpamDriver.RequestPool",
            r#"{"AddressSpace":"LocalDefault","Pool":"10.1.0.0/24"}"#,
            "address space \"LocalDefault\"",
        ),
        (
            "/IpamDriver.RequestAddress",
            r#"{"PoolID":"10.1.0.0-24"}"#,
            "unknown pool \"10.1.0.0-24\"",
        ),
        ("/IpamDriver.RequestAddress", r#"{}"#, "missing PoolID"),
        (
            "/IpamDriver.RequestAddress",
            r#"{"PoolID":"10.90.0.0-24","Address":"10.91.0.1"}"#,
            "outside pool",
        ),
        (
            "/IpamDriver.RequestAddress",
            r#"{"PoolID":"10.90.0.0-24","Address":"10.90.0.255"}"#,
            "broadcast",
        ),
        (
            "/IpamDriver.ReleaseAddress",
            r#"{"PoolID":"10.90.0.0-24","Address":"10.90.0.9"}"#,
            "not allocated",
        ),
        (
            "/IpamDriver.ReleasePool",
            r#"{"PoolID":"nope"}"#,
            "unknown pool \"nope\"",
        ),
    ];
    for (path, body, want) in cases {
        let (st, resp) = h.call(&s, path, body);
        assert_eq!(st, 500, "{path} {body}: {resp}");
        let err = resp["Err"].as_str().unwrap();
        assert!(err.contains(want), "{path} {body}: {err:?} lacks {want:?}");
        assert_eq!(resp["Error"], resp["Err"], "IPAM errors carry Error too");
    }
    assert_eq!(
        h.raw("/_berth/ipam/pools").unwrap(),
        before,
        "pool table changed"
    );
    assert!(h.children("/_berth/ipam/addrs/10.90.0.0-24").is_empty());
    assert!(h.children("/_berth/ipam/addrs").is_empty());
}

#[test]
fn secret_and_volume_bad_input_changes_nothing() {
    let (h, s) = start();
    let c = &h.client;
    let (key, _) = ClusterKey::load_or_create(&h.key_file()).unwrap();
    // Oversized: refused before anything is written.
    let big = vec![b'x'; MAX_SIZE + 1];
    let e =
        h.rt.block_on(secrets::create_secret(c, &key, "big", &big))
            .unwrap_err();
    assert!(
        e.to_string()
            .contains("secret big is too large: more than the limit of 512000 bytes"),
        "{e}"
    );
    assert!(h.raw("/_berth/secrets/big").is_none());
    // Exactly the limit is fine.
    h.rt.block_on(secrets::create_secret(c, &key, "max", &big[..MAX_SIZE]))
        .unwrap();
    // Immutable.
    let before = h.raw("/_berth/secrets/max").unwrap();
    let e =
        h.rt.block_on(secrets::create_secret(c, &key, "max", b"other"))
            .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(h.raw("/_berth/secrets/max").unwrap(), before);
    // Bad names.
    let e =
        h.rt.block_on(secrets::create_secret(c, &key, "../etc", b"x"))
            .unwrap_err();
    assert!(e.to_string().starts_with("invalid secret name"), "{e}");
    let e =
        h.rt.block_on(secrets::create_config(c, "bin", b"\xff\xfe"))
            .unwrap_err();
    assert!(e.to_string().contains("not UTF-8"), "{e}");
    assert_eq!(
        h.rt.block_on(secrets::list(c, Kind::Config)).unwrap(),
        Vec::<String>::new()
    );

    // Volumes: missing secret, bad options, malformed JSON, unknown volume.
    let cases = [
        (
            "/VolumeDriver.Create",
            r#"{"Name":"v","Opts":{"secret":"missing"}}"#,
            "secret missing does not exist",
        ),
        (
            "/VolumeDriver.Create",
            r#"{"Name":"v","Opts":{"secret":"max,target=../x"}}"#,
            "without `..`",
        ),
        (
            "/VolumeDriver.Create",
            r#"{"Name":"v","Opts":{"size":"1m"}}"#,
            "\"size\" is unknown",
        ),
        (
            "/VolumeDriver.Create",
            r#"{"Name":"v","Opts":null}"#,
            "at least one secret=NAME",
        ),
        (
            "/VolumeDriver.Create",
            r#"{"Name":"a/b","Opts":{"secret":"max"}}"#,
            "invalid volume name",
        ),
        (
            "/VolumeDriver.Create",
            r#"{"Opts":{"secret":"max"}}"#,
            "missing volume Name",
        ),
        (
            "/VolumeDriver.Create",
            "{\"Name\":",
            "malformed request body",
        ),
        (
            "/VolumeDriver.Mount",
            r#"{"Name":"ghost","ID":"c1"}"#,
            "volume ghost does not exist",
        ),
        (
            "/VolumeDriver.Get",
            r#"{"Name":"ghost"}"#,
            "volume ghost does not exist",
        ),
        (
            "/VolumeDriver.Remove",
            r#"{"Name":"ghost"}"#,
            "volume ghost does not exist",
        ),
    ];
    for (path, body, want) in cases {
        let (st, resp) = h.call(&s, path, body);
        assert_eq!(st, 500, "{path} {body}: {resp}");
        let err = resp["Err"].as_str().unwrap();
        assert!(err.contains(want), "{path} {body}: {err:?} lacks {want:?}");
        assert!(resp.get("Error").is_none());
    }
    assert!(h.children("/_berth/volumes/test-node").is_empty());

    // A secret a volume names is not removed by `berth secret rm` ...
    h.rt.block_on(secrets::create_secret(c, &key, "gone", b"x"))
        .unwrap();
    let (st, resp) = h.call(
        &s,
        "/VolumeDriver.Create",
        r#"{"Name":"v","Opts":{"secret":"gone"}}"#,
    );
    assert_eq!((st, resp), (200, json!({})));
    let e =
        h.rt.block_on(secrets::remove(c, Kind::Secret, "gone"))
            .unwrap_err();
    assert!(
        e.to_string().contains("used by volume(s) test-node/v"),
        "{e}"
    );
    // ... but deleted behind berth's back (etcdctl rm): Mount fails, nothing is mounted.
    h.rt.block_on(c.delete("/_berth/secrets/gone", Default::default()))
        .unwrap();
    let (st, resp) = h.call(&s, "/VolumeDriver.Mount", r#"{"Name":"v","ID":"c1"}"#);
    assert_eq!(st, 500);
    assert!(
        resp["Err"]
            .as_str()
            .unwrap()
            .contains("secret gone does not exist"),
        "{resp}"
    );
    assert!(!h.dir.path().join("volumes/v").exists());
    assert_eq!(
        h.call(&s, "/VolumeDriver.Path", r#"{"Name":"v"}"#),
        (200, json!({"Mountpoint": ""}))
    );
    // Same options again: accepted; other options: refused.
    assert_eq!(
        h.call(
            &s,
            "/VolumeDriver.Create",
            r#"{"Name":"v","Opts":{"secret":"max"}}"#
        )
        .0,
        500
    );
    let (_, resp) = h.call(&s, "/VolumeDriver.Remove", r#"{"Name":"v"}"#);
    assert_eq!(resp, json!({}));
}

#[test]
fn mount_unmount_shares_one_tmpfs_survives_a_restart_and_wipes_it() {
    // Needs root for mount(2); the suite runs as root in CI.
    if unsafe { libc::geteuid() } != 0 {
        assert!(!support::in_ci(), "mount tests need root in CI");
        eprintln!("skipping: not root");
        return;
    }
    let (mut h, s) = start();
    let (key, _) = ClusterKey::load_or_create(&h.key_file()).unwrap();
    h.rt.block_on(secrets::create_secret(&h.client, &key, "pw", b"hunter2"))
        .unwrap();
    let (st, _) = h.call(
        &s,
        "/VolumeDriver.Create",
        r#"{"Name":"v","Opts":{"secret":"pw,mode=0400,uid=7"}}"#,
    );
    assert_eq!(st, 200);
    let mp = h.dir.path().join("volumes/v");
    let want = json!({"Mountpoint": mp.display().to_string()});
    assert_eq!(
        h.call(&s, "/VolumeDriver.Mount", r#"{"Name":"v","ID":"c1"}"#),
        (200, want.clone())
    );
    assert_eq!(
        h.call(&s, "/VolumeDriver.Mount", r#"{"Name":"v","ID":"c2"}"#),
        (200, want.clone())
    );
    assert_eq!(
        h.call(&s, "/VolumeDriver.Path", r#"{"Name":"v"}"#),
        (200, want)
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(mp.join("pw")).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.uid(), meta.gid()), (0o400, 7, 0));
    assert_eq!(std::fs::read(mp.join("pw")).unwrap(), b"hunter2");
    assert!(
        std::fs::write(mp.join("new"), b"x").is_err(),
        "the tmpfs is read-only"
    );
    let (st, resp) = h.call(&s, "/VolumeDriver.Remove", r#"{"Name":"v"}"#);
    assert_eq!(st, 500);
    assert!(
        resp["Err"].as_str().unwrap().contains("is mounted"),
        "{resp}"
    );
    let (_, got) = h.call(&s, "/VolumeDriver.Get", r#"{"Name":"v"}"#);
    assert_eq!(
        got["Volume"]["Status"]["files"],
        json!(["secret:pw -> pw (0400 7:0)"])
    );
    // A secret a volume names cannot be removed.
    let e =
        h.rt.block_on(secrets::remove(&h.client, Kind::Secret, "pw"))
            .unwrap_err();
    assert!(
        e.to_string().contains("used by volume(s) test-node/v"),
        "{e}"
    );
    assert!(h.raw("/_berth/secrets/pw").is_some());

    // A plugin restart keeps the volume mounted for its users and remembers them.
    let args = h.args(&s);
    h.stop_plugins();
    assert_eq!(
        std::fs::read(mp.join("pw")).unwrap(),
        b"hunter2",
        "still mounted"
    );
    h.plugin(&args);
    let (st, resp) = h.call(&s, "/VolumeDriver.Remove", r#"{"Name":"v"}"#);
    assert_eq!(st, 500, "users forgotten across the restart: {resp}");
    assert!(resp["Err"].as_str().unwrap().contains("c1,c2"), "{resp}");
    assert_eq!(
        h.call(&s, "/VolumeDriver.Unmount", r#"{"Name":"v","ID":"c1"}"#)
            .0,
        200
    );
    assert!(mp.join("pw").exists(), "still mounted for c2");
    assert_eq!(
        h.call(&s, "/VolumeDriver.Unmount", r#"{"Name":"v","ID":"c2"}"#)
            .0,
        200
    );
    assert!(!mp.exists(), "mount point left behind");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&mp.display().to_string()));
    assert_eq!(
        h.call(&s, "/VolumeDriver.Remove", r#"{"Name":"v"}"#),
        (200, json!({}))
    );
    assert!(h.children("/_berth/volumes/test-node").is_empty());
    // Unused now: removable.
    h.rt.block_on(secrets::remove(&h.client, Kind::Secret, "pw"))
        .unwrap();
    assert!(h.raw("/_berth/secrets/pw").is_none());
}
