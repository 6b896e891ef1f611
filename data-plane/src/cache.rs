//! The on-disk cache of the last applied config, so a data plane started while the control
//! plane is away can serve. Written atomically (temp file in the same directory + fsync +
//! rename); read at start-up.
//!
//! SEAM (agreed interface): `load`, `store`, `CacheError`.

use std::path::Path;

use gw_proto::v1 as pb;

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Filesystem error, with the path.
    #[error("config cache {path}: {source}")]
    Io {
        /// The cache file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file exists but does not hold a config.
    #[error("config cache {path}: not a valid config file: {reason}")]
    Corrupt {
        /// The cache file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Reads the cached `(version, snapshot)`; `Ok(None)` if the file does not exist.
pub fn load(path: &Path) -> Result<Option<(u64, pb::ConfigSnapshot)>, CacheError> {
    let _ = path;
    todo!("cache::load: being written")
}

/// Atomically replaces the cache with `(version, snapshot)`.
pub fn store(path: &Path, version: u64, snapshot: &pb::ConfigSnapshot) -> Result<(), CacheError> {
    let _ = (path, version, snapshot);
    todo!("cache::store: being written")
}
