//! The one wasmtime `Engine` and `Linker` of the process, the epoch ticker that bounds every
//! guest call, and one `InstancePre` per distinct module.
//!
//! Process-wide, like Envoy's one Wasm engine per process: the host state a VM reaches lives
//! in its `Store`, so runtimes share the engine and every module is compiled once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::Duration;

use wasmtime::{Config, Engine, InstancePre, Linker, Module};

use crate::abi;
use crate::vm::VmState;

/// How often the engine's epoch advances: the granularity of callback deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engine, linker and compiled modules, shared by every plugin of a runtime.
pub(crate) struct EngineHost {
    pub(crate) engine: Engine,
    linker: Linker<VmState>,
    /// Compiled modules keyed by their bytes, so plugins sharing a `.wasm` share one compile.
    modules: Mutex<HashMap<Arc<[u8]>, InstancePre<VmState>>>,
}

impl EngineHost {
    /// The process's engine, created on first use.
    pub(crate) fn global() -> wasmtime::Result<&'static EngineHost> {
        static HOST: OnceLock<EngineHost> = OnceLock::new();
        if let Some(host) = HOST.get() {
            return Ok(host);
        }
        let host = EngineHost::new()?;
        // A racing thread may have won; its engine (and ticker) is then simply dropped.
        Ok(HOST.get_or_init(|| host))
    }

    fn new() -> wasmtime::Result<EngineHost> {
        let engine = Engine::new(&config())?;
        let mut linker = Linker::new(&engine);
        abi::add_to_linker(&mut linker)?;
        spawn_epoch_ticker(&engine)?;
        Ok(EngineHost {
            engine,
            linker,
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// The `InstancePre` for `wasm`, compiling and linking it on first use.
    pub(crate) fn instance_pre(&self, wasm: &Arc<[u8]>) -> wasmtime::Result<InstancePre<VmState>> {
        let mut modules = self.modules.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pre) = modules.get(wasm) {
            return Ok(pre.clone());
        }
        let module = compile(&self.engine, wasm)?;
        let pre = self.linker.instantiate_pre(&module)?;
        modules.insert(Arc::clone(wasm), pre.clone());
        Ok(pre)
    }
}

/// The configuration of the process's engine and of the throwaway engines that compile.
fn config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // Compile on the calling thread. Cranelift's parallel compile keeps a rayon pool and
    // their arenas for the life of the process: loading the full policy peaked at 54.1 MiB
    // and left 24.7 MiB after trimming; on one thread, 49.7 and 19.4 MiB, for 0.3-0.5 s
    // more per load (`examples/load_memory.rs`). Loads run off the request path.
    config.parallel_compilation(false);
    config
}

/// Compile `wasm` for `engine` in an engine of its own that is dropped afterwards.
///
/// An engine keeps Cranelift's compiler contexts (register allocator and arena buffers) for
/// reuse as long as it lives: 3.4 MiB after compiling the full policy (heaptrack), kept for
/// the life of the process. The throwaway engine takes them with it; the module comes back
/// through wasmtime's own serialized form, a copy of the compiled code.
fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Module> {
    let compiled = Engine::new(&config())?.precompile_module(wasm)?;
    #[expect(
        unsafe_code,
        reason = "deserializing what an engine of this process just made"
    )]
    // SAFETY: `Module::deserialize` trusts its input to be a module compiled by wasmtime for
    // this engine's configuration: `compiled` is exactly that, made above from the same
    // `config()`, never written anywhere (wasmtime still checks the configuration matches).
    unsafe {
        Module::deserialize(engine, &compiled)
    }
}

/// Advance the epoch every [`EPOCH_TICK`] for as long as the engine lives. The thread holds
/// only a weak reference, so an engine that is dropped (a racing duplicate) stops its ticker.
fn spawn_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(EPOCH_TICK);
            }
        })?;
    Ok(())
}
