//! `proxy_grpc_call`, `proxy_grpc_stream`, `proxy_grpc_send`, `proxy_grpc_cancel`,
//! `proxy_grpc_close` and `proxy_get_status`, as proxy-wasm-cpp-host (`src/exports.cc`) and
//! Envoy's wasm `Context` (`source/extensions/common/wasm/context.cc`: `grpcCall`,
//! `grpcStream`, `grpcSend`, `grpcClose`, `grpcCancel`, `getStatus`) implement them, over
//! the gateway's streaming requests. Calls act for the VM's root context, which also
//! receives the callbacks (`proxy_on_grpc_receive_initial_metadata`, `_receive`,
//! `_receive_trailing_metadata`, `proxy_on_grpc_close`); the SDKs route them on by token.
//!
//! Statuses, as Envoy returns them:
//! - `service` neither a `GrpcService` proto nor a known cluster's name: `PARSE_FAILURE`;
//! - a proto without `envoy_grpc` (Google gRPC, which the host does not have): `BAD_ARGUMENT`
//!   (Envoy builds a Google gRPC client there);
//! - an `envoy_grpc` cluster that does not exist: `INTERNAL_FAILURE`, and, as in Envoy (the
//!   async client reports "Cluster not available" while starting, and the wasm context defers
//!   that callback until the guest call returns), `proxy_on_grpc_close` with UNAVAILABLE (14)
//!   for a token the filter was never given;
//! - `send` on a call's token, or any of `send`/`cancel`/`close` on an HTTP call's:
//!   `BAD_ARGUMENT`; on an unknown or finished token: `NOT_FOUND`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use wasmtime::Linker;

use super::memory::{copy_out, read, write_u32};
use super::{AbiResult, Caller, Status, status};
use crate::grpc::callouts::{Callout, kind_of};
use crate::grpc::service::{self, ServiceArg};
use crate::grpc::{self as protocol, Callback, Kind, Reader};
use crate::vm::VmState;
use crate::{StreamEvent, header_map};

/// Where a call goes: the cluster, the `:authority`, the service-wide metadata.
struct Target {
    cluster: String,
    authority: String,
    metadata: Vec<(String, Vec<u8>)>,
}

/// The `service` argument as Envoy's `grpcCall`/`grpcStream` read it.
fn target(state: &VmState, bytes: &[u8]) -> Result<Target, Status> {
    match service::read(bytes) {
        ServiceArg::ClusterName(name) => {
            if !state.plugin.services.has_cluster(&name) {
                return Err(Status::ParseFailure);
            }
            Ok(Target {
                authority: name.clone(),
                cluster: name,
                metadata: Vec::new(),
            })
        }
        ServiceArg::Proto(proto) => {
            let grpc = proto.envoy_grpc.ok_or(Status::BadArgument)?;
            let authority = if grpc.authority.is_empty() {
                grpc.cluster_name.clone()
            } else {
                grpc.authority
            };
            Ok(Target {
                cluster: grpc.cluster_name,
                authority,
                metadata: proto.initial_metadata,
            })
        }
    }
}

/// What a call or a stream asks for.
struct Open {
    kind: Kind,
    service: (u32, u32),
    service_name: (u32, u32),
    method: (u32, u32),
    metadata: (u32, u32),
    /// A unary call's request and timeout.
    request: Option<((u32, u32), u32)>,
    token_ptr: u32,
}

fn open(caller: &mut Caller<'_>, args: &Open) -> AbiResult {
    let service = read(caller, args.service.0, args.service.1)?;
    let service_name = read(caller, args.service_name.0, args.service_name.1)?;
    let method = read(caller, args.method.0, args.method.1)?;
    let metadata = read(caller, args.metadata.0, args.metadata.1)?;
    let request = match args.request {
        Some(((ptr, len), timeout_ms)) => Some((read(caller, ptr, len)?, timeout_ms)),
        None => None,
    };
    let target = target(caller.data(), &service)?;
    // Malformed pairs read as no metadata, as proxy-wasm-cpp-host's `toPairs` reads them.
    let metadata = header_map::decode_map(&metadata).unwrap_or_default();
    let timeout = request
        .as_ref()
        .map(|(_, ms)| Duration::from_millis(u64::from(*ms)));
    let headers = protocol::request_headers(
        &target.authority,
        &String::from_utf8_lossy(&service_name),
        &String::from_utf8_lossy(&method),
        timeout,
        &target.metadata,
        metadata,
    );
    let state = caller.data_mut();
    let kind = args.kind;
    let token = state.grpc.next_token(kind);
    let runtime = Arc::clone(&state.plugin.runtime);
    let (body, body_rx) = mpsc::unbounded_channel();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    // The router's timeout: 0 is none.
    let limit = timeout.filter(|t| !t.is_zero());
    let cell = state.cell.clone();
    let generation = state.generation;
    let Some(exchange) =
        state
            .plugin
            .services
            .open_stream(&target.cluster, headers, limit, body_rx, events_tx)
    else {
        state.grpc.insert(token, Callout::failed(kind));
        runtime.handle.spawn(async move {
            if let Some(cell) = cell.upgrade() {
                let close = Callback::Close {
                    status: protocol::UNAVAILABLE,
                    message: "Cluster not available".into(),
                };
                cell.deliver_grpc(generation, token, close);
            }
        });
        return Err(Status::InternalFailure.into());
    };
    if let Some((request, _)) = request {
        // The receiver lives in `exchange`, which has not run yet: this cannot fail.
        let _ = body.send((protocol::frame(&request), true));
    }
    let exchange = runtime.handle.spawn(exchange).abort_handle();
    let reader = runtime.handle.spawn(async move {
        let mut reader = Reader::new(kind);
        let deliver = |callbacks: Vec<Callback>| {
            if let Some(cell) = cell.upgrade() {
                for callback in callbacks {
                    cell.deliver_grpc(generation, token, callback);
                }
            }
        };
        while let Some(event) = events.recv().await {
            deliver(reader.on_event(event));
            if reader.is_done() {
                return;
            }
        }
        // The exchange ended without ending the stream: a reset.
        deliver(reader.on_event(StreamEvent::Reset));
    });
    state.grpc.insert(
        token,
        Callout::started(kind, body, vec![exchange, reader.abort_handle()]),
    );
    write_u32(caller, args.token_ptr, token)
}

