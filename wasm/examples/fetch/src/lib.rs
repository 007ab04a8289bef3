//! `fetch`: a plain wasi:http 0.3 command, the kind of guest people already have.
//!
//! ```text
//! fetch [--count N | --seconds S] [--concurrency C] [--json] URL
//! ```
//!
//! With one request it writes the response body to stdout (like `curl`); with more it
//! prints a summary. `--json` prints the summary as one JSON object (the benchmark
//! reads it). Each of the C workers sends its requests one after another, reading
//! every body to its end, which is what lets a pooling client reuse the connection.
//!
//! It imports `wasi:http/client` and nothing of Roundtrip: run it in any P3 host, or
//! with Roundtrip's transport plugged in (`roundtrip run`).

#![cfg(target_arch = "wasm32")]

// Generated glue: the ABI needs `unsafe` and exported symbols.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "fetch",
        generate_all,
    });
}

use std::cell::{Cell, RefCell};

use bindings::exports::wasi::cli::run::Guest;
use bindings::wasi::cli::{environment, stdout};
use bindings::wasi::clocks::monotonic_clock;
use bindings::wasi::http::client;
use bindings::wasi::http::types::{ErrorCode, Fields, Request, Response, Scheme, Trailers};
use bindings::{wit_future, wit_stream};
use wit_bindgen::StreamResult;

struct Fetch;

// The export glue is `unsafe` ABI code too.
#[allow(unsafe_code)]
mod export {
    use super::{Fetch, bindings};
    bindings::export!(Fetch with_types_in bindings);
}

impl Guest for Fetch {
    async fn run() -> Result<(), ()> {
        let options = match Options::parse(environment::get_arguments()) {
            Ok(options) => options,
            Err(message) => {
                print(format!("fetch: {message}\n{USAGE}\n").into_bytes()).await;
                return Err(());
            }
        };
        let tally = Tally::default();
        let next = Cell::new(0);
        let started = monotonic_clock::now();
        let deadline = options.seconds.map(|s| started + (s * 1e9) as u64);
        let workers = (0..options.concurrency).map(|_| async {
            while match deadline {
                Some(deadline) => monotonic_clock::now() < deadline,
                None => next.get() < options.count,
            } {
                next.set(next.get() + 1);
                let began = monotonic_clock::now();
                let echo = options.count == 1 && options.seconds.is_none() && !options.json;
                let outcome = fetch_once(&options, echo).await;
                tally.record(outcome, (monotonic_clock::now() - began) / 1_000);
            }
        });
        futures::future::join_all(workers).await;
        let elapsed_us = (monotonic_clock::now() - started) / 1_000;
        if options.json {
            print(tally.json(elapsed_us).into_bytes()).await;
        } else if tally.requests.get() > 1 || tally.errors.get() > 0 {
            print(tally.summary(elapsed_us).into_bytes()).await;
        }
        if tally.errors.get() == 0 {
            Ok(())
        } else {
            Err(())
        }
    }
}

const USAGE: &str = "usage: fetch [--count N | --seconds S] [--concurrency C] [--json] URL";

struct Options {
    scheme: Scheme,
    authority: String,
    path_with_query: String,
    count: u64,
    /// Keep fetching for this long instead of `count` times.
    seconds: Option<f64>,
    concurrency: u64,
    json: bool,
}

impl Options {
    fn parse(arguments: Vec<String>) -> Result<Options, String> {
        let mut count = 1;
        let mut concurrency = 1;
        let mut json = false;
        let mut seconds = None;
        let mut url = None;
        // The first argument is the program's name.
        let mut rest = arguments.into_iter().skip(1);
        while let Some(argument) = rest.next() {
            let mut number = |name: &str| -> Result<u64, String> {
                let value = rest.next().ok_or(format!("{name} needs a number"))?;
                value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("{name} needs a number above 0, not {value:?}"))
            };
            match argument.as_str() {
                "--count" | "-n" => count = number("--count")?,
                "--concurrency" | "-c" => concurrency = number("--concurrency")?,
                "--seconds" => seconds = Some(number("--seconds")? as f64),
                "--json" => json = true,
                flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
                _ if url.is_some() => return Err("more than one URL".to_owned()),
                _ => url = Some(argument),
            }
        }
        let url = url.ok_or("no URL given")?;
        let parsed = url::Url::parse(&url).map_err(|e| format!("bad URL {url:?}: {e}"))?;
        let scheme = match parsed.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(format!("unsupported scheme {other:?} in {url:?}")),
        };
        let host = parsed.host_str().ok_or(format!("no host in {url:?}"))?;
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let path_with_query = match parsed.query() {
            Some(query) => format!("{}?{query}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        Ok(Options {
            scheme,
            authority,
            path_with_query,
            count,
            seconds,
            concurrency: if seconds.is_some() {
                concurrency
            } else {
                concurrency.min(count)
            },
            json,
        })
    }
}

