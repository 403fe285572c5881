//! IPAM: address pools and addresses allocated in the registry by compare-and-swap.
//!
//! Key schema (see the crate doc):
//!
//! - `/_berth/ipam/pools`: one JSON object `{"<pool-id>": Pool, ...}` holding every pool.
//!   etcd v2 has no multi-key transactions, and "no two pools overlap" is a property of the
//!   whole set, so the set is one value replaced with `prevIndex` (created with
//!   `prevExist=false`): a writer that raced another re-reads and checks again.
//! - `/_berth/ipam/addrs/<pool-id>/<ip>`: one key per allocated address, created with
//!   `prevExist=false`, so whichever host creates it first owns the address and the other
//!   moves on. Deleting it releases the address.
//!
//! The decisions (which subnet, which address next, is this address valid) are pure
//! functions below; [`Ipam`] does the registry I/O. Each [`Ipam`] keeps a per-pool view of
//! the addresses known taken, so concurrent requests on one host try distinct addresses and
//! only requests racing another host meet conflicts. The first conflict against a view makes
//! the next request re-read the pool (a host far behind learns every address another host
//! took in one read); when its view says the pool is full it re-reads the registry once
//! before answering "exhausted".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use ipnet::Ipv4Net;
use registry::client::{codes, Client, ClientError, DeleteOptions, GetOptions, SetOptions};
use serde::{Deserialize, Serialize};

use crate::error::IpamError;
use crate::protocol::{
    AddressSpaces, IpamCapabilities, ReleaseAddressRequest, ReleasePoolRequest,
    RequestAddressRequest, RequestAddressResponse, RequestPoolRequest, RequestPoolResponse,
    GATEWAY_TYPE, REQUEST_ADDRESS_TYPE,
};

/// The pool table.
pub const POOLS_KEY: &str = "/_berth/ipam/pools";
/// Directory of address reservations, one subdirectory per pool.
pub const ADDRS_DIR: &str = "/_berth/ipam/addrs";
/// The one address space berth serves (local and global default).
pub const ADDRESS_SPACE: &str = "berth";

/// Attempts before a request gives up on a contended registry.
const MAX_ATTEMPTS: usize = 256;

/// One pool as stored in the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub subnet: Ipv4Net,
    /// `--ip-range`: dynamic addresses come from here when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_pool: Option<Ipv4Net>,
    /// The gateway berth hands out when Docker asks for one without an address: the
    /// subnet's first host address, which dynamic allocation never uses.
    pub gateway: Ipv4Addr,
    /// Random id of this incarnation of the pool (a released and re-requested subnet gets
    /// a new one), so per-host caches never mix two incarnations.
    pub uid: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Hosts whose Docker holds a network on this pool (a berth overlay network is one pool
    /// shared by every host): the pool is released when the last one releases it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub hosts: BTreeSet<String>,
}

/// `--ipam-opt berth.join=<pool-id>`: use the existing pool (a network created on another
/// host) instead of refusing its subnet as overlapping.
pub const JOIN_OPTION: &str = "berth.join";

/// Every pool by id.
pub type PoolTable = BTreeMap<String, Pool>;

// ---------------------------------------------------------------------------
// Pure decisions
// ---------------------------------------------------------------------------

/// The pool id of a subnet: `10.90.0.0-24` (a key segment, no slash).
pub fn pool_id(subnet: &Ipv4Net) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len())
}

/// The registry key of an address reservation.
pub fn addr_key(pool_id: &str, ip: Ipv4Addr) -> String {
    format!("{ADDRS_DIR}/{pool_id}/{ip}")
}

/// Parses a subnet: IPv4 CIDR with room for hosts (/30 or larger); host bits are cleared.
pub fn parse_subnet(s: &str) -> Result<Ipv4Net, IpamError> {
    let net: Ipv4Net = s
        .trim()
        .parse()
        .map_err(|_| IpamError::Subnet(s.to_string()))?;
    if net.prefix_len() > 30 {
        return Err(IpamError::Subnet(s.to_string()));
    }
    Ok(net.trunc())
}

