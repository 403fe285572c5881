//! The service catalog (SPEC §3): what the registry says about services, blue-green routes and VIPs, built from
//! recursive reads and kept current by applying watch events. Pure: no I/O, no clock.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::client::{Node, Response};

pub mod follow;
pub mod instance;
pub mod shared;

pub use follow::follow;
pub use instance::{is_dns_label, Instance, InstanceError, Proto};
pub use shared::Shared;

/// A service's VIP as claimed by `/_berth/vips/service/<service>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipClaim {
    pub ip: Ipv4Addr,
    /// `modifiedIndex` of the service key (for compare-and-delete on release).
    pub index: u64,
}

/// An address reservation `/_berth/vips/ip/<ip>` = service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub service: String,
    pub index: u64,
}

/// Everything DNS and the proxy answer from.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    /// service (lower case) -> instance id -> instance.
    services: HashMap<String, BTreeMap<String, Instance>>,
    /// service -> active color.
    routes: HashMap<String, String>,
    vips: HashMap<String, VipClaim>,
    reservations: HashMap<Ipv4Addr, Reservation>,
    /// Derived from `vips`: VIP -> service, for PTR.
    vip_owner: HashMap<Ipv4Addr, String>,
    /// Highest registry index seen.
    index: u64,
}

/// A registry key the catalog cares about.
enum Key<'a> {
    Services,
    Service(&'a str),
    Instance(&'a str, &'a str),
    Berth,
    Routes,
    Route(&'a str),
    Vips,
    VipServices,
    VipService(&'a str),
    VipIps,
    VipIp(&'a str),
    Other,
}

fn classify(key: &str) -> Key<'_> {
    let segs: Vec<&str> = key.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["services"] => Key::Services,
        ["services", s] => Key::Service(s),
        ["services", s, id] => Key::Instance(s, id),
        ["_berth"] => Key::Berth,
        ["_berth", "routes"] => Key::Routes,
        ["_berth", "routes", s] => Key::Route(s),
        ["_berth", "vips"] => Key::Vips,
        ["_berth", "vips", "service"] => Key::VipServices,
        ["_berth", "vips", "service", s] => Key::VipService(s),
        ["_berth", "vips", "ip"] => Key::VipIps,
        ["_berth", "vips", "ip", ip] => Key::VipIp(ip),
        _ => Key::Other,
    }
}

fn service_name(s: &str) -> Option<String> {
    if is_dns_label(s) {
        Some(s.to_ascii_lowercase())
    } else {
        tracing::debug!(service = s, "ignoring service name that is not a DNS label");
        None
    }
}

fn parse_route(value: &str) -> Option<String> {
    let v = value.trim();
    let color = match serde_json::from_str::<serde_json::Value>(v) {
        Ok(serde_json::Value::Object(m)) => m.get("active")?.as_str()?.to_string(),
        Ok(serde_json::Value::String(s)) => s,
        Ok(_) => return None,
        Err(_) => v.to_string(),
    };
    let color = color.trim().to_ascii_lowercase();
    (!color.is_empty()).then_some(color)
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// Replaces all instances with the tree of a recursive GET of `/services` (`None` when
    /// the directory does not exist).
    pub fn load_services(&mut self, root: Option<&Node>) {
        self.services.clear();
        if let Some(root) = root {
            for_each_leaf(root, &mut |n| {
                self.put(&n.key, n.value.as_deref(), n.modified_index);
            });
        }
    }

    /// Replaces routes and VIP claims with the tree of a recursive GET of `/_berth`.
    pub fn load_berth(&mut self, root: Option<&Node>) {
        self.routes.clear();
        self.vips.clear();
        self.reservations.clear();
        self.vip_owner.clear();
        if let Some(root) = root {
            for_each_leaf(root, &mut |n| {
                self.put(&n.key, n.value.as_deref(), n.modified_index);
            });
        }
    }

    /// Applies one watch event. Returns the service whose answers may have changed, if any
    /// one service is concerned.
    pub fn apply(&mut self, event: &Response) -> Option<String> {
        let node = &event.node;
        match event.action.as_str() {
            "set" | "create" | "update" | "compareAndSwap" => {
                if node.dir {
                    // A directory created or its TTL refreshed: its contents are unchanged.
                    None
                } else {
                    self.put(&node.key, node.value.as_deref(), node.modified_index)
                }
            }
            "delete" | "compareAndDelete" | "expire" => self.remove(&node.key),
            _ => None,
        }
    }

    fn put(&mut self, key: &str, value: Option<&str>, index: u64) -> Option<String> {
        let value = value.unwrap_or("");
        match classify(key) {
            Key::Instance(s, id) => {
                let s = service_name(s)?;
                match Instance::parse(id, value) {
                    Ok(inst) => {
                        self.services
                            .entry(s.clone())
                            .or_default()
                            .insert(id.to_string(), inst);
                    }
                    Err(e) => {
                        tracing::warn!(key, error = %e, "instance left out of DNS");
                        self.remove_instance(&s, id);
                    }
                }
                Some(s)
            }
            Key::Route(s) => {
                let s = service_name(s)?;
                match parse_route(value) {
                    Some(c) => self.routes.insert(s.clone(), c),
                    None => {
                        tracing::warn!(key, value, "route record without an active color");
                        self.routes.remove(&s)
                    }
                };
                Some(s)
            }
            Key::VipService(s) => {
                let s = service_name(s)?;
                if let Some(old) = self.vips.remove(&s) {
                    self.vip_owner.remove(&old.ip);
                }
                match value.trim().parse::<Ipv4Addr>() {
                    Ok(ip) => {
                        self.vips.insert(s.clone(), VipClaim { ip, index });
                        self.vip_owner.insert(ip, s.clone());
                    }
                    Err(_) => tracing::warn!(key, value, "VIP claim is not an IPv4 address"),
                }
                Some(s)
            }
            Key::VipIp(ip) => {
                let ip: Ipv4Addr = ip.parse().ok()?;
                self.reservations.insert(
                    ip,
                    Reservation {
                        service: value.trim().to_ascii_lowercase(),
                        index,
                    },
                );
                None
            }
            _ => None,
        }
    }

    fn remove_instance(&mut self, service: &str, id: &str) {
        if let Some(m) = self.services.get_mut(service) {
            m.remove(id);
            if m.is_empty() {
                self.services.remove(service);
            }
        }
    }

    fn remove(&mut self, key: &str) -> Option<String> {
        match classify(key) {
            Key::Services => self.services.clear(),
            Key::Service(s) => {
                let s = service_name(s)?;
                self.services.remove(&s);
                return Some(s);
            }
            Key::Instance(s, id) => {
                let s = service_name(s)?;
                self.remove_instance(&s, id);
                return Some(s);
            }
            Key::Berth => {
                self.routes.clear();
                self.vips.clear();
                self.vip_owner.clear();
                self.reservations.clear();
            }
            Key::Routes => self.routes.clear(),
            Key::Route(s) => {
                let s = service_name(s)?;
                self.routes.remove(&s);
                return Some(s);
            }
            Key::Vips => {
                self.vips.clear();
                self.vip_owner.clear();
                self.reservations.clear();
            }
            Key::VipServices => {
                self.vips.clear();
                self.vip_owner.clear();
            }
            Key::VipService(s) => {
                let s = service_name(s)?;
                if let Some(old) = self.vips.remove(&s) {
                    self.vip_owner.remove(&old.ip);
                }
                return Some(s);
            }
            Key::VipIps => self.reservations.clear(),
            Key::VipIp(ip) => {
                if let Ok(ip) = ip.parse() {
                    self.reservations.remove(&ip);
                }
            }
            Key::Other => {}
        }
        None
    }

    /// Records that the registry has been seen at `index`.
    pub fn observe_index(&mut self, index: u64) {
        self.index = self.index.max(index);
    }

    /// Highest registry index seen.
    pub fn index(&self) -> u64 {
        self.index
    }

    // -- queries --------------------------------------------------------------------------

    /// Whether DNS knows the service: it has instances or a VIP.
    pub fn knows(&self, service: &str) -> bool {
        self.services.contains_key(service) || self.vips.contains_key(service)
    }

    /// Whether the service has any instance (of any color).
    pub fn has_instances(&self, service: &str) -> bool {
        self.services.get(service).is_some_and(|m| !m.is_empty())
    }

    /// The instances that receive traffic: all of them, or only the active color's when the
    /// service has a route record. In instance-id order.
    pub fn active_instances<'a>(
        &'a self,
        service: &str,
    ) -> impl Iterator<Item = (&'a str, &'a Instance)> + 'a {
        let color = self.routes.get(service).cloned();
        self.services
            .get(service)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(move |(_, i)| match &color {
                Some(c) => i.color.as_deref() == Some(c.as_str()),
                None => true,
            })
            .map(|(id, i)| (id.as_str(), i))
    }

    /// The service's VIP, if one is claimed.
    pub fn vip(&self, service: &str) -> Option<Ipv4Addr> {
        self.vips.get(service).map(|c| c.ip)
    }

    /// The service a VIP belongs to.
    pub fn service_of_vip(&self, ip: Ipv4Addr) -> Option<&str> {
        self.vip_owner.get(&ip).map(String::as_str)
    }

    /// All VIP claims.
    pub fn vips(&self) -> &HashMap<String, VipClaim> {
        &self.vips
    }

    /// All address reservations.
    pub fn reservations(&self) -> &HashMap<Ipv4Addr, Reservation> {
        &self.reservations
    }

    /// Whether an address is reserved or claimed by any service.
    pub fn ip_taken(&self, ip: Ipv4Addr) -> bool {
        self.reservations.contains_key(&ip) || self.vip_owner.contains_key(&ip)
    }

    /// Services that have instances but no VIP yet.
    pub fn services_without_vip(&self) -> impl Iterator<Item = &str> + '_ {
        self.services
            .keys()
            .filter(|s| !self.vips.contains_key(*s))
            .map(String::as_str)
    }

    /// Names of the services that have instances, in no particular order.
    pub fn service_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.services.keys().map(String::as_str)
    }

    /// The active color of a blue-green service (`/_berth/routes/<service>`), if it has one.
    pub fn active_color(&self, service: &str) -> Option<&str> {
        self.routes.get(service).map(String::as_str)
    }

    /// All instances of a service, of every color, in instance-id order.
    pub fn instances<'a>(
        &'a self,
        service: &str,
    ) -> impl Iterator<Item = (&'a str, &'a Instance)> + 'a {
        self.services
            .get(service)
            .into_iter()
            .flat_map(|m| m.iter())
            .map(|(id, i)| (id.as_str(), i))
    }

    /// Number of services with instances.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }
}

