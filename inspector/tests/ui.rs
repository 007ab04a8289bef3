//! The inspector as a user drives it, headless (egui_kittest finds widgets by label),
//! and its sources end to end: a program streaming over TCP, a command run through
//! the embedded proxy, a demo from the menu.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use roundtrip_host::events::{Event, EventKind, Events, TcpSink};
use roundtrip_host::{Body, Config, Transport};
use roundtrip_inspector::InspectorApp;
use roundtrip_inspector::app::Source;
use roundtrip_inspector::model::LaneId;
use roundtrip_inspector::sources::{Hub, RunOptions, SourceKind};
use roundtrip_proxy::Mitm;
use roundtrip_servers::{LocalServer, PythonHttpServer, ServerTls};

mod common;

use common::{KEY, event};

/// Two requests on two connections (the second dialed while the first was busy),
/// over about a second.
fn two_connections() -> Vec<Event> {
    let mut events = Vec::new();
    for (conn, start) in [(1u64, 0u64), (2, 100)] {
        let req = Some(conn);
        let on = |ts, kind| event((start + ts) * 1_000, Some(conn), req, kind);
        events.push(event(
            start * 1_000,
            None,
            req,
            EventKind::GetConn {
                method: "GET".into(),
                url: format!("{KEY}/r{conn}"),
            },
        ));
        events.push(on(
            1,
            EventKind::DialStart {
                addr: "127.0.0.1:8080".into(),
            },
        ));
        events.push(on(
            2,
            EventKind::GotConn {
                reused: false,
                was_idle: false,
                idle_us: 0,
                proto: Default::default(),
                stream: None,
            },
        ));
        events.push(on(3, EventKind::WroteRequest { error: None }));
        events.push(on(500, EventKind::Response { status: 200 }));
        events.push(on(900, EventKind::BodyEof { bytes: 10 }));
        events.push(on(
            901,
            EventKind::PutIdle {
                ok: true,
                reason: None,
            },
        ));
    }
    events.sort_by_key(|e| e.ts_us);
    events
}

/// A transport made from `config` that streams its events to the inspector listening
/// at `addr`, as a program run with `--inspect ADDR` does.
fn streaming_to(addr: std::net::SocketAddr, config: Config) -> Transport {
    Transport::new(Config {
        events: Events::new().with(TcpSink::connect(&addr.to_string())),
        inspect_from_env: false,
        ..config
    })
    .unwrap()
}

fn harness(app: InspectorApp) -> Harness<'static, InspectorApp> {
    Harness::builder()
        .with_size((1400.0, 900.0))
        .build_ui_state(|ui, app: &mut InspectorApp| app.show(ui), app)
}

/// Steps the UI until `done` holds (or fails after `limit`).
fn step_until(
    harness: &mut Harness<'static, InspectorApp>,
    limit: Duration,
    done: impl Fn(&InspectorApp) -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done(harness.state()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the inspector"
        );
        harness.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    harness.step();
}

/// Drains the feed until `done` holds for the source on screen; fails saying `what`
/// did not happen within `limit`.
fn wait_for(
    app: &mut InspectorApp,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&Source) -> bool,
) {
    let deadline = Instant::now() + limit;
    while !app.source().is_some_and(&mut done) {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
        app.drain_feed();
    }
}

/// [`wait_for`], then checks that the command run exited with status 0.
fn wait_for_exit(
    app: &mut InspectorApp,
    limit: Duration,
    what: &str,
    done: impl FnMut(&Source) -> bool,
) {
    wait_for(app, limit, what, done);
    let status = &app.source().unwrap().status;
    assert!(status.contains("exit status: 0"), "{status}");
}

/// A run that ended: the command exited and every app connection closed.
fn all_closed(source: &Source) -> bool {
    source.status.contains("exited") && source.view.apps.values().all(|a| a.open == 0)
}