/// The address space is berth's (or left to the default).
pub fn check_address_space(space: &str) -> Result<(), IpamError> {
    match space {
        "" | ADDRESS_SPACE => Ok(()),
        other => Err(IpamError::AddressSpace(other.to_string())),
    }
}

/// The first existing pool overlapping `subnet`.
pub fn find_overlap<'a>(table: &'a PoolTable, subnet: &Ipv4Net) -> Option<(&'a String, &'a Pool)> {
    table
        .iter()
        .find(|(_, p)| p.subnet.contains(subnet) || subnet.contains(&p.subnet))
}

/// The first `/size` subnet of `range` that overlaps no pool.
pub fn pick_default(table: &PoolTable, range: &Ipv4Net, size: u8) -> Option<Ipv4Net> {
    range
        .subnets(size)
        .ok()?
        .find(|s| find_overlap(table, s).is_none())
}

/// Validates a `RequestPool` and decides the pool to add (without its uid).
pub fn plan_pool(
    table: &PoolTable,
    req: &RequestPoolRequest,
    default_range: &Ipv4Net,
    default_size: u8,
) -> Result<Pool, IpamError> {
    check_address_space(&req.address_space)?;
    if req.v6 {
        return Err(IpamError::V6);
    }
    let subnet = if req.pool.is_empty() {
        if !req.sub_pool.is_empty() {
            return Err(IpamError::SubPool {
                sub: req.sub_pool.clone(),
                pool: "(none: --ip-range needs --subnet)".into(),
            });
        }
        pick_default(table, default_range, default_size).ok_or(IpamError::NoFreePool {
            range: default_range.to_string(),
            size: default_size,
        })?
    } else {
        parse_subnet(&req.pool)?
    };
    let sub_pool = if req.sub_pool.is_empty() {
        None
    } else {
        let sub: Ipv4Net = req
            .sub_pool
            .trim()
            .parse()
            .map_err(|_| IpamError::SubPool {
                sub: req.sub_pool.clone(),
                pool: subnet.to_string(),
            })?;
        let sub = sub.trunc();
        if !subnet.contains(&sub) {
            return Err(IpamError::SubPool {
                sub: req.sub_pool.clone(),
                pool: subnet.to_string(),
            });
        }
        Some(sub)
    };
    if let Some((id, p)) = find_overlap(table, &subnet) {
        return Err(IpamError::Overlap {
            subnet: subnet.to_string(),
            existing: p.subnet.to_string(),
            pool_id: id.clone(),
        });
    }
    Ok(Pool {
        subnet,
        sub_pool,
        gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
        uid: String::new(),
        options: req.options.clone(),
        hosts: BTreeSet::new(),
    })
}

/// The inclusive range dynamic addresses come from: the sub pool's (or subnet's) hosts,
/// without the subnet's network and broadcast addresses and without the gateway.
pub fn dynamic_range(pool: &Pool) -> (u32, u32) {
    let net = u32::from(pool.subnet.network());
    let bcast = u32::from(pool.subnet.broadcast());
    let (lo, hi) = match pool.sub_pool {
        Some(s) => (u32::from(s.network()), u32::from(s.broadcast())),
        None => (net, bcast),
    };
    (lo.max(net + 1), hi.min(bcast - 1))
}

/// The next free address at or after `cursor` (wrapping around the range), skipping
/// `taken` and the gateway.
pub fn next_candidate(
    range: (u32, u32),
    gateway: u32,
    taken: &BTreeSet<u32>,
    cursor: u32,
) -> Option<u32> {
    let (lo, hi) = range;
    if lo > hi {
        return None;
    }
    let start = if cursor < lo || cursor > hi {
        lo
    } else {
        cursor
    };
    let free = |ip: &u32| *ip != gateway && !taken.contains(ip);
    (start..=hi).find(free).or_else(|| (lo..start).find(free))
}

/// Validates a specific address asked for in `pool`.
pub fn check_requested(pool: &Pool, address: &str) -> Result<Ipv4Addr, IpamError> {
    // Docker sends a bare address; accept the CIDR form too.
    let bare = address.trim().split('/').next().unwrap_or_default();
    let ip: Ipv4Addr = bare
        .parse()
        .map_err(|_| IpamError::Address(address.to_string()))?;
    if !pool.subnet.contains(&ip) {
        return Err(IpamError::OutOfRange {
            addr: ip.to_string(),
            pool: pool.subnet.to_string(),
        });
    }
    if ip == pool.subnet.network() || ip == pool.subnet.broadcast() {
        return Err(IpamError::Reserved {
            addr: ip.to_string(),
            pool: pool.subnet.to_string(),
        });
    }
    Ok(ip)
}

