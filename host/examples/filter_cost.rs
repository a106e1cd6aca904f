//! Time per request of Proxy-Wasm filters in the modelgate runtime (wasmtime), for
//! `bench/filter_cost.py`: the wasmtime half of the filter-cost benchmark, whose V8 half is
//! `bench/v8/bench.mjs`. Both replay the same plan (plugins, requests, the outcome each request
//! must have) and print one JSON line per case.
//!
//! `cargo run --release -p modelgate-host --example filter_cost -- PLAN.json`
//!
//! Each request is one whole stream through `ChainStream`, as the gateway drives it: request
//! headers, body, response headers and body, then the log callbacks. Every outcome is checked
//! (forwarded, the headers and filter state the plan names), so a fast wrong answer fails the run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use modelgate_runtime::{
    FailurePolicy, FilterChain, Flow, Headers, NoClusters, PluginSpec, Runtime, StreamInfo,
};
use serde_json::Value;

const WARMUP: usize = 300;
const ROUNDS: usize = 5;

struct Message {
    headers: Headers,
    body: Vec<u8>,
}

fn message(value: &Value) -> Message {
    let headers = value["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().expect("name").to_owned(),
                pair[1].as_str().expect("value").as_bytes().to_vec(),
            )
        })
        .collect();
    Message {
        headers,
        body: value["body"].as_str().expect("body").as_bytes().to_vec(),
    }
}

fn info() -> StreamInfo {
    StreamInfo {
        source: SocketAddr::from(([127, 0, 0, 1], 40_000)),
        destination: SocketAddr::from(([127, 0, 0, 1], 18_080)),
        connection_id: 1,
        tls: false,
        protocol: "HTTP/1.1",
        start_time: SystemTime::now(),
    }
}

/// One request through the chain; `Err` says how it ended otherwise than forwarded as expected.
async fn exchange(
    chain: &FilterChain,
    request: &Message,
    response: &Message,
    expect: &Value,
) -> Result<(), String> {
    let mut stream = chain.stream(info());
    let mut headers = request.headers.clone();
    let last = request.body.is_empty();
    match stream.request_headers(&mut headers, last).await {
        Flow::LocalReply(reply) => return Err(format!("headers answered {}", reply.status)),
        Flow::Continue | Flow::StopAndBuffer => {}
    }
    if !last {
        let mut body = request.body.clone();
        match stream.request_body(&mut body, true).await {
            Flow::LocalReply(reply) => {
                return Err(format!(
                    "body answered {} {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                ));
            }
            Flow::StopAndBuffer => return Err("a complete body was not decided".into()),
            Flow::Continue => {}
        }
        if let Some(released) = stream.take_released_headers() {
            headers = released;
        }
    }
    for (name, value) in expect["headers"].as_object().expect("expect.headers") {
        let found = headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        if found.map(Vec::as_slice) != Some(value.as_str().unwrap_or_default().as_bytes()) {
            return Err(format!("forwarded {name}={found:?}, expected {value}"));
        }
    }
    let state = stream.filter_state();
    for (key, value) in expect["filterState"]
        .as_object()
        .expect("expect.filterState")
    {
        let found = state.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        if found.map(Vec::as_slice) != Some(value.as_str().unwrap_or_default().as_bytes()) {
            return Err(format!("filter state {key}={found:?}, expected {value}"));
        }
    }
    let mut response_headers = response.headers.clone();
    stream.response_headers(&mut response_headers, false).await;
    let mut response_body = response.body.clone();
    stream.response_body(&mut response_body, true).await;
    stream.finish();
    Ok(())
}

fn load(runtime: &Runtime, name: &str, plugin: &Value) -> FilterChain {
    let path = plugin["wasm"].as_str().expect("wasm path");
    let wasm = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let spec = PluginSpec {
        name: name.to_owned(),
        root_id: String::new(),
        vm_id: name.to_owned(),
        wasm: wasm.into(),
        vm_config: Vec::new(),
        plugin_config: plugin["config"]
            .as_str()
            .expect("config")
            .as_bytes()
            .to_vec(),
        failure_policy: FailurePolicy::FailClosed,
        allow_on_headers_stop_iteration: plugin["holdHeaders"].as_bool().unwrap_or(false),
        env: Vec::new(),
        vm_count: 1,
        memory_limit_bytes: 128 << 20,
        callback_deadline: Duration::from_secs(5),
    };
    match runtime.load(spec) {
        Ok(plugin) => FilterChain::new(vec![plugin]),
        Err(error) => panic!("{name} did not load: {error}"),
    }
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: filter_cost PLAN.json");
    let plan: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("plan")).expect("the plan is JSON");
    let runtime = Runtime::new(Arc::new(NoClusters)).expect("runtime");
    let chains: Vec<(String, FilterChain)> = plan["plugins"]
        .as_object()
        .expect("plugins")
        .iter()
        .map(|(name, plugin)| (name.clone(), load(&runtime, name, plugin)))
        .collect();
    let requests = usize::try_from(plan["requests"].as_u64().expect("requests")).expect("fits");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    for case in plan["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let plugin = case["plugin"].as_str().expect("plugin");
        let chain = &chains.iter().find(|(n, _)| n == plugin).expect("plugin").1;
        let messages: Vec<Message> = case["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .map(message)
            .collect();
        let response = message(&case["response"]);
        let expect = &case["expect"];
        let distinct = case["distinct"].as_bool().unwrap_or(false);
        let count = if distinct {
            requests.min(messages.len() - 1)
        } else {
            requests
        };
        let ns = tokio.block_on(async {
            for _ in 0..WARMUP {
                if let Err(why) = exchange(chain, &messages[0], &response, expect).await {
                    panic!("{name}: {why}");
                }
            }
            let per = count.div_ceil(ROUNDS);
            let mut slices = Vec::new();
            let mut next = usize::from(distinct);
            let mut from = 0;
            while from < count {
                let to = (from + per).min(count);
                let start = Instant::now();
                for _ in from..to {
                    let request = &messages[if distinct { next } else { 0 }];
                    next += 1;
                    if let Err(why) = exchange(chain, request, &response, expect).await {
                        panic!("{name}: {why}");
                    }
                }
                #[expect(clippy::cast_precision_loss, reason = "a figure to print")]
                slices.push(start.elapsed().as_nanos() as f64 / (to - from) as f64);
                from = to;
            }
            slices.sort_by(f64::total_cmp);
            slices[slices.len() / 2]
        });
        println!(
            "{}",
            serde_json::json!({
                "runtime": "wasmtime",
                "engine": "modelgate runtime (wasmtime 48)",
                "case": name,
                "requests": count,
                "ns_per_request": ns,
            })
        );
    }
}
