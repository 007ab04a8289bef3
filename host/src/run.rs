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
//!
//! A wasi:http **0.2** command (`wasi:cli/run@0.2.x`, importing
//! `wasi:http/outgoing-handler@0.2.x`), and a 0.3 one with [`Client::Host`], send
//! through the host instead: wasmtime-wasi-http's own `wasi:http` with
//! [`Hooks`](crate::hooks::Hooks) on a [`Transport`](crate::Transport) made from
//! `config` — the pool `roundtrip serve` gives its services.

use std::sync::{Arc, Mutex};

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::p3::bindings::Command;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::Config;
use crate::bindings::roundtrip::transport::{files, net, observe, types};
use crate::serve::Guest;
use crate::state::{GuestLimits, State};

pub use roundtrip_wasm::{
    WASI_HTTP_CLIENT as WASI_HTTP_CLIENT_WASM,
    WASI_HTTP_CLIENT_STANDALONE as WASI_HTTP_CLIENT_STANDALONE_WASM,
};

/// The client interface a guest imports to send requests.
const WASI_HTTP_CLIENT: &str = "wasi:http/client@0.3.0";

/// The prefix of wasi:http 0.2's client interface (`@0.2.0` … `@0.2.12`).
const WASI_HTTP_P2: &str = "wasi:http/outgoing-handler@0.2.";

/// The face's pool control, exported next to the guest's exports by `roundtrip run`.
const POOL: &str = "roundtrip:transport/pool@0.1.0";

/// Which client `compose` plugs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Composition {
    /// WASI 0.3 alone, TLS from `wasi:tls` (the stock `wasmtime run -S tls`).
    Standalone,
    /// WASI 0.3 without `wasi:tls` (stock `wasmtime serve`, which links none):
    /// `https://` fails, naming why.
    NoTls,
    /// `net`, `files` and `observe` left for the host (`roundtrip run`'s).
    HostNet,
}

/// `guest` with the transport plugged into its `wasi:http/client` import.
pub fn compose(guest: &[u8], composition: Composition) -> Result<Vec<u8>, String> {
    let client = match composition {
        Composition::Standalone => WASI_HTTP_CLIENT_STANDALONE_WASM,
        Composition::NoTls => roundtrip_wasm::WASI_HTTP_CLIENT_PLAIN,
        Composition::HostNet => WASI_HTTP_CLIENT_WASM,
    };
    roundtrip_wasm::compose::plug(guest, client, &[])
        .map_err(|e| format!("cannot plug the transport into the guest: {e}"))
}

/// What a 0.3 guest's `wasi:http/client` import is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Client {
    /// The wasi:http face with the transport inside, plugged into the guest
    /// (`ROUNDTRIP_*` knobs from the guest's environment; one pool per run).
    #[default]
    Plugged,
    /// The host's wasi:http with the [`Hooks`](crate::hooks::Hooks) on a `Transport`
    /// made from `config` (as 0.2 guests always are).
    Host,
}

/// Runs `guest` (a component exporting `wasi:cli/run` 0.3 or 0.2) with `args` (the
/// first is the program's name), the environment `env` (the guest sees nothing else
/// of this process's) and this process's stdio. Returns whether the guest's `run`
/// returned `ok`.
pub async fn run(
    guest: &[u8],
    args: &[String],
    env: &[(String, String)],
    config: Config,
    client: Client,
) -> Result<bool, String> {
    let imports = roundtrip_wasm::compose::imports(guest)?;
    let p2 = imports.iter().any(|name| name.starts_with(WASI_HTTP_P2));
    if p2 || client == Client::Host {
        return run_with_hooks(guest, args, env, config).await;
    }
    let (pre, config, tls) = crate::transport::prepare(config).map_err(|e| e.to_string())?;
    let engine = pre.engine().clone();
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
            allow_dirs: config.allow_dirs.clone().into(),
            allow_hosts: config.allow_hosts.clone().map(Arc::new),
            limits: GuestLimits {
                max_memory: config.max_guest_memory,
                memory: 0,
            },
            continuity: Arc::new(Mutex::new(Default::default())),
            watch: Default::default(),
            resolved: Default::default(),
        },
        http: WasiHttpCtx::new(),
    };
    let mut store = crate::state::guest_store(&engine, state, |run| &mut run.transport.limits);
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

/// A command whose requests go through the host's wasi:http and the hooks.
async fn run_with_hooks(
    guest: &[u8],
    args: &[String],
    env: &[(String, String)],
    config: Config,
) -> Result<bool, String> {
    let max_memory = config.max_guest_memory;
    let transport = crate::Transport::new(config).map_err(|e| e.to_string())?;
    let engine = crate::transport::engine().map_err(|e| e.to_string())?;
    let component = crate::compiled::component(engine, guest)
        .map_err(|e| format!("cannot compile the guest: {e:#}"))?;
    let mut linker: Linker<Guest> = Linker::new(engine);
    let linked = (|| {
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)
    })();
    linked.map_err(|e| format!("{e:#}"))?;
    let wasi = WasiCtx::builder()
        .args(args)
        .envs(env)
        .inherit_stdio()
        .build();
    let hooks = Box::new(crate::hooks::Hooks::new(transport.clone()));
    let mut store = Guest::new(wasi, hooks, max_memory).store(engine);
    let instance = linker
        .instantiate_async(&mut store, &component)
        .await
        .map_err(|e| format!("cannot instantiate the guest: {e:#}"))?;
    let trapped = |e: wasmtime::Error| format!("the guest trapped: {e:#}");
    let outcome = if let Ok(command) = Command::new(&mut store, &instance) {
        store
            .run_concurrent(async move |store| command.wasi_cli_run().call_run(store).await)
            .await
            .and_then(|result| result)
            .map_err(trapped)?
    } else {
        let command = wasmtime_wasi::p2::bindings::Command::new(&mut store, &instance)
            .map_err(|e| format!("the guest is not a wasi:cli command: {e:#}"))?;
        command
            .wasi_cli_run()
            .call_run(&mut store)
            .await
            .map_err(trapped)?
    };
    // The pool's idle connections close with their events before `run` returns.
    drop(store);
    transport.shutdown().await;
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
