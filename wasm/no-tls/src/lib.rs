//! wasi:tls with no TLS in it, for a composition that must load where the host links
//! no `wasi:tls` (stock `wasmtime serve` 48): `roundtrip compose --no-tls` plugs it
//! into the standalone client. Plain `http://` never touches it; an `https://`
//! request's handshake fails at once with [`WHY`], which the guest receives in
//! `internal-error`.

#![cfg(target_arch = "wasm32")]

// Generated glue: the ABI needs `unsafe` and exported symbols.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "no-tls",
        generate_all,
    });
}

use bindings::exports::wasi::tls::client::{Connector, GuestConnector};
use bindings::exports::wasi::tls::types::{Error, GuestError};
use std::cell::RefCell;

use bindings::{wit_future, wit_stream};
use wit_bindgen::{FutureReader, FutureWriter, StreamReader, StreamWriter};

/// What every handshake says. `roundtrip-wasi-sockets` recognises its start and
/// hands the sentence on as it is.
pub const WHY: &str = "no TLS in this composition: it was made by `roundtrip compose --no-tls` \
for a host without wasi:tls (such as `wasmtime serve`); use http://, or serve the guest \
with `roundtrip serve`, whose client speaks TLS";

struct Component;

// The export glue is `unsafe` ABI code too.
#[allow(unsafe_code)]
mod export {
    use super::{Component, bindings};
    bindings::export!(Component with_types_in bindings);
}

impl bindings::exports::wasi::tls::types::Guest for Component {
    type Error = NoTls;
}

impl bindings::exports::wasi::tls::client::Guest for Component {
    type Connector = NoConnector;
}

/// The one error there is.
pub struct NoTls;

impl GuestError for NoTls {
    fn to_debug_string(&self) -> String {
        WHY.to_owned()
    }
}

/// What `send` and `receive` handed out, ended by `connect`: a future's writer may
/// only be let go inside a task, and `send` and `receive` are not async.
#[derive(Default)]
pub struct NoConnector {
    ends: RefCell<Vec<Ends>>,
}

/// The write ends of a stream that never carries a byte and of its outcome.
struct Ends {
    _stream: StreamWriter<u8>,
    _outcome: FutureWriter<Result<(), Error>>,
}

impl NoConnector {
    /// A stream that will end without a byte, and the failure that ends it.
    fn nothing(
        &self,
        input: StreamReader<u8>,
    ) -> (StreamReader<u8>, FutureReader<Result<(), Error>>) {
        drop(input);
        let (stream, reader) = wit_stream::new::<u8>();
        let (outcome, failed) = wit_future::new(|| Err(Error::new(NoTls)));
        self.ends.borrow_mut().push(Ends {
            _stream: stream,
            _outcome: outcome,
        });
        (reader, failed)
    }
}

impl GuestConnector for NoConnector {
    fn new() -> Self {
        NoConnector::default()
    }

    fn send(
        &self,
        cleartext: StreamReader<u8>,
    ) -> (StreamReader<u8>, FutureReader<Result<(), Error>>) {
        self.nothing(cleartext)
    }

    fn receive(
        &self,
        ciphertext: StreamReader<u8>,
    ) -> (StreamReader<u8>, FutureReader<Result<(), Error>>) {
        self.nothing(ciphertext)
    }

    async fn connect(this: Connector, _server_name: String) -> Result<(), Error> {
        // Let go here, in a task: each outcome then reads its default, the failure
        // (nobody waits for the reader to take it).
        drop(std::mem::take(
            &mut *this.get::<NoConnector>().ends.borrow_mut(),
        ));
        Err(Error::new(NoTls))
    }
}
