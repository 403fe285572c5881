//! Counters behind `/v2/stats/self` and `/v2/stats/leader`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Peer traffic counters, shared by the peer server (receive side) and the Raft network
/// (send side).
#[derive(Debug, Default)]
pub struct PeerCounters {
    pub recv_append: AtomicU64,
    pub send_append_ok: AtomicU64,
    pub send_append_fail: AtomicU64,
}

impl PeerCounters {
    pub fn recv_append(&self) -> u64 {
        self.recv_append.load(Ordering::Relaxed)
    }

    pub fn send_append(&self) -> u64 {
        self.send_append_ok.load(Ordering::Relaxed) + self.send_append_fail.load(Ordering::Relaxed)
    }
}
