//! Credentials (display identity + signature key) and the roster of a call.

use std::sync::Arc;

use openmls::prelude::{
    BasicCredential, Capabilities, Credential, CredentialType, CredentialWithKey, ExtensionType,
    KeyPackage, Member, MlsMessageOut, tls_codec::Serialize as _,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;

use crate::config::{CALL_PARAMS_EXTENSION_TYPE, MlsSuite};
use crate::error::{ApiMisuse, Error, MlsFailure};
use crate::policy::PolicyViolation;

/// Largest display identity in bytes.
pub const MAX_IDENTITY_LEN: usize = 255;

/// Returns the display identity of a basic credential (UTF-8, 1..=255 bytes).
pub fn display_identity(credential: &Credential) -> Result<String, PolicyViolation> {
    if credential.credential_type() != CredentialType::Basic {
        return Err(PolicyViolation::InvalidCredential {
            reason: "not a basic credential",
        });
    }
    let basic = BasicCredential::try_from(credential.clone()).map_err(|_| {
        PolicyViolation::InvalidCredential {
            reason: "malformed basic credential",
        }
    })?;
    let id = basic.identity();
    if id.is_empty() || id.len() > MAX_IDENTITY_LEN {
        return Err(PolicyViolation::InvalidCredential {
            reason: "identity length not in 1..=255",
        });
    }
    String::from_utf8(id.to_vec()).map_err(|_| PolicyViolation::InvalidCredential {
        reason: "identity is not UTF-8",
    })
}

/// Leaf capabilities every blindcall client advertises (the call-parameters extension).
pub(crate) fn capabilities() -> Capabilities {
    Capabilities::builder()
        .extensions(vec![ExtensionType::Unknown(CALL_PARAMS_EXTENSION_TYPE)])
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

/// One member of the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterMember {
    /// MLS leaf index (the sender index of its SFrame KIDs).
    pub leaf: u32,
    /// Display identity from the basic credential.
    pub identity: Arc<str>,
    /// Signature public key.
    pub signature_key: Vec<u8>,
    /// Whether this member holds the host role (its key is in the call's host list).
    pub host: bool,
}

/// The members of one epoch, ordered by leaf index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roster {
    members: Vec<RosterMember>,
}

impl Roster {
    pub(crate) fn from_members(
        members: impl Iterator<Item = Member>,
        params: &crate::config::CallParams,
    ) -> Self {
        let mut members: Vec<RosterMember> = members
            .map(|m| {
                let identity =
                    display_identity(&m.credential).unwrap_or_else(|_| String::from("<invalid>"));
                RosterMember {
                    leaf: m.index.u32(),
                    identity: Arc::from(identity.as_str()),
                    host: params.is_host(&m.signature_key),
                    signature_key: m.signature_key,
                }
            })
            .collect();
        members.sort_by_key(|m| m.leaf);
        Self { members }
    }

    /// The member at `leaf`, if any.
    pub fn get(&self, leaf: u32) -> Option<&RosterMember> {
        self.members
            .binary_search_by_key(&leaf, |m| m.leaf)
            .ok()
            .and_then(|i| self.members.get(i))
    }

    /// All members by leaf index.
    pub fn members(&self) -> &[RosterMember] {
        &self.members
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The first member with display identity `identity`.
    pub fn find(&self, identity: &str) -> Option<&RosterMember> {
        self.members.iter().find(|m| &*m.identity == identity)
    }
}
