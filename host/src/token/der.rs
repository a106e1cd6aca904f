//! Just enough DER and PEM to hand jsonwebtoken the key encodings it takes (PKCS#1 for RSA,
//! PKCS#8 for EC and Ed25519) from the ones people have (RFC 7468 PEM, SEC1 EC keys, JWKs).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
/// `[0] EXPLICIT`, the parameters of a SEC1 key.
const CONTEXT_0: u8 = 0xa0;

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// The curves jsonwebtoken signs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Curve {
    P256,
    P384,
}

impl Curve {
    fn oid(self) -> &'static [u8] {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
        }
    }

    fn scalar_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    fn from_oid(oid: &[u8]) -> Result<Curve, String> {
        match oid {
            OID_P256 => Ok(Curve::P256),
            OID_P384 => Ok(Curve::P384),
            _ => Err("an EC key on a curve other than P-256 and P-384".to_owned()),
        }
    }
}

/// What a PKCS#8 `PrivateKeyInfo` holds.
pub(super) enum Pkcs8Kind {
    /// RSA, with the PKCS#1 key inside.
    Rsa(Vec<u8>),
    Ec(Curve),
    Ed25519,
}

/// The label and bytes of the first PEM block (RFC 7468).
pub(super) fn pem_decode(text: &str) -> Result<(String, Vec<u8>), String> {
    let mut lines = text.lines().map(str::trim);
    let label = lines
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or("no PEM BEGIN line")?
        .to_owned();
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    for line in lines.by_ref() {
        if line == end {
            let der = STANDARD
                .decode(&body)
                .map_err(|e| format!("invalid PEM base64: {e}"))?;
            return Ok((label, der));
        }
        body.push_str(line);
    }
    Err(format!("no {end:?} line"))
}

/// A JWK member (base64url, padding tolerated).
pub(super) fn base64url(text: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| format!("invalid base64url: {e}"))
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(u8::try_from(len).unwrap_or(0));
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | u8::try_from(bytes.len() - skip).unwrap_or(0));
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A non-negative INTEGER from big-endian bytes.
fn unsigned(bytes: &[u8]) -> Vec<u8> {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let mut content = bytes[skip..].to_vec();
    if content.first().is_none_or(|b| b & 0x80 != 0) {
        content.insert(0, 0);
    }
    tlv(INTEGER, &content)
}

/// One element: its tag, content and what follows it.
fn read_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let short = || "truncated DER".to_owned();
    let (&tag, rest) = input.split_first().ok_or_else(short)?;
    let (&first, rest) = rest.split_first().ok_or_else(short)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("unsupported DER length".to_owned());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(short());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn expect<'a>(input: &'a [u8], want: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let (tag, content, rest) = read_tlv(input)?;
    if tag != want {
        return Err(format!("malformed key: expected {what}"));
    }
    Ok((content, rest))
}

/// A PKCS#1 `RSAPrivateKey` from the JWK members n, e, d, p, q, dp, dq, qi (RFC 8017 A.1.2).
pub(super) fn pkcs1_rsa(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut content = unsigned(&[0]);
    for part in parts {
        content.extend(unsigned(part));
    }
    tlv(SEQUENCE, &content)
}

/// A SEC1 `ECPrivateKey` (RFC 5915) holding the scalar `d` and the curve.
pub(super) fn sec1_ec(curve: Curve, d: &[u8]) -> Vec<u8> {
    let mut scalar = vec![0; curve.scalar_len().saturating_sub(d.len())];
    scalar.extend_from_slice(d);
    let mut content = unsigned(&[1]);
    content.extend(tlv(OCTET_STRING, &scalar));
    content.extend(tlv(CONTEXT_0, &tlv(OID, curve.oid())));
    tlv(SEQUENCE, &content)
}

/// The curve a SEC1 key names in its parameters.
pub(super) fn sec1_curve(sec1: &[u8]) -> Result<Curve, String> {
    let (mut items, _) = expect(sec1, SEQUENCE, "a SEC1 sequence")?;
    while !items.is_empty() {
        let (tag, content, rest) = read_tlv(items)?;
        if tag == CONTEXT_0 {
            let (oid, _) = expect(content, OID, "a curve OID")?;
            return Curve::from_oid(oid);
        }
        items = rest;
    }
    Err("an EC key without curve parameters".to_owned())
}

/// A PKCS#8 `PrivateKeyInfo` (RFC 5958) around a SEC1 key.
pub(super) fn pkcs8_ec(curve: Curve, sec1: &[u8]) -> Vec<u8> {
    let mut algorithm = tlv(OID, OID_EC_PUBLIC_KEY);
    algorithm.extend(tlv(OID, curve.oid()));
    let mut content = unsigned(&[0]);
    content.extend(tlv(SEQUENCE, &algorithm));
    content.extend(tlv(OCTET_STRING, sec1));
    tlv(SEQUENCE, &content)
}

/// A PKCS#8 `PrivateKeyInfo` for an Ed25519 seed (RFC 8410 section 7).
pub(super) fn pkcs8_ed25519(seed: &[u8]) -> Result<Vec<u8>, String> {
    if seed.len() != 32 {
        return Err(format!("an Ed25519 key is 32 bytes, not {}", seed.len()));
    }
    let mut content = unsigned(&[0]);
    content.extend(tlv(SEQUENCE, &tlv(OID, OID_ED25519)));
    content.extend(tlv(OCTET_STRING, &tlv(OCTET_STRING, seed)));
    Ok(tlv(SEQUENCE, &content))
}

/// What key a PKCS#8 `PrivateKeyInfo` holds.
pub(super) fn pkcs8_kind(der: &[u8]) -> Result<Pkcs8Kind, String> {
    let (info, _) = expect(der, SEQUENCE, "a PKCS#8 sequence")?;
    let (_version, rest) = expect(info, INTEGER, "a PKCS#8 version")?;
    let (algorithm, rest) = expect(rest, SEQUENCE, "an algorithm identifier")?;
    let (key, _) = expect(rest, OCTET_STRING, "the private key")?;
    let (oid, params) = expect(algorithm, OID, "an algorithm OID")?;
    match oid {
        OID_RSA => Ok(Pkcs8Kind::Rsa(key.to_vec())),
        OID_EC_PUBLIC_KEY => {
            let (curve, _) = expect(params, OID, "a curve OID")?;
            Ok(Pkcs8Kind::Ec(Curve::from_oid(curve)?))
        }
        OID_ED25519 => Ok(Pkcs8Kind::Ed25519),
        _ => Err("a PKCS#8 key of a type other than RSA, EC and Ed25519".to_owned()),
    }
}
