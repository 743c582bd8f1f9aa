//! TLS from a directory of PEM files, checked by a real client (reqwest on
//! rustls) that trusts only the test's own CA: the certificate chosen by SNI,
//! HTTP/2 by ALPN, the scheme the backend is told.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use berth_ingress::{CertificateSource, Limits, TlsListen};
use common::certs::{self, TestCa};
use common::*;
use http::Version;

/// An ingress whose TLS listener serves the PEM files in a temporary directory:
/// `a.crt` for a.example.com, `b.crt` for b.example.com, `wild.crt` for
/// *.apps.example.com; each host routed to a backend of its name.
struct PemIngress {
    ingress: TestIngress,
    ca: TestCa,
    leaves: Vec<(&'static str, certs::Leaf)>,
    _backends: Vec<Upstream>,
    dir: tempfile::TempDir,
}

async fn pem_ingress() -> PemIngress {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("berth ingress test CA");
    let leaves = vec![
        ("a", ca.leaf(&["a.example.com"])),
        ("b", ca.leaf(&["b.example.com"])),
        ("wild", ca.leaf(&["*.apps.example.com"])),
    ];
    for (stem, leaf) in &leaves {
        leaf.write(dir.path(), stem);
    }
    let tls = TlsListen {
        listen: (LOOPBACK, 0).into(),
        certificates: CertificateSource::PemDir(dir.path().to_owned()),
    };
    let ingress = TestIngress::start_with(Limits::default(), Some(tls), 0).await;
    let mut backends = Vec::new();
    for (name, host) in [
        ("a", "a.example.com"),
        ("b", "b.example.com"),
        ("wild", "web.apps.example.com"),
        ("nocert", "c.example.com"),
    ] {
        let up = Upstream::echo(name).await;
        ingress.route(name, name, &[host], up.addr);
        backends.push(up);
    }
    PemIngress {
        ingress,
        ca,
        leaves,
        _backends: backends,
        dir,
    }
}

impl PemIngress {
    fn tls_addr(&self) -> SocketAddr {
        self.ingress.tls_addr.expect("a TLS listener")
    }

    fn leaf(&self, stem: &str) -> &certs::Leaf {
        &self.leaves.iter().find(|(s, _)| *s == stem).unwrap().1
    }

    /// A client that trusts only the test CA and finds `hosts` at the TLS
    /// listener.
    fn client(&self, hosts: &[&str]) -> reqwest::ClientBuilder {
        https_client(&self.ca.pem(), hosts, self.tls_addr())
    }
}

#[tokio::test]
async fn the_certificate_is_chosen_by_sni_and_verified_by_a_real_client() {
    let t = pem_ingress().await;
    let port = t.tls_addr().port();
    let hosts = ["a.example.com", "b.example.com", "web.apps.example.com"];
    let client = t.client(&hosts).build().unwrap();
    for (host, stem, backend) in [
        ("a.example.com", "a", "a"),
        ("b.example.com", "b", "b"),
        // A wildcard serves a name one label below it.
        ("web.apps.example.com", "wild", "wild"),
    ] {
        let resp = within(
            "an HTTPS answer",
            client.get(format!("https://{host}:{port}/x")).send(),
        )
        .await
        .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(resp.status(), 200, "{host}");
        let served = peer_certificate(&resp);
        assert_eq!(
            served,
            t.leaf(stem).der,
            "{host} was served another certificate"
        );
        let seen = certs::read(&served);
        assert_eq!(seen.issuer, "CN=berth ingress test CA");
        let seen_json = parse_json(&resp.bytes().await.unwrap());
        assert_eq!(seen_json["name"], backend);
        // The backend is told the client came over TLS.
        assert_eq!(seen_json["headers"]["x-forwarded-proto"][0], "https");
    }
}

#[tokio::test]
async fn a_name_without_a_certificate_fails_the_handshake() {
    let t = pem_ingress().await;
    let port = t.tls_addr().port();
    // Routed, but no file names it (nor a wildcard above it).
    let client = t
        .client(&["c.example.com", "deep.web.apps.example.com"])
        .build()
        .unwrap();
    for host in ["c.example.com", "deep.web.apps.example.com"] {
        let err = within(
            "the handshake",
            client.get(format!("https://{host}:{port}/")).send(),
        )
        .await
        .expect_err("no certificate was there to serve");
        assert!(err.is_connect(), "{host}: {err:?}");
    }
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_http1_still_served() {
    let t = pem_ingress().await;
    let url = format!("https://a.example.com:{}/", t.tls_addr().port());
    let h2 = t.client(&["a.example.com"]).build().unwrap();
    let resp = within("an h2 answer", h2.get(&url).send()).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(parse_json(&resp.bytes().await.unwrap())["name"], "a");

    let h1 = t.client(&["a.example.com"]).http1_only().build().unwrap();
    let resp = within("an HTTP/1.1 answer", h1.get(&url).send())
        .await
        .unwrap();
    assert_eq!(resp.version(), Version::HTTP_11);
    assert_eq!(parse_json(&resp.bytes().await.unwrap())["name"], "a");
}

#[tokio::test]
async fn a_pem_file_replaced_by_a_renewal_is_served_without_a_restart() {
    let t = pem_ingress().await;
    let port = t.tls_addr().port();
    // A new client each time: a resumed session would show the certificate of
    // the first handshake again.
    let shown = |host: &'static str| {
        let client = t.client(&[host]).build().unwrap();
        async move {
            let resp = within(
                "an HTTPS answer",
                client.get(format!("https://{host}:{port}/")).send(),
            )
            .await
            .unwrap();
            peer_certificate(&resp)
        }
    };
    assert_eq!(shown("a.example.com").await, t.leaf("a").der);

    // A pair that does not load (a key for another certificate) is no reason
    // not to read the others.
    let dir = t.dir.path();
    let broken = t.ca.leaf(&["c.example.com"]);
    std::fs::write(dir.join("c.crt"), &broken.cert_pem).unwrap();
    std::fs::write(dir.join("c.key"), &t.leaf("a").key_pem).unwrap();
    // The renewal: each file written beside and renamed over, as renewal tools do.
    let renewed = t.ca.leaf(&["a.example.com"]);
    for (name, bytes) in [("a.key", &renewed.key_pem), ("a.crt", &renewed.cert_pem)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    within("the renewed certificate", async {
        while shown("a.example.com").await != renewed.der {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(shown("b.example.com").await, t.leaf("b").der);
}
