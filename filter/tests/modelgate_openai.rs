//! The real `modelgate.wasm` on `KServe`'s `OpenAI` endpoints, in the modelgate runtime with
//! several worker VMs sharing shared data, as Envoy runs it: token budgets reserved at
//! admission across workers, settled from the response's `usage` (JSON, and SSE cut at any
//! byte), responses passed through byte for byte, and the `GenAI` metrics.
//!
//! Streams are driven through `ChainStream` with no listener and no upstream: the responses
//! are written here in the shape `KServe`'s `OpenAI` server sends (the e2e suites run the real
//! server). Tokens are signed with jsonwebtoken and the test keys of `policies/tests/keys`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use modelgate_runtime::{
    ChainStream, FilterChain, Flow, Headers, LocalReply, MetricValue, NoClusters, PluginSpec,
    Runtime,
};
use serde_json::{Value, json};

mod support;
use support::{header, stream_info};

const ISSUER: &str = "https://issuer.test";
const CHAT: &str = "/openai/v1/chat/completions";

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(Arc::new(NoClusters)).expect("runtime starts"))
}

/// Load modelgate with `config` into `vm_count` worker VMs of a `vm_id` of their own, as
/// Envoy's default plugin config does (no `allow_on_headers_stop_iteration`).
fn chain(config: &Value, vm_count: usize) -> FilterChain {
    chain_with(config, vm_count, false)
}

/// As [`chain`], with Envoy's `allow_on_headers_stop_iteration` as given (the filter's
/// `openai.holdHeadersForBody` must say the same).
fn chain_with(config: &Value, vm_count: usize, allow_headers_stop: bool) -> FilterChain {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let vm_id = format!("modelgate-openai-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let plugin = runtime()
        .load(PluginSpec {
            name: vm_id.clone(),
            root_id: String::new(),
            vm_id,
            wasm: support::module(),
            vm_config: Vec::new(),
            plugin_config: config.to_string().into_bytes(),
            failure_policy: modelgate_runtime::FailurePolicy::FailClosed,
            allow_on_headers_stop_iteration: allow_headers_stop,
            env: Vec::new(),
            vm_count,
            memory_limit_bytes: 128 << 20,
            callback_deadline: Duration::from_secs(5),
        })
        .expect("modelgate accepts the config");
    FilterChain::new(vec![plugin])
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_der(include_bytes!(
        "../../policies/tests/keys/rsa_private_pkcs1.der"
    ))
}

fn jwks() -> Value {
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&rsa(), Algorithm::RS256).expect("public jwk"))
            .expect("jwk serializes");
    let object = jwk.as_object_mut().expect("jwk is an object");
    object.remove("alg");
    object.insert("kid".into(), json!("rsa"));
    json!({ "keys": [jwk] })
}

fn bearer(sub: &str, scope: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let claims = json!({ "iss": ISSUER, "aud": "modelgate", "sub": sub, "scope": scope,
                         "exp": now + 3600, "iat": now });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa".to_owned());
    let token = jsonwebtoken::encode(&header, &claims, &rsa()).expect("token signs");
    format!("Bearer {token}")
}

/// One `OpenAI` model, `model`, with a day's budget of `tokens` (a day, so the bucket does not
/// visibly refill while a test runs).
fn config(model: &str, tokens: u64) -> Value {
    json!({
        "version": 1,
        "jwt": { "issuer": ISSUER, "audiences": "modelgate", "jwks": jwks() },
        "openai": {},
        "models": {
            model: {
                "protocols": ["openai"],
                "requiredScopes": ["models:llm"],
                "openai": {
                    "maxTokens": 512,
                    "tokenBudgets": [{ "tokens": tokens, "per": "day" }]
                }
            }
        }
    })
}

/// A chat body reserving exactly 100 tokens: 8 bytes of text, 4 for the message, 88 to
/// generate.
fn chat_body(model: &str, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"abcdefgh"}}],"max_tokens":88{extra}}}"#
    )
    .into_bytes()
}

