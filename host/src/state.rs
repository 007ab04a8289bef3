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
    /// One TLS config per transport, so sessions resume across its connections.
    pub tls: Arc<rustls::ClientConfig>,
    pub events: Events,
    /// Where the component may connect (`None`: anywhere).
    pub allow_hosts: Option<Arc<crate::egress::AllowList>>,
    /// The guest's memory cap, and its memory now.
    pub limits: GuestLimits,
    /// Ids and times carried over from earlier instances (after a trap).
    pub continuity: Arc<Mutex<Continuity>>,
    /// Epoch ticks in a row at which the guest was found running (CPU bound).
    pub busy_ticks: u64,
    pub last_tick: u64,
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
}

impl Continuity {
    /// Shifts an event of the current instance and notes its ids.
    pub fn shift(&mut self, event: &mut crate::events::Event) {
        event.ts_us += self.ts_offset_us;
        if let Some(conn) = &mut event.conn {
            *conn += self.conn_offset;
            self.max_conn = self.max_conn.max(*conn);
        }
        if let Some(req) = &mut event.req {
            *req += self.req_offset;
            self.max_req = self.max_req.max(*req);
        }
    }

    /// A new instance starts `elapsed_us` after the first one did.
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
    fn emit(&mut self, event: observe::Event) -> wasmtime::Result<()> {
        let mut event: crate::events::Event = event.into();
        if let Ok(mut continuity) = self.continuity.lock() {
            continuity.shift(&mut event);
        }
        if !self.events.is_empty() {
            self.events.emit(&event);
        }
        Ok(())
    }
}
