//! docs/embedding.md, run: the transport in a wasmtime host written from scratch —
//! no `roundtrip-host` code, only wasmtime, wasmtime-wasi and wasmtime-wasi-tls.
//!
//! It loads `roundtrip_transport_standalone.wasm` (the transport with `net`, `files`
//! and `observe` supplied from WASI 0.3), links WASI 0.3 with sockets and TLS, makes
//! ONE instance and ONE pool, and sends requests on it from host code.

#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use roundtrip_servers::{LocalServer, ServerTls};
use tokio::sync::mpsc;
use wasmtime::component::{
    Accessor, Component, Linker, ResourceAny, ResourceTable, Source, StreamConsumer, StreamResult,
};
use wasmtime::{Config, Engine, Store, StoreContextMut};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_tls::{WasiTlsCtx, WasiTlsCtxBuilder, WasiTlsCtxView, WasiTlsView};

mod bindings {
    // The world the standalone transport satisfies: it exports `round-tripper`.
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "roundtrip:transport/embedded",
        exports: { default: async | store },
    });
}

use bindings::Embedded;
use bindings::exports::roundtrip::transport::round_tripper::GuestTransport;
use bindings::roundtrip::transport::types;

const TRANSPORT_WASM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/component/wasm32-wasip2/component/roundtrip_transport_standalone.wasm"
);

/// The store's data: WASI (sockets, clocks, stdio) and wasi:tls.
struct Host {
    wasi: WasiCtx,
    tls: WasiTlsCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiTlsView for Host {
    fn tls(&mut self) -> WasiTlsCtxView<'_> {
        WasiTlsCtxView {
            ctx: &mut self.tls,
            table: &mut self.table,
        }
    }
}

/// A store with everything the standalone transport imports.
async fn instantiate(tls: TrustedCa) -> (Store<Host>, Embedded, MemoryOutputPipe) {
    let mut config = Config::new();
    config.wasm_component_model_async(true);
    let engine = Engine::new(&config).unwrap();
    let component = Component::from_file(&engine, TRANSPORT_WASM).unwrap();
    let mut linker = Linker::new(&engine);
    // Rust's std in the component imports a few WASI 0.2 interfaces.
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    wasmtime_wasi::p3::add_to_linker(&mut linker).unwrap();
    wasmtime_wasi_tls::p3::add_to_linker(&mut linker).unwrap();
    let stderr = MemoryOutputPipe::new(1 << 20);
    let wasi = WasiCtx::builder()
        // TCP to any address, and name lookups (both off by default).
        .allow_tcp(true)
        .inherit_network()
        .allow_ip_name_lookup(true)
        // Events as lines on (this) stderr; your own `observe` would get them typed.
        .env("ROUNDTRIP_EVENTS", "1")
        .stderr(stderr.clone())
        .build();
    let tls = WasiTlsCtxBuilder::new().provider(Box::new(tls)).build();
    let mut store = Store::new(
        &engine,
        Host {
            wasi,
            tls,
            table: ResourceTable::new(),
        },
    );
    let instance = Embedded::instantiate_async(&mut store, &component, &linker)
        .await
        .unwrap();
    (store, instance, stderr)
}

/// Go's `DefaultTransport` knobs (durations in nanoseconds).
fn go_defaults() -> types::Config {
    const SECOND: u64 = 1_000_000_000;
    types::Config {
        max_idle_conns: 100,
        max_idle_conns_per_host: 2,
        max_conns_per_host: 0,
        idle_conn_timeout: Some(90 * SECOND),
        dial_timeout: Some(30 * SECOND),
        tls_handshake_timeout: Some(10 * SECOND),
        response_header_timeout: None,
        expect_continue_timeout: Some(SECOND),
        disable_keep_alives: false,
        disable_drain_on_close: false,
        fallback_delay: Some(300_000_000),
        keep_alive: Some(types::KeepAlive {
            idle: 30 * SECOND,
            interval: 15 * SECOND,
            count: 9,
        }),
        disable_compression: false,
        max_response_header_bytes: 10 << 20,
        user_agent: "my-host/1.0".to_owned(),
        proxy: types::ProxyConfig {
            http_proxy: None,
            https_proxy: None,
            no_proxy: String::new(),
            loopback_direct: true,
            connect_headers: Vec::new(),
        },
        proxy_connect_timeout: Some(60 * SECOND),
        emit_events: true,
        count_crossings: false,
        protocols: types::Protocols::Http2,
        strict_max_concurrent_streams: false,
        read_idle_timeout: None,
        ping_timeout: Some(15 * SECOND),
        write_byte_timeout: Some(30 * SECOND),
        // Go's defaults.
        http2: types::Http2Config {
            max_read_frame_size: 0,
            max_receive_buffer_per_connection: 0,
            max_receive_buffer_per_stream: 0,
            max_decoder_header_table_size: 0,
        },
    }
}

