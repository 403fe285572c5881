//! Overlay networks (`docker network create -d berth --ipam-driver berth`) with real Docker
//! daemons and real `berth` processes: a registry, one plugin per host.
//!
//! The one-host test uses the machine's Docker. The two-host test makes a second host out of
//! a network namespace joined to this one by a veth pair, runs a second `dockerd` inside it
//! (its own data and exec roots, vfs storage, its plugin directory bind-mounted in a private
//! mount namespace) and a second plugin in the same namespace; the two plugins share one
//! registry, and containers on either host talk over VXLAN between the two VTEPs.
//!
//! Both need root (netlink, namespaces, a second dockerd); under `CI=true` a missing Docker
//! or root is a failure, never a skip.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::docker::{build_busybox, docker, docker_out, docker_ready, uniq, Container, Image};
use support::proc::Proc;
use support::{eventually, in_ci, is_root, OpenRegistry};

fn ready() -> bool {
    if !docker_ready() {
        return false;
    }
    if !is_root() {
        if in_ci() {
            panic!("overlay tests need root (netlink, network namespaces) and CI=true");
        }
        eprintln!("skipping: overlay tests need root");
        return false;
    }
    true
}

/// Runs a command, panics with its stderr on failure, returns trimmed stdout.
fn run(cmd: &[&str]) -> String {
    let o = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", cmd[0]));
    assert!(
        o.status.success(),
        "{} failed: {}",
        cmd.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn run_quiet(cmd: &[&str]) -> bool {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Where and as what a `berth plugin` runs.
struct PluginHost<'a> {
    registry: String,
    node: &'a str,
    vtep: Option<&'a str>,
    docker_sock: String,
    /// Directory of the plugin's socket (where that host's dockerd looks for plugins).
    socket_dir: PathBuf,
    /// Network namespace to run in (None: this one).
    netns: Option<&'a str>,
}

impl PluginHost<'_> {
    /// This host: the machine's Docker, /run/docker/plugins.
    fn local<'a>(registry: String, node: &'a str, vtep: Option<&'a str>) -> PluginHost<'a> {
        PluginHost {
            registry,
            node,
            vtep,
            docker_sock: "unix:///var/run/docker.sock".into(),
            socket_dir: PathBuf::from("/run/docker/plugins"),
            netns: None,
        }
    }
}

/// `berth plugin` as `driver` (its socket `<socket_dir>/<driver>.sock`) on `host`, its
/// volumes and key under `state`.
fn plugin(host: &PluginHost, driver: &str, state: &Path) -> Proc {
    let (registry, node, vtep, docker_sock, socket_dir, netns) = (
        host.registry.as_str(),
        host.node,
        host.vtep,
        host.docker_sock.as_str(),
        host.socket_dir.as_path(),
        host.netns,
    );
    let socket = socket_dir.join(format!("{driver}.sock"));
    let mut args = vec![
        "plugin".to_string(),
        "--endpoints".into(),
        registry.into(),
        "--socket".into(),
        socket.to_string_lossy().into_owned(),
        "--node".into(),
        node.into(),
        "--docker".into(),
        docker_sock.into(),
        "--volume-root".into(),
        state
            .join(format!("vol-{node}"))
            .to_string_lossy()
            .into_owned(),
        "--key-file".into(),
        state.join("secrets.key").to_string_lossy().into_owned(),
    ];
    if let Some(v) = vtep {
        args.push("--vtep-addr".into());
        args.push(v.into());
    }
    let netns_arg = netns.map(|n| format!("--net=/run/netns/{n}"));
    let wrapper: Vec<&str> = match &netns_arg {
        Some(a) => vec!["nsenter", a.as_str()],
        None => vec![],
    };
    let p = Proc::start_wrapped(&wrapper, &args);
    p.wait_log(
        "serving the Docker plugin protocol",
        Duration::from_secs(20),
    );
    assert!(socket.exists(), "{} missing", socket.display());
    p
}

/// Removes a Docker network on drop (on the host's daemon, or another via `-H`).
struct NetGuard {
    host: Vec<String>,
    name: String,
}

impl Drop for NetGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(&self.host)
            .args(["network", "rm", &self.name])
            .output();
    }
}

