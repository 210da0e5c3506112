//! Messages between members through the relay: the group's epoch confirmations and signed
//! media manifests go out as `PeerBroadcast` after every step, and other members' ones come
//! in as `PeerMessage` (SDK-PEER-1). The relay's `from_conn`/`from_leaf` claims are ignored:
//! the group checks each payload's own signature. A refused message changes nothing and never
//! ends the call; it is counted by reason.

use std::collections::BTreeMap;
use std::time::Instant;

use blindcall_group::RosterMember;
use blindcall_proto::{Body, PeerBroadcast, PeerMessage, VLBytes};

use super::CallCore;
use super::join::Phase;
use crate::event::{Member, PeerRefusal};

/// Peer-message counters.
#[derive(Debug, Default)]
pub(super) struct PeerStats {
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) refused: BTreeMap<PeerRefusal, u64>,
}

impl CallCore {
    /// Sends everything the group has for the other members (only a member has any; once the
    /// call ended nothing goes out).
    pub(super) fn send_peer_messages(&mut self) {
        let Phase::Member(g) = &mut self.phase else {
            return;
        };
        let up = matches!(self.link, super::link::Link::Up);
        while let Some(payload) = g.poll_peer_message() {
            if !up {
                // Away: nobody would get it (a confirmation is sent again once resumed).
                continue;
            }
            self.peer.sent += 1;
            self.out
                .push_back(super::Output::Control(Body::PeerBroadcast(PeerBroadcast {
                    payload: VLBytes::new(payload),
                })));
        }
    }

    /// Before the call ends: the manifest of the last frames sent goes out (SDK-PEER-1).
    pub(super) fn flush_manifests(&mut self, now: Instant) {
        if let Phase::Member(g) = &mut self.phase {
            g.finish_manifests(now);
        }
        self.send_peer_messages();
    }

    /// Another member's message, as the relay passed it on.
    pub(super) fn on_peer_message(&mut self, now: Instant, m: &PeerMessage) {
        let result = match &mut self.phase {
            Phase::Member(g) => g
                .handle_peer_message(now, m.payload.as_slice())
                .map_err(|e| PeerRefusal::from(&e)),
            _ => Err(PeerRefusal::NotAMember),
        };
        match result {
            Ok(()) => self.peer.received += 1,
            Err(reason) => {
                tracing::debug!(
                    ?reason,
                    from_conn = m.from_conn,
                    from_leaf = m.from_leaf,
                    "peer message refused"
                );
                *self.peer.refused.entry(reason).or_insert(0) += 1;
            }
        }
    }

    /// The SDK's view of a roster member (the one place core events build members from).
    pub(super) fn sdk_member(&self, m: &RosterMember) -> Member {
        self.member(m)
    }
}
