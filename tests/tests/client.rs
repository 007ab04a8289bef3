//! The `Client` over the transport (Go's `http.Client`) against nginx: redirects by
//! Go's rules (`return 301…308`), a redirect loop, credentials kept from other hosts,
//! cookies from one response sent with the next, and `Client.Timeout` — each checked
//! in nginx's own log.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use roundtrip_host::{Body, Client, EffectiveUrl, ErrorKind, Jar, RedirectPolicy, ResponseBody};
use roundtrip_tests::*;

/// Everything a test reads back from nginx about a request.
const LOG: &str = "$request_method $uri $content_length \"$http_referer\" \"$http_authorization\" \
                   \"$http_cookie\" \"$http_x_own\"";

const REDIRECTS: &str = "location = /301 { return 301 /target; }
    location = /302 { return 302 /target; }
    location = /303 { return 303 /target; }
    location = /307 { return 307 /target; }
    location = /308 { return 308 /target; }
    location = /chain { return 302 /301; }
    location = /loop { return 302 /loop; }
    location = /target { return 200 \"target\\n\"; }";

fn client(adjust: impl FnOnce(Client) -> Client) -> Client {
    let (transport, _) = transport(|_| {});
    adjust(Client::new(transport))
}

/// Sends `request` through `client` and reads the body, within [`FETCH_LIMIT`].
async fn send(
    client: &Client,
    request: http::Request<Body>,
) -> Result<(http::Response<()>, String), roundtrip_host::Error> {
    bounded(async {
        let (head, body) = client.send(request).await?.into_parts();
        let bytes = body.collect().await?.to_bytes();
        Ok((
            http::Response::from_parts(head, ()),
            String::from_utf8_lossy(&bytes).into_owned(),
        ))
    })
    .await
}

fn post(url: &str, body: Body) -> http::Request<Body> {
    http::Request::post(url)
        .header("content-type", "text/plain")
        .header("x-own", "1")
        .body(body)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_change_or_keep_the_method_and_body_as_go_s_client_does() {
    let nginx = Nginx::start_logging(LOG, REDIRECTS);
    let client = client(|c| c);
    let mut expected = Vec::new();
    for (status, method_after, length_after) in [
        (301, "GET", "-"),
        (302, "GET", "-"),
        (303, "GET", "-"),
        (307, "POST", "5"),
        (308, "POST", "5"),
    ] {
        let url = nginx.url(&format!("/{status}"));
        let (head, body) = send(&client, post(&url, Body::from("hello")))
            .await
            .unwrap();
        assert_eq!((head.status().as_u16(), body.as_str()), (200, "target\n"));
        let effective = &head.extensions().get::<EffectiveUrl>().unwrap().0;
        assert_eq!(effective.as_str(), nginx.url("/target"));
        expected.push(format!("POST /{status} 5 \"-\" \"-\" \"-\" \"1\""));
        // The first request's own headers go on; the Referer names where it came from.
        expected.push(format!(
            "{method_after} /target {length_after} \"{url}\" \"-\" \"-\" \"1\""
        ));
    }
    // A chain: 302 then 301, two hops, GET throughout.
    let (head, _) = send(&client, post(&nginx.url("/chain"), Body::from("hello")))
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    expected.push("POST /chain 5 \"-\" \"-\" \"-\" \"1\"".to_owned());
    expected.push(format!(
        "GET /301 - \"{}\" \"-\" \"-\" \"1\"",
        nginx.url("/chain")
    ));
    expected.push(format!(
        "GET /target - \"{}\" \"-\" \"-\" \"1\"",
        nginx.url("/301")
    ));
    assert_eq!(nginx.log(expected.len()).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_is_not_sent_again_so_its_307_is_the_answer() {
    let nginx = Nginx::start_logging(LOG, REDIRECTS);
    let client = client(|c| c);
    let stream = futures::stream::iter([bytes::Bytes::from("hello")]);
    let request = post(&nginx.url("/307"), Body::from_stream(stream));
    let (head, _) = send(&client, request).await.unwrap();
    assert_eq!(head.status(), 307);
    assert_eq!(
        head.extensions().get::<EffectiveUrl>().unwrap().0.as_str(),
        nginx.url("/307")
    );
    assert_eq!(nginx.log(1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_loop_fails_after_ten_requests_with_a_named_error() {
    let nginx = Nginx::start_logging(LOG, REDIRECTS);
    let client = client(|c| c);
    let error = send(
        &client,
        http::Request::get(nginx.url("/loop"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind, ErrorKind::TooManyRedirects, "{error}");
    assert!(
        error.message.ends_with(": stopped after 10 redirects"),
        "{error}"
    );
    // Go's default policy: ten requests in all, then no more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = nginx.log(10).await;
    assert_eq!(log.len(), 10, "{log:?}");
    assert!(log.iter().all(|line| line.starts_with("GET /loop ")));
    // curl's count instead: up to N redirects followed.
    let curl_like = client.clone().redirects(RedirectPolicy::limit_redirects(3));
    let error = send(
        &curl_like,
        http::Request::get(nginx.url("/loop"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (error.kind, error.message.as_str()),
        (
            ErrorKind::TooManyRedirects,
            "Maximum (3) redirects followed"
        )
    );
    assert_eq!(nginx.log(14).await.len(), 14);
    // No policy: the redirect is the answer.
    let none = client.redirects(RedirectPolicy::none());
    let (head, _) = send(
        &none,
        http::Request::get(nginx.url("/loop"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(head.status(), 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_and_cookies_are_not_sent_to_another_host() {
    let log = format!("{LOG} $http_host");
    let second = Nginx::start_logging(&log, "location / { return 200 \"second\\n\"; }");
    // The same server by another name is another host; a path on it is not.
    let first = Nginx::start_logging(
        &log,
        &format!(
            "absolute_redirect off;
    location = /away {{ return 302 http://localhost:{}/landing; }}
    location = /near {{ return 302 /landing; }}
    location = /landing {{ return 200 \"first\\n\"; }}",
            second.port
        ),
    );
    let client = client(|c| c);
    for path in ["/away", "/near"] {
        let request = http::Request::get(first.url(path))
            .header("authorization", "Basic c2VjcmV0")
            .header("cookie", "own=1")
            .header("x-own", "1")
            // A virtual host of the caller's: kept for a relative Location only.
            .header("host", "first.test")
            .body(Body::empty())
            .unwrap();
        let (head, _) = send(&client, request).await.unwrap();
        assert_eq!(head.status(), 200);
    }
    let sent = "\"Basic c2VjcmV0\" \"own=1\" \"1\" first.test";
    assert_eq!(
        first.log(3).await,
        [
            format!("GET /away - \"-\" {sent}"),
            format!("GET /near - \"-\" {sent}"),
            format!("GET /landing - \"{}\" {sent}", first.url("/near")),
        ]
    );
    assert_eq!(
        second.log(1).await,
        [format!(
            "GET /landing - \"{}\" \"-\" \"-\" \"1\" localhost:{}",
            first.url("/away"),
            second.port
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_set_by_one_response_are_sent_by_the_next() {
    let nginx = Nginx::start_logging(
        LOG,
        "location = /login { add_header Set-Cookie \"sid=abc123; Path=/\"; return 302 /home; }
    location = /home { add_header Set-Cookie \"seen=1; Path=/home\"; return 200 \"home\\n\"; }
    location = /logout { add_header Set-Cookie \"sid=; Max-Age=0; Path=/\"; return 200; }
    location / { return 200; }",
    );
    let jar = Arc::new(Jar::new());
    let client = client(|c| c.cookie_jar(Arc::clone(&jar)));
    let get = |path: &str| {
        http::Request::get(nginx.url(path))
            .body(Body::empty())
            .unwrap()
    };
    let (_, body) = send(&client, get("/login")).await.unwrap();
    assert_eq!(body, "home\n");
    send(&client, get("/home")).await.unwrap();
    send(&client, get("/other")).await.unwrap();
    send(&client, get("/logout")).await.unwrap();
    send(&client, get("/other")).await.unwrap();
    let cookies: Vec<String> = nginx
        .log(6)
        .await
        .iter()
        .map(|line| {
            // The path, and the cookies sent, in a fixed order.
            let mut pairs: Vec<&str> = line.split('"').nth(5).unwrap().split("; ").collect();
            pairs.sort_unstable();
            format!("{} {}", line.split(' ').nth(1).unwrap(), pairs.join("; "))
        })
        .collect();
    assert_eq!(
        cookies,
        [
            "/login -",
            // Set by the redirect, sent with the hop it leads to.
            "/home sid=abc123",
            "/home seen=1; sid=abc123",
            "/other sid=abc123",
            "/logout sid=abc123",
            // Expired by the server: gone.
            "/other -",
        ]
    );
}

/// `work`, failing the test if it takes longer than [`FETCH_LIMIT`]: the client's own
/// timeout is what is under test, so the test does not trust it to end.
async fn bounded<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(FETCH_LIMIT, work)
        .await
        .expect("no answer within FETCH_LIMIT")
}

/// A response whose body nginx sends at 1 KiB/s: 64 KiB takes a minute.
fn slow_nginx() -> Nginx {
    let nginx = Nginx::start("location / { limit_rate 1k; }");
    std::fs::write(nginx.root().join("slow"), vec![b'x'; 64 << 10]).unwrap();
    nginx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_timeout_covers_the_body_and_the_wait_for_headers() {
    let nginx = slow_nginx();
    let client = client(|c| c.timeout(Duration::from_millis(800)));
    let started = Instant::now();
    // The head comes at once; the body is cut off when the time is up.
    let response = bounded(
        client.send(
            http::Request::get(nginx.url("/slow"))
                .body(Body::empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let body: ResponseBody = response.into_body();
    let error = bounded(body.collect()).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(error.message.contains("while reading body"), "{error}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // A server that never answers: the wait for the head is cut off.
    let silent = RawServer::start(|_, socket| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    })
    .await;
    let started = Instant::now();
    let error = bounded(
        client.send(
            http::Request::get(silent.url("/"))
                .body(Body::empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Timeout, "{error}");
    assert!(error.message.contains("awaiting headers"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The transport under a Client is an ordinary one: its pool serves every hop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hop_of_a_chain_reuses_one_connection() {
    let nginx = Nginx::start_counting(REDIRECTS);
    let (transport, _) = transport(|_| {});
    let client = Client::new(transport);
    let (head, _) = send(
        &client,
        http::Request::get(nginx.url("/chain"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(nginx.logged(3).await, (1, 3));
}

/// A server cannot lead the client into local files, even a granted directory's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_into_local_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "local\n").unwrap();
    let nginx = Nginx::start_logging(
        LOG,
        &format!(
            "location = /local {{ return 302 file://{}/secret; }}",
            dir.path().display()
        ),
    );
    let (transport, _) = transport(|c| c.allow_dirs = vec![dir.path().to_owned()]);
    let client = Client::new(transport);
    let request = http::Request::get(nginx.url("/local"))
        .body(Body::empty())
        .unwrap();
    let error = send(&client, request).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::UriInvalid, "{error}");
    assert!(
        error.message.contains("http:// and https:// only"),
        "{error}"
    );
    // Following none, the redirect is only an answer.
    let none = client.redirects(RedirectPolicy::none());
    let request = http::Request::get(nginx.url("/local"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&none, request).await.unwrap().0.status(), 302);
}
