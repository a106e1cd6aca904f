//! One Proxy-Wasm VM: a wasmtime `Store` with the host state every ABI call reaches, the guest
//! exports it calls, and helpers that set the epoch deadline before every guest call.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use wasmtime::{
    Instance, InstancePre, Memory, Store, StoreLimits, StoreLimitsBuilder, TypedFunc, WasmParams,
    WasmResults,
};

use crate::HttpCallResponse;
use crate::context::StreamCtx;
use crate::grpc::callouts::Callouts;
use crate::grpc::{self, Callback};
use crate::metrics::Metric;
use cell::{PluginShared, VmCell};

pub(crate) mod cell;

/// Context id of the root context; Envoy gives each VM's root context the first id.
pub(crate) const ROOT_CONTEXT_ID: u32 = 1;

/// HTTP call tokens are multiples of 4, as proxy-wasm-cpp-host's (`nextHttpCallId`): the low
/// two bits tell them from gRPC calls (1) and streams (2).
pub(crate) const HTTP_CALL_TOKEN_STEP: u32 = 4;

/// The payload of the gRPC callback in progress; empty outside one.
#[derive(Default)]
pub(crate) struct GrpcReceive {
    pub(crate) initial_metadata: Option<crate::Headers>,
    pub(crate) message: Option<Vec<u8>>,
    pub(crate) trailing_metadata: Option<crate::Headers>,
}

/// Host state of one VM, reached by every host function through `Caller::data`.
pub(crate) struct VmState {
    limits: StoreLimits,
    pub(crate) plugin: Arc<PluginShared>,
    /// The cell owning this VM, for async work (ticks, calls, queues) that must come back to it.
    pub(crate) cell: Weak<VmCell>,
    /// Bumped on every rebuild of the cell, so late async work for a dead VM is dropped.
    pub(crate) generation: u64,
    pub(crate) memory: Option<Memory>,
    /// `malloc` or `proxy_on_memory_allocate`, as proxy-wasm-cpp-host picks it.
    pub(crate) allocator: Option<TypedFunc<u32, u32>>,
    /// Context host calls act on: the called context, or what `proxy_set_effective_context` chose.
    pub(crate) effective_context: u32,
    /// Plugin configuration is readable (buffer type 7) only during `on_configure`.
    pub(crate) configuring: bool,
    pub(crate) streams: HashMap<u32, StreamCtx>,
    next_context_id: u32,
    /// The `http_call` answer being delivered by `on_http_call_response`.
    pub(crate) http_call_response: Option<HttpCallResponse>,
    pub(crate) next_http_call_token: u32,
    /// Open gRPC calls and streams, by token.
    pub(crate) grpc: Callouts,
    /// What a gRPC callback being delivered carries (maps 4 and 5, buffer 5).
    pub(crate) grpc_receive: GrpcReceive,
    /// `proxy_get_status`: the code and message of the last gRPC close or failed `http_call`.
    pub(crate) status: (u32, String),
    /// Metrics this VM defined; a metric id is `(index + 1) << 2 | type`, as Envoy encodes it.
    pub(crate) metrics: Vec<Arc<Metric>>,
    pub(crate) tick_period: Duration,
    /// Bumped whenever the tick period changes, so the previous ticker stops.
    pub(crate) tick_epoch: u64,
}

impl VmState {
    pub(crate) fn new(plugin: Arc<PluginShared>, cell: Weak<VmCell>, generation: u64) -> VmState {
        // Past the limit `memory.grow` answers -1, as a V8 memory maximum does in Envoy; a Rust
        // guest then aborts (a trap), others may cope.
        let limits = StoreLimitsBuilder::new()
            .memory_size(plugin.spec.memory_limit_bytes)
            .build();
        VmState {
            limits,
            plugin,
            cell,
            generation,
            memory: None,
            allocator: None,
            effective_context: ROOT_CONTEXT_ID,
            configuring: false,
            streams: HashMap::new(),
            next_context_id: ROOT_CONTEXT_ID + 1,
            http_call_response: None,
            next_http_call_token: HTTP_CALL_TOKEN_STEP,
            grpc: Callouts::default(),
            grpc_receive: GrpcReceive::default(),
            status: (0, String::new()),
            metrics: Vec::new(),
            tick_period: Duration::ZERO,
            tick_epoch: 0,
        }
    }

