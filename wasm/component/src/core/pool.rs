//! The connection pool as a state machine, with time passed in and decisions polled out.
//!
//! Theory of operation. Per pool key the pool keeps three explicit things (as
//! hyper-util does): the **idle** list (LIFO: the most recently used connection is
//! reused first, so the oldest age out, as in Go's `idleConn`), the count of connections
//! **dialing** and **active**, and the FIFO queue of **waiters** (requests with no
//! connection yet).
//!
//! ```text
//!  checkout ──► idle? ── yes ──► Checkout::Idle (active)
//!                 │ no
//!                 ▼
//!            waiter queued ── a dial under way that no waiter needs? ── yes ──► waits for it
//!                 │                                                              (wait_for_conn)
//!                 ├── under max-conns-per-key? ── yes ──► Action::Dial
//!                 │                              no ──► waits (wait_for_conn)
//!                 ▼
//!   a connection is offered (a dial finished, or a body reached EOF)
//!       ├─ first waiter of the key ──► Action::Hand   (socket late binding: whichever
//!       │                                               connection is ready first)
//!       ├─ idle list has room ──────► Action::Idled   (+ Action::Close for LRU eviction)
//!       └─ otherwise ───────────────► Action::Refused (the driver closes it)
//!   capacity freed (close, failed dial, eviction) ──► next blocked waiter: Action::Dial
//! ```
//!
//! The pool owns idle connections (the driver's handle type `C`) and only counts dialing
//! and active ones. It performs no I/O: every method records what must happen as
//! [`Action`]s, which the driver takes with [`Pool::poll_action`] and carries out, so no
//! path can forget to close a connection or to wake a waiter.

use std::collections::{HashMap, VecDeque};

use super::Micros;

/// The pool's knobs (a subset of the transport config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Global idle cap across keys; 0 = no limit (Go `MaxIdleConns`).
    pub max_idle: usize,
    /// Idle cap per key; 0 keeps none (Go `MaxIdleConnsPerHost`).
    pub max_idle_per_key: usize,
    /// Connections per key, dialing + active + idle; 0 = no limit (Go `MaxConnsPerHost`).
    pub max_conns_per_key: usize,
    /// How long a connection may stay idle; `None` = forever (Go `IdleConnTimeout`).
    pub idle_timeout: Option<Micros>,
}

/// A queued request's place in line.
pub type Ticket = u64;

/// Why the pool let go of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The server closed it (or wrote to it unasked) while it was idle.
    PeerGone,
    IdleTimeout,
    MaxIdle,
    MaxIdlePerKey,
    CloseIdleConnections,
}

/// A connection leaving the pool, to be closed by the driver.
#[derive(Debug)]
pub struct Evicted<C> {
    pub id: u64,
    pub key: String,
    pub conn: C,
    pub reason: Release,
}

/// A connection taken from the idle list.
#[derive(Debug)]
pub struct Reused<C> {
    pub id: u64,
    pub conn: C,
    pub idle_for: Micros,
}

/// What a request gets from [`Pool::checkout`].
#[derive(Debug)]
pub enum Checkout<C> {
    /// An idle connection, now active.
    Idle(Reused<C>),
    /// None is idle: the request waits with this ticket for [`Action::Hand`].
    Waiting { ticket: Ticket, wait: Wait },
}

/// What a request with no idle connection waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A dial started for it ([`Action::Dial`]), or any connection freed first.
    Dial,
    /// A dial already under way that no waiting request needs (its request was
    /// served by a connection freed first, or gave up): no second one is started
    /// while it lasts. Chromium's rule for socket late binding: dials in progress
    /// never outnumber the requests waiting, so connections never outnumber the
    /// requests at once.
    SpareDial,
    /// The key is at `max_conns_per_key`.
    AtCap,
}

/// Where an offered connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A dial finished.
    Dial,
    /// An active connection's response was read to its end.
    Active,
}

/// What the driver must do, in order.
#[derive(Debug)]
pub enum Action<C> {
    /// Dial a connection for `key` on behalf of the waiter `ticket`.
    Dial { key: String, ticket: Ticket },
    /// Give the waiter `ticket` this connection, now active. `idle_for` is set when it
    /// came from the idle list.
    Hand {
        ticket: Ticket,
        key: String,
        id: u64,
        conn: C,
        idle_for: Option<Micros>,
    },
    /// The offered connection `id` joined the idle list.
    Idled { key: String, id: u64 },
    /// The offered connection was not kept, for `reason`: close it.
    Refused(Evicted<C>),
    /// An idle connection leaves the pool: close it.
    Close(Evicted<C>),
}

