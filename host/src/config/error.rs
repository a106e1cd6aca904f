//! What loading a configuration can report: every problem found, each with its kind (for
//! callers and tests to match on, as pingora's `ErrorType`) and the line a user reads, which
//! names the field path.

use std::fmt;

/// The stage a problem was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The config file could not be read.
    Read,
    /// The document does not fit the format: YAML, a field's type, an unknown field.
    Syntax,
    /// A check of the compile step: a value out of range, exclusive fields, a reference to
    /// a listener or cluster that does not exist.
    Invalid,
    /// Kubernetes manifests that do not translate into a host config.
    Manifest,
    /// What the document names or sets up could not be used: a certificate, a Wasm module, a
    /// plugin config file, an `EnvoyProxy` manifest, the stats tags or tracing it holds.
    Resource,
    /// The runtime could not load a filter, or the filter refused its configuration.
    Filter,
    /// The gateway itself failed while loading (the runtime, the reload task).
    Internal,
}

/// One problem: its kind and the message, `field.path: what is wrong`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub kind: ConfigErrorKind,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every problem found in a config, in the order found; shown one per line.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Problems of one kind.
    pub(crate) fn new(kind: ConfigErrorKind, messages: Vec<String>) -> ConfigErrors {
        ConfigErrors(
            messages
                .into_iter()
                .map(|message| ConfigError { kind, message })
                .collect(),
        )
    }

    /// A single problem.
    pub(crate) fn one(kind: ConfigErrorKind, message: String) -> ConfigErrors {
        ConfigErrors::new(kind, vec![message])
    }

    /// The messages, in order.
    pub fn messages(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.message.as_str()).collect()
    }

    /// The messages, in order, owned.
    pub fn into_messages(self) -> Vec<String> {
        self.0.into_iter().map(|e| e.message).collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(&error.message)?;
        }
        Ok(())
    }
}