#[test]
fn open_a_file_pause_it_and_select_a_request_to_highlight_its_lane() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let text: String = two_connections()
        .iter()
        .map(|e| e.to_json() + "\n")
        .collect();
    std::fs::write(&path, text).unwrap();

    let mut harness = harness(InspectorApp::new());
    harness.get_by_label("File").click();
    harness.run();
    harness.state_mut().open_path = path.display().to_string();
    harness.get_by_label("Open").click();
    harness.run();
    assert_eq!(harness.state().sources.len(), 1);
    assert_eq!(harness.state().sources[0].kind, SourceKind::File);
    assert_eq!(harness.state().sources[0].view.lanes.len(), 2);

    // Replay from the start, then pause.
    harness.get_by_label("Play").click();
    harness.step();
    harness.step();
    assert!(harness.state().sources[0].replay.as_ref().unwrap().playing);
    harness.get_by_label("Pause").click();
    harness.step();
    harness.step();
    let replay = harness.state().sources[0].replay.clone().unwrap();
    assert!(!replay.playing);
    harness.get_by_label("Play");

    // Everything again, then pick the second request in the table.
    harness
        .state_mut()
        .apply(roundtrip_inspector::app::Command::Seek(u64::MAX));
    harness.run();
    harness.get_by_label(&format!("#2 GET {KEY}/r2")).click();
    harness.run();
    let source = &harness.state().sources[0];
    assert_eq!(source.selected_request, Some(2));
    assert_eq!(source.selected_lane, Some(LaneId::Conn(2)));

    // File → Export HAR: both requests, each naming its connection.
    harness.get_by_label("File").click();
    harness.run();
    harness.state_mut().export_path = dir.path().join("saved").display().to_string();
    harness
        .get_by_label("Export HAR of the requests (.har)")
        .click();
    harness.run();
    let har: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("saved.har")).unwrap()).unwrap();
    let connections: Vec<_> = har["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["connection"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(connections, ["conn #1", "conn #2"]);
}

#[test]
fn the_demos_menu_runs_reuse_and_the_counters_read_one_dial_two_reuses() {
    let (hub, feed) = Hub::new(Arc::new(|| {})).unwrap();
    let mut harness = harness(InspectorApp::with_hub(hub, feed, None));
    harness.get_by_label("Demos").click();
    harness.run();
    harness.get_by_label("reuse").click();
    step_until(&mut harness, Duration::from_secs(30), |app| {
        app.source().is_some_and(|s| s.status == "finished")
    });
    let source = harness.state().source().unwrap();
    assert_eq!(source.kind, SourceKind::Demo);
    let totals = source.view.totals();
    assert_eq!((totals.dials, totals.reuses), (1, 2));
    // What the user reads.
    harness.get_by_label_contains("all keys: dials 1 · reuses 2 · reuse ratio 67 %");
    harness.get_by_label_contains("Result: 1 dial and 2 reuses");
}

#[test]
fn a_program_streaming_over_tcp_shows_up_as_a_live_source() {
    let (hub, feed) = Hub::new(Arc::new(|| {})).unwrap();
    let addr = hub.listen("127.0.0.1:0").unwrap();
    let mut app = InspectorApp::with_hub(hub, feed, Some(addr));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server = LocalServer::start().await.unwrap();
        let transport = streaming_to(addr, Config::default());
        for _ in 0..2 {
            let request = http::Request::get(server.url("/small"))
                .body(Body::empty())
                .unwrap();
            let response = transport.round_trip(request).await.unwrap();
            http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap();
        }
        transport.shutdown().await;
    });
    wait_for(
        &mut app,
        Duration::from_secs(10),
        "the events never arrived",
        |s| s.view.lanes.first().is_some_and(|l| l.closed.is_some()),
    );
    let source = app.source().unwrap();
    assert_eq!(source.kind, SourceKind::Live);
    assert!(
        source.name.contains(&format!("pid {}", std::process::id())),
        "{}",
        source.name
    );
    assert_eq!(source.view.lanes.len(), 1);
    assert_eq!(source.view.totals().reuses, 1);
    let lane = &source.view.lanes[0];
    assert_eq!(lane.closed.as_ref().unwrap().1, "transport_shutdown");
    assert_eq!(lane.requests, [1, 2]);
}

