//! `RawConfig` -> [`Engine`]: every check that can be made once is made here, and every
//! error names the field path it is about.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use crate::authz::Requirements;
use crate::config::{
    CloudEvents, ElementType, ExplainFormat, RawBodyModel, RawConfig, RawJwks, RawJwt, RawLimitKey,
    RawModel, RawModelOpenAi, RawModelValidation, RawOpenAi, RawProtocol, RawQuota, RawRemoteJwks,
    RawTokenSource, RawV2Input, UntilFetched,
};
use crate::engine::{BodyModel, Engine, LimitKey, ProtectedHeader};
use crate::error::ConfigError;
use crate::jwks::{self, ALL_ALGS, HMAC_ALGS};
use crate::jwt::{KeySource, TokenSource, Verifier};
use crate::kserve_v1::V1Rules;
use crate::kserve_v2::{Datatype, DeclaredInput, NUMPY_MAX_DIMS, V2Rules};
use crate::models::ModelOpenAi;
use crate::models::{Model, Models};
use crate::openai::{ANONYMOUS, AUTHENTICATED, OTHER};
use crate::openai::{CallerClass, OpenAiRoutes};
use crate::ratelimit::{DEFAULT_MAX_KEYS, Quota};
use crate::remote_jwks::{self, RemoteKeys};
use crate::routing::valid_name;
use crate::token_budget::TokenBudget;
use crate::token_cache::TokenCache;

