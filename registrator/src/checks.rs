//! Health checks of the announcer: `tcp://host:port` (a connection is accepted) and
//! `http://host:port/path` (an HTTP/1.1 GET answers 2xx or 3xx).

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed `--check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Tcp {
        addr: String,
    },
    Http {
        addr: String,
        host: String,
        path: String,
    },
}

impl Check {
    /// Parses `tcp://host:port` or `http://host[:port][/path]`.
    pub fn parse(s: &str) -> Result<Check, String> {
        let bad = |why: &str| {
            format!(
                "invalid --check {s:?}: {why} (expected tcp://HOST:PORT or http://HOST:PORT/PATH)"
            )
        };
        let u = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        let host = u.host_str().ok_or_else(|| bad("no host"))?.to_string();
        let host_in_addr = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        match u.scheme() {
            "tcp" => {
                let port = u.port().ok_or_else(|| bad("tcp checks need a port"))?;
                Ok(Check::Tcp {
                    addr: format!("{host_in_addr}:{port}"),
                })
            }
            "http" => {
                let port = u.port().unwrap_or(80);
                let mut path = u.path().to_string();
                if let Some(q) = u.query() {
                    path.push('?');
                    path.push_str(q);
                }
                Ok(Check::Http {
                    addr: format!("{host_in_addr}:{port}"),
                    host: if port == 80 {
                        host_in_addr
                    } else {
                        format!("{host_in_addr}:{port}")
                    },
                    path: if path.is_empty() { "/".into() } else { path },
                })
            }
            other => Err(bad(&format!("unsupported scheme {other:?}"))),
        }
    }

    /// Runs the check once; Err says why it failed.
    pub async fn run(&self, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.run_inner()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    }

    async fn run_inner(&self) -> Result<(), String> {
        match self {
            Check::Tcp { addr } => TcpStream::connect(addr.as_str())
                .await
                .map(|_| ())
                .map_err(|e| format!("connect {addr}: {e}")),
            Check::Http { addr, host, path } => {
                let mut s = TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| format!("connect {addr}: {e}"))?;
                let req = format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: berth-announce\r\nConnection: close\r\n\r\n"
                );
                s.write_all(req.as_bytes())
                    .await
                    .map_err(|e| format!("send to {addr}: {e}"))?;
                let mut buf = Vec::with_capacity(256);
                let mut chunk = [0u8; 256];
                while !buf.contains(&b'\n') && buf.len() < 4096 {
                    let n = s
                        .read(&mut chunk)
                        .await
                        .map_err(|e| format!("read from {addr}: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let status =
                    parse_status_line(&buf).ok_or_else(|| format!("{addr} did not answer HTTP"))?;
                if (200..400).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("GET {path} answered {status}"))
                }
            }
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Tcp { addr } => write!(f, "tcp://{addr}"),
            Check::Http { addr, path, .. } => write!(f, "http://{addr}{path}"),
        }
    }
}

/// The status code of `HTTP/1.x NNN ...`.
pub fn parse_status_line(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_checks() {
        assert_eq!(
            Check::parse("tcp://127.0.0.1:80").unwrap(),
            Check::Tcp {
                addr: "127.0.0.1:80".into()
            }
        );
        assert_eq!(
            Check::parse("http://localhost:8080/health?x=1").unwrap(),
            Check::Http {
                addr: "localhost:8080".into(),
                host: "localhost:8080".into(),
                path: "/health?x=1".into()
            }
        );
        assert!(Check::parse("tcp://h").unwrap_err().contains("port"));
        assert!(Check::parse("ftp://h:1").unwrap_err().contains("scheme"));
        assert!(Check::parse("nonsense").is_err());
        assert_eq!(parse_status_line(b"HTTP/1.0 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"SSH-2.0\r\n"), None);
    }

    #[tokio::test]
    async fn runs_checks_against_a_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let t = Duration::from_secs(2);
        assert!(Check::parse(&format!("tcp://{addr}"))
            .unwrap()
            .run(t)
            .await
            .is_ok());
        assert!(Check::parse(&format!("http://{addr}/"))
            .unwrap()
            .run(t)
            .await
            .is_ok());
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        assert!(Check::parse(&format!("tcp://{dead}"))
            .unwrap()
            .run(t)
            .await
            .is_err());
    }
}
