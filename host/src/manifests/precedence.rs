//! The order Envoy Gateway gives the routes of a listener, so that the host's first-match
//! route table picks the route Envoy picks.
//!
//! Envoy Gateway (internal/gatewayapi/sort.go, `XdsIRRoutes.Less`, sorted with
//! `sort.Stable(sort.Reverse(...))` unless `PreserveRouteOrder` is set) ranks one generated
//! route per `HTTPRoute` match, most specific first, by:
//! 1. the path match type: Exact > `RegularExpression` > `PathPrefix`;
//! 2. the length of the path value (a `PathPrefix` of `/` counts as 0);
//! 3. the number of header matches (a `method` match is a header match on `:method`,
//!    internal/gatewayapi/route.go `processHTTPRouteRule`), then how many of them are Exact;
//! 4. the number of query parameter matches, then how many of them are Exact.
//!
//! Routes equal on all of these keep the order they were translated in, which is Gateway
//! API's tie-break (`HTTPRouteRule`, "Route Precedence"): the oldest `HTTPRoute` first
//! (`creationTimestamp`), then alphabetically by `namespace/name` (internal/gatewayapi/resource/
//! resource.go `Resources.Sort`), then rule order and match order within a route; every
//! `HTTPRoute` before any `GRPCRoute`.

/// Path match types in Envoy Gateway's rank, least specific first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PathKind {
    Prefix,
    RegularExpression,
    Exact,
}

/// What Envoy Gateway's sort compares, field by field in its order (the derived `Ord` is
/// lexicographic, so it is `Less` read top to bottom).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    pub path_kind: PathKind,
    pub path_len: usize,
    pub headers: usize,
    pub exact_headers: usize,
    pub query_params: usize,
    pub exact_query_params: usize,
}

impl Rank {
    /// The rank of a path match; `pathMatchCount` counts a `/` prefix as no path match.
    pub(crate) fn of_path(kind: PathKind, value: &str) -> Rank {
        let path_len = if kind == PathKind::Prefix && value == "/" {
            0
        } else {
            value.len()
        };
        Rank {
            path_kind: kind,
            path_len,
            headers: 0,
            exact_headers: 0,
            query_params: 0,
            exact_query_params: 0,
        }
    }
}

/// Where a route came from, for the tie-break.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Origin {
    /// Envoy Gateway translates every `HTTPRoute` before any `GRPCRoute`
    /// (internal/gatewayapi/translator.go, `ProcessHTTPRoutes` then `ProcessGRPCRoutes`).
    pub grpc: bool,
    /// `metadata.creationTimestamp` (RFC 3339 as Kubernetes writes it, so text order is time
    /// order); manifests that were never applied have none, and all such are equal.
    pub created: String,
    pub namespace: String,
    pub name: String,
    pub rule: usize,
    pub matched: usize,
}

/// Sorts `items` most specific first, as Envoy Gateway does: the tie-break order first, then
/// a stable sort by rank, descending.
pub(crate) fn sort<T>(items: &mut [T], key: impl Fn(&T) -> (&Rank, &Origin)) {
    items.sort_by(|a, b| key(a).1.cmp(key(b).1));
    items.sort_by(|a, b| key(b).0.cmp(key(a).0));
}

#[cfg(test)]
mod tests;
