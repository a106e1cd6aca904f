//! What a route does to a request besides choosing its cluster, as Envoy does it for the
//! actions Envoy Gateway emits from an `HTTPRoute`'s filters: a URL rewrite applied by the router
//! on the way upstream (`URLRewrite`), and a redirect answered instead of forwarding
//! (`RequestRedirect`). Envoy Gateway's translation is `internal/xds/translator/route.go`
//! (`buildXdsURLRewriteAction`, `buildXdsRedirectAction`); Envoy's behaviour is
//! `source/common/router/config_impl.cc` (`RouteEntryImplBase::finalizeRequestHeaders`,
//! `currentUrlPathAfterRewriteWithMatchedPath`) and `source/common/http/utility.cc`
//! (`Utility::newUri`, `processRequestHost`, `Utility::updateAuthority`).
//!
//! Envoy applies a rewrite in the router, the last filter: the Wasm filters before it see the
//! path and host the client sent, and so does the route match.

use hyper::StatusCode;
use modelgate_runtime::Headers;

use crate::config::{PathModifier, RedirectConfig, RedirectScheme, RewriteConfig};
use crate::headers;

/// A path rewrite, in the form Envoy Gateway gives it to Envoy.
#[derive(Clone, Debug)]
enum PathRewrite {
    /// `ReplaceFullPath` on a rewrite: `regex_rewrite` `^/.*$` to the value, so the path is
    /// replaced and the query string kept.
    Full(String),
    /// `ReplaceFullPath` on a redirect: Envoy's `path_redirect`, which keeps the request's
    /// query string unless the value has its own.
    RedirectFull(String),
    /// `ReplacePrefixMatch`: Envoy's `prefix_rewrite`, the matched prefix replaced.
    Prefix { matched: String, with: String },
    /// `ReplacePrefixMatch` by `/` or nothing: `regex_rewrite` `^<prefix>\/*` to `/`, Envoy
    /// Gateway's way around a doubled slash (envoyproxy/envoy#26055, `prefix2RegexRewrite`).
    /// Holds the prefix as written; the regex is a literal prefix and any slashes after it, so
    /// it is applied as that.
    PrefixToRoot(String),
}

/// An `HTTPPathModifier` the compile step has checked: exactly one replacement, and a matched
/// prefix for `replacePrefixMatch`.
#[derive(Debug)]
pub(crate) enum PathReplace {
    Full(String),
    Prefix {
        with: String,
        matched: MatchedPrefix,
    },
}

/// Checks a path modifier at field path `at`, pushing every problem to `errors`; `matched` is
/// the prefix the route's match gives, if it gives one.
pub(crate) fn path_replace(
    at: &str,
    modifier: &PathModifier,
    matched: Option<&MatchedPrefix>,
    errors: &mut Vec<String>,
) -> Option<PathReplace> {
    match (&modifier.replace_full_path, &modifier.replace_prefix_match) {
        (Some(path), None) => {
            if path.starts_with('/') {
                return Some(PathReplace::Full(path.clone()));
            }
            errors.push(format!("{at}.replaceFullPath: must start with '/'"));
        }
        (None, Some(with)) => match matched {
            Some(matched) => {
                return Some(PathReplace::Prefix {
                    with: with.clone(),
                    matched: matched.clone(),
                });
            }
            None => errors.push(format!(
                "{at}.replacePrefixMatch: needs a prefix or pathPrefix match"
            )),
        },
        _ => errors.push(format!(
            "{at}: give exactly one of replaceFullPath and replacePrefixMatch"
        )),
    }
    None
}

