//! Scenarios where the other side decides: server closes, TLS sessions, a proxy.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::pool::get_step;
use super::{Line, Stage, expect};
use roundtrip_host::events::{CloseReason, EventKind};
use roundtrip_proxy::{ForwardProxy, ProxyOptions};
use roundtrip_servers::{H2Server, LocalServer, ServerTls};

pub(super) async fn server_closes_idle(stage: &Stage) -> Result<(), String> {
    let server = stage.server().await?;
    let transport = stage.transport(|_| {})?;
    stage.say(
        "Servers close keep-alive connections they think are idle (nginx after 75 s by\n\
         default). Part 1: the server closes while the connection sits in our pool.\n",
    );
    get_step(stage, &transport, &server.url("/linger/300")).await?;
    stage.step("wait 0.6 s: this server closes connections idle for 0.3 s");
    let seen = stage
        .wait_for(Duration::from_secs(3), |k| {
            matches!(
                k,
                EventKind::Close {
                    reason: CloseReason::ServerClosed
                }
            )
        })
        .await;
    stage.pause().await;
    stage.say(
        "\nThe pool watches its idle connections, so the dead one was removed before any\n\
         request could pick it.\n\n\
         Part 2: the server closes just as our request arrives — a race no client can see\n\
         coming. The request was never answered, and a GET is safe to send again.\n",
    );
    get_step(stage, &transport, &server.url("/once")).await?;
    let got = get_step(stage, &transport, &server.url("/small")).await?;
    stage.finish(transport).await;
    let retries = stage.count(|k| matches!(k, EventKind::Retry { .. }));
    let dials = stage.dials();
    stage.say(format!(
        "Result: the dead idle connection was closed ({}), and the request that met a\n\
         closing connection was retried on a new one ({retries} retry) and got {}. {dials} dials.\n\
         Go does the same for requests it knows are replayable (GET, HEAD, bodies it can resend).",
        if seen { "server_closed" } else { "not seen!" },
        got.status
    ));
    expect(
        seen && retries == 1 && got.status == 200 && dials == 3,
        || {
            format!(
                "expected a server_closed close, 1 retry, 3 dials; saw {seen}, {retries}, {dials}"
            )
        },
    )
}

pub(super) async fn connection_close(stage: &Stage) -> Result<(), String> {
    let server = stage.server().await?;
    let transport = stage.transport(|_| {})?;
    stage.say(
        "A server may end a connection after a response by saying `Connection: close`\n\
         (servers do it when shutting down or after many requests on one connection).\n",
    );
    get_step(stage, &transport, &server.url("/close/13")).await?;
    get_step(stage, &transport, &server.url("/small")).await?;
    get_step(stage, &transport, &server.url("/small")).await?;
    stage.finish(transport).await;
    let closed = stage.closes(CloseReason::ConnectionClose);
    let (dials, reuses) = (stage.dials(), stage.reuses());
    stage.say(format!(
        "Result: the first connection was closed because the server said so ({closed} close);\n\
         the next request dialed again and the one after reused it ({dials} dials, {reuses} reuse)."
    ));
    expect(closed == 1 && dials == 2 && reuses == 1, || {
        format!("expected 1 connection_close, 2 dials, 1 reuse; saw {closed}, {dials}, {reuses}")
    })
}

pub(super) async fn tls_resumption(stage: &Stage) -> Result<(), String> {
    let tls = ServerTls::generate()?;
    let server = LocalServer::start_tls(&tls, Duration::ZERO)
        .await
        .map_err(|e| format!("cannot start the local HTTPS server: {e}"))?;
    let transport = stage.transport(|c| c.extra_ca_certs = vec![tls.ca_cert.clone()])?;
    stage.say(format!(
        "An HTTPS server on {}, with a certificate from a CA made for this demo.\n\
         The transport keeps one TLS client configuration, with a session cache, for all\n\
         its connections.\n",
        server.addr()
    ));
    get_step(stage, &transport, &server.url("/small")).await?;
    stage.step("close the idle connection (Go's CloseIdleConnections)");
    transport.close_idle_connections().await;
    stage.pause().await;
    stage.say("");
    get_step(stage, &transport, &server.url("/small")).await?;
    stage.finish(transport).await;
    let resumed: Vec<bool> = stage
        .events()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::TlsDone {
                resumed,
                error: None,
                ..
            } => Some(resumed),
            _ => None,
        })
        .collect();
    stage.say(format!(
        "Result: two TLS handshakes, resumed = {resumed:?}. The second connection showed the\n\
         server a session ticket from the first, so no certificate was sent or checked again:\n\
         a new connection, but a cheaper one."
    ));
    expect(resumed == [false, true], || {
        format!("expected a full handshake then a resumed one, saw {resumed:?}")
    })
}

