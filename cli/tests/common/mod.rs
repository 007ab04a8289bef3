//! What the CLI tests share: a stand-in inspector, and servers that misbehave on
//! purpose (silent, stalling, unreachable) for the guests' failure paths.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

/// Runs `command` to its end and returns what it printed, or fails the test when it
/// has not ended within `limit` (the child is killed first): a guest or a request
/// that hangs fails its test instead of holding up the run.
pub fn output_within(
    command: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::process::Stdio;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (done, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match output.recv_timeout(limit) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // Not reaped yet, so the pid is still the child's.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
            let printed = output.recv().unwrap().unwrap();
            panic!(
                "{command:?} had not ended after {limit:?}: killed\n{}{}",
                String::from_utf8_lossy(&printed.stdout),
                String::from_utf8_lossy(&printed.stderr)
            );
        }
    }
}

/// Every order in which a `join!` of a request's `send`, its transmit future and its
/// body can poll them (`checks upload ORDER …`).
pub const JOIN_ORDERS: [&str; 6] = [
    "send,transmit,body",
    "send,body,transmit",
    "transmit,send,body",
    "transmit,body,send",
    "body,send,transmit",
    "body,transmit,send",
];

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
