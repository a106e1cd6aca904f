//! `/config_dump`: the effective config as JSON, with secrets redacted.

use serde_json::{Map, Value};

use modelgate_runtime::FailurePolicy;

use crate::config::RawConfig;
use crate::plugin_source::ResolvedPlugin;

const REDACTED: &str = "[redacted]";

/// The config with defaults filled in, each filter's effective root id, fail-open and plugin
/// config (as the JSON it receives, or its text), and secrets redacted.
pub(crate) fn dump(config: &RawConfig, plugins: &[ResolvedPlugin]) -> Value {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    if let Some(filters) = value.get_mut("filters").and_then(Value::as_array_mut) {
        for (filter, plugin) in filters.iter_mut().zip(plugins) {
            let Some(filter) = filter.as_object_mut() else {
                continue;
            };
            let config = serde_json::from_slice(&plugin.plugin_config).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&plugin.plugin_config).into_owned())
            });
            let env: Map<String, Value> = plugin
                .env
                .iter()
                .map(|(k, _)| (k.clone(), Value::from(REDACTED)))
                .collect();
            let effective = serde_json::json!({
                "rootId": plugin.root_id,
                "vmId": plugin.vm_id,
                "failOpen": plugin.failure_policy == FailurePolicy::FailOpen,
                "failurePolicy": failure_policy_name(plugin.failure_policy),
                "pluginConfig": config,
                "env": env,
            });
            filter.insert("effective".to_owned(), effective);
        }
    }
    redact(&mut value);
    value
}

/// Envoy's name of the effective policy.
fn failure_policy_name(policy: FailurePolicy) -> &'static str {
    match policy {
        FailurePolicy::FailClosed => "FAIL_CLOSED",
        FailurePolicy::FailOpen => "FAIL_OPEN",
        FailurePolicy::FailReload { .. } => "FAIL_RELOAD",
    }
}

/// Whether a field of this name holds a secret. `hostKeys` lists variable names, not values.
fn is_secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower != "hostkeys"
        && ["secret", "key", "token", "password"]
            .iter()
            .any(|s| lower.contains(s))
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, field) in map.iter_mut() {
                if is_secret(name) {
                    *field = Value::from(REDACTED);
                } else {
                    redact(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secret_fields_at_any_depth_but_keeps_host_key_names() {
        let mut value = serde_json::json!({
            "listeners": [{"tls": {"certFile": "c.pem", "keyFile": "k.pem"}}],
            "filters": [{"env": {"hostKeys": ["HMAC"]}, "effective": {"pluginConfig": {
                "jwt": {"jwks": {"keys": [{"k": "c2VjcmV0"}]}, "clientSecret": "s", "apiToken": "t"},
                "models": {"iris": {}}
            }}}]
        });
        redact(&mut value);
        assert_eq!(value["listeners"][0]["tls"]["keyFile"], REDACTED);
        assert_eq!(value["listeners"][0]["tls"]["certFile"], "c.pem");
        assert_eq!(value["filters"][0]["env"]["hostKeys"][0], "HMAC");
        let plugin = &value["filters"][0]["effective"]["pluginConfig"];
        assert_eq!(plugin["jwt"]["jwks"]["keys"], REDACTED);
        assert_eq!(plugin["jwt"]["clientSecret"], REDACTED);
        assert_eq!(plugin["jwt"]["apiToken"], REDACTED);
        assert_eq!(plugin["models"], serde_json::json!({"iris": {}}));
    }
}
