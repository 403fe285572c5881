//! Docker's legacy plugin protocol: JSON over HTTP POST on a unix socket, one endpoint per
//! method (`POST /Plugin.Activate`, `POST /VolumeDriver.Mount`, ...).
//!
//! Field names are Docker's (Go's exported names, PascalCase). Docker's decoder is Go's
//! `encoding/json`, which ignores unknown fields, so responses may carry extra ones.
//! Requests are decoded leniently in the same way: unknown fields are ignored and missing
//! ones take their zero value, except the few a method cannot do without (a volume name, a
//! pool id), which are checked by the handlers with a clear error.
//!
//! # Errors
//!
//! Docker's plugin client (`pkg/plugins`, `callWithRetry`) treats any status other than 200 as
//! a failure and reads the message from the body's `Err` field (falling back to the raw body).
//! With a 200 answer each driver type reads its own field: `Err` for the volume and network
//! drivers, but **`Error`** for IPAM (libnetwork `ipams/remote/api.Response{Error string}`),
//! which is what the issue means by "IPAM: `{"Error": ...}`". berth answers every failure with
//! status 500 and `{"Err": "..."}` so every driver type shows the message; IPAM failures carry
//! the same message under `Error` too ([`ErrorBody::ipam`]), so a client that only looks at the
//! 200-path field still sees it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `Content-Type` of every answer (Docker sends `Accept: application/vnd.docker.plugins.v1.2+json`).
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// Driver types berth implements, as listed by `Plugin.Activate`.
pub const IMPLEMENTS: [&str; 3] = ["NetworkDriver", "IpamDriver", "VolumeDriver"];

/// `Option` values in libnetwork requests are arbitrary JSON.
pub type Options = BTreeMap<String, serde_json::Value>;

// ---------------------------------------------------------------------------
// Handshake and errors
// ---------------------------------------------------------------------------

/// Answer of `POST /Plugin.Activate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivateResponse {
    #[serde(deserialize_with = "nullable")]
    pub implements: Vec<String>,
}

impl Default for ActivateResponse {
    fn default() -> Self {
        ActivateResponse {
            implements: IMPLEMENTS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A failure: `{"Err": "..."}`, plus `"Error"` for IPAM (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "Err")]
    pub err: String,
    #[serde(rename = "Error", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ErrorBody {
    pub fn new(msg: impl Into<String>) -> ErrorBody {
        ErrorBody {
            err: msg.into(),
            error: None,
        }
    }

    /// The IPAM form: the message under both `Err` and `Error`.
    pub fn ipam(msg: impl Into<String>) -> ErrorBody {
        let msg = msg.into();
        ErrorBody {
            err: msg.clone(),
            error: Some(msg),
        }
    }
}

/// An empty success (`{}`), e.g. for `ReleasePool` or `VolumeDriver.Remove`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

// ---------------------------------------------------------------------------
// IpamDriver
// ---------------------------------------------------------------------------

/// `IpamDriver.GetCapabilities` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamCapabilities {
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    pub requires_request_replay: bool,
}

/// `IpamDriver.GetDefaultAddressSpaces` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AddressSpaces {
    pub local_default_address_space: String,
    pub global_default_address_space: String,
}

/// `IpamDriver.RequestPool` request. `Pool` is the `--subnet` (CIDR), `SubPool` the
/// `--ip-range`, both empty when not given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPoolRequest {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "V6")]
    pub v6: bool,
}

