//! Between hyper's header maps and the filters' [`Headers`] lists: pseudo-headers, what
//! Envoy's connection manager does to a request from outside before any filter sees it
//! (internal headers removed, `x-forwarded-for`, `x-forwarded-proto`,
//! `x-envoy-external-address`, `x-request-id`), hop-by-hop headers dropped both ways, and route
//! header mutations.
//!
//! Envoy's rules are `ConnectionManagerUtility::mutateRequestHeaders` and
//! `cleanInternalHeaders` (`source/common/http/conn_manager_utility.cc`) under Envoy Gateway's
//! listener settings (`internal/xds/translator/listener.go`): `use_remote_address: true`, and no
//! `internal_address_config`, which since Envoy 1.36 trusts no address (the runtime guard
//! `explicit_internal_address_config` was removed). So every request is an external edge
//! request: nothing the client sends can make it internal.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, InvalidHeaderName, InvalidHeaderValue};
use hyper::http::request::Parts;
use hyper::{HeaderMap, StatusCode, Uri};
use modelgate_runtime::Headers;

use crate::config::{ClientTrafficConfig, HeaderMutations, RequestIdAction};

pub(crate) const REQUEST_ID: &str = "x-request-id";

/// Envoy sets it from the trusted client address on edge requests, replacing the client's.
const EXTERNAL_ADDRESS: &str = "x-envoy-external-address";

/// What `cleanInternalHeaders` removes from an external edge request, plus `x-envoy-internal`
/// (removed from every request, then set only on internal ones) and `x-forwarded-client-cert`
/// (removed by Envoy Gateway's default XFCC mode, Sanitize, in `mutateXfccRequestHeader`).
/// The gateway acts on none of them: no retry, timeout or trace setting comes from a client.
const CLIENT_MAY_NOT_SEND: [&str; 20] = [
    "x-envoy-internal",
    "x-forwarded-client-cert",
    EXTERNAL_ADDRESS,
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-max-retries",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-force-trace",
    "x-envoy-ip-tags",
    "x-envoy-original-url",
    "x-envoy-hedge-on-per-try-timeout",
];

/// Headers that describe one connection, not the message; never forwarded.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Why a request's `Transfer-Encoding` is refused, if it is: Envoy's HTTP/1 codec accepts
/// only a field value equal to `chunked` (ASCII case aside) and answers anything else with
/// 501 (`http1.invalid_transfer_encoding`; `ConnectionImpl::onHeadersCompleteBase` in
/// `envoy/source/common/http/http1/codec_impl.cc`, after RFC 9112 6.1: a server that does not
/// understand a coding answers 501). hyper decodes any list ending in `chunked` as chunked
/// (`gzip, chunked`, `chunked, chunked`, `identity, chunked`), so the host must refuse them
/// itself or forward a body framed differently from what the client meant. Repeated fields
/// count as their comma-joined list, as in Envoy's header map.
pub(crate) fn unsupported_transfer_coding(map: &HeaderMap) -> Option<String> {
    let mut values = map.get_all(hyper::header::TRANSFER_ENCODING).iter();
    let first = values.next()?;
    let single = values.next().is_none();
    if single
        && first
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked")
    {
        return None;
    }
    let listed: Vec<String> = map
        .get_all(hyper::header::TRANSFER_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    Some(format!(
        "unsupported transfer-encoding {:?}: only a single chunked coding is accepted",
        listed.join(", ")
    ))
}

/// Names the `connection` header lists as hop-by-hop for this message.
fn connection_listed(map: &HeaderMap) -> Vec<String> {
    map.get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &str, value: &HeaderValue, listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name)
        || (name == "te" && !value.as_bytes().eq_ignore_ascii_case(b"trailers"))
        || listed.iter().any(|l| l == name)
}

