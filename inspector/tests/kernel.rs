//! `run --watch --record` of real apps (Node, Go, Python) that open a connection per
//! request or keep one: every connection in the file, counted as nginx counts them
//! (its `$connection` log), with the bytes it says it sent. As root the watch reads
//! the kernel's trace events; these tests need that mode, and say so when not root.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roundtrip_host::events::{Event, EventKind, WatchMode};
use roundtrip_tests::Nginx;

/// 2 KiB, the body each app fetches.
const BODY: usize = 2048;

fn nginx() -> Nginx {
    let nginx = Nginx::start_counting("keepalive_timeout 60s;");
    std::fs::write(nginx.root().join("body"), vec![b'x'; BODY]).unwrap();
    nginx
}

/// Whether the kernel's trace can be read here; when not, why, on stderr.
fn root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("not root: the kernel's trace events cannot be read, nothing to test");
    }
    root
}

/// `run --watch --record FILE -- CMD` with no display, killed after a minute; the
/// recorded events.
fn record(dir: &Path, name: &str, command: &[&str]) -> Vec<Event> {
    let file = dir.join(format!("{name}.jsonl"));
    let child = Command::new(env!("CARGO_BIN_EXE_roundtrip-inspector"))
        .args(["run", "--watch", "--record"])
        .arg(&file)
        .arg("--")
        .args(command)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait(child, name);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name}: {stderr}");
    let read = roundtrip_inspector::sources::read_jsonl(&file).unwrap();
    assert!(read.problems.is_empty(), "{:?}", read.problems);
    let mode = read.events.iter().find_map(|e| match &e.kind {
        EventKind::WatchStart { mode, .. } => Some(*mode),
        _ => None,
    });
    assert_eq!(mode, Some(WatchMode::Trace), "{name}: {stderr}");
    read.events
}

/// The connections to `port` in `events`: (id, pid, bytes down at the close).
fn connections(events: &[Event], port: u16) -> Vec<(u64, Option<u32>, u64)> {
    let peer = format!("127.0.0.1:{port}");
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SocketOpen { peer: p, pid, .. } if *p == peer => Some((e.app_conn?, *pid)),
            _ => None,
        })
        .map(|(id, pid)| {
            let closes: Vec<u64> = events
                .iter()
                .filter(|e| e.app_conn == Some(id))
                .filter_map(|e| match e.kind {
                    EventKind::SocketClose { bytes_down, .. } => Some(bytes_down),
                    _ => None,
                })
                .collect();
            assert_eq!(closes.len(), 1, "connection {id} closes once");
            (id, pid, closes[0])
        })
        .collect()
}

/// `bytes` (what a connection read, as drawn) is all nginx sent on its first connection.
fn first_got_all(nginx: &Nginx, bytes: u64) {
    let serial = &nginx.serials()[0];
    assert_eq!(bytes, nginx.bytes_sent(serial), "what nginx sent, read");
}

/// Node 20's `http.get`, five times 300 ms apart on a keep-alive agent: a body read
/// keeps one connection; a body destroyed unread costs one each.
#[test]
fn node_s_connections_are_all_seen_read_or_unread() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("get.js");
    std::fs::write(
        &script,
        "const http = require('http');\n\
         const agent = new http.Agent({ keepAlive: true });\n\
         const [port, how] = process.argv.slice(2);\n\
         let n = 0;\n\
         function one() {\n\
           http.get({ host: '127.0.0.1', port, path: '/body', agent }, (res) => {\n\
             const next = () => { if (++n < 5) setTimeout(one, 300); else agent.destroy(); };\n\
             if (how === 'read') { res.resume(); res.on('end', next); }\n\
             else { res.destroy(); next(); }\n\
           });\n\
         }\n\
         one();\n",
    )
    .unwrap();
    for (how, expected) in [("unread", 5), ("read", 1)] {
        let nginx = nginx();
        let port = nginx.port.to_string();
        let events = record(
            dir.path(),
            how,
            &["node", script.to_str().unwrap(), &port, how],
        );
        let seen = connections(&events, nginx.port);
        assert_eq!(
            nginx.connections(),
            (expected, 5),
            "{how}: the server's count"
        );
        assert_eq!(seen.len(), expected, "{how}: drawn as the server counts");
        if how == "read" {
            first_got_all(&nginx, seen[0].2);
        }
    }
}

