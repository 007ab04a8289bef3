//! Where events come from. The [`Hub`] runs the I/O on a tokio runtime of its own —
//! the TCP listener programs stream to, an embedded proxy for `run -- CMD`, demos run
//! in-process — and feeds everything to the UI thread as [`Feed`] messages. Files are
//! read whole by [`read_jsonl`]; the UI replays them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use roundtrip_demo::{self as demo, DemoOptions, Line};
use roundtrip_host::events::{Callback, Event, Events, Hello, Sink, WatchMode};
use roundtrip_host::{Config, Transport};
use roundtrip_proxy::{ForwardProxy, Mitm, ProxyOptions};
use tokio::io::AsyncBufReadExt;

use crate::watch::Watcher;
use crate::watch::tracefs::Tracefs;

/// A source's id, unique in one inspector.
pub type SourceId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A program streaming to the listener.
    Live,
    /// A JSON Lines file, replayed.
    File,
    /// A command run through the embedded proxy.
    Run,
    /// A `roundtrip demo` scenario run in-process.
    Demo,
    /// A process tree's TCP connections, from the kernel (`run --watch`, `watch PID`).
    Watch,
}

/// A message from the I/O side to the UI.
#[derive(Debug)]
pub enum Feed {
    Opened {
        source: SourceId,
        name: String,
        kind: SourceKind,
    },
    Event {
        source: SourceId,
        event: Box<Event>,
    },
    Narration {
        source: SourceId,
        line: Line,
    },
    /// Something about a source, for the status line (connected, exited, …).
    Status {
        source: SourceId,
        text: String,
    },
    /// Input that is not an event (garbage, an unknown event name).
    Problem {
        source: SourceId,
        text: String,
    },
    /// The source's command (or watched tree) is done, with the command's exit code
    /// (a signal's as a shell gives it: 128 + its number); for `run -- CMD`, the
    /// proxy's connections are still shown, and closed only with `--record`.
    Exited {
        source: SourceId,
        code: i32,
    },
}

/// An exit status as a shell reports it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

/// Called after each message so the UI wakes up to draw it.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// The I/O side. Dropping it stops everything it started.
pub struct Hub {
    runtime: tokio::runtime::Runtime,
    out: Sender,
}

/// Sends feed messages and wakes the UI.
#[derive(Clone)]
struct Sender {
    feed: std::sync::mpsc::Sender<Feed>,
    wake: Wake,
    next_source: Arc<AtomicU64>,
}

impl Sender {
    fn send(&self, message: Feed) {
        let _ = self.feed.send(message);
        (self.wake)();
    }

    fn open(&self, name: String, kind: SourceKind) -> SourceId {
        let source = self.next_source.fetch_add(1, Ordering::Relaxed) + 1;
        self.send(Feed::Opened { source, name, kind });
        source
    }

    fn status(&self, source: SourceId, text: impl Into<String>) {
        self.send(Feed::Status {
            source,
            text: text.into(),
        });
    }

    /// A sink sending a transport's events straight to `source`.
    fn sink_to(&self, source: SourceId) -> impl Sink + 'static {
        let out = self.clone();
        Callback(move |event: &Event| {
            out.send(Feed::Event {
                source,
                event: Box::new(event.clone()),
            });
        })
    }
}

