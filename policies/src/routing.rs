//! Which model and KServe endpoint a request path names.
//!
//! The router is strict about form: model servers (uvicorn/starlette) percent-decode paths,
//! so `/%761/models/m:predict` would reach `/v1/models/m:predict` upstream while looking like
//! no model path here. Paths that a server could read differently from us (percent escapes,
//! dot segments, empty segments, backslashes, non-ASCII or control bytes) are therefore
//! [`Target::Invalid`], never passed through.

use crate::config::Protocol;

/// What a KServe model path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /v1/models/{m}` or `/v2/models/{m}[/versions/{v}]`.
    Metadata,
    /// `/v2/models/{m}[/versions/{v}]/ready`.
    Ready,
    /// `POST /v1/models/{m}:predict`.
    Predict,
    /// `POST /v1/models/{m}:explain`.
    Explain,
    /// `POST /v2/models/{m}[/versions/{v}]/infer`.
    Infer,
    /// `POST /v2/repository/models/{m}/load` or `.../unload` (KServe's model repository
    /// extension), or anything else under that path. Loading or unloading acts on the model
    /// whatever protocol it serves, so this endpoint is not tied to one protocol.
    Repository,
    /// Anything else under a model's path: the model's access rules still apply.
    Other,
}

/// What the path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// `/v1/models` or `/v2/models`: the model listing.
    List(Protocol),
    /// A path under one model.
    Model {
        name: &'a str,
        protocol: Protocol,
        endpoint: Endpoint,
    },
    /// Not a model path (`/`, `/v2/health/live`, ...).
    Other,
    /// A path we refuse to interpret (see the module docs).
    Invalid(&'static str),
}

/// The path without its query string or fragment.
///
/// A byte search: `str::find` with a set of chars decodes every char, which cost about 7,000
/// guest instructions per request in `modelgate.wasm` (opt-level "z") for a 31-byte path.
pub(crate) fn strip_query(path: &str) -> &str {
    path.bytes()
        .position(|b| b == b'?' || b == b'#')
        .map_or(path, |i| &path[..i])
}

/// The query string (without `?`), if any.
pub(crate) fn query(path: &str) -> Option<&str> {
    let q = &path[path.find('?')? + 1..];
    Some(q.find('#').map_or(q, |i| &q[..i]))
}

/// Classify a path (query string included or not).
pub(crate) fn classify(path: &str) -> Target<'_> {
    let path = strip_query(path);
    if let Err(reason) = check_form(path) {
        return Target::Invalid(reason);
    }
    if let Some(rest) = path.strip_prefix("/v1/models") {
        return v1(rest);
    }
    if let Some(rest) = path.strip_prefix("/v2/models") {
        return v2(rest);
    }
    // KServe's model server answers these whatever route led to it (its generated route sends
    // `^/.*$` to the predictor), and `unload` makes every later predict 404: they must pass
    // the named model's access rules, not only authentication.
    if let Some(rest) = path.strip_prefix("/v2/repository/models/") {
        return repository(rest);
    }
    Target::Other
}

fn check_form(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("path must start with '/'");
    }
    if path
        .bytes()
        .any(|b| b == b'%' || b == b'\\' || !(0x21..0x7f).contains(&b))
    {
        return Err("path contains an encoded, non-ASCII or control character");
    }
    // Skip the leading '/'; a single trailing '/' is a normal form of listing paths.
    let inner = path[1..].strip_suffix('/').unwrap_or(&path[1..]);
    if !inner.is_empty()
        && inner
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err("path contains an empty or dot segment");
    }
    Ok(())
}

fn v1(rest: &str) -> Target<'_> {
    if rest.is_empty() || rest == "/" {
        return Target::List(Protocol::V1);
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Target::Other; // e.g. `/v1/modelsx`
    };
    let (segment, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let (name, verb) = match segment.split_once(':') {
        Some((name, verb)) => (name, Some(verb)),
        None => (segment, None),
    };
    if !valid_name(name) {
        return Target::Invalid("invalid model name");
    }
    let endpoint = match (verb, tail.is_empty()) {
        (None, true) => Endpoint::Metadata,
        (Some("predict"), true) => Endpoint::Predict,
        (Some("explain"), true) => Endpoint::Explain,
        _ => Endpoint::Other,
    };
    Target::Model {
        name,
        protocol: Protocol::V1,
        endpoint,
    }
}

fn v2(rest: &str) -> Target<'_> {
    if rest.is_empty() || rest == "/" {
        return Target::List(Protocol::V2);
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Target::Other;
    };
    let (name, mut tail) = rest.split_once('/').unwrap_or((rest, ""));
    if !valid_name(name) {
        return Target::Invalid("invalid model name");
    }
    if let Some(after) = tail.strip_prefix("versions/") {
        let (version, after) = after.split_once('/').unwrap_or((after, ""));
        if !valid_name(version) {
            return Target::Invalid("invalid model version");
        }
        tail = after;
    }
    // A trailing slash names the same endpoint (servers redirect or route it alike).
    let endpoint = match tail.strip_suffix('/').unwrap_or(tail) {
        "" => Endpoint::Metadata,
        "ready" => Endpoint::Ready,
        "infer" => Endpoint::Infer,
        _ => Endpoint::Other,
    };
    Target::Model {
        name,
        protocol: Protocol::V2,
        endpoint,
    }
}

fn repository(rest: &str) -> Target<'_> {
    let name = rest.split_once('/').map_or(rest, |(name, _)| name);
    if !valid_name(name) {
        return Target::Invalid("invalid model name");
    }
    Target::Model {
        name,
        protocol: Protocol::V2,
        endpoint: Endpoint::Repository,
    }
}

/// Model names as KServe allows them: DNS-label-like plus `_` and `.`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests;
