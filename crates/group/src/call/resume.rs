//! The proof a member gives the relay when it comes back on a new connection: it holds its
//! leaf's signature key (spec/control-protocol.md, `Resume`).

use openmls_traits::signatures::Signer as _;

use super::CallGroup;
use crate::error::{ApiMisuse, Error, MlsFailure};

pub use blindcall_policy::{RESUME_CHALLENGE_LEN, RESUME_LABEL, resume_sign_content};

/// A member's proof that it holds its leaf, for one relay challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeProof {
    /// The member's leaf.
    pub leaf: u32,
    /// The last epoch it merged.
    pub epoch: u64,
    /// Its signature over the challenge, the group, the room, the leaf and the epoch.
    pub signature: Vec<u8>,
}

impl CallGroup {
    /// The proof for the relay's `challenge` that this member holds its leaf in `room`.
    pub fn resume_proof(
        &self,
        challenge: &[u8; RESUME_CHALLENGE_LEN],
        room: &[u8],
    ) -> Result<ResumeProof, Error> {
        if !self.active {
            return Err(ApiMisuse::NotAMember.into());
        }
        let (leaf, epoch) = (self.own_leaf(), self.epoch());
        let content = resume_sign_content(challenge, self.group_id(), room, leaf, epoch)
            .map_err(|_| MlsFailure::Encode)?;
        let signature = self
            .client
            .signer
            .sign(&content)
            .map_err(|_| MlsFailure::Crypto)?;
        Ok(ResumeProof {
            leaf,
            epoch,
            signature,
        })
    }
}
