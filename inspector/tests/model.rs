//! The model on scripted event sequences: lanes, segments, markers, counters,
//! requests, samples, problems — and the exports built from it.

#![allow(clippy::unwrap_used)]

use roundtrip_host::events::{CloseReason, Event, EventKind};
use roundtrip_inspector::export::chrome_trace;
use roundtrip_inspector::model::{LaneId, MarkerKind, Outcome, Phase, Step, View};
use roundtrip_inspector::sources::{parse_line, read_jsonl};

mod common;

use common::{KEY, event};

fn get_conn(ts: u64, req: u64) -> Event {
    event(
        ts,
        None,
        Some(req),
        EventKind::GetConn {
            method: "GET".into(),
            url: format!("{KEY}/r{req}"),
        },
    )
}

/// A whole exchange on `conn` for `req`, from `got_conn` to `put_idle`, starting at `t`.
fn exchange(t: u64, conn: u64, req: u64, reused: bool) -> Vec<Event> {
    let on = |ts, kind| event(ts, Some(conn), Some(req), kind);
    vec![
        on(
            t,
            EventKind::GotConn {
                reused,
                was_idle: reused,
                idle_us: 0,
                proto: Default::default(),
                stream: None,
            },
        ),
        on(t + 10, EventKind::WroteHeaders),
        on(t + 20, EventKind::WroteRequest { error: None }),
        on(t + 100, EventKind::FirstByte),
        on(t + 110, EventKind::Response { status: 200 }),
        on(t + 150, EventKind::BodyEof { bytes: 13 }),
        on(
            t + 160,
            EventKind::PutIdle {
                ok: true,
                reason: None,
            },
        ),
    ]
}

fn dial(t: u64, conn: u64, req: u64) -> Vec<Event> {
    vec![
        event(
            t,
            Some(conn),
            Some(req),
            EventKind::DialStart {
                addr: "127.0.0.1:8080".into(),
            },
        ),
        event(
            t + 50,
            Some(conn),
            Some(req),
            EventKind::DialDone {
                addr: Some("127.0.0.1:8080".into()),
                error: None,
            },
        ),
    ]
}

fn tls_start(server: &str) -> EventKind {
    EventKind::TlsStart {
        server: server.to_owned(),
    }
}

fn tls_done() -> EventKind {
    EventKind::TlsDone {
        version: Some("TLSv1.3".into()),
        cipher_suite: None,
        alpn: None,
        resumed: false,
        error: None,
    }
}

fn close(t: u64, conn: u64, reason: CloseReason) -> Event {
    event(t, Some(conn), None, EventKind::Close { reason })
}

/// One dial, a request, idle, a reused request, idle, shutdown.
fn reuse_script() -> Vec<Event> {
    let mut events = vec![get_conn(0, 1)];
    events.extend(dial(5, 1, 1));
    events.extend(exchange(60, 1, 1, false));
    events.push(get_conn(1_000, 2));
    events.extend(exchange(1_005, 1, 2, true));
    events.push(close(5_000, 1, CloseReason::TransportShutdown));
    events
}

#[test]
fn a_reused_connection_is_one_lane_with_its_phases_in_order() {
    let view = View::of(&reuse_script());
    assert_eq!(view.lanes.len(), 1);
    let lane = view.lane(LaneId::Conn(1)).unwrap();
    let phases: Vec<Phase> = lane.segments.iter().map(|s| s.phase).collect();
    use Phase::*;
    assert_eq!(
        phases,
        [
            Dialing, Writing, Awaiting, Reading, Idle, Writing, Awaiting, Reading, Idle
        ]
    );
    // Segments tile the lane: each ends where the next starts.
    for pair in lane.segments.windows(2) {
        assert_eq!(pair[0].end, Some(pair[1].start));
    }
    assert_eq!(lane.segments.last().unwrap().end, Some(5_000));
    let markers: Vec<&MarkerKind> = lane.markers.iter().map(|m| &m.kind).collect();
    assert_eq!(
        markers,
        [
            &MarkerKind::BodyEof,
            &MarkerKind::Reuse,
            &MarkerKind::BodyEof,
            &MarkerKind::Close("transport_shutdown".into())
        ]
    );
    assert_eq!(lane.closed, Some((5_000, "transport_shutdown".into())));
    assert_eq!(lane.requests, [1, 2]);
    // Idle between the two requests, and what the hover finds there.
    assert_eq!(lane.segment_at(500).unwrap().phase, Idle);
    assert_eq!(lane.segment_at(1_100).unwrap().req, Some(2));
    assert!(lane.segment_at(6_000).is_none());
}

