//! The `service` argument of `proxy_grpc_call`/`proxy_grpc_stream`: a serialized
//! `envoy.config.core.v3.GrpcService`, or else a bare cluster name, read as Envoy's
//! `Context::grpcCall` reads it (`source/extensions/common/wasm/context.cc`): the bytes are
//! first parsed as the proto (`ParseFromString`), and only when that fails are they a
//! cluster name (the Rust SDK's `dispatch_grpc_call` passes one).
//!
//! The reader is protobuf's wire format for the fields Envoy's Envoy-gRPC client uses
//! (`api/envoy/config/core/v3/grpc_service.proto`): `envoy_grpc` (1) with `cluster_name` (1)
//! and `authority` (2), `google_grpc` (2), and `initial_metadata` (5) as `HeaderValue`s
//! (`key` 1, `value` 2, `raw_value` 3). Every other field is skipped as an unknown field is,
//! so whether the bytes parse at all is decided as protobuf decides it.

/// What the runtime needs of a `GrpcService`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct GrpcService {
    /// `envoy_grpc`, if that is the target (`google_grpc` sets `google` instead).
    pub(crate) envoy_grpc: Option<EnvoyGrpc>,
    pub(crate) google: bool,
    /// Service-wide metadata, added to every call's headers.
    pub(crate) initial_metadata: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct EnvoyGrpc {
    pub(crate) cluster_name: String,
    /// The `:authority` of the calls; empty means the cluster name.
    pub(crate) authority: String,
}

/// How the `service` argument reads.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ServiceArg {
    Proto(GrpcService),
    /// Not a valid proto: the bytes name a cluster (if they are text).
    ClusterName(String),
}

pub(crate) fn read(bytes: &[u8]) -> ServiceArg {
    match parse_service(bytes) {
        Some(service) => ServiceArg::Proto(service),
        None => ServiceArg::ClusterName(String::from_utf8_lossy(bytes).into_owned()),
    }
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// One field of a message: its number, and the value of a length-delimited one.
struct Field<'a> {
    number: u64,
    bytes: Option<&'a [u8]>,
}

/// What comes next in a message.
enum Next<'a> {
    Field(Field<'a>),
    End,
}

/// Cursor over protobuf wire format; `None` from any method is a parse failure.
struct Wire<'a> {
    rest: &'a [u8],
}

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let (&byte, rest) = self.rest.split_first()?;
            self.rest = rest;
            if shift < 64 {
                value |= u64::from(byte & 0x7f) << shift;
            }
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None // more than ten bytes
    }

    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok()?;
        if n > self.rest.len() {
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    /// The next field, with unknown groups skipped whole.
    fn next(&mut self) -> Option<Next<'a>> {
        if self.rest.is_empty() {
            return Some(Next::End);
        }
        let tag = self.varint()?;
        let number = tag >> 3;
        let wire_type = u8::try_from(tag & 7).ok()?;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return None;
        }
        let bytes = match wire_type {
            VARINT => {
                self.varint()?;
                None
            }
            FIXED64 => {
                self.take(8)?;
                None
            }
            LEN => {
                let len = self.varint()?;
                Some(self.take(len)?)
            }
            START_GROUP => {
                self.skip_group(number)?;
                None
            }
            FIXED32 => {
                self.take(4)?;
                None
            }
            // An end-group tag outside a group, and wire types 6 and 7, fail the parse.
            _ => return None,
        };
        Some(Next::Field(Field { number, bytes }))
    }

    /// Skip to the end-group tag of group `number` (nested groups included).
    fn skip_group(&mut self, number: u64) -> Option<()> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let tag = self.varint()?;
            let (inner, wire_type) = (tag >> 3, tag & 7);
            if inner == 0 {
                return None;
            }
            match u8::try_from(wire_type).ok()? {
                VARINT => {
                    self.varint()?;
                }
                FIXED64 => {
                    self.take(8)?;
                }
                LEN => {
                    let len = self.varint()?;
                    self.take(len)?;
                }
                START_GROUP => self.skip_group(inner)?,
                END_GROUP if inner == number => return Some(()),
                FIXED32 => {
                    self.take(4)?;
                }
                _ => return None,
            }
        }
    }
}

/// Every field of a message in order, or `None` if the bytes are not a valid message. A
/// known field number with another wire type than its own is an unknown field to protobuf's
/// C++ parser, so callers only read fields that came length-delimited.
fn fields(bytes: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut wire = Wire { rest: bytes };
    let mut out = Vec::new();
    while let Next::Field(field) = wire.next()? {
        out.push(field);
    }
    Some(out)
}

