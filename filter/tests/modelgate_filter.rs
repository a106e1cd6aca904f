//! The real `modelgate.wasm` in the modelgate runtime, loaded the way Envoy loads it (several
//! worker VMs, the plugin config through `on_configure`), gives the decisions the policy unit
//! tests expect.
//!
//! Streams are driven straight through `ChainStream`, with no listener and no upstream: what is
//! asserted is the filter's answer (status, headers, body, header edits, filter state, metrics).
//! The host services have no clusters: the filter makes no `http_call`.
//! Tokens are signed here with jsonwebtoken, using the fixed test keys of `policies/tests/keys`.
//! The last test is differential: `modelgate-policies`, a dev-dependency used only as the test
//! oracle, decides a few hundred requests natively, and the filter in the runtime must produce
//! the same replies byte for byte and the same forwarded headers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use modelgate_policies::{
    BodyDecision, HeaderEdits, HeadersDecision, KnownClient, MemoryStore, Policies, Reply,
    RequestView,
};
use modelgate_runtime::{
    FilterChain, Flow, Headers, LoadError, LocalReply, MetricValue, NoClusters, Plugin, PluginSpec,
    Runtime,
};
use serde_json::{Value, json};

mod support;
use support::{header, stream_info};

const ISSUER: &str = "https://issuer.test";

/// One runtime for the whole test binary, so the module is compiled once; created outside any
/// test's tokio runtime, so it keeps its own async worker alive between tests.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        install_log_capture();
        Runtime::new(Arc::new(NoClusters)).expect("runtime starts")
    })
}

/// Load modelgate with `config` into `vm_count` VMs. Each load gets its own `vm_id`, so tests
/// running in parallel never share rate-limit state.
fn load(config: &Value, vm_count: usize) -> Result<Plugin, LoadError> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    load_as(&format!("modelgate-test-{n}"), config, vm_count)
}

/// Load into VMs of a `vm_id` the test names (and so can inspect the shared data of).
fn load_as(vm_id: &str, config: &Value, vm_count: usize) -> Result<Plugin, LoadError> {
    runtime().load(PluginSpec {
        name: vm_id.to_owned(),
        root_id: String::new(),
        vm_id: vm_id.to_owned(),
        wasm: support::module(),
        vm_config: Vec::new(),
        plugin_config: config.to_string().into_bytes(),
        failure_policy: modelgate_runtime::FailurePolicy::FailClosed,
        allow_on_headers_stop_iteration: false,
        env: Vec::new(),
        vm_count,
        memory_limit_bytes: 128 << 20,
        callback_deadline: Duration::from_secs(5),
    })
}

fn chain(config: &Value, vm_count: usize) -> FilterChain {
    match load(config, vm_count) {
        Ok(plugin) => FilterChain::new(vec![plugin]),
        Err(error) => panic!("modelgate rejected the test config: {error}"),
    }
}

// ---- keys and tokens -------------------------------------------------------------------------

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_der(include_bytes!(
        "../../policies/tests/keys/rsa_private_pkcs1.der"
    ))
}

fn other_rsa() -> EncodingKey {
    EncodingKey::from_rsa_der(include_bytes!(
        "../../policies/tests/keys/rsa2_private_pkcs1.der"
    ))
}

fn p256() -> EncodingKey {
    EncodingKey::from_ec_der(include_bytes!(
        "../../policies/tests/keys/p256_private_pkcs8.der"
    ))
}

const HS_SECRET: &[u8] = b"an-hmac-secret-of-at-least-32-bytes!";

fn public_jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(key, alg).expect("public jwk"))
        .expect("jwk serializes");
    let object = jwk.as_object_mut().expect("jwk is an object");
    object.remove("alg");
    object.insert("kid".into(), json!(kid));
    jwk
}

