//! What the CLI tests share: a stand-in inspector, and servers that misbehave on
//! purpose (silent, stalling, unreachable) for the guests' failure paths.

#![allow(dead_code)]
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

/// A server that reads what comes and never answers: a failure is the request's own.
pub async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

/// A server that sends a head and 4 of 10 body bytes, then stalls.
pub async fn stalling_server() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
                .await;
            held.push(socket);
        }
    });
    (url, task)
}

/// A listener whose accept queue is full: a dial to it hangs (its SYN is dropped).
pub async fn unanswered_dial() -> (String, Vec<tokio::net::TcpStream>, tokio::net::TcpListener) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(stream);
        }
    }
    (format!("http://{addr}/"), fillers, listener)
}
