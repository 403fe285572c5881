//! Typed errors of the registrator and the announcer.

use registry::client::ClientError;

/// Everything that stops [`crate::run`] or [`crate::announce::run`] before it starts working,
/// or ends the announcer. Transient Docker and registry failures are retried, never returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag value that cannot work (checked before anything is written).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The registry client could not be built (bad `--endpoints`).
    #[error("registry: {0}")]
    Registry(#[from] ClientError),
    /// Docker could not be reached or answered an error.
    #[error("docker: {0}")]
    Docker(#[from] DockerError),
    /// The container named by `--bind-container` does not exist.
    #[error("container {0:?} does not exist (check `docker ps -a`); --bind-container needs an existing container")]
    NoSuchContainer(String),
}

/// A failed Docker Engine API call.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker daemon at {socket}: {detail} (is dockerd running, and is the socket mounted, e.g. -v /var/run/docker.sock:/var/run/docker.sock?)")]
    Unreachable { socket: String, detail: String },
    #[error("{0}")]
    Api(String),
    #[error("no such container {0}")]
    NotFound(String),
}
