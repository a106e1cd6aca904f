//! The route table: per listener, virtual hosts by domain as Envoy Gateway builds them, each
//! with its routes (path: exact, prefix, path-separated prefix, whole-path regex; header,
//! query parameter and method matches), first match wins, compiled once per config. A route
//! forwards to a cluster, or to one of several by weight, or answers itself (a redirect or a
//! direct response).

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use modelgate_runtime::Headers;
use regex::Regex;

use crate::config::{HeaderMutations, RetryConfig};
use crate::headers;
use crate::local_ratelimit::LocalRateLimit;
use crate::rewrite::{Redirect, Rewrite};

mod compile;

/// One compiled route.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    /// Shared so each request's access entry takes the names without copying them.
    pub name: Arc<str>,
    pub action: Action,
    /// The URL rewrite the router applies on the way upstream.
    pub rewrite: Option<Rewrite>,
    pub timeout: Duration,
    pub retry: RetryConfig,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
    /// Its buckets, shared by every worker (Envoy's are per process) and by the copies of the
    /// compiled config.
    pub local_rate_limit: Option<Arc<LocalRateLimit>>,
    path: PathMatch,
    headers: Vec<HeaderMatch>,
    query: Vec<QueryMatch>,
    method: Option<String>,
}

/// What a matched route does.
#[derive(Clone, Debug)]
pub(crate) enum Action {
    Forward(Backends),
    Redirect(Redirect),
    /// Envoy's `direct_response`: this status and body.
    DirectResponse(StatusCode, bytes::Bytes),
}

/// The clusters a route forwards to, as Envoy's `weighted_clusters` picks among them: a
/// random number below the total weight, then the first cluster whose running total exceeds
/// it (`source/common/router/config_impl.cc`, `WeightedClusterEntry` selection). Clusters of
/// weight 0 are left out, as Envoy Gateway leaves out a zero-weight `backendRef`
/// (`internal/gatewayapi/route.go`, `processHTTPRouteRules`).
#[derive(Clone, Debug)]
pub(crate) struct Backends {
    clusters: Vec<(Arc<str>, u32)>,
    total: u64,
}

impl Backends {
    /// The cluster for one request; `None` when every weight is 0, which Envoy Gateway turns
    /// into a direct 500 answer (`route.go`: "all valid destinations having 0 weight").
    pub(crate) fn pick(&self) -> Option<&Arc<str>> {
        match self.clusters.as_slice() {
            [] => None,
            [(only, _)] => Some(only),
            several => {
                let mut value = random() % self.total;
                for (cluster, weight) in several {
                    let weight = u64::from(*weight);
                    if value < weight {
                        return Some(cluster);
                    }
                    value -= weight;
                }
                None
            }
        }
    }
}

/// A per-thread xorshift64* generator seeded from the standard library's random hash keys:
/// a weighted pick needs an even spread, not secrecy, and no lock or system call.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::BuildHasher as _;
            std::collections::hash_map::RandomState::new().hash_one(0x9e37_79b9_u64) | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[derive(Clone, Debug)]
enum PathMatch {
    Exact(String),
    Prefix(String),
    /// Envoy's `path_separated_prefix`: the prefix, then the end of the path or a `/`.
    SeparatedPrefix(String),
    Regex(Regex),
}

#[derive(Clone, Debug)]
struct HeaderMatch {
    name: String,
    rule: HeaderRule,
}

#[derive(Clone, Debug)]
enum HeaderRule {
    Exact(Vec<u8>),
    Regex(Regex),
    Present(bool),
}

/// Envoy's `QueryParameterMatcher` with a `string_match`: the parameter's first value in the
/// query string as sent (`QueryParamsMulti::parseQueryString`, which does not decode), equal
/// or wholly matching; a parameter without `=` has the value "".
#[derive(Clone, Debug)]
struct QueryMatch {
    name: String,
    rule: QueryRule,
}

#[derive(Clone, Debug)]
enum QueryRule {
    Exact(String),
    Regex(Regex),
}

