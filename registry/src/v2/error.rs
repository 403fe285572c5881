//! etcd v2 API errors: numeric codes, canonical messages, HTTP status codes
//! and the JSON body etcd writes for them.

use serde::{Deserialize, Serialize};

/// Key does not exist.
pub const ECODE_KEY_NOT_FOUND: u32 = 100;
/// prevValue / prevIndex comparison failed.
pub const ECODE_TEST_FAILED: u32 = 101;
/// Operation needs a file but found a directory.
pub const ECODE_NOT_FILE: u32 = 102;
/// Operation needs a directory but found a file.
pub const ECODE_NOT_DIR: u32 = 104;
/// Create on an existing key.
pub const ECODE_NODE_EXIST: u32 = 105;
/// Write to the root.
pub const ECODE_ROOT_RONLY: u32 = 107;
/// Non-recursive delete of a non-empty directory.
pub const ECODE_DIR_NOT_EMPTY: u32 = 108;
/// Authentication required.
pub const ECODE_UNAUTHORIZED: u32 = 110;
/// prevValue given but empty.
pub const ECODE_PREV_VALUE_REQUIRED: u32 = 201;
/// ttl is not a number.
pub const ECODE_TTL_NAN: u32 = 202;
/// prevIndex / waitIndex is not a number.
pub const ECODE_INDEX_NAN: u32 = 203;
/// Bad boolean (or misplaced) field.
pub const ECODE_INVALID_FIELD: u32 = 209;
/// Form could not be parsed.
pub const ECODE_INVALID_FORM: u32 = 210;
/// refresh together with a value.
pub const ECODE_REFRESH_VALUE: u32 = 211;
/// refresh without ttl.
pub const ECODE_REFRESH_TTL_REQUIRED: u32 = 212;
/// Generic internal / raft failure.
pub const ECODE_RAFT_INTERNAL: u32 = 300;
/// No leader.
pub const ECODE_LEADER_ELECT: u32 = 301;
/// Watcher removed by a recovery.
pub const ECODE_WATCHER_CLEARED: u32 = 400;
/// waitIndex older than the retained event history.
pub const ECODE_EVENT_INDEX_CLEARED: u32 = 401;

/// The fixed message etcd associates with each error code ("" if unknown).
pub fn message_for(code: u32) -> &'static str {
    match code {
        100 => "Key not found",
        101 => "Compare failed",
        102 => "Not a file",
        103 => "Reached the max number of peers in the cluster",
        104 => "Not a directory",
        105 => "Key already exists",
        106 => "The prefix of given key is a keyword in etcd",
        107 => "Root is read only",
        108 => "Directory not empty",
        109 => "Peer address has existed",
        110 => "The request requires user authentication",
        200 => "Value is Required in POST form",
        201 => "PrevValue is Required in POST form",
        202 => "The given TTL in POST form is not a number",
        203 => "The given index in POST form is not a number",
        204 => "Value or TTL is required in POST form",
        205 => "The given timeout in POST form is not a number",
        206 => "Name is required in POST form",
        207 => "Index or value is required",
        208 => "Index and value cannot both be specified",
        209 => "Invalid field",
        210 => "Invalid POST form",
        211 => "Value provided on refresh",
        212 => "A TTL must be provided on refresh",
        300 => "Raft Internal Error",
        301 => "During Leader Election",
        400 => "watcher is cleared due to etcd recovery",
        401 => "The event in requested index is outdated and cleared",
        402 => "Standby Internal Error",
        403 => "Invalid active size",
        404 => "Standby remove delay",
        500 => "Client Internal Error",
        _ => "",
    }
}

/// An etcd v2 error as returned to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({cause})")]
pub struct V2Error {
    /// etcd's error code (100..500).
    #[serde(rename = "errorCode")]
    pub code: u32,
    /// The canonical text for `code`.
    pub message: String,
    /// Detail (usually the key); omitted from JSON when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cause: String,
    /// Store index at the time of the error (0 for request validation errors).
    pub index: u64,
}

impl V2Error {
    /// Builds an error with etcd's message for `code`.
    pub fn new(code: u32, cause: impl Into<String>, index: u64) -> V2Error {
        V2Error {
            code,
            message: message_for(code).to_string(),
            cause: cause.into(),
            index,
        }
    }

    /// A request-validation error (index 0), like etcd's NewRequestError.
    pub fn request(code: u32, cause: impl Into<String>) -> V2Error {
        V2Error::new(code, cause, 0)
    }

    /// HTTP status etcd uses for this error.
    pub fn status(&self) -> u16 {
        match self.code {
            ECODE_KEY_NOT_FOUND => 404,
            ECODE_NOT_FILE | ECODE_DIR_NOT_EMPTY => 403,
            ECODE_UNAUTHORIZED => 401,
            ECODE_TEST_FAILED | ECODE_NODE_EXIST => 412,
            ECODE_RAFT_INTERNAL | ECODE_LEADER_ELECT => 500,
            _ => 400,
        }
    }