#[test]
fn a_reconnecting_program_continues_its_source_and_garbage_is_reported() {
    use std::io::Write;
    let (hub, feed) = Hub::new(Arc::new(|| {})).unwrap();
    let addr = hub.listen("127.0.0.1:0").unwrap();
    let mut app = InspectorApp::with_hub(hub, feed, Some(addr));
    let hello = r#"{"hello":{"program":"app","pid":7,"sink":1}}"#;
    let events = two_connections();
    let (first, second) = events.split_at(7);
    for (part, extra) in [(first, "this is not json\n"), (second, "")] {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        let mut text = format!("{hello}\n{extra}");
        for event in part {
            text.push_str(&event.to_json());
            text.push('\n');
        }
        socket.write_all(text.as_bytes()).unwrap();
    }
    wait_for(
        &mut app,
        Duration::from_secs(10),
        "the events never arrived",
        |s| s.events.len() >= events.len(),
    );
    assert_eq!(
        app.sources.len(),
        1,
        "a reconnect must not open a second source"
    );
    let source = app.source().unwrap();
    assert_eq!(source.name, "app (pid 7) #1");
    assert_eq!(source.view.lanes.len(), 2);
    assert_eq!(source.problems.len(), 1);
    assert!(source.problems[0].contains("not an event"));
}

#[test]
fn run_shows_the_connections_of_a_command_through_the_embedded_proxy() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(LocalServer::start()).unwrap();
    let (hub, feed) = Hub::new(Arc::new(|| {})).unwrap();
    let url = server.url("/small");
    // curl twice in one run: one upstream connection, reused.
    hub.run_command(
        vec![
            "curl".into(),
            "-sS".into(),
            "-o".into(),
            "/dev/null".into(),
            url.clone(),
            url,
        ],
        RunOptions::default(),
    );
    let mut app = InspectorApp::with_hub(hub, feed, None);
    wait_for_exit(
        &mut app,
        Duration::from_secs(20),
        "curl never finished",
        |s| s.status.contains("exited"),
    );
    let source = app.source().unwrap();
    assert_eq!(source.kind, SourceKind::Run);
    assert_eq!(source.view.totals().dials, 1);
    assert_eq!(source.view.totals().reuses, 1);
    assert_eq!(server.connections(), 1);
    // curl's own side: one connection to the proxy carrying both requests.
    let curl: Vec<_> = source.view.apps.iter().collect();
    assert_eq!(curl.len(), 1, "{curl:?}");
    let (label, stats) = curl[0];
    assert!(label.starts_with("curl -sS"), "{label}");
    assert_eq!((stats.connections, stats.requests, stats.reuses), (1, 2, 1));
}

