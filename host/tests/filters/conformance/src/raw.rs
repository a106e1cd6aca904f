//! Direct imports of host functions, to observe the raw status codes the host answers
//! (the SDK's wrappers panic on statuses they do not expect).

#![allow(unsafe_code)]

use std::ptr::null_mut;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    #[link_name = "proxy_get_header_map_value"]
    fn get_header_map_value(
        t: u32,
        kp: *const u8,
        ks: usize,
        vpp: *mut *mut u8,
        vsp: *mut usize,
    ) -> u32;
    #[link_name = "proxy_add_header_map_value"]
    fn add_header_map_value(t: u32, kp: *const u8, ks: usize, vp: *const u8, vs: usize) -> u32;
    #[link_name = "proxy_get_header_map_size"]
    fn get_header_map_size(t: u32, size: *mut usize) -> u32;
    #[link_name = "proxy_get_buffer_bytes"]
    fn get_buffer_bytes(t: u32, start: usize, max: usize, pp: *mut *mut u8, sp: *mut usize) -> u32;
    #[link_name = "proxy_set_buffer_bytes"]
    fn set_buffer_bytes(t: u32, start: usize, size: usize, dp: *const u8, ds: usize) -> u32;
    #[link_name = "proxy_get_buffer_status"]
    fn get_buffer_status(t: u32, len: *mut usize, flags: *mut u32) -> u32;
    #[link_name = "proxy_get_property"]
    fn get_property(pp: *const u8, ps: usize, vpp: *mut *mut u8, vsp: *mut usize) -> u32;
    #[link_name = "proxy_http_call"]
    fn http_call(
        up: *const u8,
        us: usize,
        hp: *const u8,
        hs: usize,
        bp: *const u8,
        bs: usize,
        tp: *const u8,
        ts: usize,
        timeout: u32,
        token: *mut u32,
    ) -> u32;
    #[link_name = "proxy_grpc_call"]
    fn grpc_call(
        a: *const u8,
        b: usize,
        c: *const u8,
        d: usize,
        e: *const u8,
        f: usize,
        g: *const u8,
        h: usize,
        i: *const u8,
        j: usize,
        timeout: u32,
        token: *mut u32,
    ) -> u32;
    #[link_name = "proxy_define_metric"]
    fn define_metric(t: u32, np: *const u8, ns: usize, id: *mut u32) -> u32;
    #[link_name = "proxy_increment_metric"]
    fn increment_metric(id: u32, offset: i64) -> u32;
    #[link_name = "proxy_get_metric"]
    fn get_metric(id: u32, value: *mut u64) -> u32;
    #[link_name = "proxy_set_effective_context"]
    fn set_effective_context(id: u32) -> u32;
    #[link_name = "proxy_dequeue_shared_queue"]
    fn dequeue_shared_queue(token: u32, pp: *mut *mut u8, sp: *mut usize) -> u32;
    #[link_name = "proxy_enqueue_shared_queue"]
    fn enqueue_shared_queue(token: u32, vp: *const u8, vs: usize) -> u32;
    #[link_name = "proxy_call_foreign_function"]
    fn call_foreign_function(
        np: *const u8,
        ns: usize,
        ap: *const u8,
        asz: usize,
        rp: *mut *mut u8,
        rs: *mut usize,
    ) -> u32;
    #[link_name = "proxy_close_stream"]
    fn close_stream(t: u32) -> u32;
    #[link_name = "proxy_done"]
    fn done() -> u32;
    #[link_name = "proxy_get_configuration"]
    fn get_configuration(pp: *mut *mut u8, sp: *mut usize) -> u32;
    #[link_name = "proxy_continue_request"]
    fn continue_request() -> u32;
    #[link_name = "proxy_continue_response"]
    fn continue_response() -> u32;
    #[link_name = "proxy_clear_route_cache"]
    fn clear_route_cache() -> u32;
    #[link_name = "proxy_grpc_stream"]
    fn grpc_stream(
        a: *const u8,
        b: usize,
        c: *const u8,
        d: usize,
        e: *const u8,
        f: usize,
        g: *const u8,
        h: usize,
        token: *mut u32,
    ) -> u32;
    #[link_name = "proxy_grpc_send"]
    fn grpc_send(token: u32, mp: *const u8, ms: usize, end: u32) -> u32;
    #[link_name = "proxy_grpc_cancel"]
    fn grpc_cancel(token: u32) -> u32;
    #[link_name = "proxy_grpc_close"]
    fn grpc_close(token: u32) -> u32;
    #[link_name = "proxy_get_status"]
    fn get_status(code: *mut u32, pp: *mut *mut u8, sp: *mut usize) -> u32;
    #[link_name = "proxy_log"]
    fn log(level: u32, mp: *const u8, ms: usize) -> u32;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    #[link_name = "random_get"]
    fn wasi_random_get(buf: *mut u8, len: usize) -> u32;
}

/// Take ownership of host-allocated bytes (allocated through `proxy_on_memory_allocate`).
fn owned(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    unsafe { Vec::from_raw_parts(ptr, len, len) }
}

pub fn header_value(map: u32, key: &str) -> (u32, Vec<u8>) {
    let (mut p, mut s) = (null_mut(), 0);
    let status = unsafe { get_header_map_value(map, key.as_ptr(), key.len(), &mut p, &mut s) };
    (status, owned(p, s))
}

pub fn add_header(map: u32, key: &str, value: &str) -> u32 {
    unsafe { add_header_map_value(map, key.as_ptr(), key.len(), value.as_ptr(), value.len()) }
}

