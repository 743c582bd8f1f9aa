//! One request through the proxy: routed by host, limited, forwarded to the
//! service's current backend with its body streaming, answered with the backend's
//! response streaming back (or a protocol switch, copied both ways).

pub(crate) mod headers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::backend::{Backend, InFlight};
use crate::body::{LimitedBody, Meter, ProxyBody, RequestBodyError, Upload};
use crate::limits::Limits;
use crate::observe::Observer;
use crate::route::{Open, RouteTable};
use crate::tls::Challenges;
pub(crate) use headers::Scheme;

/// Where a client connection came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) scheme: Scheme,
}

/// What every request shares.
pub(crate) struct Proxy {
    pub(crate) table: Arc<RouteTable>,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) limits: Limits,
    /// ACME HTTP-01 answers, served on the plain listener.
    pub(crate) challenges: Arc<Challenges>,
}

const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

impl Proxy {
    pub(crate) async fn handle(
        &self,
        peer: Peer,
        mut req: Request<Incoming>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        if peer.scheme == Scheme::Http {
            if let Some(token) = req.uri().path().strip_prefix(ACME_CHALLENGE) {
                if let Some(key_authorization) = self.challenges.get(token) {
                    return answer(StatusCode::OK, key_authorization);
                }
            }
        }
        let Some(authority) = authority_of(&req) else {
            return not_found();
        };
        let Some(service) = self.table.service(&authority) else {
            return not_found();
        };
        let backend = service.backend();
        let mut meter = Meter {
            observer: self.observer.clone(),
            service_id: service.id.clone(),
            deployment_id: backend.deployment_id().clone(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            status: StatusCode::OK,
            started,
            bytes: 0,
            guards: (None, None),
        };
        let Some(open) = service.try_open(self.limits.max_per_service) else {
            return local(
                &mut meter,
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable\n",
            )
            .metered(meter);
        };
        meter.guards = (Some(backend.enter()), Some(open));
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limits.max_request_body) {
            return local(
                &mut meter,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload too large\n",
            )
            .metered(meter);
        }

        // Only HTTP/1.1 switches protocols (no extended CONNECT over HTTP/2).
        let upgrade = (req.version() == Version::HTTP_11)
            .then(|| headers::upgrade_of(req.headers()))
            .flatten();
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let upload = Upload::new();
        let up = self.upstream_request(req, peer, &authority, upgrade, upload.clone());

        let answered = self.answer_of(&backend, up, &upload).await;
        let resp = match answered {
            None => {
                return local(&mut meter, StatusCode::GATEWAY_TIMEOUT, "Gateway timeout\n")
                    .metered(meter)
            }
            Some(Err(e)) => {
                let (status, text) = failed_upstream(&upload, &e, &meter);
                return local(&mut meter, status, text).metered(meter);
            }
            Some(Ok(resp)) => resp,
        };
        meter.status = resp.status();
        answer_with(resp, client_upgrade, meter)
    }
}

/// What the client is answered when the backend failed: the request body's own
/// fault first (too large, stalled), else a bad gateway.
fn failed_upstream(
    upload: &Upload,
    e: &crate::backend::UpstreamError,
    meter: &Meter,
) -> (StatusCode, &'static str) {
    match upload.failure() {
        Some(RequestBodyError::TooLarge) => (StatusCode::PAYLOAD_TOO_LARGE, "Payload too large\n"),
        Some(RequestBodyError::Stalled) => (StatusCode::REQUEST_TIMEOUT, "Request timeout\n"),
        None => {
            tracing::debug!(service = %meter.service_id, deployment = %meter.deployment_id, error = %e, connect = e.is_connect(), "upstream failed");
            (StatusCode::BAD_GATEWAY, "Bad gateway\n")
        }
    }
}

/// The backend's answer passed on: a switch of protocols joins the two upgraded
/// connections; any other answer streams its body, metered.
fn answer_with(
    mut resp: Response<crate::backend::PooledBody>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    mut meter: Meter,
) -> Response<ProxyBody> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let switch_to = resp.headers().get(header::UPGRADE).cloned();
            let upstream = hyper::upgrade::on(&mut resp);
            let guards = std::mem::take(&mut meter.guards);
            tokio::spawn(copy_upgraded(client_upgrade, upstream, guards));
            let (mut parts, _) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            if let Some(to) = switch_to {
                headers::set_upgrade(&mut parts.headers, to);
            }
            drop(meter);
            return Response::from_parts(parts, ProxyBody::empty());
        }
    }
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let body = ProxyBody::stream(body.map_err(Into::into).boxed_unsync()).metered(meter);
    Response::from_parts(parts, body)
}

