//! What the CLI tests share.

#![allow(clippy::unwrap_used)]

/// A stand-in inspector: a listener on a free port, and a thread that collects the
/// JSON lines of the first connection until it closes.
pub fn fake_inspector() -> (String, std::thread::JoinHandle<Vec<serde_json::Value>>) {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let reader = std::thread::spawn(move || {
        let (socket, _) = listener.accept().unwrap();
        std::io::BufReader::new(socket)
            .lines()
            .map(|line| serde_json::from_str(&line.unwrap()).unwrap())
            .collect()
    });
    (addr, reader)
}
