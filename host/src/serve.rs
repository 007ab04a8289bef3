//! (feature `run`) `roundtrip serve`: what `wasmtime serve` does — an HTTP/1.1 server
//! whose every request is handled by an instance of a wasi:http service, a 0.3
//! `service` (exports `wasi:http/handler@0.3.0`) or a 0.2 `proxy` (exports
//! `wasi:http/incoming-handler@0.2.x`) — with one difference: every instance's
//! outgoing requests go through ONE [`Transport`] (the [`hooks`](crate::hooks)), so
//! they share one pool, Go's caps count across instances, and retiring an instance
//! closes none of its connections.
//!
//! ```text
//!  client ──HTTP/1.1──► hyper ──► wasmtime-wasi-http ProxyHandler ──► instance 1..N
//!                                   (instance reuse, concurrency)       │ client.send /
//!                                                                       ▼ outgoing-handler
//!                                               Hooks ──► Transport (one pool) ──► upstream
//! ```
//!
//! Instances are made and retired as `wasmtime serve` 48 makes them (the same
//! defaults: a 0.3 instance serves up to 128 requests, 16 at once; a 0.2 instance
//! one; idle instances go after 1 s). Events: `instance_start`/`instance_end`,
//! `incoming_start`/`incoming_done`, and an `outgoing` event per guest request naming
//! the instance and the incoming request it served (docs/events.md).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use wasmtime::component::{GuestTaskId, Linker, ResourceTable};
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState,
    WorkerStatus,
};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::events::{Event, EventKind};
use crate::hooks::{Caller, Hooks, WasiError};
use crate::state::GuestLimits;
use crate::transport::Transport;

/// `wasmtime serve` 48's defaults.
const P3_MAX_REUSE: usize = 128;
const P3_MAX_CONCURRENT: usize = 16;
const P2_MAX_REUSE: usize = 1;

/// How instances are made and kept (`wasmtime serve`'s flags of the same names).
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests an instance serves before it is retired (`None`: 128 for a 0.3
    /// service, 1 for a 0.2 proxy).
    pub max_instance_reuse_count: Option<usize>,
    /// Requests an instance serves at once (`None`: 16; a 0.2 proxy always 1).
    pub max_instance_concurrent_reuse_count: Option<usize>,
    /// How long an idle instance is kept for reuse (1 s).
    pub idle_instance_timeout: Duration,
    /// The guests' environment (nothing else of this process's).
    pub env: Vec<(String, String)>,
    /// Most linear memory an instance may use.
    pub max_guest_memory: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_instance_reuse_count: None,
            max_instance_concurrent_reuse_count: None,
            idle_instance_timeout: Duration::from_secs(1),
            env: Vec::new(),
            max_guest_memory: 256 << 20,
        }
    }
}

/// Which wasi:http world the service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// wasi:http 0.3 `service`.
    P3,
    /// wasi:http 0.2 `proxy`.
    P2,
}

impl World {
    pub fn describe(self) -> &'static str {
        match self {
            World::P3 => "a wasi:http 0.3 service",
            World::P2 => "a wasi:http 0.2 proxy",
        }
    }
}

/// A service ready to serve: compiled, linked, its instances' limits decided.
pub struct Service {
    handler: ProxyHandler<Handler>,
    world: World,
}

/// What every incoming request is labelled with until its instance answers.
pub(crate) struct IncomingData {
    id: u64,
    method: String,
    path: String,
}

impl Service {
    /// Compiles `guest` (a 0.3 service or a 0.2 proxy) for instances whose outgoing
    /// requests go through `transport`.
    pub fn new(guest: &[u8], transport: Transport, options: Options) -> Result<Self, String> {
        Self::build(guest, transport, options, None)
    }

    /// The same, each instance's outgoing requests sent by the hooks `make` returns
    /// instead (`roundtrip bench`'s peer: wasmtime's default client, a connection per
    /// request); `transport` then only carries the events.
    pub fn with_hooks(
        guest: &[u8],
        transport: Transport,
        options: Options,
        make: MakeHooks,
    ) -> Result<Self, String> {
        Self::build(guest, transport, options, Some(make))
    }

