//! The in-memory key tree. Paths are the client-visible ones ("/" is the
//! root, which clients see with an empty key, as etcd shows its "/1" root).

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::event::NodeExtern;
use super::path;

/// Result of comparing a node against prevValue/prevIndex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompareResult {
    Match,
    IndexNotMatch,
    ValueNotMatch,
    NotMatch,
}

/// Text shared between a node and its copies: a node cloned for a snapshot counts
/// references instead of copying its path, name and value.
pub(crate) type Text = Arc<str>;

/// A directory's children: a persistent B-tree (`imbl::OrdMap`), in key order like a
/// `BTreeMap`, whose clone shares every node with the original until one side changes, and
/// then copies only the tree nodes on the path to the change. A snapshot copies the whole
/// key tree by copying the root's pointer, and a write while the snapshot is encoded copies
/// a few B-tree nodes (never a whole directory, whatever its size).
pub(crate) type Children = imbl::OrdMap<Name, Node>;

/// A child's name as its directory's key. Names up to 23 bytes (nearly all) are stored in
/// the key itself rather than behind a pointer, so finding a key in a large directory
/// compares bytes that sit in the B-tree node: with `Arc<str>` keys every comparison of the
/// binary search followed a pointer to its own allocation (a cache miss each), and lookups
/// in a directory of 100,000 keys were the largest single cost of applying a write.
pub(crate) type Name = smol_str::SmolStr;

/// A file (children None) or directory (children Some).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub path: Text,
    pub created_index: u64,
    pub modified_index: u64,
    /// Unix nanoseconds; None = permanent.
    pub expire_time: Option<i64>,
    pub value: Text,
    pub children: Option<Children>,
}

/// Where a lookup stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LookupError {
    /// A path component is a file; holds that file's path.
    NotDir(String),
    /// The key is missing; holds the first missing path.
    NotFound(String),
}

const NANOS_PER_SEC: i64 = 1_000_000_000;

impl Node {
    pub fn new_file(
        path: impl Into<Text>,
        value: impl Into<Text>,
        index: u64,
        expire_time: Option<i64>,
    ) -> Node {
        Node {
            path: path.into(),
            created_index: index,
            modified_index: index,
            expire_time,
            value: value.into(),
            children: None,
        }
    }

