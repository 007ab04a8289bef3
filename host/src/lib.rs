//! The native host of the Roundtrip transport component.
//!
//! [`Transport`] loads the component (built by `build.rs` and embedded here) into
//! wasmtime, gives it TCP and TLS through the `net` import, routes its lifecycle
//! events to [`events`] sinks, and exposes it as an `http::Request` →
//! `http::Response` client.
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
pub mod bench;
#[allow(unsafe_code)]
mod bindings;
mod body;
mod compiled;
pub mod compose;
mod config;
pub mod demo;
pub mod echo_server;
pub mod egress;
mod error;
pub mod events;
mod files;
pub mod local_server;
mod net;
mod pipes;
mod proxies;
pub mod proxy;
pub mod run;
mod state;
mod tls;
mod transport;

pub use body::{Body, BoxError, RequestOptions, ResponseBody};
pub use config::Config;
pub use error::{Error, ErrorKind};
pub use proxies::ProxyConfig;
pub use tls::ClientCert;
pub use transport::{COMPONENT_WASM, ConnectionInfo, KeyStats, PoolStats, ReasonPhrase, Transport};
