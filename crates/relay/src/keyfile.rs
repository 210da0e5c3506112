//! The relay's MLS external-sender keys from a file: what every node of a cluster shares.
//!
//! Members accept a Remove proposal from outside the group only when its signature verifies
//! under a key of the group context's `external_senders` extension (RFC 9420 §12.1.8.1). A single
//! relay generates its keys at start ([`crate::config::generate_relay_identities`]): its rooms
//! live only in its memory. In a cluster a room is served by several nodes, and a Remove proposed
//! by any of them must verify in the group — so every node signs with the same keys, loaded from
//! the same file (`[cluster] external_sender_key_file`, `--external-sender-key`), written once
//! by `blindcall-relay --new-external-sender-key FILE` (spec/cluster.md, CL-NODE-3).
//!
//! Format (text, one key a line; `#` lines and blank lines are ignored):
//!
//! ```text
//! # blindcall relay external-sender keys v1
//! ed25519 <hex of the TLS-serialized SignatureKeyPair>
//! p256 <hex of the TLS-serialized SignatureKeyPair>
//! ```
//!
//! Each scheme appears exactly once; a pair whose private key does not sign for its public key is
//! refused. Errors name the file and the defect, never a key byte. Everything read is zeroized.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use openmls::prelude::{BasicCredential, SignatureScheme};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use openmls_traits::crypto::OpenMlsCrypto as _;
use openmls_traits::signatures::Signer as _;
use thiserror::Error;
use tls_codec::{DeserializeBytes as _, Serialize as _};
use zeroize::Zeroizing;

use crate::ds::{RelayIdentities, RelayIdentity};

/// The first line of a key file.
pub const KEY_FILE_HEADER: &str = "# blindcall relay external-sender keys v1";

/// The schemes a key file holds, with their labels: one per ciphersuite the relay serves.
const SCHEMES: [(&str, SignatureScheme); 2] = [
    ("ed25519", SignatureScheme::ED25519),
    ("p256", SignatureScheme::ECDSA_SECP256R1_SHA256),
];

/// What is wrong with a key file. Never carries key material.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFileDefect {
    /// The file could not be read or written (absent, unreadable, already there).
    #[error("cannot access it ({0})")]
    Io(String),
    /// A line is not `<scheme> <hex>`.
    #[error("line {0} is not '<scheme> <hex>'")]
    BadLine(usize),
    /// A line names a scheme the relay does not use.
    #[error("line {0} names an unknown scheme")]
    UnknownScheme(usize),
    /// A scheme appears twice.
    #[error("line {0} repeats a scheme")]
    Duplicate(usize),
    /// A scheme is missing.
    #[error("it has no {0} key")]
    Missing(&'static str),
    /// A key is not a serialized key pair of its line's scheme.
    #[error("line {0} is not a key pair of its scheme")]
    BadKey(usize),
    /// A private key does not sign for its public key.
    #[error("line {0}: the private key does not match the public key")]
    Mismatch(usize),
}

/// The external-sender key file could not be used.
#[derive(Debug, Error)]
#[error("external-sender key file {}: {defect}", path.display())]
pub struct KeyFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub defect: KeyFileDefect,
}

/// Load the relay's external-sender identities from `path` (format: module docs).
pub fn load_relay_identities(path: &Path) -> Result<RelayIdentities, KeyFileError> {
    let err = |defect| KeyFileError {
        path: path.to_path_buf(),
        defect,
    };
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| err(KeyFileDefect::Io(e.kind().to_string())))?,
    );
    parse_relay_identities(&text).map_err(err)
}

/// Parse a key file's text (format: module docs).
pub fn parse_relay_identities(text: &str) -> Result<RelayIdentities, KeyFileDefect> {
    let mut found: Vec<(SignatureScheme, SignatureKeyPair)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(label), Some(hex_key), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(KeyFileDefect::BadLine(n));
        };
        let scheme = SCHEMES
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, s)| *s)
            .ok_or(KeyFileDefect::UnknownScheme(n))?;
        if found.iter().any(|(s, _)| *s == scheme) {
            return Err(KeyFileDefect::Duplicate(n));
        }
        let bytes = Zeroizing::new(hex::decode(hex_key).map_err(|_| KeyFileDefect::BadKey(n))?);
        let (pair, rest) = SignatureKeyPair::tls_deserialize_bytes(&bytes)
            .map_err(|_| KeyFileDefect::BadKey(n))?;
        if !rest.is_empty() || pair.signature_scheme() != scheme {
            return Err(KeyFileDefect::BadKey(n));
        }
        if !signs_for_its_public_key(&pair) {
            return Err(KeyFileDefect::Mismatch(n));
        }
        found.push((scheme, pair));
    }
    let mut identities = Vec::new();
    for (label, scheme) in SCHEMES {
        let i = found
            .iter()
            .position(|(s, _)| *s == scheme)
            .ok_or(KeyFileDefect::Missing(label))?;
        let (_, pair) = found.swap_remove(i);
        identities.push(RelayIdentity::new(pair, relay_credential()));
    }
    Ok(RelayIdentities::new(identities))
}

/// The credential of the relay's external-sender identities.
pub(crate) fn relay_credential() -> openmls::prelude::Credential {
    BasicCredential::new(b"blindcall-relay".to_vec()).into()
}

/// Whether `pair`'s private key signs a probe that verifies under its public key.
fn signs_for_its_public_key(pair: &SignatureKeyPair) -> bool {
    const PROBE: &[u8] = b"blindcall relay external-sender key check";
    let Ok(sig) = pair.sign(PROBE) else {
        return false;
    };
    OpenMlsRustCrypto::default()
        .crypto()
        .verify_signature(pair.signature_scheme(), PROBE, pair.public(), &sig)
        .is_ok()
}

/// A fresh key file's text: new key pairs for every scheme.
pub fn new_key_file_text() -> Result<Zeroizing<String>, KeyFileDefect> {
    let mut text = Zeroizing::new(format!("{KEY_FILE_HEADER}\n"));
    for (label, scheme) in SCHEMES {
        let pair = SignatureKeyPair::new(scheme).map_err(|_| KeyFileDefect::Missing(label))?;
        let bytes = Zeroizing::new(
            pair.tls_serialize_detached()
                .map_err(|_| KeyFileDefect::Missing(label))?,
        );
        let hex_key = Zeroizing::new(hex::encode(&*bytes));
        text.push_str(label);
        text.push(' ');
        text.push_str(&hex_key);
        text.push('\n');
    }
    Ok(text)
}

/// Write a fresh key file at `path` (refusing to overwrite one; owner-only on Unix).
pub fn write_new_key_file(path: &Path) -> Result<(), KeyFileError> {
    let err = |defect| KeyFileError {
        path: path.to_path_buf(),
        defect,
    };
    let text = new_key_file_text().map_err(err)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut file = opts
        .open(path)
        .map_err(|e| err(KeyFileDefect::Io(e.kind().to_string())))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| err(KeyFileDefect::Io(e.kind().to_string())))
}