fn jwks() -> Value {
    static JWKS: OnceLock<Value> = OnceLock::new();
    JWKS.get_or_init(|| {
        json!({ "keys": [
            public_jwk(&rsa(), Algorithm::RS256, "rsa"),
            public_jwk(&p256(), Algorithm::ES256, "p256"),
            public_jwk(&EncodingKey::from_secret(HS_SECRET), Algorithm::HS256, "hs"),
        ]})
    })
    .clone()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Claims valid for an hour from the wall clock (the filter reads the host's clock).
fn claims(sub: &str, scope: &str) -> Value {
    let now = unix_now();
    json!({ "iss": ISSUER, "aud": "modelgate", "sub": sub, "scope": scope,
            "exp": now + 3600, "iat": now, "tenant": "acme" })
}

fn mint(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).expect("token signs")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// An RS256 token for `sub` with `scope`.
fn token(sub: &str, scope: &str) -> String {
    mint(Algorithm::RS256, "rsa", &rsa(), &claims(sub, scope))
}

/// The same shape as the policy tests' base config (policies/tests/api/support.rs).
fn base_config() -> Value {
    json!({
        "version": 1,
        "logLevel": "debug",
        "jwt": {
            "issuer": ISSUER,
            "audiences": "modelgate",
            "jwks": jwks(),
            "forwardClaims": { "sub": "x-user-id" }
        },
        "models": {
            "sklearn-iris": {
                "aliases": ["iris"],
                "requiredScopes": ["models:iris"],
                "validation": { "featureCount": 4 }
            },
            "sklearn-wine": {
                "requiredScopes": ["models:wine"],
                "requiredClaims": { "tenant": ["acme", "globex"] }
            },
            "tensor-model": { "protocols": ["v2"] }
        }
    })
}

// ---- driving a stream ------------------------------------------------------------------------

/// How the filter chain ended a request.
#[derive(Debug)]
enum Answer {
    /// Forwarded upstream with these (edited) request headers.
    Forwarded {
        headers: Headers,
        route_cache_cleared: bool,
        filter_state: Vec<(String, Vec<u8>)>,
    },
    /// Answered by the filter.
    Replied {
        reply: LocalReply,
        filter_state: Vec<(String, Vec<u8>)>,
    },
}

impl Answer {
    fn forwarded(self) -> (Headers, bool, Vec<(String, Vec<u8>)>) {
        match self {
            Answer::Forwarded {
                headers,
                route_cache_cleared,
                filter_state,
            } => (headers, route_cache_cleared, filter_state),
            Answer::Replied { reply, .. } => panic!(
                "expected the request to be forwarded, got {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ),
        }
    }

    fn replied(self) -> LocalReply {
        match self {
            Answer::Replied { reply, .. } => reply,
            Answer::Forwarded { headers, .. } => {
                panic!("expected a local reply, the request was forwarded with {headers:?}")
            }
        }
    }
}

fn request_headers(method: &str, path: &str, extra: &[(&str, &[u8])]) -> Headers {
    let mut headers: Headers = vec![
        (":authority".into(), b"models.local".to_vec()),
        (":path".into(), path.as_bytes().to_vec()),
        (":method".into(), method.as_bytes().to_vec()),
        (":scheme".into(), b"http".to_vec()),
        ("x-request-id".into(), b"test-request".to_vec()),
    ];
    headers.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.to_vec())));
    headers
}

/// Send one request; `body` chunks arrive one by one, the last with end of stream.
async fn send(
    chain: &FilterChain,
    method: &str,
    path: &str,
    extra: &[(&str, &[u8])],
    body: &[&[u8]],
) -> Answer {
    let mut stream = chain.stream(stream_info());
    let mut headers = request_headers(method, path, extra);
    let flow = stream.request_headers(&mut headers, body.is_empty()).await;
    if let Flow::LocalReply(reply) = flow {
        let filter_state = stream.filter_state();
        stream.finish();
        return Answer::Replied {
            reply,
            filter_state,
        };
    }
    assert!(matches!(flow, Flow::Continue), "headers: {flow:?}");
    let mut buffered = Vec::new();
    for (i, chunk) in body.iter().enumerate() {
        let last = i + 1 == body.len();
        buffered.extend_from_slice(chunk);
        match stream.request_body(&mut buffered, last).await {
            Flow::LocalReply(reply) => {
                let filter_state = stream.filter_state();
                stream.finish();
                return Answer::Replied {
                    reply,
                    filter_state,
                };
            }
            Flow::StopAndBuffer => assert!(!last, "a complete body must be decided"),
            Flow::Continue => assert!(last, "a body needing validation passed before its end"),
        }
    }
    let route_cache_cleared = stream.take_route_cache_cleared();
    let filter_state = stream.filter_state();
    stream.finish();
    Answer::Forwarded {
        headers,
        route_cache_cleared,
        filter_state,
    }
}

async fn get(chain: &FilterChain, path: &str, extra: &[(&str, &[u8])]) -> Answer {
    send(chain, "GET", path, extra, &[]).await
}

async fn post(chain: &FilterChain, path: &str, extra: &[(&str, &[u8])], body: &[u8]) -> Answer {
    let mut with_type: Vec<(&str, &[u8])> = vec![("content-type", b"application/json")];
    with_type.extend_from_slice(extra);
    send(chain, "POST", path, &with_type, &[body]).await
}

fn json_body(reply: &LocalReply) -> Value {
    assert_eq!(
        header(&reply.headers, "content-type"),
        Some("application/json"),
        "headers: {:?}",
        reply.headers
    );
    serde_json::from_slice(&reply.body).expect("reply body is JSON")
}

/// What the filter stored under `wasm.modelgate.<name>` for access logs and span tags.
fn stored<'a>(filter_state: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    let key = format!("wasm.modelgate.{name}");
    filter_state
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| std::str::from_utf8(v).expect("filter state is UTF-8"))
}