pub fn header_map_size(map: u32) -> (u32, usize) {
    let mut size = 0;
    let status = unsafe { get_header_map_size(map, &mut size) };
    (status, size)
}

pub fn buffer(t: u32, start: usize, max: usize) -> (u32, Vec<u8>) {
    let (mut p, mut s) = (null_mut(), 0);
    let status = unsafe { get_buffer_bytes(t, start, max, &mut p, &mut s) };
    (status, owned(p, s))
}

/// Whether the host answered "empty" the ABI way: pointer 0, length 0.
pub fn buffer_is_null(t: u32, start: usize, max: usize) -> (u32, bool) {
    let (mut p, mut s) = (1 as *mut u8, 1);
    let status = unsafe { get_buffer_bytes(t, start, max, &mut p, &mut s) };
    (status, p.is_null() && s == 0)
}

pub fn set_buffer(t: u32, start: usize, size: usize, data: &[u8]) -> u32 {
    unsafe { set_buffer_bytes(t, start, size, data.as_ptr(), data.len()) }
}

pub fn buffer_status(t: u32) -> (u32, usize) {
    let (mut len, mut flags) = (0, 0);
    let status = unsafe { get_buffer_status(t, &mut len, &mut flags) };
    (status, len)
}

pub fn property(path: &[u8]) -> (u32, Vec<u8>) {
    let (mut p, mut s) = (null_mut(), 0);
    let status = unsafe { get_property(path.as_ptr(), path.len(), &mut p, &mut s) };
    (status, owned(p, s))
}

pub fn http_call_status(cluster: &str, headers: &[(&str, &str)]) -> u32 {
    let pairs = serialize(headers);
    let mut token = 0;
    unsafe {
        http_call(
            cluster.as_ptr(),
            cluster.len(),
            pairs.as_ptr(),
            pairs.len(),
            null_mut(),
            0,
            null_mut(),
            0,
            1000,
            &mut token,
        )
    }
}

pub fn grpc_call_status() -> u32 {
    let s = "svc";
    let mut token = 0;
    unsafe {
        grpc_call(
            s.as_ptr(),
            s.len(),
            s.as_ptr(),
            s.len(),
            s.as_ptr(),
            s.len(),
            null_mut(),
            0,
            null_mut(),
            0,
            1000,
            &mut token,
        )
    }
}

pub fn define_metric_status(t: u32, name: &str) -> u32 {
    let mut id = 0;
    unsafe { define_metric(t, name.as_ptr(), name.len(), &mut id) }
}

pub fn increment_metric_status(id: u32, offset: i64) -> u32 {
    unsafe { increment_metric(id, offset) }
}

pub fn get_metric_status(id: u32) -> (u32, u64) {
    let mut value = 0;
    let status = unsafe { get_metric(id, &mut value) };
    (status, value)
}

pub fn set_effective_context_status(id: u32) -> u32 {
    unsafe { set_effective_context(id) }
}

pub fn dequeue_status(token: u32) -> u32 {
    let (mut p, mut s) = (null_mut(), 0);
    let status = unsafe { dequeue_shared_queue(token, &mut p, &mut s) };
    drop(owned(p, s));
    status
}

pub fn enqueue_status(token: u32, value: &[u8]) -> u32 {
    unsafe { enqueue_shared_queue(token, value.as_ptr(), value.len()) }
}

pub fn foreign_status(name: &str) -> u32 {
    let (mut p, mut s) = (null_mut(), 0);
    let status =
        unsafe { call_foreign_function(name.as_ptr(), name.len(), null_mut(), 0, &mut p, &mut s) };
    drop(owned(p, s));
    status
}

pub fn close_stream_status(t: u32) -> u32 {
    unsafe { close_stream(t) }
}

pub fn done_status() -> u32 {
    unsafe { done() }
}

pub fn log_status(level: u32, message: &str) -> u32 {
    unsafe { log(level, message.as_ptr(), message.len()) }
}

pub fn random(len: usize) -> (u32, Vec<u8>) {
    let mut buf = vec![0u8; len];
    let status = unsafe { wasi_random_get(buf.as_mut_ptr(), len) };
    (status, buf)
}

fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// The 0.1.0 names SDKs may still import, and the gRPC calls: `name=status` pairs.
pub fn legacy_and_grpc() -> String {
    let s = "svc";
    let mut token = 0;
    let (mut p, mut n) = (null_mut(), 0);
    let config = unsafe { get_configuration(&mut p, &mut n) };
    let config_value = String::from_utf8_lossy(&owned(p, n)).into_owned();
    let mut code = 7;
    let (mut mp, mut ms) = (null_mut(), 0);
    let status = unsafe { get_status(&mut code, &mut mp, &mut ms) };
    drop(owned(mp, ms));
    let results = unsafe {
        [
            ("get_configuration", config),
            ("continue_request", continue_request()),
            ("continue_response", continue_response()),
            ("clear_route_cache", clear_route_cache()),
            (
                "grpc_stream",
                grpc_stream(
                    s.as_ptr(),
                    3,
                    s.as_ptr(),
                    3,
                    s.as_ptr(),
                    3,
                    null_mut(),
                    0,
                    &mut token,
                ),
            ),
            ("grpc_send", grpc_send(1, s.as_ptr(), 3, 0)),
            ("grpc_cancel", grpc_cancel(1)),
            ("grpc_close", grpc_close(1)),
            ("get_status", status),
        ]
    };
    let mut out: Vec<String> = results.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.push(format!("config={config_value}"));
    out.push(format!("grpc_code={code}"));
    out.join(" ")
}