/// `IpamDriver.RequestPool` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPoolResponse {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// CIDR.
    pub pool: String,
    #[serde(deserialize_with = "nullable")]
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleasePool` request (answer: `{}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleasePoolRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress` request. An empty `Address` asks for any free one;
/// `Options["RequestAddressType"] == "com.docker.network.gateway"` marks the gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

/// `Options` key and value marking a gateway request.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_TYPE: &str = "com.docker.network.gateway";

/// `IpamDriver.RequestAddress` answer: the address in CIDR form with the pool's prefix length.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddressResponse {
    pub address: String,
    #[serde(deserialize_with = "nullable")]
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleaseAddress` request (answer: `{}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ReleaseAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
}

// ---------------------------------------------------------------------------
// VolumeDriver
// ---------------------------------------------------------------------------

/// `VolumeDriver.Create` request (`docker volume create -d berth -o k=v NAME`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateVolumeRequest {
    pub name: String,
    /// `null` when no option was given.
    pub opts: Option<BTreeMap<String, String>>,
}

/// Requests naming one volume: `Remove`, `Path`, `Get`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeNameRequest {
    pub name: String,
}

/// `VolumeDriver.Mount` / `Unmount` request: `ID` identifies the caller (one per container
/// mount), so a volume mounted twice is unmounted once per `ID`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MountRequest {
    pub name: String,
    #[serde(rename = "ID")]
    pub id: String,
}

/// `VolumeDriver.Mount` / `Path` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountpointResponse {
    pub mountpoint: String,
}

/// One volume as `Get` and `List` describe it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeInfo {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mountpoint: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub status: BTreeMap<String, serde_json::Value>,
}

/// `VolumeDriver.Get` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetVolumeResponse {
    pub volume: VolumeInfo,
}

/// `VolumeDriver.List` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListVolumesResponse {
    #[serde(deserialize_with = "nullable")]
    pub volumes: Vec<VolumeInfo>,
}

/// `VolumeDriver.Capabilities` answer: `{"Capabilities": {"Scope": "local"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeCapabilitiesResponse {
    pub capabilities: VolumeCapabilities,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeCapabilities {
    /// `local` (one volume per host) or `global` (one cluster-wide volume).
    pub scope: String,
}

// ---------------------------------------------------------------------------
// NetworkDriver (libnetwork remote driver API)
// ---------------------------------------------------------------------------

/// `NetworkDriver.GetCapabilities` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkCapabilities {
    /// `local` or `global`: where the driver's network state lives.
    pub scope: String,
    /// `local` or `global`: how far the network's connectivity reaches.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub connectivity_scope: String,
}

/// One IPv4/IPv6 pool of a network, as libnetwork passes it to the driver.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
    #[serde(deserialize_with = "nullable")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// `NetworkDriver.CreateNetwork` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(deserialize_with = "nullable")]
    pub options: Options,
    #[serde(deserialize_with = "nullable", rename = "IPv4Data")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(deserialize_with = "nullable", rename = "IPv6Data")]
    pub ipv6_data: Vec<IpamData>,
}

/// `NetworkDriver.DeleteNetwork` and `FreeNetwork` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkIdRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// An endpoint's interface (addresses in CIDR form).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    pub address: String,
    #[serde(rename = "AddressIPv6")]
    pub address_ipv6: String,
    pub mac_address: String,
}

/// `NetworkDriver.CreateEndpoint` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<EndpointInterface>,
    #[serde(deserialize_with = "nullable")]
    pub options: Options,
}

/// `NetworkDriver.CreateEndpoint` answer: the interface only when the driver chose values
/// libnetwork did not give it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpointResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

/// Requests naming one endpoint: `EndpointOperInfo`, `DeleteEndpoint`, `Leave`,
/// `RevokeExternalConnectivity`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// `NetworkDriver.EndpointOperInfo` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInfoResponse {
    #[serde(deserialize_with = "nullable")]
    pub value: Options,
}

/// `NetworkDriver.Join` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub sandbox_key: String,
    #[serde(deserialize_with = "nullable")]
    pub options: Options,
}

/// The interface libnetwork moves into the sandbox: `SrcName` on the host, renamed to
/// `DstPrefix` + a number inside.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

/// A route to install in the sandbox (`RouteType` 0 = via `NextHop`, 1 = connected).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct StaticRoute {
    pub destination: String,
    pub route_type: i32,
    pub next_hop: String,
}

/// `NetworkDriver.Join` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct JoinResponse {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    #[serde(deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<StaticRoute>,
    pub disable_gateway_service: bool,
}

/// `NetworkDriver.DiscoverNew` / `DiscoverDelete` request (`DiscoveryType` 1 = node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DiscoveryNotification {
    pub discovery_type: i64,
    pub discovery_data: serde_json::Value,
}

/// `NetworkDriver.ProgramExternalConnectivity` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ProgramExternalConnectivityRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(deserialize_with = "nullable")]
    pub options: Options,
}

/// `NetworkDriver.AllocateNetwork` request (Swarm managers only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable", rename = "IPv4Data")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(deserialize_with = "nullable", rename = "IPv6Data")]
    pub ipv6_data: Vec<IpamData>,
}

/// `NetworkDriver.AllocateNetwork` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AllocateNetworkResponse {
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------

