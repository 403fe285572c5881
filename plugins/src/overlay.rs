//! The kernel side of a berth network, programmed by netlink (rtnetlink), never by running
//! `ip`: per network a bridge `berthbr<vni>` holding the gateway address and a VXLAN device
//! `berthvx<vni>` enslaved to it (learning off, ARP proxy on); per endpoint a veth pair whose
//! host end joins the bridge; per remote endpoint a permanent neighbour entry and a static
//! FDB entry on the VXLAN device.
//!
//! Every call is idempotent (an existing device or entry is fine, a missing one on removal is
//! fine), so a restarted plugin can run the same steps again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{new_connection, Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan};

use crate::error::NetworkError;
use crate::network::{bridge_name, veth_names, vni_of_vxlan, vxlan_name, VXLAN_PORT};

const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ENODEV: i32 = 19;

fn code(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn fail(what: String) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    move |e| {
        let hint = if code(&e) == Some(1) {
            " (needs root or CAP_NET_ADMIN)"
        } else {
            ""
        };
        NetworkError::Netlink(format!("{what}: {e}{hint}"))
    }
}

/// A netlink connection in this process's network namespace.
#[derive(Clone)]
pub struct Overlay {
    handle: Handle,
}

impl Overlay {
    /// Opens the connection (needs a Tokio runtime).
    pub fn open() -> Result<Overlay, NetworkError> {
        let (conn, handle, _) =
            new_connection().map_err(|e| NetworkError::Netlink(format!("opening netlink: {e}")))?;
        tokio::spawn(conn);
        Ok(Overlay { handle })
    }