/// Parses the stored table.
pub fn parse_table(value: &str) -> Result<PoolTable, IpamError> {
    serde_json::from_str(value).map_err(|e| IpamError::Corrupt {
        key: POOLS_KEY.into(),
        detail: e.to_string(),
    })
}

// ---------------------------------------------------------------------------
// Registry I/O
// ---------------------------------------------------------------------------

#[derive(Default)]
struct LocalPool {
    /// Addresses known allocated (by anyone).
    taken: BTreeSet<u32>,
    /// Addresses this host is trying right now.
    inflight: BTreeSet<u32>,
    cursor: u32,
    loaded: bool,
    /// Bumped each time `taken` is merged with a fresh read of the registry.
    generation: u64,
    /// A claim lost a race against a view of this generation: another host is allocating,
    /// so the next request re-reads the registry instead of finding its claims one by one.
    stale: bool,
}

/// The IPAM driver.
pub struct Ipam {
    client: Client,
    default_range: Ipv4Net,
    default_size: u8,
    /// This host (pool users are counted by host).
    node: String,
    local: Mutex<HashMap<String, LocalPool>>,
}

fn is_cas_conflict(e: &ClientError) -> bool {
    matches!(
        e.etcd_code(),
        Some(codes::TEST_FAILED) | Some(codes::NODE_EXIST)
    )
}

impl Ipam {
    pub fn new(client: Client, default_range: Ipv4Net, default_size: u8, node: String) -> Ipam {
        Ipam {
            client,
            default_range,
            default_size,
            node,
            local: Mutex::new(HashMap::new()),
        }
    }

    pub fn capabilities(&self) -> IpamCapabilities {
        IpamCapabilities::default()
    }

    pub fn address_spaces(&self) -> AddressSpaces {
        AddressSpaces {
            local_default_address_space: ADDRESS_SPACE.into(),
            global_default_address_space: ADDRESS_SPACE.into(),
        }
    }

    /// The pool table and the index to compare-and-swap against (`None`: no table yet).
    pub async fn load_table(&self) -> Result<(PoolTable, Option<u64>), IpamError> {
        match self
            .client
            .get(
                POOLS_KEY,
                GetOptions {
                    quorum: true,
                    ..Default::default()
                },
            )
            .await
        {
            Ok(r) => Ok((
                parse_table(r.node.value.as_deref().unwrap_or("{}"))?,
                Some(r.node.modified_index),
            )),
            Err(e) if e.is_key_not_found() => Ok((PoolTable::new(), None)),
            Err(e) => Err(e.into()),
        }
    }

    async fn store_table(&self, table: &PoolTable, index: Option<u64>) -> Result<(), ClientError> {
        let value = serde_json::to_string(table).expect("pool table serializes");
        let opts = match index {
            Some(i) => SetOptions {
                prev_index: Some(i),
                ..Default::default()
            },
            None => SetOptions {
                prev_exist: Some(false),
                ..Default::default()
            },
        };
        self.client.set(POOLS_KEY, &value, opts).await.map(|_| ())
    }

