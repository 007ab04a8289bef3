//! The connection pool as a state machine, with time passed in.
//!
//! Theory of operation. A connection is always in exactly one place:
//!
//! ```text
//!            begin_dial            dial_done(ok)
//!   (none) ────────────► Dialing ───────────────► Active ◄──────────┐
//!                           │ dial_done(err)        │  put_idle      │ take_idle
//!                           ▼                       ▼                │
//!                        (none)                   Idle ──────────────┘
//!                                                   │ expire / evict / drain
//!                                                   ▼
//!                                                Closed (returned to the driver)
//! ```
//!
//! The pool owns idle connections (the driver's handle type `C`) and only counts dialing
//! and active ones. Idle lists are per key and LIFO: the most recently used connection
//! is reused first, so the oldest ones age out (Go's `idleConn` behaves the same).
//! Closing is the driver's job: every method that drops a connection from the pool
//! hands it back as an [`Evicted`] with the reason, so no path forgets to close one.

use std::collections::HashMap;

use super::Micros;

/// The pool's knobs (a subset of the transport config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Global idle cap across keys; 0 = no limit.
    pub max_idle: usize,
    /// Idle cap per key; 0 keeps none.
    pub max_idle_per_key: usize,
    /// How long a connection may stay idle; `None` = forever.
    pub idle_timeout: Option<Micros>,
}

/// Why the pool let go of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
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

#[derive(Debug)]
struct IdleConn<C> {
    id: u64,
    conn: C,
    since: Micros,
    /// Global put order, for least-recently-used eviction across keys.
    order: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyCounts {
    pub idle: usize,
    pub active: usize,
    pub dialing: usize,
}

#[derive(Debug)]
struct KeyState<C> {
    /// Oldest first; reuse pops from the back.
    idle: Vec<IdleConn<C>>,
    active: usize,
    dialing: usize,
}

impl<C> Default for KeyState<C> {
    fn default() -> Self {
        Self {
            idle: Vec::new(),
            active: 0,
            dialing: 0,
        }
    }
}

impl<C> KeyState<C> {
    fn is_empty(&self) -> bool {
        self.idle.is_empty() && self.active == 0 && self.dialing == 0
    }
}

/// The pool. `C` is whatever the driver uses to hold an open connection.
#[derive(Debug)]
pub struct Pool<C> {
    config: PoolConfig,
    keys: HashMap<String, KeyState<C>>,
    idle_total: usize,
    next_order: u64,
    dials: u64,
    reuses: u64,
}

impl<C> Pool<C> {
    pub fn new(config: PoolConfig) -> Self {
        Self {
            config,
            keys: HashMap::new(),
            idle_total: 0,
            next_order: 0,
            dials: 0,
            reuses: 0,
        }
    }

    pub fn config(&self) -> PoolConfig {
        self.config
    }

    /// Takes the most recently idled connection for `key`, if any, and marks it active.
    /// Call [`Pool::expire`] first so a timed-out connection is never handed out.
    pub fn take_idle(&mut self, key: &str, now: Micros) -> Option<Reused<C>> {
        let state = self.keys.get_mut(key)?;
        let idle = state.idle.pop()?;
        state.active += 1;
        self.idle_total -= 1;
        self.reuses += 1;
        Some(Reused {
            id: idle.id,
            conn: idle.conn,
            idle_for: now.saturating_sub(idle.since),
        })
    }

    /// A dial for `key` starts.
    pub fn begin_dial(&mut self, key: &str) {
        self.keys.entry(key.to_owned()).or_default().dialing += 1;
        self.dials += 1;
    }

    /// A dial for `key` ended; on success the connection is active.
    pub fn end_dial(&mut self, key: &str, connected: bool) {
        if let Some(state) = self.keys.get_mut(key) {
            state.dialing = state.dialing.saturating_sub(1);
            if connected {
                state.active += 1;
            }
        }
        self.forget_if_empty(key);
    }

    /// An active connection was closed by the driver (error, `Connection: close`, early
    /// body drop …) instead of being offered back.
    pub fn release_active(&mut self, key: &str) {
        if let Some(state) = self.keys.get_mut(key) {
            state.active = state.active.saturating_sub(1);
        }
        self.forget_if_empty(key);
    }

