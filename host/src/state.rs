//! What the store holds for one transport instance.

use std::sync::Arc;

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
        if !self.events.is_empty() {
            self.events.emit(&event.into());
        }
        Ok(())
    }
}
