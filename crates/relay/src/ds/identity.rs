//! The relay's MLS external-sender identities: the keys it signs Remove proposals with.

use openmls::prelude::{Credential, ExternalSender, SignaturePublicKey, SignatureScheme};
use openmls_basic_credential::SignatureKeyPair;
use tls_codec::Serialize as _;

/// The relay's MLS external-sender identity: the key it signs Remove proposals with.
///
/// The group creator lists [`RelayIdentity::external_sender`] in the group's `external_senders`
/// extension; the DS refuses to bootstrap a group that does not.
pub struct RelayIdentity {
    pub(super) signer: SignatureKeyPair,
    credential: Credential,
}

impl std::fmt::Debug for RelayIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayIdentity")
            .field("public_key", &hex::encode(self.signer.public()))
            .finish_non_exhaustive()
    }
}

impl RelayIdentity {
    /// Wrap the relay's signature key pair (the caller generates or loads it) and a credential.
    pub fn new(signer: SignatureKeyPair, credential: Credential) -> Self {
        Self { signer, credential }
    }

    /// The entry a group creator puts in the `external_senders` extension.
    pub fn external_sender(&self) -> ExternalSender {
        ExternalSender::new(
            SignaturePublicKey::from(self.signer.to_public_vec()),
            self.credential.clone(),
        )
    }

    /// The signature public key.
    pub fn signature_public_key(&self) -> &[u8] {
        self.signer.public()
    }

    /// The credential.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The signature scheme of its key.
    pub fn signature_scheme(&self) -> SignatureScheme {
        self.signer.signature_scheme()
    }

    pub(crate) fn credential_bytes(&self) -> Vec<u8> {
        // Serializing an in-memory basic credential only fails past 2^30 bytes.
        self.credential.tls_serialize_detached().unwrap_or_default()
    }
}

/// The relay's external-sender identities, one per signature scheme: a group's
/// `external_senders` entry must sign with its ciphersuite's scheme (RFC 9420 §12.1.8.1), so
/// rooms of ciphersuite 1 (Ed25519) and 2 (ECDSA P-256) each get the matching one.
#[derive(Debug)]
pub struct RelayIdentities {
    identities: Vec<RelayIdentity>,
}

impl RelayIdentities {
    /// Identities with pairwise distinct signature schemes; a later one with the scheme of an
    /// earlier one is ignored.
    pub fn new(identities: impl IntoIterator<Item = RelayIdentity>) -> Self {
        let mut out: Vec<RelayIdentity> = Vec::new();
        for id in identities {
            if !out
                .iter()
                .any(|o| o.signature_scheme() == id.signature_scheme())
            {
                out.push(id);
            }
        }
        Self { identities: out }
    }

    /// The identity that signs with `scheme`.
    pub fn for_scheme(&self, scheme: SignatureScheme) -> Option<&RelayIdentity> {
        self.identities
            .iter()
            .find(|i| i.signature_scheme() == scheme)
    }

    /// Every identity, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &RelayIdentity> {
        self.identities.iter()
    }
}
