//! The kernel's trace events, read from a tracefs instance of our own: every TCP
//! state change (`sock:inet_sock_set_state`), every send and receive on a TCP
//! socket (`sock:sock_send_length`, `sock:sock_recv_length`) and every fork
//! (`sched:sched_process_fork`), as they happen — what bcc's `tcplife` reads, without
//! a BPF program. It needs root (tracefs is root's); without it, [`Tracefs::start`]
//! says why and the watcher samples instead.
//!
//! The instance is a private ring buffer (`/sys/kernel/tracing/instances/NAME`):
//! other tracing on the machine is not touched, and the instance is removed on drop.
//! Lines are read in the `fields` format (every field, raw), with the thread group
//! of the task that was running (`record-tgid`), on the monotonic clock (`mono`,
//! what [`std::time::Instant`] counts).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where tracefs is mounted when it is not already.
const MOUNT_POINT: &str = "/sys/kernel/tracing";

/// Per-CPU ring buffer size: room for a burst of some ten thousand sends between
/// two reads.
const BUFFER_KB: u32 = 4096;

/// A state of `sock:inet_sock_set_state` (the kernel's `TCP_*`).
pub mod state {
    pub const ESTABLISHED: u32 = 1;
    pub const SYN_SENT: u32 = 2;
    pub const SYN_RECV: u32 = 3;
    pub const FIN_WAIT1: u32 = 4;
    pub const CLOSE: u32 = 7;
    pub const LAST_ACK: u32 = 9;
    pub const LISTEN: u32 = 10;
}

/// `MSG_PEEK`: a receive that leaves the bytes where they were.
const MSG_PEEK: u64 = 2;

/// One trace event of interest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Nanoseconds on the monotonic clock.
    pub ts_ns: u64,
    /// The task (thread) that was running: in softirq context, whoever was
    /// interrupted.
    pub tid: i32,
    /// Its thread group (process); `None` when the kernel has not noted it yet (it
    /// notes a task's group when the task is first switched out, and prints `-------`
    /// until then).
    pub tgid: Option<i32>,
    /// That task's name, as the kernel keeps it (15 bytes at most; `<...>` when not
    /// noted yet).
    pub comm: String,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// A TCP socket changed state. `saddr`/`daddr` are IPv4 addresses in network
    /// order as the kernel keeps them: for an IPv6 socket they are the IPv4 ones of a
    /// v4-mapped peer, else the kernel's placeholder 127.0.0.6.
    State {
        sk: u64,
        old: u32,
        new: u32,
        sport: u16,
        dport: u16,
        family: u16,
        saddr: [u8; 4],
        daddr: [u8; 4],
    },
    /// Payload bytes handed to a TCP socket (`up`) or taken from one.
    Moved { sk: u64, up: bool, bytes: u64 },
    /// A task made another (a process or a thread).
    Fork { child: i32 },
}

/// A tracefs instance with our events on, and its pipe.
pub struct Tracefs {
    instance: PathBuf,
    pipe: Option<File>,
    /// Bytes of a line not read whole yet.
    partial: Vec<u8>,
    /// What each read of the pipe reads into.
    chunk: Vec<u8>,
}

impl Tracefs {
    /// Makes the instance and turns the events on; the error says why it cannot be
    /// (not root, no tracefs, a kernel without these events).
    pub fn start() -> Result<Self, String> {
        let root = tracefs_root()?;
        let instances = root.join("instances");
        remove_stale(&instances);
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "roundtrip-inspector-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let instance = instances.join(name);
        std::fs::create_dir(&instance).map_err(|e| {
            format!(
                "cannot make a trace instance in {}: {e}{}",
                instances.display(),
                if e.kind() == ErrorKind::PermissionDenied {
                    " (tracing is root's)"
                } else {
                    ""
                }
            )
        })?;
        let mut tracefs = Self {
            instance,
            pipe: None,
            partial: Vec::new(),
            chunk: vec![0; 64 << 10],
        };
        tracefs.configure()?;
        Ok(tracefs)
    }

