//! Upstream clusters: endpoints, load balancing (round robin, least request), passive
//! health, circuit breakers, and the clients that reach them: pooled HTTP/1.1, or HTTP/2
//! (`upstream_h2`) when the cluster's `appProtocol` asks for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::GatewayBody;
use crate::config::{ClusterConfig, LbPolicy, OutlierConfig};
use crate::outlier::{Health, Verdict};
use crate::upstream_h2::{H2Client, H2Error, UpstreamTls};

/// A worker's client to one cluster, in the protocol the cluster speaks.
pub(crate) enum UpstreamClient {
    Http1(Client<HttpConnector, GatewayBody>),
    Http2(H2Client),
}

/// Why an upstream request got no response.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    Http1(hyper_util::client::legacy::Error),
    Http2(H2Error),
}

impl UpstreamError {
    /// No connection could be made (connect failure, refused, timed out).
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Http1(e) => e.is_connect(),
            UpstreamError::Http2(e) => matches!(e, H2Error::Connect(_)),
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Http1(e) => write!(f, "{e}"),
            UpstreamError::Http2(e) => write!(f, "{e}"),
        }
    }
}

impl UpstreamClient {
    /// Sends `request` (built by `headers::to_upstream_request` for `endpoint`).
    pub(crate) async fn request(
        &self,
        endpoint: SocketAddr,
        request: Request<GatewayBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match self {
            UpstreamClient::Http1(client) => {
                client.request(request).await.map_err(UpstreamError::Http1)
            }
            UpstreamClient::Http2(client) => client
                .request(endpoint, request)
                .await
                .map_err(UpstreamError::Http2),
        }
    }
}

/// Idle upstream connections kept per endpoint. hyper keeps every one by default, so after a
/// burst of 1,000 client connections about as many idle upstream sockets (and their buffers)
/// stayed open; 64 still serves steady load without reconnecting.
const MAX_IDLE_PER_ENDPOINT: usize = 64;

/// How long an idle upstream connection is kept; the pool timer closes it after that.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Clusters by name.
pub(crate) type Clusters = HashMap<String, Arc<Cluster>>;

#[derive(Debug)]
pub(crate) struct Endpoint {
    pub address: SocketAddr,
    active: AtomicUsize,
    health: Health,
}

pub(crate) struct Cluster {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    /// One pooled client per worker thread, and a last one for the other threads: a
    /// connection's task runs on the thread that opened it, so a shared pool would hand a
    /// worker connections that another thread drives.
    clients: Vec<UpstreamClient>,
    lb_policy: LbPolicy,
    outlier: OutlierConfig,
    next: AtomicUsize,
    retries: AtomicU64,
    /// One permit per upstream connection that may be busy (`circuitBreakers.maxConnections`):
    /// without a bound, 1,000 concurrent clients opened 1,000 upstream connections, each with
    /// its own buffers and task (about 40 MiB more than 128 connections, measured).
    connections: Arc<Semaphore>,
    pending: AtomicUsize,
    max_pending: usize,
}

/// Marks one request in flight on an endpoint until dropped (least-request counts these),
/// with the connection slot it was admitted to.
pub(crate) struct InFlight {
    cluster: Arc<Cluster>,
    index: usize,
    slot: Option<OwnedSemaphorePermit>,
}

/// Why a request got no connection slot.
pub(crate) enum Refused {
    /// `maxPendingRequests` were already waiting (Envoy's upstream overflow).
    Overflow,
    /// The deadline passed while it waited.
    Timeout,
}

/// Counts a request waiting for a connection slot while it waits.
struct Pending<'a>(&'a AtomicUsize);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.cluster.endpoints[self.index]
            .active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl InFlight {
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.cluster.endpoints[self.index]
    }

    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Takes a connection slot for this request, waiting as one of at most
    /// `maxPendingRequests` until `deadline` when all are busy. The slot is given back when
    /// the request ends (its response body read, or an error).
    pub(crate) async fn admit(&mut self, deadline: tokio::time::Instant) -> Result<(), Refused> {
        let cluster = &self.cluster;
        let permit = if let Ok(permit) = Arc::clone(&cluster.connections).try_acquire_owned() {
            permit
        } else {
            let waiting = cluster.pending.fetch_add(1, Ordering::Relaxed);
            let _pending = Pending(&cluster.pending);
            if waiting >= cluster.max_pending {
                return Err(Refused::Overflow);
            }
            let slot = Arc::clone(&cluster.connections).acquire_owned();
            match tokio::time::timeout_at(deadline, slot).await {
                Ok(Ok(permit)) => permit,
                // The semaphore is never closed.
                Ok(Err(_)) => return Err(Refused::Overflow),
                Err(_) => return Err(Refused::Timeout),
            }
        };
        self.slot = Some(permit);
        Ok(())
    }
}

