//! `watch`: the TCP connections of a process and its descendants, read from the
//! kernel — no proxy, no MITM, any protocol. Two ways, chosen by what the user may
//! do:
//!
//! - **Trace** (root): the kernel's trace events ([`tracefs`], [`traced`]) tell of
//!   every connection as it happens — however short, with the pid that connected,
//!   its bytes from every send and receive — and of every fork, so the tree is known
//!   exactly. Connections open before the watch began are sampled, as below.
//! - **Sample** (anyone): each [`SAMPLE_INTERVAL`] the watcher finds the tree's
//!   processes in `/proc`, the sockets they hold (`/proc/PID/fd` links
//!   `socket:[inode]`) and, from the kernel's socket diagnostics (`sock_diag` over
//!   netlink, what `ss` reads), each socket's addresses and the payload bytes it
//!   sent (`tcpi_bytes_sent` less retransmissions) and received
//!   (`tcpi_bytes_received`). A connection opened and closed between two samples is
//!   missed.
//!
//! Either way it emits `watch_start` (the mode), then `socket_open`,
//! `socket_activity` (bytes that moved, with the interval they moved in) and
//! `socket_close`, ids in `app_conn`. What it cannot know: anything inside the bytes
//! (URLs, requests, reuse).

mod traced;
pub mod tracefs;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP, TCP_CLOSE_WAIT, TCP_CLOSING, TCP_LAST_ACK, TCP_TIME_WAIT,
};
use netlink_packet_sock_diag::inet::nlas::{Nla, TcpInfo};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use procfs::process::{FDTarget, Process};
use roundtrip_host::events::{Event, EventKind, WatchMode};

use self::traced::{Lookup, Traced};
use self::tracefs::Tracefs;

/// How often the kernel is asked.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// One socket of the kernel's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    family: u8,
    local: SocketAddr,
    peer: SocketAddr,
    inode: u64,
    /// Payload bytes sent, received: absent for sockets without TCP information
    /// (time-wait).
    bytes: Option<(u64, u64)>,
}

/// A connection being followed.
struct Followed {
    id: u64,
    socket: Seen,
    bytes: (u64, u64),
    reported: (u64, u64),
    /// Its bytes when first seen.
    first: (u64, u64),
}

/// How long a socket of the tree that is not a TCP connection (UDP, Unix, a
/// listener, one not connected yet) goes without another full dump.
const RECHECK: Duration = Duration::from_secs(1);

/// Follows one process tree; [`Watcher::step`] emits what changed.
///
/// When sampling, a full dump of the kernel's TCP table walks its whole hash table
/// (milliseconds on a machine with much memory, however few sockets), so it is done
/// only when the tree holds a socket not seen before; followed connections are then
/// asked for one by one, by their addresses.
pub struct Watcher {
    started: Instant,
    diag: Socket,
    /// Processes followed, with their start time (a reused pid is another process).
    members: HashMap<i32, u64>,
    /// By inode.
    followed: HashMap<u64, Followed>,
    /// Sockets of the tree that a dump did not list, and when.
    not_tcp: HashMap<u64, Instant>,
    next_id: u64,
    /// When the last sample was taken (µs from the start).
    previous: u64,
    /// Whether a sample follows sockets it has not seen: always when sampling; when
    /// tracing, only the first sample of a running process (what it held before).
    adopt: bool,
    /// The kernel's events, when tracing; else why not.
    trace: Result<(Tracefs, Traced), String>,
}

impl Watcher {
    /// Watches `root` and its descendants; times in events count from now. With
    /// `trace` (started before `root`'s command ran, for a command we start) every
    /// connection is seen; else the tree is sampled, and `trace` says why. With
    /// `running`, what `root` holds already is followed too (by sampling).
    pub fn new(root: u32, trace: Result<Tracefs, String>, running: bool) -> Result<Self, String> {
        let started = Instant::now();
        let zero_ns = monotonic_ns();
        let root = i32::try_from(root).map_err(|_| format!("no process {root}"))?;
        let process = Process::new(root).map_err(|e| format!("cannot watch pid {root}: {e}"))?;
        let start = process
            .stat()
            .map_err(|e| format!("cannot watch pid {root}: {e}"))?;
        let mut diag = Socket::new(NETLINK_SOCK_DIAG)
            .map_err(|e| format!("cannot open the kernel's socket diagnostics: {e}"))?;
        diag.bind_auto()
            .and_then(|_| diag.connect(&netlink_sys::SocketAddr::new(0, 0)))
            .map_err(|e| format!("cannot open the kernel's socket diagnostics: {e}"))?;
        Ok(Self {
            started,
            diag,
            members: HashMap::from([(root, start.starttime)]),
            followed: HashMap::new(),
            not_tcp: HashMap::new(),
            next_id: 0,
            previous: 0,
            // When tracing, what the tree holds now is sampled; the trace does the rest.
            adopt: trace.is_err() || running,
            trace: trace.map(|t| (t, Traced::new(zero_ns))),
        })
    }