    fn build(
        guest: &[u8],
        transport: Transport,
        options: Options,
        make_hooks: Option<MakeHooks>,
    ) -> Result<Self, String> {
        let engine = crate::transport::serve_engine().map_err(|e| e.to_string())?;
        let component = crate::compiled::component(engine, guest)
            .map_err(|e| format!("cannot compile the service: {e:#}"))?;
        let linker = linker(engine).map_err(|e| format!("{e:#}"))?;
        let instance = linker
            .instantiate_pre(&component)
            .map_err(|e| format!("cannot link the service: {e:#}"))?;
        let (pre, world) = match wasmtime_wasi_http::p3::bindings::ServicePre::new(instance.clone())
        {
            Ok(pre) => (ProxyPre::P3(pre), World::P3),
            Err(p3) => match wasmtime_wasi_http::p2::bindings::ProxyPre::new(instance) {
                Ok(pre) => (ProxyPre::P2(pre), World::P2),
                Err(p2) => {
                    return Err(format!(
                        "the component is not a wasi:http service: it exports neither \
                             wasi:http/handler@0.3.0 ({p3:#}) nor \
                             wasi:http/incoming-handler@0.2.x ({p2:#})"
                    ));
                }
            },
        };
        let (reuse, concurrent) = match world {
            World::P3 => (
                options.max_instance_reuse_count.unwrap_or(P3_MAX_REUSE),
                options
                    .max_instance_concurrent_reuse_count
                    .unwrap_or(P3_MAX_CONCURRENT),
            ),
            World::P2 => (options.max_instance_reuse_count.unwrap_or(P2_MAX_REUSE), 1),
        };
        let handler = ProxyHandler::new(Handler {
            pre,
            transport,
            make_hooks,
            options,
            reuse: reuse.max(1),
            concurrent: concurrent.max(1),
            shared: Arc::default(),
            stopping: CancellationToken::new(),
        });
        Ok(Self { handler, world })
    }

    /// A handler of the same service for the thread of shard `index`: its instances
    /// are that thread's (wasmtime-wasi-http spawns them on the runtime it is called
    /// in) and send through that shard ([`Transport::pinned`]); ids, the requests in
    /// flight and shutdown are shared with every other thread's.
    fn handler_for(&self, index: usize) -> ProxyHandler<Handler> {
        let state = self.handler.state();
        ProxyHandler::new(Handler {
            pre: match &state.pre {
                ProxyPre::P3(pre) => ProxyPre::P3(pre.clone()),
                ProxyPre::P2(pre) => ProxyPre::P2(pre.clone()),
            },
            transport: state.transport.pinned(index),
            make_hooks: state.make_hooks.clone(),
            options: state.options.clone(),
            reuse: state.reuse,
            concurrent: state.concurrent,
            shared: Arc::clone(&state.shared),
            stopping: state.stopping.clone(),
        })
    }

    /// Counts the incoming requests taken so far (every thread's), also once
    /// [`Service::serve`] has the service.
    pub fn incoming_count(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let shared = Arc::clone(&self.handler.state().shared);
        move || {
            shared
                .next_incoming
                .load(Ordering::Relaxed)
                .saturating_sub(1)
        }
    }

    /// The world the service speaks.
    pub fn world(&self) -> World {
        self.world
    }