impl PathRewrite {
    /// `redirect` selects Envoy Gateway's redirect translation, which keeps a trailing `/` of
    /// the replacement, where the rewrite's drops it (envoyproxy/gateway#3989).
    fn new(replace: PathReplace, redirect: bool) -> PathRewrite {
        match replace {
            PathReplace::Full(full) if redirect => PathRewrite::RedirectFull(full),
            PathReplace::Full(full) => PathRewrite::Full(full),
            PathReplace::Prefix { with, matched } if with.is_empty() || with == "/" => {
                PathRewrite::PrefixToRoot(matched.written)
            }
            PathReplace::Prefix { with, matched } => {
                let with = if redirect {
                    with.as_str()
                } else {
                    with.strip_suffix('/').unwrap_or(&with)
                };
                PathRewrite::Prefix {
                    matched: matched.matched,
                    with: with.to_owned(),
                }
            }
        }
    }

    /// The rewritten `:path` (query string included), or `None` when it stays as it is.
    fn apply(&self, path: &str) -> Option<String> {
        let (just_path, query) = match path.find('?') {
            Some(at) => path.split_at(at),
            None => (path, ""),
        };
        match self {
            PathRewrite::Full(with) => just_path.starts_with('/').then(|| format!("{with}{query}")),
            PathRewrite::RedirectFull(with) if with.contains('?') => Some(with.clone()),
            PathRewrite::RedirectFull(with) => Some(format!("{with}{query}")),
            PathRewrite::Prefix { matched, with } => path
                .strip_prefix(matched.as_str())
                .map(|rest| format!("{with}{rest}")),
            PathRewrite::PrefixToRoot(prefix) => {
                let rest = just_path.strip_prefix(prefix.as_str())?;
                Some(format!("/{}{query}", rest.trim_start_matches('/')))
            }
        }
    }
}

/// The prefix a route matched, for `ReplacePrefixMatch`.
#[derive(Debug, Clone)]
pub(crate) struct MatchedPrefix {
    /// As Envoy matched it (a `pathPrefix` without its trailing `/`): `prefix_rewrite`
    /// replaces this many bytes.
    pub(crate) matched: String,
    /// As written in the config: Envoy Gateway builds its regex from the `HTTPRoute`'s value.
    pub(crate) written: String,
}

/// A route's `rewrite`: Envoy's `host_rewrite_literal` and path rewrite.
#[derive(Clone, Debug)]
pub(crate) struct Rewrite {
    host: Option<Vec<u8>>,
    path: Option<PathRewrite>,
}

impl Rewrite {
    /// Checks and compiles a route's `rewrite` at field path `at`; `None` after pushing every
    /// problem to `errors`.
    pub(crate) fn compile(
        at: &str,
        config: &RewriteConfig,
        matched: Option<&MatchedPrefix>,
        errors: &mut Vec<String>,
    ) -> Option<Rewrite> {
        let before = errors.len();
        if let Some(host) = &config.hostname
            && let Err(e) = crate::hostname::check_exact(host)
        {
            errors.push(format!("{at}.hostname: {e}"));
        }
        let path = config
            .path
            .as_ref()
            .and_then(|p| path_replace(&format!("{at}.path"), p, matched, errors));
        (errors.len() == before).then(|| Rewrite {
            host: config.hostname.as_ref().map(|h| h.as_bytes().to_vec()),
            path: path.map(|p| PathRewrite::new(p, false)),
        })
    }

    /// Rewrites the request the router sends upstream. A new host goes in `:authority`, and
    /// the client's one is appended to `x-forwarded-host`, as Envoy Gateway asks
    /// (`append_x_forwarded_host`) and Envoy's `updateAuthority` does it: with a bare `,`,
    /// unless it is already the last entry.
    pub(crate) fn apply(&self, request: &mut Headers) {
        if let Some(host) = &self.host {
            let old = headers::get(request, ":authority")
                .filter(|a| !a.is_empty())
                .map(<[u8]>::to_vec);
            if let Some(old) = old {
                match headers::get(request, "x-forwarded-host").map(<[u8]>::to_vec) {
                    Some(mut list) if !list.is_empty() => {
                        if list.rsplit(|&b| b == b',').next() != Some(old.as_slice()) {
                            list.push(b',');
                            list.extend_from_slice(&old);
                            headers::set(request, "x-forwarded-host", &list);
                        }
                    }
                    _ => headers::set(request, "x-forwarded-host", &old),
                }
            }
            replace_in_place(request, ":authority", host.clone());
        }
        if let Some(rewrite) = &self.path {
            let path = headers::get_str(request, ":path").unwrap_or("/");
            if let Some(new) = rewrite.apply(path) {
                replace_in_place(request, ":path", new.into_bytes());
            }
        }
    }
}

