//! Where the data plane keeps its state (the config cache) when not told: a state directory,
//! never the working directory (where a cache file would land in whatever tree the operator
//! stood in, a git checkout say).
//!
//! In order: `$STATE_DIRECTORY` (what systemd sets for a unit with `StateDirectory=gw`:
//! `/var/lib/gw`, so a service gets the conventional place with no flag), then the XDG base
//! directory spec's `$XDG_STATE_HOME/gw`, then its default `~/.local/state/gw`, then
//! `/var/lib/gw` for a process with no home. The directory is created 0700: the cache holds
//! the config, certificates' private keys included (the file itself is 0600).

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The last resort, and where systemd's `StateDirectory=gw` points.
const SYSTEM_STATE_DIR: &str = "/var/lib/gw";

/// The state directory, reading the environment through `var` (so tests can give their own).
pub fn default_dir(var: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    // Relative values are ignored, as the XDG spec says; systemd's are always absolute.
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(dirs) = var("STATE_DIRECTORY") {
        // systemd joins several StateDirectory= entries with ':'; the first is ours.
        let first = dirs
            .to_string_lossy()
            .split(':')
            .next()
            .map(PathBuf::from)
            .filter(|p| p.is_absolute());
        if let Some(dir) = first {
            return dir;
        }
    }
    if let Some(state) = absolute(var("XDG_STATE_HOME")) {
        return state.join("gw");
    }
    if let Some(home) = absolute(var("HOME")) {
        return home.join(".local/state/gw");
    }
    PathBuf::from(SYSTEM_STATE_DIR)
}

/// The cache file of node `node_id` in `dir`.
pub fn cache_file(dir: &Path, node_id: &str) -> PathBuf {
    dir.join(format!("gw-config-{node_id}.cache"))
}

/// Creates `dir` (and missing parents) readable by the owner only; an existing directory is
/// left as it is.
pub fn create(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_state_directory_follows_systemd_then_xdg_then_home() {
        // STATE_DIRECTORY, XDG_STATE_HOME, HOME.
        type Vars = [Option<&'static str>; 3];
        let cases: &[(Vars, &str)] = &[
            ([Some("/var/lib/gw"), Some("/x"), Some("/a")], "/var/lib/gw"),
            ([Some("/var/lib/gw:/var/lib/b"), None, None], "/var/lib/gw"),
            ([None, Some("/a/state"), Some("/a")], "/a/state/gw"),
            ([None, Some("relative"), Some("/a")], "/a/.local/state/gw"),
            ([None, None, Some("/a")], "/a/.local/state/gw"),
            ([None, None, None], "/var/lib/gw"),
            ([Some(""), None, Some("")], "/var/lib/gw"),
        ];
        for &([state, xdg, home], want) in cases {
            let var = |name: &str| {
                match name {
                    "STATE_DIRECTORY" => state,
                    "XDG_STATE_HOME" => xdg,
                    "HOME" => home,
                    _ => None,
                }
                .map(OsString::from)
            };
            assert_eq!(
                default_dir(var),
                PathBuf::from(want),
                "{state:?} {xdg:?} {home:?}"
            );
        }
    }

    #[test]
    fn created_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state/gw");
        create(&dir).unwrap();
        create(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(
            cache_file(&dir, "n1"),
            tmp.path().join("state/gw/gw-config-n1.cache")
        );
    }
}
