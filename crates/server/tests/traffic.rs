//! Services that serve: what a container reaches (egress under the policy, its
//! resolver, a namespace it cannot reconfigure), when it is ready, and how it is
//! reached. Every connection stays on this machine: "outside" is the host's
//! loopback, which pasta maps the container's gateway address to, watched by a
//! listener that records every connection.

mod common;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::json;

/// A listener on 127.0.0.1 that counts the connections it accepts.
struct Recorder {
    port: u16,
    seen: Arc<AtomicUsize>,
}

impl Recorder {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let mut c = c;
                let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = c.read(&mut [0u8; 64]);
            }
        });
        Recorder { port, seen }
    }
}

/// A DNS server on 127.0.0.1 answering every A question with `answer` (and
/// other types with no record): the containers' upstream in these tests.
fn dns_responder(answer: [u8; 4]) -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            // The question: QNAME labels, then QTYPE and QCLASS.
            let mut i = 12;
            while i < n && buf[i] != 0 {
                i += 1 + buf[i] as usize;
            }
            let end = (i + 5).min(n);
            let qtype = u16::from_be_bytes([buf[i + 1], buf[i + 2]]);
            let mut out = Vec::from(&buf[..2]);
            out.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(qtype == 1), 0, 0, 0, 0]);
            out.extend_from_slice(&buf[12..end]);
            if qtype == 1 {
                out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                out.extend_from_slice(&answer);
            }
            let _ = sock.send_to(&out, from);
        }
    });
    port
}

/// A busybox script that reports what the container can reach, then sleeps.
fn probe_script(port: u16, marker: &str) -> String {
    format!(
        "if echo x | nc -w 2 192.0.2.1 {port}; then echo egress:connected; else echo egress:refused; fi; \
         if ip link set lo down 2>/dev/null; then echo ns:reconfigured; else echo ns:locked; fi; \
         if ip addr | grep -q eth0; then echo link:eth0; else echo link:lo-only; fi; \
         nslookup app.test. 2>&1 | grep -q 10.9.8.7 && echo dns:answered || echo dns:none; \
         echo probe:done; {marker}"
    )
}

