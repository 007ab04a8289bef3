//! `roundtrip demo`: classroom scenarios against built-in local servers, narrated.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use http_body_util::BodyExt;
use roundtrip_host::events::{Callback, Event, EventKind, Recorder};
use roundtrip_host::local_server::LocalServer;
use roundtrip_host::{Body, Config, Transport};

use super::{EventArgs, narrate, usage_error};

#[derive(Args)]
pub struct DemoArgs {
    /// Scenario to run (see --list).
    #[arg(value_name = "SCENARIO", default_value = "reuse")]
    scenario: String,
    /// List the scenarios.
    #[arg(long)]
    list: bool,
    /// Pause between steps so a class can follow along.
    #[arg(long)]
    slow: bool,
    #[command(flatten)]
    events: EventArgs,
}

/// The scenarios: name and what it shows.
const SCENARIOS: &[(&str, &str)] = &[(
    "reuse",
    "three requests in a row share one connection: one dial, then two reuses",
)];

pub async fn run(args: DemoArgs) -> ExitCode {
    if args.list {
        for (name, about) in SCENARIOS {
            println!("{name:<12} {about}");
        }
        return ExitCode::SUCCESS;
    }
    let events = match args.events.events() {
        Ok(events) => events,
        Err(message) => return usage_error(&message),
    };
    let inspect_from_env = args.events.inspect_from_env();
    match args.scenario.as_str() {
        "reuse" => report(reuse(events, inspect_from_env, args.slow).await),
        other => usage_error(&format!(
            "unknown scenario {other:?}; `roundtrip demo --list` shows them"
        )),
    }
}

fn report(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("roundtrip demo: {message}");
            ExitCode::from(1)
        }
    }
}

fn say(text: &str) {
    println!("{text}");
}

/// Prints each event worth telling as it happens, with the event behind it.
fn narrator() -> Callback<impl Fn(&Event) + Send + Sync> {
    Callback(|event: &Event| {
        if let Some(sentence) = narrate::plain(event) {
            println!("    {sentence:<78} [{}]", event.name());
        }
    })
}

async fn pause(slow: bool) {
    if slow {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn reuse(
    events: roundtrip_host::events::Events,
    inspect_from_env: bool,
    slow: bool,
) -> Result<(), String> {
    let server = LocalServer::start()
        .await
        .map_err(|e| format!("cannot start the local server: {e}"))?;
    let recorder = Recorder::new();
    let config = Config {
        events: events.with(recorder.clone()).with(narrator()),
        inspect_from_env,
        ..Config::default()
    };
    let transport = Transport::new(config).map_err(|e| e.to_string())?;
    say(&format!(
        "Scenario `reuse`: a local server listens on {}. We send three GET requests, one after\n\
         the other, on one transport, reading each body to its end.\n",
        server.addr()
    ));
    for step in 1..=3 {
        say(&format!("Step {step}: GET {}", server.url("/small")));
        let request = http::Request::get(server.url("/small"))
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        let response = transport
            .round_trip(request)
            .await
            .map_err(|e| e.to_string())?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        // The pool acts on the body's end before the caller sees it; let the last
        // event lines print before the next step.
        tokio::time::sleep(Duration::from_millis(20)).await;
        say(&format!("    (the body was {} bytes)\n", body.len()));
        pause(slow).await;
    }
    let stats = transport.stats().await;
    transport.shutdown().await;
    let events = recorder.events();
    let dials = count(&events, |k| matches!(k, EventKind::DialStart { .. }));
    let reuses = count(&events, |k| {
        matches!(k, EventKind::GotConn { reused: true, .. })
    });
    say(&format!(
        "Result: {dials} dial and {reuses} reuses (the transport counted {} dials and {} reuses;\n\
         the server accepted {} TCP connection for {} requests).\n\
         Keep-alive saved two TCP handshakes: that is what a connection pool is for.",
        stats.dials,
        stats.reuses,
        server.connections(),
        server.requests()
    ));
    if dials == 1 && reuses == 2 && server.connections() == 1 {
        Ok(())
    } else {
        Err(format!(
            "expected 1 dial and 2 reuses, saw {dials} dials and {reuses} reuses"
        ))
    }
}

fn count(events: &[Event], wanted: impl Fn(&EventKind) -> bool) -> usize {
    events.iter().filter(|e| wanted(&e.kind)).count()
}
