//! The bounded history of recent events that watchers with a waitIndex in the
//! past are answered from (etcd keeps the last 1000).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::error::V2Error;
use super::event::{Action, Event};

/// Number of events etcd retains.
pub const HISTORY_CAPACITY: usize = 1000;

/// An event as kept in the history, including whether it was a refresh
/// (refresh events fill an index but are never matched by watchers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HistoryEntry {
    #[serde(with = "event_in_snapshot")]
    pub event: Event,
    #[serde(default)]
    pub refresh: bool,
}

/// How a history event is kept in a snapshot. [`Event`]'s serde attributes describe etcd's
/// JSON, which leaves empty fields out; a binary format (the snapshot's, see
/// `raft::codec`) cannot skip fields, so there each event is kept as its JSON text. At most
/// [`HISTORY_CAPACITY`] events, so this costs little next to the tree.
mod event_in_snapshot {
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    use super::Event;

    pub fn serialize<S: Serializer>(e: &Event, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            e.serialize(s)
        } else {
            s.serialize_str(&serde_json::to_string(e).map_err(serde::ser::Error::custom)?)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Event, D::Error> {
        if d.is_human_readable() {
            Event::deserialize(d)
        } else {
            let text = String::deserialize(d)?;
            serde_json::from_str(&text).map_err(D::Error::custom)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventHistory {
    entries: VecDeque<HistoryEntry>,
    capacity: usize,
    /// Index of the oldest retained event (0 while empty).
    start_index: u64,
    /// Index of the newest retained event (0 while empty).
    last_index: u64,
}

impl Default for EventHistory {
    fn default() -> EventHistory {
        EventHistory::new(HISTORY_CAPACITY)
    }
}

impl EventHistory {
    pub fn new(capacity: usize) -> EventHistory {
        EventHistory {
            entries: VecDeque::with_capacity(capacity.min(HISTORY_CAPACITY)),
            capacity: capacity.max(1),
            start_index: 0,
            last_index: 0,
        }
    }

    pub fn add(&mut self, event: Event) {
        let refresh = event.refresh;
        self.last_index = event.index();
        self.entries.push_back(HistoryEntry { event, refresh });
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
        self.start_index = self.entries.front().map(|e| e.event.index()).unwrap_or(0);
    }

    #[cfg(test)]
    pub fn start_index(&self) -> u64 {
        self.start_index
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// First event at or after `index` that a watcher on `key` would see.
    /// Ok(None) means "nothing yet" (the watcher must wait). The error's
    /// index is 0; the caller fills in the store index.
    pub fn scan(&self, key: &str, recursive: bool, index: u64) -> Result<Option<Event>, V2Error> {
        if index < self.start_index {
            return Err(V2Error::event_index_cleared(self.start_index, index, 0));
        }
        if index > self.last_index {
            return Ok(None);
        }
        let prefix = if key.ends_with('/') {
            key.to_string()
        } else {
            format!("{key}/")
        };
        let offset = (index - self.start_index) as usize;
        for entry in self.entries.iter().skip(offset) {
            if entry.refresh {
                continue;
            }
            let e = &entry.event;
            let ekey = e.key();
            let mut ok = ekey == key || (recursive && ekey.starts_with(&prefix));
            // A deleted/expired directory matches every key that textually
            // starts with its path (etcd uses a plain prefix test here, so
            // deleting "/w" also answers a watcher on "/wx").
            if matches!(e.action, Action::Delete | Action::Expire) {
                if let Some(prev) = &e.prev_node {
                    if prev.dir && key.starts_with(prev.key.as_str()) {
                        ok = true;
                    }
                }
            }
            if ok {
                return Ok(Some(e.clone()));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: Action, key: &str, idx: u64) -> Event {
        Event::new(action, key, idx, idx)
    }

    #[test]
    fn empty_history_waits() {
        let h = EventHistory::default();
        assert_eq!(h.scan("/a", false, 1).unwrap(), None);
    }

    #[test]
    fn finds_first_matching_event_from_index() {
        let mut h = EventHistory::default();
        h.add(ev(Action::Set, "/a", 1));
        h.add(ev(Action::Set, "/b", 2));
        h.add(ev(Action::Set, "/a", 3));
        assert_eq!(h.scan("/a", false, 1).unwrap().unwrap().index(), 1);
        assert_eq!(h.scan("/a", false, 2).unwrap().unwrap().index(), 3);
        assert_eq!(h.scan("/a", false, 4).unwrap(), None);
        assert_eq!(h.scan("/c", false, 1).unwrap(), None);
        assert_eq!(h.scan("/", true, 2).unwrap().unwrap().key(), "/b");
    }

    #[test]
    fn recursive_needs_slash_boundary() {
        let mut h = EventHistory::default();
        h.add(ev(Action::Set, "/foobar", 1));
        assert_eq!(h.scan("/foo", true, 1).unwrap(), None);
        h.add(ev(Action::Set, "/foo/bar", 2));
        assert_eq!(h.scan("/foo", true, 1).unwrap().unwrap().index(), 2);
    }

    #[test]
    fn deleted_dir_matches_by_plain_prefix() {
        let mut h = EventHistory::default();
        let mut e = ev(Action::Delete, "/w", 1);
        e.node.as_mut().unwrap().dir = true;
        let mut p = super::super::event::NodeExtern::bare("/w", 0, 0);
        p.dir = true;
        e.prev_node = Some(p);
        h.add(e);
        assert!(h.scan("/w/sub/k2", false, 1).unwrap().is_some());
        assert!(h.scan("/wx", false, 1).unwrap().is_some()); // etcd quirk, verified
        assert!(h.scan("/v", false, 1).unwrap().is_none());
    }

    #[test]
    fn refresh_events_are_skipped() {
        let mut h = EventHistory::default();
        let mut e = ev(Action::Set, "/a", 1);
        e.refresh = true;
        h.add(e);
        h.add(ev(Action::Set, "/a", 2));
        assert_eq!(h.scan("/a", false, 1).unwrap().unwrap().index(), 2);
    }

    #[test]
    fn cleared_after_capacity() {
        let mut h = EventHistory::default();
        for i in 1..=1053u64 {
            h.add(ev(Action::Set, "/bulk", i));
        }
        assert_eq!(h.len(), 1000);
        assert_eq!(h.start_index(), 54);
        let err = h.scan("/w", false, 42).unwrap_err();
        assert_eq!(err.code, 401);
        assert_eq!(err.cause, "the requested history has been cleared [54/42]");
        assert!(h.scan("/bulk", false, 54).unwrap().is_some());
    }
}
