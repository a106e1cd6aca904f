//! Per-model authorization: required scopes and required claim values of a verified token.

use serde_json::Value;

use crate::jwt::Identity;

/// What a model requires of the caller's token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Requirements {
    /// Every one of these must be among the token's scopes (`scope` or `scp`).
    scopes: Vec<String>,
    /// Each claim must hold (or, for a list claim, contain) one of the values.
    claims: Vec<(String, Vec<String>)>,
}

/// Why a caller may not use a model: the RFC 6750 `error_description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denied(pub(crate) String);

impl Requirements {
    pub(crate) fn new(scopes: Vec<String>, claims: Vec<(String, Vec<String>)>) -> Self {
        Self { scopes, claims }
    }

    /// True when the model requires nothing of the caller.
    pub(crate) fn is_empty(&self) -> bool {
        self.scopes.is_empty() && self.claims.is_empty()
    }

    /// The scopes to name in `WWW-Authenticate: ... scope="..."`.
    pub(crate) fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// Check a caller; `None` means no token was verified (authentication off).
    pub(crate) fn check(&self, identity: Option<&Identity>) -> Result<(), Denied> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(identity) = identity else {
            return Err(Denied("no verified token".to_owned()));
        };
        for scope in &self.scopes {
            if !identity.has_scope(scope) {
                return Err(Denied(format!("missing scope {scope}")));
            }
        }
        for (claim, allowed) in &self.claims {
            let ok = match identity.claim(claim) {
                Some(Value::Array(items)) => items.iter().any(|v| matches_any(v, allowed)),
                Some(value) => matches_any(value, allowed),
                None => false,
            };
            if !ok {
                return Err(Denied(format!(
                    "claim {claim} does not hold a required value"
                )));
            }
        }
        Ok(())
    }
}

fn matches_any(value: &Value, allowed: &[String]) -> bool {
    match value {
        Value::String(s) => allowed.iter().any(|a| a == s),
        Value::Bool(b) => allowed.iter().any(|a| a.parse() == Ok(*b)),
        Value::Number(n) => {
            let text = n.to_string();
            allowed.contains(&text)
        }
        _ => false,
    }
}
