//! `Transport`: one long-lived component instance with its pool, served by one task —
//! of the caller's runtime (`new` within one), of a thread of its own (`new` outside
//! one), or of the caller's `LocalSet` (`new_local`).
//!
//! ```text
//!  callers (any thread) ──Command──► store task: run_concurrent loop
//!                                      ├─ call round-trip (many at once; a whole
//!                                      │  body's release rides on the next one)
//!                                      ├─ pipe response body ─► mpsc ─► ResponseBody
//!                                      └─ sockets ◄─► guest streams
//! ```
//!
//! The store, the guest's tasks and every socket are that one task's, so the component
//! is never touched from two threads at once. On a runtime's worker, tokio runs a task
//! woken from that worker next on it: a request and its response cross no thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{
    Accessor, FutureReader, Linker, ResourceAny, ResourceTable, StreamReader,
};
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtx;

use crate::bindings::exports::roundtrip::transport::round_tripper::GuestTransport;
use crate::bindings::roundtrip::transport::{files, net, observe, types};
use crate::bindings::{Transport as World, TransportPre};
use crate::body::{Body, Inner, RequestOptions, ResponseBody, fields_block, header_map};
use crate::config::Config;
use crate::crossings::Crossing;
use crate::error::{Error, ErrorKind};
use crate::events::{Event, EventKind, Events};
use crate::files::Files;
use crate::net::Net;
use crate::pipes::{
    BytesConsumer, CaughtUp, FramesProducer, OneshotConsumer, Settling, TrailersConsumer,
};
use crate::state::{Continuity, GuestLimits, Spread, State};
use crate::tls::ClientTls;

/// The transport component, built by `wasm/build.rs`.
pub const COMPONENT_WASM: &[u8] = roundtrip_wasm::TRANSPORT;

/// The window of a streamed response body: chunks (up to 64 KiB each) the component
/// may hand over ahead of the caller's reads. One: the caller's read of a chunk overlaps
/// the component's write of the next, and no permit crosses per chunk. More cost more
/// than they saved (256 MiB bodies, one run each, `roundtrip local` ÷ the raw loop):
/// with eight, glibc trimmed and regrew its heap under half a MiB of chunks freed at
/// once (1 552 `brk` calls in `roundtrip get`, 11 with two) and the body came at 0.49×;
/// with two, 0.89×; with one, 1.02× (docs/performance.md).
const BODY_CHUNKS: usize = 1;

/// How long a request waits, at most, for the component to take in bodies read to
/// their end (`Settling`) before it asks for a connection: far less than a dial costs
/// on any network, and what a busy store takes to give those bodies their turns.
const SETTLE_WAIT: Duration = Duration::from_millis(1);

/// How long a shutdown waits for the calls still running in the component (see
/// `run_instance`).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Which connection carried a response (in `http::Response::extensions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Connection id, as in events.
    pub id: u64,
    /// Whether it had served an earlier request (Go's `GotConnInfo.Reused`).
    pub reused: bool,
    /// The request's id, as in events.
    pub req: u64,
}

/// How writing the request ended, for a response whose head came while the request
/// body may still have been going out (in `http::Response::extensions` of a streamed
/// body): resolves once the last byte is written, or to the error that stopped it.
/// Dropping it changes nothing. wasi:http's transmit future (the hooks) reports it.
#[derive(Clone)]
pub struct RequestSent(futures::future::Shared<oneshot::Receiver<Result<(), types::ErrorCode>>>);

impl std::fmt::Debug for RequestSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestSent")
    }
}

impl std::future::Future for RequestSent {
    type Output = Result<(), Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.poll_unpin(cx).map(|sent| match sent {
            Ok(outcome) => outcome.map_err(Error::from),
            Err(_) => Err(Error::shutdown()),
        })
    }
}

/// The reason phrase the server sent (in `http::Response::extensions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonPhrase(pub String);

/// Pool occupancy (from the component's `stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub keys: Vec<KeyStats>,
    pub dials: u64,
    pub reuses: u64,
    /// The component's linear memory now, in bytes.
    pub guest_memory: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStats {
    pub key: String,
    pub idle: u32,
    pub active: u32,
    pub dialing: u32,
    /// Requests waiting for a connection.
    pub waiting: u32,
}

/// A request on its way to the store thread. `cancel` resolves when the caller drops
/// its `round_trip` future.
struct Outgoing {
    request: http::Request<Body>,
    cancel: oneshot::Receiver<()>,
    reply: oneshot::Sender<Result<http::Response<ResponseBody>, Error>>,
}

enum Command {
    RoundTrip(Box<Outgoing>),
    /// Releases were queued (`Releases`): unless the caller's next command is already
    /// here to carry them, let go of their connections now.
    Flush,
    CloseIdle(oneshot::Sender<()>),
    Stats(oneshot::Sender<PoolStats>),
    Shutdown(oneshot::Sender<()>),
}

/// An HTTP/1.1 transport with Go's pooling rules, running inside the component.
/// Clones share the pool (the pools, with [`Config::shards`]).
#[derive(Clone)]
pub struct Transport {
    shards: Arc<[Shard]>,
    /// The shard every round trip goes to ([`Transport::pinned`]); `None`: the least
    /// busy one.
    home: Option<usize>,
    /// Events the host side adds (proxy tunnels), on the component's time base.
    host_events: Arc<HostEvents>,
}

