//! The state shared between the registry watch, the VIP allocator and the query handler.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use tokio::sync::watch;

use super::Catalog;

/// The catalog behind a lock, whether it has been read from the registry yet, and a version
/// counter that waiters (allocator, queries waiting for a VIP) watch.
#[derive(Debug)]
pub struct Shared {
    catalog: RwLock<Catalog>,
    synced: AtomicBool,
    /// Whether the registry watch is currently connected (the catalog is current).
    live: AtomicBool,
    version: watch::Sender<u64>,
    /// Bumped after every change, readable without a lock (answer caches compare it).
    generation: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new(Catalog::new())
    }
}

impl Shared {
    /// State starting from `catalog` (not yet synced with a registry).
    pub fn new(catalog: Catalog) -> Shared {
        Shared {
            catalog: RwLock::new(catalog),
            synced: AtomicBool::new(false),
            live: AtomicBool::new(false),
            version: watch::channel(0).0,
            generation: AtomicU64::new(0),
        }
    }

    /// Reads the catalog.
    pub fn read(&self) -> RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the catalog and wakes the waiters.
    pub fn update<T>(&self, f: impl FnOnce(&mut Catalog) -> T) -> T {
        let out = {
            let mut c = self.catalog.write().unwrap_or_else(|e| e.into_inner());
            f(&mut c)
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.version.send_modify(|v| *v += 1);
        out
    }

    /// A receiver that sees every later [`Shared::update`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// A number that changes after every change of the catalog (or of `synced`), never
    /// before the change is readable: an answer computed after reading generation `g` is
    /// current for as long as the generation is still `g`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether the catalog has been read from the registry at least once.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.version.send_modify(|v| *v += 1);
    }

    /// Whether the watch is connected right now.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
    }
}
