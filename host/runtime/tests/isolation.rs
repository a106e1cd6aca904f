//! Isolation: a trap, an endless loop and a memory blow-up each fail only the request (503,
//! empty body, or the filter skipped when fail-open), the VM is rebuilt, and the runtime keeps
//! serving.

mod support;

use std::time::{Duration, Instant};

use modelgate_runtime::{FilterChain, Flow};
use support::{get, request, run_request, runtime, spec};

async fn fails_then_serves(case: &str) {
    let (runtime, _) = runtime();
    let plugin = runtime
        .load(spec("isolated", support::filter("conformance"), ""))
        .unwrap();
    let chain = FilterChain::new(vec![plugin]);
    let started = Instant::now();
    let (stream, flow, _) = run_request(&chain, request(case)).await;
    stream.finish();
    let Flow::LocalReply(reply) = flow else {
        panic!("{case}: expected 503, got {flow:?}")
    };
    assert_eq!((reply.status, reply.body.len()), (503, 0), "{case}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{case} was stopped in bounded time"
    );
    assert_eq!(runtime.vm_restarts(), 1, "{case}");

    // The rebuilt VM ran start-up and on_configure again and serves the next request.
    let (stream, flow, headers) = run_request(&chain, request("whoami")).await;
    stream.finish();
    assert!(matches!(flow, Flow::Continue), "{case}: {flow:?}");
    assert_eq!(
        get(&headers, "x-vm"),
        Some("1"),
        "{case}: the rebuilt VM counted itself again"
    );
}

#[tokio::test]
async fn a_trap_gives_503_and_the_vm_is_rebuilt() {
    fails_then_serves("trap").await;
}

#[tokio::test]
async fn an_endless_loop_hits_the_deadline() {
    fails_then_serves("loop").await;
}

#[tokio::test]
async fn a_memory_blow_up_hits_the_limit() {
    fails_then_serves("oom").await;
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
    open.fail_open = true;
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
    assert_eq!(runtime.vm_restarts(), 1);
    stream.finish();
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
    assert_eq!(runtime.vm_restarts(), 1);
}
