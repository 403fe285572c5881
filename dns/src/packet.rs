//! The request path from raw bytes to raw answer, as the server runs it (header check, parse,
//! FORMERR for what does not parse, responses dropped, the handler, encoding with the UDP size
//! limit), without sockets: for the fuzz target and the malformed-packet tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

use crate::handler::Handler;

/// Runs one packet through the request path. `None`: the packet is dropped (shorter than a
/// header, or a response).
pub async fn respond(
    handler: &Handler,
    bytes: &[u8],
    src: SocketAddr,
    protocol: Protocol,
) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(bytes)).ok()?;
    let request = match Request::from_bytes(bytes.to_vec(), src, protocol) {
        Ok(r) => r,
        Err(_) => {
            // As hickory-server does: FORMERR for whatever has a header but does not parse.
            let mut md = Metadata::response_from_request(&header.metadata);
            md.response_code = ResponseCode::FormErr;
            let mut out = Vec::with_capacity(12);
            Header {
                metadata: md,
                counts: HeaderCounts::default(),
            }
            .emit(&mut BinEncoder::new(&mut out))
            .ok()?;
            return Some(out);
        }
    };
    if request.metadata.message_type == MessageType::Response {
        return None;
    }
    let capture = Capture {
        out: Arc::new(Mutex::new(None)),
        protocol,
    };
    handler
        .handle_request::<_, TokioTime>(&request, capture.clone())
        .await;
    let out = capture.out.lock().unwrap_or_else(|e| e.into_inner()).take();
    out
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
        let max = match self.protocol {
            Protocol::Udp => response.edns().map_or(512, |e| e.max_payload()),
            _ => u16::MAX,
        };
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        let info = response.destructive_emit(&mut encoder)?;
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
