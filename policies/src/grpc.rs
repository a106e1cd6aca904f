//! KServe's gRPC inference service, `inference.GRPCInferenceService` (the Open Inference
//! Protocol over gRPC, `grpc_predict_v2.proto` in KServe's Python package): which method a path
//! calls, and which model a request message names.
//!
//! The model is not in the path, so it is read from the request body: every method of the
//! service is unary, the body is one gRPC length-prefixed message, and the model name is field
//! 1 of it (`model_name` in `ModelInferRequest` and the repository requests, `name` in
//! `ModelReadyRequest` and `ModelMetadataRequest`). The message is read as KServe's server reads
//! it (protobuf's `upb` parser, behind `grpcio`): the last occurrence of the field wins, a field
//! 1 of another wire type is an unknown field and skipped, and a string that is not UTF-8 makes
//! the whole message invalid. Only the top level is walked; nested messages stay opaque.

use crate::routing::Endpoint;

/// The service's path prefix (`/<package>.<service>/<method>`).
const SERVICE: &str = "/inference.GRPCInferenceService/";

/// A method of the service, by what the policies must do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// `ServerLive`, `ServerReady`, `ServerMetadata`: about the server, no model.
    Server,
    /// A method whose request names a model, and the REST endpoint it stands for.
    Model(Endpoint),
    /// Any other path under the service: the server answers `UNIMPLEMENTED`.
    Unknown,
}

/// The method `path` calls, if it is under the service. gRPC servers match the whole path, so
/// a query string makes it an unknown method too.
pub(crate) fn method(path: &str) -> Option<Method> {
    let name = path.strip_prefix(SERVICE)?;
    Some(match name {
        "ServerLive" | "ServerReady" | "ServerMetadata" => Method::Server,
        "ModelReady" => Method::Model(Endpoint::Ready),
        "ModelMetadata" => Method::Model(Endpoint::Metadata),
        "ModelInfer" => Method::Model(Endpoint::Infer),
        "RepositoryModelLoad" | "RepositoryModelUnload" => Method::Model(Endpoint::Repository),
        _ => Method::Unknown,
    })
}

/// The model a unary call's body names; the error is the 400 message.
pub(crate) fn model_name(body: &[u8]) -> Result<&str, String> {
    let message = single_message(body)?;
    let mut found: Option<&[u8]> = None;
    let mut rest = message;
    while !rest.is_empty() {
        let key = varint(&mut rest).ok_or("gRPC message: truncated field key")?;
        let field = key >> 3;
        if field == 0 {
            return Err("gRPC message: field number 0".to_owned());
        }
        match key & 7 {
            0 => {
                varint(&mut rest).ok_or("gRPC message: truncated varint")?;
            }
            1 => rest = skip(rest, 8)?,
            2 => {
                let len = varint(&mut rest).ok_or("gRPC message: truncated length")?;
                let len = usize::try_from(len).map_err(|_| "gRPC message: length too large")?;
                let value = rest
                    .get(..len)
                    .ok_or("gRPC message: a field runs past the end")?;
                if field == 1 {
                    found = Some(value);
                }
                rest = &rest[len..];
            }
            5 => rest = skip(rest, 4)?,
            // Groups (3, 4) are deprecated and no KServe client sends them; 6 and 7 do not exist.
            wire => return Err(format!("gRPC message: unsupported wire type {wire}")),
        }
    }
    let name = found.unwrap_or_default();
    std::str::from_utf8(name).map_err(|_| "gRPC message: the model name is not UTF-8".to_owned())
}

/// The one message of a unary call: a 5-byte prefix (compressed flag, big-endian length) and
/// that many bytes, nothing after.
fn single_message(body: &[u8]) -> Result<&[u8], String> {
    let Some((prefix, rest)) = body.split_first_chunk::<5>() else {
        return Err("gRPC body: no complete message prefix".to_owned());
    };
    if prefix[0] & 1 != 0 {
        return Err(
            "gRPC body: compressed messages cannot be read here; send the request uncompressed"
                .to_owned(),
        );
    }
    if prefix[0] != 0 {
        return Err(format!("gRPC body: invalid flags {:#04x}", prefix[0]));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    let len = usize::try_from(len).map_err(|_| "gRPC body: message too large")?;
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Err("gRPC body: the message is truncated".to_owned()),
        std::cmp::Ordering::Greater => {
            Err("gRPC body: more than one message for a unary method".to_owned())
        }
        std::cmp::Ordering::Equal => Ok(rest),
    }
}

fn skip(rest: &[u8], n: usize) -> Result<&[u8], String> {
    rest.get(n..)
        .ok_or_else(|| "gRPC message: a fixed-size field runs past the end".to_owned())
}

/// A base-128 varint of at most ten bytes, as protobuf writes them.
fn varint(rest: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in rest.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests;
