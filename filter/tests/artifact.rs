//! Checks the built `modelgate.wasm` as Envoy will see it: its size, and that it imports nothing
//! beyond the Proxy-Wasm ABI and the WASI functions Envoy implements, so it loads in any Envoy
//! (and in the `modelgate` host) without an unresolved import.

use std::collections::BTreeSet;

use wasmparser::{ExternalKind, Parser, Payload, TypeRef};

mod support;

/// The size budget from the issue: the module is fetched and compiled by every Envoy.
const MAX_WASM_BYTES: usize = 1024 * 1024;

/// Every `env` function proxy-wasm-cpp-host (Envoy's Proxy-Wasm host) links for ABI 0.2.x:
/// its `FOR_ALL_HOST_FUNCTIONS` and `FOR_ALL_HOST_FUNCTIONS_ABI_SPECIFIC` lists.
const ENVOY_PROXY_FUNCTIONS: &[&str] = &[
    "proxy_log",
    "proxy_get_status",
    "proxy_set_property",
    "proxy_get_property",
    "proxy_send_local_response",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_size",
    "proxy_get_buffer_status",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_close",
    "proxy_grpc_cancel",
    "proxy_grpc_send",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_current_time_nanoseconds",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_call_foreign_function",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_get_log_level",
];

/// The WASI functions Envoy implements rather than stubs with an error (REFERENCE.md §1): a
/// module that needs any other one links, but fails at run time.
const ENVOY_WASI_FUNCTIONS: &[&str] = &[
    "fd_write",
    "clock_time_get",
    "random_get",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "proc_exit",
    "sched_yield",
    "poll_oneoff",
];

const WASI_MODULES: &[&str] = &["wasi_snapshot_preview1", "wasi_unstable"];

struct Surface {
    imports: Vec<(String, String, bool)>,
    exports: BTreeSet<String>,
}

fn surface(wasm: &[u8]) -> Surface {
    let mut imports = Vec::new();
    let mut exports = BTreeSet::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.expect("modelgate.wasm parses") {
            Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let import = import.expect("import entry parses");
                    let is_function = matches!(import.ty, TypeRef::Func(_));
                    imports.push((
                        import.module.to_owned(),
                        import.name.to_owned(),
                        is_function,
                    ));
                }
            }
            Payload::ExportSection(section) => {
                for export in section {
                    let export = export.expect("export entry parses");
                    if export.kind == ExternalKind::Func {
                        exports.insert(export.name.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    Surface { imports, exports }
}

#[test]
fn fits_the_size_budget() {
    let wasm = support::module();
    assert!(
        wasm.len() <= MAX_WASM_BYTES,
        "modelgate.wasm is {} bytes, over the {MAX_WASM_BYTES}-byte budget",
        wasm.len()
    );
}

#[test]
fn imports_only_what_envoy_provides() {
    let surface = surface(&support::module());
    assert!(
        !surface.imports.is_empty(),
        "a Proxy-Wasm filter imports host functions"
    );
    let foreign: Vec<String> = surface
        .imports
        .iter()
        .filter(|(module, name, is_function)| {
            let known = match module.as_str() {
                "env" => ENVOY_PROXY_FUNCTIONS.contains(&name.as_str()),
                m if WASI_MODULES.contains(&m) => ENVOY_WASI_FUNCTIONS.contains(&name.as_str()),
                _ => false,
            };
            !(known && *is_function)
        })
        .map(|(module, name, _)| format!("{module}.{name}"))
        .collect();
    assert!(
        foreign.is_empty(),
        "imports Envoy does not provide: {foreign:?}"
    );
}

#[test]
fn exports_the_proxy_wasm_entry_points() {
    let surface = surface(&support::module());
    for required in [
        "proxy_abi_version_0_2_1",
        "proxy_on_memory_allocate",
        "proxy_on_context_create",
        "proxy_on_configure",
        "proxy_on_request_headers",
        "proxy_on_request_body",
        "proxy_on_log",
        "_initialize",
    ] {
        assert!(
            surface.exports.contains(required),
            "missing export {required}; exports: {:?}",
            surface.exports
        );
    }
}
