//! Who is in the call as this device sees it: members with what the trust store knows of
//! them, verification, and leaving.

use std::time::Instant;

use blindcall_group::{RosterMember, SecurityCode};
use blindcall_proto::{Body, Propose, VLBytes};

use super::join::Phase;
use super::{CallCore, Output};
use crate::error::{CallError, CallWarning, GroupFailure};
use crate::event::{EndReason, Member, Trust};

impl CallCore {
    /// The SDK's view of a roster member.
    pub(super) fn member(&self, m: &RosterMember) -> Member {
        Member::from_roster(m, self.trust.assess(&m.identity, &m.signature_key))
    }

    /// Members just seen in the call: each as the trust store knew it before, then
    /// remembered (so a name seen once is `known` with that key next time).
    pub(super) fn members_seen(&mut self, members: &[RosterMember]) -> Vec<Member> {
        let own = match &self.phase {
            Phase::Member(g) => Some(g.own_leaf()),
            _ => None,
        };
        let shown: Vec<Member> = members.iter().map(|m| self.member(m)).collect();
        let mut changed = false;
        for m in members.iter().filter(|m| Some(m.leaf) != own) {
            changed |= matches!(
                self.trust.remember(&m.identity, &m.signature_key),
                Trust::New | Trust::Changed
            );
        }
        if changed {
            self.out.push_back(Output::TrustChanged);
        }
        shown
    }

    /// The members of the current epoch (empty before joining).
    pub fn members(&self) -> Vec<Member> {
        match &self.phase {
            Phase::Member(g) => g
                .roster()
                .members()
                .iter()
                .map(|m| self.member(m))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The pairwise verification code of this participant and the holder of `identity_key`:
    /// the same on both screens, in every call. Compare it once out of band, then
    /// [`crate::Call::verify`].
    pub fn pairwise_code(&self, identity_key: &[u8]) -> Option<SecurityCode> {
        let own = match &self.phase {
            Phase::Member(g) => g.own_signature_key(),
            _ => return None,
        };
        Some(SecurityCode::pairwise(own, identity_key))
    }

    /// `Command::Verify`.
    pub(super) fn verify(&mut self, leaf: u32, identity_key: &[u8]) -> Result<(), CallError> {
        let Some(g) = self.group() else {
            return Err(CallError::NotMember);
        };
        let Some(m) = g
            .roster()
            .get(leaf)
            .filter(|m| m.signature_key == identity_key)
            .cloned()
        else {
            return Err(CallError::UnknownMember(leaf));
        };
        if self.trust.mark_verified(&m.identity, &m.signature_key) {
            self.out.push_back(Output::TrustChanged);
        }
        Ok(())
    }

    /// `Command::Leave`: a member proposes its own removal (another member commits it), then
    /// the call ends; anyone else just ends. An own commit still pending is discarded first
    /// (MLS makes no proposal while one is outstanding), so the proposal always goes out
    /// (SDK-LEAVE-1).
    pub(super) fn leave(&mut self, now: Instant) {
        self.drop_pending_commit();
        if let Phase::Member(g) = &mut self.phase {
            let epoch = g.epoch();
            match g.leave() {
                Ok(proposal) => self.send(Body::Propose(Propose {
                    epoch,
                    proposal: VLBytes::new(proposal),
                })),
                Err(e) => self.warn(CallWarning::Group(GroupFailure::from(&e))),
            }
        }
        self.end(now, EndReason::Left);
    }
}
