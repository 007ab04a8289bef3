//! `roundtrip run`: an unmodified wasi:http 0.3 command, with this transport plugged
//! into its `wasi:http/client` import.
//!
//! ```text
//!  GUEST.wasm ──plug──► roundtrip_wasi_http_client.wasm (the wasi:http face with the
//!      │                transport inside; built by wasm/build.rs)
//!      ▼
//!  one component, run in a store whose host supplies WASI 0.3 (cli, clocks, random,
//!  wasi:http types) and, as for `Transport`, `net` (tokio + rustls), `files` and
//!  `observe` (the event sinks)
//! ```
//!
//! The guest's requests then share one pool and report every connection's life, like
//! `roundtrip get`'s. The pool's knobs are the face's (Go's defaults, 100 idle
//! connections per host, and what the guest's `ROUNDTRIP_*` variables set); TLS, the
//! allow-lists and the event sinks come from `config`. When the guest's `run` returns,
//! the pool's idle connections are closed (their `close` events end the story).
//!
//! A command that does not import `wasi:http/client` runs as it is.

use std::sync::{Arc, Mutex};

use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::p3::bindings::Command;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::Config;
use crate::bindings::roundtrip::transport::{files, net, observe, types};
use crate::state::{GuestLimits, State};

pub use roundtrip_wasm::{
    WASI_HTTP_CLIENT as WASI_HTTP_CLIENT_WASM,
    WASI_HTTP_CLIENT_STANDALONE as WASI_HTTP_CLIENT_STANDALONE_WASM,
};

/// The client interface a guest imports to send requests.
const WASI_HTTP_CLIENT: &str = "wasi:http/client@0.3.0";

/// The face's pool control, exported next to the guest's exports by `roundtrip run`.
const POOL: &str = "roundtrip:transport/pool@0.1.0";

/// `guest` with the transport plugged into its `wasi:http/client` import: the
/// standalone client, or (`host_net`) the one whose host supplies `net`.
pub fn compose(guest: &[u8], host_net: bool) -> Result<Vec<u8>, String> {
    let client = if host_net {
        WASI_HTTP_CLIENT_WASM
    } else {
        WASI_HTTP_CLIENT_STANDALONE_WASM
    };
    roundtrip_wasm::compose::plug(guest, client, &[])
        .map_err(|e| format!("cannot plug the transport into the guest: {e}"))
}

/// Runs `guest` (a component exporting `wasi:cli/run@0.3.0` and importing
/// `wasi:http/client@0.3.0`) with `args` (the first is the program's name), the
/// environment `env` (the guest sees nothing else of this process's) and this
/// process's stdio. Returns whether the guest's `run` returned `ok`.
pub async fn run(
    guest: &[u8],
    args: &[String],
    env: &[(String, String)],
    config: Config,
) -> Result<bool, String> {
    let (pre, config, tls) = crate::transport::prepare(config).map_err(|e| e.to_string())?;
    let engine = pre.engine().clone();
    let imports = roundtrip_wasm::compose::imports(guest)?;
    let plugged = imports.iter().any(|name| name == WASI_HTTP_CLIENT);
    let composed = if plugged {
        roundtrip_wasm::compose::plug(guest, WASI_HTTP_CLIENT_WASM, &[POOL])
            .map_err(|e| format!("cannot plug the transport into the guest: {e}"))?
    } else {
        guest.to_vec()
    };
    let component = crate::compiled::component(&engine, &composed)
        .map_err(|e| format!("cannot compile the guest: {e:#}"))?;
    let linker = linker(&engine).map_err(|e| format!("{e:#}"))?;

    let state = Run {
        transport: State {
            table: ResourceTable::new(),
            wasi: WasiCtx::builder()
                .args(args)
                .envs(env)
                .inherit_stdio()
                .build(),
            tls,
            events: config.events.clone(),
            insecure: config.insecure_skip_verify,
            allow_dirs: config.allow_dirs.clone().into(),
            allow_hosts: config.allow_hosts.clone().map(Arc::new),
            limits: GuestLimits {
                max_memory: config.max_guest_memory,
                memory: 0,
            },
            continuity: Arc::new(Mutex::new(Default::default())),
            watch: Default::default(),
        },
        http: WasiHttpCtx::new(),
    };
    let mut store = Store::new(&engine, state);
    store.limiter(|state| &mut state.transport.limits);
    // The engine interrupts guests every tick; a program may compute as long as it
    // likes, so each deadline only yields to the host's event loop.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Yield(1)));
    let instance = linker
        .instantiate_async(&mut store, &component)
        .await
        .map_err(|e| format!("cannot instantiate the guest: {e:#}"))?;
    let command = Command::new(&mut store, &instance)
        .map_err(|e| format!("the guest is not a wasi:cli command: {e:#}"))?;
    let close_idle = if plugged {
        let pool = instance.get_export_index(&mut store, None, POOL);
        let close = pool.and_then(|pool| {
            instance.get_export_index(&mut store, Some(&pool), "close-idle-connections")
        });
        match close {
            Some(close) => Some(
                instance
                    .get_typed_func::<(), ()>(&mut store, &close)
                    .map_err(|e| format!("{POOL}: {e:#}"))?,
            ),
            None => None,
        }
    } else {
        None
    };
    let outcome = store
        .run_concurrent(async move |store| {
            let outcome = command.wasi_cli_run().call_run(store).await;
            if let Some(close) = close_idle {
                close.call_concurrent(store, ()).await?;
            }
            outcome
        })
        .await
        .and_then(|result| result)
        .map_err(|e| format!("the guest trapped: {e:#}"))?;
    Ok(outcome.is_ok())
}

fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<Run>> {
    let mut linker: Linker<Run> = Linker::new(engine);
    // Rust's std for wasm32-wasip2 (the transport's and many guests') imports WASI 0.2.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    // The guest's requests go to the plugged-in client; the host keeps the types.
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    types::add_to_linker::<_, HasSelf<State>>(&mut linker, |run| &mut run.transport)?;
    observe::add_to_linker::<_, HasSelf<State>>(&mut linker, |run| &mut run.transport)?;
    net::add_to_linker::<_, crate::net::Net>(&mut linker, |run| &mut run.transport)?;
    files::add_to_linker::<_, crate::files::Files>(&mut linker, |run| &mut run.transport)?;
    Ok(linker)
}

/// The store's data: the transport's host state, and the wasi:http types' context.
struct Run {
    transport: State,
    http: WasiHttpCtx,
}

impl WasiView for Run {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.transport.ctx()
    }
}

impl WasiHttpView for Run {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.transport.table,
            // Nothing is sent through the host's own client: the guest's `client`
            // import is the plugged-in transport.
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}