#[test]
fn a_body_that_ends_after_the_response_head_leaves_the_lane_reading() {
    let on = |ts, kind| event(ts, Some(1), Some(1), kind);
    let mut events = vec![get_conn(0, 1)];
    events.extend(dial(5, 1, 1));
    events.extend([
        on(
            60,
            EventKind::GotConn {
                reused: false,
                was_idle: false,
                idle_us: 0,
                proto: Default::default(),
                stream: None,
            },
        ),
        on(70, EventKind::WroteHeaders),
        on(100, EventKind::FirstByte),
        on(110, EventKind::Response { status: 200 }),
        // The echo answered at the head; the body went on until here.
        on(900, EventKind::WroteRequest { error: None }),
        on(950, EventKind::BodyEof { bytes: 8 << 20 }),
        on(
            960,
            EventKind::PutIdle {
                ok: true,
                reason: None,
            },
        ),
    ]);
    let view = View::of(&events);
    let lane = view.lane(LaneId::Conn(1)).unwrap();
    let phases: Vec<Phase> = lane.segments.iter().map(|s| s.phase).collect();
    use Phase::*;
    assert_eq!(phases, [Dialing, Writing, Reading, Idle]);
    assert!(view.problems.is_empty(), "{:?}", view.problems);
}

#[test]
fn counters_follow_the_pool() {
    let events = reuse_script();
    let view = View::of(&events);
    let stats = &view.keys[KEY];
    assert_eq!((stats.dials, stats.reuses, stats.got), (1, 1, 2));
    assert!((stats.reuse_ratio() - 0.5).abs() < 1e-9);
    assert_eq!((stats.idle, stats.in_use, stats.dialing), (0, 0, 0));
    assert_eq!((stats.peak_idle, stats.closed), (1, 1));
    // Just before the shutdown the connection was idle.
    let before = View::of(&events[..events.len() - 1]);
    assert_eq!(before.keys[KEY].idle, 1);
    assert_eq!(before.totals().idle, 1);
}

#[test]
fn samples_count_open_in_use_and_idle_connections() {
    let view = View::of(&reuse_script());
    let first = view.samples.first().unwrap();
    assert_eq!(
        (first.at, first.open, first.in_use, first.idle),
        (5, 1, 0, 0)
    );
    let idle = view.samples.iter().find(|s| s.idle == 1).unwrap();
    assert_eq!((idle.open, idle.in_use), (1, 0));
    let last = view.samples.last().unwrap();
    assert_eq!((last.at, last.open), (5_000, 0));
    assert!(view.samples.iter().any(|s| s.in_use == 1));
}

#[test]
fn requests_carry_method_url_connection_and_timings() {
    let view = View::of(&reuse_script());
    let first = view.request(1).unwrap();
    assert_eq!(first.method, "GET");
    assert_eq!(first.url, format!("{KEY}/r1"));
    assert_eq!(
        (first.conn, first.reused, first.status),
        (Some(1), false, Some(200))
    );
    assert_eq!(first.ttfb_us(), Some(160)); // get_conn at 0, first byte at 160
    assert_eq!(first.total_us(), Some(210));
    assert_eq!((first.bytes, &first.outcome), (Some(13), &Outcome::Done));
    assert!(view.request(2).unwrap().reused);
}

