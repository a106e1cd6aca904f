//! `proxy_{get,add,replace,remove}_header_map_value`, `proxy_{get,set}_header_map_pairs`,
//! `proxy_get_header_map_size`.

use wasmtime::Linker;

use super::memory::{copy_out, read, write_u32};
use super::{AbiResult, Caller, Status, status};
use crate::Headers;
use crate::header_map;
use crate::vm::{VmState, len_u32};

const REQUEST_HEADERS: u32 = 0;
const REQUEST_TRAILERS: u32 = 1;
const RESPONSE_HEADERS: u32 = 2;
const RESPONSE_TRAILERS: u32 = 3;
const GRPC_RECEIVE_INITIAL_METADATA: u32 = 4;
const GRPC_RECEIVE_TRAILING_METADATA: u32 = 5;
const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
const HTTP_CALL_RESPONSE_TRAILERS: u32 = 7;
const MAP_TYPE_MAX: u32 = 7;

/// A map for reading: the live map of the current phase, the snapshots in `on_log`, or the
/// `http_call` answer or gRPC metadata being delivered. Anything else is `BAD_ARGUMENT`, as in Envoy.
fn map_ref(state: &VmState, map_type: u32) -> Result<&Headers, Status> {
    let map = match map_type {
        HTTP_CALL_RESPONSE_HEADERS => state.http_call_response.as_ref().map(|r| &r.headers),
        HTTP_CALL_RESPONSE_TRAILERS => state.http_call_response.as_ref().map(|r| &r.trailers),
        GRPC_RECEIVE_INITIAL_METADATA => state.grpc_receive.initial_metadata.as_ref(),
        GRPC_RECEIVE_TRAILING_METADATA => state.grpc_receive.trailing_metadata.as_ref(),
        _ => state
            .stream()
            .and_then(|ctx| match (map_type, ctx.log_phase) {
                (REQUEST_HEADERS, true) => ctx.request_seen.as_ref(),
                (RESPONSE_HEADERS, true) => ctx.response_seen.as_ref(),
                (REQUEST_HEADERS, false) => ctx.request_headers.as_ref(),
                (REQUEST_TRAILERS, false) => ctx.request_trailers.as_ref(),
                (RESPONSE_HEADERS, false) => ctx.response_headers.as_ref(),
                (RESPONSE_TRAILERS, false) => ctx.response_trailers.as_ref(),
                _ => None,
            }),
    };
    map.ok_or(Status::BadArgument)
}

/// A map for writing: only the live map of the current phase (maps are read-only in
/// `on_log`). Writing request headers clears the route cache, as Envoy does for ABI <= 0.2.1.
fn map_mut(state: &mut VmState, map_type: u32) -> Result<&mut Headers, Status> {
    let ctx = state
        .stream_mut()
        .filter(|ctx| !ctx.log_phase)
        .ok_or(Status::BadArgument)?;
    if map_type == REQUEST_HEADERS && ctx.request_headers.is_some() {
        ctx.route_cache_cleared = true;
    }
    let map = match map_type {
        REQUEST_HEADERS => ctx.request_headers.as_mut(),
        REQUEST_TRAILERS => ctx.request_trailers.as_mut(),
        RESPONSE_HEADERS => ctx.response_headers.as_mut(),
        RESPONSE_TRAILERS => ctx.response_trailers.as_mut(),
        _ => None,
    };
    map.ok_or(Status::BadArgument)
}

fn check_type(map_type: u32) -> AbiResult {
    if map_type > MAP_TYPE_MAX {
        return Err(Status::BadArgument.into());
    }
    Ok(())
}

fn get_value(
    caller: &mut Caller<'_>,
    map_type: u32,
    key: (u32, u32),
    out: (u32, u32),
) -> AbiResult {
    check_type(map_type)?;
    let key = header_map::lower(read(caller, key.0, key.1)?);
    let map = map_ref(caller.data(), map_type)?;
    let value = header_map::get(map, &key).ok_or(Status::NotFound)?.to_vec();
    copy_out(caller, &value, out.0, out.1)
}

fn get_pairs(caller: &mut Caller<'_>, map_type: u32, ptr_ptr: u32, size_ptr: u32) -> AbiResult {
    check_type(map_type)?;
    let map = map_ref(caller.data(), map_type)?;
    let data = if map.is_empty() {
        Vec::new()
    } else {
        header_map::encode_map(map)
    };
    copy_out(caller, &data, ptr_ptr, size_ptr)
}

fn edit(
    caller: &mut Caller<'_>,
    map_type: u32,
    key: (u32, u32),
    value: Option<(u32, u32)>,
    apply: fn(&mut Headers, String, Vec<u8>),
) -> AbiResult {
    check_type(map_type)?;
    let key = header_map::lower(read(caller, key.0, key.1)?);
    let value = match value {
        Some((ptr, len)) => read(caller, ptr, len)?,
        None => Vec::new(),
    };
    apply(map_mut(caller.data_mut(), map_type)?, key, value);
    Ok(())
}

pub(super) fn add(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_>, t: u32, kp: u32, ks: u32, vpp: u32, vsp: u32| {
            status(get_value(&mut c, t, (kp, ks), (vpp, vsp)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Caller<'_>, t: u32, kp: u32, ks: u32, vp: u32, vs: u32| {
            status(edit(&mut c, t, (kp, ks), Some((vp, vs)), header_map::add))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Caller<'_>, t: u32, kp: u32, ks: u32, vp: u32, vs: u32| {
            status(edit(
                &mut c,
                t,
                (kp, ks),
                Some((vp, vs)),
                header_map::replace,
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Caller<'_>, t: u32, kp: u32, ks: u32| {
            status(edit(&mut c, t, (kp, ks), None, |map, key, _| {
                header_map::remove(map, &key);
            }))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_>, t: u32, pp: u32, sp: u32| status(get_pairs(&mut c, t, pp, sp)),
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Caller<'_>, t: u32, p: u32, s: u32| {
            status((|| {
                check_type(t)?;
                let data = read(&c, p, s)?;
                // proxy-wasm-cpp-host reads malformed pairs as no pairs.
                let pairs = header_map::decode_map(&data).unwrap_or_default();
                *map_mut(c.data_mut(), t)? = pairs;
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: Caller<'_>, t: u32, result: u32| {
            status((|| {
                check_type(t)?;
                let size = header_map::byte_size(map_ref(c.data(), t)?);
                write_u32(&mut c, result, len_u32(size))
            })())
        },
    )?;
    Ok(())
}