fn for_each_leaf(node: &Node, f: &mut impl FnMut(&Node)) {
    if node.dir {
        for c in &node.nodes {
            for_each_leaf(c, f);
        }
    } else {
        f(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: &str, key: &str, value: Option<&str>, index: u64) -> Response {
        Response {
            action: action.into(),
            node: Node {
                key: key.into(),
                value: value.map(str::to_string),
                modified_index: index,
                created_index: index,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn dir_ev(action: &str, key: &str) -> Response {
        let mut e = ev(action, key, None, 9);
        e.node.dir = true;
        e
    }

    fn addrs(c: &Catalog, s: &str) -> Vec<String> {
        c.active_instances(s)
            .map(|(_, i)| format!("{}:{}", i.addr, i.port))
            .collect()
    }

    #[test]
    fn instances_follow_events() {
        let mut c = Catalog::new();
        assert_eq!(
            c.apply(&ev("set", "/services/web/a", Some("10.0.0.1:80"), 1)),
            Some("web".into())
        );
        c.apply(&ev(
            "create",
            "/services/Web/b",
            Some(r#"{"host":"10.0.0.2","port":81}"#),
            2,
        ));
        assert_eq!(addrs(&c, "web"), ["10.0.0.1:80", "10.0.0.2:81"]);
        assert!(c.knows("web") && c.has_instances("web"));
        c.apply(&ev("expire", "/services/web/a", None, 3));
        assert_eq!(addrs(&c, "web"), ["10.0.0.2:81"]);
        c.apply(&ev("set", "/services/web/b", Some("garbage"), 4));
        assert!(!c.knows("web"));
        c.apply(&ev("set", "/services/web/b", Some("10.0.0.3:1"), 5));
        c.apply(&dir_ev("delete", "/services/web"));
        assert!(!c.knows("web"));
        c.apply(&ev("set", "/services/db/x", Some("10.0.0.3:1"), 6));
        c.apply(&dir_ev("delete", "/services"));
        assert_eq!(c.service_count(), 0);
        c.apply(&ev("set", "/services/bad_name/x", Some("10.0.0.3:1"), 7));
        c.apply(&ev("set", "/services/x/y/z", Some("10.0.0.3:1"), 8));
        assert_eq!(c.service_count(), 0);
    }

    #[test]
    fn routes_filter_colors() {
        let mut c = Catalog::new();
        c.apply(&ev(
            "set",
            "/services/web/b1",
            Some(r#"{"host":"10.0.0.1","port":80,"color":"blue"}"#),
            1,
        ));
        c.apply(&ev(
            "set",
            "/services/web/g1",
            Some(r#"{"host":"10.0.0.2","port":80,"color":"green"}"#),
            2,
        ));
        c.apply(&ev("set", "/services/web/n", Some("10.0.0.3:80"), 3));
        assert_eq!(addrs(&c, "web").len(), 3);
        c.apply(&ev(
            "set",
            "/_berth/routes/web",
            Some(r#"{"active":"green"}"#),
            4,
        ));
        assert_eq!(addrs(&c, "web"), ["10.0.0.2:80"]);
        c.apply(&ev(
            "compareAndSwap",
            "/_berth/routes/web",
            Some(r#"{"active":"blue"}"#),
            5,
        ));
        assert_eq!(addrs(&c, "web"), ["10.0.0.1:80"]);
        c.apply(&ev("delete", "/_berth/routes/web", None, 6));
        assert_eq!(addrs(&c, "web").len(), 3);
    }

    #[test]
    fn vips_and_reservations() {
        let mut c = Catalog::new();
        c.apply(&ev("create", "/_berth/vips/ip/127.77.0.9", Some("web"), 1));
        assert!(c.ip_taken("127.77.0.9".parse().unwrap()));
        c.apply(&ev(
            "create",
            "/_berth/vips/service/web",
            Some("127.77.0.9"),
            2,
        ));
        assert_eq!(c.vip("web"), Some("127.77.0.9".parse().unwrap()));
        assert_eq!(c.service_of_vip("127.77.0.9".parse().unwrap()), Some("web"));
        assert!(c.knows("web"));
        assert_eq!(c.vips()["web"].index, 2);
        c.apply(&ev("compareAndDelete", "/_berth/vips/service/web", None, 3));
        assert_eq!(c.vip("web"), None);
        assert_eq!(c.service_of_vip("127.77.0.9".parse().unwrap()), None);
        assert!(c.ip_taken("127.77.0.9".parse().unwrap()));
        c.apply(&dir_ev("delete", "/_berth/vips"));
        assert!(!c.ip_taken("127.77.0.9".parse().unwrap()));
    }

    #[test]
    fn loads_trees() {
        let tree: Node = serde_json::from_str(
            r#"{"key":"/services","dir":true,"nodes":[
                {"key":"/services/web","dir":true,"nodes":[
                    {"key":"/services/web/a","value":"10.0.0.1:80","modifiedIndex":3},
                    {"key":"/services/web/b","value":"{\"host\":\"10.0.0.2\",\"port\":80}","modifiedIndex":4}]},
                {"key":"/services/db","dir":true}]}"#,
        )
        .unwrap();
        let mut c = Catalog::new();
        c.apply(&ev("set", "/services/old/a", Some("10.0.0.9:1"), 1));
        c.load_services(Some(&tree));
        assert!(!c.knows("old"));
        assert_eq!(addrs(&c, "web").len(), 2);
        assert!(!c.knows("db"));
        let berth: Node = serde_json::from_str(
            r#"{"key":"/_berth","dir":true,"nodes":[
                {"key":"/_berth/routes","dir":true,"nodes":[{"key":"/_berth/routes/web","value":"{\"active\":\"green\"}"}]},
                {"key":"/_berth/vips","dir":true,"nodes":[
                  {"key":"/_berth/vips/service","dir":true,"nodes":[{"key":"/_berth/vips/service/web","value":"127.77.0.5","modifiedIndex":7}]}]}]}"#,
        )
        .unwrap();
        c.load_berth(Some(&berth));
        assert_eq!(c.vip("web"), Some("127.77.0.5".parse().unwrap()));
        assert_eq!(addrs(&c, "web").len(), 0);
        c.load_berth(None);
        assert_eq!(c.vip("web"), None);
    }
}
