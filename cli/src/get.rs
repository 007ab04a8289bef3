//! `roundtrip get`: every URL in order on one transport, like curl with a pool.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use clap::Args;
use http::{HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;
use roundtrip_host::events::Callback;
use roundtrip_host::{Body, Client, Jar, ReasonPhrase, RedirectPolicy, Transport, Verdict};
use tokio::sync::Mutex;

use super::{EventArgs, PoolArgs, ProxyDefault, narrate, usage_error};

#[derive(Args)]
pub struct GetArgs {
    /// Absolute http:// or https:// URLs, fetched in order.
    #[arg(required = true, value_name = "URL")]
    urls: Vec<String>,
    /// Include the status line and headers in the output.
    #[arg(short, long)]
    include: bool,
    /// Narrate connections and exchanges on stderr, like curl -v.
    #[arg(short, long)]
    verbose: bool,
    /// Request method (default GET, or POST with -d).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    method: Option<String>,
    /// Extra header, `Name: value`; repeatable.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Request body (sent as application/x-www-form-urlencoded, as curl does):
    /// `@FILE` reads a file, `@-` streams stdin; newlines are stripped from both.
    #[arg(short = 'd', long = "data", value_name = "DATA|@FILE|@-")]
    data: Option<String>,
    /// Request body, as is: `@FILE` reads a file, `@-` streams stdin (chunked, unless
    /// `-H 'Content-Length: N'` says how long it is).
    #[arg(long = "data-binary", value_name = "DATA|@FILE|@-")]
    data_binary: Option<String>,
    /// Upload FILE with PUT (unless -X says otherwise), streamed with its length;
    /// `-T -` streams stdin, chunked. A URL ending in `/` gets FILE's name appended.
    #[arg(short = 'T', long = "upload-file", value_name = "FILE|-")]
    upload_file: Option<PathBuf>,
    /// Write every body, in order, to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Fetch each URL N times.
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: usize,
    /// Workers sharing the one transport.
    #[arg(long, value_name = "C", default_value_t = 1)]
    concurrency: usize,
    /// Follow redirects (Go's Client rules: 301, 302 and 303 turn other methods into
    /// GET without the body; 307 and 308 send it again; credentials and cookies are
    /// not sent to other hosts).
    #[arg(short = 'L', long = "location")]
    location: bool,
    /// With -L, the most redirects followed per URL (-1: no limit).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 50,
        allow_negative_numbers = true
    )]
    max_redirs: i64,
    /// Cookies to send: `name=value; …` as given, or a Netscape cookie file (as curl's
    /// -c writes) to read, which also keeps the cookies responses set.
    #[arg(short = 'b', long = "cookie", value_name = "DATA|FILE")]
    cookie: Option<String>,
    /// Write every cookie to this Netscape cookie file when done (`-` for stdout).
    #[arg(short = 'c', long = "cookie-jar", value_name = "FILE")]
    cookie_jar: Option<PathBuf>,
    /// The most seconds each URL may take, redirects and body included (Go's
    /// Client.Timeout).
    #[arg(short = 'm', long = "max-time", value_name = "SECS")]
    max_time: Option<f64>,
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    pool: PoolArgs,
}

/// One request to make, built once and cloned per job.
#[derive(Clone)]
struct Template {
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Payload>,
}

/// Where a request body comes from.
#[derive(Clone)]
enum Payload {
    /// In memory: sent with its length, replayable.
    Bytes(Bytes),
    /// Streamed from stdin, once; `strip_newlines` for `-d @-`.
    Stdin { strip_newlines: bool },
    /// Streamed from a file opened per request, with its length.
    File(PathBuf),
}

pub async fn run(args: GetArgs) -> ExitCode {
    // One shard runs on this thread, beside the requests: nothing crosses a thread.
    tokio::task::LocalSet::new()
        .run_until(fetch_all(args))
        .await
}

