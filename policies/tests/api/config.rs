//! Configuration: the example parses; every error names its field path.

use modelgate_policies::{FailureMode, LogLevel, Policies};
use serde_json::{Value, json};

use crate::support::base_config;

#[test]
fn the_example_config_parses() {
    let p = Policies::from_json(include_bytes!("../../examples/config.json")).unwrap();
    assert_eq!(
        p.model_names().collect::<Vec<_>>(),
        ["sklearn-iris", "sklearn-wine"]
    );
    assert_eq!(p.log_level(), LogLevel::Info);
    assert_eq!(p.failure_mode(), FailureMode::Deny);
}

#[test]
fn a_minimal_config_takes_defaults() {
    let p = Policies::from_json(br#"{"version": 1, "models": {}}"#).unwrap();
    assert_eq!(p.routing_header(), "x-gateway-model-name");
}

/// `cfg` with the value at a `/`-separated path replaced (objects are created on the way).
fn patched(path: &str, value: Value) -> Value {
    let mut cfg = base_config();
    let mut at = &mut cfg;
    for segment in path.trim_start_matches('/').split('/') {
        at = match segment.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[segment],
        };
    }
    *at = value;
    cfg
}

fn error_of(cfg: &Value) -> String {
    Policies::from_json(cfg.to_string().as_bytes())
        .unwrap_err()
        .to_string()
}

