//! VIPs outside 127.0.0.0/8 become /32 addresses on a dummy interface (`berth0` by default),
//! set through netlink (rtnetlink), so the host owns them: the proxy can listen on them and
//! containers reach them through their default route. Loopback VIPs need none of this.
//! A kernel without the dummy driver gets an empty bridge instead (its addresses are just as
//! local).

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::{new_connection, Handle, LinkBridge, LinkDummy, LinkUnspec};

const EEXIST: i32 = 17;
const EOPNOTSUPP: i32 = 95;

/// The VIP interface.
pub struct VipNet {
    handle: Handle,
    name: String,
    index: u32,
}

fn text(e: rtnetlink::Error) -> String {
    match &e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code() == -1 => {
            format!("{e} (needs root or CAP_NET_ADMIN)")
        }
        _ => e.to_string(),
    }
}

impl VipNet {
    /// Opens a netlink connection and makes sure the dummy interface `name` exists and is up.
    pub async fn open(name: &str) -> Result<VipNet, String> {
        let (conn, handle, _) = new_connection().map_err(|e| format!("netlink: {e}"))?;
        tokio::spawn(conn);
        let find = |handle: Handle, name: String| async move {
            let mut links = handle.link().get().match_name(name).execute();
            match links.try_next().await {
                Ok(Some(l)) => Ok(Some(l.header.index)),
                Ok(None) => Ok(None),
                // "No such device" comes back as an error.
                Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -19 => Ok(None),
                Err(e) => Err(text(e)),
            }
        };
        let index = match find(handle.clone(), name.to_string()).await? {
            Some(i) => i,
            None => {
                let mut created = handle
                    .link()
                    .add(LinkDummy::new(name).up().build())
                    .execute()
                    .await;
                if matches!(&created, Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -EOPNOTSUPP)
                {
                    tracing::info!(
                        interface = name,
                        "no dummy driver in this kernel; using an empty bridge"
                    );
                    created = handle
                        .link()
                        .add(LinkBridge::new(name).up().build())
                        .execute()
                        .await;
                }
                match created {
                    Ok(()) => tracing::info!(interface = name, "created the VIP interface"),
                    Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -EEXIST => {}
                    Err(e) => return Err(format!("cannot create interface {name}: {}", text(e))),
                }
                find(handle.clone(), name.to_string())
                    .await?
                    .ok_or_else(|| format!("interface {name} vanished after it was created"))?
            }
        };
        handle
            .link()
            .change(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| format!("cannot bring {name} up: {}", text(e)))?;
        Ok(VipNet {
            handle,
            name: name.to_string(),
            index,
        })
    }

    /// Adds `ip/32` (already present is fine).
    pub async fn add(&self, ip: Ipv4Addr) -> Result<(), String> {
        match self
            .handle
            .address()
            .add(self.index, IpAddr::V4(ip), 32)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -EEXIST => Ok(()),
            Err(e) => Err(format!("cannot add {ip}/32 to {}: {}", self.name, text(e))),
        }
    }

    /// The IPv4 addresses on the interface.
    pub async fn addresses(&self) -> Result<Vec<Ipv4Addr>, String> {
        let mut out = Vec::new();
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute();
        while let Some(msg) = addrs.try_next().await.map_err(text)? {
            for a in &msg.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = a {
                    out.push(*ip);
                }
            }
        }
        Ok(out)
    }

    /// Removes `ip` from the interface if it is there.
    pub async fn remove(&self, ip: Ipv4Addr) -> Result<(), String> {
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute();
        while let Some(msg) = addrs.try_next().await.map_err(text)? {
            let matches = msg.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Local(IpAddr::V4(x)) | AddressAttribute::Address(IpAddr::V4(x)) if *x == ip)
            });
            if matches {
                self.handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(|e| format!("cannot remove {ip} from {}: {}", self.name, text(e)))?;
                return Ok(());
            }
        }
        Ok(())
    }
}
