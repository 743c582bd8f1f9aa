//! Bodies as they stream through the proxy, never buffered whole: the request's
//! on its way up (limited in size, and in how long it may stall), the response's on
//! its way down (counted, and told to the observer when it ends).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tokio::time::Sleep;

use crate::backend::InFlight;
use crate::observe::{Access, Observer};
use crate::route::Open;
use crate::BoxError;

/// Why a request body stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestBodyError {
    #[error("request body over the limit")]
    TooLarge,
    #[error("request body stalled")]
    Stalled,
}

/// How a request body is getting on on its way up, shared by the body (which the
/// backend's connection polls) and the proxy waiting for the backend's answer.
/// The backend's clock ([`Upload::answer_due`]) runs only while the client is
/// not the one being waited for: an upload slower than the response timeout is
/// not cut while it keeps moving, and a client that stalls is the body's own
/// limit (`idle`), answered as such, not blamed on the backend.
pub(crate) struct Upload {
    started: Instant,
    /// Milliseconds from `started` to the last sign of progress: a frame passed
    /// up, the client's wait ended, the body ended.
    progress_ms: AtomicU64,
    waiting_on_client: AtomicBool,
    failure: Mutex<Option<RequestBodyError>>,
}

impl Upload {
    pub(crate) fn new() -> Arc<Upload> {
        Arc::new(Upload {
            started: Instant::now(),
            progress_ms: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
            failure: Mutex::new(None),
        })
    }

    /// Why the body was cut, if it was.
    pub(crate) fn failure(&self) -> Option<RequestBodyError> {
        *self.failure.lock().expect("upload lock")
    }

    /// When the backend must have answered: `timeout` after the last progress;
    /// `None` while the body waits for the client.
    pub(crate) fn answer_due(&self, timeout: Duration) -> Option<Instant> {
        if self.waiting_on_client.load(Ordering::Acquire) {
            return None;
        }
        let progress = Duration::from_millis(self.progress_ms.load(Ordering::Acquire));
        Some(self.started + progress + timeout)
    }

    fn progressed(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.progress_ms.fetch_max(ms, Ordering::AcqRel);
    }

    fn waiting(&self, on_client: bool) {
        if !on_client {
            self.progressed();
        }
        self.waiting_on_client.store(on_client, Ordering::Release);
    }

    fn fail(&self, why: RequestBodyError) -> BoxError {
        *self.failure.lock().expect("upload lock") = Some(why);
        why.into()
    }
}

pin_project_lite::pin_project! {
    /// The client's request body on its way up: an error past `limit` bytes, or
    /// when no byte came for `idle`; either told to the [`Upload`] (for the proxy
    /// to answer 413 or 408).
    pub(crate) struct LimitedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        idle: Duration,
        stall: Option<Pin<Box<Sleep>>>,
        upload: Arc<Upload>,
    }

    impl<B> PinnedDrop for LimitedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Whatever was awaited of the client, nothing is now.
            this.upload.waiting(false);
        }
    }
}

impl<B> LimitedBody<B> {
    pub(crate) fn new(inner: B, limit: u64, idle: Duration, upload: Arc<Upload>) -> Self {
        LimitedBody {
            inner,
            remaining: limit,
            idle,
            stall: None,
            upload,
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Pending => {
                this.upload.waiting(true);
                let idle = *this.idle;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.upload.waiting(false);
                        Poll::Ready(Some(Err(this.upload.fail(RequestBodyError::Stalled))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Ready(frame) => {
                *this.stall = None;
                this.upload.waiting(false);
                match frame {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let n = data.len() as u64;
                            if n > *this.remaining {
                                return Poll::Ready(Some(Err(this
                                    .upload
                                    .fail(RequestBodyError::TooLarge))));
                            }
                            *this.remaining -= n;
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the proxy answers a client: a backend's body streaming through, or a
/// short page of its own; when routed, metered for the access log.
pub struct ProxyBody {
    inner: UnsyncBoxBody<Bytes, BoxError>,
    meter: Option<Meter>,
    /// Whatever must live as long as the body (the connection's count of what it
    /// has in flight).
    held: Option<Box<dyn Send>>,
}

impl ProxyBody {
    pub(crate) fn stream(inner: UnsyncBoxBody<Bytes, BoxError>) -> ProxyBody {
        ProxyBody {
            inner,
            meter: None,
            held: None,
        }
    }

    pub(crate) fn full(bytes: Bytes) -> ProxyBody {
        ProxyBody::stream(Full::new(bytes).map_err(|e| match e {}).boxed_unsync())
    }

    pub(crate) fn empty() -> ProxyBody {
        ProxyBody::stream(
            http_body_util::Empty::new()
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
    }

    pub(crate) fn metered(mut self, meter: Meter) -> ProxyBody {
        self.meter = Some(meter);
        self
    }

    pub(crate) fn holding(mut self, held: impl Send + 'static) -> ProxyBody {
        self.held = Some(Box::new(held));
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(meter), Some(data)) = (self.meter.as_mut(), frame.data_ref()) {
                    meter.bytes += data.len() as u64;
                }
            }
            // The end: told now, not when hyper drops the body.
            Poll::Ready(None) => {
                self.meter = None;
                self.held = None;
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One routed request, told to the observer once, when its response body ended
/// or was dropped (the client went away); it holds the request's place in the
/// backend's in-flight count and in the service's limit until then.
pub(crate) struct Meter {
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) service_id: Arc<str>,
    pub(crate) deployment_id: Arc<str>,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) status: StatusCode,
    pub(crate) started: Instant,
    pub(crate) bytes: u64,
    pub(crate) guards: (Option<InFlight>, Option<Open>),
}

impl Drop for Meter {
    fn drop(&mut self) {
        // Released first, so the count is right when the observer looks.
        self.guards = (None, None);
        self.observer.observe(&Access {
            service_id: &self.service_id,
            deployment_id: &self.deployment_id,
            method: &self.method,
            path: &self.path,
            status: self.status,
            bytes_sent: self.bytes,
            duration: self.started.elapsed(),
        });
    }
}
