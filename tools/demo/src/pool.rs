//! Scenarios about the pool's own rules: reuse, bodies, limits, timeouts, binding.

use std::time::Duration;

use http_body_util::BodyExt;

use super::{Got, Stage, expect};
use roundtrip_host::Transport;
use roundtrip_host::events::{CloseReason, EventKind};
use roundtrip_servers::{LocalServer, ServerTls};

pub(super) async fn reuse(stage: &Stage) -> Result<(), String> {
    let server = stage.server().await?;
    let transport = stage.transport(|_| {})?;
    stage.say(format!(
        "A local server listens on {}. We send three GET requests, one after the other,\n\
         on one transport, reading each body to its end.\n",
        server.addr()
    ));
    for _ in 0..3 {
        get_step(stage, &transport, &server.url("/small")).await?;
    }
    let stats = transport.stats().await;
    stage.finish(transport).await;
    let (dials, reuses) = (stage.dials(), stage.reuses());
    stage.say(format!(
        "Result: {dials} dial and {reuses} reuses (the transport counted {} dials and {} reuses;\n\
         the server accepted {} TCP connection for {} requests).\n\
         Keep-alive saved two TCP handshakes: that is what a connection pool is for.",
        stats.dials,
        stats.reuses,
        server.connections(),
        server.requests()
    ));
    expect(
        dials == 1 && reuses == 2 && server.connections() == 1,
        || format!("expected 1 dial and 2 reuses, saw {dials} dials and {reuses} reuses"),
    )
}

pub(super) async fn unread_body(stage: &Stage) -> Result<(), String> {
    let server = stage.server().await?;
    let transport = stage.transport(|_| {})?;
    stage.say(
        "Part 1, the leak: a program sends three requests and keeps each response, but\n\
         never reads its body (in Go: forgetting to read and close resp.Body).\n",
    );
    let held = hold_three(stage, &transport, &server.url("/small")).await?;
    let leak_dials = stage.dials();
    let stats = transport.stats().await;
    let busy: u32 = stats.keys.iter().map(|k| k.active).sum();
    stage.say(format!(
        "\n{leak_dials} requests, {leak_dials} dials: {busy} connections are busy, each held by an unread body.\n\
         A connection goes back to the pool only when its body has been read to the end.\n"
    ));
    stage.step("the program drops the three responses without reading them");
    drop(held);
    stage.pause().await;
    // The drains run after the drop: let them end (at most 50 ms each).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let idle: u32 = transport.stats().await.keys.iter().map(|k| k.idle).sum();
    stage.say(format!(
        "\nGo 1.27's rule (this transport's default): a body closed unread is read to its end\n\
         and thrown away — if at most 256 KiB are left, within 50 ms — so its connection can\n\
         be reused: {idle} are idle now (the pool keeps 2 per host; the third was closed).\n"
    ));
    stage.say(
        "\nPart 2, the old rule (Go before 1.27; here `--no-drain`): the same three\n\
         requests on a transport that closes a connection whose body is dropped unread.\n",
    );
    let old = stage.transport(|c| c.disable_drain_on_close = true)?;
    let before = stage.closes(CloseReason::EarlyBodyClose);
    let old_held = hold_three(stage, &old, &server.url("/small")).await?;
    stage.step("the program drops the three responses without reading them");
    drop(old_held);
    stage.pause().await;
    let old_closed = stage.closes(CloseReason::EarlyBodyClose) - before;
    stage.finish(old).await;
    stage.say(format!(
        "\nThe old rule closed {old_closed} connections: the next requests would dial again.\n"
    ));
    stage.say(
        "\nPart 3, the fix: on the first transport, three requests, each body read to its end.\n",
    );
    let dials_before = stage.dials();
    for _ in 0..3 {
        get_step(stage, &transport, &server.url("/small")).await?;
    }
    let fix_dials = stage.dials() - dials_before;
    stage.finish(transport).await;
    stage.say(format!(
        "Result: the leak cost {leak_dials} dials for 3 requests. Dropped unread, the bodies'\n\
         connections were saved by the drain ({idle} kept) and lost under the old rule\n\
         ({old_closed} closed). Reading the bodies, 3 requests needed {fix_dials} new dials.\n\
         Read (or close) every response body; don't count on the drain for big ones."
    ));
    expect(
        leak_dials == 3 && idle == 2 && old_closed == 3 && fix_dials == 0,
        || {
            format!(
                "expected 3 dials while bodies were unread, 2 kept by the drain, 3 closed by the \
                 old rule and no dial after; saw {leak_dials}, {idle}, {old_closed}, {fix_dials}"
            )
        },
    )
}

