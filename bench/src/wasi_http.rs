//! The wasm peer: an ordinary wasi:http 0.3 guest (`wasm/examples/fetch`) run by wasmtime
//! with wasmtime-wasi-http's default outgoing client, the status quo for wasm HTTP:
//! every request dials a new connection (and a new TLS handshake for `https`).
//!
//! The guest runs the closed loop itself (`--count N --concurrency C --json`) and
//! reports its requests, bytes, elapsed time and latency percentiles, measured with
//! its monotonic clock.

use std::sync::Arc;

use http_body_util::BodyExt;
use serde::Deserialize;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::p3::bindings::Command;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use super::Spec;
use super::clients::Outcome;

/// The example guest, built by `wasm/build.rs`.
pub const FETCH_WASM: &[u8] = roundtrip_wasm::EXAMPLE_FETCH;

/// What the guest prints with `--json`.
#[derive(Deserialize)]
struct Summary {
    requests: u64,
    errors: u64,
    body_bytes: u64,
    elapsed_us: u64,
    p50_us: u32,
    p99_us: u32,
    first_error: Option<String>,
}

/// Runs `spec` in the fetch guest with wasmtime-wasi-http's default client.
pub async fn run(spec: &Spec, mut tls: rustls::ClientConfig) -> Result<Outcome, String> {
    // The default client builds a new TLS config per request: nothing to resume.
    tls.resumption = rustls::client::Resumption::disabled();
    let mut config = wasmtime::Config::new();
    config.wasm_component_model_async(true);
    let engine = Engine::new(&config).map_err(|e| e.to_string())?;
    let component = Component::new(&engine, FETCH_WASM).map_err(|e| e.to_string())?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| e.to_string())?;
    wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(|e| e.to_string())?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(|e| e.to_string())?;

    let stdout = MemoryOutputPipe::new(1 << 20);
    let mut args = vec!["fetch".to_owned()];
    match spec.seconds {
        Some(seconds) => args.extend([
            "--seconds".to_owned(),
            (seconds.ceil() as u64).max(1).to_string(),
        ]),
        None => args.extend(["--count".to_owned(), spec.requests.to_string()]),
    }
    args.extend([
        "--concurrency".to_owned(),
        spec.concurrency.to_string(),
        "--json".to_owned(),
        spec.url.clone(),
    ]);
    let wasi = WasiCtx::builder()
        .args(&args)
        .stdout(stdout.clone())
        .inherit_stderr()
        .build();
    let state = Peer {
        table: ResourceTable::new(),
        wasi,
        http: WasiHttpCtx::new(),
        hooks: DefaultClient { tls: Arc::new(tls) },
    };
    let mut store = Store::new(&engine, state);
    let command = Command::instantiate_async(&mut store, &component, &linker)
        .await
        .map_err(|e| e.to_string())?;
    // The guest exits with an error when a request failed; its summary says which.
    let _ = store
        .run_concurrent(async move |store| command.wasi_cli_run().call_run(store).await)
        .await
        .map_err(|e| format!("the fetch guest trapped: {e:?}"))?
        .map_err(|e| format!("the fetch guest trapped: {e:?}"))?;
    let printed = stdout.contents();
    let summary: Summary = serde_json::from_slice(&printed).map_err(|e| {
        format!(
            "the fetch guest printed no summary ({e}): {}",
            String::from_utf8_lossy(&printed)
        )
    })?;
    if summary.requests > 0 && summary.errors == summary.requests {
        return Err(format!(
            "every request failed: {}",
            summary.first_error.unwrap_or_default()
        ));
    }
    Ok(Outcome {
        requests: summary.requests - summary.errors,
        errors: summary.errors,
        body_bytes: summary.body_bytes,
        elapsed: std::time::Duration::from_micros(summary.elapsed_us),
        percentiles_us: Some((summary.p50_us, summary.p99_us)),
        ..Outcome::default()
    })
}

struct Peer {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DefaultClient,
}

impl WasiView for Peer {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Peer {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// wasmtime-wasi-http's `default_send_request` as it is for `http`. For `https` the
/// same steps (a new TCP connection, a full TLS handshake, hyper's HTTP/1
/// handshake, one request) with the benchmark's CA trusted: the default trusts only
/// the public web roots, which a loopback test server cannot be under.
#[derive(Clone)]
pub struct DefaultClient {
    tls: Arc<rustls::ClientConfig>,
}

impl DefaultClient {
    /// The default client trusting the CAs in `ca_pem` for `https` (each request a
    /// full handshake: no session resumption, as the default client has none).
    pub fn new(ca_pem: &str) -> Result<Self, String> {
        let mut tls = super::clients::tls_config(&super::clients::trusted(ca_pem)?)?;
        tls.resumption = rustls::client::Resumption::disabled();
        Ok(Self { tls: Arc::new(tls) })
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for DefaultClient {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        _ = fut;
        let tls = self.tls.clone();
        Box::new(async move {
            if request.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
                return send_over_tls(request, tls).await;
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// One request on a connection of its own, over TLS with a fresh handshake (no
/// session resumption, as the default client builds a new TLS config each time).
async fn send_over_tls(
    mut request: http::Request<WasiBody>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
> {
    let authority = request
        .uri()
        .authority()
        .ok_or(HttpError::HttpRequestUriInvalid)?
        .clone();
    let port = authority.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(HttpError::Connect)?;
    let name = rustls::pki_types::ServerName::try_from(authority.host().to_owned())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(HttpError::Tls)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let io = tokio::spawn(connection);
    *request.uri_mut() = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let response = sender.send_request(request).await?;
    Ok((
        response.map(|body| body.map_err(HttpError::from).boxed_unsync()),
        Box::new(async move {
            match io.await {
                Ok(result) => result.map_err(HttpError::from),
                Err(_) => Err(HttpError::ConnectionTerminated),
            }
        }),
    ))
}
