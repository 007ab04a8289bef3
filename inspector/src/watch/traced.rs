//! A process tree's TCP connections from the kernel's trace events
//! ([`super::tracefs`]): each connection from its `connect` (the state change runs in
//! the connecting task, so the pid is exact) or its accept on a listener of the tree,
//! its bytes from every send and receive, its end when the tree closes it or it is
//! reset. Pure: records in, events out.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use roundtrip_host::events::EventKind;

use super::tracefs::{Record, What, state};

/// Bytes moved within this long of each other are one `socket_activity`.
const BURST_NS: u64 = 50_000_000;

/// `AF_INET6`.
const INET6: u16 = 10;

/// What the IPv4 addresses of an IPv6 socket with no IPv4 peer read: none, or the
/// kernel's placeholder (an accepted socket's).
const NOT_V4: [[u8; 4]; 2] = [[0, 0, 0, 0], [127, 0, 0, 6]];

/// What the tracker asks of the world: names and IPv6 addresses the trace lacks.
pub trait Lookup {
    /// The command line of process `pid`, if it still runs.
    fn command(&mut self, pid: i32) -> Option<String>;
    /// The process (thread group) of task `tid`, if it still runs.
    fn process_of(&mut self, tid: i32) -> Option<i32>;
    /// The IPv6 addresses of the connection between these ports, if it is still in
    /// the kernel's table (the trace prints IPv6 addresses as `<INVALID-SIZE>`).
    fn v6_addresses(&mut self, sport: u16, dport: u16) -> Option<(SocketAddr, SocketAddr)>;
}

/// A connection of the tree.
struct Conn {
    id: u64,
    up: u64,
    down: u64,
    /// Bytes not reported yet, and when the first and last of them moved.
    burst: Option<Burst>,
}

struct Burst {
    up: u64,
    down: u64,
    first_ns: u64,
    last_ns: u64,
}

/// A `connect` in flight.
struct Connecting {
    ts_ns: u64,
    pid: i32,
    comm: String,
}

/// Follows the tree's connections through trace records.
pub struct Traced {
    /// Processes of the tree, ever.
    tree: HashSet<i32>,
    /// Their tasks (threads), with the process of each: the trace always names the
    /// task, not always its process.
    tasks: HashMap<i32, i32>,
    /// Listening sockets of the tree: their port and owner.
    listeners: HashMap<u64, (u16, i32, String)>,
    connecting: HashMap<u64, Connecting>,
    conns: HashMap<u64, Conn>,
    /// Connections open before the trace began, followed elsewhere: by their ends.
    known: HashSet<(SocketAddr, SocketAddr)>,
    /// Bytes the tree moved on sockets it did not open while traced (so, maybe, those
    /// `known` ones) since `since_ns`, by socket address.
    earlier: HashMap<u64, (u64, u64)>,
    /// When the `known` connections' bytes were last taken from the kernel's table.
    since_ns: Option<u64>,
    /// `known` connections the trace saw end, for whoever follows them.
    ended: Vec<Ended>,
    /// The monotonic clock's reading at the events' zero.
    zero_ns: u64,
    /// Commands of the tree's processes, by pid.
    commands: HashMap<i32, String>,
    /// Started since [`Traced::take_born`] was last called.
    born: Vec<i32>,
}

/// A connection open before the trace began (followed by sampling) that the trace
/// saw end: when, and the bytes the tree wrote and read on it since
/// [`Traced::since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub ts_us: u64,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub moved: (u64, u64),
}

/// An event for connection `app_conn` at `ts_us`.
pub type Emitted = (u64, u64, EventKind);

