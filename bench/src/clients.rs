//! The clients a benchmark compares, each running one workload in this process: this
//! transport, hyper-util's legacy pooled client (the native Rust peer), and a raw
//! keep-alive socket loop sending a pre-built request (the near-limit reference).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Client, IdleMemory, Spec};
use roundtrip_host::{Body, Config, Transport};

/// What one run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    pub requests: u64,
    pub errors: u64,
    pub body_bytes: u64,
    pub elapsed: Duration,
    /// Per-request latency, microseconds.
    pub latencies_us: Vec<u32>,
    /// p50 and p99 latency when the client measured them itself (the wasm peer).
    pub percentiles_us: Option<(u32, u32)>,
    pub idle: Option<super::IdleMemory>,
    /// This transport's component memory after the run, in bytes.
    pub guest_memory: Option<usize>,
}

/// Runs `spec` with its client: `concurrency` tasks share `requests` between them,
/// each sending its next request when the last one's body has been read (closed loop).
pub async fn run(spec: &Spec) -> Result<Outcome, String> {
    let started = Instant::now();
    let per_task = Budget {
        requests: spec.requests.div_ceil(spec.concurrency),
        until: spec.seconds.map(|s| started + Duration::from_secs_f64(s)),
    };
    let cas = trusted(&spec.ca_pem)?;
    // Read after the clock stops: asking the component is not part of the run.
    let mut measured = None;
    let outcomes = match spec.client {
        Client::Roundtrip
        | Client::RoundtripLocal
        | Client::RoundtripShards2
        | Client::Floor
        | Client::FloorLocal => {
            let config = Config {
                max_idle_conns_per_host: spec.concurrency as u32,
                max_conns_per_host: spec.concurrency as u32,
                extra_ca_certs: cas,
                inspect_from_env: false,
                shards: if spec.client == Client::RoundtripShards2 {
                    2
                } else {
                    1
                },
                component: spec.client.is_floor().then_some(roundtrip_wasm::FLOOR),
                ..Config::default()
            };
            let transport = if matches!(spec.client, Client::RoundtripLocal | Client::FloorLocal) {
                Transport::new_local(config).await
            } else {
                Transport::new(config)
            }
            .map_err(|e| e.to_string())?;
            let getter = transport.clone();
            let outcomes = fan_out(spec, per_task, move |url| {
                let transport = getter.clone();
                async move { roundtrip_get(&transport, &url).await }
            })
            .await;
            measured = Some(transport);
            outcomes
        }
        Client::Hyper => {
            let client = hyper_client(spec.concurrency, tls_config(&cas)?);
            fan_out(spec, per_task, move |url| {
                let client = client.clone();
                async move { hyper_get(&client, &url).await }
            })
            .await
        }
        Client::WasiHttp => return super::wasi_http::run(spec, tls_config(&cas)?).await,
        Client::Raw => raw_fan_out(spec, per_task, tls_config(&cas)?).await,
        // Hosts, not clients: `serve.rs` runs them and drives them with the raw loop.
        Client::ServeRoundtrip | Client::ServeDefaultClient | Client::ServeStock => {
            return Err(format!(
                "{} is a serve host, not a client",
                spec.client.name()
            ));
        }
    };
    let elapsed = started.elapsed();
    let guest_memory = match measured {
        Some(transport) => Some(transport.stats().await.guest_memory),
        None => None,
    };
    let mut total = Outcome {
        elapsed,
        guest_memory,
        ..Outcome::default()
    };
    for outcome in outcomes {
        total.requests += outcome.requests;
        total.errors += outcome.errors;
        total.body_bytes += outcome.body_bytes;
        total.latencies_us.extend(outcome.latencies_us);
    }
    Ok(total)
}

/// How many requests a task sends: a number, or as many as fit before a deadline.
#[derive(Clone, Copy)]
struct Budget {
    requests: usize,
    until: Option<Instant>,
}

impl Budget {
    fn allows_another(&self, sent: usize) -> bool {
        match self.until {
            Some(deadline) => Instant::now() < deadline,
            None => sent < self.requests,
        }
    }
}

