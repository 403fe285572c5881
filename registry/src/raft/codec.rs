//! How the registry encodes what it keeps on disk and sends to its peers: log entries, Raft
//! RPCs, forwarded writes and their answers, snapshot data.
//!
//! The encoding is bincode (varint integers, little-endian) behind a one-byte tag,
//! [`BINARY_TAG`]. Earlier versions wrote JSON, and every decoder here still reads it: a JSON
//! document never starts with `0xB1` (it is not even the first byte of a UTF-8 character), so
//! the tag tells the two apart. A data dir written by an older version therefore opens
//! unchanged, and its JSON entries and snapshot are read as they are.
//!
//! Why not JSON: a 64-byte PUT was a ~420-byte log entry, with every request option spelt out
//! by name, and a forwarded write's answer carried the response body as a JSON array of
//! numbers (about four bytes per byte). Every log byte is written to RocksDB's WAL, its
//! memtable and a table file, and checksummed on each, so the size of an entry is CPU on all
//! three members.
//!
//! What stays JSON: snapshot metadata, the `/raft/cluster` answer a joining member reads,
//! and the snapshot chunk header (small, rare, and useful to read by eye).

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// First byte of every binary-encoded value.
pub const BINARY_TAG: u8 = 0xB1;

/// The codec's name, as peers announce it (`x-berth-codec`).
pub const NAME: &str = "bincode1";

/// True when `bytes` are in the binary encoding (not JSON).
pub fn is_binary(bytes: &[u8]) -> bool {
    bytes.first() == Some(&BINARY_TAG)
}

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("binary: {0}")]
    Binary(#[from] bincode::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("empty input")]
    Empty,
}

fn options() -> impl Options {
    // Varint integers, little-endian, trailing bytes rejected.
    bincode::DefaultOptions::new()
}

/// Encodes `value` as [`BINARY_TAG`] followed by its bincode.
///
/// # Panics
///
/// If `value`'s `Serialize` cannot be expressed in bincode (a sequence of unknown length, a
/// map key that is not data): every type passed here is plain derived data, so that is a
/// programming error, caught by the round-trip tests below.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(BINARY_TAG);
    options()
        .serialize_into(&mut out, value)
        .expect("value encodes as bincode");
    out
}

/// Decodes what [`encode`] wrote, or JSON written by an earlier version.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.first() {
        None => Err(DecodeError::Empty),
        Some(&BINARY_TAG) => Ok(options().deserialize(&bytes[1..])?),
        Some(_) => Ok(serde_json::from_slice(bytes)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Applied, Entry, LogId, Proposal};
    use crate::v2::{Command, KeyRequest, Method};
    use openraft::{CommittedLeaderId, EntryPayload};

    fn put(path: &str, val: &str, ttl: Option<u64>) -> Command {
        let mut req = KeyRequest::new(Method::Put, path);
        req.val = val.to_string();
        req.ttl = ttl;
        req.prev_exist = Some(false);
        Command::Key {
            req,
            now: 1_700_000_000_123_456_789,
        }
    }

    fn entry(index: u64, payload: Proposal) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 7), index),
            payload: EntryPayload::Normal(payload),
        }
    }

    #[test]
    fn a_log_entry_round_trips_and_is_much_smaller_than_its_json() {
        let value = "v".repeat(64);
        let e = entry(
            42,
            Proposal::Batch(vec![
                put("/bench/put/1-1", &value, None),
                put("/services/web/a", "{\"host\":\"10.0.0.1\"}", Some(60)),
                Command::Expire { now: -5 },
            ]),
        );
        let bin = encode(&e);
        let json = serde_json::to_vec(&e).unwrap();
        assert_eq!(bin[0], BINARY_TAG);
        let back: Entry = decode(&bin).unwrap();
        assert_eq!(
            serde_json::to_vec(&back).unwrap(),
            json,
            "binary round trip"
        );
        assert!(
            bin.len() * 2 < json.len(),
            "binary {} bytes vs JSON {}",
            bin.len(),
            json.len()
        );
    }

    #[test]
    fn json_written_by_an_earlier_version_still_decodes() {
        let e = entry(9, Proposal::V2(put("/a", "b", Some(5))));
        let json = serde_json::to_vec(&e).unwrap();
        let back: Entry = decode(&json).unwrap();
        assert_eq!(serde_json::to_vec(&back).unwrap(), json);
        let applied = vec![Applied {
            status: 201,
            etcd_index: 7,
            body: b"{\"action\":\"set\"}".to_vec(),
        }];
        let json = serde_json::to_vec(&applied).unwrap();
        assert_eq!(decode::<Vec<Applied>>(&json).unwrap(), applied);
        assert_eq!(decode::<Vec<Applied>>(&encode(&applied)).unwrap(), applied);
    }

    #[test]
    fn a_snapshot_of_a_busy_store_round_trips_in_either_encoding() {
        use crate::raft::state_machine::{AppState, Attributes};
        let mut state = AppState::default();
        let mut cmds = vec![
            put("/dir/a", "1", None),
            put("/dir/b", "two", Some(30)),
            put("/dir/sub/c", "ünïcode \"quoted\"", Some(5)),
            put("/top", "", None),
        ];
        let mut mkdir = KeyRequest::new(Method::Put, "/empty-dir");
        mkdir.dir = true;
        cmds.push(Command::Key {
            req: mkdir,
            now: 1_700_000_000_000_000_000,
        });
        cmds.push(Command::Key {
            req: KeyRequest::new(Method::Delete, "/dir/a"),
            now: 1_700_000_000_000_000_001,
        });
        cmds.push(Command::Expire {
            now: 1_700_000_006_000_000_000,
        });
        for cmd in &cmds {
            state.store.apply(cmd).expect("command applies");
        }
        state.attributes.insert(
            0xabc,
            Attributes {
                name: "n1".into(),
                client_urls: vec!["http://127.0.0.1:2379".into()],
            },
        );
        let json = serde_json::to_vec(&state).unwrap();
        let bin = encode(&state);
        assert!(bin.len() < json.len());
        for bytes in [&bin, &json] {
            let back: AppState = decode(bytes).unwrap();
            assert_eq!(serde_json::to_vec(&back).unwrap(), json);
        }
    }

    #[test]
    fn damaged_or_empty_input_is_an_error_not_a_value() {
        let e = entry(9, Proposal::V2(put("/a", "b", None)));
        let bin = encode(&e);
        assert!(matches!(decode::<Entry>(&[]), Err(DecodeError::Empty)));
        assert!(matches!(
            decode::<Entry>(&bin[..bin.len() - 1]),
            Err(DecodeError::Binary(_))
        ));
        let mut trailing = bin.clone();
        trailing.push(0);
        assert!(decode::<Entry>(&trailing).is_err(), "trailing bytes");
        assert!(matches!(
            decode::<Entry>(b"{\"log_id\""),
            Err(DecodeError::Json(_))
        ));
        // A length prefix claiming far more than is there fails instead of allocating it.
        let mut huge = vec![BINARY_TAG];
        huge.extend_from_slice(&[0xFD]);
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<Vec<u8>>(&huge).is_err());
    }
}