/// `docker network create -d DRIVER --ipam-driver DRIVER --subnet SUBNET NAME` on this host.
fn create_network(driver: &str, subnet: &str, name: &str) {
    docker(&[
        "network",
        "create",
        "-d",
        driver,
        "--ipam-driver",
        driver,
        "--subnet",
        subnet,
        name,
    ]);
}

fn ip_link(name: &str) -> Option<String> {
    let o = Command::new("ip")
        .args(["-d", "link", "show", name])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn net_ip(c: &Container, net: &str) -> String {
    c.inspect(&format!(
        "{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"
    ))
}

/// `GET /` on port 80 of `ip` from inside container `name` (busybox nc; its wget crashes
/// in a FROM-scratch image) on the daemon `host`.
fn http_from(host: &[&str], name: &str, ip: &str) -> String {
    let cmd = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} 80");
    let o = Command::new("docker")
        .args(host)
        .args(["exec", name, "sh", "-c", &cmd])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn one_host_two_containers_reach_each_other_and_removal_releases_everything() {
    if !ready() {
        return;
    }
    let reg = OpenRegistry::start();
    let state = tempfile::tempdir().unwrap();
    let driver = format!("berth-ov{}", std::process::id());
    let _p = plugin(
        &PluginHost::local(reg.url(), "host-a", None),
        &driver,
        state.path(),
    );
    let image = Image::busybox();
    let name = uniq("ov-one");
    let subnet = "10.95.0.0/24";
    let net = "10.95.0.0-24";
    create_network(&driver, subnet, &name);
    let _net_guard = NetGuard {
        host: vec![],
        name: name.clone(),
    };
    let record = reg
        .value(&format!("/_berth/networks/{net}"))
        .expect("network record");
    let vni = record["vni"].as_u64().unwrap();
    let mtu = record["mtu"].as_u64().unwrap();
    assert!(vni >= 4096, "{record}");
    assert_eq!(record["gateway"], "10.95.0.1");
    assert_eq!(record["created_by"], "host-a");
    assert_eq!(
        reg.node(&format!("/_berth/vnis/{vni}")).unwrap()["value"],
        net
    );
    // The name is written back once Docker shows the network.
    let named = eventually(Duration::from_secs(15), || {
        let r = reg.value(&format!("/_berth/networks/{net}"))?;
        (r["name"] == name.as_str()).then_some(())
    });
    assert!(named.is_some(), "name never recorded");
    // Devices: a bridge with the gateway, a VXLAN device (learning off, ARP proxy) on it.
    let vx = ip_link(&format!("berthvx{vni}")).expect("vxlan device");
    assert!(vx.contains(&format!("vxlan id {vni}")), "{vx}");
    assert!(vx.contains("nolearning") && vx.contains("proxy"), "{vx}");
    assert!(vx.contains(&format!("master berthbr{vni}")), "{vx}");
    assert!(vx.contains(&format!("mtu {mtu}")), "{vx}");
    let addrs = run(&["ip", "-o", "addr", "show", &format!("berthbr{vni}")]);
    assert!(addrs.contains("10.95.0.1/24"), "{addrs}");

    let c1 = Container::run(&uniq("ov-c1"), &["--network", &name, &image.tag]);
    let c2 = Container::run(&uniq("ov-c2"), &["--network", &name, &image.tag]);
    let ip1 = net_ip(&c1, &name);
    let ip2 = net_ip(&c2, &name);
    assert!(
        ip1.starts_with("10.95.0.") && ip2.starts_with("10.95.0."),
        "{ip1} {ip2}"
    );
    assert_ne!(ip1, ip2);
    // The MAC is derived from the address, as Docker's bridge does.
    let mac1 = c1.inspect(&format!(
        "{{{{(index .NetworkSettings.Networks \"{name}\").MacAddress}}}}"
    ));
    let o: Vec<u8> = ip1.split('.').map(|x| x.parse().unwrap()).collect();
    assert_eq!(
        mac1,
        format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    );
    c1.exec(&["ping", "-c", "2", "-W", "3", &ip2]);
    assert!(
        http_from(&[], &c2.name, &ip1).contains("hello"),
        "c2 could not fetch from c1 over the berth network"
    );
    let eth_mtu = docker(&["exec", &c1.name, "cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(eth_mtu, mtu.to_string());
    assert_eq!(reg.children(&format!("/_berth/endpoints/{net}")).len(), 2);
    assert_eq!(
        reg.children(&format!("/_berth/ipam/addrs/{net}")).len(),
        3,
        "gateway + 2"
    );
    let ports = run(&[
        "ip",
        "-o",
        "link",
        "show",
        "master",
        &format!("berthbr{vni}"),
    ]);
    assert_eq!(
        ports.lines().filter(|l| l.contains(": bvh")).count(),
        2,
        "{ports}"
    );

    // Removing the containers releases their addresses, records and links.
    drop(c1);
    drop(c2);
    let released = eventually(Duration::from_secs(10), || {
        (reg.children(&format!("/_berth/endpoints/{net}")).is_empty()
            && reg.children(&format!("/_berth/ipam/addrs/{net}")).len() == 1)
            .then_some(())
    });
    assert!(released.is_some(), "endpoint or address left behind");
    let ports = run(&[
        "ip",
        "-o",
        "link",
        "show",
        "master",
        &format!("berthbr{vni}"),
    ]);
    assert!(!ports.contains(": bvh"), "veth left behind: {ports}");

    // Removing the network removes everything berth made for it.
    docker(&["network", "rm", &name]);
    assert!(reg.node(&format!("/_berth/networks/{net}")).is_none());
    assert!(reg.node(&format!("/_berth/vnis/{vni}")).is_none());
    assert!(reg.node(&format!("/_berth/ipam/addrs/{net}")).is_none());
    let pools = reg.node("/_berth/ipam/pools").unwrap();
    assert!(!pools["value"].as_str().unwrap().contains(net), "{pools}");
    assert!(reg.children("/_berth/netids/host-a").is_empty());
    assert!(ip_link(&format!("berthvx{vni}")).is_none());
    assert!(ip_link(&format!("berthbr{vni}")).is_none());
}

/// A second host: a network namespace with its own dockerd, joined to this one by a veth
/// pair (`<this side> <ip_a>` <-> `<that side> <ip_b>`).
struct HostB {
    ns: String,
    dir: tempfile::TempDir,
    dockerd: Option<Child>,
    host_args: Vec<String>,
}

impl HostB {
    fn start(ns: &str, veth_a: &str, ip_a: &str, ip_b: &str) -> HostB {
        // Leftovers of an interrupted run.
        run_quiet(&["ip", "netns", "del", ns]);
        run_quiet(&["ip", "link", "del", veth_a]);
        let veth_b = format!("{veth_a}b");
        run(&["ip", "netns", "add", ns]);
        run(&[
            "ip", "link", "add", veth_a, "type", "veth", "peer", "name", &veth_b,
        ]);
        run(&["ip", "link", "set", &veth_b, "netns", ns]);
        run(&["ip", "addr", "add", &format!("{ip_a}/24"), "dev", veth_a]);
        run(&["ip", "link", "set", veth_a, "up"]);
        run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "ip",
            "addr",
            "add",
            &format!("{ip_b}/24"),
            "dev",
            &veth_b,
        ]);
        run(&[
            "ip", "netns", "exec", ns, "ip", "link", "set", &veth_b, "up",
        ]);
        run(&["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]);

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("daemon.json"), "{}").unwrap();
        let script = format!(
            "mount --make-rprivate / && mkdir -p /run/docker/plugins && \
             mount --bind {d}/plugins /run/docker/plugins && \
             exec dockerd --config-file {d}/daemon.json --data-root {d}/data --exec-root {d}/x \
             --pidfile {d}/docker.pid -H unix://{d}/docker.sock --bridge=none --iptables=false \
             --ip-masq=false --storage-driver=vfs --cgroup-parent=/berth-test-{ns}"
        );
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        // nsenter, not `ip netns exec`: the latter remounts /sys and hides the cgroups.
        let dockerd = Command::new("unshare")
            .args([
                "-m",
                "nsenter",
                &format!("--net=/run/netns/{ns}"),
                "sh",
                "-c",
                &script,
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let host_args = vec!["-H".to_string(), format!("unix://{d}/docker.sock")];
        let b = HostB {
            ns: ns.to_string(),
            dir,
            dockerd: Some(dockerd),
            host_args,
        };
        let up = eventually(Duration::from_secs(60), || {
            let o = Command::new("docker")
                .args(&b.host_args)
                .args(["info", "--format", "{{.ServerVersion}}"])
                .output()
                .ok()?;
            o.status.success().then_some(())
        });
        assert!(
            up.is_some(),
            "second dockerd did not start: {}",
            std::fs::read_to_string(b.dir.path().join("dockerd.log")).unwrap_or_default()
        );
        b
    }

    fn host(&self) -> Vec<&str> {
        self.host_args.iter().map(String::as_str).collect()
    }

    fn docker(&self, args: &[&str]) -> String {
        let mut all = self.host();
        all.extend_from_slice(args);
        docker(&all)
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    fn docker_sock(&self) -> String {
        self.host_args[1].clone()
    }
}

impl Drop for HostB {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("----- dockerd (host B) -----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let host = self.host();
        let ids = Command::new("docker")
            .args(&host)
            .args(["ps", "-aq"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new("docker")
                .args(&host)
                .args(["rm", "-f", id])
                .output();
        }
        if let Some(mut d) = self.dockerd.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &d.id().to_string()])
                .status();
            let stopped = eventually(Duration::from_secs(20), || d.try_wait().ok().flatten());
            if stopped.is_none() {
                let _ = d.kill();
                let _ = d.wait();
            }
        }
        run_quiet(&["ip", "netns", "del", &self.ns]);
    }
}

#[test]
fn two_hosts_share_a_network_and_reach_each_other_over_vxlan() {
    if !ready() {
        return;
    }
    let (ip_a, ip_b) = ("192.168.213.1", "192.168.213.2");
    let b = HostB::start("berth-test-b", "bt-hosta", ip_a, ip_b);
    let reg = OpenRegistry::start();
    let state = tempfile::tempdir().unwrap();
    let driver = format!("berth-tw{}", std::process::id());
    let _pa = plugin(
        &PluginHost::local(reg.url(), "host-a", Some(ip_a)),
        &driver,
        state.path(),
    );
    let host_b = PluginHost {
        registry: format!("http://{ip_a}:{}", reg.port),
        node: "host-b",
        vtep: Some(ip_b),
        docker_sock: b.docker_sock(),
        socket_dir: b.socket_dir(),
        netns: Some(&b.ns),
    };
    let mut pb = plugin(&host_b, &driver, state.path());
    assert_eq!(reg.node("/_berth/vteps/host-a").unwrap()["value"], ip_a);
    let vtep_b = eventually(Duration::from_secs(10), || {
        reg.node("/_berth/vteps/host-b").map(|n| n["value"].clone())
    });
    assert_eq!(vtep_b.unwrap(), ip_b);

    let image_a = Image::busybox();
    let tag_b = "berth-test/busybox:host-b";
    build_busybox(&b.host(), tag_b);

    // Created once, on A ...
    let name = uniq("ov-two");
    let (subnet, net) = ("10.96.0.0/24", "10.96.0.0-24");
    create_network(&driver, subnet, &name);
    let _guard_a = NetGuard {
        host: vec![],
        name: name.clone(),
    };
    let _guard_b = NetGuard {
        host: b.host_args.clone(),
        name: name.clone(),
    };
    // ... present on B, same name, driver and subnet.
    let on_b = eventually(Duration::from_secs(20), || {
        let o = Command::new("docker")
            .args(b.host())
            .args([
                "network",
                "inspect",
                "-f",
                "{{.Driver}} {{(index .IPAM.Config 0).Subnet}}",
                &name,
            ])
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    });
    assert_eq!(on_b.as_deref(), Some(format!("{driver} {subnet}").as_str()));
    let record = reg.value(&format!("/_berth/networks/{net}")).unwrap();
    let vni = record["vni"].as_u64().unwrap();
    let pools = reg.value("/_berth/ipam/pools").unwrap();
    let hosts: Vec<&str> = pools[net]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["host-a", "host-b"], "both hosts use the pool");

    let a1 = Container::run(&uniq("ov-a1"), &["--network", &name, &image_a.tag]);
    let b1_name = uniq("ov-b1");
    b.docker(&["run", "-d", "--name", &b1_name, "--network", &name, tag_b]);
    let ip_a1 = net_ip(&a1, &name);
    let ip_b1 = b.docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{name}\").IPAddress}}}}"),
        &b1_name,
    ]);
    assert_ne!(ip_a1, ip_b1, "IPAM handed one address to two hosts");

    // A's VXLAN device learns B's endpoint from the registry (and B's learns A's).
    let programmed = eventually(Duration::from_secs(10), || {
        let neigh = run(&["ip", "neigh", "show", "dev", &format!("berthvx{vni}")]);
        neigh.contains(&ip_b1).then_some(neigh)
    });
    assert!(programmed.is_some(), "B's endpoint never programmed on A");
    let fdb = run(&["bridge", "fdb", "show", "dev", &format!("berthvx{vni}")]);
    assert!(fdb.contains(&format!("dst {ip_b}")), "{fdb}");

    // Both directions, ICMP and TCP, across the tunnel.
    a1.exec(&["ping", "-c", "2", "-W", "3", &ip_b1]);
    b.docker(&["exec", &b1_name, "ping", "-c", "2", "-W", "3", &ip_a1]);
    assert!(
        http_from(&[], &a1.name, &ip_b1).contains("hello"),
        "A could not fetch from B over VXLAN"
    );
    assert!(
        http_from(&b.host(), &b1_name, &ip_a1).contains("hello"),
        "B could not fetch from A over VXLAN"
    );

    // B's plugin dies (kill -9) while A starts another container; the restarted plugin
    // catches up from the registry and B reaches the new container.
    pb.kill9();
    let a2 = Container::run(&uniq("ov-a2"), &["--network", &name, &image_a.tag]);
    let ip_a2 = net_ip(&a2, &name);
    pb.spawn();
    let caught_up = eventually(Duration::from_secs(15), || {
        let o = Command::new("docker")
            .args(b.host())
            .args(["exec", &b1_name, "ping", "-c", "1", "-W", "1", &ip_a2])
            .output()
            .ok()?;
        o.status.success().then_some(())
    });
    assert!(
        caught_up.is_some(),
        "B never reached A's new container after its plugin restarted"
    );
    drop(a2);

    // B's container goes: A drops its entries.
    b.docker(&["rm", "-f", &b1_name]);
    let dropped = eventually(Duration::from_secs(10), || {
        let neigh = run(&["ip", "neigh", "show", "dev", &format!("berthvx{vni}")]);
        (!neigh.contains(&ip_b1)).then_some(())
    });
    assert!(dropped.is_some(), "A kept B's removed endpoint");

    // Removed on A: removed on B, and the pool is released once both let go.
    drop(a1);
    docker(&["network", "rm", &name]);
    let gone_b = eventually(Duration::from_secs(20), || {
        let o = docker_out(&[
            &b.host_args[0],
            &b.host_args[1],
            "network",
            "inspect",
            &name,
        ]);
        (!o.status.success()).then_some(())
    });
    assert!(gone_b.is_some(), "network still on B");
    let released = eventually(Duration::from_secs(10), || {
        let pools = reg.value("/_berth/ipam/pools")?;
        (pools.get(net).is_none() && reg.node(&format!("/_berth/ipam/addrs/{net}")).is_none())
            .then_some(())
    });
    assert!(
        released.is_some(),
        "pool not released: {:?}",
        reg.value("/_berth/ipam/pools")
    );
    assert!(reg.node(&format!("/_berth/networks/{net}")).is_none());
}
