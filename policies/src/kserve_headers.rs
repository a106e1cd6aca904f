//! The request headers that decide how KServe 0.21 decodes a body, read as it reads them.
//!
//! The body validators check JSON; these checks make sure KServe will read the same bytes as
//! that JSON, or the request is refused before its body is buffered.
//!
//! V1 (`:predict`, `:explain`): `kserve/protocol/dataplane.py` `DataPlane.decode` takes the
//! headers as `dict(request.headers.items())`, so of repeated headers the **last** wins, while
//! a Proxy-Wasm header read gives the first. It then
//! - treats the request as a binary `CloudEvent` when `ce-specversion`, `ce-source`, `ce-type`
//!   and `ce-id` are all present (`cloudevents.sdk.converters.util.has_binary_headers`), and
//!   with `ce-contenttype` crashes on the decoded data (a 500): refused here;
//! - parses JSON only when `content-type` is absent or exactly one of `JSON_HEADERS`
//!   (`application/json`, `application/cloudevents+json`, `application/ld+json`,
//!   `application/octet-stream`); any other value, `application/json; charset=utf-8` included,
//!   hands the model raw bytes (a 500). A JSON media type with at most a UTF-8 charset is
//!   rewritten to the exact type, which also replaces every repeated `content-type`; anything
//!   else is 415.
//!
//! V2 (`infer`): `FastAPI` (`fastapi/routing.py`, `get_request_handler`, strict content type)
//! parses the body as JSON only for `application/json` or `application/*+json` (parameters
//! allowed; the first `content-type` counts); otherwise KServe gets bytes and needs
//! `inference-header-content-length` (the binary extension), which `DataPlane.decode` reads
//! from the same last-wins dict. So a JSON body needs a JSON type, a binary-extension body a
//! non-JSON one, and the length header is rewritten to the value validated.

use crate::request::HeaderSource;

const CONTENT_TYPE: &str = "content-type";
/// The header announcing a V2 binary-extension body.
pub(crate) const BINARY_HEADER: &str = "inference-header-content-length";
/// The attributes `has_binary_headers` requires, all four.
const BINARY_CLOUDEVENT: [&str; 4] = ["ce-specversion", "ce-source", "ce-type", "ce-id"];
/// `kserve.protocol.dataplane.JSON_HEADERS`.
const V1_JSON_TYPES: [&str; 4] = [
    "application/json",
    "application/cloudevents+json",
    "application/ld+json",
    "application/octet-stream",
];

/// A request refused on its headers: status (400 or 415) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) message: String,
}

/// What a body request's headers allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Framing {
    /// A header to set (replacing every copy) so the model server reads what was validated.
    pub(crate) set: Option<(&'static str, String)>,
    /// The V2 binary extension's JSON length, when announced.
    pub(crate) binary_header: Option<String>,
}

/// The headers of a V1 `:predict`/`:explain` request.
pub(crate) fn v1(headers: &dyn HeaderSource) -> Result<Framing, Refusal> {
    if BINARY_CLOUDEVENT
        .iter()
        .all(|name| headers.header(name).is_some())
    {
        return Err(Refusal {
            status: 400,
            message: "ce-specversion: binary-mode CloudEvents (ce-specversion, ce-source, \
                      ce-type and ce-id headers) are not accepted; send a plain JSON body"
                .to_owned(),
        });
    }
    let Some(value) = headers.header(CONTENT_TYPE) else {
        return Ok(Framing::default());
    };
    let media = MediaType::parse(&value);
    match V1_JSON_TYPES.iter().find(|t| **t == media.essence) {
        Some(exact) if media.only_utf8 => Ok(Framing {
            set: Some((CONTENT_TYPE, (*exact).to_owned())),
            binary_header: None,
        }),
        _ => Err(unsupported(&value, "application/json")),
    }
}

/// The headers of a V2 `infer` request.
pub(crate) fn v2(headers: &dyn HeaderSource) -> Result<Framing, Refusal> {
    let json = headers.header(CONTENT_TYPE).map(|value| {
        (
            MediaType::parse(&value).is_fastapi_json(),
            value.into_owned(),
        )
    });
    match headers.header(BINARY_HEADER) {
        Some(length) => match json {
            Some((true, value)) => Err(Refusal {
                status: 415,
                message: format!(
                    "content-type: {value:?} with {BINARY_HEADER}: the model server would parse \
                     the binary tensors as JSON; send application/octet-stream"
                ),
            }),
            _ => Ok(Framing {
                set: Some((BINARY_HEADER, length.clone().into_owned())),
                binary_header: Some(length.into_owned()),
            }),
        },
        None => match json {
            Some((true, _)) => Ok(Framing::default()),
            Some((false, value)) => Err(unsupported(&value, "application/json")),
            None => Err(Refusal {
                status: 415,
                message: "content-type: missing; the model server reads a V2 body as JSON only \
                          with application/json"
                    .to_owned(),
            }),
        },
    }
}

fn unsupported(value: &str, wanted: &str) -> Refusal {
    Refusal {
        status: 415,
        message: format!(
            "content-type: {value:?} is not read as JSON by the model server; send {wanted}"
        ),
    }
}

/// A `content-type` value: its lower-case `type/subtype` and whether its parameters are at
/// most a UTF-8 charset.
struct MediaType {
    essence: String,
    only_utf8: bool,
}

impl MediaType {
    fn parse(value: &str) -> MediaType {
        let mut parts = value.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let only_utf8 = parts.all(|param| {
            let param = param.trim();
            if param.is_empty() {
                return true;
            }
            let Some((name, value)) = param.split_once('=') else {
                return false;
            };
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            name.trim().eq_ignore_ascii_case("charset") && value.eq_ignore_ascii_case("utf-8")
        });
        MediaType { essence, only_utf8 }
    }

    /// `FastAPI`'s test: main type `application`, subtype `json` or ending in `+json` (Python's
    /// `email.message` reads a type without exactly one `/` as `text/plain`).
    fn is_fastapi_json(&self) -> bool {
        let mut halves = self.essence.split('/');
        match (halves.next(), halves.next(), halves.next()) {
            (Some("application"), Some(sub), None) => sub == "json" || sub.ends_with("+json"),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
