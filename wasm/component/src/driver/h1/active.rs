//! The drop guard that keeps the pool's counts true on every path, cancellation included
//! (the caller may drop a round trip at any `.await`).

use std::rc::Rc;

use crate::core::pool::Source;
use crate::driver::bindings::roundtrip::transport::observe::{CloseReason, EventKind};
use crate::driver::conn::Conn;
use crate::driver::transport::Shared;

/// A connection carrying one request (and then its body). It leaves either through
/// [`Active::put_idle`] or [`Active::close`]; if it is dropped on any other path (a
/// cancelled round trip), it is closed with reason `error`.
pub struct Active {
    shared: Rc<Shared>,
    key: String,
    req: u64,
    /// `Some` from creation until `put_idle`, `close` or drop take it.
    conn: Option<Conn>,
}

impl Active {
    /// The request's id, as in events.
    pub fn req(&self) -> u64 {
        self.req
    }

    pub fn new(shared: Rc<Shared>, key: String, req: u64, conn: Conn) -> Self {
        Self {
            shared,
            key,
            req,
            conn: Some(conn),
        }
    }

    pub fn conn(&self) -> &Conn {
        self.conn
            .as_ref()
            .expect("an Active holds its connection until consumed")
    }

    pub fn conn_mut(&mut self) -> &mut Conn {
        self.conn
            .as_mut()
            .expect("an Active holds its connection until consumed")
    }

    /// An event emitter for this connection and request that does not borrow it.
    pub fn emitter(&self) -> crate::driver::exchange::Emitter {
        crate::driver::exchange::Emitter {
            shared: Rc::clone(&self.shared),
            conn: self.conn().id,
            req: self.req,
            key: self.key.clone(),
        }
    }

    /// Emits an event about this connection and request.
    pub fn emit(&self, kind: EventKind) {
        self.shared
            .emit(Some(self.conn().id), Some(self.req), Some(&self.key), kind);
    }

    /// Offers the connection back to the idle pool.
    pub fn put_idle(mut self) {
        if let Some(conn) = self.conn.take() {
            self.shared.offer(conn, self.req, &self.key, Source::Active);
        }
    }

    /// Closes the connection, saying why.
    pub fn close(mut self, reason: CloseReason) {
        if let Some(conn) = self.conn.take() {
            self.shared
                .close_active(conn, Some(self.req), &self.key, reason);
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.shared
                .close_active(conn, Some(self.req), &self.key, CloseReason::Error);
        }
    }
}
