//! `proxy_continue_stream`, `proxy_close_stream`, `proxy_send_local_response`,
//! `proxy_set_effective_context`, `proxy_done`, and the 0.1.0 names `proxy_continue_request`,
//! `proxy_continue_response`, `proxy_clear_route_cache`.
//!
//! Like Envoy, these only record the request: the stream acts on it after the current
//! callback returns, so the host never calls back into the guest re-entrantly.

use wasmtime::Linker;

use super::memory::{read, read_string};
use super::{AbiResult, Caller, Status, status};
use crate::header_map;
use crate::local_reply::LocalReply;
use crate::vm::{ROOT_CONTEXT_ID, VmState};

const STREAM_REQUEST: u32 = 0;
const STREAM_RESPONSE: u32 = 1;

fn continue_stream(state: &mut VmState, stream_type: u32) -> AbiResult {
    if stream_type > STREAM_RESPONSE {
        // Downstream/Upstream are network-filter streams; HTTP contexts refuse them.
        return Err(Status::BadArgument.into());
    }
    if let Some(ctx) = state.stream_mut() {
        if stream_type == STREAM_REQUEST {
            ctx.continue_request = true;
        } else {
            ctx.continue_response = true;
        }
        ctx.notify.notify_one();
    }
    Ok(())
}

fn close_stream(state: &mut VmState, stream_type: u32) -> AbiResult {
    if stream_type > STREAM_RESPONSE {
        return Err(Status::BadArgument.into());
    }
    if let Some(ctx) = state.stream_mut() {
        ctx.closed = true;
        ctx.notify.notify_one();
    }
    Ok(())
}

fn send_local_response(
    caller: &mut Caller<'_>,
    code: u32,
    details: (u32, u32),
    body: (u32, u32),
    headers: (u32, u32),
    grpc_status: i32,
) -> AbiResult {
    let details = read_string(caller, details.0, details.1)?;
    let body = read(caller, body.0, body.1)?;
    let headers = read(caller, headers.0, headers.1)?;
    let headers = header_map::decode_map(&headers).unwrap_or_default();
    let plugin = caller.data().plugin.spec.name.clone();
    let Some(ctx) = caller.data_mut().stream_mut() else {
        return Ok(());
    };
    if ctx.local_reply.is_some() {
        // Envoy holds the first local reply and refuses another one.
        return Err(Status::BadArgument.into());
    }
    let code = u16::try_from(code).map_err(|_| Status::BadArgument)?;
    log::debug!("wasm {plugin}: local reply {code} ({details})");
    let mut reply = LocalReply::new(code, headers, body);
    // -1 (the SDKs' "none") lets Envoy map the HTTP status for a gRPC client.
    reply.grpc_status = u32::try_from(grpc_status).ok();
    ctx.local_reply = Some(reply);
    ctx.notify.notify_one();
    Ok(())
}

pub(super) fn clear_route_cache(state: &mut VmState) {
    if let Some(ctx) = state.stream_mut() {
        ctx.route_cache_cleared = true;
    }
}

pub(super) fn add(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Caller<'_>, t: u32| status(continue_stream(c.data_mut(), t)),
    )?;
    linker.func_wrap("env", "proxy_close_stream", |mut c: Caller<'_>, t: u32| {
        status(close_stream(c.data_mut(), t))
    })?;
    linker.func_wrap("env", "proxy_continue_request", |mut c: Caller<'_>| {
        status(continue_stream(c.data_mut(), STREAM_REQUEST))
    })?;
    linker.func_wrap("env", "proxy_continue_response", |mut c: Caller<'_>| {
        status(continue_stream(c.data_mut(), STREAM_RESPONSE))
    })?;
    linker.func_wrap("env", "proxy_clear_route_cache", |mut c: Caller<'_>| {
        clear_route_cache(c.data_mut());
        Status::Ok as u32
    })?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: Caller<'_>,
         code: u32,
         dp: u32,
         ds: u32,
         bp: u32,
         bs: u32,
         hp: u32,
         hs: u32,
         grpc: i32| {
            status(send_local_response(
                &mut c,
                code,
                (dp, ds),
                (bp, bs),
                (hp, hs),
                grpc,
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: Caller<'_>, id: u32| {
            let state = c.data_mut();
            if id == ROOT_CONTEXT_ID || state.streams.contains_key(&id) {
                state.effective_context = id;
                Status::Ok as u32
            } else {
                Status::BadArgument as u32
            }
        },
    )?;
    // Only root contexts draining at shutdown are pending `done`; none are here.
    linker.func_wrap("env", "proxy_done", |_: Caller<'_>| Status::NotFound as u32)?;
    Ok(())
}