impl QueryMatch {
    fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else {
            return false;
        };
        let first = query.split('&').find_map(|param| {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            (name == self.name).then_some(value)
        });
        match (&self.rule, first) {
            (_, None) => false,
            (QueryRule::Exact(expected), Some(value)) => value == expected,
            (QueryRule::Regex(r), Some(value)) => r.is_match(value),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct RouteTable {
    /// Every route, in config order.
    routes: Vec<Route>,
    /// Per listener (config order), its virtual hosts.
    listeners: Vec<VirtualHosts>,
}

/// The virtual hosts of one listener. Envoy Gateway makes one per hostname a route serves on
/// the listener, with that hostname as its only domain (`internal/xds/translator/translator.go`,
/// `addRouteToRouteConfig`), and sets `ignore_port_in_host_matching` on the route config
/// (same file). Envoy picks the virtual host by the request's host without its port, lower
/// case: an exact domain, else the longest matching suffix wildcard, else `*`, else none,
/// which is a 404 (`source/common/router/config_impl.cc`, `RouteMatcher::findVirtualHost`).
#[derive(Clone, Debug, Default)]
struct VirtualHosts {
    /// Exact domains, lower case, and the routes (indices, config order) that serve each.
    exact: HashMap<Box<[u8]>, Vec<usize>>,
    /// Suffix wildcards without their `*` (`*.example.com` is `.example.com`), longest first.
    suffixes: Vec<(Box<[u8]>, Vec<usize>)>,
    /// The `*` virtual host.
    any: Option<Vec<usize>>,
}

impl VirtualHosts {
    fn add(&mut self, domain: &str, route: usize) {
        let routes = if domain == "*" {
            self.any.get_or_insert_with(Vec::new)
        } else if let Some(suffix) = domain.strip_prefix('*') {
            let suffix = suffix.as_bytes();
            let known = self.suffixes.iter().position(|(s, _)| &**s == suffix);
            let at = known.unwrap_or_else(|| {
                // Longest first; among equals the order does not matter, as two suffixes of
                // one length that both match a host are the same suffix.
                let at = self
                    .suffixes
                    .partition_point(|(s, _)| s.len() >= suffix.len());
                self.suffixes.insert(at, (suffix.into(), Vec::new()));
                at
            });
            &mut self.suffixes[at].1
        } else {
            self.exact.entry(domain.as_bytes().into()).or_default()
        };
        routes.push(route);
    }

    /// The routes of the virtual host `authority` selects.
    fn select(&self, authority: Option<&[u8]>) -> Option<&[usize]> {
        // Envoy's fast path: with only a `*` virtual host the host is not even read.
        if self.exact.is_empty() && self.suffixes.is_empty() {
            return self.any.as_deref();
        }
        // No host, no virtual host (an empty `:authority` is an absent one).
        let authority = authority.filter(|a| !a.is_empty())?;
        let host = without_port(authority);
        let lowered;
        let host = if host.iter().any(u8::is_ascii_uppercase) {
            lowered = host.to_ascii_lowercase();
            lowered.as_slice()
        } else {
            host
        };
        if let Some(routes) = self.exact.get(host) {
            return Some(routes);
        }
        // The wildcard must stand for at least one character.
        let by_suffix = self
            .suffixes
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix));
        match by_suffix {
            Some((_, routes)) => Some(routes),
            None => self.any.as_deref(),
        }
    }
}

/// The host without its port, as Envoy's `HeaderUtility::getPortStart` finds the port: after
/// the last `:`, unless that `:` is inside an IPv6 literal's brackets.
fn without_port(host: &[u8]) -> &[u8] {
    let Some(colon) = host.iter().rposition(|&b| b == b':') else {
        return host;
    };
    match host.iter().rposition(|&b| b == b']') {
        Some(bracket) if bracket > colon => host,
        _ => &host[..colon],
    }
}

/// The domains a route serves on a listener, as Envoy Gateway computes them from the route's
/// hostnames and the listener's (`internal/gatewayapi/helpers.go`, `computeHosts` and
/// `wildcardHostnameMatchesHostname`): the route's, narrowed to those the listener's hostname
/// admits; the listener's when the route names none; `*` when neither does. Empty: the route
/// does not attach to that listener. Both inputs are lower case.
pub(crate) fn hosts(route: &[String], listener: Option<&str>) -> BTreeSet<String> {
    let mut hosts = BTreeSet::new();
    let listener = listener.filter(|l| !l.is_empty());
    if route.is_empty() {
        hosts.insert(listener.unwrap_or("*").to_owned());
        return hosts;
    }
    for host in route {
        let host = host.as_str();
        match listener {
            None => {
                hosts.insert(host.to_owned());
            }
            Some(l) if l == host => {
                hosts.insert(host.to_owned());
            }
            Some(l) if l.starts_with('*') && host.starts_with('*') => {
                if wildcard_admits(host, l) {
                    hosts.insert(l.to_owned());
                }
                if wildcard_admits(l, host) {
                    hosts.insert(host.to_owned());
                }
            }
            Some(l) if l.starts_with('*') => {
                if wildcard_admits(l, host) {
                    hosts.insert(host.to_owned());
                }
            }
            Some(l) if host.starts_with('*') => {
                if wildcard_admits(host, l) {
                    hosts.insert(l.to_owned());
                }
            }
            Some(_) => {}
        }
    }
    hosts
}