/// One instance, one pool, for as long as connections should be reused: the
/// transport's interface and a pool on it with Go's defaults.
async fn new_pool<'a>(
    acc: &Accessor<Host>,
    instance: &'a Embedded,
) -> (GuestTransport<'a>, ResourceAny) {
    let transport = instance.roundtrip_transport_round_tripper().transport();
    let pool = transport
        .call_constructor(acc, go_defaults())
        .await
        .unwrap();
    (transport, pool)
}

/// A test's whole exchange, failed rather than left hanging after a minute.
async fn within_limit<T>(run: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the exchanges did not end within a minute")
}

/// GET `url` on `pool`; returns the status, whether the connection was reused, and
/// the body, read to its end (which is what returns the connection to the pool).
async fn get(
    acc: &Accessor<Host>,
    transport: &GuestTransport<'_>,
    pool: ResourceAny,
    url: &str,
) -> Result<(u16, bool, Vec<u8>), types::ErrorCode> {
    let request = types::Request {
        method: "GET".to_owned(),
        url: url.to_owned(),
        headers: vec![],
        body: types::RequestBody::Empty,
        options: Vec::new(),
        cancel_id: 0,
        releases: Vec::new(),
    };
    let response = transport
        .call_round_trip(acc, pool, request)
        .await
        .unwrap()?;
    let mut streamed = match response.body {
        // It came with the head: taken, so its connection goes back to the pool.
        types::ResponseBody::Whole(bytes) => {
            if !bytes.is_empty() {
                transport
                    .call_release(acc, pool, response.conn, true)
                    .await
                    .unwrap();
            }
            return Ok((response.status, response.reused, bytes));
        }
        types::ResponseBody::Streamed(streamed) => streamed,
    };
    let (chunks, mut received) = mpsc::unbounded_channel();
    acc.with(|mut store| {
        // Nothing here waits for the request's outcome: a GET is written at once.
        streamed.request_sent.close(&mut store)?;
        streamed.contents.pipe(&mut store, Collect(chunks))
    })
    .unwrap();
    let mut body = Vec::new();
    while let Some(chunk) = received.recv().await {
        body.extend_from_slice(&chunk);
    }
    Ok((response.status, response.reused, body))
}

/// Takes a guest's `stream<u8>` into a channel of chunks.
struct Collect(mpsc::UnboundedSender<Vec<u8>>);

impl<D> StreamConsumer<D> for Collect {
    type Item = u8;

    fn poll_consume(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        store: StoreContextMut<D>,
        source: Source<u8>,
        _finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        let mut source = source.as_direct(store);
        let chunk = source.remaining().to_vec();
        source.mark_read(chunk.len());
        match self.0.send(chunk) {
            Ok(()) => Poll::Ready(Ok(StreamResult::Completed)),
            Err(_) => Poll::Ready(Ok(StreamResult::Dropped)),
        }
    }
}

/// A wasi:tls provider that trusts one CA (a real host would use its system roots).
struct TrustedCa(Arc<rustls::ClientConfig>);

impl TrustedCa {
    fn new(ca: &ServerTls) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.ca_cert.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self(Arc::new(config))
    }
}