impl Traced {
    /// Follows nothing yet ([`Traced::adopt`] says what); event times count from
    /// `zero_ns` on the monotonic clock.
    pub fn new(zero_ns: u64) -> Self {
        Self {
            tree: HashSet::new(),
            tasks: HashMap::new(),
            listeners: HashMap::new(),
            connecting: HashMap::new(),
            conns: HashMap::new(),
            known: HashSet::new(),
            earlier: HashMap::new(),
            since_ns: None,
            ended: Vec::new(),
            zero_ns,
            commands: HashMap::new(),
            born: Vec::new(),
        }
    }

    /// Processes (and threads) the tree started since the last call.
    pub fn take_born(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.born)
    }

    /// Whether process `pid` is followed.
    pub fn follows(&self, pid: i32) -> bool {
        self.tree.contains(&pid)
    }

    /// Follows process `pid`, with its tasks (found in `/proc`: what the tree was
    /// when the trace began, or a process found some other way).
    pub fn adopt(&mut self, pid: i32, tasks: impl IntoIterator<Item = i32>) {
        self.tree.insert(pid);
        self.tasks.insert(pid, pid);
        for tid in tasks {
            self.tasks.entry(tid).or_insert(pid);
        }
    }

    /// The followed process `record` ran in, if any.
    fn process(&self, record: &Record) -> Option<i32> {
        match self.tasks.get(&record.tid) {
            Some(&pid) => Some(pid),
            None => record.tgid.filter(|tgid| self.tree.contains(tgid)),
        }
    }

    /// A connection open before the trace began (followed by sampling): not one of
    /// ours when it shows in the trace.
    pub fn known(&mut self, local: SocketAddr, peer: SocketAddr) {
        self.known.insert((local, peer));
    }

    /// The `known` connections' bytes were read from the kernel at `ts_ns`: what the
    /// tree moves on sockets it did not open is counted from then.
    pub fn since(&mut self, ts_ns: u64) {
        self.since_ns = Some(ts_ns);
    }

    /// The `known` connections the trace saw end since the last call.
    pub fn take_ended(&mut self) -> Vec<Ended> {
        std::mem::take(&mut self.ended)
    }

    /// Applies `record`; new ids come from `next_id`.
    pub fn apply(
        &mut self,
        record: Record,
        lookup: &mut dyn Lookup,
        next_id: &mut dyn FnMut() -> u64,
        emit: &mut dyn FnMut(Emitted),
    ) {
        let process = self.process(&record);
        match record.what {
            What::Fork { child } => {
                if process.is_none() {
                    return;
                }
                // A thread or a process: `/proc` tells while it runs; one gone already
                // was most likely a process (its first task's id is its pid).
                let pid = lookup.process_of(child).unwrap_or(child);
                self.tasks.insert(child, pid);
                if self.tree.insert(pid) {
                    self.born.push(pid);
                }
            }
            What::Moved { sk, up, bytes } => {
                if bytes == 0 {
                    return;
                }
                let burst_over = self
                    .conns
                    .get(&sk)
                    .and_then(|conn| conn.burst.as_ref())
                    .is_some_and(|b| record.ts_ns.saturating_sub(b.first_ns) >= BURST_NS);
                if burst_over {
                    self.flush_one(sk, emit);
                }
                let Some(conn) = self.conns.get_mut(&sk) else {
                    if process.is_some()
                        && !self.known.is_empty()
                        && self.since_ns.is_some_and(|since| record.ts_ns > since)
                    {
                        let moved = self.earlier.entry(sk).or_default();
                        if up {
                            moved.0 += bytes;
                        } else {
                            moved.1 += bytes;
                        }
                    }
                    return;
                };
                let burst = conn.burst.get_or_insert(Burst {
                    up: 0,
                    down: 0,
                    first_ns: record.ts_ns,
                    last_ns: record.ts_ns,
                });
                burst.last_ns = record.ts_ns;
                if up {
                    conn.up += bytes;
                    burst.up += bytes;
                } else {
                    conn.down += bytes;
                    burst.down += bytes;
                }
            }
            What::State {
                sk,
                old,
                new,
                sport,
                dport,
                family,
                saddr,
                daddr,
            } => {
                let ends = |lookup: &mut dyn Lookup| {
                    if family == INET6 && NOT_V4.contains(&daddr) {
                        lookup.v6_addresses(sport, dport)
                    } else {
                        let v4 =
                            |a: [u8; 4], port| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port);
                        Some((v4(saddr, sport), v4(daddr, dport)))
                    }
                };
                match (old, new) {
                    (state::CLOSE, state::SYN_SENT) => {
                        if let Some(pid) = process {
                            self.connecting.insert(
                                sk,
                                Connecting {
                                    ts_ns: record.ts_ns,
                                    pid,
                                    comm: record.comm,
                                },
                            );
                        }
                    }
                    (state::SYN_SENT, state::ESTABLISHED) => {
                        let Some(connecting) = self.connecting.remove(&sk) else {
                            return;
                        };
                        let ends = ends(lookup);
                        self.open(sk, connecting, ends, lookup, next_id, emit);
                    }
                    // A connect that failed: no connection.
                    (state::SYN_SENT, state::CLOSE) => {
                        self.connecting.remove(&sk);
                    }
                    (state::CLOSE, state::LISTEN) => {
                        if let Some(pid) = process {
                            self.listeners.insert(sk, (sport, pid, record.comm));
                        }
                    }
                    (state::LISTEN, state::CLOSE) => {
                        self.listeners.remove(&sk);
                    }
                    // Accepted on a listener of the tree (in whatever task the
                    // packet came in): the listener's owner's.
                    (state::SYN_RECV, state::ESTABLISHED) => {
                        let Some((_, pid, comm)) = self
                            .listeners
                            .values()
                            .find(|(port, ..)| *port == sport)
                            .cloned()
                        else {
                            return;
                        };
                        let accepted = Connecting {
                            ts_ns: record.ts_ns,
                            pid,
                            comm,
                        };
                        let ends = ends(lookup);
                        self.open(sk, accepted, ends, lookup, next_id, emit);
                    }
                    // The tree closed it (with or without the peer's FIN first), or it
                    // was reset.
                    (_, state::FIN_WAIT1 | state::LAST_ACK | state::CLOSE) => {
                        if self.conns.contains_key(&sk) || self.connecting.contains_key(&sk) {
                            self.close(sk, record.ts_ns, emit);
                            return;
                        }
                        // One open before the trace began?
                        let moved = self.earlier.remove(&sk).unwrap_or_default();
                        let Some(&(local, peer)) = self.known.iter().find(|(local, peer)| {
                            local.port() == sport
                                && peer.port() == dport
                                && (family == INET6
                                    || ends(lookup).is_some_and(|e| e == (*local, *peer)))
                        }) else {
                            return;
                        };
                        self.known.remove(&(local, peer));
                        self.ended.push(Ended {
                            ts_us: self.us(record.ts_ns),
                            local,
                            peer,
                            moved,
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    fn open(
        &mut self,
        sk: u64,
        opener: Connecting,
        ends: Option<(SocketAddr, SocketAddr)>,
        lookup: &mut dyn Lookup,
        next_id: &mut dyn FnMut() -> u64,
        emit: &mut dyn FnMut(Emitted),
    ) {
        if let Some(ends) = ends
            && self.known.contains(&ends)
        {
            return;
        }
        let id = next_id();
        let process = match self.commands.get(&opener.pid) {
            Some(command) => command.clone(),
            None => {
                let command = lookup.command(opener.pid).unwrap_or(opener.comm);
                self.commands.insert(opener.pid, command.clone());
                command
            }
        };
        let (local, peer) = match ends {
            Some((local, peer)) => (local.to_string(), peer.to_string()),
            // Gone from the kernel's table before it could be asked.
            None => ("[IPv6]".to_owned(), "[IPv6]".to_owned()),
        };
        emit((
            self.us(opener.ts_ns),
            id,
            EventKind::SocketOpen {
                local,
                peer,
                pid: u32::try_from(opener.pid).ok(),
                process: Some(process),
            },
        ));
        self.conns.insert(
            sk,
            Conn {
                id,
                up: 0,
                down: 0,
                burst: None,
            },
        );
    }

    fn close(&mut self, sk: u64, ts_ns: u64, emit: &mut dyn FnMut(Emitted)) {
        self.connecting.remove(&sk);
        self.flush_one(sk, emit);
        if let Some(conn) = self.conns.remove(&sk) {
            emit((
                self.us(ts_ns),
                conn.id,
                EventKind::SocketClose {
                    bytes_up: conn.up,
                    bytes_down: conn.down,
                },
            ));
        }
    }

    /// Reports bursts that ended [`BURST_NS`] before `now_ns` (so a live view keeps
    /// up); every burst with `now_ns` of `u64::MAX`.
    pub fn flush(&mut self, now_ns: u64, emit: &mut dyn FnMut(Emitted)) {
        let due: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, conn)| {
                conn.burst
                    .as_ref()
                    .is_some_and(|b| now_ns.saturating_sub(b.last_ns) >= BURST_NS)
            })
            .map(|(&sk, _)| sk)
            .collect();
        for sk in due {
            self.flush_one(sk, emit);
        }
    }

    fn flush_one(&mut self, sk: u64, emit: &mut dyn FnMut(Emitted)) {
        let zero_ns = self.zero_ns;
        let Some(conn) = self.conns.get_mut(&sk) else {
            return;
        };
        let Some(burst) = conn.burst.take() else {
            return;
        };
        emit((
            burst.last_ns.saturating_sub(zero_ns) / 1000,
            conn.id,
            EventKind::SocketActivity {
                bytes_up: burst.up,
                bytes_down: burst.down,
                interval_us: (burst.last_ns - burst.first_ns) / 1000,
            },
        ));
    }

    /// Ends every connection still open at `ts_ns` (the watch is over).
    pub fn end(&mut self, ts_ns: u64, emit: &mut dyn FnMut(Emitted)) {
        let open: Vec<u64> = self.conns.keys().copied().collect();
        for sk in open {
            self.close(sk, ts_ns, emit);
        }
    }

    fn us(&self, ts_ns: u64) -> u64 {
        ts_ns.saturating_sub(self.zero_ns) / 1000
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    struct Nothing;

    impl Lookup for Nothing {
        fn command(&mut self, _: i32) -> Option<String> {
            None
        }
        fn process_of(&mut self, _: i32) -> Option<i32> {
            None
        }
        fn v6_addresses(&mut self, _: u16, _: u16) -> Option<(SocketAddr, SocketAddr)> {
            None
        }
    }

    fn record(ts_ms: u64, tid: i32, tgid: Option<i32>, what: What) -> Record {
        Record {
            ts_ns: ts_ms * 1_000_000,
            tid,
            tgid,
            comm: "app".to_owned(),
            what,
        }
    }

    /// `bytes` sent (`up`) or received on socket `sk` by process `pid`'s main task.
    fn moved(ts_ms: u64, pid: i32, sk: u64, up: bool, bytes: u64) -> Record {
        record(ts_ms, pid, Some(pid), What::Moved { sk, up, bytes })
    }

    fn state(sk: u64, old: u32, new: u32, sport: u16, dport: u16) -> What {
        What::State {
            sk,
            old,
            new,
            sport,
            dport,
            family: 2,
            saddr: [127, 0, 0, 1],
            daddr: [127, 0, 0, 1],
        }
    }

    fn run(traced: &mut Traced, records: Vec<Record>) -> Vec<Emitted> {
        let mut out = Vec::new();
        let mut id = 0;
        for r in records {
            traced.apply(
                r,
                &mut Nothing,
                &mut || {
                    id += 1;
                    id
                },
                &mut |e| out.push(e),
            );
        }
        traced.flush(u64::MAX, &mut |e| out.push(e));
        out
    }

    /// A child forked by the tree connects before the kernel noted its process (no
    /// tgid): its connection is the tree's, under the child's pid; a failed connect
    /// is no connection; an unrelated process's is not followed; a connection
    /// accepted on the tree's listener is.
    #[test]
    fn the_tree_s_connections_from_connect_or_accept_and_nobody_else_s() {
        let mut traced = Traced::new(0);
        traced.adopt(100, [100]);
        let out = run(
            &mut traced,
            vec![
                record(1, 100, Some(100), What::Fork { child: 200 }),
                record(2, 200, None, state(0xa, 7, 2, 0, 80)),
                record(3, 200, None, state(0xa, 2, 1, 5000, 80)),
                record(
                    4,
                    200,
                    None,
                    What::Moved {
                        sk: 0xa,
                        up: true,
                        bytes: 70,
                    },
                ),
                moved(5, 7, 0xa, false, 300),
                record(6, 200, None, state(0xa, 1, 4, 5000, 80)),
                // Refused.
                record(7, 200, None, state(0xb, 7, 2, 0, 81)),
                record(8, 200, None, state(0xb, 2, 7, 5001, 81)),
                // Someone else's.
                record(9, 300, Some(300), state(0xc, 7, 2, 0, 80)),
                record(10, 300, Some(300), state(0xc, 2, 1, 5002, 80)),
                // The tree listens on 8080; a peer connects (in softirq: any task).
                record(11, 100, Some(100), state(0xd, 7, 10, 8080, 0)),
                record(12, 999, Some(999), state(0xe, 3, 1, 8080, 6000)),
            ],
        );
        let kinds: Vec<(u64, u64, &EventKind)> =
            out.iter().map(|(ts, id, k)| (*ts, *id, k)).collect();
        assert_eq!(traced.take_born(), [200]);
        assert!(
            matches!(
                kinds[0],
                (2000, 1, EventKind::SocketOpen { local, peer, pid: Some(200), process: Some(p) })
                    if local == "127.0.0.1:5000" && peer == "127.0.0.1:80" && p == "app"
            ),
            "{kinds:?}"
        );
        // Bytes from any task (the receive ran in softirq's) once the socket is known.
        assert_eq!(
            kinds[1].2,
            &EventKind::SocketActivity {
                bytes_up: 70,
                bytes_down: 300,
                interval_us: 1000
            }
        );
        assert_eq!(
            kinds[2],
            (
                6000,
                1,
                &EventKind::SocketClose {
                    bytes_up: 70,
                    bytes_down: 300
                }
            )
        );
        assert!(
            matches!(
                kinds[3],
                (12000, 2, EventKind::SocketOpen { local, pid: Some(100), .. }) if local == "127.0.0.1:8080"
            ),
            "{kinds:?}"
        );
        assert_eq!(kinds.len(), 4, "{kinds:?}");
    }

    /// A connection open before the trace began is the sampler's; the trace tells its
    /// end and the bytes moved on it since the sample.
    #[test]
    fn a_connection_open_before_the_trace_is_handed_back_at_its_end() {
        let mut traced = Traced::new(0);
        traced.adopt(100, [100]);
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let peer: SocketAddr = "127.0.0.1:80".parse().unwrap();
        traced.known(local, peer);
        traced.since(1_500_000);
        let out = run(
            &mut traced,
            vec![
                // Before the sample: counted in it already.
                moved(1, 100, 0xa, true, 1),
                moved(2, 100, 0xa, true, 70),
                moved(3, 100, 0xa, false, 300),
                record(4, 100, Some(100), state(0xa, 1, 4, 5000, 80)),
            ],
        );
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(
            traced.take_ended(),
            [Ended {
                ts_us: 4000,
                local,
                peer,
                moved: (70, 300)
            }]
        );
    }
}
