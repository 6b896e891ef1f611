//! The on-disk cache of the last applied config, so a data plane started while the control
//! plane is away can serve. Written atomically (temp file in the same directory + fsync +
//! rename); read at start-up.
//!
//! SEAM (agreed interface): `load`, `store`, `CacheError`.
//!
//! File format (all integers little-endian):
//!
//! ```text
//! magic        8 bytes   b"GWCACHE\0"
//! format       u32       FORMAT_VERSION
//! length       u64       payload length in bytes
//! checksum     u64       FNV-1a 64 of the payload
//! payload      length    protobuf pb::DiscoveryResponse { version, kind: Snapshot(..) }
//! ```
//!
//! The header exists because protobuf happily decodes most byte strings (an empty file is a
//! valid empty message): without it, a stray or damaged file would load as "no services" and
//! the node would serve 404 everywhere instead of saying the cache is bad. The checksum catches
//! damage inside the payload that would still decode (a flipped bit in a URL).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use gw_proto::v1 as pb;
use prost::Message;

/// Identifies a gw config cache file.
const MAGIC: &[u8; 8] = b"GWCACHE\0";
/// Bumped when the framing or payload type changes incompatibly; older files are then
/// reported as corrupt rather than misread.
const FORMAT_VERSION: u32 = 1;
/// magic + format + length + checksum.
const HEADER_LEN: usize = 8 + 4 + 8 + 8;

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
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error(path, source)),
    };
    decode(&bytes)
        .map(Some)
        .map_err(|reason| CacheError::Corrupt {
            path: path.display().to_string(),
            reason,
        })
}

/// Atomically replaces the cache with `(version, snapshot)`.
pub fn store(path: &Path, version: u64, snapshot: &pb::ConfigSnapshot) -> Result<(), CacheError> {
    let bytes = encode(version, snapshot);
    let dir = parent_dir(path);
    let tmp = temp_path(path, &dir);
    // Whatever fails after the temp file exists, it must not be left behind.
    if let Err(e) = write_synced(&tmp, &bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(&tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(path, e));
    }
    // The rename is only durable once the directory entry is; without this a crash could
    // bring back the previous file (or none) even though we ACKed the new version.
    sync_dir(&dir).map_err(|e| io_error(&dir, e))
}

/// Frames `(version, snapshot)` as described in the module docs.
fn encode(version: u64, snapshot: &pb::ConfigSnapshot) -> Vec<u8> {
    let payload = pb::DiscoveryResponse {
        epoch: 0,
        version,
        kind: Some(pb::discovery_response::Kind::Snapshot(snapshot.clone())),
    }
    .encode_to_vec();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Inverse of [`encode`]; the error is the reason the bytes are not a cache file.
fn decode(bytes: &[u8]) -> Result<(u64, pb::ConfigSnapshot), String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("{} bytes is too short for the header", bytes.len()));
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    if &header[0..8] != MAGIC {
        return Err("missing the gw cache header (wrong file?)".to_owned());
    }
    let format = u32::from_le_bytes(le_bytes(&header[8..12]));
    if format != FORMAT_VERSION {
        return Err(format!(
            "format version {format}, this build reads {FORMAT_VERSION}"
        ));
    }
    let length = u64::from_le_bytes(le_bytes(&header[12..20]));
    if length != payload.len() as u64 {
        return Err(format!(
            "header says {length} payload bytes, file has {} (truncated?)",
            payload.len()
        ));
    }
    let checksum = u64::from_le_bytes(le_bytes(&header[20..28]));
    if checksum != fnv1a64(payload) {
        return Err("checksum mismatch (file damaged)".to_owned());
    }
    let response = pb::DiscoveryResponse::decode(payload).map_err(|e| e.to_string())?;
    match response.kind {
        Some(pb::discovery_response::Kind::Snapshot(snapshot)) => Ok((response.version, snapshot)),
        Some(pb::discovery_response::Kind::Delta(_) | pb::discovery_response::Kind::Fleet(_))
        | None => Err("payload holds no snapshot".to_owned()),
    }
}

/// Copies a slice of known length into an array for `from_le_bytes`.
fn le_bytes<const N: usize>(slice: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    out
}

/// FNV-1a, 64-bit: a few lines, no dependency, and plenty to notice accidental damage (this is
/// not protection against tampering; whoever can write the file can write the config).
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

