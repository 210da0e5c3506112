//! What members send one another through the relay: their own proposals (a leave) and opaque
//! peer messages (epoch confirmations, media manifests).

use blindcall_proto::{Body, ErrorCode, PeerBroadcast, PeerMessage, ProposalBroadcast, Propose};

use super::error::ProposalFailure;
use super::state::Seat;
use super::{ConnId, Ds, Event};

impl Ds {
    pub(super) fn on_propose(&mut self, id: ConnId, m: Propose) {
        let Some(adm) = self.admission(id) else {
            return;
        };
        let Seat::Member { leaf } = adm.seat else {
            self.error(id, ErrorCode::NOT_MEMBER);
            return;
        };
        let room_id = adm.room.clone();
        let Some(group) = self.rooms.get_mut(&room_id).and_then(|r| r.group.as_mut()) else {
            return;
        };
        let epoch = group.epoch();
        match group.queue_member_proposal(&self.crypto, leaf, m.epoch, m.proposal.as_slice()) {
            Ok(()) => {}
            Err(ProposalFailure::Peer(e)) => {
                self.error_with(id, e.into(), &e.to_string());
                return;
            }
            Err(ProposalFailure::Fault(f)) => {
                self.fault(id, f);
                return;
            }
        }
        self.counters.member_proposals += 1;
        let proposal = ProposalBroadcast {
            epoch,
            proposal: m.proposal,
        };
        for (other, _) in self.members(&room_id) {
            if other != id {
                self.send(other, Body::ProposalBroadcast(proposal.clone()));
            }
        }
        self.event(Event::MemberProposed {
            room: room_id,
            conn: id,
            leaf,
            epoch,
        });
    }

    pub(super) fn on_peer_broadcast(&mut self, id: ConnId, m: PeerBroadcast) {
        let Some(adm) = self.admission(id) else {
            return;
        };
        let Seat::Member { leaf } = adm.seat else {
            self.error(id, ErrorCode::NOT_MEMBER);
            return;
        };
        if m.payload.as_slice().len() > self.cfg.max_peer_payload {
            self.counters.peer_messages_too_large += 1;
            return;
        }
        let room_id = adm.room.clone();
        let message = PeerMessage {
            from_conn: id.0,
            from_leaf: leaf,
            payload: m.payload,
        };
        self.counters.peer_messages += 1;
        for (other, _) in self.members(&room_id) {
            if other != id {
                self.send(other, Body::PeerMessage(message.clone()));
            }
        }
    }
}