    /// A fresh stream context id: ids are never reused within a VM.
    pub(crate) fn next_context_id(&mut self) -> u32 {
        let id = self.next_context_id;
        self.next_context_id = self
            .next_context_id
            .wrapping_add(1)
            .max(ROOT_CONTEXT_ID + 1);
        id
    }

    /// The stream context host calls act on, if the effective context is a stream.
    pub(crate) fn stream(&self) -> Option<&StreamCtx> {
        self.streams.get(&self.effective_context)
    }

    pub(crate) fn stream_mut(&mut self) -> Option<&mut StreamCtx> {
        self.streams.get_mut(&self.effective_context)
    }
}

/// Why a VM could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The whole chain: the trap itself comes after wasmtime's backtrace context.
    #[error("{0:#}")]
    Wasm(#[from] wasmtime::Error),
    #[error("{0} returned false")]
    Rejected(&'static str),
    #[error("the module exports neither proxy_abi_version_0_2_0 nor proxy_abi_version_0_2_1")]
    UnsupportedAbi,
}

type Cb1 = TypedFunc<u32, ()>;
type Cb2 = TypedFunc<(u32, u32), ()>;
type Cb2R = TypedFunc<(u32, u32), u32>;
type Cb3R = TypedFunc<(u32, u32, u32), u32>;
type Cb3 = TypedFunc<(u32, u32, u32), ()>;
type Cb5 = TypedFunc<(u32, u32, u32, u32, u32), ()>;

/// The guest's callbacks; a missing one behaves as the SDKs' defaults (continue, true).
#[expect(clippy::struct_field_names, reason = "named after the guest exports")]
struct Exports {
    on_context_create: Option<Cb2>,
    on_vm_start: Option<Cb2R>,
    on_configure: Option<Cb2R>,
    on_tick: Option<Cb1>,
    on_queue_ready: Option<Cb2>,
    on_request_headers: Option<Cb3R>,
    on_request_body: Option<Cb3R>,
    on_request_trailers: Option<Cb2R>,
    on_response_headers: Option<Cb3R>,
    on_response_body: Option<Cb3R>,
    on_response_trailers: Option<Cb2R>,
    on_http_call_response: Option<Cb5>,
    on_grpc_receive_initial_metadata: Option<Cb3>,
    on_grpc_receive: Option<Cb3>,
    on_grpc_receive_trailing_metadata: Option<Cb3>,
    on_grpc_close: Option<Cb3>,
    on_log: Option<Cb1>,
    on_done: Option<TypedFunc<u32, u32>>,
    on_delete: Option<Cb1>,
}

/// A stream callback the chain drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamCallback {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
}

/// A live VM.
pub(crate) struct Vm {
    pub(crate) store: Store<VmState>,
    instance: Instance,
    exports: Exports,
}

