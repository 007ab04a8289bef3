//! Which local process opened an app's connection to the proxy (`app_conn_open`'s
//! `pid` and `process`), found the way `ss -p` finds it: the socket from `app` to the
//! proxy in `/proc/net/tcp{,6}` gives an inode, and the process holding a descriptor
//! on `socket:[inode]` owns it.
//!
//! A process whose descriptors this user may not read (another user's, without root)
//! is not found: the event then has no `pid`.

use std::net::{IpAddr, SocketAddr};

use procfs::process::{FDTarget, Process};

/// The process that owns a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// Its command line (arguments joined by spaces, at most [`COMMAND_MAX`] chars),
    /// or its name when the command line cannot be read.
    pub process: String,
}

/// The most of a command line an event carries.
const COMMAND_MAX: usize = 160;

/// The local process whose socket goes from `app` to `proxy`. `first` is tried before
/// every other process (the owner of the last connection: apps open many).
pub fn find(app: SocketAddr, proxy: SocketAddr, first: Option<u32>) -> Option<Owner> {
    let inode = socket_inode(app, proxy)?;
    let first = first.and_then(|pid| Process::new(i32::try_from(pid).ok()?).ok());
    let others = procfs::process::all_processes()
        .into_iter()
        .flatten()
        .filter_map(Result::ok);
    first
        .into_iter()
        .chain(others)
        .find(|process| holds(process, inode))
        .map(|process| Owner {
            pid: u32::try_from(process.pid).unwrap_or_default(),
            process: command(&process),
        })
}

/// The inode of the socket bound to `app` and connected to `proxy`.
fn socket_inode(app: SocketAddr, proxy: SocketAddr) -> Option<u64> {
    let v4 = procfs::net::tcp().unwrap_or_default();
    let v6 = procfs::net::tcp6().unwrap_or_default();
    v4.into_iter()
        .chain(v6)
        .find(|entry| same(entry.local_address, app) && same(entry.remote_address, proxy))
        .map(|entry| entry.inode)
}

/// Equal addresses, an IPv4 address and its IPv4-mapped IPv6 form being the same.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canonical = |ip: IpAddr| ip.to_canonical();
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

fn holds(process: &Process, inode: u64) -> bool {
    let Ok(fds) = process.fd() else {
        return false;
    };
    fds.filter_map(Result::ok)
        .any(|fd| matches!(fd.target, FDTarget::Socket(i) if i == inode))
}

/// `process`'s command line (at most [`COMMAND_MAX`] characters), or its name.
pub fn command(process: &Process) -> String {
    let line = process
        .cmdline()
        .ok()
        .filter(|args| !args.is_empty())
        .map(|args| args.join(" "));
    let line = line
        .or_else(|| process.stat().ok().map(|stat| stat.comm))
        .unwrap_or_default();
    match line.char_indices().nth(COMMAND_MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn this_process_owns_its_own_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(proxy).unwrap();
        let app = client.local_addr().unwrap();
        let owner = find(app, proxy, None).expect("found in /proc");
        assert_eq!(owner.pid, std::process::id());
        assert!(
            owner.process.contains("roundtrip_proxy"),
            "{}",
            owner.process
        );
        // Found first when hinted, and the hint does not mislead: pid 1 holds no such socket.
        assert_eq!(find(app, proxy, Some(owner.pid)), Some(owner.clone()));
        assert_eq!(find(app, proxy, Some(1)), Some(owner));
        drop(client);
    }

    #[test]
    fn an_address_nobody_holds_has_no_owner() {
        let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(find(nowhere, nowhere, None), None);
    }

    #[test]
    fn mapped_and_plain_ipv4_are_the_same_address() {
        let plain: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:80".parse().unwrap();
        assert!(same(plain, mapped));
        assert!(!same(plain, "127.0.0.1:81".parse().unwrap()));
    }
}
