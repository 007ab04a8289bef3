//! The app's side of a proxy source on scripted events: each app connection a lane
//! grouped by its process, requests as segments, reuse and close markers, tunnel
//! bursts, and the app's own counters kept apart from the pool's.

#![allow(clippy::unwrap_used)]

use roundtrip_host::events::{AppCloseReason, Event, EventKind};
use roundtrip_inspector::model::apps::{ACTIVITY_INTERVAL_US, UNKNOWN_APP};
use roundtrip_inspector::model::{LaneId, MarkerKind, Phase, View};
use roundtrip_inspector::panels::timeline::{Row, rows};

mod common;

use common::{KEY, event};

const APP: &str = "python3 fetch.py (pid 42)";

fn app(ts: u64, app_conn: u64, kind: EventKind) -> Event {
    Event {
        app_conn: Some(app_conn),
        key: None,
        ..event(ts, None, None, kind)
    }
}

fn open(ts: u64, app_conn: u64) -> Event {
    app(
        ts,
        app_conn,
        EventKind::AppConnOpen {
            peer: format!("127.0.0.1:{}", 50_000 + app_conn),
            pid: Some(42),
            process: Some("python3 fetch.py".into()),
        },
    )
}

/// An `app_request` at `ts` that took `elapsed_us`, linked to upstream `conn`/`req`.
fn request(ts: u64, app_conn: u64, elapsed_us: u64, conn: u64, req: u64) -> Event {
    Event {
        conn: Some(conn),
        req: Some(req),
        ..app(
            ts,
            app_conn,
            EventKind::AppRequest {
                method: "GET".into(),
                url: format!("{KEY}/small"),
                status: Some(200),
                bytes_in: 13,
                bytes_out: 0,
                elapsed_us,
                error: None,
            },
        )
    }
}

fn closed(ts: u64, app_conn: u64) -> Event {
    app(
        ts,
        app_conn,
        EventKind::AppConnClose {
            reason: AppCloseReason::App,
            error: None,
        },
    )
}

/// The pool's side: one upstream connection serving `reqs`, reused after the first.
fn pool(reqs: &[(u64, u64)]) -> Vec<Event> {
    let mut events = Vec::new();
    for (i, &(ts, req)) in reqs.iter().enumerate() {
        let on = |t, kind| event(ts + t, Some(1), Some(req), kind);
        events.push(event(
            ts,
            None,
            Some(req),
            EventKind::GetConn {
                method: "GET".into(),
                url: format!("{KEY}/small"),
            },
        ));
        if i == 0 {
            events.push(on(
                1,
                EventKind::DialStart {
                    addr: "127.0.0.1:8080".into(),
                },
            ));
        }
        events.push(on(
            2,
            EventKind::GotConn {
                reused: i > 0,
                was_idle: i > 0,
                idle_us: 0,
                proto: Default::default(),
                stream: None,
            },
        ));
        events.push(on(3, EventKind::WroteRequest { error: None }));
        events.push(on(5, EventKind::Response { status: 200 }));
        events.push(on(6, EventKind::BodyEof { bytes: 13 }));
        events.push(on(
            7,
            EventKind::PutIdle {
                ok: true,
                reason: None,
            },
        ));
    }
    events
}

fn sorted(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by_key(|e| e.ts_us);
    events
}

