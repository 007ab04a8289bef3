//! Component composition (what `wac plug` does): the exports of one component satisfy
//! the imports of the same name of another, and the two become one component. Used to
//! build the wasi:http client and the standalone transport (`build.rs`) and to plug
//! the client into a guest (`roundtrip run`, `roundtrip compose`).

use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions};

/// `plug`'s exports wired into `socket`'s imports of the same name. The result
/// exports what `socket` exports, and also `reexport` from `plug` (the interfaces
/// whose types `socket`'s exports use, which must then be visible outside); it
/// imports what `plug` imports and what `socket` imports that `plug` does not export.
pub fn plug(socket: &[u8], plug: &[u8], reexport: &[&str]) -> Result<Vec<u8>, String> {
    let failed = |e: &dyn std::fmt::Display| e.to_string();
    let mut graph = CompositionGraph::new();
    let socket = Package::from_bytes("socket", None, socket, graph.types_mut())
        .map_err(|e| format!("{e:#}"))?;
    let socket = graph.register_package(socket).map_err(|e| failed(&e))?;
    let plug =
        Package::from_bytes("plug", None, plug, graph.types_mut()).map_err(|e| format!("{e:#}"))?;
    let plug = graph.register_package(plug).map_err(|e| failed(&e))?;

    let socket_instance = graph.instantiate(socket);
    let plug_instance = graph.instantiate(plug);
    let offered: Vec<String> = graph.types()[graph[plug].ty()]
        .exports
        .keys()
        .cloned()
        .collect();
    let wanted: Vec<String> = graph.types()[graph[socket].ty()]
        .imports
        .keys()
        .cloned()
        .collect();
    let matching: Vec<&String> = offered
        .iter()
        .filter(|name| wanted.contains(name))
        .collect();
    if matching.is_empty() {
        return Err(format!(
            "nothing it imports is offered (it imports: {})",
            wanted.join(", ")
        ));
    }
    for name in matching {
        let export = graph
            .alias_instance_export(plug_instance, name)
            .map_err(|e| failed(&e))?;
        graph
            .set_instantiation_argument(socket_instance, name, export)
            .map_err(|e| format!("{name}: {e:#}"))?;
    }
    let exports: Vec<String> = graph.types()[graph[socket].ty()]
        .exports
        .keys()
        .cloned()
        .collect();
    // The re-exported interfaces first: the socket's exports refer to their types.
    let exported = reexport
        .iter()
        .map(|name| (plug_instance, *name))
        .chain(exports.iter().map(|name| (socket_instance, name.as_str())));
    for (instance, name) in exported {
        let export = graph
            .alias_instance_export(instance, name)
            .map_err(|e| failed(&e))?;
        graph.export(export, name).map_err(|e| failed(&e))?;
    }
    graph.encode(EncodeOptions::default()).map_err(|e| {
        // The validator's own words are in the error's source.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        message
    })
}

/// The names a component imports (e.g. `wasi:http/client@0.3.0`).
pub fn imports(component: &[u8]) -> Result<Vec<String>, String> {
    let mut graph = CompositionGraph::new();
    let package = Package::from_bytes("component", None, component, graph.types_mut())
        .map_err(|e| format!("not a component: {e:#}"))?;
    Ok(graph.types()[package.ty()]
        .imports
        .keys()
        .cloned()
        .collect())
}
