//! `roundtrip proxy --metrics`: the transport's Prometheus metrics, scraped by a real
//! Prometheus (Debian's `prometheus`, started on a free port) and read back through
//! its HTTP API. Real apps of known behaviour go through the proxy to nginx with
//! keep-alive: urllib opens a connection per request, curl keeps one for two URLs,
//! while the pool upstream dials once — both sides must be told apart in the series.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use roundtrip_host::Transport;
use roundtrip_host::metrics::Metrics;
use roundtrip_proxy::{ForwardProxy, MetricsServer, ProxyOptions};
use roundtrip_tests::{Daemon, Nginx, get, run_app, transport};

const PYTHON: &str = "/usr/bin/python3";

/// One series of a Prometheus instant query: its labels and value.
type Series = Vec<(BTreeMap<String, String>, f64)>;

/// An instant query; `Err` while Prometheus is still starting (503).
async fn query(client: &Transport, prometheus: u16, promql: &str) -> Result<Series, String> {
    let url = format!(
        "http://127.0.0.1:{prometheus}/api/v1/query?query={}",
        promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    );
    let answer = get(client, &url).await.unwrap();
    let text = String::from_utf8_lossy(&answer.body);
    if answer.status == 503 {
        return Err(text.into_owned());
    }
    assert_eq!(answer.status, 200, "{text}");
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    Ok(json["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| {
            let labels = series["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            let value = series["value"][1].as_str().unwrap().parse().unwrap();
            (labels, value)
        })
        .collect())
}

/// The value of the one series `promql` selects, once Prometheus has it.
async fn value(client: &Transport, prometheus: u16, promql: &str) -> f64 {
    let series = query(client, prometheus, promql).await.unwrap();
    assert_eq!(series.len(), 1, "{promql}: {series:?}");
    series[0].1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_pool_and_the_apps_apart() {
    let nginx = Nginx::start("");
    let metrics = Metrics::new();
    let (pool, _recorder) = transport(|config| {
        config.events = config.events.clone().with(metrics.clone());
    });
    let proxy = ForwardProxy::start("127.0.0.1:0", pool, ProxyOptions::default())
        .await
        .unwrap();
    let scrape = MetricsServer::start("127.0.0.1:0", metrics.clone())
        .await
        .unwrap();
    let url = nginx.url("/small");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/lessons/fetch_five.py");
    run_app(&proxy, PYTHON, &[script, "urllib", &url]).await;
    run_app(
        &proxy,
        "curl",
        &["-sS", "-o", "/dev/null", &url, "-o", "/dev/null", &url],
    )
    .await;

    // The scrape target answers as Prometheus expects, and only at /metrics.
    let (client, _) = transport(|_| {});
    let page = get(&client, &scrape.url()).await.unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], Metrics::CONTENT_TYPE);
    assert!(page.body.ends_with(b"# EOF\n"));
    let elsewhere = scrape.url().replace("/metrics", "/");
    assert_eq!(get(&client, &elsewhere).await.unwrap().status, 404);

    let prometheus = Daemon::start("prometheus", |port, dir| {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: roundtrip\n    \
                 static_configs:\n      - targets: ['{}']\n",
                scrape.addr()
            ),
        )
        .unwrap();
        vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ]
    });
    // Wait for a scrape that saw the apps closed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let open = query(&client, prometheus.port, "roundtrip_app_open_connections").await;
        if let Ok(open) = &open
            && open.len() == 2
            && open.iter().all(|(_, v)| *v == 0.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "never scraped: {open:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let p = prometheus.port;
    let key = format!("key=\"{}\"", nginx.url("").trim_end_matches('/'));
    // The pool: one dial for seven requests, six reuses, that connection idle now.
    assert_eq!(
        value(&client, p, &format!("roundtrip_dials_total{{{key}}}")).await,
        1.0
    );
    assert_eq!(
        value(&client, p, &format!("roundtrip_requests_total{{{key}}}")).await,
        7.0
    );
    assert_eq!(
        value(&client, p, &format!("roundtrip_reuses_total{{{key}}}")).await,
        6.0
    );
    let idle = format!("roundtrip_connections{{{key},state=\"idle\"}}");
    assert_eq!(value(&client, p, &idle).await, 1.0);
    let in_use = format!("roundtrip_connections{{{key},state=\"in_use\"}}");
    assert_eq!(value(&client, p, &in_use).await, 0.0);
    let latencies = format!("roundtrip_request_duration_seconds_count{{{key}}}");
    assert_eq!(value(&client, p, &latencies).await, 7.0);
    // Every request took under a second (the bucket is cumulative).
    let fast = format!("roundtrip_request_duration_seconds_bucket{{{key},le=\"1.6384\"}}");
    assert_eq!(value(&client, p, &fast).await, 7.0);
    // The apps: urllib five connections for five requests, curl one for two.
    let app = |metric: &str, program: &str| format!("{metric}{{program=\"{program}\"}}");
    for (program, connections, requests, reused) in
        [("python3", 5.0, 5.0, 0.0), ("curl", 1.0, 2.0, 1.0)]
    {
        let opened = value(&client, p, &app("roundtrip_app_connections_total", program)).await;
        assert_eq!(opened, connections, "{program}");
        let sent = value(&client, p, &app("roundtrip_app_requests_total", program)).await;
        assert_eq!(sent, requests, "{program}");
        let again = value(
            &client,
            p,
            &app("roundtrip_app_reused_requests_total", program),
        )
        .await;
        assert_eq!(again, reused, "{program}");
    }
    drop(prometheus);
}