pub(super) async fn http2_multiplexing(stage: &Stage) -> Result<(), String> {
    let tls = ServerTls::generate()?;
    let h1 = LocalServer::start_tls(&tls, Duration::ZERO)
        .await
        .map_err(|e| format!("cannot start the local HTTPS server: {e}"))?;
    let h2 = H2Server::start(&tls)
        .await
        .map_err(|e| format!("cannot start the local HTTP/2 server: {e}"))?;
    stage.say(
        "Two HTTPS servers with the same certificate: one speaks HTTP/1.1 only, the other
         HTTP/2 (chosen in the TLS handshake, ALPN `h2`). Each answers `/delay/300` after
         0.3 s, so 12 requests sent at once are all in flight together.
",
    );
    let transport = stage.transport(|c| {
        c.extra_ca_certs = vec![tls.ca_cert.clone()];
    })?;
    stage.step("12 requests at once over HTTP/1.1");
    stage
        .get_at_once(&transport, &h1.url("/delay/300"), 12)
        .await?;
    stage.pause().await;
    let h1_dials = stage.dials();
    stage.say(format!(
        "
HTTP/1.1 carries one request at a time per connection: {h1_dials} connections.
"
    ));
    stage.step("one request to the HTTP/2 server: ALPN picks h2");
    get_step(stage, &transport, &h2.url("/small")).await?;
    stage.step("12 requests at once over HTTP/2");
    stage
        .get_at_once(&transport, &h2.url("/delay/300"), 12)
        .await?;
    stage.pause().await;
    stage.finish(transport).await;
    let h2_dials = stage.dials() - h1_dials;
    let peak = h2
        .counters()
        .peak_streams
        .load(std::sync::atomic::Ordering::SeqCst);
    let server_conns = h2
        .counters()
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    stage.say(format!(
        "Result: HTTP/1.1 opened {h1_dials} connections for 12 requests; HTTP/2 opened {h2_dials}\n\
         and carried them as streams of it, {peak} at once (the server counted {server_conns}).\n\
         One TCP and TLS handshake instead of twelve, and the server keeps one socket."
    ));
    expect(
        h1_dials == 12 && h2_dials == 1 && peak == 12 && server_conns == 1,
        || {
            format!(
                "expected 12 HTTP/1.1 connections and one HTTP/2 connection with 12 streams at \
             once; saw {h1_dials}, {h2_dials} and {peak} (server: {server_conns})"
            )
        },
    )
}

pub(super) async fn proxy(stage: &Stage) -> Result<(), String> {
    let origin = stage.server().await?;
    let transport = stage.transport(|_| {})?;
    let narrator = std::sync::Arc::clone(&stage.options.narrator);
    let options = ProxyOptions {
        log: Some(std::sync::Arc::new(move |line: &str| {
            narrator(Line::Story(format!("    proxy log: {line}")));
        })),
        ..ProxyOptions::default()
    };
    let proxy = ForwardProxy::start("127.0.0.1:0", transport.clone(), options)
        .await
        .map_err(|e| format!("cannot start the proxy: {e}"))?;
    stage.say(format!(
        "`roundtrip proxy` listens on {} and sends what it gets through its transport.\n\
         Two separate apps (think `curl -x {}` run twice) each open their own connection\n\
         to the proxy and fetch {}.\n",
        proxy.addr(),
        proxy.url(),
        origin.url("/small")
    ));
    for app in 1..=2 {
        stage.step(format!(
            "app {app} connects to the proxy and asks for {}",
            origin.url("/small")
        ));
        let status = through_proxy(&proxy, &origin.url("/small")).await?;
        stage.pause().await;
        stage.say(format!("    (app {app} got {status})\n"));
    }
    drop(proxy);
    stage.finish(transport).await;
    let (dials, reuses) = (stage.dials(), stage.reuses());
    stage.say(format!(
        "Result: 2 apps, 2 connections to the proxy, but the origin server accepted {}: the\n\
         proxy's pool dialed {dials} time and reused it {reuses} time. This is how to watch any\n\
         program's connections: HTTP_PROXY=http://127.0.0.1:3128 your-program.",
        origin.connections()
    ));
    expect(
        dials == 1 && reuses == 1 && origin.connections() == 1,
        || format!("expected 1 upstream dial and 1 reuse, saw {dials} and {reuses}"),
    )
}

/// What a simple app does through a proxy: one connection, one absolute-form request.
async fn through_proxy(proxy: &ForwardProxy, url: &str) -> Result<String, String> {
    let failed = |e: std::io::Error| format!("talking to the proxy failed: {e}");
    let mut socket = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .map_err(failed)?;
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let request = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.map_err(failed)?;
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.map_err(failed)?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default().to_owned();
    if status.starts_with("HTTP/1.1 200") {
        Ok(status)
    } else {
        Err(format!("the proxy answered {status:?}"))
    }
}
