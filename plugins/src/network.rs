//! The overlay network model: what the registry holds about berth networks, endpoints and
//! VTEPs, and the pure decisions made from it (validation of `CreateNetwork`, the VNI, the
//! MTU, device names, MACs, and which remote entries each VXLAN device must carry).
//!
//! Nothing here does I/O: [`crate::netdriver`] reads and writes the registry and
//! [`crate::overlay`] programs the kernel.
//!
//! # One network, every host
//!
//! Docker gives a network a different id on every host, so the registry knows a network by
//! its subnet instead: the IPAM pool id (`10.90.0.0-24`), unique across hosts because pools
//! never overlap. The host where `docker network create -d berth` ran writes
//! `/_berth/networks/<net>` (VNI, gateway, MTU, options) and, once Docker shows the name,
//! records the name too; every other plugin then creates the same network in its own Docker
//! with the option `berth.join=<net>`, which makes its `CreateNetwork` (and the IPAM's
//! `RequestPool`) join the existing network instead of refusing an overlapping subnet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::NetworkError;
use crate::protocol::{CreateNetworkRequest, Options};

/// `/_berth/networks/<net>`: one [`NetworkRecord`] per network.
pub const NETWORKS_DIR: &str = "/_berth/networks";
/// `/_berth/endpoints/<net>/<endpoint-id>`: one [`EndpointRecord`] per endpoint.
pub const ENDPOINTS_DIR: &str = "/_berth/endpoints";
/// `/_berth/vteps/<node>`: each host's VXLAN tunnel endpoint address.
pub const VTEPS_DIR: &str = "/_berth/vteps";
/// `/_berth/vnis/<vni>`: claims of VNIs (value: the network), created with `prevExist=false`.
pub const VNIS_DIR: &str = "/_berth/vnis";
/// `/_berth/netids/<node>/<docker-network-id>`: which network a local Docker id is.
pub const NETIDS_DIR: &str = "/_berth/netids";

/// Driver option (`-o`) and IPAM option (`--ipam-opt`) that make a host join an existing
/// network rather than create one; set by the plugin when it replicates a network.
pub const JOIN_OPTION: &str = "berth.join";
/// Driver option choosing the VNI (default: the lowest free one from [`VNI_FIRST`]).
pub const VNI_OPTION: &str = "berth.vni";
/// Docker's driver option for the MTU.
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// Where libnetwork puts the `-o` options in `CreateNetwork`.
pub const GENERIC_OPTIONS: &str = "com.docker.network.generic";

/// VNIs berth hands out by default start here (below are left to hand-made tunnels).
pub const VNI_FIRST: u32 = 4096;
/// The largest 24-bit VNI.
pub const VNI_MAX: u32 = (1 << 24) - 1;
/// IANA's VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
pub const VXLAN_OVERHEAD: u32 = 50;
/// Smallest MTU accepted for a network (IPv4's minimum).
pub const MIN_MTU: u32 = 576;

/// A network as stored at `/_berth/networks/<net>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Docker's name of the network; empty until the creating host has seen it in Docker.
    #[serde(default)]
    pub name: String,
    pub subnet: Ipv4Net,
    /// The gateway address (every host puts it on its bridge).
    pub gateway: Ipv4Addr,
    pub vni: u32,
    pub mtu: u32,
    /// The `-o` options the network was created with (replicated to other hosts).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// The host where it was created.
    pub created_by: String,
}

/// An endpoint as stored at `/_berth/endpoints/<net>/<endpoint-id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub ip: Ipv4Addr,
    pub mac: String,
    /// The VTEP of the host the endpoint lives on.
    pub vtep: Ipv4Addr,
    pub node: String,
}

/// What the kernel must hold on one VXLAN device for one remote endpoint: a permanent
/// neighbour entry (ip -> mac, answered locally by the device's ARP proxy) and a static FDB
/// entry (mac -> remote VTEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Remote {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub vtep: Ipv4Addr,
}

/// The registry key of a network.
pub fn network_key(net: &str) -> String {
    format!("{NETWORKS_DIR}/{net}")
}

/// The registry key of an endpoint.
pub fn endpoint_key(net: &str, endpoint_id: &str) -> String {
    format!("{ENDPOINTS_DIR}/{net}/{endpoint_id}")
}

/// The registry key mapping a local Docker network id to a network.
pub fn netid_key(node: &str, docker_id: &str) -> String {
    format!("{NETIDS_DIR}/{node}/{docker_id}")
}

/// The bridge of a network on every host (at most 15 bytes: `berthbr16777215`).
pub fn bridge_name(vni: u32) -> String {
    format!("berthbr{vni}")
}

