//! The host side of the policies' inputs: the request headers read once per request, the
//! client address read only when a policy asks for it, and shared data.
//!
//! They are reached through `proxy_wasm::hostcalls` directly: the SDK's context helpers unwrap,
//! and `get_http_request_header` panics on a value that is not UTF-8, which any client can send.

use std::borrow::Cow;

use modelgate_policies::{HeaderSource, SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};

/// The request headers of the current stream, read from the host in one call when the request
/// headers arrive and looked up in the VM from then on.
///
/// The policies ask for several headers of every request (`:method`, `:path`, the token's
/// header, the content type, the routing header) and for every header name (client-sent
/// look-alikes of the headers the policy sets), so one `proxy_get_header_map_pairs` replaces
/// a host call per header: six host calls became one on the full-policy V1 request
/// (`bench/filter_cost.py` counts them), and each lookup is a scan of about ten pairs.
pub(crate) struct RequestHeaders {
    pairs: Vec<(String, Vec<u8>)>,
}

impl RequestHeaders {
    /// The current stream's request headers; none when the host has no request headers to
    /// give (it answers a status instead of a map).
    pub(crate) fn read() -> Self {
        Self {
            pairs: hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default(),
        }
    }

    /// The first value of `name`, compared as Envoy compares header names (ASCII case aside).
    fn value(&self, name: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// True when the request holds exactly one `name` header and its value is `value`.
    pub(crate) fn holds_only(&self, name: &str, value: &str) -> bool {
        let mut values = self
            .pairs
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name));
        values
            .next()
            .is_some_and(|(_, v)| v.as_slice() == value.as_bytes())
            && values.next().is_none()
    }

    /// The first value of `name` as text (see [`lossy`]); empty when absent.
    pub(crate) fn text(&self, name: &str) -> Cow<'_, str> {
        self.value(name).map_or(Cow::Borrowed(""), lossy)
    }
}

impl HeaderSource for RequestHeaders {
    /// Bytes that are not UTF-8 become U+FFFD, so such a value can still be compared (and fail
    /// to match) instead of disappearing.
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.value(name).map(lossy)
    }

    /// Envoy's names are header tokens (ASCII), which the SDK's conversion to `String` needs.
    fn header_names(&self) -> Vec<Cow<'_, str>> {
        self.pairs
            .iter()
            .map(|(name, _)| Cow::Borrowed(name.as_str()))
            .collect()
    }

    /// `source.address`, `ip:port` as Envoy gives it. Only a rate-limit key that falls back to
    /// the client needs it; reading it up front cost a host call and about 6,000 instructions
    /// (host and guest) on every request in the `modelgate` runtime.
    fn client_address(&self) -> Option<Cow<'_, str>> {
        match hostcalls::get_property(vec!["source", "address"]) {
            Ok(Some(address)) => Some(Cow::Owned(text(address))),
            Ok(None) | Err(_) => None,
        }
    }
}

/// The first value of response header `name`; bytes that are not UTF-8 become U+FFFD.
pub(crate) fn response_header(name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name) {
        Ok(Some(value)) => Some(text(value)),
        Ok(None) | Err(_) => None,
    }
}

/// Header bytes as text, borrowed when they are UTF-8 (as good as every value is), else with
/// U+FFFD for the bytes that are not. `str::from_utf8` first: it checks ASCII a word at a time,
/// where `String::from_utf8_lossy` decodes byte by byte, which cost about 7,000 guest
/// instructions a request on a 600-byte bearer token (`bench/guest_instructions.py`).
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// A host value as text, replacing bytes that are not UTF-8.
pub(crate) fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

/// The host's shared data: one key-value space per VM id that every worker VM of the plugin
/// sees, so rate-limit state kept here is one limit per Envoy, not one per worker.
pub(crate) struct HostSharedData;

impl SharedStore for HostSharedData {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((value, Some(cas))) => Some((value.unwrap_or_default(), cas)),
            // The host gives every stored key a non-zero CAS: no CAS means no key.
            Ok((_, None)) | Err(_) => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        let cas = (cas != 0).then_some(cas);
        hostcalls::set_shared_data(key, Some(value), cas).map_err(store_error)
    }
}

fn store_error(status: Status) -> StoreError {
    match status {
        Status::CasMismatch => StoreError::CasMismatch,
        _ => StoreError::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_header_bytes_become_replacement_characters() {
        assert_eq!(text(b"Bearer \xffabc".to_vec()), "Bearer \u{fffd}abc");
        assert_eq!(text(b"plain".to_vec()), "plain");
    }

    #[test]
    fn header_lookups_take_the_first_value_and_keep_invalid_bytes_comparable() {
        let headers = RequestHeaders {
            pairs: vec![
                (":path".into(), b"/v1/models/m:predict".to_vec()),
                ("authorization".into(), b"Bearer \xffabc".to_vec()),
                ("x-a".into(), b"one".to_vec()),
                ("x-a".into(), b"two".to_vec()),
            ],
        };
        assert_eq!(headers.text(":path"), "/v1/models/m:predict");
        assert_eq!(headers.text(":method"), "");
        assert_eq!(headers.header("X-A").as_deref(), Some("one"));
        assert_eq!(
            headers.header("authorization").as_deref(),
            Some("Bearer \u{fffd}abc")
        );
        assert_eq!(headers.header("x-b"), None);
        assert_eq!(
            headers.header_names(),
            [":path", "authorization", "x-a", "x-a"]
        );
    }

    #[test]
    fn a_header_is_held_only_once_with_one_exact_value() {
        let headers = RequestHeaders {
            pairs: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("x-a".into(), b"one".to_vec()),
                ("x-a".into(), b"one".to_vec()),
            ],
        };
        assert!(headers.holds_only("content-type", "application/json"));
        assert!(!headers.holds_only("content-type", "application/json; charset=utf-8"));
        // A second copy would be dropped by the replacement: that is a change.
        assert!(!headers.holds_only("x-a", "one"));
        assert!(!headers.holds_only("x-b", ""));
    }

    #[test]
    fn only_a_cas_mismatch_asks_for_a_retry() {
        assert_eq!(store_error(Status::CasMismatch), StoreError::CasMismatch);
        assert_eq!(
            store_error(Status::InternalFailure),
            StoreError::Unavailable
        );
        assert_eq!(store_error(Status::NotFound), StoreError::Unavailable);
    }
}