#[test]
fn an_app_opening_a_connection_per_request_is_counted_apart_from_the_pool_reusing_one() {
    // urllib without a session: five app connections, one request each, closed by
    // the app; upstream the pool dials once and reuses it four times.
    let mut events = Vec::new();
    let mut upstream = Vec::new();
    for n in 1..=5u64 {
        let t = n * 1_000;
        upstream.push((t + 100, n));
        events.extend([
            open(t, n),
            request(t + 200, n, 150, 1, n),
            closed(t + 300, n),
        ]);
    }
    events.extend(pool(&upstream));
    let view = View::of(&sorted(events));
    let stats = &view.apps[APP];
    assert_eq!(stats.connections, 5);
    assert_eq!(stats.requests, 5);
    assert_eq!(stats.reuses, 0);
    assert_eq!(stats.reuse_ratio(), 0.0);
    assert_eq!(stats.open, 0);
    assert_eq!(stats.pid, Some(42));
    // The pool's numbers are the pool's: one dial, four reuses, no app lanes in them.
    assert_eq!(view.totals().dials, 1);
    assert_eq!(view.totals().reuses, 4);
    assert_eq!(view.keys.len(), 1);
    for n in 1..=5u64 {
        let lane = view.lane(LaneId::App(n)).unwrap();
        assert_eq!(lane.key, APP);
        let phases: Vec<(Phase, u64, Option<u64>)> = lane
            .segments
            .iter()
            .map(|s| (s.phase, s.start, s.end))
            .collect();
        let t = n * 1_000;
        assert_eq!(
            phases,
            [
                (Phase::Idle, t, Some(t + 50)),
                (Phase::Exchange, t + 50, Some(t + 200)),
                (Phase::Idle, t + 200, Some(t + 300)),
            ]
        );
        assert_eq!(
            lane.markers
                .iter()
                .map(|m| m.kind.clone())
                .collect::<Vec<_>>(),
            [MarkerKind::Close("closed by the app".into())]
        );
    }
    // Each app request is linked to the upstream request it became.
    assert_eq!(view.app_requests.len(), 5);
    assert!(
        view.app_requests
            .iter()
            .all(|r| r.conn == Some(1) && !r.reused)
    );
    assert_eq!(view.app_requests[2].req, Some(3));
    // The app's open connections are sampled for the plot.
    let peak = view.samples.iter().map(|s| s.app_open).max();
    assert_eq!(peak, Some(1));
    assert_eq!(view.samples.last().unwrap().app_open, 0);
}

#[test]
fn a_persistent_connection_carries_its_requests_with_idle_gaps_and_reuse_markers() {
    let mut events = vec![open(0, 7)];
    for n in 0..5u64 {
        events.push(request(1_000 + n * 1_000, 7, 400, 1, n + 1));
    }
    events.push(closed(9_000, 7));
    let view = View::of(&events);
    let stats = &view.apps[APP];
    assert_eq!((stats.connections, stats.requests, stats.reuses), (1, 5, 4));
    assert_eq!(stats.reuse_ratio(), 0.8);
    let lane = view.lane(LaneId::App(7)).unwrap();
    let exchanges: Vec<(u64, Option<u64>)> = lane
        .segments
        .iter()
        .filter(|s| s.phase == Phase::Exchange)
        .map(|s| (s.start, s.end))
        .collect();
    assert_eq!(
        exchanges,
        [600, 1_600, 2_600, 3_600, 4_600].map(|s| (s, Some(s + 400)))
    );
    // Idle between them: what the app kept open and did not use.
    let idle: u64 = lane
        .segments
        .iter()
        .filter(|s| s.phase == Phase::Idle)
        .map(|s| s.end.unwrap() - s.start)
        .sum();
    assert_eq!(idle, 9_000 - 5 * 400);
    let reuses: Vec<u64> = lane
        .markers
        .iter()
        .filter(|m| m.kind == MarkerKind::Reuse)
        .map(|m| m.at)
        .collect();
    assert_eq!(reuses, [1_600, 2_600, 3_600, 4_600]);
}

