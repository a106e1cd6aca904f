//! The one wasmtime `Engine` and `Linker` of the process, the epoch ticker that bounds every
//! guest call, and one `InstancePre` per distinct module.
//!
//! Process-wide, like Envoy's one Wasm engine per process: the host state a VM reaches lives
//! in its `Store`, so runtimes share the engine and every module is compiled once.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
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

/// A program that compiles modules in a process of its own (see [`compile_in_child`]).
struct Compiler {
    program: PathBuf,
    args: Vec<OsString>,
}

static COMPILER: OnceLock<Compiler> = OnceLock::new();

/// From now on, compile modules by running `program args...`, which must call
/// [`serve_compile_request`]: this process then never runs Cranelift. Compiling the full
/// policy in-process raised the peak RSS by about 30 MiB and left about 5 MiB of compiler
/// code resident for the life of the gateway (10.5 against 5.3 MiB of resident text with no
/// filter). Without it, or when the child cannot run, modules compile in this process.
pub fn compile_in_child(program: PathBuf, args: Vec<OsString>) {
    let _ = COMPILER.set(Compiler { program, args });
}

/// The child's side of [`compile_in_child`]: reads a module from stdin and writes it,
/// compiled for this build's engine configuration, to stdout; a compile error goes to
/// stderr and fails.
pub fn serve_compile_request() -> Result<(), String> {
    let mut wasm = Vec::new();
    std::io::stdin()
        .read_to_end(&mut wasm)
        .map_err(|e| format!("reading the module: {e}"))?;
    let compiled = precompile(&wasm).map_err(|e| format!("{e:#}"))?;
    std::io::stdout()
        .write_all(&compiled)
        .map_err(|e| format!("writing the compiled module: {e}"))
}

/// Compile `wasm` for `engine`, in a child process when one is configured, else in an
/// engine of its own that is dropped afterwards.
///
/// An engine keeps Cranelift's compiler contexts (register allocator and arena buffers) for
/// reuse as long as it lives: 3.4 MiB after compiling the full policy (heaptrack), kept for
/// the life of the process. The throwaway engine takes them with it; the module comes back
/// through wasmtime's own serialized form, a copy of the compiled code.
fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Module> {
    let compiled = match COMPILER.get().map(|c| c.run(wasm)) {
        Some(Ok(compiled)) => compiled,
        Some(Err(ChildError::Compile(reason))) => return Err(wasmtime::Error::msg(reason)),
        Some(Err(ChildError::Run(reason))) => {
            log::warn!("compiling in a child process failed ({reason}); compiling here");
            precompile(wasm)?
        }
        None => precompile(wasm)?,
    };
    #[expect(
        unsafe_code,
        reason = "deserializing what an engine of this build just made"
    )]
    // SAFETY: `Module::deserialize` trusts its input to be a module compiled by wasmtime for
    // this engine's configuration: `compiled` is exactly that, made from the same `config()`
    // by a throwaway engine here or by this same program in a child process, over a pipe,
    // never written anywhere (wasmtime still checks the version and configuration match).
    unsafe {
        Module::deserialize(engine, &compiled)
    }
}

/// `wasm` compiled by a throwaway engine of this build's configuration, in wasmtime's
/// serialized form.
fn precompile(wasm: &[u8]) -> wasmtime::Result<Vec<u8>> {
    Engine::new(&config())?.precompile_module(wasm)
}

enum ChildError {
    /// The module does not compile: the child's message.
    Compile(String),
    /// The child could not run or answer.
    Run(String),
}

impl Compiler {
    fn run(&self, wasm: &[u8]) -> Result<Vec<u8>, ChildError> {
        let run = |e: std::io::Error| ChildError::Run(e.to_string());
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(run)?;
        // Written from a thread of its own: the child may answer before it read everything.
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| ChildError::Run("no stdin".into()))?;
        let input = wasm.to_vec();
        let writer = thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().map_err(run)?;
        let _ = writer.join();
        if output.status.success() {
            Ok(output.stdout)
        } else if output.status.code() == Some(1) {
            Err(ChildError::Compile(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ))
        } else {
            Err(ChildError::Run(format!("{}", output.status)))
        }
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
