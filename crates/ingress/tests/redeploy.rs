//! A redeploy as the server does it: `RouteTable::set` swaps the service's
//! backend in one step, the replaced one is drained (what it has in flight
//! finishes) while new requests go to the new one.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_ingress::{Drained, Limits};
use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const HOST: &str = "shop.example.com";

#[tokio::test]
async fn a_swapped_backend_gets_no_new_request_and_drain_waits_for_its_response_to_end() {
    let ingress = TestIngress::start(Limits::default()).await;
    // The old deployment answers slowly: its head at once, its body when the
    // test says.
    let old_hits = Arc::new(AtomicUsize::new(0));
    let (body_tx, mut bodies) = mpsc::unbounded_channel::<mpsc::Sender<Bytes>>();
    let old = Upstream::start({
        let hits = old_hits.clone();
        move |_req| {
            hits.fetch_add(1, Ordering::SeqCst);
            let bodies = body_tx.clone();
            async move {
                let (tx, body) = channel_body();
                bodies.send(tx).unwrap();
                Response::new(body)
            }
        }
    })
    .await;
    let new = Upstream::echo("new").await;
    assert!(ingress.route("svc", "dep-old", &[HOST], old.addr).is_none());

    // A request in flight on the old deployment, its body half sent.
    let mut send = http1(ingress.addr).await;
    let req = Request::get("/slow")
        .header("host", HOST)
        .body(empty())
        .unwrap();
    let resp = tokio::spawn(send.send_request(req));
    let old_body = within("the old backend's request", bodies.recv())
        .await
        .unwrap();
    let resp = within("the old head", resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut in_flight = resp.into_body();
    old_body.send(Bytes::from_static(b"old:")).await.unwrap();
    let first = within("the first chunk", in_flight.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "old:");

    // The new deployment is published: the old one comes back, still busy.
    let replaced = ingress
        .route("svc", "dep-new", &[HOST], new.addr)
        .expect("the old backend is handed back");
    assert_eq!(&**replaced.deployment_id(), "dep-old");
    assert_eq!(replaced.in_flight(), 1);
    let drained = tokio::spawn({
        let replaced = replaced.clone();
        async move { replaced.drain(PATIENCE).await }
    });

    // New requests go to the new deployment at once, while the old one finishes.
    for _ in 0..3 {
        let (status, _, body) = get(ingress.addr, HOST, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(parse_json(&body)["name"], "new");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !drained.is_finished(),
        "the drain ended with a response in flight"
    );
    assert_eq!(old_hits.load(Ordering::SeqCst), 1);

    // The old response ends: the drain with it, and the client got all of it.
    old_body.send(Bytes::from_static(b"done")).await.unwrap();
    drop(old_body);
    let rest = within("the rest of the old body", in_flight.collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "done");
    assert_eq!(within("the drain", drained).await.unwrap(), Drained::Idle);
    assert_eq!(replaced.in_flight(), 0);
}

#[tokio::test]
async fn drain_waits_for_an_upgraded_connection_to_close() {
    let ingress = TestIngress::start(Limits::default()).await;
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let old = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    let _ = ws
                        .send(Message::text(format!("old: {}", msg.to_text().unwrap())))
                        .await;
                }
            });
        }
    });
    let new = Upstream::echo("new").await;
    ingress.route("svc", "dep-old", &[HOST], old);

    let stream = TcpStream::connect(ingress.addr).await.unwrap();
    let (mut ws, _) = within(
        "the handshake",
        tokio_tungstenite::client_async(format!("ws://{HOST}/live"), stream),
    )
    .await
    .unwrap();

    let replaced = ingress.route("svc", "dep-new", &[HOST], new.addr).unwrap();
    assert_eq!(replaced.in_flight(), 1);
    let drained = tokio::spawn({
        let replaced = replaced.clone();
        async move { replaced.drain(PATIENCE).await }
    });
    assert_eq!(
        parse_json(&get(ingress.addr, HOST, "/").await.2)["name"],
        "new"
    );

    // The socket still talks to the old deployment, and holds the drain open.
    ws.send(Message::text("still here")).await.unwrap();
    let echoed = within("the old echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("old: still here"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !drained.is_finished(),
        "the drain ended with a WebSocket open"
    );

    ws.close(None).await.unwrap();
    drop(ws);
    assert_eq!(within("the drain", drained).await.unwrap(), Drained::Idle);
}
