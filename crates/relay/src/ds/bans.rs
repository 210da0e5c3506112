//! Store mode: bans shared through the room store (spec/cluster.md, CL-BAN-1..2).
//!
//! A token banned here (a host's `RemoveParticipant`, ADM-BAN-1, or a sequenced commit removing
//! a member on another's proposal, ADM-BAN-2) is handed to the shell as [`Output::Ban`], which
//! writes it as a create-only store entry; every node's shell watches those entries and hands
//! each one to [`Ds::handle_ban`], so the token is refused and cut off on every node serving
//! the room, as on the banning node.

use blindcall_proto::RefusedReason;

use super::{ConnId, Ds, Event, Output, RoomId, StoreMode};
use crate::time::Timestamp;

/// A ban the shell must write to the room store (the payload of [`Output::Ban`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRequest {
    /// The room.
    pub room: RoomId,
    /// The banned capability token's id.
    pub token_id: [u8; 16],
}

impl Ds {
    /// Ban `token_id` from `room` on this node; in store mode, also ask the shell to share it.
    pub(super) fn ban(&mut self, room: &RoomId, token_id: [u8; 16]) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.banned_tokens.insert(token_id);
        }
        if self.cfg.store_mode == StoreMode::Shared
            && self
                .shared_bans
                .entry(room.clone())
                .or_default()
                .insert(token_id)
        {
            self.counters.bans_shared += 1;
            self.out.push_back(Output::Ban(BanRequest {
                room: room.clone(),
                token_id,
            }));
        }
    }

    /// Whether `token_id` is banned from `room` here (by this node or, in store mode, by any
    /// node whose ban this node has seen).
    pub(super) fn is_banned(&self, room: &RoomId, token_id: &[u8; 16]) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.banned_tokens.contains(token_id))
            || self
                .shared_bans
                .get(room)
                .is_some_and(|b| b.contains(token_id))
    }

    /// Store mode: a ban the store holds (from the shell's watch of the ban entries, this
    /// node's own included). A ban new to this node is kept for the room whether or not the
    /// room is served here: the token's `Hello` is refused `REMOVED_BY_HOST` from now on, and
    /// its connections in the room here are refused `REMOVED_BY_HOST` and closed (a member's
    /// leaf is then proposed for removal, as for any member the relay cut off). Event
    /// `BanLearned`. A ban this node already knows (its own) changes nothing. Then drain
    /// [`Ds::poll_output`].
    pub fn handle_ban(&mut self, now: Timestamp, room: &RoomId, token_id: [u8; 16]) {
        self.advance(now);
        let known = self.is_banned(room, &token_id);
        self.shared_bans
            .entry(room.clone())
            .or_default()
            .insert(token_id);
        if known {
            return;
        }
        if let Some(r) = self.rooms.get_mut(room) {
            r.banned_tokens.insert(token_id);
        }
        self.counters.bans_learned += 1;
        self.drop_remote_token(room, token_id);
        let mut cut: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.admission()
                    .is_some_and(|a| a.room == *room && a.token_id == token_id)
            })
            .map(|(id, _)| *id)
            .collect();
        cut.sort_unstable();
        let closed = cut.len();
        for c in cut {
            self.refuse(c, RefusedReason::REMOVED_BY_HOST);
        }
        self.event(Event::BanLearned {
            room: room.clone(),
            token_id,
            closed,
        });
    }
}