#[test]
fn run_mitm_shows_the_https_requests_of_a_command_told_to_trust_the_ca() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tls = ServerTls::generate().unwrap();
    let server = runtime
        .block_on(LocalServer::start_tls(&tls, Duration::ZERO))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mitm = Mitm::load_or_create(&dir.path().join("ca.pem")).unwrap();
    let (hub, feed) = Hub::new(Arc::new(|| {})).unwrap();
    let url = server.url("/small");
    // No --cacert: curl finds the CA through CURL_CA_BUNDLE, as any curl run would.
    hub.run_command(
        vec![
            "curl".into(),
            "-sS".into(),
            "-o".into(),
            "/dev/null".into(),
            url.clone(),
            url.clone(),
        ],
        RunOptions {
            config: Config {
                extra_ca_certs: vec![tls.ca_cert.clone()],
                ..Config::default()
            },
            mitm: Some(Arc::new(mitm)),
            ..RunOptions::default()
        },
    );
    let mut app = InspectorApp::with_hub(hub, feed, None);
    wait_for_exit(
        &mut app,
        Duration::from_secs(20),
        "curl never finished",
        all_closed,
    );
    let source = app.source().unwrap();
    // Inside the CONNECT: both requests, with their https URLs, on curl's one
    // connection; upstream one verified TLS connection, reused.
    let seen: Vec<_> = source
        .view
        .app_requests
        .iter()
        .map(|r| (r.app_conn, r.url.as_str(), r.status, r.reused))
        .collect();
    assert_eq!(
        seen,
        [
            (1, url.as_str(), Some(200), false),
            (1, url.as_str(), Some(200), true)
        ]
    );
    let (_, stats) = source.view.apps.iter().next().unwrap();
    assert_eq!((stats.connections, stats.requests, stats.reuses), (1, 2, 1));
    assert_eq!(source.view.totals().dials, 1);
    assert_eq!(server.connections(), 1);
    // Each intercepted request is a request of the proxy's transport, with its
    // waterfall: the first sets up the connection (an IP literal: no lookup), the
    // second reuses it.
    let view = &source.view;
    let names = |row| -> Vec<&str> {
        view.steps(row)
            .iter()
            .map(|(step, ..)| step.label())
            .filter(|step| *step != "queued")
            .collect()
    };
    assert_eq!(view.requests.len(), 2);
    assert_eq!(
        names(&view.requests[0]),
        ["connect", "TLS", "send", "wait", "body"]
    );
    assert_eq!(names(&view.requests[1]), ["send", "wait", "body"]);
}

#[test]
fn run_watch_draws_the_connections_of_programs_that_ignore_the_proxy() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(LocalServer::start()).unwrap();
    let (hub, feed) = Hub::new(Arc::new(|| {})).unwrap();
    // Two curl processes that ignore any proxy: the first with two requests on one
    // connection, the second with one; each prints what it sent and received.
    let url = server.url("/delay/300");
    let sizes = tempfile::NamedTempFile::new().unwrap();
    let curl = "curl -sS --noproxy '*' -w '%{size_request} %{size_header} %{size_download}\\n'";
    let script = format!(
        "{curl} -o /dev/null {url} -o /dev/null {url} >> {out}; echo >> {out}; \
         {curl} -o /dev/null {url} >> {out}",
        out = sizes.path().display()
    );
    hub.watch_command(vec!["sh".into(), "-c".into(), script]);
    let mut app = InspectorApp::with_hub(hub, feed, None);
    wait_for_exit(
        &mut app,
        Duration::from_secs(20),
        "the commands never finished",
        |s| s.status.contains("exited"),
    );
    let source = app.source().unwrap();
    assert_eq!(source.kind, SourceKind::Watch);
    assert_eq!(server.connections(), 2);
    let view = &source.view;
    assert!(view.watched);
    // Each curl: one app, one connection, closed, with no requests claimed.
    let apps: Vec<_> = view.apps.iter().collect();
    assert_eq!(apps.len(), 2, "{apps:?}");
    for (label, stats) in &apps {
        assert!(label.starts_with("curl -sS"), "{label}");
        assert_eq!((stats.connections, stats.open, stats.requests), (1, 0, 0));
        assert!(stats.watched);
    }
    // Bytes as the kernel counted them, against what curl says it sent and got: all
    // requests (sent before a slow answer, so sampled); at least every answer but the
    // last (the last may end between two samples), never more than all.
    let printed = std::fs::read_to_string(sizes.path()).unwrap();
    let runs: Vec<Vec<[u64; 3]>> = printed
        .split("\n\n")
        .map(|run| {
            run.lines()
                .map(|line| {
                    let n: Vec<u64> = line.split(' ').map(|n| n.parse().unwrap()).collect();
                    [n[0], n[1], n[2]]
                })
                .collect()
        })
        .collect();
    assert_eq!(
        runs.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 1],
        "{printed}"
    );
    let lanes: Vec<_> = view
        .lanes
        .iter()
        .filter(|lane| matches!(lane.id, LaneId::App(_)))
        .collect();
    assert_eq!(lanes.len(), 2);
    for (lane, run) in lanes.iter().zip(&runs) {
        assert!(lane.closed.is_some());
        let (up, down) = lane.tunnel_bytes.unwrap();
        let sent: u64 = run.iter().map(|t| t[0]).sum();
        let got: Vec<u64> = run.iter().map(|t| t[1] + t[2]).collect();
        let all: u64 = got.iter().sum();
        assert_eq!(up, sent, "{lane:?}");
        assert!(
            all - got[got.len() - 1] <= down && down <= all,
            "{down} of {got:?}"
        );
    }
}