    fn configure(&mut self) -> Result<(), String> {
        let tcp_only = "protocol == 6";
        let settings: [(&str, &str); 11] = [
            ("options/fields", "1"),
            ("options/record-tgid", "1"),
            ("trace_clock", "mono"),
            ("buffer_size_kb", &BUFFER_KB.to_string()),
            ("events/sock/inet_sock_set_state/filter", tcp_only),
            ("events/sock/sock_send_length/filter", tcp_only),
            ("events/sock/sock_recv_length/filter", tcp_only),
            ("events/sock/inet_sock_set_state/enable", "1"),
            ("events/sock/sock_send_length/enable", "1"),
            ("events/sock/sock_recv_length/enable", "1"),
            ("events/sched/sched_process_fork/enable", "1"),
        ];
        for (file, value) in settings {
            std::fs::write(self.instance.join(file), value)
                .map_err(|e| format!("cannot set the kernel's trace {file} to {value}: {e}"))?;
        }
        let pipe = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(self.instance.join("trace_pipe"))
            .map_err(|e| format!("cannot read the kernel's trace: {e}"))?;
        self.pipe = Some(pipe);
        Ok(())
    }

    /// Every event traced since the last call, in time order, to `each`.
    pub fn read(&mut self, each: &mut dyn FnMut(Record)) -> Result<(), String> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(());
        };
        loop {
            match pipe.read(&mut self.chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    self.partial.extend_from_slice(&self.chunk[..n]);
                    let whole = self.partial.iter().rposition(|&b| b == b'\n');
                    if let Some(end) = whole {
                        let lines: Vec<u8> = self.partial.drain(..=end).collect();
                        for line in String::from_utf8_lossy(&lines).lines() {
                            if let Some(record) = parse(line) {
                                each(record);
                            }
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("cannot read the kernel's trace: {e}")),
            }
        }
    }

    /// Events the ring buffer dropped for want of room (0 when none was missed).
    pub fn lost(&self) -> u64 {
        let Ok(cpus) = std::fs::read_dir(self.instance.join("per_cpu")) else {
            return 0;
        };
        cpus.flatten()
            .filter_map(|cpu| std::fs::read_to_string(cpu.path().join("stats")).ok())
            .flat_map(|stats| {
                stats
                    .lines()
                    .filter_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        matches!(name.trim(), "overrun" | "dropped events")
                            .then(|| value.trim().parse::<u64>().ok())?
                    })
                    .collect::<Vec<_>>()
            })
            .sum()
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        // An instance with a file open cannot be removed: the pipe goes first.
        self.pipe = None;
        let _ = std::fs::write(self.instance.join("events/enable"), "0");
        let _ = std::fs::remove_dir(&self.instance);
    }
}

/// Where tracefs is: mounted already, else mounted at [`MOUNT_POINT`] now (root
/// may, as `perf` and `trace-cmd` do).
fn tracefs_root() -> Result<PathBuf, String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mounted = mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, at, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == "tracefs").then(|| PathBuf::from(at))
    });
    if let Some(at) = mounted {
        return Ok(at);
    }
    rustix::mount::mount(
        "nodev",
        MOUNT_POINT,
        "tracefs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| format!("tracefs is not mounted and cannot be at {MOUNT_POINT}: {e}"))?;
    Ok(PathBuf::from(MOUNT_POINT))
}

/// Removes instances left by inspectors that died before removing theirs.
fn remove_stale(instances: &Path) {
    let Ok(entries) = std::fs::read_dir(instances) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("roundtrip-inspector-"))
        else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::write(entry.path().join("events/enable"), "0");
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// One line of `trace_pipe` in the `fields` format, e.g.
/// `curl-5188    (   5188) [000] .....   128.267699: inet_sock_set_state: skaddr=0x… (…) oldstate=0x7 (7) …`.
/// `None` for other events and lines it cannot read.
pub fn parse(line: &str) -> Option<Record> {
    // The task's name may hold spaces and dashes: the header is read from its end.
    let (header, rest) = line.split_once(") [")?;
    let (task, tgid) = header.rsplit_once('(')?;
    let (comm, tid) = task.trim().rsplit_once('-')?;
    let tid = tid.parse::<i32>().ok()?;
    let tgid = tgid.trim().parse::<i32>().ok();
    let (_, rest) = rest.split_once("] ")?;
    let (stamp, rest) = rest
        .trim_start()
        .split_once(' ')?
        .1
        .trim_start()
        .split_once(": ")?;
    let ts_ns = nanos(stamp)?;
    let (event, fields) = rest.split_once(": ")?;
    let field = |name: &str| hex_field(fields, name);
    let what = match event {
        "inet_sock_set_state" => What::State {
            sk: field("skaddr")?,
            old: u32::try_from(field("oldstate")?).ok()?,
            new: u32::try_from(field("newstate")?).ok()?,
            sport: u16::try_from(field("sport")?).ok()?,
            dport: u16::try_from(field("dport")?).ok()?,
            family: u16::try_from(field("family")?).ok()?,
            saddr: u32::try_from(field("saddr")?).ok()?.to_le_bytes(),
            daddr: u32::try_from(field("daddr")?).ok()?.to_le_bytes(),
        },
        "sock_send_length" | "sock_recv_length" => {
            // `ret` is an int: negative (an error) prints as a large hex number.
            let ret = field("ret")?;
            let flags = field("flags")?;
            let bytes = if ret > u64::from(i32::MAX as u32) || flags & MSG_PEEK != 0 {
                0
            } else {
                ret
            };
            What::Moved {
                sk: field("sk")?,
                up: event == "sock_send_length",
                bytes,
            }
        }
        "sched_process_fork" => What::Fork {
            child: i32::try_from(field("child_pid")?).ok()?,
        },
        _ => return None,
    };
    Some(Record {
        ts_ns,
        tid,
        tgid,
        comm: comm.to_owned(),
        what,
    })
}

