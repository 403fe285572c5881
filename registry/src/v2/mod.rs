//! etcd 3.4 v2 keys API core: request parsing, the key store with TTLs,
//! event history and watchers, and etcd's exact JSON/error output.
//!
//! Everything here is deterministic: time enters only through the `now`
//! arguments (unix nanoseconds) and the commands' timestamps.

pub mod error;
pub mod event;
pub mod form;
mod history;
pub mod json;
mod node;
pub mod path;
pub mod request;
pub mod stats;
pub mod store;
pub mod timefmt;
pub mod watch;

pub use error::V2Error;
pub use event::{Action, Event, NodeExtern};
pub use request::{parse_key_request, KeyRequest, Method};
pub use stats::StoreStats;
pub use store::{Command, ReadView, Store};
pub use watch::{Delivered, Watch, WatchEvent};