    /// The index of the link called `name`, if there is one.
    pub async fn index(&self, name: &str) -> Result<Option<u32>, NetworkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(l) => Ok(l.map(|l| l.header.index)),
            Err(e) if code(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(fail(format!("looking up {name}"))(e)),
        }
    }

    async fn must_index(&self, name: &str) -> Result<u32, NetworkError> {
        self.index(name)
            .await?
            .ok_or_else(|| NetworkError::Netlink(format!("{name} vanished after it was created")))
    }

    /// The MTU of the interface that holds `addr` (the underlay a VTEP sends on).
    pub async fn mtu_of_address(&self, addr: Ipv4Addr) -> Result<Option<u32>, NetworkError> {
        let mut addrs = self.handle.address().get().execute();
        let mut index = None;
        while let Some(msg) = addrs
            .try_next()
            .await
            .map_err(fail("listing addresses".into()))?
        {
            let has = msg.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Local(IpAddr::V4(x)) | AddressAttribute::Address(IpAddr::V4(x)) if *x == addr)
            });
            if has {
                index = Some(msg.header.index);
                break;
            }
        }
        let Some(index) = index else {
            return Ok(None);
        };
        let mut links = self.handle.link().get().match_index(index).execute();
        let link = links
            .try_next()
            .await
            .map_err(fail(format!("reading link {index}")))?;
        Ok(link.and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
        }))
    }

    /// Makes the bridge (with `gateway` on it) and the VXLAN device of network `vni` exist
    /// and be up.
    pub async fn ensure_network(
        &self,
        vni: u32,
        vtep: Ipv4Addr,
        gateway: Ipv4Net,
        mtu: u32,
    ) -> Result<(), NetworkError> {
        let br = bridge_name(vni);
        let vx = vxlan_name(vni);
        if self.index(&br).await?.is_none() {
            match self
                .handle
                .link()
                .add(LinkBridge::new(&br).mtu(mtu).build())
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if code(&e) == Some(EEXIST) => {}
                Err(e) => return Err(fail(format!("creating bridge {br}"))(e)),
            }
        }
        let br_index = self.must_index(&br).await?;
        if self.index(&vx).await?.is_none() {
            let link = LinkVxlan::new(&vx, vni)
                .local(vtep)
                .port(VXLAN_PORT)
                .learning(false)
                .proxy(true)
                .mtu(mtu)
                .build();
            match self.handle.link().add(link).execute().await {
                Ok(()) => {}
                Err(e) if code(&e) == Some(EEXIST) => {}
                Err(e) => {
                    return Err(fail(format!(
                        "creating VXLAN device {vx} (VNI {vni}, local {vtep})"
                    ))(e))
                }
            }
        }
        let vx_index = self.must_index(&vx).await?;
        self.handle
            .link()
            .change(
                LinkUnspec::new_with_index(vx_index)
                    .controller(br_index)
                    .mtu(mtu)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(fail(format!("attaching {vx} to {br}")))?;
        self.handle
            .link()
            .change(LinkUnspec::new_with_index(br_index).mtu(mtu).up().build())
            .execute()
            .await
            .map_err(fail(format!("bringing {br} up")))?;
        match self
            .handle
            .address()
            .add(br_index, IpAddr::V4(gateway.addr()), gateway.prefix_len())
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if code(&e) == Some(EEXIST) => {}
            Err(e) => return Err(fail(format!("adding {gateway} to {br}"))(e)),
        }
        crate::firewall::allow_bridge(&br)
            .await
            .map_err(NetworkError::Netlink)
    }

    async fn delete_link(&self, name: &str) -> Result<(), NetworkError> {
        let Some(index) = self.index(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if code(&e) == Some(ENODEV) => Ok(()),
            Err(e) => Err(fail(format!("deleting {name}"))(e)),
        }
    }

    /// Removes network `vni`'s devices (with every entry on them).
    pub async fn remove_network(&self, vni: u32) -> Result<(), NetworkError> {
        self.delete_link(&vxlan_name(vni)).await?;
        self.delete_link(&bridge_name(vni)).await?;
        crate::firewall::forget_bridge(&bridge_name(vni)).await;
        Ok(())
    }

    /// Creates an endpoint's veth pair: the host end joins network `vni`'s bridge, the other
    /// end carries `mac` and is what Docker moves into the container. Returns its name.
    pub async fn add_veth(
        &self,
        vni: u32,
        endpoint_id: &str,
        mac: [u8; 6],
        mtu: u32,
    ) -> Result<String, NetworkError> {
        let (host, peer) = veth_names(endpoint_id);
        let br = bridge_name(vni);
        let br_index = self.index(&br).await?.ok_or_else(|| {
            NetworkError::Netlink(format!(
                "bridge {br} is missing: is the network still there?"
            ))
        })?;
        // A leftover pair from an interrupted Join is replaced.
        self.delete_link(&host).await?;
        self.handle
            .link()
            .add(LinkVeth::new(&host, &peer).mtu(mtu).build())
            .execute()
            .await
            .map_err(fail(format!("creating veth pair {host}/{peer}")))?;
        let peer_index = self.must_index(&peer).await?;
        self.handle
            .link()
            .change(
                LinkUnspec::new_with_index(peer_index)
                    .address(mac.to_vec())
                    .mtu(mtu)
                    .build(),
            )
            .execute()
            .await
            .map_err(fail(format!("setting the MAC of {peer}")))?;
        let host_index = self.must_index(&host).await?;
        self.handle
            .link()
            .change(
                LinkUnspec::new_with_index(host_index)
                    .controller(br_index)
                    .mtu(mtu)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(fail(format!("attaching {host} to {br}")))?;
        Ok(peer)
    }

    /// Deletes an endpoint's veth pair (deleting one end deletes both).
    pub async fn remove_veth(&self, endpoint_id: &str) -> Result<(), NetworkError> {
        let (host, _) = veth_names(endpoint_id);
        self.delete_link(&host).await
    }

    /// The berth VXLAN devices present here: VNI -> interface index.
    pub async fn local_vnis(&self) -> Result<BTreeMap<u32, u32>, NetworkError> {
        let mut out = BTreeMap::new();
        let mut links = self.handle.link().get().execute();
        while let Some(l) = links
            .try_next()
            .await
            .map_err(fail("listing links".into()))?
        {
            for a in &l.attributes {
                if let LinkAttribute::IfName(name) = a {
                    if let Some(vni) = vni_of_vxlan(name) {
                        out.insert(vni, l.header.index);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn dump(&self, family: AddressFamily) -> Result<Vec<NeighbourMessage>, NetworkError> {
        let mut req = self.handle.neighbours().get();
        req.message_mut().header.family = family;
        let mut stream = req.execute();
        let mut out = Vec::new();
        while let Some(m) = stream
            .try_next()
            .await
            .map_err(fail("listing neighbours".into()))?
        {
            out.push(m);
        }
        Ok(out)
    }

    /// Permanent neighbour entries (ip, mac) on interface `index`.
    pub async fn neighbours(
        &self,
        index: u32,
    ) -> Result<BTreeSet<(Ipv4Addr, [u8; 6])>, NetworkError> {
        Ok(self
            .dump(AddressFamily::Inet)
            .await?
            .iter()
            .filter(|m| m.header.ifindex == index && m.header.state == NeighbourState::Permanent)
            .filter_map(|m| Some((dst(m)?, lladdr(m)?)))
            .collect())
    }

    /// Static FDB entries with a remote destination (mac, vtep) on VXLAN device `index`.
    pub async fn fdb(&self, index: u32) -> Result<BTreeSet<([u8; 6], Ipv4Addr)>, NetworkError> {
        Ok(self
            .dump(AddressFamily::Bridge)
            .await?
            .iter()
            .filter(|m| m.header.ifindex == index)
            .filter_map(|m| Some((lladdr(m)?, dst(m)?)))
            .collect())
    }

    /// `ip neigh replace IP lladdr MAC dev <index> nud permanent`.
    pub async fn add_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> Result<(), NetworkError> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(fail(format!("adding neighbour {ip}")))
    }

    /// `bridge fdb replace MAC dev <index> dst VTEP self permanent`.
    pub async fn add_fdb(
        &self,
        index: u32,
        mac: [u8; 6],
        vtep: Ipv4Addr,
    ) -> Result<(), NetworkError> {
        self.handle
            .neighbours()
            .add_bridge(index, &mac)
            .destination(IpAddr::V4(vtep))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(fail(format!("adding FDB entry for {vtep}")))
    }

    /// Removes a neighbour entry (absent is fine).
    pub async fn del_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> Result<(), NetworkError> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.header.state = NeighbourState::Permanent;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.del(m, format!("neighbour {ip}")).await
    }

    /// Removes an FDB entry (absent is fine).
    pub async fn del_fdb(
        &self,
        index: u32,
        mac: [u8; 6],
        vtep: Ipv4Addr,
    ) -> Result<(), NetworkError> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                vtep,
            )));
        self.del(m, format!("FDB entry for {vtep}")).await
    }

    async fn del(&self, m: NeighbourMessage, what: String) -> Result<(), NetworkError> {
        match self.handle.neighbours().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(code(&e), Some(ENOENT) | Some(ENODEV)) => Ok(()),
            Err(e) => Err(fail(format!("removing {what}"))(e)),
        }
    }
}

fn dst(m: &NeighbourMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

fn lladdr(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => b.as_slice().try_into().ok(),
        _ => None,
    })
}