/// One instance of the component with its pool: a task of the caller's runtime, a
/// thread of its own, or (`new_local`) a task of the caller's `LocalSet`.
struct Shard {
    commands: mpsc::UnboundedSender<Command>,
    /// Round trips sent here whose response head has not come back yet.
    in_flight: AtomicUsize,
    _thread: ThreadGuard,
}

impl Shard {
    fn new(
        commands: mpsc::UnboundedSender<Command>,
        thread: Option<std::thread::JoinHandle<()>>,
    ) -> Self {
        Shard {
            commands,
            in_flight: AtomicUsize::new(0),
            _thread: ThreadGuard(thread),
        }
    }
}

/// Where host-side events go, and the instant the component's clock counts from.
struct HostEvents {
    events: Events,
    started: Instant,
}

impl Transport {
    /// Instantiates the component with `config`, one instance per shard
    /// ([`Config::shards`]). Called within a tokio runtime, each instance is then served
    /// by a task of that runtime (as hyper-util's connections are): a request and its
    /// response wake the other side on the same worker (tokio runs a task woken from
    /// a worker next on that worker), with no thread between them. Outside a runtime,
    /// each instance runs on a thread of its own. Either way the `Transport` can be
    /// used from any thread — a runtime's task while that runtime runs; a
    /// [`Transport::shutdown`] before it stops has every event out.
    pub fn new(config: Config) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current().ok();
        Self::start(config, |_| runtime.clone())
    }

    /// Instantiates the component with one shard per runtime in `runtimes` (fewer
    /// when a cap is smaller than their count, [`Config::effective_shards`]), shard
    /// `i` a task of `runtimes[i]`: a program with a current-thread runtime per core
    /// (a thread-per-core server) gives each its own store and pool, and sends a
    /// thread's requests to its own with [`Transport::pinned`]. Each cap is divided
    /// among the shards ([`Config::shard`]), so it still holds across them.
    pub fn new_on(mut config: Config, runtimes: &[tokio::runtime::Handle]) -> Result<Self, Error> {
        config.shards = runtimes.len().max(1);
        Self::start(config, |index| runtimes.get(index).cloned())
    }

    fn start(
        config: Config,
        runtime: impl Fn(usize) -> Option<tokio::runtime::Handle>,
    ) -> Result<Self, Error> {
        let (pre, config, tls) = prepare(config)?;
        let events = config.events.clone();
        let origin = Instant::now();
        let count = config.effective_shards();
        let starting: Vec<_> = (0..count)
            .map(|index| {
                let spread = Spread {
                    index: index as u64,
                    count: count as u64,
                };
                start_shard(
                    runtime(index).as_ref(),
                    pre.clone(),
                    config.shard(index, count),
                    tls.clone(),
                    spread,
                    origin,
                )
            })
            .collect::<Result<_, Error>>()?;
        let mut shards = Vec::with_capacity(count);
        for (commands, ready, thread) in starting {
            // A task's instance started in `start_shard`; a thread says when its has.
            match ready.map(|ready| ready.recv()) {
                None | Some(Ok(Ok(()))) => shards.push(Shard::new(commands, thread)),
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(_)) => {
                    return Err(Error::engine("the transport thread exited while starting"));
                }
            }
        }
        Ok(Self::serving(shards, events, origin))
    }

    /// The same transport (its pools, caps and events), sending every round trip to
    /// shard `index` (modulo the shards there are) instead of the least busy one: a
    /// thread's own shard under [`Transport::new_on`], so that a request and its
    /// response cross no thread. Closing, stats and shutdown still cover every shard.
    pub fn pinned(&self, index: usize) -> Transport {
        Transport {
            home: Some(index % self.shards.len()),
            ..self.clone()
        }
    }

    /// How many shards (stores, pools) this transport runs.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn serving(shards: Vec<Shard>, events: Events, started: Instant) -> Self {
        Self {
            shards: shards.into(),
            home: None,
            host_events: Arc::new(HostEvents { events, started }),
        }
    }

    /// Instantiates the component on the current thread, as a task of the
    /// `tokio::task::LocalSet` this is called in, instead of a thread of its own. For a
    /// program whose requests all come from that thread (a current-thread runtime):
    /// a request, its response and each body chunk then cross no thread, which is
    /// most of a small request's cost. One shard, whatever `config.shards` says. The
    /// transport stops with the `LocalSet`.
    pub async fn new_local(config: Config) -> Result<Self, Error> {
        let (pre, config, tls) = prepare(config)?;
        let events = config.events.clone();
        let origin = Instant::now();
        let (commands, inbox) = mpsc::unbounded_channel();
        let shard = ShardStart {
            spread: Spread::default(),
            origin,
            inbox: commands.downgrade(),
        };
        let first = start_first(&pre, &config, &tls, &shard).await?;
        tokio::task::spawn_local(serve(pre, config, tls, inbox, first, shard));
        Ok(Self::serving(
            vec![Shard::new(commands, None)],
            events,
            origin,
        ))
    }

    /// The shard with the fewest round trips in flight; the first of those on a tie.
    fn pick(&self) -> &Shard {
        if let Some(home) = self.home {
            return &self.shards[home];
        }
        let first = &self.shards[0];
        if self.shards.len() == 1 {
            return first;
        }
        self.shards
            .iter()
            .min_by_key(|shard| shard.in_flight.load(Ordering::Relaxed))
            .unwrap_or(first)
    }

    /// Whether the transport has shut down (its thread or task ended): requests
    /// then fail at once with [`ErrorKind::Shutdown`](crate::ErrorKind).
    pub fn is_shut_down(&self) -> bool {
        self.shards.iter().any(|shard| shard.commands.is_closed())
    }

    /// Sends one request; returns once the response head has arrived. The URL must be
    /// absolute (`http://` or `https://`).
    pub async fn round_trip(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<ResponseBody>, Error> {
        let (reply, response) = oneshot::channel();
        // Dropped with this future: the component then abandons the request.
        let (_cancel_on_drop, cancel) = oneshot::channel();
        let outgoing = Outgoing {
            request,
            cancel,
            reply,
        };
        let shard = self.pick();
        let _in_flight = InFlight::enter(&shard.in_flight);
        shard
            .commands
            .send(Command::RoundTrip(Box::new(outgoing)))
            .map_err(|_| Error::shutdown())?;
        crate::crossings::count(Crossing::CallerToStore);
        response.await.map_err(|_| Error::shutdown())?
    }

    /// Sends an event the host side made (e.g. a proxy tunnel) to this transport's
    /// sinks, stamped on the same clock as the component's events.
    pub fn emit(&self, kind: EventKind, key: Option<String>, tunnel: Option<u64>) {
        self.emit_event(Event {
            ts_us: 0,
            kind,
            conn: None,
            req: None,
            key,
            tunnel,
            app_conn: None,
        });
    }

    /// Sends `event` (its ids as the caller set them) to this transport's sinks,
    /// stamped now on the component's clock.
    pub fn emit_event(&self, mut event: Event) {
        let host = &self.host_events;
        if host.events.is_empty() {
            return;
        }
        event.ts_us = micros(host.started.elapsed());
        host.events.emit(&event);
    }

    /// Whether any sink listens (so a caller can skip building events).
    pub fn has_event_sinks(&self) -> bool {
        !self.host_events.events.is_empty()
    }

    /// Closes every idle connection now (Go's `CloseIdleConnections`).
    pub async fn close_idle_connections(&self) {
        for shard in self.shards.iter() {
            let (reply, done) = oneshot::channel();
            if shard.commands.send(Command::CloseIdle(reply)).is_ok() {
                let _ = done.await;
            }
        }
    }

    /// The pool's occupancy now (the shards' added up, key by key).
    pub async fn stats(&self) -> PoolStats {
        let mut total = PoolStats::default();
        for shard in self.shards.iter() {
            let (reply, stats) = oneshot::channel();
            if shard.commands.send(Command::Stats(reply)).is_err() {
                continue;
            }
            let Ok(stats) = stats.await else { continue };
            total.dials += stats.dials;
            total.reuses += stats.reuses;
            total.guest_memory += stats.guest_memory;
            for key in stats.keys {
                match total.keys.iter_mut().find(|k| k.key == key.key) {
                    Some(sum) => {
                        sum.idle += key.idle;
                        sum.active += key.active;
                        sum.dialing += key.dialing;
                        sum.waiting += key.waiting;
                    }
                    None => total.keys.push(key),
                }
            }
        }
        total
    }

    /// Closes every connection (`close{transport_shutdown}` for idle ones) and stops
    /// the component. Requests still in flight fail with a `Shutdown` error.
    pub async fn shutdown(&self) {
        for shard in self.shards.iter() {
            let (reply, done) = oneshot::channel();
            if shard.commands.send(Command::Shutdown(reply)).is_ok() {
                let _ = done.await;
            }
        }
    }
}

