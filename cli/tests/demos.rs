//! Every `roundtrip demo` scenario, run as a user runs it (fast mode), with its
//! event stream checked against the story it tells.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use serde_json::Value;

/// Runs `roundtrip demo NAME --events FILE`; returns stdout and the events.
fn demo(name: &str) -> (String, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(["demo", name, "--events"])
        .arg(&events)
        .env_remove("ROUNDTRIP_INSPECT")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "demo {name} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (stdout, events)
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

fn closes(events: &[Value], reason: &str) -> usize {
    named(events, "close")
        .iter()
        .filter(|e| e["reason"] == reason)
        .count()
}

fn reuses(events: &[Value]) -> usize {
    named(events, "got_conn")
        .iter()
        .filter(|e| e["reused"] == true)
        .count()
}

#[test]
fn list_names_every_scenario_with_a_line_each() {
    let output = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(["demo", "--list"])
        .output()
        .unwrap();
    let listed = String::from_utf8(output.stdout).unwrap();
    let names: Vec<&str> = listed
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "reuse",
            "unread-body",
            "early-close",
            "no-keepalive",
            "max-idle-per-host",
            "idle-timeout",
            "server-closes-idle",
            "max-conns-per-host",
            "late-binding",
            "connection-close",
            "tls-resumption",
            "http2-multiplexing",
            "proxy"
        ]
    );
    assert!(listed.lines().all(|l| l.split_whitespace().count() > 5));
}

#[test]
fn reuse_dials_once_and_reuses_twice() {
    let (stdout, events) = demo("reuse");
    assert_eq!(named(&events, "dial_start").len(), 1);
    assert_eq!(reuses(&events), 2);
    assert!(stdout.contains("Result: 1 dial and 2 reuses"), "{stdout}");
    assert_eq!(
        stdout.matches("REUSES connection #1").count(),
        2,
        "{stdout}"
    );
}

#[test]
fn unread_body_dials_more_than_it_reads() {
    let (_, events) = demo("unread-body");
    let dials = named(&events, "dial_start").len();
    let read = named(&events, "body_eof").len();
    assert!(dials > read, "{dials} dials, {read} bodies read");
    // Three dials on the draining transport (their bodies, dropped, drained; the
    // reads after reuse them), three on the old rule's (all closed).
    assert_eq!((dials, read), (6, 3));
    let early = named(&events, "body_closed_early");
    let saved = early.iter().filter(|e| e["saved"] == true).count();
    assert_eq!((early.len(), saved), (6, 3));
    assert_eq!(closes(&events, "early_body_close"), 3);
    // The first three requests each had their own connection.
    let first_three: Vec<u64> = named(&events, "got_conn")
        .iter()
        .take(3)
        .map(|e| e["conn"].as_u64().unwrap())
        .collect();
    assert_eq!(first_three, [1, 2, 3]);
}

#[test]
fn early_close_closes_the_connection_and_the_next_request_dials() {
    let (_, events) = demo("early-close");
    let early = named(&events, "body_closed_early");
    assert_eq!(early.len(), 1);
    assert!(early[0]["bytes"].as_u64().unwrap() < 1_000_000);
    assert_eq!(closes(&events, "early_body_close"), 1);
    assert_eq!(named(&events, "dial_start").len(), 2);
    assert_eq!(reuses(&events), 1);
}

#[test]
fn no_keepalive_dials_for_every_request() {
    let (_, events) = demo("no-keepalive");
    assert_eq!(named(&events, "dial_start").len(), 3);
    assert_eq!(closes(&events, "keepalives_disabled"), 3);
    assert_eq!(reuses(&events), 0);
}

#[test]
fn max_idle_per_host_keeps_two_of_a_burst_of_ten() {
    let (_, events) = demo("max-idle-per-host");
    assert_eq!(named(&events, "dial_start").len(), 10);
    let kept = named(&events, "put_idle")
        .iter()
        .filter(|e| e["ok"] == true)
        .count();
    assert_eq!(kept, 2);
    assert_eq!(closes(&events, "max_idle_per_host"), 8);
}

#[test]
fn idle_timeout_closes_the_idle_connection_and_the_next_request_dials() {
    let (_, events) = demo("idle-timeout");
    assert_eq!(closes(&events, "idle_timeout"), 1);
    assert_eq!(named(&events, "dial_start").len(), 2);
    assert_eq!(reuses(&events), 0);
}

