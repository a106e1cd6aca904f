//! The route table: path (exact, prefix, whole-path regex), header and method matches, first
//! match wins, compiled once per config.

use std::sync::Arc;
use std::time::Duration;

use modelgate_runtime::Headers;
use regex::Regex;

use crate::config::{HeaderMutations, RetryConfig, RouteConfig};
use crate::headers;

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Shared so each request's access entry takes the names without copying them.
    pub name: Arc<str>,
    pub cluster: Arc<str>,
    pub timeout: Duration,
    pub retry: RetryConfig,
    pub request_headers: HeaderMutations,
    pub response_headers: HeaderMutations,
    path: PathMatch,
    headers: Vec<HeaderMatch>,
    method: Option<String>,
}

#[derive(Debug)]
enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
struct HeaderMatch {
    name: String,
    rule: HeaderRule,
}

#[derive(Debug)]
enum HeaderRule {
    Exact(Vec<u8>),
    Regex(Regex),
    Present(bool),
}

/// Anchors a regex so it must match the whole subject, as Envoy's `safe_regex` does.
fn whole(pattern: &str) -> Result<Regex, String> {
    crate::config::compile_regex(pattern)?;
    crate::config::compile_regex(&format!("^(?:{pattern})$"))
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Compiles the routes; the config has already been checked, so errors here only repeat
    /// what [`crate::config::Config::parse`] reported.
    pub fn compile(routes: &[RouteConfig]) -> Result<RouteTable, String> {
        let mut compiled = Vec::with_capacity(routes.len());
        for (i, route) in routes.iter().enumerate() {
            let m = &route.matcher;
            let path = match (&m.path, &m.prefix, &m.regex) {
                (Some(p), None, None) => PathMatch::Exact(p.clone()),
                (None, Some(p), None) => PathMatch::Prefix(p.clone()),
                (None, None, Some(r)) => {
                    PathMatch::Regex(whole(r).map_err(|e| format!("routes[{i}].match.regex: {e}"))?)
                }
                _ => {
                    return Err(format!(
                        "routes[{i}].match: give exactly one of path, prefix and regex"
                    ));
                }
            };
            let mut header_matches = Vec::new();
            for (j, h) in m.headers.iter().enumerate() {
                let rule = match (&h.exact, &h.regex, h.present) {
                    (Some(v), None, None) => HeaderRule::Exact(v.as_bytes().to_vec()),
                    (None, Some(r), None) => HeaderRule::Regex(
                        whole(r)
                            .map_err(|e| format!("routes[{i}].match.headers[{j}].regex: {e}"))?,
                    ),
                    (None, None, Some(p)) => HeaderRule::Present(p),
                    _ => {
                        return Err(format!(
                            "routes[{i}].match.headers[{j}]: give exactly one of exact, regex and present"
                        ));
                    }
                };
                header_matches.push(HeaderMatch {
                    name: h.name.to_ascii_lowercase(),
                    rule,
                });
            }
            compiled.push(Route {
                name: route
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("route{i}"))
                    .into(),
                cluster: route.cluster.as_str().into(),
                timeout: route.timeout.0,
                retry: route.retry.clone(),
                request_headers: route.request_headers.clone(),
                response_headers: route.response_headers.clone(),
                path,
                headers: header_matches,
                method: m.method.as_ref().map(|s| s.to_ascii_uppercase()),
            });
        }
        Ok(RouteTable { routes: compiled })
    }

    /// The first route matching the request headers (`:path`, `:method` and the rest).
    pub fn find(&self, request: &Headers) -> Option<&Route> {
        self.position(request).map(|i| &self.routes[i])
    }

    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// The index of the first matching route.
    pub fn position(&self, request: &Headers) -> Option<usize> {
        let full = headers::get_str(request, ":path").unwrap_or("/");
        // Envoy matches the path with the query string removed.
        let path = full.split_once('?').map_or(full, |(p, _)| p);
        let method = headers::get_str(request, ":method").unwrap_or("");
        self.routes
            .iter()
            .position(|route| route.matches(path, method, request))
    }
}

impl Route {
    fn matches(&self, path: &str, method: &str, request: &Headers) -> bool {
        let path_ok = match &self.path {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            PathMatch::Regex(r) => r.is_match(path),
        };
        path_ok
            && self.method.as_deref().is_none_or(|m| m == method)
            && self.headers.iter().all(|h| h.matches(request))
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
    use crate::config::Config;

    fn table(routes: &str) -> RouteTable {
        let yaml = format!(
            "version: 1\nlisteners: [{{address: 127.0.0.1:0}}]\nclusters: [{{name: a, endpoints: [127.0.0.1:1]}}, {{name: b, endpoints: [127.0.0.1:2]}}]\nroutes:\n{routes}"
        );
        RouteTable::compile(&Config::parse(&yaml).unwrap().routes).unwrap()
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
        table.find(headers).map(|r| r.name.to_string())
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
}
