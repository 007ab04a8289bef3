//! What the store holds for one transport instance.

use std::sync::{Arc, Mutex};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::roundtrip::transport::{observe, types};
use crate::events::Events;

pub struct State {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    /// The transport's TLS configs (origins, proxies), so sessions resume across its
    /// connections.
    pub tls: crate::tls::ClientTls,
    pub events: Events,
    /// Directories `file://` may read (`--allow-dir`), resolved.
    pub allow_dirs: Arc<[std::path::PathBuf]>,
    /// Where the component may connect (`None`: anywhere).
    pub allow_hosts: Option<Arc<crate::egress::AllowList>>,
    /// The guest's memory cap, and its memory now.
    pub limits: GuestLimits,
    /// Ids and times carried over from earlier instances (after a trap).
    pub continuity: Arc<Mutex<Continuity>>,
    /// The stuck-guest watch (see [`State::check_stuck`]).
    pub watch: Watch,
    /// Addresses `resolve` gave the guest, by name: `connect-address` connects only to
    /// those (an allow-list by name stays one by name).
    pub resolved: Resolved,
}

/// The addresses of the names the guest resolved lately, at most [`Resolved::NAMES`]
/// names (the oldest forgotten first).
#[derive(Debug, Default)]
pub struct Resolved {
    names: std::collections::VecDeque<(String, Vec<std::net::IpAddr>)>,
}

impl Resolved {
    pub const NAMES: usize = 256;

    /// `host` resolved to `addresses`.
    pub fn note(&mut self, host: &str, addresses: Vec<std::net::IpAddr>) {
        self.names.retain(|(name, _)| name != host);
        if self.names.len() == Self::NAMES {
            self.names.pop_front();
        }
        self.names.push_back((host.to_owned(), addresses));
    }

    /// Whether `address` is one of `host`'s: `host` is that IP literal, or resolved to it.
    pub fn knows(&self, host: &str, address: std::net::IpAddr) -> bool {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        literal.parse::<std::net::IpAddr>() == Ok(address)
            || self
                .names
                .iter()
                .any(|(name, addresses)| name == host && addresses.contains(&address))
    }
}

/// Whether the guest is stuck: found running at every epoch tick while making no
/// progress — no bytes through its streams, no event, no connect. A busy guest
/// serving many requests makes progress all the time; a loop that never returns
/// makes none.
#[derive(Debug, Default)]
pub struct Watch {
    last_tick: u64,
    last_progress: u64,
    /// The tick since which the guest has run without progress.
    stalled_since: u64,
}

impl Watch {
    /// Called at each epoch deadline with the tick count; returns the ticks the guest
    /// has been running without progress.
    pub fn stalled_ticks(&mut self, tick: u64) -> u64 {
        let progress = PROGRESS.with(std::cell::Cell::get);
        let ran_through = tick <= self.last_tick + 1;
        if progress != self.last_progress || !ran_through {
            self.last_progress = progress;
            self.stalled_since = tick;
        }
        self.last_tick = tick;
        tick - self.stalled_since
    }
}

thread_local! {
    /// Counts the guest's interactions with the host on this store thread.
    static PROGRESS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Notes that the guest did something with the host (moved bytes, emitted, dialed).
pub fn note_progress() {
    PROGRESS.with(|p| p.set(p.get().wrapping_add(1)));
}

/// Caps the component's linear memory; growing past the cap traps the instance with
/// a message naming the limit.
#[derive(Debug)]
pub struct GuestLimits {
    pub max_memory: usize,
    /// The memory's size now, in bytes.
    pub memory: usize,
}

/// Tables hold function references; a component needs a handful.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// A store for a guest program (`roundtrip run`, `roundtrip serve`): its memory held
/// to the limits `limits` finds in its data, and the engine's every-tick deadline only
/// a yield to the host's event loop — a program may compute as long as it likes.
#[cfg(feature = "run")]
pub(crate) fn guest_store<T: 'static>(
    engine: &wasmtime::Engine,
    data: T,
    limits: fn(&mut T) -> &mut GuestLimits,
) -> wasmtime::Store<T> {
    let mut store = wasmtime::Store::new(engine, data);
    store.limiter(move |data| limits(data));
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(1)));
    store
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            return Err(wasmtime::Error::msg(format!(
                "the component needed {desired} bytes of memory; its limit is {} bytes",
                self.max_memory
            )));
        }
        self.memory = desired;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// What keeps a transport's events continuous across instances: after a trap the new
