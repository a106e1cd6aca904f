use super::*;

fn entries(pairs: &[(&str, &str)]) -> Vec<Entry> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn request(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn config(yaml: &str) -> GlobalRateLimitConfig {
    serde_norway::from_str(yaml).unwrap()
}

#[test]
fn cache_keys_are_envoyproxy_ratelimits() {
    // The keys of envoyproxy/ratelimit's own tests (test/limiter/base_limiter_test.go and
    // test/redis/fixed_cache_impl_test.go) at Unix time 1234.
    let second = Descriptor {
        entries: entries(&[("key", "value")]),
        requests: 10,
        unit_seconds: 1,
    };
    assert_eq!(second.cache_key("domain", 1234), "domain_key_value_1234");
    let minute = Descriptor {
        entries: entries(&[("key2", "value2"), ("subkey2", "subvalue2")]),
        requests: 10,
        unit_seconds: 60,
    };
    assert_eq!(
        minute.cache_key("domain", 1234),
        "domain_key2_value2_subkey2_subvalue2_1200"
    );
}

const RULES: &str = "
redis: 127.0.0.1:6379
rules:
  - clientSelectors:
      - headers:
          - {type: Exact, name: x-gateway-model-name, value: sklearn-iris}
          - {type: Distinct, name: X-ModelGate-RateLimit-Key}
    limit: {requests: 600, unit: Minute}
  - limit: {requests: 5, unit: Second}
";

#[test]
fn descriptors_are_envoy_gateways() {
    let rules = config(RULES).rules;
    let got = descriptors(
        &rules,
        "iris-route",
        &request(&[
            ("x-gateway-model-name", "sklearn-iris"),
            ("x-modelgate-ratelimit-key", "alice"),
        ]),
    );
    assert_eq!(
        got,
        [
            Descriptor {
                entries: entries(&[
                    ("iris-route", "iris-route"),
                    ("rule-0-match-0", "rule-0-match-0"),
                    ("rule-0-match-1", "alice"),
                ]),
                requests: 600,
                unit_seconds: 60,
            },
            Descriptor {
                entries: entries(&[
                    ("iris-route", "iris-route"),
                    ("rule-1-match--1", "rule-1-match--1"),
                ]),
                requests: 5,
                unit_seconds: 1,
            },
        ]
    );
}

#[test]
fn a_rule_whose_selector_does_not_match_counts_nothing() {
    let rules = config(RULES).rules;
    // Another model, or no caller key: only the catch-all rule applies.
    for headers in [
        request(&[
            ("x-gateway-model-name", "sklearn-wine"),
            ("x-modelgate-ratelimit-key", "alice"),
        ]),
        request(&[("x-gateway-model-name", "sklearn-iris")]),
    ] {
        let got = descriptors(&rules, "r", &headers);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].requests, 5);
    }
}

#[test]
fn distinct_takes_the_first_value_and_exact_compares_them_all() {
    let rules = config(RULES).rules;
    let got = descriptors(
        &rules,
        "r",
        &request(&[
            ("x-gateway-model-name", "sklearn-iris"),
            ("x-modelgate-ratelimit-key", "alice"),
            ("x-modelgate-ratelimit-key", "bob"),
        ]),
    );
    assert_eq!(got[0].entries[2].1, "alice");
    let got = descriptors(
        &rules,
        "r",
        &request(&[
            ("x-gateway-model-name", "sklearn-iris"),
            ("x-gateway-model-name", "other"),
            ("x-modelgate-ratelimit-key", "alice"),
        ]),
    );
    assert_eq!(got.len(), 1, "'sklearn-iris,other' is not 'sklearn-iris'");
}

#[test]
fn config_errors_name_the_field() {
    let bad = config(
        "
redis: localhost
timeout: 0s
rules:
  - clientSelectors:
      - headers: [{name: a}, {type: Distinct, name: b, value: c}]
    limit: {requests: 0, unit: Hour}
",
    );
    assert_eq!(
        bad.check(),
        [
            "globalRateLimit.redis: expected host:port, got \"localhost\"",
            "globalRateLimit.timeout: must be greater than 0",
            "globalRateLimit.rules[0].limit.requests: must be greater than 0",
            "globalRateLimit.rules[0].clientSelectors[0].headers[0].value: required for type Exact",
            "globalRateLimit.rules[0].clientSelectors[0].headers[1].value: not allowed for type Distinct",
        ]
    );
    assert!(config(RULES).check().is_empty());
}
