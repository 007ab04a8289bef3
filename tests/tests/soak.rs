//! Leaks and soak: many requests at high concurrency against a server that closes
//! connections at random. Every request ends (an answer, a transparent retry, or a
//! named error), sockets come back down to the idle cap, and the guest's memory stops
//! growing once it has seen the load (wasm memory never shrinks, so "no leak" means
//! a second round needs no more of it).
//!
//! `cargo test --test soak` runs 2 × 10 000 requests at concurrency 256;
//! `scripts/soak [SECONDS]` runs the long one and prints the figures.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use roundtrip_host::Transport;
use roundtrip_tests::*;
use tokio::io::AsyncWriteExt;

const CONCURRENCY: usize = 256;
const IDLE_CAP: u32 = 64;
/// Descriptors per idle connection in this process: the server's end, and on the
/// client's side the socket plus the duplicate the host keeps to shut it down.
const FDS_PER_IDLE: usize = 3;

/// Open sockets of this process (client and server ends both live here).
fn sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// Answers `ok`; at random closes before answering (2 %), answers with
/// `Connection: close` (2 %), or closes silently right after answering (2 %).
async fn flaky_server() -> RawServer {
    RawServer::start(|index, mut socket| async move {
        let mut state = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        while read_request_head(&mut socket).await.is_some() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let roll = state % 100;
            let answer: &[u8] = match roll {
                0..2 => return,
                2..4 => b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            };
            if socket.write_all(answer).await.is_err() || roll < 6 {
                return;
            }
        }
    })
    .await
}

/// What a round of requests came to.
#[derive(Debug, Default)]
struct Round {
    ok: usize,
    errors: BTreeMap<String, usize>,
}

async fn round(transport: &Transport, url: &str, requests: usize) -> Round {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (transport, url, next) = (transport.clone(), url.to_owned(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut round = Round::default();
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    match get(&transport, &url).await {
                        Ok(fetched) if fetched.body == "ok" => round.ok += 1,
                        Ok(fetched) => panic!("wrong body {:?}", fetched.body),
                        Err(e) => *round.errors.entry(format!("{:?}", e.kind)).or_default() += 1,
                    }
                }
                round
            })
        })
        .collect();
    let mut total = Round::default();
    for worker in workers {
        let round = worker.await.unwrap();
        total.ok += round.ok;
        for (kind, n) in round.errors {
            *total.errors.entry(kind).or_default() += n;
        }
    }
    total
}

async fn soak(requests: usize, rounds: usize) {
    let server = flaky_server().await;
    let (transport, recorder) = transport(|c| {
        c.max_idle_conns_per_host = IDLE_CAP;
        c.events = roundtrip_host::events::Events::new();
    });
    drop(recorder);
    let url = server.url("/");
    // Runtimes made on first use (wasmtime-wasi's own) hold descriptors of their
    // own: count from after a first request, with its connection closed again.
    get(&transport, &url).await.ok();
    transport.close_idle_connections().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let baseline_sockets = sockets();
    let mut memory = Vec::new();
    for number in 1..=rounds {
        let started = Instant::now();
        let round =
            tokio::time::timeout(Duration::from_secs(600), round(&transport, &url, requests))
                .await
                .expect("every request ends");
        let stats = transport.stats().await;
        memory.push(stats.guest_memory);
        let open = sockets().saturating_sub(baseline_sockets);
        println!(
            "round {number}: {requests} requests in {:.1} s: {} ok, errors {:?}; {} dials, {} reuses; \
             sockets open {open}; guest memory {} KiB",
            started.elapsed().as_secs_f64(),
            round.ok,
            round.errors,
            stats.dials,
            stats.reuses,
            stats.guest_memory / 1024
        );
        assert_eq!(round.ok + round.errors.values().sum::<usize>(), requests);
        // Only the failures a closing server can cause, each named.
        for kind in round.errors.keys() {
            assert!(
                ["ResponseIncomplete", "ConnectionTerminated"].contains(&kind.as_str()),
                "unexpected error kind {kind}"
            );
        }
        assert!(
            round.ok * 100 >= requests * 95,
            "too few answers: {round:?}"
        );
        let idle: u32 = stats.keys.iter().map(|k| k.idle).sum();
        assert!(idle <= IDLE_CAP, "{idle} idle");
        // Give the server ends of closed connections a moment to see their EOF.
        let mut open = sockets().saturating_sub(baseline_sockets);
        for _ in 0..100 {
            if open <= FDS_PER_IDLE * IDLE_CAP as usize {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            open = sockets().saturating_sub(baseline_sockets);
        }
        assert!(
            open <= FDS_PER_IDLE * IDLE_CAP as usize,
            "{open} sockets open after round {number}"
        );
    }
    // The guest grew to serve the load once; later rounds need no more.
    let first = memory[0];
    let last = *memory.last().unwrap();
    assert!(
        last <= first + first / 10,
        "guest memory grew from {first} to {last} bytes"
    );
    transport.close_idle_connections().await;
    let mut left = sockets().saturating_sub(baseline_sockets);
    for _ in 0..100 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = sockets().saturating_sub(baseline_sockets);
    }
    println!("after close_idle_connections: {left} sockets beyond the baseline");
    assert_eq!(left, 0, "sockets left after closing the idle connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_at_concurrency_256_end_and_leak_nothing() {
    soak(10_000, 2).await;
}

/// The long soak: `ROUNDTRIP_SOAK_SECS` (default 600) of rounds (`scripts/soak`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with scripts/soak"]
async fn long_soak() {
    let seconds: u64 = std::env::var("ROUNDTRIP_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        rounds += 1;
        println!("-- soak pass {rounds}");
        soak(50_000, 2).await;
    }
}