impl Hub {
    /// Starts the I/O side; messages arrive on the returned receiver.
    pub fn new(wake: Wake) -> std::io::Result<(Self, std::sync::mpsc::Receiver<Feed>)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("inspector-io")
            .enable_all()
            .build()?;
        let (feed, received) = std::sync::mpsc::channel();
        let out = Sender {
            feed,
            wake,
            next_source: Arc::new(AtomicU64::new(0)),
        };
        Ok((Self { runtime, out }, received))
    }

    /// Accepts programs streaming events (`--inspect`, `ROUNDTRIP_INSPECT`) on `addr`.
    /// A program that reconnects (same hello) continues its source.
    pub fn listen(&self, addr: &str) -> std::io::Result<SocketAddr> {
        let listener = self.runtime.block_on(tokio::net::TcpListener::bind(addr))?;
        let bound = listener.local_addr()?;
        let out = self.out.clone();
        self.runtime.spawn(async move {
            let known: Arc<Mutex<HashMap<Hello, SourceId>>> = Arc::default();
            loop {
                let Ok((socket, peer)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(read_stream(socket, peer, out.clone(), Arc::clone(&known)));
            }
        });
        Ok(bound)
    }

    /// Runs a `roundtrip demo` scenario in-process as a new source (`slow`: with
    /// pauses between steps).
    pub fn run_demo(&self, name: &str, slow: bool) -> SourceId {
        let source = self.out.open(format!("demo {name}"), SourceKind::Demo);
        let out = self.out.clone();
        let name = name.to_owned();
        self.runtime.spawn(async move {
            let narrator_out = out.clone();
            let options = DemoOptions {
                events: Events::new().with(out.sink_to(source)),
                inspect_from_env: false,
                slow,
                narrator: Arc::new(move |line| {
                    narrator_out.send(Feed::Narration { source, line });
                }),
            };
            out.status(source, "running");
            match demo::run(&name, options).await {
                Ok(()) => out.status(source, "finished"),
                Err(e) => out.status(source, format!("failed: {e}")),
            }
        });
        source
    }

    /// Starts a forward proxy on a free loopback port, runs `command` with the proxy
    /// variables pointing at it, and shows its connections as a new source.
    pub fn run_command(&self, command: Vec<String>, options: RunOptions) -> SourceId {
        let source = self
            .out
            .open(format!("run {}", command.join(" ")), SourceKind::Run);
        let out = self.out.clone();
        self.runtime.spawn(async move {
            if let Err(e) = run_through_proxy(source, &command, options, &out).await {
                out.status(source, e);
                out.send(Feed::Exited { source, code: 1 });
            }
        });
        source
    }
}

impl Hub {
    /// Ends `source` on the first Ctrl-C ([`Feed::Exited`] with 130, as a shell says
    /// for SIGINT): a recording stops there, and keeps what it has.
    pub fn end_on_ctrl_c(&self, source: SourceId) {
        let out = self.out.clone();
        self.runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                out.status(source, "interrupted");
                out.send(Feed::Exited { source, code: 130 });
            }
        });
    }

    /// Runs `command` with no proxy and shows its (and its descendants') TCP
    /// connections from the kernel as a new source.
    pub fn watch_command(&self, command: Vec<String>) -> SourceId {
        let source = self
            .out
            .open(format!("watch {}", command.join(" ")), SourceKind::Watch);
        let out = self.out.clone();
        self.runtime.spawn(async move {
            if let Err(e) = run_watched(source, &command, &out).await {
                out.status(source, e);
                out.send(Feed::Exited { source, code: 1 });
            }
        });
        source
    }

    /// Shows the TCP connections of running process `pid` and its descendants.
    pub fn watch_pid(&self, pid: u32) -> SourceId {
        let source = self.out.open(format!("watch pid {pid}"), SourceKind::Watch);
        let out = self.out.clone();
        self.runtime.spawn(async move {
            let trace = Tracefs::start();
            let watched = watch(source, pid, trace, true, out.clone()).await;
            let code = if watched.is_ok() { 0 } else { 1 };
            out.status(source, watched.unwrap_or_else(|e| e));
            out.send(Feed::Exited { source, code });
        });
        source
    }
}

async fn run_watched(source: SourceId, command: &[String], out: &Sender) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("nothing to run".to_owned());
    };
    // Tracing from before the command starts: its first connection is seen too.
    let trace = Tracefs::start();
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pid = child
        .id()
        .ok_or_else(|| format!("{program} exited at once"))?;
    let watching = tokio::spawn(watch(source, pid, trace, false, out.clone()));
    let status = child.wait().await.map_err(|e| e.to_string())?;
    // The watcher ends when the last of the tree is gone and says so after this.
    let watched = watching.await.map_err(|e| e.to_string())?;
    out.status(
        source,
        format!(
            "{program} exited: {status}; {}",
            watched.unwrap_or_else(|e| e)
        ),
    );
    out.send(Feed::Exited {
        source,
        code: exit_code(status),
    });
    Ok(())
}

