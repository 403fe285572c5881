//! The deterministic v2 key store: applies replicated commands, answers
//! reads and registers watchers, with etcd 3.4's semantics.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::V2Error;
use super::event::{Action, Event};
use super::history::EventHistory;
use super::node::{CompareResult, LookupError, Name, Node, Text, Tree};
use super::path;
use super::request::{KeyRequest, Method};
use super::stats::StoreStats;
use super::watch::{Delivered, Watch, WatcherHub};

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Expiration times before 2000-01-01T00:00:00Z are treated as "no TTL" by
/// etcd's create paths (set / create), in unix nanoseconds.
pub const MIN_EXPIRE_TIME: i64 = 946_684_800 * NANOS_PER_SEC;

/// What goes through the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A PUT, POST or DELETE (or a quorum GET). `now` is the proposing
    /// leader's clock in unix nanoseconds; a TTL expires at now + ttl.
    Key { req: KeyRequest, now: i64 },
    /// Remove every key whose expiration is <= `now` (etcd's SYNC).
    Expire { now: i64 },
}

#[derive(Clone, Copy)]
enum Op {
    Set,
    Create,
    Update,
    CompareAndSwap,
    Delete,
    CompareAndDelete,
}

/// (expiration, path) of every node with a TTL, earliest first. A persistent set, like the
/// tree's directories, so a snapshot copies it in constant time; it encodes exactly as the
/// `BTreeSet<(i64, String)>` it replaced (a sequence of pairs).
type TtlQueue = imbl::OrdSet<(i64, Text)>;

/// A node as a read found it, with the store's index at that moment ([`Store::read_view`]).
pub struct ReadView {
    path: String,
    node: Node,
    etcd_index: u64,
}

impl ReadView {
    /// Whether the node read is a directory (its answer lists its children).
    pub fn is_dir(&self) -> bool {
        self.node.is_dir()
    }

    /// etcd's answer to the read; `recursive` lists every level below a directory.
    pub fn into_event(self, recursive: bool, now: i64) -> Event {
        let n = &self.node;
        let mut e = Event::new(
            Action::Get,
            visible_key(&self.path),
            n.modified_index,
            n.created_index,
        );
        e.etcd_index = self.etcd_index;
        if let Some(ext) = e.node.as_mut() {
            n.load_into(ext, recursive, now);
        }
        e
    }
}

/// What a caller of `internal_create` already knows is at the path.
#[derive(Clone, Copy)]
enum Known {
    /// Look it up.
    Unknown,
    /// Nothing: the caller's lookup found no such key.
    Absent,
    /// A file, which the caller may replace (it reports the previous node itself).
    File,
}

/// The v2 store. Serializable for snapshots (tree, index, event history,
/// expiration queue, statistics); watchers are not part of snapshots.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Store {
    tree: Tree,
    current_index: u64,
    history: EventHistory,
    /// (expiration, path) of every node with a TTL, earliest first.
    ttl_keys: TtlQueue,
    stats: StoreStats,
    #[serde(skip)]
    hub: WatcherHub,
}

/// The key clients see for a store path (the root shows as "").
fn visible_key(p: &str) -> &str {
    if p == "/" {
        ""
    } else {
        p
    }
}

impl Store {
    /// An empty store at index 0.
    pub fn new() -> Store {
        Store::default()
    }

    /// The current index (etcd's CurrentIndex / X-Etcd-Index).
    pub fn index(&self) -> u64 {
        self.current_index
    }

    /// A copy of everything that goes into a snapshot (no watchers).
    pub fn clone_without_watchers(&self) -> Store {
        Store {
            tree: self.tree.clone(),
            current_index: self.current_index,
            history: self.history.clone(),
            ttl_keys: self.ttl_keys.clone(),
            stats: self.stats.clone(),
            hub: WatcherHub::default(),
        }
    }

    /// Replaces the state by a snapshot's while keeping the registered
    /// watchers (as etcd's Recovery does).
    pub fn restore(&mut self, snapshot: Store) {
        let hub = std::mem::take(&mut self.hub);
        *self = snapshot;
        self.hub = hub;
    }

    /// Applies a replicated command. Deterministic: the only clock is the
    /// command's `now`. A `Key` command yields exactly one event (or an
    /// error; a failed write leaves tree and index untouched but is counted
    /// in the stats as etcd does). `Expire` yields the expire events.
    pub fn apply(&mut self, cmd: &Command) -> Result<Vec<Event>, V2Error> {
        match cmd {
            Command::Key { req, now } => self.apply_key(req, *now).map(|e| vec![e]),
            Command::Expire { now } => Ok(self.delete_expired_keys(*now)),
        }
    }

    fn apply_key(&mut self, req: &KeyRequest, now: i64) -> Result<Event, V2Error> {
        // etcd: expiration = now + Duration(ttl)*Second, in wrapping int64
        // nanoseconds; 0 means none.
        let expire = req
            .ttl
            .map(|t| now.wrapping_add((t as i64).wrapping_mul(NANOS_PER_SEC)))
            .filter(|&t| t != 0);
        let path = path::clean(&req.path);
        let compare = req.prev_index > 0 || !req.prev_value.is_empty();
        match req.method {
            Method::Post => self.create(&path, req.dir, &req.val, true, expire, now),
            Method::Put => match req.prev_exist {
                Some(true) if !compare => self.update(&path, &req.val, expire, req.refresh, now),
                Some(true) => self.compare_and_swap(
                    &path,
                    &req.prev_value,
                    req.prev_index,
                    &req.val,
                    expire,
                    req.refresh,
                    now,
                ),
                Some(false) => self.create(&path, req.dir, &req.val, false, expire, now),
                None if compare => self.compare_and_swap(
                    &path,
                    &req.prev_value,
                    req.prev_index,
                    &req.val,
                    expire,
                    req.refresh,
                    now,
                ),
                None => self.set(&path, req.dir, &req.val, expire, req.refresh, now),
            },
            Method::Delete if compare => {
                self.compare_and_delete(&path, &req.prev_value, req.prev_index, now)
            }
            Method::Delete => self.delete(&path, req.dir, req.recursive, now),
            Method::Get | Method::Head => {
                let r = self.get(&path, req.recursive, req.sorted, now);
                self.count_get(r.is_ok());
                r
            }
        }
    }

    /// Reads a key. `sorted` is accepted for compatibility: listings are
    /// always in key order. Does not touch the stats; call
    /// [`Store::count_get`] afterwards to count it as etcd does.
    pub fn get(
        &self,
        path: &str,
        recursive: bool,
        _sorted: bool,
        now: i64,
    ) -> Result<Event, V2Error> {
        Ok(self.read_view(path)?.into_event(recursive, now))
    }

    /// What a read of `path` answers, taken in O(1): the node is a copy that shares its
    /// subtree with the store, so a caller can take it under the state lock and build the
    /// answer (every node of a recursive listing) after releasing the lock.
    pub fn read_view(&self, path: &str) -> Result<ReadView, V2Error> {
        let p = path::clean(path);
        let node = self.lookup(&p)?.clone();
        Ok(ReadView {
            path: p,
            node,
            etcd_index: self.current_index,
        })
    }

    /// Counts a served read (getsSuccess / getsFail).
    pub fn count_get(&mut self, ok: bool) {
        if ok {
            self.stats.get_success += 1;
        } else {
            self.stats.get_fail += 1;
        }
    }

    /// Starts a watch. `since_index` 0 means "from the next index".
    pub fn watch(
        &mut self,
        path: &str,
        recursive: bool,
        stream: bool,
        since_index: u64,
    ) -> Result<Watch, V2Error> {
        let key = path::clean(path);
        let since = if since_index == 0 {
            self.current_index + 1
        } else {
            since_index
        };
        let ci = self.current_index;
        match self.history.scan(&key, recursive, since) {
            Err(mut e) => {
                e.index = ci;
                Err(e)
            }
            Ok(Some(mut ev)) => {
                ev.etcd_index = ci;
                ev.refresh = false;
                Ok(Watch::Immediate(ev))
            }
            Ok(None) => {
                let (id, rx) = self.hub.register(&key, recursive, stream, since);
                Ok(Watch::Pending {
                    id,
                    rx,
                    etcd_index: ci,
                })
            }
        }
    }

    /// Removes a watcher (e.g. the client disconnected). Unknown ids are ignored.
    pub fn unwatch(&mut self, id: u64) {
        self.hub.remove(id);
    }

