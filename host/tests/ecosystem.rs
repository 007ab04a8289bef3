//! The library as Rust users meet it: `Transport` under tower middleware, and its
//! lifecycle events in an app's own `tracing` subscriber.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use roundtrip_host::events::{Events, Tracing};
use roundtrip_host::{Config, ConnectionInfo, Transport};
use roundtrip_servers::LocalServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{ServiceBuilder, ServiceExt};
use tracing_subscriber::layer::SubscriberExt;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn tower_middleware_stacks_on_the_transport_and_shares_its_pool() {
    runtime().block_on(async {
        let server = LocalServer::start().await.unwrap();
        let transport = Transport::new(Config::default()).unwrap();
        let mut client = ServiceBuilder::new()
            .timeout(Duration::from_millis(500))
            .service(transport.clone());

        // Any http_body::Body goes in: a String, then `Full<Bytes>`.
        let echoed = (&mut client)
            .oneshot(
                http::Request::post(server.url("/echo"))
                    .body(String::from("hello"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(echoed.status(), 200);
        let first = *echoed.extensions().get::<ConnectionInfo>().unwrap();
        let bytes = echoed.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello");

        let small = (&mut client)
            .oneshot(
                http::Request::get(server.url("/small"))
                    .body(Full::new(bytes::Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let second = *small.extensions().get::<ConnectionInfo>().unwrap();
        let bytes = small.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"hello, world\n");
        assert!(!first.reused);
        assert!(
            second.reused,
            "the second request went through the same pool"
        );
        assert_eq!(second.id, first.id);
        assert_eq!(server.connections(), 1);

        // tower's timeout is the middleware's error, not the transport's.
        let late = (&mut client)
            .oneshot(
                http::Request::get(server.url("/delay/3000"))
                    .body(String::new())
                    .unwrap(),
            )
            .await
            .unwrap_err();
        assert!(
            late.is::<tower::timeout::error::Elapsed>(),
            "expected tower's Elapsed, got {late}"
        );

        // After a shutdown the service says so when asked whether it is ready.
        transport.shutdown().await;
        let mut bare = transport.clone();
        let refused = ServiceExt::<http::Request<String>>::ready(&mut bare)
            .await
            .err()
            .expect("a shut-down transport is not ready");
        assert_eq!(refused.kind, roundtrip_host::ErrorKind::Shutdown);
    });
}

/// What a server saw of one request: its head and body, read off a real socket.
async fn one_request_head(
    body: impl http_body::Body<Data = bytes::Bytes, Error = std::convert::Infallible> + Send + 'static,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.ends_with(b"\r\n\r\nhello") && !seen.ends_with(b"0\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        socket
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8_lossy(&seen).to_ascii_lowercase()
    });
    let transport = Transport::new(Config::default()).unwrap();
    let request = http::Request::post(format!("http://{addr}/"))
        .body(body)
        .unwrap();
    let response = transport.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 204);
    server.await.unwrap()
}

#[test]
fn a_body_whose_bytes_are_all_there_is_sent_with_its_length_and_a_stream_chunked() {
    runtime().block_on(async {
        let whole = one_request_head(Full::new(bytes::Bytes::from_static(b"hello"))).await;
        assert!(whole.contains("content-length: 5\r\n"), "{whole}");
        assert!(!whole.contains("transfer-encoding"), "{whole}");

        let stream = http_body_util::StreamBody::new(futures_stream());
        let chunked = one_request_head(stream).await;
        assert!(
            chunked.contains("transfer-encoding: chunked\r\n"),
            "{chunked}"
        );
        assert!(chunked.contains("\r\n5\r\nhello\r\n0\r\n\r\n"), "{chunked}");
    });
}

fn futures_stream()
-> impl futures::Stream<Item = Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>> {
    futures::stream::iter([Ok(http_body::Frame::data(bytes::Bytes::from_static(
        b"hello",
    )))])
}

/// One tracing event as a subscriber's layer saw it.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    level: tracing::Level,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Seen {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            fields,
        });
    }
}

/// The app's subscriber, installed once for this test binary, as an app does.
fn app_subscriber() -> Arc<Mutex<Vec<Seen>>> {
    static SEEN: OnceLock<Arc<Mutex<Vec<Seen>>>> = OnceLock::new();
    SEEN.get_or_init(|| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        // The app wants connections, not every request step (README's `RUST_LOG`).
        let filter = tracing_subscriber::EnvFilter::new("roundtrip::conn=debug");
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::Layer::with_filter(Capture(Arc::clone(&seen)), filter),
        );
        tracing::subscriber::set_global_default(subscriber).unwrap();
        seen
    })
    .clone()
}

#[test]
fn an_apps_tracing_subscriber_sees_dials_reuses_and_closes() {
    let seen = app_subscriber();
    runtime().block_on(async {
        let server = LocalServer::start().await.unwrap();
        let config = Config {
            events: Events::new().with(Tracing),
            ..Config::default()
        };
        let transport = Transport::new(config).unwrap();
        for _ in 0..2 {
            let response = transport
                .round_trip(
                    http::Request::get(server.url("/small"))
                        .body(Default::default())
                        .unwrap(),
                )
                .await
                .unwrap();
            response.into_body().collect().await.unwrap();
        }
        transport.close_idle_connections().await;
        assert_eq!(server.connections(), 1);
    });
    let seen = seen.lock().unwrap().clone();
    let named = |name: &str| -> Vec<&Seen> {
        seen.iter()
            .filter(|s| s.fields.get("message").map(String::as_str) == Some(name))
            .collect()
    };
    assert_eq!(named("dial_start").len(), 1, "{seen:#?}");
    let got: Vec<_> = named("got_conn")
        .iter()
        .map(|s| s.fields.get("reused").cloned().unwrap_or_default())
        .collect();
    assert_eq!(got, ["false", "true"]);
    let close = named("close");
    assert_eq!(close.len(), 1, "{seen:#?}");
    assert_eq!(close[0].fields["reason"], "close_idle_connections");
    assert_eq!(close[0].level, tracing::Level::DEBUG);
    assert_eq!(
        close[0].fields["conn"],
        named("dial_start")[0].fields["conn"]
    );
    assert!(close[0].fields["key"].starts_with("http://127.0.0.1:"));
    // Every event is the connection target's: the filter kept the request steps out.
    assert!(
        seen.iter().all(|s| s.target == "roundtrip::conn"),
        "{seen:#?}"
    );
    assert!(named("get_conn").is_empty() && named("body_eof").is_empty());
}
