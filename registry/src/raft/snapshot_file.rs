//! Snapshots kept as files of their own (`<data-dir>/snap/*.snap`), as etcd keeps
//! `member/snap`.
//!
//! A snapshot used to be one RocksDB value. Putting tens of MiB through RocksDB's WAL held up
//! the log appends queued behind it, and flushing it later cost seconds of a core. A file is
//! written once, beside the database, and never competes with the log's WAL.
//!
//! File layout (all integers little-endian):
//!
//! ```text
//! "BERTHSN1"  u32 meta length  meta (JSON of SnapshotMeta)  u64 data length  data  u32 CRC-32
//! ```
//!
//! The CRC covers everything before it. A file is written as `<name>.tmp`, fsync'ed, renamed
//! and the directory fsync'ed, so a crash leaves either the old set of files or the new one;
//! only then are older snapshots removed.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::SnapshotMeta;

const MAGIC: &[u8; 8] = b"BERTHSN1";
const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".snap.tmp";

/// What can go wrong reading or writing snapshot files.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "snapshot file {path} is damaged ({reason}); this member cannot recover from its own \
         data: remove it from the cluster, delete its data dir and add it again so it copies a \
         snapshot from the leader"
    )]
    Corrupt { path: String, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SnapshotFileError + '_ {
    move |source| SnapshotFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The directory holding a member's snapshot files.
#[derive(Debug, Clone)]
pub struct SnapshotFiles {
    dir: PathBuf,
}

impl SnapshotFiles {
    /// Opens (creating) `dir` and removes leftovers of writes a crash interrupted.
    pub fn open(dir: &Path) -> Result<Self, SnapshotFileError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let files = SnapshotFiles {
            dir: dir.to_path_buf(),
        };
        for path in files.entries(TMP_SUFFIX)? {
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
        Ok(files)
    }

    /// Files in the directory whose names end in `suffix`.
    fn entries(&self, suffix: &str) -> Result<Vec<PathBuf>, SnapshotFileError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let path = entry.map_err(io_error(&self.dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(suffix) && (suffix == TMP_SUFFIX || !name.ends_with(TMP_SUFFIX)) {
                out.push(path);
            }
        }
        Ok(out)
    }

    /// The file name of a snapshot: the last included log id, so names sort by age.
    fn file_name(meta: &SnapshotMeta) -> String {
        let (term, index) = meta
            .last_log_id
            .map_or((0, 0), |l| (l.leader_id.term, l.index));
        format!("{term:016x}-{index:016x}{SUFFIX}")
    }

    /// Writes a snapshot durably, then removes every other snapshot file.
    pub fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<PathBuf, SnapshotFileError> {
        let name = Self::file_name(meta);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let meta_json = serde_json::to_vec(meta).expect("snapshot meta serialises");
        let mut header = Vec::with_capacity(MAGIC.len() + 4 + meta_json.len() + 8);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
        header.extend_from_slice(&meta_json);
        header.extend_from_slice(&(data.len() as u64).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.update(data);
        let write = || -> io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&header)?;
            file.write_all(data)?;
            file.write_all(&crc.finalize().to_le_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(io_error(&path))?;
        for old in self.entries(SUFFIX)? {
            if old != path {
                fs::remove_file(&old).map_err(io_error(&old))?;
            }
        }
        Ok(path)
    }

    /// The newest snapshot, if there is one; a damaged newest file is an error, not skipped
    /// (the log before it may already be purged, so an older snapshot would leave a gap).
    pub fn load_latest(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, SnapshotFileError> {
        let mut files = self.entries(SUFFIX)?;
        // Names are fixed-width hex of term and index: the greatest name is the newest.
        files.sort();
        let Some(path) = files.pop() else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_error(&path))?;
        decode(&bytes)
            .map(Some)
            .map_err(|reason| SnapshotFileError::Corrupt {
                path: path.display().to_string(),
                reason,
            })
    }
}

/// Splits `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
    if rest.len() < n {
        return Err(format!("truncated in the {what}"));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn decode(bytes: &[u8]) -> Result<(SnapshotMeta, Vec<u8>), String> {
    if bytes.len() < 4 {
        return Err("shorter than its checksum".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 4);
    let mut rest = body;
    if take(&mut rest, MAGIC.len(), "header")? != MAGIC {
        return Err("not a berth snapshot file".into());
    }
    let meta_len = u32::from_le_bytes(take(&mut rest, 4, "header")?.try_into().expect("4"));
    let meta = take(&mut rest, meta_len as usize, "metadata")?;
    let data_len = u64::from_le_bytes(take(&mut rest, 8, "header")?.try_into().expect("8"));
    if rest.len() as u64 != data_len {
        return Err(format!(
            "data is {} bytes, the header says {data_len}",
            rest.len()
        ));
    }
    if crc32fast::hash(body).to_le_bytes() != sum {
        return Err("checksum mismatch".into());
    }
    let meta: SnapshotMeta = serde_json::from_slice(meta).map_err(|e| format!("metadata: {e}"))?;
    Ok((meta, rest.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{LogId, StoredMembership};

    fn meta(term: u64, index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(term, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("{term}-{index}-1"),
        }
    }

    #[test]
    fn an_empty_directory_has_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(&dir.path().join("snap")).unwrap();
        assert!(files.load_latest().unwrap().is_none());
    }

    #[test]
    fn the_newest_save_is_loaded_and_older_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        files.save(&meta(2, 9), b"older").unwrap();
        // Index 0x10 sorts after 0x9 only because names are fixed-width.
        files.save(&meta(2, 16), b"newer").unwrap();
        let (m, data) = files.load_latest().unwrap().unwrap();
        assert_eq!(m, meta(2, 16));
        assert_eq!(data, b"newer");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["0000000000000002-0000000000000010.snap"]);
    }

    #[test]
    fn a_leftover_temp_file_is_removed_at_open_and_never_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        files.save(&meta(1, 5), b"kept").unwrap();
        // A crash after writing part of a newer snapshot.
        fs::write(
            dir.path()
                .join("0000000000000001-0000000000000009.snap.tmp"),
            b"BERTHSN1 partial",
        )
        .unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        assert_eq!(files.load_latest().unwrap().unwrap().1, b"kept");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_damaged_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        let path = files.save(&meta(3, 7), &[7u8; 1000]).unwrap();
        let good = fs::read(&path).unwrap();

        let mut flipped = good.clone();
        flipped[500] ^= 1;
        fs::write(&path, &flipped).unwrap();
        let err = files.load_latest().unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");

        fs::write(&path, &good[..good.len() - 10]).unwrap();
        let err = files.load_latest().unwrap_err().to_string();
        assert!(err.contains("the header says 1000"), "{err}");

        fs::write(&path, b"not a snapshot at all").unwrap();
        let err = files.load_latest().unwrap_err().to_string();
        assert!(err.contains("not a berth snapshot file"), "{err}");
    }
}
