//! One client connection: HTTP/1.1 or HTTP/2 (hyper-util's auto server), closed
//! when it holds nothing in flight for too long, or when a client stops reading.

use std::convert::Infallible;
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, Sleep};

use crate::limits::Limits;
use crate::proxy::{Peer, Proxy};

/// How long a connection may finish what it has in flight once the ingress
/// shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The server side of both protocols, with the limits on heads.
pub(crate) fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    b.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Serves one connection until it ends, idles out, or `shutdown` turns true.
pub(crate) async fn serve<IO>(
    io: IO,
    peer: Peer,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = proxy.limits.clone();
    let activity = Arc::new(Activity::new());
    let svc = service_fn({
        let activity = activity.clone();
        move |req| {
            let active = Activity::begin(&activity);
            let proxy = proxy.clone();
            async move {
                let resp = proxy.handle(peer, req).await;
                Ok::<_, Infallible>(resp.map(|b| b.holding(active)))
            }
        }
    });
    let io = TokioIo::new(StallTimeout::new(io, limits.idle_timeout));
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    loop {
        let wake = activity
            .deadline(&limits)
            .unwrap_or_else(|| Instant::now() + limits.idle_timeout);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep_until(wake) => {
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    break;
                }
            }
            // A request began or ended: the deadline moved (the first request's
            // end brings it from the head timeout to the idle one).
            () = activity.changed.notified() => {}
            _ = shutdown.wait_for(|down| *down) => break,
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
}

/// What a connection has in flight, and since when it has had nothing.
pub(crate) struct Activity {
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    active: usize,
    requests: u64,
    since: Instant,
}

/// One request in flight on a connection, until its response body ends.
pub(crate) struct Active(Arc<Activity>);

impl Activity {
    fn new() -> Activity {
        Activity {
            state: Mutex::new(State {
                active: 0,
                requests: 0,
                since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn begin(this: &Arc<Activity>) -> Active {
        let mut s = this.state.lock().expect("activity lock");
        s.active += 1;
        s.requests += 1;
        drop(s);
        this.changed.notify_one();
        Active(this.clone())
    }

    /// When the connection is to close if nothing starts: before its first
    /// request, the head timeout; after, the idle timeout. `None` while busy.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let s = self.state.lock().expect("activity lock");
        (s.active == 0).then(|| {
            s.since
                + if s.requests == 0 {
                    limits.header_read_timeout
                } else {
                    limits.idle_timeout
                }
        })
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().expect("activity lock");
        s.active -= 1;
        s.since = Instant::now();
        drop(s);
        self.0.changed.notify_one();
    }
}

pin_project_lite::pin_project! {
    /// A client connection whose writes fail once they have waited `stall` for
    /// the client to read.
    struct StallTimeout<IO> {
        #[pin]
        io: IO,
        stall: Duration,
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<IO> StallTimeout<IO> {
    fn new(io: IO, stall: Duration) -> Self {
        StallTimeout {
            io,
            stall,
            timer: None,
        }
    }
}

impl<IO: AsyncRead> AsyncRead for StallTimeout<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite> StallTimeout<IO> {
    fn watch<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let this = self.project();
        match op(this.io, cx) {
            Poll::Ready(r) => {
                *this.timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let stall = *this.stall;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: AsyncWrite> AsyncWrite for StallTimeout<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.watch(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.watch(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch(cx, |io, cx| io.poll_shutdown(cx))
    }
}