/// `concurrency` tasks, each sending its budget of requests one after another.
async fn fan_out<F, Fut>(spec: &Spec, per_task: Budget, get: F) -> Vec<Outcome>
where
    F: Fn(String) -> Fut + Clone + 'static,
    Fut: Future<Output = Result<u64, String>>,
{
    let tasks: Vec<_> = (0..spec.concurrency)
        .map(|_| {
            let get = get.clone();
            let url = spec.url.clone();
            tokio::task::spawn_local(async move {
                let mut outcome = Outcome::default();
                let mut sent_so_far = 0;
                while per_task.allows_another(sent_so_far) {
                    sent_so_far += 1;
                    let sent = Instant::now();
                    match get(url.clone()).await {
                        Ok(bytes) => {
                            outcome.requests += 1;
                            outcome.body_bytes += bytes;
                            outcome.latencies_us.push(micros(sent.elapsed()));
                        }
                        Err(_) => outcome.errors += 1,
                    }
                }
                outcome
            })
        })
        .collect();
    join(tasks).await
}

/// Each task's outcome (a task that panicked counts as nothing done).
async fn join(tasks: Vec<tokio::task::JoinHandle<Outcome>>) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap_or_default());
    }
    outcomes
}

/// Reads a body to its end; returns its length.
async fn drain<B>(mut body: B) -> Result<u64, String>
where
    B: http_body::Body + Unpin,
    B::Error: std::fmt::Display,
{
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
            bytes += bytes::Buf::remaining(&data) as u64;
        }
    }
    Ok(bytes)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn roundtrip_get(transport: &Transport, url: &str) -> Result<u64, String> {
    let request = http::Request::get(url)
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let response = transport
        .round_trip(request)
        .await
        .map_err(|e| e.to_string())?;
    drain(response.into_body()).await
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

/// hyper-util's pooled client for `http` and `https` (rustls, as ours).
fn hyper_client(max_idle: usize, mut tls: rustls::ClientConfig) -> HyperClient {
    // hyper-rustls sets ALPN itself: `h2, http/1.1`, as this transport offers by
    // default (a server without HTTP/2 picks http/1.1).
    tls.alpn_protocols.clear();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

/// The CA certificates in `pem`.
pub(crate) fn trusted(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad CA PEM: {e}"))
}

/// A rustls client config trusting `cas` only, offering `http/1.1`.
pub(crate) fn tls_config(cas: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone()).map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn hyper_get(client: &HyperClient, url: &str) -> Result<u64, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let response = client.get(uri).await.map_err(|e| e.to_string())?;
    drain(response.into_body()).await
}

/// One keep-alive socket per task, one pre-built request written again and again;
/// the response is framed by `Content-Length` (what the servers here send).
async fn raw_fan_out(spec: &Spec, per_task: Budget, tls: rustls::ClientConfig) -> Vec<Outcome> {
    let tls =
        (spec.url.starts_with("https:")).then(|| tokio_rustls::TlsConnector::from(Arc::new(tls)));
    let Ok(uri) = spec.url.parse::<http::Uri>() else {
        return vec![Outcome {
            errors: 1,
            ..Outcome::default()
        }];
    };
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let extra: String = spec
        .headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request: Arc<[u8]> = format!(
        "GET {} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n",
        uri.path_and_query().map_or("/", |p| p.as_str())
    )
    .into_bytes()
    .into();
    let tasks: Vec<_> = (0..spec.concurrency)
        .map(|_| {
            let request = Arc::clone(&request);
            let authority = authority.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                let Ok(socket) = TcpStream::connect(&authority).await else {
                    outcome.errors += 1;
                    return outcome;
                };
                let _ = socket.set_nodelay(true);
                let mut socket: Box<dyn Stream> = match tls {
                    None => Box::new(socket),
                    Some(tls) => {
                        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
                            .expect("an IP literal is a server name");
                        match tls.connect(name, socket).await {
                            Ok(stream) => Box::new(stream),
                            Err(_) => {
                                outcome.errors += 1;
                                return outcome;
                            }
                        }
                    }
                };
                let mut buf = vec![0u8; 64 * 1024];
                let mut sent_so_far = 0;
                while per_task.allows_another(sent_so_far) {
                    sent_so_far += 1;
                    let sent = Instant::now();
                    match raw_exchange(&mut socket, &request, &mut buf).await {
                        Ok(bytes) => {
                            outcome.requests += 1;
                            outcome.body_bytes += bytes;
                            outcome.latencies_us.push(micros(sent.elapsed()));
                        }
                        Err(_) => {
                            outcome.errors += 1;
                            break;
                        }
                    }
                }
                outcome
            })
        })
        .collect();
    join(tasks).await
}

/// Writes the request, reads the head and `Content-Length` body bytes; returns the
/// body length. `buf` holds at most one response head at a time (no pipelining).
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

