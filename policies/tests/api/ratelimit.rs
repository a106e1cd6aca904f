//! Rate limits through the API: burst, refill, 429 headers, shadow mode, shared state, keys.

use std::borrow::Cow;
use std::cell::Cell;

use modelgate_policies::{
    HeaderSource, HeadersDecision, MemoryStore, Outcome, Policies, RequestView, SharedStore,
    StoreError,
};
use serde_json::json;

use crate::support::{
    NOW, Req, at, at_millis, base_config, policies, reply_header, set_header, token,
};

fn iris(sub: &str) -> Req {
    Req::get("/v1/models/sklearn-iris").bearer(&token(sub, "models:iris"))
}

#[test]
fn answers_429_with_retry_after_and_ratelimit_headers() {
    let p = policies(&base_config());
    let store = MemoryStore::new();
    let alice = iris("alice");
    for _ in 0..3 {
        assert!(alice.send(&p, b"", at(NOW), &store).is_ok());
    }
    let reply = alice.send(&p, b"", at(NOW), &store).unwrap_err();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.verdict.outcome, Outcome::RateLimited);
    assert_eq!(reply.verdict.model.as_deref(), Some("sklearn-iris"));
    assert_eq!(reply_header(&reply, "retry-after"), Some("1"));
    assert_eq!(reply_header(&reply, "ratelimit-limit"), Some("3"));
    assert_eq!(reply_header(&reply, "ratelimit-remaining"), Some("0"));
    assert_eq!(reply_header(&reply, "ratelimit-reset"), Some("3"));
    assert_eq!(
        reply.body,
        r#"{"error":"rate limit exceeded for model sklearn-iris"}"#
    );
    // Other callers have their own bucket.
    assert!(iris("bob").send(&p, b"", at(NOW), &store).is_ok());
    // One request per second refills.
    assert!(
        alice
            .send(&p, b"", at_millis(NOW * 1000 + 999), &store)
            .is_err()
    );
    assert!(alice.send(&p, b"", at(NOW + 1), &store).is_ok());
}

#[test]
fn two_vms_sharing_one_store_enforce_one_limit() {
    let vm1 = policies(&base_config());
    let vm2 = policies(&base_config());
    let store = MemoryStore::new();
    let alice = iris("alice");
    assert!(alice.send(&vm1, b"", at(NOW), &store).is_ok());
    assert!(alice.send(&vm2, b"", at(NOW), &store).is_ok());
    assert!(alice.send(&vm1, b"", at(NOW), &store).is_ok());
    assert_eq!(
        alice.send(&vm2, b"", at(NOW), &store).unwrap_err().status,
        429
    );
    assert_eq!(
        alice.send(&vm1, b"", at(NOW), &store).unwrap_err().status,
        429
    );
}

#[test]
fn shadow_mode_counts_but_never_blocks() {
    let mut cfg = base_config();
    cfg["rateLimit"]["shadow"] = json!(true);
    let p = policies(&cfg);
    let store = MemoryStore::new();
    let alice = iris("alice");
    let flags: Vec<bool> = (0..5)
        .map(|_| {
            alice
                .send(&p, b"", at(NOW), &store)
                .unwrap()
                .verdict
                .shadow_rate_limited
        })
        .collect();
    assert_eq!(flags, [false, false, false, true, true]);
}

#[test]
fn sets_the_key_header_for_global_limits() {
    let p = policies(&base_config());
    let req = iris("alice").header("x-ratelimit-key", "spoofed");
    let c = req.send(&p, b"", at(NOW), &MemoryStore::new()).unwrap();
    assert_eq!(set_header(&c, "x-ratelimit-key"), Some("alice"));
    // Requests for no model carry no key, and the client's copy is removed.
    let other = Req::get("/")
        .bearer(&token("alice", ""))
        .header("x-ratelimit-key", "spoofed");
    let c = other.send(&p, b"", at(NOW), &MemoryStore::new()).unwrap();
    assert_eq!(set_header(&c, "x-ratelimit-key"), None);
    assert!(c.headers.remove.iter().any(|h| &**h == "x-ratelimit-key"));
    assert!(!c.route_changed);
}

#[test]
fn keys_by_header_or_client_address() {
    let mut cfg = base_config();
    cfg["rateLimit"]["key"] = json!({"header": "x-api-key"});
    let p = policies(&cfg);
    let store = MemoryStore::new();
    // Same subject, different API keys: separate buckets.
    for _ in 0..3 {
        assert!(
            iris("alice")
                .header("x-api-key", "k1")
                .send(&p, b"", at(NOW), &store)
                .is_ok()
        );
    }
    assert!(
        iris("alice")
            .header("x-api-key", "k1")
            .send(&p, b"", at(NOW), &store)
            .is_err()
    );
    assert!(
        iris("alice")
            .header("x-api-key", "k2")
            .send(&p, b"", at(NOW), &store)
            .is_ok()
    );

    cfg["rateLimit"]["key"] = json!("clientAddress");
    let p = policies(&cfg);
    let store = MemoryStore::new();
    let from = |addr: &str| {
        let mut r = iris("alice");
        r.client = Some(addr.to_owned());
        r.send(&p, b"", at(NOW), &store)
    };
    for port in [1, 2, 3] {
        assert!(from(&format!("10.0.0.1:{port}")).is_ok());
    }
    // Same address from another port is the same caller.
    assert!(from("10.0.0.1:4").is_err());
    assert!(from("[::1]:5").is_ok());
}

