//! The view of a request that the policies read: method, path, a header lookup, client address.
//!
//! The adapter fills it lazily: headers are fetched only when a policy asks for one, so a
//! request that needs no token lookup never copies the `authorization` header out of the host.

use std::borrow::Cow;

/// Look up request headers by lower-case name, and the client address when a host provides it
/// on demand.
pub trait HeaderSource {
    /// The first value of header `name` (lower-case), if present.
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;

    /// The name of every request header, as the host holds it (one entry per value). Asked
    /// for once per request, to find client-sent look-alikes of the headers the policy sets
    /// (`x_jwt_sub` beside `x-jwt-sub`): a backend that folds `_` into `-` would read them
    /// as the gateway's own.
    fn header_names(&self) -> Vec<Cow<'_, str>>;

    /// The client address (`ip:port` or `ip`), asked for only when a policy needs it (a
    /// rate-limit key that falls back to the client). The filter fetches it from the host
    /// here, which saves a host call (and a copy into the VM) on every request whose key is a
    /// claim or a header.
    fn client_address(&self) -> Option<Cow<'_, str>> {
        None
    }
}

/// A plain list of header pairs (tests, benchmarks); names compare case-insensitively.
impl HeaderSource for Vec<(&str, &str)> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| Cow::Borrowed(*v))
    }

    fn header_names(&self) -> Vec<Cow<'_, str>> {
        self.iter().map(|(k, _)| Cow::Borrowed(*k)).collect()
    }
}

/// A plain list of owned header pairs; names compare case-insensitively.
impl HeaderSource for Vec<(String, String)> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| Cow::Borrowed(v.as_str()))
    }

    fn header_names(&self) -> Vec<Cow<'_, str>> {
        self.iter()
            .map(|(k, _)| Cow::Borrowed(k.as_str()))
            .collect()
    }
}

/// Headers from `headers` with a client address known up front (tests, benchmarks, fuzzing).
pub struct KnownClient<'a, H: ?Sized> {
    pub headers: &'a H,
    pub address: Option<&'a str>,
}

impl<H: HeaderSource + ?Sized> HeaderSource for KnownClient<'_, H> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.headers.header(name)
    }

    fn header_names(&self) -> Vec<Cow<'_, str>> {
        self.headers.header_names()
    }

    fn client_address(&self) -> Option<Cow<'_, str>> {
        self.address.map(Cow::Borrowed)
    }
}

/// What the policies see of a request at header time.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    /// The `:method` pseudo-header.
    pub method: &'a str,
    /// The `:path` pseudo-header, query string included.
    pub path: &'a str,
    /// Header lookup, and the client address on demand.
    pub headers: &'a dyn HeaderSource,
}

impl std::fmt::Debug for RequestView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestView")
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