/// `env` looks up the environment variables that `kFromEnv` names.
pub(crate) fn compile(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Engine, ConfigError> {
    if raw.version != 1 {
        return Err(ConfigError::at(
            "version",
            format!("unsupported version {}, expected 1", raw.version),
        ));
    }
    let routing_header = header_name(&raw.routing.header, "routing.header")?;
    let body_model = raw.routing.body_model.map(compile_body_model).transpose()?;
    let jwt = raw.jwt.map(|jwt| compile_jwt(jwt, env)).transpose()?;
    let openai = raw
        .openai
        .map(|o| compile_openai(o, jwt.is_some(), body_model.as_ref()))
        .transpose()?;

    let limit_key = compile_limit_key(raw.rate_limit.key.clone(), jwt.is_some())?;
    let key_header = raw
        .rate_limit
        .key_header
        .as_deref()
        .map(|h| header_name(h, "rateLimit.keyHeader"))
        .transpose()?;

    let protected_headers = std::iter::once(&routing_header)
        .chain(jwt.iter().flat_map(|j| j.forward.iter().map(|(_, h)| h)))
        .chain(key_header.iter())
        .map(|h| ProtectedHeader::new(Arc::clone(h)))
        .collect();

    if raw.validation.max_body_bytes == 0 {
        return Err(ConfigError::at(
            "validation.maxBodyBytes",
            "must be greater than 0",
        ));
    }

    let max_keys = NonZeroU32::new(raw.rate_limit.max_keys.unwrap_or(DEFAULT_MAX_KEYS))
        .ok_or_else(|| ConfigError::at("rateLimit.maxKeys", "must be greater than 0"))?;

    let mut models = Models::default();
    for (name, model) in raw.models {
        let path = format!("models.{name}");
        if !valid_name(&name) {
            return Err(ConfigError::at(
                &path,
                "model names may hold only letters, digits, '-', '_' and '.'",
            ));
        }
        for (i, alias) in model.aliases.iter().enumerate() {
            if !valid_name(alias) {
                return Err(ConfigError::at(
                    &format!("{path}.aliases[{i}]"),
                    "aliases may hold only letters, digits, '-', '_' and '.'",
                ));
            }
        }
        let aliases = model.aliases.clone();
        let compiled = compile_model(
            &name,
            model,
            &path,
            jwt.is_some(),
            raw.validation.cloud_events,
            max_keys,
        )?;
        if compiled.openai.is_some() && openai.is_none() {
            return Err(ConfigError::at(
                &format!("{path}.protocols"),
                "openai needs the top-level openai section",
            ));
        }
        models.insert(compiled, &aliases).map_err(|taken| {
            ConfigError::at(
                &format!("{path}.aliases"),
                format!("name {taken} is already taken"),
            )
        })?;
    }

    Ok(Engine {
        log_level: raw.log_level,
        failure_mode: raw.failure_mode,
        routing_header,
        protected_headers,
        lookalike_headers: raw.lookalike_headers,
        unknown_model: raw.routing.unknown_model,
        list_models: raw.routing.list_models,
        body_model,
        models,
        jwt,
        limit_key,
        shadow: raw.rate_limit.shadow,
        key_header,
        max_body_bytes: raw.validation.max_body_bytes,
        openai,
    })
}

/// What identifies a caller: the `sub` claim with JWT configured, else the client address.
fn compile_limit_key(raw: Option<RawLimitKey>, has_jwt: bool) -> Result<LimitKey, ConfigError> {
    let default_key = if has_jwt {
        RawLimitKey::Claim("sub".to_owned())
    } else {
        RawLimitKey::ClientAddress
    };
    Ok(match raw.unwrap_or(default_key) {
        RawLimitKey::Claim(c) => {
            if !has_jwt {
                return Err(ConfigError::at(
                    "rateLimit.key.claim",
                    "keying by a claim needs jwt to be configured",
                ));
            }
            LimitKey::Claim(c)
        }
        RawLimitKey::Header(h) => {
            LimitKey::Header(header_name(&h, "rateLimit.key.header")?.to_string())
        }
        RawLimitKey::ClientAddress => LimitKey::ClientAddress,
    })
}

/// The `openai` section; `body_model` may not list its endpoints.
fn compile_openai(
    raw: RawOpenAi,
    has_jwt: bool,
    body_model: Option<&BodyModel>,
) -> Result<OpenAiRoutes, ConfigError> {
    let prefix_ok = raw.prefix.is_empty()
        || (raw.prefix.starts_with('/')
            && raw.prefix[1..].split('/').all(|s| {
                !s.is_empty()
                    && s != "."
                    && s != ".."
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            }));
    if !prefix_ok {
        return Err(ConfigError::at(
            "openai.prefix",
            "must be empty or '/' followed by path segments, without a trailing '/'",
        ));
    }
    let caller_class = match raw.caller_class {
        None => None,
        Some(_) if !has_jwt => {
            return Err(ConfigError::at(
                "openai.callerClass",
                "a caller class read from a claim needs jwt to be configured",
            ));
        }
        Some(class) => {
            if class.claim.is_empty() {
                return Err(ConfigError::at(
                    "openai.callerClass.claim",
                    "must not be empty",
                ));
            }
            if class.values.len() > 16 {
                return Err(ConfigError::at(
                    "openai.callerClass.values",
                    "at most 16 values (each is a metric label)",
                ));
            }
            for (i, value) in class.values.iter().enumerate() {
                let label = !value.is_empty()
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !label || [ANONYMOUS, AUTHENTICATED, OTHER].contains(&value.as_str()) {
                    return Err(ConfigError::at(
                        &format!("openai.callerClass.values[{i}]"),
                        "must hold only letters, digits, '-' and '_', and not be anonymous, authenticated or other",
                    ));
                }
            }
            Some(CallerClass {
                claim: class.claim,
                values: class.values.into_iter().map(Arc::from).collect(),
            })
        }
    };
    let routes = OpenAiRoutes {
        prefix: raw.prefix,
        hold_headers: raw.hold_headers_for_body,
        caller_class,
    };
    if let Some(i) =
        body_model.and_then(|b| b.paths.iter().position(|p| routes.classify(p).is_some()))
    {
        return Err(ConfigError::at(
            &format!("routing.bodyModel.paths[{i}]"),
            "is an OpenAI endpoint, which the openai section handles",
        ));
    }
    Ok(routes)
}

/// The completion bound reserved when neither the request nor `defaultMaxTokens` sets one.
const DEFAULT_MAX_TOKENS: u32 = 256;

/// The largest `n` when `maxN` is not set.
const DEFAULT_MAX_N: u32 = 16;

fn compile_model_openai(
    name: &str,
    raw: &RawModelOpenAi,
    path: &str,
    max_keys: NonZeroU32,
) -> Result<ModelOpenAi, ConfigError> {
    let positive = |value: Option<u32>, field: &str| match value {
        Some(0) => Err(ConfigError::at(
            &format!("{path}.{field}"),
            "must be greater than 0",
        )),
        other => Ok(other.map(u64::from)),
    };
    let max_tokens = positive(raw.max_tokens, "maxTokens")?;
    let default_max_tokens = positive(raw.default_max_tokens, "defaultMaxTokens")?
        .or(max_tokens)
        .unwrap_or(u64::from(DEFAULT_MAX_TOKENS));
    if max_tokens.is_some_and(|most| default_max_tokens > most) {
        return Err(ConfigError::at(
            &format!("{path}.defaultMaxTokens"),
            "must not be more than maxTokens",
        ));
    }
    let max_n = positive(raw.max_n, "maxN")?.unwrap_or(u64::from(DEFAULT_MAX_N));
    let bytes_per_token = positive(raw.bytes_per_token, "bytesPerToken")?.unwrap_or(1);
    let mut windows = Vec::with_capacity(raw.token_budgets.len());
    for (i, budget) in raw.token_budgets.iter().enumerate() {
        let at = format!("{path}.tokenBudgets[{i}]");
        if budget.tokens == 0 {
            return Err(ConfigError::at(
                &format!("{at}.tokens"),
                "must be greater than 0",
            ));
        }
        if windows.iter().any(|(_, per)| *per == budget.per) {
            return Err(ConfigError::at(
                &format!("{at}.per"),
                format!("a second budget per {}", budget.per.as_str()),
            ));
        }
        windows.push((budget.tokens, budget.per));
    }
    let budget = (!windows.is_empty()).then(|| TokenBudget::new(name, &windows, max_keys));
    Ok(ModelOpenAi {
        max_tokens,
        default_max_tokens,
        max_n,
        bytes_per_token,
        budget,
    })
}

fn compile_body_model(raw: RawBodyModel) -> Result<BodyModel, ConfigError> {
    if raw.field.is_empty() {
        return Err(ConfigError::at(
            "routing.bodyModel.field",
            "must not be empty",
        ));
    }
    if raw.paths.is_empty() {
        return Err(ConfigError::at(
            "routing.bodyModel.paths",
            "must not be empty",
        ));
    }
    for (i, p) in raw.paths.iter().enumerate() {
        if !p.starts_with('/') || p.contains(['?', '#', '%']) {
            return Err(ConfigError::at(
                &format!("routing.bodyModel.paths[{i}]"),
                "must be a plain path starting with '/'",
            ));
        }
    }
    Ok(BodyModel {
        field: raw.field,
        paths: raw.paths,
    })
}

/// A header name, lower-cased, with only token characters (RFC 9110).
fn header_name(name: &str, path: &str) -> Result<Arc<str>, ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        return Err(ConfigError::at(
            path,
            format!("invalid header name {name:?}"),
        ));
    }
    Ok(Arc::from(name.to_ascii_lowercase()))
}