/// Go's `net/http` (Debian's golang-go builds it here), in one `sh -c`: a program that
/// reads each body to EOF (one connection), then one that closes each unread (five),
/// each connection under the pid of the program that opened it.
#[test]
fn go_s_connections_are_all_seen_across_two_programs() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("get.go");
    std::fs::write(
        &source,
        "package main\n\
         import (\"io\"; \"net/http\"; \"os\"; \"time\")\n\
         func main() {\n\
           for i := 0; i < 5; i++ {\n\
             res, err := http.Get(\"http://127.0.0.1:\" + os.Args[1] + \"/body\")\n\
             if err != nil { panic(err) }\n\
             if os.Args[2] == \"read\" { io.Copy(io.Discard, res.Body) }\n\
             res.Body.Close()\n\
             time.Sleep(300 * time.Millisecond)\n\
           }\n\
         }\n",
    )
    .unwrap();
    let program = dir.path().join("get");
    let built = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&program)
        .arg(&source)
        .env("GOCACHE", dir.path().join("gocache"))
        .env("GOPATH", dir.path().join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "off")
        .output()
        .expect("go (Debian's golang-go; `scripts/test` installs it)");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let nginx = nginx();
    let program = program.to_str().unwrap();
    let script = format!(
        "{program} {port} read; {program} {port} unread",
        port = nginx.port
    );
    let events = record(dir.path(), "go", &["sh", "-c", &script]);
    let seen = connections(&events, nginx.port);
    assert_eq!(nginx.connections(), (6, 10), "the server's count");
    assert_eq!(seen.len(), 6, "drawn as the server counts");
    // Two programs: the first's one connection, the second's five.
    let first = seen[0].1;
    assert!(first.is_some());
    assert!(seen[1..].iter().all(|c| c.1 == seen[1].1 && c.1 != first));
    first_got_all(&nginx, seen[0].2);
}

/// 200 connections one after another, each opened, used and closed in well under a
/// millisecond (Python's sockets): all 200 drawn.
#[test]
fn two_hundred_connections_each_under_a_millisecond_are_all_seen() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nginx = nginx();
    let script = format!(
        "import socket\n\
         for i in range(200):\n\
         \x20   s = socket.create_connection(('127.0.0.1', {port}))\n\
         \x20   s.sendall(b'GET /body HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n\
         \x20   while s.recv(65536):\n\
         \x20       pass\n\
         \x20   s.close()\n",
        port = nginx.port
    );
    let events = record(dir.path(), "loop", &["python3", "-c", &script]);
    let seen = connections(&events, nginx.port);
    assert_eq!(nginx.connections(), (200, 200), "the server's count");
    assert_eq!(seen.len(), 200, "drawn as the server counts");
    let sent: u64 = nginx.serials().iter().map(|s| nginx.bytes_sent(s)).sum();
    assert_eq!(
        seen.iter().map(|c| c.2).sum::<u64>(),
        sent,
        "every byte nginx sent"
    );
}

/// Without privileges (root drops to `nobody`): no failure — the watch samples
/// instead, and `watch_start` says so and why; a connection that lives across samples
/// is still drawn, as nginx counts it.
#[test]
fn without_privileges_it_falls_back_to_sampling_and_says_so() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // `nobody` writes the recording here.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let file = shared.join("sampled.jsonl");
    let nginx = nginx();
    let script = format!(
        "import http.client, time\n\
         c = http.client.HTTPConnection('127.0.0.1', {port})\n\
         for i in range(3):\n\
         \x20   c.request('GET', '/body')\n\
         \x20   c.getresponse().read()\n\
         \x20   time.sleep(0.2)\n\
         c.close()\n",
        port = nginx.port
    );
    let child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_roundtrip-inspector"))
        .args(["run", "--watch", "--record"])
        .arg(&file)
        .args(["--", "python3", "-c", &script])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait(child, "sampled");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("by sampling"), "{stderr}");
    let events = roundtrip_inspector::sources::read_jsonl(&file)
        .unwrap()
        .events;
    let start = events.iter().find_map(|e| match &e.kind {
        EventKind::WatchStart { mode, misses, .. } => Some((*mode, misses.clone())),
        _ => None,
    });
    let (mode, misses) = start.expect("watch_start");
    assert_eq!(mode, WatchMode::Sample);
    assert!(
        misses.contains("between two samples") && misses.contains("cannot"),
        "{misses}"
    );
    assert_eq!(nginx.connections(), (1, 3));
    assert_eq!(connections(&events, nginx.port).len(), 1);
}

