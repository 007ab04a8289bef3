//! The components this workspace compiles to `wasm32-wasip2`, as bytes for the native
//! crates. `build.rs` is the one place they are built (profile `component`) and
//! composed; it also leaves them under `target/component/wasm32-wasip2/component/` for
//! other hosts (docs/embedding.md).
//!
//! ```text
//!  wasm/component/     roundtrip-component    the transport (exports round-tripper)
//!  wasm/wasi-http/     roundtrip-wasi-http    the wasi:http/client face over round-tripper
//!  wasm/wasi-sockets/  roundtrip-wasi-sockets `net` on wasi:sockets + wasi:tls
//!  wasm/examples/      fetch, checks, hello   wasi:http 0.3 commands (bench peer, tests)
//!                      relay, relay-p2        wasi:http 0.3 and 0.2 services (`roundtrip serve`)
//!  wasm/floor/         roundtrip-floor        the bench's floor: round-tripper at its least
//! ```

#[cfg(feature = "compose")]
pub mod compose;

/// The transport: exports `round-tripper`, imports `net`, `files`, `observe`.
pub const TRANSPORT: &[u8] = include_bytes!(env!("ROUNDTRIP_COMPONENT_WASM"));

/// The wasi:http face with the transport plugged in: exports `wasi:http/client@0.3.0`
/// (and `roundtrip:transport/pool`), imports `net`, `files` and `observe` from its host.
pub const WASI_HTTP_CLIENT: &[u8] = include_bytes!(env!("ROUNDTRIP_WASI_HTTP_CLIENT_WASM"));

/// The same with `wasi-sockets/` plugged in as well: it imports WASI 0.3 only
/// (sockets, TLS, clocks), so any P3 host, the stock `wasmtime` CLI among them, runs it.
pub const WASI_HTTP_CLIENT_STANDALONE: &[u8] =
    include_bytes!(env!("ROUNDTRIP_WASI_HTTP_CLIENT_STANDALONE_WASM"));

/// The standalone client with wasi:tls replaced by `wasm/no-tls` (every handshake
/// fails, naming why): it imports no `wasi:tls`, so a host without it (stock
/// `wasmtime serve`) loads it; `http://` only (`roundtrip compose --no-tls`).
pub const WASI_HTTP_CLIENT_PLAIN: &[u8] =
    include_bytes!(env!("ROUNDTRIP_WASI_HTTP_CLIENT_PLAIN_WASM"));

/// `wasm/examples/fetch`: an ordinary wasi:http 0.3 command (the wasm peer of `roundtrip bench`).
pub const EXAMPLE_FETCH: &[u8] = include_bytes!(env!("ROUNDTRIP_EXAMPLE_FETCH_WASM"));

/// `wasm/examples/relay`: a wasi:http 0.3 service forwarding each request to the URL
/// in its `url` header (`roundtrip serve`'s tests and bench).
pub const EXAMPLE_RELAY: &[u8] = include_bytes!(env!("ROUNDTRIP_EXAMPLE_RELAY_WASM"));

/// `wasm/examples/relay-p2`: the same as a wasi:http 0.2 `proxy` component.
pub const EXAMPLE_RELAY_P2: &[u8] = include_bytes!(env!("ROUNDTRIP_EXAMPLE_RELAY_P2_WASM"));

/// `wasm/floor`: the least a component exporting `round-tripper` can do per request
/// (plain HTTP/1.1, no pool rules, no events), the floor `roundtrip bench` measures.
pub const FLOOR: &[u8] = include_bytes!(env!("ROUNDTRIP_FLOOR_WASM"));