    /// How connections are learnt of, and what that way misses.
    pub fn mode(&self) -> (WatchMode, String) {
        match &self.trace {
            Ok(_) => (
                WatchMode::Trace,
                "nothing of TCP but the IPv6 addresses of a connection gone before they \
                 can be asked (drawn as [IPv6])"
                    .to_owned(),
            ),
            Err(why) => (
                WatchMode::Sample,
                format!(
                    "connections that open and close between two samples ({} ms apart); \
                     the kernel's trace events, which would show each, cannot be read: \
                     {why}",
                    SAMPLE_INTERVAL.as_millis()
                ),
            ),
        }
    }

    /// The `watch_start` event (the mode), for the first of the events.
    pub fn start_event(&self, pid: u32) -> Event {
        let (mode, misses) = self.mode();
        Event {
            ts_us: 0,
            kind: EventKind::WatchStart { pid, mode, misses },
            conn: None,
            req: None,
            key: None,
            tunnel: None,
            app_conn: None,
        }
    }

    /// Whether any followed process is still running.
    pub fn alive(&self) -> bool {
        !self.members.is_empty()
    }

    /// What happened since the last step, through `emit`: when tracing, the trace's
    /// events, then a sample of the kernel's socket table (for what the tree held
    /// before the trace); else a sample.
    pub fn step(&mut self, emit: &mut dyn FnMut(Event)) -> Result<(), String> {
        if self.trace.is_err() || self.adopt {
            // Sampling; or tracing, and first what the tree held before the trace.
            self.sample(emit)?;
        }
        let Ok((tracefs, traced)) = &mut self.trace else {
            return Ok(());
        };
        for &pid in self.members.keys() {
            if !traced.follows(pid) {
                traced.adopt(pid, tasks(pid));
            }
        }
        let mut lookup = Asker { diag: &self.diag };
        let next_id = &mut self.next_id;
        let mut new_id = || {
            *next_id += 1;
            *next_id
        };
        let mut emit_traced = |(ts_us, id, kind)| emit(event(ts_us, id, kind));
        tracefs
            .read(&mut |record| traced.apply(record, &mut lookup, &mut new_id, &mut emit_traced))?;
        traced.flush(monotonic_ns(), &mut emit_traced);
        // Connections open before the watch that the trace saw end: their ends, with
        // every byte (a sample may not have come between their last bytes and the end).
        for ended in traced.take_ended() {
            let Some((&inode, _)) = self
                .followed
                .iter()
                .find(|(_, f)| (f.socket.local, f.socket.peer) == (ended.local, ended.peer))
            else {
                continue;
            };
            let Some(mut followed) = self.followed.remove(&inode) else {
                continue;
            };
            followed.bytes = (
                followed.first.0 + ended.moved.0,
                followed.first.1 + ended.moved.1,
            );
            let interval = ended.ts_us.saturating_sub(self.previous);
            report(&mut followed, ended.ts_us, interval, emit);
            let (bytes_up, bytes_down) = followed.bytes;
            emit(event(
                ended.ts_us,
                followed.id,
                EventKind::SocketClose {
                    bytes_up,
                    bytes_down,
                },
            ));
        }
        // Children the trace saw start (one that a parent left behind included) keep
        // the watch going while they run.
        for pid in traced.take_born() {
            if let Ok(stat) = Process::new(pid).and_then(|p| p.stat())
                && stat.state != 'Z'
            {
                self.members.entry(pid).or_insert(stat.starttime);
            }
        }
        // After the trace: a connection open before it that it saw end is ended with
        // every byte, not as of the last sample.
        self.sample(emit)
    }