/// The request as the filters see it: `:authority :path :method :scheme` first, then the
/// client's headers in wire order (less hop-by-hop ones, `host`, and what Envoy strips from an
/// external request), then what the gateway adds. Returns the headers and the request id
/// (empty when there is none, as with `requestID: Preserve` and no client id).
pub(crate) fn request_headers(
    parts: &Parts,
    client: IpAddr,
    tls: bool,
    settings: &ClientTrafficConfig,
) -> (Headers, String) {
    let scheme = if tls { "https" } else { "http" };
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().as_bytes().to_vec())
        .or_else(|| {
            parts
                .headers
                .get(hyper::header::HOST)
                .map(|h| h.as_bytes().to_vec())
        })
        .unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // Room for the 4 pseudo-headers and the 4 the gateway adds, so the list never regrows.
    let mut headers: Headers = Vec::with_capacity(parts.headers.len() + 8);
    headers.extend([
        (":authority".to_owned(), authority),
        (":path".to_owned(), path.as_bytes().to_vec()),
        (
            ":method".to_owned(),
            parts.method.as_str().as_bytes().to_vec(),
        ),
        (":scheme".to_owned(), scheme.as_bytes().to_vec()),
    ]);
    let trusted_hops = settings.xff_num_trusted_hops();
    let listed = connection_listed(&parts.headers);
    let mut forwarded_for: Option<Vec<u8>> = None;
    let mut forwarded_proto: Option<Vec<u8>> = None;
    for (name, value) in &parts.headers {
        let name = name.as_str();
        // `expect: 100-continue` is answered here (hyper sends the 100 when the body is read),
        // as Envoy does, so it does not go upstream.
        if matches!(name, "host" | "expect")
            || CLIENT_MAY_NOT_SEND.contains(&name)
            || is_hop_by_hop(name, value, &listed)
        {
            continue;
        }
        match name {
            "x-forwarded-for" => {
                // Several x-forwarded-for lines are one comma-separated list.
                let joined = forwarded_for.get_or_insert_with(Vec::new);
                if !joined.is_empty() {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(value.as_bytes());
            }
            // Kept only from a trusted proxy; Envoy overwrites it when no hop is trusted.
            "x-forwarded-proto" => {
                if trusted_hops > 0 && forwarded_proto.is_none() {
                    forwarded_proto = Some(value.as_bytes().to_vec());
                }
            }
            _ => headers.push((name.to_owned(), value.as_bytes().to_vec())),
        }
    }
    // The trusted client address: with N trusted hops, the Nth address from the right of the
    // client's x-forwarded-for, else the peer (Utility::getLastAddressFromXFF).
    let external = forwarded_for
        .as_deref()
        .filter(|_| trusted_hops > 0)
        .and_then(|xff| nth_from_right(xff, trusted_hops - 1))
        .unwrap_or(client);
    let mut forwarded_for = forwarded_for.unwrap_or_default();
    if !forwarded_for.is_empty() {
        forwarded_for.extend_from_slice(b", ");
    }
    // Written in place rather than through a `to_string` copy.
    let _ = write!(forwarded_for, "{client}");
    headers.push(("x-forwarded-for".to_owned(), forwarded_for));
    headers.push((
        "x-forwarded-proto".to_owned(),
        forwarded_proto.unwrap_or_else(|| scheme.as_bytes().to_vec()),
    ));
    let mut address = Vec::with_capacity(39);
    let _ = write!(address, "{external}");
    headers.push((EXTERNAL_ADDRESS.to_owned(), address));
    let request_id = request_id(&mut headers, settings.request_id());
    (headers, request_id)
}

/// Envoy's request-id step for an edge request (`generate_request_id`,
/// `preserve_external_request_id`, set by Envoy Gateway from `headers.requestID`): `Generate`
/// replaces the client's id, `PreserveOrGenerate` keeps it or makes one, and `Preserve` and
/// `Disable` (request ids not generated) leave the headers as the client sent them.
fn request_id(headers: &mut Headers, action: RequestIdAction) -> String {
    let client_id = get(headers, REQUEST_ID).map(|id| String::from_utf8_lossy(id).into_owned());
    let generate = match action {
        RequestIdAction::Generate => true,
        RequestIdAction::PreserveOrGenerate => client_id.is_none(),
        RequestIdAction::Preserve | RequestIdAction::Disable => false,
    };
    if !generate {
        return client_id.unwrap_or_default();
    }
    // Encoded on the stack: `to_string` would go through the formatter.
    let mut buffer = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    set(headers, REQUEST_ID, id.as_bytes());
    id.to_owned()
}