/// The VXLAN device of a network.
pub fn vxlan_name(vni: u32) -> String {
    format!("berthvx{vni}")
}

/// The VNI of a device named by [`vxlan_name`].
pub fn vni_of_vxlan(name: &str) -> Option<u32> {
    name.strip_prefix("berthvx")?
        .parse()
        .ok()
        .filter(|v| *v <= VNI_MAX)
}

/// The host and container ends of an endpoint's veth pair (Docker renames the container
/// end to `eth<n>` when it moves it into the sandbox).
pub fn veth_names(endpoint_id: &str) -> (String, String) {
    let short: String = endpoint_id.chars().take(12).collect();
    (format!("bvh{short}"), format!("bvc{short}"))
}

/// Docker's scheme for a MAC derived from an IPv4 address: `02:42:` and the four bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`); refuses multicast addresses.
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetworkError> {
    let bad = || NetworkError::Mac(s.to_string());
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(bad());
    }
    Ok(mac)
}

/// The MTU of a network over an underlay of `underlay_mtu`, or the one asked for with
/// `-o com.docker.network.driver.mtu` if it fits.
pub fn network_mtu(underlay_mtu: u32, requested: Option<u32>) -> Result<u32, NetworkError> {
    let max = underlay_mtu.saturating_sub(VXLAN_OVERHEAD);
    match requested {
        None if max >= MIN_MTU => Ok(max),
        None => Err(NetworkError::Mtu {
            requested: max,
            max,
        }),
        Some(m) if (MIN_MTU..=max).contains(&m) => Ok(m),
        Some(m) => Err(NetworkError::Mtu { requested: m, max }),
    }
}

/// The lowest free VNI from [`VNI_FIRST`], or the requested one when it is free.
pub fn choose_vni(taken: &BTreeSet<u32>, requested: Option<u32>) -> Result<u32, NetworkError> {
    match requested {
        Some(v) if v == 0 || v > VNI_MAX => Err(NetworkError::Vni(v.to_string())),
        Some(v) if taken.contains(&v) => Err(NetworkError::VniTaken(v)),
        Some(v) => Ok(v),
        None => (VNI_FIRST..=VNI_MAX)
            .find(|v| !taken.contains(v))
            .ok_or(NetworkError::NoFreeVni),
    }
}

/// The validated content of a `CreateNetwork` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    /// The registry's name of the network (the IPAM pool id).
    pub net: String,
    pub subnet: Ipv4Net,
    /// The gateway with the subnet's prefix.
    pub gateway: Ipv4Net,
    /// `Some(net)` when this host joins a network created elsewhere.
    pub join: Option<String>,
    pub vni: Option<u32>,
    pub mtu: Option<u32>,
    /// `-o` options other than `berth.join` (kept in the record, replicated).
    pub options: BTreeMap<String, String>,
}

/// Validates a `CreateNetwork`: one IPv4 pool from berth's IPAM, no IPv6, known `berth.*`
/// options with valid values.
pub fn plan_network(req: &CreateNetworkRequest) -> Result<NetworkPlan, NetworkError> {
    if req.network_id.trim().is_empty() {
        return Err(NetworkError::MissingNetworkId);
    }
    if !req.ipv6_data.is_empty() {
        return Err(NetworkError::V6);
    }
    let data = match req.ipv4_data.as_slice() {
        [one] => one,
        [] => return Err(NetworkError::NoPool),
        _ => return Err(NetworkError::ManyPools(req.ipv4_data.len())),
    };
    if data.address_space != crate::ipam::ADDRESS_SPACE {
        return Err(NetworkError::ForeignIpam(data.address_space.clone()));
    }
    let subnet = crate::ipam::parse_subnet(&data.pool)
        .map_err(|_| NetworkError::Subnet(data.pool.clone()))?;
    let gateway: Ipv4Net = if data.gateway.is_empty() {
        return Err(NetworkError::NoGateway);
    } else {
        data.gateway
            .parse()
            .or_else(|_| {
                data.gateway
                    .parse::<Ipv4Addr>()
                    .map(|ip| Ipv4Net::new(ip, subnet.prefix_len()).expect("valid prefix"))
            })
            .map_err(|_| NetworkError::Gateway(data.gateway.clone()))?
    };
    if !subnet.contains(&gateway.addr()) {
        return Err(NetworkError::Gateway(data.gateway.clone()));
    }
    let options = generic_options(&req.options)?;
    let mut plan = NetworkPlan {
        net: crate::ipam::pool_id(&subnet),
        subnet,
        gateway: Ipv4Net::new(gateway.addr(), subnet.prefix_len()).expect("valid prefix"),
        join: None,
        vni: None,
        mtu: None,
        options: BTreeMap::new(),
    };
    for (k, v) in options {
        match k.as_str() {
            JOIN_OPTION => {
                if v != plan.net {
                    return Err(NetworkError::Join {
                        join: v,
                        net: plan.net.clone(),
                    });
                }
                plan.join = Some(v);
                continue;
            }
            VNI_OPTION => {
                let vni = v.trim().parse().map_err(|_| NetworkError::Vni(v.clone()))?;
                if vni == 0 || vni > VNI_MAX {
                    return Err(NetworkError::Vni(v.clone()));
                }
                plan.vni = Some(vni);
            }
            MTU_OPTION => {
                let mtu = v
                    .trim()
                    .parse()
                    .map_err(|_| NetworkError::MtuValue(v.clone()))?;
                plan.mtu = Some(mtu);
            }
            other if other.starts_with("berth.") => {
                return Err(NetworkError::UnknownOption(other.to_string()))
            }
            _ => {}
        }
        plan.options.insert(k, v);
    }
    Ok(plan)
}

