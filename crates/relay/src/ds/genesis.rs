//! Store mode: a room's group is created once for the whole cluster (spec/cluster.md,
//! CL-GEN-1..3).
//!
//! A `CreateGroup` that passes the bootstrap checks is parked while the shell writes the room's
//! genesis, create-only ([`Output::Genesis`]); only when the store answers
//! [`GenesisAnswer::Created`] is the group set up here and the creator told `GroupCreated`. A
//! room whose genesis another node wrote answers `GROUP_EXISTS`, as a second creation on one
//! relay does, and loads that genesis. A node that serves a room without a group asks the shell
//! for its genesis ([`Output::LoadGenesis`]) when the room's first connection is admitted and
//! when a winner of the room arrives, and sets the group up from it, checked like a creator's
//! GroupInfo.

use blindcall_proto::{Body, ErrorCode, GroupCreated};

use super::mls::GroupState;
use super::state::{Conn, Seat};
use super::{ClaimTicket, ConnId, Ds, Event, Output, RoomId, StoreMode};
use crate::store::{GenesisRecord, StoreError};
use crate::time::Timestamp;

/// What the shell must write (the payload of [`Output::Genesis`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisRequest {
    /// Hand it back with the answer ([`Ds::handle_genesis`]).
    pub ticket: ClaimTicket,
    /// The room's genesis: write it with `RoomStore::create_genesis`.
    pub record: GenesisRecord,
}

/// The store's answer to a [`GenesisRequest`].
#[derive(Debug)]
pub enum GenesisAnswer {
    /// The record is the room's genesis.
    Created,
    /// Another genesis holds the room.
    Exists {
        /// The room's genesis.
        holder: GenesisRecord,
    },
    /// The write could not be made, or its outcome is unknown.
    Failed(StoreError),
}

/// A `CreateGroup` parked until the store answers its genesis write.
pub(crate) struct GenesisFlight {
    pub ticket: ClaimTicket,
    pub creator: ConnId,
    pub record: GenesisRecord,
    pub group: Box<GroupState>,
    pub leaf: u32,
}

impl Ds {
    /// Store mode: park a bootstrapped group until its genesis is written.
    pub(super) fn claim_genesis(
        &mut self,
        id: ConnId,
        room_id: &RoomId,
        group_info: Vec<u8>,
        group: GroupState,
        leaf: u32,
    ) {
        let ticket = ClaimTicket(self.next_ticket);
        self.next_ticket = self.next_ticket.wrapping_add(1);
        let record = GenesisRecord::new(room_id.clone(), group.epoch(), group_info);
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        room.claims.genesis = Some(GenesisFlight {
            ticket,
            creator: id,
            record: record.clone(),
            group: Box::new(group),
            leaf,
        });
        self.genesis_rooms.insert(ticket, room_id.clone());
        self.out
            .push_back(Output::Genesis(GenesisRequest { ticket, record }));
    }

    /// Store mode: the answer to the [`Output::Genesis`] with `ticket`. Then drain
    /// [`Ds::poll_output`]. An answer for no write in flight (its room closed) is ignored.
    pub fn handle_genesis(&mut self, now: Timestamp, ticket: ClaimTicket, answer: GenesisAnswer) {
        self.advance(now);
        let Some(room_id) = self.genesis_rooms.remove(&ticket) else {
            self.counters.claims_unknown += 1;
            return;
        };
        let Some(flight) = self
            .rooms
            .get_mut(&room_id)
            .and_then(|r| r.claims.genesis.take_if(|f| f.ticket == ticket))
        else {
            self.counters.claims_unknown += 1;
            return;
        };
        let creator = flight.creator;
        let ours = match &answer {
            GenesisAnswer::Created => true,
            GenesisAnswer::Exists { holder } => *holder == flight.record,
            GenesisAnswer::Failed(_) => false,
        };
        if ours {
            if let Some(room) = self.rooms.get_mut(&room_id) {
                room.claims.genesis_seen = Some((
                    flight.record.group_info().to_vec(),
                    flight.leaf,
                    flight.record.epoch(),
                ));
            }
            self.group_created(&room_id, creator, *flight.group, flight.leaf);
            return;
        }
        match answer {
            GenesisAnswer::Created => {}
            GenesisAnswer::Exists { holder } => {
                // Another node created the room's group first: the same refusal as a second
                // creation here, and this node takes the room's genesis.
                self.error(creator, ErrorCode::GROUP_EXISTS);
                self.load_genesis(&room_id, &holder);
            }
            GenesisAnswer::Failed(e) => {
                let detail = format!("room store unavailable: {e}");
                self.error_with(creator, ErrorCode::INTERNAL, &detail);
            }
        }
    }

    /// Store mode: the answer to [`Output::LoadGenesis`]: the room's genesis, or `None` when
    /// its group was not created yet (or the read failed: the next admission or winner of the
    /// room asks again).
    pub fn handle_genesis_loaded(
        &mut self,
        now: Timestamp,
        room_id: &RoomId,
        genesis: Option<GenesisRecord>,
    ) {
        self.advance(now);
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        room.claims.genesis_loading = false;
        let found = genesis.is_some();
        if let Some(g) = genesis {
            if let Some(p) = room.pending.as_mut().filter(|p| p.loading) {
                p.catching_up = true;
            }
            self.load_genesis(room_id, &g);
        }
        self.genesis_read(room_id, found);
    }

