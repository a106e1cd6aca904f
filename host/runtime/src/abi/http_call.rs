//! `proxy_http_call`: a request to a named cluster of the gateway; the answer comes back
//! later through `on_http_call_response` on the same VM.
//!
//! The request carries what Envoy's async client adds: `x-envoy-internal: true`
//! (`source/common/http/async_client_impl.cc`, `AsyncStreamImpl::sendHeaders`) and, with a
//! timeout, `x-envoy-expected-rq-timeout-ms` (the async client's router runs with
//! `suppress_envoy_headers` false, so `FilterUtility::finalTimeout` sets it). Envoy also
//! appends its node's address to `x-forwarded-for`; the host, which has no node address,
//! does not.

use std::time::Duration;

use wasmtime::Linker;

use super::memory::{read, read_string, write_u32};
use super::{AbiResult, Caller, Status, status};
use crate::vm::VmState;
use crate::{HttpCallRequest, header_map};

struct CallArgs {
    cluster: (u32, u32),
    headers: (u32, u32),
    body: (u32, u32),
    trailers: (u32, u32),
    timeout_ms: u32,
    token_ptr: u32,
}

fn http_call(caller: &mut Caller<'_>, args: &CallArgs) -> AbiResult {
    let cluster = read_string(caller, args.cluster.0, args.cluster.1)?;
    let headers = read(caller, args.headers.0, args.headers.1)?;
    let body = read(caller, args.body.0, args.body.1)?;
    let trailers = read(caller, args.trailers.0, args.trailers.1)?;
    // Check the token pointer before starting anything, as proxy-wasm-cpp-host does.
    write_u32(caller, args.token_ptr, 0)?;
    let mut headers = header_map::decode_map(&headers).unwrap_or_default();
    let trailers = header_map::decode_map(&trailers).unwrap_or_default();
    let state = caller.data_mut();
    let runtime = std::sync::Arc::clone(&state.plugin.runtime);
    let services = std::sync::Arc::clone(&state.plugin.services);
    if !services.has_cluster(&cluster) {
        return Err(Status::BadArgument.into());
    }
    let required = [":method", ":path", ":authority"];
    if required
        .iter()
        .any(|k| header_map::get(&headers, k).is_none())
    {
        return Err(Status::BadArgument.into());
    }
    let token = state.next_http_call_token;
    state.next_http_call_token = state
        .next_http_call_token
        .checked_add(crate::vm::HTTP_CALL_TOKEN_STEP)
        .unwrap_or(crate::vm::HTTP_CALL_TOKEN_STEP);
    let timeout = (args.timeout_ms != 0).then(|| Duration::from_millis(u64::from(args.timeout_ms)));
    header_map::replace(&mut headers, "x-envoy-internal".into(), b"true".to_vec());
    if args.timeout_ms != 0 {
        header_map::replace(
            &mut headers,
            "x-envoy-expected-rq-timeout-ms".into(),
            args.timeout_ms.to_string().into_bytes(),
        );
    }
    let request = HttpCallRequest {
        headers,
        body,
        trailers,
    };
    let answer = services.http_call(&cluster, request, timeout);
    let cell = state.cell.clone();
    let generation = state.generation;
    runtime.handle.spawn(async move {
        let response = answer.await;
        if let Some(cell) = cell.upgrade() {
            cell.deliver_http_call_response(generation, token, response);
        }
    });
    write_u32(caller, args.token_ptr, token)
}

pub(super) fn add(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: Caller<'_>,
         up: u32,
         us: u32,
         hp: u32,
         hs: u32,
         bp: u32,
         bs: u32,
         tp: u32,
         ts: u32,
         timeout_ms: u32,
         token_ptr: u32| {
            let args = CallArgs {
                cluster: (up, us),
                headers: (hp, hs),
                body: (bp, bs),
                trailers: (tp, ts),
                timeout_ms,
                token_ptr,
            };
            status(http_call(&mut c, &args))
        },
    )?;
    Ok(())
}
