//! The one wasmtime `Engine` and `Linker` of the process, the epoch ticker that bounds every
//! guest call, and one `InstancePre` per distinct module.
//!
//! Process-wide, like Envoy's one Wasm engine per process: the host state a VM reaches lives
//! in its `Store`, so runtimes share the engine and every module is compiled once.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::Duration;

use wasmtime::{Cache, Config, Engine, InstancePre, Linker, Module, OptLevel};

use crate::abi;
use crate::vm::VmState;

/// How often the engine's epoch advances: the granularity of callback deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A module's bytes and what instantiates it.
type CompiledModule = (Arc<[u8]>, InstancePre<VmState>);

/// Engine, linker and compiled modules, shared by every plugin of a runtime.
pub(crate) struct EngineHost {
    pub(crate) engine: Engine,
    linker: Linker<VmState>,
    /// Compiled modules with their bytes, so plugins sharing a `.wasm` share one compile. A
    /// process holds one or two modules: a list compared by pointer first, where hashing a
    /// 1 MiB module's bytes on every load cost more than the lookup saved.
    modules: Mutex<Vec<CompiledModule>>,
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
            modules: Mutex::new(Vec::new()),
        })
    }

    /// The `InstancePre` for `wasm`, compiling and linking it on first use.
    pub(crate) fn instance_pre(&self, wasm: &Arc<[u8]>) -> wasmtime::Result<InstancePre<VmState>> {
        let mut modules = self.modules.lock().unwrap_or_else(PoisonError::into_inner);
        let known = |(bytes, _): &&CompiledModule| Arc::ptr_eq(bytes, wasm) || **bytes == **wasm;
        if let Some((_, pre)) = modules.iter().find(known) {
            return Ok(pre.clone());
        }
        let compiled = compile(&self.engine, wasm);
        // Compiling is a burst of temporary allocations that glibc keeps in its arenas,
        // whether it succeeded or not; loads that reuse a module allocate little.
        trim_heap();
        let pre = self.linker.instantiate_pre(&compiled?)?;
        modules.push((Arc::clone(wasm), pre.clone()));
        Ok(pre)
    }
}

/// The configuration of the process's engine and of the throwaway engines that compile.
fn config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    let short_run = SHORT_RUN.load(Ordering::Relaxed);
    // Compile on the calling thread, except for a short run ([`compile_for_a_short_run`]).
    // Cranelift's parallel compile keeps a rayon pool and their arenas for the life of the
    // process: loading the full policy peaked at 54.1 MiB and left 24.7 MiB after trimming;
    // on one thread, 49.7 and 19.4 MiB, for 0.3-0.5 s more per load
    // (`examples/load_memory.rs`). The gateway's loads run off the request path.
    config.parallel_compilation(short_run);
    if short_run {
        // A short run's guest code runs for less time than Cranelift's optimisations take:
        // 200 policy tests (bench/policy_tests.py, same machine and load) took 1.99 s with
        // the module optimised and 1.10 s without on a first run, and 0.61 and 0.58 s once
        // cached. The module is the same `.wasm`; only its machine code differs.
        config.cranelift_opt_level(OptLevel::None);
        // wasmtime's own cache, as `wasmtime run` uses it: the user's wasmtime config file
        // if there is one, else its defaults (a directory under the user's cache dir).
        match Cache::from_file(None) {
            Ok(cache) => {
                config.cache(Some(cache));
            }
            Err(e) => log::debug!("no compiled-module cache: {e:#}"),
        }
    }
    config
}

/// Whether this process is a short run; see [`compile_for_a_short_run`].
static SHORT_RUN: AtomicBool = AtomicBool::new(false);

/// Compile for a short-lived command whose run is mostly the module's compile, such as
/// `modelgate test`: on every core (Cranelift compiles functions in parallel), and through
/// wasmtime's cache of compiled modules, so an unchanged `.wasm` is compiled once per
/// machine. Compiling `modelgate.wasm` on one thread was 1.25 s of the 2.26 s that 200
/// policy tests took; the compiler's memory goes when the process exits. Call it before the
/// first runtime is created; the gateway never calls it.
pub fn compile_for_a_short_run() {
    SHORT_RUN.store(true, Ordering::Relaxed);
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

/// Compile `wasm` for `engine`: in a short run by `engine` itself through its cache, else in
/// a child process when one is configured, else in an engine of its own that is dropped
/// afterwards.
///
/// An engine keeps Cranelift's compiler contexts (register allocator and arena buffers) for
/// reuse as long as it lives: 3.4 MiB after compiling the full policy (heaptrack), kept for
/// the life of the process. The throwaway engine takes them with it; the module comes back
/// through wasmtime's own serialized form, a copy of the compiled code.
fn compile(engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Module> {
    if SHORT_RUN.load(Ordering::Relaxed) {
        // The process's engine holds the cache; its compiler contexts go with the process.
        return Module::new(engine, wasm);
    }
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

/// Give the free pages of every malloc arena back to the kernel.
///
/// Cranelift frees most of what it allocates to compile a module, but glibc keeps those pages:
/// for the full-policy gateway idle RSS was 58.3 MiB after start-up and 31.8 MiB after
/// `malloc_trim(0)` (the 1,000-connection peak fell from 123 to 102 MiB with it). Elsewhere
/// than glibc this does nothing.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[expect(unsafe_code, reason = "FFI into glibc")]
    // SAFETY: malloc_trim has no preconditions; it walks glibc's arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