fn compile_jwt(raw: RawJwt, env: &dyn Fn(&str) -> Option<String>) -> Result<Verifier, ConfigError> {
    if raw.issuer.is_empty() {
        return Err(ConfigError::at("jwt.issuer", "must not be empty"));
    }
    let allowed = match &raw.algorithms {
        None => ALL_ALGS.to_vec(),
        Some(names) => {
            if names.is_empty() {
                return Err(ConfigError::at("jwt.algorithms", "must not be empty"));
            }
            names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    jwks::parse_algorithm(n)
                        .map_err(|m| ConfigError::at(&format!("jwt.algorithms[{i}]"), m))
                })
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    let keys = compile_keys(raw.jwks.as_ref(), raw.remote_jwks.as_ref(), &allowed, env)?;
    let sources = compile_sources(raw.token_sources)?;
    let forward = raw
        .forward_claims
        .into_iter()
        .map(|(claim, header)| {
            let path = format!("jwt.forwardClaims.{claim}");
            Ok((claim, header_name(&header, &path)?))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    if raw.max_token_bytes == 0 {
        return Err(ConfigError::at(
            "jwt.maxTokenBytes",
            "must be greater than 0",
        ));
    }
    if raw.realm.contains(['"', '\\']) || raw.realm.bytes().any(|b| b < 0x20) {
        return Err(ConfigError::at(
            "jwt.realm",
            "must not contain quotes, backslashes or control characters",
        ));
    }
    Ok(Verifier {
        keys,
        issuer: raw.issuer,
        audiences: raw.audiences.into_vec(),
        leeway: raw.leeway_seconds,
        sources,
        forward,
        max_token_bytes: raw.max_token_bytes,
        realm: raw.realm,
        strip_authorization: raw.strip_authorization.then(|| Arc::from("authorization")),
        cache: TokenCache::new(raw.cache_size),
    })
}

/// The keys tokens are verified with: inline, remote, or remote with inline ones until the
/// first good fetch.
fn compile_keys(
    inline: Option<&RawJwks>,
    remote: Option<&RawRemoteJwks>,
    allowed: &[jsonwebtoken::Algorithm],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<KeySource, ConfigError> {
    let inline_keys = |jwks: &RawJwks| -> Result<Vec<jwks::Key>, ConfigError> {
        if jwks.keys.is_empty() {
            return Err(ConfigError::at(
                "jwt.jwks.keys",
                "must hold at least one key",
            ));
        }
        let mut keys = Vec::with_capacity(jwks.keys.len());
        for (i, jwk) in jwks.keys.iter().enumerate() {
            let path = format!("jwt.jwks.keys[{i}]");
            let key = jwks::compile_key(jwk, allowed, &path, env)?;
            if key.kid.is_some() && keys.iter().any(|k: &jwks::Key| k.kid == key.kid) {
                return Err(ConfigError::at(&format!("{path}.kid"), "duplicate kid"));
            }
            keys.push(key);
        }
        Ok(keys)
    };
    let Some(remote) = remote else {
        return match inline {
            Some(jwks) => Ok(KeySource::Inline(inline_keys(jwks)?.into())),
            None => Err(ConfigError::at(
                "jwt",
                "one of jwks and remoteJwks is required",
            )),
        };
    };
    let bootstrap = match (remote.until_fetched, inline) {
        (UntilFetched::InlineKeys, Some(jwks)) => inline_keys(jwks)?,
        (UntilFetched::InlineKeys, None) => {
            return Err(ConfigError::at(
                "jwt.remoteJwks.untilFetched",
                "\"inlineKeys\" needs jwt.jwks",
            ));
        }
        (UntilFetched::Deny, Some(_)) => {
            return Err(ConfigError::at(
                "jwt.jwks",
                "with remoteJwks, inline keys are only used with untilFetched: \"inlineKeys\"",
            ));
        }
        (UntilFetched::Deny, None) => Vec::new(),
    };
    let settings = remote_settings(remote)?;
    // A secret published at a URI is no secret: HMAC keys only ever come from the config.
    let remote_allowed: Vec<_> = allowed
        .iter()
        .copied()
        .filter(|a| !HMAC_ALGS.contains(a))
        .collect();
    if remote_allowed.is_empty() {
        return Err(ConfigError::at(
            "jwt.algorithms",
            "remoteJwks needs an asymmetric algorithm: HMAC keys are never fetched",
        ));
    }
    Ok(KeySource::Remote(RemoteKeys::new(
        settings,
        remote_allowed,
        bootstrap,
    )))
}

fn remote_settings(raw: &RawRemoteJwks) -> Result<remote_jwks::Settings, ConfigError> {
    let at = |field: &str| format!("jwt.remoteJwks.{field}");
    if raw.cluster.is_empty() {
        return Err(ConfigError::at(&at("cluster"), "must name a cluster"));
    }
    if raw.authority.is_empty() || raw.authority.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ConfigError::at(
            &at("authority"),
            "must be a host name without spaces or control characters",
        ));
    }
    if !raw.path.starts_with('/') || raw.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ConfigError::at(
            &at("path"),
            "must start with / and hold no spaces or control characters",
        ));
    }
    if raw.timeout_ms == 0 || raw.timeout_ms > 60_000 {
        return Err(ConfigError::at(
            &at("timeoutMs"),
            "must be between 1 and 60000",
        ));
    }
    if raw.refresh_interval_seconds == 0 {
        return Err(ConfigError::at(
            &at("refreshIntervalSeconds"),
            "must be greater than 0",
        ));
    }
    if raw.min_refresh_interval_seconds == 0
        || raw.min_refresh_interval_seconds > raw.refresh_interval_seconds
    {
        return Err(ConfigError::at(
            &at("minRefreshIntervalSeconds"),
            "must be between 1 and refreshIntervalSeconds",
        ));
    }
    Ok(remote_jwks::Settings {
        cluster: raw.cluster.clone(),
        authority: raw.authority.clone(),
        path: raw.path.clone(),
        timeout: Duration::from_millis(u64::from(raw.timeout_ms)),
        refresh_interval: Duration::from_secs(raw.refresh_interval_seconds),
        min_refresh_interval: Duration::from_secs(raw.min_refresh_interval_seconds),
    })
}

