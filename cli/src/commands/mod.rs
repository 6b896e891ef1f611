//! One module per command group; each turns parsed flags into admin calls and the answers
//! into a [`Render`] value.
//! (`gwctl dev` is not here: it runs servers rather than calling them; see [`crate::dev`].)

pub mod completions;
pub mod health;
pub mod nodes;
pub mod policy;
pub mod service;
pub mod stats;

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
