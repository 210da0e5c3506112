//! Commit sequencing: validate, decide, merge, broadcast, route Welcomes, cut removed members
//! off, re-propose removals.
//!
//! Order of what a sequenced commit produces: `CommitAccepted` to the committer,
//! `CommitBroadcast` to every other member (removed ones included, so their clients learn they
//! are out), Welcomes, then each removed member's `Refused(REMOVED_FROM_GROUP)` and `Close`
//! (the shell then drops its media at once), then waiting-room updates and the relay's
//! proposals for the new epoch.

use blindcall_proto::{
    Body, Commit, CommitAccepted, CommitBroadcast, CommitRejectReason, CommitRejected,
    RefusedReason, RelayProposal, VLBytes, WelcomeMessage,
};
use tls_codec::Serialize as _;

use super::claim::Committer;
use super::state::{Conn, Seat};
use super::validate::{CommitContext, Joiner, Rejection, RemovedBy, ValidatedCommit};
use super::{ConnId, Ds, DsCounters, DsFault, Event, RoomId, StoreMode};

impl Ds {
    pub(super) fn on_commit(&mut self, id: ConnId, c: Commit) {
        let Some(adm) = self.admission(id) else {
            return;
        };
        let room_id = adm.room.clone();
        let seat = adm.seat;
        let (mode, max_queued) = (self.cfg.store_mode, self.cfg.max_queued_commits);
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        // Store mode: one claim in flight per room; the rest wait, unvalidated, behind it.
        if mode == StoreMode::Shared && room.claims.in_flight.is_some() {
            if room.claims.queued.len() < max_queued {
                room.claims.queued.push_back((id, c));
            } else {
                self.queue_full(id, &room_id, c.epoch);
            }
            return;
        }
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        let Some(group) = room.group.as_ref() else {
            self.reject(
                id,
                &room_id,
                c.epoch,
                Rejection::from(CommitRejectReason::NO_GROUP),
            );
            return;
        };
        let waiting = self.waiting_joiners(&room_id);
        let ctx = CommitContext {
            committer_leaf: match seat {
                Seat::Member { leaf } => Some(leaf),
                _ => None,
            },
            waiting: &waiting,
        };
        let verdict = group.validate_commit(
            &self.crypto,
            c.epoch,
            c.commit.as_slice(),
            c.welcome.as_ref().map(VLBytes::as_slice),
            c.group_info.as_ref().map(VLBytes::as_slice),
            &ctx,
        );
        let validated = match verdict {
            Ok(v) => v,
            Err(rej) => {
                // Store mode: the store holds this very commit for its epoch (this node
                // followed it before the committer's copy arrived here): it is accepted, as
                // a claim of it would have been (CL-SEQ-2, CL-FOLLOW-1).
                let own = mode == StoreMode::Shared
                    && rej.reason == CommitRejectReason::EPOCH_TAKEN
                    && rej
                        .winner
                        .as_ref()
                        .and_then(|w| w.to_bytes().ok())
                        .is_some_and(|w| w == c.commit.as_slice());
                if own {
                    let epoch = c.epoch.saturating_add(1);
                    self.send(id, Body::CommitAccepted(CommitAccepted { epoch }));
                    self.event(Event::CommitAccepted {
                        room: room_id,
                        conn: id,
                        epoch,
                    });
                } else {
                    self.reject(id, &room_id, c.epoch, rej);
                }
                return;
            }
        };
        match mode {
            StoreMode::Local => self.sequence(&room_id, validated, Committer::Here(id)),
            StoreMode::Shared => self.claim(id, &room_id, validated),
        }
    }

    /// The room's waiting joiners by KeyPackageRef, for matching a commit's Adds.
    pub(super) fn waiting_joiners(&self, room_id: &RoomId) -> Vec<(Vec<u8>, Joiner)> {
        let Some(room) = self.rooms.get(room_id) else {
            return Vec::new();
        };
        let mut joiners: Vec<(Vec<u8>, Joiner)> = room
            .waiting
            .iter()
            .filter_map(|w| {
                let kp = self.admission(*w)?.key_package.as_ref()?;
                Some((
                    kp.kp_ref.clone(),
                    Joiner {
                        conn: *w,
                        signature_key: kp.signature_key.clone(),
                    },
                ))
            })
            .collect();
        joiners.extend(self.remote_joiners(room_id));
        joiners
    }

