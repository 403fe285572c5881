//! The UDP listener: a few OS threads blocked in `recvmmsg` on the one socket (a batch of
//! queries per system call under load, one at a time otherwise), answering from a
//! per-thread answer cache, with the rest of the request path ([`crate::packet`]) run
//! on the thread when it needs no waiting and on the tokio runtime when it does (VIP claims
//! in progress, forwarding).
//!
//! **The answer cache.** An answer that [`packet::respond_now`] marks cacheable depends only
//! on the query's bytes after the 2-byte id and on the catalog; so each thread keeps
//! `bytes[2..]` -> answer for the current [`Shared::generation`] and drops all of it when the
//! generation moves (any registry change the catalog sees). A hit costs a hash of the query
//! and a copy of the answer with the id patched in; a registry change is visible to the very
//! next query.
//!
//! Why threads rather than tasks: a query costs a share of two system calls and a hash
//! lookup, less than a trip through the runtime's reactor and scheduler; a blocked
//! `recvmmsg` wakes straight into the thread that answers.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_server::server::Request;
use ipnet::IpNet;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::handler::Handler;
use crate::mmsg::{self, RecvBatch, BATCH};
use crate::packet::{self, Immediate};
use crate::Protocol;
use registry::catalog::Shared;

/// Largest datagram read (bigger ones are cut, then fail to parse: FORMERR).
const MAX_DATAGRAM: usize = 4096;
/// How often a blocked thread looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Cached answers per thread, in bytes of keys and answers, before the cache is emptied.
const CACHE_BYTES: usize = 4 << 20;
/// Queries waiting on the runtime (VIP claims, upstreams) at once; more are dropped, as a
/// busy resolver drops them, and the client retries.
const MAX_WAITING: usize = 1024;

/// Who may query: hickory-server's rule for an allow list without a deny list (empty:
/// everyone).
#[derive(Clone, Debug)]
pub struct Access {
    allow: Vec<IpNet>,
}

impl Access {
    pub fn new(allow: Vec<IpNet>) -> Access {
        Access { allow }
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// Whether an answer can be sent to `src` (not port 0, not an unspecified, broadcast or
/// multicast address), as hickory-server checks.
fn answerable(src: SocketAddr) -> bool {
    if src.port() == 0 {
        return false;
    }
    match src.ip().to_canonical() {
        IpAddr::V4(ip) => !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast()),
        IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_multicast()),
    }
}

/// Answers for one generation of the catalog, keyed by the query minus its id.
struct Cache {
    generation: u64,
    answers: HashMap<Box<[u8]>, Box<[u8]>>,
    bytes: usize,
}

impl Cache {
    fn new() -> Cache {
        Cache {
            generation: u64::MAX,
            answers: HashMap::new(),
            bytes: 0,
        }
    }

    /// Empties the cache if the catalog has moved on from the answers it holds.
    fn at(&mut self, generation: u64) {
        if self.generation != generation {
            self.answers.clear();
            self.bytes = 0;
            self.generation = generation;
        }
    }

    fn get(&self, query: &[u8]) -> Option<&[u8]> {
        self.answers.get(&query[2..]).map(|a| &a[..])
    }

    fn put(&mut self, query: &[u8], answer: &[u8]) {
        let size = query.len() + answer.len();
        if self.bytes + size > CACHE_BYTES {
            self.answers.clear();
            self.bytes = 0;
        }
        self.bytes += size;
        self.answers.insert(query[2..].into(), answer.into());
    }
}

/// What every thread shares.
struct Context {
    socket: UdpSocket,
    handler: Arc<Handler>,
    shared: Arc<Shared>,
    access: Access,
    runtime: Handle,
    waiting: Arc<Semaphore>,
    stop: AtomicBool,
}

