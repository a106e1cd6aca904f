//! Reloads: a config change under steady load drops no request, and a broken config keeps
//! the running one.

mod gateway_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use modelgate_host::gateway::ConfigErrorKind;

use gateway_support::{TestGateway, Upstream, client, cluster, get};

fn config(old: &Upstream, new: &Upstream, target: &str) -> String {
    format!(
        "version: 1
listeners: [{{address: 127.0.0.1:0}}]
admin: {{address: 127.0.0.1:0}}
clusters:
{}{}routes: [{{name: main, match: {{prefix: /}}, cluster: {target}}}]
reload: {{watch: true, pollInterval: 50ms}}
",
        cluster("old", &[old]),
        cluster("new", &[new])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_under_steady_load_fails_no_request() {
    let (old, new) = (Upstream::start("old").await, Upstream::start("new").await);
    let gw = TestGateway::start(&config(&old, &new, "old")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failed),
            gw.url("/v1/models/m:predict"),
        );
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let request = hyper::Request::get(&url)
                    .body(http_body_util::Full::default())
                    .unwrap();
                match gateway_support::send(&c, request).await {
                    Ok(answer) if answer.status == StatusCode::OK => {
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // Let traffic flow on the old config first.
    while old.count() < 50 {
        tokio::task::yield_now().await;
    }
    // The file watcher notices the new file and swaps the config in under load.
    gw.config.rewrite(&config(&old, &new, "new"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while new.count() < 50 {
        assert!(Instant::now() < deadline, "the watcher never reloaded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} requests succeeded",
        ok.load(Ordering::Relaxed)
    );
    let answer = get(&client(), &gw.url("/")).await;
    assert_eq!(answer.header("x-upstream"), Some("new"));
    let metrics = get(&client(), &gw.admin_url("/metrics")).await.body;
    assert!(
        metrics.contains("modelgate_config_reloads_total{result=\"success\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_broken_config_is_refused_and_the_running_one_stays() {
    let (old, new) = (Upstream::start("old").await, Upstream::start("new").await);
    let yaml = config(&old, &new, "old").replace("watch: true", "watch: false");
    let gw = TestGateway::start(&yaml).await;
    gw.config
        .rewrite(&yaml.replace("cluster: old", "cluster: missing"));
    let errors = gw.gateway.reload().await.unwrap_err();
    assert_eq!(
        errors.messages(),
        ["routes[0].cluster: unknown cluster \"missing\""]
    );
    assert_eq!(errors.0[0].kind, ConfigErrorKind::Invalid);
    gw.config
        .rewrite(&yaml.replace("prefix: /", "prefix: /, bogus: 1"));
    let errors = gw.gateway.reload().await.unwrap_err();
    assert!(
        errors.messages()[0].starts_with("routes[0].match.bogus: unknown field `bogus`"),
        "{errors}"
    );
    assert_eq!(errors.0[0].kind, ConfigErrorKind::Syntax);
    let answer = get(&client(), &gw.url("/")).await;
    assert_eq!(answer.header("x-upstream"), Some("old"));
    // A good config after the broken ones is taken.
    gw.config
        .rewrite(&yaml.replace("cluster: old", "cluster: new"));
    gw.gateway.reload().await.unwrap();
    assert_eq!(
        get(&client(), &gw.url("/")).await.header("x-upstream"),
        Some("new")
    );
    let metrics = get(&client(), &gw.admin_url("/metrics")).await.body;
    assert!(
        metrics.contains("modelgate_config_reloads_total{result=\"failure\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("modelgate_config_reloads_total{result=\"success\"} 1\n"),
        "{metrics}"
    );
}
