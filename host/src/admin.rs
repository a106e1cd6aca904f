//! The admin listener: `/ready`, `/metrics` (Prometheus text) and `/config_dump`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{GatewayBody, ReplayBody};
use crate::shared::Shared;
use crate::stats_tags::TagExtractors;

pub(crate) async fn serve(
    socket: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = socket.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let response = answer(&shared, request.uri().path());
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned()).await;
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(socket);
    graceful.shutdown().await;
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<GatewayBody> {
    let mut response = Response::new(ReplayBody::new(body.into(), None).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn answer(shared: &Shared, path: &str) -> Response<GatewayBody> {
    let snapshot = shared.snapshot();
    match path {
        "/ready" => match snapshot {
            Some(_) => reply(StatusCode::OK, "text/plain", "ready\n"),
            None => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n"),
        },
        "/metrics" => {
            let clusters = snapshot
                .as_ref()
                .map(|s| Arc::clone(&s.clusters))
                .unwrap_or_default();
            let no_tags = TagExtractors::default();
            let tags = snapshot.as_ref().map_or(&no_tags, |s| &s.stats_tags);
            let text = shared.metrics.render(
                &clusters,
                &shared.runtime.plugin_stats(),
                &shared.runtime.metrics(),
                tags,
            );
            reply(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        "/config_dump" => match snapshot {
            Some(s) => reply(StatusCode::OK, "application/json", s.dump.clone()),
            None => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                r#"{"error":"not configured yet"}"#,
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"error":"unknown admin path"}"#,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_config_dump_answer_503_until_a_config_is_serving() {
        let runtime =
            modelgate_runtime::Runtime::new(Arc::new(modelgate_runtime::NoClusters)).unwrap();
        let shared = Shared::new(
            runtime,
            crate::source::ConfigSource::File("unused.yaml".into()),
        );
        assert_eq!(
            answer(&shared, "/ready").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            answer(&shared, "/config_dump").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        // Metrics are served from the start, without any cluster.
        assert_eq!(answer(&shared, "/metrics").status(), StatusCode::OK);
    }
}
