//! Store mode: a validated commit is claimed in the room store shared by the cluster's nodes
//! before it is merged (spec/cluster.md, CL-DS-1..5).
//!
//! The DS stays sans-IO. It parks the validated commit as its room's one claim in flight and
//! emits [`Output::Claim`] with a [`ClaimTicket`] and the [`CommitRecord`] to claim; the shell
//! runs the claim against its [`RoomStore`](crate::store::RoomStore) and hands the answer back
//! with [`Ds::handle_claim`]. Only a [`ClaimAnswer::Won`] merges the commit and releases it to
//! anyone; [`ClaimAnswer::Lost`] merges the other node's winner instead and rejects the local
//! committer with `EPOCH_TAKEN`; [`ClaimAnswer::Failed`] rejects it with `STORE_UNAVAILABLE`
//! and changes nothing. Commits that arrive while a claim is in flight wait in a bounded queue
//! and are validated when their turn comes.

use blindcall_proto::CommitRejectReason;
use tls_codec::Serialize as _;

use super::error::DsFault;
use super::state::InFlight;
use super::validate::{Rejection, SequencedCommit, ValidatedCommit};
use super::{ConnId, Ds, Event, Output, RoomId};
use crate::store::{CommitRecord, StoreError, StoreOp};
use crate::time::Timestamp;

/// The DS's id for one claim, unique for the DS's life: the answer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimTicket(pub u64);

/// What the shell must claim in the room store (the payload of [`Output::Claim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Hand it back with the answer.
    pub ticket: ClaimTicket,
    /// The commit and its (room, epoch): claim it with `RoomStore::sequence_commit`.
    pub record: CommitRecord,
    /// An earlier claim of this epoch by this node timed out and may have landed: read the
    /// key first (`RoomStore::sequenced_commit`); if it holds a commit, answer
    /// [`ClaimAnswer::Lost`] with it (the DS recognizes its own), and claim only if it is
    /// empty (CL-DS-5).
    pub read_first: bool,
}

/// The store's answer to a [`ClaimRequest`].
#[derive(Debug)]
pub enum ClaimAnswer {
    /// The record holds the epoch.
    Won,
    /// Another record holds the epoch (or, after a read, any record found under the key).
    Lost {
        /// The record found under the key.
        winner: CommitRecord,
    },
    /// The claim could not be made or its outcome is unknown.
    Failed(StoreError),
}

/// Who sequenced a commit the DS merges.
#[derive(Debug, Clone, Copy)]
pub(super) enum Committer {
    /// A member connected here, whose claim won (or, in local mode, who was first).
    Here(ConnId),
    /// Another node; `loser` is the member here whose claim lost to it, if any (it stands for
    /// the room in events and faults); none when the winner was followed (CL-FOLLOW-1).
    Elsewhere { loser: Option<ConnId> },
}

/// The connection named in events and faults about a followed winner, which no connection
/// here sent: no connection ever has this id (ids count up from 0), so nothing is sent to it.
pub(super) const NOBODY: ConnId = ConnId(u64::MAX);

impl Committer {
    pub(super) fn conn(self) -> ConnId {
        match self {
            Self::Here(c) | Self::Elsewhere { loser: Some(c) } => c,
            Self::Elsewhere { loser: None } => NOBODY,
        }
    }
}

impl Ds {
    /// Store mode: the answer to the [`Output::Claim`] with `ticket`. Then drain
    /// [`Ds::poll_output`] as after any input. An answer for no claim in flight (its room has
    /// closed meanwhile) is counted and ignored.
    pub fn handle_claim(&mut self, now: Timestamp, ticket: ClaimTicket, answer: ClaimAnswer) {
        self.advance(now);
        let Some(room_id) = self.claim_rooms.remove(&ticket) else {
            self.counters.claims_unknown += 1;
            return;
        };
        let Some(flight) = self
            .rooms
            .get_mut(&room_id)
            .and_then(|r| r.claims.in_flight.take_if(|f| f.ticket == ticket))
        else {
            self.counters.claims_unknown += 1;
            return;
        };
        let InFlight {
            committer, commit, ..
        } = flight;
        let epoch = commit.sequenced.epoch;
        match answer {
            ClaimAnswer::Won => self.claim_won(&room_id, committer, commit),
            ClaimAnswer::Lost { winner } => {
                let ours = commit
                    .sequenced
                    .to_bytes()
                    .is_ok_and(|b| crate::store::commit_hash(&b) == *winner.hash());
                if ours {
                    // The key holds this very commit (a read after a timeout found it).
                    self.claim_won(&room_id, committer, commit);
                } else {
                    self.claim_lost(&room_id, committer, epoch, &winner);
                }
            }
            ClaimAnswer::Failed(e) => self.claim_failed(&room_id, committer, epoch, &e),
        }
        // Winners followed while the claim was in flight, then the commits queued behind it.
        self.follow(&room_id);
        self.next_queued(&room_id);
    }

