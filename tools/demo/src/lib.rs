//! Classroom scenarios: each starts the local servers it needs on free loopback
//! ports, runs a scripted client on a transport, and tells what happens and why —
//! sentences a student can follow, each with the lifecycle event behind it.
//!
//! The scenarios are library code so that `roundtrip demo` prints them and the
//! inspector can run them in-process; both get the story through a [`Narrator`].
//! Every scenario checks its own outcome (dials, reuses, close reasons) and fails
//! if the pool did not behave as the story says.

mod narrate;
mod pool;
mod server;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;

use roundtrip_host::events::{Callback, CloseReason, Event, EventKind, Events, Recorder};
use roundtrip_host::{Body, Config, ConnectionInfo, Transport};
use roundtrip_servers::LocalServer;

pub use narrate::sentence;

/// A scenario's name and what it shows.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
}

/// Every scenario, in the order a lesson takes them (`docs/teaching.md`).
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "reuse",
        about: "three requests in a row share one connection: one dial, then two reuses",
    },
    Scenario {
        name: "unread-body",
        about: "bodies left unread keep their connections busy, so every request dials (the classic leak)",
    },
    Scenario {
        name: "early-close",
        about: "dropping a body before its end closes the connection; the next request dials again",
    },
    Scenario {
        name: "no-keepalive",
        about: "with keep-alives off every request pays a new connection",
    },
    Scenario {
        name: "max-idle-per-host",
        about: "a burst of 10 opens 10 connections; only 2 stay idle, the rest are closed",
    },
    Scenario {
        name: "idle-timeout",
        about: "an idle connection is closed after the idle timeout; the next request dials",
    },
    Scenario {
        name: "server-closes-idle",
        about: "the server closes idle connections: seen while idle, or met by a request and retried",
    },
    Scenario {
        name: "max-conns-per-host",
        about: "with at most 2 connections per host, 6 requests queue and take turns",
    },
    Scenario {
        name: "late-binding",
        about: "a request waiting for a slow dial takes the first connection that frees up",
    },
    Scenario {
        name: "connection-close",
        about: "a response with `Connection: close` ends its connection; the next request dials",
    },
    Scenario {
        name: "tls-resumption",
        about: "the second TLS connection to a server resumes the session: a shorter handshake",
    },
    Scenario {
        name: "http2-multiplexing",
        about: "12 requests at once: over HTTP/1.1 they need 12 connections, over HTTP/2 they share one",
    },
    Scenario {
        name: "proxy",
        about: "two apps go through `roundtrip proxy`: the proxy's pool serves both with one connection",
    },
];

/// One line of a scenario's story.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// What the script does or what it found, in plain words.
    Story(String),
    /// A lifecycle event told as a sentence, with the event's name.
    Event {
        sentence: String,
        event: &'static str,
    },
}

/// Receives the story as it happens (on any thread).
pub type Narrator = Arc<dyn Fn(Line) + Send + Sync>;

#[derive(Clone)]
pub struct DemoOptions {
    /// Sinks for the scenario's events (besides the narration).
    pub events: Events,
    /// Also stream to the inspector named by `ROUNDTRIP_INSPECT`.
    pub inspect_from_env: bool,
    /// Pause between steps so a class can watch the inspector.
    pub slow: bool,
    pub narrator: Narrator,
}

/// The scenario called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Runs the scenario called `name`. `Err` says what went differently from the story
/// (or that there is no such scenario).
pub async fn run(name: &str, options: DemoOptions) -> Result<(), String> {
    let stage = Stage::new(options);
    let Some(scenario) = find(name) else {
        return Err(format!(
            "unknown scenario {name:?}; `roundtrip demo --list` shows them"
        ));
    };
    stage.say(format!(
        "Scenario `{}`: {}.\n",
        scenario.name, scenario.about
    ));
    match name {
        "reuse" => pool::reuse(&stage).await,
        "unread-body" => pool::unread_body(&stage).await,
        "early-close" => pool::early_close(&stage).await,
        "no-keepalive" => pool::no_keepalive(&stage).await,
        "max-idle-per-host" => pool::max_idle_per_host(&stage).await,
        "idle-timeout" => pool::idle_timeout(&stage).await,
        "max-conns-per-host" => pool::max_conns_per_host(&stage).await,
        "late-binding" => pool::late_binding(&stage).await,
        "server-closes-idle" => server::server_closes_idle(&stage).await,
        "connection-close" => server::connection_close(&stage).await,
        "tls-resumption" => server::tls_resumption(&stage).await,
        "http2-multiplexing" => server::http2_multiplexing(&stage).await,
        "proxy" => server::proxy(&stage).await,
        _ => Err(format!("scenario {name:?} has no script")),
    }
}

