//! Running one test file: the policy loaded into a fresh plugin per case (so no case sees
//! another's quota or token cache), the clock set to the case's time, each step's request
//! sent through the chain and compared with its expectation.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use modelgate_runtime::{FailurePolicy, FilterChain, ManualClock, PluginSpec, Runtime};
use serde_json::Value;

use super::exchange::{self, ClientRequest, StubResponse};
use super::expect::{self, Mismatch};
use super::suite::{
    self, CaseSpec, Expect, PolicySpec, RequestSpec, SuiteError, SuiteSpec, TokenSpec,
    UpstreamResponseSpec,
};
use super::tokens::Keys;
use crate::config::PolicySource;
use crate::plugin_source;
use crate::units::ByteSize;

/// When a file sets no `now`: a fixed time, so a file means the same thing every day.
const DEFAULT_NOW: &str = "2030-01-01T00:00:00Z";
/// Envoy Gateway v1.9's per-connection buffer limit for HTTP/1.1 (32 KiB), what a request
/// body meets in a cluster unless a `ClientTrafficPolicy` raises it
/// (internal/xds/translator/listener.go).
const DEFAULT_BUFFER_LIMIT: usize = 32 * 1024;
/// The header modelgate routes by, and the name `KServe` and the Inference Extension use.
const DEFAULT_ROUTING_HEADER: &str = "x-gateway-model-name";
/// As the gateway's defaults for a filter (host/src/config/filter.rs).
const MEMORY_LIMIT: usize = 256 << 20;
const CALLBACK_DEADLINE: Duration = Duration::from_secs(1);
/// How long a request may make no progress before the case fails as stalled. Nothing in a
/// test run waits on the outside world, so a request still open after this is one the filter
/// paused and never resumed; Envoy would hold it until a timeout.
const STALL: Duration = Duration::from_secs(5);

/// What the runner shares across files: the runtime (whose guests read `clock`) and the
/// module under test.
pub(super) struct Runner {
    pub(super) runtime: Runtime,
    pub(super) clock: Arc<ManualClock>,
    pub(super) wasm: Arc<[u8]>,
    /// Drives the async chain; the cases run one after another on this thread.
    pub(super) executor: tokio::runtime::Runtime,
}

/// The outcome of one case.
#[derive(Debug)]
pub(super) struct CaseResult {
    pub(super) name: String,
    pub(super) duration: Duration,
    /// `None` when it passed; else what to show under `FAILED`.
    pub(super) failure: Option<String>,
}

/// A loaded test file, ready to run.
pub(super) struct Suite {
    spec: SuiteSpec,
    base: PathBuf,
    policy: LoadedPolicy,
    keys: Keys,
    now: SystemTime,
    buffer_limit: usize,
    routing_header: String,
}

struct LoadedPolicy {
    config: Vec<u8>,
    root_id: String,
    fail_open: bool,
    env: Vec<(String, String)>,
}