async fn raw_exchange(
    socket: &mut Box<dyn Stream>,
    request: &[u8],
    buf: &mut [u8],
) -> std::io::Result<u64> {
    socket.write_all(request).await?;
    let mut filled = 0;
    let (head_len, body_len) = loop {
        let n = socket.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head_len)) = response.parse(&buf[..filled]) {
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .ok_or(std::io::ErrorKind::InvalidData)?;
            break (head_len, length);
        }
        if filled == buf.len() {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    };
    let mut remaining = body_len.saturating_sub((filled - head_len) as u64);
    while remaining > 0 {
        let n = socket.read(buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        remaining = remaining.saturating_sub(n as u64);
    }
    Ok(body_len)
}

/// Resident memory of this process now, in bytes (`VmRSS`).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0)
        * 1024
}

/// Opens `spec.concurrency` connections at once — every request holds its response
/// until all have one — then reads the bodies so all go idle, and measures what the
/// idle connections hold against the same process after a single request.
pub async fn idle_memory(spec: &Spec) -> Result<Outcome, String> {
    let n = spec.concurrency;
    match spec.client {
        Client::Roundtrip => {
            let transport = Transport::new(Config {
                max_idle_conns: n as u32,
                max_idle_conns_per_host: n as u32,
                inspect_from_env: false,
                ..Config::default()
            })
            .map_err(|e| e.to_string())?;
            roundtrip_get(&transport, &spec.url).await?;
            let (rss_before, guest_before) = (rss_bytes(), transport.stats().await.guest_memory);
            open_at_once(n, || {
                let (transport, url) = (transport.clone(), spec.url.clone());
                async move {
                    let request = http::Request::get(url)
                        .body(Body::empty())
                        .map_err(|e| e.to_string())?;
                    transport
                        .round_trip(request)
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await?;
            let stats = transport.stats().await;
            let idle: u64 = stats.keys.iter().map(|k| u64::from(k.idle)).sum();
            let per = |after: u64, before: u64| after.saturating_sub(before) / idle.max(1);
            Ok(Outcome {
                requests: n as u64 + 1,
                idle: Some(IdleMemory {
                    connections: idle,
                    rss_bytes_per_conn: per(rss_bytes(), rss_before),
                    guest_bytes_per_conn: per(stats.guest_memory as u64, guest_before as u64),
                }),
                ..Outcome::default()
            })
        }
        Client::Hyper => {
            let client = hyper_client(n, tls_config(&[])?);
            hyper_get(&client, &spec.url).await?;
            let rss_before = rss_bytes();
            open_at_once(n, || {
                let (client, url) = (client.clone(), spec.url.clone());
                async move {
                    let uri: http::Uri = url
                        .parse()
                        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
                    client.get(uri).await.map_err(|e| e.to_string())
                }
            })
            .await?;
            // hyper-util keeps no count of its idle connections: all `n` were opened
            // at once and returned, and the pool keeps up to `n`.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(Outcome {
                requests: n as u64 + 1,
                idle: Some(IdleMemory {
                    connections: n as u64,
                    rss_bytes_per_conn: rss_bytes().saturating_sub(rss_before) / n as u64,
                    guest_bytes_per_conn: 0,
                }),
                ..Outcome::default()
            })
        }
        Client::Raw
        | Client::RoundtripLocal
        | Client::RoundtripShards2
        | Client::WasiHttp
        | Client::Floor
        | Client::FloorLocal
        | Client::ServeRoundtrip
        | Client::ServeDefaultClient
        | Client::ServeStock => {
            Err("idle memory is measured for `roundtrip` and `hyper-util`".to_owned())
        }
    }
}

/// Opens `n` connections at once — each request holds its response until all have
/// one — then reads every body to its end, so all of them go idle.
async fn open_at_once<F, Fut, B>(n: usize, get: F) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<http::Response<B>, String>> + Send + 'static,
    B: http_body::Body + Unpin + Send + 'static,
    B::Error: std::fmt::Display,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, response) = (Arc::clone(&barrier), get());
            tokio::spawn(async move {
                let response = response.await?;
                barrier.wait().await;
                drain(response.into_body()).await.map(|_| ())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Starts a transport and waits until its instance answers.
pub async fn cold_start() -> Result<Outcome, String> {
    let started = Instant::now();
    let transport = Transport::new(Config {
        inspect_from_env: false,
        ..Config::default()
    })
    .map_err(|e| e.to_string())?;
    transport.stats().await;
    Ok(Outcome {
        elapsed: started.elapsed(),
        ..Outcome::default()
    })
}