/// Counts a round trip in flight on its shard until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whole bodies' connections their callers have let go of (the bytes taken, or
/// dropped unread), on their way to the component. The caller only queues one; the
/// store takes the queue before it handles any later command: the next request carries
/// them (`request.releases`: no call of their own), any other command has them
/// `release`d first. The first one queued also sends a `Command::Flush`, so that a
/// caller that sends nothing more still has its connection pooled (and its idle
/// timeout running) at once.
struct Releases {
    queue: Mutex<Vec<Queued>>,
    /// Streamed bodies read to their end that the component has yet to take in.
    settling: Arc<Settling>,
    /// The store's own inbox (weakly: it ends when every `Transport` is gone).
    inbox: mpsc::WeakUnboundedSender<Command>,
}

/// A release, and the instance (restarts so far) whose connection id it names.
struct Queued {
    instance: u64,
    release: types::Release,
}

impl Releases {
    fn new(inbox: mpsc::WeakUnboundedSender<Command>) -> Self {
        Releases {
            queue: Mutex::new(Vec::new()),
            settling: Arc::default(),
            inbox,
        }
    }

    fn push(&self, queued: Queued) {
        let first = match self.queue.lock() {
            Ok(mut queue) => {
                queue.push(queued);
                queue.len() == 1
            }
            Err(_) => return,
        };
        if first && let Some(inbox) = self.inbox.upgrade() {
            crate::crossings::count(Crossing::CallerToStore);
            let _ = inbox.send(Command::Flush);
        }
    }

    /// Everything queued for `instance`; the rest named connections of an instance
    /// that is gone.
    fn take(&self, instance: u64) -> Vec<types::Release> {
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        if queue.is_empty() {
            return Vec::new();
        }
        queue
            .drain(..)
            .filter(|queued| queued.instance == instance)
            .map(|queued| queued.release)
            .collect()
    }
}

/// Which shard a store thread runs, the instant the transport's clock counts from,
/// and its own inbox (weakly: it ends when every `Transport` is gone).
struct ShardStart {
    spread: Spread,
    origin: Instant,
    inbox: mpsc::WeakUnboundedSender<Command>,
}

