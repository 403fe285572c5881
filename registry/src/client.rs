//! Async client for the etcd v2 HTTP API, as served by etcd 3.4 with
//! `--enable-v2` and by berth's own registry.
//!
//! One [`Client`] holds a keep-alive connection pool and a list of endpoints.
//! A request goes to the endpoint that answered last; when that endpoint
//! cannot be reached the next one is tried, and so on around the list.
//!
//! ```no_run
//! # async fn demo() -> Result<(), registry::client::ClientError> {
//! use registry::client::{Client, GetOptions, SetOptions};
//! let c = Client::new(&["http://127.0.0.1:2379".to_string()])?;
//! c.set("/services/web", "10.0.0.2:80", SetOptions::default()).await?;
//! let r = c.get("/services/web", GetOptions::default()).await?;
//! assert_eq!(r.node.value.as_deref(), Some("10.0.0.2:80"));
//! # Ok(()) }
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// Endpoint used when none is given (etcd's and berth's client port).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// etcd v2 error codes that callers commonly match on.
pub mod codes {
    pub const KEY_NOT_FOUND: u32 = 100;
    pub const TEST_FAILED: u32 = 101;
    pub const NOT_FILE: u32 = 102;
    pub const NOT_DIR: u32 = 104;
    pub const NODE_EXIST: u32 = 105;
    pub const ROOT_RONLY: u32 = 107;
    pub const DIR_NOT_EMPTY: u32 = 108;
    pub const PREV_VALUE_REQUIRED: u32 = 201;
    pub const TTL_NAN: u32 = 202;
    pub const INDEX_NAN: u32 = 203;
    pub const EVENT_INDEX_CLEARED: u32 = 401;
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Everything that can go wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry answered with an etcd error body. Displays exactly as
    /// etcdctl shows it: `100: Key not found (/foo) [12]`.
    #[error("{code}: {message} ({cause}) [{index}]")]
    Etcd {
        code: u32,
        message: String,
        cause: String,
        index: u64,
    },

    /// No endpoint could be reached (connection refused, timeout, reset...).
    #[error(
        "no registry reachable at {}: is `berth up` or `berth registry` running? \
         (check --endpoints / BERTH_ENDPOINTS; {})",
        .endpoints.join(","),
        .errors.join("; ")
    )]
    Unavailable {
        endpoints: Vec<String>,
        /// One line per endpoint tried, `<endpoint>: <what happened>`.
        errors: Vec<String>,
    },

    /// The member answered but says it has no raft leader right now.
    #[error(
        "registry member {endpoint} has no leader: the cluster has lost quorum or is \
         electing one; retry shortly or check `berth ctl cluster-health`"
    )]
    NoLeader { endpoint: String },

    /// A `/v2/members` call was refused (conflict, unknown member, ...).
    #[error("{message}")]
    Member { status: u16, message: String },

    /// The v2 API is not served there (etcd without `--enable-v2`, or not etcd).
    #[error(
        "{endpoint} does not serve the etcd v2 API ({status}): start etcd with \
         --enable-v2, or point --endpoints at a berth registry"
    )]
    V2Disabled { endpoint: String, status: u16 },

    /// Some other non-success HTTP answer without an etcd error body.
    #[error("unexpected HTTP {status} from {endpoint}: {body}")]
    Http {
        endpoint: String,
        status: u16,
        body: String,
    },

    /// The body could not be decoded as what the v2 API promises.
    #[error(
        "cannot decode the answer of {endpoint} ({detail}): is it an etcd v2 compatible \
         registry? body was: {body}"
    )]
    Decode {
        endpoint: String,
        detail: String,
        body: String,
    },

    /// An endpoint string that is not an http URL.
    #[error("invalid endpoint {0:?}: expected a URL such as http://127.0.0.1:2379")]
    InvalidEndpoint(String),

    /// `Client::new` got an empty list.
    #[error("no endpoints given: pass --endpoints or set BERTH_ENDPOINTS")]
    NoEndpoints,
}

