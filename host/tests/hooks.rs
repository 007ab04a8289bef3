//! docs/embedding.md's "In your own wasmtime host", compiled and run: a minimal
//! embedder serving a wasi:http service on wasmtime-wasi-http's `ProxyHandler` (as
//! `wasmtime serve`, Spin or wasmCloud do), switched to one shared pool by the three
//! lines marked `(1)`, `(2)`, `(3)`. Everything else is the embedder's own.

#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use roundtrip_servers::LocalServer;
use wasmtime::component::{GuestTaskId, Linker, ResourceTable};
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState,
    WorkerStatus,
};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The embedder's store data.
struct MyState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: roundtrip_host::hooks::Hooks,
}

impl WasiView for MyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for MyState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks, // (3) was: `hooks: Default::default()`
        }
    }
}

struct MyServer {
    engine: wasmtime::Engine,
    pre: ProxyPre<MyState>,
    transport: roundtrip_host::Transport,
}

impl HandlerState for MyServer {
    type StoreData = MyState;
    type WorkerExpiration = Never;
    type WorkerState = OneAtATime;

    async fn instantiate(&self) -> wasmtime::Result<Instance<MyState, Never, OneAtATime>> {
        let mut store = Store::new(
            &self.engine,
            MyState {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
                http: WasiHttpCtx::new(),
                hooks: roundtrip_host::hooks::Hooks::new(self.transport.clone()), // (2)
            },
        );
        let proxy = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy,
            view: MyState::http,
            expiration: Never,
            state: OneAtATime,
        })
    }
}

/// Instances are kept for the test's length.
struct Never;

impl WorkerExpiration for Never {
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>, _: WorkerStatus, _: Instant) -> Poll<()> {
        Poll::Pending
    }
}

/// A new instance for each request, as `wasmtime serve` does for a 0.2 proxy.
struct OneAtATime;

impl WorkerState for OneAtATime {
    type StoreData = MyState;
    type RequestData = ();

    fn should_accept_request(&self, _: usize, total: usize) -> ShouldAccept {
        if total == 0 {
            ShouldAccept::Yes
        } else {
            ShouldAccept::Never
        }
    }

    fn on_request_start(
        &self,
        _: StoreContextMut<'_, MyState>,
        _: (),
        _: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        Box::pin(std::future::pending())
    }

    fn drop(&self, _: Store<MyState>, _: wasmtime::Result<()>) {}
}

fn server(guest: &[u8]) -> ProxyHandler<MyServer> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model_async(true);
    let engine = wasmtime::Engine::new(&config).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
    wasmtime_wasi::p3::add_to_linker(&mut linker).unwrap();
    wasmtime_wasi_http::p3::add_to_linker(&mut linker).unwrap();
    let component = wasmtime::component::Component::new(&engine, guest).unwrap();
    let instance = linker.instantiate_pre(&component).unwrap();
    let pre = match wasmtime_wasi_http::p3::bindings::ServicePre::new(instance.clone()) {
        Ok(pre) => ProxyPre::P3(pre),
        Err(_) => ProxyPre::P2(wasmtime_wasi_http::p2::bindings::ProxyPre::new(instance).unwrap()),
    };
    // (1) once, beside the engine: one transport, one pool for every store.
    let transport = roundtrip_host::Transport::new(roundtrip_host::Config::default()).unwrap();
    ProxyHandler::new(MyServer {
        engine,
        pre,
        transport,
    })
}

/// An incoming request for the relay: forward `body` to `upstream`.
fn relayed(
    upstream: &str,
    method: &str,
    body: &'static [u8],
) -> wasmtime_wasi_http::handler::Request {
    http::Request::builder()
        .method(method)
        .uri("http://localhost/")
        .header("url", upstream)
        .header("content-length", body.len())
        .body(
            Full::new(Bytes::from_static(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap()
}

const LIMIT: Duration = Duration::from_secs(60);

async fn each_guest_world(guest: &[u8]) {
    let origin = LocalServer::start().await.unwrap();
    let handler = server(guest);
    let exchanges = async {
        for _ in 0..20 {
            let response = handler
                .handle((), relayed(&origin.url("/small"), "GET", b""))
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "hello, world\n");
        }
        // A body both ways: sent up, echoed back.
        let response = handler
            .handle((), relayed(&origin.url("/echo"), "POST", b"there and back"))
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "there and back");
    };
    tokio::time::timeout(LIMIT, exchanges)
        .await
        .expect("no answer within a minute");
    // 21 instances, one pool: the server saw one connection.
    assert_eq!(origin.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedders_proxy_handler_sends_every_instances_requests_through_one_pool() {
    each_guest_world(roundtrip_wasm::EXAMPLE_RELAY).await;
    each_guest_world(roundtrip_wasm::EXAMPLE_RELAY_P2).await;
}
