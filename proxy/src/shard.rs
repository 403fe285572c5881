//! Per-thread copies of what every request writes.
//!
//! When two worker threads update one atomic, its cache line moves between their cores on
//! every update, and each move is a cache miss on the request path. So every HTTP worker
//! thread gets a shard of its own: its own routing table (round-robin cursors and reference
//! counts that only it touches) and its own slot in every per-service counter and per-instance
//! load; whoever reads them (`/metrics`, least-connections, `/routes`) adds the slots up.
//! Shard `n` belongs to worker `n`; the last one is shared by everything on the control
//! runtime (the TLS listener, VIP listeners, health checks).

use std::ops::Deref;

/// A shard index: a worker thread's, or [`control`]'s.
pub type Shard = usize;

/// The shard of the control runtime when the proxy has `threads` HTTP worker threads.
pub fn control(threads: usize) -> Shard {
    threads
}

/// `T` alone on its cache lines: 128-byte aligned, since the prefetcher pulls 64-byte lines in
/// pairs.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

impl<T> Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// `n` (at least one) default slots.
pub fn slots<T: Default>(n: usize) -> Box<[Padded<T>]> {
    (0..n.max(1)).map(|_| Padded::default()).collect()
}

/// The slot of `shard` (shards beyond the slots wrap around, so a stray index is only slower).
pub fn slot<T>(slots: &[Padded<T>], shard: Shard) -> &T {
    &slots[shard % slots.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_on_separate_cache_lines_and_wrap() {
        let s = slots::<std::sync::atomic::AtomicU64>(3);
        assert_eq!(s.len(), 3);
        let a = &s[0] as *const _ as usize;
        let b = &s[1] as *const _ as usize;
        assert!(b - a >= 128);
        assert!(std::ptr::eq(slot(&s, 4), &*s[1]));
        assert_eq!(slots::<u8>(0).len(), 1);
    }
}
