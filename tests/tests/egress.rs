//! The egress allow-list: the host decides where the component may connect.

#![allow(clippy::unwrap_used)]

use roundtrip_host::ErrorKind;
use roundtrip_host::egress::AllowList;
use roundtrip_host::events::EventKind;
use roundtrip_proxy::{ForwardProxy, ProxyOptions};
use roundtrip_servers::LocalServer;
use roundtrip_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_destination_is_never_dialed() {
    let server = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|c| {
        c.allow_hosts = Some(AllowList::parse(&["localhost", "*.example.test"]).unwrap());
    });
    let denied = get(&transport, &server.url("/small")).await.unwrap_err();
    assert_eq!(denied.kind, ErrorKind::DestinationDenied);
    assert_eq!(
        denied.message,
        format!(
            "connecting to {} is not allowed: the host allows only localhost, *.example.test (--allow-host)",
            server.addr()
        )
    );
    // Nothing reached the server, and the events say why.
    assert_eq!(server.connections(), 0);
    assert!(recorder.events().iter().any(|e| matches!(
        &e.kind,
        EventKind::DialDone { error: Some(error), .. } if error.contains("not allowed")
    )));
    // An allowed name for the same server goes through.
    let url = format!("http://localhost:{}/small", server.addr().port());
    assert_eq!(get(&transport, &url).await.unwrap().body, "hello, world\n");
    assert_eq!(server.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_tunnels_outside_the_list() {
    let target = LocalServer::start().await.unwrap();
    let (transport, recorder) = transport(|_| {});
    let options = ProxyOptions {
        allow_hosts: Some(AllowList::parse(&["example.org:443"]).unwrap()),
        ..ProxyOptions::default()
    };
    let proxy = ForwardProxy::start("127.0.0.1:0", transport, options)
        .await
        .unwrap();
    let mut socket = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let addr = target.addr();
    socket
        .write_all(
            format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("is not allowed"), "{answer}");
    assert_eq!(target.connections(), 0);
    assert!(
        wait_for_event(&recorder, |k| matches!(
            k,
            EventKind::TunnelDone { error: Some(_), .. }
        ))
        .await
    );
}
