//! `berth`: the command line. It parses flags and calls the library crates; nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use registry::config::{parse_http_url, parse_initial_cluster, parse_urls};
use registry::{ClusterState, Config};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Service discovery and service plumbing for Docker hosts"
)]
struct Cli {
    /// Log filter (tracing's env-filter syntax, e.g. "info" or "registry=debug").
    #[arg(
        long,
        global = true,
        env = "BERTH_LOG",
        default_value = "info,openraft=warn"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole stack on this host with defaults: a single-member registry on
    /// 127.0.0.1:2379 with its data in ./berth-data, DNS on 127.0.0.1:8600, the proxy on
    /// 127.0.0.1:8800 with VIPs in 127.77.0.0/16, and the registrator and the Docker plugin
    /// when Docker is there (the plugin needs root).
    Up(berth::UpArgs),
    /// Run a registry member (etcd v2 API; etcd's flag names).
    Registry(RegistryArgs),
    /// Talk to the registry like etcdctl (v2): mk, get, ls, watch, member, ...
    Ctl(registry::ctl::CtlArgs),
    /// Register running Docker containers in the service catalog (Registrator's rules).
    Registrator(registrator::cli::RegistratorArgs),
    /// Keep one catalog key alive while a container runs or a check passes (sidekick).
    Announce(registrator::cli::AnnounceArgs),
    /// Serve DNS from the catalog: <service>.berth -> VIP, tasks.<service>.berth, SRV; forward the rest.
    Dns(dns::Args),
    /// Reverse proxy: HTTP routes by host and path, TCP on VIPs, following the catalog live.
    Proxy(proxy::Args),
    /// Blue-green deploy of a service's containers: start the next color, flip, drain, stop the old.
    Deploy(proxy::deploy::Args),
    /// Serve the Docker plugin (overlay networks, IPAM, secrets and configs volumes)
    /// on /run/docker/plugins/berth.sock.
    Plugin(plugins::Args),
    /// Manage secrets (encrypted in the registry) for berth volumes: create, ls, rm.
    Secret(plugins::SecretArgs),
    /// Manage configs (plain files in the registry) for berth volumes: create, ls, rm.
    Config(plugins::ConfigArgs),
}

