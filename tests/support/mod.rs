//! Test fixtures shared by the integration suites: berth clusters as real processes on
//! loopback ports, a reference etcd, an HTTP helper and polling assertions.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod docker;
pub mod etcd;
pub mod http;
pub mod open_registry;
pub mod ports;
pub mod proc;

pub use ports::free_port;

pub use cluster::{Cluster, MemberProc};
pub use etcd::Etcd;
pub use open_registry::OpenRegistry;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// The berth binary built for this test run.
pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// Polls `f` until it returns `Some` or the deadline passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Asserts that a condition becomes true within a deadline.
#[macro_export]
macro_rules! assert_eventually {
    ($timeout:expr, $cond:expr, $($msg:tt)+) => {{
        let ok = $crate::support::eventually($timeout, || if $cond { Some(()) } else { None }).is_some();
        assert!(ok, $($msg)+);
    }};
}

/// Whether the tests run as root (netlink, namespaces, mounts).
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether the suite runs in CI, where a missing tool is a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Finds a required external program; panics with an install hint when it is missing.
pub fn require_tool(path: &str, package: &str) -> String {
    if std::path::Path::new(path).exists() {
        return path.to_string();
    }
    panic!(
        "{path} is missing: install it with `apt-get install -y {package}` (or run scripts/setup)"
    );
}