fn counter(name: &str) -> u64 {
    runtime()
        .metrics()
        .into_iter()
        .find(|m| m.name == name)
        .map_or(0, |m| match m.value {
            MetricValue::Counter(n) => n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
}

fn histogram_count(name: &str) -> u64 {
    runtime()
        .metrics()
        .into_iter()
        .find(|m| m.name == name)
        .map_or(0, |m| match m.value {
            MetricValue::Histogram { count, .. } => count,
            other => panic!("{name} is not a histogram: {other:?}"),
        })
}

// ---- log capture (for configuration errors) --------------------------------------------------

static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LOGS.lock()
            .expect("log lock")
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

fn install_log_capture() {
    static CAPTURE: Capture = Capture;
    if log::set_logger(&CAPTURE).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

// ---- configuration ---------------------------------------------------------------------------

#[test]
fn a_bad_config_rejects_the_plugin_and_logs_the_field_path() {
    let mut config = base_config();
    config["models"]["sklearn-iris"]["rateLimit"] = json!({ "requestsPerMinute": 0 });
    let Err(error) = load(&config, 1) else {
        panic!("a zero rate was accepted");
    };
    assert!(
        matches!(error, LoadError::Rejected { callback, .. } if callback.contains("configure")),
        "{error}"
    );
    let logs = LOGS.lock().expect("log lock");
    assert!(
        logs.iter().any(|line| line.starts_with("ERROR")
            && line.contains("models.sklearn-iris.rateLimit.requestsPerMinute")),
        "no error log names the field; logs: {logs:#?}"
    );
}

// ---- routing ---------------------------------------------------------------------------------

#[tokio::test]
async fn an_unknown_model_gets_kserves_404() {
    let chain = chain(&base_config(), 1);
    let auth = bearer(&token("alice", "models:iris"));
    let reply = get(
        &chain,
        "/v1/models/no-such-model",
        &[("authorization", auth.as_bytes())],
    )
    .await
    .replied();
    assert_eq!(reply.status, 404);
    assert_eq!(
        json_body(&reply),
        json!({ "error": "Model with name no-such-model does not exist." })
    );
}

#[tokio::test]
async fn the_model_listing_is_answered_at_the_edge_with_the_callers_models() {
    let chain = chain(&base_config(), 1);
    let auth = bearer(&token("alice", "models:iris"));
    let reply = get(&chain, "/v1/models", &[("authorization", auth.as_bytes())])
        .await
        .replied();
    assert_eq!(reply.status, 200);
    assert_eq!(json_body(&reply), json!({ "models": ["sklearn-iris"] }));
}

#[tokio::test]
async fn a_model_request_is_forwarded_with_the_routing_header_and_a_route_recompute() {
    let chain = chain(&base_config(), 1);
    let auth = bearer(&token("alice", "models:iris"));
    let (headers, route_cache_cleared, filter_state) = get(
        &chain,
        "/v1/models/iris",
        &[
            ("authorization", auth.as_bytes()),
            // A client must not pick its own route.
            ("x-gateway-model-name", b"sklearn-wine"),
        ],
    )
    .await
    .forwarded();
    assert_eq!(
        header(&headers, "x-gateway-model-name"),
        Some("sklearn-iris")
    );
    assert_eq!(header(&headers, "x-user-id"), Some("alice"));
    assert!(
        route_cache_cleared,
        "the routing header changed: the route must be re-matched"
    );
    assert_eq!(stored(&filter_state, "model"), Some("sklearn-iris"));
    assert_eq!(stored(&filter_state, "outcome"), Some("allowed"));
    // The verified subject, for access logs and span tags (never a client header).
    assert_eq!(stored(&filter_state, "subject"), Some("alice"));
}

// ---- authentication and authorization ---------------------------------------------------------

#[tokio::test]
async fn a_missing_token_gets_401_with_a_bearer_challenge() {
    let chain = chain(&base_config(), 1);
    let answer = get(&chain, "/v1/models/sklearn-iris", &[]).await;
    let Answer::Replied {
        reply,
        filter_state,
    } = answer
    else {
        panic!("forwarded without a token: {answer:?}");
    };
    assert_eq!(reply.status, 401);
    let challenge = header(&reply.headers, "www-authenticate").expect("www-authenticate");
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    assert!(json_body(&reply)["error"].is_string());
    assert_eq!(stored(&filter_state, "outcome"), Some("unauthenticated"));
    assert_eq!(stored(&filter_state, "subject"), None);
}

#[tokio::test]
async fn a_token_signed_by_another_key_gets_401_invalid_token() {
    let chain = chain(&base_config(), 1);
    let forged = mint(
        Algorithm::RS256,
        "rsa",
        &other_rsa(),
        &claims("mallory", "models:iris"),
    );
    let reply = get(
        &chain,
        "/v1/models/sklearn-iris",
        &[("authorization", bearer(&forged).as_bytes())],
    )
    .await
    .replied();
    assert_eq!(reply.status, 401);
    let challenge = header(&reply.headers, "www-authenticate").expect("www-authenticate");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

#[tokio::test]
async fn es256_and_hs256_tokens_verify_inside_the_vm() {
    let chain = chain(&base_config(), 1);
    for token in [
        mint(
            Algorithm::ES256,
            "p256",
            &p256(),
            &claims("ec", "models:iris"),
        ),
        mint(
            Algorithm::HS256,
            "hs",
            &EncodingKey::from_secret(HS_SECRET),
            &claims("hmac", "models:iris"),
        ),
    ] {
        let (headers, _, _) = get(
            &chain,
            "/v1/models/sklearn-iris",
            &[("authorization", bearer(&token).as_bytes())],
        )
        .await
        .forwarded();
        assert_eq!(
            header(&headers, "x-gateway-model-name"),
            Some("sklearn-iris")
        );
    }
}

#[tokio::test]
async fn a_token_without_the_models_scope_gets_403() {
    let chain = chain(&base_config(), 1);
    let auth = bearer(&token("bob", "models:wine"));
    let answer = get(
        &chain,
        "/v1/models/sklearn-iris",
        &[("authorization", auth.as_bytes())],
    )
    .await;
    let Answer::Replied {
        reply,
        filter_state,
    } = answer
    else {
        panic!("forwarded without the scope: {answer:?}");
    };
    assert_eq!(reply.status, 403);
    let challenge = header(&reply.headers, "www-authenticate").expect("www-authenticate");
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    assert_eq!(stored(&filter_state, "outcome"), Some("forbidden"));
    // A denial names the verified caller too.
    assert_eq!(stored(&filter_state, "subject"), Some("bob"));
}

#[tokio::test]
async fn a_header_value_that_is_not_utf8_is_refused_not_a_trap() {
    let chain = chain(&base_config(), 1);
    let restarts = runtime().vm_failures();
    let reply = get(
        &chain,
        "/v1/models/sklearn-iris",
        &[("authorization", b"Bearer \xff\xfe not utf-8")],
    )
    .await
    .replied();
    assert_eq!(reply.status, 401);
    assert_eq!(runtime().vm_failures(), restarts, "the VM trapped");
}

// ---- rate limiting ---------------------------------------------------------------------------

#[tokio::test]
async fn the_rate_limit_is_one_limit_across_worker_vms() {
    // A model of its own, so this test's counters are its own in the shared metric registry.
    let mut config = base_config();
    config["models"]["limited-model"] = json!({
        "requiredScopes": ["models:limited"],
        "rateLimit": { "requestsPerMinute": 3, "burst": 3 }
    });
    // Two worker VMs; the runtime pins streams to them round-robin, so six requests visit each
    // VM three times. A per-VM limit would let all six through.
    let chain = chain(&config, 2);
    let auth = bearer(&token("carol", "models:limited"));
    let mut statuses = Vec::new();
    let mut last_reply = None;
    for _ in 0..6 {
        match get(
            &chain,
            "/v1/models/limited-model",
            &[("authorization", auth.as_bytes())],
        )
        .await
        {
            Answer::Forwarded { .. } => statuses.push(200),
            Answer::Replied { reply, .. } => {
                statuses.push(reply.status);
                last_reply = Some(reply);
            }
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    let reply = last_reply.expect("a 429");
    let retry_after: u64 = header(&reply.headers, "retry-after")
        .expect("retry-after")
        .parse()
        .expect("retry-after is whole seconds");
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(header(&reply.headers, "ratelimit-limit"), Some("3"));
    assert_eq!(header(&reply.headers, "ratelimit-remaining"), Some("0"));
    assert!(json_body(&reply)["error"].is_string());

    // on_log counted every request by model and outcome.
    assert_eq!(
        counter("modelgate.requests.model.limited-model.outcome.allowed"),
        3
    );
    assert_eq!(
        counter("modelgate.requests.model.limited-model.outcome.rate_limited"),
        3
    );
    assert!(histogram_count("modelgate.request.duration_ms") >= 6);
}

#[tokio::test]
async fn rate_limit_state_stays_within_max_keys_however_many_keys_arrive() {
    // Every request brings a new key (a header the caller chooses, the easiest key to
    // rotate). Before the bounded table, each left a shared-data entry for the life of the process.
    // 40 times the table's size through the real filter (a full stream each, about 0.6 ms of
    // CPU in a debug build); the million-key run is the native one in
    // policies/src/ratelimit/tests.rs.
    const KEYS: usize = 10_240;
    const MAX_KEYS: usize = 256;
    let config = json!({
        "version": 1,
        "logLevel": "warn",
        "rateLimit": { "key": { "header": "x-api-key" }, "maxKeys": MAX_KEYS },
        // One emission interval is 1 µs: a slot frees almost at once, so every key is
        // admitted and the table is reused, never outgrown.
        "models": { "keyed-model": { "rateLimit": { "requestsPerSecond": 1_000_000, "burst": 1 } } }
    });
    let vm_id = "modelgate-bounded-state";
    let plugin = load_as(vm_id, &config, 2).expect("config loads");
    let chain = FilterChain::new(vec![plugin]);
    let mut refused = 0;
    for i in 0..KEYS {
        let key = format!("caller-{i}");
        let extra: [(&str, &[u8]); 1] = [("x-api-key", key.as_bytes())];
        if let Answer::Replied { reply, .. } = get(&chain, "/v1/models/keyed-model", &extra).await {
            assert_eq!(
                reply.status,
                429,
                "{}",
                String::from_utf8_lossy(&reply.body)
            );
            refused += 1;
        }
    }
    // The table is one shared-data entry per bucket of 16 keys (policies/src/ratelimit/slots.rs).
    let entries = runtime().shared_data_entries(vm_id);
    assert_eq!(entries, MAX_KEYS / 16, "{entries} shared-data entries");
    assert!(refused < KEYS / 100, "{refused} of {KEYS} keys refused");
}

// ---- validation ------------------------------------------------------------------------------

#[tokio::test]
async fn a_malformed_v1_body_gets_400_saying_where() {
    let chain = chain(&base_config(), 1);
    let auth = bearer(&token("alice", "models:iris"));
    let answer = post(
        &chain,
        "/v1/models/sklearn-iris:predict",
        &[("authorization", auth.as_bytes())],
        br#"{"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5]]}"#,
    )
    .await;
    let Answer::Replied {
        reply,
        filter_state,
    } = answer
    else {
        panic!("a ragged body was forwarded: {answer:?}");
    };
    assert_eq!(reply.status, 400);
    let message = json_body(&reply)["error"]
        .as_str()
        .expect("error message")
        .to_owned();
    assert!(
        message.contains("instances[1]") && message.contains("expected 4 features, got 3"),
        "{message}"
    );
    assert_eq!(stored(&filter_state, "model"), Some("sklearn-iris"));
    assert_eq!(stored(&filter_state, "outcome"), Some("invalid"));
}

#[tokio::test]
async fn a_valid_v1_body_is_forwarded_with_the_routing_header() {
    let chain = chain(&base_config(), 1);
    let auth = bearer(&token("alice", "models:iris"));
    let (headers, route_cache_cleared, filter_state) = post(
        &chain,
        "/v1/models/iris:predict",
        &[
            ("authorization", auth.as_bytes()),
            ("x-gateway-model-name", b"sklearn-wine"),
        ],
        br#"{"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}"#,
    )
    .await
    .forwarded();
    assert_eq!(
        header(&headers, "x-gateway-model-name"),
        Some("sklearn-iris")
    );
    assert_eq!(header(&headers, "x-user-id"), Some("alice"));
    assert!(route_cache_cleared);
    assert_eq!(stored(&filter_state, "outcome"), Some("allowed"));
}

#[tokio::test]
async fn a_body_arriving_in_chunks_is_buffered_until_its_end() {
    let chain = chain(&base_config(), 1);
    let auth = bearer(&token("alice", "models:iris"));
    let answer = send(
        &chain,
        "POST",
        "/v1/models/sklearn-iris:predict",
        &[
            ("authorization", auth.as_bytes()),
            ("content-type", b"application/json"),
        ],
        &[br#"{"instances": [[6.8, 2.8,"#, b" 4.8, 1.4]]}"],
    )
    .await;
    answer.forwarded();
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_before_it_ends() {
    let mut config = base_config();
    config["validation"] = json!({ "maxBodyBytes": 64 });
    let chain = chain(&config, 1);
    let auth = bearer(&token("alice", "models:iris"));
    let first = vec![b' '; 100];
    let reply = send(
        &chain,
        "POST",
        "/v1/models/sklearn-iris:predict",
        &[
            ("authorization", auth.as_bytes()),
            ("content-type", b"application/json"),
        ],
        &[&first, b"{}"],
    )
    .await
    .replied();
    assert_eq!(reply.status, 413);
    assert!(json_body(&reply)["error"].is_string());
}

#[tokio::test]
async fn v2_infer_bodies_are_validated() {
    let chain = chain(&base_config(), 1);
    let auth = bearer(&token("alice", "models:iris"));
    let headers: &[(&str, &[u8])] = &[("authorization", auth.as_bytes())];
    let good = json!({ "inputs": [{ "name": "input-0", "shape": [1, 4], "datatype": "FP32",
                                    "data": [6.8, 2.8, 4.8, 1.4] }] });
    post(
        &chain,
        "/v2/models/tensor-model/infer",
        headers,
        good.to_string().as_bytes(),
    )
    .await
    .forwarded();

    let bad = json!({ "inputs": [{ "name": "input-0", "shape": [2, 4], "datatype": "FP32",
                                   "data": [6.8, 2.8, 4.8, 1.4] }] });
    let reply = post(
        &chain,
        "/v2/models/tensor-model/infer",
        headers,
        bad.to_string().as_bytes(),
    )
    .await
    .replied();
    assert_eq!(reply.status, 400);
    assert!(json_body(&reply)["error"].is_string());
}

#[tokio::test]
async fn a_predict_without_a_body_is_decided_at_the_headers_not_left_waiting() {
    let chain = chain(&base_config(), 1);
    let auth = bearer(&token("alice", "models:iris"));
    let reply = send(
        &chain,
        "POST",
        "/v1/models/sklearn-iris:predict",
        &[("authorization", auth.as_bytes())],
        &[],
    )
    .await
    .replied();
    assert_eq!(reply.status, 400);
    assert!(json_body(&reply)["error"].is_string());
}

#[tokio::test]
async fn a_body_routed_request_cannot_bring_its_own_routing_header() {
    // Envoy fixes the route and the upstream request headers when the header phase continues,
    // so a model named in the body cannot set the routing header; what must still hold is
    // that a client's own routing header never reaches the router.
    let mut config = base_config();
    config["routing"] = json!({
        "bodyModel": { "field": "model", "paths": ["/openai/v1/chat/completions"] }
    });
    let chain = chain(&config, 1);
    let auth = bearer(&token("alice", "models:iris"));
    let answer = post(
        &chain,
        "/openai/v1/chat/completions",
        &[
            ("authorization", auth.as_bytes()),
            ("x-gateway-model-name", b"sklearn-wine"),
        ],
        br#"{"model": "sklearn-iris", "messages": []}"#,
    )
    .await;
    let (headers, _, _) = answer.forwarded();
    assert_eq!(
        header(&headers, "x-gateway-model-name"),
        None,
        "the client's routing header reached the router"
    );
    assert_eq!(header(&headers, "x-user-id"), Some("alice"));
}

/// Headers, one body chunk without end of stream, then trailers.
async fn send_with_trailers(chain: &FilterChain, path: &str, auth: &str, body: &[u8]) -> Flow {
    let mut stream = chain.stream(stream_info());
    let mut headers = request_headers(
        "POST",
        path,
        &[
            ("authorization", auth.as_bytes()),
            ("content-type", b"application/json"),
        ],
    );
    let flow = stream.request_headers(&mut headers, false).await;
    assert!(matches!(flow, Flow::Continue), "headers: {flow:?}");
    let mut buffered = body.to_vec();
    let flow = stream.request_body(&mut buffered, false).await;
    assert!(matches!(flow, Flow::StopAndBuffer), "body: {flow:?}");
    let mut trailers: Headers = vec![("x-checksum".into(), b"0".to_vec())];
    let flow = stream.request_trailers(&mut trailers).await;
    stream.finish();
    flow
}

#[tokio::test]
async fn a_body_ending_in_trailers_is_decided_at_the_trailers() {
    let chain = chain(&base_config(), 1);
    let auth = bearer(&token("alice", "models:iris"));
    let path = "/v1/models/sklearn-iris:predict";
    let flow = send_with_trailers(&chain, path, &auth, br#"{"instances": [[1, 2, 3, 4]]}"#).await;
    assert!(matches!(flow, Flow::Continue), "valid body: {flow:?}");
    let flow = send_with_trailers(&chain, path, &auth, br#"{"instances": [[1, 2]]}"#).await;
    let Flow::LocalReply(reply) = flow else {
        panic!("invalid body ending in trailers: {flow:?}");
    };
    assert_eq!(reply.status, 400);
}

#[tokio::test]
async fn requests_naming_no_configured_model_are_counted_under_none() {
    // Unknown names must not become metrics (clients would create them at will).
    let chain = chain(&base_config(), 1);
    let auth = bearer(&token("alice", "models:iris"));
    let before = counter("modelgate.requests.model._none.outcome.unknown_model");
    let made_up = "/v1/models/made-up-model-for-metrics";
    let reply = get(&chain, made_up, &[("authorization", auth.as_bytes())])
        .await
        .replied();
    assert_eq!(reply.status, 404);
    assert!(
        counter("modelgate.requests.model._none.outcome.unknown_model") > before,
        "the unknown-model request was not counted"
    );
    assert!(
        runtime()
            .metrics()
            .iter()
            .all(|m| !m.name.contains("made-up-model-for-metrics")),
        "a metric was created for a client-chosen name"
    );
}

#[tokio::test]
async fn shadow_mode_lets_requests_over_quota_through_and_counts_them() {
    let mut config = base_config();
    config["rateLimit"] = json!({ "shadow": true });
    config["models"]["shadow-model"] = json!({
        "requiredScopes": ["models:shadow"],
        "rateLimit": { "requestsPerMinute": 1, "burst": 1 }
    });
    let chain = chain(&config, 2);
    let auth = bearer(&token("dave", "models:shadow"));
    for _ in 0..3 {
        get(
            &chain,
            "/v1/models/shadow-model",
            &[("authorization", auth.as_bytes())],
        )
        .await
        .forwarded();
    }
    assert_eq!(
        counter("modelgate.requests.model.shadow-model.outcome.allowed"),
        3
    );
    assert_eq!(
        counter("modelgate.shadow_rate_limited.model.shadow-model"),
        2
    );
}

// ---- differential: the wasm build decides exactly as the native policies ---------------------

/// What a decision does to a request, in a form both the native policies and the filter in the
/// runtime produce: forwarded request headers, or a local reply. Headers are sorted, because a
/// replaced header moves to the end of the host's map.
#[derive(Debug, PartialEq)]
enum Effect {
    Forward(Vec<(String, String)>),
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

fn sorted(mut headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers.sort();
    headers
}

fn text_headers(headers: &Headers) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                String::from_utf8(v.clone()).expect("UTF-8 header"),
            )
        })
        .collect()
}

fn native_reply(reply: Reply) -> Effect {
    Effect::Reply {
        status: reply.status,
        headers: sorted(
            reply
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        ),
        body: reply.body,
    }
}

fn apply(headers: &mut Vec<(String, String)>, edits: &HeaderEdits) {
    for name in &edits.remove {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
    for (name, value) in &edits.set {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        headers.push((name.to_string(), value.clone()));
    }
}

/// The native policies' effect on a request, as the adapter would apply it.
fn native_effect(
    policies: &Policies,
    method: &str,
    path: &str,
    extra: &[(&str, &[u8])],
    body: &[u8],
) -> Effect {
    let store = MemoryStore::new();
    let mut headers = text_headers(&request_headers(method, path, extra));
    let source = headers.clone();
    let source = KnownClient {
        headers: &source,
        address: Some("127.0.0.1:40000"),
    };
    let view = RequestView {
        method,
        path,
        headers: &source,
    };
    let now = SystemTime::now();
    match policies.on_request_headers(&view, now, &store) {
        HeadersDecision::Reply(reply) => native_reply(reply),
        HeadersDecision::Continue(forward) => {
            apply(&mut headers, &forward.headers);
            Effect::Forward(sorted(headers))
        }
        HeadersDecision::NeedBody(need) => {
            apply(&mut headers, &need.headers);
            if body.len() > need.pending.max_body_bytes() {
                return native_reply(policies.reject_oversized_body(&need.pending));
            }
            match policies.on_request_body(&need.pending, body, now, &store) {
                BodyDecision::Reply(reply) => native_reply(reply),
                BodyDecision::Continue(forward) => {
                    apply(&mut headers, &forward.headers);
                    Effect::Forward(sorted(headers))
                }
            }
        }
    }
}

/// The filter's effect on the same request in the runtime (`content-length` is the host's).
async fn wasm_effect(
    chain: &FilterChain,
    method: &str,
    path: &str,
    extra: &[(&str, &[u8])],
    body: &[u8],
) -> Effect {
    let chunks: &[&[u8]] = if method == "POST" { &[body] } else { &[] };
    match send(chain, method, path, extra, chunks).await {
        Answer::Forwarded { headers, .. } => Effect::Forward(sorted(text_headers(&headers))),
        Answer::Replied { reply, .. } => Effect::Reply {
            status: reply.status,
            headers: sorted(
                text_headers(&reply.headers)
                    .into_iter()
                    .filter(|(k, _)| k != "content-length")
                    .collect(),
            ),
            body: String::from_utf8(reply.body).expect("UTF-8 body"),
        },
    }
}

/// Tokens of every kind: none, valid for one model or two, forged, expired, for another
/// audience, with an unknown key id, `alg: none`, and garbage.
fn differential_tokens() -> Vec<Option<String>> {
    let now = unix_now();
    let mut expired = claims("erin", "models:iris");
    expired["exp"] = json!(now - 3600);
    let mut wrong_audience = claims("frank", "models:iris");
    wrong_audience["aud"] = json!("someone-else");
    let none_token = format!(
        "{}.{}.",
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
        "eyJzdWIiOiJtYWxsb3J5IiwiaXNzIjoiaHR0cHM6Ly9pc3N1ZXIudGVzdCJ9"
    );
    vec![
        None,
        Some(token("alice", "models:iris")),
        Some(token("bob", "models:wine")),
        Some(mint(
            Algorithm::ES256,
            "p256",
            &p256(),
            &claims("ec", "models:iris models:wine"),
        )),
        Some(mint(
            Algorithm::RS256,
            "rsa",
            &other_rsa(),
            &claims("mallory", "models:iris"),
        )),
        Some(mint(Algorithm::RS256, "rsa", &rsa(), &expired)),
        Some(mint(Algorithm::RS256, "rsa", &rsa(), &wrong_audience)),
        Some(mint(
            Algorithm::RS256,
            "unknown-kid",
            &rsa(),
            &claims("x", "models:iris"),
        )),
        Some(none_token),
        Some("not.a.jwt".to_owned()),
    ]
}

/// Requests over every route kind, with valid and invalid bodies.
fn differential_requests() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let v1_ok = br#"{"instances": [[6.8, 2.8, 4.8, 1.4]]}"#.as_slice();
    let v2_ok = br#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#.as_slice();
    let big = vec![b' '; 5000];
    let requests: Vec<(&str, &str, &[u8])> = vec![
        ("GET", "/", b""),
        ("GET", "/v1/models", b""),
        ("GET", "/v2/models", b""),
        ("GET", "/v1/models/sklearn-iris", b""),
        ("GET", "/v1/models/iris?verbose=1", b""),
        ("GET", "/v1/models/sklearn-wine", b""),
        ("GET", "/v1/models/no-such-model", b""),
        ("GET", "/v1/models/sklearn-iris%2F..%2Fsklearn-wine", b""),
        ("GET", "/v2/models/tensor-model/ready", b""),
        ("GET", "/v2/models/sklearn-iris/versions/2/ready", b""),
        ("POST", "/v1/models/sklearn-iris:predict", v1_ok),
        ("POST", "/v1/models/iris:explain", v1_ok),
        ("POST", "/v1/models/sklearn-iris:predict", br#"{"instances": [[1, 2, 3]]}"#),
        ("POST", "/v1/models/sklearn-iris:predict", br#"{"instances": [["a", "b", "c", "d"]]}"#),
        ("POST", "/v1/models/sklearn-iris:predict", br#"{"instances": [], "inputs": []}"#),
        ("POST", "/v1/models/sklearn-iris:predict", b"not json"),
        ("POST", "/v1/models/sklearn-iris:predict", b""),
        ("POST", "/v1/models/sklearn-iris:predict", &big),
        ("POST", "/v1/models/sklearn-wine:predict", br#"{"inputs": [[1, 2], [3, 4]]}"#),
        ("POST", "/v2/models/tensor-model/infer", v2_ok),
        ("POST", "/v2/models/tensor-model/versions/7/infer", v2_ok),
        ("POST", "/v2/models/tensor-model/infer", br#"{"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#),
        ("POST", "/v2/models/tensor-model/infer", br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP33", "data": [1]}]}"#),
        ("POST", "/openai/v1/chat/completions", br#"{"model": "iris", "messages": []}"#),
        ("POST", "/openai/v1/chat/completions", br#"{"model": "no-such-model"}"#),
        ("POST", "/openai/v1/chat/completions", br#"{"messages": []}"#),
    ];
    requests
        .into_iter()
        .map(|(method, path, body)| (method, path, body.to_vec()))
        .collect()
}

#[tokio::test]
async fn the_wasm_filter_decides_every_request_exactly_as_the_native_policies() {
    let mut config = base_config();
    config["routing"] = json!({
        "bodyModel": { "field": "model", "paths": ["/openai/v1/chat/completions"] }
    });
    config["validation"] = json!({ "maxBodyBytes": 4096 });
    let policies = Policies::from_json(config.to_string().as_bytes()).expect("config compiles");
    let chain = chain(&config, 2);

    let tokens = differential_tokens();
    let requests = differential_requests();

    let mut compared = 0;
    for token in &tokens {
        let auth = token.as_deref().map(bearer);
        for spoof in [false, true] {
            let mut extra: Vec<(&str, &[u8])> = Vec::new();
            if let Some(auth) = &auth {
                extra.push(("authorization", auth.as_bytes()));
            }
            if spoof {
                extra.push(("x-gateway-model-name", b"sklearn-wine"));
                extra.push(("x-user-id", b"admin"));
            }
            for (method, path, body) in &requests {
                if *method == "POST" {
                    extra.push(("content-type", b"application/json"));
                }
                let expected = native_effect(&policies, method, path, &extra, body);
                let got = wasm_effect(&chain, method, path, &extra, body).await;
                assert_eq!(
                    got,
                    expected,
                    "{method} {path} token={token:?} spoof={spoof} body={:?}",
                    String::from_utf8_lossy(body)
                );
                if *method == "POST" {
                    extra.pop();
                }
                compared += 1;
            }
        }
    }
    assert_eq!(compared, tokens.len() * 2 * requests.len());
}