/// The address `skip` places from the right of an x-forwarded-for list, if it parses.
fn nth_from_right(xff: &[u8], skip: u32) -> Option<IpAddr> {
    let text = std::str::from_utf8(xff).ok()?;
    let entry = text.rsplit(',').nth(usize::try_from(skip).ok()?)?;
    entry.trim().parse().ok()
}

/// A response as the filters see it: `:status` first, then its headers less hop-by-hop ones.
pub(crate) fn response_headers(status: StatusCode, map: &HeaderMap) -> Headers {
    let listed = connection_listed(map);
    // Sized up front: `extend` through a filter cannot know the length and regrows.
    let mut headers = Vec::with_capacity(map.len() + 1);
    headers.push((":status".to_owned(), status.as_str().as_bytes().to_vec()));
    headers.extend(
        map.iter()
            .filter(|(name, value)| !is_hop_by_hop(name.as_str(), value, &listed))
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec())),
    );
    headers
}

/// Whether a request is gRPC, as Envoy's `Grpc::Common::isGrpcRequestHeaders` decides it:
/// `content-type` is `application/grpc`, or that followed by `+` or `;`.
pub(crate) fn is_grpc(headers: &Headers) -> bool {
    get(headers, "content-type").is_some_and(|value| {
        value
            .strip_prefix(b"application/grpc")
            .is_some_and(|rest| rest.is_empty() || rest[0] == b'+' || rest[0] == b';')
    })
}

/// A local reply as Envoy sends it to a gRPC client (`source/common/http/utility.cc`,
/// `Utility::prepareLocalReply`/`encodeLocalReply`): HTTP 200 trailers-only, `content-type:
/// application/grpc`, `grpc-status` (the given one, else the HTTP status mapped by
/// `Grpc::Utility::httpToGrpcStatus`) unless the reply already has one, and the body, less a
/// trailing newline and percent-encoded, as `grpc-message`; no body and no `content-length`.
pub(crate) fn grpc_local_reply(
    mut headers: Headers,
    body: &[u8],
    grpc_status: Option<u32>,
) -> Headers {
    let http_status = get_str(&headers, ":status")
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(500);
    headers.retain(|(n, _)| !matches!(n.as_str(), ":status" | "content-length" | "content-type"));
    headers.insert(0, (":status".into(), b"200".to_vec()));
    headers.push(("content-type".into(), b"application/grpc".to_vec()));
    if get(&headers, "grpc-status").is_none() {
        let status = grpc_status.unwrap_or_else(|| http_to_grpc_status(http_status));
        headers.push(("grpc-status".into(), status.to_string().into_bytes()));
    }
    let message = body.strip_suffix(b"\n").unwrap_or(body);
    if !message.is_empty() {
        headers.push(("grpc-message".into(), percent_encode_grpc(message)));
    }
    headers
}

/// `Grpc::Utility::httpToGrpcStatus` (source/common/grpc/status.cc).
fn http_to_grpc_status(http: u16) -> u32 {
    match http {
        400 => 13,             // Internal
        401 => 16,             // Unauthenticated
        403 => 7,              // PermissionDenied
        404 => 12,             // Unimplemented
        429 | 502..=504 => 14, // Unavailable
        _ => 2,                // Unknown
    }
}

