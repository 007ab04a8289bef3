//! Guest tasks, and what they cost: every spawn goes through [`spawn`], every export
//! call's future through [`export`], so that, with `config.count-crossings`, the
//! transport can report task spawns and inter-task wake-ups (`observe.count`; the
//! crossing budget, `docs/performance.md`).
//!
//! Theory of operation. Each export call (`round-trip`, `release`) is a component-model
//! task; a future spawned with `spawn_local` joins the task that spawned it (a
//! connection's reader and writer live in the task of the request that dialled it). A
//! waker of a task that is asleep, woken from code of another task, costs a write to
//! the sleeper's wake-up stream and a turn of its event loop (wit-bindgen's
//! `inter-task-wakeup`). To count those, each counted future runs with its task as the
//! current one and with a waker that, on a wake from another task, counts once until
//! the woken task runs again.
//!
//! Off (the default), [`spawn`] and [`export`] add one flag check and, after each
//! turn, a look at the connections it pooled (`conn::watch_pooled`).

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use super::bindings::roundtrip::transport::observe::{self, GuestCrossing};

thread_local! {
    /// Whether any transport of this instance was asked to count.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// The component-model task whose code runs now, if it is one of ours.
    static RUNNING: RefCell<Option<Arc<Task>>> = const { RefCell::new(None) };
    /// Allocations (and reallocations) made up to the last report.
    static REPORTED: Cell<usize> = const { Cell::new(0) };
}

/// Turns counting on for this instance (`config.count-crossings`).
pub fn count_crossings() {
    COUNTING.with(|c| c.set(true));
}

/// Reports the allocations (and reallocations) made since the last report.
fn report_allocations() {
    if !counting() {
        return;
    }
    let stats = crate::ALLOCATOR.stats();
    let made = stats.allocations + stats.reallocations;
    let new = made - REPORTED.with(|r| r.replace(made));
    if new > 0 {
        observe::count(
            GuestCrossing::Allocation,
            u32::try_from(new).unwrap_or(u32::MAX),
        );
    }
}

fn counting() -> bool {
    COUNTING.with(Cell::get)
}

/// Spawns `future` on the current component-model task (`wit_bindgen::spawn_local`).
pub fn spawn(future: impl Future<Output = ()> + 'static) {
    if !counting() {
        wit_bindgen::spawn_local(turns(future));
        return;
    }
    observe::count(GuestCrossing::TaskSpawn, 1);
    let task = RUNNING.with(|r| r.borrow().clone()).unwrap_or_default();
    wit_bindgen::spawn_local(turns(Counted {
        task,
        future: Box::pin(future),
    }));
}

/// Runs an export call's future as the component-model task it is.
pub async fn export<T>(future: impl Future<Output = T>) -> T {
    if !counting() {
        return turns(future).await;
    }
    turns(Counted {
        task: Arc::default(),
        future: Box::pin(future),
    })
    .await
}

/// Runs `future`, each of its turns ended by a look at the connections it pooled: those
/// still idle are watched (`conn::watch_pooled`).
async fn turns<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        super::conn::watch_pooled();
        report_allocations();
        poll
    })
    .await
}

/// One component-model task; `woken` says a wake from another task is already on
/// its way to it.
#[derive(Default)]
struct Task {
    woken: AtomicBool,
}

/// A future that runs as `task`, with a waker that counts wakes from other tasks.
struct Counted<F> {
    task: Arc<Task>,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let task = Arc::clone(&self.task);
        task.woken.store(false, Ordering::Relaxed);
        let waker = Waker::from(Arc::new(CountingWaker {
            inner: cx.waker().clone(),
            task: Arc::clone(&task),
        }));
        let outer = RUNNING.with(|r| r.replace(Some(task)));
        let poll = self.future.as_mut().poll(&mut Context::from_waker(&waker));
        RUNNING.with(|r| *r.borrow_mut() = outer);
        poll
    }
}

/// Wakes the task it was made for, counting a wake from another task once until
/// that task runs again.
struct CountingWaker {
    inner: Waker,
    task: Arc<Task>,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let from_another = RUNNING.with(|r| {
            r.borrow()
                .as_ref()
                .is_some_and(|running| !Arc::ptr_eq(running, &self.task))
        });
        if from_another && !self.task.woken.swap(true, Ordering::Relaxed) {
            observe::count(GuestCrossing::InterTaskWakeup, 1);
        }
        self.inner.wake_by_ref();
    }
}
