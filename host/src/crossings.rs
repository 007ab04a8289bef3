//! The crossing budget (`docs/performance.md`): what a request costs in hand-offs
//! between threads and in operations across the component boundary — what is
//! expensive here, far more than the bytes moved.
//!
//! Counted process-wide only when `ROUNDTRIP_CROSSINGS=1` is set at the first count
//! (read once); otherwise each count is one relaxed load of a flag. `roundtrip get`
//! prints them per request at its end; [`snapshot`] gives them to any program.
//!
//! ```text
//!  caller's thread ──command──► store thread ──round-trip (export)──► guest
//!        ▲   │ demand permit        │  ▲                              │
//!        │   └──────────────────────┘  │ host calls (net, observe…)   │
//!        └──head, body chunks──────────┘ stream polls (socket, bodies)┘
//! ```
//!
//! Not counted here (they happen inside the guest or wasmtime): guest task spawns,
//! inter-task wake-ups, `wasi:clocks` calls.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// One kind of crossing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crossing {
    /// The caller's thread hands the store's thread work: a request, or a permit
    /// for the next response body chunk.
    CallerToStore,
    /// The store's thread hands the caller's a response head or a body chunk.
    StoreToCaller,
    /// A host → guest export call (`round-trip`, `stats`, `close-idle-connections`).
    ExportCall,
    /// A guest → host call that may suspend (`connect`, `start-tls`, handshake reads…).
    HostCallAsync,
    /// A guest → host call that returns at once (`emit`, `send`, `receive`, `close`…).
    HostCallSync,
    /// A poll of a host producer or consumer by a guest stream read or write.
    StreamPoll,
    /// … that was not ready: the guest's operation waits for an event-loop turn.
    StreamSuspend,
    /// A lifecycle event the guest emitted.
    Event,
}

const KINDS: usize = 8;

static COUNTS: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];

/// Whether counting is on (`ROUNDTRIP_CROSSINGS=1`), decided once.
pub fn is_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("ROUNDTRIP_CROSSINGS").is_some_and(|v| v == "1"))
}

pub(crate) fn count(crossing: Crossing) {
    if is_enabled() {
        COUNTS[crossing as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The counts so far, process-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Crossings {
    pub caller_to_store: u64,
    pub store_to_caller: u64,
    pub export_calls: u64,
    pub host_calls_async: u64,
    pub host_calls_sync: u64,
    pub stream_polls: u64,
    pub stream_suspends: u64,
    pub events: u64,
}

/// The counts so far (all zero unless counting is on).
pub fn snapshot() -> Crossings {
    let load = |crossing: Crossing| COUNTS[crossing as usize].load(Ordering::Relaxed);
    Crossings {
        caller_to_store: load(Crossing::CallerToStore),
        store_to_caller: load(Crossing::StoreToCaller),
        export_calls: load(Crossing::ExportCall),
        host_calls_async: load(Crossing::HostCallAsync),
        host_calls_sync: load(Crossing::HostCallSync),
        stream_polls: load(Crossing::StreamPoll),
        stream_suspends: load(Crossing::StreamSuspend),
        events: load(Crossing::Event),
    }
}

impl Crossings {
    /// Each count with its name, in the order of `docs/performance.md`'s table.
    pub fn named(&self) -> [(&'static str, u64); KINDS] {
        [
            ("caller → store hand-offs", self.caller_to_store),
            ("store → caller hand-offs", self.store_to_caller),
            ("export calls", self.export_calls),
            ("host calls, async", self.host_calls_async),
            ("host calls, sync", self.host_calls_sync),
            ("stream polls", self.stream_polls),
            ("  of which suspended", self.stream_suspends),
            ("events emitted", self.events),
        ]
    }

    /// The table `roundtrip get` prints: each count per request.
    pub fn per_request(&self, requests: u64) -> String {
        let mut table = format!("crossings per request ({requests} requests):\n");
        for (name, count) in self.named() {
            let per = count as f64 / requests.max(1) as f64;
            table.push_str(&format!("  {name:<26} {per:>9.2}\n"));
        }
        table
    }
}

/// Counts a poll of a host producer or consumer, and whether it suspended.
pub(crate) fn polled<T>(poll: std::task::Poll<T>) -> std::task::Poll<T> {
    count(Crossing::StreamPoll);
    if poll.is_pending() {
        count(Crossing::StreamSuspend);
    }
    poll
}