    /// The last step, once the tree is gone: what is left of the trace, and the ends
    /// of connections still open. Says whether the trace lost events.
    pub fn finish(&mut self, emit: &mut dyn FnMut(Event)) -> Result<Option<String>, String> {
        self.step(emit)?;
        let Ok((tracefs, traced)) = &mut self.trace else {
            return Ok(None);
        };
        traced.end(monotonic_ns(), &mut |(ts_us, id, kind)| {
            emit(event(ts_us, id, kind))
        });
        let lost = tracefs.lost();
        Ok((lost > 0)
            .then(|| format!("the kernel's trace buffer overflowed: {lost} events were lost")))
    }

    /// One look at the kernel: new connections, bytes, closes, through `emit`.
    fn sample(&mut self, emit: &mut dyn FnMut(Event)) -> Result<(), String> {
        let owners = self.owners();
        let now = Instant::now();
        let ts_us = self.ts_us(now);
        let interval_us = ts_us - self.previous;
        self.previous = ts_us;
        // Followed connections: their bytes, or their end — gone from the tree (the
        // kernel may still hold the socket a moment: its last bytes) or from the kernel.
        let inodes: Vec<u64> = self.followed.keys().copied().collect();
        for inode in inodes {
            let Some(followed) = self.followed.get_mut(&inode) else {
                continue;
            };
            let now_seen = lookup(&self.diag, &followed.socket)?;
            if let Some(bytes) = now_seen.and_then(|s| s.bytes) {
                followed.bytes = bytes;
            }
            report(followed, ts_us, interval_us, emit);
            if now_seen.is_none() || !owners.contains_key(&inode) {
                let (bytes_up, bytes_down) = followed.bytes;
                emit(event(
                    ts_us,
                    followed.id,
                    EventKind::SocketClose {
                        bytes_up,
                        bytes_down,
                    },
                ));
                self.followed.remove(&inode);
            }
        }
        if !self.adopt {
            return Ok(());
        }
        if let Ok((_, traced)) = &mut self.trace {
            // Once: what the tree held when the watch began; the trace counts their
            // bytes from now.
            self.adopt = false;
            traced.since(monotonic_ns());
        }
        // New sockets of the tree: one dump tells which are TCP connections.
        self.not_tcp.retain(|inode, when| {
            owners.contains_key(inode) && now.duration_since(*when) < RECHECK
        });
        let unknown = owners
            .keys()
            .any(|inode| !self.followed.contains_key(inode) && !self.not_tcp.contains_key(inode));
        if !unknown {
            return Ok(());
        }
        let mut table = dump(&self.diag, AF_INET)?;
        table.extend(dump(&self.diag, AF_INET6)?);
        for socket in table {
            let Some(&pid) = owners.get(&socket.inode) else {
                continue;
            };
            if self.followed.contains_key(&socket.inode) {
                continue;
            }
            if let Ok((_, traced)) = &mut self.trace {
                traced.known(socket.local, socket.peer);
            }
            self.next_id += 1;
            let process = Process::new(pid).ok();
            // Opened since the last sample: drawn from then, so that what it sent at
            // once shows.
            emit(event(
                ts_us - interval_us,
                self.next_id,
                EventKind::SocketOpen {
                    local: socket.local.to_string(),
                    peer: socket.peer.to_string(),
                    pid: u32::try_from(pid).ok(),
                    process: process.as_ref().map(roundtrip_proxy::owner::command),
                },
            ));
            let mut followed = Followed {
                id: self.next_id,
                socket,
                bytes: socket.bytes.unwrap_or_default(),
                reported: (0, 0),
                first: socket.bytes.unwrap_or_default(),
            };
            report(&mut followed, ts_us, interval_us, emit);
            self.followed.insert(socket.inode, followed);
        }
        for &inode in owners.keys() {
            if !self.followed.contains_key(&inode) {
                self.not_tcp.entry(inode).or_insert(now);
            }
        }
        Ok(())
    }

