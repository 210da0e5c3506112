//! The proof a member gives the relay when it comes back on a new connection: it holds its
//! leaf's signature key (spec/control-protocol.md, `Resume`).

use openmls::prelude::tls_codec::{Serialize as _, VLBytes};
use openmls_traits::signatures::Signer as _;

use super::CallGroup;
use crate::error::{ApiMisuse, Error, MlsFailure};

/// Label of the resume proof (signed as MLS `SignWithLabel`, i.e. with "MLS 1.0 " in front).
pub const RESUME_LABEL: &str = "blindcall resume v1";
/// Length of the relay's challenge.
pub const RESUME_CHALLENGE_LEN: usize = 32;

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

/// The signed content: MLS `SignContent { label = "MLS 1.0 " || RESUME_LABEL, content =
/// challenge[32] || group_id<V> || room<V> || uint32 leaf || uint64 epoch }`.
pub fn resume_sign_content(
    challenge: &[u8; RESUME_CHALLENGE_LEN],
    group_id: &[u8],
    room: &[u8],
    leaf: u32,
    epoch: u64,
) -> Result<Vec<u8>, Error> {
    let encode = |_| Error::from(MlsFailure::Encode);
    let mut content = Vec::with_capacity(RESUME_CHALLENGE_LEN + group_id.len() + room.len() + 24);
    content.extend_from_slice(challenge);
    VLBytes::new(group_id.to_vec())
        .tls_serialize(&mut content)
        .map_err(encode)?;
    VLBytes::new(room.to_vec())
        .tls_serialize(&mut content)
        .map_err(encode)?;
    content.extend_from_slice(&leaf.to_be_bytes());
    content.extend_from_slice(&epoch.to_be_bytes());
    let label = format!("MLS 1.0 {RESUME_LABEL}");
    let mut out = Vec::with_capacity(label.len() + content.len() + 8);
    VLBytes::new(label.into_bytes())
        .tls_serialize(&mut out)
        .map_err(encode)?;
    VLBytes::new(content)
        .tls_serialize(&mut out)
        .map_err(encode)?;
    Ok(out)
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
        let content = resume_sign_content(challenge, self.group_id(), room, leaf, epoch)?;
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
