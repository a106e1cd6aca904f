//! The routes' part of the compile step (`crate::compile`): each route of the document
//! checked and compiled in one pass, every problem pushed with its field path
//! (`routes[i]...`), and each listener's virtual hosts built from the routes that attach to it.

use std::collections::HashSet;
use std::sync::Arc;

use hyper::StatusCode;
use hyper::header::{HeaderName, HeaderValue};

use super::{
    Action, Backends, HeaderMatch, HeaderRule, PathMatch, QueryMatch, QueryRule, Route, RouteTable,
    VirtualHosts, hosts,
};
use crate::config::{HeaderMutations, RawConfig, RouteConfig, RouteMatchConfig};
use crate::local_ratelimit::LocalRateLimit;
use crate::pattern::whole_match;
use crate::rewrite::{MatchedPrefix, Redirect, Rewrite};

impl RouteTable {
    /// Compiles the routes and each listener's virtual hosts, pushing every problem to
    /// `errors`; the table is only used when there are none.
    pub(crate) fn compile(document: &RawConfig, errors: &mut Vec<String>) -> RouteTable {
        let clusters: HashSet<&str> = document.clusters.iter().map(|c| c.name.as_str()).collect();
        let listener_names: HashSet<&str> =
            document.listeners.iter().map(|l| l.name.as_str()).collect();
        let routes = document
            .routes
            .iter()
            .enumerate()
            .filter_map(|(i, route)| {
                let at = Context {
                    i,
                    clusters: &clusters,
                    listeners: &listener_names,
                };
                Route::compile(&at, route, errors)
            })
            .collect();
        let mut listeners: Vec<VirtualHosts> = Vec::with_capacity(document.listeners.len());
        for listener in &document.listeners {
            let listener_host = listener.hostname.as_ref().map(|h| h.to_ascii_lowercase());
            let mut hosts_of = VirtualHosts::default();
            for (i, route) in document.routes.iter().enumerate() {
                if !route.listeners.is_empty() && !route.listeners.contains(&listener.name) {
                    continue;
                }
                let names: Vec<String> = route
                    .hostnames
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect();
                for host in hosts(&names, listener_host.as_deref()) {
                    hosts_of.add(&host, i);
                }
            }
            listeners.push(hosts_of);
        }
        RouteTable { routes, listeners }
    }
}

/// Where a route sits and what its references may name.
struct Context<'a> {
    i: usize,
    clusters: &'a HashSet<&'a str>,
    listeners: &'a HashSet<&'a str>,
}

impl Route {
    /// Checks and compiles route `at.i`; `None` after pushing every problem to `errors`.
    fn compile(at: &Context, route: &RouteConfig, errors: &mut Vec<String>) -> Option<Route> {
        let i = at.i;
        let before = errors.len();
        for (j, name) in route.listeners.iter().enumerate() {
            if !at.listeners.contains(name.as_str()) {
                errors.push(format!(
                    "routes[{i}].listeners[{j}]: unknown listener {name:?}"
                ));
            }
        }
        for (j, host) in route.hostnames.iter().enumerate() {
            if let Err(e) = crate::hostname::check_domain(host) {
                errors.push(format!("routes[{i}].hostnames[{j}]: {e}"));
            }
        }
        let m = &route.matcher;
        let path = path_match(i, m, errors);
        let matched = path.as_ref().and_then(|(_, matched)| matched.as_ref());
        let header_matches = header_matches(i, m, errors);
        let query = query_matches(i, m, errors);
        let (action, rewrite) = action(at, route, matched, errors);
        if route.timeout.0.is_zero() {
            errors.push(format!("routes[{i}].timeout: must be greater than 0"));
        }
        check_mutations(i, "requestHeaders", &route.request_headers, errors);
        check_mutations(i, "responseHeaders", &route.response_headers, errors);
        if let Some(limit) = &route.local_rate_limit {
            errors.extend(limit.check(&format!("routes[{i}].localRateLimit")));
        }
        if errors.len() != before {
            return None;
        }
        let (path, _) = path?;
        Some(Route {
            name: route
                .name
                .clone()
                .unwrap_or_else(|| format!("route{i}"))
                .into(),
            action: action?,
            rewrite,
            timeout: route.timeout.0,
            retry: route.retry.clone(),
            request_headers: route.request_headers.clone(),
            response_headers: route.response_headers.clone(),
            local_rate_limit: route
                .local_rate_limit
                .as_ref()
                .map(|limit| Arc::new(LocalRateLimit::new(limit))),
            path,
            headers: header_matches,
            query,
            method: m.method.as_ref().map(|s| s.to_ascii_uppercase()),
        })
    }
}

