//! Happy Eyeballs, as a user meets it: `roundtrip get` of a name with an IPv6 address
//! that drops SYNs and an IPv4 one where nginx listens. The name comes from a hosts
//! file bind-mounted over `/etc/hosts` in a mount namespace of the command's own
//! (`unshare --mount`, root only: the tests say so and check nothing otherwise).
//! And httptrace's DNS events against a resolver of the test's own (a slow DNS server,
//! `tests/scripts/slow_dns.py`, named in a `resolv.conf` mounted the same way).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use roundtrip_tests::Nginx;

/// `[::1]:port` taking connections into a queue nobody drains, filled: further SYNs
/// are dropped, as by a host that black-holes IPv6. The returned values keep it so.
fn drop_syns(port: u16) -> (TcpListener, Vec<TcpStream>) {
    let listener = TcpListener::bind(("::1", port)).unwrap();
    let addr = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let mut queued = Vec::new();
    while let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        queued.push(stream);
        assert!(queued.len() < 10_000, "the accept queue never filled");
    }
    (listener, queued)
}

/// `roundtrip ARGS` with `/etc/hosts` replaced by `hosts` for it alone; whether it
/// succeeded, its stderr and how long it took.
fn get_with_hosts(hosts: &std::path::Path, args: &[&str]) -> (bool, String, Duration) {
    run_with_files(&[(hosts, "/etc/hosts")], args)
}

/// `roundtrip ARGS` with each `(file, over)` bind-mounted over `over` for it alone.
fn run_with_files(files: &[(&std::path::Path, &str)], args: &[&str]) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut script = String::from("set -e; ");
    for (index, (_, over)) in files.iter().enumerate() {
        script.push_str(&format!("mount --bind \"${}\" {over}; ", index + 1));
    }
    script.push_str(&format!("shift {}; exec \"$@\"", files.len()));
    let output = common::output_within(
        Command::new("unshare")
            .args(["--mount", "--", "sh", "-c", &script, "sh"])
            .args(files.iter().map(|(file, _)| file.as_os_str()))
            .arg(env!("CARGO_BIN_EXE_roundtrip"))
            .args(args),
        Duration::from_secs(60),
    );
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn happy_eyeballs_connects_over_ipv4_within_the_fallback_delay_when_ipv6_drops_syns() {
    if !is_root() {
        eprintln!("not root: no mount namespace for a hosts file, nothing to test");
        return;
    }
    let nginx = Nginx::start_counting("location / { }");
    let _blackhole = drop_syns(nginx.port);
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "::1 dual.test\n127.0.0.1 dual.test\n").unwrap();
    let url = format!("http://dual.test:{}/small", nginx.port);
    let v6 = format!("[::1]:{}", nginx.port);
    let v4 = format!("127.0.0.1:{}", nginx.port);

    // Raced: IPv6 first (the lookup's order), IPv4 300 ms later, and IPv4 wins.
    let (ok, stderr, took) = get_with_hosts(
        &hosts,
        &["get", "-v", "-o", "/dev/null", "--dial-timeout", "6", &url],
    );
    assert!(ok, "{stderr}");
    let tried: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("*   Trying ")?.strip_suffix("..."))
        .collect();
    assert_eq!(tried, [v6.as_str(), v4.as_str()], "{stderr}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "connected after {took:?}, not within the 300 ms fallback delay and some: {stderr}"
    );
    assert!(stderr.contains(&format!("* Connected to {v4}")), "{stderr}");

    // One after another (Go's FallbackDelay < 0): IPv6 has its share of the dial
    // timeout (half of 6 s) before IPv4 is tried.
    let (ok, stderr, took) = get_with_hosts(
        &hosts,
        &[
            "get",
            "-v",
            "-o",
            "/dev/null",
            "--dial-timeout",
            "6",
            "--fallback-delay=-1",
            &url,
        ],
    );
    assert!(ok, "{stderr}");
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_millis(5500),
        "connected after {took:?}: {stderr}"
    );
    assert!(
        stderr.contains(&format!("* connect to {v6} failed")),
        "{stderr}"
    );
    // nginx saw one connection per run: the IPv4 ones.
    assert_eq!(nginx.connections(), (2, 2));
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// Dials that need a name another dial is looking up share that lookup (Go's resolver,
/// httptrace's `DNSDoneInfo.Coalesced`): six requests at once to a name a DNS server
/// answers in 300 ms make six connections (nginx's count) and one lookup (the DNS
/// server's log); each connection's events show its lookup before its connect.
#[test]
fn six_dials_at_once_share_one_lookup_of_their_name() {
    if !is_root() {
        eprintln!("not root: no mount namespace for a resolv.conf, nothing to test");
        return;
    }
    let nginx = Nginx::start_counting("location / { }");
    let dir = tempfile::tempdir().unwrap();
    let queries = dir.path().join("queries.log");
    // Any 127/8 address is loopback: the server has port 53 of one to itself.
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/scripts/slow_dns.py");
    let mut dns = std::process::Command::new("python3")
        .args([server, "127.0.0.53", "53"])
        .arg(&queries)
        .arg("0.3")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(dns.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.53\noptions timeout:5 attempts:1\n",
    )
    .unwrap();
    let events = dir.path().join("events.jsonl");
    let url = format!("http://slow.test:{}/small", nginx.port);
    let (ok, stderr, _) = run_with_files(
        &[(&hosts, "/etc/hosts"), (&resolv, "/etc/resolv.conf")],
        &[
            "get",
            "-v",
            "-o",
            "/dev/null",
            "--repeat",
            "6",
            "--concurrency",
            "6",
            "--events",
            events.to_str().unwrap(),
            &url,
        ],
    );
    let _ = dns.kill();
    let _ = dns.wait();
    assert!(ok, "{stderr}");
    assert_eq!(nginx.connections(), (6, 6));
    // The resolver asked once for the name's IPv4 addresses, for all six dials.
    let asked = std::fs::read_to_string(&queries).unwrap();
    let a_queries = asked.lines().filter(|l| *l == "A slow.test").count();
    assert_eq!(a_queries, 1, "{asked}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let done: Vec<&serde_json::Value> = lines.iter().filter(|e| e["event"] == "dns_done").collect();
    assert_eq!(done.len(), 6, "{done:?}");
    assert!(
        done.iter()
            .all(|e| e["addrs"] == serde_json::json!(["127.0.0.1"])),
        "{done:?}"
    );
    let shared = done.iter().filter(|e| e["coalesced"] == true).count();
    assert_eq!(shared, 5, "{done:?}");
    assert_eq!(
        stderr
            .matches("* Resolved to 127.0.0.1 (shared with another dial's lookup)")
            .count(),
        5,
        "{stderr}"
    );
    // Each connection: its lookup, then its connect.
    let conns: std::collections::BTreeSet<u64> =
        lines.iter().filter_map(|e| e["conn"].as_u64()).collect();
    assert_eq!(conns.len(), 6);
    for conn in conns {
        let names: Vec<&str> = lines
            .iter()
            .filter(|e| e["conn"].as_u64() == Some(conn))
            .filter_map(|e| e["event"].as_str())
            .take(4)
            .collect();
        assert_eq!(
            names,
            ["dial_start", "dns_start", "dns_done", "connect_start"]
        );
    }
}