#[derive(Args)]
struct RegistryArgs {
    /// Human-readable name for this member.
    #[arg(long, env = "BERTH_NAME", default_value = "default")]
    name: String,
    /// Path to the data directory (default: <name>.berth).
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(
        long,
        env = "BERTH_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    listen_client_urls: String,
    /// Client URLs advertised to the cluster (default: the listen URLs).
    #[arg(long, env = "BERTH_ADVERTISE_CLIENT_URLS")]
    advertise_client_urls: Option<String>,
    /// URL to listen on for peer traffic.
    #[arg(
        long,
        env = "BERTH_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    listen_peer_urls: String,
    /// Peer URLs advertised to the cluster (default: the listen URL).
    #[arg(long, env = "BERTH_INITIAL_ADVERTISE_PEER_URLS")]
    initial_advertise_peer_urls: Option<String>,
    /// Initial cluster configuration, NAME=PEER_URL,... (default: this member alone).
    #[arg(long, env = "BERTH_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// "new" to bootstrap a cluster, "existing" to join one (after `berth ctl member add`).
    #[arg(long, env = "BERTH_INITIAL_CLUSTER_STATE", default_value = "new")]
    initial_cluster_state: String,
    /// Token that distinguishes clusters bootstrapped with the same URLs.
    #[arg(
        long,
        env = "BERTH_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    initial_cluster_token: String,
    /// Applied entries between snapshots.
    #[arg(long, env = "BERTH_SNAPSHOT_COUNT", default_value_t = 10_000)]
    snapshot_count: u64,
    /// Heartbeat interval in milliseconds.
    #[arg(long, env = "BERTH_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,
    /// Election timeout in milliseconds.
    #[arg(long, env = "BERTH_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,
    /// Largest client request body in bytes.
    #[arg(long, env = "BERTH_MAX_REQUEST_BYTES", default_value_t = 1536 * 1024)]
    max_request_bytes: usize,
    /// Accepted for etcd command-line compatibility; the v2 API is always on.
    #[arg(long, hide = true)]
    enable_v2: bool,
}

impl RegistryArgs {
    fn config(&self) -> Result<(Config, Vec<SocketAddr>, SocketAddr)> {
        let listen_client = parse_urls("--listen-client-urls", &self.listen_client_urls)?;
        let listen_peer = parse_urls("--listen-peer-urls", &self.listen_peer_urls)?;
        let advertise_client = match &self.advertise_client_urls {
            Some(s) => parse_urls("--advertise-client-urls", s)?,
            None => listen_client.clone(),
        };
        let advertise_peer = match &self.initial_advertise_peer_urls {
            Some(s) => parse_urls("--initial-advertise-peer-urls", s)?,
            None => listen_peer.clone(),
        };
        let initial_cluster = match &self.initial_cluster {
            Some(s) => parse_initial_cluster(s)?,
            None => parse_initial_cluster(&format!(
                "{}={}",
                self.name,
                advertise_peer.join(&format!(",{}=", self.name))
            ))?,
        };
        let state: ClusterState = self.initial_cluster_state.parse()?;
        let config = Config {
            name: self.name.clone(),
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.berth", self.name))),
            advertise_client_urls: advertise_client,
            advertise_peer_urls: advertise_peer,
            initial_cluster,
            initial_cluster_state: state,
            initial_cluster_token: self.initial_cluster_token.clone(),
            snapshot_count: self.snapshot_count,
            max_request_bytes: self.max_request_bytes,
            heartbeat_ms: self.heartbeat_interval,
            election_ms: self.election_timeout,
        };
        config.validate()?;
        let client_addrs = listen_client
            .iter()
            .map(|u| socket_addr(u))
            .collect::<Result<Vec<_>>>()?;
        let peer_addr = socket_addr(&listen_peer[0])?;
        Ok((config, client_addrs, peer_addr))
    }
}

fn socket_addr(url: &str) -> Result<SocketAddr> {
    let hostport = parse_http_url(url)?;
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport.parse().with_context(|| {
        format!("{url}: listen URLs need an IP address (e.g. http://127.0.0.1:2379)")
    })
}

/// Binds a listener; the error names what it was for, the flag that gave the address, and
/// what may hold it (`who`).
fn bind(addr: SocketAddr, what: &str, flag: &str, who: &str) -> Result<TcpListener> {
    registry::http::serve::listen(addr).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for {what} on {addr}: {e}; is {who} running there? \
             Pick another address with {flag}"
        )
    })
}

async fn bind_dns(addr: SocketAddr) -> Result<(tokio::net::UdpSocket, TcpListener)> {
    let who = "another DNS server";
    let udp = tokio::net::UdpSocket::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for DNS on udp {addr}: {e}; is {who} running there? \
             Pick another address with --listen"
        )
    })?;
    Ok((udp, bind(addr, "DNS over TCP", "--listen", who)?))
}

fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

/// What may hold a registry's address.
const OTHER_REGISTRY: &str = "another berth or etcd";

async fn run_registry(
    config: Config,
    client_addrs: Vec<SocketAddr>,
    peer_addr: SocketAddr,
) -> Result<()> {
    let mut clients = Vec::new();
    for addr in client_addrs {
        clients.push(bind(
            addr,
            "clients",
            "--listen-client-urls",
            OTHER_REGISTRY,
        )?);
    }
    let peer = bind(peer_addr, "peers", "--listen-peer-urls", OTHER_REGISTRY)?;
    registry::run(config, clients, peer, shutdown_on_signal()).await?;
    Ok(())
}

