//! `roundtrip-inspector export`: an events file to a Chrome trace, without a window.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn export_writes_a_chrome_trace_from_a_demo_recording() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("reuse.jsonl");
    let trace = dir.path().join("reuse.trace.json");
    // A real recording: the `reuse` demo, through the library's sinks.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(roundtrip_demo::run(
            "reuse",
            roundtrip_demo::DemoOptions {
                events: roundtrip_host::events::Events::new()
                    .with(roundtrip_host::events::JsonLines::create(&events).unwrap()),
                inspect_from_env: false,
                slow: false,
                narrator: std::sync::Arc::new(|_| {}),
            },
        ))
        .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_roundtrip-inspector"))
        .arg("export")
        .arg(&events)
        .arg("--trace")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let items = trace["traceEvents"].as_array().unwrap();
    let threads = items.iter().filter(|e| e["name"] == "thread_name").count();
    assert_eq!(threads, 1, "one connection, one track");
    let reuses = items.iter().filter(|e| e["name"] == "reuse").count();
    assert_eq!(reuses, 2);
    let idle = items
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "idle")
        .count();
    assert_eq!(idle, 3);

    let missing = Command::new(env!("CARGO_BIN_EXE_roundtrip-inspector"))
        .args(["export", "/no/such/file.jsonl", "--trace"])
        .arg(dir.path().join("x.json"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /no/such/file.jsonl"));
}

/// Runs the inspector with `args` and no display, killed if it takes over a minute.
fn inspector_headless(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_roundtrip-inspector"))
        .args(args)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the inspector did not finish within a minute: {args:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `run --record FILE -- curl URL URL` (both answers to /dev/null), headless.
fn record_curl_twice(file: &std::path::Path, url: &str) -> std::process::Output {
    inspector_headless(&[
        "run",
        "--record",
        file.to_str().unwrap(),
        "--",
        "curl",
        "-sf",
        "-o",
        "/dev/null",
        url,
        "-o",
        "/dev/null",
        url,
    ])
}

fn recorded(file: &std::path::Path) -> Vec<roundtrip_host::events::Event> {
    let read = roundtrip_inspector::sources::read_jsonl(file).unwrap();
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    read.events
}

/// `run --watch --record`: no window, the command's connection in the file with the
/// bytes the server counted, and the command's exit code passed through.
#[test]
fn run_watch_records_headless_and_passes_the_exit_code_through() {
    // The server: counts its connections, reads 5 bytes, answers 7, waits for the end.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = std::sync::Arc::clone(&accepted);
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut hello = [0u8; 5];
            let _ = socket.read_exact(&mut hello);
            let _ = socket.write_all(b"world!!");
            let _ = socket.read(&mut hello);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("watched.jsonl");
    let script = format!(
        "import socket, sys, time\n\
         s = socket.create_connection(('127.0.0.1', {port}))\n\
         s.sendall(b'hello')\n\
         time.sleep(0.4)\n\
         assert s.recv(100) == b'world!!'\n\
         s.close()\n\
         time.sleep(0.2)\n\
         sys.exit(3)\n"
    );
    let output = inspector_headless(&[
        "run",
        "--watch",
        "--record",
        file.to_str().unwrap(),
        "--",
        "python3",
        "-c",
        &script,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let events = recorded(&file);
    let to_server = |event: &&roundtrip_host::events::Event| {
        matches!(&event.kind, roundtrip_host::events::EventKind::SocketOpen { peer, .. }
            if peer.ends_with(&format!(":{port}")))
    };
    let opened: Vec<_> = events.iter().filter(to_server).collect();
    assert_eq!(
        opened.len() as u64,
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        "as the server counts"
    );
    assert_eq!(opened.len(), 1);
    let conn = opened[0].app_conn;
    let closed: Vec<_> = events
        .iter()
        .filter(|e| e.app_conn == conn)
        .filter_map(|e| match e.kind {
            roundtrip_host::events::EventKind::SocketClose {
                bytes_up,
                bytes_down,
            } => Some((bytes_up, bytes_down)),
            _ => None,
        })
        .collect();
    assert_eq!(closed, [(5, 7)], "{stderr}");
}

/// `run --record` through the proxy: the requests' events in the file, the idle
/// connection closed at the command's exit, and the file opens as a source.
#[test]
fn run_through_the_proxy_records_headless_with_the_pool_s_ends() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(roundtrip_servers::LocalServer::start())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxied.jsonl");
    let url = server.url("/small");
    let output = record_curl_twice(&file, &url);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let events = recorded(&file);
    let names: Vec<_> = events.iter().map(|e| e.name()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "response").count(),
        2,
        "{names:?}"
    );

    // One connection to the server, as it counts, reused and then closed at the end.
    assert_eq!(server.connections(), 1);
    assert_eq!(names.iter().filter(|n| **n == "dial_start").count(), 1);
    assert!(events.iter().any(|e| e.kind
        == roundtrip_host::events::EventKind::Close {
            reason: roundtrip_host::events::CloseReason::CloseIdleConnections
        }));
    // The same file as HAR, read back by haralyzer (PyPI; `scripts/test` installs it).
    let har = dir.path().join("proxied.har");
    let exported = Command::new(env!("CARGO_BIN_EXE_roundtrip-inspector"))
        .arg("export")
        .arg(&file)
        .arg("--har")
        .arg(&har)
        .output()
        .unwrap();
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let py_har = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/py-har");
    assert!(
        std::path::Path::new(py_har).join("haralyzer").exists(),
        "haralyzer is not installed in {py_har}: run scripts/test"
    );
    let read = Command::new("python3")
        .env("PYTHONPATH", py_har)
        .arg("-c")
        .arg(
            "import datetime, json, sys\n\
             from haralyzer import HarParser, HarEntry\n\
             parser = HarParser(json.load(open(sys.argv[1])))\n\
             assert parser.version == '1.2', parser.version\n\
             now = datetime.datetime.now(datetime.timezone.utc)\n\
             for raw in parser.har_data['entries']:\n\
             \x20   e = HarEntry(raw)\n\
             \x20   recent = abs((e.startTime - now).total_seconds()) < 600\n\
             \x20   print(e.request.method, e.response.status, raw['connection'], recent, e.time >= e.timings['wait'] >= 0)\n",
        )
        .arg(&har)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&read.stdout);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    // curl's two requests on its one app connection, and the pool's two on its one
    // connection, started now on the wall clock: the reuse is in the file.
    assert_eq!(
        lines,
        [
            "GET 200 app conn #1 True True",
            "GET 200 app conn #1 True True",
            "GET 200 conn #1 True True",
            "GET 200 conn #1 True True",
        ],
        "{stdout}"
    );
    // A command that fails passes its code through too.
    let failed = inspector_headless(&[
        "run",
        "--record",
        file.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(failed.status.code(), Some(7));
}

/// Answers nginx sends apart from their heads (as it does for a file) reach curl
/// whole through `run`'s proxy: each `app_request` says so — its bytes, no error.
#[test]
fn run_through_the_proxy_reports_whole_answers_whole() {
    let nginx = roundtrip_tests::Nginx::start_counting("location / { }");
    std::fs::write(nginx.root().join("file"), vec![b'x'; 4096]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxied.jsonl");
    let url = nginx.url("/file");
    let output = record_curl_twice(&file, &url);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let app_requests: Vec<_> = recorded(&file)
        .into_iter()
        .filter_map(|e| match e.kind {
            roundtrip_host::events::EventKind::AppRequest {
                status,
                bytes_in,
                error,
                ..
            } => Some((status, bytes_in, error)),
            _ => None,
        })
        .collect();
    assert_eq!(app_requests, vec![(Some(200), 4096, None); 2]);
    assert_eq!(nginx.connections(), (1, 2));
}