    /// Number of registered watchers.
    pub fn watcher_count(&self) -> usize {
        self.hub.count()
    }

    /// Earliest expiration (unix ns) of any key, if some key has a TTL.
    pub fn next_expiration(&self) -> Option<i64> {
        self.ttl_keys.get_min().map(|(t, _)| *t)
    }

    /// True if some key has a TTL (etcd's HasTTLKeys).
    pub fn has_ttl_keys(&self) -> bool {
        !self.ttl_keys.is_empty()
    }

    /// The statistics, with the current watcher count.
    pub fn stats(&self) -> StoreStats {
        let mut s = self.stats.clone();
        s.watchers = self.hub.count() as u64;
        s
    }

    // ----- internals -------------------------------------------------------

    fn bump(&mut self, op: Op, ok: bool) {
        let s = &mut self.stats;
        let field = match (op, ok) {
            (Op::Set, true) => &mut s.set_success,
            (Op::Set, false) => &mut s.set_fail,
            (Op::Create, true) => &mut s.create_success,
            (Op::Create, false) => &mut s.create_fail,
            (Op::Update, true) => &mut s.update_success,
            (Op::Update, false) => &mut s.update_fail,
            (Op::CompareAndSwap, true) => &mut s.compare_and_swap_success,
            (Op::CompareAndSwap, false) => &mut s.compare_and_swap_fail,
            (Op::Delete, true) => &mut s.delete_success,
            (Op::Delete, false) => &mut s.delete_fail,
            (Op::CompareAndDelete, true) => &mut s.compare_and_delete_success,
            (Op::CompareAndDelete, false) => &mut s.compare_and_delete_fail,
        };
        *field += 1;
    }

    fn lookup(&self, p: &str) -> Result<&Node, V2Error> {
        self.tree.0.lookup(p).map_err(|e| match e {
            LookupError::NotDir(p) => V2Error::not_dir(p, self.current_index),
            LookupError::NotFound(p) => V2Error::key_not_found(p, self.current_index),
        })
    }

    fn node_mut(&mut self, p: &str) -> &mut Node {
        self.tree
            .0
            .lookup_mut(p)
            .expect("node checked to exist before mutation")
    }

    /// Records an event and notifies watchers (or, for a refresh, only records it).
    fn publish(&mut self, e: &Event) {
        self.history.add(e.clone());
        if !e.refresh && self.hub.count() > 0 {
            self.hub.notify(&Arc::new(Delivered::new(e.clone())));
        }
    }

    fn set_ttl(&mut self, p: &str, old: Option<i64>, new: Option<i64>) {
        if let Some(o) = old {
            self.ttl_keys.remove(&(o, Text::from(p)));
        }
        if let Some(n) = new {
            self.ttl_keys.insert((n, Text::from(p)));
        }
    }

    /// Detaches the node at `p` with everything below it, dropping their
    /// TTL entries and telling watchers of each removed path (post-order).
    fn remove_subtree(&mut self, p: &str, e: &Event) {
        let mut removed = Vec::new();
        if let Ok(n) = self.tree.0.lookup(p) {
            n.removal_order(&mut removed);
        }
        self.tree.0.remove_at(p);
        let delivered = (self.hub.count() > 0).then(|| Arc::new(Delivered::new(e.clone())));
        for (rp, exp) in removed {
            if let Some(exp) = exp {
                self.ttl_keys.remove(&(exp, Text::from(rp.as_str())));
            }
            if let Some(d) = &delivered {
                self.hub.notify_watchers(d, &rp, true);
            }
        }
    }