/// Sets a pseudo-header where it stands, so the list keeps them first.
fn replace_in_place(request: &mut Headers, name: &str, value: Vec<u8>) {
    match request.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value,
        None => request.insert(0, (name.to_owned(), value)),
    }
}

/// A route's `redirect`: Envoy's `RedirectAction` as Envoy Gateway fills it in.
#[derive(Clone, Debug)]
pub(crate) struct Redirect {
    scheme: Option<&'static str>,
    host: Option<String>,
    /// `:port`, or empty: Envoy Gateway leaves out ports 80 and 443 so that they never
    /// appear in the `Location` (`buildXdsRedirectAction`).
    port: String,
    path: Option<PathRewrite>,
    pub status: StatusCode,
}

impl Redirect {
    /// Checks and compiles a route's `redirect` at field path `at`; `None` after pushing every
    /// problem to `errors`.
    pub(crate) fn compile(
        at: &str,
        config: &RedirectConfig,
        matched: Option<&MatchedPrefix>,
        errors: &mut Vec<String>,
    ) -> Option<Redirect> {
        let before = errors.len();
        let status = match config.status_code {
            301 => Some(StatusCode::MOVED_PERMANENTLY),
            302 => Some(StatusCode::FOUND),
            _ => {
                errors.push(format!("{at}.statusCode: must be 301 or 302"));
                None
            }
        };
        if let Some(host) = &config.hostname
            && let Err(e) = crate::hostname::check_exact(host)
        {
            errors.push(format!("{at}.hostname: {e}"));
        }
        let path = config
            .path
            .as_ref()
            .and_then(|p| path_replace(&format!("{at}.path"), p, matched, errors));
        let status = status.filter(|_| errors.len() == before)?;
        Some(Redirect {
            scheme: config.scheme.map(RedirectScheme::as_str),
            host: config.hostname.clone(),
            port: match config.port.map(std::num::NonZeroU16::get) {
                Some(80 | 443) | None => String::new(),
                Some(port) => format!(":{port}"),
            },
            path: path.map(|p| PathRewrite::new(p, true)),
            status,
        })
    }

    /// The `Location` for a request, as Envoy's `Utility::newUri` builds it: the scheme given
    /// or the request's; the host given, or the request's less a port that the scheme change
    /// makes default, or any port when a port is given; the port given; the path rewritten
    /// (a prefix replaced, or the whole path with the query string kept) or the request's.
    pub(crate) fn location(&self, request: &Headers) -> String {
        let scheme = self
            .scheme
            .or_else(|| headers::get_str(request, ":scheme"))
            .unwrap_or("http");
        let host = match &self.host {
            Some(host) => host.as_str(),
            None => request_host(request, scheme, &self.port),
        };
        let path = headers::get_str(request, ":path").unwrap_or("/");
        let rewritten = self.path.as_ref().and_then(|p| p.apply(path));
        let path = rewritten.as_deref().unwrap_or(path);
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("{scheme}://{host}{}{slash}{path}", self.port)
    }
}