fn send(caller: &mut Caller<'_>, token: u32, message: (u32, u32), end_stream: bool) -> AbiResult {
    let message = read(caller, message.0, message.1)?;
    if kind_of(token) != Some(Kind::Stream) {
        return Err(Status::BadArgument.into());
    }
    let callout = caller
        .data_mut()
        .grpc
        .get_started(token)
        .ok_or(Status::NotFound)?;
    if let Some(body) = &callout.body {
        // A send after the upstream stream ended goes nowhere, as Envoy's does.
        let _ = body.send((protocol::frame(&message), end_stream));
    }
    if end_stream {
        callout.body = None;
    }
    Ok(())
}

/// `grpcClose`: a call is cancelled; a stream's request side ends (an empty data frame with
/// end of stream, `AsyncStreamImpl::closeStream`) and it is forgotten once both sides closed.
fn close(state: &mut VmState, token: u32) -> AbiResult {
    let kind = kind_of(token).ok_or(Status::BadArgument)?;
    let callout = state.grpc.get_started(token).ok_or(Status::NotFound)?;
    if kind == Kind::Call || callout.remote_closed {
        state.grpc.remove(token);
        return Ok(());
    }
    if let Some(body) = callout.body.take() {
        let _ = body.send((Vec::new(), true));
    }
    callout.local_closed = true;
    Ok(())
}

/// `grpcCancel`: the call or stream is reset and forgotten; no callback follows.
fn cancel(state: &mut VmState, token: u32) -> AbiResult {
    kind_of(token).ok_or(Status::BadArgument)?;
    state.grpc.get_started(token).ok_or(Status::NotFound)?;
    state.grpc.remove(token);
    Ok(())
}

pub(super) fn add(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_grpc_call",
        |mut c: Caller<'_>,
         sp: u32,
         ss: u32,
         np: u32,
         ns: u32,
         mp: u32,
         ms: u32,
         hp: u32,
         hs: u32,
         rp: u32,
         rs: u32,
         timeout_ms: u32,
         token_ptr: u32| {
            let args = Open {
                kind: Kind::Call,
                service: (sp, ss),
                service_name: (np, ns),
                method: (mp, ms),
                metadata: (hp, hs),
                request: Some(((rp, rs), timeout_ms)),
                token_ptr,
            };
            status(open(&mut c, &args))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_stream",
        |mut c: Caller<'_>,
         sp: u32,
         ss: u32,
         np: u32,
         ns: u32,
         mp: u32,
         ms: u32,
         hp: u32,
         hs: u32,
         token_ptr: u32| {
            let args = Open {
                kind: Kind::Stream,
                service: (sp, ss),
                service_name: (np, ns),
                method: (mp, ms),
                metadata: (hp, hs),
                request: None,
                token_ptr,
            };
            status(open(&mut c, &args))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_send",
        |mut c: Caller<'_>, token: u32, ptr: u32, len: u32, end_stream: u32| {
            status(send(&mut c, token, (ptr, len), end_stream != 0))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_cancel",
        |mut c: Caller<'_>, token: u32| status(cancel(c.data_mut(), token)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_grpc_close",
        |mut c: Caller<'_>, token: u32| status(close(c.data_mut(), token)),
    )?;
    // The status of the last gRPC close or failed `http_call`, kept on the root context
    // (`Context::getStatus`); its message only lasts for the callback that reported it.
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: Caller<'_>, code_ptr: u32, pp: u32, sp: u32| {
            let (code, message) = c.data().status.clone();
            status(
                write_u32(&mut c, code_ptr, code)
                    .and_then(|()| copy_out(&mut c, message.as_bytes(), pp, sp)),
            )
        },
    )?;
    Ok(())
}
