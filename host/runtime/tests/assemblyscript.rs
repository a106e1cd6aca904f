//! A filter written with a second SDK, `@solo-io/proxy-runtime` 0.1.8 for `AssemblyScript`
//! (built with npm by the test support), runs unchanged and does what the SDK's README says:
//! it adds `hello: <plugin configuration>` to every response.
//!
//! The README's other branch (`hello: world!` for an empty configuration) cannot work on any
//! host: the SDK's `onConfigure` passes the configuration size as the `return_size` pointer of
//! `proxy_get_buffer_bytes`, so with an empty configuration it keeps a stale length and frees
//! pointer 0, whose block header lies before address 0: an out-of-bounds trap. Envoy answers an
//! empty buffer exactly as this runtime does (pointer 0, length 0), so it fails there too; the
//! last test pins that outcome.

mod support;

use modelgate_runtime::{FilterChain, Flow, PluginSpec, Runtime};
use support::{get, request, response, run_request, runtime};

fn hello(
    runtime: &Runtime,
    name: &str,
    root_id: &str,
    config: &str,
) -> Result<modelgate_runtime::Plugin, modelgate_runtime::LoadError> {
    let mut spec: PluginSpec = support::spec(name, support::assemblyscript_filter(), config);
    spec.root_id = root_id.into();
    runtime.load(spec)
}

#[tokio::test]
async fn the_readme_filter_adds_hello_to_responses() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![
        hello(&runtime, "as-hello", "add_header", "world!").unwrap(),
    ]);
    let (mut stream, flow, headers) = run_request(&chain, request("noop")).await;
    assert!(matches!(flow, Flow::Continue));
    assert_eq!(get(&headers, "x-as-path"), Some("/v1/models/m:predict?x=1"));
    let mut resp = response("200");
    assert!(matches!(
        stream.response_headers(&mut resp, true).await,
        Flow::Continue
    ));
    assert_eq!(get(&resp, "hello"), Some("world!"));
    stream.finish();
}

#[tokio::test]
async fn the_plugin_configuration_becomes_the_header_value() {
    let (runtime, _) = runtime();
    let mut two = vec![];
    for name in ["a", "b"] {
        two.push(hello(&runtime, name, "add_header", &format!("howdy-{name}")).unwrap());
    }
    let chain = FilterChain::new(two);
    let (mut stream, _, _) = run_request(&chain, request("noop")).await;
    let mut resp = response("200");
    stream.response_headers(&mut resp, true).await;
    assert_eq!(
        support::values(&resp, "hello"),
        ["howdy-b", "howdy-a"],
        "response callbacks run in reverse"
    );
    stream.finish();
}

#[tokio::test]
async fn an_unknown_root_id_fails_the_load_with_the_plugin_named() {
    let (runtime, _) = runtime();
    let err = hello(&runtime, "as-lost", "no_such_root", "")
        .err()
        .expect("the SDK throws");
    assert!(
        err.to_string()
            .starts_with("plugin as-lost: cannot start a VM"),
        "{err}"
    );
}

#[tokio::test]
async fn an_empty_configuration_trips_the_sdks_own_bug_and_fails_the_load() {
    let (runtime, _) = runtime();
    let err = hello(&runtime, "as-empty", "add_header", "")
        .err()
        .expect("the SDK aborts");
    assert!(
        err.to_string()
            .starts_with("plugin as-empty: cannot start a VM"),
        "{err}"
    );
}