impl wasmtime_wasi_tls::TlsProvider for TrustedCa {
    fn connect(
        &self,
        server_name: String,
        transport: Box<dyn wasmtime_wasi_tls::TlsTransport>,
    ) -> Pin<
        Box<
            dyn Future<
                    Output = Result<
                        Box<dyn wasmtime_wasi_tls::TlsStream>,
                        wasmtime_wasi_tls::Error,
                    >,
                > + Send,
        >,
    > {
        let config = Arc::clone(&self.0);
        Box::pin(async move {
            let name = rustls::pki_types::ServerName::try_from(server_name)
                .map_err(wasmtime_wasi_tls::Error::msg)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, transport)
                .await?;
            Ok(Box::new(stream) as Box<dyn wasmtime_wasi_tls::TlsStream>)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_written_from_scratch_reuses_one_connection_per_scheme() {
    let ca = ServerTls::generate().unwrap();
    let plain = LocalServer::start().await.unwrap();
    let secure = LocalServer::start_tls(&ca, std::time::Duration::ZERO)
        .await
        .unwrap();
    let (mut store, instance, stderr) = instantiate(TrustedCa::new(&ca)).await;
    let urls = [
        plain.url("/small"),
        plain.url("/small"),
        secure.url("/small"),
        secure.url("/small"),
    ];
    let run = store.run_concurrent(async |acc| {
        let (transport, pool) = new_pool(acc, &instance).await;
        let mut results = Vec::new();
        for url in &urls {
            results.push(get(acc, &transport, pool, url).await);
        }
        results
    });
    let results = within_limit(run).await.unwrap();
    let seen: Vec<(u16, bool, Vec<u8>)> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        seen,
        [
            (200, false, b"hello, world\n".to_vec()),
            (200, true, b"hello, world\n".to_vec()),
            (200, false, b"hello, world\n".to_vec()),
            (200, true, b"hello, world\n".to_vec()),
        ]
    );
    assert_eq!((plain.connections(), secure.connections()), (1, 1));
    let events = String::from_utf8_lossy(&stderr.contents()).into_owned();
    assert_eq!(
        events.matches("EventKind::DialStart").count(),
        2,
        "{events}"
    );
    assert_eq!(
        events.matches("EventKind::TlsDone(Ok").count(),
        1,
        "{events}"
    );
}

/// A host hands `fields` over as one buffer (`name: value` CRLF each): a block that
/// breaks the rules is refused before any dial, the line named, and a good one goes to
/// the wire as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_is_checked_once_and_a_bad_line_is_named_before_any_dial() {
    let ca = ServerTls::generate().unwrap();
    let plain = LocalServer::start().await.unwrap();
    let (mut store, instance, _stderr) = instantiate(TrustedCa::new(&ca)).await;
    let url = plain.url("/small");
    let blocks = [
        b"Accept: */*\r\nX-Bad:value\r\n".to_vec(),
        b"Accept: */*".to_vec(),
        b"Accept: */*\r\nX-Inject: a\nb\r\n".to_vec(),
        b"Accept: */*\r\nX-Fine: yes\r\n".to_vec(),
    ];
    let run = store.run_concurrent(async |acc| {
        let (transport, pool) = new_pool(acc, &instance).await;
        let mut outcomes = Vec::new();
        for headers in &blocks {
            let request = types::Request {
                method: "GET".to_owned(),
                url: url.clone(),
                headers: headers.clone(),
                body: types::RequestBody::Empty,
                options: Vec::new(),
                cancel_id: 0,
                releases: Vec::new(),
            };
            let response = transport.call_round_trip(acc, pool, request).await.unwrap();
            outcomes.push(response.map(|r| {
                let headers = roundtrip_fields::Fields::iter_block(&r.headers)
                    .map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec()))
                    .collect::<Vec<_>>();
                (r.status, headers)
            }));
        }
        outcomes
    });
    let outcomes = within_limit(run).await.unwrap();
    let refused = |outcome: &Result<_, types::ErrorCode>| match outcome {
        Err(types::ErrorCode::HttpRequestHeaderInvalid(why)) => why.clone(),
        other => panic!("not refused: {other:?}"),
    };
    assert!(
        refused(&outcomes[0]).contains("\"X-Bad:value\""),
        "{:?}",
        outcomes[0]
    );
    assert!(
        refused(&outcomes[1]).contains("does not end with CRLF"),
        "{:?}",
        outcomes[1]
    );
    assert!(refused(&outcomes[2]).contains("0x0a"), "{:?}", outcomes[2]);
    let (status, headers) = outcomes[3].as_ref().unwrap();
    assert_eq!(*status, 200);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "content-length" && v == b"13"),
        "the response's block reads back: {headers:?}"
    );
    // Only the good block reached the server.
    assert_eq!(plain.connections(), 1);
}
