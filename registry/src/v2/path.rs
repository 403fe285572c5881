//! Path helpers with the semantics of Go's `path` package for rooted paths.

/// `path.Clean(path.Join("/", p))`: always rooted, no trailing slash (except
/// the root itself), `.` and `..` resolved, repeated slashes collapsed.
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for comp in p.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = String::with_capacity(p.len() + 1);
    for c in &parts {
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// `path.Join(dir, name)` for a clean rooted `dir` and a single component.
pub fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Components of a clean rooted path ("/" has none).
pub fn components(p: &str) -> impl Iterator<Item = &str> {
    p.split('/').filter(|c| !c.is_empty())
}

/// `path.Split` on a clean rooted path: (parent dir, last component).
pub fn split_last(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(0) => ("/", &p[1..]),
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("/", p),
    }
}

/// Last component of a clean rooted path.
pub fn base_name(p: &str) -> &str {
    split_last(p).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_like_go() {
        assert_eq!(clean(""), "/");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("foo"), "/foo");
        assert_eq!(clean("//foo//bar/"), "/foo/bar");
        assert_eq!(clean("/foo/./bar/../baz"), "/foo/baz");
        assert_eq!(clean("/../.."), "/");
    }

    #[test]
    fn split_and_join() {
        assert_eq!(split_last("/a"), ("/", "a"));
        assert_eq!(split_last("/a/b/c"), ("/a/b", "c"));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert_eq!(components("/a/b").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(components("/").count(), 0);
    }
}
