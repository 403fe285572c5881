//! The NetworkDriver: Docker's calls (`CreateNetwork`, `CreateEndpoint`, `Join`, ...) turned
//! into registry records ([`crate::network`]) and kernel devices ([`crate::overlay`]), and
//! [`Networks::follow`], the loop that keeps this host in step with the others:
//!
//! - every VXLAN device carries a neighbour and an FDB entry for each endpoint of its network
//!   on another host (and nothing else), from watches of `/_berth/networks` and
//!   `/_berth/endpoints` plus a periodic full pass;
//! - with a Docker daemon, a network recorded in the registry exists in the local Docker
//!   under the same name, subnet and options (created with `berth.join`), the name of a
//!   network created here is written back to its record, and a network whose record is gone
//!   is removed from the local Docker once no container uses it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::Docker;
use ipnet::Ipv4Net;
use registry::client::{codes, Client, DeleteOptions, GetOptions, Node, SetOptions, WatchOptions};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::NetworkError;
use crate::network::{
    check_join, choose_vni, desired_remotes, diff, endpoint_ip, endpoint_key, format_mac, mac_for,
    netid_key, network_key, network_mtu, parse_mac, plan_network, record_for, EndpointRecord,
    NetworkRecord, Remote, ENDPOINTS_DIR, JOIN_OPTION, NETIDS_DIR, NETWORKS_DIR, VNIS_DIR,
    VTEPS_DIR,
};
use crate::overlay::Overlay;
use crate::protocol::{
    CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointInfoResponse,
    EndpointInterface, EndpointRequest, InterfaceName, JoinRequest, JoinResponse,
};

/// How often the whole state is reconciled even without a watch event.
pub const RESYNC: Duration = Duration::from_secs(5);
/// The MTU assumed for the underlay when the VTEP address is not on any local interface.
const DEFAULT_UNDERLAY_MTU: u32 = 1500;

/// The network driver of one host.
pub struct Networks {
    client: Client,
    node: String,
    /// The driver's name in Docker (the socket's file name without `.sock`: `berth`).
    driver: String,
    vtep: Option<Ipv4Addr>,
    overlay: Overlay,
    /// Local Docker network id -> network (the registry's `netids`, cached).
    ids: Mutex<HashMap<String, NetId>>,
    /// Wakes the follow loop (a network or endpoint changed here).
    changed: Notify,
}

/// What `/_berth/netids/<node>/<docker-id>` holds: the network and its VNI (kept here so a
/// host can take its devices down after the record is gone).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetId {
    pub net: String,
    pub vni: u32,
}

fn parse_record<T: serde::de::DeserializeOwned>(node: &Node) -> Result<T, NetworkError> {
    serde_json::from_str(node.value.as_deref().unwrap_or("")).map_err(|e| NetworkError::Corrupt {
        key: node.key.clone(),
        detail: e.to_string(),
    })
}