    /// The transport every instance sends through.
    pub fn transport(&self) -> &Transport {
        &self.handler.state().transport
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` resolves; then stops accepting,
    /// lets the requests in flight finish (connections close once their current
    /// request is answered), and shuts the transport down: its idle connections close
    /// with their events. Everything runs on the caller's runtime.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        self.serve_on(listener, shutdown, &[]).await
    }

    /// [`Service::serve`], thread per core: each accepted connection is served on
    /// one of `runtimes` (current-thread runtimes, one per thread, that run until this
    /// returns) — the first with no connection open, else the next in turn — by
    /// instances of that thread, whose requests go to shard `i` of a
    /// transport made with [`Transport::new_on`] on the same runtimes. A connection
    /// and everything it causes then stay on one thread, as nginx's and Envoy's
    /// workers keep theirs, each with its own pool of upstream connections (caps
    /// divided among them). With fewer than two runtimes: [`Service::serve`].
    pub async fn serve_on(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
        runtimes: &[tokio::runtime::Handle],
    ) -> Result<(), String> {
        let lanes: Vec<Lane> = if runtimes.len() < 2 {
            vec![Lane {
                runtime: None,
                handler: self.handler.clone(),
                open: Arc::default(),
            }]
        } else {
            runtimes
                .iter()
                .enumerate()
                .map(|(index, runtime)| Lane {
                    runtime: Some(runtime.clone()),
                    handler: self.handler_for(index),
                    open: Arc::default(),
                })
                .collect()
        };
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut turn = 0;
        loop {
            let stream = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors and the like: wait, as hyper's examples do.
                        eprintln!("roundtrip serve: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // As wasmtime serve: small response writes are not held back (Nagle).
            let _ = stream.set_nodelay(true);
            let lane = pick_lane(&lanes, &mut turn);
            lane.open.fetch_add(1, Ordering::Relaxed);
            let open = OpenGuard(Arc::clone(&lane.open));
            let handler = lane.handler.clone();
            let watcher = graceful.watcher();
            let Some(runtime) = &lane.runtime else {
                tokio::spawn(connection(stream, handler, watcher, open));
                continue;
            };
            // Off this runtime's reactor, onto the lane's.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    eprintln!("roundtrip serve: cannot hand a connection over: {e}");
                    continue;
                }
            };
            runtime.spawn(async move {
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => connection(stream, handler, watcher, open).await,
                    Err(e) => eprintln!("roundtrip serve: cannot take a connection: {e}"),
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
        // Every request answered: idle instances go now, not after their timeout.
        let state = self.handler.state();
        state.stopping.cancel();
        let transport = state.transport.clone();
        let shared = Arc::clone(&state.shared);
        let live = &shared.live;
        drop(lanes);
        drop(self);
        let gone = async {
            while live.count.load(Ordering::Acquire) > 0 {
                let notified = live.changed.notified();
                if live.count.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        };
        // A guest still busy after its last response (post-return work) is not
        // waited for long.
        let _ = tokio::time::timeout(Duration::from_secs(10), gone).await;
        transport.shutdown().await;
        Ok(())
    }
}

/// A thread's connections, and how many of them are open.
struct Lane {
    /// `None`: the caller's runtime.
    runtime: Option<tokio::runtime::Handle>,
    handler: ProxyHandler<Handler>,
    open: Arc<AtomicUsize>,
}

/// The lane for a new connection: the first with none open (a client that opens a
/// connection per request stays on one thread, and one shard's pool), else the next
/// in turn. In turn, not the fewest open: a client that closes its connections and
/// opens as many again finds the counts still holding closed ones for a moment, more
/// on one thread than another, and by the fewest its new connections would pile
/// onto the other thread, whose shard would then dial a connection for each (seen
/// in `roundtrip bench --serve`: 128 upstream connections for 64 at once).
fn pick_lane<'a>(lanes: &'a [Lane], turn: &mut usize) -> &'a Lane {
    *turn = match lanes
        .iter()
        .position(|lane| lane.open.load(Ordering::Relaxed) == 0)
    {
        Some(free) => free,
        None => (*turn + 1) % lanes.len(),
    };
    &lanes[*turn]
}

/// Counts a connection open on its lane until dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one accepted connection with `handler` until it closes (or, on
/// shutdown, once its request in flight is answered).
async fn connection(
    stream: tokio::net::TcpStream,
    handler: ProxyHandler<Handler>,
    watcher: hyper_util::server::graceful::Watcher,
    _open: OpenGuard,
) {
    let service = hyper::service::service_fn(move |request| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handle(&handler, request).await) }
    });
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(connection).await
        && !e.is_incomplete_message()
    {
        eprintln!("roundtrip serve: connection: {e}");
    }
}

/// One incoming request: handed to an instance, answered with what it produced, or
/// `500` as `wasmtime serve` answers when the guest fails.
async fn handle(
    handler: &ProxyHandler<Handler>,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<WasiBody> {
    let state = handler.state();
    let started = Instant::now();
    let data = IncomingData {
        id: state.shared.next_incoming.fetch_add(1, Ordering::Relaxed),
        method: request.method().as_str().to_owned(),
        path: request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
    };
    let id = data.id;
    let request = request.map(|body| body.map_err(WasiError::from).boxed_unsync());
    let outcome = handler.handle(data, request).await;
    // The instance no longer serves this request: later outgoing ones are not its.
    if let Some(caller) = state
        .shared
        .callers
        .lock()
        .ok()
        .and_then(|mut c| c.remove(&id))
    {
        caller.finished(id);
    }
    emit(
        &state.transport,
        EventKind::IncomingDone {
            incoming: id,
            status: outcome.as_ref().ok().map(|r| r.status().as_u16()),
            error: outcome.as_ref().err().map(|e| format!("{e:#}")),
            elapsed_us: started.elapsed().as_micros() as u64,
        },
    );
    match outcome {
        Ok(response) => response,
        Err(e) => {
            eprintln!("roundtrip serve: request {id}: {e:#}");
            let body = Full::new(Bytes::from_static(b"500 Internal Server Error\n"))
                .map_err(|never: Infallible| match never {})
                .boxed_unsync();
            let mut response = http::Response::new(body);
            *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<Guest>> {
    let mut linker = Linker::new(engine);
    // All of WASI, as `wasmtime serve -Scli` gives: services built with a language's
    // standard library import more than the `proxy` world.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// What a guest's store holds when the host's wasi:http serves it (an instance of a
/// service, or a command under `roundtrip run` with the hooks).
pub(crate) struct Guest {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: Box<dyn WasiHttpHooks>,
    limits: GuestLimits,
}

impl Guest {
    pub(crate) fn new(wasi: WasiCtx, hooks: Box<dyn WasiHttpHooks>, max_memory: usize) -> Self {
        Self {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks,
            limits: GuestLimits {
                max_memory,
                memory: 0,
            },
        }
    }

    /// A store for it on `engine` (`state::guest_store`).
    pub(crate) fn store(self, engine: &wasmtime::Engine) -> Store<Guest> {
        crate::state::guest_store(engine, self, |guest| &mut guest.limits)
    }
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Guest {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut *self.hooks,
        }
    }
}

/// Makes the hooks of a new instance's store.
pub type MakeHooks = Arc<dyn Fn() -> Box<dyn WasiHttpHooks> + Send + Sync>;

struct Handler {
    pre: ProxyPre<Guest>,
    transport: Transport,
    make_hooks: Option<MakeHooks>,
    options: Options,
    reuse: usize,
    concurrent: usize,
    /// What every thread's handler shares (`Service::handler_for`).
    shared: Arc<Shared>,
    /// Cancelled on shutdown: idle instances are retired at once.
    stopping: CancellationToken,
}

/// Ids, the incoming requests in flight and the instances alive, across threads.
struct Shared {
    next_instance: AtomicU64,
    next_incoming: AtomicU64,
    /// Incoming requests in flight → the instance serving them.
    callers: Callers,
    live: Live,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            next_instance: AtomicU64::new(1),
            next_incoming: AtomicU64::new(1),
            callers: Callers::default(),
            live: Live::default(),
        }
    }
}

/// Instances alive, and a wake-up when one goes.
#[derive(Default)]
struct Live {
    count: AtomicUsize,
    changed: tokio::sync::Notify,
}

type Callers = Mutex<HashMap<u64, Arc<InstanceCaller>>>;

impl HandlerState for Handler {
    type StoreData = Guest;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<Guest, Expiration, Worker>> {
        let id = self.shared.next_instance.fetch_add(1, Ordering::Relaxed);
        let caller = Arc::new(InstanceCaller {
            instance: id,
            serving: Mutex::new(Vec::new()),
        });
        let engine = crate::transport::serve_engine().map_err(wasmtime::Error::msg)?;
        let wasi = WasiCtx::builder()
            .envs(&self.options.env)
            .inherit_stdout()
            .inherit_stderr()
            .build();
        let hooks: Box<dyn WasiHttpHooks> = match &self.make_hooks {
            Some(make) => make(),
            None => Box::new(Hooks::with_caller(self.transport.clone(), caller.clone())),
        };
        let mut store = Guest::new(wasi, hooks, self.options.max_guest_memory).store(engine);
        let proxy = self.pre.instantiate_async(&mut store).await?;
        self.shared.live.count.fetch_add(1, Ordering::AcqRel);
        emit(&self.transport, EventKind::InstanceStart { instance: id });
        Ok(Instance {
            store,
            proxy,
            view: Guest::http,
            expiration: Expiration {
                idle: self.options.idle_instance_timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::MAX)),
                stopping: Box::pin(self.stopping.clone().cancelled_owned()),
            },
            state: Worker {
                caller,
                reuse: self.reuse,
                concurrent: self.concurrent,
                handled: AtomicU64::new(0),
                transport: self.transport.clone(),
                shared: Arc::clone(&self.shared),
            },
        })
    }
}

/// An instance's caller for the hooks: which incoming requests it serves now.
struct InstanceCaller {
    instance: u64,
    serving: Mutex<Vec<u64>>,
}

impl InstanceCaller {
    fn finished(&self, incoming: u64) {
        if let Ok(mut serving) = self.serving.lock() {
            serving.retain(|&id| id != incoming);
        }
    }
}

impl Caller for InstanceCaller {
    fn instance(&self) -> u64 {
        self.instance
    }

    /// The one incoming request the instance serves; with several at once, which
    /// one sent a request is not known here.
    fn incoming(&self) -> Option<u64> {
        let serving = self.serving.lock().ok()?;
        match serving.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

/// Retires an idle instance after `idle`, or at once on shutdown; requests have no
/// time limit (as `wasmtime serve` without `-W timeout`).
pub(crate) struct Expiration {
    idle: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    stopping: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl WorkerExpiration for Expiration {
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        if status != WorkerStatus::Idle {
            return Poll::Pending;
        }
        if self.stopping.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let Some(deadline) = start.checked_add(self.idle) else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

pub(crate) struct Worker {
    caller: Arc<InstanceCaller>,
    reuse: usize,
    concurrent: usize,
    handled: AtomicU64,
    transport: Transport,
    shared: Arc<Shared>,
}

impl WorkerState for Worker {
    type StoreData = Guest;
    type RequestData = IncomingData;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if concurrent == 0 {
            // Every request it took has been answered, though `handle` may not have
            // heard yet: none of them sends the next outgoing request.
            if let Ok(mut serving) = self.caller.serving.lock() {
                serving.clear();
            }
        }
        if total >= self.reuse {
            ShouldAccept::Never
        } else if concurrent >= self.concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, Guest>,
        data: IncomingData,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        self.handled.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut serving) = self.caller.serving.lock() {
            serving.push(data.id);
        }
        if let Ok(mut callers) = self.shared.callers.lock() {
            callers.insert(data.id, Arc::clone(&self.caller));
        }
        emit(
            &self.transport,
            EventKind::IncomingStart {
                incoming: data.id,
                instance: self.caller.instance,
                method: data.method,
                path: data.path,
            },
        );
        Box::pin(std::future::pending())
    }

    fn drop(&self, store: Store<Guest>, result: wasmtime::Result<()>) {
        if let Err(e) = &result {
            eprintln!(
                "roundtrip serve: instance {} failed: {e:#}",
                self.caller.instance
            );
        }
        drop(store);
        emit(
            &self.transport,
            EventKind::InstanceEnd {
                instance: self.caller.instance,
                requests: self.handled.load(Ordering::Relaxed),
                error: result.err().map(|e| format!("{e:#}")),
            },
        );
        self.shared.live.count.fetch_sub(1, Ordering::AcqRel);
        self.shared.live.changed.notify_waiters();
    }
}

fn emit(transport: &Transport, kind: EventKind) {
    if transport.has_event_sinks() {
        transport.emit_event(Event {
            ts_us: 0,
            kind,
            conn: None,
            req: None,
            key: None,
            tunnel: None,
            app_conn: None,
        });
    }
}

/// Binds `addr` as `wasmtime serve` does (`SO_REUSEADDR`, so a restart finds the
/// port free while old connections sit in `TIME_WAIT`).
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Current-thread runtimes, one per thread, for [`Transport::new_on`] and
/// [`Service::serve_on`]: the caller's runtime first, then each of the others on a
/// thread of its own, serving until this is dropped.
pub struct Runtimes {
    handles: Vec<tokio::runtime::Handle>,
    threads: Vec<(
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )>,
}

impl Runtimes {
    /// `count` runtimes (at least one): the one this is called in, and `count - 1`
    /// new ones (sockets and timers).
    pub fn start(count: usize) -> std::io::Result<Self> {
        let current = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let mut runtimes = Runtimes {
            handles: vec![current],
            threads: Vec::new(),
        };
        for index in 1..count.max(1) {
            let (started, handle) = std::sync::mpsc::channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("roundtrip-serve-{index}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .enable_time()
                        .build();
                    match runtime {
                        Ok(runtime) => {
                            let _ = started.send(Ok(runtime.handle().clone()));
                            runtime.block_on(async {
                                let _ = stopped.await;
                            });
                        }
                        Err(e) => {
                            let _ = started.send(Err(e));
                        }
                    }
                })?;
            let handle = handle
                .recv()
                .map_err(|_| std::io::Error::other("a serving thread exited while starting"))??;
            runtimes.handles.push(handle);
            runtimes.threads.push((stop, thread));
        }
        Ok(runtimes)
    }

    pub fn handles(&self) -> &[tokio::runtime::Handle] {
        &self.handles
    }
}

impl Drop for Runtimes {
    fn drop(&mut self) {
        for (stop, thread) in self.threads.drain(..) {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}
