//! Parsing and validation of `/v2/keys` requests (etcd's parseKeyRequest).

use serde::{Deserialize, Serialize};

use super::error::V2Error;
use super::form::{self, Values};
use super::path;

/// HTTP method of a keys request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    Get,
    /// HEAD: answered like a GET without body (never a watch, never quorum).
    Head,
    Put,
    Post,
    Delete,
}

impl Method {
    /// Parses an HTTP method name (case-sensitive, as Go).
    pub fn from_http(m: &str) -> Option<Method> {
        match m {
            "GET" => Some(Method::Get),
            "HEAD" => Some(Method::Head),
            "PUT" => Some(Method::Put),
            "POST" => Some(Method::Post),
            "DELETE" => Some(Method::Delete),
            _ => None,
        }
    }

    /// The HTTP name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// A validated keys request (mirrors etcd's pb.Request for the v2 API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRequest {
    pub method: Method,
    /// Clean store path, "/" for the root.
    pub path: String,
    /// `value`.
    pub val: String,
    pub dir: bool,
    /// `prevValue` ("" = not given; an explicit empty one is rejected).
    pub prev_value: String,
    /// `prevIndex` (0 = not given).
    pub prev_index: u64,
    /// `prevExist` (None = not given).
    pub prev_exist: Option<bool>,
    /// `ttl` in seconds (None = not given or empty, i.e. permanent).
    pub ttl: Option<u64>,
    pub wait: bool,
    /// `waitIndex` (0 = from the next index).
    pub wait_index: u64,
    pub recursive: bool,
    pub sorted: bool,
    pub quorum: bool,
    pub stream: bool,
    /// `refresh=true` (validated: needs ttl, no value).
    pub refresh: bool,
    /// `noValueOnSuccess=true`: see [`crate::v2::Event::strip_value_for_no_value_on_success`].
    pub no_value_on_success: bool,
}

impl KeyRequest {
    /// A request with every option unset.
    pub fn new(method: Method, path: &str) -> KeyRequest {
        KeyRequest {
            method,
            path: path::clean(path),
            val: String::new(),
            dir: false,
            prev_value: String::new(),
            prev_index: 0,
            prev_exist: None,
            ttl: None,
            wait: false,
            wait_index: 0,
            recursive: false,
            sorted: false,
            quorum: false,
            stream: false,
            refresh: false,
            no_value_on_success: false,
        }
    }

    /// True if this request must go through consensus (etcd: PUT, POST,
    /// DELETE, and GET with quorum=true).
    pub fn needs_consensus(&self) -> bool {
        match self.method {
            Method::Put | Method::Post | Method::Delete => true,
            Method::Get => self.quorum,
            Method::Head => false,
        }
    }
}

