//! Certificates from a real ACME CA: Pebble on loopback, validating HTTP-01
//! against the ingress's plain listener (its DNS answers 127.0.0.1 for every
//! name), the certificate checked by a real client that trusts only Pebble's
//! root. Skipped with a message when Pebble is not installed, unless `CI` is set.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use berth_ingress::{AcmeConfig, CertificateSource, Host, Limits, TlsListen};
use common::certs::{self, Seen};
use common::pebble::{self, Pebble};
use common::*;

/// A public name (ordered from the CA) and a local one (never ordered).
const HOST: &str = "shop.example.com";
const LOCAL: &str = "web.shop.localhost";

/// Pebble, and an ingress taking its certificates from it for what it routes.
struct Rig {
    ingress: TestIngress,
    pebble: Pebble,
    _backend: Upstream,
}

/// `None`: Pebble is not installed (the test skips; see `pebble::binary`).
async fn rig(acme_dir: &Path, validity: Option<Duration>) -> Option<Rig> {
    let bin = pebble::binary()?;
    let plain_port = pebble::free_port();
    let pebble = Pebble::start(&bin, plain_port, validity).await;
    let ingress = acme_ingress(
        acme_dir,
        &pebble.directory_url,
        &pebble.listener_ca,
        plain_port,
    )
    .await;
    let backend = Upstream::echo("shop").await;
    ingress.route("svc", "dep", &[HOST, LOCAL], backend.addr);
    Some(Rig {
        ingress,
        pebble,
        _backend: backend,
    })
}

async fn acme_ingress(
    acme_dir: &Path,
    directory_url: &str,
    listener_ca: &Path,
    plain_port: u16,
) -> TestIngress {
    let mut acme = AcmeConfig::new(directory_url, acme_dir);
    acme.ca_roots = Some(listener_ca.to_owned());
    acme.contact = vec!["mailto:ops@example.com".into()];
    // Renewals are found at each check: often, so the renewal test is quick.
    acme.check_every = Duration::from_millis(200);
    let tls = TlsListen {
        listen: (LOOPBACK, 0).into(),
        certificates: CertificateSource::Acme(acme),
    };
    TestIngress::start_with(Limits::default(), Some(tls), plain_port).await
}

