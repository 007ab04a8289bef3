//! `hello [NAME]`: a wasi:cli 0.3 command that sends no request. `roundtrip run`
//! runs such a guest as it is, with nothing plugged in.

#![cfg(target_arch = "wasm32")]

// Generated glue: the ABI needs `unsafe` and exported symbols.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "hello",
        generate_all,
    });
}

use bindings::exports::wasi::cli::run::Guest;
use bindings::wasi::cli::{environment, stdout};
use bindings::wit_stream;

struct Hello;

// The export glue is `unsafe` ABI code too.
#[allow(unsafe_code)]
mod export {
    use super::{Hello, bindings};
    bindings::export!(Hello with_types_in bindings);
}

impl Guest for Hello {
    async fn run() -> Result<(), ()> {
        let name = environment::get_arguments()
            .into_iter()
            .nth(1)
            .unwrap_or_else(|| "world".to_owned());
        let (mut writer, reader) = wit_stream::new::<u8>();
        let done = stdout::write_via_stream(reader);
        writer
            .write_all(format!("hello, {name}\n").into_bytes())
            .await;
        drop(writer);
        done.await.map_err(|_| ())
    }
}
