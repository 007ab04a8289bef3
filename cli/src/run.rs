//! `roundtrip run GUEST.wasm [ARGS]...`: an unmodified wasi:http 0.3 command with this
//! transport plugged into its `wasi:http/client` import (see `roundtrip_host::run`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use roundtrip_host::run::Client;

use super::{EventArgs, ReachArgs, usage_error};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    events: EventArgs,
    #[command(flatten)]
    reach: ReachArgs,
    /// Give the guest the environment variable NAME, set to VALUE, or to this
    /// process's value when `=VALUE` is left out (repeatable; e.g. `--env HTTP_PROXY`).
    #[arg(long, value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// A 0.3 guest's HTTP client: `plugged` (the transport plugged into its
    /// `wasi:http/client` import; `ROUNDTRIP_*` knobs from `--env`) or `host` (the
    /// host's wasi:http on this transport, as `roundtrip serve` gives services and
    /// 0.2 guests always get).
    #[arg(long, value_enum, default_value = "plugged")]
    client: ClientArg,
    /// The guest: a wasi:cli command (0.3, or 0.2 importing
    /// `wasi:http/outgoing-handler`).
    guest: PathBuf,
    /// Arguments for the guest.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ClientArg {
    Plugged,
    Host,
}

pub async fn run(args: RunArgs) -> ExitCode {
    let events = match args.events.events() {
        Ok(events) => events,
        Err(message) => return usage_error(&message),
    };
    let guest = match std::fs::read(&args.guest) {
        Ok(guest) => guest,
        Err(e) => return usage_error(&format!("cannot read {}: {e}", args.guest.display())),
    };
    let config = match args.reach.config(events, args.events.inspect_from_env()) {
        Ok(config) => config,
        Err(message) => return usage_error(&message),
    };
    // The guest sees its own name first, as a command does.
    let name = args
        .guest
        .file_stem()
        .map_or_else(|| "guest".to_owned(), |s| s.to_string_lossy().into_owned());
    let argv: Vec<String> = std::iter::once(name).chain(args.args).collect();
    let env = environment(&args.env);
    let client = match args.client {
        ClientArg::Plugged => Client::Plugged,
        ClientArg::Host => Client::Host,
    };
    match roundtrip_host::run::run(&guest, &argv, &env, config, client).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("roundtrip run: {message}");
            ExitCode::from(1)
        }
    }
}

/// `--env` entries: `NAME=VALUE`, or `NAME` for this process's value (left out when
/// it has none).
pub fn environment(entries: &[String]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter_map(|entry| match entry.split_once('=') {
            Some((name, value)) => Some((name.to_owned(), value.to_owned())),
            None => std::env::var(entry)
                .ok()
                .map(|value| (entry.clone(), value)),
        })
        .collect()
}