    /// Offers an active connection whose response was read to its end back to the idle
    /// list. `Ok` carries any connections evicted to make room (global cap); `Err`
    /// hands the offered one back with why it was refused.
    pub fn put_idle(
        &mut self,
        key: &str,
        id: u64,
        conn: C,
        now: Micros,
    ) -> Result<Vec<Evicted<C>>, Evicted<C>> {
        let max_per_key = self.config.max_idle_per_key;
        let state = self.keys.entry(key.to_owned()).or_default();
        state.active = state.active.saturating_sub(1);
        if state.idle.len() >= max_per_key {
            let refused = Evicted {
                id,
                key: key.to_owned(),
                conn,
                reason: Release::MaxIdlePerKey,
            };
            self.forget_if_empty(key);
            return Err(refused);
        }
        state.idle.push(IdleConn {
            id,
            conn,
            since: now,
            order: self.next_order,
        });
        self.next_order += 1;
        self.idle_total += 1;
        let mut evicted = Vec::new();
        while self.config.max_idle > 0 && self.idle_total > self.config.max_idle {
            match self.pop_least_recent() {
                Some(oldest) => evicted.push(oldest),
                None => break,
            }
        }
        Ok(evicted)
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
        self.forget_if_empty(&key);
        Some(Evicted {
            id: idle.id,
            key,
            conn: idle.conn,
            reason: Release::MaxIdle,
        })
    }