    /// `RequestPool`: adds a pool that overlaps no other, by compare-and-swap on the table.
    pub async fn request_pool(
        &self,
        req: &RequestPoolRequest,
    ) -> Result<RequestPoolResponse, IpamError> {
        if let Some(join) = req.options.get(JOIN_OPTION) {
            return self.join_pool(req, join).await;
        }
        for _ in 0..MAX_ATTEMPTS {
            let (mut table, index) = self.load_table().await?;
            let mut pool = plan_pool(&table, req, &self.default_range, self.default_size)?;
            pool.uid = format!("{:016x}", rand::random::<u64>());
            pool.hosts.insert(self.node.clone());
            let id = pool_id(&pool.subnet);
            let subnet = pool.subnet;
            table.insert(id.clone(), pool);
            match self.store_table(&table, index).await {
                Ok(()) => {
                    tracing::info!(pool = %id, %subnet, "pool allocated");
                    return Ok(RequestPoolResponse {
                        pool_id: id,
                        pool: subnet.to_string(),
                        data: BTreeMap::new(),
                    });
                }
                Err(e) if is_cas_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contended("pool table".into()))
    }

    /// `RequestPool` with `berth.join`: this host starts using a pool another host made.
    async fn join_pool(
        &self,
        req: &RequestPoolRequest,
        join: &str,
    ) -> Result<RequestPoolResponse, IpamError> {
        check_address_space(&req.address_space)?;
        for _ in 0..MAX_ATTEMPTS {
            let (mut table, index) = self.load_table().await?;
            let Some(pool) = table.get_mut(join) else {
                return Err(IpamError::UnknownPool(join.to_string()));
            };
            if !req.pool.is_empty() && parse_subnet(&req.pool)? != pool.subnet {
                return Err(IpamError::JoinMismatch {
                    pool_id: join.to_string(),
                    subnet: req.pool.clone(),
                });
            }
            let subnet = pool.subnet;
            if !pool.hosts.insert(self.node.clone()) {
                // Already counted (Docker asked again).
            } else {
                match self.store_table(&table, index).await {
                    Ok(()) => {}
                    Err(e) if is_cas_conflict(&e) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            tracing::info!(pool = %join, %subnet, "pool joined");
            return Ok(RequestPoolResponse {
                pool_id: join.to_string(),
                pool: subnet.to_string(),
                data: BTreeMap::new(),
            });
        }
        Err(IpamError::Contended("pool table".into()))
    }

    /// `ReleasePool`: this host stops using the pool; the last user removes it from the
    /// table, then its address reservations.
    pub async fn release_pool(&self, req: &ReleasePoolRequest) -> Result<(), IpamError> {
        if req.pool_id.is_empty() {
            return Err(IpamError::MissingPoolId);
        }
        for _ in 0..MAX_ATTEMPTS {
            let (mut table, index) = self.load_table().await?;
            let Some(pool) = table.get_mut(&req.pool_id) else {
                return Err(IpamError::UnknownPool(req.pool_id.clone()));
            };
            pool.hosts.remove(&self.node);
            if !pool.hosts.is_empty() {
                match self.store_table(&table, index).await {
                    Ok(()) => {
                        tracing::info!(pool = %req.pool_id, "pool left (other hosts still use it)");
                        return Ok(());
                    }
                    Err(e) if is_cas_conflict(&e) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let pool = table.remove(&req.pool_id).expect("present");
            match self.store_table(&table, index).await {
                Ok(()) => {
                    self.local.lock().expect("ipam lock").remove(&pool.uid);
                    let dir = format!("{ADDRS_DIR}/{}", req.pool_id);
                    let opts = DeleteOptions {
                        recursive: true,
                        dir: true,
                        ..Default::default()
                    };
                    match self.client.delete(&dir, opts).await {
                        Ok(_) => {}
                        Err(e) if e.is_key_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                    tracing::info!(pool = %req.pool_id, "pool released");
                    return Ok(());
                }
                Err(e) if is_cas_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contended("pool table".into()))
    }

    async fn pool(&self, pool_id: &str) -> Result<Pool, IpamError> {
        if pool_id.is_empty() {
            return Err(IpamError::MissingPoolId);
        }
        let (table, _) = self.load_table().await?;
        table
            .get(pool_id)
            .cloned()
            .ok_or_else(|| IpamError::UnknownPool(pool_id.to_string()))
    }

    /// Addresses reserved in the registry for a pool.
    async fn list_taken(&self, pool_id: &str) -> Result<BTreeSet<u32>, IpamError> {
        let quorum = GetOptions {
            quorum: true,
            ..Default::default()
        };
        Ok(self
            .client
            .children(&format!("{ADDRS_DIR}/{pool_id}"), quorum)
            .await?
            .iter()
            .filter_map(|n| n.key.rsplit('/').next()?.parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .collect())
    }

    async fn claim(&self, pool_id: &str, ip: Ipv4Addr, gateway: bool) -> Result<(), ClientError> {
        let value = serde_json::json!({ "gateway": gateway }).to_string();
        self.client
            .set(
                &addr_key(pool_id, ip),
                &value,
                SetOptions {
                    prev_exist: Some(false),
                    ..Default::default()
                },
            )
            .await
            .map(|_| ())
    }

    fn note(&self, uid: &str, f: impl FnOnce(&mut LocalPool)) {
        f(self
            .local
            .lock()
            .expect("ipam lock")
            .entry(uid.to_string())
            .or_default())
    }

    /// `RequestAddress`: a specific address, the gateway, or the next free one.
    pub async fn request_address(
        &self,
        req: &RequestAddressRequest,
    ) -> Result<RequestAddressResponse, IpamError> {
        let pool = self.pool(&req.pool_id).await?;
        let prefix = pool.subnet.prefix_len();
        let is_gateway =
            req.options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_TYPE);
        let specific = if !req.address.trim().is_empty() {
            Some(check_requested(&pool, &req.address)?)
        } else if is_gateway {
            Some(pool.gateway)
        } else {
            None
        };
        if let Some(ip) = specific {
            return match self.claim(&req.pool_id, ip, is_gateway).await {
                Ok(()) => {
                    self.note(&pool.uid, |l| {
                        l.taken.insert(u32::from(ip));
                    });
                    Ok(RequestAddressResponse {
                        address: format!("{ip}/{prefix}"),
                        data: BTreeMap::new(),
                    })
                }
                Err(e) if e.etcd_code() == Some(codes::NODE_EXIST) => {
                    // One gateway serves every host of a shared pool.
                    if is_gateway && self.is_gateway_reservation(&req.pool_id, ip).await? {
                        return Ok(RequestAddressResponse {
                            address: format!("{ip}/{prefix}"),
                            data: BTreeMap::new(),
                        });
                    }
                    Err(IpamError::InUse {
                        addr: ip.to_string(),
                        pool: pool.subnet.to_string(),
                    })
                }
                Err(e) => Err(e.into()),
            };
        }
        let range = dynamic_range(&pool);
        let gateway = u32::from(pool.gateway);
        let mut refreshed = false;
        for _ in 0..MAX_ATTEMPTS {
            let (loaded, stale) = {
                let mut map = self.local.lock().expect("ipam lock");
                let l = map.entry(pool.uid.clone()).or_default();
                // One request takes the re-read on; the others go on with the view they have.
                (l.loaded, std::mem::take(&mut l.stale))
            };
            if !loaded || stale {
                let listed = self.list_taken(&req.pool_id).await?;
                self.note(&pool.uid, |l| {
                    // Merge, never replace: claims of this host that finished while the read
                    // was under way are not in `listed`.
                    l.taken.extend(listed);
                    l.loaded = true;
                    l.generation += 1;
                });
                refreshed |= !loaded;
            }
            let candidate = {
                let mut map = self.local.lock().expect("ipam lock");
                let l = map.entry(pool.uid.clone()).or_default();
                let busy: BTreeSet<u32> = l.taken.union(&l.inflight).copied().collect();
                let c = next_candidate(range, gateway, &busy, l.cursor);
                if let Some(c) = c {
                    l.inflight.insert(c);
                    l.cursor = c.wrapping_add(1);
                }
                c.map(|c| (c, l.generation))
            };
            let Some((c, generation)) = candidate else {
                if refreshed {
                    return Err(IpamError::Exhausted(pool.subnet.to_string()));
                }
                // Our view may be stale (another host released addresses): re-read once.
                let listed = self.list_taken(&req.pool_id).await?;
                self.note(&pool.uid, |l| {
                    l.taken = listed;
                    l.generation += 1;
                });
                refreshed = true;
                continue;
            };
            let ip = Ipv4Addr::from(c);
            let result = self.claim(&req.pool_id, ip, false).await;
            let mut map = self.local.lock().expect("ipam lock");
            let l = map.entry(pool.uid.clone()).or_default();
            l.inflight.remove(&c);
            match result {
                Ok(()) => {
                    l.taken.insert(c);
                    return Ok(RequestAddressResponse {
                        address: format!("{ip}/{prefix}"),
                        data: BTreeMap::new(),
                    });
                }
                Err(e) if e.etcd_code() == Some(codes::NODE_EXIST) => {
                    l.taken.insert(c);
                    // Lost to another host: unless a re-read has happened since this
                    // candidate was chosen, ask for one (it learns all of that host's
                    // claims at once, where trying addresses would find them one at a time).
                    if l.generation == generation {
                        l.stale = true;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contended(format!("pool {}", pool.subnet)))
    }

    async fn is_gateway_reservation(&self, pool_id: &str, ip: Ipv4Addr) -> Result<bool, IpamError> {
        match self
            .client
            .get(
                &addr_key(pool_id, ip),
                GetOptions {
                    quorum: true,
                    ..Default::default()
                },
            )
            .await
        {
            Ok(r) => Ok(serde_json::from_str::<serde_json::Value>(
                r.node.value.as_deref().unwrap_or(""),
            )
            .ok()
            .and_then(|v| v.get("gateway")?.as_bool())
            .unwrap_or(false)),
            Err(e) if e.is_key_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// `ReleaseAddress`: deletes the reservation. A gateway's reservation stays while other
    /// hosts share the pool (it goes with the pool).
    pub async fn release_address(&self, req: &ReleaseAddressRequest) -> Result<(), IpamError> {
        let pool = self.pool(&req.pool_id).await?;
        let ip = check_requested(&pool, &req.address)?;
        if pool.hosts.iter().any(|h| *h != self.node)
            && self.is_gateway_reservation(&req.pool_id, ip).await?
        {
            return Ok(());
        }
        match self
            .client
            .delete(&addr_key(&req.pool_id, ip), DeleteOptions::default())
            .await
        {
            Ok(_) => {
                self.note(&pool.uid, |l| {
                    l.taken.remove(&u32::from(ip));
                });
                Ok(())
            }
            Err(e) if e.is_key_not_found() => Err(IpamError::NotAllocated {
                addr: ip.to_string(),
                pool: pool.subnet.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(subnet: &str) -> Pool {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        Pool {
            subnet,
            sub_pool: None,
            gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
            uid: "u".into(),
            options: BTreeMap::new(),
            hosts: BTreeSet::new(),
        }
    }

    fn req(pool: &str) -> RequestPoolRequest {
        RequestPoolRequest {
            pool: pool.into(),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn subnets() {
        assert_eq!(
            parse_subnet("10.90.0.0/24").unwrap().to_string(),
            "10.90.0.0/24"
        );
        assert_eq!(
            parse_subnet("10.90.0.7/24").unwrap().to_string(),
            "10.90.0.0/24"
        );
        assert!(parse_subnet("10.90.0.0/31").is_err());
        assert!(parse_subnet("10.90.0.0").is_err());
        assert!(parse_subnet("fd00::/64").is_err());
        assert_eq!(pool_id(&"10.90.0.0/24".parse().unwrap()), "10.90.0.0-24");
        assert_eq!(
            addr_key("10.90.0.0-24", "10.90.0.5".parse().unwrap()),
            "/_berth/ipam/addrs/10.90.0.0-24/10.90.0.5"
        );
    }

    #[test]
    fn overlaps_are_refused() {
        let mut table = PoolTable::new();
        table.insert("10.90.0.0-24".into(), pool("10.90.0.0/24"));
        let range: Ipv4Net = "10.90.0.0/16".parse().unwrap();
        for s in [
            "10.90.0.0/24",
            "10.90.0.128/25",
            "10.90.0.0/16",
            "10.0.0.0/8",
        ] {
            match plan_pool(&table, &req(s), &range, 24) {
                Err(IpamError::Overlap { existing, .. }) => assert_eq!(existing, "10.90.0.0/24"),
                other => panic!("{s}: {other:?}"),
            }
        }
        let p = plan_pool(&table, &req("10.90.1.0/24"), &range, 24).unwrap();
        assert_eq!(p.gateway.to_string(), "10.90.1.1");
        // No subnet: the first free /24 of the default range.
        let p = plan_pool(&table, &req(""), &range, 24).unwrap();
        assert_eq!(p.subnet.to_string(), "10.90.1.0/24");
        let full: Ipv4Net = "10.90.0.0/24".parse().unwrap();
        assert!(matches!(
            plan_pool(&table, &req(""), &full, 24),
            Err(IpamError::NoFreePool { .. })
        ));
    }

    #[test]
    fn pool_requests_are_validated() {
        let table = PoolTable::new();
        let range: Ipv4Net = "10.90.0.0/16".parse().unwrap();
        let mut r = req("10.90.0.0/24");
        r.address_space = "LocalDefault".into();
        assert!(matches!(
            plan_pool(&table, &r, &range, 24),
            Err(IpamError::AddressSpace(_))
        ));
        let mut r = req("10.90.0.0/24");
        r.v6 = true;
        assert!(matches!(
            plan_pool(&table, &r, &range, 24),
            Err(IpamError::V6)
        ));
        let mut r = req("10.90.0.0/24");
        r.sub_pool = "10.91.0.0/28".into();
        assert!(matches!(
            plan_pool(&table, &r, &range, 24),
            Err(IpamError::SubPool { .. })
        ));
        r.sub_pool = "10.90.0.16/28".into();
        let p = plan_pool(&table, &r, &range, 24).unwrap();
        assert_eq!(dynamic_range(&p), (ip("10.90.0.16"), ip("10.90.0.31")));
        assert!(matches!(
            plan_pool(&table, &req("nonsense"), &range, 24),
            Err(IpamError::Subnet(_))
        ));
    }

    #[test]
    fn candidates() {
        let p = pool("10.90.0.0/29");
        let range = dynamic_range(&p);
        assert_eq!(range, (ip("10.90.0.1"), ip("10.90.0.6")));
        let gw = u32::from(p.gateway);
        let mut taken = BTreeSet::new();
        // The gateway (.1) is never handed out dynamically.
        assert_eq!(next_candidate(range, gw, &taken, 0), Some(ip("10.90.0.2")));
        taken.insert(ip("10.90.0.2"));
        assert_eq!(next_candidate(range, gw, &taken, 0), Some(ip("10.90.0.3")));
        // From the cursor, wrapping around.
        assert_eq!(
            next_candidate(range, gw, &taken, ip("10.90.0.6")),
            Some(ip("10.90.0.6"))
        );
        taken.insert(ip("10.90.0.6"));
        assert_eq!(
            next_candidate(range, gw, &taken, ip("10.90.0.6")),
            Some(ip("10.90.0.3"))
        );
        for a in ["10.90.0.3", "10.90.0.4", "10.90.0.5"] {
            taken.insert(ip(a));
        }
        assert_eq!(next_candidate(range, gw, &taken, 0), None);
    }

    #[test]
    fn requested_addresses() {
        let p = pool("10.90.0.0/24");
        assert_eq!(
            check_requested(&p, "10.90.0.9").unwrap().to_string(),
            "10.90.0.9"
        );
        assert_eq!(
            check_requested(&p, "10.90.0.9/24").unwrap().to_string(),
            "10.90.0.9"
        );
        assert!(matches!(
            check_requested(&p, "10.91.0.9"),
            Err(IpamError::OutOfRange { .. })
        ));
        assert!(matches!(
            check_requested(&p, "10.90.0.255"),
            Err(IpamError::Reserved { .. })
        ));
        assert!(matches!(
            check_requested(&p, "10.90.0.0"),
            Err(IpamError::Reserved { .. })
        ));
        assert!(matches!(
            check_requested(&p, "x"),
            Err(IpamError::Address(_))
        ));
    }

    #[test]
    fn table_round_trip() {
        let mut table = PoolTable::new();
        table.insert("10.90.0.0-24".into(), pool("10.90.0.0/24"));
        let s = serde_json::to_string(&table).unwrap();
        assert_eq!(
            s,
            r#"{"10.90.0.0-24":{"subnet":"10.90.0.0/24","gateway":"10.90.0.1","uid":"u"}}"#
        );
        assert_eq!(parse_table(&s).unwrap(), table);
        assert!(matches!(
            parse_table("nope"),
            Err(IpamError::Corrupt { .. })
        ));
    }
}