impl Proxy {
    /// The backend's answer to `up`: `None` when its head has not come within the
    /// response timeout of the last progress of the request body (the time the
    /// body waits for the client does not count: that is the body's own limit).
    async fn answer_of(
        &self,
        backend: &Backend,
        up: Request<crate::UpstreamBody>,
        upload: &Upload,
    ) -> Option<Result<Response<crate::backend::PooledBody>, crate::backend::UpstreamError>> {
        let timeout = self.limits.response_timeout;
        let request = backend.client.request(up);
        tokio::pin!(request);
        loop {
            let due = upload.answer_due(timeout);
            let wake = due.map_or_else(|| tokio::time::Instant::now() + timeout, Into::into);
            tokio::select! {
                answer = &mut request => return Some(answer),
                () = tokio::time::sleep_until(wake) => {
                    if upload
                        .answer_due(timeout)
                        .is_some_and(|due| due <= std::time::Instant::now())
                    {
                        return None;
                    }
                }
            }
        }
    }

    /// The request as the backend gets it: HTTP/1.1, origin-form, the client's
    /// `Host`, no hop-by-hop headers, the proxy's `X-Forwarded-*`.
    fn upstream_request(
        &self,
        req: Request<Incoming>,
        peer: Peer,
        authority: &str,
        upgrade: Option<HeaderValue>,
        upload: Arc<Upload>,
    ) -> Request<crate::UpstreamBody> {
        let (mut parts, body) = req.into_parts();
        // Origin-form (an HTTP/2 request's URI has its scheme and authority).
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            parts.uri = parts
                .uri
                .path_and_query()
                .cloned()
                .map_or_else(|| Uri::from_static("/"), Uri::from);
        }
        parts.version = Version::HTTP_11;
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(upgrade) = upgrade {
            headers::set_upgrade(&mut parts.headers, upgrade);
        }
        if let Ok(host) = HeaderValue::from_str(authority) {
            parts.headers.insert(header::HOST, host);
        }
        headers::set_forwarded(&mut parts.headers, peer.addr.ip(), peer.scheme, authority);
        let body = LimitedBody::new(
            body,
            self.limits.max_request_body,
            self.limits.idle_timeout,
            upload,
        );
        Request::from_parts(parts, body.boxed_unsync())
    }
}

/// The `Host` header, or an HTTP/2 request's `:authority` (in its URI).
fn authority_of<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
}

/// Both halves of a switched connection, copied until either side closes; the
/// guards keep it counted as in flight on its backend and open to its service.
async fn copy_upgraded(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    guards: (Option<InFlight>, Option<Open>),
) {
    let backend = guards.0.as_ref().map(|g| g.backend().clone());
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            log_upgrade_failure(backend.as_deref(), &e);
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    drop(guards);
}

fn log_upgrade_failure(backend: Option<&Backend>, e: &hyper::Error) {
    tracing::debug!(deployment = ?backend.map(|b| b.deployment_id()), error = %e, "upgrade failed");
}

/// The proxy's own short answer to a routed request.
fn local(meter: &mut Meter, status: StatusCode, text: &'static str) -> ProxyBodyResponse {
    meter.status = status;
    ProxyBodyResponse(answer(status, text))
}

/// A response the meter is yet to be attached to.
struct ProxyBodyResponse(Response<ProxyBody>);

impl ProxyBodyResponse {
    fn metered(self, meter: Meter) -> Response<ProxyBody> {
        self.0.map(|b| b.metered(meter))
    }
}

/// Unknown hosts: a page that names nothing (no server, no service list).
fn not_found() -> Response<ProxyBody> {
    answer(StatusCode::NOT_FOUND, "Not found\n")
}

fn answer(status: StatusCode, text: impl Into<Bytes>) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(text.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