/// What one request came to: the body's length, or why it failed.
type Outcome = Result<u64, String>;

/// One GET, its body read to the end (written to stdout when `echo`).
async fn fetch_once(options: &Options, echo: bool) -> Outcome {
    let (_, no_trailers) = wit_future::new::<Result<Option<Trailers>, ErrorCode>>(|| Ok(None));
    let (request, _sent) = Request::new(Fields::new(), None, no_trailers, None);
    request
        .set_scheme(Some(&options.scheme))
        .and_then(|()| request.set_authority(Some(&options.authority)))
        .and_then(|()| request.set_path_with_query(Some(&options.path_with_query)))
        .map_err(|()| format!("the host refused the URL {}", options.authority))?;
    let response = client::send(request).await.map_err(|e| format!("{e:?}"))?;
    let status = response.get_status_code();
    let (_, handled) = wit_future::new::<Result<(), ErrorCode>>(|| Ok(()));
    let (mut body, trailers) = Response::consume_body(response, handled);
    let mut length = 0;
    let mut buffer = Vec::with_capacity(64 * 1024);
    loop {
        let (result, chunk) = body.read(buffer).await;
        match result {
            StreamResult::Complete(_) => {
                length += chunk.len() as u64;
                if echo {
                    print(chunk.clone()).await;
                }
                buffer = chunk;
                buffer.clear();
            }
            StreamResult::Dropped | StreamResult::Cancelled => break,
        }
    }
    trailers.await.map_err(|e| format!("body: {e:?}"))?;
    if status >= 400 {
        return Err(format!("status {status}"));
    }
    Ok(length)
}

/// What all workers saw.
#[derive(Default)]
struct Tally {
    requests: Cell<u64>,
    errors: Cell<u64>,
    body_bytes: Cell<u64>,
    latencies_us: RefCell<Vec<u64>>,
    first_error: RefCell<Option<String>>,
}

impl Tally {
    fn record(&self, outcome: Outcome, latency_us: u64) {
        self.requests.set(self.requests.get() + 1);
        match outcome {
            Ok(length) => {
                self.body_bytes.set(self.body_bytes.get() + length);
                self.latencies_us.borrow_mut().push(latency_us);
            }
            Err(message) => {
                self.errors.set(self.errors.get() + 1);
                self.first_error.borrow_mut().get_or_insert(message);
            }
        }
    }

    fn percentile(&self, p: f64) -> u64 {
        let mut all = self.latencies_us.borrow_mut();
        all.sort_unstable();
        match all.len() {
            0 => 0,
            n => all[((n - 1) as f64 * p).round() as usize],
        }
    }

    fn summary(&self, elapsed_us: u64) -> String {
        let mut text = format!(
            "{} requests, {} errors, {} body bytes in {:.1} ms (p50 {} µs, p99 {} µs)\n",
            self.requests.get(),
            self.errors.get(),
            self.body_bytes.get(),
            elapsed_us as f64 / 1000.0,
            self.percentile(0.5),
            self.percentile(0.99),
        );
        if let Some(error) = self.first_error.borrow().as_ref() {
            text.push_str(&format!("first error: {error}\n"));
        }
        text
    }

    fn json(&self, elapsed_us: u64) -> String {
        let first_error = match self.first_error.borrow().as_ref() {
            Some(error) => format!("\"{}\"", error.replace('\\', "\\\\").replace('"', "\\\"")),
            None => "null".to_owned(),
        };
        format!(
            "{{\"requests\":{},\"errors\":{},\"body_bytes\":{},\"elapsed_us\":{},\"p50_us\":{},\"p99_us\":{},\"first_error\":{}}}\n",
            self.requests.get(),
            self.errors.get(),
            self.body_bytes.get(),
            elapsed_us,
            self.percentile(0.5),
            self.percentile(0.99),
            first_error,
        )
    }
}

/// Writes `bytes` to stdout through the P3 stream interface.
async fn print(bytes: Vec<u8>) {
    let (mut writer, reader) = wit_stream::new::<u8>();
    let done = stdout::write_via_stream(reader);
    writer.write_all(bytes).await;
    drop(writer);
    // Nothing more can be said if stdout itself has failed.
    let _ = done.await;
}
