//! Events and the external node representation, serialized exactly like
//! etcd 3.4's v2 HTTP responses (field order, omitted empty fields, RFC 3339
//! expiration).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::timefmt;

/// The action of an event, with etcd's wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "get")]
    Get,
    #[serde(rename = "create")]
    Create,
    #[serde(rename = "set")]
    Set,
    #[serde(rename = "update")]
    Update,
    #[serde(rename = "delete")]
    Delete,
    #[serde(rename = "compareAndSwap")]
    CompareAndSwap,
    #[serde(rename = "compareAndDelete")]
    CompareAndDelete,
    #[serde(rename = "expire")]
    Expire,
}

impl Action {
    /// etcd's wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::Create => "create",
            Action::Set => "set",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::CompareAndSwap => "compareAndSwap",
            Action::CompareAndDelete => "compareAndDelete",
            Action::Expire => "expire",
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

mod expiration_serde {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(ns) => s.serialize_str(&timefmt::format_rfc3339_nano(*ns)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(None),
            Some(s) => timefmt::parse_rfc3339_nano(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("bad expiration {s:?}"))),
        }
    }
}

/// A node as shown to clients (etcd's NodeExtern). Empty / zero fields are
/// omitted from JSON, like Go's `omitempty`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeExtern {
    /// Key path ("" for the root, which is then omitted).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Value of a file (Some("") is written as `"value":""`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// True for directories.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dir: bool,
    /// Expiration time, unix nanoseconds (written as RFC 3339 UTC).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "expiration_serde"
    )]
    pub expiration: Option<i64>,
    /// Remaining seconds, rounded up (omitted when 0).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ttl: i64,
    /// Children of a listed directory (omitted when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeExtern>,
    /// Index of the last modification (omitted when 0).
    #[serde(rename = "modifiedIndex", default, skip_serializing_if = "is_zero_u64")]
    pub modified_index: u64,
    /// Index of creation (omitted when 0).
    #[serde(rename = "createdIndex", default, skip_serializing_if = "is_zero_u64")]
    pub created_index: u64,
}

impl NodeExtern {
    /// A bare node with just key and indexes (etcd's newEvent node).
    pub fn bare(key: &str, modified_index: u64, created_index: u64) -> NodeExtern {
        NodeExtern {
            key: key.to_string(),
            modified_index,
            created_index,
            ..NodeExtern::default()
        }
    }
}

/// A store event. Serializes to etcd's JSON (`action`, `node`, `prevNode`);
/// `etcd_index` (for the X-Etcd-Index header) and `refresh` are not serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub action: Action,
    /// The node after the action (None only after no-value-on-success stripping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeExtern>,
    /// The node before the action, when there was one.
    #[serde(rename = "prevNode", default, skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<NodeExtern>,
    /// Store index to report in X-Etcd-Index.
    #[serde(skip)]
    pub etcd_index: u64,
    /// True for a TTL refresh (such events are never sent to watchers).
    #[serde(skip)]
    pub refresh: bool,
}

impl Event {
    pub(crate) fn new(action: Action, key: &str, modified_index: u64, created_index: u64) -> Event {
        Event {
            action,
            node: Some(NodeExtern::bare(key, modified_index, created_index)),
            prev_node: None,
            etcd_index: 0,
            refresh: false,
        }
    }

    /// True when etcd answers 201 Created: a create, or a set of a new key.
    pub fn is_created(&self) -> bool {
        match self.action {
            Action::Create => true,
            Action::Set => self.prev_node.is_none(),
            _ => false,
        }
    }

    /// Index of the event (the node's modifiedIndex).
    pub fn index(&self) -> u64 {
        self.node.as_ref().map(|n| n.modified_index).unwrap_or(0)
    }

    /// Key of the event's node.
    pub fn key(&self) -> &str {
        self.node.as_ref().map(|n| n.key.as_str()).unwrap_or("")
    }

    /// etcd's `noValueOnSuccess=true` handling: for set, create, update and
    /// compareAndSwap responses both node and prevNode are dropped, leaving
    /// `{"action":"set"}`. Other actions are untouched. Decide the status
    /// with [`Event::is_created`] *before* stripping, as etcd does.
    pub fn strip_value_for_no_value_on_success(&mut self) {
        if matches!(
            self.action,
            Action::Set | Action::CompareAndSwap | Action::Create | Action::Update
        ) {
            self.node = None;
            self.prev_node = None;
        }
    }