/// Envoy Gateway's `wildcardHostnameMatchesHostname`: `*.example.com` admits
/// `foo.example.com`, and `*.com` admits the narrower wildcard `*.example.com`.
fn wildcard_admits(wildcard: &str, host: &str) -> bool {
    let suffix = wildcard.trim_start_matches('*');
    match host.strip_prefix('*') {
        None => host.len() > suffix.len() && host.ends_with(suffix),
        Some(narrower) => narrower
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.starts_with('.')),
    }
}

impl RouteTable {
    /// The first route of the listener's virtual host for the request that matches its
    /// headers (`:authority`, `:path`, `:method` and the rest).
    #[cfg(test)]
    pub(crate) fn find(&self, listener: usize, request: &Headers) -> Option<&Route> {
        self.position(listener, request).map(|i| &self.routes[i])
    }

    pub(crate) fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// The index of the first matching route on listener `listener` (config order).
    pub(crate) fn position(&self, listener: usize, request: &Headers) -> Option<usize> {
        let candidates = self
            .listeners
            .get(listener)?
            .select(headers::get(request, ":authority"))?;
        let full = headers::get_str(request, ":path").unwrap_or("/");
        // Envoy matches the path with the query string removed.
        let (path, query) = match full.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (full, None),
        };
        let method = headers::get_str(request, ":method").unwrap_or("");
        candidates
            .iter()
            .copied()
            .find(|&i| self.routes[i].matches(path, query, method, request))
    }
}

impl Route {
    fn matches(&self, path: &str, query: Option<&str>, method: &str, request: &Headers) -> bool {
        let path_ok = match &self.path {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::SeparatedPrefix(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            PathMatch::Regex(r) => r.is_match(path),
        };
        path_ok
            && self.method.as_deref().is_none_or(|m| m == method)
            && self.headers.iter().all(|h| h.matches(request))
            && self.query.iter().all(|q| q.matches(query))
    }
}

impl HeaderMatch {
    fn matches(&self, request: &Headers) -> bool {
        let value = headers::get(request, &self.name);
        match &self.rule {
            HeaderRule::Exact(expected) => value == Some(expected.as_slice()),
            HeaderRule::Regex(r) => value
                .and_then(|v| std::str::from_utf8(v).ok())
                .is_some_and(|v| r.is_match(v)),
            HeaderRule::Present(present) => value.is_some() == *present,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &str) -> RouteTable {
        table_with("[{address: 127.0.0.1:0}]", routes)
    }

    fn table_with(listeners: &str, routes: &str) -> RouteTable {
        let yaml = format!(
            "version: 1\nlisteners: {listeners}\nclusters: [{{name: a, endpoints: [127.0.0.1:1]}}, {{name: b, endpoints: [127.0.0.1:2]}}]\nroutes:\n{routes}"
        );
        let document = crate::config::RawConfig::parse(&yaml).unwrap();
        let mut errors = Vec::new();
        let table = RouteTable::compile(&document, &mut errors);
        assert_eq!(errors, Vec::<String>::new());
        table
    }

    fn request(method: &str, path: &str, extra: &[(&str, &str)]) -> Headers {
        let mut headers: Headers = vec![
            (":path".into(), path.into()),
            (":method".into(), method.into()),
        ];
        headers.extend(
            extra
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec())),
        );
        headers
    }

    fn routed(table: &RouteTable, headers: &Headers) -> Option<String> {
        table.find(0, headers).map(|r| r.name.to_string())
    }

    /// The route a GET of `/` to `authority` takes on listener `listener`.
    fn by_host(table: &RouteTable, listener: usize, authority: &str) -> Option<String> {
        let request = request("GET", "/", &[(":authority", authority)]);
        table.find(listener, &request).map(|r| r.name.to_string())
    }