    /// The exact response body etcd writes (compact JSON plus a newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = super::json::to_go_json(self);
        out.push(b'\n');
        out
    }

    /// 100 Key not found.
    pub fn key_not_found(cause: impl Into<String>, index: u64) -> V2Error {
        V2Error::new(ECODE_KEY_NOT_FOUND, cause, index)
    }
    /// 101 Compare failed.
    pub fn test_failed(cause: impl Into<String>, index: u64) -> V2Error {
        V2Error::new(ECODE_TEST_FAILED, cause, index)
    }
    /// 102 Not a file.
    pub fn not_file(cause: impl Into<String>, index: u64) -> V2Error {
        V2Error::new(ECODE_NOT_FILE, cause, index)
    }
    /// 104 Not a directory.
    pub fn not_dir(cause: impl Into<String>, index: u64) -> V2Error {
        V2Error::new(ECODE_NOT_DIR, cause, index)
    }
    /// 105 Key already exists.
    pub fn node_exist(cause: impl Into<String>, index: u64) -> V2Error {
        V2Error::new(ECODE_NODE_EXIST, cause, index)
    }
    /// 107 Root is read only (etcd always uses cause "/").
    pub fn root_read_only(index: u64) -> V2Error {
        V2Error::new(ECODE_ROOT_RONLY, "/", index)
    }
    /// 108 Directory not empty.
    pub fn dir_not_empty(cause: impl Into<String>, index: u64) -> V2Error {
        V2Error::new(ECODE_DIR_NOT_EMPTY, cause, index)
    }
    /// 110 Unauthorized (etcd's cause is "Insufficient credentials").
    pub fn unauthorized() -> V2Error {
        V2Error::new(ECODE_UNAUTHORIZED, "Insufficient credentials", 0)
    }
    /// 201 PrevValue required.
    pub fn prev_value_required(cause: impl Into<String>) -> V2Error {
        V2Error::request(ECODE_PREV_VALUE_REQUIRED, cause)
    }
    /// 202 TTL not a number.
    pub fn ttl_nan(cause: impl Into<String>) -> V2Error {
        V2Error::request(ECODE_TTL_NAN, cause)
    }
    /// 203 index not a number.
    pub fn index_nan(cause: impl Into<String>) -> V2Error {
        V2Error::request(ECODE_INDEX_NAN, cause)
    }
    /// 209 Invalid field.
    pub fn invalid_field(cause: impl Into<String>) -> V2Error {
        V2Error::request(ECODE_INVALID_FIELD, cause)
    }
    /// 210 Invalid POST form.
    pub fn invalid_form(cause: impl Into<String>) -> V2Error {
        V2Error::request(ECODE_INVALID_FORM, cause)
    }
    /// 211 Value provided on refresh.
    pub fn refresh_value(cause: impl Into<String>) -> V2Error {
        V2Error::request(ECODE_REFRESH_VALUE, cause)
    }
    /// 212 TTL required on refresh.
    pub fn refresh_ttl_required(cause: impl Into<String>) -> V2Error {
        V2Error::request(ECODE_REFRESH_TTL_REQUIRED, cause)
    }
    /// 300 Raft internal error (etcd uses index 0 and the Go error text as cause).
    pub fn raft_internal(cause: impl Into<String>) -> V2Error {
        V2Error::new(ECODE_RAFT_INTERNAL, cause, 0)
    }
    /// 301 During leader election.
    pub fn leader_elect(cause: impl Into<String>) -> V2Error {
        V2Error::new(ECODE_LEADER_ELECT, cause, 0)
    }
    /// 400 Watcher cleared.
    pub fn watcher_cleared(cause: impl Into<String>, index: u64) -> V2Error {
        V2Error::new(ECODE_WATCHER_CLEARED, cause, index)
    }
    /// 401 history cleared: `start` is the oldest retained index, `requested` the waitIndex.
    pub fn event_index_cleared(start: u64, requested: u64, index: u64) -> V2Error {
        V2Error::new(
            ECODE_EVENT_INDEX_CLEARED,
            format!("the requested history has been cleared [{start}/{requested}]"),
            index,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_matches_etcd() {
        let e = V2Error::test_failed("[x != baz] [1 != 6]", 6);
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            "{\"errorCode\":101,\"message\":\"Compare failed\",\"cause\":\"[x != baz] [1 != 6]\",\"index\":6}\n"
        );
        assert_eq!(e.status(), 412);
    }

    #[test]
    fn empty_cause_is_omitted() {
        let e = V2Error::not_file("", 8);
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            "{\"errorCode\":102,\"message\":\"Not a file\",\"index\":8}\n"
        );
        assert_eq!(e.status(), 403);
    }

    #[test]
    fn quotes_in_cause_are_escaped() {
        let e = V2Error::ttl_nan(r#"invalid value for "ttl""#);
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            "{\"errorCode\":202,\"message\":\"The given TTL in POST form is not a number\",\"cause\":\"invalid value for \\\"ttl\\\"\",\"index\":0}\n"
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(V2Error::key_not_found("/a", 1).status(), 404);
        assert_eq!(V2Error::dir_not_empty("/a", 1).status(), 403);
        assert_eq!(V2Error::node_exist("/a", 1).status(), 412);
        assert_eq!(V2Error::root_read_only(1).status(), 400);
        assert_eq!(V2Error::not_dir("/a", 1).status(), 400);
        assert_eq!(V2Error::event_index_cleared(54, 42, 1053).status(), 400);
        assert_eq!(V2Error::unauthorized().status(), 401);
        assert_eq!(V2Error::raft_internal("x").status(), 500);
        assert_eq!(V2Error::leader_elect("x").status(), 500);
        assert_eq!(V2Error::invalid_form("x").status(), 400);
    }

    #[test]
    fn history_cleared_text() {
        let e = V2Error::event_index_cleared(54, 42, 1053);
        assert_eq!(
            e.message,
            "The event in requested index is outdated and cleared"
        );
        assert_eq!(e.cause, "the requested history has been cleared [54/42]");
        assert_eq!(e.index, 1053);
        assert_eq!(e.to_string(), "The event in requested index is outdated and cleared (the requested history has been cleared [54/42])");
    }
}
