//! The model table: canonical names, aliases, and each model's compiled policy.

use std::collections::HashMap;
use std::sync::Arc;

use crate::authz::Requirements;
use crate::config::{ExplainFormat, Protocol};
use crate::kserve_v1::V1Rules;
use crate::kserve_v2::V2Rules;
use crate::ratelimit::Quota;
use crate::token_budget::TokenBudget;

/// Index of a model in [`Models`].
pub(crate) type ModelId = usize;

/// One configured model, compiled.
#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) name: Arc<str>,
    pub(crate) v1: bool,
    pub(crate) v2: bool,
    pub(crate) requirements: Requirements,
    /// What KServe's model repository extension (`load`, `unload`) needs of the caller;
    /// `None` when the configuration does not allow it for this model.
    pub(crate) admin: Option<Requirements>,
    pub(crate) quota: Option<Quota>,
    pub(crate) v1_rules: V1Rules,
    pub(crate) v2_rules: V2Rules,
    /// How `:explain` bodies are checked (`validation.explain`).
    pub(crate) explain: ExplainFormat,
    /// OpenAI settings, for a model that lists `openai` in `protocols`.
    pub(crate) openai: Option<ModelOpenAi>,
}

impl Model {
    pub(crate) fn speaks(&self, protocol: Protocol) -> bool {
        match protocol {
            Protocol::V1 => self.v1,
            Protocol::V2 => self.v2,
        }
    }
}

/// Every model, looked up by canonical name or alias.
#[derive(Debug, Default)]
pub(crate) struct Models {
    models: Vec<Model>,
    by_name: HashMap<Box<str>, ModelId>,
}

impl Models {
    /// Add a model under its name and aliases; `Err(name)` names a name already taken.
    pub(crate) fn insert(&mut self, model: Model, aliases: &[String]) -> Result<ModelId, String> {
        let id = self.models.len();
        for name in std::iter::once(&*model.name).chain(aliases.iter().map(String::as_str)) {
            if self.by_name.insert(name.into(), id).is_some() {
                return Err(name.to_owned());
            }
        }
        self.models.push(model);
        Ok(id)
    }

    pub(crate) fn lookup(&self, name: &str) -> Option<ModelId> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn get(&self, id: ModelId) -> &Model {
        &self.models[id]
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Model> {
        self.models.iter()
    }

    /// Canonical names in configuration order (sorted: the config is a sorted map).
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|m| &*m.name)
    }

    /// The canonical name for `name` (an alias or a name), if configured.
    pub(crate) fn canonical(&self, name: Option<&str>) -> Option<Arc<str>> {
        name.and_then(|n| self.lookup(n))
            .map(|id| Arc::clone(&self.models[id].name))
    }
}

/// A model's compiled OpenAI settings.
#[derive(Debug)]
pub(crate) struct ModelOpenAi {
    pub(crate) max_tokens: Option<u64>,
    pub(crate) default_max_tokens: u64,
    pub(crate) max_n: u64,
    pub(crate) bytes_per_token: u64,
    pub(crate) budget: Option<TokenBudget>,
}
