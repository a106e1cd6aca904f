//! Several VMs per plugin share shared data (compare-and-swap) and queues; ticks reach each
//! root context.

mod support;

use std::time::Duration;

use modelgate_runtime::{FilterChain, Headers};
use support::{get, request, run_request, runtime, shared_value, spec, wait_for_shared};

fn with(case: &str, extra: &[(&str, &str)]) -> Headers {
    let mut headers = request(case);
    headers.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.as_bytes().to_vec())),
    );
    headers
}

#[tokio::test]
async fn shared_data_compare_and_swap_conflicts_between_two_vms() {
    let (runtime, _) = runtime();
    let mut two = spec("cas", support::filter("conformance"), "");
    two.vm_count = 2;
    let plugin = runtime.load(two).unwrap();
    assert_eq!(plugin.vm_count(), 2);
    let chain = FilterChain::new(vec![plugin]);

    // Both VMs started and counted themselves with CAS; streams alternate between them.
    assert_eq!(
        shared_value(&chain, "vm-counter").await.as_deref(),
        Some("2")
    );
    assert_eq!(shared_value(&chain, "missing").await, None);

    let set = |value: &'static str, cas: Option<String>| {
        let mut extra = vec![("x-key", "k"), ("x-value", value)];
        let cas = cas.map(|c| Box::leak(c.into_boxed_str()) as &str);
        if let Some(cas) = cas {
            extra.push(("x-cas", cas));
        }
        with("shared-set", &extra)
    };
    let (s, _, first) = run_request(&chain, set("one", None)).await;
    s.finish();
    assert_eq!(get(&first, "x-set-status"), Some("0"));

    let (s, _, read) = run_request(&chain, with("shared-get", &[("x-key", "k")])).await;
    s.finish();
    let cas = get(&read, "x-cas").unwrap().to_owned();
    assert_ne!(cas, "0", "CAS versions are never 0");

    let (s, _, a) = run_request(&chain, set("two", Some(cas.clone()))).await;
    s.finish();
    let (s, _, b) = run_request(&chain, set("three", Some(cas))).await;
    s.finish();
    assert_ne!(
        get(&a, "x-vm"),
        get(&b, "x-vm"),
        "the two writers ran on different VMs"
    );
    assert_eq!(get(&a, "x-set-status"), Some("0"));
    assert_eq!(
        get(&b, "x-set-status"),
        Some("8"),
        "a stale CAS is CAS_MISMATCH"
    );
    assert_eq!(shared_value(&chain, "k").await.as_deref(), Some("two"));
}

#[tokio::test]
async fn a_queue_between_two_vms() {
    let (runtime, _) = runtime();
    let mut two = spec("queues", support::filter("conformance"), "");
    two.vm_count = 2;
    let chain = FilterChain::new(vec![runtime.load(two).unwrap()]);
    // VM 0 registered queue "q" at start-up; enqueue from both VMs.
    for value in ["a", "b"] {
        let (s, _, h) = run_request(&chain, with("enqueue", &[("x-value", value)])).await;
        s.finish();
        assert_eq!(get(&h, "x-enqueue"), Some("0"));
    }
    let got = wait_for_shared(&chain, "queue-got", Duration::from_secs(5), |v| {
        v.ends_with('b')
    })
    .await;
    let got = got.expect("on_queue_ready ran");
    assert_eq!(got, "vm0:a,b", "the owner VM got both values in order");
}

#[tokio::test]
async fn ticks_reach_the_root_context_one_period_after_they_are_set() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![
        runtime
            .load(spec("ticker", support::filter("conformance"), "tick=20"))
            .unwrap(),
    ]);
    let ticks = wait_for_shared(&chain, "ticks", Duration::from_secs(5), |v| {
        v.parse::<u32>().unwrap_or(0) >= 3
    })
    .await;
    assert!(ticks.unwrap().parse::<u32>().unwrap() >= 3);
    let delay: u64 = shared_value(&chain, "first-tick-delay-ms")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(delay >= 19, "first tick after one period, was {delay} ms");
}

#[tokio::test]
async fn no_ticks_without_a_period() {
    let (runtime, _) = runtime();
    let chain = FilterChain::new(vec![
        runtime
            .load(spec("quiet", support::filter("conformance"), ""))
            .unwrap(),
    ]);
    // Let a stream through so the VM has been busy; still no tick was ever recorded.
    let (s, _, _) = run_request(&chain, request("noop")).await;
    s.finish();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(shared_value(&chain, "ticks").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_paused_streams_on_two_vms_all_complete() {
    let (runtime, services) = runtime();
    let mut two = spec("busy", support::filter("conformance"), "");
    two.vm_count = 2;
    let chain = FilterChain::new(vec![runtime.load(two).unwrap()]);
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let chain = chain.clone();
            tokio::spawn(async move {
                let (stream, _, headers) = run_request(&chain, request("http-call")).await;
                stream.finish();
                get(&headers, "x-call-body").map(str::to_owned)
            })
        })
        .collect();
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        let mut bodies = Vec::new();
        for task in tasks {
            bodies.push(task.await.unwrap());
        }
        bodies
    })
    .await
    .expect("no stream is stuck");
    assert!(all.iter().all(|b| b.as_deref() == Some("pong")), "{all:?}");
    assert_eq!(services.calls.lock().unwrap().len(), 64);
    assert_eq!(runtime.vm_failures(), 0);
}