/// Envoy's `processRequestHost`: the request's host, less its port when a port is given, or
/// when the scheme changes from the one `x-forwarded-proto` names and the port is that
/// scheme's default (`http://a:80` to `https://a`).
fn request_host<'a>(request: &'a Headers, scheme: &str, new_port: &str) -> &'a str {
    let host = headers::get_str(request, ":authority").unwrap_or("");
    let port_at = if host.starts_with('[') {
        host.rfind("]:").map(|at| at + 1)
    } else {
        host.rfind(':')
    };
    let Some(at) = port_at else {
        return host;
    };
    let port = &host[at..];
    let proto = headers::get_str(request, "x-forwarded-proto").unwrap_or("");
    let mut strip = !new_port.is_empty();
    if scheme != proto {
        strip |= proto.eq_ignore_ascii_case("https") && port == ":443";
        strip |= proto.eq_ignore_ascii_case("http") && port == ":80";
    }
    if strip { &host[..at] } else { host }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(path: &str) -> PathModifier {
        PathModifier {
            replace_full_path: Some(path.to_owned()),
            replace_prefix_match: None,
        }
    }

    fn prefix(with: &str) -> PathModifier {
        PathModifier {
            replace_full_path: None,
            replace_prefix_match: Some(with.to_owned()),
        }
    }

    fn matched(matched: &str, written: &str) -> MatchedPrefix {
        MatchedPrefix {
            matched: matched.to_owned(),
            written: written.to_owned(),
        }
    }

    fn rewrite(modifier: &PathModifier, m: Option<&MatchedPrefix>, path: &str) -> Option<String> {
        let replace = path_replace("path", modifier, m, &mut Vec::new()).unwrap();
        PathRewrite::new(replace, false).apply(path)
    }

    // Envoy Gateway's `HTTPRoute` `URLRewrite` translations, applied as Envoy applies them.
    #[test]
    fn rewrites_paths_as_envoy_gateway_configures_envoy() {
        // ReplaceFullPath: the path goes, the query stays.
        assert_eq!(
            rewrite(&full("/v2/x"), None, "/a/b?q=1").as_deref(),
            Some("/v2/x?q=1")
        );
        // ReplacePrefixMatch on PathPrefix /api/ (Envoy matches /api, path-separated).
        let api = matched("/api", "/api/");
        assert_eq!(
            rewrite(&prefix("/v1"), Some(&api), "/api/x?y=1").as_deref(),
            Some("/v1/x?y=1")
        );
        assert_eq!(
            rewrite(&prefix("/v1"), Some(&api), "/api").as_deref(),
            Some("/v1")
        );
        // A trailing slash of the replacement is dropped (envoyproxy/gateway#3989).
        assert_eq!(
            rewrite(&prefix("/v1/"), Some(&api), "/api/x").as_deref(),
            Some("/v1/x")
        );
        // By `/`: the regex `^/api/\/*`, so the bare prefix stays as it is.
        assert_eq!(
            rewrite(&prefix("/"), Some(&api), "/api/x?y").as_deref(),
            Some("/x?y")
        );
        assert_eq!(
            rewrite(&prefix("/"), Some(&api), "/api//x").as_deref(),
            Some("/x")
        );
        assert_eq!(rewrite(&prefix(""), Some(&api), "/api"), None);
        let bare = matched("/api", "/api");
        assert_eq!(
            rewrite(&prefix("/"), Some(&bare), "/api").as_deref(),
            Some("/")
        );
        // Regex metacharacters of the prefix are literal (envoyproxy/gateway#6857).
        let dotted = matched("/a.b", "/a.b");
        assert_eq!(rewrite(&prefix("/"), Some(&dotted), "/axb/c"), None);
        let mut errors = Vec::new();
        assert!(path_replace("path", &prefix("/x"), None, &mut errors).is_none());
        assert_eq!(
            errors,
            ["path.replacePrefixMatch: needs a prefix or pathPrefix match"]
        );
    }

    fn request(authority: &str, path: &str, scheme: &str) -> Headers {
        vec![
            (":authority".into(), authority.into()),
            (":path".into(), path.into()),
            (":method".into(), b"GET".to_vec()),
            (":scheme".into(), scheme.into()),
            ("x-forwarded-proto".into(), scheme.into()),
        ]
    }

    fn redirect(config: &str) -> Redirect {
        let config: RedirectConfig = serde_norway::from_str(config).unwrap();
        let api = matched("/api", "/api");
        Redirect::compile("redirect", &config, Some(&api), &mut Vec::new()).unwrap()
    }

    // Envoy's `Utility::newUri` for the `RedirectAction`s Envoy Gateway emits.
    #[test]
    fn redirect_locations_follow_envoy() {
        let r = redirect("{scheme: https}");
        // The default port of the old scheme goes; any other port stays.
        assert_eq!(
            r.location(&request("a.com:80", "/x?q", "http")),
            "https://a.com/x?q"
        );
        assert_eq!(
            r.location(&request("a.com:8080", "/x", "http")),
            "https://a.com:8080/x"
        );
        assert_eq!(
            r.location(&request("[::1]:80", "/x", "http")),
            "https://[::1]/x"
        );
        assert_eq!(
            redirect("{}").location(&request("a.com:80", "/", "http")),
            "http://a.com:80/"
        );
        // A port given replaces the request's; 80 and 443 are never written.
        let r = redirect("{hostname: b.org, port: 8443, statusCode: 302}");
        assert_eq!(r.status, StatusCode::FOUND);
        assert_eq!(
            r.location(&request("a.com:80", "/x", "http")),
            "http://b.org:8443/x"
        );
        let r = redirect("{port: 8443}");
        assert_eq!(
            r.location(&request("a.com:80", "/x", "http")),
            "http://a.com:8443/x"
        );
        let r = redirect("{scheme: https, port: 443}");
        assert_eq!(r.scheme, Some(RedirectScheme::Https.as_str()));
        assert_eq!(
            r.location(&request("a.com:8080", "/x", "http")),
            "https://a.com:8080/x"
        );
        // Paths: the whole path (query kept unless the new one has its own), or the prefix.
        let r = redirect("{path: {replaceFullPath: /new}}");
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            r.location(&request("a.com", "/old?q=1", "http")),
            "http://a.com/new?q=1"
        );
        let r = redirect("{path: {replaceFullPath: '/new?x=2'}}");
        assert_eq!(
            r.location(&request("a.com", "/old?q=1", "http")),
            "http://a.com/new?x=2"
        );
        let r = redirect("{path: {replacePrefixMatch: /v2/}}");
        assert_eq!(
            r.location(&request("a.com", "/api/m?q", "http")),
            "http://a.com/v2//m?q"
        );
        let r = redirect("{path: {replacePrefixMatch: /}}");
        assert_eq!(
            r.location(&request("a.com", "/api/m", "http")),
            "http://a.com/m"
        );
    }

    #[test]
    fn a_host_rewrite_moves_the_old_host_to_x_forwarded_host() {
        let config: RewriteConfig = serde_norway::from_str("{hostname: upstream.local}").unwrap();
        let rewrite = Rewrite::compile("rewrite", &config, None, &mut Vec::new()).unwrap();
        let mut request = request("a.com:8080", "/x", "http");
        rewrite.apply(&mut request);
        assert_eq!(
            headers::get(&request, ":authority"),
            Some(&b"upstream.local"[..])
        );
        assert_eq!(request[0].0, ":authority");
        assert_eq!(
            headers::get(&request, "x-forwarded-host"),
            Some(&b"a.com:8080"[..])
        );
        let mut request = request_with_xfh("a.com", "proxy.net");
        rewrite.apply(&mut request);
        assert_eq!(
            headers::get(&request, "x-forwarded-host"),
            Some(&b"proxy.net,a.com"[..])
        );
        let mut request = request_with_xfh("a.com", "proxy.net,a.com");
        rewrite.apply(&mut request);
        assert_eq!(
            headers::get(&request, "x-forwarded-host"),
            Some(&b"proxy.net,a.com"[..])
        );
    }

    fn request_with_xfh(authority: &str, xfh: &str) -> Headers {
        let mut headers = request(authority, "/", "http");
        headers.push(("x-forwarded-host".into(), xfh.into()));
        headers
    }
}
