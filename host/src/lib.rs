//! The native host of the Roundtrip transport component.
//!
//! [`Transport`] loads the component (built by `wasm/build.rs`, embedded by the crate
//! `roundtrip-wasm`) into wasmtime, gives it TCP and TLS through the `net` import,
//! routes its lifecycle events to [`events`] sinks (JSON Lines, an inspector, a
//! callback, `tracing`), and exposes it as an `http::Request` → `http::Response`
//! client — also as a `tower_service::Service`, so tower middleware stacks on it.
//!
//! This crate is the library alone: the `roundtrip` CLI (`roundtrip-cli`), the
//! benchmark (`roundtrip-bench`), the proxy, demos and test servers (`tools/`) and the
//! inspector live in crates of their own. The feature `hooks` adds [`hooks`]:
//! wasmtime-wasi-http's `WasiHttpHooks` on a shared `Transport`, so every wasi:http
//! guest (0.2 or 0.3) of an embedder sends through one pool; `run` adds [`run`]: any
//! `wasi:cli` command with the transport plugged into its `wasi:http/client` import.
//! [`Client`] is Go's `http.Client` over a transport: redirects, cookies, a timeout.
//!
//! ```no_run
//! # async fn demo() -> Result<(), roundtrip_host::Error> {
//! use http_body_util::BodyExt;
//! let transport = roundtrip_host::Transport::new(roundtrip_host::Config::default())?;
//! let request = http::Request::get("http://127.0.0.1:8080/").body(Default::default()).unwrap();
//! let response = transport.round_trip(request).await?;
//! let body = response.into_body().collect().await?.to_bytes();
//! # Ok(()) }
//! ```

// Generated glue: the component ABI needs `unsafe`.
#[allow(unsafe_code)]
mod bindings;
mod body;
mod client;
mod compiled;
mod config;
pub mod crossings;
pub mod egress;
mod error;
pub mod events;
mod files;
#[cfg(feature = "hooks")]
pub mod hooks;
pub mod metrics;
mod net;
mod pipes;
mod proxies;
#[cfg(feature = "run")]
pub mod run;
#[cfg(feature = "run")]
pub mod serve;
mod service;
mod state;
mod tls;
mod transport;

pub use body::{Body, BoxError, RequestOptions, ResponseBody};
pub use client::{Client, EffectiveUrl, Jar, Redirect, RedirectPolicy, Verdict};
pub use config::{Config, Http2Config, KeepAlive, Protocols};
pub use error::{Error, ErrorKind};
pub use proxies::ProxyConfig;
pub use tls::ClientCert;
pub use transport::{
    COMPONENT_WASM, ConnectionInfo, KeyStats, PoolStats, ReasonPhrase, RequestSent, Transport,
};
