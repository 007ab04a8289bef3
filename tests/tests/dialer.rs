//! The dialer's socket options, read back from the kernel: TCP keep-alive on every
//! connection, with Go's DefaultTransport values (idle 30 s, interval 15 s, 9 probes)
//! or the knobs', or none.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use roundtrip_host::KeepAlive;
use roundtrip_tests::*;
use rustix::net::sockopt;

/// This process's TCP sockets connected to 127.0.0.1:`port` (the transport runs
/// in-process), each duplicated through a pidfd of this process.
fn sockets_to(port: u16) -> Vec<rustix::fd::OwnedFd> {
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|fd| {
            rustix::process::pidfd_getfd(&me, fd, rustix::process::PidfdGetfdFlags::empty()).ok()
        })
        .filter(|fd| {
            let peer = rustix::net::getpeername(fd).ok().flatten();
            peer.and_then(|p| std::net::SocketAddr::try_from(p).ok())
                .is_some_and(|p| p.port() == port && p.ip().is_loopback())
        })
        .collect()
}

/// (keep-alive on, idle, interval, count) of `fd`.
fn keep_alive_of(fd: &rustix::fd::OwnedFd) -> (bool, Duration, Duration, u32) {
    (
        sockopt::socket_keepalive(fd).unwrap(),
        sockopt::tcp_keepidle(fd).unwrap(),
        sockopt::tcp_keepintvl(fd).unwrap(),
        sockopt::tcp_keepcnt(fd).unwrap(),
    )
}

#[tokio::test]
async fn every_connection_has_tcp_keep_alive_as_go_s_dialer_sets_it_or_as_told() {
    let told = KeepAlive {
        idle: Duration::from_secs(5),
        interval: Duration::from_secs(2),
        count: 3,
    };
    for (keep_alive, expected) in [
        (Some(KeepAlive::default()), Some((30, 15, 9))),
        (Some(told), Some((5, 2, 3))),
        (None, None),
    ] {
        let nginx = Nginx::start("location / { }");
        let (transport, _) = transport(|c| c.keep_alive = keep_alive);
        // A name, as most URLs have: the lookup, then the connect.
        let url = nginx.url("/small").replace("127.0.0.1", "localhost");
        let fetched = get(&transport, &url).await.unwrap();
        assert_eq!(fetched.status, 200);
        // The connection waits idle in the pool: one socket (the host holds it by two
        // descriptors: one reads and writes, one shuts it down).
        let sockets = sockets_to(nginx.port);
        let locals: std::collections::HashSet<_> = sockets
            .iter()
            .map(|fd| format!("{:?}", rustix::net::getsockname(fd).unwrap()))
            .collect();
        assert_eq!(locals.len(), 1, "{keep_alive:?}: {locals:?}");
        let (on, idle, interval, count) = keep_alive_of(&sockets[0]);
        match expected {
            Some((idle_s, interval_s, n)) => {
                assert!(on, "{keep_alive:?}");
                assert_eq!(
                    (idle.as_secs(), interval.as_secs(), count),
                    (idle_s, interval_s, n)
                );
            }
            None => assert!(!on, "no keep-alive asked for"),
        }
        transport.shutdown().await;
    }
}