/// Follows `pid`'s tree until none of it runs (with `running`, what it held already
/// too); says how it ended.
async fn watch(
    source: SourceId,
    pid: u32,
    trace: Result<Tracefs, String>,
    running: bool,
    out: Sender,
) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let mut watcher = Watcher::new(pid, trace, running)?;
        let mut emit = |event: Event| {
            out.send(Feed::Event {
                source,
                event: Box::new(event),
            });
        };
        emit(watcher.start_event(pid));
        let (mode, misses) = watcher.mode();
        let how = match mode {
            WatchMode::Trace => "by the kernel's trace events",
            WatchMode::Sample => "by sampling the kernel's socket table",
        };
        out.status(
            source,
            format!("watching pid {pid} and its children {how}; misses {misses}"),
        );
        loop {
            watcher.step(&mut emit)?;
            if !watcher.alive() {
                let lost = watcher.finish(&mut emit)?;
                return Ok(format!(
                    "watched pid {pid} until it and its children exited{}",
                    lost.map(|l| format!(" ({l})")).unwrap_or_default()
                ));
            }
            std::thread::sleep(crate::watch::SAMPLE_INTERVAL);
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// How `run -- CMD` runs its command.
#[derive(Default)]
pub struct RunOptions {
    /// The proxy's transport.
    pub config: Config,
    /// `--mitm`: TLS from the command is terminated with certificates from this CA,
    /// which the command is told to trust (a bundle of the system's roots and the CA
    /// in `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`,
    /// `NODE_EXTRA_CA_CERTS`, `GIT_SSL_CAINFO`).
    pub mitm: Option<Arc<Mitm>>,
    /// Once the command has exited, close the proxy's idle connections (their
    /// `close` events come before [`Feed::Exited`]): a recording ends there. Without
    /// it they stay open and shown, living out their idle time.
    pub close_at_exit: bool,
}

/// The variables through which common runtimes and tools take a CA bundle.
const CA_BUNDLE_VARIABLES: [&str; 5] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
];

/// Where Debian (and most distributions) keep the system's roots.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

