//! Differential conformance harness: etcd 3.4 (v2 API) versus berth.
//!
//! Both targets are started with etcd's own command-line flags, fed the same
//! ordered request corpus (`tests/conformance/cases.txt`), and their responses
//! are normalised (absolute indexes → offsets from each target's base index,
//! expiration timestamps → marker, ttl ±1, cluster/member ids and URLs →
//! markers, unsorted listings → sorted) and diffed.
//!
//! The HTTP client is a tiny raw HTTP/1.1 client over `TcpStream` on purpose:
//! the corpus needs byte-exact control of the request line (dot segments,
//! double slashes, bad escapes, unknown methods, malformed bodies) that a
//! URL-normalising client would rewrite.

#![allow(dead_code)]

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Allow-list of deliberate differences.
// ---------------------------------------------------------------------------

/// A deliberate, documented difference between etcd and berth.
pub struct Allowed {
    /// Substring of the corpus line (as written in cases.txt, before `${}`
    /// substitution) that identifies the case(s).
    pub request: &'static str,
    /// Difference path prefix, e.g. `body.node.ttl` or `headers.content-type`.
    pub path: &'static str,
    /// One-line justification.
    pub reason: &'static str,
}

/// Deliberate differences. Keep empty unless a difference is intended;
/// every entry needs a one-line reason.
pub const ALLOWED_DIFFERENCES: &[Allowed] = &[Allowed {
    request: "GET /v2/keys/k1#fragment",
    path: "",
    reason: "hyper drops a #fragment from the request target before berth sees it; Go keeps it in the key. HTTP clients never send fragments.",
}];

// ---------------------------------------------------------------------------
// Targets (processes).
// ---------------------------------------------------------------------------

/// How to start one target. Both targets take etcd's flags.
#[derive(Clone, Debug)]
pub struct TargetSpec {
    pub label: String,
    pub program: PathBuf,
    /// Arguments before etcd's flags (`registry` for berth).
    pub pre_args: Vec<String>,
    /// Arguments after etcd's flags (`--enable-v2` for etcd).
    pub post_args: Vec<String>,
}

fn etcd_program() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

fn is_etcd(p: &std::path::Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.starts_with("etcd"))
        .unwrap_or(false)
}

impl TargetSpec {
    /// Reference: real etcd 3.4 (`ETCD_BIN` or `etcd` on PATH).
    pub fn etcd(label: &str) -> TargetSpec {
        TargetSpec {
            label: label.to_string(),
            program: etcd_program(),
            pre_args: vec![],
            post_args: vec!["--enable-v2".into()],
        }
    }

    /// Candidate: `BERTH_CONFORMANCE_BIN` if set, else the package's own
    /// `berth` binary (when built inside the berth package), else etcd itself
    /// (self-check mode: proves the normaliser yields zero differences).
    /// A binary whose file name starts with `etcd` is run as etcd.
    pub fn berth() -> (TargetSpec, &'static str) {
        let (program, how) = match std::env::var_os("BERTH_CONFORMANCE_BIN") {
            Some(p) => (PathBuf::from(p), "BERTH_CONFORMANCE_BIN"),
            None => match option_env!("CARGO_BIN_EXE_berth") {
                Some(p) => (PathBuf::from(p), "CARGO_BIN_EXE_berth"),
                None => (etcd_program(), "fallback: etcd (self-check)"),
            },
        };
        let spec = if is_etcd(&program) {
            TargetSpec {
                label: "berth".into(),
                program,
                pre_args: vec![],
                post_args: vec!["--enable-v2".into()],
            }
        } else {
            TargetSpec {
                label: "berth".into(),
                program,
                pre_args: vec!["registry".into()],
                post_args: vec![],
            }
        };
        (spec, how)
    }
}

use crate::ports::free_port;

