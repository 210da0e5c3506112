//! Credentials (display identity + signature key) and the roster of a call.

use std::sync::Arc;

use openmls::prelude::{
    BasicCredential, Capabilities, CredentialWithKey, ExtensionType, KeyPackage, MlsMessageOut,
    tls_codec::Serialize as _,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;

pub use blindcall_policy::{
    MAX_IDENTITY_LEN, Roster, RosterMember, SIGNS_MEDIA_CAPABILITY, check_identity_chars,
    display_identity,
};

use crate::config::{CALL_PARAMS_EXTENSION_TYPE, MlsSuite};
use crate::error::{ApiMisuse, Error, MlsFailure};

/// Leaf capabilities a blindcall client advertises: the call-parameters extension, and signed
/// media unless it was turned off.
pub(crate) fn capabilities(signs_media: bool) -> Capabilities {
    let mut extensions = vec![ExtensionType::Unknown(CALL_PARAMS_EXTENSION_TYPE)];
    if signs_media {
        extensions.push(ExtensionType::Unknown(SIGNS_MEDIA_CAPABILITY));
    }
    Capabilities::builder().extensions(extensions).build()
}

/// A participant before (and while) it is in a call: its signature key, credential and MLS
/// key store. Publishes KeyPackages; becomes a [`crate::CallGroup`] by creating or joining.
pub struct Client {
    pub(crate) provider: OpenMlsRustCrypto,
    pub(crate) signer: SignatureKeyPair,
    pub(crate) credential: CredentialWithKey,
    pub(crate) suite: MlsSuite,
    pub(crate) identity: Arc<str>,
    pub(crate) signs_media: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("identity", &self.identity)
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A new participant named `display_identity` (UTF-8, 1..=255 bytes) for `suite`, with a
    /// fresh identity key (kept for this call only).
    pub fn new(display_identity: &str, suite: MlsSuite) -> Result<Self, Error> {
        let key = IdentityKey::generate(suite).map_err(|_| MlsFailure::Crypto)?;
        Self::with_identity(display_identity, &key)
    }

    /// A participant named `display_identity` who signs with its persistent `key`.
    pub fn with_identity(display_identity: &str, key: &IdentityKey) -> Result<Self, Error> {
        if display_identity.is_empty()
            || display_identity.len() > MAX_IDENTITY_LEN
            || blindcall_policy::check_identity_chars(display_identity).is_err()
        {
            return Err(ApiMisuse::InvalidIdentity {
                len: display_identity.len(),
            }
            .into());
        }
        let provider = OpenMlsRustCrypto::default();
        let signer = key.keypair_copy().map_err(|_| MlsFailure::Crypto)?;
        signer
            .store(provider.storage())
            .map_err(|_| MlsFailure::Storage)?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(display_identity.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Ok(Self {
            provider,
            signer,
            credential,
            suite: key.suite(),
            identity: Arc::from(display_identity),
            signs_media: true,
        })
    }

    /// This participant will not sign its media: others show its frames as unauthenticated
    /// (like those of another MLS implementation), and calls that require signed media refuse
    /// them. For interoperability tests and for measuring what signing costs; set it before
    /// the first KeyPackage or call.
    pub fn without_media_signatures(mut self) -> Self {
        self.signs_media = false;
        self
    }

    /// Whether this participant signs its media (the default).
    pub fn signs_media(&self) -> bool {
        self.signs_media
    }

    /// The display identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The signature public key (what a host list names).
    pub fn signature_key(&self) -> &[u8] {
        self.signer.public()
    }

    /// The MLS suite of this participant.
    pub fn suite(&self) -> MlsSuite {
        self.suite
    }

    /// A fresh KeyPackage as TLS-serialized `MLSMessage`; its private keys stay in this client.
    pub fn key_package(&self) -> Result<Vec<u8>, Error> {
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(capabilities(self.signs_media))
            .build(
                self.suite.ciphersuite(),
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .map_err(|_| MlsFailure::KeyPackage)?;
        let msg = MlsMessageOut::from(bundle.key_package().clone());
        msg.tls_serialize_detached()
            .map_err(|_| MlsFailure::Encode.into())
    }
}

/// Why identity key bytes were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityKeyError {
    /// Not an identity key of this format (wrong magic or truncated).
    #[error("not a blindcall identity key")]
    NotAnIdentityKey,
    /// A format version this build does not read.
    #[error("identity key format version {0} is not supported")]
    UnsupportedVersion(u8),
    /// An MLS suite this build does not support.
    #[error("identity key for unknown MLS suite {0}")]
    UnknownSuite(u16),
    /// The key pair does not parse, its scheme does not match its suite, or its private and
    /// public halves do not belong together.
    #[error("identity key is corrupt")]
    Corrupt,
    /// The system's random source or signing failed while generating.
    #[error("identity key generation failed")]
    Generation,
}

/// Magic of the identity key encoding.
const IDENTITY_KEY_MAGIC: &[u8; 4] = b"BCIK";
/// Version of the identity key encoding.
const IDENTITY_KEY_VERSION: u8 = 1;
/// What a loaded key signs to prove its halves belong together.
const IDENTITY_KEY_CHECK: &[u8] = b"blindcall identity key check v1";

/// A participant's identity key: its MLS signature key pair, kept on its device and used in
/// every call, so others can recognise it (pairwise codes, trust store) and hosts can be named
/// by key. The private half is zeroized on drop and never shown by `Debug`.
pub struct IdentityKey {
    keypair: SignatureKeyPair,
    suite: MlsSuite,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityKey")
            .field("suite", &self.suite)
            .field("public", &hex_prefix(self.keypair.public()))
            .finish_non_exhaustive()
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl IdentityKey {
    /// A fresh identity key for `suite`.
    pub fn generate(suite: MlsSuite) -> Result<Self, IdentityKeyError> {
        let keypair = SignatureKeyPair::new(suite.ciphersuite().signature_algorithm())
            .map_err(|_| IdentityKeyError::Generation)?;
        Ok(Self { keypair, suite })
    }

    /// The public half (the member's signature key in every call).
    pub fn public_key(&self) -> &[u8] {
        self.keypair.public()
    }

    /// The MLS suite the key belongs to.
    pub fn suite(&self) -> MlsSuite {
        self.suite
    }

    /// Secret encoding for storage on the device: `"BCIK" || u8 version = 1 || u16 suite ||
    /// TLS-serialized key pair`. Zeroized when dropped.
    pub fn to_bytes(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, IdentityKeyError> {
        use openmls::prelude::tls_codec::Serialize as _;
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(128));
        out.extend_from_slice(IDENTITY_KEY_MAGIC);
        out.push(IDENTITY_KEY_VERSION);
        out.extend_from_slice(&self.suite.id().to_be_bytes());
        self.keypair
            .tls_serialize(&mut *out)
            .map_err(|_| IdentityKeyError::Corrupt)?;
        Ok(out)
    }

    /// Reads [`IdentityKey::to_bytes`] output; refuses anything else, and a key whose private
    /// half does not sign for its public half.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityKeyError> {
        use openmls::prelude::tls_codec::Deserialize as _;
        let rest = bytes
            .strip_prefix(IDENTITY_KEY_MAGIC.as_slice())
            .ok_or(IdentityKeyError::NotAnIdentityKey)?;
        let [version, s0, s1, key @ ..] = rest else {
            return Err(IdentityKeyError::NotAnIdentityKey);
        };
        if *version != IDENTITY_KEY_VERSION {
            return Err(IdentityKeyError::UnsupportedVersion(*version));
        }
        let suite_id = u16::from_be_bytes([*s0, *s1]);
        let suite = MlsSuite::from_id(suite_id).ok_or(IdentityKeyError::UnknownSuite(suite_id))?;
        let keypair =
            SignatureKeyPair::tls_deserialize_exact(key).map_err(|_| IdentityKeyError::Corrupt)?;
        if keypair.signature_scheme() != suite.ciphersuite().signature_algorithm() {
            return Err(IdentityKeyError::Corrupt);
        }
        let key = Self { keypair, suite };
        key.check()?;
        Ok(key)
    }

    /// Signs a fixed message and verifies it with the public half.
    fn check(&self) -> Result<(), IdentityKeyError> {
        use openmls_traits::crypto::OpenMlsCrypto as _;
        use openmls_traits::signatures::Signer as _;
        let sig = self
            .keypair
            .sign(IDENTITY_KEY_CHECK)
            .map_err(|_| IdentityKeyError::Corrupt)?;
        openmls_rust_crypto::RustCrypto::default()
            .verify_signature(
                self.keypair.signature_scheme(),
                IDENTITY_KEY_CHECK,
                self.keypair.public(),
                &sig,
            )
            .map_err(|_| IdentityKeyError::Corrupt)
    }

    /// An independent copy of the key pair (the openmls type is not `Clone`).
    fn keypair_copy(&self) -> Result<SignatureKeyPair, IdentityKeyError> {
        use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
        let bytes = zeroize::Zeroizing::new(
            self.keypair
                .tls_serialize_detached()
                .map_err(|_| IdentityKeyError::Corrupt)?,
        );
        SignatureKeyPair::tls_deserialize_exact(&bytes[..]).map_err(|_| IdentityKeyError::Corrupt)
    }
}

/// What a KeyPackage says about who would join: checked (signature, lifetime, suite,
/// credential), before anyone decides to add it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPackageInfo {
    /// Display identity from its credential (what the roster will show).
    pub identity: String,
    /// Its signature (identity) key.
    pub signature_key: Vec<u8>,
    /// Whether its leaf advertises signed media.
    pub signs_media: bool,
}

/// Validates a TLS-serialized KeyPackage `MLSMessage` for `suite` and returns who it names.
pub fn inspect_key_package(bytes: &[u8], suite: MlsSuite) -> Result<KeyPackageInfo, Error> {
    use openmls::prelude::tls_codec::Deserialize as _;
    use openmls::prelude::{MlsMessageBodyIn, MlsMessageIn, ProtocolVersion};
    let msg = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|_| crate::error::InvalidMessage::Malformed)?;
    let MlsMessageBodyIn::KeyPackage(kp_in) = msg.extract() else {
        return Err(crate::error::InvalidMessage::UnexpectedKind {
            expected: "KeyPackage",
        }
        .into());
    };
    let kp: KeyPackage = kp_in
        .validate(
            OpenMlsRustCrypto::default().crypto(),
            ProtocolVersion::Mls10,
        )
        .map_err(|_| crate::error::InvalidMessage::KeyPackage)?;
    if kp.ciphersuite() != suite.ciphersuite() {
        return Err(crate::error::InvalidMessage::KeyPackageSuite {
            expected: suite.id(),
            got: u16::from(kp.ciphersuite()),
        }
        .into());
    }
    let leaf = kp.leaf_node();
    Ok(KeyPackageInfo {
        identity: display_identity(leaf.credential())?,
        signature_key: leaf.signature_key().as_slice().to_vec(),
        signs_media: leaf
            .capabilities()
            .extensions()
            .contains(&ExtensionType::Unknown(SIGNS_MEDIA_CAPABILITY)),
    })
}
