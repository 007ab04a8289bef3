//! `roundtrip run` (`roundtrip_host::run::run`) of wasi:http 0.2 commands: their
//! `outgoing-handler` requests go through the hooks on one transport.

#![allow(clippy::unwrap_used)]

use roundtrip_host::events::{CloseReason, EventKind};
use roundtrip_host::run::Client;
use roundtrip_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_02_command_fetches_five_times_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fetch-py.wasm");
    let guest =
        tokio::task::spawn_blocking(move || componentize_py("fetch-py", "wit", "fetch-py", &out))
            .await
            .unwrap();
    let nginx = Nginx::start_counting("location / { }");
    let (recorder, config) = {
        let recorder = roundtrip_host::events::Recorder::new();
        let config = roundtrip_host::Config {
            events: roundtrip_host::events::Events::new().with(recorder.clone()),
            inspect_from_env: false,
            ..Default::default()
        };
        (recorder, config)
    };
    let args = ["fetch-py".to_owned(), nginx.url("/small"), "5".to_owned()];
    let ran = tokio::time::timeout(
        FETCH_LIMIT,
        roundtrip_host::run::run(&guest, &args, &[], config, Client::Plugged),
    )
    .await
    .expect("the guest did not finish")
    .unwrap();
    assert!(ran, "the guest's run failed");
    assert_eq!(
        nginx.connections(),
        (1, 5),
        "nginx's (connections, requests)"
    );
    // The pool's idle connection closed, with its event, before `run` returned.
    let events = recorder.events();
    assert_eq!(closes(&events), vec![CloseReason::TransportShutdown]);
    assert_eq!(
        count(&events, |k| matches!(
            k,
            EventKind::GotConn { reused: true, .. }
        )),
        4
    );
}