#[test]
fn a_tunnel_s_bursts_and_quiet_are_drawn_on_the_app_s_lane() {
    let tunnel = |ts, kind| Event {
        tunnel: Some(3),
        key: Some("connect://example.com:443".into()),
        ..app(ts, 1, kind)
    };
    let activity = |ts| {
        tunnel(
            ts,
            EventKind::TunnelActivity {
                bytes_up: 100,
                bytes_down: 1_000,
            },
        )
    };
    let i = ACTIVITY_INTERVAL_US;
    let events = [
        open(0, 1),
        tunnel(
            10,
            EventKind::TunnelStart {
                addr: "example.com:443".into(),
            },
        ),
        tunnel(
            20,
            EventKind::TunnelDone {
                addr: Some("93.184.216.34:443".into()),
                error: None,
            },
        ),
        // One burst over three intervals, then quiet, then another.
        activity(i),
        activity(2 * i + 5),
        activity(3 * i + 9),
        activity(8 * i),
        tunnel(
            10 * i,
            EventKind::TunnelClose {
                bytes_up: 400,
                bytes_down: 4_000,
            },
        ),
        closed(10 * i + 1, 1),
    ];
    let view = View::of(&events);
    let lane = view.lane(LaneId::App(1)).unwrap();
    let phases: Vec<(Phase, u64)> = lane.segments.iter().map(|s| (s.phase, s.start)).collect();
    assert_eq!(
        phases,
        [
            (Phase::Idle, 0),
            (Phase::Tunnel, 20),
            (Phase::Idle, 3 * i + 9),
            (Phase::Tunnel, 7 * i),
            (Phase::Idle, 8 * i),
        ]
    );
    assert_eq!(lane.tunnel_bytes, Some((400, 4_000)));
    assert!(
        lane.addr
            .as_deref()
            .unwrap()
            .contains("CONNECT example.com:443")
    );
    assert_eq!(view.apps[APP].tunnels, 1);
    assert_eq!(view.apps[APP].requests, 0);
    // The pool side still has its own tunnel lane (the proxy's upstream socket).
    assert!(view.lane(LaneId::Tunnel(3)).is_some());
}

#[test]
fn the_timeline_lists_the_apps_first_and_the_pool_under_its_own_heading() {
    let mut events = vec![open(0, 1), open(10, 2)];
    events.push(app(
        20,
        3,
        EventKind::AppConnOpen {
            peer: "127.0.0.1:40000".into(),
            pid: Some(9),
            process: Some("curl http://x/".into()),
        },
    ));
    events.extend(pool(&[(30, 1)]));
    // An app connection whose opening was not seen still gets a lane.
    events.push(request(100, 8, 10, 1, 1));
    let view = View::of(&events);
    let heads: Vec<String> = rows(&view)
        .into_iter()
        .filter_map(|row| match row {
            Row::App(app, n) => Some(format!("app {app} {n}")),
            Row::Pool => Some("pool".to_owned()),
            Row::Key(key, n) => Some(format!("key {key} {n}")),
            Row::Lane(_) => None,
        })
        .collect();
    assert_eq!(
        heads,
        [
            format!("app {APP} 2"),
            "app curl http://x/ (pid 9) 1".to_owned(),
            format!("app {UNKNOWN_APP} 1"),
            "pool".to_owned(),
            format!("key {KEY} 1"),
        ]
    );
    // Without apps (a library's own events) there is no pool heading.
    let view = View::of(&pool(&[(0, 1)]));
    assert!(!rows(&view).contains(&Row::Pool));
}

#[test]
fn a_failed_request_and_a_close_by_the_proxy_are_marked_with_their_reasons() {
    let events = [
        open(0, 1),
        app(
            500,
            1,
            EventKind::AppRequest {
                method: "GET".into(),
                url: "http://127.0.0.1:9/".into(),
                status: Some(502),
                bytes_in: 80,
                bytes_out: 0,
                elapsed_us: 300,
                error: Some("connection refused".into()),
            },
        ),
        app(
            900,
            1,
            EventKind::AppConnClose {
                reason: AppCloseReason::Proxy,
                error: Some("a request that does not parse".into()),
            },
        ),
        // Reported twice: a problem, not a second close.
        closed(950, 1),
    ];
    let view = View::of(&events);
    let lane = view.lane(LaneId::App(1)).unwrap();
    let markers: Vec<MarkerKind> = lane.markers.iter().map(|m| m.kind.clone()).collect();
    assert_eq!(
        markers,
        [
            MarkerKind::Failed("connection refused".into()),
            MarkerKind::Close("closed by the proxy: a request that does not parse".into()),
        ]
    );
    assert_eq!(view.apps[APP].failed, 1);
    assert_eq!(view.problem_count, 1, "{:?}", view.problems);
}
