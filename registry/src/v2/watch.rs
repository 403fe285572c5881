//! Watchers: registration, etcd's notification rules, delivery through
//! bounded channels.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::event::Event;
use super::path;

/// Capacity of each watcher's channel (etcd uses 100). A watcher whose
/// channel is full when an event arrives is dropped, closing the channel.
pub const WATCH_CHANNEL_CAPACITY: usize = 100;

/// An event as watchers receive it: one allocation shared by every watcher it wakes, its
/// JSON body rendered once, by the first watcher that sends it.
#[derive(Debug)]
pub struct Delivered {
    event: Event,
    json: OnceLock<Bytes>,
}

impl Delivered {
    pub fn new(event: Event) -> Delivered {
        Delivered {
            event,
            json: OnceLock::new(),
        }
    }

    /// The response body for this event (etcd's JSON and a newline).
    pub fn json(&self) -> Bytes {
        self.json
            .get_or_init(|| Bytes::from(self.event.to_json()))
            .clone()
    }
}

impl std::ops::Deref for Delivered {
    type Target = Event;
    fn deref(&self) -> &Event {
        &self.event
    }
}

/// What a watcher's channel carries.
pub type WatchEvent = Arc<Delivered>;

/// The result of [`crate::v2::Store::watch`].
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Watch {
    /// The waitIndex is in the past and the history holds a matching event.
    /// Its `etcd_index` is the store index at watch time (etcd's X-Etcd-Index
    /// for this response). etcd does not register a watcher in this case,
    /// even for `stream=true`: a streaming client gets this one event and
    /// then nothing until it disconnects or times out.
    Immediate(Event),
    /// A registered watcher. Events arrive on `rx`; for a one-shot watcher
    /// the channel closes after the first event, for a stream watcher it
    /// closes if the watcher falls 100 events behind. Call
    /// [`crate::v2::Store::unwatch`] with `id` when the client goes away.
    /// `etcd_index` is the store index at watch time (X-Etcd-Index header).
    Pending {
        id: u64,
        rx: mpsc::Receiver<WatchEvent>,
        etcd_index: u64,
    },
}

impl Watch {
    /// The X-Etcd-Index to send for this watch response.
    pub fn etcd_index(&self) -> u64 {
        match self {
            Watch::Immediate(e) => e.etcd_index,
            Watch::Pending { etcd_index, .. } => *etcd_index,
        }
    }
}

#[derive(Debug)]
struct Watcher {
    tx: mpsc::Sender<WatchEvent>,
    recursive: bool,
    stream: bool,
    since_index: u64,
}

/// Registered watchers, keyed by watched path in registration order.
#[derive(Debug, Default)]
pub(crate) struct WatcherHub {
    /// Per watched path, by id: ids grow, so this is registration order.
    watchers: BTreeMap<String, BTreeMap<u64, Watcher>>,
    paths: HashMap<u64, String>,
    next_id: u64,
}

/// etcd's isHidden(watchPath, keyPath): is the changed key hidden from a
/// watcher at `watch_path` (a `_` component below the watched path)?
pub(crate) fn is_hidden(watch_path: &str, key_path: &str) -> bool {
    if watch_path.len() > key_path.len() {
        return false;
    }
    let after = path::clean(&format!("/{}", &key_path[watch_path.len()..]));
    after.contains("/_")
}

impl WatcherHub {
    /// Number of registered watchers.
    pub fn count(&self) -> usize {
        self.paths.len()
    }