/// Go's strconv.ParseBool.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's strconv.ParseUint(s, 10, 64): ASCII digits only, no sign.
fn parse_go_uint(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// First value of `key` as a bool; absent = false. Err(()) if malformed.
fn get_bool(form: &Values, key: &str) -> Result<bool, ()> {
    match form.get_all(key) {
        None => Ok(false),
        Some(vals) => parse_go_bool(vals.first().map(String::as_str).unwrap_or("")).ok_or(()),
    }
}

/// First value of `key` as a u64; absent = 0. Err(()) if malformed.
fn get_uint(form: &Values, key: &str) -> Result<u64, ()> {
    match form.get_all(key) {
        None => Ok(0),
        Some(vals) => parse_go_uint(vals.first().map(String::as_str).unwrap_or("")).ok_or(()),
    }
}

/// Parses a keys request like etcd 3.4's parseKeyRequest.
///
/// * `method`: the HTTP method. Only GET, HEAD, PUT, POST and DELETE are
///   keys methods; the HTTP layer must answer others with 405 before calling
///   this (they yield a 210 error here).
/// * `key_path`: the decoded URL path after `/v2/keys` ("" or "/" = root).
/// * `query`: the raw query string (without '?').
/// * `body`: the raw request body. Pass it only when the Content-Type is
///   `application/x-www-form-urlencoded` (Go ignores other bodies); it is
///   read for POST and PUT only, and its values come before the query's.
pub fn parse_key_request(
    method: &str,
    key_path: &str,
    query: &str,
    body: &[u8],
) -> Result<KeyRequest, V2Error> {
    let (form, err) = form::parse_form(method, query, body);
    if let Some(e) = err {
        return Err(V2Error::invalid_form(e));
    }
    let m = Method::from_http(method)
        .ok_or_else(|| V2Error::invalid_form(format!("unsupported method {method}")))?;
    let mut rr = KeyRequest::new(m, key_path);

    rr.prev_index = get_uint(&form, "prevIndex")
        .map_err(|_| V2Error::index_nan(r#"invalid value for "prevIndex""#))?;
    rr.wait_index = get_uint(&form, "waitIndex")
        .map_err(|_| V2Error::index_nan(r#"invalid value for "waitIndex""#))?;

    let flag = |name: &str| -> Result<bool, V2Error> {
        get_bool(&form, name)
            .map_err(|_| V2Error::invalid_field(format!("invalid value for \"{name}\"")))
    };
    rr.recursive = flag("recursive")?;
    rr.sorted = flag("sorted")?;
    rr.wait = flag("wait")?;
    rr.dir = flag("dir")?;
    rr.quorum = flag("quorum")?;
    rr.stream = flag("stream")?;

    if rr.wait && m != Method::Get {
        return Err(V2Error::invalid_field(
            r#""wait" can only be used with GET requests"#,
        ));
    }

    rr.prev_value = form.first("prevValue").to_string();
    if form.has("prevValue") && rr.prev_value.is_empty() {
        return Err(V2Error::prev_value_required(
            r#""prevValue" cannot be empty"#,
        ));
    }

    rr.no_value_on_success = flag("noValueOnSuccess")?;

    if !form.first("ttl").is_empty() {
        let ttl =
            get_uint(&form, "ttl").map_err(|_| V2Error::ttl_nan(r#"invalid value for "ttl""#))?;
        rr.ttl = Some(ttl);
    }

    if form.has("prevExist") {
        let v = get_bool(&form, "prevExist")
            .map_err(|_| V2Error::invalid_field("invalid value for prevExist"))?;
        rr.prev_exist = Some(v);
    }

    if form.has("refresh") {
        let v = get_bool(&form, "refresh")
            .map_err(|_| V2Error::invalid_field("invalid value for refresh"))?;
        if v {
            if form.has("value") && !form.first("value").is_empty() {
                return Err(V2Error::refresh_value("A value was provided on a refresh"));
            }
            if rr.ttl.is_none() {
                return Err(V2Error::refresh_ttl_required("No TTL value set"));
            }
        }
        rr.refresh = v;
    }

    rr.val = form.first("value").to_string();
    Ok(rr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(method: &str, q: &str, body: &str) -> (u32, String) {
        let e = parse_key_request(method, "/foo", q, body.as_bytes()).unwrap_err();
        assert_eq!(e.index, 0);
        (e.code, e.cause)
    }

    #[test]
    fn plain_put() {
        let r = parse_key_request("PUT", "/foo/bar", "", b"value=bar").unwrap();
        assert_eq!(r.method, Method::Put);
        assert_eq!(r.path, "/foo/bar");
        assert_eq!(r.val, "bar");
        assert_eq!(r.ttl, None);
        assert_eq!(r.prev_exist, None);
        assert!(r.needs_consensus());
    }

    #[test]
    fn root_paths_and_cleaning() {
        assert_eq!(parse_key_request("GET", "", "", b"").unwrap().path, "/");
        assert_eq!(parse_key_request("GET", "/", "", b"").unwrap().path, "/");
        assert_eq!(
            parse_key_request("GET", "//a//b/", "", b"").unwrap().path,
            "/a/b"
        );
    }

    #[test]
    fn numeric_errors() {
        assert_eq!(
            err("PUT", "ttl=abc", ""),
            (202, r#"invalid value for "ttl""#.into())
        );
        assert_eq!(
            err("PUT", "ttl=%2B5", ""),
            (202, r#"invalid value for "ttl""#.into())
        );
        assert_eq!(
            err("PUT", "ttl=18446744073709551616", ""),
            (202, r#"invalid value for "ttl""#.into())
        );
        assert_eq!(
            err("PUT", "prevIndex=-1", ""),
            (203, r#"invalid value for "prevIndex""#.into())
        );
        assert_eq!(
            err("GET", "wait=true&waitIndex=x", ""),
            (203, r#"invalid value for "waitIndex""#.into())
        );
        // prevIndex is checked before waitIndex, and both before booleans
        assert_eq!(err("GET", "recursive=x&waitIndex=x&prevIndex=y", "").0, 203);
        assert!(err("GET", "recursive=x&waitIndex=x&prevIndex=y", "")
            .1
            .contains("prevIndex"));
    }

    #[test]
    fn bool_errors() {
        assert_eq!(
            err("GET", "recursive=yes", ""),
            (209, r#"invalid value for "recursive""#.into())
        );
        assert_eq!(
            err("GET", "recursive", ""),
            (209, r#"invalid value for "recursive""#.into())
        );
        assert_eq!(
            err("GET", "sorted=2", ""),
            (209, r#"invalid value for "sorted""#.into())
        );
        assert_eq!(
            err("GET", "wait=on", ""),
            (209, r#"invalid value for "wait""#.into())
        );
        assert_eq!(
            err("PUT", "dir=y", ""),
            (209, r#"invalid value for "dir""#.into())
        );
        assert_eq!(
            err("GET", "quorum=y", ""),
            (209, r#"invalid value for "quorum""#.into())
        );
        assert_eq!(
            err("GET", "stream=y", ""),
            (209, r#"invalid value for "stream""#.into())
        );
        assert_eq!(
            err("PUT", "noValueOnSuccess=x", "value=1"),
            (209, r#"invalid value for "noValueOnSuccess""#.into())
        );
        assert_eq!(
            err("PUT", "prevExist=maybe", ""),
            (209, "invalid value for prevExist".into())
        );
        assert_eq!(
            err("PUT", "prevExist", ""),
            (209, "invalid value for prevExist".into())
        );
        assert_eq!(
            err("PUT", "prevExist=", ""),
            (209, "invalid value for prevExist".into())
        );
        assert_eq!(
            err("PUT", "refresh=maybe&ttl=5", ""),
            (209, "invalid value for refresh".into())
        );
    }

    #[test]
    fn go_bool_spellings() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert!(
                parse_key_request("GET", "/a", &format!("recursive={t}"), b"")
                    .unwrap()
                    .recursive
            );
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert!(
                !parse_key_request("GET", "/a", &format!("recursive={f}"), b"")
                    .unwrap()
                    .recursive
            );
        }
        assert!(parse_key_request("GET", "/a", "recursive=tRUE", b"").is_err());
    }

    #[test]
    fn wait_only_with_get() {
        assert_eq!(
            err("PUT", "wait=true", "value=q"),
            (209, r#""wait" can only be used with GET requests"#.into())
        );
        assert_eq!(err("HEAD", "wait=true", "").0, 209);
        let r = parse_key_request(
            "GET",
            "/a",
            "wait=true&stream=true&waitIndex=7&recursive=true",
            b"",
        )
        .unwrap();
        assert!(r.wait && r.stream && r.recursive);
        assert_eq!(r.wait_index, 7);
        // stream without wait is accepted and simply ignored by a plain GET
        assert!(
            parse_key_request("GET", "/a", "stream=true", b"")
                .unwrap()
                .stream
        );
    }

    #[test]
    fn prev_value_empty_rejected() {
        assert_eq!(
            err("PUT", "prevValue=", "value=q"),
            (201, r#""prevValue" cannot be empty"#.into())
        );
        // the first value counts
        assert_eq!(err("PUT", "prevValue=&prevValue=x", "").0, 201);
        assert_eq!(
            parse_key_request("PUT", "/a", "prevValue=x", b"")
                .unwrap()
                .prev_value,
            "x"
        );
    }

    #[test]
    fn refresh_rules() {
        assert_eq!(
            err("PUT", "refresh=true", ""),
            (212, "No TTL value set".into())
        );
        assert_eq!(
            err("PUT", "refresh=true&ttl=", ""),
            (212, "No TTL value set".into())
        );
        assert_eq!(
            err("PUT", "refresh=true&ttl=5", "value=x"),
            (211, "A value was provided on a refresh".into())
        );
        let r = parse_key_request("PUT", "/a", "refresh=true&ttl=5&value=", b"").unwrap();
        assert!(r.refresh);
        assert_eq!(r.ttl, Some(5));
        // refresh=false needs nothing
        let r = parse_key_request("PUT", "/a", "refresh=false", b"value=x").unwrap();
        assert!(!r.refresh);
    }

    #[test]
    fn form_errors() {
        assert_eq!(
            err("PUT", "%zz=1", "value=1"),
            (210, "invalid URL escape \"%zz\"".into())
        );
        assert_eq!(
            err("PUT", "a=1;b=2", "value=1"),
            (210, "invalid semicolon separator in query".into())
        );
        assert_eq!(
            err("PUT", "", "value=1&%zq"),
            (210, "invalid URL escape \"%zq\"".into())
        );
        assert_eq!(
            err("PUT", "", "value=1&%z"),
            (210, "invalid URL escape \"%z\"".into())
        );
        // body is ignored for GET/DELETE, so its errors are too
        assert!(parse_key_request("DELETE", "/a", "", b"%zz").is_ok());
    }

    #[test]
    fn body_precedes_query() {
        let r = parse_key_request("PUT", "/h4", "value=q", b"value=b").unwrap();
        assert_eq!(r.val, "b");
        // empty ttl in query ignored, body ttl used
        let r = parse_key_request("PUT", "/h6", "value=q&ttl=", b"ttl=5").unwrap();
        assert_eq!(r.ttl, Some(5));
        assert_eq!(r.val, "q");
        // empty ttl in body wins over query ttl: permanent
        let r = parse_key_request("PUT", "/h6", "ttl=5", b"ttl=").unwrap();
        assert_eq!(r.ttl, None);
        // first "dir" value (body) wins
        let r = parse_key_request("PUT", "/h7", "dir=false", b"dir=1&value=").unwrap();
        assert!(r.dir);
        // DELETE reads no body
        let r = parse_key_request("DELETE", "/a", "", b"recursive=true").unwrap();
        assert!(!r.recursive);
    }

    #[test]
    fn values_are_decoded_like_go() {
        let r = parse_key_request("PUT", "/h3", "", b"value=%FF%FEx+y%20z").unwrap();
        assert_eq!(r.val, "\u{fffd}\u{fffd}x y z");
    }

    #[test]
    fn quorum_get_and_ttl_zero() {
        let r = parse_key_request("GET", "/a", "quorum=true&sorted=true", b"").unwrap();
        assert!(r.quorum && r.sorted && r.needs_consensus());
        assert!(!parse_key_request("GET", "/a", "", b"")
            .unwrap()
            .needs_consensus());
        let r = parse_key_request("PUT", "/a", "ttl=0", b"value=z").unwrap();
        assert_eq!(r.ttl, Some(0));
    }

    #[test]
    fn serde_roundtrip() {
        let r =
            parse_key_request("PUT", "/a", "ttl=5&prevExist=true&prevIndex=3", b"value=z").unwrap();
        let back: KeyRequest = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