async fn run_through_proxy(
    source: SourceId,
    command: &[String],
    options: RunOptions,
    out: &Sender,
) -> Result<(), String> {
    let RunOptions {
        config,
        mitm,
        close_at_exit,
    } = options;
    let Some((program, args)) = command.split_first() else {
        return Err("nothing to run".to_owned());
    };
    let config = Config {
        events: config.events.clone().with(out.sink_to(source)),
        inspect_from_env: false,
        ..config
    };
    let transport = Transport::new(config).map_err(|e| e.to_string())?;
    let log_out = out.clone();
    let options = ProxyOptions {
        log: Some(Arc::new(move |line: &str| {
            log_out.send(Feed::Narration {
                source,
                line: Line::Story(line.to_owned()),
            });
        })),
        mitm: mitm.clone(),
        ..ProxyOptions::default()
    };
    let proxy = ForwardProxy::start("127.0.0.1:0", transport.clone(), options)
        .await
        .map_err(|e| format!("cannot start the proxy: {e}"))?;
    let url = proxy.url();
    let mut child = tokio::process::Command::new(program);
    // The bundle lives as long as this task (the command may read it late).
    let bundle = match &mitm {
        Some(mitm) => Some(ca_bundle(mitm)?),
        None => None,
    };
    if let Some(bundle) = &bundle {
        for variable in CA_BUNDLE_VARIABLES {
            child.env(variable, bundle.path());
        }
    }
    let mut child = child
        .args(args)
        .env("HTTP_PROXY", &url)
        .env("http_proxy", &url)
        .env("HTTPS_PROXY", &url)
        .env("https_proxy", &url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    out.status(source, format!("running through the proxy at {url}"));
    let status = child.wait().await.map_err(|e| e.to_string())?;
    out.status(source, format!("{program} exited: {status}"));
    if close_at_exit {
        transport.close_idle_connections().await;
    }
    out.send(Feed::Exited {
        source,
        code: exit_code(status),
    });
    // `proxy` lives as long as this task: its idle connections, their idle time and
    // timeouts stay visible until the inspector closes.
    std::future::pending().await
}

/// Reads one TCP stream of JSON Lines into a source.
async fn read_stream(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    out: Sender,
    known: Arc<Mutex<HashMap<Hello, SourceId>>>,
) {
    let mut lines = tokio::io::BufReader::new(socket).lines();
    let mut source: Option<SourceId> = None;
    let mut number = 0usize;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                if let Some(source) = source {
                    out.send(Feed::Problem {
                        source,
                        text: format!("stream from {peer} broke: {e}"),
                    });
                }
                break;
            }
        };
        number += 1;
        if number == 1
            && let Some(hello) = Hello::parse(&line)
        {
            let mut known = known
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let id = match known.get(&hello) {
                Some(&id) => {
                    out.status(id, format!("reconnected from {peer}"));
                    id
                }
                None => {
                    let id = out.open(
                        format!("{} (pid {}) #{}", hello.program, hello.pid, hello.sink),
                        SourceKind::Live,
                    );
                    out.status(id, format!("connected from {peer}"));
                    known.insert(hello, id);
                    id
                }
            };
            source = Some(id);
            continue;
        }
        let id = *source.get_or_insert_with(|| {
            let id = out.open(format!("{peer}"), SourceKind::Live);
            out.status(id, format!("connected from {peer} (no hello line)"));
            id
        });
        match parse_line(&line, number) {
            Ok(Some(event)) => out.send(Feed::Event {
                source: id,
                event: Box::new(event),
            }),
            Ok(None) => {}
            Err(text) => out.send(Feed::Problem { source: id, text }),
        }
    }
    if let Some(source) = source {
        out.status(source, format!("{peer} disconnected"));
    }
}

/// One line: an event, nothing (blank or a hello), or why it is not an event.
pub fn parse_line(line: &str, number: usize) -> Result<Option<Event>, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || Hello::parse(trimmed).is_some() {
        return Ok(None);
    }
    serde_json::from_str::<Event>(trimmed)
        .map(Some)
        .map_err(|e| {
            let shown: String = trimmed.chars().take(60).collect();
            format!("line {number} is not an event ({e}): {shown:?}")
        })
}

/// A file of JSON Lines: its events and the lines that were not events.
pub struct FileEvents {
    pub events: Vec<Event>,
    pub problems: Vec<String>,
}

/// Reads a whole events file. A truncated last line is reported, not fatal.
pub fn read_jsonl(path: &Path) -> std::io::Result<FileEvents> {
    let bytes = std::fs::read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut events = Vec::new();
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        match parse_line(line, index + 1) {
            Ok(Some(event)) => events.push(event),
            Ok(None) => {}
            Err(problem) => problems.push(problem),
        }
    }
    if !text.is_empty() && !text.ends_with('\n') && problems.len() + events.len() > 0 {
        problems.push("the file does not end with a newline: it may be truncated".to_owned());
    }
    Ok(FileEvents { events, problems })
}

/// The system's roots and the MITM CA, in a file of their own.
fn ca_bundle(mitm: &Mitm) -> Result<tempfile::NamedTempFile, String> {
    use std::io::Write;
    let system =
        std::env::var_os("SSL_CERT_FILE").map_or_else(|| SYSTEM_ROOTS.into(), PathBuf::from);
    let mut file = tempfile::Builder::new()
        .prefix("roundtrip-mitm-bundle")
        .suffix(".pem")
        .tempfile()
        .map_err(|e| format!("cannot write the CA bundle: {e}"))?;
    file.write_all(mitm.bundle_with(Some(&system)).as_bytes())
        .map_err(|e| format!("cannot write the CA bundle: {e}"))?;
    Ok(file)
}