fn last_segment(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

impl Networks {
    /// A driver for host `node` whose VXLAN traffic leaves from `vtep`.
    pub fn new(
        client: Client,
        node: String,
        driver: String,
        vtep: Option<Ipv4Addr>,
    ) -> Result<Networks, NetworkError> {
        Ok(Networks {
            client,
            node,
            driver,
            vtep,
            overlay: Overlay::open()?,
            ids: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        })
    }

    async fn get_value(&self, key: &str) -> Result<Option<Node>, NetworkError> {
        match self
            .client
            .get(
                key,
                GetOptions {
                    quorum: true,
                    ..Default::default()
                },
            )
            .await
        {
            Ok(r) => Ok(Some(r.node)),
            Err(e) if e.is_key_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn record(&self, net: &str) -> Result<Option<NetworkRecord>, NetworkError> {
        match self.get_value(&network_key(net)).await? {
            Some(n) => Ok(Some(parse_record(&n)?)),
            None => Ok(None),
        }
    }

    /// The network a local Docker id stands for.
    async fn net_of(&self, docker_id: &str) -> Result<NetId, NetworkError> {
        if docker_id.trim().is_empty() {
            return Err(NetworkError::MissingNetworkId);
        }
        if let Some(n) = self.ids.lock().expect("ids lock").get(docker_id) {
            return Ok(n.clone());
        }
        match self.get_value(&netid_key(&self.node, docker_id)).await? {
            Some(n) => {
                let id: NetId = parse_record(&n)?;
                self.ids
                    .lock()
                    .expect("ids lock")
                    .insert(docker_id.to_string(), id.clone());
                Ok(id)
            }
            None => Err(NetworkError::UnknownDockerNetwork {
                id: docker_id.to_string(),
            }),
        }
    }

    async fn net_and_record(
        &self,
        docker_id: &str,
    ) -> Result<(String, NetworkRecord), NetworkError> {
        let net = self.net_of(docker_id).await?.net;
        let record = self
            .record(&net)
            .await?
            .ok_or_else(|| NetworkError::UnknownNetwork(net.clone()))?;
        Ok((net, record))
    }

    async fn claim_vni(&self, net: &str, requested: Option<u32>) -> Result<u32, NetworkError> {
        for _ in 0..64 {
            let quorum = GetOptions {
                quorum: true,
                ..Default::default()
            };
            let taken: BTreeSet<u32> = self
                .client
                .children(VNIS_DIR, quorum)
                .await?
                .iter()
                .filter_map(|n| last_segment(&n.key).parse().ok())
                .collect();
            let vni = choose_vni(&taken, requested)?;
            let opts = SetOptions {
                prev_exist: Some(false),
                ..Default::default()
            };
            match self
                .client
                .set(&format!("{VNIS_DIR}/{vni}"), net, opts)
                .await
            {
                Ok(_) => return Ok(vni),
                Err(e) if e.etcd_code() == Some(codes::NODE_EXIST) => {
                    if requested.is_some() {
                        return Err(NetworkError::VniTaken(vni));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(NetworkError::NoFreeVni)
    }

    async fn delete_quietly(&self, key: &str) {
        match self.client.delete(key, DeleteOptions::default()).await {
            Ok(_) => {}
            Err(e) if e.is_key_not_found() => {}
            Err(e) => tracing::warn!(key, error = %e, "could not delete"),
        }
    }

    /// `CreateNetwork`: a new network (record, VNI claim, devices) or, with `berth.join`,
    /// this host's devices for a network created elsewhere.
    pub async fn create_network(&self, req: &CreateNetworkRequest) -> Result<(), NetworkError> {
        let plan = plan_network(req)?;
        let vtep = self.vtep.ok_or(NetworkError::NoVtep)?;
        // Docker asking again for a network this host already has: make sure of the devices.
        if let Some(n) = self
            .get_value(&netid_key(&self.node, &req.network_id))
            .await?
        {
            let id: NetId = parse_record(&n)?;
            if id.net == plan.net {
                if let Some(record) = self.record(&plan.net).await? {
                    let gateway = Ipv4Net::new(record.gateway, record.subnet.prefix_len())
                        .expect("valid prefix");
                    self.overlay
                        .ensure_network(record.vni, vtep, gateway, record.mtu)
                        .await?;
                    self.ids
                        .lock()
                        .expect("ids lock")
                        .insert(req.network_id.clone(), id);
                    return Ok(());
                }
            }
        }
        let (record, created) = if plan.join.is_some() {
            let record = self
                .record(&plan.net)
                .await?
                .ok_or_else(|| NetworkError::UnknownNetwork(plan.net.clone()))?;
            check_join(&plan, &record)?;
            (record, false)
        } else {
            if self.record(&plan.net).await?.is_some() {
                return Err(NetworkError::Exists(plan.subnet.to_string()));
            }
            let underlay = self
                .overlay
                .mtu_of_address(vtep)
                .await?
                .unwrap_or(DEFAULT_UNDERLAY_MTU);
            let mtu = network_mtu(underlay, plan.mtu)?;
            let vni = self.claim_vni(&plan.net, plan.vni).await?;
            let record = record_for(&plan, vni, mtu, &self.node);
            let value = serde_json::to_string(&record).expect("records serialize");
            let opts = SetOptions {
                prev_exist: Some(false),
                ..Default::default()
            };
            match self.client.set(&network_key(&plan.net), &value, opts).await {
                Ok(_) => {}
                Err(e) => {
                    self.delete_quietly(&format!("{VNIS_DIR}/{vni}")).await;
                    return Err(if e.etcd_code() == Some(codes::NODE_EXIST) {
                        NetworkError::Exists(plan.subnet.to_string())
                    } else {
                        e.into()
                    });
                }
            }
            (record, true)
        };
        let gateway =
            Ipv4Net::new(record.gateway, record.subnet.prefix_len()).expect("valid prefix");
        let built = self
            .overlay
            .ensure_network(record.vni, vtep, gateway, record.mtu)
            .await;
        let id = NetId {
            net: plan.net.clone(),
            vni: record.vni,
        };
        let id_value = serde_json::to_string(&id).expect("ids serialize");
        let mapped = match built {
            Ok(()) => self
                .client
                .set(
                    &netid_key(&self.node, &req.network_id),
                    &id_value,
                    SetOptions::default(),
                )
                .await
                .map(|_| ())
                .map_err(NetworkError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = mapped {
            // Leave nothing behind: devices, and the record if this call made it.
            let _ = self.overlay.remove_network(record.vni).await;
            if created {
                self.delete_quietly(&network_key(&plan.net)).await;
                self.delete_quietly(&format!("{VNIS_DIR}/{}", record.vni))
                    .await;
            }
            return Err(e);
        }
        self.ids
            .lock()
            .expect("ids lock")
            .insert(req.network_id.clone(), id);
        tracing::info!(
            net = %plan.net, vni = record.vni, mtu = record.mtu, docker_id = %req.network_id,
            joined = !created, "network ready"
        );
        self.changed.notify_one();
        Ok(())
    }

    /// `DeleteNetwork`: removes this host's devices and mapping, and the network's record (so
    /// every other host removes its copy once no container there uses it). Docker removes the
    /// network whatever the answer is, so this never refuses.
    pub async fn delete_network(&self, docker_id: &str) -> Result<(), NetworkError> {
        let NetId { net, vni } = self.net_of(docker_id).await?;
        self.overlay.remove_network(vni).await?;
        if let Some(record) = self.record(&net).await? {
            self.delete_quietly(&network_key(&net)).await;
            self.delete_quietly(&format!("{VNIS_DIR}/{}", record.vni))
                .await;
            tracing::info!(%net, vni, "network removed from the registry");
        }
        // This host's endpoints on the network are gone with it.
        self.delete_own_endpoints(&net).await?;
        self.delete_quietly(&netid_key(&self.node, docker_id)).await;
        self.ids.lock().expect("ids lock").remove(docker_id);
        self.changed.notify_one();
        Ok(())
    }

    async fn delete_own_endpoints(&self, net: &str) -> Result<(), NetworkError> {
        for (id, ep) in self.endpoints_of(net).await? {
            if ep.node == self.node {
                self.delete_quietly(&endpoint_key(net, &id)).await;
            }
        }
        Ok(())
    }

    async fn endpoints_of(&self, net: &str) -> Result<Vec<(String, EndpointRecord)>, NetworkError> {
        let quorum = GetOptions {
            quorum: true,
            ..Default::default()
        };
        Ok(self
            .client
            .children(&format!("{ENDPOINTS_DIR}/{net}"), quorum)
            .await?
            .iter()
            .filter_map(|n| Some((last_segment(&n.key).to_string(), parse_record(n).ok()?)))
            .collect())
    }

    /// `CreateEndpoint`: records the endpoint (address, MAC, this host's VTEP). The MAC is
    /// Docker's when given, else derived from the address; only a chosen MAC is answered.
    pub async fn create_endpoint(
        &self,
        req: &CreateEndpointRequest,
    ) -> Result<CreateEndpointResponse, NetworkError> {
        if req.endpoint_id.trim().is_empty() {
            return Err(NetworkError::MissingEndpointId);
        }
        let (net, record) = self.net_and_record(&req.network_id).await?;
        let vtep = self.vtep.ok_or(NetworkError::NoVtep)?;
        let iface = req.interface.clone().unwrap_or_default();
        let ip = endpoint_ip(&iface.address, &record.subnet)?;
        let (mac, chosen) = if iface.mac_address.trim().is_empty() {
            (mac_for(ip), true)
        } else {
            (parse_mac(&iface.mac_address)?, false)
        };
        let ep = EndpointRecord {
            ip,
            mac: format_mac(&mac),
            vtep,
            node: self.node.clone(),
        };
        let value = serde_json::to_string(&ep).expect("records serialize");
        self.client
            .set(
                &endpoint_key(&net, &req.endpoint_id),
                &value,
                SetOptions::default(),
            )
            .await?;
        tracing::info!(%net, endpoint = %req.endpoint_id, %ip, mac = %ep.mac, "endpoint created");
        Ok(CreateEndpointResponse {
            interface: chosen.then(|| EndpointInterface {
                mac_address: ep.mac.clone(),
                ..Default::default()
            }),
        })
    }

    async fn endpoint(
        &self,
        req: &EndpointRequest,
    ) -> Result<(String, NetworkRecord, EndpointRecord), NetworkError> {
        if req.endpoint_id.trim().is_empty() {
            return Err(NetworkError::MissingEndpointId);
        }
        let (net, record) = self.net_and_record(&req.network_id).await?;
        let node = self
            .get_value(&endpoint_key(&net, &req.endpoint_id))
            .await?
            .ok_or_else(|| NetworkError::UnknownEndpoint(req.endpoint_id.clone()))?;
        Ok((net, record, parse_record(&node)?))
    }

    /// `EndpointOperInfo`: what `docker network inspect` shows for the endpoint.
    pub async fn endpoint_info(
        &self,
        req: &EndpointRequest,
    ) -> Result<EndpointInfoResponse, NetworkError> {
        let (_, record, ep) = self.endpoint(req).await?;
        let mut value = BTreeMap::new();
        value.insert(
            "ip".to_string(),
            serde_json::Value::String(ep.ip.to_string()),
        );
        value.insert("mac".to_string(), serde_json::Value::String(ep.mac));
        value.insert(
            "vtep".to_string(),
            serde_json::Value::String(ep.vtep.to_string()),
        );
        value.insert("vni".to_string(), serde_json::Value::from(record.vni));
        Ok(EndpointInfoResponse { value })
    }

    /// `DeleteEndpoint`: removes the record (other hosts drop their entries for it).
    pub async fn delete_endpoint(&self, req: &EndpointRequest) -> Result<(), NetworkError> {
        let (net, _, _) = self.endpoint(req).await?;
        self.client
            .delete(
                &endpoint_key(&net, &req.endpoint_id),
                DeleteOptions::default(),
            )
            .await?;
        tracing::info!(%net, endpoint = %req.endpoint_id, "endpoint deleted");
        Ok(())
    }

    /// `Join`: the endpoint's veth pair, its host end on the network's bridge.
    pub async fn join(&self, req: &JoinRequest) -> Result<JoinResponse, NetworkError> {
        let ep_req = EndpointRequest {
            network_id: req.network_id.clone(),
            endpoint_id: req.endpoint_id.clone(),
        };
        let (_, record, ep) = self.endpoint(&ep_req).await?;
        let mac = parse_mac(&ep.mac)?;
        let src = self
            .overlay
            .add_veth(record.vni, &req.endpoint_id, mac, record.mtu)
            .await?;
        Ok(JoinResponse {
            interface_name: InterfaceName {
                src_name: src,
                dst_prefix: "eth".into(),
            },
            gateway: record.gateway.to_string(),
            ..Default::default()
        })
    }

    /// `Leave`: deletes the veth pair.
    pub async fn leave(&self, req: &EndpointRequest) -> Result<(), NetworkError> {
        if req.endpoint_id.trim().is_empty() {
            return Err(NetworkError::MissingEndpointId);
        }
        self.net_of(&req.network_id).await?;
        self.overlay.remove_veth(&req.endpoint_id).await
    }

    // -----------------------------------------------------------------------
    // Following the other hosts
    // -----------------------------------------------------------------------

    /// Announces this host's VTEP, then keeps the kernel's remote entries and (with
    /// `docker`) the local Docker's networks in step with the registry until `shutdown`.
    pub async fn follow(self: Arc<Self>, docker: Option<Docker>, shutdown: CancellationToken) {
        if let Some(vtep) = self.vtep {
            let key = format!("{VTEPS_DIR}/{}", self.node);
            if let Err(e) = self
                .client
                .set(&key, &vtep.to_string(), SetOptions::default())
                .await
            {
                tracing::warn!(error = %e, "could not announce the VTEP; retrying in the next pass");
            }
        }
        for dir in [NETWORKS_DIR, ENDPOINTS_DIR] {
            let me = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = me.watch(dir) => {}
                }
            });
        }
        let mut warned = BTreeSet::new();
        loop {
            if let Err(e) = self.reconcile(docker.as_ref(), &mut warned).await {
                tracing::warn!(error = %e, "network reconciliation failed; retrying");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
            // Let a burst of changes settle into one pass.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wakes the follow loop on every change under `dir`.
    async fn watch(&self, dir: &str) {
        let mut next = None;
        loop {
            let opts = WatchOptions {
                recursive: true,
                wait_index: next,
            };
            match self.client.watch(dir, opts).await {
                Ok(r) => {
                    next = Some(r.node.modified_index + 1);
                    self.changed.notify_one();
                }
                Err(e) => {
                    tracing::debug!(dir, error = %e, "watch ended; resuming");
                    next = None;
                    self.changed.notify_one();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn list_dir(&self, dir: &str) -> Result<Vec<Node>, NetworkError> {
        let opts = GetOptions {
            recursive: true,
            quorum: true,
            ..Default::default()
        };
        Ok(self.client.children(dir, opts).await?)
    }

    /// One full pass: remote entries on every local VXLAN device, then Docker.
    pub async fn reconcile(
        &self,
        docker: Option<&Docker>,
        warned: &mut BTreeSet<String>,
    ) -> Result<(), NetworkError> {
        let mut records = BTreeMap::new();
        for n in self.list_dir(NETWORKS_DIR).await? {
            match parse_record::<NetworkRecord>(&n) {
                Ok(r) => {
                    records.insert(last_segment(&n.key).to_string(), r);
                }
                Err(e) => {
                    if warned.insert(n.key.clone()) {
                        tracing::warn!(error = %e, "skipping a network record");
                    }
                }
            }
        }
        let mut endpoints: BTreeMap<String, Vec<EndpointRecord>> = BTreeMap::new();
        for dir in self.list_dir(ENDPOINTS_DIR).await? {
            let net = last_segment(&dir.key).to_string();
            for n in &dir.nodes {
                if let Ok(ep) = parse_record::<EndpointRecord>(n) {
                    endpoints.entry(net.clone()).or_default().push(ep);
                }
            }
        }
        let local = self.overlay.local_vnis().await?;
        let vnis: BTreeMap<String, u32> = records.iter().map(|(k, r)| (k.clone(), r.vni)).collect();
        let local_set: BTreeSet<u32> = local.keys().copied().collect();
        let want = desired_remotes(&self.node, &local_set, &vnis, &endpoints);
        for (vni, remotes) in &want {
            let index = local[vni];
            self.program(index, remotes).await?;
        }
        if let Some(docker) = docker {
            if let Err(e) = self.replicate(docker, &records, warned).await {
                tracing::warn!(error = %e, "could not bring the local Docker's networks in step");
            }
        }
        Ok(())
    }

    async fn program(&self, index: u32, remotes: &BTreeSet<Remote>) -> Result<(), NetworkError> {
        let want_n: BTreeSet<(Ipv4Addr, [u8; 6])> = remotes.iter().map(|r| (r.ip, r.mac)).collect();
        let want_f: BTreeSet<([u8; 6], Ipv4Addr)> =
            remotes.iter().map(|r| (r.mac, r.vtep)).collect();
        let (add_f, del_f) = diff(&self.overlay.fdb(index).await?, &want_f);
        let (add_n, del_n) = diff(&self.overlay.neighbours(index).await?, &want_n);
        for (mac, vtep) in add_f {
            self.overlay.add_fdb(index, mac, vtep).await?;
        }
        for (ip, mac) in &add_n {
            self.overlay.add_neighbour(index, *ip, *mac).await?;
        }
        for (ip, mac) in &del_n {
            self.overlay.del_neighbour(index, *ip, *mac).await?;
        }
        for (mac, vtep) in del_f {
            self.overlay.del_fdb(index, mac, vtep).await?;
        }
        if !add_n.is_empty() || !del_n.is_empty() {
            tracing::info!(
                ifindex = index,
                added = add_n.len(),
                removed = del_n.len(),
                "remote endpoints programmed"
            );
        }
        Ok(())
    }

    /// Brings the local Docker's berth networks in step with the registry.
    async fn replicate(
        &self,
        docker: &Docker,
        records: &BTreeMap<String, NetworkRecord>,
        warned: &mut BTreeSet<String>,
    ) -> Result<(), NetworkError> {
        let docker_err = |e: bollard::errors::Error| NetworkError::Docker(e.to_string());
        let listed = docker.list_networks(None).await.map_err(docker_err)?;
        // Local berth networks by registry network.
        let mut local: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for n in &listed {
            let (Some(name), Some(id)) = (n.name.clone(), n.id.clone()) else {
                continue;
            };
            names.insert(name.clone(), n.driver.clone().unwrap_or_default());
            if n.driver.as_deref() != Some(self.driver.as_str()) {
                continue;
            }
            let subnet = n
                .ipam
                .as_ref()
                .and_then(|i| i.config.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.subnet.as_deref())
                .and_then(|s| crate::ipam::parse_subnet(s).ok());
            if let Some(s) = subnet {
                local.insert(crate::ipam::pool_id(&s), (name, id));
            }
        }
        // Names of networks created here.
        for (net, (name, _)) in &local {
            if let Some(r) = records.get(net) {
                if r.name.is_empty() && r.created_by == self.node {
                    let old = serde_json::to_string(r).expect("records serialize");
                    let mut named = r.clone();
                    named.name = name.clone();
                    let new = serde_json::to_string(&named).expect("records serialize");
                    let opts = SetOptions {
                        prev_value: Some(old),
                        ..Default::default()
                    };
                    match self.client.set(&network_key(net), &new, opts).await {
                        Ok(_) => tracing::info!(%net, name = %name, "network name recorded"),
                        Err(e) => {
                            tracing::debug!(%net, error = %e, "name not recorded (changed meanwhile)")
                        }
                    }
                }
            }
        }
        // Networks of the registry missing here.
        for (net, r) in records {
            if r.name.is_empty() || local.contains_key(net) {
                continue;
            }
            if let Some(driver) = names.get(&r.name) {
                if warned.insert(format!("conflict/{net}/{}", r.name)) {
                    tracing::warn!(%net, name = %r.name, %driver, "a local network already has this name; not replicating");
                }
                continue;
            }
            let mut options: HashMap<String, String> = r.options.clone().into_iter().collect();
            options.insert(JOIN_OPTION.into(), net.clone());
            let req = NetworkCreateRequest {
                name: r.name.clone(),
                driver: Some(self.driver.clone()),
                ipam: Some(Ipam {
                    driver: Some(self.driver.clone()),
                    config: Some(vec![IpamConfig {
                        subnet: Some(r.subnet.to_string()),
                        gateway: Some(r.gateway.to_string()),
                        ..Default::default()
                    }]),
                    options: Some([(JOIN_OPTION.to_string(), net.clone())].into()),
                }),
                options: Some(options),
                ..Default::default()
            };
            match docker.create_network(req).await {
                Ok(resp) => {
                    tracing::info!(%net, name = %r.name, id = %resp.id, "network replicated into the local Docker")
                }
                Err(e) => {
                    if warned.insert(format!("create/{net}/{e}")) {
                        tracing::warn!(%net, name = %r.name, error = %e, "could not create the network locally; retrying");
                    }
                }
            }
        }
        // Local copies of networks removed elsewhere (only those this plugin mapped).
        let mapped: BTreeSet<String> = self
            .list_dir(&format!("{NETIDS_DIR}/{}", self.node))
            .await?
            .iter()
            .map(|n| last_segment(&n.key).to_string())
            .collect();
        for (net, (name, id)) in &local {
            if records.contains_key(net) || !mapped.contains(id) {
                continue;
            }
            match docker.remove_network(id).await {
                Ok(()) => {
                    tracing::info!(%net, name = %name, "network removed elsewhere: removed here too")
                }
                Err(e) => {
                    if warned.insert(format!("remove/{id}/{e}")) {
                        tracing::warn!(%net, name = %name, error = %e, "network removed elsewhere is still in use here; will retry");
                    }
                }
            }
        }
        Ok(())
    }
}