fn compile_sources(raw: Option<Vec<RawTokenSource>>) -> Result<Vec<TokenSource>, ConfigError> {
    Ok(match raw {
        None => vec![TokenSource::Header {
            name: "authorization".to_owned(),
            prefix: "Bearer ".to_owned(),
        }],
        Some(list) => {
            if list.is_empty() {
                return Err(ConfigError::at("jwt.tokenSources", "must not be empty"));
            }
            let mut out = Vec::with_capacity(list.len());
            for (i, s) in list.into_iter().enumerate() {
                let path = format!("jwt.tokenSources[{i}]");
                out.push(match (s.header, s.query) {
                    (Some(h), None) => TokenSource::Header {
                        name: header_name(&h, &format!("{path}.header"))?.to_string(),
                        prefix: s.prefix.unwrap_or_default(),
                    },
                    (None, Some(q)) if s.prefix.is_none() && !q.is_empty() => TokenSource::Query(q),
                    (None, Some(_)) if s.prefix.is_some() => {
                        return Err(ConfigError::at(
                            &format!("{path}.prefix"),
                            "only header sources take a prefix",
                        ));
                    }
                    _ => {
                        return Err(ConfigError::at(
                            &path,
                            "set exactly one of header or query (non-empty)",
                        ));
                    }
                });
            }
            out
        }
    })
}

