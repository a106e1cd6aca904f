//! Shared test support: builds the test filters in `host/tests/filters` (and the
//! `AssemblyScript` one in `host/tests/as-filter`) once per test binary, a log capture, and a
//! fake `HostServices`.

#![allow(dead_code, reason = "each test binary uses part of the support module")]
#![allow(
    clippy::missing_panics_doc,
    reason = "test support fails loudly on purpose"
)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use modelgate_runtime::{
    ChainStream, FilterChain, Flow, Headers, HostServices, HttpCallRequest, HttpCallResponse,
    Plugin, PluginSpec, Runtime, StreamEvent, StreamInfo,
};
use tokio::sync::mpsc;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Build the Rust test filters to wasm32-wasip1 (cargo makes repeated runs a no-op).
fn build_rust_filters() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = repo_root();
            let target_dir = root.join("target/test-filters");
            let manifest = root.join("host/tests/filters/Cargo.toml");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(&cargo)
                .args(["build", "--release", "--target", "wasm32-wasip1", "--manifest-path"])
                .arg(&manifest)
                .arg("--target-dir")
                .arg(&target_dir)
                .status()
                .unwrap_or_else(|err| panic!("cannot run {cargo} to build the test filters: {err}"));
            assert!(
                status.success(),
                "building the test filters failed; run: cargo build --release --target wasm32-wasip1 \
                 --manifest-path host/tests/filters/Cargo.toml --target-dir target/test-filters"
            );
            target_dir.join("wasm32-wasip1/release")
        })
        .clone()
}

/// The bytes of a Rust test filter (`conformance`, `noop`).
pub(crate) fn filter(name: &str) -> Arc<[u8]> {
    let path = build_rust_filters().join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
        .into()
}

/// The `AssemblyScript` filter, built with npm (`npm ci` then `npm run build`).
pub(crate) fn assemblyscript_filter() -> Arc<[u8]> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let path = BUILT.get_or_init(|| {
        let dir = repo_root().join("host/tests/as-filter");
        let run = |args: &[&str]| {
            let status = Command::new("npm")
                .args(args)
                .current_dir(&dir)
                .status()
                .unwrap_or_else(|err| {
                    panic!("cannot run npm (needed for the AssemblyScript filter): {err}")
                });
            assert!(
                status.success(),
                "`npm {}` failed in host/tests/as-filter",
                args.join(" ")
            );
        };
        if !dir.join("node_modules/assemblyscript").exists() {
            run(&["ci", "--no-audit", "--no-fund"]);
        }
        std::fs::create_dir_all(dir.join("build")).expect("create host/tests/as-filter/build");
        run(&["run", "build"]);
        dir.join("build/filter.wasm")
    });
    std::fs::read(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
        .into()
}

/// Captured log lines, for assertions on what guests logged.
struct Capture;

static LINES: Mutex<Vec<(log::Level, String, String)>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // Only the runtime's and guests' lines: wasmtime and cranelift trace far too much.
        metadata.target() == "wasm"
            || metadata.target() == modelgate_runtime::CRITICAL_LOG_TARGET
            || metadata.target().starts_with("modelgate")
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            LINES.lock().unwrap().push((
                record.level(),
                record.target().to_owned(),
                record.args().to_string(),
            ));
        }
    }
    fn flush(&self) {}
}

pub(crate) fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        log::set_logger(&Capture).expect("no other logger in tests");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

pub(crate) fn logged(level: log::Level, text: &str) -> bool {
    logged_to(level, "wasm", text)
}

/// A line at Proxy-Wasm's `critical` level.
pub(crate) fn logged_critical(text: &str) -> bool {
    logged_to(
        log::Level::Error,
        modelgate_runtime::CRITICAL_LOG_TARGET,
        text,
    )
}

fn logged_to(level: log::Level, target: &str, text: &str) -> bool {
    LINES
        .lock()
        .unwrap()
        .iter()
        .any(|(l, t, line)| *l == level && t == target && line.contains(text))
}

/// A stand-in for the gateway's clusters. The runtime only sees `HostServices`; the gateway's
/// real HTTP client behind it is tested in modelgate-host's own tests (and its gRPC streams
/// against `KServe`'s gRPC server in `tests/e2e/test_grpc_callouts.py`). Cluster `upstream`
/// answers 200 "pong", and its streams echo the request body back as a gRPC server would
/// answer (200 `application/grpc`, the data, `grpc-status: 0` once the request ended);
/// cluster `failing` fails every call and resets every stream.
pub(crate) struct FakeServices {
    pub(crate) calls: Mutex<Vec<(String, HttpCallRequest)>>,
    /// The request headers of every stream opened.
    pub(crate) streams: Mutex<Vec<(String, Headers)>>,
}

impl HostServices for FakeServices {
    fn has_cluster(&self, name: &str) -> bool {
        name == "upstream" || name == "failing"
    }