/// A shard being started: its inbox, and, for a thread, what says it serves.
type Started = (
    mpsc::UnboundedSender<Command>,
    Option<std::sync::mpsc::Receiver<Result<(), Error>>>,
    Option<std::thread::JoinHandle<()>>,
);

/// Starts one shard's store, as a task of `runtime` or on a thread of its own.
fn start_shard(
    runtime: Option<&tokio::runtime::Handle>,
    pre: TransportPre<State>,
    config: Config,
    tls: ClientTls,
    spread: Spread,
    origin: Instant,
) -> Result<Started, Error> {
    let (commands, inbox) = mpsc::unbounded_channel();
    let shard = ShardStart {
        spread,
        origin,
        inbox: commands.downgrade(),
    };
    if let Some(runtime) = runtime {
        // Instantiated here, where a failure is `new`'s error: no task of the
        // runtime is waited for (the runtime may have no other thread to run it).
        // Nothing in an instance's start needs the runtime.
        let first = futures::executor::block_on(start_first(&pre, &config, &tls, &shard))?;
        runtime.spawn(serve(pre, config, tls, inbox, first, shard));
        return Ok((commands, None, None));
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let ready: Ready = Box::new(move |outcome| {
        let _ = ready_tx.send(outcome);
    });
    let thread = std::thread::Builder::new()
        .name("roundtrip-transport".into())
        .spawn(move || {
            // Sockets and timers; no signal driver (it would hold a socket pair).
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    ready(Err(Error::engine(e)));
                    return;
                }
            };
            runtime.block_on(serve(pre, config, tls, inbox, First::Start(ready), shard));
        })
        .map_err(Error::engine)?;
    Ok((commands, Some(ready_rx), Some(thread)))
}

/// What the store side says once its first instance serves (or could not start).
type Ready = Box<dyn FnOnce(Result<(), Error>) + Send>;

/// What both ways of starting need: the compiled component, the configuration made
/// ready (grants resolved, the inspector from the environment) and the TLS config.
pub(crate) fn prepare(
    mut config: Config,
) -> Result<(TransportPre<State>, Config, ClientTls), Error> {
    let tls = ClientTls::new(&config)?;
    config.allow_dirs = crate::files::canonical_grants(&config.allow_dirs)?;
    if config.inspect_from_env {
        config.events = config.events.with_env_inspector();
    }
    let pre = prepared(config.component.unwrap_or(COMPONENT_WASM))?;
    Ok((pre, config, tls))
}

/// Joins the store thread when the last clone of a `Transport` goes away, so its
/// final events are out before the program moves on.
struct ThreadGuard(Option<std::thread::JoinHandle<()>>);

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        // The thread sees its channel close (every sender is gone with us) and ends.
        if let Some(thread) = self.0.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// The engine, made once per process, with the thread that advances its epoch.
pub(crate) fn engine() -> Result<&'static Engine, Error> {
    shared_engine(false)
}

/// The engine `roundtrip serve` runs its guests on: the same with wasmtime's pooling
/// allocator, as `wasmtime serve` makes its own by default, so that making an instance
/// per request, or per 128, takes slots from a pool rather than fresh mappings. Epochs
/// stay: a busy guest yields every tick, so one cannot hold up the others, nor the
/// transport, on `serve`'s one thread.
#[cfg(feature = "run")]
pub(crate) fn serve_engine() -> Result<&'static Engine, Error> {
    shared_engine(true)
}

/// The process's engine of each kind, made on first use.
fn shared_engine(pooling: bool) -> Result<&'static Engine, Error> {
    static PLAIN: OnceLock<Result<Engine, Error>> = OnceLock::new();
    static POOLING: OnceLock<Result<Engine, Error>> = OnceLock::new();
    let engine = if pooling { &POOLING } else { &PLAIN };
    engine
        .get_or_init(|| make_engine(pooling))
        .as_ref()
        .map_err(Clone::clone)
}

fn make_engine(pooling: bool) -> Result<Engine, Error> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model_async(true);
    config.concurrency_support(true);
    // Deadlines every tick: a busy guest yields, a stuck one is stopped.
    config.epoch_interruption(true);
    if pooling {
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
            wasmtime::PoolingAllocationConfig::default(),
        ));
    }
    // `perf` can name the component's functions (`/tmp/perf-PID.map`).
    if std::env::var_os("ROUNDTRIP_PERF_MAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config).map_err(Error::engine)?;
    let ticking = engine.clone();
    std::thread::Builder::new()
        .name("roundtrip-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TICK);
                // The transport's count of ticks (its stuck-guest limit) is its own
                // engine's.
                if !pooling {
                    TICKS.fetch_add(1, Ordering::Relaxed);
                }
                ticking.increment_epoch();
            }
        })
        .map_err(Error::engine)?;
    Ok(engine)
}