#[test]
fn an_early_close_and_a_connection_lost_mid_request_are_told_apart() {
    let mut events = vec![get_conn(0, 1)];
    events.extend(dial(1, 1, 1));
    events.extend(exchange(60, 1, 1, false)[..5].to_vec());
    events.push(event(
        300,
        Some(1),
        Some(1),
        EventKind::BodyClosedEarly {
            bytes: 4,
            drained: 0,
            saved: false,
        },
    ));
    events.push(close(301, 1, CloseReason::EarlyBodyClose));
    events.push(get_conn(400, 2));
    events.extend(dial(401, 2, 2));
    events.extend(exchange(460, 2, 2, false)[..3].to_vec());
    events.push(close(900, 2, CloseReason::Error));
    let view = View::of(&events);
    assert_eq!(view.request(1).unwrap().outcome, Outcome::ClosedEarly);
    assert_eq!(view.request(2).unwrap().outcome, Outcome::Failed);
    assert_eq!(view.request(2).unwrap().end, Some(900));
    let lane = view.lane(LaneId::Conn(1)).unwrap();
    assert!(
        lane.markers
            .iter()
            .any(|m| m.kind == MarkerKind::EarlyClose)
    );
    assert_eq!(view.keys[KEY].closed, 2);
}

#[test]
fn waiting_requests_are_counted_until_they_get_a_connection() {
    let mut events = vec![get_conn(0, 1)];
    events.extend(dial(1, 1, 1));
    events.push(get_conn(2, 2));
    events.push(event(
        3,
        None,
        Some(2),
        EventKind::WaitForConn {
            reason: "max_conns_per_host".into(),
        },
    ));
    let waiting = View::of(&events);
    assert_eq!(waiting.keys[KEY].waiting, 1);
    events.extend(exchange(60, 1, 1, false));
    events.extend(exchange(300, 1, 2, true));
    let served = View::of(&events);
    assert_eq!(served.keys[KEY].waiting, 0);
    assert_eq!(served.keys[KEY].reuses, 1);
}

#[test]
fn a_late_dial_goes_idle_without_serving() {
    let mut events = vec![get_conn(0, 1)];
    events.extend(dial(1, 1, 1));
    events.push(event(
        70,
        Some(1),
        Some(1),
        EventKind::PutIdle {
            ok: true,
            reason: None,
        },
    ));
    let view = View::of(&events);
    let lane = view.lane(LaneId::Conn(1)).unwrap();
    let phases: Vec<Phase> = lane.segments.iter().map(|s| s.phase).collect();
    assert_eq!(phases, [Phase::Dialing, Phase::Idle]);
    assert!(lane.requests.is_empty());
    assert_eq!(view.keys[KEY].idle, 1);
}

#[test]
fn tls_and_failed_dials_are_drawn() {
    let mut events = vec![get_conn(0, 1)];
    events.extend(dial(1, 1, 1));
    events.push(event(60, Some(1), Some(1), tls_start("example.test")));
    events.push(event(
        90,
        Some(1),
        Some(1),
        EventKind::TlsDone {
            version: None,
            cipher_suite: None,
            alpn: None,
            resumed: false,
            error: Some("certificate signed by unknown authority".into()),
        },
    ));
    // As the component does: the failed handshake's connection is closed.
    events.push(event(
        91,
        Some(1),
        Some(1),
        EventKind::Close {
            reason: CloseReason::Error,
        },
    ));
    events.push(get_conn(100, 2));
    events.push(event(
        101,
        Some(2),
        Some(2),
        EventKind::DialStart {
            addr: "127.0.0.1:9".into(),
        },
    ));
    events.push(event(
        102,
        Some(2),
        Some(2),
        EventKind::DialDone {
            addr: None,
            error: Some("connection refused".into()),
        },
    ));
    let view = View::of(&events);
    let tls = view.lane(LaneId::Conn(1)).unwrap();
    assert_eq!(tls.segments[1].phase, Phase::Tls);
    assert!(tls.closed.as_ref().unwrap().1.contains("unknown authority"));
    assert!(view.problems.is_empty(), "{:?}", view.problems);
    assert_eq!(view.request(1).unwrap().outcome, Outcome::Failed);
    assert_eq!(view.request(2).unwrap().outcome, Outcome::Failed);
    let refused = view.lane(LaneId::Conn(2)).unwrap();
    assert!(refused.closed.as_ref().unwrap().1.contains("refused"));
    assert_eq!(view.totals().dialing, 0);
    assert_eq!(view.problem_count, 0);
}