#[derive(Debug)]
struct IdleConn<C> {
    id: u64,
    conn: C,
    since: Micros,
    /// Global put order, for least-recently-used eviction across keys.
    order: u64,
}

#[derive(Debug, Clone, Copy)]
struct Waiter {
    ticket: Ticket,
    /// A dial was started for this waiter (it may still be handed another connection).
    dial_started: bool,
}

/// Per-key counts, as `stats` reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyCounts {
    pub idle: usize,
    pub active: usize,
    pub dialing: usize,
    pub waiting: usize,
}

#[derive(Debug)]
struct KeyState<C> {
    /// Oldest first; reuse pops from the back.
    idle: Vec<IdleConn<C>>,
    active: usize,
    dialing: usize,
    waiters: VecDeque<Waiter>,
}

impl<C> Default for KeyState<C> {
    fn default() -> Self {
        Self {
            idle: Vec::new(),
            active: 0,
            dialing: 0,
            waiters: VecDeque::new(),
        }
    }
}

impl<C> KeyState<C> {
    fn is_empty(&self) -> bool {
        self.idle.is_empty() && self.active == 0 && self.dialing == 0 && self.waiters.is_empty()
    }

    /// Connections that count against `max_conns_per_key`.
    fn open(&self) -> usize {
        self.idle.len() + self.active + self.dialing
    }
}

/// The pool. `C` is whatever the driver uses to hold an open connection.
#[derive(Debug)]
pub struct Pool<C> {
    config: PoolConfig,
    keys: HashMap<String, KeyState<C>>,
    actions: VecDeque<Action<C>>,
    idle_total: usize,
    next_order: u64,
    next_ticket: Ticket,
    /// Set by `drain_idle` until the next checkout: a dial that finishes with nobody
    /// waiting is closed instead of pooled (Go's `closeIdle`).
    refuse_unwanted: bool,
    dials: u64,
    reuses: u64,
}

impl<C> Pool<C> {
    pub fn new(config: PoolConfig) -> Self {
        Self {
            config,
            keys: HashMap::new(),
            actions: VecDeque::new(),
            idle_total: 0,
            next_order: 0,
            next_ticket: 0,
            refuse_unwanted: false,
            dials: 0,
            reuses: 0,
        }
    }

    /// The next thing the driver must do, if any.
    pub fn poll_action(&mut self) -> Option<Action<C>> {
        self.actions.pop_front()
    }

    /// A request asks for a connection to `key`. Idle connections that timed out by
    /// `now` are closed first, so one is never handed out.
    pub fn checkout(&mut self, key: &str, now: Micros) -> Checkout<C> {
        self.checkout_live(key, now, |_| true)
    }

    /// [`checkout`](Self::checkout), skipping idle connections `alive` finds dead (the
    /// server closed them since they were pooled): those are closed
    /// ([`Release::PeerGone`]).
    pub fn checkout_live(
        &mut self,
        key: &str,
        now: Micros,
        mut alive: impl FnMut(&C) -> bool,
    ) -> Checkout<C> {
        self.refuse_unwanted = false;
        self.expire(now);
        let state = self.keys.entry(key.to_owned()).or_default();
        let mut dead = Vec::new();
        let found = loop {
            match state.idle.pop() {
                Some(idle) if !alive(&idle.conn) => dead.push(idle),
                found => break found,
            }
        };
        self.evict(key, dead, Release::PeerGone);
        let state = self.keys.entry(key.to_owned()).or_default();
        if let Some(idle) = found {
            state.active += 1;
            self.idle_total -= 1;
            self.reuses += 1;
            return Checkout::Idle(Reused {
                id: idle.id,
                conn: idle.conn,
                idle_for: now.saturating_sub(idle.since),
            });
        }
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let cap = self.config.max_conns_per_key;
        let wait = if state.dialing > state.waiters.len() {
            Wait::SpareDial
        } else if cap == 0 || state.open() < cap {
            Wait::Dial
        } else {
            Wait::AtCap
        };
        let dialing = wait == Wait::Dial;
        state.waiters.push_back(Waiter {
            ticket,
            dial_started: dialing,
        });
        if dialing {
            state.dialing += 1;
            self.dials += 1;
            self.actions.push_back(Action::Dial {
                key: key.to_owned(),
                ticket,
            });
        }
        Checkout::Waiting { ticket, wait }
    }