    /// Registers a watcher; `since_index` is already resolved (never 0).
    pub fn register(
        &mut self,
        key: &str,
        recursive: bool,
        stream: bool,
        since_index: u64,
    ) -> (u64, mpsc::Receiver<WatchEvent>) {
        self.next_id += 1;
        let id = self.next_id;
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL_CAPACITY);
        self.watchers.entry(key.to_string()).or_default().insert(
            id,
            Watcher {
                tx,
                recursive,
                stream,
                since_index,
            },
        );
        self.paths.insert(id, key.to_string());
        (id, rx)
    }

    /// Removes a watcher (no-op if already gone). Dropping its sender closes
    /// the channel once buffered events are drained.
    pub fn remove(&mut self, id: u64) {
        if let Some(p) = self.paths.remove(&id) {
            if let Some(list) = self.watchers.get_mut(&p) {
                list.remove(&id);
                if list.is_empty() {
                    self.watchers.remove(&p);
                }
            }
        }
    }

    /// Notifies the watchers of `node_path` about `e` (etcd's notifyWatchers).
    /// `deleted` is set for paths removed together with a deleted directory.
    pub fn notify_watchers(&mut self, e: &WatchEvent, node_path: &str, deleted: bool) {
        let Some(list) = self.watchers.get_mut(node_path) else {
            return;
        };
        let key = e.key();
        let original_path = key == node_path;
        let visible = original_path || !is_hidden(node_path, key);
        if !visible {
            return;
        }
        // One pass: send, and drop one-shot watchers that got the event and watchers that
        // cannot take it (full: fell behind; closed: nobody listens).
        let paths = &mut self.paths;
        list.retain(|&id, w| {
            let interested =
                (w.recursive || original_path || deleted) && e.index() >= w.since_index;
            let keep = !interested || (w.tx.try_send(Arc::clone(e)).is_ok() && w.stream);
            if !keep {
                paths.remove(&id);
            }
            keep
        });
        if list.is_empty() {
            self.watchers.remove(node_path);
        }
    }

    /// Notifies watchers on every ancestor of the event's key, root first
    /// (etcd's watcherHub.notify without the history part).
    pub fn notify(&mut self, e: &WatchEvent) {
        if self.watchers.is_empty() {
            return;
        }
        let key = e.key().to_string();
        self.notify_watchers(e, "/", false);
        let mut curr = String::new();
        for comp in path::components(&key) {
            curr.push('/');
            curr.push_str(comp);
            self.notify_watchers(e, &curr, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::event::Action;

    fn ev(key: &str, idx: u64) -> WatchEvent {
        Arc::new(Delivered::new(Event::new(Action::Set, key, idx, idx)))
    }

    #[test]
    fn hidden_rules() {
        assert!(is_hidden("/", "/_x"));
        assert!(is_hidden("/w", "/w/_hid"));
        assert!(is_hidden("/w", "/w/sub/_hid2/x"));
        assert!(!is_hidden("/w", "/w/sub"));
        assert!(!is_hidden("/w/_h/deep", "/w")); // deeper watch path (directory delete)
        assert!(!is_hidden("/_a", "/_a/b")); // hidden part above the watch path
    }

    #[test]
    fn one_shot_removed_after_first_event() {
        let mut hub = WatcherHub::default();
        let (_, mut rx) = hub.register("/a", false, false, 1);
        assert_eq!(hub.count(), 1);
        hub.notify(&ev("/a", 1));
        assert_eq!(hub.count(), 0);
        assert_eq!(rx.try_recv().unwrap().index(), 1);
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn non_recursive_ignores_children_recursive_sees_them() {
        let mut hub = WatcherHub::default();
        let (_, mut plain) = hub.register("/d", false, true, 1);
        let (_, mut rec) = hub.register("/d", true, true, 1);
        hub.notify(&ev("/d/x", 1));
        assert!(plain.try_recv().is_err());
        assert_eq!(rec.try_recv().unwrap().key(), "/d/x");
        hub.notify(&ev("/d/_h", 2));
        assert!(rec.try_recv().is_err());
        assert_eq!(hub.count(), 2);
    }

    #[test]
    fn since_index_filters() {
        let mut hub = WatcherHub::default();
        let (_, mut rx) = hub.register("/a", false, false, 5);
        hub.notify(&ev("/a", 3));
        assert!(rx.try_recv().is_err());
        assert_eq!(hub.count(), 1);
        hub.notify(&ev("/a", 5));
        assert_eq!(rx.try_recv().unwrap().index(), 5);
    }

    #[test]
    fn full_channel_drops_stream_watcher() {
        let mut hub = WatcherHub::default();
        let (_, mut rx) = hub.register("/a", false, true, 1);
        for i in 1..=101 {
            hub.notify(&ev("/a", i));
        }
        assert_eq!(hub.count(), 0);
        let mut n = 0;
        while let Ok(e) = rx.try_recv() {
            n += 1;
            assert_eq!(e.index(), n);
        }
        assert_eq!(n, 100);
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn closed_receiver_is_dropped_and_unwatch_works() {
        let mut hub = WatcherHub::default();
        let (_, rx) = hub.register("/a", false, true, 1);
        drop(rx);
        hub.notify(&ev("/a", 1));
        assert_eq!(hub.count(), 0);
        let (id, _rx) = hub.register("/b", false, true, 1);
        hub.remove(id);
        hub.remove(id);
        assert_eq!(hub.count(), 0);
    }
}
