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
    MAX_IDENTITY_LEN, Roster, RosterMember, SIGNS_MEDIA_CAPABILITY, display_identity,
};

use crate::config::{CALL_PARAMS_EXTENSION_TYPE, MlsSuite};
use crate::error::{ApiMisuse, Error, MlsFailure};

/// Leaf capabilities every blindcall client advertises (the call-parameters extension).
pub(crate) fn capabilities() -> Capabilities {
    Capabilities::builder()
        .extensions(vec![
            ExtensionType::Unknown(CALL_PARAMS_EXTENSION_TYPE),
            ExtensionType::Unknown(SIGNS_MEDIA_CAPABILITY),
        ])
        .build()
}

/// A participant before (and while) it is in a call: its signature key, credential and MLS
/// key store. Publishes KeyPackages; becomes a [`crate::CallGroup`] by creating or joining.
pub struct Client {
    pub(crate) provider: OpenMlsRustCrypto,
    pub(crate) signer: SignatureKeyPair,
    pub(crate) credential: CredentialWithKey,
    pub(crate) suite: MlsSuite,
    pub(crate) identity: Arc<str>,
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
    /// A new participant named `display_identity` (UTF-8, 1..=255 bytes) for `suite`.
    pub fn new(display_identity: &str, suite: MlsSuite) -> Result<Self, Error> {
        if display_identity.is_empty() || display_identity.len() > MAX_IDENTITY_LEN {
            return Err(ApiMisuse::InvalidIdentity {
                len: display_identity.len(),
            }
            .into());
        }
        let provider = OpenMlsRustCrypto::default();
        let cs = suite.ciphersuite();
        let signer =
            SignatureKeyPair::new(cs.signature_algorithm()).map_err(|_| MlsFailure::Crypto)?;
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
            suite,
            identity: Arc::from(display_identity),
        })
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
            .leaf_node_capabilities(capabilities())
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
