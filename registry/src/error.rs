//! The registry crate's error types.

use crate::raft::network::PeerError;

/// Bad configuration: a flag value or a combination of flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
}

/// Why a registry member could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the data dir {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("cannot create the data dir {path}: {source}; check --data-dir and its permissions")]
    CreateDataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the data dir was written by member {found:x}, but the flags describe member {expected:x}; use a fresh --data-dir")]
    IdentityMismatch { found: u64, expected: u64 },
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
