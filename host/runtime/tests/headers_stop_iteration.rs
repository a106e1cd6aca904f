//! A Pause from request headers, both ways Envoy reads it (proxy-wasm-cpp-host src/context.cc,
//! `ContextBase::convertVmCallResultToFilterHeadersStatus`; PR #434, issues #143 and #417):
//!
//! - by default (`allow_on_headers_stop_iteration` false) `StopIteration` becomes
//!   `StopAllIterationAndWatermark`: the filter gets no body until it continues, so a filter
//!   that waits for its body to decide stalls;
//! - with it set, the headers are held back from the filters after it and from the upstream,
//!   the body still reaches the filter, and its header edits go on when it continues from a
//!   body callback.
//!
//! The `conformance` filter's case `hold-headers-for-body` pauses its headers, buffers the body
//! and, at the end of the stream, adds `x-from-body: <body>` to the request headers.

mod support;

use std::future::Future as _;
use std::pin::pin;
use std::task::{Context, Waker};

use modelgate_runtime::{ChainStream, FilterChain, Flow, Headers, Plugin, Runtime};
use support::{filter, get, info, request, runtime, spec};

fn plugin(runtime: &Runtime, tag: &str, allow: bool) -> Plugin {
    let mut spec = spec("conformance", filter("conformance"), &format!("name={tag}"));
    spec.vm_id = format!("conformance-{tag}");
    spec.allow_on_headers_stop_iteration = allow;
    runtime.load(spec).expect("load conformance")
}

/// Filter A (holding, `allow` as given) then filter B (allowing, continuing its headers).
fn chain(allow: bool) -> FilterChain {
    let (runtime, _) = runtime();
    FilterChain::new(vec![
        plugin(&runtime, "A", allow),
        plugin(&runtime, "B", true),
    ])
}

fn state(stream: &ChainStream, key: &str) -> Option<String> {
    stream
        .filter_state()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| String::from_utf8(v).unwrap())
}

#[tokio::test]
async fn by_default_a_pause_from_request_headers_holds_the_body_back_too() {
    let chain = chain(false);
    let mut stream = chain.stream(info());
    let mut headers = request("hold-headers-for-body");
    {
        // Nothing will continue the stream: Envoy waits, and the body never reaches the filter.
        let mut wait = pin!(stream.request_headers(&mut headers, false));
        let polled = wait.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending(), "the headers phase must wait");
    }
    assert_eq!(
        state(&stream, "wasm.body.sizes"),
        None,
        "no body callback ran"
    );
    assert_eq!(stream.take_released_headers(), None);
    stream.finish();
}

#[tokio::test]
async fn allowed_the_body_reaches_the_holding_filter_and_its_header_edits_go_on() {
    let chain = chain(true);
    let mut stream = chain.stream(info());
    let mut headers = request("hold-headers-for-body");
    let flow = stream.request_headers(&mut headers, false).await;
    assert!(matches!(flow, Flow::StopAndBuffer), "{flow:?}");
    assert!(
        headers.is_empty(),
        "the chain holds the headers: {headers:?}"
    );
    assert_eq!(stream.take_released_headers(), None);
    // A's tag edit in the headers phase; the body's edit must raise the flag again.
    stream.take_route_cache_cleared();

    let mut body = br#"{"model":"#.to_vec();
    let flow = stream.request_body(&mut body, false).await;
    assert!(matches!(flow, Flow::StopAndBuffer), "{flow:?}");
    assert_eq!(stream.take_released_headers(), None, "still held mid-body");
    assert_eq!(state(&stream, "wasm.body.sizes").as_deref(), Some("9"));

    body.extend_from_slice(br#""m2"}"#);
    let flow = stream.request_body(&mut body, true).await;
    assert!(matches!(flow, Flow::Continue), "{flow:?}");
    let released: Headers = stream.take_released_headers().expect("released");
    assert_eq!(get(&released, "x-from-body"), Some(r#"{"model":"m2"}"#));
    // B saw the headers only after A let them go: its tag follows A's.
    assert_eq!(get(&released, "x-order"), Some("AB"));
    assert_eq!(get(&released, ":path"), Some("/v1/models/m:predict?x=1"));
    assert!(
        stream.take_route_cache_cleared(),
        "the edit re-matches the route"
    );
    assert_eq!(state(&stream, "wasm.held.status").as_deref(), Some("0"));
    assert_eq!(body, br#"{"model":"m2"}"#, "the body goes on unchanged");
    assert_eq!(stream.take_released_headers(), None, "released once");
    stream.finish();
}

#[tokio::test]
async fn allowed_a_held_body_past_the_buffer_limit_gets_413() {
    let chain = chain(true).with_buffer_limit(8);
    let mut stream = chain.stream(info());
    let mut headers = request("hold-headers-for-body");
    let flow = stream.request_headers(&mut headers, false).await;
    assert!(matches!(flow, Flow::StopAndBuffer), "{flow:?}");
    let mut body = b"0123456789".to_vec();
    match stream.request_body(&mut body, false).await {
        Flow::LocalReply(reply) => assert_eq!(reply.status, 413),
        other => panic!("expected 413, got {other:?}"),
    }
    assert_eq!(stream.take_released_headers(), None);
    stream.finish();
}

#[tokio::test]
async fn allowed_a_pause_from_headers_that_end_the_stream_still_waits() {
    // No body will come: StopIteration then waits for proxy_continue_stream, as in Envoy.
    let chain = chain(true);
    let mut stream = chain.stream(info());
    let mut headers = request("hold-headers-for-body");
    {
        let mut wait = pin!(stream.request_headers(&mut headers, true));
        let polled = wait.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(polled.is_pending());
    }
    stream.finish();
}

#[tokio::test]
async fn allowed_trailers_end_the_hold() {
    let chain = chain(true);
    let mut stream = chain.stream(info());
    let mut headers = request("hold-headers-for-body");
    assert!(matches!(
        stream.request_headers(&mut headers, false).await,
        Flow::StopAndBuffer
    ));
    let mut body = b"part".to_vec();
    assert!(matches!(
        stream.request_body(&mut body, false).await,
        Flow::StopAndBuffer
    ));
    let mut trailers = Vec::new();
    let flow = stream.request_trailers(&mut trailers).await;
    assert!(matches!(flow, Flow::Continue), "{flow:?}");
    let released = stream
        .take_released_headers()
        .expect("released by the trailers");
    assert_eq!(get(&released, "x-order"), Some("AB"));
    stream.finish();
}