#[test]
fn watch_pid_follows_a_running_process_and_its_children() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(LocalServer::start()).unwrap();
    // Started before the watch; its curl child connects after.
    let url = server.url("/delay/300");
    let mut shell = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("sleep 0.5; curl -sS --noproxy '*' -o /dev/null {url}"),
        ])
        .spawn()
        .unwrap();
    let (hub, feed) = Hub::new(Arc::new(|| {})).unwrap();
    hub.watch_pid(shell.id());
    let mut app = InspectorApp::with_hub(hub, feed, None);
    wait_for(
        &mut app,
        Duration::from_secs(20),
        "the watch never ended",
        |s| {
            // Reaped, as its parent would: a zombie holds nothing.
            let _ = shell.try_wait();
            s.status.contains("watched pid")
        },
    );
    assert!(shell.wait().unwrap().success());
    let view = &app.source().unwrap().view;
    let apps: Vec<_> = view.apps.iter().collect();
    assert_eq!(apps.len(), 1, "{apps:?}");
    assert!(apps[0].0.starts_with("curl -sS"), "{}", apps[0].0);
    assert_eq!((apps[0].1.connections, apps[0].1.open), (1, 0));
    assert_eq!(server.connections(), 1);
}

/// Images on the page of [`twelve_images`].
const IMAGES: usize = 12;

/// A directory with `index.html`, a page of [`IMAGES`] images (`img0.png`, …).
fn twelve_images() -> tempfile::TempDir {
    // A 1×1 PNG.
    const PNG: &[u8] = &[
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f,
        0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0xfc,
        0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x05, 0x02, 0x00, 0x5f, 0xc8, 0xf1, 0xd2, 0x00, 0x00,
        0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];
    let root = tempfile::tempdir().unwrap();
    let mut page = String::from("<!doctype html><title>twelve images</title>");
    for i in 0..IMAGES {
        std::fs::write(root.path().join(format!("img{i}.png")), PNG).unwrap();
        page.push_str(&format!("<img src=\"img{i}.png\">"));
    }
    std::fs::write(root.path().join("index.html"), page).unwrap();
    root
}