impl Vm {
    /// Instantiate from the shared `InstancePre` and run Envoy's start-up sequence.
    pub(crate) fn start(pre: &InstancePre<VmState>, state: VmState) -> Result<Vm, StartError> {
        let mut store = Store::new(pre.module().engine(), state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        let deadline = store.data().plugin.deadline_ticks;
        store.set_epoch_deadline(deadline);
        let instance = pre.instantiate(&mut store)?;
        if instance
            .get_export(&mut store, "proxy_abi_version_0_2_1")
            .is_none()
            && instance
                .get_export(&mut store, "proxy_abi_version_0_2_0")
                .is_none()
        {
            return Err(StartError::UnsupportedAbi);
        }
        let memory = instance.get_memory(&mut store, "memory");
        let allocator = match typed(&instance, &mut store, "malloc")? {
            Some(f) => Some(f),
            None => typed(&instance, &mut store, "proxy_on_memory_allocate")?,
        };
        let exports = Exports {
            on_context_create: typed(&instance, &mut store, "proxy_on_context_create")?,
            on_vm_start: typed(&instance, &mut store, "proxy_on_vm_start")?,
            on_configure: typed(&instance, &mut store, "proxy_on_configure")?,
            on_tick: typed(&instance, &mut store, "proxy_on_tick")?,
            on_queue_ready: typed(&instance, &mut store, "proxy_on_queue_ready")?,
            on_request_headers: typed(&instance, &mut store, "proxy_on_request_headers")?,
            on_request_body: typed(&instance, &mut store, "proxy_on_request_body")?,
            on_request_trailers: typed(&instance, &mut store, "proxy_on_request_trailers")?,
            on_response_headers: typed(&instance, &mut store, "proxy_on_response_headers")?,
            on_response_body: typed(&instance, &mut store, "proxy_on_response_body")?,
            on_response_trailers: typed(&instance, &mut store, "proxy_on_response_trailers")?,
            on_http_call_response: typed(&instance, &mut store, "proxy_on_http_call_response")?,
            on_grpc_receive_initial_metadata: typed(
                &instance,
                &mut store,
                "proxy_on_grpc_receive_initial_metadata",
            )?,
            on_grpc_receive: typed(&instance, &mut store, "proxy_on_grpc_receive")?,
            on_grpc_receive_trailing_metadata: typed(
                &instance,
                &mut store,
                "proxy_on_grpc_receive_trailing_metadata",
            )?,
            on_grpc_close: typed(&instance, &mut store, "proxy_on_grpc_close")?,
            on_log: typed(&instance, &mut store, "proxy_on_log")?,
            on_done: typed(&instance, &mut store, "proxy_on_done")?,
            on_delete: typed(&instance, &mut store, "proxy_on_delete")?,
        };
        store.data_mut().memory = memory;
        store.data_mut().allocator = allocator;
        let mut vm = Vm {
            store,
            instance,
            exports,
        };
        vm.initialize()?;
        vm.create_context(ROOT_CONTEXT_ID, 0)?;
        let vm_config_len = len_u32(vm.store.data().plugin.spec.vm_config.len());
        if !vm.call_bool(
            vm.exports.on_vm_start.clone(),
            (ROOT_CONTEXT_ID, vm_config_len),
        )? {
            return Err(StartError::Rejected("on_vm_start"));
        }
        let config_len = len_u32(vm.store.data().plugin.spec.plugin_config.len());
        vm.store.data_mut().configuring = true;
        let started = Instant::now();
        let configured = vm.call_bool(
            vm.exports.on_configure.clone(),
            (ROOT_CONTEXT_ID, config_len),
        );
        let took = started.elapsed();
        vm.store.data_mut().configuring = false;
        if !configured? {
            return Err(StartError::Rejected("on_configure"));
        }
        // What a configuration costs each VM (bench/scale reads this line): Envoy's
        // equivalents are its `wasm` debug logs and the VM's memory in its stats.
        let memory_bytes = memory.map_or(0, |m| m.data_size(&vm.store));
        log::info!(
            "wasm vm {}: on_configure took {} us for {config_len} bytes of plugin config; linear memory {memory_bytes} bytes",
            vm.store.data().plugin.spec.name,
            took.as_micros(),
        );
        Ok(vm)
    }

    /// `_initialize` (then `main`/`__main_void` when exported), or else `_start`, as
    /// proxy-wasm-cpp-host does. Only logging and WASI are meaningful here.
    fn initialize(&mut self) -> wasmtime::Result<()> {
        let init = self
            .instance
            .get_typed_func::<(), ()>(&mut self.store, "_initialize");
        if let Ok(init) = init {
            self.call(&init, ())?;
            if let Ok(main) = self
                .instance
                .get_typed_func::<(u32, u32), u32>(&mut self.store, "main")
            {
                self.call(&main, (0, 0))?;
            } else if let Ok(main) = self
                .instance
                .get_typed_func::<(), u32>(&mut self.store, "__main_void")
            {
                self.call(&main, ())?;
            }
        } else if let Ok(start) = self
            .instance
            .get_typed_func::<(), ()>(&mut self.store, "_start")
        {
            self.call(&start, ())?;
        }
        Ok(())
    }

    /// Call a guest function under the plugin's callback deadline.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        f: &TypedFunc<P, R>,
        params: P,
    ) -> wasmtime::Result<R> {
        let deadline = self.store.data().plugin.deadline_ticks;
        self.store.set_epoch_deadline(deadline);
        f.call(&mut self.store, params)
    }