/// Three GETs of `url` on `transport`, each response kept with its body unread.
async fn hold_three(
    stage: &Stage,
    transport: &Transport,
    url: &str,
) -> Result<Vec<http::Response<roundtrip_host::ResponseBody>>, String> {
    let mut held = Vec::new();
    for _ in 0..3 {
        stage.step(format!("GET {url} — body left unread"));
        held.push(stage.send(transport, url).await?);
        stage.pause().await;
    }
    Ok(held)
}

pub(super) async fn early_close(stage: &Stage) -> Result<(), String> {
    let server = stage.server().await?;
    let transport = stage.transport(|_| {})?;
    let big = server.url("/bytes/1000000");
    stage.step(format!(
        "GET {big} (a 1 MB body): the program reads the first piece, then drops the rest"
    ));
    let mut body = stage.send(&transport, &big).await?.into_body();
    let first = match body.frame().await {
        Some(Ok(frame)) => frame.into_data().map(|d| d.len()).unwrap_or(0),
        _ => 0,
    };
    drop(body);
    stage.pause().await;
    stage.say(format!(
        "    (read {first} bytes, then dropped the body)\n\
         The rest of the body is still on its way: the connection is in the middle of a\n\
         response, so it cannot carry another request. It is closed.\n"
    ));
    get_step(stage, &transport, &server.url("/small")).await?;
    get_step(stage, &transport, &server.url("/small")).await?;
    stage.finish(transport).await;
    let (dials, reuses) = (stage.dials(), stage.reuses());
    let early = stage.closes(CloseReason::EarlyBodyClose);
    stage.say(format!(
        "Result: {early} connection closed early, so {dials} dials in all and {reuses} reuse.\n\
         Reading to the end costs bytes; closing early costs a handshake. With more than\n\
         256 KiB left, Go 1.27 and this transport both close rather than drain it."
    ));
    expect(early == 1 && dials == 2 && reuses == 1, || {
        format!("expected 1 early close, 2 dials, 1 reuse; saw {early}, {dials}, {reuses}")
    })
}

pub(super) async fn no_keepalive(stage: &Stage) -> Result<(), String> {
    let server = stage.server().await?;
    let transport = stage.transport(|c| c.disable_keep_alives = true)?;
    stage.say(
        "This transport has keep-alives turned off (Go's DisableKeepAlives): each request\n\
         says `Connection: close` and its connection is closed after the response.\n",
    );
    for _ in 0..3 {
        get_step(stage, &transport, &server.url("/small")).await?;
    }
    stage.finish(transport).await;
    let dials = stage.dials();
    let closed = stage.closes(CloseReason::KeepalivesDisabled);
    stage.say(format!(
        "Result: 3 requests, {dials} dials, {closed} connections closed after one use; the server\n\
         accepted {} connections. Every request paid a TCP handshake (and with TLS, a TLS one).",
        server.connections()
    ));
    expect(
        dials == 3 && closed == 3 && server.connections() == 3,
        || format!("expected 3 dials and 3 closes, saw {dials} and {closed}"),
    )
}

pub(super) async fn max_idle_per_host(stage: &Stage) -> Result<(), String> {
    let server = stage.server().await?;
    let transport = stage.transport(|_| {})?;
    let url = server.url("/delay/300");
    stage.say(format!(
        "The pool keeps at most 2 idle connections per host (Go's MaxIdleConnsPerHost default).\n\
         We send a burst of 10 requests at once to {url} (each takes 0.3 s).\n"
    ));
    stage.step("10 requests at the same time");
    stage.get_at_once(&transport, &url, 10).await?;
    stage.pause().await;
    let stats = transport.stats().await;
    let idle: u32 = stats.keys.iter().map(|k| k.idle).sum();
    let kept = stage.count(|k| matches!(k, EventKind::PutIdle { ok: true, .. }));
    let closed = stage.closes(CloseReason::MaxIdlePerHost);
    stage.say(format!(
        "\nResult: {} dials for the burst. When it was over, {kept} connections went idle and {closed}\n\
         were closed (max_idle_per_host); {idle} are idle now. A bursty client with a small\n\
         idle cap dials again at every burst: raise MaxIdleConnsPerHost to keep more.",
        stage.dials()
    ));
    stage.finish(transport).await;
    expect(kept == 2 && closed == 8 && idle == 2, || {
        format!("expected 2 kept and 8 closed, saw {kept} kept and {closed} closed")
    })
}