    pub fn new_dir(path: impl Into<Text>, index: u64, expire_time: Option<i64>) -> Node {
        Node {
            path: path.into(),
            created_index: index,
            modified_index: index,
            expire_time,
            value: Text::from(""),
            children: Some(Children::default()),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.children.is_some()
    }

    /// Hidden nodes have a last path component starting with '_'.
    pub fn is_hidden(&self) -> bool {
        path::base_name(&self.path).starts_with('_')
    }

    /// The key clients see: the root is shown with an empty key.
    pub fn key(&self) -> &str {
        if &*self.path == "/" {
            ""
        } else {
            &self.path
        }
    }

    /// Expiration and remaining whole seconds, rounded up like etcd
    /// (ceil for positive remainders, truncation toward zero otherwise).
    pub fn expiration_and_ttl(&self, now: i64) -> (Option<i64>, i64) {
        match self.expire_time {
            None => (None, 0),
            Some(exp) => {
                let left = exp.saturating_sub(now); // Go's Time.Sub saturates
                let mut ttl = left / NANOS_PER_SEC;
                if left % NANOS_PER_SEC > 0 {
                    ttl += 1;
                }
                (Some(exp), ttl)
            }
        }
    }

    /// etcd's node.Repr: directories list their non-hidden children only when
    /// `recursive`; children are always in key order (a valid "unsorted"
    /// order too).
    pub fn repr(&self, recursive: bool, now: i64) -> NodeExtern {
        let mut ext = NodeExtern::bare(self.key(), self.modified_index, self.created_index);
        let (exp, ttl) = self.expiration_and_ttl(now);
        ext.expiration = exp;
        ext.ttl = ttl;
        match &self.children {
            Some(children) => {
                ext.dir = true;
                if recursive {
                    ext.nodes = children
                        .values()
                        .filter(|c| !c.is_hidden())
                        .map(|c| c.repr(true, now))
                        .collect();
                }
            }
            None => ext.value = Some(self.value.to_string()),
        }
        ext
    }

    /// etcd's loadInternalNode (used by Get): a directory always lists its
    /// direct non-hidden children, deeper levels only when `recursive`.
    pub fn load_into(&self, ext: &mut NodeExtern, recursive: bool, now: i64) {
        match &self.children {
            Some(children) => {
                ext.dir = true;
                ext.nodes = children
                    .values()
                    .filter(|c| !c.is_hidden())
                    .map(|c| c.repr(recursive, now))
                    .collect();
            }
            None => ext.value = Some(self.value.to_string()),
        }
        let (exp, ttl) = self.expiration_and_ttl(now);
        ext.expiration = exp;
        ext.ttl = ttl;
    }

    /// Compares against prevValue ("" = any) and prevIndex (0 = any).
    pub fn compare(&self, prev_value: &str, prev_index: u64) -> CompareResult {
        let index_ok = prev_index == 0 || self.modified_index == prev_index;
        let value_ok = prev_value.is_empty() || &*self.value == prev_value;
        match (value_ok, index_ok) {
            (true, true) => CompareResult::Match,
            (false, true) => CompareResult::ValueNotMatch,
            (true, false) => CompareResult::IndexNotMatch,
            (false, false) => CompareResult::NotMatch,
        }
    }

    /// etcd's cause text for a failed comparison.
    pub fn compare_fail_cause(
        &self,
        which: CompareResult,
        prev_value: &str,
        prev_index: u64,
    ) -> String {
        match which {
            CompareResult::IndexNotMatch => format!("[{} != {}]", prev_index, self.modified_index),
            CompareResult::ValueNotMatch => format!("[{} != {}]", prev_value, self.value),
            _ => format!(
                "[{} != {}] [{} != {}]",
                prev_value, self.value, prev_index, self.modified_index
            ),
        }
    }

    /// Walks a clean rooted path from this (root) node, like etcd's internalGet.
    pub fn lookup(&self, p: &str) -> Result<&Node, LookupError> {
        let mut curr = self;
        for name in path::components(p) {
            let children = match &curr.children {
                Some(c) => c,
                None => return Err(LookupError::NotDir(curr.path.to_string())),
            };
            curr = match children.get(name) {
                Some(c) => c,
                None => return Err(LookupError::NotFound(path::join(&curr.path, name))),
            };
        }
        Ok(curr)
    }

    /// Mutable lookup of an existing node.
    pub fn lookup_mut(&mut self, p: &str) -> Option<&mut Node> {
        let mut curr = self;
        for name in path::components(p) {
            curr = curr.children.as_mut()?.get_mut(name)?;
        }
        Some(curr)
    }

    /// Detaches the node at `p` (not the root) and returns it.
    pub fn remove_at(&mut self, p: &str) -> Option<Node> {
        let (parent, name) = path::split_last(p);
        self.lookup_mut(parent)?.children.as_mut()?.remove(name)
    }

    /// Post-order list of (path, expire_time) of this node and everything
    /// below it: the order in which etcd reports removed nodes.
    pub fn removal_order(&self, out: &mut Vec<(String, Option<i64>)>) {
        if let Some(children) = &self.children {
            for c in children.values() {
                c.removal_order(out);
            }
        }
        out.push((self.path.to_string(), self.expire_time));
    }
}

/// One node in the flat snapshot form (parents always precede children).
#[derive(Serialize, Deserialize)]
struct FlatNode {
    path: String,
    created_index: u64,
    modified_index: u64,
    #[serde(default)]
    expire_time: Option<i64>,
    /// None for directories.
    #[serde(default)]
    value: Option<String>,
}

/// [`FlatNode`] borrowed from the tree, for encoding (the same fields and layout).
#[derive(Serialize)]
struct FlatNodeRef<'a> {
    path: &'a str,
    created_index: u64,
    modified_index: u64,
    expire_time: Option<i64>,
    value: Option<&'a str>,
}

/// The whole tree; serialized as a flat pre-order list so that deep trees do
/// not hit recursion limits of serde formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tree(pub Node);

impl Default for Tree {
    fn default() -> Tree {
        Tree(Node::new_dir("/".to_string(), 0, None))
    }
}