#[test]
fn through_an_https_proxy_the_connect_sits_between_the_two_handshakes() {
    let mut events = vec![get_conn(0, 1)];
    events.extend(dial(1, 1, 1));
    let on = |ts, kind| event(ts, Some(1), Some(1), kind);
    events.extend([
        on(60, tls_start("proxy.test")),
        on(80, tls_done()),
        on(
            120,
            EventKind::ProxyConnect {
                proxy: "https://proxy.test:443".into(),
                target: "example.test:443".into(),
                error: None,
                response: None,
            },
        ),
        on(121, tls_start("example.test")),
        on(150, tls_done()),
    ]);
    events.extend(exchange(150, 1, 1, false));
    let view = View::of(&events);
    let lane = view.lane(LaneId::Conn(1)).unwrap();
    let spans: Vec<(Phase, u64, Option<u64>)> = lane
        .segments
        .iter()
        .take(4)
        .map(|s| (s.phase, s.start, s.end))
        .collect();
    assert_eq!(
        spans,
        [
            (Phase::Dialing, 1, Some(60)),
            (Phase::Tls, 60, Some(80)),
            (Phase::Dialing, 80, Some(121)),
            (Phase::Tls, 121, Some(150)),
        ]
    );
    let steps: Vec<(Step, u64, u64)> = view.steps(view.request(1).unwrap());
    assert_eq!(
        steps[..5],
        [
            (Step::Queued, 0, 1),
            (Step::Connect, 1, 60),
            (Step::Tls, 60, 80),
            (Step::Connect, 80, 121),
            (Step::Tls, 121, 150),
        ]
    );
    assert!(view.problems.is_empty(), "{:?}", view.problems);
}

#[test]
fn tunnels_are_lanes_of_their_own_with_their_bytes() {
    let tunnel = |ts, kind| Event {
        ts_us: ts,
        kind,
        conn: None,
        req: None,
        key: Some("connect://example.com:443".into()),
        tunnel: Some(1),
        app_conn: None,
    };
    let view = View::of(&[
        tunnel(
            0,
            EventKind::TunnelStart {
                addr: "example.com:443".into(),
            },
        ),
        tunnel(
            40,
            EventKind::TunnelDone {
                addr: Some("93.184.216.34:443".into()),
                error: None,
            },
        ),
        tunnel(
            900,
            EventKind::TunnelClose {
                bytes_up: 517,
                bytes_down: 4_301,
            },
        ),
    ]);
    let lane = view.lane(LaneId::Tunnel(1)).unwrap();
    let phases: Vec<Phase> = lane.segments.iter().map(|s| s.phase).collect();
    assert_eq!(phases, [Phase::Dialing, Phase::Tunnel]);
    assert_eq!(lane.tunnel_bytes, Some((517, 4_301)));
    assert_eq!(lane.addr.as_deref(), Some("93.184.216.34:443"));
    assert!(lane.closed.is_some());
}

#[test]
fn out_of_order_and_impossible_events_are_reported_not_fatal() {
    let mut events = reuse_script();
    // An event from the past, and one for a closed connection.
    events.push(get_conn(10, 3));
    events.push(event(6_000, Some(1), Some(3), EventKind::WroteHeaders));
    events.push(event(
        6_001,
        Some(1),
        Some(3),
        EventKind::Response { status: 200 },
    ));
    let view = View::of(&events);
    assert_eq!(view.problem_count, 2, "{:?}", view.problems);
    assert!(view.problems[0].contains("out of order"));
    assert!(view.problems[1].contains("after it closed"));
    // The request still shows, at the time the model had reached.
    assert_eq!(view.request(3).unwrap().start, 5_000);
}

#[test]
fn an_inspector_attached_late_draws_connections_it_never_saw_dialed() {
    let mut events = vec![get_conn(1_000, 7)];
    events.extend(exchange(1_001, 4, 7, true));
    let view = View::of(&events);
    let lane = view.lane(LaneId::Conn(4)).unwrap();
    assert_eq!(lane.segments[0].phase, Phase::Writing);
    assert_eq!(view.keys[KEY].idle, 1);
    assert_eq!(view.problem_count, 0);
}

