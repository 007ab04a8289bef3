//! Component composition (wac's `plug`): the exports of one component satisfy the
//! matching imports of another, and the two become one component. Used to build the
//! wasi:http client (the adapter with the transport plugged in, by `build.rs`) and to
//! plug that client into a guest (`roundtrip run`).

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions};

/// `plug`'s exports wired into `socket`'s imports of the same name; what `plug`
/// imports, and what `socket` imports that `plug` does not export, are imports of
/// the result.
pub fn plug(socket: &[u8], plug: &[u8]) -> Result<Vec<u8>, String> {
    let mut graph = CompositionGraph::new();
    let socket = Package::from_bytes("roundtrip:socket", None, socket, graph.types_mut())
        .map_err(|e| format!("{e:#}"))?;
    let socket = graph
        .register_package(socket)
        .map_err(|e| format!("{e:#}"))?;
    let plug = Package::from_bytes("roundtrip:plug", None, plug, graph.types_mut())
        .map_err(|e| format!("{e:#}"))?;
    let plug = graph.register_package(plug).map_err(|e| format!("{e:#}"))?;
    wac_graph::plug(&mut graph, vec![plug], socket).map_err(|e| format!("{e:#}"))?;
    graph
        .encode(EncodeOptions::default())
        .map_err(|e| format!("{e:#}"))
}
