//! Store mode: a room's lock shared through the room store (spec/cluster.md, CL-LOCK-1..2).
//!
//! Each change of a room's lock is a numbered, create-only store entry (`lock.<n>`); the
//! highest number is the room's state on every node. A host's `LockRoom`/`UnlockRoom` takes
//! effect on its node at once and is handed to the shell as [`Output::Lock`] with the next
//! number; every node's shell hands the entries it sees to [`Ds::handle_lock`].

use blindcall_proto::Body;

use super::{ConnId, Ds, Event, Output, RoomId, StoreMode};
use crate::time::Timestamp;

/// A lock change the shell must write to the room store (the payload of [`Output::Lock`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    /// The room.
    pub room: RoomId,
    /// The change's number: one more than the last change this node knows.
    pub n: u64,
    /// Locked (`LockRoom`) or not (`UnlockRoom`).
    pub locked: bool,
}

impl Ds {
    /// Store mode: number a lock change made here and hand it to the shell.
    pub(super) fn share_lock(&mut self, room: &RoomId, locked: bool) {
        if self.cfg.store_mode != StoreMode::Shared {
            return;
        }
        let n = self.shared_locks.get(room).map_or(1, |(n, _)| n + 1);
        self.shared_locks.insert(room.clone(), (n, locked));
        self.counters.lock_changes_shared += 1;
        self.out.push_back(Output::Lock(LockRequest {
            room: room.clone(),
            n,
            locked,
        }));
    }

    /// The lock a room newly set up here starts with (store mode: the last change seen).
    pub(super) fn initial_lock(&self, room: &RoomId) -> bool {
        self.shared_locks.get(room).is_some_and(|(_, l)| *l)
    }

    /// Store mode: lock change `n` of `room` as the store holds it (from the shell's watch of
    /// the lock entries, this node's own included, or the holder of a number this node tried
    /// to write). A change numbered above the last one this node knows is the room's state;
    /// so is one with the same number and another value (the store's holder of that number
    /// wins over this node's own attempt); anything else changes nothing. A new state is kept
    /// whether or not the room is served here; where it is, it applies as a host's
    /// `LockRoom`/`UnlockRoom` does on a single relay: every connection in the room gets the
    /// `RoomStateUpdate`, and from then on guests may not queue (ADM-LOCK-1). Event
    /// `RoomLocked`. Then drain [`Ds::poll_output`].
    pub fn handle_lock(&mut self, now: Timestamp, room: &RoomId, n: u64, locked: bool) {
        self.advance(now);
        let newer = match self.shared_locks.get(room) {
            None => true,
            Some((m, l)) => n > *m || (n == *m && locked != *l),
        };
        if !newer {
            return;
        }
        self.shared_locks.insert(room.clone(), (n, locked));
        self.counters.lock_changes_learned += 1;
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.locked == locked {
            return;
        }
        r.locked = locked;
        let all: Vec<ConnId> = r.conns.iter().copied().collect();
        if let Some(state) = self.room_state(room) {
            for c in all {
                self.send(c, Body::RoomStateUpdate(state.clone()));
            }
        }
        self.event(Event::RoomLocked {
            room: room.clone(),
            locked,
        });
    }
}
