//! The test file format (docs/policy-tests.md): its serde shape, and loading it with the
//! file, the case and the field path in every error.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserializer};
use serde::{Deserialize, de::DeserializeOwned};

use crate::units::{ByteSize, ConfigDuration};

/// A whole test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct SuiteSpec {
    pub(super) policy: PolicySpec,
    /// Signing keys for the tokens the cases mint, by name. Test keys only.
    #[serde(default)]
    pub(super) keys: BTreeMap<String, KeySpec>,
    /// The time every case starts at (RFC 3339 UTC, or Unix seconds).
    #[serde(default)]
    pub(super) now: Option<Timestamp>,
    /// Most bytes of a request body a filter may buffer before the stream gets 413.
    #[serde(default)]
    pub(super) buffer_limit: Option<ByteSize>,
    /// The request header that names where the request is routed (`expect.routedTo`).
    #[serde(default)]
    pub(super) routing_header: Option<String>,
    /// Envoy's `PluginConfig.allow_on_headers_stop_iteration`, as the deployment sets it
    /// (false by default, as in Envoy).
    #[serde(default)]
    pub(super) allow_on_headers_stop_iteration: bool,
    /// Request fields every case starts from.
    #[serde(default)]
    pub(super) defaults: RequestSpec,
    pub(super) tests: Vec<CaseSpec>,
}

/// The policy under test: a plugin configuration file, or an `EnvoyExtensionPolicy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct PolicySpec {
    /// A plugin configuration (JSON, or YAML), delivered to `on_configure` as JSON.
    #[serde(default)]
    pub(super) file: Option<PathBuf>,
    /// An `EnvoyExtensionPolicy` manifest (several documents allowed).
    #[serde(default)]
    pub(super) envoy_extension_policy: Option<PathBuf>,
    /// Which `spec.wasm[]` entry, when the manifest has several.
    #[serde(default)]
    pub(super) wasm_name: Option<String>,
    /// A JSON merge patch (RFC 7386) applied to the configuration before it is loaded.
    #[serde(default)]
    pub(super) patch: Option<serde_json::Value>,
    /// The VM's environment (what Envoy Gateway's `env.hostKeys` would pass).
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    #[serde(default, rename = "rootID")]
    pub(super) root_id: Option<String>,
}

/// A key to sign test tokens with: a private key in PEM, or an HMAC secret.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct KeySpec {
    /// A JWS algorithm name: `RS256`, `PS384`, `ES256`, `EdDSA`, `HS512`, ...
    pub(super) algorithm: String,
    /// The `kid` tokens signed with this key carry.
    #[serde(default)]
    pub(super) kid: Option<String>,
    #[serde(default)]
    pub(super) private_key_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) private_key: Option<String>,
    /// An HMAC secret as text.
    #[serde(default)]
    pub(super) secret: Option<String>,
    /// An HMAC secret in base64url (a JWK's `k`).
    #[serde(default)]
    pub secret_base64: Option<String>,
}

/// One request; in `defaults`, a case or a step every field is optional and the later wins.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RequestSpec {
    #[serde(default)]
    pub(super) method: Option<String>,
    #[serde(default)]
    pub(super) path: Option<String>,
    /// Header values; `null` removes a header set by `defaults`.
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Option<Scalar>>,
    /// A JSON body, written as YAML; `null` for no body (over one set before).
    #[serde(default, deserialize_with = "present")]
    pub(super) body: Option<serde_json::Value>,
    /// A body sent as it is written.
    #[serde(default)]
    pub(super) body_text: Option<String>,
    /// A body read from a file, relative to the test file.
    #[serde(default)]
    pub(super) body_file: Option<PathBuf>,
    /// Pads the body with trailing spaces (still valid JSON) to this many bytes.
    #[serde(default)]
    pub(super) pad_to: Option<ByteSize>,
    #[serde(default)]
    pub(super) token: Option<TokenSpec>,
    /// The client's address (what the gateway puts in `x-forwarded-for` and `source.address`).
    #[serde(default)]
    pub(super) client_address: Option<IpAddr>,
}

/// `Some` whenever the field is written, `null` included (absent fields take the default).
fn present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

