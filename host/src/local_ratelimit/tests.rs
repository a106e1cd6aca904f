use std::time::Duration;

use super::*;

fn limit(yaml: &str) -> LocalRateLimit {
    let config: LocalRateLimitConfig = serde_norway::from_str(yaml).unwrap();
    assert!(config.check("localRateLimit").is_empty());
    LocalRateLimit::new(&config)
}

fn request(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// How many of `n` requests at `now` pass.
fn admitted(limit: &LocalRateLimit, headers: &Headers, n: usize, now: Instant) -> usize {
    (0..n).filter(|_| limit.allow(headers, now)).count()
}

#[test]
fn the_default_bucket_starts_full_and_refills_continuously_up_to_its_size() {
    let t0 = Instant::now();
    let limit = limit("rules: [{limit: {requests: 3, unit: Second}}]");
    let any = request(&[]);
    assert_eq!(admitted(&limit, &any, 5, t0), 3);
    // A third of a second is one token at 3 per second (Envoy's AtomicTokenBucket, not a
    // refill at the next whole interval).
    assert_eq!(
        admitted(&limit, &any, 5, t0 + Duration::from_millis(340)),
        1
    );
    // Idle for long, the bucket holds its size, not what the time would have added.
    assert_eq!(admitted(&limit, &any, 10, t0 + Duration::from_mins(1)), 3);
}

#[test]
fn a_distinct_selector_gives_each_value_its_bucket_and_absent_headers_the_default() {
    let t0 = Instant::now();
    let limit = limit(
        "rules: [{clientSelectors: [{headers: [{type: Distinct, name: X-User}]}], limit: {requests: 2, unit: Minute}}]",
    );
    assert_eq!(admitted(&limit, &request(&[("x-user", "alice")]), 4, t0), 2);
    assert_eq!(admitted(&limit, &request(&[("x-user", "bob")]), 4, t0), 2);
    // No rule applies and no rule without selectors: Envoy Gateway's default is unlimited.
    assert_eq!(admitted(&limit, &request(&[]), 100, t0), 100);
}

#[test]
fn an_exact_selector_limits_only_the_requests_with_that_value() {
    let t0 = Instant::now();
    let limit = limit(
        "rules:
  - {clientSelectors: [{headers: [{name: x-tier, value: free}]}], limit: {requests: 1, unit: Hour}}
  - {limit: {requests: 5, unit: Second}}",
    );
    assert_eq!(admitted(&limit, &request(&[("x-tier", "free")]), 3, t0), 1);
    // Another value (or none) falls to the default bucket.
    assert_eq!(admitted(&limit, &request(&[("x-tier", "paid")]), 9, t0), 5);
    // A repeated header is read joined with ',', so it is not `free`.
    let repeated = request(&[("x-tier", "free"), ("x-tier", "free")]);
    assert_eq!(
        admitted(&limit, &repeated, 1, t0),
        0,
        "the default is empty now"
    );
}

#[test]
fn a_matched_rule_spares_the_default_bucket() {
    let t0 = Instant::now();
    let limit = limit("rules:
  - {limit: {requests: 1, unit: Second}}
  - {clientSelectors: [{headers: [{type: Distinct, name: x-user}]}], limit: {requests: 5, unit: Second}}");
    assert_eq!(admitted(&limit, &request(&[("x-user", "alice")]), 9, t0), 5);
    assert_eq!(admitted(&limit, &request(&[]), 9, t0), 1);
}

#[test]
fn the_slowest_filling_rule_is_taken_from_first_and_a_refusal_spares_the_rest() {
    let t0 = Instant::now();
    // Written loose first; Envoy sorts the matched descriptors by fill rate.
    let limit = limit("rules:
  - {clientSelectors: [{headers: [{type: Distinct, name: x-user}]}], limit: {requests: 10, unit: Second}}
  - {clientSelectors: [{headers: [{name: x-tier, value: free}]}], limit: {requests: 2, unit: Minute}}");
    let free = request(&[("x-user", "alice"), ("x-tier", "free")]);
    assert_eq!(admitted(&limit, &free, 5, t0), 2);
    // The three refusals took nothing from alice's own bucket: 8 of 10 are left.
    let paid = request(&[("x-user", "alice"), ("x-tier", "paid")]);
    assert_eq!(admitted(&limit, &paid, 20, t0), 8);
}

#[test]
fn distinct_values_past_the_bound_drop_the_least_recently_used_bucket() {
    let t0 = Instant::now();
    let limit = limit(
        "rules: [{clientSelectors: [{headers: [{type: Distinct, name: x-user}]}], limit: {requests: 1, unit: Hour}}]",
    );
    let user = |i: usize| request(&[("x-user", &format!("user-{i}"))]);
    assert_eq!(admitted(&limit, &user(0), 2, t0), 1);
    for i in 1..=MAX_DYNAMIC_DESCRIPTORS {
        assert!(limit.allow(&user(i), t0));
    }
    // user-0's bucket, the least recently used, made room for the last: it starts full again.
    assert_eq!(admitted(&limit, &user(0), 2, t0), 1);
    // A recent one kept its empty bucket.
    assert_eq!(admitted(&limit, &user(MAX_DYNAMIC_DESCRIPTORS), 1, t0), 0);
}

#[test]
fn checks_name_the_field() {
    let config: LocalRateLimitConfig = serde_norway::from_str(
        "rules:
  - {limit: {requests: 10, unit: Minute}}
  - {clientSelectors: [{headers: [{name: x-tier}]}], limit: {requests: 0, unit: Second}}",
    )
    .unwrap();
    assert_eq!(
        config.check("routes[2].localRateLimit"),
        [
            "routes[2].localRateLimit.rules[1].limit.requests: must be greater than 0",
            "routes[2].localRateLimit.rules[1].clientSelectors[0].headers[0].value: required for type Exact",
            "routes[2].localRateLimit.rules[1].limit.unit: must be a multiple of the default rule's unit (Minute)",
        ]
    );
}
