//! `file://` through the host's `--allow-dir` grant (Go's `RegisterProtocol("file", …)`).

#![allow(clippy::unwrap_used)]

use roundtrip_host::events::EventKind;
use roundtrip_host::{Body, ErrorKind, Transport};
use roundtrip_tests::*;

/// A granted directory with a file, a sub-directory with an index, and a secret
/// beside it (outside the grant) that a symbolic link inside points to.
struct Tree {
    root: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let granted = root.path().join("www");
        std::fs::create_dir_all(granted.join("docs")).unwrap();
        std::fs::create_dir_all(granted.join("empty dir")).unwrap();
        std::fs::write(granted.join("notes.txt"), "line one\nline two\n").unwrap();
        std::fs::write(granted.join("docs/index.html"), "<h1>docs</h1>\n").unwrap();
        std::fs::write(granted.join("big.bin"), vec![7u8; 3 << 20]).unwrap();
        std::fs::write(root.path().join("secret"), "top secret\n").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), granted.join("escape")).unwrap();
        Self { root }
    }

    fn granted(&self) -> std::path::PathBuf {
        self.root.path().join("www")
    }

    /// `file://localhost/…` (an `http::Uri` needs the host part).
    fn url(&self, path: &str) -> String {
        format!("file://localhost{}{path}", self.root.path().display())
    }
}

async fn request(
    transport: &Transport,
    method: &str,
    url: &str,
) -> Result<Fetched, roundtrip_host::Error> {
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .body(Body::empty())
        .unwrap();
    fetch(transport, request).await
}

fn header<'a>(fetched: &'a Fetched, name: &str) -> &'a str {
    fetched.headers.get(name).unwrap().to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_files_are_served_like_go_file_server() {
    let tree = Tree::new();
    let (transport, recorder) = transport(|c| c.allow_dirs = vec![tree.granted()]);
    let file = get(&transport, &tree.url("/www/notes.txt")).await.unwrap();
    assert_eq!(
        (file.status, &file.body[..]),
        (200, &b"line one\nline two\n"[..])
    );
    assert_eq!(header(&file, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(header(&file, "content-length"), "18");
    assert!(header(&file, "last-modified").ends_with(" GMT"));
    // A large file streams through whole.
    let big = get(&transport, &tree.url("/www/big.bin")).await.unwrap();
    assert_eq!(big.body.len(), 3 << 20);
    assert!(big.body.iter().all(|b| *b == 7));
    // HEAD: the headers, no body.
    let head = request(&transport, "HEAD", &tree.url("/www/notes.txt"))
        .await
        .unwrap();
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(header(&head, "content-length"), "18");
    // A directory: redirect to its slash form, then its index.html.
    let bare = get(&transport, &tree.url("/www/docs")).await.unwrap();
    assert_eq!((bare.status, header(&bare, "location")), (301, "docs/"));
    let index = get(&transport, &tree.url("/www/docs/")).await.unwrap();
    assert_eq!(&index.body[..], b"<h1>docs</h1>\n");
    // Without an index: a listing, names escaped.
    let listing = get(&transport, &tree.url("/www/")).await.unwrap();
    let html = String::from_utf8(listing.body.to_vec()).unwrap();
    for line in [
        "<a href=\"big.bin\">big.bin</a>",
        "<a href=\"docs/\">docs/</a>",
        "<a href=\"empty%20dir/\">empty dir/</a>",
        "<a href=\"notes.txt\">notes.txt</a>",
    ] {
        assert!(html.contains(line), "{html}");
    }
    // Missing inside the grant: Go's 404; a method that writes: 405.
    let missing = get(&transport, &tree.url("/www/nope.txt")).await.unwrap();
    assert_eq!(
        (missing.status, &missing.body[..]),
        (404, &b"404 page not found\n"[..])
    );
    let post = request(&transport, "POST", &tree.url("/www/notes.txt"))
        .await
        .unwrap();
    assert_eq!((post.status, header(&post, "allow")), (405, "GET, HEAD"));
    // Events: no connection, the file:// key, a body_eof with the size.
    let events = recorder.events();
    assert_eq!(dials(&events), 0);
    assert!(
        events
            .iter()
            .all(|e| e.conn.is_none() && e.key.as_deref() == Some("file://"))
    );
    assert!(count(&events, |k| matches!(k, EventKind::BodyEof { bytes: 18 })) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_grant_are_denied_whether_or_not_they_exist() {
    let tree = Tree::new();
    let (transport, _) = transport(|c| c.allow_dirs = vec![tree.granted()]);
    for path in [
        "/secret",
        "/www/escape",
        "/www/../secret",
        "/www/%2e%2e/secret",
        "/nothing-here",
    ] {
        let error = get(&transport, &tree.url(path)).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::DestinationDenied, "{path}: {error}");
        assert!(
            error
                .message
                .contains("outside the directories granted with --allow-dir"),
            "{error}"
        );
        assert!(!error.message.contains("top secret"));
    }
    // An encoded slash is refused before the host is asked.
    let error = get(&transport, &tree.url("/www%2F..%2Fsecret"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::UriInvalid, "{error}");
    // No grant at all: nothing is readable.
    let (ungranted, _) = roundtrip_tests::transport(|_| {});
    let error = get(&ungranted, &tree.url("/www/notes.txt"))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::DestinationDenied);
    assert!(error.message.contains("no directory is granted"), "{error}");
}

#[test]
fn a_grant_that_is_not_a_directory_is_a_config_error() {
    let tree = Tree::new();
    for bad in [
        tree.granted().join("notes.txt"),
        tree.granted().join("missing"),
    ] {
        let config = roundtrip_host::Config {
            allow_dirs: vec![bad.clone()],
            ..Default::default()
        };
        let error = Transport::new(config).err().unwrap();
        assert_eq!(error.kind, ErrorKind::Config);
        assert!(error.message.starts_with("--allow-dir "), "{error}");
    }
}