/// `Http::Utility::PercentEncoding::encode` as gRPC needs it: bytes outside printable ASCII,
/// and `%`, become `%XX`.
fn percent_encode_grpc(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for &b in text {
        if (b' '..=b'~').contains(&b) && b != b'%' {
            out.push(b);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The first value of `name` (lower case).
pub(crate) fn get<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// The first value of `name` as text, if it is UTF-8.
pub(crate) fn get_str<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    get(headers, name).and_then(|v| std::str::from_utf8(v).ok())
}

/// Sets `name` to `value`, replacing every earlier value; the entry goes last. The first
/// earlier entry is reused, so setting a header that is there (each request's `x-request-id`)
/// allocates nothing.
pub(crate) fn set(headers: &mut Headers, name: &str, value: &[u8]) {
    let Some(first) = headers.iter().position(|(n, _)| n == name) else {
        headers.push((name.to_owned(), value.to_vec()));
        return;
    };
    let mut entry = headers.remove(first);
    headers.retain(|(n, _)| n != name);
    entry.1.clear();
    entry.1.extend_from_slice(value);
    headers.push(entry);
}

/// Applies a route's `set`/`add`/`remove` mutations, in that order of precedence: removals
/// first, so a `set` of a removed name still lands.
pub(crate) fn apply_mutations(headers: &mut Headers, mutations: &HeaderMutations) {
    for name in &mutations.remove {
        let name = name.to_ascii_lowercase();
        headers.retain(|(n, _)| *n != name);
    }
    for (name, value) in &mutations.set {
        set(headers, &name.to_ascii_lowercase(), value.as_bytes());
    }
    for (name, value) in &mutations.add {
        headers.push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
    }
}

/// The regular (non-pseudo) headers as a hyper map. Entries a filter made invalid are dropped
/// with a warning rather than failing the request, as Envoy drops invalid headers.
pub(crate) fn to_header_map(headers: &Headers) -> HeaderMap {
    header_map(
        headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        headers.len(),
        HeaderValue::from_bytes,
    )
}

/// [`to_header_map`] for a list that is no longer needed: each value's buffer becomes the
/// header value as is, where [`to_header_map`] allocates a copy of every value.
pub(crate) fn into_header_map(headers: Headers) -> HeaderMap {
    let len = headers.len();
    header_map(headers.into_iter(), len, |value| {
        HeaderValue::from_maybe_shared(Bytes::from(value))
    })
}

fn header_map<N: AsRef<str>, V>(
    headers: impl Iterator<Item = (N, V)>,
    len: usize,
    value_of: impl Fn(V) -> Result<HeaderValue, InvalidHeaderValue>,
) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(len);
    for (name, value) in headers {
        let name = name.as_ref();
        if name.starts_with(':') {
            continue;
        }
        match (header_name(name), value_of(value)) {
            (Ok(name), Ok(value)) => {
                map.append(name, value);
            }
            _ => log::warn!("dropping invalid header {name:?}"),
        }
    }
    map
}

/// A list entry's name for hyper. The custom names the gateway adds to every request are
/// static: `HeaderName::from_bytes` allocates a copy of any name that is not a standard one.
fn header_name(name: &str) -> Result<HeaderName, InvalidHeaderName> {
    Ok(match name {
        "x-forwarded-for" => HeaderName::from_static("x-forwarded-for"),
        "x-forwarded-proto" => HeaderName::from_static("x-forwarded-proto"),
        EXTERNAL_ADDRESS => HeaderName::from_static(EXTERNAL_ADDRESS),
        REQUEST_ID => HeaderName::from_static(REQUEST_ID),
        _ => return HeaderName::from_bytes(name.as_bytes()),
    })
}

/// The upstream request for a filtered header list: `:method` and `:path` from the pseudo
/// headers, `host` from `:authority`, every other header as is. The body decides the framing,
/// so `content-length` is left to hyper.
pub(crate) fn to_upstream_request(
    headers: &Headers,
    endpoint: SocketAddr,
    body: crate::body::GatewayBody,
) -> Result<hyper::Request<crate::body::GatewayBody>, String> {
    let method = get(headers, ":method").unwrap_or(b"GET");
    let method = hyper::Method::from_bytes(method).map_err(|_| "invalid :method".to_owned())?;
    let path = get_str(headers, ":path").unwrap_or("/");
    let uri = upstream_uri(endpoint, path).ok_or_else(|| format!("invalid :path {path:?}"))?;
    let mut map = to_header_map(headers);
    map.remove(hyper::header::CONTENT_LENGTH);
    // HTTP/1.1 needs a host: the client's authority, else the endpoint itself.
    let authority = get(headers, ":authority").filter(|a| !a.is_empty());
    let host = match authority {
        Some(authority) => {
            HeaderValue::from_bytes(authority).map_err(|_| "invalid :authority".to_owned())?
        }
        None => HeaderValue::from_str(&endpoint.to_string()).map_err(|e| e.to_string())?,
    };
    map.insert(hyper::header::HOST, host);
    let mut request = hyper::Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = map;
    Ok(request)
}

/// `http://{endpoint}{path}`, written into one buffer of the exact size that the URI then
/// keeps: `format!` and `parse` built the text and then copied it.
fn upstream_uri(endpoint: SocketAddr, path: &str) -> Option<Uri> {
    // The longest socket address text, eight full IPv6 groups with a scope id, has 58 bytes.
    let mut address = [0u8; 64];
    let len = {
        let mut cursor = std::io::Cursor::new(&mut address[..]);
        write!(cursor, "{endpoint}").ok()?;
        usize::try_from(cursor.position()).ok()?
    };
    let address = &address[..len];
    let mut uri = Vec::with_capacity("http://".len() + address.len() + path.len());
    uri.extend_from_slice(b"http://");
    uri.extend_from_slice(address);
    uri.extend_from_slice(path.as_bytes());
    Uri::from_maybe_shared(Bytes::from(uri)).ok()
}

/// The `:status` of a response header list, 502 when a filter made it unreadable.
pub(crate) fn status_of(headers: &Headers) -> StatusCode {
    get_str(headers, ":status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: hyper::Request<()>) -> Parts {
        request.into_parts().0
    }

    fn names(headers: &Headers) -> Vec<&str> {
        headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn request_gets_pseudo_headers_first_and_envoy_additions() {
        let request = hyper::Request::post("/v1/models/m:predict?x=1")
            .header("host", "gw.local")
            .header("x-custom", "kept")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "dropped")
            .header("te", "gzip")
            .header("x-forwarded-proto", "spoofed")
            .body(())
            .unwrap();
        let (headers, id) = request_headers(
            &parts(request),
            "10.0.0.7".parse().unwrap(),
            false,
            &ClientTrafficConfig::default(),
        );
        assert_eq!(
            names(&headers),
            [
                ":authority",
                ":path",
                ":method",
                ":scheme",
                "x-custom",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-envoy-external-address",
                "x-request-id"
            ]
        );
        assert_eq!(
            get_str(&headers, "x-envoy-external-address"),
            Some("10.0.0.7")
        );
        assert_eq!(get_str(&headers, ":authority"), Some("gw.local"));
        assert_eq!(get_str(&headers, ":path"), Some("/v1/models/m:predict?x=1"));
        assert_eq!(get_str(&headers, "x-forwarded-for"), Some("10.0.0.7"));
        assert_eq!(get_str(&headers, "x-forwarded-proto"), Some("http"));
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        assert_eq!(get_str(&headers, REQUEST_ID), Some(id.as_str()));
    }

    fn with_request_id(action: RequestIdAction) -> ClientTrafficConfig {
        serde_json::from_value(serde_json::json!({"headers": {"requestID": action}})).unwrap()
    }

    // conn_manager_utility.cc `mutateRequestHeaders`: with no trusted hop Envoy appends the
    // peer to x-forwarded-for, overwrites x-forwarded-proto, and replaces the client's
    // request id on an edge request (Envoy Gateway's default `requestID: Generate`).
    #[test]
    fn forwarded_for_is_extended_and_a_client_request_id_replaced_by_default() {
        let request = hyper::Request::get("/")
            .header("x-request-id", "abc")
            .header("x-forwarded-for", "1.1.1.1")
            .header("x-forwarded-for", "2.2.2.2")
            .header("x-forwarded-proto", "https")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let peer = "10.0.0.7".parse().unwrap();
        let (headers, id) = request_headers(
            &parts(request),
            peer,
            false,
            &ClientTrafficConfig::default(),
        );
        assert_ne!(id, "abc");
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        assert_eq!(get_str(&headers, REQUEST_ID), Some(id.as_str()));
        assert_eq!(headers.iter().filter(|(n, _)| n == REQUEST_ID).count(), 1);
        assert_eq!(
            get_str(&headers, "x-forwarded-for"),
            Some("1.1.1.1, 2.2.2.2, 10.0.0.7")
        );
        assert_eq!(get_str(&headers, "x-forwarded-proto"), Some("http"));
        assert_eq!(
            get_str(&headers, "x-envoy-external-address"),
            Some("10.0.0.7")
        );
        assert_eq!(get_str(&headers, "te"), Some("trailers"));
    }

    // Envoy Gateway's ClientTrafficPolicy `headers.requestID` (listener.go sets
    // `generate_request_id` and `preserve_external_request_id` from it).
    #[test]
    fn request_id_follows_the_client_traffic_policy_setting() {
        let peer = "10.0.0.7".parse().unwrap();
        let with_id = || {
            hyper::Request::get("/")
                .header("x-request-id", "client-42")
                .body(())
                .unwrap()
        };
        let without_id = || hyper::Request::get("/").body(()).unwrap();
        for action in [
            RequestIdAction::PreserveOrGenerate,
            RequestIdAction::Preserve,
            RequestIdAction::Disable,
        ] {
            let (headers, id) =
                request_headers(&parts(with_id()), peer, false, &with_request_id(action));
            assert_eq!(
                (id.as_str(), get_str(&headers, REQUEST_ID)),
                ("client-42", Some("client-42")),
                "{action:?}"
            );
        }
        let (_, id) = request_headers(
            &parts(without_id()),
            peer,
            false,
            &with_request_id(RequestIdAction::PreserveOrGenerate),
        );
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        for action in [RequestIdAction::Preserve, RequestIdAction::Disable] {
            let (headers, id) =
                request_headers(&parts(without_id()), peer, false, &with_request_id(action));
            assert_eq!(
                (id.as_str(), get(&headers, REQUEST_ID)),
                ("", None),
                "{action:?}"
            );
        }
    }

    // `cleanInternalHeaders` on an external edge request, `x-envoy-internal` always, and XFCC
    // under Envoy Gateway's default Sanitize mode; `x-envoy-external-address` is Envoy's own.
    #[test]
    fn internal_headers_from_a_client_are_removed() {
        let mut request = hyper::Request::get("/");
        for name in CLIENT_MAY_NOT_SEND {
            request = request.header(name, "from-client");
        }
        let request = request.header("x-envoy-custom", "kept").body(()).unwrap();
        let (headers, _) = request_headers(
            &parts(request),
            "10.0.0.7".parse().unwrap(),
            false,
            &ClientTrafficConfig::default(),
        );
        for name in CLIENT_MAY_NOT_SEND {
            assert!(
                headers
                    .iter()
                    .all(|(n, v)| n != name || v != b"from-client"),
                "{name} passed through"
            );
        }
        assert_eq!(get_str(&headers, "x-envoy-internal"), None);
        assert_eq!(
            get_str(&headers, "x-envoy-external-address"),
            Some("10.0.0.7")
        );
        assert_eq!(get_str(&headers, "x-envoy-custom"), Some("kept"));
    }

    // `xff_num_trusted_hops` (ClientTrafficPolicy `clientIPDetection.xForwardedFor
    // .numTrustedHops`): the client address is that many places from the right of the list
    // the trusted proxies built, and their x-forwarded-proto is kept.
    #[test]
    fn trusted_hops_pick_the_client_address_from_forwarded_for() {
        let settings: ClientTrafficConfig = serde_json::from_value(serde_json::json!({
            "clientIPDetection": {"xForwardedFor": {"numTrustedHops": 2}}
        }))
        .unwrap();
        let request = hyper::Request::get("/")
            .header("x-forwarded-for", "9.9.9.9, 203.0.113.5, 10.1.1.1")
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap();
        let (headers, _) = request_headers(
            &parts(request),
            "10.0.0.7".parse().unwrap(),
            false,
            &settings,
        );
        assert_eq!(
            get_str(&headers, "x-envoy-external-address"),
            Some("203.0.113.5")
        );
        assert_eq!(get_str(&headers, "x-forwarded-proto"), Some("https"));
        assert_eq!(
            get_str(&headers, "x-forwarded-for"),
            Some("9.9.9.9, 203.0.113.5, 10.1.1.1, 10.0.0.7")
        );
    }

    // utility.cc `prepareLocalReply` for a gRPC request, with status.cc `httpToGrpcStatus`.
    #[test]
    fn a_local_reply_to_a_grpc_client_is_trailers_only() {
        let headers: Headers = vec![
            (":status".into(), b"401".to_vec()),
            ("content-type".into(), b"application/json".to_vec()),
            ("content-length".into(), b"30".to_vec()),
            ("www-authenticate".into(), b"Bearer".to_vec()),
        ];
        let grpc = grpc_local_reply(headers, b"{\"error\":\"no \xc3\xa9 100%\"}\n", None);
        assert_eq!(
            grpc,
            [
                (":status".to_owned(), b"200".to_vec()),
                ("www-authenticate".to_owned(), b"Bearer".to_vec()),
                ("content-type".to_owned(), b"application/grpc".to_vec()),
                ("grpc-status".to_owned(), b"16".to_vec()),
                (
                    "grpc-message".to_owned(),
                    b"{\"error\":\"no %C3%A9 100%25\"}".to_vec()
                ),
            ]
        );
        let failed = grpc_local_reply(vec![(":status".into(), b"503".to_vec())], b"", Some(14));
        assert_eq!(get_str(&failed, "grpc-status"), Some("14"));
        assert_eq!(get(&failed, "grpc-message"), None);
        for (http, code) in [
            (400, "13"),
            (403, "7"),
            (404, "12"),
            (429, "14"),
            (500, "2"),
        ] {
            let h = vec![(":status".to_owned(), http.to_string().into_bytes())];
            assert_eq!(
                get_str(&grpc_local_reply(h, b"", None), "grpc-status"),
                Some(code)
            );
        }
        let grpc_type =
            |v: &str| -> Headers { vec![("content-type".into(), v.as_bytes().to_vec())] };
        assert!(is_grpc(&grpc_type("application/grpc")));
        assert!(is_grpc(&grpc_type("application/grpc+proto")));
        assert!(!is_grpc(&grpc_type("application/grpc-web")));
        assert!(!is_grpc(&grpc_type("application/json")));
    }

    #[test]
    fn mutations_remove_then_set_then_add() {
        let mut headers: Headers = vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())];
        let mutations = HeaderMutations {
            set: [("A".to_owned(), "x".to_owned())].into(),
            add: [("b".to_owned(), "3".to_owned())].into(),
            remove: vec!["a".to_owned()],
        };
        apply_mutations(&mut headers, &mutations);
        assert_eq!(
            headers,
            [
                ("b".into(), b"2".to_vec()),
                ("a".into(), b"x".to_vec()),
                ("b".into(), b"3".to_vec())
            ]
        );
    }

    #[test]
    fn set_replaces_every_value_and_moves_the_header_last() {
        let mut headers: Headers = vec![
            ("x-request-id".into(), b"a".to_vec()),
            ("b".into(), b"1".to_vec()),
            ("x-request-id".into(), b"c".to_vec()),
        ];
        set(&mut headers, REQUEST_ID, b"id");
        assert_eq!(
            headers,
            [
                ("b".into(), b"1".to_vec()),
                ("x-request-id".into(), b"id".to_vec())
            ]
        );
        set(&mut headers, "new", b"v");
        assert_eq!(names(&headers), ["b", "x-request-id", "new"]);
    }

    #[test]
    fn header_maps_skip_pseudo_and_invalid_entries_and_keep_repeated_ones() {
        let headers: Headers = vec![
            (":status".into(), b"200".to_vec()),
            ("x-forwarded-for".into(), b"10.0.0.1".to_vec()),
            ("set-cookie".into(), b"a=1".to_vec()),
            ("set-cookie".into(), b"b=2".to_vec()),
            ("bad name".into(), b"x".to_vec()),
            ("x-bad-value".into(), b"a\nb".to_vec()),
            ("x-custom".into(), b"kept".to_vec()),
        ];
        for map in [to_header_map(&headers), into_header_map(headers.clone())] {
            assert_eq!(map.len(), 4);
            assert_eq!(map["x-forwarded-for"], "10.0.0.1");
            assert_eq!(map["x-custom"], "kept");
            let cookies: Vec<_> = map.get_all("set-cookie").iter().collect();
            assert_eq!(cookies, ["a=1", "b=2"]);
        }
    }

    #[test]
    fn upstream_request_targets_the_endpoint_with_the_filtered_path() {
        let headers: Headers = vec![
            (":authority".into(), b"gw.local".to_vec()),
            (":path".into(), b"/v1/models/m:predict?x=1".to_vec()),
            (":method".into(), b"POST".to_vec()),
            ("content-length".into(), b"3".to_vec()),
        ];
        let body = crate::body::ReplayBody::default().boxed();
        let request = to_upstream_request(&headers, "[::1]:8080".parse().unwrap(), body).unwrap();
        assert_eq!(request.uri(), "http://[::1]:8080/v1/models/m:predict?x=1");
        assert_eq!(request.method(), hyper::Method::POST);
        assert_eq!(request.headers()["host"], "gw.local");
        assert!(!request.headers().contains_key("content-length"));
        let longest: SocketAddr =
            "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%4294967295]:65535"
                .parse()
                .unwrap();
        let uri = upstream_uri(longest, "/").unwrap();
        assert_eq!(uri.authority().unwrap().as_str(), longest.to_string());
        assert!(upstream_uri(longest, "/a b").is_none());
    }

    #[test]
    fn only_a_single_chunked_transfer_coding_is_accepted() {
        let with = |values: &[&'static str]| {
            let mut map = HeaderMap::new();
            for v in values {
                map.append("transfer-encoding", HeaderValue::from_static(v));
            }
            unsupported_transfer_coding(&map)
        };
        assert_eq!(with(&[]), None);
        assert_eq!(with(&["chunked"]), None);
        assert_eq!(with(&["Chunked"]), None);
        for refused in [
            &["gzip, chunked"][..],
            &["chunked, chunked"],
            &["identity, chunked"],
            &["identity"],
            &["gzip", "chunked"],
            &["chunked", "chunked"],
        ] {
            let why = with(refused).unwrap_or_default();
            assert!(
                why.starts_with("unsupported transfer-encoding"),
                "{refused:?}: {why}"
            );
        }
        assert_eq!(
            with(&["gzip", "chunked"]).unwrap(),
            "unsupported transfer-encoding \"gzip, chunked\": only a single chunked coding is accepted"
        );
    }

    #[test]
    fn response_drops_hop_by_hop_headers() {
        let mut map = HeaderMap::new();
        map.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        map.insert("x-model", HeaderValue::from_static("iris"));
        let headers = response_headers(StatusCode::OK, &map);
        assert_eq!(names(&headers), [":status", "x-model"]);
        assert_eq!(status_of(&headers), StatusCode::OK);
    }
}
