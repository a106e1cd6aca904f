//! The gRPC calls and streams a VM has open, by token, as Envoy's wasm `Context` keeps them
//! (`grpc_call_request_`, `grpc_stream_`) with proxy-wasm-cpp-host's token scheme
//! (`include/proxy-wasm/wasm.h`: the low two bits tell an HTTP call (0), a gRPC call (1) and
//! a gRPC stream (2) apart, and each kind counts up in steps of 4 from its first id).

use std::collections::HashMap;

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::AbortHandle;

use super::Kind;

const TYPE_MASK: u32 = 0x3;
const INCREMENT: u32 = 0x4;
const GRPC_CALL: u32 = 1;
const GRPC_STREAM: u32 = 2;

/// The kind a token names, by its low bits; `None` for an HTTP call's.
pub(crate) fn kind_of(token: u32) -> Option<Kind> {
    match token & TYPE_MASK {
        GRPC_CALL => Some(Kind::Call),
        GRPC_STREAM => Some(Kind::Stream),
        _ => None,
    }
}

/// One open call or stream. Dropping it resets the upstream stream and stops its callbacks.
pub(crate) struct Callout {
    pub(crate) kind: Kind,
    /// Request body frames for the upstream (a framed message and whether it ends the
    /// request); `None` once the request ended.
    pub(crate) body: Option<UnboundedSender<(Vec<u8>, bool)>>,
    tasks: Vec<AbortHandle>,
    /// False for a call that failed to start: Envoy answers `INTERNAL_FAILURE` and forgets
    /// the token, yet still delivers its close (see `abi/grpc.rs`), so only deliveries find it.
    pub(crate) started: bool,
    pub(crate) local_closed: bool,
    pub(crate) remote_closed: bool,
}

impl Callout {
    pub(crate) fn started(
        kind: Kind,
        body: UnboundedSender<(Vec<u8>, bool)>,
        tasks: Vec<AbortHandle>,
    ) -> Callout {
        Callout {
            kind,
            body: Some(body),
            tasks,
            started: true,
            local_closed: false,
            remote_closed: false,
        }
    }

    pub(crate) fn failed(kind: Kind) -> Callout {
        Callout {
            kind,
            body: None,
            tasks: Vec::new(),
            started: false,
            local_closed: false,
            remote_closed: false,
        }
    }
}

impl Drop for Callout {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub(crate) struct Callouts {
    open: HashMap<u32, Callout>,
    last_call: u32,
    last_stream: u32,
}

impl Default for Callouts {
    fn default() -> Callouts {
        Callouts {
            open: HashMap::new(),
            last_call: GRPC_CALL,
            last_stream: GRPC_STREAM,
        }
    }
}

impl Callouts {
    /// The next token of `kind`: 5, 9, ... for calls, 6, 10, ... for streams, as Envoy's.
    pub(crate) fn next_token(&mut self, kind: Kind) -> u32 {
        let last = match kind {
            Kind::Call => &mut self.last_call,
            Kind::Stream => &mut self.last_stream,
        };
        *last = last.wrapping_add(INCREMENT);
        *last
    }

    pub(crate) fn insert(&mut self, token: u32, callout: Callout) {
        self.open.insert(token, callout);
    }

    /// The callout a delivery is for (started or not).
    pub(crate) fn get(&self, token: u32) -> Option<&Callout> {
        self.open.get(&token)
    }

    /// The callout a filter's host call names: only started ones exist for the filter.
    pub(crate) fn get_started(&mut self, token: u32) -> Option<&mut Callout> {
        self.open.get_mut(&token).filter(|c| c.started)
    }

    pub(crate) fn remove(&mut self, token: u32) {
        self.open.remove(&token);
    }

    /// After the close was delivered (`Context::onGrpcCloseWrapper`'s cleanup): a call is
    /// gone; a stream stays until the filter closes its side too.
    pub(crate) fn closed_remotely(&mut self, token: u32) {
        match self.open.get_mut(&token) {
            Some(c) if c.kind == Kind::Stream && c.started && !c.local_closed => {
                c.remote_closed = true;
                c.body = None;
                for task in c.tasks.drain(..) {
                    task.abort();
                }
            }
            _ => self.remove(token),
        }
    }
}
