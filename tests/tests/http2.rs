//! HTTP/2 (issue 20) against real servers: nginx (`listen … ssl http2`, and plain
//! `http2` for h2c), nghttpd, and a scripted server on Python's `h2` for what a
//! well-behaved server never does.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use roundtrip_host::events::Recorder;
use roundtrip_host::events::{CloseReason, Event, EventKind, Proto};
use roundtrip_host::{Config, Protocols};
use roundtrip_tests::*;

fn https(nginx: &Nginx, path: &str) -> String {
    format!("https://localhost:{}{path}", nginx.port)
}

fn trusting(pki: &TestPki) -> impl FnOnce(&mut Config) + '_ {
    |config| config.extra_ca_files = vec![pki.ca_file.path().to_owned()]
}

/// The connection ids requests were served on (`got_conn`).
fn served_on(events: &[Event]) -> HashSet<u64> {
    events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::GotConn { .. }))
        .filter_map(|e| e.conn)
        .collect()
}

fn protos(events: &[Event]) -> HashSet<Proto> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::GotConn { proto, .. } => Some(proto),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_workers_share_one_h2_connection_to_nginx() {
    let (nginx, pki) = tls_nginx("keepalive_requests 100000;\n    location / { }");
    let (transport, recorder) = transport(trusting(&pki));
    let transport = Arc::new(transport);
    let url = https(&nginx, "/small");
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (transport, url) = (Arc::clone(&transport), url.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..400 {
                let fetched = get(&transport, &url).await.unwrap();
                assert_eq!(fetched.status, 200);
                assert_eq!(fetched.body, "hello, world\n");
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let events = recorder.events();
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::GotConn { .. })),
        16 * 400
    );
    assert_eq!(protos(&events), HashSet::from([Proto::H2]));
    assert_eq!(
        served_on(&events).len(),
        1,
        "every request on one connection"
    );
    // The first requests raced to dial before anyone knew the server speaks h2; every
    // dial but the one kept was closed as not needed, and none started after it.
    let extra = dials(&events) - 1;
    assert_eq!(
        closes(&events)
            .iter()
            .filter(|r| **r == CloseReason::Unneeded)
            .count(),
        extra
    );
    let first_h2 = events
        .iter()
        .position(|e| matches!(&e.kind, EventKind::TlsDone { alpn: Some(a), .. } if a == "h2"))
        .unwrap();
    let (_, after) = events.split_at(first_h2);
    let settled = after
        .iter()
        .position(|e| matches!(e.kind, EventKind::GotConn { .. }))
        .unwrap();
    assert_eq!(dials(&after[settled..]), 0, "no dial once the key spoke h2");
    let version = transport
        .round_trip(
            http::Request::get(&url)
                .body(roundtrip_host::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap()
        .version();
    assert_eq!(version, http::Version::HTTP_2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_goaway_after_its_request_limit_is_retried_on_a_new_connection() {
    // nginx ends an h2 connection with GOAWAY(NO_ERROR) after `keepalive_requests`
    // streams; the streams above its last one go again, on a new connection.
    let (nginx, pki) = tls_nginx("keepalive_requests 50;\n    location / { }");
    let (transport, recorder) = transport(trusting(&pki));
    let transport = Arc::new(transport);
    let url = https(&nginx, "/small");
    warm_up(&transport, &url, &recorder).await;
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (transport, url) = (Arc::clone(&transport), url.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..40 {
                let fetched = get(&transport, &url).await.unwrap();
                assert_eq!(fetched.body, "hello, world\n");
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let events = recorder.events();
    let goaways = count(
        &events,
        |k| matches!(k, EventKind::Goaway { code, .. } if code == "NO_ERROR"),
    );
    assert!(
        goaways >= 6,
        "321 requests at 50 a connection: {goaways} GOAWAYs"
    );
    assert!(
        count(
            &events,
            |k| matches!(k, EventKind::Retry { reason } if reason.contains("GOAWAY"))
        ) > 0
    );
    assert_eq!(
        closes(&events)
            .iter()
            .filter(|r| **r == CloseReason::Goaway)
            .count(),
        goaways
    );
    assert!(closes(&events).iter().all(|r| *r == CloseReason::Goaway));
}

/// One request, so that the key is known to speak h2 before the test's load starts.
async fn warm_up(transport: &roundtrip_host::Transport, url: &str, recorder: &Recorder) {
    let fetched = get(transport, url).await.unwrap();
    assert_eq!(fetched.status, 200);
    assert_eq!(protos(&recorder.events()), HashSet::from([Proto::H2]));
}

/// The scripted server (`tests/scripts/h2_server.py`, Debian's python3 and python3-h2)
/// with `extra` arguments; h2c, so the transport speaks it by prior knowledge.
fn h2_server(extra: &[&str]) -> Daemon {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/h2_server.py");
    let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
    Daemon::start("/usr/bin/python3", |port, dir| {
        let mut args = vec![
            script.to_owned(),
            "--port".to_owned(),
            port.to_string(),
            "--log".to_owned(),
            dir.join("requests.jsonl").display().to_string(),
        ];
        args.extend(extra);
        args
    })
}

/// What the scripted server logged: requests, and what the client announced.
fn logged(server: &Daemon) -> Vec<serde_json::Value> {
    std::fs::read_to_string(server.dir().join("requests.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// What the scripted server processed: one JSON object per request.
fn processed(server: &Daemon) -> Vec<serde_json::Value> {
    logged(server)
        .into_iter()
        .filter(|entry| entry.get("path").is_some())
        .collect()
}

/// How many connections the scripted server processed requests on, by its own count.
fn processed_connections(server: &Daemon) -> usize {
    processed(server)
        .iter()
        .map(|entry| entry["conn"].as_u64().unwrap())
        .collect::<HashSet<_>>()
        .len()
}

fn h2c(adjust: impl FnOnce(&mut Config)) -> (roundtrip_host::Transport, Recorder) {
    transport(|config| {
        config.protocols = Protocols::Http2PriorKnowledge;
        adjust(config);
    })
}

fn url(server: &Daemon, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", server.port)
}

fn request(
    method: &str,
    url: &str,
    id: &str,
    body: roundtrip_host::Body,
) -> http::Request<roundtrip_host::Body> {
    http::Request::builder()
        .method(method)
        .uri(url)
        .header("x-id", id)
        .body(body)
        .unwrap()
}

#[tokio::test]
async fn goaway_mid_flight_retries_the_unprocessed_streams_once_each() {
    // Five requests in flight; the server answers two, sends GOAWAY naming the second
    // as its last stream and closes. The three it never processed go again on a new
    // connection — the stream body among them cannot, and fails, processed nowhere.
    let server = h2_server(&["--goaway-at", "5"]);
    let (transport, recorder) = h2c(|_| {});
    let transport = Arc::new(transport);
    warm_up(&transport, &url(&server, "/small"), &recorder).await;
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (transport, url) = (Arc::clone(&transport), url(&server, "/hold"));
        tasks.push(tokio::spawn(async move {
            fetch(
                &transport,
                request(
                    "GET",
                    &url,
                    &format!("get-{i}"),
                    roundtrip_host::Body::empty(),
                ),
            )
            .await
        }));
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let streamed =
        roundtrip_host::Body::from_stream(futures::stream::iter([bytes::Bytes::from_static(
            b"once only",
        )]));
    let last = fetch(
        &transport,
        request("POST", &url(&server, "/hold"), "post-stream", streamed),
    )
    .await;
    let mut ok = 0;
    for task in tasks {
        let fetched = task.await.unwrap().unwrap();
        assert_eq!(fetched.status, 200);
        ok += 1;
    }
    assert_eq!(ok, 4, "every replayable request got its answer");
    let error =
        last.expect_err("a stream body above the GOAWAY's last stream cannot be sent again");
    assert!(error.to_string().contains("GOAWAY"), "{error}");
    let seen = processed(&server);
    let ids: Vec<&str> = seen.iter().filter_map(|r| r["id"].as_str()).collect();
    for i in 0..4 {
        let id = format!("get-{i}");
        assert_eq!(
            ids.iter().filter(|x| **x == id).count(),
            1,
            "{id} processed once: {seen:?}"
        );
    }
    assert!(!ids.contains(&"post-stream"), "{seen:?}");
    let events = recorder.events();
    assert!(
        count(
            &events,
            |k| matches!(k, EventKind::Goaway { code, .. } if code == "NO_ERROR")
        ) >= 1
    );
    assert_eq!(count(&events, |k| matches!(k, EventKind::Retry { .. })), 2);
    assert_eq!(dials(&events), 2);
}

#[tokio::test]
async fn refused_stream_is_retried_and_served() {
    let server = h2_server(&[]);
    let (transport, recorder) = h2c(|_| {});
    let fetched = get(&transport, &url(&server, "/refuse-once/a"))
        .await
        .unwrap();
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body, "ok\n");
    let events = recorder.events();
    assert_eq!(
        count(
            &events,
            |k| matches!(k, EventKind::StreamReset { code, by_peer: true, .. } if code == "REFUSED_STREAM")
        ),
        1
    );
    assert_eq!(
        count(
            &events,
            |k| matches!(k, EventKind::Retry { reason } if reason.contains("REFUSED_STREAM"))
        ),
        1
    );
    assert_eq!(
        dials(&events),
        1,
        "a refused stream leaves the connection usable"
    );
    assert_eq!(processed(&server).len(), 2);
}

#[tokio::test]
async fn a_server_that_stops_answering_pings_is_closed() {
    let server = h2_server(&["--silent-after", "1"]);
    let (transport, recorder) = h2c(|config| {
        config.read_idle_timeout = Some(std::time::Duration::from_millis(200));
        config.ping_timeout = Some(std::time::Duration::from_millis(300));
    });
    get(&transport, &url(&server, "/small")).await.unwrap();
    assert!(
        wait_for_event(&recorder, |k| matches!(
            k,
            EventKind::Close {
                reason: CloseReason::PingTimeout
            }
        ))
        .await
    );
    let events = recorder.events();
    let ping = events
        .iter()
        .position(|e| matches!(e.kind, EventKind::Ping))
        .unwrap();
    let timeout = events
        .iter()
        .position(|e| matches!(e.kind, EventKind::PingTimeout))
        .unwrap();
    assert!(ping < timeout);
    let waited = events[timeout].ts_us - events[ping].ts_us;
    assert!(
        (300_000..1_500_000).contains(&waited),
        "ping unanswered for {waited} µs"
    );
    // The next request dials a fresh connection.
    get(&transport, &url(&server, "/small")).await.unwrap();
    assert_eq!(dials(&recorder.events()), 2);
}

async fn three_slow_requests(strict: bool) -> (Vec<Event>, std::time::Duration) {
    let server = h2_server(&["--max-streams", "2"]);
    let (transport, recorder) = h2c(|config| config.strict_max_concurrent_streams = strict);
    let transport = Arc::new(transport);
    warm_up(&transport, &url(&server, "/small"), &recorder).await;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (transport, url) = (Arc::clone(&transport), url(&server, "/slow?ms=400"));
        tasks.push(tokio::spawn(async move {
            get(&transport, &url).await.unwrap().status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let events = recorder.events();
    assert!(
        count(&events, |k| matches!(
            k,
            EventKind::H2Settings {
                max_concurrent_streams: Some(2),
                ..
            }
        )) >= 1
    );
    (events, started.elapsed())
}

#[tokio::test]
async fn max_concurrent_streams_two_dials_for_the_third_request() {
    let (events, _) = three_slow_requests(false).await;
    assert_eq!(
        dials(&events),
        2,
        "the third stream found no room and dialled"
    );
}

#[tokio::test]
async fn strict_max_concurrent_streams_makes_the_third_request_wait() {
    let (events, took) = three_slow_requests(true).await;
    assert_eq!(dials(&events), 1);
    assert_eq!(
        count(
            &events,
            |k| matches!(k, EventKind::WaitForConn { reason } if reason == "max_concurrent_streams")
        ),
        1
    );
    assert!(
        took >= std::time::Duration::from_millis(800),
        "waited for a stream: {took:?}"
    );
}

/// A small answer that arrived in full with its head comes whole (no stream to pump,
/// no task), as HTTP/1.1's do; its stream is over, so nothing is held and the next
/// request takes a stream of the same connection. A large one is still streamed.
#[tokio::test]
async fn a_small_h2_body_comes_whole_and_a_large_one_streamed() {
    use http_body::Body as _;
    use http_body_util::BodyExt;
    let server = h2_server(&[]);
    let (transport, recorder) = h2c(|_| {});
    let echo = |id: &str, body: Vec<u8>| {
        request(
            "POST",
            &url(&server, "/echo"),
            id,
            roundtrip_host::Body::from(body),
        )
    };
    // Each exchange within the test's own limit: whether it came whole, and its bytes.
    let exchange = |request| {
        let transport = transport.clone();
        async move {
            let exchange = async {
                let response = transport.round_trip(request).await.unwrap();
                let exact = response.body().size_hint().exact();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (exact, body)
            };
            tokio::time::timeout(FETCH_LIMIT, exchange)
                .await
                .expect("no whole answer in time")
        }
    };
    for i in 0..3 {
        let (exact, body) = exchange(echo(&format!("small{i}"), b"hello".to_vec())).await;
        assert_eq!(exact, Some(5), "came whole");
        assert_eq!(body, "hello");
    }
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let (exact, body) = exchange(echo("big", big.clone())).await;
    assert_eq!(exact, None, "streamed");
    assert_eq!(body.as_ref(), big.as_slice());
    settled(&transport).await;
    let events = recorder.events();
    assert_eq!(dials(&events), 1);
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::BodyEof { bytes: 5 })),
        3
    );
    assert_eq!(processed_connections(&server), 1);
}

#[tokio::test]
async fn a_body_much_larger_than_the_window_arrives_whole_with_its_trailers() {
    // The server grants 16 KiB per stream; 256 KiB goes out as its WINDOW_UPDATEs allow.
    let server = h2_server(&["--window", "16384"]);
    let (transport, recorder) = h2c(|_| {});
    let body: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let fetched = fetch(
        &transport,
        request(
            "POST",
            &url(&server, "/echo"),
            "big",
            roundtrip_host::Body::from(body.clone()),
        ),
    )
    .await
    .unwrap();
    assert_eq!(fetched.headers["x-body-bytes"], "262144");
    assert_eq!(fetched.body.as_ref(), body.as_slice());
    assert!(
        count(&recorder.events(), |k| matches!(
            k,
            EventKind::H2Settings {
                initial_window: Some(16384),
                ..
            }
        )) >= 1
    );
    // A streamed body with a trailer: the trailer goes out, and comes back as one.
    let (tx, rx) = futures::channel::mpsc::channel::<
        Result<http_body::Frame<bytes::Bytes>, std::io::Error>,
    >(4);
    let mut tx = tx;
    use futures::SinkExt;
    tx.send(Ok(http_body::Frame::data(bytes::Bytes::from_static(
        b"abc",
    ))))
    .await
    .unwrap();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-check", "yes".parse().unwrap());
    tx.send(Ok(http_body::Frame::trailers(trailers)))
        .await
        .unwrap();
    drop(tx);
    let streamed = roundtrip_host::Body::wrap(http_body_util::StreamBody::new(rx));
    let fetched = fetch(
        &transport,
        request("POST", &url(&server, "/echo"), "trailers", streamed),
    )
    .await
    .unwrap();
    assert_eq!(fetched.body, "abc");
    assert_eq!(fetched.trailers.unwrap()["x-got-check"], "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_shrunk_while_the_first_data_frames_fly_stalls_none_of_200_uploads() {
    // The server shrinks INITIAL_WINDOW_SIZE to 16 KiB while the client's first DATA
    // frames, sent under the 65 535-byte default, are on their way: announced with the
    // connection's first frames (the client may or may not have read it before it
    // sends), or only once the first DATA frame has arrived (always after). Bytes that
    // went out before the client saw it must still be given back. Every upload opens
    // a new connection, so the race is run 200 times; a stall fails within the
    // write-byte timeout, the whole loop within two minutes.
    let at_start = h2_server(&["--window", "16384"]);
    let at_first_data = h2_server(&["--window", "16384", "--window-at-first-data"]);
    let (transport, recorder) =
        h2c(|config| config.write_byte_timeout = Some(std::time::Duration::from_secs(5)));
    let body: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let uploads = async {
        for i in 0..200 {
            let server = if i % 2 == 0 {
                &at_start
            } else {
                &at_first_data
            };
            let fetched = fetch(
                &transport,
                request(
                    "POST",
                    &url(server, "/echo"),
                    &format!("race-{i}"),
                    roundtrip_host::Body::from(body.clone()),
                ),
            )
            .await
            .unwrap_or_else(|e| panic!("upload {i}: {e}"));
            assert_eq!(fetched.headers["x-body-bytes"], "262144", "upload {i}");
            assert!(
                fetched.body == body.as_slice(),
                "upload {i}: the echo differs"
            );
            transport.close_idle_connections().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), uploads)
        .await
        .expect("200 uploads within two minutes");
    assert_eq!(dials(&recorder.events()), 200);
    assert_eq!(
        processed_connections(&at_start) + processed_connections(&at_first_data),
        200
    );
}

#[tokio::test]
async fn a_stream_the_server_gives_no_window_fails_after_the_write_byte_timeout() {
    // The server never gives window back: a body longer than its 16 KiB window cannot
    // go on. The request fails, named, after the write-byte timeout; its stream is
    // reset and the connection goes on serving.
    let server = h2_server(&["--window", "16384", "--no-window-updates"]);
    let (transport, recorder) =
        h2c(|config| config.write_byte_timeout = Some(std::time::Duration::from_millis(300)));
    let started = std::time::Instant::now();
    let error = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        fetch(
            &transport,
            request(
                "POST",
                &url(&server, "/echo"),
                "stalled",
                roundtrip_host::Body::from(vec![7u8; 256 * 1024]),
            ),
        ),
    )
    .await
    .expect("the stalled upload ends on its own")
    .unwrap_err();
    assert_eq!(
        error.kind,
        roundtrip_host::ErrorKind::WriteTimeout,
        "{error}"
    );
    assert!(error.to_string().contains("write-byte-timeout"), "{error}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    let events = recorder.events();
    assert!(
        count(&events, |k| matches!(
            k,
            EventKind::StreamReset { code, by_peer: false, .. } if code == "CANCEL"
        )) >= 1,
        "{events:?}"
    );
    let fetched = get(&transport, &url(&server, "/small")).await.unwrap();
    assert_eq!(fetched.body, "hello\n");
    assert_eq!(dials(&recorder.events()), 1);
}

#[tokio::test]
async fn a_response_head_over_the_limit_is_refused_and_the_connection_kept() {
    let server = h2_server(&[]);
    let (transport, recorder) = h2c(|config| config.max_response_header_bytes = 8192);
    let error = get(&transport, &url(&server, "/big-headers"))
        .await
        .unwrap_err();
    assert_eq!(
        error.kind,
        roundtrip_host::ErrorKind::ResponseHeaderSectionSize,
        "{error}"
    );
    let fetched = get(&transport, &url(&server, "/small")).await.unwrap();
    assert_eq!(fetched.body, "hello\n");
    assert_eq!(dials(&recorder.events()), 1);
}

#[tokio::test]
async fn rst_stream_mid_body_fails_that_body_only() {
    let server = h2_server(&[]);
    let (transport, recorder) = h2c(|_| {});
    let error = get(&transport, &url(&server, "/reset-mid-body"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("INTERNAL_ERROR"), "{error}");
    assert_eq!(
        count(
            &recorder.events(),
            |k| matches!(k, EventKind::StreamReset { code, by_peer: true, .. } if code == "INTERNAL_ERROR")
        ),
        1
    );
    let fetched = get(&transport, &url(&server, "/small")).await.unwrap();
    assert_eq!(fetched.body, "hello\n");
    assert_eq!(
        dials(&recorder.events()),
        1,
        "the connection outlived the reset stream"
    );
}

#[tokio::test]
async fn h2c_by_prior_knowledge_on_nginx() {
    let nginx = Nginx::start_listening("http2", "location / { }");
    let (transport, recorder) = h2c(|_| {});
    for _ in 0..3 {
        let fetched = get(&transport, &nginx.url("/small")).await.unwrap();
        assert_eq!(fetched.body, "hello, world\n");
    }
    let events = recorder.events();
    assert_eq!(protos(&events), HashSet::from([Proto::H2]));
    assert_eq!(dials(&events), 1);
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::TlsStart { .. })),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_1_only_opens_a_connection_per_concurrent_request() {
    let (nginx, pki) = tls_nginx("location / { }");
    let (transport, recorder) = transport(|config| {
        config.extra_ca_files = vec![pki.ca_file.path().to_owned()];
        config.protocols = Protocols::Http1;
    });
    let transport = Arc::new(transport);
    let url = https(&nginx, "/small");
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (transport, url) = (Arc::clone(&transport), url.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..20 {
                assert_eq!(get(&transport, &url).await.unwrap().status, 200);
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let events = recorder.events();
    assert_eq!(protos(&events), HashSet::from([Proto::Http11]));
    assert!(served_on(&events).len() > 1, "several connections");
    assert!(
        events
            .iter()
            .all(|e| !matches!(&e.kind, EventKind::TlsDone { alpn: Some(a), .. } if a == "h2"))
    );
}

#[tokio::test]
async fn sixty_four_mib_arrive_intact_over_h2() {
    let (nginx, pki) = tls_nginx("location / { }");
    let big: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(nginx.root().join("big"), &big).unwrap();
    let (transport, recorder) = transport(trusting(&pki));
    let fetched = get(&transport, &https(&nginx, "/big")).await.unwrap();
    assert_eq!(fetched.body.len(), big.len());
    assert!(fetched.body.as_ref() == big.as_slice(), "the bytes differ");
    let events = recorder.events();
    assert_eq!(protos(&events), HashSet::from([Proto::H2]));
    assert_eq!(
        count(
            &events,
            |k| matches!(k, EventKind::BodyEof { bytes } if *bytes == 64 << 20)
        ),
        1
    );
}

#[tokio::test]
async fn an_early_body_drop_resets_only_its_stream() {
    use http_body_util::BodyExt;
    let (nginx, pki) = tls_nginx("location / { }");
    std::fs::write(nginx.root().join("big"), vec![b'z'; 8 << 20]).unwrap();
    let (transport, recorder) = transport(trusting(&pki));
    let request = |path: &str| {
        http::Request::get(https(&nginx, path))
            .body(roundtrip_host::Body::empty())
            .unwrap()
    };
    let kept = transport.round_trip(request("/big")).await.unwrap();
    let mut dropped = transport
        .round_trip(request("/big"))
        .await
        .unwrap()
        .into_body();
    let first = dropped.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(dropped);
    let body = kept.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 8 << 20, "the other stream's body went on");
    let fetched = get(&transport, &https(&nginx, "/small")).await.unwrap();
    assert_eq!(fetched.body, "hello, world\n");
    assert!(
        wait_for_event(
            &recorder,
            |k| matches!(k, EventKind::StreamReset { code, by_peer: false, .. } if code == "CANCEL")
        )
        .await
    );
    let events = recorder.events();
    assert_eq!(dials(&events), 1, "the connection stayed");
    assert!(closes(&events).is_empty(), "{:?}", closes(&events));
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::BodyClosedEarly { .. })),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nghttpd_serves_concurrent_requests_on_one_connection() {
    let pki = pki(&["localhost"]);
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(docs.path().join("index.html"), "nghttpd here\n").unwrap();
    let (cert, key) = (
        pki.cert_file.path().display().to_string(),
        pki.key_file.path().display().to_string(),
    );
    let docs_arg = format!("--htdocs={}", docs.path().display());
    let server = Daemon::start("nghttpd", |port, _| {
        vec![
            "--address=127.0.0.1".to_owned(),
            docs_arg,
            port.to_string(),
            key,
            cert,
        ]
    });
    let (transport, recorder) = transport(trusting(&pki));
    let transport = Arc::new(transport);
    let url = format!("https://localhost:{}/index.html", server.port);
    warm_up(&transport, &url, &recorder).await;
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (transport, url) = (Arc::clone(&transport), url.clone());
        workers.push(tokio::spawn(async move {
            for _ in 0..25 {
                let fetched = get(&transport, &url).await.unwrap();
                assert_eq!(fetched.body, "nghttpd here\n");
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let events = recorder.events();
    assert_eq!(dials(&events), 1);
    assert_eq!(served_on(&events).len(), 1);
    assert!(
        count(&events, |k| matches!(
            k,
            EventKind::H2Settings {
                max_concurrent_streams: Some(100),
                ..
            }
        )) >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_proxy_speaks_http2_upstream_while_curl_keeps_http1_1() {
    // curl talks HTTP/1.1 to the proxy; the proxy's pool talks h2c to nginx, every
    // request a stream of one connection.
    let nginx = Nginx::start_listening("http2", "location / { }");
    let (transport, recorder) = h2c(|_| {});
    let proxy = roundtrip_proxy::ForwardProxy::start(
        "127.0.0.1:0",
        transport,
        roundtrip_proxy::ProxyOptions::default(),
    )
    .await
    .unwrap();
    let url = nginx.url("/small");
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20", "-i"])
        .args(["-x", &proxy.url(), &url, &url, &url])
        .env_remove("http_proxy")
        .output()
        .await
        .expect("curl is installed (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(stdout.matches("HTTP/1.1 200 OK").count(), 3, "{stdout}");
    assert_eq!(stdout.matches("hello, world").count(), 3, "{stdout}");
    let events = recorder.events();
    assert_eq!(protos(&events), HashSet::from([Proto::H2]));
    assert_eq!(dials(&events), 1);
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::AppRequest { .. })),
        3
    );
}

#[tokio::test]
async fn idle_timeout_and_close_idle_connections_apply_to_h2_connections() {
    let server = h2_server(&[]);
    let (transport, recorder) = h2c(|config| {
        config.idle_conn_timeout = Some(std::time::Duration::from_millis(300));
    });
    get(&transport, &url(&server, "/small")).await.unwrap();
    assert!(
        wait_for_event(&recorder, |k| matches!(
            k,
            EventKind::Close {
                reason: CloseReason::IdleTimeout
            }
        ))
        .await,
        "an idle h2 connection times out"
    );
    let (transport, recorder) = h2c(|_| {});
    get(&transport, &url(&server, "/small")).await.unwrap();
    get(&transport, &url(&server, "/small")).await.unwrap();
    // Between requests the connection has no stream: the pool counts it idle.
    let stats = transport.stats().await;
    let key = &stats.keys[0];
    assert_eq!((key.idle, key.active, key.dialing), (1, 0, 0), "{stats:?}");
    assert_eq!((stats.dials, stats.reuses), (1, 1));
    transport.close_idle_connections().await;
    assert!(
        wait_for_event(&recorder, |k| matches!(
            k,
            EventKind::Close {
                reason: CloseReason::CloseIdleConnections
            }
        ))
        .await
    );
    // The next request dials again.
    get(&transport, &url(&server, "/small")).await.unwrap();
    assert_eq!(dials(&recorder.events()), 2);
}

#[tokio::test]
async fn max_conns_per_host_holds_a_request_until_a_stream_frees() {
    // One connection allowed, two streams on it: the third request waits for a stream
    // (it may not dial), and gets one when the first two end.
    let server = h2_server(&["--max-streams", "2"]);
    let (transport, recorder) = h2c(|config| config.max_conns_per_host = 1);
    let transport = Arc::new(transport);
    warm_up(&transport, &url(&server, "/small"), &recorder).await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (transport, url) = (Arc::clone(&transport), url(&server, "/slow?ms=300"));
        tasks.push(tokio::spawn(async move {
            get(&transport, &url).await.unwrap().status
        }));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let events = recorder.events();
    assert_eq!(dials(&events), 1);
    assert_eq!(served_on(&events).len(), 1);
    assert!(
        count(
            &events,
            |k| matches!(k, EventKind::WaitForConn { reason } if reason == "max_conns_per_host")
        ) >= 1
    );
}

#[tokio::test]
async fn gzip_is_asked_for_and_undone_over_h2() {
    let (nginx, pki) = tls_nginx(
        "gzip on;\n    gzip_min_length 0;\n    gzip_types application/octet-stream text/plain;\n    location / { }",
    );
    let text = "a line that compresses well\n".repeat(2000);
    std::fs::write(nginx.root().join("text"), &text).unwrap();
    let (transport, recorder) = transport(trusting(&pki));
    let fetched = get(&transport, &https(&nginx, "/text")).await.unwrap();
    assert_eq!(fetched.body, text.as_bytes());
    // Undone transparently: no encoding and no compressed length left in the head.
    assert!(
        fetched.headers.get("content-encoding").is_none(),
        "{:?}",
        fetched.headers
    );
    assert_eq!(protos(&recorder.events()), HashSet::from([Proto::H2]));
    assert_eq!(
        count(
            &recorder.events(),
            |k| matches!(k, EventKind::BodyEof { bytes } if *bytes == text.len() as u64)
        ),
        1
    );
    // The server did compress it: asked by the caller itself, the gzip is left alone.
    let raw = fetch(
        &transport,
        http::Request::get(https(&nginx, "/text"))
            .header("accept-encoding", "gzip")
            .body(roundtrip_host::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(raw.headers["content-encoding"], "gzip");
    assert!(raw.body.len() < text.len() / 10, "{} bytes", raw.body.len());
}

/// What the client announces, as the server reads it: Go 1.24's client defaults
/// (`SETTINGS_MAX_FRAME_SIZE` 1 MiB, `INITIAL_WINDOW_SIZE` 4 MiB, push off, a 1 GiB
/// connection window), or `HTTP2Config`'s values when set.
#[tokio::test]
async fn the_client_announces_go_s_http2_limits_or_the_config_s() {
    let told = roundtrip_host::Http2Config {
        max_read_frame_size: 64 << 10,
        max_receive_buffer_per_connection: 8 << 20,
        max_receive_buffer_per_stream: 256 << 10,
        max_decoder_header_table_size: 8192,
    };
    for (http2, frame, stream, connection, table) in [
        (
            roundtrip_host::Http2Config::default(),
            1 << 20,
            4 << 20,
            1 << 30,
            None,
        ),
        (told, 64 << 10, 256 << 10, 8 << 20, Some(8192)),
    ] {
        let server = h2_server(&[]);
        let (transport, _) = h2c(|c| c.http2 = http2);
        let fetched = get(&transport, &url(&server, "/small")).await.unwrap();
        assert_eq!(fetched.status, 200);
        transport.shutdown().await;
        let log = logged(&server);
        let settings = log
            .iter()
            .find_map(|entry| entry.get("settings"))
            .unwrap_or_else(|| panic!("no SETTINGS logged: {log:?}"))
            .clone();
        // RFC 9113 codes: 1 HEADER_TABLE_SIZE, 2 ENABLE_PUSH, 4 INITIAL_WINDOW_SIZE,
        // 5 MAX_FRAME_SIZE.
        assert_eq!(settings["2"], 0, "{settings}");
        assert_eq!(settings["4"], stream, "{settings}");
        assert_eq!(settings["5"], frame, "{settings}");
        assert_eq!(
            settings.get("1").and_then(|v| v.as_u64()),
            table,
            "{settings}"
        );
        // The connection's window: the 65 535 every connection starts with, raised.
        let raised: u64 = log
            .iter()
            .filter_map(|entry| entry.get("window_update")?.as_u64())
            .next()
            .unwrap_or_else(|| panic!("no WINDOW_UPDATE on stream 0: {log:?}"));
        assert_eq!(raised + 65_535, connection, "{log:?}");
    }
}