/// Waits for `child`, killed (and failed) after a minute.
fn wait(mut child: std::process::Child, name: &str) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name}: the inspector did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Kills `pids` (with SIGKILL) if the returned guard is still alive after `limit`: a
/// blocking read of their output, or a wait for them, then ends instead of hanging.
fn kill_after(pids: Vec<u32>, limit: Duration) -> std::sync::mpsc::Sender<()> {
    let (guard, ended) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        // Dropped (the test is over) or sent to: nothing to kill.
        if ended.recv_timeout(limit) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            for pid in pids {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    });
    guard
}

/// `watch PID --record` of a running Python that holds a connection opened before
/// the watch began, then starts a child that opens 20 connections of under a
/// millisecond each, then uses its own connection again: all 21, each under the pid
/// that opened it, as nginx counts them.
#[test]
fn watch_pid_records_every_connection_of_a_child_started_later() {
    use std::io::{BufRead, BufReader, Write};
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nginx = nginx();
    let get = format!(
        "def get(s):\n\
         \x20   s.sendall(b'GET /body HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n\
         \x20   got = b''\n\
         \x20   while not got.endswith(b'x' * {BODY}):\n\
         \x20       got += s.recv(65536)\n"
    );
    let child = format!(
        "import socket\n{get}\
         for i in range(20):\n\
         \x20   s = socket.create_connection(('127.0.0.1', {port}))\n\
         \x20   get(s)\n\
         \x20   s.close()\n",
        port = nginx.port
    );
    let parent = format!(
        "import socket, subprocess, sys\n{get}\
         kept = socket.create_connection(('127.0.0.1', {port}))\n\
         get(kept)\n\
         print('ready', flush=True)\n\
         sys.stdin.readline()\n\
         subprocess.run([sys.executable, '-c', {child:?}], check=True)\n\
         get(kept)\n\
         kept.close()\n",
        port = nginx.port
    );
    let mut python = Command::new("python3")
        .args(["-c", &parent])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Its reads and waits below block: a minute at most.
    let python_guard = kill_after(vec![python.id()], Duration::from_secs(60));
    let mut said = String::new();
    BufReader::new(python.stdout.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert_eq!(said, "ready\n");
    let file = dir.path().join("pid.jsonl");
    let mut inspector = Command::new(env!("CARGO_BIN_EXE_roundtrip-inspector"))
        .args(["watch", &python.id().to_string(), "--record"])
        .arg(&file)
        .env_remove("DISPLAY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let inspector_guard = kill_after(vec![inspector.id()], Duration::from_secs(60));
    // Once the watch has begun (it says so), the child may start.
    let mut stderr = BufReader::new(inspector.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("watching pid") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the watch never began"
        );
    }
    python.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(python.wait().unwrap().success());
    drop(python_guard);
    let output = wait(inspector, "watch pid");
    drop(inspector_guard);
    assert!(output.status.success());
    let events = roundtrip_inspector::sources::read_jsonl(&file)
        .unwrap()
        .events;
    assert!(
        events.iter().any(|e| matches!(
            e.kind,
            EventKind::WatchStart {
                mode: WatchMode::Trace,
                ..
            }
        )),
        "{line}"
    );
    let seen = connections(&events, nginx.port);
    assert_eq!(nginx.connections(), (21, 22), "the server's count");
    assert_eq!(seen.len(), 21, "drawn as the server counts");
    // The kept connection (sampled: open before the watch) under the parent, the 20
    // under the child.
    let parent_pid = Some(python.id());
    assert_eq!(seen.iter().filter(|c| c.1 == parent_pid).count(), 1);
    let children: std::collections::HashSet<_> = seen
        .iter()
        .filter(|c| c.1 != parent_pid)
        .map(|c| c.1)
        .collect();
    assert_eq!(children.len(), 1, "{children:?}");
    // Both of the kept connection's answers, counted at its close.
    let kept = seen.iter().find(|c| c.1 == parent_pid).unwrap();
    first_got_all(&nginx, kept.2);
}
