//! Criterion benchmarks of the policy hot paths (native):
//! - `hot_path`: route + cached JWT + rate limit + validation of a one-instance V1 body;
//! - `cold_rs256`: a request whose RS256 token must be verified (cache disabled);
//! - `v1_1mib`: validation of a 1 MiB V1 body.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use modelgate_policies::{
    BodyDecision, HeadersDecision, KnownClient, MemoryStore, PendingRequest, Policies, RequestView,
};
use serde_json::json;

const NOW: u64 = 1_800_000_000;

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_der(include_bytes!("../tests/keys/rsa_private_pkcs1.der"))
}

fn policies(cache_size: usize) -> Policies {
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&rsa(), Algorithm::RS256).unwrap()).unwrap();
    jwk["kid"] = json!("rsa");
    let config = json!({
        "version": 1,
        "jwt": {
            "issuer": "https://issuer.test",
            "audiences": "modelgate",
            "jwks": { "keys": [jwk] },
            "forwardClaims": { "sub": "x-user-id" },
            "cacheSize": cache_size
        },
        "rateLimit": { "keyHeader": "x-ratelimit-key" },
        "validation": { "maxBodyBytes": 2 * 1024 * 1024 },
        "models": {
            "sklearn-iris": {
                "requiredScopes": ["models:iris"],
                "rateLimit": { "requestsPerSecond": 1_000_000, "burst": 1_000_000 },
                "validation": { "featureCount": 4 }
            }
        }
    });
    Policies::from_json(config.to_string().as_bytes()).unwrap()
}

fn token() -> String {
    let claims = json!({ "iss": "https://issuer.test", "aud": "modelgate", "sub": "alice",
                         "scope": "models:iris", "exp": NOW + 86_400 * 365 });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa".to_owned());
    jsonwebtoken::encode(&header, &claims, &rsa()).unwrap()
}

fn at_micros(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW) + Duration::from_micros(micros)
}

fn hot_path(c: &mut Criterion) {
    let p = policies(1024);
    let store = MemoryStore::new();
    let headers = vec![("authorization".to_owned(), format!("Bearer {}", token()))];
    let body = br#"{"instances": [[6.8, 2.8, 4.8, 1.4]]}"#;
    let source = KnownClient {
        headers: &headers,
        address: Some("10.0.0.1:5000"),
    };
    let mut tick = 0u64;
    c.bench_function("hot_path", |b| {
        b.iter(|| {
            // One microsecond apart: well within the quota, so every request is counted and passes.
            tick += 1;
            let now = at_micros(tick);
            let view = RequestView {
                method: "POST",
                path: "/v1/models/sklearn-iris:predict",
                headers: &source,
            };
            let HeadersDecision::NeedBody(need) = p.on_request_headers(&view, now, &store) else {
                panic!("expected NeedBody");
            };
            let decision = p.on_request_body(&need.pending, black_box(body), now, &store);
            assert!(matches!(decision, BodyDecision::Continue(_)));
        });
    });
}

fn cold_rs256(c: &mut Criterion) {
    let p = policies(0);
    let store = MemoryStore::new();
    let headers = vec![("authorization".to_owned(), format!("Bearer {}", token()))];
    c.bench_function("cold_rs256", |b| {
        b.iter(|| {
            let view = RequestView {
                method: "GET",
                path: "/v1/models/sklearn-iris",
                headers: &headers,
            };
            let d = p.on_request_headers(&view, at_micros(0), &store);
            assert!(matches!(d, HeadersDecision::Continue(_)));
        });
    });
}

/// The signature check alone (jsonwebtoken's pure-Rust RSA), to separate crypto from policy.
fn rs256_signature_only(c: &mut Criterion) {
    let token = token();
    let (message, signature) = token.rsplit_once('.').unwrap();
    let jwk = Jwk::from_encoding_key(&rsa(), Algorithm::RS256).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    c.bench_function("rs256_signature_only", |b| {
        b.iter(|| {
            let ok =
                jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, Algorithm::RS256);
            assert!(matches!(ok, Ok(true)));
        });
    });
}

fn pending(p: &Policies) -> PendingRequest {
    let headers = vec![("authorization".to_owned(), format!("Bearer {}", token()))];
    let view = RequestView {
        method: "POST",
        path: "/v1/models/sklearn-iris:predict",
        headers: &headers,
    };
    match p.on_request_headers(&view, at_micros(0), &MemoryStore::new()) {
        HeadersDecision::NeedBody(need) => need.pending,
        other => panic!("expected NeedBody, got {other:?}"),
    }
}

fn v1_1mib(c: &mut Criterion) {
    let p = policies(1024);
    let pending = pending(&p);
    let store = MemoryStore::new();
    let mut body = String::from(r#"{"instances": ["#);
    let mut i = 0u32;
    while body.len() < 1024 * 1024 - 64 {
        if i > 0 {
            body.push(',');
        }
        write!(body, "[{}.1, 2.{}, 4.8, 1.{}]", i % 10, i % 7, i % 3).unwrap();
        i += 1;
    }
    body.push_str("]}");
    let mut group = c.benchmark_group("v1_1mib");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("validate", |b| {
        b.iter(|| {
            let d = p.on_request_body(&pending, black_box(body.as_bytes()), at_micros(0), &store);
            assert!(matches!(d, BodyDecision::Continue(_)));
        });
    });
    // For scale: serde_json building a tree of the same bytes (numbers parsed, values kept)...
    group.bench_function("serde_json_value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(body.as_bytes())).unwrap());
    });
    // ...and skipping them (numbers scanned, not parsed): the floor of any JSON check.
    group.bench_function("serde_json_skip", |b| {
        b.iter(|| {
            serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body.as_bytes())).unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, hot_path, cold_rs256, rs256_signature_only, v1_1mib);
criterion_main!(benches);
