//! Isolation and the failure policy: a trap, an endless loop and a memory blow-up each fail
//! only their VM; what later streams get follows the plugin's `FailurePolicy`, as Envoy's
//! `PluginConfig.failure_policy` (source/extensions/common/wasm/wasm.cc,
//! `PluginConfig::createContext` and `maybeReloadHandleIfNeeded`): fail closed (the default)
//! answers 503 `wasm_fail_stream` until the plugin is loaded again, fail open skips the
//! filter, reload builds a new VM once the backoff has passed.

mod support;

use std::time::{Duration, Instant};

use modelgate_runtime::{FailurePolicy, FilterChain, Flow, LocalReply, PluginStats, Runtime};
use support::{get, request, run_request, runtime, spec};

fn stats(runtime: &Runtime, name: &str) -> PluginStats {
    runtime
        .plugin_stats()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

async fn fail_stream_reply(chain: &FilterChain, case: &str) -> LocalReply {
    let (stream, flow, _) = run_request(chain, request(case)).await;
    stream.finish();
    let Flow::LocalReply(reply) = flow else {
        panic!("{case}: expected 503, got {flow:?}")
    };
    // Envoy's Context::failStream: 503, empty body, details wasm_fail_stream.
    assert_eq!(
        (reply.status, reply.body.len(), reply.details),
        (503, 0, "wasm_fail_stream"),
        "{case}"
    );
    reply
}

/// `FailReload` with a backoff short enough that the next stream reloads.
async fn fails_then_reloads(case: &str) {
    let (runtime, _) = runtime();
    let mut reloading = spec("isolated", support::filter("conformance"), "");
    reloading.failure_policy = FailurePolicy::FailReload {
        base_interval: Duration::from_millis(1),
    };
    let chain = FilterChain::new(vec![runtime.load(reloading).unwrap()]);
    let started = Instant::now();
    fail_stream_reply(&chain, case).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{case} was stopped in bounded time"
    );
    assert_eq!(stats(&runtime, "isolated").vm_failures, 1, "{case}");
    tokio::time::sleep(Duration::from_millis(5)).await;

    // The new VM ran start-up and on_configure again and serves the next request.
    let (stream, flow, headers) = run_request(&chain, request("whoami")).await;
    stream.finish();
    assert!(matches!(flow, Flow::Continue), "{case}: {flow:?}");
    assert_eq!(
        get(&headers, "x-vm"),
        Some("1"),
        "{case}: the reloaded VM counted itself again"
    );
    let after = stats(&runtime, "isolated");
    assert_eq!((after.vm_reload_success, after.vm_reload_failure), (1, 0));
}

#[tokio::test]
async fn a_trap_fails_the_vm_and_reload_replaces_it() {
    fails_then_reloads("trap").await;
}

#[tokio::test]
async fn an_endless_loop_hits_the_deadline() {
    fails_then_reloads("loop").await;
}

#[tokio::test]
async fn a_memory_blow_up_hits_the_limit() {
    fails_then_reloads("oom").await;
}

#[tokio::test]
async fn by_default_a_failed_vm_answers_every_later_stream_503_until_the_plugin_is_loaded_again() {
    let (runtime, _) = runtime();
    let load = || runtime.load(spec("closed", support::filter("conformance"), ""));
    let chain = FilterChain::new(vec![load().unwrap()]);
    fail_stream_reply(&chain, "trap").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..3 {
        // "whoami" would pass through a live VM: these streams never reach the filter.
        fail_stream_reply(&chain, "whoami").await;
    }
    let closed = stats(&runtime, "closed");
    assert_eq!(closed.vm_failures, 1);
    assert_eq!(
        (closed.vm_reload_backoff, closed.vm_reload_success),
        (0, 0),
        "fail-closed never reloads"
    );
    // A config push loads the plugin again: the new chain serves.
    let chain = FilterChain::new(vec![load().unwrap()]);
    let (stream, flow, _) = run_request(&chain, request("whoami")).await;
    stream.finish();
    assert!(matches!(flow, Flow::Continue), "{flow:?}");
}

#[tokio::test]
async fn reload_waits_for_the_backoff_and_counts_what_it_skipped() {
    let (runtime, _) = runtime();
    let mut reloading = spec("backoff", support::filter("conformance"), "");
    reloading.failure_policy = FailurePolicy::FailReload {
        base_interval: Duration::from_mins(1),
    };
    let chain = FilterChain::new(vec![runtime.load(reloading).unwrap()]);
    fail_stream_reply(&chain, "trap").await;
    fail_stream_reply(&chain, "whoami").await;
    fail_stream_reply(&chain, "whoami").await;
    let after = stats(&runtime, "backoff");
    assert_eq!(
        (after.vm_reload_backoff, after.vm_reload_success),
        (2, 0),
        "within the backoff every stream fails closed and counts vm_reload_backoff"
    );
}

fn trap_in(tag: &str) -> modelgate_runtime::Headers {
    let mut headers = request("trap-if-tag");
    headers.push(("x-trap-tag".into(), tag.as_bytes().to_vec()));
    headers
}

#[tokio::test]
async fn fail_open_skips_the_failed_filter() {
    let (runtime, _) = runtime();
    let mut open = spec("open", support::filter("conformance"), "name=o");
    open.failure_policy = FailurePolicy::FailOpen;
    let tagger = runtime
        .load(spec("tagger", support::filter("conformance"), "name=t"))
        .unwrap();
    let chain = FilterChain::new(vec![runtime.load(open).unwrap(), tagger]);
    let (mut stream, flow, headers) = run_request(&chain, trap_in("o")).await;
    assert!(matches!(flow, Flow::Continue), "{flow:?}");
    // Edits made before the trap stay, as they do on Envoy's live header map.
    assert_eq!(get(&headers, "x-order"), Some("ot"));
    let mut resp = support::response("200");
    assert!(matches!(
        stream.response_headers(&mut resp, true).await,
        Flow::Continue
    ));
    assert_eq!(
        get(&resp, "x-order"),
        Some("t"),
        "the failed filter is skipped for the rest of the stream"
    );
    assert_eq!(stats(&runtime, "open").vm_failures, 1);
    stream.finish();
    // Later streams skip the failed filter from the start (Envoy adds no filter for them).
    let (stream, flow, headers) = run_request(&chain, request("whoami")).await;
    stream.finish();
    assert!(matches!(flow, Flow::Continue), "{flow:?}");
    assert_eq!(get(&headers, "x-order"), Some("t"));
}

#[tokio::test]
async fn a_fail_closed_trap_in_a_later_filter_still_runs_earlier_response_callbacks() {
    let (runtime, _) = runtime();
    let wasm = support::filter("conformance");
    let first = runtime.load(spec("first", wasm.clone(), "name=f")).unwrap();
    let second = runtime.load(spec("second", wasm, "name=s")).unwrap();
    let chain = FilterChain::new(vec![first, second]);
    let (stream, flow, _) = run_request(&chain, trap_in("s")).await;
    stream.finish();
    let Flow::LocalReply(reply) = flow else {
        panic!("{flow:?}")
    };
    assert_eq!(reply.status, 503);
    assert!(reply.body.is_empty());
    assert_eq!(
        get(&reply.headers, "x-seen-status"),
        Some("503"),
        "the first filter saw the 503"
    );
    assert_eq!(get(&reply.headers, "x-order"), Some("f"));
    assert_eq!(stats(&runtime, "second").vm_failures, 1);
}
