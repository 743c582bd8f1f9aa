//! berth's ingress: the HTTP reverse proxy in front of the services, by host name.
//!
//! The server builds a [`RouteTable`], binds an [`Ingress`] and serves it:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! # use berth_ingress::*;
//! # async fn f(dialer: Arc<dyn Dialer>) -> Result<(), Box<dyn std::error::Error>> {
//! let table = Arc::new(RouteTable::new());
//! let config = IngressConfig {
//!     listen: "127.0.0.1:8441".parse()?,
//!     tls: None,
//!     limits: Limits::default(),
//! };
//! let ingress = Ingress::bind(config, table.clone(), Arc::new(NoObserver)).await?;
//! tokio::spawn(ingress.serve(std::future::pending()));
//!
//! // A deployment is ready: route the service's names to it.
//! let hosts = vec![Host::parse("web.shop.localhost")?, Host::parse("shop.example.com")?];
//! let backend = Backend::new("service-id", "deployment-id", dialer);
//! let previous = table.set(Route { service_id: "service-id".into(), hosts, backend })?;
//! // The one it replaces gets no new request; let what it has in flight finish.
//! if let Some(old) = previous {
//!     old.drain(Duration::from_secs(30)).await;
//!     // ...then stop its container.
//! }
//! # Ok(()) }
//! ```
//!
//! - **Routing**: by `Host` (HTTP/1.1) or `:authority` (HTTP/2), any case, port and
//!   trailing dot ignored ([`Host`]). Unknown hosts get a plain 404 that names
//!   nothing.
//! - **Protocols**: HTTP/1.1 and HTTP/2 from clients (h2c with prior knowledge on
//!   the plain listener, h2 by ALPN on TLS); HTTP/1.1 to backends, over a
//!   keep-alive pool per [`Backend`]. HTTP/1.1 upgrades (WebSocket) are proxied:
//!   the 101 passed on, then bytes copied both ways.
//! - **Bodies** stream both ways; nothing is buffered whole.
//! - **Headers**: hop-by-hop headers are dropped; `X-Forwarded-For` (the peer's
//!   address, replacing any a client sent), `X-Forwarded-Proto` and
//!   `X-Forwarded-Host` are set; `Forwarded` from a client is dropped.
//! - **Limits** ([`Limits`]): body size (413), head size (431), head and idle
//!   timeouts (slowloris), a stalled body (408) or a client that stops reading,
//!   connections in all, upgraded ones included (closed past it), requests open
//!   per service (503).
//!   A backend that cannot be reached is a 502, one too slow to answer a 504.
//! - **Redeploys**: [`RouteTable::set`] swaps a service's backend in one step and
//!   hands back the old one; [`Backend::drain`] waits for what it has in flight
//!   (requests until their response body ends, upgraded connections until they
//!   close), up to a grace.
//! - **Access log and metrics**: an [`Observer`] is told each routed request once
//!   ([`Access`]: ids, method, path without query, status, bytes, duration).
//! - **TLS** ([`TlsListen`]): certificates by SNI from a directory of PEM files
//!   (read again every [`PEM_REREAD`]: a renewal's files are served without a
//!   restart), or from an ACME CA ([`AcmeConfig`], HTTP-01 answered on the plain
//!   listener), one per routed public host, kept on disk (keys 0600), renewed
//!   with a third of their life left. rustls on ring, the provider reqwest
//!   brings already.

mod backend;
mod body;
mod conn;
mod host;
mod limits;
mod observe;
mod proxy;
mod route;
mod serve;
pub mod tls;

pub use backend::{Backend, BoxFuture, Dialer, Drained, TcpDialer, CONNECT_TIMEOUT};
pub use host::{Host, HostError};
pub use limits::Limits;
pub use observe::{Access, NoObserver, Observer};
pub use route::{Route, RouteError, RouteTable};
pub use serve::{CertificateSource, Ingress, IngressConfig, IngressError, TlsListen, PEM_REREAD};
pub use tls::acme::AcmeConfig;

/// An error from a body on its way through.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What goes up to a backend.
pub(crate) type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;
