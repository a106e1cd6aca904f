//! The host side of the policies' inputs: request headers read one at a time, the client
//! address read only when a policy asks for it, and shared data.
//!
//! Both are reached through `proxy_wasm::hostcalls` directly: the SDK's context helpers unwrap,
//! and `get_http_request_header` panics on a value that is not UTF-8, which any client can send.

use std::borrow::Cow;

use modelgate_policies::{HeaderSource, SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};

/// The request headers of the current stream, fetched from the host only when a policy asks
/// (reading them all would copy every header into the VM for each request).
pub(crate) struct HostRequestHeaders;

impl HeaderSource for HostRequestHeaders {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        request_header(name).map(Cow::Owned)
    }

    /// One host call for the whole map: proxy-wasm has no call for names alone. Envoy's names
    /// are header tokens (ASCII), which the SDK's conversion to `String` needs.
    fn header_names(&self) -> Vec<Cow<'_, str>> {
        match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(pairs) => pairs
                .into_iter()
                .map(|(name, _)| Cow::Owned(name))
                .collect(),
            Err(_) => Vec::new(),
        }
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

/// The first value of request header `name`; bytes that are not UTF-8 become U+FFFD, so such a
/// value can still be compared (and fail to match) instead of disappearing.
pub(crate) fn request_header(name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name) {
        Ok(Some(value)) => Some(text(value)),
        Ok(None) | Err(_) => None,
    }
}

/// The first value of response header `name`, as [`request_header`] reads request headers.
pub(crate) fn response_header(name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name) {
        Ok(Some(value)) => Some(text(value)),
        Ok(None) | Err(_) => None,
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
    fn only_a_cas_mismatch_asks_for_a_retry() {
        assert_eq!(store_error(Status::CasMismatch), StoreError::CasMismatch);
        assert_eq!(
            store_error(Status::InternalFailure),
            StoreError::Unavailable
        );
        assert_eq!(store_error(Status::NotFound), StoreError::Unavailable);
    }
}
