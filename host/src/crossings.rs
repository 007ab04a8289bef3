//! The crossing budget (`docs/performance.md`): what a request costs in hand-offs
//! between threads and in operations across the component boundary — what is
//! expensive here, far more than the bytes moved.
//!
//! Counted process-wide only when `ROUNDTRIP_CROSSINGS=1` is set at the first count
//! (read once); otherwise each count is one atomic load of a flag. `roundtrip get`
//! prints them per request at its end; [`snapshot`] gives them to any program.
//!
//! ```text
//!  caller's thread ──command──► store thread ──round-trip (export)──► guest
//!        ▲   │ demand permit        │  ▲                              │
//!        │   └──────────────────────┘  │ host calls (net, observe…)   │
//!        └──head, body chunks──────────┘ stream polls (socket, bodies)┘
//! ```
//!
//! Guest task spawns and inter-task wake-ups happen inside the component: the guest
//! counts them when `config.count-crossings` is set (the host sets it when counting
//! is on) and reports each through `observe.count`. Not counted: `wasi:clocks` calls.

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
    /// A guest task spawned (reported by the guest through `observe.count`).
    TaskSpawn,
    /// A guest task woke one of another, sleeping, component-model task (ditto).
    InterTaskWakeup,
    /// The guest's allocator handed out memory (ditto).
    GuestAllocation,
}

/// The names `roundtrip get` prints, in the enum's order (`docs/performance.md`).
const NAMES: [&str; KINDS] = [
    "caller → store hand-offs",
    "store → caller hand-offs",
    "export calls",
    "host calls, async",
    "host calls, sync",
    "stream polls",
    "  of which suspended",
    "events emitted",
    "guest task spawns",
    "inter-task wake-ups",
    "guest allocations",
];

const KINDS: usize = Crossing::GuestAllocation as usize + 1;

static COUNTS: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];

/// Whether counting is on (`ROUNDTRIP_CROSSINGS=1`), decided once.
pub fn is_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("ROUNDTRIP_CROSSINGS").is_some_and(|v| v == "1"))
}

pub(crate) fn count(crossing: Crossing) {
    count_n(crossing, 1);
}

pub(crate) fn count_n(crossing: Crossing, n: u64) {
    if is_enabled() {
        COUNTS[crossing as usize].fetch_add(n, Ordering::Relaxed);
    }
}

/// The counts so far, process-wide, each with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crossings([(&'static str, u64); KINDS]);

/// The counts so far (all zero unless counting is on).
pub fn snapshot() -> Crossings {
    Crossings(std::array::from_fn(|kind| {
        (NAMES[kind], COUNTS[kind].load(Ordering::Relaxed))
    }))
}

impl Crossings {
    /// Each count with its name, in the order of `docs/performance.md`'s table.
    pub fn named(&self) -> [(&'static str, u64); KINDS] {
        self.0
    }

    /// The table `roundtrip get` prints: each count per request.
    pub fn per_request(&self, requests: u64) -> String {
        let mut table = format!("crossings per request ({requests} requests):\n");
        for (name, count) in self.0 {
            let per = count as f64 / requests.max(1) as f64;
            table.push_str(&format!("  {name:<26} {per:>9.2}\n"));
        }
        table
    }
}

/// `Poll::Pending` from a host producer or consumer, counted: the guest's stream
/// operation now waits for an event-loop turn.
pub(crate) fn suspended<T>() -> std::task::Poll<T> {
    count(Crossing::StreamSuspend);
    std::task::Poll::Pending
}
