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
