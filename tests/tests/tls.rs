//! TLS against a local rustls server whose CA is made in the test.

#![allow(clippy::unwrap_used)]

use roundtrip_host::events::EventKind;
use roundtrip_host::{Body, ErrorKind};
use roundtrip_tests::*;

#[tokio::test]
async fn https_works_with_the_test_ca_and_reuses_the_connection() {
    let pki = pki(&["localhost"]);
    let server = tls_server(pki.server_config.clone()).await;
    let ca = pki.ca_file.path().to_owned();
    let (transport, recorder) = transport(move |c| c.extra_ca_files = vec![ca]);
    let url = format!("https://localhost:{}/", server.addr.port());
    for _ in 0..2 {
        let fetched = get(&transport, &url).await.unwrap();
        assert_eq!(fetched.body, "hello");
    }
    let events = recorder.events();
    assert_eq!(dials(&events), 1);
    let tls: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TlsDone {
                version,
                alpn,
                error,
                cipher_suite,
                ..
            } => Some((
                version.clone(),
                alpn.clone(),
                error.clone(),
                cipher_suite.clone(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(tls.len(), 1);
    assert_eq!(tls[0].0.as_deref(), Some("TLSv1.3"));
    assert_eq!(tls[0].1.as_deref(), Some("http/1.1"));
    assert_eq!(tls[0].2, None);
    assert!(tls[0].3.as_deref().unwrap().starts_with("TLS13_"));
    assert_eq!(
        events[0].key.as_deref(),
        Some(format!("https://localhost:{}", server.addr.port()).as_str())
    );
}

#[tokio::test]
async fn a_new_connection_resumes_the_tls_session() {
    let pki = pki(&["localhost"]);
    let server = tls_server(pki.server_config.clone()).await;
    let ca = pki.ca_file.path().to_owned();
    let (transport, recorder) = transport(move |c| c.extra_ca_files = vec![ca]);
    let url = format!("https://localhost:{}/", server.addr.port());
    for _ in 0..2 {
        let request = http::Request::get(url.as_str())
            .header("connection", "close")
            .body(Body::empty())
            .unwrap();
        assert_eq!(fetch(&transport, request).await.unwrap().body, "hello");
    }
    let resumed: Vec<bool> = recorder
        .events()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::TlsDone { resumed, .. } => Some(resumed),
            _ => None,
        })
        .collect();
    assert_eq!(resumed, [false, true]);
}

#[tokio::test]
async fn unknown_issuer_is_named() {
    let pki = pki(&["localhost"]);
    let server = tls_server(pki.server_config.clone()).await;
    let (transport, recorder) = transport(|_| {});
    let error = get(
        &transport,
        &format!("https://localhost:{}/", server.addr.port()),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.kind,
        ErrorKind::TlsCertificateUnknownIssuer,
        "{error}"
    );
    assert!(error.message.contains("unknown authority"), "{error}");
    assert!(
        recorder
            .events()
            .iter()
            .any(|e| matches!(&e.kind, EventKind::TlsDone { error: Some(_), .. }))
    );
}

#[tokio::test]
async fn name_mismatch_is_named() {
    let pki = pki(&["other.example"]);
    let server = tls_server(pki.server_config.clone()).await;
    let ca = pki.ca_file.path().to_owned();
    let (transport, _) = transport(move |c| c.extra_ca_files = vec![ca]);
    let error = get(
        &transport,
        &format!("https://localhost:{}/", server.addr.port()),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind, ErrorKind::TlsCertificateNameMismatch, "{error}");
    assert!(error.message.contains("other.example"), "{error}");
}

#[tokio::test]
async fn tls_to_a_plain_http_server_fails_cleanly() {
    let server = roundtrip_servers::LocalServer::start().await.unwrap();
    let (transport, _) = transport(|_| {});
    let error = get(&transport, &format!("https://{}/small", server.addr()))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::TlsProtocolError, "{error}");
}

#[tokio::test]
async fn an_expired_certificate_is_named() {
    let pki = pki_with(&["localhost"], |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let server = tls_server(pki.server_config.clone()).await;
    let ca = pki.ca_file.path().to_owned();
    let (transport, _) = transport(move |c| c.extra_ca_files = vec![ca]);
    let error = get(
        &transport,
        &format!("https://localhost:{}/", server.addr.port()),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind, ErrorKind::TlsCertificateExpired, "{error}");
    assert!(error.message.contains("expired"), "{error}");
}

#[test]
fn an_unreadable_ca_file_is_a_config_error() {
    let config = roundtrip_host::Config {
        extra_ca_files: vec!["/nonexistent/ca.pem".into()],
        ..roundtrip_host::Config::default()
    };
    let error = roundtrip_host::Transport::new(config).err().unwrap();
    assert_eq!(error.kind, ErrorKind::Config);
    assert!(error.message.contains("/nonexistent/ca.pem"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_requires_a_client_certificate_gets_one() {
    let pki = mutual_pki();
    let server = tls_server(pki.server_config.clone()).await;
    let url = format!("https://localhost:{}/", server.addr.port());
    let (without, _) = transport(|c| c.extra_ca_files = vec![pki.ca_file.path().to_owned()]);
    let refused = get(&without, &url).await.unwrap_err();
    assert!(
        refused
            .message
            .to_ascii_lowercase()
            .contains("certificaterequired")
            || refused
                .message
                .to_ascii_lowercase()
                .contains("certificate required"),
        "{:?}: {refused}",
        refused.kind
    );
    eprintln!("MTLS refused: {:?}: {refused}", refused.kind);
    let (with, recorder) = transport(|c| {
        c.extra_ca_files = vec![pki.ca_file.path().to_owned()];
        c.client_cert = Some(roundtrip_host::ClientCert {
            cert: pki.client_cert.path().to_owned(),
            key: pki.client_key.path().to_owned(),
        });
    });
    let fetched = get(&with, &url).await.unwrap();
    assert_eq!(fetched.body, "hello");
    assert_eq!(dials(&recorder.events()), 1);
}

#[test]
fn a_missing_client_key_is_a_config_error() {
    let result = roundtrip_host::Transport::new(roundtrip_host::Config {
        client_cert: Some(roundtrip_host::ClientCert {
            cert: "/no/such/cert.pem".into(),
            key: "/no/such/key.pem".into(),
        }),
        inspect_from_env: false,
        ..roundtrip_host::Config::default()
    });
    let error = result.err().unwrap();
    assert_eq!(error.kind, roundtrip_host::ErrorKind::Config);
    assert!(error.message.contains("/no/such/cert.pem"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_accepts_an_unknown_issuer() {
    let pki = pki(&["localhost"]);
    let server = tls_server(pki.server_config.clone()).await;
    let url = format!("https://localhost:{}/", server.addr.port());
    let (strict, _) = transport(|_| {});
    let refused = get(&strict, &url).await.unwrap_err();
    assert_eq!(
        refused.kind,
        roundtrip_host::ErrorKind::TlsCertificateUnknownIssuer
    );
    let (insecure, _) = transport(|c| c.insecure_skip_verify = true);
    assert_eq!(get(&insecure, &url).await.unwrap().body, "hello");
}
