//! `roundtrip compose GUEST.wasm -o OUT.wasm`: a wasi:http guest with the transport
//! plugged into its `wasi:http/client` import, as one component for another host.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use roundtrip_host::run::Composition;

use super::usage_error;

#[derive(Args)]
pub struct ComposeArgs {
    /// The guest: a component importing `wasi:http/client@0.3.0` (a command or a
    /// service).
    guest: PathBuf,
    /// Where to write the composed component.
    #[arg(short, long, value_name = "OUT.wasm")]
    output: PathBuf,
    /// Leave `net`, `files` and `observe` as imports for a host that supplies them
    /// (as `roundtrip run` does) instead of plugging in their WASI 0.3 versions.
    #[arg(long, conflicts_with = "no_tls")]
    host_net: bool,
    /// Import no `wasi:tls`, for a host that links none (stock `wasmtime serve`):
    /// `http://` only; an `https://` request fails with `internal-error` naming why.
    #[arg(long)]
    no_tls: bool,
}

pub fn run(args: ComposeArgs) -> ExitCode {
    let guest = match std::fs::read(&args.guest) {
        Ok(guest) => guest,
        Err(e) => return usage_error(&format!("cannot read {}: {e}", args.guest.display())),
    };
    let composition = if args.host_net {
        Composition::HostNet
    } else if args.no_tls {
        Composition::NoTls
    } else {
        Composition::Standalone
    };
    let composed = match roundtrip_host::run::compose(&guest, composition) {
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