#[test]
fn run_headless_chromium_loads_twelve_images_over_at_most_six_connections() {
    let root = twelve_images();
    let server = PythonHttpServer::start(root.path()).unwrap();
    let site = server.url("/");
    let (hub, feed) = Hub::new(Arc::new(|| {})).unwrap();
    // Chromium takes its proxy from a flag, and never proxies loopback unless told.
    let page = format!("{site}index.html");
    let dom = tempfile::NamedTempFile::new().unwrap();
    let chromium = format!(
        "exec chromium --headless --no-sandbox --disable-gpu --no-first-run \
         --disable-background-networking --proxy-server=\"$HTTP_PROXY\" \
         --proxy-bypass-list='<-loopback>' --dump-dom {page} > {} 2> /dev/null",
        dom.path().display()
    );
    hub.run_command(
        vec!["sh".into(), "-c".into(), chromium],
        RunOptions::default(),
    );
    let mut app = InspectorApp::with_hub(hub, feed, None);
    wait_for_exit(
        &mut app,
        Duration::from_secs(60),
        "chromium never finished",
        |s| s.status.contains("exited"),
    );
    let source = app.source().unwrap();
    let dom = std::fs::read_to_string(dom.path()).unwrap();
    assert!(dom.contains("img11.png"), "{dom}");
    let view = &source.view;
    // Every image asked for, once, and answered.
    let to_site: Vec<_> = view
        .app_requests
        .iter()
        .filter(|r| r.url.starts_with(&site))
        .collect();
    for i in 0..IMAGES {
        let image = format!("{site}img{i}.png");
        let asked: Vec<_> = to_site.iter().filter(|r| r.url == image).collect();
        assert_eq!(asked.len(), 1, "{image}: {to_site:#?}");
        assert_eq!(asked[0].status, Some(200));
    }
    // Over Chromium's own connections to the site: at most six (its per-host limit).
    let connections: std::collections::BTreeSet<u64> = to_site.iter().map(|r| r.app_conn).collect();
    assert!(
        (1..=6).contains(&connections.len()),
        "{} connections: {connections:?}",
        connections.len()
    );
    // Its network process made them; the apps' counts are every connection the
    // proxy accepted (one closed before its owner could be read counts apart).
    let network = view
        .apps
        .iter()
        .find(|(label, _)| label.starts_with("chromium --type=utility"))
        .map(|(_, stats)| stats.connections);
    assert!(
        network.is_some_and(|n| n as usize >= connections.len()),
        "{:?}",
        view.apps
    );
    let counted: u32 = view.apps.values().map(|stats| stats.connections).sum();
    let opened = view
        .lanes
        .iter()
        .filter(|lane| matches!(lane.id, LaneId::App(_)))
        .count();
    assert_eq!(counted as usize, opened, "{:?}", view.apps);
}

/// Runs `docs/lessons/fetch_five.py MODE` through the inspector's proxy against
/// `server`; returns the inspector (with the run's source) and how many connections
/// the script itself counted.
fn run_fetch_five(mode: &str, server: &LocalServer) -> (InspectorApp, u32) {
    let (hub, feed) = Hub::new(Arc::new(|| {})).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/lessons/fetch_five.py");
    let counted = tempfile::NamedTempFile::new().unwrap();
    hub.run_command(
        vec![
            // Debian's, with python3-requests (scripts/test installs it).
            "/usr/bin/python3".into(),
            script.into(),
            mode.into(),
            server.url("/small"),
            counted.path().display().to_string(),
        ],
        RunOptions::default(),
    );
    let mut app = InspectorApp::with_hub(hub, feed, None);
    // Exited, and every app connection closed (the app's close reaches the proxy
    // a moment after the process is gone).
    wait_for_exit(
        &mut app,
        Duration::from_secs(30),
        "the script never finished",
        all_closed,
    );
    let opened = std::fs::read_to_string(counted.path()).unwrap();
    (app, opened.trim().parse().unwrap())
}

#[test]
fn run_draws_the_app_s_own_connections_first_urllib_without_and_with_a_session() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (mode, connections) in [("urllib", 5), ("session", 1)] {
        let server = runtime.block_on(LocalServer::start()).unwrap();
        let (app, opened) = run_fetch_five(mode, &server);
        let view = &app.source().unwrap().view;
        // The app's numbers are what the script itself counted ...
        assert_eq!(opened, connections, "{mode}: the script's own count");
        let apps: Vec<_> = view.apps.iter().collect();
        assert_eq!(apps.len(), 1, "{mode}: one app, {apps:?}");
        let (label, stats) = (apps[0].0.clone(), apps[0].1.clone());
        assert!(label.starts_with("python3"), "{label}");
        assert_eq!(stats.connections, opened, "{mode}");
        assert_eq!(stats.requests, 5, "{mode}");
        assert_eq!(stats.reuses, 5 - connections, "{mode}");
        let lanes = view
            .lanes
            .iter()
            .filter(|l| matches!(l.id, LaneId::App(_)))
            .count();
        assert_eq!(lanes, connections as usize, "{mode}");
        // ... while upstream the proxy's pool dialled the server once either way.
        assert_eq!(view.totals().dials, 1, "{mode}");
        assert_eq!(server.connections(), 1, "{mode}");

        // On screen: the app's counters, then the pool under its own heading.
        let mut harness = harness(app);
        harness.run_steps(3);
        harness.get_by_label(roundtrip_inspector::panels::numbers::APPS_HEADING);
        harness.get_by_label(&label);
        let ratio = format!("{:.0} %", stats.reuse_ratio() * 100.0);
        assert!(harness.query_all_by_label(&ratio).count() >= 1, "{ratio}");
        harness.get_by_label(roundtrip_inspector::panels::timeline::POOL_HEADING);
    }
}

