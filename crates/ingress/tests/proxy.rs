//! The proxy end to end on loopback: routing by `Host` and `:authority`, the 404
//! for unknown hosts, bodies streaming both ways, protocol upgrades, and the
//! headers a backend gets.

mod common;

use berth_ingress::Limits;
use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Two services on one ingress; each backend says its name and what it got.
async fn two_services() -> (TestIngress, Upstream, Upstream) {
    let ingress = TestIngress::start(Limits::default()).await;
    let web = Upstream::echo("web").await;
    let api = Upstream::echo("api").await;
    ingress.route(
        "svc-web",
        "dep-web",
        &["web.example.com", "web.shop.localhost"],
        web.addr,
    );
    ingress.route("svc-api", "dep-api", &["api.example.com"], api.addr);
    (ingress, web, api)
}

#[tokio::test]
async fn routes_by_host_in_any_case_with_or_without_a_port_or_a_trailing_dot() {
    let (ingress, _web, _api) = two_services().await;
    for (host, expect) in [
        ("web.example.com", "web"),
        ("WEB.Example.COM", "web"),
        ("web.example.com:8441", "web"),
        ("web.example.com.", "web"),
        ("Web.Example.Com.:80", "web"),
        ("web.shop.localhost", "web"),
        ("api.example.com", "api"),
        ("API.EXAMPLE.COM:443", "api"),
    ] {
        let (status, _, body) = get(ingress.addr, host, "/where?x=1").await;
        assert_eq!(status, StatusCode::OK, "{host}");
        let seen = parse_json(&body);
        assert_eq!(seen["name"], expect, "{host}");
        assert_eq!(seen["path"], "/where?x=1", "{host}");
        // The backend gets the client's Host as sent.
        assert_eq!(seen["headers"]["host"][0], host, "{host}");
    }
}

#[tokio::test]
async fn http2_with_prior_knowledge_routes_by_authority() {
    let (ingress, _web, _api) = two_services().await;
    let mut h2 = h2c(ingress.addr).await;
    for (uri, expect) in [
        ("http://api.example.com/v1", "api"),
        ("http://Web.Example.COM.:8441/", "web"),
    ] {
        let req = Request::get(uri).body(empty()).unwrap();
        let resp = within("an h2 answer", h2.send_request(req)).await.unwrap();
        assert_eq!(resp.version(), Version::HTTP_2);
        let (status, _, body) = read_whole(resp).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let seen = parse_json(&body);
        assert_eq!(seen["name"], expect, "{uri}");
        // Backends are spoken to in HTTP/1.1, with the authority as Host.
        assert_eq!(seen["version"], "HTTP/1.1", "{uri}");
        let authority = uri.trim_start_matches("http://").split('/').next().unwrap();
        assert_eq!(seen["headers"]["host"][0], authority, "{uri}");
    }
    // An unknown authority on the same connection: the plain 404.
    let req = Request::get("http://nope.example.com/")
        .body(empty())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_hosts_get_a_plain_404_that_names_nothing() {
    let (ingress, _web, _api) = two_services().await;
    let routed = [
        "web.example.com",
        "web.shop.localhost",
        "api.example.com",
        "svc-web",
        "svc-api",
        "dep-web",
        "dep-api",
        "example",
    ];
    for host in [
        "nope.example.com",
        "web.example.org",
        "127.0.0.1",
        "[::1]:80",
        "web",
        "",
    ] {
        let (status, headers, body) = get(ingress.addr, host, "/").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{host:?}");
        assert_eq!(body, "Not found\n", "{host:?}");
        for name in routed {
            for v in headers.values() {
                assert!(
                    !v.to_str().unwrap().contains(name),
                    "a 404 header names {name}"
                );
            }
        }
        assert!(headers.get("server").is_none(), "the 404 names no server");
    }
    // No Host at all (HTTP/1.0): the same page.
    let mut raw = TcpStream::connect(ingress.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"GET / HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let (seen, _) = read_until_closed(&mut raw, std::time::Instant::now(), PATIENCE)
        .await
        .unwrap();
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.0 404"), "{seen}");
    assert!(seen.ends_with("\r\n\r\nNot found\n"), "{seen}");
}

#[tokio::test]
async fn a_request_body_reaches_the_backend_before_the_client_has_finished_sending_it() {
    let ingress = TestIngress::start(Limits::default()).await;
    // The backend reports each chunk as it arrives, then answers with the total.
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<Bytes>();
    let upstream = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let arrived = arrived_tx.clone();
        async move {
            let mut body = req.into_body();
            let mut total = 0;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    total += data.len();
                    let _ = arrived.send(data);
                }
            }
            Response::new(full(format!("{total}")))
        }
    })
    .await;
    ingress.route("svc", "dep", &["up.example.com"], upstream.addr);

    for protocol in [Version::HTTP_11, Version::HTTP_2] {
        let (chunks, body) = channel_body();
        let answer = if protocol == Version::HTTP_11 {
            let mut send = http1(ingress.addr).await;
            let req = Request::post("/upload")
                .header("host", "up.example.com")
                .body(body)
                .unwrap();
            tokio::spawn(send.send_request(req))
        } else {
            let mut send = h2c(ingress.addr).await;
            let req = Request::post("http://up.example.com/upload")
                .body(body)
                .unwrap();
            tokio::spawn(send.send_request(req))
        };
        // Each chunk must reach the backend while the client still holds the
        // rest: a proxy that buffered the body would never show the first one.
        for chunk in ["first chunk;", "second chunk;", "third"] {
            chunks.send(Bytes::from(chunk)).await.unwrap();
            let got = within("the chunk at the backend", arrived.recv())
                .await
                .unwrap();
            assert_eq!(got, chunk, "{protocol:?}");
        }
        drop(chunks);
        let resp = within("the answer", answer).await.unwrap().unwrap();
        let (status, _, body) = read_whole(resp).await;
        assert_eq!(status, StatusCode::OK, "{protocol:?}");
        assert_eq!(body, "first chunk;second chunk;third".len().to_string());
    }
}

