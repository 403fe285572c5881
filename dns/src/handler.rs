//! The request handler hickory-server calls for every well-formed query: EDNS and header
//! checks, the zone lookup (waiting briefly for a VIP being claimed), forwarding of other
//! names, and the response.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use tokio::sync::mpsc;

use crate::answer::{Answer, Outcome, Zone};
use crate::config::Config;
use crate::forward::Forwarder;
use registry::catalog::Shared;

/// Largest UDP payload we send, whatever the client advertises.
const MAX_UDP_PAYLOAD: u16 = 4096;

/// Answers queries from the shared catalog; forwards the rest.
pub struct Handler {
    shared: Arc<Shared>,
    zone: Zone,
    forwarder: Option<Forwarder>,
    vip_requests: Option<mpsc::Sender<String>>,
    vip_wait: Duration,
}

impl Handler {
    /// A handler for `config`. `vip_requests` reaches the allocator (none: never wait).
    pub fn new(
        config: &Config,
        shared: Arc<Shared>,
        vip_requests: Option<mpsc::Sender<String>>,
    ) -> Handler {
        let forwarder = config
            .recursion
            .then(|| Forwarder::new(config.upstreams.clone(), config.upstream_timeout));
        Handler {
            shared,
            zone: Zone::new(&config.domain, config.ttl, config.vip_range),
            forwarder,
            vip_requests,
            vip_wait: Duration::from_secs(2),
        }
    }

    /// A handler over a fixed catalog, without registry or allocator (fuzzing, tests).
    pub fn standalone(config: &Config, catalog: registry::catalog::Catalog) -> Handler {
        let shared = Arc::new(Shared::new(catalog));
        shared.set_synced();
        Handler::new(config, shared, None)
    }

    /// The zone lookup, waiting (up to a limit) while the service's VIP is being claimed.
    async fn lookup(
        &self,
        name: &hickory_server::proto::rr::Name,
        qtype: hickory_server::proto::rr::RecordType,
    ) -> Option<Outcome> {
        let deadline = Instant::now() + self.vip_wait;
        let mut changes = self.shared.subscribe();
        loop {
            let outcome = {
                let c = self.shared.read();
                self.zone.lookup(&c, name, qtype)
            };
            let Outcome::NeedVip(service) = outcome else {
                return Some(outcome);
            };
            let Some(tx) = &self.vip_requests else {
                return None;
            };
            let _ = tx.try_send(service);
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
    }
}

/// The OPT record of the response: present when the request had one.
pub(crate) fn response_edns(request: &Request) -> Option<Edns> {
    let req = request.edns.as_ref()?;
    let mut e = Edns::new();
    e.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    e.set_version(0);
    Some(e)
}

/// The response to `request` carrying `answer` under `metadata`.
pub(crate) fn build_response<'q, 'a>(
    request: &'q Request,
    edns: Option<&'q Edns>,
    metadata: Metadata,
    answer: &'a Answer,
) -> MessageResponse<
    'q,
    'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
    impl Iterator<Item = &'a Record> + Send + 'a,
> {
    MessageResponseBuilder::new(&request.queries, edns).build(
        metadata,
        answer.answers.iter(),
        answer.authorities.iter(),
        std::iter::empty::<&Record>(),
        answer.additionals.iter(),
    )
}

async fn send<R: ResponseHandler>(
    mut handle: R,
    request: &Request,
    edns: Option<&Edns>,
    metadata: Metadata,
    answer: &Answer,
) -> ResponseInfo {
    let response = build_response(request, edns, metadata, answer);
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(error = %e, "cannot send a DNS response");
            let mut md = metadata;
            md.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata: md,
                counts: HeaderCounts::default(),
            })
        }
    }
}

/// What the handler does with a request, decided from the request and the catalog alone.
pub(crate) enum Plan {
    /// Reply at once. `cacheable`: the reply is a function of the request's bytes (minus
    /// its id) and of the catalog generation it was computed under, so it may be reused for
    /// the same question until [`Shared::generation`] moves.
    Reply {
        metadata: Metadata,
        answer: Answer,
        cacheable: bool,
    },
    /// A service without a VIP yet: wait (briefly) while the allocator claims one.
    WaitForVip,
    /// Not a name of ours: forward it upstream.
    Forward,
}

impl Handler {
    /// The response header every answer starts from.
    fn response_metadata(&self, request: &Request) -> Metadata {
        let mut md = Metadata::response_from_request(&request.metadata);
        md.recursion_available = self.forwarder.is_some();
        md
    }