/// `wasm` (the transport, or `Config::component`) compiled and linked, once per
/// process for each component.
fn prepared(wasm: &'static [u8]) -> Result<TransportPre<State>, Error> {
    static PREPARED: Mutex<Vec<(usize, TransportPre<State>)>> = Mutex::new(Vec::new());
    let key = wasm.as_ptr() as usize;
    let mut prepared = PREPARED
        .lock()
        .map_err(|_| Error::engine("a component failed to load in another thread"))?;
    if let Some((_, pre)) = prepared.iter().find(|(k, _)| *k == key) {
        return Ok(pre.clone());
    }
    let engine = engine()?;
    // Compiled once, then loaded from the user's cache directory (`compiled.rs`).
    let component = crate::compiled::component(engine, wasm).map_err(Error::engine)?;
    let mut linker: Linker<State> = Linker::new(engine);
    // Rust's std for wasm32-wasip2 imports a few WASI 0.2 interfaces.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(Error::engine)?;
    wasmtime_wasi::p3::clocks::add_to_linker(&mut linker).map_err(Error::engine)?;
    types::add_to_linker::<_, wasmtime::component::HasSelf<State>>(&mut linker, |s| s)
        .map_err(Error::engine)?;
    observe::add_to_linker::<_, wasmtime::component::HasSelf<State>>(&mut linker, |s| s)
        .map_err(Error::engine)?;
    net::add_to_linker::<_, Net>(&mut linker, |s| s).map_err(Error::engine)?;
    files::add_to_linker::<_, Files>(&mut linker, |s| s).map_err(Error::engine)?;
    let instance_pre = linker.instantiate_pre(&component).map_err(Error::engine)?;
    let pre = TransportPre::new(instance_pre).map_err(Error::engine)?;
    prepared.push((key, pre.clone()));
    Ok(pre)
}

/// How often the engine's epoch advances: a running guest yields to the host's event
/// loop at least this often, and its busy time is measured in these ticks.
const TICK: std::time::Duration = std::time::Duration::from_millis(10);
/// Epoch ticks so far (the engine has no getter of its own).
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Round trips in flight, by id, so a trap can fail each one with a named error.
#[derive(Default)]
struct Pending {
    next: AtomicU64,
    replies: Mutex<HashMap<u64, Reply>>,
}

type Reply = oneshot::Sender<Result<http::Response<ResponseBody>, Error>>;

/// How one instance's life ended.
enum Ended {
    /// Told to stop, or every `Transport` clone is gone (`None`).
    Stopped(Option<oneshot::Sender<()>>),
    /// It trapped (or could not start), for this reason.
    Failed(String),
}

/// The store thread: run an instance until told to stop. When an instance traps (a
/// bug, or its memory or CPU limit), fail its requests with `TransportRestarted`
/// (their sockets close with the store), say so with a `transport_restarted` event,
/// and serve on with a fresh instance.
async fn serve(
    pre: TransportPre<State>,
    config: Config,
    tls: ClientTls,
    mut inbox: mpsc::UnboundedReceiver<Command>,
    first: First,
    shard: ShardStart,
) {
    let (mut first, mut ready, continuity) = match first {
        First::Started(instance, continuity) => (Some(instance), None, continuity),
        First::Start(ready) => (None, Some(ready), shard.continuity()),
    };
    let releases = Arc::new(Releases::new(shard.inbox.clone()));
    loop {
        let pending = Pending::default();
        let started = match first.take() {
            Some(instance) => Ok(instance),
            None => start_instance(&pre, &config, &tls, &shard, &continuity).await,
        };
        let ended = match started {
            Ok(instance) => {
                if let Some(ready) = ready.take() {
                    ready(Ok(()));
                }
                run_instance(instance, &mut inbox, &continuity, &pending, &releases).await
            }
            Err(reason) => Ended::Failed(reason),
        };
        let reason = match ended {
            Ended::Stopped(reply) => {
                // Closed before the reply: `is_shut_down` is true once `shutdown` returns.
                inbox.close();
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
                return;
            }
            Ended::Failed(reason) => reason,
        };
        if let Some(ready) = ready.take() {
            // It never started: there is nothing to restart.
            ready(Err(Error::engine(&reason)));
            return;
        }
        let replies = pending.replies.lock().map(|mut r| std::mem::take(&mut *r));
        for (_, reply) in replies.unwrap_or_default() {
            let _ = reply.send(Err(Error::restarted(&reason)));
        }

        eprintln!("roundtrip: the transport component stopped ({reason}); starting a new instance");
        if !config.events.is_empty() {
            let ts_us = micros(shard.origin.elapsed());
            config.events.emit(&Event {
                ts_us,
                kind: EventKind::TransportRestarted { reason },
                conn: None,
                req: None,
                key: None,
                tunnel: None,
                app_conn: None,
            });
        }
    }
}