impl Suite {
    /// Reads and checks a test file and everything it names.
    pub(super) fn load(file: &Path) -> Result<Suite, SuiteError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| SuiteError::new(file, format!("cannot read: {e}")))?;
        let spec = suite::parse(file, &text)?;
        let base = file.parent().unwrap_or(Path::new(".")).to_owned();
        let policy = load_policy(&spec.policy, &base).map_err(|(path, message)| {
            SuiteError::new(file, message).at(format!("policy.{path}"))
        })?;
        let keys = Keys::load(&spec.keys, &base)
            .map_err(|(path, message)| SuiteError::new(file, message).at(path))?;
        let now = match &spec.now {
            Some(now) => now.0,
            None => {
                serde_json::from_value::<suite::Timestamp>(Value::from(DEFAULT_NOW))
                    .map_err(|e| SuiteError::new(file, e.to_string()))?
                    .0
            }
        };
        for (i, case) in spec.tests.iter().enumerate() {
            check_case_shape(case).map_err(|(path, message)| {
                SuiteError::new(file, message)
                    .in_case(suite::case_label(i, Some(&case.name)))
                    .at(format!("tests[{i}]{path}"))
            })?;
        }
        Ok(Suite {
            buffer_limit: spec
                .buffer_limit
                .map_or(DEFAULT_BUFFER_LIMIT, ByteSize::as_usize),
            routing_header: spec
                .routing_header
                .clone()
                .unwrap_or_else(|| DEFAULT_ROUTING_HEADER.to_owned())
                .to_ascii_lowercase(),
            spec,
            base,
            policy,
            keys,
            now,
        })
    }

    /// The cases' names, in file order.
    pub(super) fn case_names(&self) -> impl Iterator<Item = &str> {
        self.spec.tests.iter().map(|c| c.name.as_str())
    }

    /// Runs case `index`.
    pub(super) fn run_case(&self, runner: &Runner, index: usize) -> CaseResult {
        let case = &self.spec.tests[index];
        let started = Instant::now();
        let failure = self.run_steps(runner, index, case).err();
        CaseResult {
            name: case.name.clone(),
            duration: started.elapsed(),
            failure,
        }
    }

    fn run_steps(&self, runner: &Runner, index: usize, case: &CaseSpec) -> Result<(), String> {
        static NEXT_VM: AtomicU64 = AtomicU64::new(0);
        let n = NEXT_VM.fetch_add(1, Ordering::Relaxed);
        let start = case.now.map_or(self.now, |t| t.0);
        runner.clock.set(start);
        let plugin = runner
            .runtime
            .load(PluginSpec {
                name: "modelgate".into(),
                root_id: self.policy.root_id.clone(),
                // A vm_id of its own: shared data (quotas) starts empty for every case.
                vm_id: format!("policy-test-{n}"),
                wasm: Arc::clone(&runner.wasm),
                vm_config: Vec::new(),
                plugin_config: self.policy.config.clone(),
                failure_policy: if self.policy.fail_open {
                    FailurePolicy::FailOpen
                } else {
                    FailurePolicy::FailClosed
                },
                allow_on_headers_stop_iteration: self.spec.allow_on_headers_stop_iteration,
                env: self.policy.env.clone(),
                vm_count: 1,
                memory_limit_bytes: MEMORY_LIMIT,
                callback_deadline: CALLBACK_DEADLINE,
            })
            .map_err(|e| {
                format!("    the policy did not load: {e} (the filter's log above says why)\n")
            })?;
        let chain = FilterChain::new(vec![plugin]).with_buffer_limit(self.buffer_limit);
        let at = format!("tests[{index}]");
        let stub = stub_response(case.upstream_response.as_ref());
        let steps = steps_of(&at, case);
        for (i, step) in steps.iter().enumerate() {
            if let Some(by) = step.advance {
                runner.clock.advance(by);
            }
            let request = self
                .request(&at, &case.request, step, start)
                .map_err(|(path, message)| format!("    {path}: {message}\n"))?;
            for repetition in 0..step.repeat {
                if repetition > 0
                    && let Some(by) = step.interval
                {
                    runner.clock.advance(by);
                }
                let sent = exchange::send(&chain, &request, &stub, runner.clock.now(), n);
                let outcome = runner
                    .executor
                    .block_on(async { tokio::time::timeout(STALL, sent).await })
                    .map_err(|_| stalled(&step.path, self.spec.allow_on_headers_stop_iteration))?
                    .map_err(|e| format!("    {}.request: {e}\n", step.path))?;
                let mismatches: Vec<Mismatch> =
                    expect::compare(step.expect, &self.routing_header, &outcome);
                if !mismatches.is_empty() {
                    let heading = heading(step, (i, steps.len()), repetition);
                    return Err(format!("{heading}{}", expect::render(&mismatches, "    ")));
                }
            }
        }
        Ok(())
    }

    /// The client request of a step: `defaults`, then the case's, then the step's fields.
    fn request(
        &self,
        at: &str,
        case: &RequestSpec,
        step: &Step<'_>,
        case_start: SystemTime,
    ) -> Result<ClientRequest, (String, String)> {
        let mut merged = Merged::default();
        merged.apply("defaults", &self.spec.defaults);
        merged.apply(&format!("{at}.request"), case);
        if let Some(request) = step.request {
            merged.apply(&format!("{}.request", step.path), request);
        }
        let path = merged.path.ok_or_else(|| {
            (
                format!("{at}.request.path"),
                "every request needs a path (here or in defaults)".to_owned(),
            )
        })?;
        let mut headers: BTreeMap<String, String> = merged.headers;
        let mut body = match merged.body {
            None | Some((_, Body::Json(Value::Null))) => Vec::new(),
            Some((_, Body::Json(value))) => {
                headers
                    .entry("content-type".into())
                    .or_insert_with(|| "application/json".into());
                value.to_string().into_bytes()
            }
            Some((_, Body::Text(text))) => text.into_bytes(),
            Some((field, Body::File(file))) => {
                let path = self.base.join(&file);
                std::fs::read(&path)
                    .map_err(|e| (field, format!("cannot read {}: {e}", path.display())))?
            }
        };
        if let Some(size) = merged.pad_to {
            body.resize(body.len().max(size.as_usize()), b' ');
        }
        if let Some((field, token)) = merged.token {
            let placed = match token {
                TokenSpec::None => None,
                TokenSpec::Raw(raw) => Some((raw, None, None)),
                TokenSpec::Signed(signed) => {
                    let jwt = self
                        .keys
                        .sign(&signed, case_start)
                        .map_err(|(sub, message)| (format!("{field}.{sub}"), message))?;
                    Some((jwt, signed.in_header.clone(), signed.prefix.clone()))
                }
            };
            if let Some((token, header, prefix)) = placed {
                let header = header.unwrap_or_else(|| "authorization".into());
                let prefix = prefix.unwrap_or_else(|| {
                    if header.eq_ignore_ascii_case("authorization") {
                        "Bearer ".into()
                    } else {
                        String::new()
                    }
                });
                headers.insert(header.to_ascii_lowercase(), format!("{prefix}{token}"));
            }
        }
        headers
            .entry("host".into())
            .or_insert_with(|| "localhost".into());
        // As an HTTP/1.1 client frames a body it has whole.
        if !body.is_empty() && !headers.contains_key("transfer-encoding") {
            headers
                .entry("content-length".into())
                .or_insert_with(|| body.len().to_string());
        }
        Ok(ClientRequest {
            method: merged.method.unwrap_or_else(|| "GET".into()),
            path,
            headers: headers.into_iter().collect(),
            body,
            client: merged
                .client_address
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        })
    }
}

