//! An app that depends on the library compiles the library's needs, not the CLI's,
//! the benchmark's or the inspector's: `cargo tree` says what it would build.

#![allow(clippy::unwrap_used)]

use std::process::Command;

/// The crates of one `cargo tree -p roundtrip-host -e normal` (names only).
fn library_tree(features: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--offline", "-p", "roundtrip-host", "-e", "normal"])
        .args(["--prefix", "none"]);
    for feature in features {
        command.args(["--features", feature]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

const NOT_FOR_EMBEDDERS: [&str; 13] = [
    "clap",
    "indicatif",
    "plotters",
    "procfs",
    "hyper",
    "hyper-util",
    "hyper-rustls",
    "wasmtime-wasi-http",
    "wac-graph",
    "eframe",
    "egui",
    "rcgen",
    "roundtrip-servers",
];

#[test]
fn the_library_alone_pulls_no_cli_bench_or_ui_dependency() {
    let tree = library_tree(&[]);
    assert!(tree.iter().any(|name| name == "wasmtime"), "{tree:?}");
    assert!(tree.iter().any(|name| name == "tower-service"), "{tree:?}");
    let unwanted: Vec<_> = NOT_FOR_EMBEDDERS
        .iter()
        .filter(|name| tree.iter().any(|crate_name| crate_name == *name))
        .collect();
    assert!(unwanted.is_empty(), "the library pulls {unwanted:?}");
}

#[test]
fn the_run_feature_adds_only_what_running_wasi_http_guests_needs() {
    let tree = library_tree(&["run"]);
    assert!(tree.iter().any(|name| name == "wasmtime-wasi-http"));
    assert!(tree.iter().any(|name| name == "wac-graph"));
    for name in [
        "clap",
        "indicatif",
        "plotters",
        "procfs",
        "hyper-rustls",
        "eframe",
    ] {
        assert!(!tree.iter().any(|crate_name| crate_name == name), "{name}");
    }
}
