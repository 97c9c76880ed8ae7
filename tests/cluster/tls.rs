//! `rediss://`: the nodes reach Redis over TLS (rustls), verifying the
//! server's certificate against the private CA of `redis.ca_file`, and work
//! as a cluster through it. Without that CA the certificate is refused.

use std::path::Path;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use crate::harness::*;

/// A private CA and a certificate it signed for 127.0.0.1, as PEM files in
/// `dir`: `ca.pem`, `server.pem`, `server.key`.
fn private_ca(dir: &Path) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("a CA key"))
        .expect("the CA certificate");
    let key = KeyPair::generate().expect("a server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server parameters")
        .signed_by(&key, &ca)
        .expect("the server certificate");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca.pem");
    std::fs::write(dir.join("server.pem"), server.pem()).expect("server.pem");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("server.key");
}

/// A Redis that also listens with TLS on the returned port (its plain port
/// stays for the harness's own `redis-cli`).
async fn redis_with_tls(certs: &Path) -> (Redis, u16) {
    let tls_port = free_port();
    let path = |f: &str| certs.join(f).display().to_string();
    let redis = Redis::start_with(vec![
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        path("server.pem"),
        "--tls-key-file".into(),
        path("server.key"),
        "--tls-ca-cert-file".into(),
        path("ca.pem"),
        // The nodes authenticate the server; Redis does not ask for theirs.
        "--tls-auth-clients".into(),
        "no".into(),
    ])
    .await;
    (redis, tls_port)
}

#[tokio::test]
async fn nodes_reach_redis_over_tls_verified_by_a_private_ca() {
    let certs = tempfile::tempdir().expect("a temporary directory");
    private_ca(certs.path());
    let (redis, tls_port) = redis_with_tls(certs.path()).await;
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let ca = certs.path().join("ca.pem").display().to_string();
    let pair = Pair::on(
        Bus::Single(Box::new(redis)),
        url.clone(),
        &[("FLEETHUB_REDIS__CA_FILE", &ca)],
    )
    .await;
    for node in [&pair.a, &pair.b] {
        wait_until(
            Duration::from_secs(10),
            "the link is up over TLS",
            || async { node.readyz().await["cluster"] == "ok" },
        )
        .await;
    }
    // A cluster through it: A's driver is seen live on B.
    let mut dash = pair.b.dashboard(Some("acme")).await;
    dash.subscribe("lima", LIMA).await;
    let mut d1 = pair.a.driver("d1", "acme", IN_LIMA).await;
    d1.step_until_seen_by(&mut dash, Duration::from_secs(10))
        .await;

    // A node that does not trust that CA is refused the handshake: it keeps
    // trying, degraded, and never talks to Redis in the clear.
    let logs = tempfile::tempdir().expect("a temporary directory");
    let mut env = node_env(&pair.db, &url, &pair.prefix, &[]);
    env.retain(|(k, _)| k != "FLEETHUB_REDIS__CA_FILE");
    let stranger = Node::start("c", env, logs.path()).await;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            stranger.readyz().await["cluster"],
            "degraded",
            "a node without the CA must not get a link"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