    #[test]
    fn first_match_wins_over_headers_then_paths() {
        let t = table(
            "  - {name: by-header, match: {prefix: /, headers: [{name: X-Model, exact: iris}]}, cluster: a}\n  - {name: exact, match: {path: /v1/models}, cluster: b}\n  - {name: regex, match: {regex: '/v[12]/models/[a-z]+'}, cluster: b}\n  - {name: post-only, match: {prefix: /p, method: post}, cluster: a}\n",
        );
        assert_eq!(
            routed(&t, &request("GET", "/v1/models", &[("x-model", "iris")])).as_deref(),
            Some("by-header")
        );
        assert_eq!(
            routed(&t, &request("GET", "/v1/models?x=1", &[])).as_deref(),
            Some("exact")
        );
        assert_eq!(
            routed(&t, &request("GET", "/v2/models/wine", &[])).as_deref(),
            Some("regex")
        );
        // The regex must match the whole path.
        assert_eq!(
            routed(&t, &request("GET", "/v2/models/wine/infer", &[])),
            None
        );
        assert_eq!(
            routed(&t, &request("POST", "/p/x", &[])).as_deref(),
            Some("post-only")
        );
        assert_eq!(routed(&t, &request("GET", "/p/x", &[])), None);
    }

    #[test]
    fn header_rules_exact_regex_and_presence() {
        let t = table(
            "  - {name: absent, match: {prefix: /a, headers: [{name: x-k, present: false}]}, cluster: a}\n  - {name: re, match: {prefix: /, headers: [{name: x-k, regex: 'v[0-9]'}]}, cluster: a}\n  - {name: present, match: {prefix: /, headers: [{name: x-k, present: true}]}, cluster: b}\n",
        );
        assert_eq!(
            routed(&t, &request("GET", "/a", &[])).as_deref(),
            Some("absent")
        );
        assert_eq!(
            routed(&t, &request("GET", "/a", &[("x-k", "v1")])).as_deref(),
            Some("re")
        );
        assert_eq!(
            routed(&t, &request("GET", "/a", &[("x-k", "v10")])).as_deref(),
            Some("present")
        );
        assert_eq!(routed(&t, &request("GET", "/b", &[])), None);
    }

    // Envoy's domain search order (`RouteMatcher::findVirtualHost`): exact, then the longest
    // suffix wildcard, then `*`; the port is ignored and case does not matter.
    #[test]
    fn virtual_hosts_exact_then_longest_suffix_then_any() {
        let t = table(
            "  - {name: any, match: {prefix: /}, cluster: a}\n  - {name: short, hostnames: ['*.com'], match: {prefix: /}, cluster: a}\n  - {name: long, hostnames: ['*.example.com'], match: {prefix: /}, cluster: a}\n  - {name: exact, hostnames: [api.example.com], match: {prefix: /}, cluster: b}\n",
        );
        assert_eq!(by_host(&t, 0, "api.example.com").as_deref(), Some("exact"));
        assert_eq!(
            by_host(&t, 0, "API.Example.com:8080").as_deref(),
            Some("exact")
        );
        assert_eq!(by_host(&t, 0, "web.example.com").as_deref(), Some("long"));
        assert_eq!(
            by_host(&t, 0, "a.b.example.com:80").as_deref(),
            Some("long")
        );
        assert_eq!(by_host(&t, 0, "example.com").as_deref(), Some("short"));
        // The wildcard stands for at least one character.
        assert_eq!(by_host(&t, 0, ".com").as_deref(), Some("any"));
        assert_eq!(by_host(&t, 0, "example.org").as_deref(), Some("any"));
        assert_eq!(by_host(&t, 0, "[::1]:8080").as_deref(), Some("any"));
        // Without a host no virtual host is chosen once there is more than `*`.
        let no_host = request("GET", "/", &[]);
        assert_eq!(t.find(0, &no_host).map(|r| r.name.to_string()), None);
    }

    #[test]
    fn a_host_no_virtual_host_serves_has_no_route_and_a_port_is_not_part_of_the_host() {
        let t =
            table("  - {name: iris, hostnames: [iris.local], match: {prefix: /}, cluster: a}\n");
        assert_eq!(by_host(&t, 0, "iris.local:8080").as_deref(), Some("iris"));
        assert_eq!(by_host(&t, 0, "wine.local"), None);
        assert_eq!(by_host(&t, 0, "iris.local.evil"), None);
        // Only `*`: Envoy does not read the host at all.
        let any = table("  - {name: any, match: {prefix: /}, cluster: a}\n");
        assert_eq!(
            any.find(0, &request("GET", "/", &[]))
                .map(|r| r.name.to_string())
                .as_deref(),
            Some("any")
        );
        assert_eq!(without_port(b"[::1]"), b"[::1]");
        assert_eq!(without_port(b"[::1]:80"), b"[::1]");
    }