/// The path match, and the prefix a `replacePrefixMatch` replaces. `pathPrefix` is Gateway
/// API's `PathPrefix` as Envoy Gateway gives it to Envoy (`internal/xds/translator/route.go`,
/// `buildPathMatch`): `/` stays a plain prefix; anything else, less one trailing `/`, is a
/// `path_separated_prefix`.
fn path_match(
    i: usize,
    m: &RouteMatchConfig,
    errors: &mut Vec<String>,
) -> Option<(PathMatch, Option<MatchedPrefix>)> {
    let kinds = [
        m.path.is_some(),
        m.prefix.is_some(),
        m.path_prefix.is_some(),
        m.regex.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        errors.push(format!(
            "routes[{i}].match: give exactly one of path, prefix, pathPrefix and regex"
        ));
    }
    if let Some(prefix) = &m.path_prefix
        && !prefix.starts_with('/')
    {
        errors.push(format!("routes[{i}].match.pathPrefix: must start with '/'"));
    }
    // Compiled even beside another kind, so that its own error is reported too.
    let regex = m.regex.as_ref().and_then(|r| {
        whole_match(r)
            .map_err(|e| errors.push(format!("routes[{i}].match.regex: {e}")))
            .ok()
    });
    let prefix = |matched: &str, written: &str| MatchedPrefix {
        matched: matched.to_owned(),
        written: written.to_owned(),
    };
    Some(match (&m.path, &m.prefix, &m.path_prefix, regex) {
        (Some(p), None, None, None) => (PathMatch::Exact(p.clone()), None),
        (None, Some(p), None, None) => (PathMatch::Prefix(p.clone()), Some(prefix(p, p))),
        (None, None, Some(p), None) if p == "/" => {
            (PathMatch::Prefix(p.clone()), Some(prefix(p, p)))
        }
        (None, None, Some(p), None) => {
            let trimmed = p.strip_suffix('/').unwrap_or(p);
            (
                PathMatch::SeparatedPrefix(trimmed.to_owned()),
                Some(prefix(trimmed, p)),
            )
        }
        (None, None, None, Some(r)) => (PathMatch::Regex(r), None),
        _ => return None,
    })
}

fn header_matches(i: usize, m: &RouteMatchConfig, errors: &mut Vec<String>) -> Vec<HeaderMatch> {
    let mut matches = Vec::new();
    for (j, header) in m.headers.iter().enumerate() {
        let at = format!("routes[{i}].match.headers[{j}]");
        let kinds = [
            header.exact.is_some(),
            header.regex.is_some(),
            header.present.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            errors.push(format!(
                "{at}: give exactly one of exact, regex and present"
            ));
        }
        let regex = header.regex.as_ref().and_then(|r| {
            whole_match(r)
                .map_err(|e| errors.push(format!("{at}.regex: {e}")))
                .ok()
        });
        if HeaderName::from_bytes(header.name.as_bytes()).is_err() {
            errors.push(format!(
                "{at}.name: {:?} is not a valid header name",
                header.name
            ));
        }
        let rule = match (&header.exact, regex, header.present) {
            (Some(v), None, None) => HeaderRule::Exact(v.as_bytes().to_vec()),
            (None, Some(r), None) => HeaderRule::Regex(r),
            (None, None, Some(p)) => HeaderRule::Present(p),
            // Reported above; the route is left out.
            _ => continue,
        };
        matches.push(HeaderMatch {
            name: header.name.to_ascii_lowercase(),
            rule,
        });
    }
    matches
}

fn query_matches(i: usize, m: &RouteMatchConfig, errors: &mut Vec<String>) -> Vec<QueryMatch> {
    let mut matches = Vec::new();
    for (j, param) in m.query_params.iter().enumerate() {
        let at = format!("routes[{i}].match.queryParams[{j}]");
        if param.exact.is_some() == param.regex.is_some() {
            errors.push(format!("{at}: give exactly one of exact and regex"));
        }
        if param.name.is_empty() {
            errors.push(format!("{at}.name: must not be empty"));
        }
        let regex = param.regex.as_ref().and_then(|r| {
            whole_match(r)
                .map_err(|e| errors.push(format!("{at}.regex: {e}")))
                .ok()
        });
        let rule = match (&param.exact, regex) {
            (Some(v), None) => QueryRule::Exact(v.clone()),
            (None, Some(r)) => QueryRule::Regex(r),
            // Reported above; the route is left out.
            _ => continue,
        };
        matches.push(QueryMatch {
            name: param.name.clone(),
            rule,
        });
    }
    matches
}

