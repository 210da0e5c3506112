//! Member-to-member messages of a call: epoch confirmations (and, with media signatures, media
//! manifests). They travel through the relay, signed with the sender's leaf key.

use std::time::Instant;

use openmls_traits::OpenMlsProvider as _;
use openmls_traits::crypto::OpenMlsCrypto as _;
use openmls_traits::signatures::Signer as _;

use super::CallGroup;
use crate::confirm::{CONFIRMATION_LABEL, Confirmation, Outcome, PeerMessageError, TAG_LEN};
use crate::event::Event;

/// Kind byte of a peer message carrying an epoch confirmation.
pub const PEER_CONFIRMATION: u8 = 1;
/// Kind byte of a peer message carrying a signed media manifest.
pub const PEER_MANIFEST: u8 = 2;

impl CallGroup {
    /// The next message to send to every other member (as the relay's `PeerBroadcast`
    /// payload), if any.
    pub fn poll_peer_message(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    /// Queues this member's confirmation of the current epoch again (e.g. after reconnecting).
    pub fn reconfirm(&mut self) {
        if let Some(c) = &self.own_confirmation {
            self.outbox.push_back(c.clone());
        }
    }

    /// Handles a message another member sent to everyone (a `PeerMessage` payload from the
    /// relay). A refused message changes nothing; the caller counts it.
    pub fn handle_peer_message(
        &mut self,
        now: Instant,
        bytes: &[u8],
    ) -> Result<(), PeerMessageError> {
        let now = self.clock(now);
        if !self.active {
            return Err(PeerMessageError::NotAMember);
        }
        match bytes.split_first() {
            Some((&PEER_CONFIRMATION, body)) => {
                let c = Confirmation::decode(body)?;
                self.handle_confirmation(now, c)
            }
            Some((&PEER_MANIFEST, body)) => self.handle_manifest(now, body),
            _ => Err(PeerMessageError::Malformed),
        }
    }

    fn handle_confirmation(
        &mut self,
        _now: Instant,
        c: Confirmation,
    ) -> Result<(), PeerMessageError> {
        if c.group_id != self.group_id() {
            return Err(PeerMessageError::WrongGroup);
        }
        if c.leaf == self.own_leaf() {
            return Ok(());
        }
        if !self.confirm.classify_epoch(c.epoch)? {
            // A later epoch: its signer is checked against that epoch's roster when this
            // member gets there.
            self.confirm.keep_early(c);
            return Ok(());
        }
        self.check_confirmation(c)
    }

    /// Verifies a confirmation of the current epoch against the current roster and records it.
    fn check_confirmation(&mut self, c: Confirmation) -> Result<(), PeerMessageError> {
        let member = self
            .roster
            .get(c.leaf)
            .cloned()
            .ok_or(PeerMessageError::BadSignature)?;
        let content = Confirmation::signed_content(&c.group_id, c.epoch, c.leaf, &c.tag);
        self.client
            .provider
            .crypto()
            .verify_signature(
                self.client.suite.ciphersuite().signature_algorithm(),
                &content,
                &member.signature_key,
                &c.signature,
            )
            .map_err(|_| PeerMessageError::BadSignature)?;
        match self.confirm.record(c.leaf, &c.tag) {
            Outcome::Split => self.events.push_back(Event::GroupSplit {
                epoch: c.epoch,
                member,
            }),
            Outcome::Agrees | Outcome::Early | Outcome::Ignored => {}
        }
        if self.confirm.take_consistent() {
            self.events
                .push_back(Event::EpochConsistent { epoch: c.epoch });
        }
        Ok(())
    }

    /// On entering an epoch: derive the tag, sign and queue the own confirmation, expect the
    /// other members' ones, and check those that arrived early.
    pub(super) fn enter_confirmations(&mut self, now: Instant) {
        let epoch = self.epoch();
        let tag = self
            .group
            .export_secret(
                self.client.provider.crypto(),
                CONFIRMATION_LABEL,
                &epoch.to_be_bytes(),
                TAG_LEN,
            )
            .ok()
            .and_then(|t| <[u8; TAG_LEN]>::try_from(t.as_slice()).ok());
        let Some(tag) = tag else {
            // The exporter cannot fail for a 32-byte output of a live group; without a tag
            // this epoch is neither confirmed nor checked.
            self.own_confirmation = None;
            return;
        };
        let own = self.own_leaf();
        let expected = self
            .roster
            .members()
            .iter()
            .filter(|m| m.leaf != own && m.signs_media)
            .cloned()
            .collect::<Vec<_>>();
        let early = self.confirm.enter(now, epoch, tag, expected.into_iter());
        let group_id = self.group_id().to_vec();
        let content = Confirmation::signed_content(&group_id, epoch, own, &tag);
        self.own_confirmation = self
            .client
            .signer
            .sign(&content)
            .ok()
            .and_then(|signature| {
                let c = Confirmation {
                    group_id,
                    epoch,
                    leaf: own,
                    tag,
                    signature,
                };
                let mut out = vec![PEER_CONFIRMATION];
                out.extend_from_slice(&c.encode().ok()?);
                Some(out)
            });
        self.reconfirm();
        for c in early {
            // Early confirmations whose signer is not a member now are dropped like any other.
            let _ = self.check_confirmation(c);
        }
    }
}
