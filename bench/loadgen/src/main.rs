//! berth-loadgen: drives the etcd v2 HTTP API (berth's registry or etcd 3.4 with
//! `--enable-v2`) with N concurrent keep-alive connections and prints one JSON object.
//!
//! Modes:
//! - `put`:   PUT /v2/keys/bench/<worker>-<n> value=<64 bytes>
//! - `get`:   pre-write `--keys` keys, then local GETs of random keys
//! - `qget`:  same, with `?quorum=true`
//! - `watch`: open `--watchers` long-poll watchers (`?wait=true`) on one member, each on its
//!   own connection, then issue one write and time how long each watcher takes to answer (as read
//!   here, and as the answer reached this machine's socket: a kernel receive timestamp)
//! - `fill`:  write `--requests` keys (for the RSS measurement)
//!
//! One connection per worker; workers are spread round-robin over the member client URLs
//! (`--endpoints`), unless `--endpoint` or `--to-leader` picks a single one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Put,
    Get,
    Qget,
    Watch,
    Fill,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Load generator for the etcd v2 HTTP API")]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// All members' client URLs, comma separated (http://127.0.0.1:2379,...).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Send everything to this one client URL instead of round-robin.
    #[arg(long)]
    endpoint: Option<String>,
    /// Send everything to the current leader (found with GET /v2/members/leader).
    #[arg(long)]
    to_leader: bool,
    /// Concurrent connections (one worker each).
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Fixed total request count instead of a duration (no warm-up).
    #[arg(long)]
    requests: Option<u64>,
    /// Size of the key set pre-written for `get`/`qget`.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Number of watchers for `watch`.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// Concurrent connection attempts while opening watchers.
    #[arg(long, default_value_t = 200)]
    connect_parallelism: usize,
    /// "answered within" threshold for `watch`, milliseconds.
    #[arg(long, default_value_t = 100)]
    watch_deadline_ms: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Key prefix under /v2/keys.
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Free-form label copied into the JSON output.
    #[arg(long, default_value = "")]
    label: String,
}

fn authority(url: &str) -> String {
    let s = url.trim();
    let s = s.strip_prefix("http://").unwrap_or(s);
    s.trim_end_matches('/').to_string()
}

struct Conn {
    addr: String,
    sender: SendRequest<Full<Bytes>>,
}

struct Reply {
    status: StatusCode,
    etcd_index: Option<u64>,
    body: Bytes,
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            addr: addr.to_string(),
            sender,
        })
    }

    fn build(&self, method: Method, path: &str, body: Option<Bytes>) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.addr);
        if body.is_some() {
            b = b.header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
        }
        b.body(Full::new(body.unwrap_or_default()))
            .expect("valid request")
    }

    async fn call(&mut self, method: Method, path: &str, body: Option<Bytes>) -> Result<Reply> {
        self.sender.ready().await?;
        let req = self.build(method, path, body);
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let etcd_index = resp
            .headers()
            .get("x-etcd-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            etcd_index,
            body,
        })
    }

    /// Like `call`, but reconnects once if the connection was closed under us.
    async fn call_retry_conn(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Reply> {
        if self.sender.is_closed() {
            *self = Conn::open(&self.addr).await?;
        }
        self.call(method, path, body).await
    }
}

fn new_hist() -> Histogram<u64> {
    // microseconds, 1 us .. 120 s, 3 significant digits
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

fn ms(us: u64) -> f64 {
    (us as f64) / 1000.0
}

fn lat_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!(null);
    }
    json!({
        "min": ms(h.min()),
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
        "mean": h.mean() / 1000.0,
    })
}

#[derive(Default)]
struct WorkerOut {
    ok: u64,
    errors: u64,
}

struct Errors {
    count: AtomicU64,
    samples: std::sync::Mutex<Vec<String>>,
}

impl Errors {
    fn new() -> Arc<Self> {
        Arc::new(Errors {
            count: AtomicU64::new(0),
            samples: std::sync::Mutex::new(Vec::new()),
        })
    }
    fn add(&self, msg: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut s = self.samples.lock().unwrap();
        if s.len() < 8 {
            s.push(msg);
        }
    }
}