fn micros(elapsed: std::time::Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// A shard's first instance: started already (by `new` or `new_local`, which report a
/// failure themselves), or to be started by `serve`, which says how that went.
enum First {
    Started(Instance, Arc<Mutex<Continuity>>),
    Start(Ready),
}

/// An instance with its guest transport constructed, ready to serve.
struct Instance {
    store: Store<State>,
    world: World,
    handle: ResourceAny,
}

impl ShardStart {
    /// The shard's ids and time base, kept across its instances.
    fn continuity(&self) -> Arc<Mutex<Continuity>> {
        Arc::new(Mutex::new(Continuity {
            spread: self.spread,
            ..Continuity::default()
        }))
    }
}

/// A shard's first instance, started by the caller (`new` on a runtime, `new_local`),
/// whose error a failure is.
async fn start_first(
    pre: &TransportPre<State>,
    config: &Config,
    tls: &ClientTls,
    shard: &ShardStart,
) -> Result<First, Error> {
    let continuity = shard.continuity();
    let instance = start_instance(pre, config, tls, shard, &continuity)
        .await
        .map_err(Error::engine)?;
    Ok(First::Started(instance, continuity))
}

/// Instantiates the component and constructs its transport; on failure, the reason.
async fn start_instance(
    pre: &TransportPre<State>,
    config: &Config,
    tls: &ClientTls,
    shard: &ShardStart,
    continuity: &Arc<Mutex<Continuity>>,
) -> Result<Instance, String> {
    let state = State {
        table: ResourceTable::new(),
        wasi: WasiCtx::builder().inherit_stderr().build(),
        tls: tls.clone(),
        events: config.events.clone(),
        allow_hosts: config.allow_hosts.clone().map(Arc::new),
        allow_dirs: config.allow_dirs.clone().into(),
        limits: GuestLimits {
            max_memory: config.max_guest_memory,
            memory: 0,
        },
        continuity: Arc::clone(continuity),
        watch: Default::default(),
        resolved: Default::default(),
    };
    let mut store = Store::new(pre.engine(), state);
    store.limiter(|state| &mut state.limits);
    // A running guest meets a deadline every tick and yields; one found running
    // without progress for `max_guest_busy` is stuck.
    let stuck_after = u64::try_from(config.max_guest_busy.as_millis() / TICK.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut context| {
        let stalled = context
            .data_mut()
            .watch
            .stalled_ticks(TICKS.load(Ordering::Relaxed));
        if stalled > stuck_after {
            return Err(wasmtime::Error::msg(format!(
                "the component ran for {} ms without making progress",
                stalled * TICK.as_millis() as u64
            )));
        }
        Ok(wasmtime::UpdateDeadline::Yield(1))
    });
    let world: World = pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| trap_reason(&e))?;
    let wit_config = config.to_wit();
    let handle = store
        .run_concurrent(async |acc| {
            let guest = world.roundtrip_transport_round_tripper().transport();
            // The guest's clock counts from its constructor, host events from the
            // transport's start: each instance's events (every shard's, a restarted
            // one's) are shifted to match, its ids past the ones before it.
            if let Ok(mut continuity) = continuity.lock() {
                continuity.restart(micros(shard.origin.elapsed()));
            }
            guest.call_constructor(acc, wit_config).await
        })
        .await
        .and_then(|handle| handle)
        .map_err(|e| trap_reason(&e))?;
    Ok(Instance {
        store,
        world,
        handle,
    })
}

/// Serves commands on `instance` until told to stop, or until it traps.
async fn run_instance(
    instance: Instance,
    inbox: &mut mpsc::UnboundedReceiver<Command>,
    continuity: &Arc<Mutex<Continuity>>,
    pending: &Pending,
    releases: &Arc<Releases>,
) -> Ended {
    let Instance {
        mut store,
        world,
        handle,
    } = instance;
    let served = store
        .run_concurrent(async |acc| -> wasmtime::Result<_> {
            let guest = world.roundtrip_transport_round_tripper().transport();
            let mut calls: FuturesUnordered<BoxFuture<'_, ()>> = FuturesUnordered::new();
            // `release` calls: started before the command that made them (the
            // connection is pooled first) and finished before a shutdown (pooled,
            // then closed as idle).
            let mut releasing: FuturesUnordered<BoxFuture<'_, ()>> = FuturesUnordered::new();
            let instance = || continuity.lock().map_or(u64::MAX, |c| c.restarts);
            // A request held back, until this deadline at most, while bodies read to
            // their end settle: their connections are pooled on the component's
            // turns, and the request then finds them. Commands behind it wait too.
            let mut held: Option<(Command, tokio::time::Instant)> = None;
            // The wait's deadline while nothing is held (its branch is then off).
            let unheld = tokio::time::Instant::now();
            let stopped = loop {
                let deadline = held.as_ref().map_or(unheld, |(_, deadline)| *deadline);
                tokio::select! {
                    biased;
                    Some(()) = releasing.next(), if !releasing.is_empty() => {}
                    () = releases.settling.wait(deadline), if held.is_some() => {
                        if let Some((command, _)) = held.take() {
                            let carried = releases.take(instance());
                            calls.push(handle_command(
                                acc, &guest, handle, command, carried, pending, continuity,
                                releases,
                            ));
                        }
                    }
                    command = inbox.recv(), if held.is_none() => {
                        // A flush with the caller's next command already behind it
                        // leaves the releases to that command.
                        let command = match command {
                            Some(Command::Flush) => inbox.try_recv().ok().or(Some(Command::Flush)),
                            other => other,
                        };
                        let carried = match command {
                            Some(command @ Command::RoundTrip(_)) if releases.settling.pending() => {
                                held = Some((command, tokio::time::Instant::now() + SETTLE_WAIT));
                                continue;
                            }
                            Some(Command::RoundTrip(_)) => releases.take(instance()),
                            _ => {
                                for release in releases.take(instance()) {
                                    let mut call = release_call(acc, &guest, handle, release);
                                    if futures::poll!(&mut call).is_pending() {
                                        releasing.push(call);
                                    }
                                }
                                Vec::new()
                            }
                        };
                        match command {
                            None => break None,
                            Some(Command::Shutdown(reply)) => break Some(reply),
                            Some(Command::Flush) => {}
                            Some(command) => calls.push(handle_command(
                                acc, &guest, handle, command, carried, pending, continuity,
                                releases,
                            )),
                        }
                    }
                    Some(()) = calls.next(), if !calls.is_empty() => {}
                }
            };
            while releasing.next().await.is_some() {}
            // The transport can be dropped only when no call borrows it: a request its
            // caller gave up on ends once the guest sees the cancel; one still in
            // flight has a moment to finish.
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
                while calls.next().await.is_some() {}
            })
            .await;
            Ok((handle, stopped, calls.is_empty()))
        })
        .await
        .and_then(|served| served);
    match served {
        Ok((handle, stopped, idle)) => {
            // The guest's `Drop` closes its idle connections (`transport_shutdown`).
            // With a call still running it cannot: the store's end closes them.
            if idle && let Err(e) = handle.resource_drop_async(&mut store).await {
                eprintln!("roundtrip: {}", Error::engine(e));
            }
            Ended::Stopped(stopped)
        }
        Err(e) => {
            let reason = trap_reason(&e);
            // Before the store (and the bodies' channels) go: a body cut off now
            // reports the restart, not a shutdown.
            if let Ok(mut continuity) = continuity.lock() {
                continuity.restarts += 1;
                continuity.last_failure = reason.clone();
            }
            Ended::Failed(reason)
        }
    }
}