    /// The waiter `ticket` gave up (its request was dropped): it leaves the queue at once.
    /// A dial started for it goes on; its connection will serve the next waiter or idle.
    pub fn cancel(&mut self, key: &str, ticket: Ticket) {
        if let Some(state) = self.keys.get_mut(key) {
            state.waiters.retain(|w| w.ticket != ticket);
        }
        self.forget_if_empty(key);
    }

    /// Offers a connection: a finished dial, or an active one whose response was read to
    /// its end. It goes to the first waiter, else to the idle list, else it is refused.
    pub fn offer(&mut self, key: &str, id: u64, conn: C, from: Source, now: Micros) {
        let refuse_unwanted = self.refuse_unwanted;
        let max_per_key = self.config.max_idle_per_key;
        let state = self.keys.entry(key.to_owned()).or_default();
        match from {
            Source::Dial => state.dialing = state.dialing.saturating_sub(1),
            Source::Active => state.active = state.active.saturating_sub(1),
        }
        if let Some(waiter) = state.waiters.pop_front() {
            state.active += 1;
            if from == Source::Active {
                self.reuses += 1;
            }
            self.actions.push_back(Action::Hand {
                ticket: waiter.ticket,
                key: key.to_owned(),
                id,
                conn,
                idle_for: None,
            });
            return;
        }
        let refused = if from == Source::Dial && refuse_unwanted {
            Some(Release::CloseIdleConnections)
        } else if state.idle.len() >= max_per_key {
            Some(Release::MaxIdlePerKey)
        } else {
            None
        };
        if let Some(reason) = refused {
            self.actions.push_back(Action::Refused(Evicted {
                id,
                key: key.to_owned(),
                conn,
                reason,
            }));
            self.capacity_freed(key);
            return;
        }
        state.idle.push(IdleConn {
            id,
            conn,
            since: now,
            order: self.next_order,
        });
        self.next_order += 1;
        self.idle_total += 1;
        self.actions.push_back(Action::Idled {
            key: key.to_owned(),
            id,
        });
        while self.config.max_idle > 0 && self.idle_total > self.config.max_idle {
            match self.pop_least_recent() {
                Some(oldest) => {
                    let key = oldest.key.clone();
                    self.actions.push_back(Action::Close(oldest));
                    self.capacity_freed(&key);
                }
                None => break,
            }
        }
    }

    /// The dial started for `ticket` failed. Returns whether that waiter still waits:
    /// then it is removed and should fail with the dial's error (as in Go, the request
    /// that dialled gets its error; one served meanwhile never sees it).
    pub fn dial_failed(&mut self, key: &str, ticket: Ticket) -> bool {
        let waited = self.keys.get_mut(key).is_some_and(|state| {
            let before = state.waiters.len();
            state.waiters.retain(|w| w.ticket != ticket);
            state.waiters.len() < before
        });
        self.abandoned_dial(key);
        waited
    }

    /// A dial for `key` ended without a connection for the pool (it failed, or the
    /// transport shut down meanwhile): its place frees up.
    pub fn abandoned_dial(&mut self, key: &str) {
        if let Some(state) = self.keys.get_mut(key) {
            state.dialing = state.dialing.saturating_sub(1);
        }
        self.capacity_freed(key);
    }

    /// A dial of `key` gave a multiplexed (HTTP/2) connection: it counts as active from
    /// now on (against `max_conns_per_key`, until [`Pool::closed_active`]) and is never
    /// offered back; every request waiting for the key is served by it, so all of them
    /// leave the line. Their tickets are returned; dials started for them go on (the
    /// driver closes what they bring if the shared connection suffices).
    pub fn became_shared(&mut self, key: &str) -> Vec<Ticket> {
        let state = self.keys.entry(key.to_owned()).or_default();
        state.dialing = state.dialing.saturating_sub(1);
        state.active += 1;
        let tickets = state.waiters.drain(..).map(|w| w.ticket).collect();
        self.forget_if_empty(key);
        tickets
    }

    /// The requests of `key` waiting because it is at `max_conns_per_key`, with no dial
    /// of their own: a multiplexed connection of the key has room for them now. They
    /// leave the line; their tickets are returned.
    pub fn take_blocked_waiters(&mut self, key: &str) -> Vec<Ticket> {
        let Some(state) = self.keys.get_mut(key) else {
            return Vec::new();
        };
        let (blocked, kept): (VecDeque<_>, VecDeque<_>) =
            state.waiters.drain(..).partition(|w| !w.dial_started);
        state.waiters = kept;
        self.forget_if_empty(key);
        blocked.into_iter().map(|w| w.ticket).collect()
    }