async fn output_when_done(c: &Client, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = c.get(&format!("{path}/logs")).await;
        let text = v.as_str().map(str::to_owned).unwrap_or_default();
        if text.contains("probe:done") {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the probe never finished:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn deploy_and_read(server: &Server, url: &str, network: Option<&str>) -> String {
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "team/app:probe", "registry": registry_body(url, "ci", PASSWORD)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    if let Some(network) = network {
        settings(&alice, json!({"network": network})).await;
    }
    let (s, d) = alice
        .post("/v1/projects/web/services/api/deployments", json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{d}");
    let path = format!(
        "/v1/projects/web/services/api/deployments/{}",
        d["id"].as_str().unwrap()
    );
    let d = wait_for_end(&alice, &path).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    let text = output_when_done(&alice, &path).await;
    let (s, _) = alice.delete("/v1/projects/web/services/api").await;
    assert_eq!(s, StatusCode::OK);
    text
}

/// Sets service web/api's settings through the API.
async fn settings(alice: &Client, body: serde_json::Value) {
    let (s, v) = alice.put("/v1/projects/web/services/api", body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// By default a container reaches neither the host's loopback (the berth API,
/// a database bound there) nor any private range; its resolver answers; its
/// root cannot take the rules down. Allowing a loopback range opens the host.
#[tokio::test(flavor = "multi_thread")]
async fn egress_follows_the_policy_and_the_container_cannot_change_it() {
    berth_testkit::require("runc");
    berth_testkit::require("pasta");
    let registry = Registry::start();
    let url = registry.url();
    let recorder = Recorder::start();
    let marker = format!("sleep {}", 3000 + rand::random::<u16>() as u32);
    registry.push_busybox("probe", &probe_script(recorder.port, &marker));
    let dns = dns_responder([10, 9, 8, 7]);

    // The default policy.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Db::Sqlite, &url, None);
    cfg.traffic.container_dns = vec![format!("127.0.0.1:{dns}").parse().unwrap()];
    let server = Server::start(cfg).await;
    let text = deploy_and_read(&server, &url, None).await;
    assert!(text.contains("egress:refused"), "{text}");
    assert!(text.contains("ns:locked"), "{text}");
    assert!(text.contains("link:eth0"), "{text}");
    assert!(text.contains("dns:answered"), "{text}");
    assert_eq!(
        recorder.seen.load(Ordering::SeqCst),
        0,
        "the host's loopback was reached"
    );
    server.running.stop().await;

    // The host's loopback allowed.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Db::Sqlite, &url, None);
    cfg.traffic.container_dns = vec![format!("127.0.0.1:{dns}").parse().unwrap()];
    cfg.traffic.egress_allow = vec!["127.0.0.1/32".parse().unwrap()];
    let server = Server::start(cfg).await;
    let text = deploy_and_read(&server, &url, None).await;
    assert!(text.contains("egress:connected"), "{text}");
    assert_eq!(recorder.seen.load(Ordering::SeqCst), 1);
    server.running.stop().await;

    // `none`: nothing but its own loopback.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, &url, None)).await;
    let text = deploy_and_read(&server, &url, Some("none")).await;
    assert!(text.contains("link:lo-only"), "{text}");
    assert!(text.contains("egress:refused"), "{text}");
    assert!(text.contains("dns:none"), "{text}");
    assert_eq!(recorder.seen.load(Ordering::SeqCst), 1);
    assert!(
        std::fs::read_dir(dir.path().join("netns"))
            .unwrap()
            .flatten()
            .next()
            .is_none(),
        "a terminated service's namespace is left"
    );
    server.running.stop().await;
}

/// A web app: busybox's httpd on port 8080 serving `body` at `/`, its
/// `/ready` only after a second (the health path).
fn web_script(body: &str, marker: &str) -> String {
    format!(
        "mkdir -p /www; echo {body} > /www/index.html; \
         (sleep 1; echo ok > /www/ready) & \
         busybox httpd -f -p 8080 -h /www & {marker}"
    )
}

async fn get_app(
    http: &reqwest::Client,
    ingress: std::net::SocketAddr,
    host: &str,
) -> (u16, String) {
    let r = http
        .get(format!("http://{ingress}/"))
        .header("host", host)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Ready means answering, the ingress routes by host name into the container's
/// namespace, an unknown host is a 404 that names nothing, and a redeploy under a
/// steady stream of requests fails none of them.
#[tokio::test(flavor = "multi_thread")]
async fn the_ingress_routes_to_the_ready_deployment_and_a_redeploy_drops_nothing() {
    berth_testkit::require("runc");
    berth_testkit::require("pasta");
    let registry = Registry::start();
    let url = registry.url();
    let marker = format!("sleep {}", 4000 + rand::random::<u16>() as u32);
    registry.push_busybox("v1", &web_script("hello-v1", &marker));
    registry.push_busybox("v2", &web_script("hello-v2", &marker));

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, &url, None)).await;
    let ingress = server.running.ingress.expect("the ingress listens");
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    settings(&alice, json!({"port": 8080, "health_path": "/ready"})).await;
    let (_, v) = alice.get("/v1/projects/web/services/api").await;
    assert_eq!(
        v["urls"],
        json!([format!("http://api.web.localhost:{}/", ingress.port())]),
        "{v}"
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    let deploy = |image: &'static str| {
        let alice = &alice;
        async move {
            if image != "team/app:v1" {
                let (s, v) = alice
                    .put(
                        "/v1/projects/web/services/api/registry",
                        json!({"image": image}),
                    )
                    .await;
                assert_eq!(s, StatusCode::OK, "{v}");
            }
            let (s, d) = alice
                .post("/v1/projects/web/services/api/deployments", json!({}))
                .await;
            assert_eq!(s, StatusCode::ACCEPTED, "{d}");
            let path = format!(
                "/v1/projects/web/services/api/deployments/{}",
                d["id"].as_str().unwrap()
            );
            let d = wait_for_end(alice, &path).await;
            if d["status"] != "DEPLOYED" {
                let (_, log) = alice.get(&format!("{path}/logs")).await;
                panic!("{d}\n{}", log.as_str().unwrap_or_default());
            }
            path
        }
    };
    let first = deploy("team/app:v1").await;
    let (_, log) = alice.get(&format!("{first}/logs")).await;
    let log = log.as_str().unwrap_or_default().to_owned();
    assert!(
        log.contains("ready: port 8080 (GET /ready) answered"),
        "{log}"
    );

    let (status, body) = get_app(&http, ingress, "api.web.localhost").await;
    assert_eq!((status, body.trim()), (200, "hello-v1"));
    let (status, body) = get_app(&http, ingress, "API.web.localhost:8441").await;
    assert_eq!(
        (status, body.trim()),
        (200, "hello-v1"),
        "host names are case-blind, ports ignored"
    );
    let (status, body) = get_app(&http, ingress, "nope.web.localhost").await;
    assert_eq!(status, 404);
    assert!(!body.contains("api") && !body.contains("web"), "{body}");

    // A steady loop of requests through a redeploy: none fails.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loop_task = {
        let (http, stop) = (http.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed, mut v2) = (0usize, Vec::new(), 0usize);
            while !stop.load(Ordering::SeqCst) {
                match http
                    .get(format!("http://{ingress}/"))
                    .header("host", "api.web.localhost")
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        ok += 1;
                        if r.text().await.unwrap_or_default().contains("v2") {
                            v2 += 1;
                        }
                    }
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed, v2)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    deploy("team/app:v2").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failed, v2) = loop_task.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok > 20 && v2 > 0, "{ok} requests, {v2} answered by v2");
    eprintln!("redeploy under load: {ok} requests, 0 failed, {v2} answered by the new deployment");

    let (s, _) = alice.delete("/v1/projects/web/services/api").await;
    assert_eq!(s, StatusCode::OK);
    let (status, _) = get_app(&http, ingress, "api.web.localhost").await;
    assert_eq!(status, 404, "a terminated service is not routed");
}