    fn ts_us(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.started).as_micros()).unwrap_or(u64::MAX)
    }

    /// The tree's socket inodes and who holds each; updates the tree first: gone
    /// processes out, new children of followed ones in.
    fn owners(&mut self) -> HashMap<u64, i32> {
        self.members.retain(|&pid, &mut start| {
            Process::new(pid)
                .and_then(|p| p.stat())
                .is_ok_and(|stat| stat.starttime == start && stat.state != 'Z')
        });
        self.adopt_children();
        let mut owners = HashMap::new();
        // Tracing, with nothing held from before the watch: the tree is all that is
        // needed (for `alive`), not its sockets.
        if !self.adopt && self.followed.is_empty() {
            return owners;
        }
        for &pid in self.members.keys() {
            let Ok(fds) = Process::new(pid).and_then(|p| p.fd()) else {
                continue;
            };
            for fd in fds.filter_map(Result::ok) {
                if let FDTarget::Socket(inode) = fd.target {
                    owners.entry(inode).or_insert(pid);
                }
            }
        }
        owners
    }

    /// Adds the children of members, to a fixed point: from each member's
    /// `/proc/PID/task/TID/children` where the kernel has them, else from every
    /// process's parent.
    fn adopt_children(&mut self) {
        loop {
            let listed: Option<Vec<Vec<i32>>> =
                self.members.keys().map(|&pid| children(pid)).collect();
            let found: Vec<(i32, i32, u64)> = match listed {
                Some(lists) => lists
                    .into_iter()
                    .flatten()
                    .filter_map(|pid| Process::new(pid).and_then(|p| p.stat()).ok())
                    .map(|stat| (stat.pid, stat.ppid, stat.starttime))
                    .collect(),
                None => procfs::process::all_processes()
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .filter_map(|p| p.stat().ok())
                    .map(|stat| (stat.pid, stat.ppid, stat.starttime))
                    .collect(),
            };
            let before = self.members.len();
            for (pid, ppid, start) in found {
                if self.members.contains_key(&ppid) && !self.members.contains_key(&pid) {
                    self.members.insert(pid, start);
                }
            }
            if self.members.len() == before {
                return;
            }
        }
    }
}

/// `pid`'s children, from its threads' `children` files; `None` when the kernel
/// has no such files (built without `CONFIG_PROC_CHILDREN`).
fn children(pid: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut children: Vec<i32> = Vec::new();
    for task in tasks.flatten() {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(text) => children.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            // The thread ended meanwhile.
            Err(_) => {}
        }
    }
    Some(children)
}

/// The tasks (threads) of process `pid`.
fn tasks(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| t.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The monotonic clock (the trace's `mono`, what [`Instant`] counts), in nanoseconds.
fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// What the trace lacks, asked of `/proc` and the kernel's socket table.
struct Asker<'a> {
    diag: &'a Socket,
}

impl Lookup for Asker<'_> {
    fn process_of(&mut self, tid: i32) -> Option<i32> {
        Process::new(tid)
            .and_then(|p| p.status())
            .ok()
            .map(|s| s.tgid)
    }

    fn command(&mut self, pid: i32) -> Option<String> {
        Process::new(pid)
            .ok()
            .map(|p| roundtrip_proxy::owner::command(&p))
            .filter(|c| !c.is_empty())
    }

    fn v6_addresses(&mut self, sport: u16, dport: u16) -> Option<(SocketAddr, SocketAddr)> {
        dump(self.diag, AF_INET6)
            .ok()?
            .into_iter()
            .find(|s| s.local.port() == sport && s.peer.port() == dport)
            .map(|s| (s.local, s.peer))
    }
}

fn event(ts_us: u64, app_conn: u64, kind: EventKind) -> Event {
    Event {
        ts_us,
        kind,
        conn: None,
        req: None,
        key: None,
        tunnel: None,
        app_conn: Some(app_conn),
    }
}

/// A `socket_activity` for the bytes since the last one, if any moved (in the
/// `interval_us` before `ts_us`).
fn report(followed: &mut Followed, ts_us: u64, interval_us: u64, emit: &mut dyn FnMut(Event)) {
    let (up, down) = followed.bytes;
    let (reported_up, reported_down) = followed.reported;
    if up <= reported_up && down <= reported_down {
        return;
    }
    emit(event(
        ts_us,
        followed.id,
        EventKind::SocketActivity {
            bytes_up: up.saturating_sub(reported_up),
            bytes_down: down.saturating_sub(reported_down),
            interval_us,
        },
    ));
    followed.reported = followed.bytes;
}

