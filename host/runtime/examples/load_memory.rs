//! Memory of loading one plugin, the way the gateway loads it: compile, `vm_count` VMs,
//! start-up and `on_configure`. Prints the process's peak and current RSS (`/proc/self/status`)
//! after the load, so the cost of the engine configuration and of each VM can be compared.
//!
//! `cargo run --release -p modelgate-runtime --example load_memory -- WASM [CONFIG] [VMS]`
//!
//! For the full policy: `... -- target/modelgate.wasm policy.json 2`
//! (bench/run.sh renders a policy.json into its run directory).

use std::sync::Arc;
use std::time::Duration;

use modelgate_runtime::{NoClusters, PluginSpec, Runtime};

/// `VmHWM` and `VmRSS` of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn report(what: &str) {
    let (hwm, rss) = memory_kib();
    #[expect(clippy::cast_precision_loss, reason = "KiB figures for a report")]
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{what:<24} peak {:6.1} MiB   now {:6.1} MiB",
        mib(hwm),
        mib(rss)
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(wasm_path) = args.next() else {
        eprintln!("usage: load_memory WASM [CONFIG] [VMS]");
        std::process::exit(2);
    };
    let config = args
        .next()
        .map(|path| std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap_or_default();
    let vm_count = args
        .next()
        .map_or(1, |n| n.parse().expect("VMS is a count"));
    let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| panic!("{wasm_path}: {e}"));
    report("start");
    let runtime = Runtime::new(Arc::new(NoClusters)).expect("runtime");
    let spec = PluginSpec {
        name: "memory".into(),
        root_id: "modelgate".into(),
        vm_id: "memory".into(),
        wasm: wasm.into(),
        vm_config: Vec::new(),
        plugin_config: config,
        failure_policy: modelgate_runtime::FailurePolicy::FailClosed,
        allow_on_headers_stop_iteration: false,
        env: Vec::new(),
        vm_count,
        memory_limit_bytes: 64 << 20,
        callback_deadline: Duration::from_secs(5),
    };
    let plugin = runtime.load(spec).expect("plugin loads");
    report(&format!("loaded, {} VM(s)", plugin.vm_count()));
}
