//! `berth-echo`: a small HTTP/1.1 and WebSocket echo server, the instance behind the proxy in
//! berth's tests and benchmarks.
//!
//! - `GET /...` answers `<name>\n` with `X-Backend: <name>`;
//! - `/headers` answers the request's headers, one `name: value` per line;
//! - `/slow?ms=N` waits N ms first; `/status/N` answers status N;
//! - `/health` answers `--health-status` (default 200);
//! - a POST answers `<name> <bytes received>\n`;
//! - `/ws` with `Upgrade: websocket` completes the handshake and echoes every frame.
//!
//! Prints `listening on ADDR` once bound (`--listen 127.0.0.1:0` picks a port).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
fn ws_accept(key: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(WS_GUID.as_bytes());
    base64(&h.digest().bytes())
}

async fn echo_frames(io: hyper::upgrade::Upgraded) -> std::io::Result<()> {
    let mut io = TokioIo::new(io);
    loop {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await?;
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let mut len = (head[1] & 0x7f) as u64;
        if len == 126 {
            len = io.read_u16().await? as u64;
        } else if len == 127 {
            len = io.read_u64().await?;
        }
        if len > 16 << 20 {
            return Ok(());
        }
        let mut mask = [0u8; 4];
        if masked {
            io.read_exact(&mut mask).await?;
        }
        let mut payload = vec![0u8; len as usize];
        io.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        let mut out = vec![0x80 | opcode];
        if len < 126 {
            out.push(len as u8);
        } else if len <= u16::MAX as u64 {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&len.to_be_bytes());
        }
        out.extend_from_slice(&payload);
        io.write_all(&out).await?;
        if opcode == 8 {
            return Ok(());
        }
    }
}

fn text(status: StatusCode, name: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "x-backend",
        name.parse()
            .unwrap_or(hyper::header::HeaderValue::from_static("?")),
    );
    r
}

async fn handle(name: String, health: u16, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        let code = StatusCode::from_u16(health).unwrap_or(StatusCode::OK);
        return text(code, &name, format!("{name} health {health}\n"));
    }
    if path == "/ws" {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .and_then(|k| k.to_str().ok())
            .map(str::to_string);
        let Some(key) = key else {
            return text(
                StatusCode::BAD_REQUEST,
                &name,
                "missing Sec-WebSocket-Key\n".into(),
            );
        };
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(io) = on.await {
                let _ = echo_frames(io).await;
            }
        });
        let mut r = text(StatusCode::SWITCHING_PROTOCOLS, &name, String::new());
        r.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        r.headers_mut()
            .insert("connection", "Upgrade".parse().unwrap());
        r.headers_mut()
            .insert("sec-websocket-accept", ws_accept(&key).parse().unwrap());
        return r;
    }
    if path == "/headers" {
        let mut s = String::new();
        for (k, v) in req.headers() {
            s.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        return text(StatusCode::OK, &name, s);
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code = code
            .parse()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        return text(code, &name, format!("{name} {}\n", code.as_u16()));
    }
    if path == "/slow" {
        let ms: u64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if req.method() == hyper::Method::POST || req.method() == hyper::Method::PUT {
        let n = match req.into_body().collect().await {
            Ok(b) => b.to_bytes().len(),
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    &name,
                    "body could not be read\n".into(),
                )
            }
        };
        return text(StatusCode::OK, &name, format!("{name} {n}\n"));
    }
    text(StatusCode::OK, &name, format!("{name}\n"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut name = "echo".to_string();
    let mut listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut health: u16 = 200;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => name = args.next().expect("--name NAME"),
            "--health-status" => {
                health = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--health-status CODE")
            }
            "--listen" => {
                listen = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--listen ADDR:PORT")
            }
            _ => {
                eprintln!(
                    "usage: berth-echo [--name NAME] [--listen ADDR:PORT] [--health-status CODE]"
                );
                std::process::exit(2);
            }
        }
    }
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("berth-echo: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", listener.local_addr().unwrap());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let name = name.clone();
                async move { Ok::<_, Infallible>(handle(name, health, req).await) }
            });
            // Half-close support: a client (busybox nc, or an L4 proxy passing its client's
            // shutdown on) may end its write side right after the request and still wait for
            // the answer. Without it hyper often closed such a connection unanswered when an
            // L4 VIP listener passed the request and the half-close on together.
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().half_close(true);
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn websocket_accept_matches_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            super::ws_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(super::base64(b"ab"), "YWI=");
    }
}