    /// Removes every idle connection whose idle timeout has passed at `now`.
    pub fn expire(&mut self, now: Micros) -> Vec<Evicted<C>> {
        let Some(timeout) = self.config.idle_timeout else {
            return Vec::new();
        };
        let expired_keys: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, s)| s.idle.first().is_some_and(|c| c.since + timeout <= now))
            .map(|(k, _)| k.clone())
            .collect();
        let mut expired = Vec::new();
        for key in expired_keys {
            let Some(state) = self.keys.get_mut(&key) else {
                continue;
            };
            let keep_from = state
                .idle
                .iter()
                .position(|c| c.since + timeout > now)
                .unwrap_or(state.idle.len());
            for idle in state.idle.drain(..keep_from) {
                expired.push(Evicted {
                    id: idle.id,
                    key: key.clone(),
                    conn: idle.conn,
                    reason: Release::IdleTimeout,
                });
            }
            self.forget_if_empty(&key);
        }
        self.idle_total -= expired.len();
        expired
    }

    /// When the next idle connection times out, if any is idle.
    pub fn next_deadline(&self) -> Option<Micros> {
        let timeout = self.config.idle_timeout?;
        self.keys
            .values()
            .filter_map(|s| s.idle.first().map(|c| c.since + timeout))
            .min()
    }

    /// Removes every idle connection (Go's `CloseIdleConnections`).
    pub fn drain_idle(&mut self) -> Vec<Evicted<C>> {
        let mut drained = Vec::new();
        for (key, state) in &mut self.keys {
            for idle in state.idle.drain(..) {
                drained.push(Evicted {
                    id: idle.id,
                    key: key.clone(),
                    conn: idle.conn,
                    reason: Release::CloseIdleConnections,
                });
            }
        }
        self.keys.retain(|_, s| !s.is_empty());
        self.idle_total = 0;
        drained
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

    /// Connections handed out again from the idle list.
    pub fn reuses(&self) -> u64 {
        self.reuses
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SECOND: Micros = 1_000_000;

    fn pool(max_idle: usize, per_key: usize, timeout: Option<Micros>) -> Pool<&'static str> {
        Pool::new(PoolConfig {
            max_idle,
            max_idle_per_key: per_key,
            idle_timeout: timeout,
        })
    }

    /// Dials a connection for `key` and makes it active, as the driver does.
    fn dial(pool: &mut Pool<&'static str>, key: &str) {
        pool.begin_dial(key);
        pool.end_dial(key, true);
    }

    #[test]
    fn reuse_is_lifo_and_reports_idle_time() {
        let mut p = pool(100, 2, None);
        dial(&mut p, "k");
        dial(&mut p, "k");
        p.put_idle("k", 1, "first", 10).unwrap();
        p.put_idle("k", 2, "second", 20).unwrap();
        let reused = p.take_idle("k", 50).unwrap();
        assert_eq!((reused.id, reused.conn, reused.idle_for), (2, "second", 30));
        assert_eq!(p.take_idle("k", 60).unwrap().conn, "first");
        assert!(p.take_idle("k", 70).is_none());
        assert!(p.take_idle("other", 70).is_none());
        assert_eq!((p.dials(), p.reuses()), (2, 2));
    }

    #[test]
    fn max_idle_per_key_refuses_the_extra_connection() {
        let mut p = pool(100, 2, None);
        for _ in 0..3 {
            dial(&mut p, "k");
        }
        p.put_idle("k", 1, "a", 0).unwrap();
        p.put_idle("k", 2, "b", 0).unwrap();
        let refused = p.put_idle("k", 3, "c", 0).unwrap_err();
        assert_eq!((refused.id, refused.reason), (3, Release::MaxIdlePerKey));
        assert_eq!(
            p.counts(),
            vec![(
                "k".into(),
                KeyCounts {
                    idle: 2,
                    active: 0,
                    dialing: 0
                }
            )]
        );
        // Another key has its own room.
        dial(&mut p, "j");
        assert!(p.put_idle("j", 4, "d", 0).is_ok());
    }

    #[test]
    fn zero_per_key_keeps_nothing() {
        let mut p = pool(100, 0, None);
        dial(&mut p, "k");
        assert_eq!(
            p.put_idle("k", 1, "a", 0).unwrap_err().reason,
            Release::MaxIdlePerKey
        );
        assert!(
            p.counts().is_empty(),
            "a refused connection leaves no trace"
        );
    }

    #[test]
    fn global_cap_evicts_least_recently_used_across_keys() {
        let mut p = pool(2, 5, None);
        for (id, key) in [(1, "a"), (2, "b"), (3, "a")] {
            dial(&mut p, key);
            let evicted = p.put_idle(key, id, "c", id).unwrap();
            if id == 3 {
                assert_eq!(evicted.len(), 1);
                assert_eq!(
                    (evicted[0].id, evicted[0].key.as_str(), evicted[0].reason),
                    (1, "a", Release::MaxIdle)
                );
            } else {
                assert!(evicted.is_empty());
            }
        }
        assert_eq!(p.idle_total(), 2);
    }

    #[test]
    fn idle_timeout_on_a_virtual_clock() {
        let mut p = pool(100, 5, Some(90 * SECOND));
        dial(&mut p, "k");
        dial(&mut p, "k");
        p.put_idle("k", 1, "old", 0).unwrap();
        p.put_idle("k", 2, "new", 30 * SECOND).unwrap();
        assert_eq!(p.next_deadline(), Some(90 * SECOND));
        assert!(p.expire(90 * SECOND - 1).is_empty());
        let expired = p.expire(90 * SECOND);
        assert_eq!(expired.len(), 1);
        assert_eq!(
            (expired[0].id, expired[0].reason),
            (1, Release::IdleTimeout)
        );
        assert_eq!(p.next_deadline(), Some(120 * SECOND));
        assert_eq!(p.expire(500 * SECOND).len(), 1);
        assert_eq!(p.next_deadline(), None);
        assert!(p.take_idle("k", 500 * SECOND).is_none());
        assert_eq!(p.idle_total(), 0);
    }

    #[test]
    fn no_timeout_means_no_deadline() {
        let mut p = pool(100, 5, None);
        dial(&mut p, "k");
        p.put_idle("k", 1, "a", 0).unwrap();
        assert_eq!(p.next_deadline(), None);
        assert!(p.expire(u64::MAX / 2).is_empty());
    }

    #[test]
    fn counts_track_dialing_active_and_idle() {
        let mut p = pool(100, 2, None);
        p.begin_dial("k");
        assert_eq!(
            p.counts()[0].1,
            KeyCounts {
                idle: 0,
                active: 0,
                dialing: 1
            }
        );
        p.end_dial("k", true);
        assert_eq!(
            p.counts()[0].1,
            KeyCounts {
                idle: 0,
                active: 1,
                dialing: 0
            }
        );
        p.put_idle("k", 1, "a", 0).unwrap();
        assert_eq!(
            p.counts()[0].1,
            KeyCounts {
                idle: 1,
                active: 0,
                dialing: 0
            }
        );
        p.take_idle("k", 1).unwrap();
        p.release_active("k");
        assert!(p.counts().is_empty());
        p.begin_dial("k");
        p.end_dial("k", false);
        assert!(p.counts().is_empty());
    }

    #[test]
    fn drain_returns_every_idle_connection() {
        let mut p = pool(100, 2, Some(SECOND));
        for (id, key) in [(1, "a"), (2, "b")] {
            dial(&mut p, key);
            p.put_idle(key, id, "c", 0).unwrap();
        }
        dial(&mut p, "a");
        let drained = p.drain_idle();
        assert_eq!(drained.len(), 2);
        assert!(
            drained
                .iter()
                .all(|e| e.reason == Release::CloseIdleConnections)
        );
        assert_eq!(
            p.counts(),
            vec![(
                "a".into(),
                KeyCounts {
                    idle: 0,
                    active: 1,
                    dialing: 0
                }
            )]
        );
        assert_eq!(p.next_deadline(), None);
    }
}