    /// Store mode: the read asked by [`Output::LoadGenesis`] failed. A room being loaded on
    /// becoming its home refuses its parked connections `STORE_UNAVAILABLE` (CL-HOME-3);
    /// otherwise the next admission or winner of the room asks again.
    pub fn handle_genesis_load_failed(&mut self, now: Timestamp, room_id: &RoomId) {
        self.advance(now);
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        room.claims.genesis_loading = false;
        if room.pending.as_ref().is_some_and(|p| p.loading) {
            self.fail_room(room_id);
        }
    }

    /// Set the room's group up from its genesis, unless it has one (or a creation of its own
    /// is in flight, whose answer decides). The genesis is checked like a creator's GroupInfo.
    fn load_genesis(&mut self, room_id: &RoomId, genesis: &GenesisRecord) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        if room.group.is_some() || room.claims.genesis.is_some() {
            return;
        }
        match GroupState::bootstrap(
            &self.crypto,
            &self.cfg.relay_identities,
            genesis.group_info(),
            self.cfg.commit_history,
        ) {
            Ok((group, creator_leaf)) => {
                let epoch = group.epoch();
                if let Some(room) = self.rooms.get_mut(room_id) {
                    room.group = Some(group);
                    room.claims.genesis_seen =
                        Some((genesis.group_info().to_vec(), creator_leaf, epoch));
                }
                self.counters.geneses_loaded += 1;
                self.event(Event::GenesisLoaded {
                    room: room_id.clone(),
                    epoch,
                });
                // Winners that came before the group: merged now, or the gap read.
                self.follow(room_id);
            }
            Err(e) => {
                self.counters.geneses_refused += 1;
                self.event(Event::GenesisRefused {
                    room: room_id.clone(),
                    reason: e.to_string(),
                });
            }
        }
    }

    /// Store mode: the room's creator sends the very `CreateGroup` of the room's genesis to this
    /// node too, while the group is still at its first epoch: it is seated at its leaf and
    /// answered `GroupCreated`, as the store answers a retried write of the same genesis.
    pub(super) fn same_genesis_again(&mut self, id: ConnId, room_id: &RoomId, gi: &[u8]) -> bool {
        if self.cfg.store_mode != StoreMode::Shared {
            return false;
        }
        let Some(room) = self.rooms.get(room_id) else {
            return false;
        };
        let Some((bytes, leaf, epoch)) = room.claims.genesis_seen.as_ref() else {
            return false;
        };
        let (leaf, epoch) = (*leaf, *epoch);
        let current = room.group.as_ref().map(|g| g.epoch());
        let leaf_free = !room.conns.iter().any(|c| {
            self.conns
                .get(c)
                .and_then(Conn::admission)
                .is_some_and(|a| a.seat == Seat::Member { leaf })
        });
        if bytes.as_slice() != gi || current != Some(epoch) || !leaf_free {
            return false;
        }
        if let Some(a) = self.conns.get_mut(&id).and_then(Conn::admission_mut) {
            a.seat = Seat::Member { leaf };
        }
        self.send(id, Body::GroupCreated(GroupCreated { epoch }));
        self.send_waiting_all(room_id, id);
        true
    }

    /// Store mode: ask the shell for the room's genesis if the room has no group and none is
    /// being created or read here.
    pub(super) fn want_genesis(&mut self, room_id: &RoomId) {
        if self.cfg.store_mode != StoreMode::Shared {
            return;
        }
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if room.group.is_some() || room.claims.genesis.is_some() || room.claims.genesis_loading {
            return;
        }
        room.claims.genesis_loading = true;
        self.out.push_back(Output::LoadGenesis(room_id.clone()));
    }

    /// The group of `room_id` is set up with its creator at `leaf` (local mode at once; store
    /// mode once its genesis is written).
    pub(super) fn group_created(
        &mut self,
        room_id: &RoomId,
        id: ConnId,
        group: GroupState,
        leaf: u32,
    ) {
        let epoch = group.epoch();
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        if room.group.is_some() {
            // Loaded meanwhile from the same genesis (this very creation).
            self.error(id, ErrorCode::GROUP_EXISTS);
            return;
        }
        room.group = Some(group);
        let seated = match self.conns.get_mut(&id).and_then(Conn::admission_mut) {
            Some(a) if a.room == *room_id && a.seat == Seat::Lobby => {
                a.seat = Seat::Member { leaf };
                true
            }
            _ => false,
        };
        self.counters.groups_created += 1;
        if seated {
            self.send(id, Body::GroupCreated(GroupCreated { epoch }));
            self.send_waiting_all(room_id, id);
        }
        self.event(Event::GroupCreated {
            room: room_id.clone(),
            epoch,
        });
        self.follow(room_id);
    }
}