/// What a scenario works with: its options, a recording of its events, and the
/// helpers every script uses.
pub(crate) struct Stage {
    options: DemoOptions,
    recorder: Recorder,
    steps: std::sync::atomic::AtomicUsize,
}

impl Stage {
    fn new(options: DemoOptions) -> Self {
        Self {
            options,
            recorder: Recorder::new(),
            steps: Default::default(),
        }
    }

    /// A transport whose events are narrated, recorded and sent to the sinks asked for.
    fn transport(&self, adjust: impl FnOnce(&mut Config)) -> Result<Transport, String> {
        let narrator = Arc::clone(&self.options.narrator);
        let narrate = Callback(move |event: &Event| {
            if let Some(sentence) = sentence(event) {
                narrator(Line::Event {
                    sentence,
                    event: event.name(),
                });
            }
        });
        let mut config = Config {
            events: self
                .options
                .events
                .clone()
                .with(self.recorder.clone())
                .with(narrate),
            inspect_from_env: self.options.inspect_from_env,
            ..Config::default()
        };
        adjust(&mut config);
        Transport::new(config).map_err(|e| format!("cannot start the transport: {e}"))
    }

    async fn server(&self) -> Result<LocalServer, String> {
        LocalServer::start()
            .await
            .map_err(|e| format!("cannot start the local server: {e}"))
    }

    fn say(&self, text: impl Into<String>) {
        (self.options.narrator)(Line::Story(text.into()));
    }

    /// Announces the next numbered step.
    fn step(&self, text: impl std::fmt::Display) {
        let n = self
            .steps
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.say(format!("Step {n}: {text}"));
    }

    /// Lets the events of the last step be told before the story goes on, and in
    /// `--slow` mode gives the class time to look.
    async fn pause(&self) {
        tokio::time::sleep(Duration::from_millis(30)).await;
        if self.options.slow {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// `GET url`: the response, its body not read.
    async fn send(
        &self,
        transport: &Transport,
        url: &str,
    ) -> Result<http::Response<roundtrip_host::ResponseBody>, String> {
        let request = http::Request::get(url)
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        transport
            .round_trip(request)
            .await
            .map_err(|e| format!("GET {url} failed: {e}"))
    }

    /// `GET url`, body read to its end; returns the status and which connection.
    async fn get(&self, transport: &Transport, url: &str) -> Result<Got, String> {
        let response = self.send(transport, url).await?;
        let status = response.status().as_u16();
        let conn = response.extensions().get::<ConnectionInfo>().copied();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the body of {url} failed: {e}"))?
            .to_bytes();
        Ok(Got {
            status,
            bytes: body.len(),
            conn,
        })
    }

    /// `count` GETs of `url` at the same time, bodies read; the first failure, if any.
    async fn get_at_once(
        &self,
        transport: &Transport,
        url: &str,
        count: usize,
    ) -> Result<(), String> {
        let all = (0..count).map(|_| self.get(transport, url));
        futures::future::join_all(all)
            .await
            .into_iter()
            .try_for_each(|got| got.map(drop))
    }

    /// Shuts the transport down (its idle connections close) and tells it.
    async fn finish(&self, transport: Transport) {
        transport.shutdown().await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    fn events(&self) -> Vec<Event> {
        self.recorder.events()
    }

    fn count(&self, wanted: impl Fn(&EventKind) -> bool) -> usize {
        self.events().iter().filter(|e| wanted(&e.kind)).count()
    }

    fn dials(&self) -> usize {
        self.count(|k| matches!(k, EventKind::DialStart { .. }))
    }

    fn reuses(&self) -> usize {
        self.count(|k| matches!(k, EventKind::GotConn { reused: true, .. }))
    }

    fn closes(&self, reason: CloseReason) -> usize {
        self.count(|k| matches!(k, EventKind::Close { reason: r } if *r == reason))
    }

    /// Waits up to `limit` for an event to be recorded.
    async fn wait_for(&self, limit: Duration, wanted: impl Fn(&EventKind) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.events().iter().any(|e| wanted(&e.kind)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

/// One finished `GET`.
struct Got {
    status: u16,
    bytes: usize,
    conn: Option<ConnectionInfo>,
}

impl Got {
    /// `#3 (reused)` or `#3 (new)`.
    fn connection(&self) -> String {
        match self.conn {
            Some(c) if c.reused => format!("#{} (reused)", c.id),
            Some(c) => format!("#{} (new)", c.id),
            None => "?".to_owned(),
        }
    }
}

/// `Ok` when the story held; otherwise says what was seen instead.
fn expect(held: bool, seen: impl FnOnce() -> String) -> Result<(), String> {
    if held { Ok(()) } else { Err(seen()) }
}
