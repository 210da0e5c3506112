//! Continuity: a member whose connection was lost keeps its leaf for the resume grace, and takes
//! it back on a new connection by signing that connection's challenge with the leaf's signature
//! key. The relay then sends it what it missed — the commits sequenced since its epoch, each
//! after the proposals sent in its epoch, the current epoch's pending proposals, the waiting
//! room — and `ResumeAccepted`. A resume never adds a leaf or changes the tree: it only moves
//! the leaf's seat to another connection.

use blindcall_policy::resume_sign_content;
use blindcall_proto::{
    Body, CommitBroadcast, ProposalBroadcast, RefusedReason, RelayProposal, Resume, ResumeAccepted,
    ResumeRefused, ResumeRefusedReason, VLBytes,
};

use super::mls::{PendingProposal, ProofCheck};
use super::state::{Conn, Grace, Seat};
use super::{ConnId, Ds, DsCounters, DsFault, Ending, Event, RoomId};
use crate::time::Timestamp;

/// A missed epoch as replayed on resume: its number, the proposals sent in it, and its
/// sequenced commit's bytes.
type MissedEpoch = (u64, Vec<PendingProposal>, Vec<u8>);

impl Ds {
    /// A member's connection ended: keep its leaf for the grace (lost connection), or propose
    /// its removal now (it left, by goodbye or by its own Remove proposal, or the relay closed
    /// it).
    pub(super) fn depart(
        &mut self,
        room_id: &RoomId,
        leaf: u32,
        conn: ConnId,
        participant: ConnId,
        ending: Ending,
    ) {
        let grace = self.cfg.resume_grace;
        // A member whose own leave is queued has left, whatever happened to its connection.
        let leaving = self
            .rooms
            .get(room_id)
            .and_then(|r| r.group.as_ref())
            .is_some_and(|g| !matches!(g.remove_queued(leaf), Ok(false)));
        if ending == Ending::Lost && !grace.is_zero() && !leaving {
            let until = self.now.saturating_add(grace);
            if let Some(room) = self.rooms.get_mut(room_id) {
                room.grace.insert(
                    leaf,
                    Grace {
                        until,
                        conn,
                        participant: Some(participant),
                    },
                );
            }
            self.grace_timers.insert((until, room_id.clone(), leaf));
            self.counters.graces_started += 1;
            self.event(Event::GraceStarted {
                room: room_id.clone(),
                conn,
                leaf,
                until,
            });
        } else {
            if let Some(room) = self.rooms.get_mut(room_id) {
                room.departed.insert(leaf);
            }
            self.propose_remove(room_id, leaf, conn);
        }
    }

