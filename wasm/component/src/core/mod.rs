//! The sans-I/O core: bytes and events in, bytes, deadlines and decisions out.
//! Time is always a parameter (`now`, in microseconds on a monotonic clock).

pub mod compression;
pub mod decode;
pub mod encode;
pub mod error;
pub use roundtrip_fields as fields;
pub mod file;
pub mod h2_frames;
pub mod pool;
pub mod proxy;
pub mod read_size;
pub mod request;
pub mod reuse;
pub mod tunnel;

/// Microseconds on the transport's monotonic clock.
pub type Micros = u64;