#[test]
fn the_chrome_trace_has_a_track_per_connection_and_a_slice_per_segment() {
    let mut events = reuse_script();
    events.push(get_conn(6_000, 3));
    events.extend(dial(6_001, 2, 3));
    let view = View::of(&events);
    let trace = chrome_trace(&view, "test");
    let items = trace["traceEvents"].as_array().unwrap();
    let threads: Vec<&str> = items
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        threads,
        [format!("conn #1 {KEY}"), format!("conn #2 {KEY}")]
    );
    let slices = items.iter().filter(|e| e["ph"] == "X").count();
    let segments: usize = view.lanes.iter().map(|l| l.segments.len()).sum();
    assert_eq!(slices, segments);
    let reuse = items.iter().find(|e| e["name"] == "reuse").unwrap();
    assert_eq!(
        (reuse["ph"].as_str(), reuse["ts"].as_u64()),
        (Some("i"), Some(1_005))
    );
    let idle = items
        .iter()
        .find(|e| e["ph"] == "X" && e["name"] == "idle")
        .unwrap();
    assert_eq!(
        (idle["ts"].as_u64(), idle["dur"].as_u64()),
        (Some(220), Some(785))
    );
    // The open dial runs to the end of what was seen.
    let open = items
        .iter()
        .rfind(|e| e["ph"] == "X" && e["tid"] == 2)
        .unwrap();
    assert_eq!(open["dur"].as_u64(), Some(50));
}