static NO_EXPECTATION: Expect = Expect {
    status: None,
    headers: BTreeMap::new(),
    headers_present: Vec::new(),
    headers_absent: Vec::new(),
    body: None,
    body_exact: None,
    body_contains: None,
    routed_to: None,
    upstream: None,
};

/// The failure of a request the filter paused and never resumed.
fn stalled(step: &str, allow_on_headers_stop_iteration: bool) -> String {
    let hint = if allow_on_headers_stop_iteration {
        ""
    } else {
        " A filter that pauses the request headers to read the body (modelgate's \
         `openai.holdHeadersForBody`) gets no body under Envoy unless the plugin config sets \
         `allow_on_headers_stop_iteration`: set `allowOnHeadersStopIteration: true` in this \
         file when your deployment sets it (docs/deploy.md)."
    };
    format!(
        "    {step}.request: stalled: no answer after {}s, the filter paused the request and \
         never resumed it (Envoy would hold it until a timeout).{hint}\n",
        STALL.as_secs()
    )
}

/// The steps of a case; a case without `steps` is one step.
fn steps_of<'a>(at: &str, case: &'a CaseSpec) -> Vec<Step<'a>> {
    if case.steps.is_empty() {
        return vec![Step {
            path: at.to_owned(),
            advance: None,
            request: None,
            repeat: case.repeat.unwrap_or(1),
            interval: case.interval.map(|d| d.0),
            expect: case.expect.as_ref().unwrap_or(&NO_EXPECTATION),
        }];
    }
    case.steps
        .iter()
        .enumerate()
        .map(|(i, step)| Step {
            path: format!("{at}.steps[{i}]"),
            advance: step.advance.map(|d| d.0),
            request: Some(&step.request),
            repeat: step.repeat.unwrap_or(1),
            interval: step.interval.map(|d| d.0),
            expect: &step.expect,
        })
        .collect()
}