impl ClientError {
    /// The etcd error code, if this is an etcd error.
    pub fn etcd_code(&self) -> Option<u32> {
        match self {
            ClientError::Etcd { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True for "key not found" (code 100).
    pub fn is_key_not_found(&self) -> bool {
        self.etcd_code() == Some(codes::KEY_NOT_FOUND)
    }

    /// True when no endpoint could be reached at all.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ClientError::Unavailable { .. })
    }
}

// ---------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------

/// One node of the v2 key space (a key or a directory).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Absent for the root directory, which etcd sends without a key.
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub dir: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(default)]
    pub created_index: u64,
    #[serde(default)]
    pub modified_index: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Node>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The answer to a keys operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub action: String,
    #[serde(default)]
    pub node: Node,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<Node>,
    /// `X-Etcd-Index` header: the store index when the answer was made.
    #[serde(skip)]
    pub etcd_index: u64,
    /// `X-Raft-Index` header (0 when absent, e.g. on watches).
    #[serde(skip)]
    pub raft_index: u64,
    /// `X-Raft-Term` header (0 when absent).
    #[serde(skip)]
    pub raft_term: u64,
}

/// A cluster member as `/v2/members` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// Empty for a member that was added but has not started yet.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
}

/// `/version` of a member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    #[serde(default)]
    pub etcdserver: String,
    #[serde(default)]
    pub etcdcluster: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EtcdErrorBody {
    error_code: u32,
    #[serde(default)]
    message: String,
    #[serde(default)]
    cause: String,
    #[serde(default)]
    index: u64,
}

#[derive(Deserialize)]
struct MembersBody {
    #[serde(default)]
    members: Vec<Member>,
}

#[derive(Deserialize)]
struct MemberErrorBody {
    #[serde(default)]
    message: String,
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/// Options of [`Client::get`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// Return the whole subtree of a directory.
    pub recursive: bool,
    /// Sort the children of directories by key.
    pub sorted: bool,
    /// Go through raft so the answer is linearizable.
    pub quorum: bool,
}

/// Options of [`Client::set`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Time to live in seconds (sent only when > 0).
    pub ttl: Option<i64>,
    /// Compare-and-swap on the current value.
    pub prev_value: Option<String>,
    /// Compare-and-swap on the current modified index (sent only when > 0).
    pub prev_index: Option<u64>,
    /// `Some(false)`: must not exist (create); `Some(true)`: must exist (update).
    pub prev_exist: Option<bool>,
    /// Create/update a directory instead of a key (the value is not sent).
    pub dir: bool,
    /// Refresh the TTL without changing the value or notifying watchers.
    pub refresh: bool,
    /// Ask the server to leave the node out of a successful answer.
    pub no_value_on_success: bool,
}

/// Options of [`Client::delete`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    pub recursive: bool,
    /// Allow removing an (empty, unless `recursive`) directory.
    pub dir: bool,
    pub prev_value: Option<String>,
    pub prev_index: Option<u64>,
}

/// Options of [`Client::watch`] / [`Client::watch_stream`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Also report changes below the key.
    pub recursive: bool,
    /// First store index to report (`waitIndex`); `None` waits for the next change.
    pub wait_index: Option<u64>,
}

/// Tunables of a [`Client`]; `Default` gives what `Client::new` uses.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Limit on one request to one endpoint (watches are exempt); on expiry
    /// the next endpoint is tried.
    pub request_timeout: Option<Duration>,
    /// Limit on establishing a TCP connection.
    pub connect_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Some(Duration::from_secs(5)),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

type Http = HyperClient<HttpConnector, Full<Bytes>>;

/// Handle to the registry; cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    http: Http,
    /// Index of the endpoint that answered last.
    current: AtomicUsize,
    config: ClientConfig,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints)
            .finish()
    }
}

/// A raw HTTP answer, before interpretation.
struct Raw {
    endpoint: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

struct Body {
    bytes: Bytes,
    content_type: &'static str,
}

impl Client {
    /// Builds a client for the given endpoints. Each item may itself be a
    /// comma separated list, as etcdctl's `--endpoints`; `host:port` without
    /// a scheme means `http://host:port`.
    pub fn new(endpoints: &[String]) -> Result<Client, ClientError> {
        Client::with_config(endpoints, ClientConfig::default())
    }