/// A running target process; killed on drop.
pub struct Target {
    pub label: String,
    pub client_port: u16,
    pub peer_port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Target {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// Launch with up to 3 attempts (a freshly released port can be taken).
    pub fn launch(spec: &TargetSpec) -> Result<Target, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::launch_once(spec) {
                Ok(t) => return Ok(t),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn launch_once(spec: &TargetSpec) -> Result<Target, String> {
        // tmpfs makes the 1000+ fsync'd writes of the corpus much faster.
        let dir = match std::path::Path::new("/dev/shm").is_dir() {
            true => tempfile::Builder::new()
                .prefix("conformance-")
                .tempdir_in("/dev/shm"),
            false => tempfile::Builder::new().prefix("conformance-").tempdir(),
        }
        .map_err(|e| format!("tempdir: {e}"))?;
        let (cp, pp) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{cp}");
        let peer = format!("http://127.0.0.1:{pp}");
        let log = dir.path().join("target.log");
        let logf = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.pre_args)
            .arg("--name")
            .arg("n1")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("n1={peer}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .args(&spec.post_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone().unwrap()))
            .stderr(Stdio::from(logf));
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", spec.program))?;
        let mut t = Target {
            label: spec.label.clone(),
            client_port: cp,
            peer_port: pp,
            child,
            log,
            _dir: dir,
        };
        t.wait_ready(Duration::from_secs(30))?;
        Ok(t)
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Ready = `GET /version` answers 200 and the cluster version is decided
    /// (etcd writes member attributes and the cluster version into the v2
    /// store during start-up; waiting for that keeps index offsets stable).
    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited during start-up ({st}):\n{}",
                    self.label,
                    self.log_tail()
                ));
            }
            if let Ok(r) = send(
                self.client_port,
                "GET",
                "/version",
                None,
                true,
                Duration::from_secs(1),
            ) {
                if r.status == 200 && !String::from_utf8_lossy(&r.body).contains("not_decided") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not ready after {limit:?}:\n{}",
                    self.label,
                    self.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 client.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub status: u16,
    /// Lower-cased header names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// For `@stream=N` cases: the first N JSON events of the chunked body.
    pub events: Option<Vec<Value>>,
}

impl Observation {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

fn write_request(
    s: &mut TcpStream,
    port: u16,
    method: &str,
    target: &str,
    body: Option<&str>,
    ctype: bool,
) -> std::io::Result<()> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: berth-conformance\r\nAccept: */*\r\nConnection: close\r\n");
    if let Some(b) = body {
        if ctype {
            req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        let _ = write!(req, "Content-Length: {}\r\n", b.len());
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes())
}

fn read_head(r: &mut impl BufRead) -> Result<(u16, Vec<(String, String)>), String> {
    let mut line = String::new();
    r.read_line(&mut line)
        .map_err(|e| format!("reading status line: {e}"))?;
    if line.is_empty() {
        return Err("connection closed before status line".into());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut headers = vec![];
    loop {
        line.clear();
        r.read_line(&mut line)
            .map_err(|e| format!("reading headers: {e}"))?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

/// Decode a chunked body; `stop` is consulted after every chunk.
fn read_chunked(
    r: &mut impl BufRead,
    mut stop: impl FnMut(&[u8]) -> bool,
) -> Result<Vec<u8>, String> {
    let mut out = vec![];
    loop {
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| format!("reading chunk size: {e}"))?;
        if line.is_empty() {
            return Err("connection closed inside chunked body".into());
        }
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| format!("bad chunk size {line:?}"))?;
        if size == 0 {
            // trailers
            loop {
                line.clear();
                r.read_line(&mut line).map_err(|e| e.to_string())?;
                if line.trim().is_empty() {
                    return Ok(out);
                }
            }
        }
        let mut buf = vec![0; size + 2];
        r.read_exact(&mut buf)
            .map_err(|e| format!("reading chunk: {e}"))?;
        out.extend_from_slice(&buf[..size]);
        if stop(&out) {
            return Ok(out);
        }
    }
}

fn complete_json_values(buf: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(buf)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

/// Send one request; `stream_events` = read a chunked body incrementally and
/// stop after that many JSON values.
pub fn send_ext(
    port: u16,
    method: &str,
    target: &str,
    body: Option<&str>,
    ctype: bool,
    timeout: Duration,
    stream_events: Option<usize>,
) -> Result<Observation, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    write_request(&mut s, port, method, target, body, ctype).map_err(|e| format!("write: {e}"))?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let (status, headers) = read_head(&mut r)?;
    let mut obs = Observation {
        status,
        headers,
        ..Default::default()
    };
    let chunked = obs
        .header("transfer-encoding")
        .map(|v| v.eq_ignore_ascii_case("chunked"))
        .unwrap_or(false);
    if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
        // no body
    } else if let Some(n) = stream_events {
        if !chunked {
            return Err("stream watch: response is not chunked".into());
        }
        let raw = read_chunked(&mut r, |b| complete_json_values(b).len() >= n)?;
        let mut ev = complete_json_values(&raw);
        ev.truncate(n);
        obs.events = Some(ev);
        let _ = s.shutdown(Shutdown::Both);
    } else if chunked {
        obs.body = read_chunked(&mut r, |_| false)?;
    } else if let Some(len) = obs
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut b = vec![0; len];
        r.read_exact(&mut b)
            .map_err(|e| format!("reading body: {e}"))?;
        obs.body = b;
    } else {
        r.read_to_end(&mut obs.body)
            .map_err(|e| format!("reading body: {e}"))?;
    }
    Ok(obs)
}

pub fn send(
    port: u16,
    method: &str,
    target: &str,
    body: Option<&str>,
    ctype: bool,
    timeout: Duration,
) -> Result<Observation, String> {
    send_ext(port, method, target, body, ctype, timeout, None)
}

// ---------------------------------------------------------------------------
// Corpus.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// `@base`: this write's modifiedIndex is the target's base index.
    pub base: bool,
    /// `@bg`: run in a background thread, sleep 200 ms, continue; recorded at `JOIN`.
    pub bg: bool,
    /// `@stream=N`: background stream watch, stop after N events.
    pub stream: Option<usize>,
    /// `@repeat=N`: send N times (`${i}` = iteration); record the last (or first non-2xx).
    pub repeat: Option<usize>,
    /// `@save=NAME`: remember node.key / node.modifiedIndex (or error index).
    pub save: Option<String>,
    /// `@names`: compare JSON structure (field names) only.
    pub names: bool,
    /// `@ids`: replace member/leader ids by a marker.
    pub ids: bool,
    /// `@noctype`: send the body without a Content-Type header.
    pub noctype: bool,
}

#[derive(Clone, Debug)]
pub struct Case {
    /// Ordinal among recorded cases (1-based).
    pub no: usize,
    pub line_no: usize,
    pub text: String,
    pub method: String,
    pub target: String,
    pub body: Option<String>,
    pub opts: Opts,
}

#[derive(Clone, Debug)]
pub enum Step {
    Req(Case),
    Sleep(u64),
    Join,
}

/// Corpus syntax, one step per line (`#` starts a comment line):
///   `[@opt ...] METHOD TARGET [BODY]` — BODY is the raw rest of the line,
///   `<empty>` for an empty body with a form Content-Type;
///   `SLEEP ms`; `JOIN` (collect background requests).
/// `${base}`, `${NAME.index}`, `${NAME.key}`, `${...+N}`, `${...-N}` are
/// substituted per target.
pub fn parse_corpus(src: &str) -> Vec<Step> {
    let mut steps = vec![];
    let mut no = 0;
    for (i, raw) in src.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut rest = line;
        let mut opts = Opts::default();
        while rest.starts_with('@') {
            let (tok, r) = rest.split_once(' ').unwrap_or((rest, ""));
            rest = r.trim_start();
            let (k, v) = tok[1..].split_once('=').unwrap_or((&tok[1..], ""));
            match k {
                "base" => opts.base = true,
                "bg" => opts.bg = true,
                "stream" => opts.stream = Some(v.parse().expect("@stream=N")),
                "repeat" => opts.repeat = Some(v.parse().expect("@repeat=N")),
                "save" => opts.save = Some(v.to_string()),
                "names" => opts.names = true,
                "ids" => opts.ids = true,
                "noctype" => opts.noctype = true,
                _ => panic!("cases.txt:{}: unknown option {tok}", i + 1),
            }
        }
        let mut parts = rest.splitn(3, ' ');
        let method = parts.next().unwrap().to_string();
        match method.as_str() {
            "SLEEP" => {
                steps.push(Step::Sleep(
                    parts.next().and_then(|v| v.parse().ok()).expect("SLEEP ms"),
                ));
                continue;
            }
            "JOIN" => {
                steps.push(Step::Join);
                continue;
            }
            _ => {}
        }
        let target = parts
            .next()
            .unwrap_or_else(|| panic!("cases.txt:{}: missing target", i + 1))
            .to_string();
        let body = parts.next().map(|b| {
            if b == "<empty>" {
                String::new()
            } else {
                b.to_string()
            }
        });
        no += 1;
        steps.push(Step::Req(Case {
            no,
            line_no: i + 1,
            text: line.to_string(),
            method,
            target,
            body,
            opts,
        }));
    }
    steps
}

// ---------------------------------------------------------------------------
// Runner.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Run {
    pub label: String,
    pub base: Option<u64>,
    pub client_url: String,
    pub peer_url: String,
    /// Indexed by case number - 1.
    pub results: Vec<Option<Result<Observation, String>>>,
    /// Request target actually sent per case (after substitution).
    pub sent: Vec<String>,
    pub http_requests: usize,
}

#[derive(Default)]
struct Vars {
    base: Option<u64>,
    saved: BTreeMap<String, (Option<String>, Option<u64>)>,
}

impl Vars {
    /// Substitute `${...}`; an unavailable value (e.g. the target failed
    /// the `@base` write or a `@save` case) is an error for this case only.
    fn subst(&self, s: &str, iter: usize) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(p) = rest.find("${") {
            out.push_str(&rest[..p]);
            let end = rest[p..].find('}').ok_or("unterminated ${")? + p;
            let expr = &rest[p + 2..end];
            out.push_str(&self.eval(expr, iter)?);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn eval(&self, expr: &str, iter: usize) -> Result<String, String> {
        let (name, delta) = match expr.find(['+', '-']) {
            Some(p) => (
                &expr[..p],
                expr[p..]
                    .replace('+', "")
                    .parse::<i64>()
                    .map_err(|_| format!("bad ${{{expr}}}"))?,
            ),
            None => (expr, 0),
        };
        let num = |v: Option<u64>| -> Result<String, String> {
            let v = v.ok_or_else(|| format!("${{{expr}}}: value not available on this target"))?;
            Ok((v as i64 + delta).to_string())
        };
        match name {
            "base" => num(self.base),
            "i" => Ok((iter as i64 + delta).to_string()),
            _ => {
                let (var, field) = name.split_once('.').unwrap_or((name, "index"));
                let (key, idx) =
                    self.saved.get(var).cloned().ok_or_else(|| {
                        format!("${{{expr}}}: nothing saved as {var} on this target")
                    })?;
                match field {
                    "key" => key.ok_or_else(|| format!("${{{expr}}}: no key saved on this target")),
                    "index" => num(idx),
                    _ => Err(format!("${{{expr}}}: unknown field")),
                }
            }
        }
    }

    fn save(&mut self, name: &str, obs: &Observation) {
        let j = obs.json().unwrap_or(Value::Null);
        let key = j
            .pointer("/node/key")
            .and_then(Value::as_str)
            .map(str::to_string);
        let idx = j
            .pointer("/node/modifiedIndex")
            .and_then(Value::as_u64)
            .or_else(|| j.get("index").and_then(Value::as_u64))
            .or_else(|| obs.header("x-etcd-index").and_then(|v| v.parse().ok()));
        self.saved.insert(name.to_string(), (key, idx));
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);
const BG_TIMEOUT: Duration = Duration::from_secs(6);
const WATCH_REGISTRATION: Duration = Duration::from_millis(200);

pub fn run_corpus(t: &Target, steps: &[Step]) -> Run {
    let n = steps.iter().filter(|s| matches!(s, Step::Req(_))).count();
    let mut run = Run {
        label: t.label.clone(),
        base: None,
        client_url: t.client_url(),
        peer_url: t.peer_url(),
        results: vec![None; n],
        sent: vec![String::new(); n],
        http_requests: 0,
    };
    let mut vars = Vars::default();
    let mut pending: Vec<(usize, JoinHandle<Result<Observation, String>>)> = vec![];
    let port = t.client_port;
    let join = |pending: &mut Vec<(usize, JoinHandle<Result<Observation, String>>)>,
                run: &mut Run| {
        for (i, h) in pending.drain(..) {
            run.results[i] = Some(
                h.join()
                    .unwrap_or_else(|_| Err("background thread panicked".into())),
            );
        }
    };
    for step in steps {
        match step {
            Step::Sleep(ms) => thread::sleep(Duration::from_millis(*ms)),
            Step::Join => join(&mut pending, &mut run),
            Step::Req(c) => {
                let i = c.no - 1;
                let (target, body) = match (
                    vars.subst(&c.target, 0),
                    c.body.as_ref().map(|b| vars.subst(b, 0)).transpose(),
                ) {
                    (Ok(t), Ok(b)) => (t, b),
                    (Err(e), _) | (_, Err(e)) => {
                        run.sent[i] = c.target.clone();
                        run.results[i] = Some(Err(format!("not sent: {e}")));
                        continue;
                    }
                };
                run.sent[i] = target.clone();
                let ctype = !c.opts.noctype;
                if c.opts.bg || c.opts.stream.is_some() {
                    let (m, st) = (c.method.clone(), c.opts.stream);
                    let tgt = target.clone();
                    let h = thread::spawn(move || {
                        send_ext(port, &m, &tgt, body.as_deref(), ctype, BG_TIMEOUT, st)
                    });
                    pending.push((i, h));
                    run.http_requests += 1;
                    thread::sleep(WATCH_REGISTRATION);
                    continue;
                }
                let res = if let Some(times) = c.opts.repeat {
                    let mut last = Err("repeat=0".to_string());
                    for it in 0..times {
                        let (Ok(tgt), Ok(b)) = (
                            vars.subst(&c.target, it),
                            c.body.as_ref().map(|b| vars.subst(b, it)).transpose(),
                        ) else {
                            last = Err("not sent: substitution failed".into());
                            break;
                        };
                        last = send(port, &c.method, &tgt, b.as_deref(), ctype, TIMEOUT);
                        run.http_requests += 1;
                        match &last {
                            Ok(o) if o.status < 300 => {}
                            _ => break,
                        }
                    }
                    last
                } else {
                    run.http_requests += 1;
                    send(port, &c.method, &target, body.as_deref(), ctype, TIMEOUT)
                };
                if let Ok(o) = &res {
                    if let Some(name) = &c.opts.save {
                        vars.save(name, o);
                    }
                    if c.opts.base {
                        let b = o
                            .json()
                            .and_then(|j| j.pointer("/node/modifiedIndex").and_then(Value::as_u64));
                        vars.base = b;
                        run.base = b;
                    }
                }
                run.results[i] = Some(res);
            }
        }
    }
    join(&mut pending, &mut run);
    run
}

// ---------------------------------------------------------------------------
// Normaliser.
// ---------------------------------------------------------------------------

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn query_has_true(target: &str, body: Option<&str>, name: &str) -> bool {
    let q = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    q.split('&').chain(body.unwrap_or("").split('&')).any(|kv| {
        kv.split_once('=')
            .map(|(k, v)| k == name && parse_bool(v) == Some(true))
            .unwrap_or(false)
    })
}

fn mentions(target: &str, body: Option<&str>, name: &str) -> bool {
    let pat = format!("{name}=");
    target.contains(&pat) || body.map(|b| b.contains(&pat)).unwrap_or(false)
}

struct Ctx<'a> {
    base: u64,
    client_url: &'a str,
    peer_url: &'a str,
    sorted: bool,
    prev_index: bool,
    ids: bool,
}

fn norm_index(n: u64, base: u64) -> Value {
    if n == 0 {
        json!(0)
    } else {
        json!(format!("<B{:+}>", n as i64 - base as i64))
    }
}

fn norm_text(s: &str, cx: &Ctx) -> String {
    s.replace(cx.client_url, "<client-url>")
        .replace(cx.peer_url, "<peer-url>")
}

/// In-order (POST) key names embed the zero-padded 20-digit index.
fn norm_key_path(s: &str, cx: &Ctx) -> String {
    s.split('/')
        .map(|seg| {
            if seg.len() == 20 && seg.bytes().all(|b| b.is_ascii_digit()) {
                norm_index(seg.parse().unwrap(), cx.base)
                    .as_str()
                    .unwrap_or("0")
                    .to_string()
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Normalise index numbers embedded in error causes:
/// 401 `... cleared [OLDEST/REQUESTED]`, 101 `[prevValue != value] [prevIndex != modifiedIndex]`.
fn norm_cause(s: &str, cx: &Ctx) -> String {
    let s = norm_key_path(s, cx);
    let groups: Vec<(usize, usize)> = {
        let mut v = vec![];
        let mut from = 0;
        while let Some(a) = s[from..].find('[') {
            let a = from + a;
            match s[a..].find(']') {
                Some(b) => {
                    v.push((a, a + b));
                    from = a + b + 1;
                }
                None => break,
            }
        }
        v
    };
    let mut out = s.clone();
    for (gi, &(a, b)) in groups.iter().enumerate().rev() {
        let inner = &s[a + 1..b];
        let sep = if inner.contains(" != ") { " != " } else { "/" };
        let parts: Vec<&str> = inner.split(sep).collect();
        let numeric = parts.len() == 2
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()));
        let is_index = numeric && (sep == "/" || (cx.prev_index && gi == groups.len() - 1));
        if is_index {
            let n: Vec<String> = parts
                .iter()
                .map(|p| {
                    let v = norm_index(p.parse().unwrap_or(0), cx.base);
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect();
            out.replace_range(a + 1..b, &n.join(sep));
        }
    }
    out
}

fn looks_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (s.ends_with('Z') || s[19..].contains(['+', '-']))
}

fn norm_json(v: &Value, key: &str, cx: &Ctx) -> Value {
    match v {
        Value::Object(m) => {
            let mut o = Map::new();
            for (k, v) in m {
                o.insert(k.clone(), norm_json(v, k, cx));
            }
            Value::Object(o)
        }
        Value::Array(a) => {
            let mut items: Vec<Value> = a.iter().map(|x| norm_json(x, key, cx)).collect();
            // etcd's v2 store keeps children in a Go map: listing order is
            // random unless sorted=true. Compare unsorted listings as sets.
            if key == "nodes" && !cx.sorted {
                items.sort_by_key(|n| n.get("key").map(|k| k.to_string()).unwrap_or_default());
            }
            Value::Array(items)
        }
        Value::Number(n) if matches!(key, "createdIndex" | "modifiedIndex" | "index") => n
            .as_u64()
            .map(|n| norm_index(n, cx.base))
            .unwrap_or_else(|| v.clone()),
        Value::String(s) => match key {
            "expiration" => json!(if looks_rfc3339(s) {
                "<expiration>".to_string()
            } else {
                format!("<bad-expiration {s:?}>")
            }),
            "key" => json!(norm_key_path(s, cx)),
            "cause" => json!(norm_cause(s, cx)),
            "id" | "leader" if cx.ids => json!("<id>"),
            _ => json!(norm_text(s, cx)),
        },
        _ => v.clone(),
    }
}

/// Reduce JSON to its structure: field names and value types.
fn names_only(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), names_only(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(names_only).collect()),
        Value::String(_) => json!("<string>"),
        Value::Number(_) => json!("<number>"),
        Value::Bool(_) => json!("<bool>"),
        Value::Null => Value::Null,
    }
}

/// Headers compared: exact Content-Type, Location, Allow; X-Etcd-Index as an
/// offset; presence of X-Raft-Index, X-Raft-Term, X-Etcd-Cluster-Id.
fn norm_headers(o: &Observation, cx: &Ctx) -> Value {
    let mut h = Map::new();
    for (k, v) in &o.headers {
        let nv = match k.as_str() {
            "content-type" | "allow" => json!(v),
            "location" => json!(norm_text(v, cx)),
            "x-etcd-index" => v
                .parse::<u64>()
                .map(|n| norm_index(n, cx.base))
                .unwrap_or_else(|_| json!(format!("<unparsable {v:?}>"))),
            "x-raft-index" | "x-raft-term" | "x-etcd-cluster-id" => json!("<present>"),
            _ => continue,
        };
        h.insert(k.clone(), nv);
    }
    Value::Object(h)
}

pub fn normalise(case: &Case, sent: &str, res: &Result<Observation, String>, run: &Run) -> Value {
    let o = match res {
        Ok(o) => o,
        Err(e) => return json!({ "error": e }),
    };
    let body_s = case.body.as_deref();
    let cx = Ctx {
        base: run.base.unwrap_or(0),
        client_url: &run.client_url,
        peer_url: &run.peer_url,
        sorted: query_has_true(sent, body_s, "sorted"),
        prev_index: mentions(sent, body_s, "prevIndex"),
        ids: case.opts.ids,
    };
    let body = if let Some(ev) = &o.events {
        Value::Array(ev.iter().map(|e| norm_json(e, "", &cx)).collect())
    } else if case.method == "HEAD" {
        json!({ "head-body-bytes": o.body.len() })
    } else if let Some(j) = o.json() {
        norm_json(&j, "", &cx)
    } else if o.body.is_empty() {
        Value::Null
    } else {
        json!({ "text": norm_text(&String::from_utf8_lossy(&o.body), &cx) })
    };
    let body = if case.opts.names {
        names_only(&body)
    } else {
        body
    };
    json!({ "status": o.status, "headers": norm_headers(o, &cx), "body": body })
}

// ---------------------------------------------------------------------------
// Differ.
// ---------------------------------------------------------------------------

/// Structural diff; `ttl` numbers within ±1 are equal.
pub fn diff_values(a: &Value, b: &Value, path: &str, key: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => diff_values(va, vb, &p, k, out),
                    (Some(va), None) => out.push(format!("{p}: etcd {va} | berth <absent>")),
                    (None, Some(vb)) => out.push(format!("{p}: etcd <absent> | berth {vb}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff_values(va, vb, &format!("{path}[{i}]"), key, out);
            }
        }
        (Value::Number(x), Value::Number(y)) if key == "ttl" => {
            let (x, y) = (
                x.as_i64().unwrap_or(i64::MIN),
                y.as_i64().unwrap_or(i64::MAX),
            );
            if (x - y).abs() > 1 {
                out.push(format!("{path}: etcd {x} | berth {y} (ttl tolerance ±1)"));
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: etcd {a} | berth {b}")),
    }
}

fn allowed(case: &Case, path: &str) -> Option<&'static str> {
    ALLOWED_DIFFERENCES
        .iter()
        .find(|a| case.text.contains(a.request) && path.starts_with(a.path))
        .map(|a| a.reason)
}

/// `CONFORMANCE_DUMP=FILE`: write every case with both normalised responses
/// (one JSON object per line) for reviewing what the corpus exercises.
pub fn dump(steps: &[Step], etcd: &Run, berth: &Run) {
    let Some(path) = std::env::var_os("CONFORMANCE_DUMP") else {
        return;
    };
    let mut out = String::new();
    for step in steps {
        let Step::Req(c) = step else { continue };
        let i = c.no - 1;
        let missing = Err("no result recorded".to_string());
        let ea = normalise(
            c,
            &etcd.sent[i],
            etcd.results[i].as_ref().unwrap_or(&missing),
            etcd,
        );
        let bb = normalise(
            c,
            &berth.sent[i],
            berth.results[i].as_ref().unwrap_or(&missing),
            berth,
        );
        let line =
            json!({ "no": c.no, "case": c.text, "sent": etcd.sent[i], "etcd": ea, "berth": bb });
        let _ = writeln!(out, "{}", serde_json::to_string(&line).unwrap());
    }
    std::fs::write(&path, out).expect("writing CONFORMANCE_DUMP");
}

pub struct Report {
    pub cases: usize,
    pub failures: usize,
    pub allowed: usize,
    pub text: String,
}

pub fn compare(steps: &[Step], etcd: &Run, berth: &Run) -> Report {
    let mut text = String::new();
    let (mut cases, mut failures, mut allowed_n) = (0, 0, 0);
    for step in steps {
        let Step::Req(c) = step else { continue };
        cases += 1;
        let i = c.no - 1;
        let missing = Err("no result recorded".to_string());
        let ea = normalise(
            c,
            &etcd.sent[i],
            etcd.results[i].as_ref().unwrap_or(&missing),
            etcd,
        );
        let bb = normalise(
            c,
            &berth.sent[i],
            berth.results[i].as_ref().unwrap_or(&missing),
            berth,
        );
        let mut d = vec![];
        diff_values(&ea, &bb, "", "", &mut d);
        let mut real = vec![];
        for line in d {
            let path = line.split(':').next().unwrap_or("");
            match allowed(c, path) {
                Some(_) => allowed_n += 1,
                None => real.push(line),
            }
        }
        if real.is_empty() {
            continue;
        }
        failures += 1;
        let _ = writeln!(text, "\n=== #{} (cases.txt:{}) {}", c.no, c.line_no, c.text);
        let _ = writeln!(
            text,
            "    sent to etcd : {} {}{}",
            c.method,
            etcd.sent[i],
            c.body
                .as_ref()
                .map(|b| format!("  [body: {b}]"))
                .unwrap_or_default()
        );
        let _ = writeln!(text, "    sent to berth: {} {}", c.method, berth.sent[i]);
        for l in &real {
            let _ = writeln!(text, "    - {l}");
        }
        let _ = writeln!(
            text,
            "    etcd  (normalised): {}",
            serde_json::to_string(&ea).unwrap()
        );
        let _ = writeln!(
            text,
            "    berth (normalised): {}",
            serde_json::to_string(&bb).unwrap()
        );
    }
    Report {
        cases,
        failures,
        allowed: allowed_n,
        text,
    }
}

/// Test-only fault injection: `CONFORMANCE_SELFTEST_MUTATE=N` alters the
/// berth-side response of case N (value suffix, or status +1) so the suite
/// can be shown to report and fail on a difference.
pub fn maybe_mutate(run: &mut Run) -> Option<usize> {
    let n: usize = std::env::var("CONFORMANCE_SELFTEST_MUTATE")
        .ok()?
        .parse()
        .ok()?;
    let slot = run
        .results
        .get_mut(n.checked_sub(1)?)?
        .as_mut()?
        .as_mut()
        .ok()?;
    match slot.json() {
        Some(mut j) if j.pointer("/node/value").is_some() => {
            let v = j
                .pointer("/node/value")
                .unwrap()
                .as_str()
                .unwrap_or("")
                .to_string();
            *j.pointer_mut("/node/value").unwrap() = json!(format!("{v}-mutated"));
            slot.body = serde_json::to_vec(&j).unwrap();
        }
        _ => slot.status += 1,
    }
    Some(n)
}
