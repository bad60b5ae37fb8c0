//! TLS termination in a single-process server: `wss://` and `https://` with a certificate issued
//! by a test CA (`tests/keys/tls-*.pem`), a client that does not speak TLS, and unusable files.

#![cfg(feature = "testing")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sc_core::client::{Client, ClientOptions};
use sc_core::prelude::*;
use sc_core::testing::{self, TestServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

/// A rustls client configuration that trusts only the test CA.
fn trust_test_ca() -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(key_file("tls-ca.pem")).expect("CA file") {
        roots
            .add(cert.expect("CA cert"))
            .expect("CA is a trust anchor");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn echo(Raw(data): Raw) -> Option<Value> {
    data
}

fn tls_builder() -> sc_core::server::Builder {
    testing::builder()
        .tls(key_file("tls-cert.pem"), key_file("tls-key.pem"))
        .app(App::new().event("echo", echo))
}

#[tokio::test]
async fn wss_and_https_work_and_a_plain_client_does_not_disturb_them() {
    let server = TestServer::start(tls_builder()).await;
    let port = server.addr().port();

    // A client that speaks plain ws:// to the TLS port fails; the server goes on.
    let mut plain = ClientOptions::new(format!("ws://127.0.0.1:{port}/socketcluster/"));
    plain.connect_timeout = Duration::from_secs(2);
    plain.auto_reconnect = false;
    assert!(Client::connect_with(plain).await.is_err());

    let mut opts = ClientOptions::new(format!("wss://localhost:{port}/socketcluster/"));
    opts.tls = Some(trust_test_ca());
    let client = Client::connect_with(opts).await.expect("wss connects");
    let answer: Value = client
        .invoke("echo", &json!({"over": "tls"}))
        .await
        .expect("echo");
    assert_eq!(answer, json!({"over": "tls"}));

    // Plain HTTP routes are served over TLS too.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(trust_test_ca())
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let server = TestServer::start(tls_builder()).await;
    // Default options: the Mozilla roots, which do not include the test CA.
    let mut opts = ClientOptions::new(format!(
        "wss://localhost:{}/socketcluster/",
        server.addr().port()
    ));
    opts.auto_reconnect = false;
    opts.connect_timeout = Duration::from_secs(3);
    let err = Client::connect_with(opts).await.expect_err("untrusted");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn unusable_tls_files_stop_startup_naming_the_option() {
    let err = testing::builder()
        .tls(key_file("missing.pem"), key_file("tls-key.pem"))
        .bind()
        .await
        .expect_err("missing certificate");
    assert!(err.to_string().contains("tls_cert"), "{err}");

    // A key that is not the certificate's.
    let err = testing::builder()
        .tls(key_file("tls-cert.pem"), key_file("es256-private.pem"))
        .bind()
        .await
        .expect_err("mismatched key");
    assert!(err.to_string().contains("tls_key"), "{err}");
}

/// The handshake bound is the server's `handshake_timeout` (it was a fixed 10 s).
#[tokio::test]
async fn a_silent_tls_handshake_is_dropped_after_handshake_timeout() {
    let server =
        TestServer::start(tls_builder().handshake_timeout(Duration::from_millis(300))).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("tcp");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after 3 s");
}