    /// Merge the epoch's winner and tell everyone: the committer (when it is here) gets
    /// `CommitAccepted`, every other member here the broadcast.
    pub(super) fn sequence(&mut self, room_id: &RoomId, validated: ValidatedCommit, by: Committer) {
        let id = by.conn();
        let committer = match by {
            Committer::Here(c) => Some(c),
            Committer::Elsewhere { .. } => None,
        };
        let room_id = room_id.clone();
        // Who hears the commit: every member but the committer, as of before the commit.
        let recipients: Vec<ConnId> = self
            .members(&room_id)
            .into_iter()
            .map(|(m, _)| m)
            .filter(|m| Some(*m) != committer)
            .collect();
        let Some(group) = self.rooms.get_mut(&room_id).and_then(|r| r.group.as_mut()) else {
            return;
        };
        let applied = match group.apply(validated) {
            Ok(a) => a,
            Err(f) => {
                self.fault(id, f);
                return;
            }
        };
        let tree = group.ratchet_tree_bytes();
        let commit_bytes = applied.sequenced.to_bytes();
        if committer.is_some() {
            self.counters.commits_accepted += 1;
        }

        // Seats: removed members out (their connections close below), joiners in.
        let members_before = self.members(&room_id);
        let mut removed_conns = Vec::new();
        for r in &applied.removed {
            if let Some((conn, _)) = members_before.iter().find(|(_, l)| *l == r.leaf) {
                removed_conns.push((*conn, r.leaf, matches!(r.by, RemovedBy::Member(_))));
            }
        }
        let mut banned = Vec::new();
        for (conn, _, by_member) in &removed_conns {
            if let Some(a) = self.conns.get_mut(conn).and_then(Conn::admission_mut) {
                // Out of the group: forgetting the connection must not propose its removal.
                a.seat = Seat::Lobby;
                if *by_member {
                    banned.push(a.token_id);
                }
            }
        }
        // Store mode: a joiner may have gone while the claim was in flight; its new leaf has
        // nobody behind it, so the relay proposes its removal like any departed member's.
        let mut orphans = Vec::new();
        let mut remote = Vec::new();
        let mut local_joined = Vec::new();
        for (conn, leaf) in &applied.joined {
            match self.conns.get_mut(conn).and_then(Conn::admission_mut) {
                Some(a) => {
                    a.seat = Seat::Member { leaf: *leaf };
                    a.key_package = None;
                    local_joined.push(*conn);
                }
                // A joiner waiting on another node (CL-WAIT-1): its node welcomes it.
                None if super::shared_waiting::is_remote(*conn) => remote.push(*conn),
                None => orphans.push(*leaf),
            }
        }
        self.drop_remote(&room_id, &remote);
        for conn in local_joined {
            self.share_waiting(&room_id, conn, false);
        }
        if let Some(room) = self.rooms.get_mut(&room_id) {
            room.waiting
                .retain(|w| !applied.joined.iter().any(|(j, _)| j == w));
            // A removed leaf is done with, even when the same commit put a joiner in it (the
            // leftmost free leaf): its index names someone else now.
            for r in &applied.removed {
                room.departed.remove(&r.leaf);
                room.grace.remove(&r.leaf);
            }
            if let Some(g) = room.group.as_ref() {
                room.departed.retain(|l| g.has_leaf(*l));
                room.grace.retain(|l, _| g.has_leaf(*l));
            }
            room.departed.extend(orphans);
        }
        for token_id in banned {
            self.ban(&room_id, token_id);
        }

        // Outputs. In store mode the committer may have gone while its claim was in flight.
        if let Some(c) = committer
            && self.conns.contains_key(&c)
        {
            self.send(
                c,
                Body::CommitAccepted(CommitAccepted {
                    epoch: applied.new_epoch,
                }),
            );
        }
        match commit_bytes {
            Ok(bytes) => {
                for r in recipients {
                    self.send(
                        r,
                        Body::CommitBroadcast(CommitBroadcast {
                            epoch: applied.sequenced.epoch,
                            commit: VLBytes::new(bytes.clone()),
                        }),
                    );
                }
            }
            Err(f) => self.fault(id, f),
        }
        if let Some(welcome) = &applied.welcome {
            match (welcome.tls_serialize_detached(), &tree) {
                (Ok(w), Ok(tree)) => {
                    for (conn, _) in &applied.joined {
                        if !self.conns.contains_key(conn) {
                            continue;
                        }
                        self.counters.welcomes_routed += 1;
                        self.send(
                            *conn,
                            Body::Welcome(WelcomeMessage {
                                welcome: VLBytes::new(w.clone()),
                                ratchet_tree: VLBytes::new(tree.clone()),
                            }),
                        );
                    }
                }
                (Err(_), _) => self.fault(id, DsFault::Serialize),
                (_, Err(f)) => self.fault(id, *f),
            }
        }
        match committer {
            Some(conn) => self.event(Event::CommitAccepted {
                room: room_id.clone(),
                conn,
                epoch: applied.new_epoch,
            }),
            None => self.event(Event::WinnerApplied {
                room: room_id.clone(),
                epoch: applied.new_epoch,
            }),
        }
        // Removed members heard the commit above; now they are told and cut off.
        for (conn, leaf, banned) in removed_conns {
            self.counters.members_removed += 1;
            self.event(Event::MemberRemoved {
                room: room_id.clone(),
                conn,
                leaf,
                banned,
            });
            self.refuse(conn, RefusedReason::REMOVED_FROM_GROUP);
        }
        for (conn, leaf) in &applied.joined {
            if !self.conns.contains_key(conn) {
                continue;
            }
            self.event(Event::MemberJoined {
                room: room_id.clone(),
                conn: *conn,
                leaf: *leaf,
            });
        }
        // Earlier members drop the joiners' entries; the joiners get the remaining ones.
        let joined: Vec<ConnId> = applied.joined.iter().map(|(c, _)| *c).collect();
        for joiner in &joined {
            self.send_waiting_removed(&room_id, *joiner, &joined);
        }
        for joiner in &joined {
            if self.conns.contains_key(joiner) {
                self.send_waiting_all(&room_id, *joiner);
            }
        }
        // Departed members still in the tree: propose again for the new epoch.
        let departed: Vec<u32> = self
            .rooms
            .get(&room_id)
            .map(|r| r.departed.iter().copied().collect())
            .unwrap_or_default();
        for leaf in departed {
            self.propose_remove(&room_id, leaf, id);
        }
    }