/// Send the request through the chain: the stream, ready for its response, or the filter's
/// reply.
async fn admit(chain: &FilterChain, auth: &str, body: &[u8]) -> Result<ChainStream, LocalReply> {
    let mut stream = chain.stream(stream_info());
    let mut headers: Headers = vec![
        (":authority".into(), b"llm.local".to_vec()),
        (":path".into(), CHAT.as_bytes().to_vec()),
        (":method".into(), b"POST".to_vec()),
        (":scheme".into(), b"http".to_vec()),
        ("content-type".into(), b"application/json".to_vec()),
        ("authorization".into(), auth.as_bytes().to_vec()),
    ];
    match stream.request_headers(&mut headers, false).await {
        // Continued, or held for the body (`allow_on_headers_stop_iteration`).
        Flow::Continue | Flow::StopAndBuffer => {}
        Flow::LocalReply(reply) => return Err(reply),
    }
    let mut buffered = body.to_vec();
    match stream.request_body(&mut buffered, true).await {
        Flow::Continue => Ok(stream),
        Flow::LocalReply(reply) => Err(reply),
        Flow::StopAndBuffer => panic!("a complete body must be decided"),
    }
}

/// The upstream's response through the chain: its headers (as the client gets them) and each
/// chunk as the client gets it; `complete` false ends the stream without its last chunk (the
/// client went away).
async fn respond(
    mut stream: ChainStream,
    content_type: &str,
    chunks: &[&[u8]],
    complete: bool,
) -> (Headers, Vec<Vec<u8>>) {
    let mut headers: Headers = vec![
        (":status".into(), b"200".to_vec()),
        ("content-type".into(), content_type.as_bytes().to_vec()),
    ];
    assert!(matches!(
        stream.response_headers(&mut headers, false).await,
        Flow::Continue
    ));
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = complete && i + 1 == chunks.len();
        let mut body = chunk.to_vec();
        assert!(matches!(
            stream.response_body(&mut body, last).await,
            Flow::Continue
        ));
        out.push(body);
    }
    stream.finish();
    (headers, out)
}

/// The `x-ratelimit-remaining-tokens` a new request sees after its own 100-token reservation.
async fn remaining_after_one_more(chain: &FilterChain, auth: &str, model: &str) -> u64 {
    let stream = admit(chain, auth, &chat_body(model, ""))
        .await
        .expect("one more request fits");
    let (headers, _) = respond(stream, "application/json", &[b"{}"], true).await;
    header(&headers, "x-ratelimit-remaining-tokens")
        .expect("the budget headers")
        .parse()
        .expect("a number")
}

fn json_usage(prompt: u64, completion: u64) -> Vec<u8> {
    json!({ "id": "cmpl-1", "object": "chat.completion", "choices": [
              { "index": 0, "message": { "role": "assistant", "content": "x" }, "finish_reason": "stop" } ],
            "usage": { "prompt_tokens": prompt, "completion_tokens": completion,
                       "total_tokens": prompt + completion } })
    .to_string()
    .into_bytes()
}