#[test]
fn lines_that_are_not_events_are_named() {
    assert!(
        parse_line(r#"{"hello":{"program":"x","pid":1,"sink":1}}"#, 1)
            .unwrap()
            .is_none()
    );
    assert!(parse_line("   ", 2).unwrap().is_none());
    let garbage = parse_line("GET / HTTP/1.1", 3).unwrap_err();
    assert!(garbage.starts_with("line 3 is not an event"), "{garbage}");
    let unknown = parse_line(r#"{"ts_us":1,"event":"teleport"}"#, 4).unwrap_err();
    assert!(unknown.contains("teleport"), "{unknown}");
    let event = parse_line(
        r#"{"ts_us":5,"event":"close","reason":"idle_timeout","conn":2}"#,
        5,
    )
    .unwrap()
    .unwrap();
    assert_eq!(event.conn, Some(2));
}

#[test]
fn a_truncated_file_keeps_its_whole_lines_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.jsonl");
    let mut text: String = reuse_script().iter().map(|e| e.to_json() + "\n").collect();
    text.push_str(r#"{"ts_us":6000,"event":"get_co"#);
    std::fs::write(&path, text).unwrap();
    let file = read_jsonl(&path).unwrap();
    assert_eq!(file.events.len(), reuse_script().len());
    assert_eq!(file.problems.len(), 2, "{:?}", file.problems);
    assert!(file.problems[1].contains("truncated"));
}

#[test]
fn a_proxy_refusal_fails_the_request_and_names_the_close() {
    let tunnel = |error: Option<&str>| EventKind::ProxyConnect {
        proxy: "http://127.0.0.1:3128".to_owned(),
        target: "example.test:443".to_owned(),
        error: error.map(str::to_owned),
        response: None,
    };
    let dial = EventKind::DialStart {
        addr: "127.0.0.1:3128".to_owned(),
    };
    let events = vec![
        get_conn(0, 1),
        event(1, Some(1), Some(1), dial.clone()),
        event(10, Some(1), Some(1), tunnel(None)),
        get_conn(15, 2),
        event(20, Some(2), Some(2), dial),
        event(30, Some(2), Some(2), tunnel(Some("403 Forbidden"))),
        event(
            31,
            Some(2),
            Some(2),
            EventKind::Close {
                reason: CloseReason::Error,
            },
        ),
    ];
    let view = View::of(&events);
    assert!(view.problems.is_empty(), "{:?}", view.problems);
    let opened = &view.lanes[0];
    assert_eq!(opened.addr.as_deref(), Some("127.0.0.1:3128"));
    assert!(opened.closed.is_none());
    let (at, why) = view.lanes[1].closed.clone().unwrap();
    assert_eq!((at, why.as_str()), (31, "proxy failed: 403 Forbidden"));
    let refused = view.request(2).unwrap();
    assert_eq!(
        (&refused.outcome, refused.end),
        (&Outcome::Failed, Some(30))
    );
    assert_eq!(view.request(1).unwrap().outcome, Outcome::InFlight);
}

/// `got_conn` of `req` on HTTP/2 stream `stream` of `conn`.
fn h2_stream(t: u64, conn: u64, req: u64, stream: u32) -> Event {
    event(
        t,
        Some(conn),
        Some(req),
        EventKind::GotConn {
            reused: stream > 1,
            was_idle: false,
            idle_us: 0,
            proto: roundtrip_host::events::Proto::H2,
            stream: Some(stream),
        },
    )
}

#[test]
fn an_http2_lane_shows_its_streams_side_by_side() {
    // Three requests on one connection: 1 and 3 overlap, 5 comes after both ended.
    let on = |ts, req, kind| event(ts, Some(1), Some(req), kind);
    let mut events = vec![get_conn(0, 1), get_conn(1, 2)];
    events.extend(dial(5, 1, 1));
    events.push(h2_stream(100, 1, 1, 1));
    events.push(h2_stream(110, 1, 2, 3));
    events.push(on(150, 1, EventKind::Response { status: 200 }));
    events.push(on(160, 2, EventKind::Response { status: 200 }));
    events.push(on(200, 1, EventKind::BodyEof { bytes: 10 }));
    events.push(on(300, 2, EventKind::BodyEof { bytes: 10 }));
    events.push(event(
        301,
        Some(1),
        Some(2),
        EventKind::PutIdle {
            ok: true,
            reason: None,
        },
    ));
    events.push(get_conn(1_000, 3));
    events.push(h2_stream(1_001, 1, 3, 5));
    events.push(on(1_100, 3, EventKind::BodyEof { bytes: 10 }));
    events.push(event(
        1_101,
        Some(1),
        Some(3),
        EventKind::PutIdle {
            ok: true,
            reason: None,
        },
    ));
    let view = View::of(&events);
    let lane = view.lane(LaneId::Conn(1)).unwrap();
    assert!(lane.h2);
    assert_eq!(lane.peak_streams, 2);
    // In a HAR, each stream's time is its own (not "blocked" for the connection's
    // phases), and the timings add up to it.
    let har = roundtrip_inspector::export::har(&view, std::time::UNIX_EPOCH);
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for entry in entries {
        assert_eq!(entry["request"]["httpVersion"], "HTTP/2");
        assert_eq!(entry["connection"], "conn #1");
        let timings = entry["timings"].as_object().unwrap();
        // Only its moment in line before the dial (5 µs for the first), never the
        // connection's 95 µs of dialing.
        assert!(timings["blocked"].as_f64().unwrap() <= 0.005, "{entry}");
        let sum: f64 = ["blocked", "connect", "send", "wait", "receive"]
            .iter()
            .map(|t| timings[*t].as_f64().unwrap().max(0.0))
            .sum();
        assert!(
            (sum - entry["time"].as_f64().unwrap()).abs() < 1e-9,
            "{entry}"
        );
    }
    let spans: Vec<(u32, usize, u64, Option<u64>)> = lane
        .streams
        .iter()
        .map(|s| (s.stream, s.slot, s.start, s.end))
        .collect();
    assert_eq!(
        spans,
        [
            (1, 0, 100, Some(200)),
            (3, 1, 110, Some(300)),
            (5, 0, 1_001, Some(1_100))
        ]
    );
    // In use from the first stream to the last one's end, idle between.
    let phases: Vec<Phase> = lane.segments.iter().map(|s| s.phase).collect();
    assert_eq!(
        phases,
        [
            Phase::Dialing,
            Phase::Writing,
            Phase::Idle,
            Phase::Writing,
            Phase::Idle
        ]
    );
    assert_eq!(lane.open_streams(), 0);
    assert_eq!(lane.requests, [1, 2, 3]);
}
