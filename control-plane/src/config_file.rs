//! `--config-file`: a declarative configuration file (the format of `gwctl apply`, read by
//! `gw-config-file`) applied when the control plane starts, before it serves anything, for
//! GitOps and containers whose configuration ships beside them.
//!
//! The file wins over the database: every object it names is written as the file says (one
//! log line per change), in one transaction that makes one config version, or not at all when
//! nothing differs. With `prune`, objects the file does not name are removed, so the file is
//! the whole configuration. A file that is unreadable or invalid stops the start, with its
//! problems at their lines; the database is then left as it was.

use std::path::PathBuf;

use gw_config_file::Loaded;

use crate::apply::{self, Document, DocumentError};
use crate::store::{Applied, ApplyError, Store};

/// Where the file is and whether it prunes.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// The file, YAML or JSON.
    pub path: PathBuf,
    /// Remove what the file does not name (services, policies; certificates when the file
    /// has a `certificates:` list).
    pub prune: bool,
}

/// Why the file could not be applied: one line, each problem at its file, line and field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigFileError(String);

impl ConfigFile {
    /// Reads the file and makes `store` match it.
    pub async fn apply(&self, store: &Store) -> Result<Applied, ConfigFileError> {
        let loaded = Loaded::read(&self.path).map_err(|e| ConfigFileError(e.to_string()))?;
        let mut request = loaded.request.clone();
        request.prune = self.prune;
        let at_lines = |e: DocumentError| {
            let problems = e.0.into_iter().map(|p| (p.field, p.description)).collect();
            ConfigFileError(loaded.at_lines(problems).to_string())
        };
        let (document, _) = Document::try_from_request(request).map_err(at_lines)?;
        let applied = match store.apply(document, false).await {
            Ok(applied) => applied,
            Err(ApplyError::Invalid(e)) => return Err(at_lines(e)),
            Err(ApplyError::Store(e)) => {
                return Err(ConfigFileError(format!("{}: {e}", self.path.display())));
            }
        };
        let file = self.path.display().to_string();
        if applied.applied {
            apply::log_changes(&applied.diff, applied.version, &file);
        } else {
            tracing::info!(file, version = applied.version, "config file: no changes");
        }
        Ok(applied)
    }
}