/// Every method berth answers, by its URL path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Activate,
    IpamCapabilities,
    IpamAddressSpaces,
    IpamRequestPool,
    IpamReleasePool,
    IpamRequestAddress,
    IpamReleaseAddress,
    VolumeCreate,
    VolumeRemove,
    VolumeMount,
    VolumeUnmount,
    VolumePath,
    VolumeGet,
    VolumeList,
    VolumeCapabilities,
    NetCapabilities,
    NetCreateNetwork,
    NetDeleteNetwork,
    NetCreateEndpoint,
    NetEndpointOperInfo,
    NetDeleteEndpoint,
    NetJoin,
    NetLeave,
    NetDiscoverNew,
    NetDiscoverDelete,
    NetProgramExternalConnectivity,
    NetRevokeExternalConnectivity,
    NetAllocateNetwork,
    NetFreeNetwork,
}

impl Method {
    /// Every method with its path.
    pub const ALL: [(&'static str, Method); 29] = [
        ("/Plugin.Activate", Method::Activate),
        ("/IpamDriver.GetCapabilities", Method::IpamCapabilities),
        (
            "/IpamDriver.GetDefaultAddressSpaces",
            Method::IpamAddressSpaces,
        ),
        ("/IpamDriver.RequestPool", Method::IpamRequestPool),
        ("/IpamDriver.ReleasePool", Method::IpamReleasePool),
        ("/IpamDriver.RequestAddress", Method::IpamRequestAddress),
        ("/IpamDriver.ReleaseAddress", Method::IpamReleaseAddress),
        ("/VolumeDriver.Create", Method::VolumeCreate),
        ("/VolumeDriver.Remove", Method::VolumeRemove),
        ("/VolumeDriver.Mount", Method::VolumeMount),
        ("/VolumeDriver.Unmount", Method::VolumeUnmount),
        ("/VolumeDriver.Path", Method::VolumePath),
        ("/VolumeDriver.Get", Method::VolumeGet),
        ("/VolumeDriver.List", Method::VolumeList),
        ("/VolumeDriver.Capabilities", Method::VolumeCapabilities),
        ("/NetworkDriver.GetCapabilities", Method::NetCapabilities),
        ("/NetworkDriver.CreateNetwork", Method::NetCreateNetwork),
        ("/NetworkDriver.DeleteNetwork", Method::NetDeleteNetwork),
        ("/NetworkDriver.CreateEndpoint", Method::NetCreateEndpoint),
        (
            "/NetworkDriver.EndpointOperInfo",
            Method::NetEndpointOperInfo,
        ),
        ("/NetworkDriver.DeleteEndpoint", Method::NetDeleteEndpoint),
        ("/NetworkDriver.Join", Method::NetJoin),
        ("/NetworkDriver.Leave", Method::NetLeave),
        ("/NetworkDriver.DiscoverNew", Method::NetDiscoverNew),
        ("/NetworkDriver.DiscoverDelete", Method::NetDiscoverDelete),
        (
            "/NetworkDriver.ProgramExternalConnectivity",
            Method::NetProgramExternalConnectivity,
        ),
        (
            "/NetworkDriver.RevokeExternalConnectivity",
            Method::NetRevokeExternalConnectivity,
        ),
        ("/NetworkDriver.AllocateNetwork", Method::NetAllocateNetwork),
        ("/NetworkDriver.FreeNetwork", Method::NetFreeNetwork),
    ];

    /// The method served at `path`, if any (exact, case-sensitive: Docker's names).
    pub fn from_path(path: &str) -> Option<Method> {
        Method::ALL
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, m)| *m)
    }

    /// The URL path of this method.
    pub fn path(self) -> &'static str {
        Method::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(p, _)| *p)
            .expect("every method has a path")
    }

    /// True for IPAM methods, whose errors also carry `Error`.
    pub fn is_ipam(self) -> bool {
        self.path().starts_with("/IpamDriver.")
    }
}