async fn fetch_all(args: GetArgs) -> ExitCode {
    let template = match template(&args) {
        Ok(template) => template,
        Err(message) => return usage_error(&message),
    };
    if args.concurrency == 0 {
        return usage_error("--concurrency must be at least 1");
    }
    let mut events = match args.events.events() {
        Ok(events) => events,
        Err(message) => return usage_error(&message),
    };
    if args.verbose {
        events = events.with(Callback(|event: &roundtrip_host::events::Event| {
            if let Some(line) = narrate::curl_line(event) {
                eprintln!("{line}");
            }
        }));
    }
    let config = match args.pool.config(
        events,
        args.events.inspect_from_env(),
        ProxyDefault::Environment,
    ) {
        Ok(config) => config,
        Err(message) => return usage_error(&message),
    };
    let transport = if config.effective_shards() == 1 {
        Transport::new_local(config).await
    } else {
        Transport::new(config)
    };
    let transport = match transport {
        Ok(transport) => transport,
        Err(e) => {
            eprintln!("roundtrip: {e}");
            return ExitCode::from(1);
        }
    };
    let cookie_jar = args.cookie_jar.clone();
    let client = match client(&args, transport.clone()) {
        Ok(client) => client,
        Err(message) => return usage_error(&message),
    };
    let out: Box<dyn Write + Send> = match &args.output {
        Some(path) => match std::fs::File::create(path) {
            Ok(file) => Box::new(std::io::BufWriter::new(file)),
            Err(e) => return usage_error(&format!("cannot write {}: {e}", path.display())),
        },
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let jobs: Vec<String> = args
        .urls
        .iter()
        .flat_map(|url| std::iter::repeat_n(url.clone(), args.repeat))
        .map(|url| match &args.upload_file {
            Some(file) => upload_url(&url, file),
            None => url,
        })
        .collect();
    if jobs.len() > 1 && matches!(template.body, Some(Payload::Stdin { .. })) {
        return usage_error("a body read from stdin is sent once: give one URL and no --repeat");
    }
    let requests = jobs.len() as u64;
    let output = Arc::new(Mutex::new(Output {
        out,
        next: 0,
        waiting: BTreeMap::new(),
    }));
    let mut failed = if args.concurrency == 1 {
        let mut failed = false;
        for (index, url) in jobs.iter().enumerate() {
            failed |= !fetch(&client, &template, &args, index, url, &output).await;
        }
        failed
    } else {
        let jobs = Arc::new(std::sync::Mutex::new(jobs.into_iter().enumerate()));
        let template = Arc::new(template);
        let args = Arc::new(args);
        let workers: Vec<_> = (0..args.concurrency)
            .map(|_| {
                let (client, template, args, jobs, output) = (
                    client.clone(),
                    Arc::clone(&template),
                    Arc::clone(&args),
                    Arc::clone(&jobs),
                    Arc::clone(&output),
                );
                tokio::task::spawn_local(async move {
                    let mut failed = false;
                    loop {
                        let job = jobs.lock().ok().and_then(|mut jobs| jobs.next());
                        let Some((index, url)) = job else { break };
                        failed |= !fetch(&client, &template, &args, index, &url, &output).await;
                    }
                    failed
                })
            })
            .collect();
        let mut failed = false;
        for worker in workers {
            failed |= worker.await.unwrap_or(true);
        }
        failed
    };
    let _ = output.lock().await.out.flush();
    if let (Some(path), Some(jar)) = (&cookie_jar, client.jar()) {
        let written = if path.as_os_str() == "-" {
            std::io::stdout().write_all(jar.to_netscape().as_bytes())
        } else {
            std::fs::write(path, jar.to_netscape())
        };
        if let Err(e) = written {
            eprintln!("roundtrip: cannot write cookies to {}: {e}", path.display());
            failed = true;
        }
    }
    transport.shutdown().await;
    // `ROUNDTRIP_CROSSINGS=1`: what the requests cost at the boundary (docs/performance.md).
    if roundtrip_host::crossings::is_enabled() {
        eprint!(
            "{}",
            roundtrip_host::crossings::snapshot().per_request(requests)
        );
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The Client over `transport` that curl's flags describe: redirects (`-L`,
/// `--max-redirs`), cookies (`-b FILE`, `-c`), a time limit (`-m`).
fn client(args: &GetArgs, transport: Transport) -> Result<Client, String> {
    let mut client = Client::new(transport).redirects(if !args.location {
        RedirectPolicy::none()
    } else {
        let limit = match usize::try_from(args.max_redirs) {
            Ok(max) => RedirectPolicy::limit_redirects(max),
            Err(_) => RedirectPolicy::custom(|_| Verdict::Follow),
        };
        let verbose = args.verbose;
        RedirectPolicy::custom(move |redirect| {
            let verdict = limit.check(redirect);
            if verbose {
                // As curl -v: the redirect's head, then where it leads.
                for line in head_text(redirect.response).trim_end().lines() {
                    eprintln!("< {line}");
                }
                if matches!(verdict, Verdict::Follow) {
                    eprintln!("* Issue another request to this URL: '{}'", redirect.url);
                }
            }
            verdict
        })
    });
    let file = args.cookie.as_deref().filter(|c| !c.contains('='));
    if file.is_some() || args.cookie_jar.is_some() {
        // curl: a file that does not exist starts an empty jar.
        let jar = match file.map(std::fs::read_to_string) {
            Some(Ok(text)) => Jar::from_netscape(&text).map_err(|e| e.to_string())?,
            Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "cannot read cookie file {}: {e}",
                    file.unwrap_or("")
                ));
            }
            _ => Jar::new(),
        };
        client = client.cookie_jar(Arc::new(jar));
    }
    if let Some(seconds) = args.max_time {
        let limit = std::time::Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("bad --max-time {seconds}"))?;
        client = client.timeout(limit);
    }
    Ok(client)
}