/// instance counts connections, requests and time from zero again, so its ids and
/// times are shifted past everything the old one emitted.
#[derive(Debug, Default)]
pub struct Continuity {
    pub conn_offset: u64,
    pub req_offset: u64,
    pub ts_offset_us: u64,
    pub max_conn: u64,
    pub max_req: u64,
    /// Instances replaced so far, and why the last one stopped (a body cut off by a
    /// restart says so).
    pub restarts: u64,
    pub last_failure: String,
    /// Which shard of its transport this store is, so that shards never show the same id.
    pub spread: Spread,
}

/// Shard `index` of `count`: its `n`th connection (and request) is shown as
/// `(n - 1) · count + index + 1`, so shards interleave ids and never share one.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub index: u64,
    pub count: u64,
}

impl Default for Spread {
    fn default() -> Self {
        Spread { index: 0, count: 1 }
    }
}

impl Spread {
    pub fn id(self, n: u64) -> u64 {
        match n {
            0 => 0,
            n => (n - 1) * self.count + self.index + 1,
        }
    }
}

impl Continuity {
    /// Notes the ids of an event of the current instance (as they will be shown).
    pub fn note(&mut self, conn: Option<u64>, req: Option<u64>) {
        if let Some(conn) = conn {
            self.max_conn = self.max_conn.max(conn + self.conn_offset);
        }
        if let Some(req) = req {
            self.max_req = self.max_req.max(req + self.req_offset);
        }
    }

    /// Shifts an event of the current instance past everything earlier ones emitted.
    pub fn shift(&self, event: &mut crate::events::Event) {
        event.ts_us += self.ts_offset_us;
        if let Some(conn) = &mut event.conn {
            *conn = self.conn_id(*conn);
        }
        if let Some(req) = &mut event.req {
            *req = self.req_id(*req);
        }
    }

    /// The id a request of the current instance is shown with.
    pub fn req_id(&self, req: u64) -> u64 {
        self.spread.id(req + self.req_offset)
    }

    /// The id a connection of the current instance is shown with (0 stays 0: no
    /// connection).
    pub fn conn_id(&self, conn: u64) -> u64 {
        match conn {
            0 => 0,
            conn => self.spread.id(conn + self.conn_offset),
        }
    }

    /// A new instance starts `elapsed_us` after the transport did.
    pub fn restart(&mut self, elapsed_us: u64) {
        self.conn_offset = self.max_conn;
        self.req_offset = self.max_req;
        self.ts_offset_us = elapsed_us;
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for State {}

impl observe::Host for State {
    fn count(&mut self, what: observe::GuestCrossing, n: u32) -> wasmtime::Result<()> {
        use crate::crossings::{Crossing, count_n};
        let crossing = match what {
            observe::GuestCrossing::TaskSpawn => Crossing::TaskSpawn,
            observe::GuestCrossing::InterTaskWakeup => Crossing::InterTaskWakeup,
            observe::GuestCrossing::Allocation => Crossing::GuestAllocation,
        };
        count_n(crossing, u64::from(n));
        Ok(())
    }

    fn emit(&mut self, event: observe::Event) -> wasmtime::Result<()> {
        note_progress();
        crate::crossings::count(crate::crossings::Crossing::HostCallSync);
        crate::crossings::count(crate::crossings::Crossing::Event);
        let Ok(mut continuity) = self.continuity.lock() else {
            return Ok(());
        };
        // Ids are tracked even with no sink: a restart must continue after them.
        continuity.note(event.conn, event.req);
        if self.events.is_empty() {
            return Ok(());
        }
        let mut event: crate::events::Event = event.into();
        continuity.shift(&mut event);
        drop(continuity);
        self.events.emit(&event);
        Ok(())
    }
}
