//! Roundtrip's transport: an HTTP/1.1 client connection pool in the mould of Go's
//! `net/http.Transport`, built as a WASI 0.3 async WebAssembly component.
//!
//! - [`core`] is sans-I/O: request encoding, response decoding and the pool state machine.
//!   It never reads a clock or touches a socket, so it compiles and is tested natively.
//! - `driver` (wasm32 only) binds the core to the WIT imports: `net` for connections,
//!   `observe` for lifecycle events and `wasi:clocks` for time.

pub mod core;

#[cfg(target_arch = "wasm32")]
mod driver;

/// The target's allocator, counting what it hands out: reported for the crossing
/// budget when `config.count-crossings` asks (`driver::tasks`).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;
