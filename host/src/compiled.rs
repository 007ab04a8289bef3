//! The compiled component, cached on disk: compiling it takes ~0.3 s, loading the
//! machine code wasmtime made for this very engine and component takes ~1 ms.
//!
//! The file is `<user cache dir>/roundtrip/<key>.cwasm`, the key hashing wasmtime's
//! engine-compatibility hash (version, target, settings) with the component's bytes, so
//! a new build or a new wasmtime never loads stale code. A file that does not load is
//! replaced. `ROUNDTRIP_COMPILE_CACHE=0`, or no usable cache directory, compiles every
//! time.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The component for `engine`: from the cache, or compiled (and cached).
pub fn component(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Component> {
    let Some(path) = cache_file(engine, wasm) else {
        return Component::new(engine, wasm);
    };
    if path.exists()
        && let Ok(component) = load(engine, &path)
    {
        return Ok(component);
    }
    let compiled = engine.precompile_component(wasm)?;
    store(&path, &compiled);
    // SAFETY: `compiled` was made by `engine` just now, from our own component.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, &compiled) }?;
    Ok(component)
}

fn load(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: only this module writes these files, in the user's own cache directory,
    // whole (written aside, then renamed), named by the engine's compatibility hash and
    // the component's bytes; wasmtime checks the header and the engine settings again.
    // This is the trust wasmtime's own on-disk cache places in that directory.
    #[allow(unsafe_code)]
    unsafe {
        Component::deserialize_file(engine, path)
    }
}

/// Where the compiled component for `engine` and `wasm` lives, if caching is on.
fn cache_file(engine: &Engine, wasm: &[u8]) -> Option<PathBuf> {
    if std::env::var_os("ROUNDTRIP_COMPILE_CACHE").is_some_and(|v| v == "0") {
        return None;
    }
    let dirs = directories_next::ProjectDirs::from("", "", "roundtrip")?;
    let dir = dirs.cache_dir();
    std::fs::create_dir_all(dir).ok()?;
    let mut key = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut key);
    wasm.hash(&mut key);
    Some(dir.join(format!("component-{:016x}.cwasm", key.finish())))
}

/// Writes the compiled code beside its final name, then renames it: a reader never
/// sees half a file. Failing to cache is not an error.
fn store(path: &Path, compiled: &[u8]) {
    let aside = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&aside, compiled).is_ok() && std::fs::rename(&aside, path).is_err() {
        let _ = std::fs::remove_file(&aside);
    }
}
