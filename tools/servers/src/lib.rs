//! Small real servers on loopback ports, for Roundtrip's demos, benchmark and tests:
//! they speak real HTTP over real sockets and count what they saw, so a caller can
//! check reuse and bodies from the server's side too.
//!
//! - [`LocalServer`] (`local.rs`): an HTTP/1.1 origin with routes for every framing
//!   and keep-alive case, and HTTPS with a CA made on the spot ([`ServerTls`]);
//! - [`EchoServer`] (`echo.rs`): a streaming echo on hyper that answers at the head
//!   and records each request body it read ([`Received`]);
//! - [`H2Server`] (`h2.rs`): HTTP/2 over TLS (ALPN `h2`), counting connections,
//!   requests and the most streams open at once.

mod echo;
mod h2;
mod local;
mod python;

pub use echo::{EchoServer, Received};
pub use h2::{H2Counters, H2Server};
pub use local::{Counters, LocalServer, ServerTls, body_bytes};
pub use python::PythonHttpServer;