    /// Decides what to do with `request` without waiting for anything.
    pub(crate) fn plan(&self, request: &Request) -> Plan {
        let md = self.response_metadata(request);
        let fail = |rcode: ResponseCode, cacheable: bool| {
            let mut metadata = md;
            metadata.response_code = rcode;
            Plan::Reply {
                metadata,
                answer: error_answer(rcode),
                cacheable,
            }
        };
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return fail(ResponseCode::BADVERS, true);
        }
        if request.metadata.op_code != OpCode::Query {
            return fail(ResponseCode::NotImp, true);
        }
        let queries = request.queries.queries();
        if queries.len() != 1 {
            return fail(ResponseCode::FormErr, true);
        }
        let query = queries[0].original();
        let in_zone = self.zone.contains(query.name());
        let class_ok = matches!(query.query_class(), DNSClass::IN | DNSClass::ANY);
        if in_zone && !class_ok {
            return fail(ResponseCode::Refused, true);
        }
        if in_zone && !self.shared.is_synced() {
            // Never claim a name does not exist before the registry has been read.
            return fail(ResponseCode::ServFail, false);
        }
        let outcome = if class_ok {
            let c = self.shared.read();
            self.zone.lookup(&c, query.name(), query.query_type())
        } else {
            Outcome::NotOurs
        };
        match outcome {
            Outcome::Answer(answer) => {
                let mut metadata = md;
                metadata.authoritative = true;
                metadata.response_code = answer.rcode;
                Plan::Reply {
                    metadata,
                    answer,
                    cacheable: true,
                }
            }
            Outcome::NeedVip(_) => Plan::WaitForVip,
            Outcome::NotOurs if self.forwarder.is_some() => Plan::Forward,
            Outcome::NotOurs => fail(ResponseCode::Refused, true),
        }
    }
}

fn error_answer(rcode: ResponseCode) -> Answer {
    Answer {
        rcode,
        answers: Vec::new(),
        authorities: Vec::new(),
        additionals: Vec::new(),
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let edns = response_edns(request);
        let md = self.response_metadata(request);
        let fail = |rcode: ResponseCode| {
            let mut m = md;
            m.response_code = rcode;
            m
        };
        let outcome = match self.plan(request) {
            Plan::Reply {
                metadata, answer, ..
            } => return send(response_handle, request, edns.as_ref(), metadata, &answer).await,
            Plan::WaitForVip => {
                let query = request.queries.queries()[0].original();
                self.lookup(query.name(), query.query_type()).await
            }
            Plan::Forward => Some(Outcome::NotOurs),
        };
        match outcome {
            Some(Outcome::Answer(a)) => {
                let mut md = md;
                md.authoritative = true;
                md.response_code = a.rcode;
                send(response_handle, request, edns.as_ref(), md, &a).await
            }
            Some(Outcome::NeedVip(_)) | None => {
                let md = fail(ResponseCode::ServFail);
                send(
                    response_handle,
                    request,
                    edns.as_ref(),
                    md,
                    &error_answer(ResponseCode::ServFail),
                )
                .await
            }
            Some(Outcome::NotOurs) => {
                let Some(fwd) = &self.forwarder else {
                    let md = fail(ResponseCode::Refused);
                    return send(
                        response_handle,
                        request,
                        edns.as_ref(),
                        md,
                        &error_answer(ResponseCode::Refused),
                    )
                    .await;
                };
                let name = request.queries.queries()[0].original().name();
                let tcp = request.protocol() != Protocol::Udp;
                match fwd.forward(request.as_slice(), tcp).await {
                    Ok(m) => {
                        let mut md = md;
                        md.response_code = m.metadata.response_code;
                        // Not our data: never authoritative.
                        md.authoritative = false;
                        md.truncation = m.metadata.truncation;
                        md.authentic_data = m.metadata.authentic_data;
                        let a = Answer {
                            rcode: m.metadata.response_code,
                            answers: m.answers,
                            authorities: m.authorities,
                            additionals: m.additionals,
                        };
                        send(response_handle, request, edns.as_ref(), md, &a).await
                    }
                    Err(e) => {
                        tracing::debug!(%name, error = %e, "forwarding failed");
                        let md = fail(ResponseCode::ServFail);
                        send(
                            response_handle,
                            request,
                            edns.as_ref(),
                            md,
                            &error_answer(ResponseCode::ServFail),
                        )
                        .await
                    }
                }
            }
        }
    }
}
