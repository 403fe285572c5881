//! berth's registrator and sidekick announcer: they write what runs where into the service
//! catalog (`/services/<service>/<instance-id>`, SPEC §3) of the registry.
//!
//! Layout:
//!
//! - [`model`]: the service model, pure: a container snapshot ([`ContainerInfo`]) and the
//!   flags ([`ModelConfig`]) give catalog entries ([`Registration`]) or clear errors, after
//!   Registrator's `SERVICE_*` env/label rules.
//! - [`docker`]: Docker Engine API over the unix socket (bollard): inspect into a
//!   `ContainerInfo`, list, and the event stream reduced to [`Trigger`]s.
//! - [`sync`]: registry sync: per-container desired vs. written entries, jobs that converge
//!   them (set with TTL, refresh, delete), reconciliation seeded from the registry.
//! - [`runner`]: the registrator process ([`run`]): connect, reconcile, follow events,
//!   reconnect with backoff and reconcile after every gap, refresh TTLs, resync.
//! - [`announce`]: `berth announce`, the sidekick ([`announce::run`]).
//! - [`checks`]: `tcp://` and `http://` checks for the announcer.
//! - [`config`], [`cli`], [`error`]: settings, their command-line flags, typed errors.
//!
//! Both entry points take a `CancellationToken`; neither exits because Docker or the
//! registry went away.

pub mod announce;
pub mod checks;
pub mod cli;
pub mod config;
pub mod docker;
pub mod error;
pub mod model;
pub mod runner;
pub mod sync;

pub use announce::{AnnounceConfig, ServiceSpec};
pub use checks::Check;
pub use config::{Config, Deregister};
pub use docker::{DockerClient, Trigger};
pub use error::{DockerError, Error};
pub use model::{ContainerInfo, ModelConfig, Registration, ServiceValue};
pub use runner::run;
