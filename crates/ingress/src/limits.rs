//! The limits a client's connections and requests are held to.

use std::time::Duration;

/// How much a client may send, how long it may take, how many connections may be
/// open. [`Limits::default`] is what the server uses unless told otherwise.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A request body past this many bytes is refused: 413 (at once when
    /// `Content-Length` says so, else when the streamed body crosses it).
    pub max_request_body: u64,
    /// A request head past this many bytes is refused: 431 (HTTP/1.1: the read
    /// buffer, at least 8 KiB; HTTP/2: the header list size).
    pub max_header_bytes: usize,
    /// A request head must arrive in full within this, counted from when the
    /// connection (or a TLS handshake) starts waiting for it; an HTTP/1.1
    /// keep-alive connection waiting for its next request is closed after it too.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2:
    /// GOAWAY); a request body with no byte for this long is cut (408); a
    /// response the client does not read for this long is cut.
    pub idle_timeout: Duration,
    /// A backend's response head must come within this of the request body's
    /// last progress (its head, a chunk, its end): 504 otherwise. An upload that
    /// keeps moving is not cut however long it takes.
    pub response_timeout: Duration,
    /// Client connections open at once, all listeners together (an upgraded one
    /// counts until it closes); past it a new connection is closed at once.
    pub max_connections: usize,
    /// Requests (and upgraded connections) open to one service at once; past it
    /// 503.
    pub max_per_service: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_body: 64 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_per_service: 512,
        }
    }
}
