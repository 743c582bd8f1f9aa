//! The limits a client is held to, and the proxy's own answers when a backend
//! fails: 413, 431, slowloris and idle cut-offs, connection and per-service
//! limits, 502 and 504. `quick_limits` keeps every timeout under a second.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_ingress::Limits;
use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// A backend that counts the requests it got and reads each body whole before
/// answering with its length.
async fn counting() -> (Upstream, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let upstream = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            match req.into_body().collect().await {
                Ok(body) => Response::new(full(body.to_bytes().len().to_string())),
                Err(_) => Response::new(full("cut")),
            }
        }
    })
    .await;
    (upstream, hits)
}

async fn ingress_with(limits: Limits) -> (TestIngress, Upstream, Arc<AtomicUsize>) {
    let ingress = TestIngress::start(limits).await;
    let (upstream, hits) = counting().await;
    ingress.route("svc", "dep", &["web.example.com"], upstream.addr);
    (ingress, upstream, hits)
}

async fn post(ingress: &TestIngress, body: Body) -> (StatusCode, Bytes) {
    let mut send = http1(ingress.addr).await;
    let req = Request::post("/upload")
        .header("host", "web.example.com")
        .body(body)
        .unwrap();
    let resp = within("an answer", send.send_request(req)).await.unwrap();
    let (status, _, body) = read_whole(resp).await;
    (status, body)
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_413_and_never_reaches_the_backend() {
    let (ingress, _upstream, hits) = ingress_with(quick_limits()).await;
    let (status, body) = post(&ingress, full(vec![b'x'; 1025])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body, "Payload too large\n");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // At the limit exactly: through.
    let (status, body) = post(&ingress, full(vec![b'x'; 1024])).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"1024"[..]));
}

#[tokio::test]
async fn a_streamed_body_crossing_the_limit_is_413() {
    let (ingress, _upstream, _hits) = ingress_with(quick_limits()).await;
    // Chunked, no length declared: the proxy finds out on the way.
    let (chunks, body) = channel_body();
    let sending = tokio::spawn(async move {
        for _ in 0..4 {
            if chunks.send(Bytes::from(vec![b'x'; 400])).await.is_err() {
                break;
            }
        }
    });
    let (status, body) = post(&ingress, body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body, "Payload too large\n");
    sending.await.unwrap();
}

