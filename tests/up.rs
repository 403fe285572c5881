//! `berth up`, the README's first command, as a process on free ports: every part answers
//! (the registry to the etcd API, DNS to dig, the proxy to curl, the plugin to Docker's
//! handshake when it runs as root beside Docker), and Ctrl-C stops them all cleanly.

mod support;

use std::process::Command;
use std::time::Duration;

use support::proc::Proc;
use support::{eventually, free_port, http, is_root, require_tool};

const ECHO: &str = env!("CARGO_BIN_EXE_berth-echo");

fn free_udp_and_tcp_port() -> u16 {
    loop {
        let p = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

#[test]
fn berth_up_serves_every_part_and_stops_on_ctrl_c() {
    let dig = require_tool("/usr/bin/dig", "dnsutils");
    let dir = tempfile::tempdir().unwrap();
    let (client, peer, dns, web) = (
        free_port(),
        free_port(),
        free_udp_and_tcp_port(),
        free_port(),
    );
    let plugin_socket = dir.path().join("plugins/berth.sock");
    let args: Vec<String> = [
        "up",
        "--data-dir",
        &dir.path().join("data").to_string_lossy(),
        "--client-url",
        &format!("http://127.0.0.1:{client}"),
        "--peer-url",
        &format!("http://127.0.0.1:{peer}"),
        "--dns-listen",
        &format!("127.0.0.1:{dns}"),
        "--http-listen",
        &format!("127.0.0.1:{web}"),
        "--vip-range",
        "127.78.0.0/16",
        "--plugin-socket",
        &plugin_socket.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut up = Proc::start(&args);
    up.wait_log("DNS on", Duration::from_secs(20));
    up.wait_log("proxy on", Duration::from_secs(5));

    // An instance behind the proxy: the echo server, announced through the etcd API.
    let echo_port = free_port();
    let mut echo = Command::new(ECHO)
        .args([
            "--name",
            "up-test",
            "--listen",
            &format!("127.0.0.1:{echo_port}"),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let registry = format!("http://127.0.0.1:{client}");
    let value =
        format!(r#"{{"host":"127.0.0.1","port":{echo_port},"http":{{"domain":"web.localhost"}}}}"#);
    let put = eventually(Duration::from_secs(10), || {
        http::put(
            &format!("{registry}/v2/keys/services/web/a"),
            &format!("value={value}"),
        )
        .ok()
        .filter(|r| r.status == 201 || r.status == 200)
    });
    assert!(put.is_some(), "the registry did not take a write");

    // DNS answers the service with a VIP from the range.
    let vip = eventually(Duration::from_secs(5), || {
        let o = Command::new(&dig)
            .args([
                "@127.0.0.1",
                "-p",
                &dns.to_string(),
                "+short",
                "+time=2",
                "web.berth",
            ])
            .output()
            .ok()?;
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        out.starts_with("127.78.").then_some(out)
    });
    assert!(vip.is_some(), "no VIP from berth up's DNS");

    // The proxy routes the domain to the echo server.
    let body = eventually(Duration::from_secs(5), || {
        let o = Command::new("curl")
            .args([
                "-s",
                "-H",
                "Host: web.localhost",
                &format!("http://127.0.0.1:{web}/"),
            ])
            .output()
            .ok()?;
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.contains("up-test").then_some(out)
    });
    assert!(body.is_some(), "the proxy did not reach the instance");

    // The plugin answers Docker's handshake (root with Docker only).
    let docker = std::path::Path::new("/var/run/docker.sock").exists();
    if is_root() && docker {
        up.wait_log("Docker plugin on", Duration::from_secs(5));
        let o = Command::new("curl")
            .args([
                "-s",
                "--unix-socket",
                &plugin_socket.to_string_lossy(),
                "-X",
                "POST",
                "http://plugin/Plugin.Activate",
            ])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("NetworkDriver") && out.contains("VolumeDriver"),
            "{out}"
        );
        up.wait_log("registrator following Docker", Duration::from_secs(5));
    }

    // Ctrl-C: every part stops, the process exits 0 and lets go of its addresses.
    up.signal("-INT");
    let status = eventually(Duration::from_secs(20), || up.exited());
    let _ = echo.kill();
    let _ = echo.wait();
    assert!(
        status.is_some_and(|s| s.success()),
        "berth up did not exit cleanly on SIGINT: {status:?}\n{}",
        up.log()
    );
    assert!(!plugin_socket.exists(), "plugin socket left behind");
    for port in [client, peer, web] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} still held"
        );
    }
}