/// A token: raw text, `false` for none, or claims signed with a named test key.
#[derive(Debug, Clone)]
pub(super) enum TokenSpec {
    None,
    Raw(String),
    Signed(Box<SignedToken>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct SignedToken {
    /// A name under the file's `keys`.
    pub(super) key: String,
    /// Sign with this algorithm of the key's family instead of the key's own (RS384 with an
    /// RS256 key, say).
    #[serde(default)]
    pub(super) algorithm: Option<String>,
    /// Claims; a string value `now`, `now+1h` or `now-30s` becomes Unix seconds at the case's
    /// start time.
    #[serde(default)]
    pub(super) claims: serde_json::Map<String, serde_json::Value>,
    /// Header parameters added to or replacing `alg`, `typ` and `kid` (`null` removes one).
    #[serde(default)]
    pub(super) header: serde_json::Map<String, serde_json::Value>,
    /// Where the token goes: this request header (default `authorization`) ...
    #[serde(default)]
    pub(super) in_header: Option<String>,
    /// ... after this prefix (default `Bearer ` for `authorization`, none otherwise).
    #[serde(default)]
    pub(super) prefix: Option<String>,
}

impl<'de> Deserialize<'de> for TokenSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Flag(bool),
            Raw(String),
            Signed(Box<SignedToken>),
        }
        match Shape::deserialize(deserializer).map_err(|_| {
            de::Error::custom(
                "expected a raw token, false (no token), or {key, algorithm, claims, header, inHeader, prefix}",
            )
        })? {
            Shape::Flag(false) => Ok(TokenSpec::None),
            Shape::Flag(true) => Err(de::Error::custom(
                "`token: true` means nothing; give a raw token, claims to sign, or false",
            )),
            Shape::Raw(raw) => Ok(TokenSpec::Raw(raw)),
            Shape::Signed(signed) => Ok(TokenSpec::Signed(signed)),
        }
    }
}

/// A string, number or boolean in YAML, kept as the text a header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) => Ok(Scalar(s)),
            serde_json::Value::Number(n) => Ok(Scalar(n.to_string())),
            serde_json::Value::Bool(b) => Ok(Scalar(b.to_string())),
            _ => Err(de::Error::custom(
                "expected a string, a number or a boolean",
            )),
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One test case: a request and what should come of it, or a sequence of steps.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct CaseSpec {
    pub(super) name: String,
    #[serde(default)]
    pub(super) request: RequestSpec,
    /// This case's start time, instead of the file's `now`.
    #[serde(default)]
    pub(super) now: Option<Timestamp>,
    /// What the stub upstream answers (default 200 with an echo of what it received).
    #[serde(default)]
    pub(super) upstream_response: Option<UpstreamResponseSpec>,
    /// Send the request this many times, each expected to match.
    #[serde(default)]
    pub(super) repeat: Option<u32>,
    /// Clock advance between repetitions.
    #[serde(default)]
    pub(super) interval: Option<ConfigDuration>,
    #[serde(default)]
    pub(super) expect: Option<Expect>,
    #[serde(default)]
    pub(super) steps: Vec<StepSpec>,
}

/// One step of a sequence: the case's request with changes, sent after the clock advanced.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct StepSpec {
    /// Move the clock forward before this step.
    #[serde(default)]
    pub(super) advance: Option<ConfigDuration>,
    #[serde(default)]
    pub(super) request: RequestSpec,
    #[serde(default)]
    pub(super) repeat: Option<u32>,
    #[serde(default)]
    pub(super) interval: Option<ConfigDuration>,
    pub(super) expect: Expect,
}

/// The stub upstream's answer.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct UpstreamResponseSpec {
    #[serde(default)]
    pub(super) status: Option<u16>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub(super) body: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) body_text: Option<String>,
}

/// What the client should get, and what the upstream should have received.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Expect {
    #[serde(default)]
    pub(super) status: Option<u16>,
    /// Response headers with these exact values.
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub(super) headers_present: Vec<String>,
    #[serde(default)]
    pub(super) headers_absent: Vec<String>,
    /// A JSON body that contains this (objects may have more members).
    #[serde(default)]
    pub(super) body: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) body_exact: Option<String>,
    #[serde(default)]
    pub(super) body_contains: Option<String>,
    /// The value of the routing header on the request the upstream received.
    #[serde(default)]
    pub(super) routed_to: Option<String>,
    /// Whether the request reached the upstream, and with which headers.
    #[serde(default)]
    pub(super) upstream: Option<UpstreamExpect>,
}

