//! `proxy_get_property` and `proxy_set_property`: the properties REFERENCE.md lists, with
//! Envoy's encodings (strings raw, integers 8-byte little-endian, booleans one byte, times
//! int64 nanoseconds), and filter state written by `proxy_set_property`.

use std::time::UNIX_EPOCH;

use wasmtime::Linker;

use super::memory::{copy_out, read};
use super::{AbiResult, Caller, Status, status};
use crate::context::StreamCtx;
use crate::header_map;
use crate::vm::VmState;

/// Filter state keys carry Envoy's prefix for values set from Wasm.
pub(crate) const FILTER_STATE_PREFIX: &str = "wasm.";

fn int(value: i64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

/// Resolve a property path (segments split on NUL) to its encoded value.
fn lookup(state: &VmState, path: &[&str]) -> Option<Vec<u8>> {
    let spec = &state.plugin.spec;
    match path {
        ["plugin_name"] => return Some(spec.name.clone().into_bytes()),
        ["plugin_root_id"] => return Some(spec.root_id.clone().into_bytes()),
        ["plugin_vm_id"] => return Some(spec.vm_id.clone().into_bytes()),
        _ => {}
    }
    stream_property(state.stream()?, path)
}

fn stream_property(ctx: &StreamCtx, path: &[&str]) -> Option<Vec<u8>> {
    let info = &ctx.meta.info;
    let header = |map: Option<&crate::Headers>, key: &str| {
        map.and_then(|m| header_map::get(m, key))
            .map(<[u8]>::to_vec)
    };
    let request = ctx.request_view();
    let response = ctx.response_view();
    let upstream = || ctx.meta.upstream.lock().ok().and_then(|u| u.clone());
    match path {
        ["request", "path"] => header(request, ":path"),
        ["request", "url_path"] => header(request, ":path").map(|p| {
            let end = p.iter().position(|&b| b == b'?').unwrap_or(p.len());
            p[..end].to_vec()
        }),
        ["request", "host"] => header(request, ":authority"),
        ["request", "scheme"] => header(request, ":scheme"),
        ["request", "method"] => header(request, ":method"),
        ["request", "id"] => header(request, "x-request-id"),
        ["request", "headers"] => request.map(header_map::encode_map),
        ["request", "headers", name] => header(request, &name.to_ascii_lowercase()),
        ["request", "protocol"] => Some(info.protocol.as_bytes().to_vec()),
        ["request", "time"] => {
            let since = info.start_time.duration_since(UNIX_EPOCH).ok()?;
            Some(int(i64::try_from(since.as_nanos()).ok()?))
        }
        ["response", "code"] => {
            let code = header(response, ":status")?;
            Some(int(std::str::from_utf8(&code).ok()?.parse().ok()?))
        }
        ["response", "headers"] => response.map(header_map::encode_map),
        ["response", "headers", name] => header(response, &name.to_ascii_lowercase()),
        ["source", "address"] => Some(info.source.to_string().into_bytes()),
        ["source", "port"] => Some(int(i64::from(info.source.port()))),
        ["destination", "address"] => Some(info.destination.to_string().into_bytes()),
        ["destination", "port"] => Some(int(i64::from(info.destination.port()))),
        ["connection", "id"] => Some(info.connection_id.to_le_bytes().to_vec()),
        // mTLS means a verified client certificate; the gateway never asks for one.
        ["connection", "mtls"] => Some(vec![0]),
        ["upstream", "address"] => upstream().map(|(_, addr)| addr.to_string().into_bytes()),
        ["upstream", "port"] => upstream().map(|(_, addr)| int(i64::from(addr.port()))),
        ["xds", "cluster_name"] => upstream().map(|(cluster, _)| cluster.into_bytes()),
        _ => {
            let key = filter_state_key(path);
            ctx.filter_state
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
        }
    }
}

/// `wasm.` and the segments joined by '.', built in one allocation (`join` and `format!`
/// took two per `proxy_set_property`).
fn filter_state_key(path: &[&str]) -> String {
    let len: usize = path.iter().map(|segment| segment.len() + 1).sum();
    let mut key = String::with_capacity(FILTER_STATE_PREFIX.len() + len);
    key.push_str(FILTER_STATE_PREFIX);
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            key.push('.');
        }
        key.push_str(segment);
    }
    key
}

fn get_property(caller: &mut Caller<'_>, path: (u32, u32), out: (u32, u32)) -> AbiResult {
    let raw = read(caller, path.0, path.1)?;
    let raw = String::from_utf8_lossy(&raw);
    let segments: Vec<&str> = raw.trim_end_matches('\0').split('\0').collect();
    let value = lookup(caller.data(), &segments).ok_or(Status::NotFound)?;
    copy_out(caller, &value, out.0, out.1)
}

fn set_property(caller: &mut Caller<'_>, path: (u32, u32), value: (u32, u32)) -> AbiResult {
    let raw = read(caller, path.0, path.1)?;
    let value = read(caller, value.0, value.1)?;
    let raw = String::from_utf8_lossy(&raw);
    let segments: Vec<&str> = raw.trim_end_matches('\0').split('\0').collect();
    let key = filter_state_key(&segments);
    let ctx = caller.data_mut().stream_mut().ok_or(Status::NotFound)?;
    match ctx.filter_state.iter_mut().find(|(k, _)| *k == key) {
        Some(entry) => entry.1 = value,
        None => ctx.filter_state.push((key, value)),
    }
    ctx.filter_state_changed = true;
    Ok(())
}

pub(super) fn add(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Caller<'_>, pp: u32, ps: u32, vpp: u32, vsp: u32| {
            status(get_property(&mut c, (pp, ps), (vpp, vsp)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Caller<'_>, pp: u32, ps: u32, vp: u32, vs: u32| {
            status(set_property(&mut c, (pp, ps), (vp, vs)))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_state_keys_join_segments_after_the_prefix() {
        assert_eq!(filter_state_key(&["model"]), "wasm.model");
        assert_eq!(filter_state_key(&["a", "b", "c"]), "wasm.a.b.c");
        assert_eq!(filter_state_key(&[]), "wasm.");
    }
}