fn histogram(name: &str) -> (u64, f64) {
    runtime()
        .metrics()
        .into_iter()
        .find(|m| m.name == name)
        .map_or((0, 0.0), |m| match m.value {
            MetricValue::Histogram { count, sum, .. } => (count, sum),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_requests_on_four_workers_admit_only_the_budget_and_settle_to_the_usage() {
    // 1,000 tokens, 100 reserved per request: ten fit, whichever worker VM they land on.
    let chain = Arc::new(chain(&config("llm-parallel", 1000), 4));
    let auth = Arc::new(bearer("alice", "models:llm"));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (chain, auth) = (Arc::clone(&chain), Arc::clone(&auth));
            tokio::spawn(async move {
                admit(&chain, &auth, &chat_body("llm-parallel", ""))
                    .await
                    .map_err(|reply| {
                        let body: Value = serde_json::from_slice(&reply.body).expect("JSON");
                        (reply.status, body["error"]["type"].clone())
                    })
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for task in tasks {
        match task.await.expect("task ends") {
            Ok(stream) => admitted.push(stream),
            Err((status, kind)) => {
                assert_eq!((status, kind), (429, json!("RateLimitError")));
            }
        }
    }
    assert_eq!(admitted.len(), 10, "reservations must hold across workers");

    // Each used 5 + 15 tokens: settling them leaves 1,000 - 10 × 20 = 800.
    for stream in admitted {
        respond(stream, "application/json", &[&json_usage(5, 15)], true).await;
    }
    assert_eq!(
        remaining_after_one_more(&chain, &auth, "llm-parallel").await,
        800 - 100
    );
}

#[tokio::test]
async fn a_json_response_passes_unchanged_and_settles_its_usage() {
    let chain = chain(&config("llm-json", 1000), 2);
    let auth = bearer("bob", "models:llm");
    let stream = admit(&chain, &auth, &chat_body("llm-json", ""))
        .await
        .expect("admitted");
    let body = json_usage(7, 30);
    let (headers, out) = respond(
        stream,
        "application/json",
        &[&body[..40], &body[40..]],
        true,
    )
    .await;
    assert_eq!(out.concat(), body);
    assert_eq!(header(&headers, "x-ratelimit-limit-tokens"), Some("1000"));
    assert_eq!(
        header(&headers, "x-ratelimit-remaining-tokens"),
        Some("900")
    );
    // 37 used instead of 100 reserved.
    assert_eq!(
        remaining_after_one_more(&chain, &auth, "llm-json").await,
        1000 - 37 - 100
    );
    let (count, sum) = histogram(
        "gen_ai.client.token.usage.model.llm-json.caller_class.authenticated.token_type.output",
    );
    assert_eq!(count, 2);
    // The second response had no usage: its whole reservation (88 completion tokens) stands.
    assert!((sum - (30.0 + 88.0)).abs() < f64::EPSILON, "sum {sum}");
    assert_eq!(
        histogram("gen_ai.server.request.duration_ms.model.llm-json").0,
        2
    );
}

const SSE: &[&str] = &[
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":6,\"completion_tokens\":2,\"total_tokens\":8}}\n\n",
    "data: [DONE]\n\n",
];

#[tokio::test]
async fn a_stream_the_client_asked_usage_for_passes_byte_for_byte_at_every_split_and_settles() {
    let chain = chain(&config("llm-sse", 100_000), 2);
    let auth = bearer("carol", "models:llm");
    let sse = SSE.concat();
    let cuts = [1, 17, 96, 97, 150, 200, sse.len() - 3];
    let mut charged = 0;
    for cut in cuts {
        let stream = admit(
            &chain,
            &auth,
            &chat_body(
                "llm-sse",
                r#","stream":true,"stream_options":{"include_usage":true}"#,
            ),
        )
        .await
        .expect("admitted");
        let chunks = [&sse.as_bytes()[..cut], &sse.as_bytes()[cut..]];
        let (_, out) = respond(stream, "text/event-stream", &chunks, true).await;
        assert_eq!(out[0], chunks[0], "cut at {cut}");
        assert_eq!(out[1], chunks[1], "cut at {cut}");
        charged += 8;
    }
    assert_eq!(
        remaining_after_one_more(&chain, &auth, "llm-sse").await,
        100_000 - charged - 100
    );
    assert_eq!(
        histogram("gen_ai.server.time_to_first_token_ms.model.llm-sse").0,
        cuts.len() as u64
    );
}

#[tokio::test]
async fn an_aborted_stream_is_charged_its_prompt_and_the_events_sent() {
    let chain = chain(&config("llm-abort", 1000), 1);
    let auth = bearer("dave", "models:llm");
    let stream = admit(&chain, &auth, &chat_body("llm-abort", r#","stream":true"#))
        .await
        .expect("admitted");
    // Two content events, then the client goes away.
    let (_, out) = respond(
        stream,
        "text/event-stream",
        &[SSE[0].as_bytes(), SSE[1].as_bytes()],
        false,
    )
    .await;
    assert_eq!(out.concat(), [SSE[0], SSE[1]].concat().into_bytes());
    // Charged 12 (the prompt estimate) + 2 instead of the 100 reserved.
    assert_eq!(
        remaining_after_one_more(&chain, &auth, "llm-abort").await,
        1000 - 14 - 100
    );
}

#[tokio::test]
async fn refusals_on_openai_paths_take_openai_s_error_shape() {
    let chain = chain(&config("llm-errors", 1000), 1);
    let reply = admit(
        &chain,
        &bearer("erin", "models:other"),
        &chat_body("llm-errors", ""),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(reply.status, 403);
    let body: Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(body["error"]["type"], "PermissionDeniedError");
    assert_eq!(body["error"]["code"], "403");
    let reply = admit(
        &chain,
        &bearer("erin", "models:llm"),
        br#"{"model":"llm-errors","messages":"hi"}"#,
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(reply.status, 400);
    let body: Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(body["error"]["param"], "messages");
}

/// The hold-mode config: `config(model, tokens)` with `openai.holdHeadersForBody`.
fn hold_config(model: &str, tokens: u64) -> Value {
    let mut config = config(model, tokens);
    config["openai"] = json!({ "holdHeadersForBody": true });
    config
}

/// Send a request whose headers the filter holds until it has read the body: the request as
/// the upstream gets it (headers, body), and the stream.
async fn admit_held(
    chain: &FilterChain,
    auth: &str,
    body: &[u8],
) -> (Headers, Vec<u8>, ChainStream) {
    let mut stream = chain.stream(stream_info());
    let mut headers: Headers = vec![
        (":authority".into(), b"llm.local".to_vec()),
        (":path".into(), CHAT.as_bytes().to_vec()),
        (":method".into(), b"POST".to_vec()),
        (":scheme".into(), b"http".to_vec()),
        ("content-type".into(), b"application/json".to_vec()),
        ("content-length".into(), body.len().to_string().into_bytes()),
        ("authorization".into(), auth.as_bytes().to_vec()),
    ];
    assert!(matches!(
        stream.request_headers(&mut headers, false).await,
        Flow::StopAndBuffer
    ));
    let mut buffered = body.to_vec();
    assert!(matches!(
        stream.request_body(&mut buffered, true).await,
        Flow::Continue
    ));
    let released = stream
        .take_released_headers()
        .expect("the held headers are released with the body");
    (released, buffered, stream)
}

#[tokio::test]
async fn held_headers_get_the_body_s_model_as_routing_header() {
    let chain = chain_with(&hold_config("llm-held", 1000), 2, true);
    let body = chat_body("llm-held", "");
    let (headers, sent, stream) = admit_held(&chain, &bearer("fay", "models:llm"), &body).await;
    assert_eq!(header(&headers, "x-gateway-model-name"), Some("llm-held"));
    assert_eq!(
        sent, body,
        "a request that needs no usage is sent as it came"
    );
    stream.finish();
}

#[tokio::test]
async fn usage_is_asked_for_and_its_chunk_removed_so_the_client_gets_exactly_its_stream() {
    let chain = chain_with(&hold_config("llm-inject", 100_000), 2, true);
    let auth = bearer("gus", "models:llm");
    let sse = SSE.concat();
    let without_usage = [SSE[0], SSE[1], SSE[3]].concat();
    let cuts = [1, 40, 96, 97, 180, 230, 260, sse.len() - 1];
    for cut in cuts {
        let body = chat_body("llm-inject", r#","stream":true"#);
        let (headers, sent, stream) = admit_held(&chain, &auth, &body).await;
        // The upstream is asked for usage, with a content-length that matches.
        let suffix = br#","stream_options":{"include_usage":true}}"#;
        assert_eq!(&sent[..body.len() - 1], &body[..body.len() - 1]);
        assert_eq!(&sent[body.len() - 1..], suffix);
        assert_eq!(
            header(&headers, "content-length"),
            Some(sent.len().to_string().as_str())
        );
        let chunks = [&sse.as_bytes()[..cut], &sse.as_bytes()[cut..]];
        let (response, out) = respond(stream, "text/event-stream", &chunks, true).await;
        assert_eq!(
            String::from_utf8(out.concat()).expect("UTF-8"),
            without_usage,
            "cut at {cut}"
        );
        assert_eq!(header(&response, "content-length"), None);
    }
    // Each stream was charged its usage (8 tokens), not its reservation.
    assert_eq!(
        remaining_after_one_more(&chain, &auth, "llm-inject").await,
        100_000 - 8 * cuts.len() as u64 - 100
    );
}

#[tokio::test]
async fn with_held_headers_a_client_that_asked_for_usage_gets_the_stream_byte_for_byte() {
    let chain = chain_with(&hold_config("llm-asked", 1000), 1, true);
    let body = chat_body(
        "llm-asked",
        r#","stream":true,"stream_options":{"include_usage":true}"#,
    );
    let (_, sent, stream) = admit_held(&chain, &bearer("hal", "models:llm"), &body).await;
    assert_eq!(sent, body);
    let sse = SSE.concat();
    let chunks = [&sse.as_bytes()[..150], &sse.as_bytes()[150..]];
    let (_, out) = respond(stream, "text/event-stream", &chunks, true).await;
    assert_eq!(out.concat(), sse.as_bytes());
}
