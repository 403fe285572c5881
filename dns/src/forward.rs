//! Forwards queries outside the zone to upstream resolvers, over the protocol the client
//! used (UDP or TCP), trying the next upstream on SERVFAIL, a network error or a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::proto::op::{Message, MessageType, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::error::ForwardError;

/// Upstream resolvers tried in order.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder { upstreams, timeout }
    }

    /// Sends the client's query (`raw`, as received) to the upstreams in turn and returns the
    /// first answer that is not SERVFAIL (or the last SERVFAIL when every upstream gave one).
    pub async fn forward(&self, raw: &[u8], tcp: bool) -> Result<Message, ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstream);
        }
        if raw.len() < 12 {
            return Err(ForwardError::AllFailed(
                "query shorter than a header".into(),
            ));
        }
        let request = Message::from_vec(raw)
            .map_err(|e| ForwardError::AllFailed(format!("query does not parse: {e}")))?;
        let mut errors = Vec::new();
        let mut last_servfail = None;
        for upstream in &self.upstreams {
            let id: u16 = rand::random();
            let mut query = raw.to_vec();
            query[..2].copy_from_slice(&id.to_be_bytes());
            let res = tokio::time::timeout(self.timeout, async {
                if tcp {
                    exchange_tcp(*upstream, &query).await
                } else {
                    exchange_udp(*upstream, &query, id).await
                }
            })
            .await;
            let bytes = match res {
                Err(_) => {
                    errors.push(format!("{upstream}: no answer within {:?}", self.timeout));
                    continue;
                }
                Ok(Err(e)) => {
                    errors.push(format!("{upstream}: {e}"));
                    continue;
                }
                Ok(Ok(b)) => b,
            };
            let answer = match Message::from_vec(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    errors.push(format!("{upstream}: unparsable answer: {e}"));
                    continue;
                }
            };
            if answer.metadata.id != id
                || answer.metadata.message_type != MessageType::Response
                || answer.queries != request.queries
            {
                errors.push(format!("{upstream}: answer does not match the query"));
                continue;
            }
            if answer.metadata.response_code == ResponseCode::ServFail {
                errors.push(format!("{upstream}: SERVFAIL"));
                last_servfail = Some(answer);
                continue;
            }
            return Ok(answer);
        }
        if let Some(m) = last_servfail {
            return Ok(m);
        }
        Err(ForwardError::AllFailed(errors.join("; ")))
    }
}

async fn exchange_udp(upstream: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(upstream).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Ignore stray datagrams that do not carry our id.
        if n >= 12 && buf[..2] == id.to_be_bytes() {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(upstream).await?;
    s.set_nodelay(true)?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&(query.len() as u16).to_be_bytes());
    out.extend_from_slice(query);
    s.write_all(&out).await?;
    let len = s.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}