/// The running UDP threads.
pub struct UdpServer {
    context: Arc<Context>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpServer {
    /// Starts `threads` threads answering on `socket`. Must be called inside a tokio runtime
    /// (queries that need waiting run there).
    pub fn start(
        socket: tokio::net::UdpSocket,
        handler: Arc<Handler>,
        shared: Arc<Shared>,
        access: Access,
        threads: usize,
    ) -> io::Result<UdpServer> {
        let socket = socket.into_std()?;
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(STOP_POLL))?;
        let context = Arc::new(Context {
            socket,
            handler,
            shared,
            access,
            runtime: Handle::current(),
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
            stop: AtomicBool::new(false),
        });
        let span = tracing::Span::current();
        let threads = (0..threads.max(1))
            .map(|i| {
                let context = context.clone();
                let span = span.clone();
                std::thread::Builder::new()
                    .name(format!("dns-udp-{i}"))
                    .spawn(move || {
                        let _entered =
                            tracing::info_span!(parent: &span, "udp", worker = i).entered();
                        serve(&context)
                    })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(UdpServer { context, threads })
    }

    /// Stops the threads and waits for them (at most about [`STOP_POLL`]); the socket is
    /// closed when this returns.
    pub async fn stop(self) {
        self.context.stop.store(true, Ordering::Release);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

fn serve(cx: &Arc<Context>) {
    let mut batch = RecvBatch::new(MAX_DATAGRAM);
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut dests: Vec<SocketAddr> = Vec::with_capacity(BATCH);
    let mut cache = Cache::new();
    while !cx.stop.load(Ordering::Acquire) {
        let n = match batch.recv(&cx.socket) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // ICMP errors of earlier sends surface here on some systems; keep serving.
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        dests.clear();
        for i in 0..n {
            let (query, src) = batch.get(i);
            let Some(src) = src else { continue };
            if answer(cx, &mut cache, query, src, &mut outs[dests.len()]) {
                dests.push(src);
            }
        }
        let datagrams: Vec<(&[u8], SocketAddr)> = dests
            .iter()
            .enumerate()
            .map(|(i, d)| (&outs[i][..], *d))
            .collect();
        mmsg::send_all(&cx.socket, &datagrams);
    }
}

/// Answers one query into `out`. `false`: nothing to send now (dropped, or answered later
/// from the runtime).
fn answer(
    cx: &Arc<Context>,
    cache: &mut Cache,
    query: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    if !answerable(src) {
        tracing::debug!(%src, "cannot answer this source address");
        return false;
    }
    if !cx.access.allows(src.ip()) {
        tracing::debug!(%src, "query refused: source outside --allow");
        return match packet::refused(query) {
            Some(answer) => {
                *out = answer;
                true
            }
            None => false,
        };
    }
    if query.len() < 12 {
        return false;
    }
    cache.at(cx.shared.generation());
    if let Some(answer) = cache.get(query) {
        out.extend_from_slice(&query[..2]);
        out.extend_from_slice(&answer[2..]);
        return true;
    }
    match packet::respond_now(&cx.handler, query, src, Protocol::Udp) {
        Immediate::Drop => false,
        Immediate::Reply { bytes, cacheable } => {
            if cacheable {
                cache.put(query, &bytes);
            }
            *out = bytes;
            true
        }
        Immediate::Wait(request) => {
            wait(cx, request, src);
            false
        }
    }
}

/// Runs a query that needs waiting on the runtime; the answer goes out on the same socket.
fn wait(cx: &Arc<Context>, request: Box<Request>, src: SocketAddr) {
    let Ok(permit) = cx.waiting.clone().try_acquire_owned() else {
        tracing::debug!(%src, "too many queries waiting; dropped");
        return;
    };
    let cx = cx.clone();
    let runtime = cx.runtime.clone();
    runtime.spawn(async move {
        if let Some(answer) = packet::finish(&cx.handler, &request, Protocol::Udp).await {
            send(&cx.socket, &answer, src);
        }
        drop(permit);
    });
}

fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, to) {
        tracing::debug!(%to, error = %e, "UDP send failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_follows_hickorys_allow_rule() {
        let open = Access::new(Vec::new());
        assert!(open.allows("192.0.2.1".parse().unwrap()));
        let only = Access::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(only.allows("10.1.2.3".parse().unwrap()));
        assert!(only.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(only.allows("::1".parse().unwrap()));
        assert!(!only.allows("192.0.2.1".parse().unwrap()));
        assert!(!only.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn unanswerable_sources() {
        assert!(answerable("127.0.0.1:5353".parse().unwrap()));
        assert!(!answerable("127.0.0.1:0".parse().unwrap()));
        assert!(!answerable("0.0.0.0:53".parse().unwrap()));
        assert!(!answerable("255.255.255.255:53".parse().unwrap()));
        assert!(!answerable("[::]:53".parse().unwrap()));
    }

    #[test]
    fn cache_keys_ignore_the_id_and_empty_on_a_new_generation() {
        let mut c = Cache::new();
        c.at(1);
        c.put(&[0, 1, 9, 9, 9], &[0, 1, 7]);
        assert_eq!(c.get(&[5, 5, 9, 9, 9]), Some(&[0, 1, 7][..]));
        assert_eq!(c.get(&[5, 5, 9, 9, 8]), None);
        c.at(1);
        assert!(c.get(&[0, 0, 9, 9, 9]).is_some());
        c.at(2);
        assert_eq!(c.get(&[0, 1, 9, 9, 9]), None);
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn cache_is_bounded() {
        let mut c = Cache::new();
        c.at(0);
        let answer = vec![0u8; 1000];
        for i in 0..(2 * CACHE_BYTES / 1000) as u32 {
            let q = [0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            c.put(&q, &answer);
            assert!(c.bytes <= CACHE_BYTES);
        }
    }
}
