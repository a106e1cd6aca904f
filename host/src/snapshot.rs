//! Everything one config version serves with: routes, clusters, the filter chain and the
//! config dump. Built whole, then swapped in at once; requests hold the one they started with.

use std::path::PathBuf;
use std::sync::Arc;

use modelgate_runtime::{FilterChain, PluginSpec, Runtime};
use tokio_rustls::TlsAcceptor;

use crate::cluster::{Cluster, Clusters};
use crate::compile::GatewayConfig;
use crate::config::{ConfigErrorKind, ConfigErrors, RawConfig};
use crate::global_ratelimit::GlobalRateLimit;
use crate::plugin_source::{self, ResolvedPlugin};
use crate::route::RouteTable;
use crate::services::ClusterServices;
use crate::stats_tags::TagExtractors;
use crate::tracing::Tracer;

pub(crate) struct Snapshot {
    /// The document it was compiled from.
    pub config: RawConfig,
    pub routes: RouteTable,
    pub clusters: Arc<Clusters>,
    pub chain: FilterChain,
    /// Per listener (config order), the TLS acceptor with the certificate read by this config.
    pub tls: Vec<Option<TlsAcceptor>>,
    /// The redacted `/config_dump` body.
    pub dump: String,
    /// Files whose change triggers a reload.
    pub watched: Vec<PathBuf>,
    /// How `/metrics` names filter metrics (Envoy's stats tag extraction).
    pub stats_tags: TagExtractors,
    /// The cluster-wide limit, when `globalRateLimit` is set.
    pub global_rate_limit: Option<GlobalRateLimit>,
    /// Spans and trace propagation, when `tracing` is set.
    pub tracer: Option<Tracer>,
}

impl Snapshot {
    /// Builds on a compiled `config` (`crate::compile`) what needs the file system or the
    /// runtime: clusters, TLS acceptors, stats tags, the tracer, and the filters (running
    /// `on_configure`). The filters are handed this snapshot's clusters for their `http_call`s
    /// (from `on_configure` on), so building changes nothing that serves: the snapshot takes
    /// effect only when swapped in. Every error is reported, each naming its field.
    pub(crate) fn build(
        config: GatewayConfig,
        runtime: &Runtime,
    ) -> Result<Snapshot, ConfigErrors> {
        let GatewayConfig {
            document: config,
            routes,
        } = config;
        let mut errors = Vec::new();
        let workers = config.workers();
        let mut clusters = Clusters::new();
        for (i, c) in config.clusters.iter().enumerate() {
            match Cluster::new(c, workers) {
                Ok(cluster) => {
                    clusters.insert(c.name.clone(), Arc::new(cluster));
                }
                Err(reason) => errors.push(format!("clusters[{i}].tls: {reason}")),
            }
        }
        let clusters = Arc::new(clusters);
        let mut tls = Vec::new();
        for (i, listener) in config.listeners.iter().enumerate() {
            let acceptor = listener
                .tls
                .as_ref()
                .map(crate::tls::tls_acceptor)
                .transpose();
            tls.push(acceptor.unwrap_or_else(|reason| {
                errors.push(format!("listeners[{i}].tls: {reason}"));
                None
            }));
        }
        let stats_tags = stats_tags(&config).unwrap_or_else(|e| {
            errors.push(e);
            TagExtractors::default()
        });
        let tracer = config
            .tracing
            .as_ref()
            .map(Tracer::new)
            .transpose()
            .unwrap_or_else(|e| {
                errors.push(e);
                None
            });
        let mut resolved = Vec::new();
        for (i, filter) in config.filters.iter().enumerate() {
            match plugin_source::resolve(i, filter) {
                Ok(plugin) => resolved.push(plugin),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors::new(ConfigErrorKind::Resource, errors));
        }
        let services: Arc<dyn modelgate_runtime::HostServices> =
            Arc::new(ClusterServices::new(Arc::clone(&clusters)));
        let mut plugins = Vec::new();
        for (i, (filter, plugin)) in config.filters.iter().zip(&resolved).enumerate() {
            match runtime.load_with(spec(filter, plugin, workers), Arc::clone(&services)) {
                Ok(loaded) => plugins.push(loaded),
                Err(e) => errors.push(format!("filters[{i}] ({}): {e}", filter.name)),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors::new(ConfigErrorKind::Filter, errors));
        }
        let dump = serde_json::to_string_pretty(&crate::config_dump::dump(&config, &resolved))
            .unwrap_or_default();
        let watched = config.referenced_files();
        let buffer_limit = config.buffer_limit.as_usize();
        let global_rate_limit = config.global_rate_limit.as_ref().map(GlobalRateLimit::new);
        Ok(Snapshot {
            config,
            routes,
            clusters,
            tls,
            chain: FilterChain::new(plugins).with_buffer_limit(buffer_limit),
            dump,
            watched,
            stats_tags,
            global_rate_limit,
            tracer,
        })
    }
}

/// The admin config's `statsTags`, then those its `statsTagsFromEnvoyProxy` manifest adds.
fn stats_tags(config: &RawConfig) -> Result<TagExtractors, String> {
    let Some(admin) = &config.admin else {
        return Ok(TagExtractors::default());
    };
    let mut specs = admin.stats_tags.clone();
    let mut at = "admin.statsTags";
    if let Some(file) = &admin.stats_tags_from_envoy_proxy {
        specs.extend(
            crate::stats_tags::from_envoy_proxy(file)
                .map_err(|e| format!("admin.statsTagsFromEnvoyProxy: {e}"))?,
        );
        at = "admin.statsTags (with statsTagsFromEnvoyProxy appended)";
    }
    TagExtractors::compile(&specs, at)
}

/// The runtime's spec of one filter; `vmCount: 0` is one VM per worker, as Envoy runs them.
fn spec(
    filter: &crate::config::FilterConfig,
    plugin: &ResolvedPlugin,
    workers: usize,
) -> PluginSpec {
    PluginSpec {
        name: filter.name.clone(),
        root_id: plugin.root_id.clone(),
        vm_id: plugin.vm_id.clone(),
        wasm: Arc::clone(&plugin.wasm),
        vm_config: plugin.vm_config.clone(),
        plugin_config: plugin.plugin_config.clone(),
        failure_policy: plugin.failure_policy,
        allow_on_headers_stop_iteration: filter.allow_on_headers_stop_iteration,
        env: plugin.env.clone(),
        vm_count: match filter.vm_count {
            0 => workers,
            n => n,
        },
        memory_limit_bytes: filter.memory_limit.as_usize(),
        callback_deadline: filter.callback_deadline.0,
    }
}