fn compile_model(
    name: &str,
    raw: RawModel,
    path: &str,
    has_jwt: bool,
    cloud_events: CloudEvents,
    max_keys: NonZeroU32,
) -> Result<Model, ConfigError> {
    let (v1, v2, openai) = match &raw.protocols {
        None => (true, true, false),
        Some(list) if list.is_empty() => {
            return Err(ConfigError::at(
                &format!("{path}.protocols"),
                "must not be empty",
            ));
        }
        Some(list) => (
            list.contains(&RawProtocol::V1),
            list.contains(&RawProtocol::V2),
            list.contains(&RawProtocol::OpenAi),
        ),
    };
    let openai = match (openai, raw.openai) {
        (true, settings) => Some(compile_model_openai(
            name,
            &settings.unwrap_or_default(),
            &format!("{path}.openai"),
            max_keys,
        )?),
        (false, None) => None,
        (false, Some(_)) => {
            return Err(ConfigError::at(
                &format!("{path}.openai"),
                "the model does not list openai in protocols",
            ));
        }
    };
    let mut claims = Vec::with_capacity(raw.required_claims.len());
    for (claim, values) in raw.required_claims {
        let values = values.into_vec();
        if values.is_empty() {
            return Err(ConfigError::at(
                &format!("{path}.requiredClaims.{claim}"),
                "must list at least one value",
            ));
        }
        claims.push((claim, values));
    }
    let admin = match raw.admin_scopes {
        None => None,
        Some(scopes) if scopes.is_empty() => {
            return Err(ConfigError::at(
                &format!("{path}.adminScopes"),
                "must list at least one scope (leave it out to refuse the repository API)",
            ));
        }
        Some(_) if !has_jwt => {
            return Err(ConfigError::at(
                &format!("{path}.adminScopes"),
                "adminScopes need jwt to be configured",
            ));
        }
        // The model's claim requirements (a tenant, say) hold for its administrators too.
        Some(scopes) => Some(Requirements::new(scopes, claims.clone())),
    };
    let requirements = Requirements::new(raw.required_scopes, claims);
    if !requirements.is_empty() && !has_jwt {
        return Err(ConfigError::at(
            path,
            "requiredScopes and requiredClaims need jwt to be configured",
        ));
    }
    let quota = raw
        .rate_limit
        .map(|q| compile_quota(name, &q, &format!("{path}.rateLimit"), max_keys))
        .transpose()?;
    let explain = raw
        .validation
        .as_ref()
        .map_or(ExplainFormat::default(), |v| v.explain);
    let (v1_rules, v2_rules) = match raw.validation {
        None => (
            V1Rules {
                cloud_events,
                ..V1Rules::default()
            },
            V2Rules::default(),
        ),
        Some(v) => compile_validation(v, &format!("{path}.validation"), cloud_events)?,
    };
    Ok(Model {
        name: Arc::from(name),
        v1,
        v2,
        requirements,
        admin,
        quota,
        v1_rules,
        v2_rules,
        explain,
        openai,
    })
}

