//! Tokens minted from each key format verify with the public key jsonwebtoken derives from the
//! same private key; the Python suite checks them again with `PyJWT` (`tests/e2e`).

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Value, json};

use super::*;

const RSA_PKCS1: &[u8] = include_bytes!("../../../policies/tests/keys/rsa_private_pkcs1.der");
const P256_PKCS8: &[u8] = include_bytes!("../../../policies/tests/keys/p256_private_pkcs8.der");
const P384_PKCS8: &[u8] = include_bytes!("../../../policies/tests/keys/p384_private_pkcs8.der");
const ED_PKCS8: &[u8] = include_bytes!("../../../policies/tests/keys/ed25519_private_pkcs8.der");
const ED_PUBLIC_SPKI: &[u8] =
    include_bytes!("../../../policies/tests/keys/ed25519_public_spki.der");
const NOW: u64 = 1_800_000_000;

/// The Ed25519 public key (jsonwebtoken derives no public JWK from an Ed25519 private key): the
/// last 32 bytes of its SPKI form (RFC 8410).
fn ed_public() -> DecodingKey {
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(&ED_PUBLIC_SPKI[ED_PUBLIC_SPKI.len() - 32..]);
    DecodingKey::from_ed_components(&x).unwrap()
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// `modelgate token ARGS` through the real command line; the error as clap prints it.
fn parse_args(list: Vec<String>) -> Result<TokenArgs, String> {
    match crate::cli::parse(std::iter::once("token".to_owned()).chain(list)) {
        Ok(crate::cli::Command::Token(args)) => Ok(args),
        Ok(other) => panic!("not a token command: {other:?}"),
        Err(e) => Err(e.to_string()),
    }
}

fn write(dir: &std::path::Path, name: &str, content: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Mint with `extra` arguments and the key at `key`, and decode the token with `public`.
fn mint_and_verify(key_args: &[&str], public: &DecodingKey, alg: Algorithm) -> (Value, Value) {
    let mut all = args(key_args);
    all.extend(args(&["--claim", "sub=alice", "--claim", "aud=modelgate"]));
    let parsed = parse_args(all).unwrap();
    let token = mint(&parsed, UNIX_EPOCH + Duration::from_secs(NOW)).unwrap();
    let mut validation = Validation::new(alg);
    validation.set_audience(&["modelgate"]);
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<Value>(&token, public, &validation).unwrap();
    (serde_json::to_value(data.header).unwrap(), data.claims)
}

fn public_of(key: &EncodingKey, alg: Algorithm) -> DecodingKey {
    DecodingKey::from_jwk(&Jwk::from_encoding_key(key, alg).unwrap()).unwrap()
}

#[test]
fn signs_with_pem_keys_of_every_family() {
    let dir = tempdir();
    let rsa_public = public_of(&EncodingKey::from_rsa_der(RSA_PKCS1), Algorithm::RS256);
    let rsa = write(
        &dir,
        "rsa.pem",
        pem("RSA PRIVATE KEY", RSA_PKCS1).as_bytes(),
    );
    let (header, claims) = mint_and_verify(&["--key", &rsa], &rsa_public, Algorithm::RS256);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["iat"], NOW);
    assert_eq!(claims["exp"], NOW + 3600, "one hour by default");
    let (header, _) = mint_and_verify(
        &["--key", &rsa, "--alg", "PS384"],
        &rsa_public,
        Algorithm::PS384,
    );
    assert_eq!(header["alg"], "PS384");

    let p256 = write(&dir, "p256.pem", pem("PRIVATE KEY", P256_PKCS8).as_bytes());
    let public = public_of(&EncodingKey::from_ec_der(P256_PKCS8), Algorithm::ES256);
    let (header, _) = mint_and_verify(
        &["--key", &p256, "--kid", "ec-1"],
        &public,
        Algorithm::ES256,
    );
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("ES256"), Some("ec-1"))
    );

    let p384 = write(&dir, "p384.pem", pem("PRIVATE KEY", P384_PKCS8).as_bytes());
    let public = public_of(&EncodingKey::from_ec_der(P384_PKCS8), Algorithm::ES384);
    assert_eq!(
        mint_and_verify(&["--key", &p384], &public, Algorithm::ES384).0["alg"],
        "ES384"
    );

    let ed = write(&dir, "ed.pem", pem("PRIVATE KEY", ED_PKCS8).as_bytes());
    let public = ed_public();
    assert_eq!(
        mint_and_verify(&["--key", &ed], &public, Algorithm::EdDSA).0["alg"],
        "EdDSA"
    );
}