async fn real_main(cli: Cli, console: Console) -> Result<ExitCode> {
    match cli.command {
        Command::Registry(args) => {
            let (config, clients, peer) = args.config()?;
            run_registry(config, clients, peer).await?;
        }
        Command::Up(args) => {
            let listeners = berth::up::bind(&args).await?;
            let say = |line: &str| console.line(&format!("berth up: {line}"));
            berth::up::run(args, listeners, shutdown_on_signal(), &say).await?;
        }
        Command::Registrator(args) => {
            registrator::run(args.config()?, shutdown_on_signal()).await?;
        }
        Command::Dns(args) => {
            let config = args.config()?;
            let (udp, tcp) = bind_dns(args.listen).await?;
            dns::run(config, udp, tcp, shutdown_on_signal()).await?;
        }
        Command::Proxy(args) => {
            let config = args.config()?;
            let bound = proxy::bind(&args)?;
            proxy::run(config, bound, shutdown_on_signal()).await?;
        }
        Command::Deploy(args) => {
            proxy::deploy::run(args, proxy::deploy::stdout_printer()).await?;
        }
        Command::Plugin(args) => {
            let config = args.config()?;
            let listener = plugins::bind(&args.socket)?;
            plugins::run(config, listener, shutdown_on_signal()).await?;
        }
        Command::Secret(args) => {
            plugins::run_secret(args, &mut std::io::stdout()).await?;
        }
        Command::Config(args) => {
            plugins::run_config(args, &mut std::io::stdout()).await?;
        }
        Command::Announce(args) => {
            registrator::announce::run(args.config()?, shutdown_on_signal()).await?;
        }
        Command::Ctl(args) => {
            let mut out = std::io::stdout();
            if let Err(e) = registry::ctl::run(args, &mut out).await {
                if let Some(msg) = e.report() {
                    eprintln!("{msg}");
                }
                return Ok(ExitCode::from(e.exit_code() as u8));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Log lines that may wait for the writer thread (about 200 bytes each).
const LOG_QUEUE_LINES: usize = 16 * 1024;

/// Says, now and then, how many log lines were dropped because stderr did not keep up.
/// While the queue is full this warning is dropped too; `total` in a later one counts all.
async fn report_dropped_log_lines(counter: tracing_appender::non_blocking::ErrorCounter) {
    let mut reported = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let now = counter.dropped_lines();
        if now > reported {
            tracing::warn!(
                dropped = now - reported,
                total = now,
                "log lines dropped: stderr is not being read fast enough"
            );
            reported = now;
        }
    }
}

/// mimalloc rather than glibc's malloc: the proxy and the registry allocate many small,
/// short-lived buffers per request, where glibc's arenas cost about twice as much.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Where progress lines for the operator go (`berth up`'s): through the log queue when the
/// command has one, so that they keep their place among the log lines.
enum Console {
    Stderr,
    Queued(tracing_appender::non_blocking::NonBlocking),
}

impl Console {
    fn line(&self, line: &str) {
        match self {
            Console::Stderr => eprintln!("{line}"),
            Console::Queued(queue) => {
                use std::io::Write;
                // One write, so the line stays whole in the queue.
                let _ = queue.clone().write_all(format!("{line}\n").as_bytes());
            }
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text the message
/// already includes (many errors show their source in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Ctl(_) | Command::Deploy(_) | Command::Secret(_) | Command::Config(_)
    );
    let filter = if quiet {
        "warn".to_string()
    } else if cli.log.contains("hickory") {
        cli.log.clone()
    } else {
        // hickory-server logs every DNS query at info.
        format!("{},hickory_server=warn", cli.log)
    };
    // Servers queue their log lines to one writer thread: a request, a watch or a Raft step
    // never waits for stderr (a paused `| less`, a slow disk, a stuck log shipper). When the
    // queue is full, lines are dropped and counted. Short commands (ctl, deploy, ...) log
    // little and write stderr directly, so their messages keep their order.
    let (writer, flush, console) = if quiet {
        (BoxMakeWriter::new(std::io::stderr), None, Console::Stderr)
    } else {
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .buffered_lines_limit(LOG_QUEUE_LINES)
            .lossy(true)
            .thread_name("berth-log")
            .finish(std::io::BufWriter::with_capacity(
                64 * 1024,
                std::io::stderr(),
            ));
        let dropped = writer.error_counter();
        let console = Console::Queued(writer.clone());
        (BoxMakeWriter::new(writer), Some((guard, dropped)), console)
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let guard = flush.map(|(guard, dropped)| {
        runtime.spawn(report_dropped_log_lines(dropped));
        guard
    });
    let result = runtime.block_on(real_main(cli, console));
    drop(runtime);
    // Writes out the queued lines (for at most about a second) before the final error.
    drop(guard);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