fn value_body(size: usize) -> Bytes {
    let v: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    Bytes::from(format!("value={v}"))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn ok_status(mode: Mode, s: StatusCode) -> bool {
    match mode {
        Mode::Put | Mode::Fill => s == StatusCode::OK || s == StatusCode::CREATED,
        _ => s == StatusCode::OK,
    }
}

async fn find_leader(endpoints: &[String]) -> Result<String> {
    let mut last = anyhow!("no endpoints");
    for ep in endpoints {
        let r = async {
            let mut c = Conn::open(&authority(ep)).await?;
            let r = c.call(Method::GET, "/v2/members/leader", None).await?;
            if r.status != StatusCode::OK {
                bail!("GET /v2/members/leader on {ep}: {}", r.status);
            }
            let v: Value = serde_json::from_slice(&r.body)?;
            let url = v["clientURLs"][0]
                .as_str()
                .ok_or_else(|| anyhow!("no clientURLs in {v}"))?;
            Ok(url.to_string())
        }
        .await;
        match r {
            Ok(u) => return Ok(u),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Runs `conns` workers. With `total` set, they share that many requests (no warm-up);
/// otherwise they run for warm-up + duration and only the measured window is recorded.
async fn run_load(
    args: &Args,
    targets: &[String],
    mode: Mode,
    total: Option<u64>,
    key_base: &str,
) -> Result<Value> {
    let conns = args.conns.max(1);
    let value = value_body(args.value_size);
    let errors = Errors::new();

    // Open every connection first, so connection setup is not measured.
    let mut opened = Vec::with_capacity(conns);
    for w in 0..conns {
        let addr = authority(&targets[w % targets.len()]);
        opened.push(Conn::open(&addr).await?);
    }

    let next_req = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_start = if total.is_some() {
        start
    } else {
        start + Duration::from_secs_f64(args.warmup)
    };
    let end = measure_start + Duration::from_secs_f64(args.duration);

    let mut handles = Vec::with_capacity(conns);
    for (w, mut conn) in opened.into_iter().enumerate() {
        let value = value.clone();
        let errors = errors.clone();
        let next_req = next_req.clone();
        let key_base = key_base.to_string();
        let nkeys = args.keys.max(1);
        handles.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let mut out = WorkerOut::default();
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((w as u64 + 1) * 0x1000_0001));
            let mut n: u64 = 0;
            loop {
                let (method, path, body) = match total {
                    Some(t) => {
                        let i = next_req.fetch_add(1, Ordering::Relaxed);
                        if i >= t {
                            break;
                        }
                        match mode {
                            Mode::Fill => (
                                Method::PUT,
                                format!("/v2/keys/{key_base}/{i}"),
                                Some(value.clone()),
                            ),
                            _ => (
                                Method::PUT,
                                format!("/v2/keys/{key_base}/{w}-{i}"),
                                Some(value.clone()),
                            ),
                        }
                    }
                    None => match mode {
                        Mode::Put | Mode::Fill => (
                            Method::PUT,
                            format!("/v2/keys/{key_base}/{w}-{n}"),
                            Some(value.clone()),
                        ),
                        Mode::Get => (
                            Method::GET,
                            format!("/v2/keys/{key_base}/{}", rng.next() % nkeys),
                            None,
                        ),
                        Mode::Qget => (
                            Method::GET,
                            format!("/v2/keys/{key_base}/{}?quorum=true", rng.next() % nkeys),
                            None,
                        ),
                        Mode::Watch => unreachable!(),
                    },
                };
                let t0 = Instant::now();
                if total.is_none() && t0 >= end {
                    break;
                }
                n += 1;
                let r = conn.call_retry_conn(method, &path, body).await;
                let t1 = Instant::now();
                let measured = t0 >= measure_start && (total.is_some() || t1 <= end);
                let good = match &r {
                    Ok(rep) if ok_status(mode, rep.status) => true,
                    Ok(rep) => {
                        if measured {
                            let b = String::from_utf8_lossy(&rep.body);
                            errors.add(format!("{} {path}: {}", rep.status, b.trim()));
                        }
                        false
                    }
                    Err(e) => {
                        if measured {
                            errors.add(format!("{path}: {e:#}"));
                        }
                        false
                    }
                };
                if measured {
                    if good {
                        out.ok += 1;
                        let us = (t1 - t0).as_micros() as u64;
                        hist.saturating_record(us.max(1));
                    } else {
                        out.errors += 1;
                    }
                }
                if r.is_err() {
                    // Back off briefly, then reconnect on the next iteration.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if let Ok(c) = Conn::open(&conn.addr).await {
                        conn = c;
                    }
                }
            }
            (hist, out)
        }));
    }

    let mut hist = new_hist();
    let mut ok = 0;
    let mut errs = 0;
    for h in handles {
        let (wh, out) = h.await?;
        hist.add(&wh).ok();
        ok += out.ok;
        errs += out.errors;
    }
    let elapsed = if total.is_some() {
        start.elapsed().as_secs_f64()
    } else {
        args.duration
    };
    let samples = errors.samples.lock().unwrap().clone();
    Ok(json!({
        "requests": ok,
        "errors": errs,
        "elapsed_s": elapsed,
        "rps": (ok as f64) / elapsed,
        "latency_ms": lat_json(&hist),
        "error_samples": samples,
    }))
}

