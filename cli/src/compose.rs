//! `roundtrip compose GUEST.wasm -o OUT.wasm`: a wasi:http guest with the transport
//! plugged into its `wasi:http/client` import, as one component for another host.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::usage_error;

#[derive(Args)]
pub struct ComposeArgs {
    /// The guest: a component importing `wasi:http/client@0.3.0`.
    guest: PathBuf,
    /// Where to write the composed component.
    #[arg(short, long, value_name = "OUT.wasm")]
    output: PathBuf,
    /// Leave `net`, `files` and `observe` as imports for a host that supplies them
    /// (as `roundtrip run` does) instead of plugging in their WASI 0.3 versions.
    #[arg(long)]
    host_net: bool,
}

pub fn run(args: ComposeArgs) -> ExitCode {
    let guest = match std::fs::read(&args.guest) {
        Ok(guest) => guest,
        Err(e) => return usage_error(&format!("cannot read {}: {e}", args.guest.display())),
    };
    let composed = match roundtrip_host::run::compose(&guest, args.host_net) {
        Ok(composed) => composed,
        Err(message) => {
            eprintln!("roundtrip compose: {message}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::write(&args.output, composed) {
        eprintln!(
            "roundtrip compose: cannot write {}: {e}",
            args.output.display()
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
