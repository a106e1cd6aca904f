//! What the gateway offers the runtime: the clusters of one config, for filters' `http_call`
//! and their streaming requests (`proxy_grpc_call`, `proxy_grpc_stream`; `filter_stream`).
//! Each snapshot hands the plugins it loads its own (`Runtime::load_with`), so the cluster
//! set lives in one place, the snapshot, and building a snapshot changes nothing that serves.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use modelgate_runtime::{HostServices, HttpCallRequest, HttpCallResponse, StreamEvent};
use tokio::sync::mpsc;

use crate::body::ReplayBody;
use crate::cluster::Clusters;
use crate::headers;

/// The clusters a snapshot's filters may call: the snapshot's own.
pub(crate) struct ClusterServices {
    clusters: Arc<Clusters>,
}

impl ClusterServices {
    pub(crate) fn new(clusters: Arc<Clusters>) -> ClusterServices {
        ClusterServices { clusters }
    }
}

impl HostServices for ClusterServices {
    fn has_cluster(&self, name: &str) -> bool {
        self.clusters.contains_key(name)
    }

    fn http_call(
        &self,
        cluster: &str,
        request: HttpCallRequest,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = Option<HttpCallResponse>> + Send>> {
        let cluster = self.clusters.get(cluster).cloned();
        let call = async move {
            let cluster = cluster?;
            let in_flight = cluster.pick(&[])?;
            let trailers =
                (!request.trailers.is_empty()).then(|| headers::to_header_map(&request.trailers));
            let body = ReplayBody::new(Bytes::from(request.body), trailers).boxed();
            let upstream = match headers::to_upstream_request(
                &request.headers,
                in_flight.endpoint().address,
                body,
            ) {
                Ok(upstream) => upstream,
                Err(e) => {
                    log::warn!("http_call to cluster {}: {e}", cluster.name);
                    return None;
                }
            };
            let response = match cluster
                .client()
                .request(in_flight.endpoint().address, upstream)
                .await
            {
                Ok(response) => response,
                Err(e) => {
                    log::debug!("http_call to cluster {} failed: {e}", cluster.name);
                    return None;
                }
            };
            let (parts, body) = response.into_parts();
            let collected = body.collect().await.ok()?;
            let trailers = collected
                .trailers()
                .map(|t| headers::response_headers(parts.status, t))
                .map(|mut t| {
                    t.remove(0); // trailers carry no :status
                    t
                });
            Some(HttpCallResponse {
                headers: headers::response_headers(parts.status, &parts.headers),
                body: collected.to_bytes().to_vec(),
                trailers: trailers.unwrap_or_default(),
            })
        };
        Box::pin(async move {
            match timeout.filter(|t| !t.is_zero()) {
                Some(limit) => tokio::time::timeout(limit, call).await.ok().flatten(),
                None => call.await,
            }
        })
    }

    fn open_stream(
        &self,
        cluster: &str,
        headers: modelgate_runtime::Headers,
        timeout: Option<Duration>,
        body: mpsc::UnboundedReceiver<(Vec<u8>, bool)>,
        events: mpsc::UnboundedSender<StreamEvent>,
    ) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let cluster = self.clusters.get(cluster).cloned()?;
        Some(Box::pin(crate::filter_stream::exchange(
            cluster, headers, timeout, body, events,
        )))
    }
}
