//! `berth ctl`: a command line client for the registry that behaves like
//! `etcdctl` of etcd 3.4 in v2 mode (`ETCDCTL_API=2`): same subcommands,
//! same flags and the same text on stdout in the `simple`, `extended` and
//! `json` output modes, so scripts written for etcdctl keep working.
//!
//! The binary embeds [`CtlArgs`], calls [`run`] with stdout, and on error
//! prints [`CtlError::report`] to stderr and exits with
//! [`CtlError::exit_code`].

use std::io::{Read, Write};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::client::{
    Client, ClientConfig, ClientError, DeleteOptions, GetOptions, Member, Node, Response,
    SetOptions, WatchOptions, DEFAULT_ENDPOINT,
};

// Exit codes used by etcdctl v2.
const EXIT_BAD_ARGS: i32 = 1;
const EXIT_BAD_CONNECTION: i32 = 2;
const EXIT_SERVER_ERROR: i32 = 4;
const EXIT_CLUSTER_NOT_HEALTHY: i32 = 5;

/// How responses are printed (`--output/-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// The value only (or `PrevNode.Value: ...` for deletions).
    #[default]
    Simple,
    /// An RFC 2822 like header block, then the value.
    Extended,
    /// The response as JSON, field for field as etcdctl prints it.
    Json,
}

/// Global flags of `berth ctl`, followed by the subcommand.
#[derive(Args, Debug, Clone)]
pub struct CtlArgs {
    /// Comma separated list of registry client URLs.
    #[arg(
        long,
        short = 'C',
        env = "BERTH_ENDPOINTS",
        default_value = DEFAULT_ENDPOINT,
        global = true,
        aliases = ["endpoint", "peers"]
    )]
    pub endpoints: String,

    /// Don't synchronize cluster information before sending the request
    /// (accepted for etcdctl compatibility; berth ctl never syncs).
    #[arg(long, global = true)]
    pub no_sync: bool,

    /// Output format of responses.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Simple, global = true)]
    pub output: OutputFormat,

    /// Accepted for etcdctl compatibility; has no effect.
    #[arg(long, global = true, hide = true)]
    pub debug: bool,

    /// Time limit of one request to one endpoint (Go duration, e.g. 2s, 500ms).
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Time limit of the whole command, except watches.
    #[arg(long = "total-timeout", global = true, default_value = "5s", value_parser = parse_duration)]
    pub total_timeout: Duration,

    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The subcommands, as in etcdctl v2.
#[derive(Subcommand, Debug, Clone)]
pub enum CtlCommand {
    /// Make a new key with a given value (fails if it exists).
    Mk {
        key: Option<String>,
        /// Read from stdin when absent.
        value: Option<String>,
        /// Create an in-order key under directory <key>.
        #[arg(long)]
        in_order: bool,
        /// Key time-to-live in seconds.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        ttl: i64,
    },
    /// Make a new directory.
    Mkdir {
        key: Option<String>,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        ttl: i64,
    },
    /// Set the value of a key.
    Set {
        key: Option<String>,
        value: Option<String>,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        ttl: i64,
        /// Previous value (compare and swap).
        #[arg(long, default_value = "")]
        swap_with_value: String,
        /// Previous index (compare and swap).
        #[arg(long, default_value_t = 0)]
        swap_with_index: u64,
    },
    /// Create a new directory or update an existing directory TTL.
    Setdir {
        key: Option<String>,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        ttl: i64,
    },
    /// Update an existing key with a given value.
    Update {
        key: Option<String>,
        value: Option<String>,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        ttl: i64,
    },
    /// Update an existing directory.
    Updatedir {
        key: Option<String>,
        /// Ignored, as in etcdctl.
        value: Option<String>,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        ttl: i64,
    },
    /// Retrieve the value of a key.
    Get {
        key: Option<String>,
        /// Return results in sorted order.
        #[arg(long)]
        sort: bool,
        /// Require quorum for the read.
        #[arg(long, short = 'q')]
        quorum: bool,
    },
    /// Retrieve a directory.
    Ls {
        key: Option<String>,
        #[arg(long)]
        sort: bool,
        /// List all keys below the directory.
        #[arg(long, short = 'r')]
        recursive: bool,
        /// Append a slash (/) to directories.
        #[arg(short = 'p')]
        p: bool,
        #[arg(long, short = 'q')]
        quorum: bool,
    },
    /// Remove a key or a directory.
    Rm {
        key: Option<String>,
        /// Remove the key if it is an empty directory or a key-value pair.
        #[arg(long)]
        dir: bool,
        /// Remove the key and all child keys.
        #[arg(long, short = 'r')]
        recursive: bool,
        /// Previous value (compare and delete).
        #[arg(long, default_value = "")]
        with_value: String,
        /// Previous index (compare and delete).
        #[arg(long, default_value_t = 0)]
        with_index: u64,
    },
    /// Remove the key if it is an empty directory or a key-value pair.
    Rmdir { key: Option<String> },
    /// Watch a key for changes.
    Watch {
        key: Option<String>,
        /// Keep watching until interrupted.
        #[arg(long, short = 'f')]
        forever: bool,
        /// Watch after the given index.
        #[arg(long, default_value_t = 0)]
        after_index: u64,
        #[arg(long, short = 'r')]
        recursive: bool,
    },
    /// Watch a key for changes and run a command on each.
    ExecWatch {
        /// `<key> [--] <command> [args...]`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
        #[arg(long, default_value_t = 0)]
        after_index: u64,
        #[arg(long, short = 'r')]
        recursive: bool,
    },
    /// Member add, remove, update and list.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Check the health of the cluster.
    ClusterHealth {
        /// Check every 10 seconds until interrupted.
        #[arg(long, short = 'f')]
        forever: bool,
    },
}