/// Where in a sequence a failure happened: `    step 2 of 4, request 3 of 5 (tests[7].steps[1]):`.
fn heading(step: &Step<'_>, (index, steps): (usize, usize), repetition: u32) -> String {
    let mut place = Vec::new();
    if steps > 1 {
        place.push(format!("step {} of {steps}", index + 1));
    }
    if step.repeat > 1 {
        place.push(format!("request {} of {}", repetition + 1, step.repeat));
    }
    if place.is_empty() {
        String::new()
    } else {
        format!("    {} ({}):\n", place.join(", "), step.path)
    }
}

/// A step as the runner executes it (a case without steps is one step).
struct Step<'a> {
    path: String,
    advance: Option<Duration>,
    request: Option<&'a RequestSpec>,
    repeat: u32,
    interval: Option<Duration>,
    expect: &'a Expect,
}

enum Body {
    Json(Value),
    Text(String),
    File(PathBuf),
}

/// Request fields merged layer over layer, each remembering the field path it came from.
#[derive(Default)]
struct Merged {
    method: Option<String>,
    path: Option<String>,
    headers: BTreeMap<String, String>,
    body: Option<(String, Body)>,
    pad_to: Option<ByteSize>,
    token: Option<(String, TokenSpec)>,
    client_address: Option<IpAddr>,
}

impl Merged {
    fn apply(&mut self, at: &str, layer: &RequestSpec) {
        if let Some(method) = &layer.method {
            self.method = Some(method.clone());
        }
        if let Some(path) = &layer.path {
            self.path = Some(path.clone());
        }
        for (name, value) in &layer.headers {
            let name = name.to_ascii_lowercase();
            match value {
                Some(value) => {
                    self.headers.insert(name, value.0.clone());
                }
                None => {
                    self.headers.remove(&name);
                }
            }
        }
        if let Some(body) = &layer.body {
            self.body = Some((format!("{at}.body"), Body::Json(body.clone())));
        }
        if let Some(text) = &layer.body_text {
            self.body = Some((format!("{at}.bodyText"), Body::Text(text.clone())));
        }
        if let Some(file) = &layer.body_file {
            self.body = Some((format!("{at}.bodyFile"), Body::File(file.clone())));
        }
        if layer.pad_to.is_some() {
            self.pad_to = layer.pad_to;
        }
        if let Some(token) = &layer.token {
            self.token = Some((format!("{at}.token"), token.clone()));
        }
        if layer.client_address.is_some() {
            self.client_address = layer.client_address;
        }
    }
}

/// A case is a request with one expectation (maybe repeated), or steps; never both.
fn check_case_shape(case: &CaseSpec) -> Result<(), (String, String)> {
    for (i, step) in case.steps.iter().enumerate() {
        let bodies = [
            step.request.body.is_some(),
            step.request.body_text.is_some(),
            step.request.body_file.is_some(),
        ];
        if bodies.iter().filter(|b| **b).count() > 1 {
            return Err((
                format!(".steps[{i}].request"),
                "give one of body, bodyText, bodyFile".into(),
            ));
        }
    }
    let bodies = [
        case.request.body.is_some(),
        case.request.body_text.is_some(),
        case.request.body_file.is_some(),
    ];
    if bodies.iter().filter(|b| **b).count() > 1 {
        return Err((
            ".request".into(),
            "give one of body, bodyText, bodyFile".into(),
        ));
    }
    match (case.steps.is_empty(), &case.expect) {
        (true, None) => Err((
            String::new(),
            "a case needs `expect` (with an optional `repeat`) or `steps`".into(),
        )),
        (false, Some(_)) => Err((
            ".expect".into(),
            "a case with `steps` gives each step its own `expect`".into(),
        )),
        (false, None) if case.repeat.is_some() || case.interval.is_some() => Err((
            ".repeat".into(),
            "a case with `steps` repeats inside a step".into(),
        )),
        _ => match case.repeat {
            Some(0) => Err((".repeat".into(), "repeat must be at least 1".into())),
            _ => Ok(()),
        },
    }
}

fn stub_response(spec: Option<&UpstreamResponseSpec>) -> StubResponse {
    let spec = spec.cloned().unwrap_or_default();
    let mut headers: Vec<(String, String)> = spec
        .headers
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.0))
        .collect();
    let body = match (spec.body, spec.body_text) {
        (Some(json), _) => {
            if !headers.iter().any(|(k, _)| k == "content-type") {
                headers.push(("content-type".into(), "application/json".into()));
            }
            Some(json.to_string().into_bytes())
        }
        (None, Some(text)) => Some(text.into_bytes()),
        (None, None) => None,
    };
    StubResponse {
        status: spec.status.unwrap_or(200),
        headers,
        body,
    }
}