    /// Whether a dial of `key` is under way.
    pub fn is_dialing(&self, key: &str) -> bool {
        self.keys.get(key).is_some_and(|s| s.dialing > 0)
    }

    /// An active connection was closed by the driver instead of being offered back.
    pub fn closed_active(&mut self, key: &str) {
        if let Some(state) = self.keys.get_mut(key) {
            state.active = state.active.saturating_sub(1);
        }
        self.capacity_freed(key);
    }

    /// A connection or a dial of `key` went away: the first waiters with no dial
    /// of their own (blocked by `max_conns_per_key`, or counting on a spare dial that
    /// failed) may dial now, as long as dials do not outnumber waiters.
    fn capacity_freed(&mut self, key: &str) {
        let cap = self.config.max_conns_per_key;
        if let Some(state) = self.keys.get_mut(key) {
            let mut open = state.open();
            let waiting = state.waiters.len();
            for waiter in state.waiters.iter_mut() {
                if (cap != 0 && open >= cap) || state.dialing >= waiting {
                    break;
                }
                if !waiter.dial_started {
                    waiter.dial_started = true;
                    state.dialing += 1;
                    open += 1;
                    self.dials += 1;
                    self.actions.push_back(Action::Dial {
                        key: key.to_owned(),
                        ticket: waiter.ticket,
                    });
                }
            }
        }
        self.forget_if_empty(key);
    }

    fn pop_least_recent(&mut self) -> Option<Evicted<C>> {
        let key = self
            .keys
            .iter()
            .filter_map(|(key, state)| state.idle.first().map(|c| (c.order, key)))
            .min()
            .map(|(_, key)| key.clone())?;
        let idle = self.keys.get_mut(&key)?.idle.remove(0);
        self.idle_total -= 1;
        Some(Evicted {
            id: idle.id,
            key,
            conn: idle.conn,
            reason: Release::MaxIdle,
        })
    }

    /// Closes every idle connection whose idle timeout has passed at `now`.
    pub fn expire(&mut self, now: Micros) {
        let Some(timeout) = self.config.idle_timeout else {
            return;
        };
        let expired_keys: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, s)| s.idle.first().is_some_and(|c| c.since + timeout <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired_keys {
            self.remove_idle(&key, Release::IdleTimeout, |c| c.since + timeout <= now);
        }
    }

    /// Removes the idle connection `id`, e.g. because the server closed it while it sat
    /// idle. Returns it, or `None` if it is not idle (already handed out or closed).
    pub fn remove_idle_conn(&mut self, key: &str, id: u64) -> Option<C> {
        let state = self.keys.get_mut(key)?;
        let at = state.idle.iter().position(|c| c.id == id)?;
        let idle = state.idle.remove(at);
        self.idle_total -= 1;
        self.capacity_freed(key);
        Some(idle.conn)
    }

    fn remove_idle(&mut self, key: &str, reason: Release, which: impl Fn(&IdleConn<C>) -> bool) {
        let Some(state) = self.keys.get_mut(key) else {
            return;
        };
        let (gone, kept): (Vec<_>, Vec<_>) = state.idle.drain(..).partition(|c| which(c));
        state.idle = kept;
        self.evict(key, gone, reason);
        self.capacity_freed(key);
    }

    /// Idle connections taken out of `key`'s list, for the driver to close.
    fn evict(&mut self, key: &str, gone: Vec<IdleConn<C>>, reason: Release) {
        self.idle_total -= gone.len();
        for idle in gone {
            self.actions.push_back(Action::Close(Evicted {
                id: idle.id,
                key: key.to_owned(),
                conn: idle.conn,
                reason,
            }));
        }
    }

    /// When the next idle connection times out, if any is idle.
    pub fn next_deadline(&self) -> Option<Micros> {
        let timeout = self.config.idle_timeout?;
        self.keys
            .values()
            .filter_map(|s| s.idle.first().map(|c| c.since + timeout))
            .min()
    }

    /// Closes every idle connection (Go's `CloseIdleConnections`); dials that finish
    /// before the next checkout with nobody waiting are closed too.
    pub fn drain_idle(&mut self) {
        self.refuse_unwanted = true;
        let keys: Vec<String> = self.keys.keys().cloned().collect();
        for key in keys {
            self.remove_idle(&key, Release::CloseIdleConnections, |_| true);
        }
    }

    fn forget_if_empty(&mut self, key: &str) {
        if self.keys.get(key).is_some_and(KeyState::is_empty) {
            self.keys.remove(key);
        }
    }

