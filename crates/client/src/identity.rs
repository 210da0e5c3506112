//! A participant's identity on its device: the identity key file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use blindcall_group::{IdentityKey, IdentityKeyError, MlsSuite};
use zeroize::Zeroizing;

/// Why the identity file could not be used. The file is never replaced on error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading, creating or writing the file failed.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a valid identity key (damaged, truncated, another format).
    #[error("identity file {path} is unreadable ({reason}); it was left as it is")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: IdentityKeyError,
    },
    /// Other users may read the file: its key must be treated as exposed.
    #[error(
        "identity file {path} is readable by others (mode {mode:o}); restrict it to its owner \
         (chmod 600) or make a new identity"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds a key of another MLS suite than the call uses.
    #[error("identity file {path} holds a key for MLS suite {found}, the call uses {wanted}")]
    WrongSuite {
        /// The file.
        path: PathBuf,
        /// Suite id in the file.
        found: u16,
        /// Suite id requested.
        wanted: u16,
    },
}

/// The identity key of this device, with where it is kept.
pub struct Identity {
    key: IdentityKey,
    path: Option<PathBuf>,
    created: bool,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("key", &self.key)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Identity {
    /// A fresh identity kept in memory only (a new key every call).
    pub fn ephemeral(suite: MlsSuite) -> Result<Self, IdentityKeyError> {
        Ok(Self {
            key: IdentityKey::generate(suite)?,
            path: None,
            created: true,
        })
    }

    /// Loads the identity key in `path`, or creates it there (owner-only permissions) if the
    /// file does not exist. A file that exists but cannot be used is an error and is left as
    /// it is, never overwritten.
    pub fn load_or_create(path: &Path, suite: MlsSuite) -> Result<Self, IdentityError> {
        match std::fs::metadata(path) {
            Ok(_) => Self::load(path, suite),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path, suite),
            Err(e) => Err(io(path)(e)),
        }
    }

    /// Loads an existing identity file.
    pub fn load(path: &Path, suite: MlsSuite) -> Result<Self, IdentityError> {
        check_permissions(path)?;
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io(path))?);
        let key = IdentityKey::from_bytes(&bytes).map_err(|reason| IdentityError::Corrupt {
            path: path.to_path_buf(),
            reason,
        })?;
        if key.suite() != suite {
            return Err(IdentityError::WrongSuite {
                path: path.to_path_buf(),
                found: key.suite().id(),
                wanted: suite.id(),
            });
        }
        Ok(Self {
            key,
            path: Some(path.to_path_buf()),
            created: false,
        })
    }

    fn create(path: &Path, suite: MlsSuite) -> Result<Self, IdentityError> {
        let key = IdentityKey::generate(suite).map_err(|reason| IdentityError::Corrupt {
            path: path.to_path_buf(),
            reason,
        })?;
        let bytes = key.to_bytes().map_err(|reason| IdentityError::Corrupt {
            path: path.to_path_buf(),
            reason,
        })?;
        let mut options = std::fs::OpenOptions::new();
        // `create_new`: never clobber a file that appeared meanwhile.
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io(path))?;
        file.write_all(&bytes).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
        Ok(Self {
            key,
            path: Some(path.to_path_buf()),
            created: true,
        })
    }

    /// The key.
    pub fn key(&self) -> &IdentityKey {
        &self.key
    }

    /// The public identity key (what others see, and what their trust stores remember).
    pub fn public_key(&self) -> &[u8] {
        self.key.public_key()
    }

    /// Where the key is kept, if on disk.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether this key was just created (first use on this device).
    pub fn is_new(&self) -> bool {
        self.created
    }

    /// The key, for [`crate::JoinOptions::identity_key`].
    pub fn into_key(self) -> IdentityKey {
        self.key
    }
}

#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path) -> Result<(), IdentityError> {
    Ok(())
}

/// A name as it may be printed on a terminal or in a log: control and bidirectional
/// formatting characters (which a call's policy refuses in member names anyway) are shown
/// escaped (`\u{1b}`), never interpreted.
pub fn printable(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if blindcall_group::identity::check_identity_chars(c.encode_utf8(&mut [0; 4])).is_ok() {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
        }
    }
    out
}

/// A short, readable fingerprint of a public key: the first 10 bytes of its SHA-256 in groups
/// of four hex digits (for showing next to a name; compare the pairwise code to verify).
pub fn fingerprint(public_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    digest.as_ref()[..10]
        .chunks(2)
        .map(hex::encode)
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "blindcall-identity-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    // covers: ID-KEY-1
    #[test]
    fn created_once_owner_only_then_loaded_with_the_same_key() {
        let dir = temp_dir("create");
        let path = dir.join("me.key");
        let first = Identity::load_or_create(&path, MlsSuite::default()).unwrap();
        assert!(first.is_new());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let again = Identity::load_or_create(&path, MlsSuite::default()).unwrap();
        assert!(!again.is_new());
        assert_eq!(again.public_key(), first.public_key());
        assert_eq!(fingerprint(first.public_key()).len(), 5 * 4 + 4);
        let err = Identity::load_or_create(&path, MlsSuite::P256Aes128).unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::WrongSuite {
                    found: 1,
                    wanted: 2,
                    ..
                }
            ),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    // covers: ID-KEY-2
    #[test]
    fn a_damaged_or_exposed_identity_file_is_an_error_and_is_left_alone() {
        let dir = temp_dir("damaged");
        let path = dir.join("me.key");
        let id = Identity::load_or_create(&path, MlsSuite::default()).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = Identity::load_or_create(&path, MlsSuite::default()).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("left as it is"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the file was replaced"
        );
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            Identity::load_or_create(&path, MlsSuite::default()).unwrap_err(),
            IdentityError::Corrupt { .. }
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let fresh = dir.join("fresh.key");
            let _ = Identity::load_or_create(&fresh, MlsSuite::default()).unwrap();
            std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = Identity::load_or_create(&fresh, MlsSuite::default()).unwrap_err();
            assert!(
                matches!(err, IdentityError::Permissions { mode: 0o644, .. }),
                "{err}"
            );
        }
        // No secret in Debug.
        let shown = format!("{id:?}");
        assert!(shown.contains("IdentityKey"), "{shown}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
