//! Host bindings for the `roundtrip:transport` world. Only the `bindgen!` call lives
//! here; resource types and trait impls are in `net.rs` and `events.rs`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "transport",
    imports: {
        // Sync functions that create streams and futures need the store.
        "roundtrip:transport/net.[method]connection.send": store | trappable,
        "roundtrip:transport/net.[method]connection.receive": store | trappable,
        default: trappable,
    },
    exports: { default: async | store },
    with: {
        "roundtrip:transport/net.connection": crate::net::Connection,
        "wasi:clocks": wasmtime_wasi::p3::bindings::clocks,
    },
});
