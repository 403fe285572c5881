//! The request path from raw bytes to raw answer, as the UDP server runs it (header check,
//! parse, FORMERR for what does not parse, responses dropped, the handler, encoding with the
//! UDP size limit), without sockets: [`respond_now`] for what needs no waiting (everything
//! but VIP claims in progress and forwarding), [`respond`] for the rest. The fuzz target and
//! the malformed-packet tests run the same functions.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{Header, MessageType, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};

use crate::handler::{build_response, response_edns, Handler, Plan};

/// What the request path does with a packet without waiting for anything.
pub enum Immediate {
    /// Dropped: shorter than a header, or a response.
    Drop,
    /// Answered. `cacheable`: the same bytes (whatever their id) get the same answer until
    /// the catalog's generation moves (see [`registry::catalog::Shared::generation`]).
    Reply { bytes: Vec<u8>, cacheable: bool },
    /// The answer needs waiting (a VIP being claimed, an upstream): pass the parsed request
    /// to [`finish`].
    Wait(Box<Request>),
}

/// Runs one packet through the request path as far as it goes without waiting.
pub fn respond_now(
    handler: &Handler,
    bytes: &[u8],
    src: SocketAddr,
    protocol: Protocol,
) -> Immediate {
    let Ok(header) = Header::read(&mut BinDecoder::new(bytes)) else {
        return Immediate::Drop;
    };
    let request = match Request::from_bytes(bytes.to_vec(), src, protocol) {
        Ok(r) => r,
        Err(_) => {
            // As hickory-server does: FORMERR for whatever has a header but does not parse.
            return match error_reply(&header, no_queries(), ResponseCode::FormErr) {
                Some(bytes) => Immediate::Reply {
                    bytes,
                    cacheable: false,
                },
                None => Immediate::Drop,
            };
        }
    };
    if request.metadata.message_type == MessageType::Response {
        return Immediate::Drop;
    }
    match handler.plan(&request) {
        Plan::Reply {
            metadata,
            answer,
            cacheable,
        } => {
            let edns = response_edns(&request);
            let response = build_response(&request, edns.as_ref(), metadata, &answer);
            match encode_counted(response, protocol) {
                Ok((bytes, _)) => Immediate::Reply { bytes, cacheable },
                Err(_) => Immediate::Drop,
            }
        }
        Plan::WaitForVip | Plan::Forward => Immediate::Wait(Box::new(request)),
    }
}

/// Runs one packet through the whole request path. `None`: the packet is dropped (shorter
/// than a header, or a response).
pub async fn respond(
    handler: &Handler,
    bytes: &[u8],
    src: SocketAddr,
    protocol: Protocol,
) -> Option<Vec<u8>> {
    match respond_now(handler, bytes, src, protocol) {
        Immediate::Drop => None,
        Immediate::Reply { bytes, .. } => Some(bytes),
        Immediate::Wait(request) => finish(handler, &request, protocol).await,
    }
}

/// The rest of the request path for a request [`respond_now`] could not answer at once.
pub async fn finish(handler: &Handler, request: &Request, protocol: Protocol) -> Option<Vec<u8>> {
    let capture = Capture {
        out: Arc::new(Mutex::new(None)),
        protocol,
    };
    handler
        .handle_request::<_, TokioTime>(request, capture.clone())
        .await;
    let out = capture.out.lock().unwrap_or_else(|e| e.into_inner()).take();
    out
}

/// The REFUSED answer hickory-server gives a client outside the allowed networks: the
/// header and the questions echoed. `None` for a packet without a whole header.
pub fn refused(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).ok()?;
    let queries = Queries::read(&mut decoder, usize::from(header.counts.queries))
        .unwrap_or_else(|_| no_queries());
    error_reply(&header, queries, ResponseCode::Refused)
}

/// An empty question section.
fn no_queries() -> Queries {
    Queries::read(&mut BinDecoder::new(&[]), 0).expect("reading zero queries cannot fail")
}

/// An answer with only a header (and `queries`) carrying `rcode`.
fn error_reply(header: &Header, queries: Queries, rcode: ResponseCode) -> Option<Vec<u8>> {
    let builder = MessageResponseBuilder::new(&queries, None);
    encode_counted(builder.error_msg(&header.metadata, rcode), Protocol::Tcp)
        .ok()
        .map(|(bytes, _)| bytes)
}