pub(super) async fn idle_timeout(stage: &Stage) -> Result<(), String> {
    let server = stage.server().await?;
    let timeout = if stage.options.slow { 4.0 } else { 1.0 };
    let transport =
        stage.transport(|c| c.idle_conn_timeout = Some(Duration::from_secs_f64(timeout)))?;
    stage.say(format!(
        "This transport closes connections idle for more than {timeout} s (Go's IdleConnTimeout;\n\
         the default is 90 s).\n"
    ));
    get_step(stage, &transport, &server.url("/small")).await?;
    stage.step(format!("wait {} s, doing nothing", timeout * 1.5));
    let closed = stage
        .wait_for(Duration::from_secs_f64(timeout * 1.5 + 1.0), |k| {
            matches!(
                k,
                EventKind::Close {
                    reason: CloseReason::IdleTimeout
                }
            )
        })
        .await;
    stage.pause().await;
    stage.say("");
    get_step(stage, &transport, &server.url("/small")).await?;
    stage.finish(transport).await;
    let dials = stage.dials();
    stage.say(format!(
        "Result: the idle connection was closed by its timer, so the second request dialed\n\
         again ({dials} dials). The timeout frees sockets a client no longer needs."
    ));
    expect(closed && dials == 2, || {
        format!("expected an idle_timeout close and 2 dials, saw close={closed}, {dials} dials")
    })
}

pub(super) async fn max_conns_per_host(stage: &Stage) -> Result<(), String> {
    let server = stage.server().await?;
    let transport = stage.transport(|c| c.max_conns_per_host = 2)?;
    let url = server.url("/delay/200");
    stage.say(format!(
        "This transport opens at most 2 connections per host (Go's MaxConnsPerHost). We send\n\
         6 requests at once to {url} (each takes 0.2 s).\n"
    ));
    stage.step("6 requests at the same time");
    stage.get_at_once(&transport, &url, 6).await?;
    stage.pause().await;
    stage.finish(transport).await;
    let (dials, reuses) = (stage.dials(), stage.reuses());
    let waited = stage.count(|k| matches!(k, EventKind::WaitForConn { .. }));
    stage.say(format!(
        "\nResult: {dials} dials; {waited} requests waited in line and then reused a connection\n\
         ({reuses} reuses). The limit protects the server, at the cost of queueing: it took\n\
         three rounds of 0.2 s instead of one."
    ));
    expect(dials == 2 && waited == 4 && reuses == 4, || {
        format!("expected 2 dials, 4 waits, 4 reuses; saw {dials}, {waited}, {reuses}")
    })
}

pub(super) async fn late_binding(stage: &Stage) -> Result<(), String> {
    let tls = ServerTls::generate()?;
    let server = LocalServer::start_tls(&tls, Duration::from_millis(500))
        .await
        .map_err(|e| format!("cannot start the local HTTPS server: {e}"))?;
    let transport = stage.transport(|c| c.extra_ca_certs = vec![tls.ca_cert.clone()])?;
    stage.say(format!(
        "An HTTPS server on {} takes 0.5 s to finish each TLS handshake (think of a server\n\
         far away). Opening a connection is slow; reusing one is fast.\n",
        server.addr()
    ));
    get_step(stage, &transport, &server.url("/small")).await?;
    stage.step(format!(
        "request A: GET {} (takes the idle connection, busy for 0.15 s)",
        server.url("/delay/150")
    ));
    let slow_url = server.url("/delay/150");
    let a = stage.get(&transport, &slow_url);
    let b = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        stage.step(format!(
            "request B: GET {} right after: nothing is idle, so B starts a dial",
            server.url("/small")
        ));
        stage.get(&transport, &server.url("/small")).await
    };
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a?, b?);
    stage
        .wait_for(Duration::from_secs(2), |k| {
            matches!(k, EventKind::PutIdle { ok: true, .. })
        })
        .await;
    // The late dial goes idle after both answers.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stage.pause().await;
    stage.say(format!(
        "\nA was served on connection {}, B on connection {}.",
        a.connection(),
        b.connection()
    ));
    let dials = stage.dials();
    let b_reused = b.conn.is_some_and(|c| c.reused);
    stage.finish(transport).await;
    stage.say(format!(
        "Result: B did not wait for its own slow dial: A's connection came back first and B\n\
         took it (Go's late binding). The dial B started still finished and went into the\n\
         idle pool for the next request ({dials} dials in all)."
    ));
    expect(b_reused && dials == 2, || {
        format!(
            "expected B to reuse A's connection and 2 dials; B on {}, {dials} dials",
            b.connection()
        )
    })
}

/// A numbered `GET` step, body read, with a line saying what came back.
pub(super) async fn get_step(
    stage: &Stage,
    transport: &Transport,
    url: &str,
) -> Result<Got, String> {
    stage.step(format!("GET {url}"));
    let got = stage.get(transport, url).await?;
    stage.pause().await;
    stage.say(format!(
        "    ({} with {} bytes, on connection {})\n",
        got.status,
        got.bytes,
        got.connection()
    ));
    Ok(got)
}