/// Go encodes a nil map or slice as `null`: read it as empty.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Decodes a request body. Docker sends `null` or nothing for methods without arguments,
/// which decode as the type's default.
pub fn decode<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, String> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(T::default());
    }
    serde_json::from_slice(trimmed).map_err(|e| format!("malformed request body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn activate_and_errors() {
        assert_eq!(
            serde_json::to_value(ActivateResponse::default()).unwrap(),
            json!({"Implements": ["NetworkDriver", "IpamDriver", "VolumeDriver"]})
        );
        assert_eq!(
            serde_json::to_value(ErrorBody::new("boom")).unwrap(),
            json!({"Err": "boom"})
        );
        assert_eq!(
            serde_json::to_value(ErrorBody::ipam("boom")).unwrap(),
            json!({"Err": "boom", "Error": "boom"})
        );
    }

    #[test]
    fn ipam_wire_names() {
        let r: RequestPoolRequest = decode(
            br#"{"AddressSpace":"berth","Pool":"10.90.0.0/24","SubPool":"","Options":{},"V6":false}"#,
        )
        .unwrap();
        assert_eq!(r.pool, "10.90.0.0/24");
        let r: RequestAddressRequest = decode(
            br#"{"PoolID":"p","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
        )
        .unwrap();
        assert_eq!(r.options[REQUEST_ADDRESS_TYPE], GATEWAY_TYPE);
        // Go's nil maps arrive as null.
        let r: RequestAddressRequest =
            decode(br#"{"PoolID":"p","Address":"","Options":null}"#).unwrap();
        assert!(r.options.is_empty());
        let r: CreateNetworkRequest =
            decode(br#"{"NetworkID":"n","Options":null,"IPv4Data":null,"IPv6Data":null}"#).unwrap();
        assert!(r.ipv4_data.is_empty());
        assert_eq!(
            serde_json::to_value(IpamCapabilities::default()).unwrap(),
            json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
        );
        assert_eq!(
            serde_json::to_value(RequestPoolResponse {
                pool_id: "x".into(),
                pool: "10.0.0.0/24".into(),
                data: BTreeMap::new()
            })
            .unwrap(),
            json!({"PoolID": "x", "Pool": "10.0.0.0/24", "Data": {}})
        );
    }

    #[test]
    fn volume_wire_names() {
        let r: CreateVolumeRequest = decode(br#"{"Name":"app","Opts":{"secret":"db"}}"#).unwrap();
        assert_eq!(r.opts.unwrap()["secret"], "db");
        let r: CreateVolumeRequest = decode(br#"{"Name":"app","Opts":null}"#).unwrap();
        assert!(r.opts.is_none());
        let r: MountRequest = decode(br#"{"Name":"app","ID":"abc"}"#).unwrap();
        assert_eq!(r.id, "abc");
        assert_eq!(
            serde_json::to_value(VolumeCapabilitiesResponse {
                capabilities: VolumeCapabilities {
                    scope: "local".into()
                }
            })
            .unwrap(),
            json!({"Capabilities": {"Scope": "local"}})
        );
        assert_eq!(
            serde_json::to_value(GetVolumeResponse {
                volume: VolumeInfo {
                    name: "a".into(),
                    ..Default::default()
                }
            })
            .unwrap(),
            json!({"Volume": {"Name": "a"}})
        );
    }

    #[test]
    fn network_wire_names() {
        let r: CreateNetworkRequest = decode(
            br#"{"NetworkID":"n","Options":{"com.docker.network.generic":{}},"IPv4Data":[{"AddressSpace":"s","Pool":"10.0.0.0/24","Gateway":"10.0.0.1/24","AuxAddresses":{}}],"IPv6Data":[]}"#,
        )
        .unwrap();
        assert_eq!(r.ipv4_data[0].gateway, "10.0.0.1/24");
        let r: CreateEndpointRequest = decode(
            br#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.0.0.2/24","AddressIPv6":"","MacAddress":""},"Options":{}}"#,
        )
        .unwrap();
        assert_eq!(r.interface.unwrap().address, "10.0.0.2/24");
        assert_eq!(
            serde_json::to_value(NetworkCapabilities {
                scope: "local".into(),
                connectivity_scope: "global".into()
            })
            .unwrap(),
            json!({"Scope": "local", "ConnectivityScope": "global"})
        );
    }

    #[test]
    fn paths_and_bodies() {
        assert_eq!(
            Method::from_path("/VolumeDriver.Mount"),
            Some(Method::VolumeMount)
        );
        assert_eq!(Method::from_path("/VolumeDriver.mount"), None);
        assert_eq!(Method::from_path("/Nope.Thing"), None);
        for (p, m) in Method::ALL {
            assert_eq!(m.path(), p);
        }
        assert!(Method::IpamRequestPool.is_ipam());
        assert!(!Method::VolumeGet.is_ipam());
        assert_eq!(decode::<Empty>(b"").unwrap(), Empty {});
        assert_eq!(decode::<Empty>(b" null\n").unwrap(), Empty {});
        let e = decode::<MountRequest>(b"{\"Name\": ").unwrap_err();
        assert!(e.starts_with("malformed request body"), "{e}");
        assert!(decode::<MountRequest>(b"[1]").is_err());
    }
}