impl Cluster {
    /// A cluster served by `workers` worker threads; the error is about its `tls`.
    pub(crate) fn new(config: &ClusterConfig, workers: usize) -> Result<Cluster, String> {
        let clients = if config.speaks_http2() {
            let tls = config.tls.as_ref().map(UpstreamTls::new).transpose()?;
            (0..=workers)
                .map(|_| {
                    UpstreamClient::Http2(H2Client::new(config.connect_timeout.0, tls.clone()))
                })
                .collect()
        } else {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(config.connect_timeout.0));
            connector.set_nodelay(true);
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                // The gateway sends the client's `host`, not the endpoint address.
                .set_host(false)
                .pool_max_idle_per_host(MAX_IDLE_PER_ENDPOINT)
                .pool_idle_timeout(IDLE_TIMEOUT)
                // Without a timer hyper only drops expired connections when it next checks one
                // out.
                .pool_timer(TokioTimer::new());
            (0..=workers)
                .map(|_| UpstreamClient::Http1(builder.build(connector.clone())))
                .collect()
        };
        let breakers = &config.circuit_breakers;
        Ok(Cluster {
            name: config.name.clone(),
            endpoints: config
                .endpoints
                .iter()
                .map(|&address| Endpoint {
                    address,
                    active: AtomicUsize::new(0),
                    health: Health::default(),
                })
                .collect(),
            clients,
            lb_policy: config.lb_policy,
            outlier: config.outlier_detection.clone(),
            next: AtomicUsize::new(0),
            retries: AtomicU64::new(0),
            connections: Arc::new(Semaphore::new(
                breakers.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            pending: AtomicUsize::new(0),
            max_pending: breakers.max_pending_requests,
        })
    }

    /// The pooled client of the calling thread's worker.
    pub(crate) fn client(&self) -> &UpstreamClient {
        let last = self.clients.len() - 1;
        let index = modelgate_runtime::worker_index().map_or(last, |w| w % last.max(1));
        &self.clients[index]
    }

    /// Picks an available endpoint not in `tried` and marks a request in flight on it;
    /// `None` when every endpoint is ejected or tried.
    pub(crate) fn pick(self: &Arc<Self>, tried: &[usize]) -> Option<InFlight> {
        let now = Instant::now();
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n)
            .map(|offset| (start + offset) % n)
            .filter(|i| !tried.contains(i) && self.endpoints[*i].health.available(now));
        let index = match self.lb_policy {
            LbPolicy::RoundRobin => candidates.into_iter().next(),
            // Fewest requests in flight; ties go round robin thanks to the rotating start.
            LbPolicy::LeastRequest => {
                candidates.min_by_key(|i| self.endpoints[*i].active.load(Ordering::Relaxed))
            }
        }?;
        self.endpoints[index].active.fetch_add(1, Ordering::Relaxed);
        Some(InFlight {
            cluster: Arc::clone(self),
            index,
            slot: None,
        })
    }

    pub(crate) fn record_success(&self, index: usize) {
        self.endpoints[index].health.record_success();
    }

    /// A connect failure or 5xx from endpoint `index`; may eject it.
    pub(crate) fn record_failure(&self, index: usize) {
        let now = Instant::now();
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.health.is_ejected(now))
            .count();
        let cap =
            (self.endpoints.len() * usize::from(self.outlier.max_ejection_percent) / 100).max(1);
        let endpoint = &self.endpoints[index];
        if let Verdict::Ejected(period) =
            endpoint
                .health
                .record_failure(&self.outlier, now, ejected < cap)
        {
            log::warn!(
                "cluster {}: ejecting endpoint {} for {}ms after {} consecutive errors",
                self.name,
                endpoint.address,
                period.as_millis(),
                self.outlier.consecutive_errors
            );
        }
    }

    pub(crate) fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

impl Endpoint {
    pub(crate) fn is_ejected(&self) -> bool {
        self.health.is_ejected(Instant::now())
    }

    pub(crate) fn ejections(&self) -> u32 {
        self.health.ejections()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(policy: &str) -> Arc<Cluster> {
        let yaml = format!(
            "version: 1\nlisteners: [{{address: 127.0.0.1:0}}]\nclusters: [{{name: c, lbPolicy: {policy}, endpoints: [127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3], outlierDetection: {{consecutiveErrors: 1, maxEjectionPercent: 50}}}}]\n"
        );
        Arc::new(
            Cluster::new(
                &crate::compile::parse(&yaml).unwrap().document.clusters[0],
                1,
            )
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn round_robin_visits_every_endpoint_in_turn() {
        let c = cluster("roundRobin");
        let picked: Vec<usize> = (0..6).map(|_| c.pick(&[]).unwrap().index()).collect();
        assert_eq!(picked, [0, 1, 2, 0, 1, 2]);
    }

    #[tokio::test]
    async fn least_request_avoids_busy_endpoints() {
        let c = cluster("leastRequest");
        let busy = c.pick(&[]).unwrap();
        let also_busy = c.pick(&[]).unwrap();
        assert_ne!(busy.index(), also_busy.index());
        let third = c.pick(&[]).unwrap();
        assert!(![busy.index(), also_busy.index()].contains(&third.index()));
        drop(busy);
        drop(third);
        let next = c.pick(&[]).unwrap().index();
        assert_ne!(next, also_busy.index());
    }

    #[tokio::test]
    async fn skips_tried_and_ejected_endpoints_within_the_cap() {
        let c = cluster("roundRobin");
        c.record_failure(0);
        // 50% of three endpoints is one: the second failing endpoint stays in.
        c.record_failure(1);
        assert!(c.endpoints[0].is_ejected());
        assert!(!c.endpoints[1].is_ejected());
        let picked: Vec<usize> = (0..4).map(|_| c.pick(&[]).unwrap().index()).collect();
        assert!(!picked.contains(&0), "{picked:?}");
        assert_eq!(c.pick(&[1, 2]).map(|p| p.index()), None);
    }
}