#[test]
#[expect(clippy::too_many_lines, reason = "a data table, one case per line")]
fn errors_name_the_field_path() {
    let cases = [
        (
            "/version",
            json!(2),
            "version: unsupported version 2, expected 1",
        ),
        (
            "/colour",
            json!(1),
            "colour: unknown field `colour`, expected one of",
        ),
        (
            "/logLevel",
            json!("loud"),
            "logLevel: unknown variant `loud`",
        ),
        (
            "/failureMode",
            json!("open"),
            "failureMode: unknown variant `open`",
        ),
        (
            "/validation/cloudEvents",
            json!("accept"),
            "validation.cloudEvents: unknown variant `accept`",
        ),
        (
            "/models/sklearn-iris/validation/v2Inputs",
            json!([]),
            "models.sklearn-iris.validation.v2Inputs: must not be empty",
        ),
        (
            "/models/sklearn-iris/validation/v2Inputs",
            json!([{"name": "input-0", "datatype": "FP64", "shape": [-1, 0]}]),
            "models.sklearn-iris.validation.v2Inputs[0].shape[1]: must be -1 (any size) or greater than 0",
        ),
        (
            "/models/sklearn-iris/validation/v2Inputs",
            json!([{"name": "input-0", "datatype": "FLOAT", "shape": [-1, 4]}]),
            "models.sklearn-iris.validation.v2Inputs[0].datatype: unknown datatype \"FLOAT\"",
        ),
        (
            "/models/sklearn-iris/validation/v2Inputs",
            json!([{"name": "a", "datatype": "FP64", "shape": [1]}, {"name": "a", "datatype": "FP64", "shape": [1]}]),
            "models.sklearn-iris.validation.v2Inputs[1].name: input \"a\" is declared twice",
        ),
        (
            "/models/sklearn-iris/validation/v2Inputs",
            json!([{"name": "a", "datatype": "FP64", "shape": vec![1; 65]}]),
            "models.sklearn-iris.validation.v2Inputs[0].shape: at most 64 dimensions (numpy's limit)",
        ),
        (
            "/models/sklearn-iris/validation/v2Inputs",
            json!([{"name": "a", "datatype": "FP64", "shape": [1], "dims": [1]}]),
            "models.sklearn-iris.validation.v2Inputs[0].dims: unknown field `dims`",
        ),
        (
            "/models/sklearn-iris/validation",
            json!({"elementType": "number", "v2Inputs": [{"name": "a", "datatype": "BYTES", "shape": [-1]}]}),
            "models.sklearn-iris.validation.v2Inputs[0].datatype: BYTES does not hold the model's elementType",
        ),
        (
            "/models/sklearn-iris/rateLimit",
            json!({"requestsPerMinute": 0}),
            "models.sklearn-iris.rateLimit.requestsPerMinute: must be greater than 0",
        ),
        (
            "/models/sklearn-iris/rateLimit",
            json!({"requestsPerSecond": 1, "requestsPerMinute": 1}),
            "models.sklearn-iris.rateLimit: set exactly one of requestsPerSecond or requestsPerMinute",
        ),
        (
            "/models/sklearn-iris/rateLimit",
            json!({}),
            "models.sklearn-iris.rateLimit: set exactly one of requestsPerSecond or requestsPerMinute",
        ),
        (
            "/models/sklearn-iris/rateLimit/burst",
            json!(0),
            "models.sklearn-iris.rateLimit.burst: must be greater than 0",
        ),
        (
            "/models/sklearn-iris/rateLimit/perDay",
            json!(1),
            "models.sklearn-iris.rateLimit.perDay: unknown field `perDay`",
        ),
        (
            "/models/sklearn-iris/rateLimit/burst",
            json!(-1),
            "models.sklearn-iris.rateLimit.burst: invalid value: integer `-1`, expected u32",
        ),
        (
            "/models/sklearn-iris/validation",
            json!({"featureCount": 0}),
            "models.sklearn-iris.validation.featureCount: must be greater than 0",
        ),
        (
            "/models/sklearn-iris/validation",
            json!({"maxInstances": 0}),
            "models.sklearn-iris.validation.maxInstances: must be greater than 0",
        ),
        (
            "/models/sklearn-iris/validation",
            json!({"elementType": "float"}),
            "models.sklearn-iris.validation.elementType: unknown variant `float`",
        ),
        (
            "/models/sklearn-iris/validation",
            json!({"explain": "alibi"}),
            "models.sklearn-iris.validation.explain: unknown variant `alibi`",
        ),
        (
            "/models/sklearn-iris/protocols",
            json!(["v3"]),
            "models.sklearn-iris.protocols[0]: unknown variant `v3`",
        ),
        (
            "/models/sklearn-iris/protocols",
            json!([]),
            "models.sklearn-iris.protocols: must not be empty",
        ),
        (
            "/models/sklearn-wine/aliases",
            json!(["iris"]),
            "models.sklearn-wine.aliases: name iris is already taken",
        ),
        (
            "/models/sklearn-wine/aliases",
            json!(["a/b"]),
            "models.sklearn-wine.aliases[0]: aliases may hold only",
        ),
        (
            "/models/bad name",
            json!({}),
            "models.bad name: model names may hold only letters, digits, '-', '_' and '.'",
        ),
        (
            "/models/sklearn-wine/requiredClaims/tenant",
            json!([]),
            "models.sklearn-wine.requiredClaims.tenant: must list at least one value",
        ),
        (
            "/routing",
            json!({"header": "bad header"}),
            "routing.header: invalid header name \"bad header\"",
        ),
        (
            "/routing",
            json!({"unknownModel": "ignore"}),
            "routing.unknownModel: unknown variant `ignore`",
        ),
        (
            "/routing",
            json!({"bodyModel": {"paths": []}}),
            "routing.bodyModel.paths: must not be empty",
        ),
        (
            "/routing",
            json!({"bodyModel": {"paths": ["chat"]}}),
            "routing.bodyModel.paths[0]: must be a plain path starting with '/'",
        ),
        (
            "/rateLimit/key",
            json!({"cookie": "x"}),
            "rateLimit.key: unknown variant `cookie`",
        ),
        (
            "/rateLimit/keyHeader",
            json!(""),
            "rateLimit.keyHeader: invalid header name \"\"",
        ),
        (
            "/validation",
            json!({"maxBodyBytes": 0}),
            "validation.maxBodyBytes: must be greater than 0",
        ),
        ("/jwt/issuer", json!(""), "jwt.issuer: must not be empty"),
        (
            "/jwt/algorithms",
            json!(["RS256", "none"]),
            "jwt.algorithms[1]: algorithm \"none\" is never accepted",
        ),
        (
            "/jwt/algorithms",
            json!(["XS256"]),
            "jwt.algorithms[0]: unsupported algorithm \"XS256\"",
        ),
        (
            "/jwt/algorithms",
            json!(["ES384"]),
            "jwt.jwks.keys[0]: the key allows none of the configured algorithms",
        ),
        (
            "/jwt/jwks/keys",
            json!([]),
            "jwt.jwks.keys: must hold at least one key",
        ),
        (
            "/jwt/jwks/keys/0/d",
            json!("secret"),
            "jwt.jwks.keys[0].d: unknown field `d`",
        ),
        (
            "/jwt/jwks/keys/0/kty",
            json!("DSA"),
            "jwt.jwks.keys[0].kty: unsupported key type \"DSA\"",
        ),
        (
            "/jwt/jwks/keys/0/alg",
            json!("ES256"),
            "jwt.jwks.keys[0].alg: ES256 does not fit kty \"RSA\"",
        ),
        (
            "/jwt/jwks/keys/0/use",
            json!("enc"),
            "jwt.jwks.keys[0].use: key use \"enc\" is not \"sig\"",
        ),
        (
            "/jwt/jwks/keys/0/n",
            json!("!!"),
            "jwt.jwks.keys[0].n: invalid RSA key",
        ),
        (
            "/jwt/jwks/keys/0/e",
            json!(null),
            "jwt.jwks.keys[0].e: required for kty \"RSA\"",
        ),
        (
            "/jwt/jwks/keys/2/crv",
            json!("P-521"),
            "jwt.jwks.keys[2].crv: unsupported curve \"P-521\"",
        ),
        (
            "/jwt/jwks/keys/2/x",
            json!("AAAA"),
            "jwt.jwks.keys[2]: unusable key for ES256",
        ),
        (
            "/jwt/jwks/keys/5/k",
            json!("c2hvcnQ"),
            "jwt.jwks.keys[5].k: HMAC secrets must be at least 32 bytes",
        ),
        (
            "/jwt/jwks/keys/1/kid",
            json!("rsa"),
            "jwt.jwks.keys[1].kid: duplicate kid",
        ),
        (
            "/jwt/tokenSources",
            json!([{"header": "a", "query": "b"}]),
            "jwt.tokenSources[0]: set exactly one of header or query",
        ),
        (
            "/jwt/tokenSources",
            json!([{"query": "t", "prefix": "Bearer "}]),
            "jwt.tokenSources[0].prefix: only header sources take a prefix",
        ),
        (
            "/jwt/forwardClaims",
            json!({"sub": "x user"}),
            "jwt.forwardClaims.sub: invalid header name \"x user\"",
        ),
        (
            "/jwt/realm",
            json!("a\"b"),
            "jwt.realm: must not contain quotes",
        ),
        (
            "/jwt/maxTokenBytes",
            json!(0),
            "jwt.maxTokenBytes: must be greater than 0",
        ),
        (
            "/jwt/audiences",
            json!(7),
            "jwt.audiences: data did not match any variant",
        ),
    ];
    for (path, value, want) in cases {
        let got = error_of(&patched(path, value));
        assert!(got.starts_with(want), "{path}: want {want:?}\n got {got:?}");
    }
}