#[tokio::test]
async fn a_response_body_arrives_chunk_by_chunk_as_the_backend_sends_it() {
    let ingress = TestIngress::start(Limits::default()).await;
    // The backend hands the test the sending end of its response body.
    let (body_tx, mut bodies) = mpsc::unbounded_channel::<mpsc::Sender<Bytes>>();
    let upstream = Upstream::start(move |_req| {
        let bodies = body_tx.clone();
        async move {
            let (tx, body) = channel_body();
            bodies.send(tx).unwrap();
            Response::new(body)
        }
    })
    .await;
    ingress.route("svc", "dep", &["down.example.com"], upstream.addr);

    for protocol in [Version::HTTP_11, Version::HTTP_2] {
        let resp = if protocol == Version::HTTP_11 {
            let mut send = http1(ingress.addr).await;
            let req = Request::get("/stream")
                .header("host", "down.example.com")
                .body(empty())
                .unwrap();
            tokio::spawn(send.send_request(req))
        } else {
            let mut send = h2c(ingress.addr).await;
            let req = Request::get("http://down.example.com/stream")
                .body(empty())
                .unwrap();
            tokio::spawn(send.send_request(req))
        };
        let chunks = within("the backend's request", bodies.recv())
            .await
            .unwrap();
        let resp = within("the response head", resp).await.unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{protocol:?}");
        let mut body = resp.into_body();
        // The next chunk is only made once the client has read the last one.
        for chunk in ["one;", "two;", "three"] {
            chunks.send(Bytes::from(chunk)).await.unwrap();
            let frame = within("a chunk at the client", body.frame())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(frame.into_data().unwrap(), chunk, "{protocol:?}");
        }
        drop(chunks);
        // HTTP/2 may end the stream with an empty DATA frame.
        let rest = within("the end of the body", body.collect()).await.unwrap();
        assert_eq!(rest.to_bytes(), "", "{protocol:?}");
    }
}

#[tokio::test]
async fn a_websocket_upgrade_passes_the_101_on_and_echoes_both_ways() {
    let ingress = TestIngress::start(Limits::default()).await;
    // A WebSocket server that greets first (bytes from the backend unprompted),
    // then echoes.
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                ws.send(Message::text("welcome")).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    ws.send(msg).await.unwrap();
                }
            });
        }
    });
    ingress.route("svc", "dep", &["chat.example.com"], backend);

    let stream = TcpStream::connect(ingress.addr).await.unwrap();
    let (mut ws, resp) = within(
        "the handshake",
        tokio_tungstenite::client_async("ws://chat.example.com/socket", stream),
    )
    .await
    .expect("the upgrade goes through");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        resp.headers()["upgrade"].to_str().unwrap().to_lowercase(),
        "websocket"
    );
    assert!(resp.headers().contains_key("sec-websocket-accept"));

    assert_eq!(next(&mut ws).await, Message::text("welcome"));
    for msg in [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text("x".repeat(100_000)),
    ] {
        ws.send(msg.clone()).await.unwrap();
        assert_eq!(next(&mut ws).await, msg);
    }
    ws.close(None).await.unwrap();
}

async fn next(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> Message {
    within("a message", ws.next()).await.unwrap().unwrap()
}

#[tokio::test]
async fn forwarded_headers_are_the_proxys_own_and_hop_by_hop_headers_go_no_further() {
    let ingress = TestIngress::start(Limits::default()).await;
    // The backend echoes the request's headers, and sends hop-by-hop headers of
    // its own back.
    let upstream = Upstream::start(|req| async move {
        let mut resp = json(&describe("web", &req));
        let h = resp.headers_mut();
        h.insert("connection", "x-backend-hop".parse().unwrap());
        h.insert("x-backend-hop", "secret".parse().unwrap());
        h.insert("proxy-authenticate", "Basic realm=x".parse().unwrap());
        h.insert("x-backend-end", "kept".parse().unwrap());
        resp
    })
    .await;
    ingress.route("svc", "dep", &["web.example.com"], upstream.addr);

    let mut send = http1(ingress.addr).await;
    let req = Request::get("/h")
        .header("host", "Web.Example.com:8441")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-for", "7.7.7.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=6.6.6.6;proto=https")
        .header("connection", "keep-alive, x-client-hop")
        .header("x-client-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("te", "trailers")
        .header("x-client-end", "kept")
        .body(empty())
        .unwrap();
    let resp = within("an answer", send.send_request(req)).await.unwrap();
    let (status, headers, body) = read_whole(resp).await;
    assert_eq!(status, StatusCode::OK);
    let seen = parse_json(&body);
    let got = &seen["headers"];
    assert_eq!(got["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(got["x-forwarded-proto"], serde_json::json!(["http"]));
    assert_eq!(
        got["x-forwarded-host"],
        serde_json::json!(["Web.Example.com:8441"])
    );
    assert_eq!(got["x-client-end"], serde_json::json!(["kept"]));
    for gone in [
        "forwarded",
        "x-client-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
    ] {
        assert!(got.get(gone).is_none(), "{gone} reached the backend: {got}");
    }
    // hyper's own client may say `connection: keep-alive`; nothing the client named.
    if let Some(c) = got.get("connection") {
        assert!(!c.to_string().contains("x-client-hop"), "{c}");
    }

    assert_eq!(headers["x-backend-end"], "kept");
    for gone in ["x-backend-hop", "proxy-authenticate"] {
        assert!(headers.get(gone).is_none(), "{gone} reached the client");
    }
}
