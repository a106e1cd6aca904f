//! Configuration errors: each names the field path it is about.

/// A configuration that cannot be used, with the path of the offending field
/// (`models.sklearn-iris.rateLimit.requestsPerMinute: must be greater than 0`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Dotted field path (`config` for the document itself).
    pub path: String,
    /// What is wrong, lower-case.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn at(path: &str, message: impl Into<String>) -> Self {
        let path = if path.is_empty() || path == "." {
            "config".to_owned()
        } else {
            path.to_owned()
        };
        Self {
            path,
            message: message.into(),
        }
    }
}