/// An https request to a name (`localhost`), made by the transport `roundtrip get`
/// drives and streamed to the inspector as `--inspect` does: its waterfall row shows
/// the lookup, the connect, TLS, the wait and the body, left to right, each with its
/// time; the HAR export carries the lookup too.
#[test]
fn the_waterfall_of_an_https_request_shows_dns_connect_tls_wait_and_body_in_order() {
    let tls = ServerTls::generate().unwrap();
    let (hub, feed) = Hub::new(Arc::new(|| {})).unwrap();
    let addr = hub.listen("127.0.0.1:0").unwrap();
    let mut app = InspectorApp::with_hub(hub, feed, Some(addr));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // A slow handshake and a slow answer: each step wide enough to see.
        let server = LocalServer::start_tls(&tls, Duration::from_millis(40))
            .await
            .unwrap();
        let url = server.url("/delay/60").replace("127.0.0.1", "localhost");
        let transport = streaming_to(
            addr,
            Config {
                extra_ca_certs: vec![tls.ca_cert.clone()],
                ..Config::default()
            },
        );
        let request = http::Request::get(url).body(Body::empty()).unwrap();
        let response = transport.round_trip(request).await.unwrap();
        assert_eq!(response.status(), 200);
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
        transport.shutdown().await;
    });
    wait_for(
        &mut app,
        Duration::from_secs(10),
        "the request never ended",
        |s| s.view.requests.first().is_some_and(|r| r.end.is_some()),
    );
    let mut harness = harness(app);
    harness.step();
    let steps: Vec<(String, f32)> = harness
        .get_all_by_role(egui::accesskit::Role::Figure)
        .filter_map(|node| Some((node.accesskit_node().label()?, node.rect().left())))
        .collect();
    let names: Vec<&str> = steps
        .iter()
        .map(|(label, _)| label.split(' ').next().unwrap_or_default())
        .collect();
    // First, maybe, a moment in line while the pool starts the dial. A lookup of
    // `localhost` may find `::1` first, where nothing listens: that refused connect is
    // part of the connect step.
    let names = names.strip_prefix(&["queued"][..]).unwrap_or(&names);
    assert_eq!(
        names,
        ["DNS", "connect", "TLS", "send", "wait", "body"],
        "{steps:?}"
    );
    assert!(
        steps.windows(2).all(|w| w[0].1 < w[1].1),
        "left to right: {steps:?}"
    );
    let view = &harness.state().source().unwrap().view;
    let row = &view.requests[0];
    let tls_step = *view
        .steps(row)
        .iter()
        .find(|(step, ..)| *step == roundtrip_inspector::model::Step::Tls)
        .unwrap();
    assert!(
        tls_step.2 - tls_step.1 >= 40_000,
        "the handshake's 40 ms: {tls_step:?}"
    );
    let har = roundtrip_inspector::export::har(view, std::time::SystemTime::now());
    let timings = &har["log"]["entries"][0]["timings"];
    assert!(timings["dns"].as_f64().unwrap() > 0.0, "{timings}");
    assert!(timings["ssl"].as_f64().unwrap() >= 40.0, "{timings}");
}
