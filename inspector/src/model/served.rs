//! A served app (`roundtrip serve`): the service's instances, the incoming requests
//! each one handled, and which incoming request each outgoing one served (the
//! `outgoing` event labels the pool's request rows). The pool itself is drawn as for
//! any source.

use std::collections::BTreeMap;

use roundtrip_host::events::EventKind;

use super::{Micros, View};

/// What caused an outgoing request: the instance that sent it, and the incoming
/// request it served when that is known (absent when the instance was handling
/// several at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CausedBy {
    pub instance: u64,
    pub incoming: Option<u64>,
}

/// One incoming request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncomingRow {
    pub incoming: u64,
    pub instance: u64,
    pub method: String,
    pub path: String,
    pub start: Micros,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub elapsed_us: Option<u64>,
    /// The pool's requests it caused (their `req`).
    pub outgoing: Vec<u64>,
}

/// One instance of the service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceRow {
    pub instance: u64,
    pub start: Micros,
    /// When it was retired, and why when it failed.
    pub end: Option<Micros>,
    pub error: Option<String>,
    /// Its incoming requests, in order.
    pub incoming: Vec<u64>,
}

/// The served side of a source, empty unless it is `roundtrip serve`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    pub instances: BTreeMap<u64, InstanceRow>,
    pub incoming: BTreeMap<u64, IncomingRow>,
}

impl Served {
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty() && self.incoming.is_empty()
    }

    /// Instances alive now.
    pub fn live(&self) -> usize {
        self.instances.values().filter(|i| i.end.is_none()).count()
    }

    fn instance(&mut self, instance: u64, at: Micros) -> &mut InstanceRow {
        self.instances
            .entry(instance)
            .or_insert_with(|| InstanceRow {
                instance,
                start: at,
                ..InstanceRow::default()
            })
    }
}

impl View {
    /// Applies a served-app event; returns whether it was one.
    pub(super) fn apply_served(&mut self, kind: &EventKind, req: Option<u64>, at: Micros) -> bool {
        let served = &mut self.served;
        match kind {
            EventKind::InstanceStart { instance } => {
                served.instance(*instance, at);
            }
            EventKind::InstanceEnd {
                instance, error, ..
            } => {
                let row = served.instance(*instance, at);
                row.end = Some(at);
                row.error = error.clone();
            }
            EventKind::IncomingStart {
                incoming,
                instance,
                method,
                path,
            } => {
                served.instance(*instance, at).incoming.push(*incoming);
                served.incoming.insert(
                    *incoming,
                    IncomingRow {
                        incoming: *incoming,
                        instance: *instance,
                        method: method.clone(),
                        path: path.clone(),
                        start: at,
                        ..IncomingRow::default()
                    },
                );
            }
            EventKind::IncomingDone {
                incoming,
                status,
                error,
                elapsed_us,
            } => {
                if let Some(row) = served.incoming.get_mut(incoming) {
                    row.status = *status;
                    row.error = error.clone();
                    row.elapsed_us = Some(*elapsed_us);
                }
            }
            EventKind::Outgoing {
                instance, incoming, ..
            } => {
                let caused_by = CausedBy {
                    instance: *instance,
                    incoming: *incoming,
                };
                if let (Some(req), Some(incoming)) = (req, incoming)
                    && let Some(row) = served.incoming.get_mut(incoming)
                {
                    row.outgoing.push(req);
                }
                if let Some(row) = req.and_then(|req| self.row_mut(req)) {
                    row.caused_by = Some(caused_by);
                }
            }
            _ => return false,
        }
        true
    }
}