/// The kernel's TCP sockets of `family` but the listening ones.
fn dump(diag: &Socket, family: u8) -> Result<Vec<Seen>, String> {
    let socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    query(diag, family, socket_id, NLM_F_DUMP)
}

/// `socket` as the kernel has it now, asked by its addresses; `None` once it is gone.
fn lookup(diag: &Socket, socket: &Seen) -> Result<Option<Seen>, String> {
    let socket_id = SocketId {
        source_port: socket.local.port(),
        destination_port: socket.peer.port(),
        source_address: socket.local.ip(),
        destination_address: socket.peer.ip(),
        interface_id: 0,
        // INET_DIAG_NOCOOKIE: any socket with these addresses.
        cookie: [0xff; 8],
    };
    let found = query(diag, socket.family, socket_id, 0)?;
    Ok(found
        .into_iter()
        .find(|s| s.inode == socket.inode || s.inode == 0))
}

/// One sock_diag request; `flags` adds `NLM_F_DUMP` for the whole table. A lookup
/// of a socket that is gone answers with an error: no sockets.
fn query(diag: &Socket, family: u8, socket_id: SocketId, flags: u16) -> Result<Vec<Seen>, String> {
    let failed = |e: &dyn std::fmt::Display| format!("the kernel's socket diagnostics: {e}");
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::INFO,
            states: StateFlags::all() - StateFlags::LISTEN,
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    diag.send(&buf, 0).map_err(|e| failed(&e))?;
    let mut seen = Vec::new();
    let mut received = Vec::with_capacity(64 * 1024);
    loop {
        received.clear();
        let size = diag.recv(&mut received, 0).map_err(|e| failed(&e))?;
        let mut offset = 0;
        while offset < size {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&received[offset..size])
                .map_err(|e| failed(&e))?;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    let id = &response.header.socket_id;
                    let state = response.header.state;
                    let bytes = response.nlas.iter().find_map(|nla| match nla {
                        Nla::TcpInfo(info) => Some(payload(state, info)),
                        _ => None,
                    });
                    seen.push(Seen {
                        family: response.header.family,
                        local: SocketAddr::new(id.source_address, id.source_port),
                        peer: SocketAddr::new(id.destination_address, id.destination_port),
                        inode: u64::from(response.header.inode),
                        bytes,
                    });
                    // A lookup answers with one message and no `Done`.
                    if flags & NLM_F_DUMP == 0 {
                        return Ok(seen);
                    }
                }
                NetlinkPayload::Done(_) => return Ok(seen),
                NetlinkPayload::Error(_) if flags & NLM_F_DUMP == 0 => return Ok(seen),
                NetlinkPayload::Error(e) => return Err(failed(&format!("{e:?}"))),
                _ => {}
            }
            let length = message.header.length as usize;
            if length == 0 {
                break;
            }
            // Messages are padded to 4 bytes.
            offset += length.next_multiple_of(4);
        }
    }
}

