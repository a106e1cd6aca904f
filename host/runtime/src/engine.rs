//! The one wasmtime `Engine` and `Linker` of a runtime, the epoch ticker that bounds every
//! guest call, and one `InstancePre` per distinct module.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
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
    pub(crate) fn new() -> wasmtime::Result<EngineHost> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        abi::add_to_linker(&mut linker)?;
        spawn_epoch_ticker(&engine);
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
        let module = Module::new(&self.engine, wasm)?;
        let pre = self.linker.instantiate_pre(&module)?;
        modules.insert(Arc::clone(wasm), pre.clone());
        Ok(pre)
    }
}

/// Advance the epoch every [`EPOCH_TICK`] for as long as the engine lives. The thread holds
/// only a weak reference, so dropping the runtime stops it.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(EPOCH_TICK);
            }
        });
    if let Err(err) = spawned {
        // Without the ticker deadlines cannot fire; say so loudly rather than fail start-up.
        log::error!("cannot start the wasm epoch ticker, callback deadlines are off: {err}");
    }
}