    /// As [`Client::new`], with explicit timeouts.
    pub fn with_config(endpoints: &[String], config: ClientConfig) -> Result<Client, ClientError> {
        let mut list = Vec::new();
        for item in endpoints {
            for ep in item.split(',') {
                let ep = ep.trim();
                if ep.is_empty() {
                    continue;
                }
                let norm = normalize_endpoint(ep)?;
                if !list.contains(&norm) {
                    list.push(norm);
                }
            }
        }
        if list.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints: list,
                http,
                current: AtomicUsize::new(0),
                config,
            }),
        })
    }

    /// The normalised endpoint list.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    // -- keys ---------------------------------------------------------------

    /// `GET /v2/keys/<key>`.
    pub async fn get(&self, key: &str, opts: GetOptions) -> Result<Response, ClientError> {
        let mut q = Query::default();
        q.flag("recursive", opts.recursive);
        q.flag("sorted", opts.sorted);
        q.flag("quorum", opts.quorum);
        let raw = self
            .send(Method::GET, &keys_path(key, &q), None, true)
            .await?;
        parse_keys(raw)
    }

    /// The children of directory `dir` (with `opts.recursive`, each with its own
    /// children); a directory that does not exist has none.
    pub async fn children(&self, dir: &str, opts: GetOptions) -> Result<Vec<Node>, ClientError> {
        match self.get(dir, opts).await {
            Ok(r) => Ok(r.node.nodes),
            Err(e) if e.is_key_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// `PUT /v2/keys/<key>`: set a value, or create/update a directory.
    pub async fn set(
        &self,
        key: &str,
        value: &str,
        opts: SetOptions,
    ) -> Result<Response, ClientError> {
        let mut q = Query::default();
        if let Some(pv) = &opts.prev_value {
            q.pair("prevValue", pv);
        }
        if let Some(pi) = opts.prev_index.filter(|i| *i > 0) {
            q.pair("prevIndex", &pi.to_string());
        }
        if let Some(pe) = opts.prev_exist {
            q.pair("prevExist", if pe { "true" } else { "false" });
        }
        q.flag("dir", opts.dir);
        q.flag("refresh", opts.refresh);
        q.flag("noValueOnSuccess", opts.no_value_on_success);
        let mut form = Query::default();
        if !opts.dir {
            form.pair("value", value);
        }
        if let Some(ttl) = opts.ttl.filter(|t| *t > 0) {
            form.pair("ttl", &ttl.to_string());
        }
        let body = form_body(form.encode().unwrap_or_default());
        let raw = self
            .send(Method::PUT, &keys_path(key, &q), Some(body), true)
            .await?;
        parse_keys(raw)
    }

    /// `POST /v2/keys/<dir>`: create a key with an automatically increasing
    /// name inside `dir` (etcdctl's `mk --in-order`).
    pub async fn create_in_order(
        &self,
        dir: &str,
        value: &str,
        ttl: Option<i64>,
    ) -> Result<Response, ClientError> {
        let mut form = Query::default();
        form.pair("value", value);
        if let Some(ttl) = ttl.filter(|t| *t > 0) {
            form.pair("ttl", &ttl.to_string());
        }
        let body = form_body(form.encode().unwrap_or_default());
        let raw = self
            .send(
                Method::POST,
                &keys_path(dir, &Query::default()),
                Some(body),
                true,
            )
            .await?;
        parse_keys(raw)
    }

    /// `DELETE /v2/keys/<key>`.
    pub async fn delete(&self, key: &str, opts: DeleteOptions) -> Result<Response, ClientError> {
        let mut q = Query::default();
        q.flag("recursive", opts.recursive);
        q.flag("dir", opts.dir);
        if let Some(pv) = &opts.prev_value {
            q.pair("prevValue", pv);
        }
        if let Some(pi) = opts.prev_index.filter(|i| *i > 0) {
            q.pair("prevIndex", &pi.to_string());
        }
        let raw = self
            .send(Method::DELETE, &keys_path(key, &q), None, true)
            .await?;
        parse_keys(raw)
    }

    /// Long-polls for one change of `key` (`wait=true`) and returns it.
    /// Has no request timeout: it waits as long as it takes.
    pub async fn watch(&self, key: &str, opts: WatchOptions) -> Result<Response, ClientError> {
        let mut q = Query::default();
        q.pair("wait", "true");
        if let Some(i) = opts.wait_index.filter(|i| *i > 0) {
            q.pair("waitIndex", &i.to_string());
        }
        q.flag("recursive", opts.recursive);
        let path = keys_path(key, &q);
        loop {
            let raw = self.send(Method::GET, &path, None, false).await?;
            // A member that drops the watcher (e.g. while shutting down)
            // ends the poll with an empty 200; just poll again.
            if raw.status.is_success() && raw.body.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            return parse_keys(raw);
        }
    }

    /// Endless stream of changes of `key`: re-polls with
    /// `waitIndex = modifiedIndex + 1` after each event, so no event is
    /// missed between polls (what `etcdctl watch --forever` does).
    ///
    /// The stream ends after yielding its first error (for example 401
    /// "event index cleared"); callers then re-read and watch again.
    pub fn watch_stream(
        &self,
        key: &str,
        opts: WatchOptions,
    ) -> Pin<Box<dyn Stream<Item = Result<Response, ClientError>> + Send + 'static>> {
        let state = Some((self.clone(), key.to_string(), opts));
        Box::pin(futures::stream::unfold(state, |state| async move {
            let (client, key, mut opts) = state?;
            match client.watch(&key, opts.clone()).await {
                Ok(resp) => {
                    opts.wait_index = Some(resp.node.modified_index + 1);
                    Some((Ok(resp), Some((client, key, opts))))
                }
                Err(e) => Some((Err(e), None)),
            }
        }))
    }

    // -- members ------------------------------------------------------------

    /// `GET /v2/members`.
    pub async fn member_list(&self) -> Result<Vec<Member>, ClientError> {
        let raw = self.send(Method::GET, "/v2/members", None, true).await?;
        if raw.status != StatusCode::OK {
            return Err(http_error(raw));
        }
        let body: MembersBody = decode(&raw)?;
        Ok(body.members)
    }

    /// `GET /v2/members/leader`.
    pub async fn member_leader(&self) -> Result<Member, ClientError> {
        let raw = self
            .send(Method::GET, "/v2/members/leader", None, true)
            .await?;
        match raw.status {
            StatusCode::OK => decode(&raw),
            StatusCode::SERVICE_UNAVAILABLE => Err(ClientError::NoLeader {
                endpoint: raw.endpoint,
            }),
            _ => Err(http_error(raw)),
        }
    }

    /// `POST /v2/members`: announce a new member by its peer URL.
    pub async fn member_add(&self, peer_url: &str) -> Result<Member, ClientError> {
        let body = serde_json::json!({ "peerURLs": [peer_url] }).to_string();
        let raw = self
            .send(Method::POST, "/v2/members", Some(json_body(body)), true)
            .await?;
        match raw.status {
            StatusCode::CREATED | StatusCode::OK => decode(&raw),
            _ => Err(member_error(raw)),
        }
    }

    /// `DELETE /v2/members/<id>`.
    pub async fn member_remove(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v2/members/{}", escape_segment(id));
        let raw = self.send(Method::DELETE, &path, None, true).await?;
        match raw.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(member_error(raw)),
        }
    }

    /// `PUT /v2/members/<id>`: replace a member's peer URLs.
    pub async fn member_update(&self, id: &str, peer_urls: &[String]) -> Result<(), ClientError> {
        let path = format!("/v2/members/{}", escape_segment(id));
        let body = serde_json::json!({ "peerURLs": peer_urls }).to_string();
        let raw = self
            .send(Method::PUT, &path, Some(json_body(body)), true)
            .await?;
        match raw.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(member_error(raw)),
        }
    }

    // -- misc ---------------------------------------------------------------

    /// `GET /health` on the first reachable endpoint.
    pub async fn health(&self) -> Result<bool, ClientError> {
        let raw = self.send(Method::GET, "/health", None, true).await?;
        parse_health(&raw)
    }

    /// `GET <url>/health` on one given client URL, without failover (used
    /// to check every member in turn).
    pub async fn health_of(&self, client_url: &str) -> Result<bool, ClientError> {
        let base = normalize_endpoint(client_url)?;
        let raw = self
            .send_to(
                &base,
                Method::GET,
                "/health",
                None,
                self.inner.config.request_timeout,
            )
            .await
            .map_err(|msg| ClientError::Unavailable {
                endpoints: vec![base.clone()],
                errors: vec![format!("{base}: {msg}")],
            })?;
        parse_health(&raw)
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<Version, ClientError> {
        let raw = self.send(Method::GET, "/version", None, true).await?;
        if !raw.status.is_success() {
            return Err(http_error(raw));
        }
        decode(&raw)
    }

    /// `GET /v2/machines`: the client URLs of the cluster.
    pub async fn machines(&self) -> Result<Vec<String>, ClientError> {
        let raw = self.send(Method::GET, "/v2/machines", None, true).await?;
        if !raw.status.is_success() {
            return Err(http_error(raw));
        }
        let text = String::from_utf8_lossy(&raw.body);
        Ok(text
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect())
    }

    // -- transport ----------------------------------------------------------

    /// Sends a request, starting at the endpoint that answered last and
    /// moving on when one cannot be reached. Any HTTP answer (even 5xx) is
    /// returned to the caller.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Body>,
        timed: bool,
    ) -> Result<Raw, ClientError> {
        let n = self.inner.endpoints.len();
        let start = self.inner.current.load(Ordering::Relaxed) % n;
        let timeout = if timed {
            self.inner.config.request_timeout
        } else {
            None
        };
        let mut errors = Vec::new();
        for i in 0..n {
            let idx = (start + i) % n;
            let ep = &self.inner.endpoints[idx];
            let body = body.as_ref().map(|b| Body {
                bytes: b.bytes.clone(),
                content_type: b.content_type,
            });
            match self
                .send_to(ep, method.clone(), path_and_query, body, timeout)
                .await
            {
                Ok(raw) => {
                    self.inner.current.store(idx, Ordering::Relaxed);
                    return Ok(raw);
                }
                Err(msg) => {
                    tracing::debug!(endpoint = %ep, error = %msg, "registry endpoint failed");
                    errors.push(format!("{ep}: {msg}"));
                }
            }
        }
        Err(ClientError::Unavailable {
            endpoints: self.inner.endpoints.clone(),
            errors,
        })
    }

    async fn send_to(
        &self,
        endpoint: &str,
        method: Method,
        path_and_query: &str,
        body: Option<Body>,
        timeout: Option<Duration>,
    ) -> Result<Raw, String> {
        let uri = format!("{endpoint}{path_and_query}");
        let mut builder = Request::builder().method(method).uri(&uri);
        let bytes = match body {
            Some(b) => {
                builder = builder.header(CONTENT_TYPE, HeaderValue::from_static(b.content_type));
                b.bytes
            }
            None => Bytes::new(),
        };
        let req = builder
            .body(Full::new(bytes))
            .map_err(|e| format!("cannot build request for {uri}: {e}"))?;
        let http = self.inner.http.clone();
        let fut = async move {
            let resp = http.request(req).await.map_err(describe_hyper_error)?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("reading the answer failed: {e}"))?
                .to_bytes();
            Ok::<_, String>((parts, body))
        };
        let (parts, body) = match timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| format!("no answer within {t:?}"))??,
            None => fut.await?,
        };
        Ok(Raw {
            endpoint: endpoint.to_string(),
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

fn describe_hyper_error(e: hyper_util::client::legacy::Error) -> String {
    use std::error::Error as _;
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

fn form_body(s: String) -> Body {
    Body {
        bytes: Bytes::from(s),
        content_type: "application/x-www-form-urlencoded",
    }
}

fn json_body(s: String) -> Body {
    Body {
        bytes: Bytes::from(s),
        content_type: "application/json",
    }
}

// ---------------------------------------------------------------------------
// Parsing helpers (pure; unit tested below)
// ---------------------------------------------------------------------------

/// Splits an `--endpoints` flag (`url,url,...`) into its non-empty, trimmed parts.
pub fn split_endpoints(flag: &str) -> Vec<String> {
    flag.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Turns `host:port`, `http://host:port/` ... into `http://host:port`.
pub fn normalize_endpoint(ep: &str) -> Result<String, ClientError> {
    let with_scheme = if ep.contains("://") {
        ep.to_string()
    } else {
        format!("http://{ep}")
    };
    let u =
        url::Url::parse(&with_scheme).map_err(|_| ClientError::InvalidEndpoint(ep.to_string()))?;
    if u.scheme() != "http" {
        return Err(ClientError::InvalidEndpoint(ep.to_string()));
    }
    let host = u
        .host_str()
        .ok_or_else(|| ClientError::InvalidEndpoint(ep.to_string()))?;
    let mut out = format!("http://{host}");
    if let Some(p) = u.port() {
        out.push_str(&format!(":{p}"));
    }
    let path = u.path().trim_end_matches('/');
    out.push_str(path);
    Ok(out)
}

/// Cleans a key the way etcd's Go client does (`path.Join("/v2/keys", key)`):
/// a leading slash is implied, empty and `.` segments vanish, `..` pops.
pub fn clean_key(key: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in key.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = String::new();
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    out
}

const SEGMENT_KEEP: &[u8] = b"-._~!$&'()*+,;=:@";

fn escape_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || SEGMENT_KEEP.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Default)]
struct Query {
    pairs: Vec<(&'static str, String)>,
}

impl Query {
    fn pair(&mut self, k: &'static str, v: &str) {
        self.pairs.push((k, v.to_string()));
    }
    fn flag(&mut self, k: &'static str, on: bool) {
        if on {
            self.pair(k, "true");
        }
    }
    fn encode(&self) -> Option<String> {
        if self.pairs.is_empty() {
            return None;
        }
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            ser.append_pair(k, v);
        }
        Some(ser.finish())
    }
}

/// Path (and query) of a keys request.
fn keys_path(key: &str, q: &Query) -> String {
    let mut path = String::from("/v2/keys");
    for seg in clean_key(key).split('/').filter(|s| !s.is_empty()) {
        path.push('/');
        path.push_str(&escape_segment(seg));
    }
    if path == "/v2/keys" {
        path.push('/');
    }
    if let Some(qs) = q.encode() {
        path.push('?');
        path.push_str(&qs);
    }
    path
}

fn header_u64(h: &HeaderMap, name: &str) -> u64 {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn body_text(b: &Bytes) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    if s.len() > 200 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(200).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s.to_string()
    }
}

fn decode<T: serde::de::DeserializeOwned>(raw: &Raw) -> Result<T, ClientError> {
    serde_json::from_slice(&raw.body).map_err(|e| ClientError::Decode {
        endpoint: raw.endpoint.clone(),
        detail: e.to_string(),
        body: body_text(&raw.body),
    })
}

/// Parses an etcd error body, if the bytes are one.
pub fn parse_etcd_error(body: &[u8]) -> Option<ClientError> {
    let e: EtcdErrorBody = serde_json::from_slice(body).ok()?;
    if e.error_code == 0 {
        return None;
    }
    Some(ClientError::Etcd {
        code: e.error_code,
        message: e.message,
        cause: e.cause,
        index: e.index,
    })
}

fn http_error(raw: Raw) -> ClientError {
    if let Some(e) = parse_etcd_error(&raw.body) {
        return e;
    }
    if raw.status == StatusCode::NOT_FOUND {
        return ClientError::V2Disabled {
            endpoint: raw.endpoint,
            status: raw.status.as_u16(),
        };
    }
    ClientError::Http {
        status: raw.status.as_u16(),
        body: body_text(&raw.body),
        endpoint: raw.endpoint,
    }
}

fn member_error(raw: Raw) -> ClientError {
    if raw.status.is_client_error() {
        if let Ok(m) = serde_json::from_slice::<MemberErrorBody>(&raw.body) {
            if !m.message.is_empty() {
                return ClientError::Member {
                    status: raw.status.as_u16(),
                    message: m.message,
                };
            }
        }
    }
    http_error(raw)
}

/// Parses the answer of a keys request: body plus the index headers.
fn parse_keys(raw: Raw) -> Result<Response, ClientError> {
    parse_keys_parts(raw.status.as_u16(), &raw.headers, &raw.body, &raw.endpoint)
}

/// Pure form of the keys-answer parser, for tests and for other transports.
pub fn parse_keys_parts(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    endpoint: &str,
) -> Result<Response, ClientError> {
    if status == 200 || status == 201 {
        let mut r: Response = serde_json::from_slice(body).map_err(|e| ClientError::Decode {
            endpoint: endpoint.to_string(),
            detail: e.to_string(),
            body: body_text(&Bytes::copy_from_slice(body)),
        })?;
        r.etcd_index = header_u64(headers, "x-etcd-index");
        r.raft_index = header_u64(headers, "x-raft-index");
        r.raft_term = header_u64(headers, "x-raft-term");
        return Ok(r);
    }
    if let Some(e) = parse_etcd_error(body) {
        return Err(e);
    }
    if status == 404 {
        return Err(ClientError::V2Disabled {
            endpoint: endpoint.to_string(),
            status,
        });
    }
    Err(ClientError::Http {
        endpoint: endpoint.to_string(),
        status,
        body: body_text(&Bytes::copy_from_slice(body)),
    })
}

/// `/health` answers `{"health":"true"}` (etcd 3.4) or `{"health":true}`;
/// a 503 still carries the body, so the status is not looked at.
fn parse_health(raw: &Raw) -> Result<bool, ClientError> {
    parse_health_body(&raw.body).ok_or_else(|| ClientError::Decode {
        endpoint: raw.endpoint.clone(),
        detail: "no \"health\" field".into(),
        body: body_text(&raw.body),
    })
}

/// Reads the `health` field of a `/health` body.
pub fn parse_health_body(body: &[u8]) -> Option<bool> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    match v.get("health")? {
        serde_json::Value::String(s) => Some(s == "true"),
        serde_json::Value::Bool(b) => Some(*b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_set_response_with_headers() {
        let body = br#"{"action":"set","node":{"key":"/foo","value":"bar","modifiedIndex":7,"createdIndex":7},"prevNode":{"key":"/foo","value":"old","ttl":5,"expiration":"2026-01-01T00:00:00.5Z","modifiedIndex":6,"createdIndex":6}}"#;
        let mut h = HeaderMap::new();
        h.insert("X-Etcd-Index", HeaderValue::from_static("7"));
        h.insert("X-Raft-Index", HeaderValue::from_static("120"));
        h.insert("X-Raft-Term", HeaderValue::from_static("2"));
        let r = parse_keys_parts(201, &h, body, "http://e").unwrap();
        assert_eq!(r.action, "set");
        assert_eq!(r.node.key, "/foo");
        assert_eq!(r.node.value.as_deref(), Some("bar"));
        assert_eq!((r.node.created_index, r.node.modified_index), (7, 7));
        assert_eq!((r.etcd_index, r.raft_index, r.raft_term), (7, 120, 2));
        let p = r.prev_node.unwrap();
        assert_eq!(p.ttl, Some(5));
        assert_eq!(p.expiration.as_deref(), Some("2026-01-01T00:00:00.5Z"));
    }

    #[test]
    fn parses_root_dir_without_key() {
        let body = br#"{"action":"get","node":{"dir":true,"nodes":[{"key":"/a","dir":true,"modifiedIndex":4,"createdIndex":4},{"key":"/b","value":"1","modifiedIndex":5,"createdIndex":5}]}}"#;
        let r = parse_keys_parts(200, &HeaderMap::new(), body, "e").unwrap();
        assert_eq!(r.node.key, "");
        assert!(r.node.dir);
        assert_eq!(r.node.nodes.len(), 2);
        assert!(r.node.nodes[0].dir && r.node.nodes[0].value.is_none());
        assert_eq!(r.etcd_index, 0);
    }

    #[test]
    fn parses_etcd_error() {
        let body = br#"{"errorCode":100,"message":"Key not found","cause":"/foo","index":12}"#;
        let e = parse_keys_parts(404, &HeaderMap::new(), body, "e").unwrap_err();
        assert_eq!(e.to_string(), "100: Key not found (/foo) [12]");
        assert!(e.is_key_not_found());
    }

    #[test]
    fn plain_404_means_v2_disabled() {
        let e = parse_keys_parts(404, &HeaderMap::new(), b"404 page not found\n", "http://x")
            .unwrap_err();
        assert!(matches!(e, ClientError::V2Disabled { .. }), "{e:?}");
        assert!(e.to_string().contains("--enable-v2"));
    }

    #[test]
    fn garbage_body_is_decode_error() {
        let e = parse_keys_parts(200, &HeaderMap::new(), b"<html>", "http://x").unwrap_err();
        assert!(matches!(e, ClientError::Decode { .. }));
    }

    #[test]
    fn serializes_camel_case() {
        let n = Node {
            key: "/a".into(),
            value: Some("v".into()),
            created_index: 3,
            modified_index: 4,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            r#"{"key":"/a","value":"v","createdIndex":3,"modifiedIndex":4}"#
        );
    }

    #[test]
    fn parses_members() {
        let body = br#"{"members":[{"id":"49202a915cae2932","name":"","peerURLs":["http://127.0.0.1:24801"],"clientURLs":[]},{"id":"886b03c4ae679a15","name":"default","peerURLs":["http://127.0.0.1:24800"],"clientURLs":["http://127.0.0.1:24790"]}]}"#;
        let m: MembersBody = serde_json::from_slice(body).unwrap();
        assert_eq!(m.members.len(), 2);
        assert_eq!(m.members[0].name, "");
        assert_eq!(m.members[1].client_urls, vec!["http://127.0.0.1:24790"]);
    }

    #[test]
    fn health_bodies() {
        assert_eq!(parse_health_body(br#"{"health":"true"}"#), Some(true));
        assert_eq!(parse_health_body(br#"{"health":"false"}"#), Some(false));
        assert_eq!(parse_health_body(br#"{"health":true}"#), Some(true));
        assert_eq!(parse_health_body(b"nope"), None);
    }

    #[test]
    fn endpoints_and_keys() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(normalize_endpoint("http://h:1/").unwrap(), "http://h:1");
        assert!(normalize_endpoint("https://h:1").is_err());
        assert_eq!(clean_key("foo//bar/"), "/foo/bar");
        assert_eq!(clean_key("/a/./b/../c"), "/a/c");
        assert_eq!(clean_key("/"), "");
        let mut q = Query::default();
        q.flag("recursive", true);
        q.pair("prevValue", "a b&c");
        assert_eq!(
            keys_path("/sp ace/k", &q),
            "/v2/keys/sp%20ace/k?recursive=true&prevValue=a+b%26c"
        );
        assert_eq!(keys_path("/", &Query::default()), "/v2/keys/");
    }

    #[test]
    fn client_splits_endpoint_lists() {
        let c = Client::new(&["http://a:1,b:2".to_string(), "http://a:1".into()]).unwrap();
        assert_eq!(
            c.endpoints(),
            &["http://a:1".to_string(), "http://b:2".to_string()]
        );
        assert!(matches!(Client::new(&[]), Err(ClientError::NoEndpoints)));
    }
}
