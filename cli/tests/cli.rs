//! The `roundtrip` binary as a user runs it.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use roundtrip_servers::{LocalServer, body_bytes};

/// Proxy variables `roundtrip get` reads; cleared so the caller's shell does not leak in.
const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

fn roundtrip(args: &[&str]) -> Output {
    roundtrip_with_env(args, &[])
}

fn roundtrip_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roundtrip"));
    command.args(args).env_remove("ROUNDTRIP_INSPECT");
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    // Bench runs included: anything longer is a hang.
    common::output_within(
        command.envs(env.iter().copied()),
        std::time::Duration::from_secs(300),
    )
}

fn event_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_writes_every_body_in_order_on_one_transport() {
    let server = LocalServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let events = dir.path().join("events.jsonl");
    let output = roundtrip(&[
        "get",
        "-o",
        out.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        &server.url("/small"),
        &server.url("/bytes/5000"),
        &server.url("/small"),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut expected = b"hello, world\n".to_vec();
    expected.extend_from_slice(&body_bytes(5000));
    expected.extend_from_slice(b"hello, world\n");
    assert_eq!(std::fs::read(&out).unwrap(), expected);
    let events = event_lines(&events);
    let dials = events.iter().filter(|e| e["event"] == "dial_start").count();
    let reused = events
        .iter()
        .filter(|e| e["event"] == "got_conn" && e["reused"] == true)
        .count();
    assert_eq!((dials, reused), (1, 2));
    assert_eq!(server.connections(), 1);
    assert_eq!(events.last().unwrap()["event"], "close");
    assert_eq!(events.last().unwrap()["reason"], "transport_shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_and_concurrency_keep_output_order() {
    let server = LocalServer::start().await.unwrap();
    let output = roundtrip(&[
        "get",
        "--repeat",
        "3",
        "--concurrency",
        "3",
        &server.url("/bytes/20000"),
        &server.url("/small"),
    ]);
    assert!(output.status.success());
    let mut expected = Vec::new();
    for _ in 0..3 {
        expected.extend_from_slice(&body_bytes(20000));
    }
    for _ in 0..3 {
        expected.extend_from_slice(b"hello, world\n");
    }
    assert!(output.stdout == expected);
    assert_eq!(server.requests(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_and_verbose_narrate_like_curl() {
    let server = LocalServer::start().await.unwrap();
    let output = roundtrip(&[
        "get",
        "-i",
        "-v",
        &server.url("/small"),
        &server.url("/small"),
    ]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("HTTP/1.1 200 OK\r\n"), "{stdout}");
    assert!(stdout.contains("content-length: 13\r\n"), "{stdout}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("* Connected to 127.0.0.1"), "{stderr}");
    assert!(
        stderr.contains("* Re-using existing connection #1"),
        "{stderr}"
    );
    assert!(stderr.contains("* Connection #1 left idle"), "{stderr}");
    assert_eq!(stderr.matches("Trying").count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_data_and_custom_headers() {
    let server = LocalServer::start().await.unwrap();
    let output = roundtrip(&[
        "get",
        "-d",
        "a=1&b=2",
        "-H",
        "X-Test: yes",
        &server.url("/echo"),
    ]);
    assert!(output.status.success());
    assert_eq!(output.stdout, b"a=1&b=2");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body_bytes(70_000)).unwrap();
    let data = format!("@{}", file.path().display());
    let output = roundtrip(&[
        "get",
        "-X",
        "PUT",
        "--data-binary",
        &data,
        &server.url("/echo"),
    ]);
    assert!(output.status.success());
    assert!(output.stdout == body_bytes(70_000));
}

#[test]
fn failures_exit_1_with_one_line_naming_the_cause() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/");
    let output = roundtrip(&["get", &url]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("connection refused"), "{stderr}");
    let output = roundtrip(&["get", "gopher://example.com/"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unsupported protocol scheme"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(roundtrip(&["get"]).status.code(), Some(2));
    assert_eq!(
        roundtrip(&["get", "--no-such-flag", "http://x/"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        roundtrip(&["get", "-H", "no colon", "http://x/"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        roundtrip(&["demo", "no-such-scenario"]).status.code(),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_env_and_pool_flags_reach_the_transport() {
    let server = LocalServer::start().await.unwrap();
    let (addr, reader) = common::fake_inspector();
    let output = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args([
            "get",
            "--no-keepalive",
            "-o",
            "/dev/null",
            &server.url("/small"),
            &server.url("/small"),
        ])
        .env("ROUNDTRIP_INSPECT", &addr)
        .output()
        .unwrap();
    assert!(output.status.success());
    let events = reader.join().unwrap();
    let closes: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "close")
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        closes,
        ["keepalives_disabled", "keepalives_disabled"],
        "{events:#?}"
    );
    assert_eq!(server.connections(), 2);

    let events_file = tempfile::NamedTempFile::new().unwrap();
    let output = roundtrip(&[
        "get",
        "--concurrency",
        "3",
        "--repeat",
        "3",
        "--max-idle-per-host",
        "1",
        "--events",
        events_file.path().to_str().unwrap(),
        "-o",
        "/dev/null",
        &server.url("/delay/100"),
    ]);
    assert!(output.status.success());
    let events = event_lines(events_file.path());
    let refused = events
        .iter()
        .filter(|e| e["event"] == "put_idle" && e["ok"] == false)
        .count();
    assert_eq!(refused, 2, "three connections, room for one idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_serves_curl_logs_each_request_and_stops_on_ctrl_c() {
    use std::io::BufRead;
    let server = LocalServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--events"])
        .arg(&events)
        .env_remove("ROUNDTRIP_INSPECT")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(proxy.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("roundtrip proxy: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    for _ in 0..2 {
        let output = Command::new("curl")
            .args([
                "-sS",
                "-x",
                &format!("http://{addr}"),
                &server.url("/small"),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout), "hello, world\n");
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &proxy.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    assert!(proxy.wait().unwrap().success());
    let mut log = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
    assert!(
        log.contains(&format!(
            "\"GET {}\" 200 on connection #1 (new)",
            server.url("/small")
        )),
        "{log}"
    );
    assert!(log.contains("200 on connection #1 (reused)"), "{log}");
    let events = event_lines(&events);
    let dials = events.iter().filter(|e| e["event"] == "dial_start").count();
    assert_eq!(dials, 1);
    assert_eq!(server.connections(), 1);
    assert_eq!(events.last().unwrap()["reason"], "transport_shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_host_limits_where_get_may_connect() {
    let server = LocalServer::start().await.unwrap();
    let denied = roundtrip(&["get", "--allow-host", "example.com", &server.url("/small")]);
    assert_eq!(denied.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("is not allowed"), "{stderr}");
    assert_eq!(server.connections(), 0);
    let allowed = roundtrip(&["get", "--allow-host", "127.0.0.1", &server.url("/small")]);
    assert!(allowed.status.success());
    assert_eq!(allowed.stdout, b"hello, world\n");
    let bad = roundtrip(&["get", "--allow-host", "*.", &server.url("/small")]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad --allow-host pattern"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_warns_on_every_connection() {
    let tls = roundtrip_servers::ServerTls::generate().unwrap();
    let server = LocalServer::start_tls(&tls, std::time::Duration::ZERO)
        .await
        .unwrap();
    let strict = roundtrip(&["get", &server.url("/small")]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("unknown authority"));
    let insecure = roundtrip(&[
        "get",
        "-k",
        "--no-keepalive",
        &server.url("/small"),
        &server.url("/small"),
    ]);
    assert!(
        insecure.status.success(),
        "{}",
        String::from_utf8_lossy(&insecure.stderr)
    );
    assert_eq!(insecure.stdout, b"hello, world\nhello, world\n");
    let stderr = String::from_utf8_lossy(&insecure.stderr);
    assert_eq!(stderr.matches("WARNING: --insecure").count(), 2, "{stderr}");
}

/// A stand-in HTTP proxy that answers every request with `proxied` and keeps the
/// request lines it saw. (The real proxies, tinyproxy, nginx and microsocks, are
/// driven by `tests/tests/proxies.rs`; here only the CLI's choice of proxy is checked.)
fn request_line_recorder() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for socket in listener.incoming().flatten() {
            let mut reader = BufReader::new(socket.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            record.lock().unwrap().push(line.trim_end().to_owned());
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let _ = (&socket).write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nproxied\n",
            );
        }
    });
    (addr, seen)
}

/// `get` writes a body as it comes, as curl does, not once it has all of it: the
/// server sends half, and the first half is on stdout while the server still holds
/// the rest (a 256 MiB body no longer sits whole in memory either).
#[test]
fn get_streams_a_body_to_stdout_as_it_comes() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::mpsc;
    const HALF: usize = 100_000;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (go_on, hold) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(socket.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let mut socket = socket;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 2 * HALF);
        socket.write_all(head.as_bytes()).unwrap();
        socket.write_all(&[b'a'; HALF]).unwrap();
        // The rest only once the test has seen the first half (or gives up).
        let _ = hold.recv_timeout(std::time::Duration::from_secs(60));
        let _ = socket.write_all(&[b'b'; HALF]);
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(["get", &url])
        .env_remove("ROUNDTRIP_INSPECT")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (got_tx, got) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || got_tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let limit = std::time::Duration::from_secs(60);
    let mut seen = Vec::new();
    while seen.len() < HALF {
        match got.recv_timeout(limit) {
            Ok(bytes) => seen.extend(bytes),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "only {} bytes on stdout while the server held the rest",
                    seen.len()
                );
            }
        }
    }
    assert_eq!(seen, vec![b'a'; HALF]);
    go_on.send(()).unwrap();
    while let Ok(bytes) = got.recv_timeout(limit) {
        seen.extend(bytes);
    }
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("roundtrip get had not ended {limit:?} after its body");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success());
    assert_eq!(seen.len(), 2 * HALF);
    assert!(seen[HALF..].iter().all(|&b| b == b'b'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_takes_proxies_from_the_environment_as_go_and_curl_do() {
    let (proxy, seen) = request_line_recorder();
    let proxy_url = format!("http://{proxy}");
    // HTTP_PROXY for a name: the request goes to the proxy in absolute form.
    let out = roundtrip_with_env(
        &["get", "http://origin.invalid/x?y=1"],
        &[("HTTP_PROXY", &proxy_url)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"proxied\n");
    assert_eq!(
        seen.lock().unwrap().pop().unwrap(),
        "GET http://origin.invalid/x?y=1 HTTP/1.1"
    );
    // Lower case, and ALL_PROXY when the scheme has none of its own.
    let out = roundtrip_with_env(&["get", "http://origin.invalid/"], &[("all_proxy", &proxy)]);
    assert_eq!(out.stdout, b"proxied\n");
    // NO_PROXY: direct, so the made-up name fails to resolve and the proxy saw nothing.
    let seen_before = seen.lock().unwrap().len();
    let out = roundtrip_with_env(
        &["get", "http://origin.invalid/"],
        &[("http_proxy", &proxy_url), ("NO_PROXY", ".invalid")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lookup origin.invalid"));
    // Loopback goes direct whatever the environment says (Go's rule)...
    let server = LocalServer::start().await.unwrap();
    let out = roundtrip_with_env(
        &["get", &server.url("/small")],
        &[("HTTP_PROXY", &proxy_url)],
    );
    assert_eq!(out.stdout, b"hello, world\n");
    assert_eq!(seen.lock().unwrap().len(), seen_before);
    // ...but not with an explicit --proxy, which also beats the environment.
    let out = roundtrip_with_env(
        &["get", "--proxy", &proxy, &server.url("/small")],
        &[("HTTP_PROXY", "http://127.0.0.1:9")],
    );
    assert_eq!(out.stdout, b"proxied\n");
    assert_eq!(
        seen.lock().unwrap().pop().unwrap(),
        format!("GET {} HTTP/1.1", server.url("/small"))
    );
    // --noproxy overrides NO_PROXY.
    let out = roundtrip_with_env(
        &[
            "get",
            "--proxy",
            &proxy,
            "--noproxy",
            "127.0.0.1",
            &server.url("/small"),
        ],
        &[("NO_PROXY", "")],
    );
    assert_eq!(out.stdout, b"hello, world\n");
}

#[test]
fn a_dead_or_bad_proxy_is_named_in_the_error() {
    let refused = roundtrip(&[
        "get",
        "--proxy",
        "socks5h://127.0.0.1:9",
        "http://origin.invalid/",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(
            "proxyconnect socks5h://127.0.0.1:9: dial tcp 127.0.0.1:9: connect: connection refused"
        ),
        "{stderr}"
    );
    let bad = roundtrip(&[
        "get",
        "--proxy",
        "ftp://user:hunter2@p",
        "http://origin.invalid/",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("unsupported proxy scheme \"ftp\""),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let header = roundtrip(&[
        "get",
        "--proxy-header",
        "no colon",
        "http://origin.invalid/",
    ]);
    assert_eq!(header.status.code(), Some(2));
}

#[test]
fn file_urls_read_only_granted_directories() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from a file\n").unwrap();
    let url = format!("file://{}/hello.txt", dir.path().display());
    let granted = roundtrip(&["get", "--allow-dir", dir.path().to_str().unwrap(), &url]);
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    assert_eq!(granted.stdout, b"hello from a file\n");
    let refused = roundtrip(&["get", &url]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no directory is granted (--allow-dir)")
    );
    let missing = roundtrip(&["get", "--allow-dir", "/nonexistent-dir", &url]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--allow-dir /nonexistent-dir"));
}

#[test]
fn bench_runs_every_client_on_a_tiny_workload() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let chart = dir.path().join("bench.png");
    let out = roundtrip(&[
        "bench",
        "--quick",
        "--repetitions",
        "1",
        "--only",
        "concurrency 16",
        "--idle-connections",
        "20",
        "--server",
        "in-process",
        "--out",
        json.to_str().unwrap(),
        "--chart",
        chart.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| concurrency 16 | hyper-util |"), "{table}");
    assert_eq!(&std::fs::read(&chart).unwrap()[1..4], b"PNG");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let clients: Vec<&str> = rows.iter().map(|r| r["client"].as_str().unwrap()).collect();
    assert_eq!(
        clients,
        [
            "roundtrip",
            "roundtrip-local",
            "roundtrip-shards2",
            "floor",
            "floor-local",
            "hyper",
            "wasi-http",
            "raw"
        ]
    );
    for row in rows {
        let median = &row["median"];
        assert_eq!(median["requests"], 2000, "{row}");
        assert_eq!(median["errors"], 0, "{row}");
        assert_eq!(median["body_bytes"], 13 * 2000, "{row}");
        // CPU time counts in 10 ms ticks (a fast client may show none): only its
        // presence is checked; latencies are measured per request.
        assert!(median["cpu_seconds"].is_f64(), "{row}");
        assert!(median["seconds"].as_f64().unwrap() > 0.0, "{row}");
        let (p50, p99) = (
            median["p50_us"].as_u64().unwrap(),
            median["p99_us"].as_u64().unwrap(),
        );
        assert!(0 < p50 && p50 <= p99, "{row}");
        assert!(median["peak_rss_kib"].as_u64().unwrap() > 1000, "{row}");
    }
    // The pool keeps at most 16 connections and leaves no more than those in
    // TIME_WAIT; the wasm peer's connection per request leaves one per request.
    let time_wait = |client: &str| {
        rows.iter().find(|r| r["client"] == client).unwrap()["median"]["time_wait"]
            .as_u64()
            .unwrap()
    };
    assert!(time_wait("roundtrip") <= 2 * 16, "{report}");
    assert!(time_wait("wasi-http") > 1000, "{report}");
    // Idle memory for both pooled clients, start-up with and without the cache.
    let idle = report["idle"].as_array().unwrap();
    assert_eq!(idle.len(), 2, "{report}");
    assert_eq!(idle[0][1]["connections"], 20, "{report}");
    let cold = report["cold_start"].as_array().unwrap();
    assert_eq!(
        (cold[0][0].as_bool(), cold[1][0].as_bool()),
        (Some(true), Some(false))
    );
    assert!(
        cold.iter().all(|c| c[1].as_f64().unwrap() > 0.0),
        "{report}"
    );
}

/// `roundtrip ARGS` with `input` on its stdin.
fn roundtrip_with_stdin(args: &[&str], input: Vec<u8>) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(args)
        .env_remove("ROUNDTRIP_INSPECT")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_and_upload_bodies_stream_through_an_echo_like_curl() {
    use roundtrip_servers::EchoServer;
    let server = EchoServer::start().await.unwrap();
    let url = server.url("/echo");
    let eight_mb = body_bytes(8 * 1024 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");

    // --data-binary @-: stdin, streamed chunked while the echo answers.
    let output = roundtrip_with_stdin(
        &[
            "get",
            "--events",
            events.to_str().unwrap(),
            "--data-binary",
            "@-",
            &url,
        ],
        eight_mb.clone(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stdout == eight_mb,
        "{} bytes came back",
        output.stdout.len()
    );
    let get_conn: Vec<_> = event_lines(&events)
        .into_iter()
        .filter(|e| e["event"] == "get_conn")
        .collect();
    assert_eq!(get_conn[0]["method"], "POST");

    // -T FILE: PUT, streamed with the file's length; a URL ending in `/` gets its name.
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, &eight_mb).unwrap();
    let events = dir.path().join("upload.jsonl");
    let output = roundtrip(&[
        "get",
        "--events",
        events.to_str().unwrap(),
        "--repeat",
        "2",
        "-T",
        file.to_str().unwrap(),
        &server.url("/files/"),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout == [eight_mb.clone(), eight_mb.clone()].concat());
    let lines = event_lines(&events);
    let get_conn: Vec<_> = lines.iter().filter(|e| e["event"] == "get_conn").collect();
    assert_eq!(get_conn[0]["method"], "PUT");
    assert!(
        get_conn[0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/files/upload.bin")
    );
    // The second upload reuses the connection the first one finished.
    let reused: Vec<bool> = lines
        .iter()
        .filter(|e| e["event"] == "got_conn")
        .map(|e| e["reused"].as_bool().unwrap())
        .collect();
    assert_eq!(reused, [false, true]);

    // -T -: stdin, with a declared length.
    let output = roundtrip_with_stdin(
        &["get", "-T", "-", "-H", "Content-Length: 5", &url],
        b"hello".to_vec(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, b"hello");

    // -d @-: curl strips newlines.
    let output = roundtrip_with_stdin(&["get", "-d", "@-", &url], b"a=1\n&b=2\r\n".to_vec());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "a=1&b=2");

    // The server saw every body whole.
    let received = server.received();
    assert_eq!(
        received
            .iter()
            .map(|r| (r.bytes, r.complete))
            .collect::<Vec<_>>(),
        [
            (8_388_608, true),
            (8_388_608, true),
            (8_388_608, true),
            (5, true),
            (7, true)
        ]
    );
    // Stdin is read once: one URL only.
    let twice = roundtrip_with_stdin(&["get", "--data-binary", "@-", &url, &url], Vec::new());
    assert_eq!(twice.status.code(), Some(2));
    // A stdin shorter than its declared length is named, not sent as if whole.
    let short = roundtrip_with_stdin(
        &[
            "get",
            "--data-binary",
            "@-",
            "-H",
            "Content-Length: 10",
            &url,
        ],
        b"abc".to_vec(),
    );
    assert_eq!(short.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("ended after 3 of its 10 declared bytes"),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );
}

/// `ROUNDTRIP_CROSSINGS=1 roundtrip get …` ends with the crossing budget per request
/// (docs/performance.md); without the variable, nothing of it is printed. With no
/// sink the guest sends no events at all; with one, each event is one host call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crossing_budget_is_printed_per_request_when_asked_for() {
    let server = LocalServer::start().await.unwrap();
    let url = server.url("/small");
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let args = ["get", "--repeat", "20", "-o", "/dev/null", url.as_str()];
    let plain = roundtrip(&args);
    assert!(plain.status.success());
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("crossings"));

    let budget = |extra: &[&str]| -> std::collections::BTreeMap<String, f64> {
        let mut all = args.to_vec();
        all.extend_from_slice(extra);
        let counted = roundtrip_with_env(&all, &[("ROUNDTRIP_CROSSINGS", "1")]);
        assert!(counted.status.success());
        let stderr = String::from_utf8_lossy(&counted.stderr).into_owned();
        let table = stderr
            .split_once("crossings per request (20 requests):\n")
            .unwrap_or_else(|| panic!("no table in {stderr}"))
            .1;
        table
            .lines()
            .filter_map(|line| {
                let (name, per) = line.trim().rsplit_once(' ')?;
                Some((name.trim().to_owned(), per.parse().ok()?))
            })
            .collect()
    };
    let quiet = budget(&[]);
    // The 13-byte body comes whole with the head. Its release rides on the next
    // request: one `round-trip` per request, and one `release` for the last body
    // ((20 + 1) / 20); in, the request and the notice that a release is queued; out,
    // the response, body and all.
    assert_eq!(quiet["export calls"], 1.05);
    assert_eq!(quiet["store → caller hand-offs"], 1.0);
    assert_eq!(quiet["caller → store hand-offs"], 2.0);
    // Nowhere to send events: none is built or sent.
    assert_eq!(quiet["events emitted"], 0.0);
    // Inside the guest: one dial's task, the connection's idle watcher, the idle
    // timer and the timer that starts watchers, once per run (4 / 20). Each request
    // writes and reads on its own task, and the connection, pooled and taken back
    // long before it would be watched, wakes no watcher.
    assert_eq!(quiet["guest task spawns"], 0.2);
    assert_eq!(quiet["inter-task wake-ups"], 0.0);

    let heard = budget(&["--events", events.to_str().unwrap()]);
    assert_eq!(heard["export calls"], 1.05);
    // Eight events a reused request (get_conn … put_idle), each one host call;
    // the first request's dial adds four (dial_start, connect_start, connect_done,
    // dial_done), shutdown's close one: (20 × 8 + 5) / 20.
    assert_eq!(heard["events emitted"], 8.25);
    assert_eq!(event_lines(&events).len(), 165);
    assert!(heard["host calls, sync"] >= quiet["host calls, sync"] + 8.25);
    // One connection per run.
    assert_eq!(server.connections(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_the_default_for_https_and_http1_1_turns_it_off() {
    let tls = roundtrip_servers::ServerTls::generate().unwrap();
    let server = roundtrip_servers::H2Server::start(&tls).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let url = server.url("/small");
    let output = roundtrip(&[
        "get",
        "-i",
        "-v",
        "--cacert",
        ca.to_str().unwrap(),
        &url,
        &url,
    ]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    // curl's status line for HTTP/2 has no reason phrase.
    assert!(stdout.starts_with("HTTP/2 200\r\n"), "{stdout}");
    assert!(stderr.contains("ALPN h2"), "{stderr}");
    assert!(stderr.contains("[HTTP/2] [3] OPENED stream"), "{stderr}");
    assert_eq!(stderr.matches("Trying").count(), 1, "{stderr}");
    // This server speaks only h2: with --http1.1 the handshake offers only
    // http/1.1, and the server refuses it, as curl --http1.1 would see.
    let output = roundtrip(&["get", "--http1.1", "--cacert", ca.to_str().unwrap(), &url]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.to_lowercase().contains("tls") || stderr.contains("alpn"),
        "{stderr}"
    );
    let output = roundtrip(&["get", "--http1.1", "--http2", &url]);
    assert_eq!(output.status.code(), Some(2), "one HTTP version at a time");
}