    /// Creates missing directories along `dir_path` (etcd's checkDir walk) under `root`, and
    /// returns the last one.
    fn ensure_dirs<'a>(
        root: &'a mut Node,
        dir_path: &str,
        new_index: u64,
        current_index: u64,
    ) -> Result<&'a mut Node, V2Error> {
        let mut curr = root;
        for name in path::components(dir_path) {
            let parent_path = curr.path.clone();
            let children = curr
                .children
                .as_mut()
                .expect("walk only descends into directories");
            let child = children
                .entry(Name::from(name))
                .or_insert_with(|| Node::new_dir(path::join(&parent_path, name), new_index, None));
            if !child.is_dir() {
                return Err(V2Error::not_dir(child.path.to_string(), current_index));
            }
            curr = child;
        }
        Ok(curr)
    }

    /// etcd's internalCreate. `known` is what the caller already found at the path, so a
    /// large directory is searched once less.
    #[allow(clippy::too_many_arguments)]
    fn internal_create(
        &mut self,
        node_path: &str,
        dir: bool,
        value: &str,
        unique: bool,
        replace: bool,
        expire: Option<i64>,
        action: Action,
        now: i64,
        known: Known,
    ) -> Result<Event, V2Error> {
        let ci = self.current_index;
        let next = ci + 1;
        let node_path = if unique {
            path::clean(&format!("{node_path}/{next:020}"))
        } else {
            path::clean(node_path)
        };
        if node_path == "/" {
            return Err(V2Error::root_read_only(ci));
        }
        let expire = expire.filter(|&t| t >= MIN_EXPIRE_TIME);
        let (dir_name, name) = path::split_last(&node_path);
        let parent = match Self::ensure_dirs(&mut self.tree.0, dir_name, next, ci) {
            Ok(parent) => parent,
            Err(err) => {
                // etcd counts a failed set here, whatever the operation.
                self.stats.set_fail += 1;
                return Err(err);
            }
        };
        let children = parent
            .children
            .as_mut()
            .expect("ensure_dirs returns a directory");
        let mut e = Event::new(action, &node_path, next, next);
        let existing = match known {
            Known::Absent | Known::File => None,
            Known::Unknown => children.get(name),
        };
        if let Some(existing) = existing {
            if !replace {
                return Err(V2Error::node_exist(node_path, ci));
            }
            if existing.is_dir() {
                return Err(V2Error::not_file(node_path, ci));
            }
            e.prev_node = Some(existing.repr(false, now));
        }
        let node = if dir {
            Node::new_dir(node_path.as_str(), next, expire)
        } else {
            Node::new_file(node_path.as_str(), value, next, expire)
        };
        if let Some(ext) = e.node.as_mut() {
            if dir {
                ext.dir = true;
            } else {
                ext.value = Some(value.to_string());
            }
            let (exp, ttl) = node.expiration_and_ttl(now);
            ext.expiration = exp;
            ext.ttl = ttl;
        }
        // Replaces a file found above (the checks ruled out anything else).
        let old = children.insert(Name::from(name), node);
        self.set_ttl(&node_path, old.and_then(|o| o.expire_time), expire);
        self.current_index = next;
        Ok(e)
    }

    fn set(
        &mut self,
        p: &str,
        dir: bool,
        value: &str,
        expire: Option<i64>,
        refresh: bool,
        now: i64,
    ) -> Result<Event, V2Error> {
        let prev = match self.lookup(p) {
            Ok(n) => Some((n.value.clone(), n.repr(false, now), n.is_dir())),
            Err(e) if e.code == super::error::ECODE_KEY_NOT_FOUND && !refresh => None,
            Err(e) => {
                self.bump(Op::Set, false);
                return Err(e);
            }
        };
        let refreshed = match (&prev, refresh) {
            (Some((old, _, _)), true) => Some(old.clone()),
            _ => None,
        };
        let value = refreshed.as_deref().unwrap_or(value);
        let known = match &prev {
            None => Known::Absent,
            Some((_, _, false)) => Known::File,
            Some((_, _, true)) => Known::Unknown,
        };
        let created =
            self.internal_create(p, dir, value, false, true, expire, Action::Set, now, known);
        self.finish_create(Op::Set, created, |e| {
            e.prev_node = prev.map(|(_, ext, _)| ext);
            e.refresh = refresh;
        })
    }

    fn create(
        &mut self,
        p: &str,
        dir: bool,
        value: &str,
        unique: bool,
        expire: Option<i64>,
        now: i64,
    ) -> Result<Event, V2Error> {
        let created = self.internal_create(
            p,
            dir,
            value,
            unique,
            false,
            expire,
            Action::Create,
            now,
            Known::Unknown,
        );
        self.finish_create(Op::Create, created, |_| {})
    }

    /// The common end of set and create: count the outcome and, on success, stamp the
    /// event with the store index, let `fill` add what the action reports, and publish it.
    fn finish_create(
        &mut self,
        op: Op,
        created: Result<Event, V2Error>,
        fill: impl FnOnce(&mut Event),
    ) -> Result<Event, V2Error> {
        let mut e = match created {
            Ok(e) => e,
            Err(err) => {
                self.bump(op, false);
                return Err(err);
            }
        };
        e.etcd_index = self.current_index;
        fill(&mut e);
        self.bump(op, true);
        self.publish(&e);
        Ok(e)
    }

    fn update(
        &mut self,
        p: &str,
        new_value: &str,
        expire: Option<i64>,
        refresh: bool,
        now: i64,
    ) -> Result<Event, V2Error> {
        let ci = self.current_index;
        if p == "/" {
            // etcd returns this error without counting it as a failure
            self.bump(Op::Update, true);
            return Err(V2Error::root_read_only(ci));
        }
        let (is_dir, old_value, created, old_expire, prev) = match self.lookup(p) {
            Ok(n) => (
                n.is_dir(),
                n.value.clone(),
                n.created_index,
                n.expire_time,
                n.repr(false, now),
            ),
            Err(e) => {
                self.bump(Op::Update, false);
                return Err(e);
            }
        };
        if is_dir && !new_value.is_empty() {
            self.bump(Op::Update, true); // etcd quirk: counted as success
            return Err(V2Error::not_file(p, ci));
        }
        let next = ci + 1;
        let new_value: Text = if refresh { old_value } else { new_value.into() };
        let mut e = Event::new(Action::Update, p, next, created);
        e.etcd_index = next;
        e.prev_node = Some(prev);
        e.refresh = refresh;
        let n = self.node_mut(p);
        if !is_dir {
            // directories keep their modifiedIndex on update (etcd ignores the write)
            n.value = new_value.clone();
            n.modified_index = next;
        }
        n.expire_time = expire;
        let (exp, ttl) = n.expiration_and_ttl(now);
        self.set_ttl(p, old_expire, expire);
        if let Some(ext) = e.node.as_mut() {
            if is_dir {
                ext.dir = true;
            } else {
                ext.value = Some(new_value.to_string());
            }
            ext.expiration = exp;
            ext.ttl = ttl;
        }
        self.bump(Op::Update, true);
        self.publish(&e);
        self.current_index = next;
        Ok(e)
    }

    #[allow(clippy::too_many_arguments)]
    fn compare_and_swap(
        &mut self,
        p: &str,
        prev_value: &str,
        prev_index: u64,
        value: &str,
        expire: Option<i64>,
        refresh: bool,
        now: i64,
    ) -> Result<Event, V2Error> {
        let ci = self.current_index;
        if p == "/" {
            self.bump(Op::CompareAndSwap, true); // etcd quirk
            return Err(V2Error::root_read_only(ci));
        }
        let checked = match self.lookup(p) {
            Ok(n) if n.is_dir() => Err(V2Error::not_file(p, ci)),
            Ok(n) => match n.compare(prev_value, prev_index) {
                CompareResult::Match => Ok((
                    n.value.clone(),
                    n.created_index,
                    n.expire_time,
                    n.repr(false, now),
                )),
                which => Err(V2Error::test_failed(
                    n.compare_fail_cause(which, prev_value, prev_index),
                    ci,
                )),
            },
            Err(e) => Err(e),
        };
        let (old_value, created, old_expire, prev) = match checked {
            Ok(v) => v,
            Err(e) => {
                self.bump(Op::CompareAndSwap, false);
                return Err(e);
            }
        };
        let value: Text = if refresh { old_value } else { value.into() };
        let next = ci + 1;
        self.current_index = next;
        let mut e = Event::new(Action::CompareAndSwap, p, next, created);
        e.etcd_index = next;
        e.prev_node = Some(prev);
        e.refresh = refresh;
        let n = self.node_mut(p);
        n.value = value.clone();
        n.modified_index = next;
        n.expire_time = expire;
        let (exp, ttl) = n.expiration_and_ttl(now);
        self.set_ttl(p, old_expire, expire);
        if let Some(ext) = e.node.as_mut() {
            ext.value = Some(value.to_string());
            ext.expiration = exp;
            ext.ttl = ttl;
        }
        self.bump(Op::CompareAndSwap, true);
        self.publish(&e);
        Ok(e)
    }

    fn delete(&mut self, p: &str, dir: bool, recursive: bool, now: i64) -> Result<Event, V2Error> {
        let ci = self.current_index;
        if p == "/" {
            self.bump(Op::Delete, true); // etcd quirk
            return Err(V2Error::root_read_only(ci));
        }
        let dir = dir || recursive;
        let checked = match self.lookup(p) {
            Ok(n) if n.is_dir() && !dir => Err(V2Error::not_file(n.path.to_string(), ci)),
            Ok(n)
                if n.is_dir()
                    && !recursive
                    && n.children.as_ref().is_some_and(|c| !c.is_empty()) =>
            {
                Err(V2Error::dir_not_empty(n.path.to_string(), ci))
            }
            Ok(n) => Ok((n.is_dir(), n.created_index, n.repr(false, now))),
            Err(e) => Err(e),
        };
        let (is_dir, created, prev) = match checked {
            Ok(v) => v,
            Err(e) => {
                self.bump(Op::Delete, false);
                return Err(e);
            }
        };
        let next = ci + 1;
        let mut e = Event::new(Action::Delete, p, next, created);
        e.etcd_index = next;
        e.prev_node = Some(prev);
        if is_dir {
            if let Some(ext) = e.node.as_mut() {
                ext.dir = true;
            }
        }
        self.remove_subtree(p, &e);
        self.current_index = next;
        self.bump(Op::Delete, true);
        self.publish(&e);
        Ok(e)
    }

    fn compare_and_delete(
        &mut self,
        p: &str,
        prev_value: &str,
        prev_index: u64,
        now: i64,
    ) -> Result<Event, V2Error> {
        let ci = self.current_index;
        let (created, prev) = match self.lookup(p) {
            Err(e) => {
                self.bump(Op::CompareAndDelete, false);
                return Err(e);
            }
            Ok(n) if n.is_dir() => {
                // etcd quirk: counted as success; the root shows an empty cause
                self.bump(Op::CompareAndDelete, true);
                return Err(V2Error::not_file(visible_key(p), ci));
            }
            Ok(n) => match n.compare(prev_value, prev_index) {
                CompareResult::Match => (n.created_index, n.repr(false, now)),
                which => {
                    let cause = n.compare_fail_cause(which, prev_value, prev_index);
                    self.bump(Op::CompareAndDelete, true); // etcd quirk
                    return Err(V2Error::test_failed(cause, ci));
                }
            },
        };
        let next = ci + 1;
        self.current_index = next;
        let mut e = Event::new(Action::CompareAndDelete, p, next, created);
        e.etcd_index = next;
        e.prev_node = Some(prev);
        self.remove_subtree(p, &e);
        self.bump(Op::CompareAndDelete, true);
        self.publish(&e);
        Ok(e)
    }

    /// etcd's DeleteExpiredKeys: removes, earliest first, every node whose
    /// expiration is <= `now`, one index and one event per removed node.
    fn delete_expired_keys(&mut self, now: i64) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some((exp, p)) = self.ttl_keys.get_min().cloned() {
            if exp > now {
                break;
            }
            let Ok(n) = self.tree.0.lookup(&p) else {
                // stale entry; cannot happen while the invariants hold
                self.ttl_keys.remove(&(exp, p));
                continue;
            };
            let idx = self.current_index + 1;
            let mut e = Event::new(Action::Expire, &p, idx, n.created_index);
            e.etcd_index = idx;
            e.prev_node = Some(n.repr(false, now));
            if n.is_dir() {
                if let Some(ext) = e.node.as_mut() {
                    ext.dir = true;
                }
            }
            self.current_index = idx;
            self.ttl_keys.remove(&(exp, p.clone()));
            self.remove_subtree(&p, &e);
            self.stats.expire_count += 1;
            self.publish(&e);
            events.push(e);
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::request::parse_key_request;
    use crate::v2::timefmt::format_rfc3339_nano;
    use tokio::sync::mpsc::error::TryRecvError;

    /// Snapshots written before the queue became a persistent set still decode, and new ones
    /// are byte for byte what the old type wrote (binary and JSON).
    #[test]
    fn the_expiry_queue_encodes_as_the_set_it_replaced() {
        use crate::raft::codec;
        let old: std::collections::BTreeSet<(i64, String)> = [
            (7, "/b/c".to_string()),
            (5, "/a".to_string()),
            (5, "/z".to_string()),
        ]
        .into();
        let new: TtlQueue = old
            .iter()
            .map(|(t, p)| (*t, Text::from(p.as_str())))
            .collect();
        assert_eq!(codec::encode(&new), codec::encode(&old));
        assert_eq!(
            codec::decode::<TtlQueue>(&codec::encode(&old)).unwrap(),
            new
        );
        let json = serde_json::to_vec(&old).unwrap();
        assert_eq!(serde_json::to_vec(&new).unwrap(), json);
        assert_eq!(codec::decode::<TtlQueue>(&json).unwrap(), new);
        assert_eq!(new.get_min(), Some(&(5, Text::from("/a"))));
    }

    /// 2026-11-18T..., an arbitrary "leader clock".
    const T0: i64 = 1_795_000_000_000_000_000;
    const SEC: i64 = NANOS_PER_SEC;

    fn run_at(
        s: &mut Store,
        method: &str,
        path: &str,
        query: &str,
        now: i64,
    ) -> Result<Event, V2Error> {
        let req = parse_key_request(method, path, query, b"").expect("valid request");
        s.apply(&Command::Key { req, now }).map(|mut v| {
            assert_eq!(v.len(), 1);
            v.remove(0)
        })
    }
    fn run(s: &mut Store, method: &str, path: &str, query: &str) -> Result<Event, V2Error> {
        run_at(s, method, path, query, T0)
    }
    fn js(e: &Event) -> String {
        String::from_utf8(e.to_json())
            .unwrap()
            .trim_end()
            .to_string()
    }
    fn get(s: &Store, path: &str) -> Result<Event, V2Error> {
        s.get(path, false, false, T0)
    }
    fn expire(s: &mut Store, now: i64) -> Vec<Event> {
        s.apply(&Command::Expire { now }).unwrap()
    }

    /// A read view is taken under the state lock and answered after it is released: it must
    /// answer as of when it was taken, whatever is written meanwhile.
    #[test]
    fn a_read_view_answers_as_of_when_it_was_taken() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/d/a", "value=1").unwrap();
        run(&mut s, "PUT", "/d/e/f", "value=2").unwrap();
        let view = s.read_view("/d").unwrap();
        assert!(view.is_dir());
        let before = js(&s.get("/d", true, false, T0).unwrap());
        run(&mut s, "PUT", "/d/a", "value=changed").unwrap();
        run(&mut s, "PUT", "/d/b", "value=3").unwrap();
        run(&mut s, "DELETE", "/d/e/f", "").unwrap();
        let e = view.into_event(true, T0);
        assert_eq!(e.etcd_index, 2);
        assert_eq!(js(&e), before);
        let keys: Vec<&str> = e
            .node
            .as_ref()
            .unwrap()
            .nodes
            .iter()
            .map(|n| n.key.as_str())
            .collect();
        assert_eq!(keys, ["/d/a", "/d/e"]);
        assert_eq!(
            e.node.as_ref().unwrap().nodes[0].value.as_deref(),
            Some("1")
        );
        assert_eq!(e.node.as_ref().unwrap().nodes[1].nodes[0].key, "/d/e/f");
        // The store itself moved on.
        assert_eq!(
            get(&s, "/d/a").unwrap().node.unwrap().value.as_deref(),
            Some("changed")
        );
        assert_eq!(
            s.read_view("/nope").err().map(|e| e.code),
            Some(super::super::error::ECODE_KEY_NOT_FOUND)
        );
    }

    #[test]
    fn empty_root_get() {
        let s = Store::new();
        let e = get(&s, "/").unwrap();
        assert_eq!(js(&e), r#"{"action":"get","node":{"dir":true}}"#);
        assert_eq!(e.etcd_index, 0);
        assert_eq!(s.index(), 0);
    }

    #[test]
    fn set_new_then_replace() {
        let mut s = Store::new();
        let e = run(&mut s, "PUT", "/foo", "value=bar").unwrap();
        assert_eq!(
            js(&e),
            r#"{"action":"set","node":{"key":"/foo","value":"bar","modifiedIndex":1,"createdIndex":1}}"#
        );
        assert!(e.is_created());
        assert_eq!(e.etcd_index, 1);
        let e = run(&mut s, "PUT", "/foo", "value=baz").unwrap();
        assert_eq!(
            js(&e),
            r#"{"action":"set","node":{"key":"/foo","value":"baz","modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/foo","value":"bar","modifiedIndex":1,"createdIndex":1}}"#
        );
        assert!(!e.is_created());
        let g = get(&s, "/foo").unwrap();
        assert_eq!(
            js(&g),
            r#"{"action":"get","node":{"key":"/foo","value":"baz","modifiedIndex":2,"createdIndex":2}}"#
        );
        assert_eq!(g.etcd_index, 2);
    }

    #[test]
    fn set_empty_value_is_shown() {
        let mut s = Store::new();
        let e = run(&mut s, "PUT", "/e", "").unwrap();
        assert_eq!(
            js(&e),
            r#"{"action":"set","node":{"key":"/e","value":"","modifiedIndex":1,"createdIndex":1}}"#
        );
    }

    #[test]
    fn compare_and_swap_failures_and_causes() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/foo", "value=bar").unwrap();
        run(&mut s, "PUT", "/foo", "value=baz").unwrap();
        let e = run(&mut s, "PUT", "/foo", "prevValue=x&prevIndex=1&value=q").unwrap_err();
        assert_eq!(
            (e.code, e.cause.as_str(), e.index),
            (101, "[x != baz] [1 != 2]", 2)
        );
        assert_eq!(e.status(), 412);
        let e = run(&mut s, "PUT", "/foo", "prevValue=x&value=q").unwrap_err();
        assert_eq!(e.cause, "[x != baz]");
        let e = run(&mut s, "PUT", "/foo", "prevIndex=1&value=q").unwrap_err();
        assert_eq!(e.cause, "[1 != 2]");
        assert_eq!(s.index(), 2);
        let e = run(&mut s, "PUT", "/nope", "prevValue=x&value=q").unwrap_err();
        assert_eq!((e.code, e.cause.as_str()), (100, "/nope"));
        let ok = run(&mut s, "PUT", "/foo", "prevValue=baz&prevIndex=2&value=q").unwrap();
        assert_eq!(
            js(&ok),
            r#"{"action":"compareAndSwap","node":{"key":"/foo","value":"q","modifiedIndex":3,"createdIndex":2},"prevNode":{"key":"/foo","value":"baz","modifiedIndex":2,"createdIndex":2}}"#
        );
        // prevExist=true with a comparison is also a compareAndSwap
        let ok = run(&mut s, "PUT", "/foo", "prevExist=true&prevIndex=3&value=r").unwrap();
        assert_eq!(ok.action, Action::CompareAndSwap);
        // a directory cannot be compared
        run(&mut s, "PUT", "/d", "dir=true").unwrap();
        let e = run(&mut s, "PUT", "/d", "prevValue=a&value=b").unwrap_err();
        assert_eq!((e.code, e.cause.as_str()), (102, "/d"));
    }

    #[test]
    fn prev_exist_rules() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/foo", "value=a").unwrap();
        let e = run(&mut s, "PUT", "/foo", "prevExist=false&value=q").unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str(), e.cause.as_str(), e.index),
            (105, "Key already exists", "/foo", 1)
        );
        let e = run(&mut s, "PUT", "/nope", "prevExist=true&value=q").unwrap_err();
        assert_eq!((e.code, e.cause.as_str(), e.status()), (100, "/nope", 404));
        let c = run(&mut s, "PUT", "/new", "prevExist=false&value=q").unwrap();
        assert_eq!(c.action, Action::Create);
        assert!(c.is_created());
        let u = run(&mut s, "PUT", "/new", "prevExist=true&value=r").unwrap();
        assert_eq!(
            js(&u),
            r#"{"action":"update","node":{"key":"/new","value":"r","modifiedIndex":3,"createdIndex":2},"prevNode":{"key":"/new","value":"q","modifiedIndex":2,"createdIndex":2}}"#
        );
        assert!(!u.is_created());
    }

    #[test]
    fn ttl_set_get_and_rounding() {
        let mut s = Store::new();
        let e = run(&mut s, "PUT", "/t", "value=z&ttl=100").unwrap();
        let exp = format_rfc3339_nano(T0 + 100 * SEC);
        assert_eq!(
            js(&e),
            format!(
                r#"{{"action":"set","node":{{"key":"/t","value":"z","expiration":"{exp}","ttl":100,"modifiedIndex":1,"createdIndex":1}}}}"#
            )
        );
        assert_eq!(
            s.get("/t", false, false, T0 + 1).unwrap().node.unwrap().ttl,
            100
        );
        assert_eq!(
            s.get("/t", false, false, T0 + SEC)
                .unwrap()
                .node
                .unwrap()
                .ttl,
            99
        );
        assert_eq!(
            s.get("/t", false, false, T0 + SEC + 1)
                .unwrap()
                .node
                .unwrap()
                .ttl,
            99
        );
        assert_eq!(s.next_expiration(), Some(T0 + 100 * SEC));
        assert!(s.has_ttl_keys());
    }

    #[test]
    fn ttl_zero_expires_immediately_and_ttl_is_omitted() {
        let mut s = Store::new();
        let e = run(&mut s, "PUT", "/f", "value=z&ttl=0").unwrap();
        let n = e.node.as_ref().unwrap();
        assert_eq!(n.expiration, Some(T0));
        assert!(!js(&e).contains("\"ttl\""));
        let ev = expire(&mut s, T0);
        assert_eq!(ev.len(), 1);
        assert!(get(&s, "/f").is_err());
    }

    #[test]
    fn huge_ttl_wraps_like_go() {
        let mut s = Store::new();
        let e = run(&mut s, "PUT", "/h8", "value=1&ttl=18446744073").unwrap();
        // 18446744073 s wraps to -0.709551616 s in int64 nanoseconds
        assert_eq!(e.node.unwrap().expiration, Some(T0 - 709_551_616));
    }

    #[test]
    fn expiration_before_2000_means_permanent_on_create_paths() {
        let mut s = Store::new();
        let now = 0; // a 1970 clock: now + ttl is before 2000
        let e = run_at(&mut s, "PUT", "/a", "value=1&ttl=5", now).unwrap();
        assert_eq!(e.node.unwrap().expiration, None);
        assert!(!s.has_ttl_keys());
    }

    #[test]
    fn plain_update_removes_ttl() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/g", "value=z&ttl=100").unwrap();
        let u = run(&mut s, "PUT", "/g", "prevExist=true&value=zz").unwrap();
        let exp = format_rfc3339_nano(T0 + 100 * SEC);
        assert_eq!(
            js(&u),
            format!(
                r#"{{"action":"update","node":{{"key":"/g","value":"zz","modifiedIndex":2,"createdIndex":1}},"prevNode":{{"key":"/g","value":"z","expiration":"{exp}","ttl":100,"modifiedIndex":1,"createdIndex":1}}}}"#
            )
        );
        assert_eq!(s.next_expiration(), None);
        // a plain set also replaces the TTL'd node by a permanent one
        run(&mut s, "PUT", "/h", "value=z&ttl=5").unwrap();
        run(&mut s, "PUT", "/h", "value=y").unwrap();
        assert_eq!(s.next_expiration(), None);
        assert!(expire(&mut s, T0 + 1000 * SEC).is_empty());
    }

    #[test]
    fn directory_ttl_update_keeps_modified_index() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/e", "dir=true&ttl=100").unwrap();
        let u = run(&mut s, "PUT", "/e", "dir=true&ttl=200&prevExist=true").unwrap();
        let n = u.node.as_ref().unwrap();
        assert!(n.dir);
        assert_eq!((n.modified_index, n.created_index, n.ttl), (2, 1, 200));
        assert!(n.value.is_none());
        let g = get(&s, "/e").unwrap().node.unwrap();
        assert_eq!((g.modified_index, g.ttl), (1, 200)); // etcd does not bump a dir
                                                         // value on a directory update: 102
        let e = run(&mut s, "PUT", "/e", "prevExist=true&value=x").unwrap_err();
        assert_eq!((e.code, e.cause.as_str(), e.index), (102, "/e", 2));
        // update without ttl makes the dir permanent
        let u = run(&mut s, "PUT", "/e", "prevExist=true&dir=true").unwrap();
        assert!(u.node.as_ref().unwrap().expiration.is_none());
        assert_eq!(s.next_expiration(), None);
    }

    #[test]
    fn set_dir_over_file_and_file_over_dir() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/d/a", "value=1").unwrap();
        let e = run(&mut s, "PUT", "/d", "dir=true").unwrap_err();
        assert_eq!((e.code, e.cause.as_str()), (102, "/d"));
        let e = run(&mut s, "PUT", "/d", "value=x").unwrap_err();
        assert_eq!(e.code, 102);
        let e = run(&mut s, "PUT", "/d/a", "dir=true").unwrap();
        assert_eq!(
            js(&e),
            r#"{"action":"set","node":{"key":"/d/a","dir":true,"modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/d/a","value":"1","modifiedIndex":1,"createdIndex":1}}"#
        );
        assert!(get(&s, "/d/a").unwrap().node.unwrap().dir);
    }

    #[test]
    fn not_dir_errors() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/h", "value=1").unwrap();
        for (m, q) in [
            ("PUT", "value=1"),
            ("DELETE", ""),
            ("POST", "value=1"),
            ("PUT", "prevExist=false&value=1"),
        ] {
            let e = run(&mut s, m, "/h/x", q).unwrap_err();
            assert_eq!(
                (e.code, e.cause.as_str(), e.index, e.status()),
                (104, "/h", 1, 400),
                "{m} {q}"
            );
        }
        let e = get(&s, "/h/x/y").unwrap_err();
        assert_eq!((e.code, e.cause.as_str()), (104, "/h"));
        assert_eq!(s.index(), 1);
    }

    #[test]
    fn intermediate_dirs_get_the_new_index() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/a/b/c", "value=1").unwrap();
        let g = s.get("/", true, true, T0).unwrap();
        assert_eq!(
            js(&g),
            r#"{"action":"get","node":{"dir":true,"nodes":[{"key":"/a","dir":true,"nodes":[{"key":"/a/b","dir":true,"nodes":[{"key":"/a/b/c","value":"1","modifiedIndex":1,"createdIndex":1}],"modifiedIndex":1,"createdIndex":1}],"modifiedIndex":1,"createdIndex":1}]}}"#
        );
    }

    #[test]
    fn listing_hides_hidden_and_recursion_depth() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/d/a", "value=1").unwrap();
        run(&mut s, "PUT", "/d/_h", "value=h").unwrap();
        run(&mut s, "PUT", "/d/sub/x", "value=2").unwrap();
        let g = get(&s, "/d").unwrap();
        assert_eq!(
            js(&g),
            r#"{"action":"get","node":{"key":"/d","dir":true,"nodes":[{"key":"/d/a","value":"1","modifiedIndex":1,"createdIndex":1},{"key":"/d/sub","dir":true,"modifiedIndex":3,"createdIndex":3}],"modifiedIndex":1,"createdIndex":1}}"#
        );
        let g = s.get("/d", true, true, T0).unwrap();
        assert_eq!(
            js(&g),
            r#"{"action":"get","node":{"key":"/d","dir":true,"nodes":[{"key":"/d/a","value":"1","modifiedIndex":1,"createdIndex":1},{"key":"/d/sub","dir":true,"nodes":[{"key":"/d/sub/x","value":"2","modifiedIndex":3,"createdIndex":3}],"modifiedIndex":3,"createdIndex":3}],"modifiedIndex":1,"createdIndex":1}}"#
        );
        // a hidden key is still readable directly
        assert_eq!(
            get(&s, "/d/_h").unwrap().node.unwrap().value.as_deref(),
            Some("h")
        );
        // empty dir: no "nodes"
        run(&mut s, "PUT", "/empty", "dir=true").unwrap();
        assert_eq!(
            js(&get(&s, "/empty").unwrap()),
            r#"{"action":"get","node":{"key":"/empty","dir":true,"modifiedIndex":4,"createdIndex":4}}"#
        );
    }

    #[test]
    fn delete_rules() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/d/sub/x", "value=2").unwrap();
        let e = run(&mut s, "DELETE", "/d/sub", "").unwrap_err();
        assert_eq!((e.code, e.cause.as_str(), e.status()), (102, "/d/sub", 403));
        let e = run(&mut s, "DELETE", "/d/sub", "dir=true").unwrap_err();
        assert_eq!((e.code, e.cause.as_str(), e.status()), (108, "/d/sub", 403));
        let e = run(&mut s, "DELETE", "/nope", "").unwrap_err();
        assert_eq!((e.code, e.cause.as_str()), (100, "/nope"));
        assert_eq!(s.index(), 1);
        let d = run(&mut s, "DELETE", "/d/sub", "recursive=true").unwrap();
        assert_eq!(
            js(&d),
            r#"{"action":"delete","node":{"key":"/d/sub","dir":true,"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/d/sub","dir":true,"modifiedIndex":1,"createdIndex":1}}"#
        );
        assert_eq!(d.etcd_index, 2);
        assert!(!d.is_created());
        let d = run(&mut s, "DELETE", "/d", "dir=true").unwrap();
        assert_eq!(d.action, Action::Delete);
        run(&mut s, "PUT", "/f", "value=1").unwrap();
        let d = run(&mut s, "DELETE", "/f", "").unwrap();
        assert_eq!(
            js(&d),
            r#"{"action":"delete","node":{"key":"/f","modifiedIndex":5,"createdIndex":4},"prevNode":{"key":"/f","value":"1","modifiedIndex":4,"createdIndex":4}}"#
        );
        // dir=true also deletes a file
        run(&mut s, "PUT", "/f", "value=1").unwrap();
        assert!(run(&mut s, "DELETE", "/f", "dir=true").is_ok());
    }

    #[test]
    fn recursive_delete_clears_ttls_below() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/d/a", "value=1&ttl=10").unwrap();
        run(&mut s, "PUT", "/d/b/c", "value=1&ttl=20").unwrap();
        run(&mut s, "DELETE", "/d", "recursive=true").unwrap();
        assert_eq!(s.next_expiration(), None);
        assert!(expire(&mut s, T0 + 100 * SEC).is_empty());
    }

    #[test]
    fn compare_and_delete() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/g", "value=zz&ttl=50").unwrap();
        let e = run(&mut s, "DELETE", "/g", "prevIndex=7").unwrap_err();
        assert_eq!((e.code, e.cause.as_str(), e.index), (101, "[7 != 1]", 1));
        let e = run(&mut s, "DELETE", "/g", "prevValue=a&prevIndex=7").unwrap_err();
        assert_eq!(e.cause, "[a != zz] [7 != 1]");
        let d = run(&mut s, "DELETE", "/g", "prevValue=zz").unwrap();
        let exp = format_rfc3339_nano(T0 + 50 * SEC);
        assert_eq!(
            js(&d),
            format!(
                r#"{{"action":"compareAndDelete","node":{{"key":"/g","modifiedIndex":2,"createdIndex":1}},"prevNode":{{"key":"/g","value":"zz","expiration":"{exp}","ttl":50,"modifiedIndex":1,"createdIndex":1}}}}"#
            )
        );
        assert_eq!(s.next_expiration(), None);
        run(&mut s, "PUT", "/e", "dir=true").unwrap();
        let e = run(&mut s, "DELETE", "/e", "prevValue=zz").unwrap_err();
        assert_eq!((e.code, e.cause.as_str()), (102, "/e"));
        let e = run(&mut s, "DELETE", "/nope", "prevValue=zz").unwrap_err();
        assert_eq!(e.code, 100);
    }

    #[test]
    fn root_is_read_only() {
        let mut s = Store::new();
        for (m, q) in [
            ("PUT", "value=a"),
            ("DELETE", ""),
            ("DELETE", "recursive=true"),
            ("PUT", "prevExist=false&value=a"),
            ("PUT", "prevExist=true&value=a"),
            ("PUT", "prevValue=a&value=b"),
        ] {
            let e = run(&mut s, m, "/", q).unwrap_err();
            assert_eq!(
                (e.code, e.message.as_str(), e.cause.as_str(), e.status()),
                (107, "Root is read only", "/", 400),
                "{m} {q}"
            );
        }
        // compareAndDelete on the root: "Not a file" with an empty cause
        let e = run(&mut s, "DELETE", "/", "prevValue=a").unwrap_err();
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            "{\"errorCode\":102,\"message\":\"Not a file\",\"index\":0}\n"
        );
        assert_eq!(s.index(), 0);
    }

    #[test]
    fn post_creates_in_order_keys() {
        let mut s = Store::new();
        let e = run(&mut s, "POST", "/", "value=a").unwrap();
        assert_eq!(
            js(&e),
            r#"{"action":"create","node":{"key":"/00000000000000000001","value":"a","modifiedIndex":1,"createdIndex":1}}"#
        );
        assert!(e.is_created());
        let e = run(&mut s, "POST", "/q", "value=1&ttl=10").unwrap();
        assert_eq!(e.key(), "/q/00000000000000000002");
        assert_eq!(e.node.as_ref().unwrap().ttl, 10);
        let e = run(&mut s, "POST", "/q", "dir=true").unwrap();
        assert_eq!(
            js(&e),
            r#"{"action":"create","node":{"key":"/q/00000000000000000003","dir":true,"modifiedIndex":3,"createdIndex":3}}"#
        );
        // prevExist is ignored by POST
        let e = run(
            &mut s,
            "POST",
            "/q/00000000000000000001",
            "prevExist=true&value=1",
        )
        .unwrap();
        assert_eq!(e.key(), "/q/00000000000000000001/00000000000000000004");
        let e = run(&mut s, "POST", "/q/00000000000000000002", "value=1").unwrap_err();
        assert_eq!((e.code, e.cause.as_str()), (104, "/q/00000000000000000002"));
    }

    #[test]
    fn refresh_keeps_value_and_skips_watchers() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/foo", "value=baz").unwrap();
        let Watch::Pending { mut rx, .. } = s.watch("/foo", false, true, 0).unwrap() else {
            panic!()
        };
        let e = run(&mut s, "PUT", "/foo", "ttl=5&refresh=true").unwrap();
        let exp = format_rfc3339_nano(T0 + 5 * SEC);
        // etcd's set-refresh re-creates the node: createdIndex changes
        assert_eq!(
            js(&e),
            format!(
                r#"{{"action":"set","node":{{"key":"/foo","value":"baz","expiration":"{exp}","ttl":5,"modifiedIndex":2,"createdIndex":2}},"prevNode":{{"key":"/foo","value":"baz","modifiedIndex":1,"createdIndex":1}}}}"#
            )
        );
        assert!(e.refresh);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        // history skips refresh events
        assert!(matches!(
            s.watch("/foo", false, false, 2).unwrap(),
            Watch::Pending { .. }
        ));
        let e = run(&mut s, "PUT", "/foo", "prevValue=baz&refresh=true&ttl=50").unwrap();
        assert_eq!(e.action, Action::CompareAndSwap);
        assert_eq!(e.node.as_ref().unwrap().value.as_deref(), Some("baz"));
        let e = run(&mut s, "PUT", "/foo", "prevExist=true&refresh=true&ttl=60").unwrap();
        assert_eq!(e.action, Action::Update);
        assert_eq!(e.node.as_ref().unwrap().ttl, 60);
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        assert_eq!(s.next_expiration(), Some(T0 + 60 * SEC));
        // refresh of a missing key: 100 both with and without prevExist
        assert_eq!(
            run(&mut s, "PUT", "/j", "refresh=true&ttl=100")
                .unwrap_err()
                .code,
            100
        );
        assert_eq!(
            run(&mut s, "PUT", "/j", "prevExist=true&refresh=true&ttl=100")
                .unwrap_err()
                .code,
            100
        );
        // prevExist=false + refresh is a plain create with an empty value
        let c = run(&mut s, "PUT", "/i", "prevExist=false&refresh=true&ttl=100").unwrap();
        assert_eq!(c.action, Action::Create);
        assert_eq!(c.node.as_ref().unwrap().value.as_deref(), Some(""));
    }

    #[test]
    fn expire_command_events() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/xd", "dir=true&ttl=1").unwrap();
        run(&mut s, "PUT", "/xd/k", "value=1").unwrap();
        run(&mut s, "PUT", "/later", "value=1&ttl=10").unwrap();
        let Watch::Pending { mut rx, .. } = s.watch("/xd/k", false, false, 0).unwrap() else {
            panic!()
        };
        assert!(expire(&mut s, T0 + SEC - 1).is_empty());
        let ev = expire(&mut s, T0 + SEC);
        assert_eq!(ev.len(), 1);
        let exp = format_rfc3339_nano(T0 + SEC);
        assert_eq!(
            js(&ev[0]),
            format!(
                r#"{{"action":"expire","node":{{"key":"/xd","dir":true,"modifiedIndex":4,"createdIndex":1}},"prevNode":{{"key":"/xd","dir":true,"expiration":"{exp}","modifiedIndex":1,"createdIndex":1}}}}"#
            )
        );
        assert_eq!(ev[0].etcd_index, 4);
        assert_eq!(s.index(), 4);
        // the watcher below the expired dir is told
        assert_eq!(rx.try_recv().unwrap().action, Action::Expire);
        assert_eq!(get(&s, "/xd").unwrap_err().cause, "/xd");
        assert_eq!(s.next_expiration(), Some(T0 + 10 * SEC));
        assert_eq!(s.stats().expire_count, 1);
        let ev = expire(&mut s, T0 + 100 * SEC);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].index(), 5);
        assert!(!s.has_ttl_keys());
    }

    #[test]
    fn expire_many_in_time_order_with_one_index_each() {
        let mut s = Store::new();
        run_at(&mut s, "PUT", "/b", "value=1&ttl=2", T0).unwrap();
        run_at(&mut s, "PUT", "/a", "value=1&ttl=3", T0).unwrap();
        run_at(&mut s, "PUT", "/c", "value=1&ttl=1", T0).unwrap();
        let ev = expire(&mut s, T0 + 5 * SEC);
        let keys: Vec<_> = ev
            .iter()
            .map(|e| (e.key().to_string(), e.index()))
            .collect();
        assert_eq!(
            keys,
            [
                ("/c".to_string(), 4),
                ("/b".to_string(), 5),
                ("/a".to_string(), 6)
            ]
        );
    }

    #[test]
    fn expired_key_still_readable_until_expire_command() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/k", "value=1&ttl=1").unwrap();
        let g = s.get("/k", false, false, T0 + 2 * SEC + SEC / 2).unwrap();
        assert_eq!(g.node.unwrap().ttl, -1);
    }

    #[test]
    fn failed_writes_do_not_change_index_or_history() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/a", "value=1").unwrap();
        let before = serde_json::to_string(&s.clone_without_watchers().tree).unwrap();
        let _ = run(&mut s, "PUT", "/a", "prevExist=false&value=2");
        let _ = run(&mut s, "PUT", "/a/b", "value=2");
        let _ = run(&mut s, "DELETE", "/zz", "");
        assert_eq!(s.index(), 1);
        assert_eq!(serde_json::to_string(&s.tree).unwrap(), before);
        assert!(matches!(
            s.watch("/", true, false, 2).unwrap(),
            Watch::Pending { .. }
        ));
    }

    #[test]
    fn watch_immediate_from_history() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/h4", "value=b").unwrap();
        run(&mut s, "PUT", "/other", "value=b").unwrap();
        let w = s.watch("/h4", false, false, 1).unwrap();
        assert_eq!(w.etcd_index(), 2);
        let Watch::Immediate(e) = w else { panic!() };
        assert_eq!(
            js(&e),
            r#"{"action":"set","node":{"key":"/h4","value":"b","modifiedIndex":1,"createdIndex":1}}"#
        );
        assert_eq!(e.etcd_index, 2);
        // recursive from the root finds the first event at or after the index
        let Watch::Immediate(e) = s.watch("/", true, true, 2).unwrap() else {
            panic!()
        };
        assert_eq!(e.key(), "/other");
        // future index waits
        assert!(matches!(
            s.watch("/h4", false, false, 2000).unwrap(),
            Watch::Pending { etcd_index: 2, .. }
        ));
    }

    #[test]
    fn watch_history_cleared() {
        let mut s = Store::new();
        for i in 0..1053 {
            run(&mut s, "PUT", "/bulk", &format!("value={i}")).unwrap();
        }
        let e = s.watch("/w", false, false, 42).unwrap_err();
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            "{\"errorCode\":401,\"message\":\"The event in requested index is outdated and cleared\",\"cause\":\"the requested history has been cleared [54/42]\",\"index\":1053}\n"
        );
        assert_eq!(e.status(), 400);
        assert!(matches!(
            s.watch("/bulk", false, false, 54).unwrap(),
            Watch::Immediate(_)
        ));
    }

    #[test]
    fn one_shot_watch_gets_next_change_with_its_etcd_index() {
        let mut s = Store::new();
        let Watch::Pending {
            id: _,
            mut rx,
            etcd_index,
        } = s.watch("/a", false, false, 0).unwrap()
        else {
            panic!()
        };
        assert_eq!(etcd_index, 0);
        assert_eq!(s.watcher_count(), 1);
        assert_eq!(s.stats().watchers, 1);
        run(&mut s, "PUT", "/b", "value=1").unwrap();
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        run(&mut s, "PUT", "/a", "value=1").unwrap();
        let e = rx.try_recv().unwrap();
        assert_eq!((e.key(), e.etcd_index), ("/a", 2));
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Disconnected)));
        assert_eq!(s.watcher_count(), 0);
    }

    #[test]
    fn stream_watchers_on_deletes_match_etcd() {
        // mirrors a run against etcd 3.4.23 (see report)
        let mut s = Store::new();
        run(&mut s, "PUT", "/w/k", "value=1").unwrap();
        run(&mut s, "PUT", "/w/sub/k2", "value=1").unwrap();
        let mut rx = Vec::new();
        for (p, rec) in [
            ("/w/k", false),
            ("/w/sub/k2", false),
            ("/w", false),
            ("/w", true),
            ("/", true),
            ("/w/sub/nonexist", false),
            ("/wx", false),
        ] {
            let Watch::Pending { rx: r, .. } = s.watch(p, rec, true, 0).unwrap() else {
                panic!()
            };
            rx.push(r);
        }
        run(&mut s, "PUT", "/w/_hid", "value=1").unwrap();
        run(&mut s, "PUT", "/w/sub/_hid2/x", "value=1").unwrap();
        run(&mut s, "DELETE", "/w/k", "").unwrap();
        run(&mut s, "DELETE", "/w", "recursive=true").unwrap();
        let got: Vec<Vec<(String, u64)>> = rx
            .iter_mut()
            .map(|r| {
                let mut v = Vec::new();
                while let Ok(e) = r.try_recv() {
                    v.push((e.key().to_string(), e.index()));
                }
                v
            })
            .collect();
        let k = |s: &str, i: u64| (s.to_string(), i);
        assert_eq!(got[0], [k("/w/k", 5), k("/w/k", 5)]); // deleted key: twice
        assert_eq!(got[1], [k("/w", 6)]);
        assert_eq!(got[2], [k("/w", 6), k("/w", 6)]);
        assert_eq!(got[3], [k("/w/k", 5), k("/w", 6), k("/w", 6)]);
        assert_eq!(got[4], [k("/w/k", 5), k("/w", 6)]);
        assert!(got[5].is_empty());
        assert!(got[6].is_empty());
    }

    #[test]
    fn history_quirks_for_deleted_dirs_and_hidden_keys() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/w/k", "value=1").unwrap(); // 1
        run(&mut s, "PUT", "/w/_hid", "value=1").unwrap(); // 2
        run(&mut s, "PUT", "/w/sub/_hid2/x", "value=1").unwrap(); // 3
        run(&mut s, "DELETE", "/w", "recursive=true").unwrap(); // 4
        let key_of = |w: Watch| match w {
            Watch::Immediate(e) => e.key().to_string(),
            Watch::Pending { .. } => "pending".into(),
        };
        assert_eq!(key_of(s.watch("/wx", false, false, 4).unwrap()), "/w");
        assert_eq!(key_of(s.watch("/w/su", false, false, 4).unwrap()), "/w");
        // the history does not filter hidden keys
        assert_eq!(
            key_of(s.watch("/w/_hid", false, false, 2).unwrap()),
            "/w/_hid"
        );
        assert_eq!(key_of(s.watch("/w", true, false, 2).unwrap()), "/w/_hid");
        assert_eq!(
            key_of(s.watch("/w/sub", true, false, 2).unwrap()),
            "/w/sub/_hid2/x"
        );
    }

    #[test]
    fn live_watchers_skip_hidden_keys_unless_watched_directly() {
        let mut s = Store::new();
        let Watch::Pending { rx: mut rec, .. } = s.watch("/", true, true, 0).unwrap() else {
            panic!()
        };
        let Watch::Pending { rx: mut direct, .. } = s.watch("/_h", false, true, 0).unwrap() else {
            panic!()
        };
        run(&mut s, "PUT", "/_h", "value=1").unwrap();
        run(&mut s, "PUT", "/v", "value=1").unwrap();
        assert_eq!(rec.try_recv().unwrap().key(), "/v");
        assert!(rec.try_recv().is_err());
        assert_eq!(direct.try_recv().unwrap().key(), "/_h");
    }

    #[test]
    fn unwatch_and_slow_stream_watcher() {
        let mut s = Store::new();
        let Watch::Pending { id, .. } = s.watch("/a", false, true, 0).unwrap() else {
            panic!()
        };
        s.unwatch(id);
        assert_eq!(s.watcher_count(), 0);
        let Watch::Pending { mut rx, .. } = s.watch("/a", false, true, 0).unwrap() else {
            panic!()
        };
        for i in 0..150 {
            run(&mut s, "PUT", "/a", &format!("value={i}")).unwrap();
        }
        assert_eq!(s.watcher_count(), 0);
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 100);
    }

    #[test]
    fn watch_since_index_in_future() {
        let mut s = Store::new();
        let Watch::Pending { mut rx, .. } = s.watch("/a", false, false, 3).unwrap() else {
            panic!()
        };
        run(&mut s, "PUT", "/a", "value=1").unwrap();
        run(&mut s, "PUT", "/a", "value=2").unwrap();
        assert!(rx.try_recv().is_err());
        run(&mut s, "PUT", "/a", "value=3").unwrap();
        assert_eq!(rx.try_recv().unwrap().index(), 3);
    }

    #[test]
    fn stats_follow_etcd_including_quirks() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/g", "value=zz").unwrap(); // set ok
        run(&mut s, "PUT", "/d/x", "value=1").unwrap(); // set ok
        let _ = run(&mut s, "PUT", "/d", "dir=true"); // set fail (NotFile)
        let _ = run(&mut s, "PUT", "/g/x/y", "value=1"); // set fail once (lookup NotDir)
        let _ = run(&mut s, "POST", "/g/q", "value=1"); // create fail + set fail
        let _ = run(&mut s, "PUT", "/g/a?b", "prevExist=false&value=1"); // create fail + set fail
        let _ = run(&mut s, "DELETE", "/g", "prevIndex=99"); // cad "success" (quirk)
        let _ = run(&mut s, "DELETE", "/d", "prevValue=x"); // cad "success" (quirk)
        let _ = run(&mut s, "DELETE", "/zz", "prevValue=x"); // cad fail
        let _ = run(&mut s, "DELETE", "/", ""); // delete "success" (quirk)
        let _ = run(&mut s, "DELETE", "/d", ""); // delete fail
        let _ = run(&mut s, "PUT", "/d", "prevExist=true&value=x"); // update "success" (quirk)
        let _ = run(&mut s, "PUT", "/nope", "prevExist=true&value=x"); // update fail
        let _ = run(&mut s, "PUT", "/", "prevValue=x&value=y"); // cas "success" (quirk)
        let _ = run(&mut s, "PUT", "/g", "prevValue=x&value=y"); // cas fail
        s.count_get(true);
        s.count_get(false);
        run(&mut s, "GET", "/g", "quorum=true").unwrap(); // get ok through apply
        let _ = run(&mut s, "GET", "/zz", "quorum=true"); // get fail through apply
        let st = s.stats();
        assert_eq!((st.set_success, st.set_fail), (2, 4));
        assert_eq!((st.create_success, st.create_fail), (0, 2));
        assert_eq!(
            (st.compare_and_delete_success, st.compare_and_delete_fail),
            (2, 1)
        );
        assert_eq!((st.delete_success, st.delete_fail), (1, 1));
        assert_eq!((st.update_success, st.update_fail), (1, 1));
        assert_eq!(
            (st.compare_and_swap_success, st.compare_and_swap_fail),
            (1, 1)
        );
        assert_eq!((st.get_success, st.get_fail), (2, 2));
        assert_eq!(s.index(), 2);
    }

    #[test]
    fn quorum_get_through_apply_returns_get_event() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/a", "value=1&ttl=10").unwrap();
        let e = run_at(&mut s, "GET", "/a", "quorum=true", T0 + 3 * SEC).unwrap();
        assert_eq!(e.action, Action::Get);
        assert_eq!(e.node.unwrap().ttl, 7);
        assert_eq!(s.index(), 1);
    }

    #[test]
    fn no_value_on_success_on_a_real_set() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/foo", "value=a").unwrap();
        let req =
            parse_key_request("PUT", "/foo", "ttl=5&noValueOnSuccess=true", b"value=a").unwrap();
        assert!(req.no_value_on_success);
        let mut e = s.apply(&Command::Key { req, now: T0 }).unwrap().remove(0);
        // etcd decides 200/201 before stripping: it answered 200 here
        assert!(!e.is_created());
        e.strip_value_for_no_value_on_success();
        assert_eq!(js(&e), r#"{"action":"set"}"#);
        assert_eq!(e.etcd_index, 2);
    }

    #[test]
    fn values_are_escaped_like_go_in_events() {
        let mut s = Store::new();
        let req = parse_key_request("PUT", "/h2", "", b"value=%3Ca%26b%3E%E2%80%A8%01").unwrap();
        let e = s.apply(&Command::Key { req, now: T0 }).unwrap().remove(0);
        assert_eq!(
            js(&e),
            r#"{"action":"set","node":{"key":"/h2","value":"\u003ca\u0026b\u003e\u2028\u0001","modifiedIndex":1,"createdIndex":1}}"#
        );
    }

    #[test]
    fn snapshot_roundtrip_keeps_state_but_not_watchers() {
        let mut s = Store::new();
        run(&mut s, "PUT", "/a/b", "value=1&ttl=10").unwrap();
        run(&mut s, "PUT", "/c", "value=2").unwrap();
        run(&mut s, "PUT", "/c", "ttl=5&refresh=true").unwrap();
        let _w = s.watch("/zz", false, false, 0).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        let mut r: Store = serde_json::from_str(&json).unwrap();
        assert_eq!(r.index(), 3);
        assert_eq!(r.watcher_count(), 0);
        assert_eq!(r.next_expiration(), s.next_expiration());
        assert_eq!(
            r.stats(),
            StoreStats {
                watchers: 0,
                ..s.stats()
            }
        );
        assert_eq!(
            js(&r.get("/", true, true, T0).unwrap()),
            js(&s.get("/", true, true, T0).unwrap())
        );
        // history survives, including the refresh flag
        let Watch::Immediate(e) = r.watch("/a/b", false, false, 1).unwrap() else {
            panic!()
        };
        assert_eq!(e.index(), 1);
        assert!(matches!(
            r.watch("/c", false, false, 3).unwrap(),
            Watch::Pending { .. }
        ));
        // both evolve identically
        let a = expire(&mut s, T0 + 20 * SEC);
        let b = expire(&mut r, T0 + 20 * SEC);
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn restore_keeps_watchers() {
        let mut s = Store::new();
        let Watch::Pending { mut rx, .. } = s.watch("/a", false, false, 0).unwrap() else {
            panic!()
        };
        let mut other = Store::new();
        run(&mut other, "PUT", "/x", "value=1").unwrap();
        s.restore(other.clone_without_watchers());
        assert_eq!(s.index(), 1);
        assert_eq!(s.watcher_count(), 1);
        run(&mut s, "PUT", "/a", "value=1").unwrap();
        assert_eq!(rx.try_recv().unwrap().index(), 2);
    }

    #[test]
    fn command_serde_roundtrip_and_determinism() {
        let cmds = vec![
            Command::Key {
                req: parse_key_request("PUT", "/a", "ttl=3", b"value=1").unwrap(),
                now: T0,
            },
            Command::Key {
                req: parse_key_request("POST", "/q", "", b"value=1").unwrap(),
                now: T0 + 1,
            },
            Command::Key {
                req: parse_key_request("DELETE", "/a", "prevValue=1", b"").unwrap(),
                now: T0 + 2,
            },
            Command::Expire { now: T0 + 10 * SEC },
        ];
        let json = serde_json::to_string(&cmds).unwrap();
        let back: Vec<Command> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cmds);
        let mut a = Store::new();
        let mut b = Store::new();
        for c in &cmds {
            assert_eq!(a.apply(c), b.apply(c));
        }
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
    }
}
