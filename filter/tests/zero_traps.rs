//! The zero-trap run: every input corpus the project has, replayed through the production
//! `modelgate.wasm` in the host's runtime, must leave every VM alive.
//!
//! Under Envoy's default failure policy (`FAIL_CLOSED`, what Envoy Gateway gives) a trap fails the
//! worker's VM for good: every later request on that worker gets 503 until the configuration is
//! pushed again (docs/failure-policy.md). So the filter must never trap, whatever a client sends.
//! `tests/corpora/export.py` gathers the corpora where they live (fuzz seeds and corpora decoded
//! as each fuzz target decodes them, the e2e `KServe` bodies, the reliability JWT attacks, path
//! attacks, header spoofs and HTTP mutants) as plain requests; each one runs through the request
//! and response callbacks here, and any VM failure, any hang, and any plugin config that traps
//! in `on_configure` fails the test with the names of the inputs.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use modelgate_runtime::{
    FailurePolicy, FilterChain, Flow, Headers, LoadError, NoClusters, PluginSpec, Runtime,
    StreamInfo,
};
use serde_json::Value;

mod support;
use support::repo;

/// The corpora as `tests/corpora/export.py` writes them (it needs the project's venv for
/// `PyJWT` and cryptography, which mint the JWT attack tokens).
fn corpora() -> Value {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (make setup)",
        python.display()
    );
    let output = Command::new(&python)
        .arg(repo().join("tests/corpora/export.py"))
        .output()
        .expect("runs tests/corpora/export.py");
    assert!(
        output.status.success(),
        "tests/corpora/export.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("export.py writes JSON")
}

fn bytes(value: &Value) -> Vec<u8> {
    value
        .as_array()
        .expect("a list of byte values")
        .iter()
        .map(|b| u8::try_from(b.as_u64().expect("a byte")).expect("a byte"))
        .collect()
}

fn spec(name: &str, plugin_config: Vec<u8>) -> PluginSpec {
    PluginSpec {
        name: name.to_owned(),
        root_id: "modelgate".to_owned(),
        vm_id: format!("zero-traps-{name}"),
        wasm: support::module(),
        vm_config: Vec::new(),
        plugin_config,
        failure_policy: FailurePolicy::FailClosed,
        allow_on_headers_stop_iteration: false,
        env: Vec::new(),
        vm_count: 1,
        memory_limit_bytes: 256 << 20,
        callback_deadline: Duration::from_secs(1),
    }
}

fn info() -> StreamInfo {
    StreamInfo {
        source: "203.0.113.7:40000".parse::<SocketAddr>().expect("address"),
        destination: "127.0.0.1:8080".parse::<SocketAddr>().expect("address"),
        connection_id: 1,
        tls: false,
        protocol: "HTTP/1.1",
        start_time: SystemTime::now(),
    }
}

/// One request through the chain as the gateway drives it: headers, the body (if any), then,
/// when no filter answered, a JSON 200 from the "model server" through the response callbacks.
async fn replay(chain: &FilterChain, case: &Value) {
    let mut headers: Headers = vec![
        (":authority".into(), b"gateway.test".to_vec()),
        (":path".into(), bytes(&case["path"])),
        (
            ":method".into(),
            case["method"].as_str().unwrap_or("GET").as_bytes().to_vec(),
        ),
        (":scheme".into(), b"http".to_vec()),
    ];
    for pair in case["headers"].as_array().into_iter().flatten() {
        let name = pair[0].as_str().unwrap_or_default().to_owned();
        headers.push((name, bytes(&pair[1])));
    }
    headers.push(("x-request-id".into(), b"zero-traps".to_vec()));
    let mut body = bytes(&case["body"]);
    let mut stream = chain.stream(info());
    let mut flow = stream.request_headers(&mut headers, body.is_empty()).await;
    if matches!(flow, Flow::Continue) && !body.is_empty() {
        flow = stream.request_body(&mut body, true).await;
    }
    if matches!(flow, Flow::Continue) {
        // A case may bring its own answer (an OpenAI stream); it arrives in two chunks cut in
        // the middle, as a streamed response does.
        let (content_type, mut answer) = match case["response"].as_array() {
            Some(pair) => (
                pair[0].as_str().unwrap_or_default().as_bytes().to_vec(),
                bytes(&pair[1]),
            ),
            None => (
                b"application/json".to_vec(),
                br#"{"predictions":[0]}"#.to_vec(),
            ),
        };
        let mut response: Headers = vec![
            (":status".into(), b"200".to_vec()),
            ("content-type".into(), content_type),
        ];
        if matches!(
            stream.response_headers(&mut response, false).await,
            Flow::Continue
        ) {
            let mut rest = answer.split_off(answer.len() / 2);
            if matches!(
                stream.response_body(&mut answer, false).await,
                Flow::Continue
            ) {
                stream.response_body(&mut rest, true).await;
            }
        }
    }
    stream.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_runs_through_modelgate_without_a_trap() {
    let corpora = corpora();
    let runtime = Runtime::new(Arc::new(NoClusters)).expect("runtime starts");
    let mut failed: Vec<String> = Vec::new();

    // Plugin configs (the `config` fuzz target): refusing one is fine, trapping is not.
    let plugin_configs = corpora["plugin_configs"]
        .as_array()
        .expect("plugin configs");
    for (i, entry) in plugin_configs.iter().enumerate() {
        match runtime.load(spec(&format!("config-{i}"), bytes(&entry["config"]))) {
            Ok(_) | Err(LoadError::Rejected { .. }) => {}
            Err(error) => failed.push(format!("{}: {error}", entry["source"])),
        }
    }

    let configs = corpora["configs"].as_object().expect("configs");
    let mut chains = std::collections::HashMap::new();
    for (id, text) in configs {
        let text = text.as_str().expect("config text").as_bytes().to_vec();
        let plugin = runtime
            .load(spec(id, text))
            .unwrap_or_else(|e| panic!("modelgate refused the {id} config: {e}"));
        chains.insert(id.clone(), FilterChain::new(vec![plugin]));
    }

    let cases = corpora["cases"].as_array().expect("cases");
    let mut sources = std::collections::BTreeSet::new();
    for case in cases {
        let source = case["source"].as_str().unwrap_or_default();
        sources.insert(
            source
                .split(['/', ' '])
                .take(2)
                .collect::<Vec<_>>()
                .join("/"),
        );
        let id = case["config"].as_str().expect("config id");
        let chain = &chains[id];
        let before = runtime.vm_failures();
        let finished = tokio::time::timeout(Duration::from_secs(20), replay(chain, case)).await;
        if finished.is_err() {
            failed.push(format!("{source}: no answer within 20s"));
        }
        if runtime.vm_failures() != before {
            failed.push(format!("{source}: the VM failed"));
            // A fresh plugin, so the cases after this one still meet a live VM.
            let text = configs[id]
                .as_str()
                .expect("config text")
                .as_bytes()
                .to_vec();
            let plugin = runtime.load(spec(id, text)).expect("reloads");
            chains.insert(id.to_owned(), FilterChain::new(vec![plugin]));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs trapped or hung:\n{}",
        failed.len(),
        cases.len() + plugin_configs.len(),
        failed.join("\n")
    );
    // Every corpus contributed: an exporter that silently found nothing would pass above.
    for expected in ["fuzz/seeds", "tests/e2e", "tests/reliability"] {
        assert!(
            sources.contains(expected),
            "no case from {expected}: {sources:?}"
        );
    }
    assert!(cases.len() > 400, "only {} cases", cases.len());
    assert!(!plugin_configs.is_empty());
}