    fn call_bool<P: WasmParams>(
        &mut self,
        f: Option<TypedFunc<P, u32>>,
        params: P,
    ) -> wasmtime::Result<bool> {
        match f {
            Some(f) => Ok(self.call(&f, params)? != 0),
            None => Ok(true),
        }
    }

    pub(crate) fn create_context(&mut self, id: u32, parent: u32) -> wasmtime::Result<()> {
        self.store.data_mut().effective_context = id;
        match self.exports.on_context_create.clone() {
            Some(f) => self.call(&f, (id, parent)),
            None => Ok(()),
        }
    }

    /// Run a stream callback; the answer is the guest's raw status (0 = continue).
    pub(crate) fn stream_callback(
        &mut self,
        context: u32,
        callback: StreamCallback,
        size: usize,
        end_of_stream: bool,
    ) -> wasmtime::Result<u32> {
        self.store.data_mut().effective_context = context;
        let size = len_u32(size);
        let eos = u32::from(end_of_stream);
        let e = &self.exports;
        let (three, two) = match callback {
            StreamCallback::RequestHeaders => (e.on_request_headers.clone(), None),
            StreamCallback::RequestBody => (e.on_request_body.clone(), None),
            StreamCallback::ResponseHeaders => (e.on_response_headers.clone(), None),
            StreamCallback::ResponseBody => (e.on_response_body.clone(), None),
            StreamCallback::RequestTrailers => (None, e.on_request_trailers.clone()),
            StreamCallback::ResponseTrailers => (None, e.on_response_trailers.clone()),
        };
        match (three, two) {
            (Some(f), _) => self.call(&f, (context, size, eos)),
            (None, Some(f)) => self.call(&f, (context, size)),
            (None, None) => Ok(0),
        }
    }

    /// `on_log`, `on_done`, `on_delete`: the end of a stream context.
    pub(crate) fn end_context(&mut self, context: u32) -> wasmtime::Result<()> {
        self.store.data_mut().effective_context = context;
        if let Some(f) = self.exports.on_log.clone() {
            self.call(&f, context)?;
        }
        self.store.data_mut().effective_context = context;
        if let Some(f) = self.exports.on_done.clone() {
            // A false asks the host to wait for proxy_done; streams end here regardless.
            self.call(&f, context)?;
        }
        self.store.data_mut().effective_context = context;
        if let Some(f) = self.exports.on_delete.clone() {
            self.call(&f, context)?;
        }
        Ok(())
    }

    pub(crate) fn on_tick(&mut self) -> wasmtime::Result<()> {
        self.store.data_mut().effective_context = ROOT_CONTEXT_ID;
        match self.exports.on_tick.clone() {
            Some(f) => self.call(&f, ROOT_CONTEXT_ID),
            None => Ok(()),
        }
    }

    pub(crate) fn on_queue_ready(&mut self, queue: u32) -> wasmtime::Result<()> {
        self.store.data_mut().effective_context = ROOT_CONTEXT_ID;
        match self.exports.on_queue_ready.clone() {
            Some(f) => self.call(&f, (ROOT_CONTEXT_ID, queue)),
            None => Ok(()),
        }
    }

