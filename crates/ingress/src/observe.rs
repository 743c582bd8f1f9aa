//! What the proxy tells its caller about each request it routed.

use std::time::Duration;

use http::{Method, StatusCode};

/// One request routed to a service, as an access log line and a metric see it.
#[derive(Debug)]
pub struct Access<'a> {
    pub service_id: &'a str,
    pub deployment_id: &'a str,
    pub method: &'a Method,
    /// The path without its query (a query may carry secrets).
    pub path: &'a str,
    /// What the client was answered: the backend's status, or the proxy's own
    /// (413, 502, 503, 504).
    pub status: StatusCode,
    /// Response body bytes sent to the client.
    pub bytes_sent: u64,
    /// From the request's head to the end of its response body (for an upgraded
    /// connection: to the 101).
    pub duration: Duration,
}

/// Told of each request routed to a service, once, when its response ended.
/// Requests for hosts no service has are not told (they name no service).
/// Called on the proxy's tasks: keep it short (count, queue a line).
pub trait Observer: Send + Sync + 'static {
    fn observe(&self, access: &Access<'_>);
}

/// Tells nobody.
pub struct NoObserver;

impl Observer for NoObserver {
    fn observe(&self, _: &Access<'_>) {}
}
