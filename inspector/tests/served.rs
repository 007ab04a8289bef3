//! A served app on screen: `roundtrip serve`'s engine serving the example relay to
//! curl, its events recorded to a file, the file opened in the inspector. The pool's
//! request rows name the incoming request each one served; the service's table
//! counts the incoming requests of each instance.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use roundtrip_host::events::{Events, JsonLines};
use roundtrip_host::serve::{Options, Service};
use roundtrip_inspector::InspectorApp;
use roundtrip_servers::LocalServer;

/// Serves the relay (a new instance every `reuse` requests) to curl's `count`
/// sequential requests for `upstream`; the events go to `events`.
async fn serve_relay(events: &std::path::Path, upstream: &str, count: usize, reuse: usize) {
    let config = roundtrip_host::Config {
        events: Events::new().with(JsonLines::create(events).unwrap()),
        inspect_from_env: false,
        max_idle_conns_per_host: 100,
        ..Default::default()
    };
    let transport = roundtrip_host::Transport::new(config).unwrap();
    let options = Options {
        max_instance_reuse_count: Some(reuse),
        ..Options::default()
    };
    let service = Service::new(roundtrip_wasm::EXAMPLE_RELAY, transport, options).unwrap();
    let listener = roundtrip_host::serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(service.serve(listener, async {
        let _ = stopped.await;
    }));
    let upstream = upstream.to_owned();
    let curl = tokio::task::spawn_blocking(move || {
        let mut command = Command::new("curl");
        command.args([
            "-s",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\\n",
        ]);
        command.args(["-H", &format!("url: {upstream}")]);
        for _ in 0..count {
            command.arg(&url);
        }
        command.output().unwrap()
    });
    let output = tokio::time::timeout(Duration::from_secs(60), curl)
        .await
        .expect("curl did not finish")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout)
            .matches("200")
            .count(),
        count
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(60), serving)
        .await
        .expect("serve did not stop")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_apps_requests_name_the_incoming_request_and_instance_they_served() {
    let origin = LocalServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("served.jsonl");
    serve_relay(&events, &origin.url("/small"), 6, 2).await;
    assert_eq!(origin.connections(), 1, "the origin's own count");

    let mut app = InspectorApp::new();
    app.open_file(&events).unwrap();
    let view = &app.source().unwrap().view;
    // Three instances of two requests each, every one retired at the end.
    assert_eq!(view.served.instances.len(), 3);
    assert!(
        view.served
            .instances
            .values()
            .all(|i| i.incoming.len() == 2 && i.end.is_some())
    );
    // Six pool requests on the one lane, each labelled with its own incoming request.
    assert_eq!(view.lanes.len(), 1);
    assert_eq!(view.requests.len(), 6);
    for (n, row) in view.requests.iter().enumerate() {
        let by = row.caused_by.unwrap();
        assert_eq!(by.incoming, Some(n as u64 + 1));
        assert_eq!(by.instance, n as u64 / 2 + 1);
    }

    // On screen: the table's "from" column, and the service's table.
    let mut harness = Harness::builder()
        .with_size((1400.0, 900.0))
        .build_ui_state(|ui, app: &mut InspectorApp| app.show(ui), app);
    harness
        .state_mut()
        .apply(roundtrip_inspector::app::Command::Seek(u64::MAX));
    harness.run();
    harness.get_by_label("for incoming #4 GET / · instance 2");
    harness.get_by_label(
        "3 instances (0 alive) · 6 incoming requests · 6 outgoing, all through the one pool below",
    );
    harness.get_by_label("#5 GET / 200 · #6 GET / 200");
}