    /// Per-key counts, sorted by key.
    pub fn counts(&self) -> Vec<(String, KeyCounts)> {
        let mut counts: Vec<_> = self
            .keys
            .iter()
            .map(|(key, s)| {
                (
                    key.clone(),
                    KeyCounts {
                        idle: s.idle.len(),
                        active: s.active,
                        dialing: s.dialing,
                        waiting: s.waiters.len(),
                    },
                )
            })
            .collect();
        counts.sort_by(|a, b| a.0.cmp(&b.0));
        counts
    }

    pub fn idle_total(&self) -> usize {
        self.idle_total
    }

    /// Dials started since the pool was created.
    pub fn dials(&self) -> u64 {
        self.dials
    }

    /// Times a connection that had served a request was handed out again.
    /// A request served on a multiplexed connection that had served one before.
    pub fn count_reuse(&mut self) {
        self.reuses += 1;
    }

    pub fn reuses(&self) -> u64 {
        self.reuses
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SECOND: Micros = 1_000_000;

    /// curl's check before reuse: an idle connection found dead is closed, the next
    /// one handed out, and the dead ones count neither as reuses nor as open.
    #[test]
    fn a_checkout_skips_idle_connections_found_dead_and_closes_them() {
        let mut p = pool(100, 5, None);
        for (id, conn) in [(1, "alive"), (2, "dead"), (3, "dead too")] {
            dial(&mut p, "k", id, conn, 0);
        }
        for (id, conn) in [(1, "alive"), (2, "dead"), (3, "dead too")] {
            p.offer("k", id, conn, Source::Active, 0);
        }
        actions(&mut p);
        let reuses = p.reuses();
        let Checkout::Idle(reused) = p.checkout_live("k", 0, |c| !c.starts_with("dead")) else {
            panic!("the live connection is idle");
        };
        assert_eq!((reused.id, reused.conn), (1, "alive"));
        assert_eq!(p.reuses(), reuses + 1);
        assert_eq!(actions(&mut p), ["close #3 PeerGone", "close #2 PeerGone"]);
        assert_eq!(p.idle_total(), 0);
        let counts = p.counts()[0].1;
        assert_eq!((counts.active, counts.idle), (1, 0));
    }

    /// A checkout that finds nothing idle: its ticket, after checking whether it dials.
    fn waiting(p: &mut Pool<&'static str>, key: &str, dials: bool) -> Ticket {
        match p.checkout(key, 0) {
            Checkout::Waiting { ticket, wait } if (wait == Wait::Dial) == dials => ticket,
            other => panic!("expected a wait (dialing: {dials}), got {other:?}"),
        }
    }

    #[test]
    fn a_shared_connection_serves_every_waiter_and_counts_against_the_cap() {
        let mut p: Pool<&'static str> = Pool::new(PoolConfig {
            max_idle: 0,
            max_idle_per_key: 2,
            max_conns_per_key: 2,
            idle_timeout: None,
        });
        let key = "https://a:443";
        let first = waiting(&mut p, key, true);
        let second = waiting(&mut p, key, true);
        let third = waiting(&mut p, key, false);
        assert!(p.is_dialing(key));
        assert_eq!(
            actions(&mut p),
            [
                format!("dial {key} for {first}"),
                format!("dial {key} for {second}")
            ]
        );
        // The first dial speaks h2: every waiter leaves the line with it.
        assert_eq!(p.became_shared(key), [first, second, third]);
        let counts = p.counts()[0].1;
        assert_eq!((counts.active, counts.dialing, counts.waiting), (1, 1, 0));
        // The second dial was not needed: closed, its place freed.
        p.abandoned_dial(key);
        assert!(!p.is_dialing(key));
        // One request waits at the cap (1 shared + 1 dialing), the other dials.
        let dialer = waiting(&mut p, key, true);
        let blocked = waiting(&mut p, key, false);
        assert_eq!(p.take_blocked_waiters(key), [blocked]);
        assert_eq!(p.counts()[0].1.waiting, 1);
        p.cancel(key, dialer);
        p.closed_active(key);
        p.abandoned_dial(key);
        actions(&mut p);
        assert!(p.counts().is_empty());
    }

    fn pool(max_idle: usize, per_key: usize, timeout: Option<Micros>) -> Pool<&'static str> {
        Pool::new(PoolConfig {
            max_idle,
            max_idle_per_key: per_key,
            max_conns_per_key: 0,
            idle_timeout: timeout,
        })
    }

    /// Drains the pending actions into short descriptions.
    fn actions(p: &mut Pool<&'static str>) -> Vec<String> {
        std::iter::from_fn(|| p.poll_action())
            .map(|a| match a {
                Action::Dial { key, ticket } => format!("dial {key} for {ticket}"),
                Action::Hand {
                    ticket,
                    id,
                    idle_for,
                    ..
                } => {
                    format!(
                        "hand #{id} to {ticket}{}",
                        if idle_for.is_some() { " (idle)" } else { "" }
                    )
                }
                Action::Idled { id, .. } => format!("idle #{id}"),
                Action::Refused(e) => format!("refuse #{} {:?}", e.id, e.reason),
                Action::Close(e) => format!("close #{} {:?}", e.id, e.reason),
            })
            .collect()
    }

    /// A request that dials a connection and gets it: returns the ticket.
    fn dial(p: &mut Pool<&'static str>, key: &str, id: u64, conn: &'static str, now: Micros) {
        let Checkout::Waiting {
            ticket,
            wait: Wait::Dial,
        } = p.checkout(key, now)
        else {
            panic!("expected a dial");
        };
        p.offer(key, id, conn, Source::Dial, now);
        let done = actions(p);
        assert_eq!(
            done,
            [
                format!("dial {key} for {ticket}"),
                format!("hand #{id} to {ticket}")
            ]
        );
    }

    fn take(p: &mut Pool<&'static str>, key: &str, now: Micros) -> Option<Reused<&'static str>> {
        match p.checkout(key, now) {
            Checkout::Idle(reused) => Some(reused),
            Checkout::Waiting { ticket, .. } => {
                p.cancel(key, ticket);
                actions(p);
                None
            }
        }
    }

    #[test]
    fn reuse_is_lifo_and_reports_idle_time() {
        let mut p = pool(100, 2, None);
        dial(&mut p, "k", 1, "first", 0);
        dial(&mut p, "k", 2, "second", 0);
        p.offer("k", 1, "first", Source::Active, 10);
        p.offer("k", 2, "second", Source::Active, 20);
        assert_eq!(actions(&mut p), ["idle #1", "idle #2"]);
        let reused = take(&mut p, "k", 50).unwrap();
        assert_eq!((reused.id, reused.conn, reused.idle_for), (2, "second", 30));
        assert_eq!(take(&mut p, "k", 60).unwrap().conn, "first");
        assert!(take(&mut p, "k", 70).is_none());
        assert_eq!(p.reuses(), 2);
    }

    #[test]
    fn max_idle_per_key_refuses_the_extra_connection() {
        let mut p = pool(100, 2, None);
        for id in 1..=3 {
            dial(&mut p, "k", id, "c", 0);
        }
        for id in 1..=3 {
            p.offer("k", id, "c", Source::Active, 0);
        }
        assert_eq!(
            actions(&mut p),
            ["idle #1", "idle #2", "refuse #3 MaxIdlePerKey"]
        );
        assert_eq!(
            p.counts()[0].1,
            KeyCounts {
                idle: 2,
                ..KeyCounts::default()
            }
        );
    }

    #[test]
    fn zero_per_key_keeps_nothing() {
        let mut p = pool(100, 0, None);
        dial(&mut p, "k", 1, "a", 0);
        p.offer("k", 1, "a", Source::Active, 0);
        assert_eq!(actions(&mut p), ["refuse #1 MaxIdlePerKey"]);
        assert!(
            p.counts().is_empty(),
            "a refused connection leaves no trace"
        );
    }

    #[test]
    fn global_cap_evicts_least_recently_used_across_keys() {
        let mut p = pool(2, 5, None);
        let mut done = Vec::new();
        for (id, key) in [(1, "a"), (2, "b"), (3, "c")] {
            dial(&mut p, key, id, "c", 0);
            p.offer(key, id, "c", Source::Active, id);
            done.extend(actions(&mut p));
        }
        assert_eq!(done, ["idle #1", "idle #2", "idle #3", "close #1 MaxIdle"]);
        assert_eq!(p.idle_total(), 2);
    }

    #[test]
    fn idle_timeout_on_a_virtual_clock() {
        let mut p = pool(100, 5, Some(90 * SECOND));
        dial(&mut p, "k", 1, "old", 0);
        dial(&mut p, "k", 2, "new", 0);
        p.offer("k", 1, "old", Source::Active, 0);
        p.offer("k", 2, "new", Source::Active, 30 * SECOND);
        actions(&mut p);
        assert_eq!(p.next_deadline(), Some(90 * SECOND));
        p.expire(90 * SECOND - 1);
        assert!(actions(&mut p).is_empty());
        p.expire(90 * SECOND);
        assert_eq!(actions(&mut p), ["close #1 IdleTimeout"]);
        assert_eq!(p.next_deadline(), Some(120 * SECOND));
        // A checkout after the deadline never gets the timed-out connection.
        assert!(take(&mut p, "k", 500 * SECOND).is_none());
        assert_eq!(p.next_deadline(), None);
        assert_eq!(p.idle_total(), 0);
    }

    #[test]
    fn no_timeout_means_no_deadline() {
        let mut p = pool(100, 5, None);
        dial(&mut p, "k", 1, "a", 0);
        p.offer("k", 1, "a", Source::Active, 0);
        assert_eq!(p.next_deadline(), None);
        p.expire(u64::MAX / 2);
        assert_eq!(actions(&mut p), ["idle #1"]);
    }

    #[test]
    fn counts_track_dialing_active_idle_and_waiting() {
        let mut p = Pool::new(PoolConfig {
            max_idle: 100,
            max_idle_per_key: 2,
            max_conns_per_key: 1,
            idle_timeout: None,
        });
        let Checkout::Waiting {
            ticket: first,
            wait: Wait::Dial,
        } = p.checkout("k", 0)
        else {
            panic!()
        };
        let Checkout::Waiting {
            wait: Wait::AtCap, ..
        } = p.checkout("k", 0)
        else {
            panic!()
        };
        assert_eq!(
            p.counts()[0].1,
            KeyCounts {
                idle: 0,
                active: 0,
                dialing: 1,
                waiting: 2
            }
        );
        p.offer("k", 1, "a", Source::Dial, 0);
        assert_eq!(actions(&mut p), ["dial k for 1", "hand #1 to 1"]);
        assert_eq!(first, 1);
        assert_eq!(
            p.counts()[0].1,
            KeyCounts {
                idle: 0,
                active: 1,
                dialing: 0,
                waiting: 1
            }
        );
        // Its body ends: the connection goes straight to the waiter, not to the idle list.
        p.offer("k", 1, "a", Source::Active, 5);
        assert_eq!(actions(&mut p), ["hand #1 to 2"]);
        p.closed_active("k");
        assert!(p.counts().is_empty());
    }

    #[test]
    fn max_conns_per_key_queues_fifo_and_a_close_lets_the_next_dial() {
        let mut p = Pool::new(PoolConfig {
            max_idle: 100,
            max_idle_per_key: 2,
            max_conns_per_key: 2,
            idle_timeout: None,
        });
        for _ in 0..4 {
            p.checkout("k", 0);
        }
        assert_eq!(actions(&mut p), ["dial k for 1", "dial k for 2"]);
        p.offer("k", 1, "a", Source::Dial, 0);
        p.offer("k", 2, "b", Source::Dial, 0);
        assert_eq!(actions(&mut p), ["hand #1 to 1", "hand #2 to 2"]);
        // Waiter 3 gets the next connection to free up, in order.
        p.offer("k", 2, "b", Source::Active, 0);
        assert_eq!(actions(&mut p), ["hand #2 to 3"]);
        // A connection closed (not reusable) frees a place: waiter 4 may dial.
        p.closed_active("k");
        assert_eq!(actions(&mut p), ["dial k for 4"]);
        assert_eq!(p.dials(), 3);
    }

    #[test]
    fn a_dial_in_progress_counts_and_a_failed_dial_frees_its_place() {
        let mut p = Pool::new(PoolConfig {
            max_idle: 100,
            max_idle_per_key: 2,
            max_conns_per_key: 1,
            idle_timeout: None,
        });
        p.checkout("k", 0);
        p.checkout("k", 0);
        assert_eq!(actions(&mut p), ["dial k for 1"]);
        assert!(p.dial_failed("k", 1), "waiter 1 gets the dial's error");
        assert_eq!(actions(&mut p), ["dial k for 2"]);
    }

    #[test]
    fn a_cancelled_waiter_leaves_the_queue_at_once() {
        let mut p = Pool::new(PoolConfig {
            max_idle: 100,
            max_idle_per_key: 2,
            max_conns_per_key: 1,
            idle_timeout: None,
        });
        for _ in 0..3 {
            p.checkout("k", 0);
        }
        actions(&mut p);
        p.cancel("k", 2);
        assert_eq!(p.counts()[0].1.waiting, 2);
        p.offer("k", 1, "a", Source::Dial, 0);
        p.offer("k", 1, "a", Source::Active, 0);
        assert_eq!(actions(&mut p), ["hand #1 to 1", "hand #1 to 3"]);
    }

    #[test]
    fn socket_late_binding_takes_whichever_connection_is_ready_first() {
        let mut p = pool(100, 2, None);
        dial(&mut p, "k", 1, "busy", 0);
        // Request 2 finds nothing idle and starts its own dial...
        let Checkout::Waiting {
            ticket: 2,
            wait: Wait::Dial,
        } = p.checkout("k", 0)
        else {
            panic!()
        };
        // ...but connection 1 becomes free first: request 2 takes it.
        p.offer("k", 1, "busy", Source::Active, 10);
        assert_eq!(actions(&mut p), ["dial k for 2", "hand #1 to 2"]);
        // Its own dial, finishing later, goes to the idle list for the next request.
        p.offer("k", 2, "late", Source::Dial, 20);
        assert_eq!(actions(&mut p), ["idle #2"]);
        assert_eq!(take(&mut p, "k", 30).unwrap().conn, "late");
    }

    #[test]
    fn close_idle_connections_also_closes_unwanted_dials() {
        let mut p = pool(100, 2, None);
        dial(&mut p, "k", 1, "a", 0);
        p.offer("k", 1, "a", Source::Active, 0);
        let Checkout::Idle(_) = p.checkout("k", 0) else {
            panic!()
        };
        p.offer("k", 1, "a", Source::Active, 0);
        let Checkout::Waiting { ticket, .. } = p.checkout("j", 0) else {
            panic!()
        };
        p.cancel("j", ticket);
        actions(&mut p);
        p.drain_idle();
        assert_eq!(actions(&mut p), ["close #1 CloseIdleConnections"]);
        p.offer("j", 2, "b", Source::Dial, 0);
        assert_eq!(actions(&mut p), ["refuse #2 CloseIdleConnections"]);
        assert!(p.counts().is_empty());
    }

    #[test]
    fn a_dead_idle_connection_is_removed_while_idle() {
        let mut p = pool(100, 2, None);
        dial(&mut p, "k", 1, "a", 0);
        p.offer("k", 1, "a", Source::Active, 0);
        actions(&mut p);
        assert_eq!(p.remove_idle_conn("k", 1), Some("a"));
        assert_eq!(p.remove_idle_conn("k", 1), None);
        assert!(p.counts().is_empty());
        assert!(take(&mut p, "k", 1).is_none(), "it is never handed out");
    }

    /// Dials in progress never outnumber the requests waiting: a request that finds
    /// a dial no one needs any more waits for it instead of dialling another, so the
    /// connections never outnumber the requests at once. If that dial fails, the
    /// request dials for itself.
    #[test]
    fn a_dial_no_request_needs_serves_the_next_request_instead_of_a_second_dial() {
        let mut p = pool(100, 100, None);
        dial(&mut p, "k", 1, "busy", 0);
        // Request 2 dials; connection 1 frees up first and serves it.
        let second = waiting(&mut p, "k", true);
        p.offer("k", 1, "busy", Source::Active, 10);
        assert_eq!(
            actions(&mut p),
            [
                format!("dial k for {second}"),
                format!("hand #1 to {second}")
            ]
        );
        // Request 3 finds nothing idle, but request 2's dial is still under way and
        // nobody waits for it: request 3 waits for that one.
        let third = match p.checkout("k", 20) {
            Checkout::Waiting { ticket, wait } => {
                assert_eq!(wait, Wait::SpareDial);
                ticket
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(actions(&mut p), Vec::<String>::new());
        // Request 4 has no spare dial left to wait for: it dials.
        let fourth = waiting(&mut p, "k", true);
        assert_eq!(actions(&mut p), [format!("dial k for {fourth}")]);
        p.offer("k", 2, "spare", Source::Dial, 30);
        assert_eq!(actions(&mut p), [format!("hand #2 to {third}")]);
        p.offer("k", 3, "own", Source::Dial, 40);
        assert_eq!(actions(&mut p), [format!("hand #3 to {fourth}")]);
        assert_eq!(p.dials(), 3, "three connections for three requests at once");

        // A spare dial that fails: the request counting on it dials for itself.
        let mut p = pool(100, 100, None);
        dial(&mut p, "k", 1, "busy", 0);
        let second = waiting(&mut p, "k", true);
        p.offer("k", 1, "busy", Source::Active, 10);
        actions(&mut p);
        let third = match p.checkout("k", 20) {
            Checkout::Waiting {
                ticket,
                wait: Wait::SpareDial,
            } => ticket,
            other => panic!("{other:?}"),
        };
        assert!(
            !p.dial_failed("k", second),
            "request 2 was served meanwhile"
        );
        assert_eq!(actions(&mut p), [format!("dial k for {third}")]);
    }
}