/// The `-o` options of a `CreateNetwork` (libnetwork nests them under
/// `com.docker.network.generic`); values must be strings.
pub fn generic_options(options: &Options) -> Result<BTreeMap<String, String>, NetworkError> {
    let Some(generic) = options.get(GENERIC_OPTIONS) else {
        return Ok(BTreeMap::new());
    };
    let Some(map) = generic.as_object() else {
        return Err(NetworkError::Options(generic.to_string()));
    };
    map.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(NetworkError::Options(format!("{k}={other}"))),
        })
        .collect()
}

/// A record created by this plan on this host.
pub fn record_for(plan: &NetworkPlan, vni: u32, mtu: u32, node: &str) -> NetworkRecord {
    NetworkRecord {
        name: String::new(),
        subnet: plan.subnet,
        gateway: plan.gateway.addr(),
        vni,
        mtu,
        options: plan.options.clone(),
        created_by: node.to_string(),
    }
}

/// Checks that a joined network is the one the request describes.
pub fn check_join(plan: &NetworkPlan, record: &NetworkRecord) -> Result<(), NetworkError> {
    if record.subnet != plan.subnet || record.gateway != plan.gateway.addr() {
        return Err(NetworkError::JoinMismatch {
            net: plan.net.clone(),
            detail: format!(
                "registry has subnet {} gateway {}, Docker asked for {} gateway {}",
                record.subnet,
                record.gateway,
                plan.subnet,
                plan.gateway.addr()
            ),
        });
    }
    Ok(())
}

/// The IPv4 address of an endpoint's interface (`10.90.0.2/24`), inside the subnet.
pub fn endpoint_ip(address: &str, subnet: &Ipv4Net) -> Result<Ipv4Addr, NetworkError> {
    let ip = address
        .parse::<Ipv4Net>()
        .map(|n| n.addr())
        .or_else(|_| address.parse::<Ipv4Addr>())
        .map_err(|_| NetworkError::Address(address.to_string()))?;
    if !subnet.contains(&ip) {
        return Err(NetworkError::Address(address.to_string()));
    }
    Ok(ip)
}

/// For every local VXLAN device (by VNI), the remote entries it must carry: the endpoints of
/// that network living on other hosts. `networks` maps network -> VNI; `endpoints` is every
/// endpoint by network. An endpoint with a malformed MAC is skipped (and reported by the
/// caller).
pub fn desired_remotes(
    me: &str,
    local_vnis: &BTreeSet<u32>,
    networks: &BTreeMap<String, u32>,
    endpoints: &BTreeMap<String, Vec<EndpointRecord>>,
) -> BTreeMap<u32, BTreeSet<Remote>> {
    let mut out: BTreeMap<u32, BTreeSet<Remote>> =
        local_vnis.iter().map(|v| (*v, BTreeSet::new())).collect();
    for (net, eps) in endpoints {
        let Some(vni) = networks.get(net) else {
            continue;
        };
        let Some(set) = out.get_mut(vni) else {
            continue;
        };
        for ep in eps.iter().filter(|e| e.node != me) {
            if let Ok(mac) = parse_mac(&ep.mac) {
                set.insert(Remote {
                    ip: ep.ip,
                    mac,
                    vtep: ep.vtep,
                });
            }
        }
    }
    out
}

