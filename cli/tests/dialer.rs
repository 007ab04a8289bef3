//! Happy Eyeballs, as a user meets it: `roundtrip get` of a name with an IPv6 address
//! that drops SYNs and an IPv4 one where nginx listens. The name comes from a hosts
//! file bind-mounted over `/etc/hosts` in a mount namespace of the command's own
//! (`unshare --mount`, root only: the tests say so and check nothing otherwise).

#![allow(clippy::unwrap_used)]

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

/// `roundtrip get -v URL` with `/etc/hosts` replaced by `hosts` for it alone; its
/// stderr and how long it took.
fn get_with_hosts(hosts: &std::path::Path, args: &[&str]) -> (bool, String, Duration) {
    let started = Instant::now();
    let output = Command::new("unshare")
        .args(["--mount", "--", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
        .arg(hosts)
        .arg(env!("CARGO_BIN_EXE_roundtrip"))
        .args(args)
        .output()
        .unwrap();
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