/// The cause of a trap in a sentence: the limit's own message, or the trap's.
fn trap_reason(error: &wasmtime::Error) -> String {
    let root = error.root_cause().to_string();
    let first = root.lines().next().unwrap_or("unknown failure").trim();
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) if !first.contains(&trap.to_string()) => format!("{first} ({trap})"),
        _ => first.to_owned(),
    }
}

/// A `release` call for a connection no request carried away.
fn release_call<'a>(
    acc: &'a Accessor<State>,
    guest: &'a GuestTransport<'a>,
    handle: ResourceAny,
    release: types::Release,
) -> BoxFuture<'a, ()> {
    async move {
        crate::crossings::count(Crossing::ExportCall);
        if let Err(e) = guest
            .call_release(acc, handle, release.conn, release.read)
            .await
        {
            eprintln!("roundtrip: release failed: {e}");
        }
    }
    .boxed()
}

#[allow(clippy::too_many_arguments)]
fn handle_command<'a>(
    acc: &'a Accessor<State>,
    guest: &'a GuestTransport<'a>,
    handle: ResourceAny,
    command: Command,
    carried: Vec<types::Release>,
    pending: &'a Pending,
    continuity: &'a Arc<Mutex<Continuity>>,
    releases: &'a Arc<Releases>,
) -> BoxFuture<'a, ()> {
    async move {
        match command {
            Command::RoundTrip(outgoing) => {
                let Outgoing {
                    request,
                    cancel,
                    reply,
                } = *outgoing;
                let id = pending.next.fetch_add(1, Ordering::Relaxed) + 1;
                if let Ok(mut replies) = pending.replies.lock() {
                    replies.insert(id, reply);
                }
                let call = Call {
                    id,
                    cancel,
                    releases: carried,
                };
                let result =
                    round_trip(acc, guest, handle, request, call, continuity, releases).await;
                let reply = pending.replies.lock().ok().and_then(|mut r| r.remove(&id));
                if let Some(reply) = reply {
                    crate::crossings::count(Crossing::StoreToCaller);
                    let _ = reply.send(result);
                }
            }
            Command::CloseIdle(reply) => {
                crate::crossings::count(Crossing::ExportCall);
                if let Err(e) = guest.call_close_idle_connections(acc, handle).await {
                    eprintln!("roundtrip: close-idle-connections failed: {e}");
                }
                let _ = reply.send(());
            }
            Command::Stats(reply) => {
                crate::crossings::count(Crossing::ExportCall);
                if let Ok(stats) = guest.call_stats(acc, handle).await {
                    let _ = reply.send(PoolStats {
                        keys: stats
                            .keys
                            .into_iter()
                            .map(|k| KeyStats {
                                key: k.key,
                                idle: k.idle,
                                active: k.active,
                                dialing: k.dialing,
                                waiting: k.waiting,
                            })
                            .collect(),
                        dials: stats.dials,
                        reuses: stats.reuses,
                        guest_memory: acc.with(|mut access| access.get().limits.memory),
                    });
                }
            }
            Command::Shutdown(_) | Command::Flush => {}
        }
    }
    .boxed()
}

/// What a round trip's call carries besides the request: its id (its `cancel-id`),
/// the caller's side of cancelling, and the releases it takes to the component.
struct Call {
    id: u64,
    /// Resolves (with an error) when the caller drops its `round_trip` future.
    cancel: oneshot::Receiver<()>,
    releases: Vec<types::Release>,
}