impl Serialize for Tree {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fn walk<'a>(n: &'a Node, out: &mut Vec<&'a Node>) {
            out.push(n);
            if let Some(children) = &n.children {
                for c in children.values() {
                    walk(c, out);
                }
            }
        }
        let mut all = Vec::new();
        walk(&self.0, &mut all);
        // Borrowed fields: no second copy of every path and value while a snapshot encodes.
        s.collect_seq(all.into_iter().map(|n| FlatNodeRef {
            path: &n.path,
            created_index: n.created_index,
            modified_index: n.modified_index,
            expire_time: n.expire_time,
            value: (!n.is_dir()).then_some(&*n.value),
        }))
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tree, D::Error> {
        use serde::de::Error;
        let flat: Vec<FlatNode> = Vec::deserialize(d)?;
        let mut it = flat.into_iter();
        let root = it.next().ok_or_else(|| D::Error::custom("empty tree"))?;
        if root.path != "/" || root.value.is_some() {
            return Err(D::Error::custom("tree must start with the root directory"));
        }
        let mut tree = Node::new_dir("/".to_string(), root.created_index, root.expire_time);
        tree.modified_index = root.modified_index;
        for f in it {
            let node = match f.value {
                Some(v) => Node::new_file(f.path.as_str(), v, f.created_index, f.expire_time),
                None => Node::new_dir(f.path.as_str(), f.created_index, f.expire_time),
            };
            let node = Node {
                modified_index: f.modified_index,
                ..node
            };
            let (parent, name) = path::split_last(&f.path);
            let parent = tree
                .lookup_mut(parent)
                .and_then(|p| p.children.as_mut())
                .ok_or_else(|| D::Error::custom(format!("orphan node {}", f.path)))?;
            parent.insert(name.into(), node);
        }
        Ok(Tree(tree))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Node {
        let mut root = Node::new_dir("/", 0, None);
        let mut d = Node::new_dir("/d", 4, None);
        d.children
            .as_mut()
            .unwrap()
            .insert("a".into(), Node::new_file("/d/a", "1", 4, None));
        d.children
            .as_mut()
            .unwrap()
            .insert("_h".into(), Node::new_file("/d/_h", "h", 5, None));
        let mut sub = Node::new_dir("/d/sub", 6, Some(10_000_000_000));
        sub.children
            .as_mut()
            .unwrap()
            .insert("x".into(), Node::new_file("/d/sub/x", "2", 6, None));
        d.children.as_mut().unwrap().insert("sub".into(), sub);
        root.children.as_mut().unwrap().insert("d".into(), d);
        root
    }

    #[test]
    fn ttl_rounding_matches_etcd() {
        let n = Node::new_file("/a", "", 1, Some(10 * NANOS_PER_SEC));
        assert_eq!(n.expiration_and_ttl(0).1, 10);
        assert_eq!(n.expiration_and_ttl(1).1, 10); // 9.999999999s -> 10
        assert_eq!(n.expiration_and_ttl(NANOS_PER_SEC - 1).1, 10);
        assert_eq!(n.expiration_and_ttl(NANOS_PER_SEC).1, 9);
        assert_eq!(n.expiration_and_ttl(10 * NANOS_PER_SEC).1, 0);
        assert_eq!(n.expiration_and_ttl(10 * NANOS_PER_SEC + 500_000_000).1, 0); // -0.5s truncates
        assert_eq!(n.expiration_and_ttl(11 * NANOS_PER_SEC + 500_000_000).1, -1);
        let p = Node::new_file("/p", "", 1, None);
        assert_eq!(p.expiration_and_ttl(5), (None, 0));
    }

    #[test]
    fn lookup_errors() {
        let root = sample();
        assert_eq!(&*root.lookup("/d/a").unwrap().value, "1");
        assert_eq!(&*root.lookup("/").unwrap().path, "/");
        assert_eq!(
            root.lookup("/nope").unwrap_err(),
            LookupError::NotFound("/nope".into())
        );
        assert_eq!(
            root.lookup("/d/zz/y").unwrap_err(),
            LookupError::NotFound("/d/zz".into())
        );
        assert_eq!(
            root.lookup("/d/a/b/c").unwrap_err(),
            LookupError::NotDir("/d/a".into())
        );
    }

    #[test]
    fn repr_hides_hidden_and_respects_recursion() {
        let root = sample();
        let d = root.lookup("/d").unwrap();
        let flat = d.repr(false, 0);
        assert!(flat.nodes.is_empty());
        let mut ext = NodeExtern::bare("/d", 4, 4);
        d.load_into(&mut ext, false, 0);
        let keys: Vec<_> = ext.nodes.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, ["/d/a", "/d/sub"]);
        assert!(ext.nodes[1].nodes.is_empty());
        assert_eq!(ext.nodes[1].ttl, 10);
        let mut ext = NodeExtern::bare("/d", 4, 4);
        d.load_into(&mut ext, true, 0);
        assert_eq!(ext.nodes[1].nodes[0].key, "/d/sub/x");
    }

    #[test]
    fn compare_causes() {
        let n = Node::new_file("/foo", "baz", 6, None);
        assert_eq!(n.compare("", 0), CompareResult::Match);
        let w = n.compare("x", 1);
        assert_eq!(n.compare_fail_cause(w, "x", 1), "[x != baz] [1 != 6]");
        let w = n.compare("x", 0);
        assert_eq!(n.compare_fail_cause(w, "x", 0), "[x != baz]");
        let w = n.compare("", 1);
        assert_eq!(n.compare_fail_cause(w, "", 1), "[1 != 6]");
        let w = n.compare("baz", 6);
        assert_eq!(w, CompareResult::Match);
    }

    #[test]
    fn removal_order_is_post_order() {
        let root = sample();
        let mut out = Vec::new();
        root.lookup("/d").unwrap().removal_order(&mut out);
        let paths: Vec<_> = out.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/d/_h", "/d/a", "/d/sub/x", "/d/sub", "/d"]);
    }

    #[test]
    fn tree_flat_serde_roundtrip_and_deep_paths() {
        let t = Tree(sample());
        let j = serde_json::to_string(&t).unwrap();
        let back: Tree = serde_json::from_str(&j).unwrap();
        assert_eq!(back, t);
        // 300 levels deep must survive serde_json's recursion limit
        let mut root = Node::new_dir("/", 0, None);
        let mut p = String::new();
        for i in 0..300 {
            let parent = if p.is_empty() {
                "/".to_string()
            } else {
                p.clone()
            };
            p = path::join(&parent, &format!("l{i}"));
            root.lookup_mut(&parent)
                .unwrap()
                .children
                .as_mut()
                .unwrap()
                .insert(
                    format!("l{i}").into(),
                    Node::new_dir(p.clone(), i + 1, None),
                );
        }
        let t = Tree(root);
        let back: Tree = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }
}