/// `upstream: false`, `upstream: true`, or what the upstream must have received.
#[derive(Debug)]
pub(super) enum UpstreamExpect {
    NotReached,
    Reached(ReceivedExpect),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ReceivedExpect {
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub(super) headers_present: Vec<String>,
    #[serde(default)]
    pub(super) headers_absent: Vec<String>,
    #[serde(default)]
    pub(super) body: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for UpstreamExpect {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Flag(bool),
            Received(ReceivedExpect),
        }
        match Shape::deserialize(deserializer).map_err(|_| {
            de::Error::custom(
                "expected true, false, or {headers, headersPresent, headersAbsent, body}",
            )
        })? {
            Shape::Flag(false) => Ok(UpstreamExpect::NotReached),
            Shape::Flag(true) => Ok(UpstreamExpect::Reached(ReceivedExpect::default())),
            Shape::Received(received) => Ok(UpstreamExpect::Reached(received)),
        }
    }
}

/// A point in time: `2026-12-07T12:00:00Z` (UTC, optional fraction) or Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timestamp(pub SystemTime);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(|secs| Timestamp(UNIX_EPOCH + Duration::from_secs(secs)))
                .ok_or_else(|| de::Error::custom("Unix seconds must be a whole number >= 0")),
            serde_json::Value::String(s) => parse_rfc3339(&s).map(Timestamp).ok_or_else(|| {
                de::Error::custom(format!("{s:?} is not a UTC time like 2026-12-07T12:00:00Z"))
            }),
            _ => Err(de::Error::custom(
                "expected a UTC time like 2026-12-07T12:00:00Z or Unix seconds",
            )),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`: the one form test files need, without a date crate.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z').or_else(|| text.strip_suffix('z'))?;
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock = clock.splitn(3, ':').map(str::parse::<u64>);
    let (hour, minute, second) = (
        clock.next()?.ok()?,
        clock.next()?.ok()?,
        clock.next()?.ok()?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 || !fraction.bytes().all(|b| b.is_ascii_digit()) || fraction.len() > 9 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let nanos = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse::<u32>().ok()?
    };
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A test file could not be read or does not follow the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SuiteError {
    pub(super) file: PathBuf,
    /// `case "name" (tests[3])`, when the error is inside a case.
    pub(super) case: Option<String>,
    /// The field path, such as `tests[3].expect.status`.
    pub(super) path: Option<String>,
    pub(super) message: String,
}

impl fmt::Display for SuiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(case) = &self.case {
            write!(f, ": {case}")?;
        }
        if let Some(path) = &self.path {
            write!(f, ": {path}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl SuiteError {
    pub(super) fn new(file: &Path, message: impl Into<String>) -> SuiteError {
        SuiteError {
            file: file.to_owned(),
            case: None,
            path: None,
            message: message.into(),
        }
    }

    #[must_use]
    pub(super) fn at(mut self, path: impl Into<String>) -> SuiteError {
        self.path = Some(path.into());
        self
    }

    #[must_use]
    pub(super) fn in_case(mut self, case: impl Into<String>) -> SuiteError {
        self.case = Some(case.into());
        self
    }
}

/// Parses a test file, naming the case and field path of the first error.
pub(super) fn parse(file: &Path, text: &str) -> Result<SuiteSpec, SuiteError> {
    let mut yaml: serde_norway::Value = serde_norway::from_str(text)
        .map_err(|e| SuiteError::new(file, format!("not valid YAML: {e}")))?;
    // `<<: *anchor` merge keys (YAML 1.1), so claim sets can be written once and varied.
    yaml.apply_merge()
        .map_err(|e| SuiteError::new(file, format!("YAML merge keys: {e}")))?;
    let document = serde_json::to_value(&yaml)
        .map_err(|e| SuiteError::new(file, format!("not a JSON-shaped document: {e}")))?;
    deserialize_at(&document).map_err(|(path, message)| {
        let mut error = SuiteError::new(file, message);
        if let Some(case) = case_of(&document, &path) {
            error = error.in_case(case);
        }
        if path != "." {
            error = error.at(path);
        }
        error
    })
}

/// Deserializes with the field path of an error, as `modelgate serve` reports config errors.
fn deserialize_at<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        (path, e.into_inner().to_string())
    })
}

/// `case "name" (tests[3])` for an error under `tests[3]`.
pub(super) fn case_label(index: usize, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("case {name:?} (tests[{index}])"),
        None => format!("case tests[{index}]"),
    }
}

fn case_of(document: &serde_json::Value, path: &str) -> Option<String> {
    let rest = path.strip_prefix("tests[")?;
    let index: usize = rest.split(']').next()?.parse().ok()?;
    let name = document
        .get("tests")?
        .get(index)?
        .get("name")
        .and_then(serde_json::Value::as_str);
    Some(case_label(index, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn reads_utc_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(at(0)));
        assert_eq!(
            parse_rfc3339("2026-12-07T12:00:00Z"),
            Some(at(1_796_644_800))
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T23:59:59.5Z"),
            Some(at(951_868_799) + Duration::from_millis(500))
        );
        assert_eq!(parse_rfc3339("2026-12-07T12:00:00+01:00"), None);
        assert_eq!(parse_rfc3339("2026-13-07T12:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn errors_name_the_file_the_case_and_the_field_path() {
        let text = "policy: {file: p.json}\ntests:\n  - name: fine\n    expect: {status: 200}\n  - name: quota\n    expect: {status: many}\n";
        let error = parse(Path::new("a.test.yaml"), text).unwrap_err();
        assert_eq!(error.case.as_deref(), Some("case \"quota\" (tests[1])"));
        assert_eq!(error.path.as_deref(), Some("tests[1].expect.status"));
        assert!(
            error.to_string().starts_with(
                "a.test.yaml: case \"quota\" (tests[1]): tests[1].expect.status: invalid type"
            ),
            "{error}"
        );
    }

    #[test]
    fn unknown_fields_and_token_shapes_are_refused_with_their_path() {
        let text = "policy: {file: p.json}\ntests:\n  - name: a\n    expect: {stauts: 200}\n";
        let error = parse(Path::new("t.yaml"), text).unwrap_err();
        assert_eq!(error.path.as_deref(), Some("tests[0].expect.stauts"));
        assert!(error.message.contains("unknown field `stauts`"), "{error}");
        let text = "policy: {file: p.json}\ntests:\n  - name: a\n    request: {token: true}\n";
        let error = parse(Path::new("t.yaml"), text).unwrap_err();
        assert_eq!(error.path.as_deref(), Some("tests[0].request.token"));
    }

    #[test]
    fn merge_keys_vary_a_claim_set() {
        let text = "policy: {file: p.json}\ndefaults: {token: {key: k, claims: &c {sub: a, aud: x}}}\ntests:\n  - name: b\n    request: {token: {key: k, claims: {<<: *c, sub: b}}}\n    expect: {}\n";
        let suite = parse(Path::new("t.yaml"), text).unwrap();
        let Some(TokenSpec::Signed(token)) = &suite.tests[0].request.token else {
            panic!("a signed token")
        };
        assert_eq!(
            serde_json::Value::Object(token.claims.clone()),
            serde_json::json!({"sub": "b", "aud": "x"})
        );
    }

    #[test]
    fn a_full_case_parses() {
        let text = r"
policy: {envoyExtensionPolicy: p.yaml, patch: {jwt: {issuer: x}}, env: {K: v}}
keys: {rs: {algorithm: RS256, kid: k1, privateKeyFile: rs.pem}}
now: 2026-12-07T12:00:00Z
bufferLimit: 32Ki
defaults: {method: POST, headers: {content-type: application/json}}
tests:
  - name: quota
    request:
      path: /v1/models/m:predict
      body: {instances: [[1, 2]]}
      token: {key: rs, claims: {sub: a, exp: now+1h}}
    steps:
      - {repeat: 5, expect: {status: 200, routedTo: m, upstream: {headersAbsent: [authorization]}}}
      - {expect: {status: 429, headers: {retry-after: 1}, upstream: false}}
      - {advance: 1s, request: {token: false}, expect: {status: 401}}
";
        let suite = parse(Path::new("t.yaml"), text).unwrap();
        assert_eq!(suite.now, Some(Timestamp(at(1_796_644_800))));
        let case = &suite.tests[0];
        assert_eq!(case.steps.len(), 3);
        assert_eq!(case.steps[0].repeat, Some(5));
        assert_eq!(
            case.steps[1].expect.headers.get("retry-after"),
            Some(&Scalar("1".into()))
        );
        assert!(matches!(
            case.steps[1].expect.upstream,
            Some(UpstreamExpect::NotReached)
        ));
        assert!(matches!(case.steps[2].request.token, Some(TokenSpec::None)));
        assert!(matches!(case.request.token, Some(TokenSpec::Signed(_))));
    }
}
