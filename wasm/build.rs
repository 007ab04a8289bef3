//! Builds the components for `wasm32-wasip2` so that building a native crate is the
//! only step: the transport, the wasi:http face (`wasi-http/`, composed here with the
//! transport plugged in) and the example wasi:http guests. They are embedded by this
//! crate (`src/lib.rs`) and also left under `target/component/wasm32-wasip2/component/` for other hosts:
//! `roundtrip_component.wasm` (the transport), `roundtrip_wasi_http_client.wasm` (a
//! drop-in `wasi:http/client` whose host supplies `net`, as `roundtrip run`'s does),
//! `roundtrip_wasi_http_client_standalone.wasm` (the same with `wasi-sockets/` plugged
//! in: it needs nothing but WASI 0.3, e.g. the stock `wasmtime` CLI),
//! `roundtrip_transport_standalone.wasm` (the transport with the same plugged in, for
//! hosts that call it themselves) and the example guests `roundtrip_example_fetch.wasm`,
//! `roundtrip_example_checks.wasm` and `roundtrip_example_hello.wasm`.

// `imports` is for run time, not the build.
#[allow(dead_code)]
#[path = "src/compose.rs"]
mod compose;

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("wasm/ sits inside the workspace")
        .to_path_buf();
    for watched in [
        "wasm/component/src",
        "wasm/component/Cargo.toml",
        "wasm/examples/fetch/src",
        "wasm/examples/fetch/wit",
        "wasm/examples/fetch/Cargo.toml",
        "wasm/examples/checks/src",
        "wasm/examples/checks/wit",
        "wasm/examples/checks/Cargo.toml",
        "wasm/examples/hello/src",
        "wasm/examples/hello/wit",
        "wasm/examples/hello/Cargo.toml",
        "wasm/examples/relay/src",
        "wasm/examples/relay/wit",
        "wasm/examples/relay/Cargo.toml",
        "wasm/examples/relay-p2/src",
        "wasm/examples/relay-p2/wit",
        "wasm/examples/relay-p2/Cargo.toml",
        "wasm/wasi-http/src",
        "wasm/wasi-http/Cargo.toml",
        "wasm/wasi-sockets/src",
        "wasm/wasi-sockets/Cargo.toml",
        "wasm/no-tls/src",
        "wasm/no-tls/Cargo.toml",
        "wasm/floor/src",
        "wasm/floor/Cargo.toml",
        "wit",
        "Cargo.toml",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-env-changed=ROUNDTRIP_COMPONENT_PROFILE");

    // A target directory of its own: the outer cargo holds the lock on `target/`.
    let target_dir = workspace.join("target").join("component");
    let profile = env::var("ROUNDTRIP_COMPONENT_PROFILE").unwrap_or_else(|_| "component".into());
    ensure_wasm_target();
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&workspace)
        .args(["build", "--lib", "--package", "roundtrip-component"])
        .args(["--package", "roundtrip-example-fetch"])
        // Guests for the tests of `roundtrip run` and stock wasmtime.
        .args(["--package", "roundtrip-example-checks"])
        .args(["--package", "roundtrip-example-hello"])
        // Services for `roundtrip serve`'s tests and bench.
        .args(["--package", "roundtrip-example-relay"])
        .args(["--package", "roundtrip-example-relay-p2"])
        .args(["--package", "roundtrip-wasi-http"])
        .args(["--package", "roundtrip-wasi-sockets"])
        // wasi:tls that fails every handshake: `roundtrip compose --no-tls`.
        .args(["--package", "roundtrip-no-tls"])
        // The bench's floor (`roundtrip bench`, docs/performance.md).
        .args(["--package", "roundtrip-floor"])
        .args(["--target", "wasm32-wasip2", "--profile", &profile])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's flags are for the host, not for wasm.
    for leaked in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        build.env_remove(leaked);
    }
    let status = build
        .status()
        .expect("could not run cargo to build the component");
    if !status.success() {
        panic!(
            "building roundtrip-component for wasm32-wasip2 failed (see above). \
             If the target is missing, run: rustup target add wasm32-wasip2"
        );
    }
    let built = target_dir.join("wasm32-wasip2").join(&profile);
    for (variable, file) in [
        ("ROUNDTRIP_COMPONENT_WASM", "roundtrip_component.wasm"),
        (
            "ROUNDTRIP_EXAMPLE_FETCH_WASM",
            "roundtrip_example_fetch.wasm",
        ),
        ("ROUNDTRIP_FLOOR_WASM", "roundtrip_floor.wasm"),
        (
            "ROUNDTRIP_EXAMPLE_RELAY_WASM",
            "roundtrip_example_relay.wasm",
        ),
        (
            "ROUNDTRIP_EXAMPLE_RELAY_P2_WASM",
            "roundtrip_example_relay_p2.wasm",
        ),
    ] {
        let wasm = built.join(file);
        check_exists(&wasm);
        println!("cargo:rustc-env={variable}={}", wasm.display());
    }
    // The wasi:http face with the transport plugged into its `round-tripper` import.
    let read = |file: &str| {
        std::fs::read(built.join(file)).unwrap_or_else(|e| panic!("cannot read {file}: {e}"))
    };
    let client = compose::plug(
        &read("roundtrip_wasi_http.wasm"),
        &read("roundtrip_component.wasm"),
        &[],
    )
    .unwrap_or_else(|e| panic!("cannot compose the wasi:http client: {e}"));
    // And with `net`, `files`, `observe` (and `types`) from WASI 0.3 plugged in too;
    // the same for the transport alone (for hosts that call it, docs/embedding.md).
    let sockets = read("roundtrip_wasi_sockets.wasm");
    let standalone = compose::plug(&client, &sockets, &[])
        .unwrap_or_else(|e| panic!("cannot compose the standalone client: {e}"));
    // And with no TLS at all, for hosts that link no wasi:tls (`wasmtime serve`).
    let plain = compose::plug(&standalone, &read("roundtrip_no_tls.wasm"), &[])
        .unwrap_or_else(|e| panic!("cannot compose the client without TLS: {e}"));
    // `round-tripper` uses `types`, now the plug's: it is exported beside it.
    let transport_standalone = compose::plug(
        &read("roundtrip_component.wasm"),
        &sockets,
        &["roundtrip:transport/types@0.1.0"],
    )
    .unwrap_or_else(|e| panic!("cannot compose the standalone transport: {e}"));
    for (variable, file, bytes) in [
        (
            "ROUNDTRIP_WASI_HTTP_CLIENT_WASM",
            "roundtrip_wasi_http_client.wasm",
            client,
        ),
        (
            "ROUNDTRIP_WASI_HTTP_CLIENT_STANDALONE_WASM",
            "roundtrip_wasi_http_client_standalone.wasm",
            standalone,
        ),
        (
            "ROUNDTRIP_WASI_HTTP_CLIENT_PLAIN_WASM",
            "roundtrip_wasi_http_client_plain.wasm",
            plain,
        ),
        (
            "ROUNDTRIP_TRANSPORT_STANDALONE_WASM",
            "roundtrip_transport_standalone.wasm",
            transport_standalone,
        ),
    ] {
        let path = built.join(file);
        std::fs::write(&path, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        println!("cargo:rustc-env={variable}={}", path.display());
    }
}

/// On a fresh machine the wasm target is often missing: add it with rustup, as the
/// README promises that building is the only step.
fn ensure_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let installed = sysroot
        .as_ref()
        .is_some_and(|root| root.join("lib/rustlib/wasm32-wasip2").exists());
    if installed {
        return;
    }
    println!(
        "cargo:warning=adding the wasm32-wasip2 target with rustup (needed to build the component)"
    );
    match Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status()
    {
        Ok(status) if status.success() => {}
        _ => println!(
            "cargo:warning=could not add wasm32-wasip2; run: rustup target add wasm32-wasip2"
        ),
    }
}

fn check_exists(wasm: &Path) {
    if !wasm.exists() {
        panic!("expected a component at {}", wasm.display());
    }
}
