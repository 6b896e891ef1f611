//! What `service rm` and `policy rm` print.

use serde::Serialize;

use crate::output::Render;

/// The result of an `rm`: `{"action": "deleted", "config_version": N, "name": "…"}`.
#[derive(Debug, Serialize)]
pub struct Deleted {
    action: &'static str,
    config_version: u64,
    name: String,
    #[serde(skip)]
    kind: &'static str,
}

impl Deleted {
    /// A `kind` (`service`, `policy`) named `name` removed at `config_version`.
    pub fn new(kind: &'static str, name: String, config_version: u64) -> Self {
        Self {
            action: "deleted",
            config_version,
            name,
            kind,
        }
    }
}

impl Render for Deleted {
    fn human(&self) -> String {
        format!(
            "{} '{}' deleted (config version {})\n",
            self.kind, self.name, self.config_version
        )
    }
}