#[test]
fn missing_claim_falls_back_to_the_client_address() {
    let mut cfg = base_config();
    cfg["rateLimit"]["key"] = json!({"claim": "client_id"});
    let p = policies(&cfg);
    let c = iris("alice")
        .send(&p, b"", at(NOW), &MemoryStore::new())
        .unwrap();
    assert_eq!(set_header(&c, "x-ratelimit-key"), Some("10.0.0.7"));
}

/// Request headers with a client address the host provides on demand, counting the asks.
struct OnDemandClient {
    headers: Vec<(String, String)>,
    asked: Cell<u32>,
}

impl HeaderSource for OnDemandClient {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.headers.header(name)
    }

    fn header_names(&self) -> Vec<Cow<'_, str>> {
        self.headers.header_names()
    }

    fn client_address(&self) -> Option<Cow<'_, str>> {
        self.asked.set(self.asked.get() + 1);
        Some(Cow::Borrowed("10.0.0.9:5000"))
    }
}

#[test]
fn an_on_demand_client_address_is_asked_only_when_the_key_falls_back_to_it() {
    let mut cfg = base_config();
    let source = OnDemandClient {
        headers: iris("alice").headers,
        asked: Cell::new(0),
    };
    let view = RequestView {
        method: "GET",
        path: "/v1/models/sklearn-iris",
        headers: &source,
    };
    let key = |p: &Policies| match p.on_request_headers(&view, at(NOW), &MemoryStore::new()) {
        HeadersDecision::Continue(c) => set_header(&c, "x-ratelimit-key").map(str::to_owned),
        other => panic!("expected the request to pass, got {other:?}"),
    };

    assert_eq!(key(&policies(&cfg)).as_deref(), Some("alice"));
    assert_eq!(source.asked.get(), 0);

    cfg["rateLimit"]["key"] = json!({"claim": "client_id"});
    assert_eq!(key(&policies(&cfg)).as_deref(), Some("10.0.0.9"));
    assert_eq!(source.asked.get(), 1);
}

/// Shared data that refuses every write, as a host in trouble would.
struct BrokenStore;

impl SharedStore for BrokenStore {
    fn get(&self, _: &str) -> Option<(Vec<u8>, u32)> {
        None
    }
    fn set(&self, _: &str, _: &[u8], _: u32) -> Result<(), StoreError> {
        Err(StoreError::Unavailable)
    }
}

#[test]
fn store_failures_follow_the_failure_mode() {
    let p = policies(&base_config());
    let reply = iris("alice")
        .send(&p, b"", at(NOW), &BrokenStore)
        .unwrap_err();
    assert_eq!(reply.status, 503);
    assert_eq!(reply.verdict.outcome, Outcome::InternalError);

    let mut cfg = base_config();
    cfg["failureMode"] = json!("allow");
    let p = policies(&cfg);
    assert!(iris("alice").send(&p, b"", at(NOW), &BrokenStore).is_ok());
    assert!(p.internal_fault_reply(Some("iris")).is_none());
}

#[test]
fn models_without_a_quota_are_not_limited() {
    let p = policies(&base_config());
    let store = MemoryStore::new();
    let t = token("alice", "");
    for _ in 0..20 {
        assert!(
            Req::get("/v2/models/tensor-model")
                .bearer(&t)
                .send(&p, b"", at(NOW), &store)
                .is_ok()
        );
    }
    assert!(store.is_empty());
}

/// A numeric claim keys the limit by its JSON text, as a string claim does: callers whose `uid`
/// differ get a key (and a quota) each, not the client address they share.
#[test]
fn a_numeric_claim_keys_the_limit_by_its_value() {
    use crate::support::{claims, mint, rsa};
    let mut cfg = base_config();
    cfg["rateLimit"]["key"] = json!({"claim": "uid"});
    let p = policies(&cfg);
    let store = MemoryStore::new();
    for uid in [7, 8] {
        let mut c = claims("alice", "models:iris");
        c["uid"] = json!(uid);
        let t = mint(jsonwebtoken::Algorithm::RS256, Some("rsa"), &rsa(), &c);
        let forwarded = Req::get("/v1/models/sklearn-iris")
            .bearer(&t)
            .send(&p, b"", at(NOW), &store)
            .unwrap();
        let key = uid.to_string();
        assert_eq!(
            set_header(&forwarded, "x-ratelimit-key"),
            Some(key.as_str())
        );
    }
}