/// A proto3 `string`: protobuf refuses a message whose string field is not UTF-8.
fn string(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

fn parse_service(bytes: &[u8]) -> Option<GrpcService> {
    let mut service = GrpcService::default();
    for field in fields(bytes)? {
        let Some(value) = field.bytes else { continue };
        match field.number {
            // Singular message fields merge when repeated, as protobuf merges them.
            1 => {
                let grpc = service.envoy_grpc.get_or_insert_with(EnvoyGrpc::default);
                parse_envoy_grpc(value, grpc)?;
                service.google = false;
            }
            2 => {
                fields(value)?;
                service.envoy_grpc = None;
                service.google = true;
            }
            5 => service.initial_metadata.push(parse_header_value(value)?),
            // `timeout` and `retry_policy` are messages too: checked for wire format only.
            3 | 6 => {
                fields(value)?;
            }
            _ => {}
        }
    }
    Some(service)
}

fn parse_envoy_grpc(bytes: &[u8], grpc: &mut EnvoyGrpc) -> Option<()> {
    for field in fields(bytes)? {
        match (field.number, field.bytes) {
            (1, Some(value)) => grpc.cluster_name = string(value)?,
            (2, Some(value)) => grpc.authority = string(value)?,
            _ => {}
        }
    }
    Some(())
}

/// `HeaderValue`: `key`, and `value` (a string) or `raw_value` (bytes).
fn parse_header_value(bytes: &[u8]) -> Option<(String, Vec<u8>)> {
    let (mut key, mut value) = (String::new(), Vec::new());
    for field in fields(bytes)? {
        match (field.number, field.bytes) {
            (1, Some(v)) => key = string(v)?,
            (2, Some(v)) => value = string(v)?.into_bytes(),
            (3, Some(v)) => value = v.to_vec(),
            _ => {}
        }
    }
    Some((key.to_ascii_lowercase(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(number: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | LEN, u8::try_from(value.len()).unwrap()];
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn an_envoy_grpc_service_names_its_cluster_authority_and_metadata() {
        let mut envoy_grpc = len_field(1, b"kserve-grpc");
        envoy_grpc.extend(len_field(2, b"models.example"));
        let mut bytes = len_field(1, &envoy_grpc);
        let mut header = len_field(1, b"X-Tenant");
        header.extend(len_field(2, b"a"));
        bytes.extend(len_field(5, &header));
        // timeout (3): a Duration of 2 seconds.
        bytes.extend(len_field(3, &[0x08, 0x02]));
        let ServiceArg::Proto(service) = read(&bytes) else {
            panic!("a GrpcService")
        };
        let grpc = service.envoy_grpc.unwrap();
        assert_eq!(grpc.cluster_name, "kserve-grpc");
        assert_eq!(grpc.authority, "models.example");
        assert_eq!(
            service.initial_metadata,
            vec![("x-tenant".into(), b"a".to_vec())]
        );
    }

    #[test]
    fn cluster_names_the_sdks_pass_do_not_parse_as_a_proto() {
        // 'k' (0x6b) opens group 13, which never closes; 'o' (0x6f) is wire type 7.
        for name in ["kserve-grpc", "outbound|9000||grpc", "grpc_cluster"] {
            assert_eq!(
                read(name.as_bytes()),
                ServiceArg::ClusterName(name.into()),
                "{name}"
            );
        }
    }

    #[test]
    fn bytes_that_are_a_valid_message_are_a_proto_even_without_a_target() {
        // Empty input is an empty message, as for protobuf's ParseFromString.
        assert_eq!(read(b""), ServiceArg::Proto(GrpcService::default()));
        // Field 1 as a varint is an unknown field, not envoy_grpc.
        assert_eq!(
            read(&[0x08, 0x01]),
            ServiceArg::Proto(GrpcService::default())
        );
        // A group that closes is skipped whole.
        let group = [0x1b, 0x08, 0x01, 0x1c];
        assert_eq!(read(&group), ServiceArg::Proto(GrpcService::default()));
    }

    #[test]
    fn a_cluster_name_that_is_not_utf8_fails_the_parse() {
        let bytes = len_field(1, &len_field(1, &[0xff, 0xfe]));
        assert!(matches!(read(&bytes), ServiceArg::ClusterName(_)));
    }
}
