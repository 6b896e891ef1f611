//! Noticing that files changed, for credentials rotated without a restart: a [`FileSet`]
//! remembers the bytes it last saw of each file and says when any differ. Credentials are a
//! few kilobytes, so comparing contents is cheap and avoids the traps of modification times
//! (one-second granularity, copies that keep them, clocks that step).

use std::path::PathBuf;

/// A set of files and what they held when last looked at.
#[derive(Debug, Clone)]
pub struct FileSet {
    paths: Vec<PathBuf>,
    seen: Vec<Option<Vec<u8>>>,
}

impl FileSet {
    /// Watches `paths`, taking what they hold now as the baseline.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let seen = paths.iter().map(|p| std::fs::read(p).ok()).collect();
        Self { paths, seen }
    }

    /// Whether any file differs from the baseline (a file that cannot be read counts as
    /// unchanged: it is probably being replaced, and the next look will tell). Takes what
    /// they hold now as the new baseline.
    pub fn changed(&mut self) -> bool {
        let mut changed = false;
        for (path, seen) in self.paths.iter().zip(self.seen.iter_mut()) {
            if let Ok(now) = std::fs::read(path)
                && seen.as_deref() != Some(now.as_slice())
            {
                *seen = Some(now);
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_change_once() {
        let dir = std::env::temp_dir().join(format!("gw-tls-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.pem");
        std::fs::write(&a, "one").unwrap();
        let mut set = FileSet::new(vec![a.clone(), dir.join("missing")]);
        assert!(!set.changed());
        std::fs::write(&a, "two").unwrap();
        assert!(set.changed());
        assert!(!set.changed());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