async fn round_trip(
    acc: &Accessor<State>,
    guest: &GuestTransport<'_>,
    handle: ResourceAny,
    request: http::Request<Body>,
    call: Call,
    continuity: &Arc<Mutex<Continuity>>,
    releases: &Arc<Releases>,
) -> Result<http::Response<ResponseBody>, Error> {
    let Call {
        id,
        mut cancel,
        releases: carried,
    } = call;
    let (parts, body) = request.into_parts();
    let headers = fields_block(&parts.headers);
    let body = match body.0 {
        Inner::Empty => types::RequestBody::Empty,
        Inner::Bytes(bytes) => types::RequestBody::Bytes(bytes.to_vec()),
        Inner::Stream(frames) => {
            let (end_tx, end_rx) = oneshot::channel();
            let stream = acc
                .with(|mut access| {
                    let contents =
                        StreamReader::new(&mut access, FramesProducer::new(frames, end_tx))?;
                    // A producer dropped before its end (the guest stopped reading)
                    // leaves nothing to say.
                    let end = FutureReader::new(&mut access, async move {
                        Ok::<_, wasmtime::Error>(end_rx.await.unwrap_or(Ok(None)))
                    })?;
                    Ok::<_, wasmtime::Error>(types::BodyStream { contents, end })
                })
                .map_err(Error::engine)?;
            types::RequestBody::Stream(stream)
        }
    };
    let options = parts
        .extensions
        .get::<RequestOptions>()
        .copied()
        .unwrap_or_default();
    let nanos = |limit: Duration| limit.as_nanos().min(u64::MAX as u128) as u64;
    let options = [
        options
            .connect_timeout
            .map(|t| types::RequestOption::ConnectTimeout(nanos(t))),
        options
            .first_byte_timeout
            .map(|t| types::RequestOption::FirstByteTimeout(nanos(t))),
        options
            .between_bytes_timeout
            .map(|t| types::RequestOption::BetweenBytesTimeout(nanos(t))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let request = types::Request {
        method: parts.method.as_str().to_owned(),
        url: parts.uri.to_string(),
        headers,
        body,
        options,
        cancel_id: id,
        releases: carried,
    };
    crate::crossings::count(Crossing::ExportCall);
    let mut call = std::pin::pin!(guest.call_round_trip(acc, handle, request));
    // The caller gone, the component is told (a sync call, made only then) and ends
    // the request at once; the call still runs to its end.
    let response = tokio::select! {
        biased;
        response = &mut call => response,
        _ = &mut cancel => {
            crate::crossings::count(Crossing::ExportCall);
            if let Err(e) = guest.call_cancel(acc, handle, id).await {
                eprintln!("roundtrip: cancel failed: {e}");
            }
            call.await
        }
    };
    let response = response.map_err(Error::engine)??;
    let mut request_sent = None;
    let body = match response.body {
        types::ResponseBody::Whole(bytes) => {
            // An empty body held nothing: the component let its connection go.
            // Connection 0 is none, and an HTTP/2 body's stream is over: nothing is
            // held for the body.
            let holds = !bytes.is_empty()
                && response.conn != 0
                && response.version != types::HttpVersion::Http2;
            let release = holds.then(|| release(releases, continuity, response.conn));
            ResponseBody::whole(bytes.into(), release)
        }
        types::ResponseBody::Streamed(streamed) => {
            let (body, sent) = stream_body(acc, streamed, continuity, &releases.settling)?;
            request_sent = Some(sent);
            body
        }
    };
    let mut builder = http::Response::builder()
        .status(response.status)
        .version(match response.version {
            types::HttpVersion::Http10 => http::Version::HTTP_10,
            types::HttpVersion::Http11 => http::Version::HTTP_11,
            types::HttpVersion::Http2 => http::Version::HTTP_2,
        })
        .extension(ConnectionInfo {
            id: note_conn(continuity, response.conn),
            reused: response.reused,
            req: request_id(continuity, response.req),
        })
        .extension(ReasonPhrase(response.reason));
    if let Some(sent) = request_sent {
        builder = builder.extension(sent);
    }
    if let Some(headers) = builder.headers_mut() {
        *headers = header_map(response.headers);
    }
    builder
        .body(body)
        .map_err(|e| Error::new(ErrorKind::ProtocolError, format!("unusable response: {e}")))
}

/// Lets go of connection `conn` of this instance, held for a whole body: queued, to
/// reach the component before any later command of the caller's.
fn release(
    releases: &Arc<Releases>,
    continuity: &Mutex<Continuity>,
    conn: u64,
) -> crate::body::Release {
    let releases = Arc::clone(releases);
    let instance = continuity.lock().map_or(0, |c| c.restarts);
    Box::new(move |read| {
        releases.push(Queued {
            instance,
            release: types::Release { conn, read },
        });
    })
}

/// Pipes a streamed body from the component to the caller, a window of chunks ahead of
/// the caller's reads (`BODY_CHUNKS`).
fn stream_body(
    acc: &Accessor<State>,
    streamed: types::StreamedBody,
    continuity: &Arc<Mutex<Continuity>>,
    settling: &Arc<Settling>,
) -> Result<(ResponseBody, RequestSent), Error> {
    let (data_tx, data_rx) = mpsc::channel::<Bytes>(BODY_CHUNKS);
    let (trailers_tx, trailers_rx) = oneshot::channel();
    let (sent_tx, sent_rx) = oneshot::channel();
    let caught_up = Arc::new(CaughtUp::counting(Arc::clone(settling)));
    acc.with(|mut access| {
        // Always taken (a closed reader would leave the guest's write waiting in
        // wasmtime 48), whether or not the caller looks at `RequestSent`.
        streamed
            .request_sent
            .pipe(&mut access, OneshotConsumer(Some(sent_tx)))?;
        let consumer = BytesConsumer::windowed(data_tx, Arc::clone(&caught_up));
        streamed.contents.pipe(&mut access, consumer)?;
        streamed.trailers.pipe(
            &mut access,
            TrailersConsumer {
                inner: OneshotConsumer(Some(trailers_tx)),
                caught_up: Arc::clone(&caught_up),
            },
        )
    })
    .map_err(Error::engine)?;
    let body = ResponseBody::streamed(data_rx, trailers_rx, caught_up, Arc::clone(continuity));
    Ok((body, RequestSent(sent_rx.shared())))
}

/// Notes a connection id the caller sees (with no sink, no event tells the store's
/// continuity about it) and returns it as events show it: unique across restarts
/// and shards.
/// The id a request of the current instance is shown with.
fn request_id(continuity: &Mutex<Continuity>, req: u64) -> u64 {
    continuity.lock().map_or(req, |c| c.req_id(req))
}

fn note_conn(continuity: &Mutex<Continuity>, conn: u64) -> u64 {
    continuity.lock().map_or(conn, |mut c| {
        c.note(Some(conn), None);
        c.conn_id(conn)
    })
}
