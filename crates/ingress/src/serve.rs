//! The listeners: plain HTTP always, TLS when configured, and the ACME task that
//! keeps the TLS listener's certificates when they come from a CA.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::conn;
use crate::limits::Limits;
use crate::observe::Observer;
use crate::proxy::{Peer, Proxy, Scheme};
use crate::route::RouteTable;
use crate::tls::acme::{self, AcmeConfig};
use crate::tls::{pem, server_config, Certificates, Challenges, TlsError};

/// What the ingress listens on, and how.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    /// The plain HTTP listener (`--ingress-listen`); it also answers ACME HTTP-01.
    pub listen: SocketAddr,
    /// The TLS listener (`--ingress-tls-listen`), if any.
    pub tls: Option<TlsListen>,
    pub limits: Limits,
}

#[derive(Clone, Debug)]
pub struct TlsListen {
    pub listen: SocketAddr,
    pub certificates: CertificateSource,
}

/// Where the TLS listener's certificates come from.
#[derive(Clone, Debug)]
pub enum CertificateSource {
    /// `<name>.crt` and `<name>.key` files in a directory, read at start and
    /// again while serving ([`Ingress::reread_pem_every`], a minute unless
    /// told): files a renewal replaced are served without a restart.
    PemDir(PathBuf),
    /// Issued by an ACME CA for the routed hosts, kept under its `dir`.
    Acme(AcmeConfig),
}

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The bound listeners, ready to serve.
pub struct Ingress {
    plain: TcpListener,
    tls: Option<(TcpListener, TlsAcceptor, CertificateSource)>,
    proxy: Arc<Proxy>,
    certificates: Arc<Certificates>,
    pem_reread: Duration,
}

/// How often a PEM directory is read again while serving, unless told.
pub const PEM_REREAD: Duration = Duration::from_secs(60);

impl Ingress {
    /// Binds the listeners and loads the certificates there are (PEM files, or
    /// those ACME issued before).
    pub async fn bind(
        config: IngressConfig,
        table: Arc<RouteTable>,
        observer: Arc<dyn Observer>,
    ) -> Result<Ingress, IngressError> {
        let plain = listen(config.listen).await?;
        let certificates = Arc::new(Certificates::new());
        let tls = match config.tls {
            None => None,
            Some(t) => {
                match &t.certificates {
                    CertificateSource::PemDir(dir) => {
                        for c in pem::load_dir(dir)? {
                            certificates.insert(c);
                        }
                    }
                    CertificateSource::Acme(a) => acme::load(a, &certificates)?,
                }
                let acceptor = TlsAcceptor::from(server_config(certificates.clone()));
                Some((listen(t.listen).await?, acceptor, t.certificates))
            }
        };
        let proxy = Arc::new(Proxy {
            table,
            observer,
            limits: config.limits,
            challenges: Arc::new(Challenges::default()),
        });
        Ok(Ingress {
            plain,
            tls,
            proxy,
            certificates,
            pem_reread: PEM_REREAD,
        })
    }