/// `member` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum MemberCommand {
    /// Enumerate existing cluster members.
    List { args: Vec<String> },
    /// Add a new member: `<name> <peerURL>`.
    Add { args: Vec<String> },
    /// Remove an existing member: `<memberID>`.
    Remove { args: Vec<String> },
    /// Update a member's peer URLs: `<memberID> <peerURLs>`.
    Update { args: Vec<String> },
}

/// Why a command failed.
///
/// `Display` is the text etcdctl writes to stderr for the same failure
/// (without the final newline); [`CtlError::report`] says whether to print
/// it at all and [`CtlError::exit_code`] gives etcdctl's exit status.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Bad or missing arguments (`Error:  key required`), exit 1.
    #[error("Error:  {0}")]
    BadArgs(String),

    /// The registry refused the request or could not be reached.
    #[error("Error:  {source}")]
    Client {
        #[source]
        source: ClientError,
        code: i32,
    },

    /// `get` on a directory, exit 1.
    #[error("{0}: is a directory")]
    IsDirectory(String),

    /// `cluster-health` found no healthy member (already said on stdout), exit 5.
    #[error("cluster is unhealthy")]
    ClusterUnhealthy,

    /// Member commands' failures, printed as is, exit 1.
    #[error("{0}")]
    Failed(String),

    /// `--total-timeout` expired, exit 4.
    #[error("Error:  context deadline exceeded (no answer within --total-timeout {0:?})")]
    Timeout(Duration),

    /// exec-watch could not start its command, exit 1.
    #[error("cannot run {command:?}: {source}")]
    Exec {
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// Writing to stdout failed, exit 1.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CtlError {
    /// The exit status etcdctl uses for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::BadArgs(_) => EXIT_BAD_ARGS,
            CtlError::Client { code, .. } => *code,
            CtlError::IsDirectory(_) => 1,
            CtlError::ClusterUnhealthy => EXIT_CLUSTER_NOT_HEALTHY,
            CtlError::Failed(_) => 1,
            CtlError::Timeout(_) => EXIT_SERVER_ERROR,
            CtlError::Exec { .. } => 1,
            CtlError::Output(_) => 1,
        }
    }

    /// What to print on stderr, if anything.
    pub fn report(&self) -> Option<String> {
        match self {
            CtlError::ClusterUnhealthy => None,
            other => Some(other.to_string()),
        }
    }

    /// The underlying client error, if any.
    pub fn client_error(&self) -> Option<&ClientError> {
        match self {
            CtlError::Client { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Maps a client error of a keys command to etcdctl's exit status: 2 when
/// nothing could be reached (etcdctl fails its cluster sync then), 4 else.
fn server_error(e: ClientError, no_sync: bool) -> CtlError {
    let code = if e.is_unavailable() && !no_sync {
        EXIT_BAD_CONNECTION
    } else {
        EXIT_SERVER_ERROR
    };
    CtlError::Client { source: e, code }
}

/// Runs one `berth ctl` command, writing what etcdctl would print on
/// stdout to `out`. Watches run until interrupted (Ctrl-C ends them with
/// success), like etcdctl's.
pub async fn run(args: CtlArgs, out: &mut (impl Write + Send)) -> Result<(), CtlError> {
    let config = ClientConfig {
        request_timeout: Some(args.timeout),
        ..ClientConfig::default()
    };
    let client = Client::with_config(std::slice::from_ref(&args.endpoints), config)
        .map_err(|e| CtlError::Failed(e.to_string()))?;
    let ctx = Ctx {
        client,
        format: args.output,
        no_sync: args.no_sync,
        total: args.total_timeout,
    };
    match args.command {
        CtlCommand::Watch {
            key,
            forever,
            after_index,
            recursive,
        } => {
            let key = need_key(key)?;
            let wait = if after_index > 0 {
                Some(after_index + 1)
            } else {
                None
            };
            until_interrupted(ctx.watch(out, &key, wait, recursive, forever)).await
        }
        CtlCommand::ExecWatch {
            args: rest,
            after_index,
            recursive,
        } => {
            // `<key> -- <command...>` or `<key> <command...>`.
            let cmd_start = if rest.get(1).map(String::as_str) == Some("--") {
                2
            } else {
                1
            };
            if rest.len() <= cmd_start {
                return Err(CtlError::BadArgs("key and command to exec required".into()));
            }
            // etcdctl bumps the index once here and once more in its watcher.
            let after = if after_index != 0 { after_index + 1 } else { 0 };
            let wait = if after > 0 { Some(after + 1) } else { None };
            until_interrupted(ctx.exec_watch(&rest[0], &rest[cmd_start..], wait, recursive)).await
        }
        CtlCommand::ClusterHealth { forever: true } => {
            until_interrupted(ctx.cluster_health(out, true)).await
        }
        cmd => {
            let total = ctx.total;
            match tokio::time::timeout(total, ctx.dispatch(cmd, out)).await {
                Ok(r) => r,
                Err(_) => Err(CtlError::Timeout(total)),
            }
        }
    }
}

async fn until_interrupted<F: std::future::Future<Output = Result<(), CtlError>>>(
    fut: F,
) -> Result<(), CtlError> {
    tokio::select! {
        r = fut => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

fn need_key(key: Option<String>) -> Result<String, CtlError> {
    key.ok_or_else(|| CtlError::BadArgs("key required".into()))
}

/// The value argument, or all of stdin when it is missing.
async fn value_or_stdin(value: Option<String>) -> Result<String, CtlError> {
    if let Some(v) = value {
        return Ok(v);
    }
    let read = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    })
    .await;
    match read {
        Ok(Ok(s)) if !s.is_empty() => Ok(s),
        _ => Err(CtlError::BadArgs("value required".into())),
    }
}

struct Ctx {
    client: Client,
    format: OutputFormat,
    no_sync: bool,
    total: Duration,
}

impl Ctx {
    fn err(&self, e: ClientError) -> CtlError {
        server_error(e, self.no_sync)
    }

    async fn dispatch(
        &self,
        cmd: CtlCommand,
        out: &mut (impl Write + Send),
    ) -> Result<(), CtlError> {
        let c = &self.client;
        match cmd {
            CtlCommand::Mk {
                key,
                value,
                in_order,
                ttl,
            } => {
                let key = need_key(key)?;
                let value = value_or_stdin(value).await?;
                let resp = if in_order {
                    c.create_in_order(&key, &value, Some(ttl)).await
                } else {
                    let opts = SetOptions {
                        ttl: Some(ttl),
                        prev_exist: Some(false),
                        ..Default::default()
                    };
                    c.set(&key, &value, opts).await
                }
                .map_err(|e| self.err(e))?;
                print_response(out, &resp, self.format)?;
            }
            CtlCommand::Set {
                key,
                value,
                ttl,
                swap_with_value,
                swap_with_index,
            } => {
                let key = need_key(key)?;
                let value = value_or_stdin(value).await?;
                let opts = SetOptions {
                    ttl: Some(ttl),
                    prev_value: Some(swap_with_value).filter(|v| !v.is_empty()),
                    prev_index: Some(swap_with_index),
                    ..Default::default()
                };
                let resp = c.set(&key, &value, opts).await.map_err(|e| self.err(e))?;
                print_response(out, &resp, self.format)?;
            }
            CtlCommand::Update { key, value, ttl } => {
                let key = need_key(key)?;
                let value = value_or_stdin(value).await?;
                let opts = SetOptions {
                    ttl: Some(ttl),
                    prev_exist: Some(true),
                    ..Default::default()
                };
                let resp = c.set(&key, &value, opts).await.map_err(|e| self.err(e))?;
                print_response(out, &resp, self.format)?;
            }
            CtlCommand::Mkdir { key, ttl } => self.dir_op(out, key, ttl, Some(false)).await?,
            CtlCommand::Setdir { key, ttl } => self.dir_op(out, key, ttl, None).await?,
            CtlCommand::Updatedir { key, ttl, .. } => {
                self.dir_op(out, key, ttl, Some(true)).await?
            }
            CtlCommand::Get { key, sort, quorum } => {
                let key = need_key(key)?;
                let opts = GetOptions {
                    sorted: sort,
                    quorum,
                    recursive: false,
                };
                let resp = c.get(&key, opts).await.map_err(|e| self.err(e))?;
                if resp.node.dir {
                    return Err(CtlError::IsDirectory(resp.node.key));
                }
                print_response(out, &resp, self.format)?;
            }
            CtlCommand::Ls {
                key,
                sort,
                recursive,
                p,
                quorum,
            } => {
                let key = key.unwrap_or_else(|| "/".to_string());
                let opts = GetOptions {
                    sorted: sort,
                    quorum,
                    recursive,
                };
                let resp = c.get(&key, opts).await.map_err(|e| self.err(e))?;
                if self.format == OutputFormat::Simple {
                    print_ls(out, &resp, p)?;
                } else {
                    print_response(out, &resp, self.format)?;
                }
            }
            CtlCommand::Rm {
                key,
                dir,
                recursive,
                with_value,
                with_index,
            } => {
                let key = need_key(key)?;
                let opts = DeleteOptions {
                    recursive,
                    dir,
                    prev_value: Some(with_value).filter(|v| !v.is_empty()),
                    prev_index: Some(with_index),
                };
                let resp = c.delete(&key, opts).await.map_err(|e| self.err(e))?;
                self.print_delete(out, &resp)?;
            }
            CtlCommand::Rmdir { key } => {
                let key = need_key(key)?;
                let opts = DeleteOptions {
                    dir: true,
                    ..Default::default()
                };
                let resp = c.delete(&key, opts).await.map_err(|e| self.err(e))?;
                self.print_delete(out, &resp)?;
            }
            CtlCommand::Member(m) => self.member(out, m).await?,
            CtlCommand::ClusterHealth { forever } => self.cluster_health(out, forever).await?,
            CtlCommand::Watch { .. } | CtlCommand::ExecWatch { .. } => {
                unreachable!("handled by run")
            }
        }
        Ok(())
    }

    /// mkdir / setdir / updatedir: print only outside simple mode.
    async fn dir_op(
        &self,
        out: &mut (impl Write + Send),
        key: Option<String>,
        ttl: i64,
        prev_exist: Option<bool>,
    ) -> Result<(), CtlError> {
        let key = need_key(key)?;
        let opts = SetOptions {
            ttl: Some(ttl),
            dir: true,
            prev_exist,
            ..Default::default()
        };
        let resp = self
            .client
            .set(&key, "", opts)
            .await
            .map_err(|e| self.err(e))?;
        if self.format != OutputFormat::Simple {
            print_response(out, &resp, self.format)?;
        }
        Ok(())
    }

    /// rm / rmdir: a removed directory is printed only outside simple mode.
    fn print_delete(&self, out: &mut (impl Write + Send), resp: &Response) -> Result<(), CtlError> {
        if !resp.node.dir || self.format != OutputFormat::Simple {
            print_response(out, resp, self.format)?;
        }
        Ok(())
    }

    /// Waits for the next change of `key` at or after `wait_index` (the next one if `None`),
    /// and moves `wait_index` past it, as watch and exec-watch do between events.
    async fn next_change(
        &self,
        key: &str,
        wait_index: &mut Option<u64>,
        recursive: bool,
    ) -> Result<Response, CtlError> {
        let opts = WatchOptions {
            recursive,
            wait_index: *wait_index,
        };
        let resp = self
            .client
            .watch(key, opts)
            .await
            .map_err(|e| self.err(e))?;
        *wait_index = Some(resp.node.modified_index + 1);
        Ok(resp)
    }

    async fn watch(
        &self,
        out: &mut (impl Write + Send),
        key: &str,
        mut wait_index: Option<u64>,
        recursive: bool,
        forever: bool,
    ) -> Result<(), CtlError> {
        loop {
            let resp = self.next_change(key, &mut wait_index, recursive).await?;
            if resp.node.dir {
                continue;
            }
            if recursive {
                writeln!(out, "[{}] {}", resp.action, resp.node.key)?;
            }
            print_response(out, &resp, self.format)?;
            out.flush()?;
            if !forever {
                return Ok(());
            }
        }
    }

    async fn exec_watch(
        &self,
        key: &str,
        command: &[String],
        mut wait_index: Option<u64>,
        recursive: bool,
    ) -> Result<(), CtlError> {
        loop {
            let resp = self.next_change(key, &mut wait_index, recursive).await?;
            if resp.node.dir {
                eprintln!("Ignored dir {} change", resp.node.key);
                continue;
            }
            let mut cmd = tokio::process::Command::new(&command[0]);
            cmd.args(&command[1..])
                .env("ETCD_WATCH_ACTION", &resp.action)
                .env(
                    "ETCD_WATCH_MODIFIED_INDEX",
                    resp.node.modified_index.to_string(),
                )
                .env("ETCD_WATCH_KEY", &resp.node.key)
                .env("ETCD_WATCH_VALUE", resp.node.value.as_deref().unwrap_or(""));
            let mut child = cmd.spawn().map_err(|source| CtlError::Exec {
                command: command.join(" "),
                source,
            })?;
            // Like etcdctl, do not wait for the command before watching on;
            // reap it in the background.
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
    }

    async fn member(
        &self,
        out: &mut (impl Write + Send),
        cmd: MemberCommand,
    ) -> Result<(), CtlError> {
        let c = &self.client;
        match cmd {
            MemberCommand::List { args } => {
                if !args.is_empty() {
                    return Err(CtlError::Failed("No arguments accepted".into()));
                }
                let members = c
                    .member_list()
                    .await
                    .map_err(|e| CtlError::Failed(e.to_string()))?;
                let leader = c
                    .member_leader()
                    .await
                    .map_err(|e| CtlError::Failed(format!("Failed to get leader:  {e}")))?;
                for m in &members {
                    write_member_line(out, m, m.id == leader.id)?;
                }
            }
            MemberCommand::Add { args } => {
                if args.len() != 2 {
                    return Err(CtlError::Failed(
                        "Provide a name and a single member peerURL".into(),
                    ));
                }
                let (name, peer) = (&args[0], &args[1]);
                let added = c
                    .member_add(peer)
                    .await
                    .map_err(|e| CtlError::Failed(e.to_string()))?;
                writeln!(
                    out,
                    "Added member named {} with ID {} to cluster",
                    name, added.id
                )?;
                let members = c
                    .member_list()
                    .await
                    .map_err(|e| CtlError::Failed(e.to_string()))?;
                let mut conf = Vec::new();
                for m in &members {
                    let n = if m.id == added.id {
                        name.as_str()
                    } else {
                        m.name.as_str()
                    };
                    for u in &m.peer_urls {
                        conf.push(format!("{n}={u}"));
                    }
                }
                writeln!(out)?;
                writeln!(out, "ETCD_NAME={}", go_quote(name))?;
                writeln!(out, "ETCD_INITIAL_CLUSTER={}", go_quote(&conf.join(",")))?;
                writeln!(out, "ETCD_INITIAL_CLUSTER_STATE=\"existing\"")?;
            }
            MemberCommand::Remove { args } => {
                if args.len() != 1 {
                    return Err(CtlError::Failed("Provide a single member ID".into()));
                }
                let id = &args[0];
                let members = c.member_list().await.map_err(|e| {
                    CtlError::Failed(format!(
                        "Error while verifying ID against known members: {e}"
                    ))
                })?;
                let mut found = false;
                let mut hints = String::new();
                for m in &members {
                    if &m.id == id {
                        found = true;
                    }
                    if &m.name == id {
                        hints.push_str(&format!(
                            "Found a member named {}; if this is correct, please use its ID, eg:\n\tberth ctl member remove {}\n\n",
                            m.name, m.id
                        ));
                    }
                }
                if !found {
                    return Err(CtlError::Failed(format!(
                        "{hints}Couldn't find a member in the cluster with an ID of {id}."
                    )));
                }
                if !hints.is_empty() {
                    eprint!("{hints}");
                }
                c.member_remove(id).await.map_err(|e| {
                    CtlError::Failed(format!(
                        "Received an error trying to remove member {id}: {e}"
                    ))
                })?;
                writeln!(out, "Removed member {id} from cluster")?;
            }
            MemberCommand::Update { args } => {
                if args.len() != 2 {
                    return Err(CtlError::Failed(
                        "Provide an ID and a list of comma separated peerURL (0xabcd http://example.com,http://example1.com)"
                            .into(),
                    ));
                }
                let urls: Vec<String> = args[1].split(',').map(str::to_string).collect();
                c.member_update(&args[0], &urls)
                    .await
                    .map_err(|e| CtlError::Failed(e.to_string()))?;
                writeln!(out, "Updated member with ID {} in cluster", args[0])?;
            }
        }
        Ok(())
    }

    async fn cluster_health(
        &self,
        out: &mut (impl Write + Send),
        forever: bool,
    ) -> Result<(), CtlError> {
        let members = match self.client.member_list().await {
            Ok(m) => m,
            Err(e) => {
                writeln!(out, "cluster may be unhealthy: failed to list members")?;
                return Err(CtlError::Client {
                    source: e,
                    code: EXIT_SERVER_ERROR,
                });
            }
        };
        loop {
            let mut healthy = false;
            for m in &members {
                if m.client_urls.is_empty() {
                    writeln!(
                        out,
                        "member {} is unreachable: no available published client urls",
                        m.id
                    )?;
                    continue;
                }
                let mut checked = false;
                for url in &m.client_urls {
                    match self.client.health_of(url).await {
                        Err(e) => {
                            writeln!(
                                out,
                                "failed to check the health of member {} on {}: {}",
                                m.id, url, e
                            )?;
                        }
                        Ok(h) => {
                            checked = true;
                            if h {
                                healthy = true;
                                writeln!(
                                    out,
                                    "member {} is healthy: got healthy result from {}",
                                    m.id, url
                                )?;
                            } else {
                                writeln!(
                                    out,
                                    "member {} is unhealthy: got unhealthy result from {}",
                                    m.id, url
                                )?;
                            }
                            break;
                        }
                    }
                }
                if !checked {
                    writeln!(
                        out,
                        "member {} is unreachable: [{}] are all unreachable",
                        m.id,
                        m.client_urls.join(" ")
                    )?;
                }
            }
            if healthy {
                writeln!(out, "cluster is healthy")?;
            } else {
                writeln!(out, "cluster is unhealthy")?;
            }
            out.flush()?;
            if !forever {
                return if healthy {
                    Ok(())
                } else {
                    Err(CtlError::ClusterUnhealthy)
                };
            }
            write!(out, "\nnext check after 10 second...\n\n")?;
            out.flush()?;
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }
}

fn write_member_line(out: &mut impl Write, m: &Member, is_leader: bool) -> std::io::Result<()> {
    if m.name.is_empty() {
        writeln!(
            out,
            "{}[unstarted]: peerURLs={}",
            m.id,
            m.peer_urls.join(",")
        )
    } else {
        writeln!(
            out,
            "{}: name={} peerURLs={} clientURLs={} isLeader={}",
            m.id,
            m.name,
            m.peer_urls.join(","),
            m.client_urls.join(","),
            is_leader
        )
    }
}

// ---------------------------------------------------------------------------
// Output formatting
// ---------------------------------------------------------------------------

/// Prints a keys response the way etcdctl's simple/extended/json modes do.
pub fn print_response(
    out: &mut impl Write,
    resp: &Response,
    format: OutputFormat,
) -> std::io::Result<()> {
    let value = |n: &Node| n.value.clone().unwrap_or_default();
    match format {
        OutputFormat::Simple => {
            if resp.action != "delete" {
                writeln!(out, "{}", value(&resp.node))
            } else {
                let prev = resp.prev_node.as_ref().map(value).unwrap_or_default();
                writeln!(out, "PrevNode.Value: {prev}")
            }
        }
        OutputFormat::Extended => {
            writeln!(out, "Key: {}", resp.node.key)?;
            writeln!(out, "Created-Index: {}", resp.node.created_index)?;
            writeln!(out, "Modified-Index: {}", resp.node.modified_index)?;
            if let Some(p) = &resp.prev_node {
                writeln!(out, "PrevNode.Value: {}", value(p))?;
            }
            writeln!(out, "TTL: {}", resp.node.ttl.unwrap_or(0))?;
            writeln!(out, "Index: {}", resp.etcd_index)?;
            if resp.action != "delete" {
                writeln!(out)?;
                writeln!(out, "{}", value(&resp.node))?;
            }
            Ok(())
        }
        OutputFormat::Json => writeln!(out, "{}", response_json(resp)),
    }
}

/// `ls` in simple mode: the key itself if it is not a directory, then every
/// child (depth first, in the order the registry returned them).
pub fn print_ls(out: &mut impl Write, resp: &Response, slash_dirs: bool) -> std::io::Result<()> {
    if !resp.node.dir {
        writeln!(out, "{}", resp.node.key)?;
    }
    for n in &resp.node.nodes {
        print_ls_node(out, n, slash_dirs)?;
    }
    Ok(())
}

fn print_ls_node(out: &mut impl Write, n: &Node, slash_dirs: bool) -> std::io::Result<()> {
    if n.dir && slash_dirs {
        writeln!(out, "{}/", n.key)?;
    } else {
        writeln!(out, "{}", n.key)?;
    }
    for c in &n.nodes {
        print_ls_node(out, c, slash_dirs)?;
    }
    Ok(())
}

/// The JSON etcdctl prints for a response: Go's encoding of its client
/// structs, so fields, their order, `null`s and string escapes follow Go
/// rather than the registry's own JSON.
pub fn response_json(resp: &Response) -> String {
    let mut s = String::new();
    s.push_str("{\"action\":");
    go_json_string(&mut s, &resp.action);
    s.push_str(",\"node\":");
    node_json(&mut s, &resp.node);
    s.push_str(",\"prevNode\":");
    match &resp.prev_node {
        Some(p) => node_json(&mut s, p),
        None => s.push_str("null"),
    }
    s.push('}');
    s
}

fn node_json(s: &mut String, n: &Node) {
    s.push_str("{\"key\":");
    go_json_string(s, &n.key);
    if n.dir {
        s.push_str(",\"dir\":true");
    }
    s.push_str(",\"value\":");
    go_json_string(s, n.value.as_deref().unwrap_or(""));
    s.push_str(",\"nodes\":");
    if n.nodes.is_empty() {
        s.push_str("null");
    } else {
        s.push('[');
        for (i, c) in n.nodes.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            node_json(s, c);
        }
        s.push(']');
    }
    s.push_str(&format!(
        ",\"createdIndex\":{},\"modifiedIndex\":{}",
        n.created_index, n.modified_index
    ));
    if let Some(exp) = &n.expiration {
        s.push_str(",\"expiration\":");
        go_json_string(s, exp);
    }
    if let Some(ttl) = n.ttl.filter(|t| *t != 0) {
        s.push_str(&format!(",\"ttl\":{ttl}"));
    }
    s.push('}');
}

/// Go's `encoding/json` string escaping (HTML-safe, as Go 1.19 does it).
pub fn go_json_string(s: &mut String, v: &str) {
    s.push('"');
    for ch in v.chars() {
        match ch {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '<' | '>' | '&' => s.push_str(&format!("\\u00{:02x}", ch as u32)),
            '\u{2028}' => s.push_str("\\u2028"),
            '\u{2029}' => s.push_str("\\u2029"),
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u00{:02x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
}

/// Go's `%q` for the strings member add prints.
fn go_quote(v: &str) -> String {
    let mut s = String::from("\"");
    for ch in v.chars() {
        match ch {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '\x07' => s.push_str("\\a"),
            '\x08' => s.push_str("\\b"),
            '\x0c' => s.push_str("\\f"),
            '\x0b' => s.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                s.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Parses Go-style durations such as `2s`, `500ms`, `1m30s`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = t;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(format!("invalid duration {text:?}"));
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {text:?} (use e.g. 2s or 500ms)"))?;
        let num: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("unknown unit {u:?} in duration {text:?}")),
        };
        total += num * mult;
        rest = &rest[unit_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// `run` must stay usable from multi-threaded runtimes and `tokio::spawn`.
#[allow(dead_code)]
fn assert_run_is_send(args: CtlArgs, out: &'static mut Vec<u8>) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&run(args, out));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(key: &str, value: Option<&str>, dir: bool, ci: u64, mi: u64) -> Node {
        Node {
            key: key.into(),
            value: value.map(Into::into),
            dir,
            created_index: ci,
            modified_index: mi,
            ..Default::default()
        }
    }

    fn render(resp: &Response, f: OutputFormat) -> String {
        let mut v = Vec::new();
        print_response(&mut v, resp, f).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn formats_like_etcdctl() {
        let resp = Response {
            action: "set".into(),
            node: node("/foo", Some("qux"), false, 6, 6),
            prev_node: Some(node("/foo", Some("baz"), false, 5, 5)),
            etcd_index: 6,
            ..Default::default()
        };
        assert_eq!(render(&resp, OutputFormat::Simple), "qux\n");
        assert_eq!(
            render(&resp, OutputFormat::Extended),
            "Key: /foo\nCreated-Index: 6\nModified-Index: 6\nPrevNode.Value: baz\nTTL: 0\nIndex: 6\n\nqux\n"
        );
        assert_eq!(
            render(&resp, OutputFormat::Json),
            "{\"action\":\"set\",\"node\":{\"key\":\"/foo\",\"value\":\"qux\",\"nodes\":null,\"createdIndex\":6,\"modifiedIndex\":6},\"prevNode\":{\"key\":\"/foo\",\"value\":\"baz\",\"nodes\":null,\"createdIndex\":5,\"modifiedIndex\":5}}\n"
        );
        let del = Response {
            action: "delete".into(),
            node: node("/foo", None, false, 6, 7),
            prev_node: Some(node("/foo", Some("qux"), false, 6, 6)),
            etcd_index: 7,
            ..Default::default()
        };
        assert_eq!(render(&del, OutputFormat::Simple), "PrevNode.Value: qux\n");
        assert_eq!(
            render(&del, OutputFormat::Extended),
            "Key: /foo\nCreated-Index: 6\nModified-Index: 7\nPrevNode.Value: qux\nTTL: 0\nIndex: 7\n"
        );
    }

    #[test]
    fn json_escapes_like_go() {
        let mut s = String::new();
        go_json_string(&mut s, "a<b>&\"\\\n\u{1}\u{8}é\u{2028}");
        assert_eq!(s, r#""a\u003cb\u003e\u0026\"\\\n\u0001\u0008é\u2028""#);
    }

    #[test]
    fn ls_lists_depth_first_with_slashes() {
        let mut d = node("/d", None, true, 1, 1);
        let mut sub = node("/d/sub", None, true, 2, 2);
        sub.nodes.push(node("/d/sub/x", Some("1"), false, 3, 3));
        d.nodes.push(node("/d/a", Some("1"), false, 4, 4));
        d.nodes.push(sub);
        let resp = Response {
            action: "get".into(),
            node: d,
            ..Default::default()
        };
        let mut v = Vec::new();
        print_ls(&mut v, &resp, true).unwrap();
        assert_eq!(String::from_utf8(v).unwrap(), "/d/a\n/d/sub/\n/d/sub/x\n");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn exit_codes() {
        let e = server_error(
            ClientError::Etcd {
                code: 100,
                message: "Key not found".into(),
                cause: "/foo".into(),
                index: 12,
            },
            false,
        );
        assert_eq!(e.exit_code(), 4);
        assert_eq!(
            e.report().unwrap(),
            "Error:  100: Key not found (/foo) [12]"
        );
        assert_eq!(CtlError::BadArgs("key required".into()).exit_code(), 1);
        assert_eq!(CtlError::ClusterUnhealthy.report(), None);
        let u = server_error(
            ClientError::Unavailable {
                endpoints: vec!["http://127.0.0.1:2379".into()],
                errors: vec![],
            },
            false,
        );
        assert_eq!(u.exit_code(), 2);
    }

    #[test]
    fn go_quote_escapes() {
        assert_eq!(go_quote("a\"b"), "\"a\\\"b\"");
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        ctl: CtlArgs,
    }

    fn parse(args: &[&str]) -> CtlArgs {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("ctl").chain(args.iter().copied()))
            .unwrap()
            .ctl
    }

    #[test]
    fn accepts_etcdctl_flag_forms() {
        assert_eq!(parse(&["-C", "http://a:1", "ls"]).endpoints, "http://a:1");
        assert_eq!(
            parse(&["--peers", "http://a:1", "ls"]).endpoints,
            "http://a:1"
        );
        assert_eq!(
            parse(&["--endpoint=http://a:1", "ls"]).endpoints,
            "http://a:1"
        );
        let a = parse(&[
            "--no-sync",
            "--total-timeout",
            "10s",
            "ls",
            "-o",
            "json",
            "-p",
            "-r",
            "/d",
        ]);
        assert!(a.no_sync);
        assert_eq!(a.output, OutputFormat::Json);
        assert_eq!(a.total_timeout, Duration::from_secs(10));
        assert!(matches!(
            a.command,
            CtlCommand::Ls {
                p: true,
                recursive: true,
                ..
            }
        ));
        let a = parse(&[
            "exec-watch",
            "--recursive",
            "/k",
            "--",
            "sh",
            "-c",
            "echo -n x",
        ]);
        match a.command {
            CtlCommand::ExecWatch {
                args, recursive, ..
            } => {
                assert!(recursive);
                assert_eq!(args, ["/k", "--", "sh", "-c", "echo -n x"]);
            }
            other => panic!("{other:?}"),
        }
        let a = parse(&["set", "--ttl", "5", "--swap-with-index", "3", "/k", "v"]);
        assert!(matches!(
            a.command,
            CtlCommand::Set {
                ttl: 5,
                swap_with_index: 3,
                ..
            }
        ));
    }
}