/// Asks the kernel to stamp every segment this socket receives with its arrival time
/// (`SO_TIMESTAMPNS`, CLOCK_REALTIME), returned by `recvmsg` as a control message.
fn enable_rx_timestamps(stream: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One `recvmsg` into `buf`: the bytes read and, if the socket has [`enable_rx_timestamps`],
/// when the kernel received the last segment read (nanoseconds since the Unix epoch).
fn recv_with_timestamp(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<i128>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: fd is an open socket; msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG_* walk stays within msg_controllen bytes of `control`, which the
    // kernel filled; the timestamp is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let t: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}

/// Now, in nanoseconds since the Unix epoch (the clock of kernel receive timestamps).
fn realtime_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// One long-poll watcher on a plain socket: the request is written by hand and the answer
/// read with one `recvmsg` per arrival, so the client adds as little as possible to the time
/// measured (a hyper client connection costs several task wake-ups per answer). The kernel
/// stamps each arrival, so the answer's time is known even when this process, which shares
/// the machine with the server, gets to read it later.
struct RawWatcher {
    stream: TcpStream,
    buf: Vec<u8>,
    status: u16,
    /// Where the body starts in `buf`, once the head is in.
    body_at: usize,
    content_length: Option<usize>,
    /// Kernel receive time of the last segment read (ns since the epoch).
    arrived_ns: Option<i128>,
}

impl RawWatcher {
    async fn open(addr: &str, path: &str) -> Result<RawWatcher> {
        use tokio::io::AsyncWriteExt;
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        enable_rx_timestamps(&stream).context("SO_TIMESTAMPNS")?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        Ok(RawWatcher {
            stream,
            buf: Vec::with_capacity(1024),
            status: 0,
            body_at: 0,
            content_length: None,
            arrived_ns: None,
        })
    }

    async fn fill(&mut self) -> Result<()> {
        use std::os::fd::AsRawFd;
        let mut chunk = [0u8; 4096];
        let fd = self.stream.as_raw_fd();
        let (n, stamp) = loop {
            self.stream.readable().await?;
            match self.stream.try_io(tokio::io::Interest::READABLE, || {
                recv_with_timestamp(fd, &mut chunk)
            }) {
                Ok(r) => break r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            bail!("connection closed after {} bytes", self.buf.len());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        // The last read's stamp only: an earlier one (the head's) would pass for the body's.
        self.arrived_ns = stamp;
        Ok(())
    }

    /// Reads the status line and headers.
    async fn read_head(&mut self) -> Result<()> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                self.status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
                self.content_length = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                });
                self.body_at = end + 4;
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Reads the body to its end (Content-Length or chunked) and returns it (chunk framing
    /// left in: only its presence matters here).
    async fn read_body(&mut self) -> Result<Vec<u8>> {
        loop {
            let body = &self.buf[self.body_at..];
            let complete = match self.content_length {
                Some(n) => body.len() >= n,
                None => body.ends_with(b"0\r\n\r\n"),
            };
            if complete {
                return Ok(body.to_vec());
            }
            self.fill().await?;
        }
    }
}

async fn run_watch(args: &Args, target: &str) -> Result<Value> {
    let addr = authority(target);
    let key_path = format!("/v2/keys/{}/watchkey", args.prefix);
    let value = value_body(args.value_size);

    // Create the key and learn the current index; watchers wait for index+1, so a watcher
    // whose registration lands after the write still answers (from the event history).
    let mut writer = Conn::open(&addr).await?;
    let r = writer
        .call(Method::PUT, &key_path, Some(value.clone()))
        .await?;
    if !r.status.is_success() {
        bail!("initial PUT {key_path}: {} {:?}", r.status, r.body);
    }
    let idx = r
        .etcd_index
        .ok_or_else(|| anyhow!("no X-Etcd-Index on PUT reply"))?;
    let wait_path = format!("{key_path}?wait=true&waitIndex={}", idx + 1);

    let n = args.watchers;
    let sem = Arc::new(Semaphore::new(args.connect_parallelism.max(1)));
    let registered = Arc::new(AtomicUsize::new(0));
    let errors = Errors::new();
    // Each answered watcher hands its connection back, so no connection is closed while the
    // fan-out is measured (closing 10,000 sockets would load both sides).
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(Instant, bool, Option<RawWatcher>)>();
    let setup_start = Instant::now();
    for _ in 0..n {
        let sem = sem.clone();
        let registered = registered.clone();
        let errors = errors.clone();
        let done_tx = done_tx.clone();
        let addr = addr.clone();
        let wait_path = wait_path.clone();
        tokio::spawn(async move {
            let r: Result<()> = async {
                let mut w = {
                    let _permit = sem.acquire().await?;
                    RawWatcher::open(&addr, &wait_path).await?
                };
                w.read_head().await?;
                // Both etcd and berth send the headers as soon as the watcher is registered.
                registered.fetch_add(1, Ordering::Relaxed);
                let body = w.read_body().await?;
                let t = Instant::now();
                let good = w.status == 200 && !body.is_empty();
                if !good {
                    errors.add(format!(
                        "watcher: {} {}",
                        w.status,
                        String::from_utf8_lossy(&body).trim()
                    ));
                }
                let _ = done_tx.send((t, good, Some(w)));
                Ok(())
            }
            .await;
            if let Err(e) = r {
                errors.add(format!("watcher: {e:#}"));
                let _ = done_tx.send((Instant::now(), false, None));
            }
        });
    }
    drop(done_tx);

    // Wait until every watcher is registered (or has failed), at most 120 s.
    let setup_deadline = setup_start + Duration::from_secs(120);
    loop {
        let reg = registered.load(Ordering::Relaxed);
        let failed = errors.count.load(Ordering::Relaxed) as usize;
        if reg + failed >= n || Instant::now() > setup_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup_s = setup_start.elapsed().as_secs_f64();
    let reg_before = registered.load(Ordering::Relaxed);
    let failed_before = errors.count.load(Ordering::Relaxed);
    // Let the server settle (accept queues drained, watcher tasks parked).
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let t0 = Instant::now();
    let t0_ns = realtime_ns();
    let write_at = t0_ns as f64 / 1e9;
    let w = writer
        .call(Method::PUT, &key_path, Some(value.clone()))
        .await;
    let write_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let write_status = match &w {
        Ok(r) => r.status.as_u16().to_string(),
        Err(e) => format!("error: {e:#}"),
    };

    // Two clocks per answer: when this process read it, and when it reached this machine's
    // socket (kernel timestamp). The first adds this process's own queueing: it reads 10,000
    // sockets on one thread of a machine whose cores the server is using too.
    let mut hist = new_hist();
    let mut arrival_hist = new_hist();
    let mut answered = 0usize;
    let mut within = 0usize;
    let mut arrived_within = 0usize;
    let mut unstamped = 0usize;
    let mut bad = 0usize;
    let mut keep = Vec::with_capacity(n);
    let deadline = t0 + Duration::from_secs(30);
    let limit = Duration::from_millis(args.watch_deadline_ms);
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match tokio::time::timeout(deadline - now, done_rx.recv()).await {
            Ok(Some((t, good, conn))) => {
                let arrived_ns = conn.as_ref().and_then(|w| w.arrived_ns);
                keep.extend(conn);
                if !good {
                    bad += 1;
                    continue;
                }
                let d = t.saturating_duration_since(t0);
                answered += 1;
                if d <= limit {
                    within += 1;
                }
                hist.saturating_record((d.as_micros() as u64).max(1));
                match arrived_ns {
                    Some(a) => {
                        let us = ((a - t0_ns).max(0) / 1000) as u64;
                        if us <= limit.as_micros() as u64 {
                            arrived_within += 1;
                        }
                        arrival_hist.saturating_record(us.max(1));
                    }
                    None => unstamped += 1,
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    drop(keep);
    let samples = errors.samples.lock().unwrap().clone();
    Ok(json!({
        "watchers": n,
        "registered_before_write": reg_before,
        "failed_before_write": failed_before,
        "setup_s": setup_s,
        "write_status": write_status,
        "write_ms": write_ms,
        "write_at_unix_s": write_at,
        "answered": answered,
        "answered_within_deadline": within,
        "arrived_within_deadline": arrived_within,
        "arrival_latency_ms": lat_json(&arrival_hist),
        "answers_without_timestamp": unstamped,
        "deadline_ms": args.watch_deadline_ms,
        "failed": bad,
        "errors": errors.count.load(Ordering::Relaxed),
        "latency_ms": lat_json(&hist),
        "error_samples": samples,
    }))
}

async fn prewrite(args: &Args, targets: &[String], key_base: &str) -> Result<Value> {
    let mut a = args.clone();
    a.conns = 16;
    run_load(&a, targets, Mode::Fill, Some(args.keys), key_base).await
}

async fn real_main(args: Args) -> Result<Value> {
    let mut targets: Vec<String> = args.endpoints.clone();
    let mut target_desc = "round-robin".to_string();
    if let Some(ep) = &args.endpoint {
        targets = vec![ep.clone()];
        target_desc = format!("endpoint {ep}");
    } else if args.to_leader {
        let l = find_leader(&args.endpoints).await?;
        target_desc = format!("leader {l}");
        targets = vec![l];
    }
    let started = Instant::now();
    let result = match args.mode {
        Mode::Put => {
            let base = format!("{}/put", args.prefix);
            run_load(&args, &targets, Mode::Put, args.requests, &base).await?
        }
        Mode::Fill => {
            let total = args.requests.unwrap_or(args.keys);
            let base = format!("{}/fill", args.prefix);
            run_load(&args, &targets, Mode::Fill, Some(total), &base).await?
        }
        Mode::Get | Mode::Qget => {
            let base = format!("{}/get", args.prefix);
            let pre = prewrite(&args, &args.endpoints, &base).await?;
            if pre["errors"].as_u64().unwrap_or(0) > 0 {
                eprintln!("warning: pre-write errors: {pre}");
            }
            run_load(&args, &targets, args.mode, args.requests, &base).await?
        }
        Mode::Watch => {
            let t = args.endpoint.clone().unwrap_or_else(|| targets[0].clone());
            target_desc = format!("endpoint {t}");
            run_watch(&args, &t).await?
        }
    };
    let mut out = json!({
        "label": args.label,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "target": target_desc,
        "conns": args.conns,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "value_size": args.value_size,
        "wall_s": started.elapsed().as_secs_f64(),
    });
    if let (Value::Object(o), Value::Object(r)) = (&mut out, result) {
        for (k, v) in r {
            o.insert(k, v);
        }
    }
    Ok(out)
}

/// CPU seconds (user, system) this process has used, all threads, from /proc/self/stat.
fn self_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that closes the command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    (get(11), get(12))
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Watch mode measures the server's fan-out on a machine the client shares: one thread
    // that reads each answer where it lands costs the least CPU (a multi-threaded runtime
    // spent a quarter of its time waking its own workers).
    let rt = if args.mode == Mode::Watch {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    let mut v = rt.block_on(real_main(args))?;
    let (user, sys) = self_cpu();
    v["loadgen_cpu_s"] = json!({"user": user, "sys": sys});
    println!("{}", serde_json::to_string(&v)?);
    // Don't wait for lingering watcher/connection tasks.
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}
