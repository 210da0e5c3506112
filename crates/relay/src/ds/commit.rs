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

use super::state::{Conn, Seat};
use super::validate::{CommitContext, Joiner, Rejection, RemovedBy};
use super::{ConnId, Ds, DsCounters, DsFault, Event, RoomId};

impl Ds {
    pub(super) fn on_commit(&mut self, id: ConnId, c: Commit) {
        let Some(adm) = self.admission(id) else {
            return;
        };
        let room_id = adm.room.clone();
        let seat = adm.seat;
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
        let waiting: Vec<(Vec<u8>, Joiner)> = room
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
                self.reject(id, &room_id, c.epoch, rej);
                return;
            }
        };
        // Who hears the commit: every member but the committer, as of before the commit.
        let recipients: Vec<ConnId> = self
            .members(&room_id)
            .into_iter()
            .map(|(m, _)| m)
            .filter(|m| *m != id)
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
        self.counters.commits_accepted += 1;

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
        for (conn, leaf) in &applied.joined {
            if let Some(a) = self.conns.get_mut(conn).and_then(Conn::admission_mut) {
                a.seat = Seat::Member { leaf: *leaf };
                a.key_package = None;
            }
        }
        if let Some(room) = self.rooms.get_mut(&room_id) {
            room.waiting
                .retain(|w| !applied.joined.iter().any(|(j, _)| j == w));
            room.banned_tokens.extend(banned);
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
        }

        // Outputs.
        self.send(
            id,
            Body::CommitAccepted(CommitAccepted {
                epoch: applied.new_epoch,
            }),
        );
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
        self.event(Event::CommitAccepted {
            room: room_id.clone(),
            conn: id,
            epoch: applied.new_epoch,
        });
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
            self.send_waiting_all(&room_id, *joiner);
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

    fn reject(&mut self, id: ConnId, room: &RoomId, epoch: u64, rej: Rejection) {
        DsCounters::bump(&mut self.counters.commits_rejected, rej.reason);
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