#[test]
fn features_that_need_jwt_say_so() {
    let mut cfg = base_config();
    cfg.as_object_mut().unwrap().remove("jwt");
    cfg["rateLimit"]["key"] = json!({"claim": "sub"});
    assert_eq!(
        error_of(&cfg),
        "rateLimit.key.claim: keying by a claim needs jwt to be configured"
    );
    cfg["rateLimit"]["key"] = json!("clientAddress");
    assert_eq!(
        error_of(&cfg),
        "models.sklearn-iris: requiredScopes and requiredClaims need jwt to be configured"
    );
}

#[test]
fn malformed_documents_are_errors_not_panics() {
    for doc in [
        &b""[..],
        b"null",
        b"[]",
        b"{",
        b"{\"version\": 1}",
        b"\xff\xfe",
    ] {
        assert!(
            Policies::from_json(doc).is_err(),
            "{}",
            String::from_utf8_lossy(doc)
        );
    }
    assert_eq!(
        Policies::from_json(b"{\"version\": 1}")
            .unwrap_err()
            .to_string(),
        "config: missing field `models` at line 1 column 14"
    );
}

#[test]
fn the_documented_example_is_the_example_config() {
    let doc = include_str!("../../../docs/config.md");
    let example = include_str!("../../examples/config.json");
    assert!(
        doc.contains(example),
        "docs/config.md must embed policies/examples/config.json verbatim"
    );
}