#[test]
fn server_closes_idle_is_detected_and_the_raced_request_is_retried() {
    let (_, events) = demo("server-closes-idle");
    assert_eq!(closes(&events, "server_closed"), 1);
    assert_eq!(named(&events, "retry").len(), 1);
    assert_eq!(named(&events, "dial_start").len(), 3);
    let statuses: Vec<u64> = named(&events, "response")
        .iter()
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200, 200]);
}

#[test]
fn max_conns_per_host_queues_requests_on_two_connections() {
    let (_, events) = demo("max-conns-per-host");
    assert_eq!(named(&events, "dial_start").len(), 2);
    assert_eq!(named(&events, "wait_for_conn").len(), 4);
    assert_eq!(reuses(&events), 4);
    assert_eq!(named(&events, "response").len(), 6);
}

#[test]
fn late_binding_serves_the_waiting_request_on_the_first_free_connection() {
    let (_, events) = demo("late-binding");
    assert_eq!(named(&events, "dial_start").len(), 2);
    // Request 3 (B) started the dial of connection 2 ...
    let b_dial = named(&events, "dial_start")[1];
    assert_eq!(
        (b_dial["req"].as_u64(), b_dial["conn"].as_u64()),
        (Some(3), Some(2))
    );
    // ... but was served by connection 1, which came back first.
    let b_got = named(&events, "got_conn")
        .into_iter()
        .find(|e| e["req"] == 3)
        .unwrap();
    assert_eq!(
        (b_got["conn"].as_u64(), &b_got["reused"]),
        (Some(1), &Value::Bool(true))
    );
    // Connection 2 finished its dial and went idle without serving anyone.
    assert!(named(&events, "got_conn").iter().all(|e| e["conn"] != 2));
    assert!(
        named(&events, "put_idle")
            .iter()
            .any(|e| e["conn"] == 2 && e["ok"] == true)
    );
}

#[test]
fn connection_close_from_the_server_forces_a_new_dial() {
    let (_, events) = demo("connection-close");
    assert_eq!(closes(&events, "connection_close"), 1);
    assert_eq!(named(&events, "dial_start").len(), 2);
    assert_eq!(reuses(&events), 1);
}

#[test]
fn tls_resumption_resumes_the_second_handshake() {
    let (_, events) = demo("tls-resumption");
    let resumed: Vec<&Value> = named(&events, "tls_done")
        .iter()
        .map(|e| &e["resumed"])
        .collect();
    assert_eq!(resumed, [&Value::Bool(false), &Value::Bool(true)]);
    assert_eq!(closes(&events, "close_idle_connections"), 1);
}

#[test]
fn http2_multiplexing_shares_one_connection_where_http1_needs_twelve() {
    let (stdout, events) = demo("http2-multiplexing");
    let streams: Vec<&Value> = named(&events, "got_conn")
        .into_iter()
        .filter(|e| e["proto"] == "h2")
        .collect();
    assert_eq!(streams.len(), 13, "a first request, then 12 at once");
    let conns: std::collections::HashSet<&Value> = streams.iter().map(|e| &e["conn"]).collect();
    assert_eq!(conns.len(), 1, "every HTTP/2 request on one connection");
    let ids: std::collections::HashSet<&Value> = streams.iter().map(|e| &e["stream"]).collect();
    assert_eq!(ids.len(), 13, "a stream each");
    let h1 = named(&events, "got_conn")
        .into_iter()
        .filter(|e| e["proto"] == "http/1.1")
        .count();
    assert_eq!(h1, 12);
    assert_eq!(named(&events, "dial_start").len(), 13);
    assert!(
        stdout.contains("HTTP/1.1 opened 12 connections"),
        "{stdout}"
    );
    assert!(stdout.contains("opens stream"), "{stdout}");
}

#[test]
fn proxy_serves_two_apps_on_one_upstream_connection() {
    let (stdout, events) = demo("proxy");
    assert_eq!(named(&events, "dial_start").len(), 1);
    assert_eq!(reuses(&events), 1);
    assert_eq!(stdout.matches("proxy log:").count(), 2, "{stdout}");
}

#[test]
fn an_unknown_scenario_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(["demo", "no-such-scenario"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("roundtrip demo --list"));
}

#[test]
fn a_demo_streams_its_events_to_an_inspector() {
    let (addr, reader) = common::fake_inspector();
    let output = Command::new(env!("CARGO_BIN_EXE_roundtrip"))
        .args(["demo", "connection-close", "--inspect", &addr])
        .env_remove("ROUNDTRIP_INSPECT")
        .output()
        .unwrap();
    assert!(output.status.success());
    let events = reader.join().unwrap();
    assert_eq!(closes(&events, "connection_close"), 1);
    assert_eq!(named(&events, "dial_start").len(), 2);
}