    #[test]
    fn first_match_wins_within_the_virtual_host_in_config_order() {
        let t = table(
            "  - {name: iris-models, hostnames: [iris.local], match: {prefix: /v1}, cluster: a}\n  - {name: any-models, match: {prefix: /v1}, cluster: a}\n  - {name: iris-rest, hostnames: [iris.local], match: {prefix: /}, cluster: b}\n",
        );
        let get = |host: &str, path: &str| {
            t.find(0, &request("GET", path, &[(":authority", host)]))
                .map(|r| r.name.to_string())
        };
        assert_eq!(get("iris.local", "/v1/x").as_deref(), Some("iris-models"));
        assert_eq!(get("iris.local", "/v2").as_deref(), Some("iris-rest"));
        // `any-models` serves `*`, a virtual host of its own: iris.local never reaches it.
        assert_eq!(get("wine.local", "/v1/x").as_deref(), Some("any-models"));
        assert_eq!(get("wine.local", "/v2"), None);
    }

    #[test]
    fn routes_attach_to_the_listeners_they_name() {
        let t = table_with(
            "[{name: public, address: 127.0.0.1:0}, {name: internal, address: 127.0.0.1:0}]",
            "  - {name: internal-only, listeners: [internal], match: {prefix: /admin}, cluster: a}\n  - {name: both, match: {prefix: /}, cluster: b}\n",
        );
        let admin = request("GET", "/admin", &[]);
        assert_eq!(
            t.find(0, &admin).map(|r| r.name.to_string()).as_deref(),
            Some("both")
        );
        assert_eq!(
            t.find(1, &admin).map(|r| r.name.to_string()).as_deref(),
            Some("internal-only")
        );
        assert!(t.find(2, &admin).is_none());
    }

    #[test]
    fn a_listener_hostname_narrows_the_routes_hostnames() {
        let t = table_with(
            "[{name: web, address: 127.0.0.1:0, hostname: '*.example.com'}]",
            "  - {name: inside, hostnames: [a.example.com, b.other.org], match: {prefix: /}, cluster: a}\n  - {name: outside, hostnames: [x.other.org], match: {prefix: /}, cluster: a}\n  - {name: broad, hostnames: ['*.com'], match: {prefix: /}, cluster: b}\n  - {name: none, match: {prefix: /}, cluster: b}\n",
        );
        assert_eq!(by_host(&t, 0, "a.example.com").as_deref(), Some("inside"));
        // b.other.org and x.other.org are outside the listener's hostname.
        assert_eq!(by_host(&t, 0, "b.other.org"), None);
        assert_eq!(by_host(&t, 0, "x.other.org"), None);
        // `*.com` narrowed to the listener's `*.example.com`, which `none` serves too: first wins.
        assert_eq!(by_host(&t, 0, "c.example.com").as_deref(), Some("broad"));
        assert_eq!(by_host(&t, 0, "c.example.org"), None);
    }

    // Envoy Gateway's `computeHosts` as its comments describe each case
    // (`internal/gatewayapi/helpers.go`).
    #[test]
    fn hosts_intersect_as_envoy_gateway_computes_them() {
        let hosts_of = |route: &[&str], listener: Option<&str>| -> Vec<String> {
            let route: Vec<String> = route.iter().map(|h| (*h).to_owned()).collect();
            hosts(&route, listener).into_iter().collect()
        };
        assert_eq!(hosts_of(&[], None), ["*"]);
        assert_eq!(hosts_of(&[], Some("*.example.com")), ["*.example.com"]);
        assert_eq!(hosts_of(&["a.example.com"], None), ["a.example.com"]);
        assert_eq!(
            hosts_of(&["a.example.com"], Some("a.example.com")),
            ["a.example.com"]
        );
        assert_eq!(
            hosts_of(&["a.example.com"], Some("*.example.com")),
            ["a.example.com"]
        );
        assert_eq!(
            hosts_of(&["example.com"], Some("*.example.com")),
            Vec::<String>::new()
        );
        assert_eq!(
            hosts_of(&["*.example.com"], Some("a.example.com")),
            ["a.example.com"]
        );
        assert_eq!(
            hosts_of(&["*.com"], Some("*.example.com")),
            ["*.example.com"]
        );
        assert_eq!(
            hosts_of(&["*.example.com"], Some("*.com")),
            ["*.example.com"]
        );
        assert_eq!(
            hosts_of(&["*.example.com"], Some("*.example.com")),
            ["*.example.com"]
        );
        assert_eq!(
            hosts_of(&["*.org"], Some("*.example.com")),
            Vec::<String>::new()
        );
        assert_eq!(hosts_of(&["b.org"], Some("a.org")), Vec::<String>::new());
    }

