//! `berth up`: the whole stack on one host, with embedded defaults.
//!
//! [`bind`] takes every address first (so a port in use fails at once, naming the flag to
//! change), then [`run`] serves: a one-member registry, the registrator (when Docker's socket
//! is there), DNS, the proxy, and the Docker plugin (when Docker is there and berth runs as
//! root). Every part gets a child of one shutdown token: on Ctrl-C or SIGTERM the parts stop
//! first, then the registry drains and stops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Flags of `berth up` (each with a `BERTH_...` variable).
#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Where the registry keeps its data.
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
    pub data_dir: PathBuf,
    /// Client URL of the registry.
    #[arg(
        long,
        env = "BERTH_CLIENT_URL",
        default_value = "http://127.0.0.1:2379"
    )]
    pub client_url: String,
    /// Peer URL of the registry.
    #[arg(long, env = "BERTH_PEER_URL", default_value = "http://127.0.0.1:2380")]
    pub peer_url: String,
    /// DNS address (UDP and TCP).
    #[arg(long, env = "BERTH_DNS_LISTEN", default_value = "127.0.0.1:8600")]
    pub dns_listen: SocketAddr,
    /// Proxy HTTP address.
    #[arg(long, env = "BERTH_HTTP_LISTEN", default_value = "127.0.0.1:8800")]
    pub http_listen: SocketAddr,
    /// Range VIPs come from (DNS answers them, the proxy listens on them).
    #[arg(long, env = "BERTH_VIP_RANGE", default_value = "127.77.0.0/16")]
    pub vip_range: String,
    /// Docker's API socket (the registrator and the plugin run when it exists).
    #[arg(
        long,
        env = "BERTH_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    pub docker_socket: PathBuf,
    /// Where the Docker plugin listens (Docker finds `berth` there).
    #[arg(
        long,
        env = "BERTH_PLUGIN_SOCKET",
        default_value = plugins::config::DEFAULT_SOCKET
    )]
    pub plugin_socket: PathBuf,
}

