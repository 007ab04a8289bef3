//! Time from `wasi:clocks`, the only place the driver reads it.

use std::future::Future;
use std::pin::pin;

use futures::future::{Either, select};

use super::bindings::wasi::clocks::monotonic_clock;

/// Nanoseconds on the host's monotonic clock.
pub fn now_ns() -> u64 {
    monotonic_clock::now()
}

/// Runs `work`, giving up after `limit` nanoseconds (`None` = no limit).
/// Dropping the losing future cancels any stream read it had in progress.
pub async fn within<T>(limit: Option<u64>, work: impl Future<Output = T>) -> Option<T> {
    let Some(limit) = limit else {
        return Some(work.await);
    };
    let work = pin!(work);
    let timer = pin!(monotonic_clock::wait_for(limit));
    match select(work, timer).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

/// Sleeps until the monotonic clock reads `deadline_ns`.
pub async fn sleep_until(deadline_ns: u64) {
    monotonic_clock::wait_until(deadline_ns).await;
}

/// A duration in nanoseconds as a person writes it: `250ms`, `1.5s`.
pub fn display(ns: u64) -> String {
    let ms = ns / 1_000_000;
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{:.1}s", ms as f64 / 1_000.0)
    }
}
