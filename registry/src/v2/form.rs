//! Form decoding with the rules of Go's `net/url.ParseQuery` and
//! `net/http.Request.ParseForm` (Go 1.19): `&` separates pairs, a pair
//! containing `;` is rejected, `+` means space, bad `%` escapes are reported
//! (the first such error wins, pairs with errors are skipped) and decoded
//! bytes that are not UTF-8 become U+FFFD one byte at a time, the way Go's
//! JSON encoder would print them.

/// Parsed form values in first-seen key order; each key keeps all its values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Values {
    entries: Vec<(String, Vec<String>)>,
}

impl Values {
    /// All values of `key`, if the key was present at all.
    pub fn get_all(&self, key: &str) -> Option<&[String]> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// True if `key` appeared (even with an empty value).
    pub fn has(&self, key: &str) -> bool {
        self.get_all(key).is_some()
    }

    /// First value of `key` or "" (Go's `FormValue`).
    pub fn first(&self, key: &str) -> &str {
        self.get_all(key)
            .and_then(|v| v.first())
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Appends a value to `key`.
    pub fn add(&mut self, key: String, value: String) {
        if let Some((_, v)) = self.entries.iter_mut().find(|(k, _)| *k == key) {
            v.push(value);
        } else {
            self.entries.push((key, vec![value]));
        }
    }

    /// Appends every value of `other` (Go's copyValues).
    pub fn extend(&mut self, other: Values) {
        for (k, vs) in other.entries {
            for v in vs {
                self.add(k.clone(), v);
            }
        }
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no key was parsed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Converts bytes to a String, replacing each byte that does not start a
/// valid UTF-8 sequence by U+FFFD (one replacement per bad byte, as Go does).
pub fn go_lossy_utf8(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.push_str(std::str::from_utf8(&bytes[..good]).expect("validated prefix"));
                out.push('\u{fffd}');
                bytes = &bytes[good + 1..];
            }
        }
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Go's `url.QueryUnescape`, returning the error text on failure.
pub fn query_unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let ok =
                    i + 2 < b.len() && hex_val(b[i + 1]).is_some() && hex_val(b[i + 2]).is_some();
                if !ok {
                    let end = (i + 3).min(b.len());
                    return Err(format!("invalid URL escape {}", go_quote(&b[i..end])));
                }
                out.push(hex_val(b[i + 1]).unwrap() * 16 + hex_val(b[i + 2]).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(go_lossy_utf8(&out))
}

/// Minimal `strconv.Quote` for the short byte strings in escape errors.
fn go_quote(mut b: &[u8]) -> String {
    let mut out = String::from("\"");
    while !b.is_empty() {
        let (ch, len) = match std::str::from_utf8(b) {
            Ok(s) => (s.chars().next(), 0),
            Err(e) if e.valid_up_to() > 0 => (
                std::str::from_utf8(&b[..e.valid_up_to()])
                    .ok()
                    .and_then(|s| s.chars().next()),
                0,
            ),
            Err(_) => (None, 1),
        };
        match ch {
            None => {
                out.push_str(&format!("\\x{:02x}", b[0]));
                b = &b[len..];
            }
            Some(c) => {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                        out.push_str(&format!("\\x{:02x}", c as u32))
                    }
                    c => out.push(c),
                }
                b = &b[c.len_utf8()..];
            }
        }
    }
    out.push('"');
    out
}

/// Go's `url.ParseQuery`: returns what could be parsed plus the error, if any.
pub fn parse_query(query: &str) -> (Values, Option<String>) {
    let mut values = Values::default();
    let mut err: Option<String> = None;
    let mut rest = query;
    while !rest.is_empty() {
        let pair = match rest.find('&') {
            Some(i) => {
                let p = &rest[..i];
                rest = &rest[i + 1..];
                p
            }
            None => {
                let p = rest;
                rest = "";
                p
            }
        };
        if pair.contains(';') {
            // Go overwrites any earlier error here.
            err = Some("invalid semicolon separator in query".to_string());
            continue;
        }
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match pair.find('=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, ""),
        };
        let k = match query_unescape(k) {
            Ok(k) => k,
            Err(e) => {
                err.get_or_insert(e);
                continue;
            }
        };
        let v = match query_unescape(v) {
            Ok(v) => v,
            Err(e) => {
                err.get_or_insert(e);
                continue;
            }
        };
        values.add(k, v);
    }
    (values, err)
}