    // Gateway API's PathPrefix as Envoy Gateway emits it: whole segments, `/` a plain prefix.
    #[test]
    fn path_prefix_matches_whole_segments() {
        let t = table(
            "  - {name: api, match: {pathPrefix: /api/}, cluster: a}\n  - {name: v1, match: {pathPrefix: /v1}, cluster: a}\n  - {name: root, match: {pathPrefix: /}, cluster: b}\n",
        );
        for (path, route) in [
            ("/api", "api"),
            ("/api/", "api"),
            ("/api/x?q=1", "api"),
            ("/apix", "root"),
            ("/v1", "v1"),
            ("/v1/models", "v1"),
            ("/v1x", "root"),
            ("/", "root"),
        ] {
            assert_eq!(
                routed(&t, &request("GET", path, &[])).as_deref(),
                Some(route),
                "{path}"
            );
        }
    }

    // Envoy's `query_parameters` with a `string_match`: the first value as sent, whole-value
    // regexes, no match when absent.
    #[test]
    fn query_parameters_match_the_first_raw_value() {
        let t = table(
            "  - {name: exact, match: {prefix: /, queryParams: [{name: version, exact: v2}]}, cluster: a}\n  - {name: regex, match: {prefix: /, queryParams: [{name: model, regex: 'ir[a-z]s'}]}, cluster: a}\n  - {name: both, match: {prefix: /, queryParams: [{name: a, exact: ''}, {name: b, exact: 'x%20y'}]}, cluster: a}\n  - {name: rest, match: {prefix: /}, cluster: b}\n",
        );
        for (path, route) in [
            ("/p?version=v2", "exact"),
            ("/p?x=1&version=v2", "exact"),
            ("/p?version=v1&version=v2", "regex-or-rest"),
            ("/p?version=V2", "regex-or-rest"),
            ("/p?model=iris", "regex"),
            ("/p?model=iris2", "regex-or-rest"),
            ("/p?a&b=x%20y", "both"),
            ("/p?a=&b=x y", "regex-or-rest"),
            ("/p", "regex-or-rest"),
            ("/p?versionv2", "regex-or-rest"),
        ] {
            let want = if route == "regex-or-rest" {
                "rest"
            } else {
                route
            };
            assert_eq!(
                routed(&t, &request("GET", path, &[])).as_deref(),
                Some(want),
                "{path}"
            );
        }
    }

    fn backends(routes: &str) -> Vec<Option<String>> {
        let t = table(routes);
        let Action::Forward(backends) = &t.routes[0].action else {
            panic!("not a forwarding route");
        };
        (0..1000)
            .map(|_| backends.pick().map(ToString::to_string))
            .collect()
    }

    #[test]
    fn weighted_backends_split_by_weight_and_skip_weight_zero() {
        let picks = backends(
            "  - {match: {prefix: /}, backends: [{cluster: a, weight: 9}, {cluster: b, weight: 1}]}\n",
        );
        let to_b = picks.iter().filter(|c| c.as_deref() == Some("b")).count();
        let to_a = picks.iter().filter(|c| c.as_deref() == Some("a")).count();
        assert_eq!(to_a + to_b, 1000);
        // Binomial(1000, 0.1): a standard deviation of 9.5, so this is more than 5 of them.
        assert!(
            (50..=150).contains(&to_b),
            "{to_b} of 1000 to the weight-1 backend"
        );
        let picks = backends(
            "  - {match: {prefix: /}, backends: [{cluster: a, weight: 0}, {cluster: b}]}\n",
        );
        assert!(picks.iter().all(|c| c.as_deref() == Some("b")));
        let picks = backends(
            "  - {match: {prefix: /}, backends: [{cluster: a, weight: 0}, {cluster: b, weight: 0}]}\n",
        );
        assert!(picks.iter().all(Option::is_none));
    }
}
