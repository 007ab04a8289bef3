//! Counting a run's sockets from the kernel's tables (sock_diag over netlink, what
//! `ss` reads): how many connections a client holds open, and how many it leaves in
//! TIME_WAIT (each new connection per request leaves one for 60 s once closed).
//!
//! The open count is sampled while a run goes on, on the machine being measured, so
//! it must cost next to nothing: the kernel is asked for established sockets only, and
//! sends nothing else (reading `/proc/net/tcp` ten times a second, with the tens of
//! thousands of TIME_WAIT sockets earlier runs leave, took a third of a core from the
//! hosts under test). The kernel still walks every socket it has to answer, a few
//! milliseconds with that many, so the sampler spaces its asks by their cost.

use std::collections::HashSet;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

/// Sockets to one server port, now.
#[derive(Debug, Default, Clone, Copy)]
pub struct Count {
    /// Client-side connections to the port that are open.
    pub open: u64,
    /// Connections to or from the port in TIME_WAIT, on either side.
    pub time_wait: u64,
}

pub fn count(port: u16) -> Count {
    count_of(port, None)
}

/// [`count`], the open connections only those of process `owner` (by the socket
/// inodes among its descriptors): a serve host's own upstream connections, not those
/// another host is still closing.
pub fn count_of(port: u16, owner: Option<u32>) -> Count {
    Count {
        open: open_to(port, owner),
        time_wait: time_wait_at(port),
    }
}

/// Established client-side connections to `port` (only `owner`'s when given).
pub fn open_to(port: u16, owner: Option<u32>) -> u64 {
    let owned: Option<HashSet<u32>> = owner.map(socket_inodes);
    sockets(StateFlags::ESTABLISHED)
        .filter(|s| s.remote_port == port)
        .filter(|s| owned.as_ref().is_none_or(|owned| owned.contains(&s.inode)))
        .count() as u64
}

/// Connections to or from `port` in TIME_WAIT.
fn time_wait_at(port: u16) -> u64 {
    sockets(StateFlags::TIME_WAIT)
        .filter(|s| s.remote_port == port || s.local_port == port)
        .count() as u64
}

/// The inodes of `pid`'s sockets.
fn socket_inodes(pid: u32) -> HashSet<u32> {
    let fds = i32::try_from(pid)
        .ok()
        .and_then(|pid| procfs::process::Process::new(pid).ok())
        .and_then(|process| process.fd().ok());
    fds.into_iter()
        .flatten()
        .filter_map(|fd| match fd.ok()?.target {
            procfs::process::FDTarget::Socket(inode) => u32::try_from(inode).ok(),
            _ => None,
        })
        .collect()
}

/// One TCP socket as the kernel lists it.
struct Listed {
    local_port: u16,
    remote_port: u16,
    inode: u32,
}

/// The kernel's TCP sockets (IPv4 and IPv6) in `states`; none if it cannot be asked.
fn sockets(states: StateFlags) -> impl Iterator<Item = Listed> {
    let diag = Socket::new(NETLINK_SOCK_DIAG)
        .ok()
        .filter(|diag| diag.connect(&netlink_sys::SocketAddr::new(0, 0)).is_ok());
    let mut listed = Vec::new();
    if let Some(diag) = diag {
        for family in [AF_INET, AF_INET6] {
            listed.extend(dump(&diag, family, states.clone()));
        }
    }
    listed.into_iter()
}

/// One sock_diag dump of `family`'s TCP sockets in `states`.
fn dump(diag: &Socket, family: u8, states: StateFlags) -> Vec<Listed> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    let mut listed = Vec::new();
    if diag.send(&buf, 0).is_err() {
        return listed;
    }
    let mut received = Vec::with_capacity(64 * 1024);
    loop {
        received.clear();
        let Ok(size) = diag.recv(&mut received, 0) else {
            return listed;
        };
        let mut offset = 0;
        while offset < size {
            let Ok(message) =
                NetlinkMessage::<SockDiagMessage>::deserialize(&received[offset..size])
            else {
                return listed;
            };
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    let id = &response.header.socket_id;
                    listed.push(Listed {
                        local_port: id.source_port,
                        remote_port: id.destination_port,
                        inode: response.header.inode,
                    });
                }
                NetlinkPayload::InnerMessage(_) => {}
                _ => return listed,
            }
            let length = message.header.length as usize;
            if length == 0 {
                return listed;
            }
            // Messages are padded to 4 bytes.
            offset += length.next_multiple_of(4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_client_connections_to_a_port_are_counted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let before = count(port).open;
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
            .collect();
        assert_eq!(count(port).open, before + 3);
        assert_eq!(count_of(port, Some(std::process::id())).open, 3);
        assert_eq!(count_of(port, Some(1)).open, 0, "not init's");
        drop(clients);
    }

    /// A connection closed by this end first waits in TIME_WAIT on this side.
    #[test]
    fn a_connection_this_end_closed_first_is_counted_in_time_wait() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        drop(client);
        let mut byte = [0u8; 1];
        // The server reads the FIN, then closes its side: the client's socket is left
        // in TIME_WAIT.
        assert_eq!(
            std::io::Read::read(&mut &server, &mut byte).expect("eof"),
            0
        );
        drop(server);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while count(port).time_wait == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no TIME_WAIT socket seen"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(count(port).time_wait, 1);
    }
}