/// What the route does: forward to a cluster or weighted clusters, redirect, or answer
/// directly; and its rewrite.
fn action(
    at: &Context,
    route: &RouteConfig,
    matched: Option<&MatchedPrefix>,
    errors: &mut Vec<String>,
) -> (Option<Action>, Option<Rewrite>) {
    let i = at.i;
    let actions = [
        route.cluster.is_some(),
        !route.backends.is_empty(),
        route.redirect.is_some(),
        route.direct_response.is_some(),
    ];
    if actions.iter().filter(|a| **a).count() != 1 {
        errors.push(format!(
            "routes[{i}]: give exactly one of cluster, backends, redirect and directResponse"
        ));
    }
    let mut action = None;
    if let Some(direct) = &route.direct_response {
        // Envoy's `DirectResponseAction.status` range.
        match StatusCode::from_u16(direct.status_code) {
            Ok(status) if (100..=599).contains(&direct.status_code) => {
                let body = direct.body.clone().unwrap_or_default();
                action = Some(Action::DirectResponse(status, body.into()));
            }
            _ => errors.push(format!(
                "routes[{i}].directResponse.statusCode: must be between 100 and 599"
            )),
        }
        if route.rewrite.is_some() {
            errors.push(format!(
                "routes[{i}]: give at most one of directResponse and rewrite"
            ));
        }
    }
    for (field, cluster) in route.clusters() {
        if !at.clusters.contains(cluster) {
            errors.push(format!("routes[{i}].{field}: unknown cluster {cluster:?}"));
        }
    }
    let total: u64 = route.backends.iter().map(|b| u64::from(b.weight)).sum();
    if total > u64::from(u32::MAX) {
        errors.push(format!(
            "routes[{i}].backends: the weights add up to more than {}",
            u32::MAX
        ));
    }
    if let Some(redirect) = &route.redirect {
        if route.rewrite.is_some() {
            errors.push(format!(
                "routes[{i}]: give at most one of redirect and rewrite"
            ));
        }
        let at = format!("routes[{i}].redirect");
        action = Redirect::compile(&at, redirect, matched, errors).map(Action::Redirect);
    }
    let rewrite = route
        .rewrite
        .as_ref()
        .and_then(|r| Rewrite::compile(&format!("routes[{i}].rewrite"), r, matched, errors));
    if route.cluster.is_some() || !route.backends.is_empty() {
        action = Some(Action::Forward(Backends::compile(route)));
    }
    (action, rewrite)
}

/// Header names and values of a route's `requestHeaders` or `responseHeaders`.
fn check_mutations(i: usize, section: &str, mutations: &HeaderMutations, errors: &mut Vec<String>) {
    for (field, names) in [
        ("set", mutations.set.keys().collect::<Vec<_>>()),
        ("add", mutations.add.keys().collect()),
        ("remove", mutations.remove.iter().collect()),
    ] {
        for name in names {
            if HeaderName::from_bytes(name.as_bytes()).is_err() || name.starts_with(':') {
                errors.push(format!(
                    "routes[{i}].{section}.{field}: {name:?} is not a valid header name"
                ));
            }
        }
    }
    for (name, value) in mutations.set.iter().chain(&mutations.add) {
        if HeaderValue::from_str(value).is_err() {
            errors.push(format!(
                "routes[{i}].{section}: the value of {name:?} is not a valid header value"
            ));
        }
    }
}

impl Backends {
    /// `cluster` alone, or `backends` without those of weight 0.
    fn compile(route: &RouteConfig) -> Backends {
        let clusters: Vec<(std::sync::Arc<str>, u32)> = route
            .cluster
            .iter()
            .map(|c| (c.as_str().into(), 1))
            .chain(
                route
                    .backends
                    .iter()
                    .filter(|b| b.weight > 0)
                    .map(|b| (b.cluster.as_str().into(), b.weight)),
            )
            .collect();
        let total = clusters.iter().map(|(_, w)| u64::from(*w)).sum();
        Backends { clusters, total }
    }
}
