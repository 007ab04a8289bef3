//! The Roundtrip inspector: every connection's life — dial, TLS, request, body,
//! idle, reuse, close — drawn live from the transport's lifecycle events.
//!
//! [`model`] turns events into view data (pure, tested without a window);
//! [`panels`] draw it and return commands; [`app`] owns the state and applies the
//! commands; [`sources`] brings events in (TCP listener, files, demos, `run`);
//! [`export`] writes JSON Lines and Chrome traces; [`watch`] reads a process tree's
//! TCP connections from the kernel.

pub mod app;
pub mod export;
pub mod model;
pub mod panels;
pub mod sources;
pub mod watch;

pub use app::InspectorApp;