/// The payload bytes sent and received. Sent: data bytes out less retransmissions
/// (`tcpi_bytes_acked` would count the SYN of a connection this end opened, and a
/// FIN). Received: `tcpi_bytes_received`, less the peer's FIN once it came.
fn payload(state: u8, info: &TcpInfo) -> (u64, u64) {
    let fin_received = matches!(
        state,
        TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING | TCP_TIME_WAIT
    );
    (
        info.bytes_sent.saturating_sub(info.bytes_retrans),
        info.bytes_received.saturating_sub(u64::from(fin_received)),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{Read, Write};

    use super::*;

    /// The bytes up and down of each `socket_close` among `events`.
    fn closes<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<(u64, u64)> {
        events
            .filter_map(|e| match e.kind {
                EventKind::SocketClose {
                    bytes_up,
                    bytes_down,
                } => Some((bytes_up, bytes_down)),
                _ => None,
            })
            .collect()
    }

    /// The kernel's trace, where this process may read it (root); `None` (and why, on
    /// stderr) where it may not — the tests of the trace then have nothing to check.
    fn trace() -> Option<Tracefs> {
        match Tracefs::start() {
            Ok(trace) => Some(trace),
            Err(e) if !rustix::process::geteuid().is_root() => {
                eprintln!("not root, the trace is not tested: {e}");
                None
            }
            Err(e) => panic!("root cannot trace: {e}"),
        }
    }

    /// This test's own process: a connection it opens, writes and reads on, and
    /// closes is seen open, with its bytes, then closed — over IPv4 and IPv6, sampled
    /// and traced.
    #[test]
    fn a_connection_of_the_watched_process_is_seen_with_its_bytes() {
        for addr in ["127.0.0.1:0", "[::1]:0"] {
            seen_with_its_bytes(addr, Err("not tracing".to_owned()));
            if let Some(trace) = trace() {
                seen_with_its_bytes(addr, Ok(trace));
            }
        }
    }

    fn seen_with_its_bytes(addr: &str, trace: Result<Tracefs, String>) {
        let tracing = trace.is_ok();
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let mut watcher = Watcher::new(std::process::id(), trace, false).unwrap();
        let mut events = Vec::new();
        let mut emit = |e: Event| events.push(e);
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got).unwrap();
        server.write_all(b"hello, world").unwrap();
        let mut got = [0u8; 12];
        client.read_exact(&mut got).unwrap();
        watcher.step(&mut emit).unwrap();
        drop(client);
        std::thread::sleep(Duration::from_millis(20));
        watcher.step(&mut emit).unwrap();
        let local = server.peer_addr().unwrap().to_string();
        let opens: Vec<(String, Option<u32>, Option<u64>)> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::SocketOpen { local, pid, .. } => Some((local.clone(), *pid, e.app_conn)),
                _ => None,
            })
            .collect();
        // This process holds both ends: two connections. Traced, the accepted one is
        // known by its listener, opened after the trace began.
        assert_eq!(opens.len(), 2, "{addr}, tracing: {tracing}: {opens:?}");
        let client_side = opens
            .iter()
            .find(|(l, pid, _)| *l == local && *pid == Some(std::process::id()))
            .and_then(|(.., id)| *id)
            .unwrap_or_else(|| panic!("{addr}: the client's socket_open in {opens:?}"));
        let closes = closes(events.iter().filter(|e| e.app_conn == Some(client_side)));
        assert_eq!(closes, [(5, 12)], "{addr}, tracing: {tracing}");
        drop(server);
    }

    /// A connection opened, used and closed between two looks is seen when tracing,
    /// with the pid that connected and its bytes; sampling cannot see it.
    #[test]
    fn a_connection_shorter_than_a_sample_is_seen_when_tracing() {
        // Listening before the trace began: the accepted ends are not followed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let Some(trace) = trace() else {
            return;
        };
        let server = std::thread::spawn(move || {
            for _ in 0..20 {
                let (mut conn, _) = listener.accept().unwrap();
                let mut got = [0u8; 4];
                conn.read_exact(&mut got).unwrap();
                conn.write_all(b"pong!").unwrap();
            }
        });
        let mut traced = Watcher::new(std::process::id(), Ok(trace), false).unwrap();
        let mut sampled = Watcher::new(std::process::id(), Err(String::new()), false).unwrap();
        let mut events = Vec::new();
        let mut missed = Vec::new();
        traced.step(&mut |e| events.push(e)).unwrap();
        sampled.step(&mut |e| missed.push(e)).unwrap();
        for _ in 0..20 {
            let mut client = std::net::TcpStream::connect(addr).unwrap();
            client.write_all(b"ping").unwrap();
            let mut got = [0u8; 5];
            client.read_exact(&mut got).unwrap();
        }
        server.join().unwrap();
        traced.step(&mut |e| events.push(e)).unwrap();
        sampled.step(&mut |e| missed.push(e)).unwrap();
        let count =
            |events: &[Event], name: &str| events.iter().filter(|e| e.name() == name).count();
        assert_eq!(count(&missed, "socket_open"), 0, "sampling saw some");
        assert_eq!(count(&events, "socket_open"), 20);
        assert_eq!(closes(events.iter()), vec![(4, 5); 20]);
        assert!(events.iter().all(|e| match &e.kind {
            EventKind::SocketOpen { pid, peer, .. } =>
                *pid == Some(std::process::id()) && *peer == addr.to_string(),
            _ => true,
        }));
    }
}