/// The directory holding `path` (the working directory for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A fresh temp name beside `path`: same directory so the rename stays on one filesystem,
/// hidden and suffixed so it is never mistaken for the cache itself.
fn temp_path(path: &Path, dir: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "gw-cache".to_owned());
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Writes `bytes` to a new file at `tmp`, readable by its owner only (it holds the HTTPS
/// certificates' private keys), and flushes it to disk.
fn write_synced(tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Flushes a directory's entries (a no-op where directories cannot be opened as files).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn io_error(path: &Path, source: std::io::Error) -> CacheError {
    CacheError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(names: &[&str]) -> pb::ConfigSnapshot {
        pb::ConfigSnapshot {
            certificates: vec![],
            consumers: vec![],
            services: names
                .iter()
                .map(|name| pb::Service {
                    name: (*name).to_owned(),
                    route: Some(pb::Route {
                        path_prefix: format!("/{name}"),
                        hosts: vec!["example.test".to_owned()],
                        strip_prefix: true,
                    }),
                    endpoints: vec!["http://127.0.0.1:9".to_owned()],
                    created_version: 1,
                    updated_version: 2,
                    // A flag set survives the cache (the round trip below compares all).
                    allow_connect: *name == "a",
                    ..Default::default()
                })
                .collect(),
            policies: vec![pb::Policy {
                name: "per-ip".to_owned(),
                limit: 5,
                period: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..Default::default()
            }],
        }
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn roundtrip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.cache");
        let snap = snapshot(&["a", "b"]);
        store(&path, 42, &snap).unwrap();
        assert_eq!(load(&path).unwrap(), Some((42, snap)));
    }

    #[test]
    fn roundtrip_of_an_empty_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.cache");
        store(&path, 7, &pb::ConfigSnapshot::default()).unwrap();
        assert_eq!(
            load(&path).unwrap(),
            Some((7, pb::ConfigSnapshot::default()))
        );
    }

    #[test]
    fn missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(&dir.path().join("absent")).unwrap(), None);
    }

    #[test]
    fn garbage_is_corrupt_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.cache");
        let good = encode(3, &snapshot(&["a"]));
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        let mut future = good.clone();
        future[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        // A payload with a valid frame but no snapshot inside.
        let empty_payload = pb::DiscoveryResponse {
            epoch: 0,
            version: 3,
            kind: None,
        }
        .encode_to_vec();
        let mut no_snapshot = Vec::new();
        no_snapshot.extend_from_slice(MAGIC);
        no_snapshot.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        no_snapshot.extend_from_slice(&(empty_payload.len() as u64).to_le_bytes());
        no_snapshot.extend_from_slice(&fnv1a64(&empty_payload).to_le_bytes());
        no_snapshot.extend_from_slice(&empty_payload);

        let cases: [(&str, Vec<u8>, &str); 6] = [
            ("empty file", Vec::new(), "too short"),
            (
                "text",
                b"services: []\nnot a cache file at all".to_vec(),
                "header",
            ),
            ("truncated", good[..good.len() - 3].to_vec(), "truncated"),
            ("bit flip", flipped, "checksum"),
            ("newer format", future, "format version"),
            ("no snapshot", no_snapshot, "no snapshot"),
        ];
        for (what, bytes, expected) in cases {
            fs::write(&path, &bytes).unwrap();
            match load(&path) {
                Err(CacheError::Corrupt { reason, path: p }) => {
                    assert!(reason.contains(expected), "{what}: reason {reason:?}");
                    assert!(p.ends_with("node.cache"), "{what}: path {p:?}");
                }
                other => panic!("{what}: expected Corrupt, got {other:?}"),
            }
        }
    }

    #[test]
    fn second_store_replaces_the_first_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.cache");
        store(&path, 1, &snapshot(&["a"])).unwrap();
        store(&path, 2, &snapshot(&["b", "c"])).unwrap();
        assert_eq!(load(&path).unwrap(), Some((2, snapshot(&["b", "c"]))));
        assert_eq!(dir_entries(dir.path()), vec!["node.cache".to_owned()]);
    }

    #[test]
    fn failed_store_keeps_the_old_file_and_leaves_no_temp_files() {
        // Renaming a file over a non-empty directory fails on every platform, even as root,
        // which lets us exercise the failure path after the temp file was written.
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("node.cache");
        store(&good, 1, &snapshot(&["a"])).unwrap();
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("keep"), b"x").unwrap();

        let err = store(&blocked, 2, &snapshot(&["b"])).unwrap_err();
        assert!(matches!(err, CacheError::Io { .. }), "{err:?}");
        assert_eq!(load(&good).unwrap(), Some((1, snapshot(&["a"]))));
        assert_eq!(
            dir_entries(dir.path()),
            vec!["blocked".to_owned(), "node.cache".to_owned()]
        );
    }

    #[test]
    fn store_into_a_missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("node.cache");
        let err = store(&path, 1, &snapshot(&["a"])).unwrap_err();
        assert!(matches!(err, CacheError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }

    #[test]
    fn bare_file_name_uses_the_working_directory() {
        assert_eq!(parent_dir(Path::new("node.cache")), PathBuf::from("."));
        assert_eq!(
            parent_dir(Path::new("/var/x/node.cache")),
            PathBuf::from("/var/x")
        );
    }
}
