//! `roundtrip get` as curl: `-L`, `--max-redirs`, `-b`/`-c` cookie files read and
//! written as curl reads and writes them (Debian's curl on the other side), `-m`;
//! against nginx, whose log is the truth.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use roundtrip_tests::Nginx;

fn run(program: &str, args: &[&str]) -> Output {
    let mut command = Command::new(program);
    command.args(args).env_remove("ROUNDTRIP_INSPECT");
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        command.env_remove(var);
    }
    common::output_within(&mut command, Duration::from_secs(60))
}

fn roundtrip(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_roundtrip"), args)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn nginx() -> Nginx {
    let nginx = Nginx::start_logging(
        "$request_method $uri \"$http_cookie\"",
        "location = /login { add_header Set-Cookie \"sid=abc123; Path=/; HttpOnly\";
        add_header Set-Cookie \"pref=dark; Path=/; Max-Age=3600\"; return 302 /small; }
    location = /loop { return 302 /loop; }
    location = /slow { limit_rate 1k; }",
    );
    std::fs::write(nginx.root().join("slow"), vec![b'x'; 64 << 10]).unwrap();
    nginx
}

/// The cookies of a log line, sorted.
fn cookies(line: &str) -> String {
    let mut pairs: Vec<&str> = line.split('"').nth(1).unwrap().split("; ").collect();
    pairs.sort_unstable();
    pairs.join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_follows_and_the_cookie_jar_is_curl_s_both_ways() {
    let nginx = nginx();
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.txt");
    // Without -L the redirect is the answer, as in curl.
    let output = roundtrip(&["get", "-i", &nginx.url("/login")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("HTTP/1.1 302 "));
    // -L follows it with the cookies it set; -c writes them when done.
    let output = roundtrip(&[
        "get",
        "-v",
        "-L",
        "-c",
        ours.to_str().unwrap(),
        &nginx.url("/login"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(output.stdout, b"hello, world\n");
    assert!(
        stderr(&output).contains(&format!(
            "* Issue another request to this URL: '{}'",
            nginx.url("/small")
        )),
        "{}",
        stderr(&output)
    );
    let written = std::fs::read_to_string(&ours).unwrap();
    assert!(
        written.starts_with("# Netscape HTTP Cookie File\n"),
        "{written}"
    );
    assert!(
        written.contains("#HttpOnly_127.0.0.1\tFALSE\t/\tFALSE\t0\tsid\tabc123\n"),
        "{written}"
    );
    // curl reads our file and sends both cookies.
    let output = run(
        "curl",
        &["-sS", "-b", ours.to_str().unwrap(), &nginx.url("/small")],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    // curl writes its own; we read it and send both cookies.
    let theirs = dir.path().join("theirs.txt");
    let output = run(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-c",
            theirs.to_str().unwrap(),
            &nginx.url("/login"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let output = roundtrip(&["get", "-b", theirs.to_str().unwrap(), &nginx.url("/small")]);
    assert!(output.status.success(), "{}", stderr(&output));
    // And a literal `-b 'name=value'`.
    let output = roundtrip(&["get", "-b", "a=1; b=2", &nginx.url("/small")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let log = nginx.log(7).await;
    let seen: Vec<(String, String)> = log
        .iter()
        .map(|line| (line.split(' ').nth(1).unwrap().to_owned(), cookies(line)))
        .collect();
    let both = "pref=dark; sid=abc123".to_owned();
    assert_eq!(
        seen,
        [
            ("/login".to_owned(), "-".to_owned()),
            ("/login".to_owned(), "-".to_owned()),
            ("/small".to_owned(), both.clone()),
            ("/small".to_owned(), both.clone()),
            ("/login".to_owned(), "-".to_owned()),
            ("/small".to_owned(), both),
            ("/small".to_owned(), "a=1; b=2".to_owned()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_redirs_and_max_time_end_a_transfer_with_a_named_error() {
    let nginx = nginx();
    let output = roundtrip(&["get", "-L", "--max-redirs", "3", &nginx.url("/loop")]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output).trim(),
        format!(
            "roundtrip: {}: Maximum (3) redirects followed",
            nginx.url("/loop")
        )
    );
    // curl's count: the first request and three redirects followed.
    assert_eq!(nginx.log(4).await.len(), 4);
    let started = Instant::now();
    let output = roundtrip(&["get", "-m", "1", "-o", "/dev/null", &nginx.url("/slow")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("Client.Timeout exceeded while reading body"),
        "{}",
        stderr(&output)
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    // `-i -L` prints every head it met, the one past the limit too, as curl does.
    let status_lines = |output: &Output| -> Vec<String> {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| l.starts_with("HTTP/"))
            .map(|l| l.trim_end().to_owned())
            .collect()
    };
    let loop_url = nginx.url("/loop");
    let args = ["-i", "-L", "--max-redirs", "2", loop_url.as_str()];
    let ours = roundtrip(&[&["get"][..], &args].concat());
    let theirs = run("curl", &[&["-s"][..], &args].concat());
    assert_eq!(status_lines(&ours), ["HTTP/1.1 302 Moved Temporarily"; 3]);
    assert_eq!(status_lines(&ours), status_lines(&theirs));
}