fn compile_validation(
    v: RawModelValidation,
    vpath: &str,
    cloud_events: CloudEvents,
) -> Result<(V1Rules, V2Rules), ConfigError> {
    if v.feature_count == Some(0) {
        return Err(ConfigError::at(
            &format!("{vpath}.featureCount"),
            "must be greater than 0",
        ));
    }
    if v.max_instances == Some(0) {
        return Err(ConfigError::at(
            &format!("{vpath}.maxInstances"),
            "must be greater than 0",
        ));
    }
    let inputs = v
        .v2_inputs
        .map(|list| compile_v2_inputs(list, &format!("{vpath}.v2Inputs"), v.element_type))
        .transpose()?;
    let v1 = V1Rules {
        feature_count: v.feature_count,
        max_instances: v.max_instances,
        element_type: v.element_type.unwrap_or_default(),
        cloud_events,
    };
    let v2 = V2Rules {
        inputs,
        feature_count: v.feature_count.map(to_u64),
        max_instances: v.max_instances.map(to_u64),
        element_type: v.element_type,
    };
    Ok((v1, v2))
}

fn compile_v2_inputs(
    list: Vec<RawV2Input>,
    path: &str,
    element_type: Option<ElementType>,
) -> Result<Vec<DeclaredInput>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::at(path, "must not be empty"));
    }
    let mut declared: Vec<DeclaredInput> = Vec::with_capacity(list.len());
    for (i, raw) in list.into_iter().enumerate() {
        let at = |field: &str| format!("{path}[{i}].{field}");
        if raw.name.is_empty() {
            return Err(ConfigError::at(&at("name"), "must not be empty"));
        }
        if declared.iter().any(|d| d.name == raw.name) {
            return Err(ConfigError::at(
                &at("name"),
                format!("input {:?} is declared twice", raw.name),
            ));
        }
        let Some(datatype) = Datatype::parse(&raw.datatype) else {
            return Err(ConfigError::at(
                &at("datatype"),
                format!(
                    "unknown datatype {:?}, expected one of BOOL, UINT8, UINT16, UINT32, UINT64, \
                     INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES, BF16",
                    raw.datatype
                ),
            ));
        };
        if let Some(element) = element_type
            && !datatype.is(element)
        {
            return Err(ConfigError::at(
                &at("datatype"),
                format!("{} does not hold the model's elementType", raw.datatype),
            ));
        }
        if raw.shape.len() > NUMPY_MAX_DIMS {
            return Err(ConfigError::at(
                &at("shape"),
                format!("at most {NUMPY_MAX_DIMS} dimensions (numpy's limit)"),
            ));
        }
        let mut shape = Vec::with_capacity(raw.shape.len());
        for (j, dim) in raw.shape.iter().enumerate() {
            shape.push(match *dim {
                -1 => None,
                d if d > 0 => Some(d.unsigned_abs()),
                _ => {
                    return Err(ConfigError::at(
                        &format!("{path}[{i}].shape[{j}]"),
                        "must be -1 (any size) or greater than 0",
                    ));
                }
            });
        }
        declared.push(DeclaredInput {
            name: raw.name,
            datatype: raw.datatype,
            shape,
        });
    }
    Ok(declared)
}

fn compile_quota(
    model: &str,
    raw: &RawQuota,
    path: &str,
    max_keys: NonZeroU32,
) -> Result<Quota, ConfigError> {
    let positive = |value: u32, field: &str| {
        NonZeroU32::new(value)
            .ok_or_else(|| ConfigError::at(&format!("{path}.{field}"), "must be greater than 0"))
    };
    let (rate, per) = match (raw.requests_per_second, raw.requests_per_minute) {
        (Some(r), None) => (positive(r, "requestsPerSecond")?, Duration::from_secs(1)),
        (None, Some(r)) => (positive(r, "requestsPerMinute")?, Duration::from_mins(1)),
        _ => {
            return Err(ConfigError::at(
                path,
                "set exactly one of requestsPerSecond or requestsPerMinute",
            ));
        }
    };
    let burst = match raw.burst {
        None => rate,
        Some(b) => positive(b, "burst")?,
    };
    Ok(Quota::new(model, rate, per, burst, max_keys))
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
