//! Store mode: following a room's winners as the store sequences them (spec/cluster.md,
//! CL-FOLLOW-1..3).
//!
//! The shell watches the store's commit keys and hands every winner it sees to
//! [`Ds::handle_winner`]; the DS merges them in epoch order, each checked like any commit
//! (the Lost path's checks, CL-DS-3), so a node where nobody commits keeps up with the room.
//! A winner after a gap waits while the DS asks the shell to read the missing epoch
//! ([`Output::Fetch`]); a winner already merged (this node's own, or one it learned by losing a
//! claim) is a duplicate and ignored. While a claim is in flight, followed winners wait for its
//! answer: the claim's outcome is merged first, in order.

use super::mls::GroupState;
use super::{Ds, Event, Output, RoomId};
use crate::store::CommitRecord;
use crate::time::Timestamp;

/// At most this many followed winners wait per room (after a gap, or behind a claim): one
/// more beyond the gap is dropped (counted `winners_dropped`); the read of the gap and the
/// next winners fill it again. Winners after one that was refused are dropped too.
pub const MAX_FOLLOWED: usize = 64;

/// A read the shell must make for the DS (the payload of [`Output::Fetch`]): the winner of
/// `epoch` of `room`, missing between the room's epoch and a later winner it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The room.
    pub room: RoomId,
    /// The epoch whose commit key to read (`RoomStore::sequenced_commit`).
    pub epoch: u64,
}

impl Ds {
    /// Store mode: a commit the store sequenced (from the shell's watch of the commit keys, or
    /// the answer to an [`Output::Fetch`]). Winners of rooms this DS does not serve are
    /// ignored; one of an epoch already merged is a duplicate and ignored; the others are
    /// merged in epoch order, each checked like any commit (a winner that fails is refused:
    /// event `WinnerRefused`, and the room stays at its epoch). Then drain
    /// [`Ds::poll_output`].
    pub fn handle_winner(&mut self, now: Timestamp, record: CommitRecord) {
        self.advance(now);
        let room_id = record.room().clone();
        let Some(room) = self.rooms.get_mut(&room_id) else {
            self.counters.winners_ignored += 1;
            return;
        };
        let Some(epoch) = room.group.as_ref().map(|g| g.epoch()) else {
            // A room served here whose group was created on another node: the winner waits
            // for the room's genesis, which is asked for (CL-GEN-2).
            if room.claims.followed.len() < MAX_FOLLOWED {
                room.claims.followed.insert(record.epoch(), record);
            } else {
                self.counters.winners_dropped += 1;
            }
            self.want_genesis(&room_id);
            return;
        };
        let e = record.epoch();
        if e < epoch {
            self.counters.winners_duplicate += 1;
            return;
        }
        if room.claims.fetching == Some(e) {
            room.claims.fetching = None;
        }
        if room.claims.followed.contains_key(&e) {
            // Already waiting (after a gap): seen again, it asks for the gap again if the
            // last read found nothing.
            self.counters.winners_duplicate += 1;
        } else if e > epoch && room.claims.followed.len() >= MAX_FOLLOWED {
            self.counters.winners_dropped += 1;
            return;
        } else {
            room.claims.followed.insert(e, record);
        }
        self.follow(&room_id);
    }

    /// Store mode: the read asked by [`Output::Fetch`] found nothing or failed. The next
    /// winner given for the room asks again.
    pub fn handle_fetch_failed(&mut self, now: Timestamp, room: &RoomId, epoch: u64) {
        self.advance(now);
        self.counters.fetches_failed += 1;
        if self.catching_up(room) {
            // Loading the room on becoming its home: without its winners it cannot be served.
            self.fail_room(room);
            return;
        }
        if let Some(r) = self.rooms.get_mut(room)
            && r.claims.fetching == Some(epoch)
        {
            r.claims.fetching = None;
        }
    }

    /// Store mode: the read asked by [`Output::Fetch`] found no winner of `epoch`. For a room
    /// being loaded on becoming its home, the room's next epoch absent means it is loaded
    /// (CL-HOME-4); otherwise as [`Ds::handle_fetch_failed`].
    pub fn handle_fetch_absent(&mut self, now: Timestamp, room: &RoomId, epoch: u64) {
        self.advance(now);
        if let Some(r) = self.rooms.get_mut(room)
            && r.claims.fetching == Some(epoch)
        {
            r.claims.fetching = None;
        }
        if self.caught_up(room, epoch) {
            return;
        }
        self.handle_fetch_failed(now, room, epoch);
    }

    /// Sets a room being loaded up from `record`'s GroupInfo (the state its commit led to);
    /// returns whether that worked. Commits of earlier epochs are no longer in its log.
    fn restore_room(&mut self, room_id: &RoomId, record: &CommitRecord) -> bool {
        let Some(info) = record.group_info() else {
            return false;
        };
        let restored = match GroupState::restore(
            &self.crypto,
            &self.cfg.relay_identities,
            info,
            self.cfg.commit_history,
        ) {
            Ok(g) if g.epoch() == record.epoch().saturating_add(1) => g,
            _ => return false,
        };
        let epoch = restored.epoch();
        let Some(room) = self.rooms.get_mut(room_id) else {
            return false;
        };
        room.group = Some(restored);
        room.claims.refused = None;
        self.counters.rooms_restored += 1;
        self.event(Event::RoomRestored {
            room: room_id.clone(),
            epoch,
        });
        true
    }

    /// Merge the followed winners that are next, in order; ask for the first missing one.
    pub(super) fn follow(&mut self, room_id: &RoomId) {
        loop {
            let Some(room) = self.rooms.get_mut(room_id) else {
                return;
            };
            if room.claims.in_flight.is_some() {
                return;
            }
            let Some(epoch) = room.group.as_ref().map(|g| g.epoch()) else {
                return;
            };
            // Merged meanwhile (by a lost claim, or this node's own win): duplicates.
            let current = room.claims.followed.split_off(&epoch);
            let stale = std::mem::replace(&mut room.claims.followed, current);
            self.counters.winners_duplicate += u64::try_from(stale.len()).unwrap_or(u64::MAX);
            let Some(room) = self.rooms.get_mut(room_id) else {
                return;
            };
            let Some(record) = room.claims.followed.remove(&epoch) else {
                if room.claims.refused == Some(epoch) {
                    // Stuck at a refused winner: what comes after it cannot apply here.
                    let dropped = std::mem::take(&mut room.claims.followed);
                    self.counters.winners_dropped +=
                        u64::try_from(dropped.len()).unwrap_or(u64::MAX);
                    return;
                }
                let catching_up = room.pending.as_ref().is_some_and(|p| p.catching_up);
                if (catching_up || !room.claims.followed.is_empty())
                    && room.claims.fetching != Some(epoch)
                {
                    room.claims.fetching = Some(epoch);
                    self.out.push_back(Output::Fetch(FetchRequest {
                        room: room_id.clone(),
                        epoch,
                    }));
                }
                return;
            };
            if self.apply_winner(room_id, &record, None).is_none() {
                // A room being taken over restarts from the winner's GroupInfo when its commit
                // cannot be processed here (CL-HOME-9).
                if self.catching_up(room_id) && self.restore_room(room_id, &record) {
                    continue;
                }
                // Refused: the room stays at this epoch here; what follows cannot apply.
                if let Some(room) = self.rooms.get_mut(room_id) {
                    let dropped = std::mem::take(&mut room.claims.followed);
                    self.counters.winners_dropped +=
                        u64::try_from(dropped.len()).unwrap_or(u64::MAX);
                    room.claims.refused = Some(epoch);
                }
                return;
            }
        }
    }
}
