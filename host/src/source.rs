//! Where the gateway's configuration comes from: a host config file (docs/host-config.md),
//! or Kubernetes manifests translated into one (`--manifests`, docs/manifests.md). Start-up,
//! reloads and `modelgate check` all load through here.

use std::path::PathBuf;

use crate::compile::GatewayConfig;
use crate::config::ConfigErrors;
use crate::manifests;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Manifests(manifests::Options),
}

/// A config with what loading it found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: GatewayConfig,
    /// Manifest fields the host does not emulate (none for a host config file).
    pub warnings: Vec<String>,
    /// The files (and directories) it was read from, to reload when one changes; the files
    /// the config itself names are added by the snapshot.
    pub files: Vec<PathBuf>,
    /// The host config the manifests became, as YAML (none for a host config file).
    pub host_yaml: Option<String>,
}

impl ConfigSource {
    pub fn load(&self) -> Result<Loaded, ConfigErrors> {
        match self {
            ConfigSource::File(path) => Ok(Loaded {
                config: crate::compile::load(path)?,
                warnings: Vec::new(),
                files: vec![path.clone()],
                host_yaml: None,
            }),
            ConfigSource::Manifests(options) => {
                let translation = manifests::translate(options)?;
                let mut files = translation.files;
                // A directory's own time changes when a file is added or removed.
                files.extend(options.paths.iter().filter(|p| p.is_dir()).cloned());
                Ok(Loaded {
                    config: translation.config,
                    warnings: translation.warnings,
                    files,
                    host_yaml: Some(translation.host_yaml),
                })
            }
        }
    }

    /// How logs name it.
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Manifests(options) => format!(
                "the manifests in {}",
                options
                    .paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}
