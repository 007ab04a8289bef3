//! `roundtrip`: the transport component from the command line.
//!
//! Exit codes: 0 success, 1 a request failed (one line naming the cause), 2 usage error.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // One thread is enough: the transport runs on a thread of its own, and workers of
    // `--concurrency` only wait on it.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("roundtrip: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(cli::run(args))
}
