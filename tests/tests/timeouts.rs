//! Dial and TLS handshake timeouts, named.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use roundtrip_host::ErrorKind;
use roundtrip_tests::*;

/// A TLS server whose handshake never comes in time.
#[tokio::test]
async fn tls_handshake_timeout_is_named() {
    let pki = pki(&["localhost"]);
    let server =
        tls_server_slow_handshake(pki.server_config.clone(), 0, Duration::from_secs(3)).await;
    let ca = pki.ca_file.path().to_owned();
    let (transport, _) = transport(move |c| {
        c.extra_ca_files = vec![ca];
        c.tls_handshake_timeout = Some(Duration::from_millis(200));
    });
    let error = get(
        &transport,
        &format!("https://localhost:{}/", server.addr.port()),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind, ErrorKind::TlsProtocolError, "{error}");
    assert!(error.message.contains("TLS handshake timeout"), "{error}");
}

/// A listener whose accept queue is full drops new SYNs, so a connect hangs: the dial
/// timeout must end it with a named error.
#[tokio::test]
async fn dial_timeout_is_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the accept queue (never accepted).
    let mut fillers = Vec::new();
    for _ in 0..512 {
        match tokio::time::timeout(
            Duration::from_millis(50),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    let (transport, _) = transport(|c| c.dial_timeout = Some(Duration::from_millis(300)));
    let error = get(&transport, &format!("http://{addr}/"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::ConnectionTimeout, "{error}");
    assert!(error.message.contains("i/o timeout"), "{error}");
    drop(listener);
}