/// Largest form body Go's ParseForm accepts (10 MB).
pub const MAX_FORM_BODY: usize = 10 << 20;

/// Go's `Request.ParseForm` for an `application/x-www-form-urlencoded` body:
/// the body is only read for POST, PUT and PATCH; body values come before
/// query values; a body error takes precedence over a query error.
pub fn parse_form(method: &str, query: &str, body: &[u8]) -> (Values, Option<String>) {
    let mut form = Values::default();
    let mut err = None;
    if matches!(method, "POST" | "PUT" | "PATCH") {
        if body.len() > MAX_FORM_BODY {
            err = Some("http: POST too large".to_string());
        } else {
            let (v, e) = parse_query(&go_lossy_utf8(body));
            form = v;
            err = e;
        }
    }
    let (q, e) = parse_query(query);
    if err.is_none() {
        err = e;
    }
    form.extend(q);
    (form, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_pairs_and_plus() {
        let (v, e) = parse_query("a=1&b=x+y%20z&c&a=2&=q");
        assert!(e.is_none());
        assert_eq!(v.get_all("a").unwrap(), ["1", "2"]);
        assert_eq!(v.first("b"), "x y z");
        assert!(v.has("c"));
        assert_eq!(v.first("c"), "");
        assert_eq!(v.first(""), "q");
        assert!(!v.has("d"));
    }

    #[test]
    fn escape_errors_match_go_text() {
        assert_eq!(
            parse_query("%zz=1").1.unwrap(),
            "invalid URL escape \"%zz\""
        );
        assert_eq!(
            parse_query("value=1&%zq").1.unwrap(),
            "invalid URL escape \"%zq\""
        );
        assert_eq!(
            parse_query("value=1&%z").1.unwrap(),
            "invalid URL escape \"%z\""
        );
        assert_eq!(parse_query("v=%").1.unwrap(), "invalid URL escape \"%\"");
        assert_eq!(
            parse_query("v=%\u{2603}").1.unwrap(),
            "invalid URL escape \"%\\xe2\\x98\""
        );
        // the bad pair is skipped, the others are kept
        let (v, _) = parse_query("a=%zz&b=2");
        assert!(!v.has("a"));
        assert_eq!(v.first("b"), "2");
    }

    #[test]
    fn semicolons_rejected() {
        let (v, e) = parse_query("a=1;b=2&c=3");
        assert_eq!(e.unwrap(), "invalid semicolon separator in query");
        assert!(!v.has("a"));
        assert_eq!(v.first("c"), "3");
        // semicolon error overrides an earlier escape error, as in Go
        assert_eq!(
            parse_query("%zz=1&a;b").1.unwrap(),
            "invalid semicolon separator in query"
        );
        assert_eq!(
            parse_query("a;b&%zz=1").1.unwrap(),
            "invalid semicolon separator in query"
        );
    }

    #[test]
    fn invalid_utf8_becomes_replacement_per_byte() {
        let (v, _) = parse_query("v=%FF%FEx+y%20z");
        assert_eq!(v.first("v"), "\u{fffd}\u{fffd}x y z");
        assert_eq!(go_lossy_utf8(&[0xe2, 0x80, b'A']), "\u{fffd}\u{fffd}A");
    }

    #[test]
    fn body_before_query_and_only_for_put_post_patch() {
        let (v, e) = parse_form("PUT", "value=q", b"value=b");
        assert!(e.is_none());
        assert_eq!(v.get_all("value").unwrap(), ["b", "q"]);
        let (v, _) = parse_form("GET", "value=q", b"value=b");
        assert_eq!(v.get_all("value").unwrap(), ["q"]);
        let (v, _) = parse_form("DELETE", "", b"value=b");
        assert!(v.is_empty());
    }

    #[test]
    fn body_error_wins() {
        let (_, e) = parse_form("POST", "%zz", b"%zq");
        assert_eq!(e.unwrap(), "invalid URL escape \"%zq\"");
        let (_, e) = parse_form("POST", "%zz", b"a=1");
        assert_eq!(e.unwrap(), "invalid URL escape \"%zz\"");
    }
}