impl Rig {
    /// Waits until the ingress holds a certificate for HOST; what a real client
    /// then sees over TLS.
    async fn issued(&self) -> Seen {
        let host = Host::parse(HOST).unwrap();
        let arrived = tokio::time::timeout(PATIENCE, async {
            while self.ingress.certificates.get(&host).is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if arrived.is_err() {
            panic!(
                "no certificate from Pebble; Pebble's log:\n{}",
                self.pebble.log()
            );
        }
        served(&self.ingress, &self.pebble.issuing_root_pem).await
    }
}

/// The certificate a real client is shown for HOST, verified against `root`
/// (its chain, its name, its validity), and the request answered through it.
async fn served(ingress: &TestIngress, root: &str) -> Seen {
    let addr = ingress.tls_addr.unwrap();
    let client = https_client(root, &[HOST], addr).build().unwrap();
    let resp = within(
        "an HTTPS answer",
        client
            .get(format!("https://{HOST}:{}/", addr.port()))
            .send(),
    )
    .await
    .unwrap_or_else(|e| panic!("the served certificate did not verify: {e:?}"));
    let seen = certs::read(&peer_certificate(&resp));
    let body = parse_json(&resp.bytes().await.unwrap());
    assert_eq!(body["name"], "shop");
    assert_eq!(body["headers"]["x-forwarded-proto"][0], "https");
    seen
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_certificate_from_pebble_validated_over_http01_is_served_and_verified_by_a_real_client() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rig) = rig(dir.path(), None).await else {
        return;
    };
    let seen = rig.issued().await;
    assert_eq!(seen.dns_names, [HOST]);
    assert_eq!(seen.subject, format!("CN={HOST}"));
    assert!(
        seen.issuer.contains("Pebble Intermediate CA"),
        "{}",
        seen.issuer
    );
    let now = SystemTime::now();
    assert!(seen.not_before <= now && now < seen.not_after);

    // The validation was real: Pebble looked the name up (our DNS) before it
    // fetched the token from the ingress's plain listener.
    let asked = rig.pebble.dns.asked();
    assert!(
        asked
            .iter()
            .any(|(name, qtype)| name == HOST && *qtype == 1),
        "{asked:?}"
    );
    // Only the public name was ordered.
    assert!(asked.iter().all(|(name, _)| name == HOST), "{asked:?}");
    assert!(rig
        .ingress
        .certificates
        .get(&Host::parse(LOCAL).unwrap())
        .is_none());

    // Kept on disk, for the owner only (the key and the account key above all).
    for file in [
        format!("{HOST}.crt"),
        format!("{HOST}.key"),
        "account.json".into(),
    ] {
        let path = dir.path().join(&file);
        assert!(path.is_file(), "{file} is missing");
        assert_eq!(mode(&path), 0o600, "{file}");
    }
    assert!(!dir.path().join(format!("{LOCAL}.crt")).exists());
}

#[tokio::test]
async fn an_issued_certificate_is_served_again_after_a_restart_without_a_new_order() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rig) = rig(dir.path(), None).await else {
        return;
    };
    let first = rig.issued().await;
    let Rig {
        ingress,
        pebble,
        _backend,
    } = rig;
    let root = pebble.issuing_root_pem.clone();
    let (directory_url, listener_ca) = (pebble.directory_url.clone(), pebble.listener_ca.clone());
    let plain_port = ingress.addr.port();
    ingress.stop().await;
    // The CA is gone: what is served now can only come from the disk.
    drop(pebble);

    let again = acme_ingress(dir.path(), &directory_url, &listener_ca, plain_port).await;
    again.route("svc", "dep", &[HOST, LOCAL], _backend.addr);
    let seen = served(&again, &root).await;
    assert_eq!(seen.serial, first.serial);
    // Still the same a moment later: the fresh certificate is not ordered again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served(&again, &root).await.serial, first.serial);
}

#[tokio::test]
async fn a_certificate_with_a_third_of_its_life_left_is_renewed_before_it_expires() {
    // Pebble's certificates last 12 s here: due for renewal 8 s after issue,
    // expired at 12 s.
    let life = Duration::from_secs(12);
    let dir = tempfile::tempdir().unwrap();
    let Some(rig) = rig(dir.path(), Some(life)).await else {
        return;
    };
    let first = rig.issued().await;
    let lasts = first.not_after.duration_since(first.not_before).unwrap();
    assert!(
        lasts <= life + Duration::from_secs(1),
        "Pebble ignored certificateValidityPeriod: {lasts:?}"
    );

    // A client connects again and again, each handshake verified, until it is
    // shown another certificate.
    let renewed = tokio::time::timeout(life + PATIENCE, async {
        loop {
            let seen = served(&rig.ingress, &rig.pebble.issuing_root_pem).await;
            if seen.serial != first.serial {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never renewed; Pebble's log:\n{}", rig.pebble.log()));
    let switched_at = SystemTime::now();
    assert_eq!(renewed.dns_names, [HOST]);
    assert!(
        switched_at < first.not_after,
        "renewed only once the first certificate had expired"
    );
    assert!(renewed.not_after > first.not_after);
    // The renewed certificate is what the disk keeps.
    let on_disk = std::fs::read(dir.path().join(format!("{HOST}.crt"))).unwrap();
    let on_disk = rustls_pki_types::pem::PemObject::pem_slice_iter(&on_disk)
        .next()
        .map(|c: Result<rustls_pki_types::CertificateDer<'static>, _>| c.unwrap())
        .unwrap();
    assert_eq!(certs::read(&on_disk).serial, renewed.serial);
}
