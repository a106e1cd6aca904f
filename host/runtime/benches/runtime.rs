//! Criterion figures for the runtime: a no-op filter's full request cycle through
//! `ChainStream`, and building a VM from the cached `InstancePre` (instantiate plus Envoy's
//! start-up callbacks; the goal for instantiation is 1 ms or less).
//!
//! Build the test filters first (the tests do it too):
//! `cargo build --release --target wasm32-wasip1 --manifest-path host/tests/filters/Cargo.toml --target-dir target/test-filters`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use modelgate_runtime::{FilterChain, Flow, NoClusters, PluginSpec, Runtime, StreamInfo};

fn noop_spec() -> PluginSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/test-filters/wasm32-wasip1/release/noop.wasm");
    let wasm = std::fs::read(&path).unwrap_or_else(|err| {
        panic!(
            "{}: {err}; build the test filters first (see the header of this file)",
            path.display()
        )
    });
    PluginSpec {
        name: "noop".into(),
        root_id: String::new(),
        vm_id: "noop".into(),
        wasm: wasm.into(),
        vm_config: Vec::new(),
        plugin_config: Vec::new(),
        failure_policy: modelgate_runtime::FailurePolicy::FailClosed,
        allow_on_headers_stop_iteration: false,
        env: Vec::new(),
        vm_count: 1,
        memory_limit_bytes: 16 << 20,
        callback_deadline: Duration::from_millis(100),
    }
}

fn info() -> StreamInfo {
    StreamInfo {
        source: "127.0.0.1:50000".parse().unwrap(),
        destination: "127.0.0.1:8080".parse().unwrap(),
        connection_id: 1,
        tls: false,
        protocol: "HTTP/1.1",
        start_time: SystemTime::now(),
    }
}

fn request_cycle(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = tokio.block_on(async { Runtime::new(Arc::new(NoClusters)).unwrap() });
    let chain = FilterChain::new(vec![runtime.load(noop_spec()).unwrap()]);
    c.bench_function("noop_filter_full_request_cycle", |b| {
        b.iter(|| {
            tokio.block_on(async {
                let mut stream = chain.stream(info());
                let mut headers = vec![
                    (":authority".to_string(), b"example.com".to_vec()),
                    (":path".to_string(), b"/v1/models/m:predict".to_vec()),
                    (":method".to_string(), b"POST".to_vec()),
                    (":scheme".to_string(), b"http".to_vec()),
                    ("content-type".to_string(), b"application/json".to_vec()),
                ];
                assert!(matches!(
                    stream.request_headers(&mut headers, false).await,
                    Flow::Continue
                ));
                let mut body = br#"{"instances":[[1,2,3,4]]}"#.to_vec();
                assert!(matches!(
                    stream.request_body(&mut body, true).await,
                    Flow::Continue
                ));
                let mut response = vec![(":status".to_string(), b"200".to_vec())];
                assert!(matches!(
                    stream.response_headers(&mut response, false).await,
                    Flow::Continue
                ));
                let mut body = br#"{"predictions":[0]}"#.to_vec();
                assert!(matches!(
                    stream.response_body(&mut body, true).await,
                    Flow::Continue
                ));
                stream.finish();
            });
        });
    });
}

fn vm_start(c: &mut Criterion) {
    let runtime = Runtime::new(Arc::new(NoClusters)).unwrap();
    let spec = noop_spec();
    // The first load compiles; later ones reuse the InstancePre.
    drop(runtime.load(spec.clone()).unwrap());
    c.bench_function("vm_from_instance_pre_with_startup", |b| {
        b.iter(|| runtime.load(spec.clone()).unwrap());
    });
}

criterion_group!(benches, request_cycle, vm_start);
criterion_main!(benches);