    fn http_call(
        &self,
        cluster: &str,
        request: HttpCallRequest,
        _timeout: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = Option<HttpCallResponse>> + Send>> {
        let ok = cluster == "upstream";
        self.calls
            .lock()
            .unwrap()
            .push((cluster.to_owned(), request));
        Box::pin(async move {
            tokio::task::yield_now().await;
            ok.then(|| HttpCallResponse {
                headers: vec![(":status".into(), b"200".to_vec())],
                body: b"pong".to_vec(),
                trailers: Vec::new(),
            })
        })
    }

    fn open_stream(
        &self,
        cluster: &str,
        headers: Headers,
        _timeout: Option<Duration>,
        mut body: mpsc::UnboundedReceiver<(Vec<u8>, bool)>,
        events: mpsc::UnboundedSender<StreamEvent>,
    ) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        if !self.has_cluster(cluster) {
            return None;
        }
        let ok = cluster == "upstream";
        self.streams
            .lock()
            .unwrap()
            .push((cluster.to_owned(), headers));
        Some(Box::pin(async move {
            if !ok {
                let _ = events.send(StreamEvent::Reset);
                return;
            }
            let _ = events.send(StreamEvent::Headers {
                headers: vec![
                    (":status".into(), b"200".to_vec()),
                    ("content-type".into(), b"application/grpc".to_vec()),
                ],
                end_stream: false,
            });
            while let Some((data, end)) = body.recv().await {
                let _ = events.send(StreamEvent::Data {
                    data,
                    end_stream: false,
                });
                if end {
                    break;
                }
            }
            let _ = events.send(StreamEvent::Trailers(vec![(
                "grpc-status".into(),
                b"0".to_vec(),
            )]));
        }))
    }
}

pub(crate) fn runtime() -> (Runtime, Arc<FakeServices>) {
    let services = Arc::new(FakeServices {
        calls: Mutex::new(Vec::new()),
        streams: Mutex::new(Vec::new()),
    });
    let runtime = Runtime::new(services.clone()).expect("runtime");
    (runtime, services)
}

pub(crate) fn spec(name: &str, wasm: Arc<[u8]>, plugin_config: &str) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        root_id: format!("{name}-root"),
        vm_id: format!("{name}-vm"),
        wasm,
        vm_config: b"vm-config".to_vec(),
        plugin_config: plugin_config.as_bytes().to_vec(),
        failure_policy: modelgate_runtime::FailurePolicy::FailClosed,
        allow_on_headers_stop_iteration: false,
        env: vec![("MG_TEST_ENV".into(), "from-spec".into())],
        vm_count: 1,
        memory_limit_bytes: 32 << 20,
        callback_deadline: Duration::from_millis(200),
    }
}

pub(crate) fn conformance(runtime: &Runtime, config: &str) -> Plugin {
    runtime
        .load(spec("conformance", filter("conformance"), config))
        .expect("load conformance")
}

pub(crate) fn info() -> StreamInfo {
    StreamInfo {
        source: "10.0.0.7:40000".parse::<SocketAddr>().unwrap(),
        destination: "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
        connection_id: 42,
        tls: false,
        protocol: "HTTP/1.1",
        start_time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

pub(crate) fn request(case: &str) -> Headers {
    vec![
        (":authority".into(), b"example.com".to_vec()),
        (":path".into(), b"/v1/models/m:predict?x=1".to_vec()),
        (":method".into(), b"POST".to_vec()),
        (":scheme".into(), b"http".to_vec()),
        ("x-request-id".into(), b"req-1".to_vec()),
        ("x-case".into(), case.as_bytes().to_vec()),
    ]
}

pub(crate) fn response(status: &str) -> Headers {
    vec![
        (":status".into(), status.as_bytes().to_vec()),
        ("content-type".into(), b"text/plain".to_vec()),
    ]
}

/// The first value of `key`, as text.
pub(crate) fn get<'a>(headers: &'a Headers, key: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
}

pub(crate) fn values<'a>(headers: &'a Headers, key: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
        .collect()
}

/// Run request headers for `case` on a fresh stream and return the stream and the headers.
pub(crate) async fn run_request(
    chain: &FilterChain,
    mut headers: Headers,
) -> (ChainStream, Flow, Headers) {
    let mut stream = chain.stream(info());
    let flow = stream.request_headers(&mut headers, true).await;
    (stream, flow, headers)
}

/// Read a shared-data key through the filter (case `shared-get`).
pub(crate) async fn shared_value(chain: &FilterChain, key: &str) -> Option<String> {
    let mut headers = request("shared-get");
    headers.push(("x-key".into(), key.as_bytes().to_vec()));
    let (stream, _, headers) = run_request(chain, headers).await;
    stream.finish();
    get(&headers, "x-value")
        .filter(|v| *v != "<none>")
        .map(str::to_owned)
}

/// Poll `key` until `done` holds, for at most `limit` (async work lands on its own schedule).
pub(crate) async fn wait_for_shared(
    chain: &FilterChain,
    key: &str,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let value = shared_value(chain, key).await;
        if value.as_deref().is_some_and(&done) || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