    /// The exact response body etcd writes for this event (Go JSON plus "\n").
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = super::json::to_go_json(self);
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(e: &Event) -> String {
        String::from_utf8(e.to_json()).unwrap()
    }

    #[test]
    fn set_event_json() {
        let mut e = Event::new(Action::Set, "/foo", 6, 6);
        e.node.as_mut().unwrap().value = Some("baz".into());
        let mut p = NodeExtern::bare("/foo", 5, 5);
        p.value = Some("bar".into());
        e.prev_node = Some(p);
        assert_eq!(
            s(&e),
            "{\"action\":\"set\",\"node\":{\"key\":\"/foo\",\"value\":\"baz\",\"modifiedIndex\":6,\"createdIndex\":6},\"prevNode\":{\"key\":\"/foo\",\"value\":\"bar\",\"modifiedIndex\":5,\"createdIndex\":5}}\n"
        );
        assert!(!e.is_created());
    }

    #[test]
    fn root_get_omits_key_and_indexes() {
        let mut e = Event::new(Action::Get, "", 0, 0);
        e.node.as_mut().unwrap().dir = true;
        assert_eq!(s(&e), "{\"action\":\"get\",\"node\":{\"dir\":true}}\n");
    }

    #[test]
    fn field_order_with_ttl_and_nodes() {
        let mut e = Event::new(Action::Get, "/d", 4, 4);
        {
            let n = e.node.as_mut().unwrap();
            n.dir = true;
            n.expiration = timefmt::parse_rfc3339_nano("2026-11-22T14:48:00.948747781Z");
            n.ttl = 100;
            let mut c = NodeExtern::bare("/d/a", 5, 5);
            c.value = Some(String::new());
            n.nodes.push(c);
        }
        assert_eq!(
            s(&e),
            "{\"action\":\"get\",\"node\":{\"key\":\"/d\",\"dir\":true,\"expiration\":\"2026-11-22T14:48:00.948747781Z\",\"ttl\":100,\"nodes\":[{\"key\":\"/d/a\",\"value\":\"\",\"modifiedIndex\":5,\"createdIndex\":5}],\"modifiedIndex\":4,\"createdIndex\":4}}\n"
        );
    }

    #[test]
    fn negative_ttl_is_written_and_zero_ttl_omitted() {
        let mut e = Event::new(Action::Get, "/f", 1, 1);
        e.node.as_mut().unwrap().value = Some("z".into());
        e.node.as_mut().unwrap().expiration = Some(0);
        assert_eq!(
            s(&e),
            "{\"action\":\"get\",\"node\":{\"key\":\"/f\",\"value\":\"z\",\"expiration\":\"1970-01-01T00:00:00Z\",\"modifiedIndex\":1,\"createdIndex\":1}}\n"
        );
        e.node.as_mut().unwrap().ttl = -3;
        assert!(s(&e).contains("\"ttl\":-3,"));
    }

    #[test]
    fn no_value_on_success_strips_writes_only() {
        let mut e = Event::new(Action::Set, "/foo", 8, 8);
        e.prev_node = Some(NodeExtern::bare("/foo", 7, 7));
        e.strip_value_for_no_value_on_success();
        assert_eq!(s(&e), "{\"action\":\"set\"}\n");
        let mut d = Event::new(Action::Delete, "/foo", 9, 8);
        d.strip_value_for_no_value_on_success();
        assert!(d.node.is_some());
        let mut c = Event::new(Action::CompareAndDelete, "/foo", 9, 8);
        c.strip_value_for_no_value_on_success();
        assert!(c.node.is_some());
    }

    #[test]
    fn created_status() {
        assert!(Event::new(Action::Create, "/a", 1, 1).is_created());
        assert!(Event::new(Action::Set, "/a", 1, 1).is_created());
        assert!(!Event::new(Action::Update, "/a", 1, 1).is_created());
        assert!(!Event::new(Action::Delete, "/a", 1, 1).is_created());
    }

    #[test]
    fn serde_roundtrip() {
        let mut e = Event::new(Action::CompareAndSwap, "/a", 3, 2);
        e.node.as_mut().unwrap().expiration = Some(1_795_000_000_123_456_789);
        e.node.as_mut().unwrap().ttl = 5;
        let j = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&j).unwrap();
        assert_eq!(back, e);
    }
}