/// The plugin configuration, root id and environment the policy gives; errors name the field
/// under `policy`.
fn load_policy(spec: &PolicySpec, base: &Path) -> Result<LoadedPolicy, (String, String)> {
    let (config, root_id, fail_open, allowed_env) = match (&spec.file, &spec.envoy_extension_policy)
    {
        (Some(file), None) => {
            let path = base.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                (
                    "file".to_owned(),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            // YAML is a superset of JSON: one parser reads both.
            let value: Value = serde_norway::from_str(&text).map_err(|e| {
                (
                    "file".to_owned(),
                    format!("{} is not JSON or YAML: {e}", path.display()),
                )
            })?;
            (value, None, false, None)
        }
        (None, Some(file)) => {
            let source = PolicySource {
                file: base.join(file),
                wasm_name: spec.wasm_name.clone(),
            };
            let entry = plugin_source::read_policy(&source)
                .map_err(|e| ("envoyExtensionPolicy".to_owned(), e))?;
            let value: Value = if entry.config.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&entry.config)
                    .map_err(|e| ("envoyExtensionPolicy".to_owned(), e.to_string()))?
            };
            (
                value,
                entry.root_id,
                entry.fail_open.unwrap_or(false),
                Some(entry.host_keys),
            )
        }
        _ => {
            return Err((
                String::new(),
                "give exactly one of `file` and `envoyExtensionPolicy`".into(),
            ));
        }
    };
    let mut config = config;
    if let Some(patch) = &spec.patch {
        merge_patch(&mut config, patch);
    }
    if let Some(allowed) = &allowed_env
        && let Some(name) = spec.env.keys().find(|k| !allowed.contains(k))
    {
        return Err((
            format!("env.{name}"),
            format!(
                "the policy's env.hostKeys ({}) does not list {name}, so Envoy would not pass it to the VM",
                allowed.join(", ")
            ),
        ));
    }
    let config = if config.is_null() {
        Vec::new()
    } else {
        config.to_string().into_bytes()
    };
    Ok(LoadedPolicy {
        config,
        root_id: spec.root_id.clone().or(root_id).unwrap_or_default(),
        fail_open,
        env: spec.env.clone().into_iter().collect(),
    })
}

/// RFC 7386 JSON merge patch: objects merge member by member, `null` removes, anything else
/// replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(members) = target {
        for (key, value) in patch {
            if value.is_null() {
                members.remove(key);
            } else {
                merge_patch(members.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The examples of RFC 7386 section 3.
        let mut target = serde_json::json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(
            &mut target,
            &serde_json::json!({"a": "z", "c": {"f": null}}),
        );
        assert_eq!(target, serde_json::json!({"a": "z", "c": {"d": "e"}}));
        let mut target = serde_json::json!({"a": [1]});
        merge_patch(&mut target, &serde_json::json!({"a": {"b": "c"}}));
        assert_eq!(target, serde_json::json!({"a": {"b": "c"}}));
        let mut target = serde_json::json!(["a"]);
        merge_patch(&mut target, &serde_json::json!({"b": "c"}));
        assert_eq!(target, serde_json::json!({"b": "c"}));
    }

    #[test]
    fn a_case_is_expect_or_steps() {
        let case = |yaml: &str| -> CaseSpec { serde_norway::from_str(yaml).unwrap() };
        assert!(check_case_shape(&case("{name: a, expect: {status: 200}}")).is_ok());
        assert_eq!(check_case_shape(&case("{name: a}")).unwrap_err().0, "");
        assert_eq!(
            check_case_shape(&case("{name: a, expect: {}, steps: [{expect: {}}]}"))
                .unwrap_err()
                .0,
            ".expect"
        );
        assert_eq!(
            check_case_shape(&case("{name: a, repeat: 2, steps: [{expect: {}}]}"))
                .unwrap_err()
                .0,
            ".repeat"
        );
        assert_eq!(
            check_case_shape(&case(
                "{name: a, request: {body: {}, bodyText: x}, expect: {}}"
            ))
            .unwrap_err()
            .0,
            ".request"
        );
    }
}