/// What to add and what to remove to go from `have` to `want`.
pub fn diff<T: Ord + Clone>(have: &BTreeSet<T>, want: &BTreeSet<T>) -> (Vec<T>, Vec<T>) {
    (
        want.difference(have).cloned().collect(),
        have.difference(want).cloned().collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode, IpamData};
    use serde_json::json;

    fn req(options: serde_json::Value, pool: &str, gw: &str, space: &str) -> CreateNetworkRequest {
        CreateNetworkRequest {
            network_id: "abc".into(),
            options: serde_json::from_value(json!({ GENERIC_OPTIONS: options })).unwrap(),
            ipv4_data: vec![IpamData {
                address_space: space.into(),
                pool: pool.into(),
                gateway: gw.into(),
                aux_addresses: BTreeMap::new(),
            }],
            ipv6_data: vec![],
        }
    }

    #[test]
    fn names_fit_the_kernel_limit() {
        assert_eq!(bridge_name(VNI_MAX), "berthbr16777215");
        assert!(bridge_name(VNI_MAX).len() <= 15 && vxlan_name(VNI_MAX).len() <= 15);
        assert_eq!(vni_of_vxlan("berthvx4096"), Some(4096));
        assert_eq!(vni_of_vxlan("berthbr4096"), None);
        assert_eq!(vni_of_vxlan("berthvx99999999"), None);
        let (h, c) = veth_names("0123456789abcdef0123");
        assert_eq!(
            (h.as_str(), c.as_str()),
            ("bvh0123456789ab", "bvc0123456789ab")
        );
    }

    #[test]
    fn macs() {
        let m = mac_for("10.90.0.2".parse().unwrap());
        assert_eq!(format_mac(&m), "02:42:0a:5a:00:02");
        assert_eq!(parse_mac("02:42:0a:5a:00:02").unwrap(), m);
        assert_eq!(parse_mac("02-42-0A-5A-00-02").unwrap(), m);
        for bad in [
            "",
            "02:42:0a:5a:00",
            "zz:42:0a:5a:00:02",
            "01:00:5e:00:00:01",
            "2:42:a:5a:0:2",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mtu_leaves_room_for_the_headers() {
        assert_eq!(network_mtu(1500, None).unwrap(), 1450);
        assert_eq!(network_mtu(1400, None).unwrap(), 1350);
        assert_eq!(network_mtu(1500, Some(1400)).unwrap(), 1400);
        assert!(matches!(
            network_mtu(1500, Some(1451)),
            Err(NetworkError::Mtu { max: 1450, .. })
        ));
        assert!(network_mtu(1500, Some(100)).is_err());
        assert!(network_mtu(600, None).is_err());
    }

    #[test]
    fn vnis() {
        let taken: BTreeSet<u32> = [4096, 4097, 4099].into();
        assert_eq!(choose_vni(&taken, None).unwrap(), 4098);
        assert_eq!(choose_vni(&taken, Some(42)).unwrap(), 42);
        assert!(matches!(
            choose_vni(&taken, Some(4097)),
            Err(NetworkError::VniTaken(4097))
        ));
        assert!(choose_vni(&taken, Some(0)).is_err());
        assert!(choose_vni(&taken, Some(VNI_MAX + 1)).is_err());
    }

    #[test]
    fn create_network_is_validated() {
        let p = plan_network(&req(
            json!({"berth.vni": "77", "foo": "bar"}),
            "10.90.0.0/24",
            "10.90.0.1/24",
            "berth",
        ))
        .unwrap();
        assert_eq!(p.net, "10.90.0.0-24");
        assert_eq!(p.gateway.to_string(), "10.90.0.1/24");
        assert_eq!(p.vni, Some(77));
        assert_eq!(p.join, None);
        assert_eq!(p.options.get("foo").map(String::as_str), Some("bar"));
        let j = plan_network(&req(
            json!({"berth.join": "10.90.0.0-24"}),
            "10.90.0.0/24",
            "10.90.0.1/24",
            "berth",
        ))
        .unwrap();
        assert_eq!(j.join.as_deref(), Some("10.90.0.0-24"));
        assert!(j.options.is_empty(), "berth.join is not replicated");

        let bad = [
            (
                req(json!({}), "10.90.0.0/24", "10.90.0.1/24", "LocalDefault"),
                "ForeignIpam",
            ),
            (req(json!({}), "10.90.0.0/24", "", "berth"), "NoGateway"),
            (
                req(json!({}), "10.90.0.0/24", "10.91.0.1/24", "berth"),
                "Gateway",
            ),
            (
                req(
                    json!({"berth.vni": "x"}),
                    "10.90.0.0/24",
                    "10.90.0.1/24",
                    "berth",
                ),
                "Vni",
            ),
            (
                req(
                    json!({"berth.vni": "16777216"}),
                    "10.90.0.0/24",
                    "10.90.0.1/24",
                    "berth",
                ),
                "Vni",
            ),
            (
                req(
                    json!({"berth.bogus": "1"}),
                    "10.90.0.0/24",
                    "10.90.0.1/24",
                    "berth",
                ),
                "UnknownOption",
            ),
            (
                req(
                    json!({"berth.join": "10.91.0.0-24"}),
                    "10.90.0.0/24",
                    "10.90.0.1/24",
                    "berth",
                ),
                "Join",
            ),
            (
                req(
                    json!({"com.docker.network.driver.mtu": "big"}),
                    "10.90.0.0/24",
                    "10.90.0.1/24",
                    "berth",
                ),
                "MtuValue",
            ),
            (
                req(json!({"x": 1}), "10.90.0.0/24", "10.90.0.1/24", "berth"),
                "Options",
            ),
        ];
        for (r, want) in bad {
            let e = plan_network(&r).unwrap_err();
            assert!(format!("{e:?}").starts_with(want), "{want}: got {e:?}");
        }
        let mut none = req(json!({}), "10.90.0.0/24", "10.90.0.1/24", "berth");
        none.ipv4_data.clear();
        assert!(matches!(plan_network(&none), Err(NetworkError::NoPool)));
        let r: CreateNetworkRequest = decode(br#"{"NetworkID":"n","IPv4Data":[{"AddressSpace":"berth","Pool":"10.90.0.0/24","Gateway":"10.90.0.1/24"}],"IPv6Data":[{"Pool":"fd00::/64"}]}"#).unwrap();
        assert!(matches!(plan_network(&r), Err(NetworkError::V6)));
    }

    #[test]
    fn joins_must_match() {
        let p = plan_network(&req(
            json!({"berth.join": "10.90.0.0-24"}),
            "10.90.0.0/24",
            "10.90.0.1/24",
            "berth",
        ))
        .unwrap();
        let mut rec = record_for(&p, 4096, 1450, "a");
        assert!(check_join(&p, &rec).is_ok());
        rec.gateway = "10.90.0.254".parse().unwrap();
        assert!(check_join(&p, &rec).is_err());
    }

    #[test]
    fn endpoint_addresses() {
        let s: Ipv4Net = "10.90.0.0/24".parse().unwrap();
        assert_eq!(
            endpoint_ip("10.90.0.7/24", &s).unwrap().to_string(),
            "10.90.0.7"
        );
        assert!(endpoint_ip("10.91.0.7/24", &s).is_err());
        assert!(endpoint_ip("", &s).is_err());
    }

    #[test]
    fn remotes_are_the_other_hosts_endpoints_of_local_networks() {
        let ep = |ip: &str, node: &str, vtep: &str| EndpointRecord {
            ip: ip.parse().unwrap(),
            mac: format_mac(&mac_for(ip.parse().unwrap())),
            vtep: vtep.parse().unwrap(),
            node: node.into(),
        };
        let networks: BTreeMap<String, u32> = [
            ("10.90.0.0-24".to_string(), 4096),
            ("10.91.0.0-24".to_string(), 4097),
        ]
        .into();
        let mut endpoints = BTreeMap::new();
        endpoints.insert(
            "10.90.0.0-24".to_string(),
            vec![
                ep("10.90.0.2", "a", "192.168.1.1"),
                ep("10.90.0.3", "b", "192.168.1.2"),
            ],
        );
        endpoints.insert(
            "10.91.0.0-24".to_string(),
            vec![ep("10.91.0.2", "b", "192.168.1.2")],
        );
        let mut bad = ep("10.90.0.9", "b", "192.168.1.2");
        bad.mac = "nonsense".into();
        endpoints.get_mut("10.90.0.0-24").unwrap().push(bad);
        let local: BTreeSet<u32> = [4096].into();
        let want = desired_remotes("a", &local, &networks, &endpoints);
        assert_eq!(want.len(), 1, "only networks present on this host");
        let set = &want[&4096];
        assert_eq!(set.len(), 1);
        let r = set.iter().next().unwrap();
        assert_eq!(r.ip.to_string(), "10.90.0.3");
        assert_eq!(r.vtep.to_string(), "192.168.1.2");

        let have: BTreeSet<u32> = [1, 2].into();
        let wantset: BTreeSet<u32> = [2, 3].into();
        assert_eq!(diff(&have, &wantset), (vec![3], vec![1]));
    }
}
