//! `proxy_get_buffer_bytes`, `proxy_get_buffer_status`, `proxy_set_buffer_bytes`, and the
//! 0.1.0 `proxy_get_configuration`.

use wasmtime::Linker;

use super::memory::{copy_out, read, write_u32};
use super::{AbiResult, Caller, Status, status};
use crate::vm::{VmState, len_u32};

const HTTP_REQUEST_BODY: u32 = 0;
const HTTP_RESPONSE_BODY: u32 = 1;
const DOWNSTREAM_DATA: u32 = 2;
const UPSTREAM_DATA: u32 = 3;
const HTTP_CALL_RESPONSE_BODY: u32 = 4;
const GRPC_RECEIVE_BUFFER: u32 = 5;
const VM_CONFIGURATION: u32 = 6;
const PLUGIN_CONFIGURATION: u32 = 7;
const BUFFER_TYPE_MAX: u32 = 8;

/// A buffer for reading. `Ok(None)` is a buffer Envoy knows but that holds nothing now (a
/// body outside its phase): it reads as empty. `NOT_FOUND` where Envoy has no buffer at all.
fn buffer(state: &VmState, buffer_type: u32) -> Result<Option<&[u8]>, Status> {
    let body = |pick: fn(&crate::context::StreamCtx) -> Option<&Vec<u8>>| {
        state.stream().and_then(pick).map(Vec::as_slice)
    };
    match buffer_type {
        HTTP_REQUEST_BODY => Ok(body(|ctx| ctx.request_body.as_ref())),
        HTTP_RESPONSE_BODY => Ok(body(|ctx| ctx.response_body.as_ref())),
        DOWNSTREAM_DATA | UPSTREAM_DATA => Ok(None),
        // The message of the gRPC callback in progress; empty outside one, as in Envoy.
        GRPC_RECEIVE_BUFFER => Ok(state.grpc_receive.message.as_deref()),
        HTTP_CALL_RESPONSE_BODY => state
            .http_call_response
            .as_ref()
            .map(|r| Some(r.body.as_slice()))
            .ok_or(Status::NotFound),
        VM_CONFIGURATION => Ok(Some(&state.plugin.spec.vm_config)),
        PLUGIN_CONFIGURATION if state.configuring => Ok(Some(&state.plugin.spec.plugin_config)),
        t if t > BUFFER_TYPE_MAX => Err(Status::BadArgument),
        _ => Err(Status::NotFound),
    }
}

fn get_bytes(
    caller: &mut Caller<'_>,
    t: u32,
    start: u32,
    length: u32,
    out: (u32, u32),
) -> AbiResult {
    if t > BUFFER_TYPE_MAX {
        return Err(Status::BadArgument.into());
    }
    let data = buffer(caller.data(), t)?.unwrap_or_default();
    // 64-bit arithmetic: the Rust SDK asks for `usize::MAX` bytes to mean "all of it".
    let size = data.len() as u64;
    let start = u64::from(start);
    let end = (start + u64::from(length)).min(size);
    let slice = if start >= size {
        &[][..]
    } else {
        &data[usize::try_from(start).map_err(|_| Status::BadArgument)?
            ..usize::try_from(end).map_err(|_| Status::BadArgument)?]
    };
    let slice = slice.to_vec();
    copy_out(caller, &slice, out.0, out.1)
}

fn set_bytes(
    caller: &mut Caller<'_>,
    t: u32,
    start: u32,
    length: u32,
    data: (u32, u32),
) -> AbiResult {
    if t > BUFFER_TYPE_MAX {
        return Err(Status::BadArgument.into());
    }
    let data = read(caller, data.0, data.1)?;
    let state = caller.data_mut();
    let body = match t {
        HTTP_REQUEST_BODY => state.stream_mut().and_then(|ctx| ctx.request_body.as_mut()),
        HTTP_RESPONSE_BODY => state
            .stream_mut()
            .and_then(|ctx| ctx.response_body.as_mut()),
        // Configuration and call answers are immutable in Envoy.
        VM_CONFIGURATION | HTTP_CALL_RESPONSE_BODY => return Err(Status::BadArgument.into()),
        PLUGIN_CONFIGURATION if state.configuring => return Err(Status::BadArgument.into()),
        _ => None,
    };
    let body = body.ok_or(Status::NotFound)?;
    let start = start as usize;
    if start == 0 {
        // Replace the first `length` bytes (Envoy drains them, then prepends).
        let drained = (length as usize).min(body.len());
        body.splice(..drained, data);
    } else if start >= body.len() {
        body.extend_from_slice(&data);
    } else {
        return Err(Status::BadArgument.into());
    }
    Ok(())
}

pub(super) fn add(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: Caller<'_>, t: u32, start: u32, len: u32, pp: u32, sp: u32| {
            status(get_bytes(&mut c, t, start, len, (pp, sp)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: Caller<'_>, t: u32, length_ptr: u32, flags_ptr: u32| {
            status((|| {
                if t > BUFFER_TYPE_MAX {
                    return Err(Status::BadArgument.into());
                }
                let len = buffer(c.data(), t)?.map_or(0, <[u8]>::len);
                write_u32(&mut c, length_ptr, len_u32(len))?;
                write_u32(&mut c, flags_ptr, 0)
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: Caller<'_>, t: u32, start: u32, len: u32, dp: u32, ds: u32| {
            status(set_bytes(&mut c, t, start, len, (dp, ds)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_configuration",
        |mut c: Caller<'_>, pp: u32, sp: u32| {
            let config = c.data().plugin.spec.plugin_config.clone();
            status(copy_out(&mut c, &config, pp, sp))
        },
    )?;
    Ok(())
}