    /// Park a validated commit and ask the shell to claim its epoch.
    pub(super) fn claim(&mut self, id: ConnId, room_id: &RoomId, validated: ValidatedCommit) {
        let serialize = |m: &Option<openmls::prelude::MlsMessageIn>| -> Result<Vec<u8>, DsFault> {
            m.as_ref()
                .map(|m| m.tls_serialize_detached().map_err(|_| DsFault::Serialize))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let encoded = validated.sequenced.to_bytes().and_then(|b| {
            Ok((
                b,
                serialize(&validated.group_info)?,
                serialize(&validated.welcome)?,
            ))
        });
        let (bytes, group_info, welcome) = match encoded {
            Ok(e) => e,
            Err(f) => {
                self.fault(id, f);
                return;
            }
        };
        let epoch = validated.sequenced.epoch;
        let ticket = ClaimTicket(self.next_ticket);
        self.next_ticket = self.next_ticket.wrapping_add(1);
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let read_first = room.claims.unsettled == Some(epoch);
        room.claims.in_flight = Some(InFlight {
            ticket,
            committer: id,
            commit: validated,
        });
        self.claim_rooms.insert(ticket, room_id.clone());
        self.out.push_back(Output::Claim(super::ClaimRequest {
            ticket,
            // What another node needs to serve the new epoch travels with the commit (CL-REC-2).
            record: CommitRecord::new(room_id.clone(), epoch, bytes)
                .with_group_info(group_info, welcome),
            read_first,
        }));
    }

    fn claim_won(&mut self, room_id: &RoomId, committer: ConnId, commit: ValidatedCommit) {
        self.counters.claims_won += 1;
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.claims.unsettled = None;
        }
        self.sequence(room_id, commit, Committer::Here(committer));
    }

    fn claim_lost(&mut self, room_id: &RoomId, loser: ConnId, epoch: u64, winner: &CommitRecord) {
        self.counters.claims_lost += 1;
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        room.claims.unsettled = None;
        let applied = if winner.room() != room_id || winner.epoch() != epoch {
            // The shell answered with a record of another key: our bug, never applied.
            self.refuse_winner(room_id, epoch, CommitRejectReason::WRONG_GROUP);
            None
        } else {
            self.apply_winner(room_id, winner, Some(loser))
        };
        self.reject(
            loser,
            room_id,
            epoch,
            Rejection {
                reason: CommitRejectReason::EPOCH_TAKEN,
                winner: applied.map(Box::new),
            },
        );
    }

    /// Validate another node's winner of the room's current epoch and merge it, broadcasting
    /// it to the members here (CL-DS-3, CL-FOLLOW-1). A winner that fails the checks is
    /// refused (event `WinnerRefused`, counted) and the room stays at its epoch.
    pub(super) fn apply_winner(
        &mut self,
        room_id: &RoomId,
        winner: &CommitRecord,
        loser: Option<ConnId>,
    ) -> Option<SequencedCommit> {
        let waiting = self.waiting_joiners(room_id);
        let verdict = match self.rooms.get(room_id).and_then(|r| r.group.as_ref()) {
            Some(group) => group.validate_winner(&self.crypto, winner, &waiting),
            // A claim or a follow is only for a room with a group, which never goes away.
            None => Err(Rejection::from(CommitRejectReason::NO_GROUP)),
        };
        match verdict {
            Ok(v) => {
                let sequenced = v.sequenced.clone();
                self.counters.winners_applied += 1;
                self.sequence(room_id, v, Committer::Elsewhere { loser });
                Some(sequenced)
            }
            Err(rej) => {
                self.refuse_winner(room_id, winner.epoch(), rej.reason);
                None
            }
        }
    }

    fn refuse_winner(&mut self, room_id: &RoomId, epoch: u64, reason: CommitRejectReason) {
        self.counters.winners_refused += 1;
        self.event(Event::WinnerRefused {
            room: room_id.clone(),
            epoch,
            reason,
        });
    }

    fn claim_failed(&mut self, room_id: &RoomId, committer: ConnId, epoch: u64, e: &StoreError) {
        self.counters.claims_failed += 1;
        // A write that timed out may still land; a read that timed out leaves the epoch as
        // unsettled as it was.
        let timed_out = matches!(
            e,
            StoreError::Timeout {
                op: StoreOp::Claim,
                ..
            }
        );
        let unsettled = match self.rooms.get_mut(room_id) {
            Some(room) => {
                if timed_out {
                    room.claims.unsettled = Some(epoch);
                }
                room.claims.unsettled == Some(epoch)
            }
            None => timed_out,
        };
        self.event(Event::ClaimFailed {
            room: room_id.clone(),
            conn: committer,
            epoch,
            unsettled,
        });
        self.reject(
            committer,
            room_id,
            epoch,
            Rejection::from(CommitRejectReason::STORE_UNAVAILABLE),
        );
    }

    /// Take the commits that waited behind a claim, in order, until one is claimed.
    fn next_queued(&mut self, room_id: &RoomId) {
        loop {
            let Some(room) = self.rooms.get_mut(room_id) else {
                return;
            };
            if room.claims.in_flight.is_some() {
                return;
            }
            let Some((id, c)) = room.claims.queued.pop_front() else {
                return;
            };
            self.on_commit(id, c);
        }
    }

    /// Answer a commit that cannot wait behind the claim in flight (the queue is full).
    pub(super) fn queue_full(&mut self, id: ConnId, room_id: &RoomId, epoch: u64) {
        self.reject(
            id,
            room_id,
            epoch,
            Rejection::from(CommitRejectReason::STORE_UNAVAILABLE),
        );
    }
}