    /// Deliver an `http_call` answer to the root context (the SDK then switches to the
    /// context that dispatched it with `proxy_set_effective_context`).
    pub(crate) fn on_http_call_response(
        &mut self,
        token: u32,
        response: Option<HttpCallResponse>,
    ) -> wasmtime::Result<()> {
        let Some(f) = self.exports.on_http_call_response.clone() else {
            return Ok(());
        };
        let (headers, body, trailers) = response.as_ref().map_or((0, 0, 0), |r| {
            (
                len_u32(r.headers.len()),
                len_u32(r.body.len()),
                len_u32(r.trailers.len()),
            )
        });
        let state = self.store.data_mut();
        state.effective_context = ROOT_CONTEXT_ID;
        if response.is_none() {
            // `Context::onHttpCallFailure`: BROKEN_CONNECTION, "reset" for this callback.
            state.status = (BROKEN_CONNECTION, "reset".into());
        }
        state.http_call_response = response;
        let result = self.call(&f, (ROOT_CONTEXT_ID, token, headers, body, trailers));
        let state = self.store.data_mut();
        state.http_call_response = None;
        state.status.1.clear();
        result
    }

    /// Deliver one gRPC callback for `token` to the root context, unless the filter cancelled
    /// or closed it meanwhile (Envoy's `Context::onGrpc*Wrapper`). What it carries is readable
    /// for the length of the callback; a finished call is forgotten afterwards.
    pub(crate) fn on_grpc(&mut self, token: u32, callback: Callback) -> wasmtime::Result<()> {
        let state = self.store.data_mut();
        let Some(kind) = state.grpc.get(token).map(|c| c.kind) else {
            return Ok(());
        };
        state.effective_context = ROOT_CONTEXT_ID;
        let e = &self.exports;
        let result = match callback {
            Callback::InitialMetadata(headers) => {
                let f = e.on_grpc_receive_initial_metadata.clone();
                let count = len_u32(headers.len());
                state.grpc_receive.initial_metadata = Some(headers);
                self.call_opt(f, (ROOT_CONTEXT_ID, token, count))
            }
            Callback::Message(message) => {
                let f = e.on_grpc_receive.clone();
                let size = len_u32(message.len());
                state.grpc_receive.message = Some(message);
                let result = self.call_opt(f, (ROOT_CONTEXT_ID, token, size));
                if kind == grpc::Kind::Call {
                    self.store.data_mut().grpc.remove(token);
                }
                result
            }
            Callback::TrailingMetadata(headers) => {
                let f = e.on_grpc_receive_trailing_metadata.clone();
                let count = len_u32(headers.len());
                state.grpc_receive.trailing_metadata = Some(headers);
                self.call_opt(f, (ROOT_CONTEXT_ID, token, count))
            }
            Callback::Close { status, message } => {
                let f = e.on_grpc_close.clone();
                state.status = (status, message);
                let result = self.call_opt(f, (ROOT_CONTEXT_ID, token, status));
                let state = self.store.data_mut();
                state.status.1.clear();
                state.grpc.closed_remotely(token);
                result
            }
        };
        self.store.data_mut().grpc_receive = GrpcReceive::default();
        result
    }

    fn call_opt(&mut self, f: Option<Cb3>, params: (u32, u32, u32)) -> wasmtime::Result<()> {
        match f {
            Some(f) => self.call(&f, params),
            None => Ok(()),
        }
    }
}

/// Proxy-Wasm's `BrokenConnection` status code.
const BROKEN_CONNECTION: u32 = 11;

/// Sizes handed to the guest are 32-bit; anything larger is clamped (and refused elsewhere).
pub(crate) fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn typed<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<VmState>,
    name: &str,
) -> wasmtime::Result<Option<TypedFunc<P, R>>> {
    match instance.get_func(&mut *store, name) {
        Some(f) => Ok(Some(
            f.typed(&*store)
                .map_err(|err| err.context(format!("export {name}")))?,
        )),
        None => Ok(None),
    }
}
