//! HTTP/1.1: a request has a connection of its own while it runs (checked out of the
//! pool as an [`active::Active`]), writes its head and body on it and reads the answer
//! from it on its own task, and gives it back at the body's end.
//!
//! ```text
//!  exchange (shared) ─► h1::exchange::attempt ─┬─ send::write_request
//!                                              └─ read_head
//!                      h1::exchange::respond ─► whole: returned inline, connection held
//!                                            └► streamed: body::pump_body ─► body::settle
//! ```

pub mod active;
pub mod body;
pub mod exchange;
pub mod send;
