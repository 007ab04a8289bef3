//! Counting a run's sockets from the kernel's tables (`/proc/net/tcp`, `tcp6`): how
//! many connections a client holds open, and how many it leaves in TIME_WAIT (each
//! new connection per request leaves one for 60 s once closed).

use procfs::net::{TcpNetEntry, TcpState};

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
    let owned: Option<std::collections::HashSet<u64>> = owner.map(|pid| {
        let fds = i32::try_from(pid)
            .ok()
            .and_then(|pid| procfs::process::Process::new(pid).ok())
            .and_then(|process| process.fd().ok());
        fds.into_iter()
            .flatten()
            .filter_map(|fd| match fd.ok()?.target {
                procfs::process::FDTarget::Socket(inode) => Some(inode),
                _ => None,
            })
            .collect()
    });
    let entries: Vec<TcpNetEntry> = [procfs::net::tcp(), procfs::net::tcp6()]
        .into_iter()
        .flat_map(|table| table.unwrap_or_default())
        .collect();
    let mut count = Count::default();
    for entry in entries {
        let to_port = entry.remote_address.port() == port;
        let ours = owned
            .as_ref()
            .is_none_or(|owned| owned.contains(&entry.inode));
        match entry.state {
            TcpState::Established if to_port && ours => count.open += 1,
            TcpState::TimeWait if to_port || entry.local_address.port() == port => {
                count.time_wait += 1
            }
            _ => {}
        }
    }
    count
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
}
