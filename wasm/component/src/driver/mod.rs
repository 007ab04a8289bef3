//! The async driver: binds the sans-I/O core to the WIT imports.
//!
//! It holds no protocol logic of its own: framing, reuse rules and pool bookkeeping
//! come from [`crate::core`]; this layer moves bytes between `net` connections and the
//! caller's streams, reads the clock, and reports every step through `observe`.
//! Each round trip runs as a guest task and does its connection's reads and writes
//! itself; a response body that does not come whole is pumped by a task spawned with
//! `spawn_local` (through `tasks::spawn`, which can count them) on the same
//! component-model task, so one instance serves many requests at once.

// Generated glue: the ABI needs `unsafe` and exported symbols.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "transport",
        generate_all,
    });
}

// Shared by both protocols.
mod checkout;
mod clock;
mod conn;
mod errors;
mod exchange;
mod file;
mod request_body;
mod response_body;
mod tasks;
mod transport;
mod tunnel;

// HTTP/1.1: a connection of its own per request.
mod h1;
// HTTP/2: streams of one connection.
mod h2;

use bindings::exports::roundtrip::transport::round_tripper::Guest;

struct Component;

impl Guest for Component {
    type Transport = transport::Transport;
}

// The export glue is generated `unsafe` ABI code.
#[allow(unsafe_code)]
mod export {
    use super::{Component, bindings};
    bindings::export!(Component with_types_in bindings);
}