/// Why `berth up` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("{flag} {url:?}: {detail}")]
    Url {
        flag: &'static str,
        url: String,
        detail: String,
    },
    #[error("cannot listen for {what} on {addr}: {source}; is another berth or etcd running there? Pick another address with {flag}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        flag: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    RegistryConfig(#[from] registry::ConfigError),
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error(transparent)]
    DnsConfig(#[from] dns::ConfigError),
    #[error(transparent)]
    Dns(#[from] dns::Error),
    #[error(transparent)]
    ProxyConfig(#[from] proxy::error::ConfigError),
    #[error(transparent)]
    Proxy(#[from] proxy::Error),
}

/// Everything `berth up` listens on, bound.
pub struct Listeners {
    pub client: TcpListener,
    pub peer: TcpListener,
    pub dns: (UdpSocket, TcpListener),
    pub proxy: proxy::server::Bound,
    /// The plugin socket, when Docker is there and the socket could be taken (root).
    pub plugin: Option<UnixListener>,
    /// Why there is no plugin, when there is none.
    pub no_plugin: Option<String>,
}

/// An `http://IP:PORT` URL as a socket address.
pub fn socket_addr(flag: &'static str, url: &str) -> Result<SocketAddr, UpError> {
    let err = |detail: String| UpError::Url {
        flag,
        url: url.to_string(),
        detail,
    };
    let hostport = registry::config::parse_http_url(url).map_err(|e| err(e.to_string()))?;
    hostport
        .replace("localhost", "127.0.0.1")
        .parse()
        .map_err(|_| err("listen URLs need an IP address (e.g. http://127.0.0.1:2379)".into()))
}

async fn tcp(
    what: &'static str,
    addr: SocketAddr,
    flag: &'static str,
) -> Result<TcpListener, UpError> {
    registry::http::serve::listen(addr).map_err(|source| UpError::Bind {
        what,
        addr,
        flag,
        source,
    })
}

impl UpArgs {
    fn dns_args(&self) -> dns::Args {
        dns::Args {
            endpoints: self.client_url.clone(),
            listen: self.dns_listen,
            vip_range: self.vip_range.clone(),
            ..dns::Args::defaults()
        }
    }

    fn proxy_args(&self) -> proxy::Args {
        proxy::Args {
            endpoints: self.client_url.clone(),
            http_listen: self.http_listen,
            vip_range: self.vip_range.clone(),
            ..proxy::Args::defaults()
        }
    }

    fn plugin_args(&self) -> plugins::Args {
        plugins::Args {
            endpoints: self.client_url.clone(),
            socket: self.plugin_socket.clone(),
            docker: format!("unix://{}", self.docker_socket.display()),
            ..plugins::Args::defaults()
        }
    }

    fn docker_present(&self) -> bool {
        Path::new(&self.docker_socket).exists()
    }
}

/// Binds every listener (the registry's first).
pub async fn bind(args: &UpArgs) -> Result<Listeners, UpError> {
    let client = tcp(
        "registry clients",
        socket_addr("--client-url", &args.client_url)?,
        "--client-url",
    )
    .await?;
    let peer = tcp(
        "registry peers",
        socket_addr("--peer-url", &args.peer_url)?,
        "--peer-url",
    )
    .await?;
    let udp = UdpSocket::bind(args.dns_listen)
        .await
        .map_err(|source| UpError::Bind {
            what: "DNS over UDP",
            addr: args.dns_listen,
            flag: "--dns-listen",
            source,
        })?;
    let dns_tcp = tcp("DNS over TCP", args.dns_listen, "--dns-listen").await?;
    let proxy = proxy::bind(&args.proxy_args())?;
    let (plugin, no_plugin) = if !args.docker_present() {
        (
            None,
            Some(format!(
                "no Docker socket at {}",
                args.docker_socket.display()
            )),
        )
    } else {
        match plugins::bind(&args.plugin_socket) {
            Ok(l) => (Some(l), None),
            Err(e) => (None, Some(format!("{e}; it needs root"))),
        }
    };
    Ok(Listeners {
        client,
        peer,
        dns: (udp, dns_tcp),
        proxy,
        plugin,
        no_plugin,
    })
}

/// Serves every part until `shutdown`; `say` gets the progress lines.
pub async fn run(
    args: UpArgs,
    listeners: Listeners,
    shutdown: CancellationToken,
    say: &(dyn Fn(&str) + Sync),
) -> Result<(), UpError> {
    let config = registry::Config::single(
        "berth",
        args.data_dir.join("registry"),
        &args.client_url,
        &args.peer_url,
    );
    let parts = CancellationToken::new();
    let mut tasks: JoinSet<(&'static str, Result<(), String>)> = JoinSet::new();
    say(&format!(
        "registry (etcd v2 API) on {}, data in {}",
        args.client_url,
        args.data_dir.display()
    ));
    say(&format!(
        "try `ETCDCTL_API=2 etcdctl --endpoints {} ls /` or `berth ctl ls /`; Ctrl-C stops",
        args.client_url
    ));
    let registry_stop = CancellationToken::new();
    let registry = tokio::spawn(registry::run(
        config,
        vec![listeners.client],
        listeners.peer,
        registry_stop.clone(),
    ));

    if args.docker_present() {
        let cfg = registrator::Config {
            endpoints: vec![args.client_url.clone()],
            docker_socket: args.docker_socket.display().to_string(),
            ..Default::default()
        };
        say("registrator following Docker, catalog under /services");
        let stop = parts.child_token();
        tasks.spawn(async move {
            (
                "registrator",
                registrator::run(cfg, stop).await.map_err(|e| e.to_string()),
            )
        });
    }

    let dns_args = args.dns_args();
    let dns_config = dns_args.config()?;
    say(&format!(
        "DNS on {} (zone berth., VIPs from {})",
        dns_args.listen, dns_config.vip_range
    ));
    let (udp, dns_tcp) = listeners.dns;
    let stop = parts.child_token();
    tasks.spawn(async move {
        (
            "dns",
            dns::run(dns_config, udp, dns_tcp, stop)
                .await
                .map_err(|e| e.to_string()),
        )
    });

    let proxy_config = args.proxy_args().config()?;
    say(&format!(
        "proxy on http://{} (routes from the instances' http field; TCP on VIP:port)",
        args.http_listen
    ));
    let stop = parts.child_token();
    let bound = listeners.proxy;
    tasks.spawn(async move {
        (
            "proxy",
            proxy::run(proxy_config, bound, stop)
                .await
                .map_err(|e| e.to_string()),
        )
    });

    match (listeners.plugin, listeners.no_plugin) {
        (Some(listener), _) => {
            let plugin_args = args.plugin_args();
            match plugin_args.config() {
                Ok(plugin_config) => {
                    say(&format!(
                        "Docker plugin on {} (-d berth --ipam-driver berth, volume-driver=berth)",
                        args.plugin_socket.display()
                    ));
                    let stop = parts.child_token();
                    tasks.spawn(async move {
                        (
                            "plugin",
                            plugins::run(plugin_config, listener, stop)
                                .await
                                .map_err(|e| e.to_string()),
                        )
                    });
                }
                Err(e) => say(&format!("no Docker plugin: {e}")),
            }
        }
        (None, Some(why)) if args.docker_present() => say(&format!("no Docker plugin ({why})")),
        _ => {}
    }

    // A part that fails is logged; the rest keep serving (as each would on its own).
    let mut registry = registry;
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            r = &mut registry => break r.unwrap_or_else(|e| panic!("registry task: {e}")),
            Some(done) = tasks.join_next() => {
                if let Ok((part, Err(e))) = done {
                    tracing::error!(part, "stopped: {e}");
                    say(&format!("{part} stopped: {e}"));
                }
            }
        }
    };
    // The parts stop first (they use the registry), then the registry drains.
    parts.cancel();
    while let Some(done) = tasks.join_next().await {
        if let Ok((part, Err(e))) = done {
            tracing::warn!(part, "stopped with an error: {e}");
        }
    }
    if !registry.is_finished() {
        registry_stop.cancel();
        registry
            .await
            .unwrap_or_else(|e| panic!("registry task: {e}"))?;
    }
    result.map_err(UpError::from)
}