/// Encodes a response, truncated (TC set) to the client's UDP payload size over UDP.
fn encode_counted<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    protocol: Protocol,
) -> Result<(Vec<u8>, ResponseInfo), NetError> {
    let max = match protocol {
        Protocol::Udp => response.edns().map_or(512, |e| e.max_payload()),
        _ => u16::MAX,
    };
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    let info = response.destructive_emit(&mut encoder)?;
    Ok((bytes, info))
}

/// A response handler that keeps the encoded answer.
#[derive(Clone)]
struct Capture {
    out: Arc<Mutex<Option<Vec<u8>>>>,
    protocol: Protocol,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (bytes, info) = encode_counted(response, self.protocol)?;
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = Some(bytes);
        Ok(info)
    }
}

/// A handler over a small fixed catalog (services `web` with a VIP, colors and a route,
/// `big` with 100 instances, `udp` with a UDP instance), zone `berth.`, no recursion: for
/// the fuzz target and the generated-packet tests.
pub fn sample_handler() -> Handler {
    use registry::client::{Node, Response};
    let mut catalog = registry::catalog::Catalog::new();
    let mut set = |key: String, value: &str| {
        catalog.apply(&Response {
            action: "set".into(),
            node: Node {
                key,
                value: Some(value.into()),
                modified_index: 1,
                ..Default::default()
            },
            ..Default::default()
        });
    };
    set(
        "/services/web/a".into(),
        r#"{"host":"10.0.0.1","port":80,"color":"blue"}"#,
    );
    set(
        "/services/web/b".into(),
        r#"{"host":"10.0.0.2","port":80,"color":"green"}"#,
    );
    set(
        "/services/web/c".into(),
        r#"{"host":"fd00::3","port":80,"color":"green"}"#,
    );
    set("/_berth/routes/web".into(), r#"{"active":"green"}"#);
    set("/_berth/vips/service/web".into(), "127.77.0.10");
    set("/_berth/vips/ip/127.77.0.10".into(), "web");
    set("/services/udp/h:dns:53:udp".into(), "10.0.2.1:53");
    for i in 0..100 {
        set(
            format!("/services/big/i{i}"),
            &format!("10.1.0.{}:8080", i + 1),
        );
    }
    let config = crate::config::Config {
        endpoints: vec!["http://127.0.0.1:2379".into()],
        domain: "berth.".into(),
        ttl: 5,
        vip_range: "127.77.0.0/16".parse().expect("literal"),
        vip_grace: std::time::Duration::from_secs(60),
        upstreams: Vec::new(),
        recursion: false,
        allow: Vec::new(),
        upstream_timeout: std::time::Duration::from_secs(1),
        udp_threads: 1,
    };
    Handler::standalone(&config, catalog)
}

/// Runs `data` through the request path over UDP and over TCP and checks every answer with
/// [`check_answer`]; panics on a violation (the fuzz target's body). Returns the response
/// code per protocol, `None` where the packet was dropped.
pub async fn check_packet(handler: &Handler, data: &[u8]) -> [Option<u16>; 2] {
    let src: SocketAddr = ([127, 0, 0, 1], 5353).into();
    let mut out = [None, None];
    for (i, proto) in [Protocol::Udp, Protocol::Tcp].into_iter().enumerate() {
        match respond(handler, data, src, proto).await {
            Some(answer) => {
                let rcode = check_answer(data, &answer, proto)
                    .unwrap_or_else(|e| panic!("{data:?} over {proto}: {e}"));
                assert!(
                    data[2] & 0x80 == 0 || rcode == 1,
                    "{data:?} over {proto}: a response was answered with rcode {rcode}"
                );
                out[i] = Some(rcode);
            }
            None => assert!(
                data.len() < 12 || data[2] & 0x80 != 0,
                "{data:?} over {proto}: a query got no answer"
            ),
        }
    }
    out
}

/// Checks an answer the request path produced for `query`: a response with the query's id,
/// that parses, within the UDP size limit. Returns the response code.
pub fn check_answer(query: &[u8], answer: &[u8], protocol: Protocol) -> Result<u16, String> {
    use hickory_server::proto::op::Message;
    if answer.len() < 12 {
        return Err(format!("answer of {} bytes", answer.len()));
    }
    if answer[..2] != query[..2] {
        return Err("id not echoed".into());
    }
    if protocol == Protocol::Udp && answer.len() > 4096 {
        return Err(format!("UDP answer of {} bytes", answer.len()));
    }
    let m = Message::from_vec(answer).map_err(|e| format!("answer does not parse: {e}"))?;
    if m.metadata.message_type != MessageType::Response {
        return Err("answer without QR".into());
    }
    Ok(u16::from(m.metadata.response_code))
}