    /// The plain listener's address (port 0 in the config: the one chosen).
    pub fn local_addr(&self) -> SocketAddr {
        self.plain.local_addr().expect("a bound listener")
    }

    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls
            .as_ref()
            .map(|(l, _, _)| l.local_addr().expect("a bound listener"))
    }

    /// The certificates the TLS listener serves (to look at, or to add to).
    pub fn certificates(&self) -> Arc<Certificates> {
        self.certificates.clone()
    }

    /// How often the PEM directory is read again once serving ([`PEM_REREAD`]
    /// unless told).
    pub fn reread_pem_every(mut self, every: Duration) -> Ingress {
        self.pem_reread = every;
        self
    }

    /// Reads a PEM directory again (new and replaced files; a removed file's
    /// names keep their certificate until replaced).
    pub fn reload_certificates(&self) -> Result<(), TlsError> {
        if let Some((_, _, CertificateSource::PemDir(dir))) = &self.tls {
            for c in pem::load_dir(dir)? {
                self.certificates.insert(c);
            }
        }
        Ok(())
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets requests in
    /// flight finish (up to a grace) and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let Ingress {
            plain,
            tls,
            proxy,
            certificates,
            pem_reread,
        } = self;
        let limits = proxy.limits.clone();
        let (down_tx, down) = watch::channel(false);
        let conns = Arc::new(Semaphore::new(limits.max_connections));
        // Every connection task holds a sender: when the receiver sees none left,
        // every task has ended.
        let (serving, mut all_served) = mpsc::channel::<()>(1);
        let builder = Arc::new(conn::builder(&limits));
        let accept = |listener, acceptor| {
            accept_loop(
                listener,
                acceptor,
                Shared {
                    proxy: proxy.clone(),
                    builder: builder.clone(),
                    conns: conns.clone(),
                    serving: serving.clone(),
                    down: down.clone(),
                },
            )
        };
        let plain_loop = accept(plain, None);
        // The task that keeps the TLS listener's certificates: ACME orders and
        // renewals, or the PEM directory read again.
        let (tls_loop, follow_task) = match tls {
            None => (None, None),
            Some((listener, acceptor, source)) => {
                let follow_task = match source {
                    CertificateSource::Acme(config) => tokio::spawn(acme::run(
                        config,
                        proxy.table.clone(),
                        certificates,
                        proxy.challenges.clone(),
                        down.clone(),
                    )),
                    CertificateSource::PemDir(dir) => {
                        tokio::spawn(pem::follow(dir, certificates, pem_reread, down.clone()))
                    }
                };
                (Some(accept(listener, Some(acceptor))), Some(follow_task))
            }
        };
        let tls_loop = async move {
            match tls_loop {
                Some(l) => l.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown => {}
            _ = plain_loop => {}
            _ = tls_loop => {}
        }
        let _ = down_tx.send(true);
        if let Some(t) = follow_task {
            let _ = t.await;
        }
        // Upgraded connections are not waited for: their sockets are the copy
        // tasks' now, and their backends' drains wait for them.
        drop(serving);
        let _ = tokio::time::timeout(Duration::from_secs(15), all_served.recv()).await;
    }
}

async fn listen(addr: SocketAddr) -> Result<TcpListener, IngressError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| IngressError::Bind { addr, source })
}

/// What every connection task of a listener takes along.
struct Shared {
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// A place for each connection open, up to `max_connections`.
    conns: Arc<Semaphore>,
    serving: mpsc::Sender<()>,
    down: watch::Receiver<bool>,
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Shared) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, most likely: let some close.
                tracing::warn!(error = %e, "ingress accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = shared.conns.clone().try_acquire_owned() else {
            tracing::debug!(%addr, "connection limit reached, closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = Counted {
            io: stream,
            _permit: permit,
        };
        let (proxy, builder, down) = (
            shared.proxy.clone(),
            shared.builder.clone(),
            shared.down.clone(),
        );
        let serving = shared.serving.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _serving = serving;
            match tls {
                None => {
                    let peer = Peer {
                        addr,
                        scheme: Scheme::Http,
                    };
                    conn::serve(stream, peer, proxy, builder, down).await
                }
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        proxy.limits.header_read_timeout,
                        acceptor.accept(stream),
                    );
                    if let Ok(Ok(stream)) = handshake.await {
                        let peer = Peer {
                            addr,
                            scheme: Scheme::Https,
                        };
                        conn::serve(stream, peer, proxy, builder, down).await
                    }
                }
            }
        });
    }
}

pin_project_lite::pin_project! {
    /// A client's socket with its place under `max_connections`, held as long as
    /// the socket lives: an upgraded connection's socket leaves the connection
    /// task for the proxy's copy task, and its place goes with it.
    struct Counted {
        #[pin]
        io: TcpStream,
        _permit: OwnedSemaphorePermit,
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