fn template(args: &GetArgs) -> Result<Template, String> {
    let mut headers = Vec::new();
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("bad header {header:?}: expected `Name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("bad header name in {header:?}"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("bad header value in {header:?}"))?;
        headers.push((name, value));
    }
    // `-b 'name=value'`: sent as it is (a file name has no `=`).
    if let Some(cookies) = args.cookie.as_deref().filter(|c| c.contains('=')) {
        let value =
            HeaderValue::from_str(cookies).map_err(|_| format!("bad cookie {cookies:?}"))?;
        headers.push((http::header::COOKIE, value));
    }
    let body = match (&args.data, &args.data_binary, &args.upload_file) {
        (Some(data), None, None) => {
            if !headers.iter().any(|(n, _)| n == http::header::CONTENT_TYPE) {
                headers.push((
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                ));
            }
            Some(match data.strip_prefix('@') {
                Some("-") => Payload::Stdin {
                    strip_newlines: true,
                },
                Some(path) => {
                    let mut bytes =
                        std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
                    bytes.retain(|b| *b != b'\r' && *b != b'\n');
                    Payload::Bytes(bytes.into())
                }
                None => Payload::Bytes(Bytes::from(data.clone())),
            })
        }
        (None, Some(data), None) => Some(match data.strip_prefix('@') {
            Some("-") => Payload::Stdin {
                strip_newlines: false,
            },
            Some(path) => Payload::Bytes(
                std::fs::read(path)
                    .map_err(|e| format!("cannot read {path}: {e}"))?
                    .into(),
            ),
            None => Payload::Bytes(Bytes::from(data.clone())),
        }),
        (None, None, Some(file)) if file.as_os_str() == "-" => Some(Payload::Stdin {
            strip_newlines: false,
        }),
        (None, None, Some(file)) => {
            std::fs::metadata(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            Some(Payload::File(file.clone()))
        }
        (None, None, None) => None,
        _ => return Err("use one of -d, --data-binary and -T".into()),
    };
    let method = match &args.method {
        Some(method) => {
            Method::from_bytes(method.as_bytes()).map_err(|_| format!("bad method {method:?}"))?
        }
        None if args.upload_file.is_some() => Method::PUT,
        None if body.is_some() => Method::POST,
        None => Method::GET,
    };
    Ok(Template {
        method,
        headers,
        body,
    })
}

/// A response head as curl prints it (HTTP/2's status line has no reason phrase).
fn head_text(response: &http::response::Parts) -> String {
    let reason = response
        .extensions
        .get::<ReasonPhrase>()
        .map_or("", |r| r.0.as_str());
    let status = response.status.as_u16();
    let mut head = match response.version {
        http::Version::HTTP_2 => format!("HTTP/2 {status}\r\n"),
        http::Version::HTTP_10 => format!("HTTP/1.0 {status} {reason}\r\n"),
        _ => format!("HTTP/1.1 {status} {reason}\r\n"),
    };
    for (name, value) in &response.headers {
        head.push_str(&format!(
            "{name}: {}\r\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    head.push_str("\r\n");
    head
}

/// curl's rule for `-T FILE`: a URL with no file part gets the file's name.
fn upload_url(url: &str, file: &std::path::Path) -> String {
    match file.file_name() {
        Some(name) if url.ends_with('/') && file.as_os_str() != "-" => {
            format!("{url}{}", name.to_string_lossy())
        }
        _ => url.to_owned(),
    }
}

/// The request body for one request, and the `Content-Length` it needs, if any.
async fn body(payload: &Option<Payload>) -> Result<(Body, Option<u64>), String> {
    use futures::StreamExt;
    use tokio_util::io::ReaderStream;
    Ok(match payload {
        None => (Body::empty(), None),
        Some(Payload::Bytes(bytes)) => (Body::from(bytes.clone()), None),
        Some(Payload::Stdin { strip_newlines }) => {
            let strip = *strip_newlines;
            let chunks = ReaderStream::new(tokio::io::stdin()).map(move |chunk| {
                chunk.map(|bytes| {
                    if strip {
                        bytes
                            .iter()
                            .copied()
                            .filter(|b| *b != b'\r' && *b != b'\n')
                            .collect::<Vec<u8>>()
                            .into()
                    } else {
                        bytes
                    }
                })
            });
            (Body::from_try_stream(chunks), None)
        }
        Some(Payload::File(path)) => {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let length = file
                .metadata()
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .len();
            (Body::from_try_stream(ReaderStream::new(file)), Some(length))
        }
    })
}

/// Bodies are written in request order even when workers finish out of order.
struct Output {
    out: Box<dyn Write + Send>,
    /// The request whose output is written now, as it comes.
    next: usize,
    /// Output of later requests, held until every earlier one is written.
    waiting: BTreeMap<usize, Held>,
}

/// A later request's output so far, and whether it is all there.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    done: bool,
}

impl Output {
    /// Writes `bytes` of request `index`: at once if it is the one being written (a
    /// big body streams through, as curl's does), else held in order.
    fn write(&mut self, index: usize, bytes: &[u8]) {
        if index == self.next {
            let _ = self.out.write_all(bytes);
            let _ = self.out.flush();
        } else {
            self.waiting
                .entry(index)
                .or_default()
                .bytes
                .extend_from_slice(bytes);
        }
    }

    /// Request `index` has written all it will: the ones after it that are done go
    /// out, and the first that is not writes from now on as it comes.
    fn finish(&mut self, index: usize) {
        self.waiting.entry(index).or_default().done = true;
        while let Some(held) = self.waiting.get_mut(&self.next) {
            let _ = self.out.write_all(&std::mem::take(&mut held.bytes));
            if !held.done {
                break;
            }
            self.waiting.remove(&self.next);
            self.next += 1;
        }
        let _ = self.out.flush();
    }
}

/// `http::Uri` needs an authority: `file:///p` is written `file://localhost/p`, which
/// RFC 8089 says is the same file.
fn with_authority(url: &str) -> String {
    match url.strip_prefix("file:///") {
        Some(path) => format!("file://localhost/{path}"),
        None => url.to_owned(),
    }
}

/// Makes one request; reports a failure on stderr and returns false.
async fn fetch(
    client: &Client,
    template: &Template,
    args: &GetArgs,
    index: usize,
    url: &str,
    output: &Mutex<Output>,
) -> bool {
    let mut builder = http::Request::builder()
        .method(template.method.clone())
        .uri(with_authority(url));
    for (name, value) in &template.headers {
        builder = builder.header(name, value);
    }
    let body = match body(&template.body).await {
        Ok((body, length)) => {
            let declared = template
                .headers
                .iter()
                .any(|(name, _)| name == http::header::CONTENT_LENGTH);
            if let (Some(length), false) = (length, declared) {
                builder = builder.header(http::header::CONTENT_LENGTH, length);
            }
            body
        }
        Err(message) => {
            eprintln!("roundtrip: {url}: {message}");
            output.lock().await.finish(index);
            return false;
        }
    };
    let request = match builder.body(body) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("roundtrip: {url}: invalid URL: {e}");
            output.lock().await.finish(index);
            return false;
        }
    };
    if args.verbose {
        eprintln!("> {} {url}", template.method);
    }
    // `-i -L`: every redirect's head goes out before the last one's, as curl's.
    let followed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let client = if args.include && args.location {
        let (policy, heads) = (client.redirect_policy().clone(), Arc::clone(&followed));
        client
            .clone()
            .redirects(RedirectPolicy::custom(move |redirect| {
                let verdict = policy.check(redirect);
                // A head that is not the answer (followed, or past the limit) goes here.
                if !matches!(verdict, Verdict::Stop)
                    && let Ok(mut heads) = heads.lock()
                {
                    heads.push(head_text(redirect.response));
                }
                verdict
            }))
    } else {
        client.clone()
    };
    let sent = client.send(request).await;
    let heads = followed
        .lock()
        .map(|mut h| std::mem::take(&mut *h))
        .unwrap_or_default();
    for head in heads {
        output.lock().await.write(index, head.as_bytes());
    }
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            eprintln!("roundtrip: {url}: {e}");
            output.lock().await.finish(index);
            return false;
        }
    };
    let (parts, mut body) = response.into_parts();
    if args.include || args.verbose {
        let head = head_text(&parts);
        if args.verbose {
            for line in head.trim_end().lines() {
                eprintln!("< {line}");
            }
        }
        if args.include {
            output.lock().await.write(index, head.as_bytes());
        }
    }

    let mut ok = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    output.lock().await.write(index, &data);
                }
            }
            Err(e) => {
                eprintln!("roundtrip: {url}: {e}");
                ok = false;
                break;
            }
        }
    }
    output.lock().await.finish(index);
    ok
}
