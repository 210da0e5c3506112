//! The local trust store: which identity key each known name had, and whether its owner was
//! verified (pairwise code compared out of band).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// What this device knows about a name and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Trust {
    /// This name with this key was verified (pairwise code compared).
    Verified,
    /// This name was seen before with this same key, not verified.
    Known,
    /// Neither this name nor this key was seen before.
    New,
    /// This name was seen before with another key: someone else using the name, or the same
    /// person on a new device. Warn loudly; verify before trusting.
    Changed,
}

impl Trust {
    /// A word to show next to the name.
    pub fn label(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Known => "known",
            Self::New => "new",
            Self::Changed => "CHANGED KEY",
        }
    }
}

/// Why the trust store could not be read or written. It is never replaced on error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustStoreError {
    /// Reading or writing failed.
    #[error("trust store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the file is not in the format this build writes.
    #[error("trust store {path} line {line}: {reason}; the file was left as it is")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

const HEADER: &str = "blindcall-trust v1";

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    key: Vec<u8>,
    verified: bool,
}

/// Name → keys seen, each verified or not; optionally kept in a file.
#[derive(Debug, Default)]
pub struct TrustStore {
    path: Option<PathBuf>,
    names: BTreeMap<String, Vec<Entry>>,
}

impl TrustStore {
    /// An empty store that is not saved anywhere.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// The store kept in `path` (empty if the file does not exist yet). A file that cannot be
    /// parsed is an error; it is never overwritten.
    pub fn open(path: &Path) -> Result<Self, TrustStoreError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    path: Some(path.to_path_buf()),
                    names: BTreeMap::new(),
                });
            }
            Err(source) => {
                return Err(TrustStoreError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let corrupt = |line, reason| TrustStoreError::Corrupt {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut lines = text.lines().enumerate();
        if lines.next().map(|(_, l)| l) != Some(HEADER) {
            return Err(corrupt(1, "missing header"));
        }
        let mut names: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for (i, line) in lines {
            let n = i + 1;
            let mut parts = line.split(' ');
            let (Some(name), Some(key), Some(state), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(corrupt(n, "expected: name key state"));
            };
            let name = hex::decode(name)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| corrupt(n, "name is not hex-encoded UTF-8"))?;
            let key = hex::decode(key)
                .ok()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| corrupt(n, "key is not hex"))?;
            let verified = match state {
                "verified" => true,
                "known" => false,
                _ => return Err(corrupt(n, "state is neither verified nor known")),
            };
            let keys = names.entry(name).or_default();
            if keys.iter().any(|e| e.key == key) {
                return Err(corrupt(n, "duplicate entry"));
            }
            keys.push(Entry { key, verified });
        }
        Ok(Self {
            path: Some(path.to_path_buf()),
            names,
        })
    }

    /// What is known about `name` with `key`.
    pub fn assess(&self, name: &str, key: &[u8]) -> Trust {
        match self.names.get(name) {
            None => Trust::New,
            Some(keys) => match keys.iter().find(|e| e.key == key) {
                Some(e) if e.verified => Trust::Verified,
                Some(_) => Trust::Known,
                None => Trust::Changed,
            },
        }
    }

    /// Remembers `name` with `key` (not verified) if it is not known yet, in memory (see
    /// [`TrustStore::save`]); returns what was known before.
    pub fn remember(&mut self, name: &str, key: &[u8]) -> Trust {
        let before = self.assess(name, key);
        if matches!(before, Trust::New | Trust::Changed) {
            self.names.entry(name.to_string()).or_default().push(Entry {
                key: key.to_vec(),
                verified: false,
            });
        }
        before
    }

    /// Marks `name` with `key` verified (its pairwise code was compared out of band), in
    /// memory (see [`TrustStore::save`]); returns whether anything changed.
    pub fn mark_verified(&mut self, name: &str, key: &[u8]) -> bool {
        let keys = self.names.entry(name.to_string()).or_default();
        match keys.iter_mut().find(|e| e.key == key) {
            Some(e) if e.verified => false,
            Some(e) => {
                e.verified = true;
                true
            }
            None => {
                keys.push(Entry {
                    key: key.to_vec(),
                    verified: true,
                });
                true
            }
        }
    }

    /// Where the store is kept, if in a file.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes the store to its file, if it has one (a complete new file renamed over the old
    /// one, owner-only permissions).
    pub fn save(&self) -> Result<(), TrustStoreError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |source| TrustStoreError::Io {
            path: path.clone(),
            source,
        };
        let mut text = String::from(HEADER);
        text.push('\n');
        for (name, keys) in &self.names {
            for e in keys {
                text.push_str(&hex::encode(name.as_bytes()));
                text.push(' ');
                text.push_str(&hex::encode(&e.key));
                text.push(' ');
                text.push_str(if e.verified { "verified" } else { "known" });
                text.push('\n');
            }
        }
        let tmp = path.with_extension("tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: ID-TRUST-1
    #[test]
    fn states_follow_name_and_key_and_survive_a_reload() {
        let dir = std::env::temp_dir().join(format!("blindcall-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trust");
        let mut store = TrustStore::open(&path).unwrap();
        let (alice, mallory) = ([1u8; 32], [2u8; 32]);
        assert_eq!(store.assess("alice", &alice), Trust::New);
        assert_eq!(store.remember("alice", &alice), Trust::New);
        assert_eq!(store.assess("alice", &alice), Trust::Known);
        // Someone else calling themself alice.
        assert_eq!(store.assess("alice", &mallory), Trust::Changed);
        assert!(store.mark_verified("alice", &alice));
        assert!(!store.mark_verified("alice", &alice));
        // Names with spaces, newlines or escape sequences are stored safely.
        let odd = "eve \n\u{1b}[31m";
        store.remember(odd, &mallory);
        store.save().unwrap();
        let again = TrustStore::open(&path).unwrap();
        assert_eq!(again.assess("alice", &alice), Trust::Verified);
        assert_eq!(again.assess("alice", &mallory), Trust::Changed);
        assert_eq!(again.assess(odd, &mallory), Trust::Known);
        assert_eq!(again.assess("bob", &alice), Trust::New);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // covers: ID-TRUST-2
    #[test]
    fn a_corrupt_store_is_an_error_and_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("blindcall-trust-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trust");
        for (text, line) in [
            ("not a trust store\n", 1),
            ("blindcall-trust v1\nzz 01 known\n", 2),
            ("blindcall-trust v1\n616c696365 0102 maybe\n", 2),
            ("blindcall-trust v1\n616c696365 0102 known extra\n", 2),
            (
                "blindcall-trust v1\n616c696365 0102 known\n616c696365 0102 known\n",
                3,
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            match TrustStore::open(&path) {
                Err(TrustStoreError::Corrupt { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