    pub(super) fn reject(&mut self, id: ConnId, room: &RoomId, epoch: u64, rej: Rejection) {
        DsCounters::bump(&mut self.counters.commits_rejected, rej.reason);
        if !self.conns.contains_key(&id) {
            // Store mode: the committer left while its claim was in flight.
            return;
        }
        let winner = rej.winner.and_then(|w| w.to_bytes().ok()).map(VLBytes::new);
        self.send(
            id,
            Body::CommitRejected(CommitRejected {
                epoch,
                reason: rej.reason,
                winner,
            }),
        );
        self.event(Event::CommitRejected {
            room: room.clone(),
            conn: id,
            reason: rej.reason,
        });
    }

    pub(super) fn propose_remove(&mut self, room_id: &RoomId, leaf: u32, on_behalf: ConnId) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let Some(group) = room.group.as_mut() else {
            return;
        };
        if !group.has_leaf(leaf) {
            room.departed.remove(&leaf);
            return;
        }
        // The leaf already proposed its own removal this epoch (a leave): a second Remove of it
        // would make every commit that includes both invalid.
        match group.remove_queued(leaf) {
            Ok(false) => {}
            Ok(true) => return,
            Err(f) => {
                self.counters.internal_faults += 1;
                self.event(Event::InternalFault {
                    conn: on_behalf,
                    fault: f,
                });
                return;
            }
        }
        let epoch = group.epoch();
        match group.propose_remove(&self.crypto, &self.cfg.relay_identities, leaf) {
            Ok(bytes) => {
                self.counters.remove_proposals += 1;
                for (m, _) in self.members(room_id) {
                    self.send(
                        m,
                        Body::RelayProposal(RelayProposal {
                            epoch,
                            removed_leaf: leaf,
                            proposal: VLBytes::new(bytes.clone()),
                        }),
                    );
                }
                self.event(Event::RemoveProposed {
                    room: room_id.clone(),
                    leaf,
                    epoch,
                });
            }
            Err(f) => {
                self.counters.internal_faults += 1;
                self.event(Event::InternalFault {
                    conn: on_behalf,
                    fault: f,
                });
            }
        }
    }
}