/// `name=0x1f (31)` in `fields` → 31.
fn hex_field(fields: &str, name: &str) -> Option<u64> {
    let start = fields
        .match_indices(name)
        .find(|&(at, _)| {
            (at == 0 || fields.as_bytes()[at - 1] == b' ')
                && fields[at + name.len()..].starts_with('=')
        })?
        .0
        + name.len()
        + 1;
    let value = fields[start..].split(' ').next()?;
    u64::from_str_radix(value.strip_prefix("0x")?, 16).ok()
}

/// `128.267699` (seconds, microseconds) → nanoseconds.
fn nanos(stamp: &str) -> Option<u64> {
    let (seconds, fraction) = stamp.split_once('.')?;
    let seconds: u64 = seconds.parse().ok()?;
    let digits = fraction.len().min(9);
    let fraction: u64 = fraction[..digits].parse().ok()?;
    Some(seconds * 1_000_000_000 + fraction * 10u64.pow(9 - digits as u32))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn lines_as_the_kernel_prints_them_are_read() {
        let connect = "            curl-5188    (   5188) [000] .....   128.267699: inet_sock_set_state: skaddr=0xffff88810ac56180 (-131387163844224) oldstate=0x7 (7) newstate=0x2 (2) sport=0x0 (0) dport=0x4a37 (18999) family=0x2 (2) protocol=0x6 (6) saddr=0x100007f (16777343) daddr=0x100007f (16777343) saddr_v6=<INVALID-SIZE> daddr_v6=<INVALID-SIZE>";
        assert_eq!(
            parse(connect),
            Some(Record {
                ts_ns: 128_267_699_000,
                tid: 5188,
                tgid: Some(5188),
                comm: "curl".to_owned(),
                what: What::State {
                    sk: 0xffff_8881_0ac5_6180,
                    old: state::CLOSE,
                    new: state::SYN_SENT,
                    sport: 0,
                    dport: 18999,
                    family: 2,
                    saddr: [127, 0, 0, 1],
                    daddr: [127, 0, 0, 1],
                },
            })
        );
        // A name with a dash and a space, a thread of another process, an interrupt.
        let recv = " my-app worker-5189    (   5103) [000] ..s2.   128.272203: sock_recv_length: sk=0xffff88810ac51380 (-131387163864192) family=0xa (10) protocol=0x6 (6) ret=0x4b (75) flags=0x0 (0)";
        let record = parse(recv).unwrap();
        assert_eq!(
            (record.tid, record.tgid, record.comm.as_str()),
            (5189, Some(5103), "my-app worker")
        );
        assert_eq!(
            record.what,
            What::Moved {
                sk: 0xffff_8881_0ac5_1380,
                up: false,
                bytes: 75
            }
        );
        // A peek, and an error, move nothing.
        let peek = recv.replace("flags=0x0 (0)", "flags=0x2 (2)");
        assert!(matches!(
            parse(&peek).unwrap().what,
            What::Moved { bytes: 0, .. }
        ));
        let error = recv.replace("ret=0x4b (75)", "ret=0xfffffff5 (-11)");
        assert!(matches!(
            parse(&error).unwrap().what,
            What::Moved { bytes: 0, .. }
        ));
        let fork = "            bash-5044    (   5044) [000] .....   126.976465: sched_process_fork: parent_comm=bash parent_pid=0x13b4 (5044) child_comm=bash child_pid=0x13b5 (5045)";
        assert_eq!(parse(fork).unwrap().what, What::Fork { child: 5045 });
        // A task the kernel has not noted yet.
        let unknown = fork.replace("bash-5044    (   5044)", "<...>-5044   (-------)");
        let record = parse(&unknown).unwrap();
        assert_eq!((record.tid, record.tgid), (5044, None));
        assert_eq!(parse("# tracer: nop"), None);
    }
}