#[test]
fn signs_with_an_hmac_secret_file_as_raw_bytes() {
    let dir = tempdir();
    let secret = b"an-hmac-secret-of-at-least-32-bytes!\n";
    let file = write(&dir, "secret", secret);
    let public = DecodingKey::from_secret(secret);
    let (header, _) = mint_and_verify(
        &["--hmac-secret-file", &file, "--alg", "HS384"],
        &public,
        Algorithm::HS384,
    );
    assert_eq!(header["alg"], "HS384");
}

#[test]
fn signs_with_a_private_jwk_and_takes_its_kid() {
    let dir = tempdir();
    // The Ed25519 seed is the last 32 bytes of its PKCS#8 form (RFC 8410).
    let seed = &ED_PKCS8[ED_PKCS8.len() - 32..];
    let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "kid": "ed-1",
                      "d": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed), "x": "unused" });
    let file = write(&dir, "ed.jwk", jwk.to_string().as_bytes());
    let public = ed_public();
    let (header, _) = mint_and_verify(&["--key", &file], &public, Algorithm::EdDSA);
    assert_eq!(header["kid"], "ed-1");
}

#[test]
fn claims_merge_in_order_and_keep_a_given_exp() {
    let parsed = parse_args(args(&[
        "--hmac-secret-file",
        "unused",
        "--claims",
        r#"{"sub":"bob","scope":"a b","exp":5}"#,
        "--claim",
        "sub=alice",
        "--claim",
        "n=42",
        "--claim",
        "list=[1,2]",
        "--expires-in",
        "15m",
    ]))
    .unwrap();
    let minted = super::claims(
        &parsed.claims,
        parsed.expires_in,
        UNIX_EPOCH + Duration::from_secs(NOW),
    )
    .unwrap();
    assert_eq!(
        Value::Object(minted),
        json!({
            "sub": "alice", "scope": "a b", "exp": 5, "n": 42, "list": [1, 2], "iat": NOW
        })
    );
    let parsed = parse_args(args(&["--hmac-secret-file", "x", "--expires-in", "15m"])).unwrap();
    let minted = super::claims(
        &parsed.claims,
        parsed.expires_in,
        UNIX_EPOCH + Duration::from_secs(NOW),
    )
    .unwrap();
    assert_eq!(minted["exp"], NOW + 900);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let error = |list: &[&str]| parse_args(args(list)).unwrap_err();
    assert!(error(&["--claim", "a=b"]).starts_with(
        "error: one of --key and --hmac-secret-file is required\n\nUsage: modelgate token "
    ));
    assert!(
        error(&["--claim", "ab"])
            .starts_with("error: invalid value 'ab' for '--claim <NAME=VALUE>': not NAME=VALUE"),
        "{}",
        error(&["--claim", "ab"])
    );
    assert!(
        error(&["--key"]).starts_with("error: a value is required for '--key <FILE>'"),
        "{}",
        error(&["--key"])
    );
    assert!(
        error(&["--key", "a", "--hmac-secret-file", "b"]).starts_with(
            "error: the argument '--key <FILE>' cannot be used with '--hmac-secret-file <FILE>'"
        )
    );
    assert!(
        error(&["--key", "a", "--expires-in", "soon"])
            .starts_with("error: invalid value 'soon' for '--expires-in <DURATION>': "),
        "{}",
        error(&["--key", "a", "--expires-in", "soon"])
    );

    let dir = tempdir();
    let rsa = write(
        &dir,
        "rsa.pem",
        pem("RSA PRIVATE KEY", RSA_PKCS1).as_bytes(),
    );
    let wrong_alg = parse_args(args(&["--key", &rsa, "--alg", "ES256"])).unwrap();
    assert_eq!(
        mint(&wrong_alg, UNIX_EPOCH).unwrap_err(),
        "--alg: this key cannot sign ES256"
    );
    let public = write(&dir, "pub.pem", pem("PUBLIC KEY", b"\x30\x00").as_bytes());
    let error = mint(&parse_args(args(&["--key", &public])).unwrap(), UNIX_EPOCH).unwrap_err();
    assert!(
        error.ends_with("a PEM \"PUBLIC KEY\", not a private key"),
        "{error}"
    );
    let secret = write(&dir, "secret.txt", b"just some text");
    let error = mint(&parse_args(args(&["--key", &secret])).unwrap(), UNIX_EPOCH).unwrap_err();
    assert!(error.contains("--hmac-secret-file"), "{error}");
    let jwk = write(
        &dir,
        "pub.jwk",
        br#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#,
    );
    let error = mint(&parse_args(args(&["--key", &jwk])).unwrap(), UNIX_EPOCH).unwrap_err();
    assert!(
        error.ends_with("the JWK has no \"d\" (a private key is needed)"),
        "{error}"
    );
}

/// A fresh directory under the target dir's temp (no tempfile dependency).
fn tempdir() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("modelgate-token-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