#[tokio::test]
async fn a_head_over_the_limit_is_431() {
    let (ingress, _upstream, hits) = ingress_with(quick_limits()).await;
    let big = "x".repeat(16 * 1024);

    // HTTP/1.1: the head does not fit the read buffer.
    let mut raw = TcpStream::connect(ingress.addr).await.unwrap();
    let head = format!("GET / HTTP/1.1\r\nHost: web.example.com\r\nX-Big: {big}\r\n\r\n");
    let _ = raw.write_all(head.as_bytes()).await;
    let (seen, _) = read_until_closed(&mut raw, Instant::now(), PATIENCE)
        .await
        .expect("the connection is closed");
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 431"), "{seen}");

    // HTTP/2: the header list is over the size the server announced.
    let mut h2 = h2c(ingress.addr).await;
    let req = Request::get("http://web.example.com/")
        .header("x-big", &big)
        .body(empty())
        .unwrap();
    let status = match within("an h2 answer", h2.send_request(req)).await {
        Ok(resp) => resp.status(),
        Err(e) => panic!("the h2 request failed instead of a 431: {e}"),
    };
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_at_the_head_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(30),
        ..quick_limits()
    };
    let (ingress, _upstream, hits) = ingress_with(limits).await;
    // A head that would take ~4 s at this pace; every byte comes well within
    // any per-read timeout, so only a deadline on the whole head stops it.
    let head =
        b"GET / HTTP/1.1\r\nHost: web.example.com\r\nX-Slow: abcdefghijklmnopqrstuvwxyz\r\n\r\n";
    for first_byte in [&b"G"[..], &b"P"[..]] {
        // `P` starts like the HTTP/2 preface: the protocol is still undecided.
        let stream = TcpStream::connect(ingress.addr).await.unwrap();
        let started = Instant::now();
        let (mut read, mut write) = stream.into_split();
        let mut bytes = first_byte.to_vec();
        bytes.extend_from_slice(if first_byte == b"P" {
            b"RI * HTTP/2.0\r\n"
        } else {
            &head[1..]
        });
        let slow =
            tokio::spawn(
                async move { dribble(&mut write, &bytes, Duration::from_millis(50)).await },
            );
        let (seen, after) = read_until_closed(&mut read, started, PATIENCE)
            .await
            .expect("the slow connection is closed");
        assert!(
            after < Duration::from_millis(2500),
            "closed only after {after:?}"
        );
        assert!(!String::from_utf8_lossy(&seen).contains(" 200 "));
        slow.abort();
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_head_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(30),
        ..quick_limits()
    };
    let (ingress, _upstream, _hits) = ingress_with(limits).await;
    let mut silent = TcpStream::connect(ingress.addr).await.unwrap();
    let (seen, after) = read_until_closed(&mut silent, Instant::now(), PATIENCE)
        .await
        .expect("the silent connection is closed");
    assert!(seen.is_empty() || String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 408"));
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(2500)).contains(&after),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // The head timeout (which also bounds the wait for a next request) is long
    // here, so what closes the connection is the idle timeout.
    let limits = Limits {
        header_read_timeout: Duration::from_secs(8),
        idle_timeout: Duration::from_millis(500),
        ..quick_limits()
    };
    let (ingress, _upstream, _hits) = ingress_with(limits).await;

    let mut raw = TcpStream::connect(ingress.addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
        .await
        .unwrap();
    let answered = Instant::now();
    let (seen, after) = read_until_closed(&mut raw, answered, PATIENCE)
        .await
        .expect("the idle connection is closed");
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(4000)).contains(&after),
        "closed after {after:?}"
    );

    // HTTP/2: the connection ends (GOAWAY) once no stream has been open for it.
    let stream = TcpStream::connect(ingress.addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let resp = h2
        .send_request(
            Request::get("http://web.example.com/")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    read_whole(resp).await;
    let idle_since = Instant::now();
    within("the h2 connection to end", conn).await.unwrap().ok();
    let after = idle_since.elapsed();
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(4000)).contains(&after),
        "h2 closed after {after:?}"
    );
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_at_once() {
    let limits = Limits {
        max_connections: 2,
        idle_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(30),
        ..quick_limits()
    };
    let (ingress, _upstream, _hits) = ingress_with(limits).await;
    let get_on = |send: &mut hyper::client::conn::http1::SendRequest<Body>| {
        send.send_request(
            Request::get("/")
                .header("host", "web.example.com")
                .body(empty())
                .unwrap(),
        )
    };
    // Two connections, each served once and kept open.
    let mut first = http1(ingress.addr).await;
    let mut second = http1(ingress.addr).await;
    for send in [&mut first, &mut second] {
        assert_eq!(get_on(send).await.unwrap().status(), StatusCode::OK);
    }
    // A third is accepted by the kernel and closed by the ingress, unanswered.
    assert!(refused(&ingress).await, "a third connection was served");

    // One closes: there is room again.
    drop(first);
    within("room for a new connection", async {
        while refused(&ingress).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(get_on(&mut second).await.unwrap().status(), StatusCode::OK);
}

/// Whether a new connection is closed without an answer to its request.
async fn refused(ingress: &TestIngress) -> bool {
    let mut raw = TcpStream::connect(ingress.addr).await.unwrap();
    let _ = raw
        .write_all(b"GET / HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
        .await;
    let (seen, _) = read_until_closed(&mut raw, Instant::now(), PATIENCE)
        .await
        .expect("the connection ends");
    seen.is_empty()
}

#[tokio::test]
async fn an_upgraded_connection_still_counts_against_the_connection_limit() {
    let limits = Limits {
        max_connections: 1,
        idle_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(30),
        ..quick_limits()
    };
    let ingress = TestIngress::start(limits).await;
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // A plain request (a probe of the limit) is no handshake: dropped.
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() {
                        break;
                    }
                }
            });
        }
    });
    ingress.route("svc", "dep", &["web.example.com"], backend);

    let stream = TcpStream::connect(ingress.addr).await.unwrap();
    let (mut ws, _) = within(
        "the handshake",
        tokio_tungstenite::client_async("ws://web.example.com/", stream),
    )
    .await
    .unwrap();
    assert!(
        refused(&ingress).await,
        "a connection past the limit was served while a WebSocket is open"
    );
    ws.close(None).await.unwrap();
    drop(ws);
    within("room once the WebSocket closed", async {
        while refused(&ingress).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn requests_past_the_per_service_limit_get_503_and_other_services_do_not() {
    let ingress = TestIngress::start(Limits {
        max_per_service: 2,
        response_timeout: Duration::from_secs(30),
        ..quick_limits()
    })
    .await;
    // A backend that holds every request until the gate opens.
    let (gate, gate_rx) = watch::channel(false);
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let held = Upstream::start(move |_req| {
        let mut gate = gate_rx.clone();
        let arrived = arrived_tx.clone();
        async move {
            arrived.send(()).unwrap();
            let _ = gate.wait_for(|open| *open).await;
            Response::new(full("done"))
        }
    })
    .await;
    let other = Upstream::echo("other").await;
    ingress.route("svc-held", "dep", &["held.example.com"], held.addr);
    ingress.route("svc-other", "dep", &["other.example.com"], other.addr);

    let addr = ingress.addr;
    let waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(addr, "held.example.com", "/").await }))
        .collect();
    for _ in 0..2 {
        within("a held request at the backend", arrived.recv()).await;
    }
    let (status, _, body) = get(addr, "held.example.com", "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "Service unavailable\n");
    assert_eq!(get(addr, "other.example.com", "/").await.0, StatusCode::OK);

    gate.send_replace(true);
    for w in waiting {
        let (status, _, body) = within("a held answer", w).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"done"[..]));
    }
    assert_eq!(get(addr, "held.example.com", "/").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_backend_that_cannot_be_reached_is_502() {
    let ingress = TestIngress::start(quick_limits()).await;
    // A loopback port nothing listens on any more.
    let gone = std::net::TcpListener::bind((LOOPBACK, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    ingress.route("svc", "dep", &["web.example.com"], gone);
    let (status, _, body) = get(ingress.addr, "web.example.com", "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, "Bad gateway\n");
}

#[tokio::test]
async fn a_backend_slower_than_the_response_timeout_is_504() {
    let ingress = TestIngress::start(quick_limits()).await;
    let slow = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(20)).await;
        Response::new(full("too late"))
    })
    .await;
    ingress.route("svc", "dep", &["web.example.com"], slow.addr);
    let started = Instant::now();
    let (status, _, body) = get(ingress.addr, "web.example.com", "/").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body, "Gateway timeout\n");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_upload_longer_than_the_response_timeout_is_not_cut_while_it_progresses() {
    // Each chunk comes well within the stall limit, the whole upload takes longer
    // than the response timeout: the backend cannot answer before it has it all.
    let limits = Limits {
        response_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(800),
        ..quick_limits()
    };
    let (ingress, _upstream, _hits) = ingress_with(limits).await;
    let (chunks, body) = channel_body();
    let sending = tokio::spawn(async move {
        for _ in 0..6 {
            chunks
                .send(Bytes::from_static(b"0123456789"))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let (status, body) = post(&ingress, body).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"60"[..]));
    sending.await.unwrap();
}

#[tokio::test]
async fn a_request_body_that_stalls_is_cut_after_the_idle_timeout_with_408() {
    let limits = Limits {
        response_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_millis(500),
        ..quick_limits()
    };
    let (ingress, _upstream, _hits) = ingress_with(limits).await;
    let (chunks, body) = channel_body();
    chunks
        .send(Bytes::from_static(b"a start, then nothing"))
        .await
        .unwrap();
    let started = Instant::now();
    let (status, body) = post(&ingress, body).await;
    assert_eq!(
        status,
        StatusCode::REQUEST_TIMEOUT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(chunks);
}
