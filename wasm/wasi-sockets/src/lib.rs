//! The transport's imports from WASI 0.3 alone, so that a host that knows nothing of
//! Roundtrip (the stock `wasmtime` CLI) can run it:
//!
//! ```text
//!  net.connect  ──► wasi:sockets ip-name-lookup + tcp-socket.connect (each address in turn)
//!  send/receive ──► tcp-socket.send / receive, the transport's streams handed over as is
//!  start-tls    ──► wasi:tls connector stacked on the socket's streams
//!  observe.emit ──► one line on stderr per event, when ROUNDTRIP_EVENTS is set
//!  files.open   ──► denied: `file://` needs Roundtrip's host and its `--allow-dir`
//! ```
//!
//! It also exports `roundtrip:transport/types`, which the transport imports (its
//! types only) and such a host cannot supply.

#![cfg(target_arch = "wasm32")]

// Generated glue: the ABI needs `unsafe` and exported symbols.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "wasi-sockets-net",
        generate_all,
    });
}

mod conn;
mod errors;

use bindings::exports::roundtrip::transport::types::ErrorCode;
use bindings::exports::roundtrip::transport::{files, net, observe};
use bindings::wasi::sockets::ip_name_lookup;

struct Component;

// The export glue is `unsafe` ABI code too.
#[allow(unsafe_code)]
mod export {
    use super::{Component, bindings};
    bindings::export!(Component with_types_in bindings);
}

impl net::Guest for Component {
    type Connection = conn::Connection;

    async fn connect(
        host: String,
        port: u16,
        timeout: Option<u64>,
    ) -> Result<net::Connection, ErrorCode> {
        conn::Connection::dial(&host, port, timeout, None)
            .await
            .map(net::Connection::new)
    }

    async fn connect_address(
        _host: String,
        address: String,
        port: u16,
        timeout: Option<u64>,
        keep_alive: Option<net::KeepAlive>,
    ) -> Result<net::Connection, ErrorCode> {
        // wasi:sockets has no list of allowed names to keep: the address is dialled
        // (the runtime's own `--allow-ip-name-lookup`/socket rules still apply).
        conn::Connection::dial(&address, port, timeout, keep_alive)
            .await
            .map(net::Connection::new)
    }

    async fn resolve(host: String) -> Result<Vec<String>, ErrorCode> {
        let addresses = ip_name_lookup::resolve_addresses(host.clone())
            .await
            .map_err(|e| errors::lookup(&host, e))?;
        Ok(addresses.iter().map(|a| conn::ip(a).to_string()).collect())
    }
}

impl files::Guest for Component {
    async fn open(path: String) -> Result<files::Entry, ErrorCode> {
        Err(ErrorCode::DestinationDenied(format!(
            "file://{path}: this host grants no directories (file:// needs roundtrip's host and --allow-dir)"
        )))
    }
}

thread_local! {
    /// Whether events go to stderr: `ROUNDTRIP_EVENTS` is set (read once).
    static SHOW_EVENTS: bool = std::env::var_os("ROUNDTRIP_EVENTS").is_some_and(|v| !v.is_empty());
}

impl observe::Guest for Component {
    fn emit(event: observe::Event) {
        // `emit` is synchronous: std's stderr (a blocking WASI 0.2 write) fits it.
        if SHOW_EVENTS.with(|show| *show) {
            eprintln!("roundtrip: {event:?}");
        }
    }

    /// This host keeps no crossing counts (the transport is never asked to count here).
    fn count(_what: observe::GuestCrossing, _n: u32) {}
}