    /// The grace of `leaf` that was due at `at` ran out: propose the leaf's removal.
    pub(super) fn expire_grace(&mut self, room_id: &RoomId, leaf: u32, at: Timestamp) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        // A resume or a commit removing the leaf ended this grace already.
        let Some(grace) = room.grace.get(&leaf).copied().filter(|g| g.until == at) else {
            return;
        };
        room.grace.remove(&leaf);
        room.departed.insert(leaf);
        self.counters.graces_expired += 1;
        self.event(Event::GraceExpired {
            room: room_id.clone(),
            leaf,
        });
        self.propose_remove(room_id, leaf, grace.conn);
        self.drop_room_if_idle(room_id);
    }

    pub(super) fn on_resume(&mut self, id: ConnId, m: Resume) {
        let Some(adm) = self.admission(id) else {
            return;
        };
        let room_id = adm.room.clone();
        let challenge = adm.challenge;
        // One Resume per connection (its challenge is then spent), from the lobby only.
        let fresh = adm.seat == Seat::Lobby && adm.key_package.is_none() && !adm.resume_tried;
        if let Some(a) = self.conns.get_mut(&id).and_then(Conn::admission_mut) {
            a.resume_tried = true;
        }
        if !fresh {
            self.refuse_resume(id, &room_id, m.leaf, ResumeRefusedReason::BAD_STATE);
            return;
        }
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let Some(group) = room.group.as_ref() else {
            self.refuse_resume(id, &room_id, m.leaf, ResumeRefusedReason::NO_GROUP);
            return;
        };
        let content =
            match resume_sign_content(&challenge, group.group_id(), &room_id.0, m.leaf, m.epoch) {
                Ok(c) => c,
                Err(_) => {
                    self.fault(id, DsFault::Serialize);
                    return;
                }
            };
        let refusal = match group.check_resume_proof(
            &self.crypto,
            m.leaf,
            &content,
            m.signature.as_slice(),
        ) {
            ProofCheck::Current => None,
            ProofCheck::Removed => Some(ResumeRefusedReason::REMOVED),
            ProofCheck::Unknown => Some(ResumeRefusedReason::UNKNOWN_LEAF),
            ProofCheck::BadSignature => Some(ResumeRefusedReason::BAD_SIGNATURE),
        };
        if let Some(reason) = refusal {
            self.refuse_resume(id, &room_id, m.leaf, reason);
            return;
        }
        // The prover holds the leaf's signature key.
        let leaf = m.leaf;
        let removal_pending = match group.remove_queued(leaf) {
            Ok(queued) => queued || room.departed.contains(&leaf),
            Err(f) => {
                self.fault(id, f);
                return;
            }
        };
        if removal_pending {
            self.refuse_resume(id, &room_id, leaf, ResumeRefusedReason::REMOVED);
            return;
        }
        let current = group.epoch();
        if m.epoch > current || m.epoch < group.member_since(leaf).unwrap_or(0) {
            self.refuse_resume(id, &room_id, leaf, ResumeRefusedReason::BAD_STATE);
            return;
        }
        let Some(missed) = group.commits_since(m.epoch) else {
            // It cannot catch up, and it proved it holds the leaf: let the leaf go now, so
            // the member can be added again (no identity key may be in the group twice).
            self.refuse_resume(id, &room_id, leaf, ResumeRefusedReason::TOO_FAR_BEHIND);
            self.release_leaf(&room_id, leaf, id);
            return;
        };
        // Each missed commit comes after the proposals of its epoch: it may include them by
        // reference, and the member cannot process it without them.
        let missed: Result<Vec<MissedEpoch>, DsFault> = missed
            .into_iter()
            .map(|(c, proposals)| Ok((c.epoch, proposals.to_vec(), c.to_bytes()?)))
            .collect();
        let missed = match missed {
            Ok(m) => m,
            Err(f) => {
                self.fault(id, f);
                return;
            }
        };
        let pending = group.pending().to_vec();

        // Take the seat: a connection still seated on the leaf is stale (half-open).
        // The media streams keep their participant id (DS-RES-12): receivers' stream state
        // and the manifests already signed go on naming it.
        let stale = self.unseat(&room_id, leaf);
        let graced = self
            .rooms
            .get_mut(&room_id)
            .and_then(|room| room.grace.remove(&leaf))
            .and_then(|g| g.participant);
        // A node that took the room over knows no participant of the member: it keeps the one
        // the member names if nobody else in the room has it (CL-HOME-8).
        let adopted = (self.cfg.homes.is_some() && m.participant != 0)
            .then_some(ConnId(m.participant))
            .filter(|p| !self.participant_taken(&room_id, leaf, *p));
        let participant = graced.or(stale).or(adopted).unwrap_or(id);
        if let Some(a) = self.conns.get_mut(&id).and_then(Conn::admission_mut) {
            a.seat = Seat::Member { leaf };
            a.participant = participant;
        }
        let replayed = u64::try_from(missed.len()).unwrap_or(u64::MAX);
        for (epoch, proposals, bytes) in missed {
            self.send_proposals(id, epoch, proposals);
            self.send(
                id,
                Body::CommitBroadcast(CommitBroadcast {
                    epoch,
                    commit: VLBytes::new(bytes),
                }),
            );
        }
        self.send_proposals(id, current, pending);
        self.send_waiting_all(&room_id, id);
        self.send(
            id,
            Body::ResumeAccepted(ResumeAccepted {
                epoch: current,
                participant: participant.0,
            }),
        );
        self.counters.resumes_accepted += 1;
        self.counters.commits_replayed = self.counters.commits_replayed.saturating_add(replayed);
        self.event(Event::MemberResumed {
            room: room_id,
            conn: id,
            leaf,
            participant,
            from_epoch: m.epoch,
            replayed,
        });
    }

    /// Whether a connection of the room other than `leaf`'s seat, or another leaf's grace,
    /// has media participant `p`.
    fn participant_taken(&self, room_id: &RoomId, leaf: u32, p: ConnId) -> bool {
        let by_conn = self.conns.iter().any(|(c, conn)| {
            conn.admission().is_some_and(|a| {
                a.room == *room_id
                    && (a.participant == p || *c == p)
                    && a.seat != Seat::Member { leaf }
            })
        });
        let by_grace = self.rooms.get(room_id).is_some_and(|r| {
            r.grace
                .iter()
                .any(|(l, g)| *l != leaf && g.participant == Some(p))
        });
        by_conn || by_grace
    }

    /// Sends `proposals` of `epoch` to `id`, as they were sent to the members.
    fn send_proposals(&mut self, id: ConnId, epoch: u64, proposals: Vec<PendingProposal>) {
        for p in proposals {
            let body = match p {
                PendingProposal::Relay { leaf, bytes } => Body::RelayProposal(RelayProposal {
                    epoch,
                    removed_leaf: leaf,
                    proposal: VLBytes::new(bytes),
                }),
                PendingProposal::Member { bytes } => Body::ProposalBroadcast(ProposalBroadcast {
                    epoch,
                    proposal: VLBytes::new(bytes),
                }),
            };
            self.send(id, body);
        }
    }

    fn refuse_resume(
        &mut self,
        id: ConnId,
        room_id: &RoomId,
        leaf: u32,
        reason: ResumeRefusedReason,
    ) {
        DsCounters::bump(&mut self.counters.resumes_refused, reason);
        self.send(id, Body::ResumeRefused(ResumeRefused { reason }));
        self.event(Event::ResumeRefused {
            room: room_id.clone(),
            conn: id,
            leaf,
            reason,
        });
    }

    /// Close every connection seated on `leaf` (`RESUMED_ELSEWHERE`) without a departure.
    /// Returns the media participant id of the connection that held the seat.
    fn unseat(&mut self, room_id: &RoomId, leaf: u32) -> Option<ConnId> {
        let mut participant = None;
        let stale: Vec<ConnId> = self
            .members(room_id)
            .into_iter()
            .filter(|(_, l)| *l == leaf)
            .map(|(c, _)| c)
            .collect();
        for conn in stale {
            if let Some(a) = self.conns.get_mut(&conn).and_then(Conn::admission_mut) {
                // Out of the seat first: closing it must not start a grace or a removal.
                a.seat = Seat::Lobby;
                participant = Some(a.participant);
            }
            self.refuse(conn, RefusedReason::RESUMED_ELSEWHERE);
        }
        participant
    }

    /// The leaf's member gave it up (it cannot resume): no seat, no grace, removal proposed.
    fn release_leaf(&mut self, room_id: &RoomId, leaf: u32, on_behalf: ConnId) {
        self.unseat(room_id, leaf);
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.grace.remove(&leaf);
            room.departed.insert(leaf);
        }
        self.propose_remove(room_id, leaf, on_behalf);
    }
}
