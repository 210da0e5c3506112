//! Store mode with homes: every room is served entirely — control channel and media — by one
//! node, its home (spec/cluster.md, CL-HOME-1..6, CL-NODE-4..6).
//!
//! The DS learns the nodes' heartbeats ([`Ds::handle_node`], [`Ds::handle_node_gone`]) and
//! the rooms' homes ([`Ds::handle_home`]) as inputs and judges liveness on its own clock from
//! when each heartbeat with a new sequence number arrived: a node is alive while its last new
//! heartbeat is younger than the lease, *suspect* when it is older than 1.5 heartbeat
//! intervals. A Hello that passed every check is then admitted (this node is the room's home
//! and the room is loaded), redirected to a live home (`Redirect`), or parked while the home
//! is suspect, while this node claims the home of a room without a live one
//! ([`Output::ClaimHome`], answered by [`Ds::handle_home_claim`]), or while the room is being
//! loaded from the store (its genesis, then every winner in epoch order until a key is
//! absent). A room loaded on a node that held no state for it puts every member of its roster
//! in the resume grace, so members resume on the new home at the same epoch.

use std::collections::{BTreeSet, HashMap};

use blindcall_proto::{Body, Redirect, RefusedReason, VLBytes};

use super::claim::NOBODY;
use super::state::{Grace, Phase, Room};
use super::{ClaimTicket, CloseReason, ConnId, Ds, Event, Output, RoomId};
use crate::store::{HomeRecord, NodeRecord, StoreError};
use crate::time::Timestamp;
use crate::token::TokenClaims;

/// What the shell must write (the payload of [`Output::ClaimHome`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeClaimRequest {
    /// Hand it back with the answer ([`Ds::handle_home_claim`]).
    pub ticket: ClaimTicket,
    /// The term claimed for this node: write it with `RoomStore::claim_home`.
    pub record: HomeRecord,
}

/// The store's answer to a [`HomeClaimRequest`].
#[derive(Debug)]
pub enum HomeClaimAnswer {
    /// This node holds the term.
    Won,
    /// Another node holds the term.
    Lost {
        /// The term's holder.
        holder: HomeRecord,
    },
    /// The write could not be made, or its outcome is unknown.
    Failed(StoreError),
}

/// A Hello parked until its room's home is settled.
pub(crate) struct Parked {
    pub room: RoomId,
    pub name: Vec<u8>,
    pub claims: TokenClaims,
    pub since: Timestamp,
}

/// A room not served yet: its parked connections, and what it waits for.
#[derive(Default)]
pub(crate) struct HomePending {
    /// Parked connections, oldest first.
    pub parked: Vec<ConnId>,
    /// The home claim in flight.
    pub claim: Option<ClaimTicket>,
    /// This node is the room's home and is loading it from the store.
    pub loading: bool,
    /// Loading: the genesis is set up and the winners are read epoch by epoch.
    pub catching_up: bool,
}

/// What this node knows of another node.
#[derive(Debug, Clone)]
struct NodeView {
    seq: u64,
    /// When a heartbeat with a new seq last arrived here (`None`: its key was deleted).
    beat_at: Option<Timestamp>,
    draining: bool,
    addr: String,
    rooms: u32,
}

/// The DS's view of the cluster.
#[derive(Default)]
pub(crate) struct Homes {
    nodes: HashMap<String, NodeView>,
    /// The highest term seen of each room's home.
    known: HashMap<RoomId, HomeRecord>,
    /// Home claims in flight.
    claims: HashMap<ClaimTicket, HomeRecord>,
    /// Drain: handoffs in flight (a term naming the successor).
    handoffs: HashMap<ClaimTicket, HomeRecord>,
    /// (when, room): look at a parked room's home again.
    pub timers: BTreeSet<(Timestamp, RoomId)>,
    /// The first instant this DS saw: a node never heard of counts as heard of then.
    pub since: Option<Timestamp>,
}

/// What to do with a room's Hellos now.
enum Verdict {
    /// This node is the home.
    Ours,
    /// Send them to this address.
    Redirect(String),
    /// The home is suspect: look again at this instant.
    Wait(Timestamp),
    /// No live home: claim this term.
    Claim(u64),
}

impl Ds {
    /// Store mode with homes: a node's heartbeat, from the shell's watch of the nodes bucket
    /// (those there when the watch started first). A heartbeat with a sequence number not seen
    /// before is a sign of life at `now`. Then drain [`Ds::poll_output`].
    pub fn handle_node(&mut self, now: Timestamp, record: NodeRecord) {
        self.advance(now);
        let Some(cfg) = self.cfg.homes.as_ref() else {
            return;
        };
        if record.node_id == cfg.node_id {
            return;
        }
        let known = self.homes.nodes.contains_key(&record.node_id);
        let view = self
            .homes
            .nodes
            .entry(record.node_id.clone())
            .or_insert(NodeView {
                seq: record.seq,
                beat_at: Some(self.now),
                draining: record.draining,
                addr: record.addr.clone(),
                rooms: record.rooms,
            });
        let fresh = view.seq != record.seq || view.beat_at.is_none();
        if fresh {
            view.beat_at = Some(self.now);
        }
        view.seq = record.seq;
        view.draining = record.draining;
        view.addr = record.addr;
        view.rooms = record.rooms;
        if fresh || !known {
            self.counters.heartbeats_received += 1;
        }
        self.settle_rooms_of(&record.node_id);
    }

    /// Store mode with homes: a node's heartbeat key was deleted (it exited cleanly): it is
    /// dead at once. Then drain [`Ds::poll_output`].
    pub fn handle_node_gone(&mut self, now: Timestamp, node_id: &str) {
        self.advance(now);
        if let Some(v) = self.homes.nodes.get_mut(node_id) {
            v.beat_at = None;
        } else {
            self.homes.nodes.insert(
                node_id.to_owned(),
                NodeView {
                    seq: 0,
                    beat_at: None,
                    draining: false,
                    addr: String::new(),
                    rooms: 0,
                },
            );
        }
        self.settle_rooms_of(node_id);
    }

    /// Store mode with homes: a term of a room's home, from the shell's watch of the home keys
    /// (those written before it started first). A term above every term seen of the room makes
    /// its holder the room's home; when that is another node and the room is served here, its
    /// connections are redirected there and the room is forgotten, without removals or graces.
    /// Then drain [`Ds::poll_output`].
    pub fn handle_home(&mut self, now: Timestamp, record: HomeRecord) {
        self.advance(now);
        let Some(own) = self.cfg.homes.as_ref().map(|c| c.node_id.clone()) else {
            return;
        };
        let room_id = record.room.clone();
        if !self.note_home(record.clone()) {
            return;
        }
        if record.node_id == own {
            // Handed to this node (drain): a room parked here can be loaded now.
            let waiting = self
                .rooms
                .get(&room_id)
                .and_then(|r| r.pending.as_ref())
                .is_some_and(|p| p.claim.is_none() && !p.loading);
            if waiting {
                self.settle(&room_id);
            }
            return;
        }
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        match room.pending.as_ref() {
            // Served here: the room has moved.
            None => {
                self.counters.homes_lost += 1;
                self.event(Event::HomeLost {
                    room: room_id.clone(),
                    term: record.term,
                    to: record.node_id.clone(),
                });
                self.let_room_go(&room_id, &record.addr);
            }
            Some(p) if p.loading => self.let_room_go(&room_id, &record.addr),
            Some(p) if p.claim.is_some() => {}
            Some(_) => self.settle(&room_id),
        }
    }

    /// Store mode with homes: the answer to the [`Output::ClaimHome`] with `ticket`. Then
    /// drain [`Ds::poll_output`].
    pub fn handle_home_claim(
        &mut self,
        now: Timestamp,
        ticket: ClaimTicket,
        answer: HomeClaimAnswer,
    ) {
        self.advance(now);
        if let Some(record) = self.homes.handoffs.remove(&ticket) {
            self.handoff_answered(record, answer);
            return;
        }
        let Some(record) = self.homes.claims.remove(&ticket) else {
            self.counters.claims_unknown += 1;
            return;
        };
        let room_id = record.room.clone();
        let mine = self
            .cfg
            .homes
            .as_ref()
            .is_some_and(|c| c.node_id == record.node_id);
        let ours = match answer {
            HomeClaimAnswer::Won if !mine => {
                // Placed on another node (CL-HOME-11): the parked connections go there.
                self.counters.rooms_placed_elsewhere += 1;
                self.note_home(record);
                false
            }
            HomeClaimAnswer::Won => {
                self.counters.home_claims_won += 1;
                self.event(Event::HomeClaimed {
                    room: room_id.clone(),
                    term: record.term,
                });
                self.note_home(record);
                true
            }
            HomeClaimAnswer::Lost { holder } => {
                self.counters.home_claims_lost += 1;
                self.note_home(holder);
                false
            }
            HomeClaimAnswer::Failed(_) => {
                self.counters.home_claims_failed += 1;
                if let Some(p) = self.pending_mut(&room_id)
                    && p.claim == Some(ticket)
                {
                    self.fail_room(&room_id);
                }
                return;
            }
        };
        let Some(p) = self.pending_mut(&room_id) else {
            return;
        };
        if p.claim != Some(ticket) {
            return;
        }
        p.claim = None;
        if ours {
            self.start_loading(&room_id);
        } else {
            self.settle(&room_id);
        }
    }

    /// Store mode with homes: drain this node (CL-DRAIN-1). It takes no new connection; each
    /// room served here is handed to the alive, not suspect, not draining node with the fewest
    /// rooms (from the heartbeats) by claiming the room's next term naming it
    /// ([`Output::ClaimHome`]); once written, the room's connections are redirected there and
    /// closed without removals or graces. Rooms still being settled are refused
    /// `SHUTTING_DOWN`. Without such a node this is [`Ds::handle_shutdown`]. Returns whether a
    /// successor was found. Then drain [`Ds::poll_output`].
    pub fn handle_drain(&mut self, now: Timestamp) -> bool {
        self.advance(now);
        let Some(successor) = self.successor() else {
            self.handle_shutdown(now);
            return false;
        };
        self.shutting_down = true;
        let mut rooms: Vec<RoomId> = self.rooms.keys().cloned().collect();
        rooms.sort();
        for room_id in rooms {
            let pending = self
                .rooms
                .get(&room_id)
                .is_some_and(|r| r.pending.is_some());
            if pending {
                self.close_room(&room_id);
                continue;
            }
            let term = self
                .homes
                .known
                .get(&room_id)
                .map_or(1, |h| h.term.saturating_add(1));
            let record = HomeRecord {
                room: room_id.clone(),
                term,
                node_id: successor.0.clone(),
                addr: successor.1.clone(),
            };
            let ticket = ClaimTicket(self.next_ticket);
            self.next_ticket = self.next_ticket.wrapping_add(1);
            self.homes.handoffs.insert(ticket, record.clone());
            self.out
                .push_back(Output::ClaimHome(HomeClaimRequest { ticket, record }));
        }
        true
    }

    /// Where a new room goes (CL-HOME-11): the node homing the fewest rooms by the homes this
    /// node knows (the store's home watch, so claims made a moment ago count), among this node
    /// and the alive, not suspect, not draining others; this node on a tie. (node id, address).
    fn placement(&self) -> (String, String) {
        let Some(cfg) = self.cfg.homes.as_ref() else {
            return (String::new(), String::new());
        };
        let mut load: HashMap<&str, usize> = HashMap::new();
        for h in self.homes.known.values() {
            *load.entry(h.node_id.as_str()).or_default() += 1;
        }
        let suspect = cfg.heartbeat.saturating_mul(3) / 2;
        let mine = load.get(cfg.node_id.as_str()).copied().unwrap_or(0);
        let best = self
            .homes
            .nodes
            .iter()
            .filter(|(id, v)| {
                **id != cfg.node_id
                    && !v.draining
                    && !v.addr.is_empty()
                    && v.beat_at
                        .is_some_and(|t| t.saturating_add(suspect) >= self.now)
            })
            .map(|(id, v)| (load.get(id.as_str()).copied().unwrap_or(0), id, v))
            .min_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        match best {
            Some((n, id, v)) if n < mine => (id.clone(), v.addr.clone()),
            _ => (cfg.node_id.clone(), cfg.addr.clone()),
        }
    }

    /// The node to hand rooms to: alive, not suspect, not draining, fewest rooms (then the
    /// smallest id). (node id, address).
    fn successor(&self) -> Option<(String, String)> {
        let cfg = self.cfg.homes.as_ref()?;
        let suspect = cfg.heartbeat.saturating_mul(3) / 2;
        self.homes
            .nodes
            .iter()
            .filter(|(id, v)| {
                **id != cfg.node_id
                    && !v.draining
                    && !v.addr.is_empty()
                    && v.beat_at
                        .is_some_and(|t| t.saturating_add(suspect) >= self.now)
            })
            .min_by(|a, b| (a.1.rooms, a.0).cmp(&(b.1.rooms, b.0)))
            .map(|(id, v)| (id.clone(), v.addr.clone()))
    }

    /// A drain handoff's answer: the room's connections go to whoever holds the term; a failed
    /// write closes the room as a shutdown does.
    fn handoff_answered(&mut self, record: HomeRecord, answer: HomeClaimAnswer) {
        let room_id = record.room.clone();
        let to = match answer {
            HomeClaimAnswer::Won => record,
            HomeClaimAnswer::Lost { holder } => holder,
            HomeClaimAnswer::Failed(_) => {
                self.counters.home_claims_failed += 1;
                self.close_room(&room_id);
                return;
            }
        };
        self.note_home(to.clone());
        self.counters.handoffs_out += 1;
        self.event(Event::HandedOver {
            room: room_id.clone(),
            term: to.term,
            to: to.node_id.clone(),
        });
        self.let_room_go(&room_id, &to.addr);
    }

    /// Refuse every connection of the room `SHUTTING_DOWN` and forget it, without removals.
    fn close_room(&mut self, room_id: &RoomId) {
        let Some(room) = self.rooms.remove(room_id) else {
            return;
        };
        let parked = room.pending.map(|p| p.parked).unwrap_or_default();
        for id in room.conns.into_iter().chain(parked) {
            self.conns.remove(&id);
            self.refuse_unregistered(id, RefusedReason::SHUTTING_DOWN);
        }
        self.event(Event::RoomClosed {
            room: room_id.clone(),
        });
    }

    /// A Hello that passed every check, with homes: admitted (this node serves the room),
    /// redirected to the room's live home, or parked while the home is settled.
    pub(super) fn route_hello(&mut self, id: ConnId, name: Vec<u8>, claims: TokenClaims) {
        let room_id = RoomId(claims.room_id.clone());
        if let Some(room) = self.rooms.get(&room_id) {
            if room.pending.is_none() {
                self.admit(id, name, claims);
            } else {
                self.park(id, &room_id, name, claims);
            }
            return;
        }
        if let Verdict::Redirect(addr) = self.verdict(&room_id) {
            self.redirect(id, &room_id, &addr);
            return;
        }
        let initial_lock = self.initial_lock(&room_id);
        self.rooms.insert(
            room_id.clone(),
            Room {
                locked: initial_lock,
                pending: Some(Box::default()),
                ..Room::default()
            },
        );
        self.park(id, &room_id, name, claims);
        self.settle(&room_id);
    }

    /// Whether parked connection `p` waited longer than the lease plus 5 s.
    pub(super) fn parked_expired(&self, p: &Parked) -> bool {
        self.cfg
            .homes
            .as_ref()
            .is_some_and(|c| p.since.saturating_add(c.park_timeout()) <= self.now)
    }

    /// Look again at the rooms whose home timer is due.
    pub(super) fn home_timeouts(&mut self) {
        while let Some((at, room)) = self.homes.timers.first().cloned() {
            if at > self.now {
                break;
            }
            self.homes.timers.remove(&(at, room.clone()));
            self.settle(&room);
        }
    }

    /// A parked connection went away.
    pub(super) fn unpark(&mut self, id: ConnId, room_id: &RoomId) {
        if let Some(p) = self.pending_mut(room_id) {
            p.parked.retain(|c| *c != id);
        }
        self.drop_room_if_idle(room_id);
    }

    /// Loading: the read of `epoch` found no winner. When that is the room's next epoch, the
    /// room is loaded.
    pub(super) fn caught_up(&mut self, room_id: &RoomId, epoch: u64) -> bool {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return false;
        };
        let at = room.group.as_ref().map(|g| g.epoch());
        let Some(p) = room.pending.as_mut() else {
            return false;
        };
        if !p.catching_up || at != Some(epoch) {
            return false;
        }
        p.catching_up = false;
        self.finish_loading(room_id);
        true
    }

    /// Loading failed (the store did not answer, or what it holds was refused): the parked
    /// connections are refused `STORE_UNAVAILABLE` and the room forgotten.
    pub(super) fn fail_room(&mut self, room_id: &RoomId) {
        let Some(room) = self.rooms.remove(room_id) else {
            return;
        };
        for id in room.pending.map(|p| p.parked).unwrap_or_default() {
            self.refuse(id, RefusedReason::STORE_UNAVAILABLE);
        }
        for id in room.conns {
            self.refuse(id, RefusedReason::STORE_UNAVAILABLE);
        }
        self.event(Event::RoomClosed {
            room: room_id.clone(),
        });
    }

    /// The room's genesis was read while loading it: `found` says whether there was one.
    pub(super) fn genesis_read(&mut self, room_id: &RoomId, found: bool) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let Some(p) = room.pending.as_ref() else {
            return;
        };
        if !p.loading {
            return;
        }
        match (found, room.group.is_some()) {
            // A room whose group was not created yet.
            (false, _) => self.finish_loading(room_id),
            // Set up; the winners are being read.
            (true, true) => {}
            // The genesis was refused.
            (true, false) => self.fail_room(room_id),
        }
    }

    /// Whether the room is being loaded and reads its winners epoch by epoch.
    pub(super) fn catching_up(&self, room_id: &RoomId) -> bool {
        self.rooms
            .get(room_id)
            .and_then(|r| r.pending.as_ref())
            .is_some_and(|p| p.catching_up)
    }

    fn pending_mut(&mut self, room_id: &RoomId) -> Option<&mut HomePending> {
        self.rooms
            .get_mut(room_id)
            .and_then(|r| r.pending.as_deref_mut())
    }

    /// Keep `record` if it is the highest term seen of its room; returns whether it was.
    fn note_home(&mut self, record: HomeRecord) -> bool {
        let newer = self
            .homes
            .known
            .get(&record.room)
            .is_none_or(|h| record.term > h.term);
        if newer {
            // A home on a node never heard of (it may have just started, its first heartbeat
            // still on its way) counts as heard of now: it has a lease to show up.
            if !self.homes.nodes.contains_key(&record.node_id) {
                self.homes.nodes.insert(
                    record.node_id.clone(),
                    NodeView {
                        seq: 0,
                        beat_at: Some(self.now),
                        draining: false,
                        addr: String::new(),
                        rooms: 0,
                    },
                );
            }
            self.homes.known.insert(record.room.clone(), record);
        }
        newer
    }

    fn park(&mut self, id: ConnId, room_id: &RoomId, name: Vec<u8>, claims: TokenClaims) {
        let now = self.now;
        let timeout = self.cfg.homes.as_ref().map(|c| c.park_timeout());
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.phase = Phase::Parked(Box::new(Parked {
            room: room_id.clone(),
            name,
            claims,
            since: now,
        }));
        if let Some(t) = timeout {
            self.timers.insert((now.saturating_add(t), id));
        }
        if let Some(p) = self.pending_mut(room_id) {
            p.parked.push(id);
        }
    }

    fn redirect(&mut self, id: ConnId, room_id: &RoomId, addr: &str) {
        self.counters.redirects += 1;
        self.send(
            id,
            Body::Redirect(Redirect {
                relay: VLBytes::new(addr.as_bytes().to_vec()),
            }),
        );
        self.event(Event::Redirected {
            conn: id,
            room: room_id.clone(),
            to: addr.to_owned(),
        });
        self.close(id, CloseReason::Redirected);
    }

    /// Redirect every connection of the room to `addr` and forget the room here, without
    /// proposing removals or starting graces.
    fn let_room_go(&mut self, room_id: &RoomId, addr: &str) {
        // Joiners waiting here leave the store's waiting room (CL-WAIT-1).
        let waiting = self
            .rooms
            .get(room_id)
            .map(|r| r.waiting.clone())
            .unwrap_or_default();
        for id in waiting {
            self.share_waiting(room_id, id, false);
        }
        let Some(room) = self.rooms.remove(room_id) else {
            return;
        };
        let parked = room.pending.map(|p| p.parked).unwrap_or_default();
        for id in room.conns.into_iter().chain(parked) {
            self.redirect(id, room_id, addr);
        }
        self.event(Event::RoomClosed {
            room: room_id.clone(),
        });
    }

    /// What Hellos of `room_id` get now.
    fn verdict(&self, room_id: &RoomId) -> Verdict {
        let Some(cfg) = self.cfg.homes.as_ref() else {
            return Verdict::Ours;
        };
        let Some(home) = self.homes.known.get(room_id) else {
            return Verdict::Claim(1);
        };
        if home.node_id == cfg.node_id {
            return Verdict::Ours;
        }
        let (beat_at, draining) = match self.homes.nodes.get(&home.node_id) {
            Some(v) => (v.beat_at, v.draining),
            // Never heard of (not reached: a home noted counts its node as heard of then).
            None => (Some(self.homes.since.unwrap_or(self.now)), false),
        };
        let Some(beat_at) = beat_at else {
            return Verdict::Claim(home.term.saturating_add(1));
        };
        let dead_at = beat_at.saturating_add(cfg.lease);
        if dead_at <= self.now {
            return Verdict::Claim(home.term.saturating_add(1));
        }
        let suspect_at = beat_at.saturating_add(cfg.heartbeat.saturating_mul(3) / 2);
        if draining || suspect_at < self.now {
            return Verdict::Wait(dead_at);
        }
        // The node's address as its latest heartbeat gives it: a node that restarted under
        // the same id elsewhere holds the term still, and loads the room when its members
        // arrive (CL-HOME-10).
        let addr = self
            .homes
            .nodes
            .get(&home.node_id)
            .map(|v| &v.addr)
            .filter(|a| !a.is_empty())
            .unwrap_or(&home.addr);
        Verdict::Redirect(addr.clone())
    }

    /// Decide a waiting room's fate now (no claim in flight, not loading).
    fn settle(&mut self, room_id: &RoomId) {
        let Some(p) = self.rooms.get(room_id).and_then(|r| r.pending.as_ref()) else {
            return;
        };
        if p.claim.is_some() || p.loading {
            return;
        }
        match self.verdict(room_id) {
            Verdict::Ours => self.start_loading(room_id),
            Verdict::Redirect(addr) => self.let_room_go(room_id, &addr),
            Verdict::Wait(at) => {
                self.homes.timers.insert((at, room_id.clone()));
            }
            Verdict::Claim(term) => {
                let Some(cfg) = self.cfg.homes.as_ref() else {
                    return;
                };
                // A new room goes to the node homing the fewest rooms (CL-HOME-11); a room
                // whose home died is taken by the node its members reached.
                let (node_id, addr) = if term == 1 {
                    self.placement()
                } else {
                    (cfg.node_id.clone(), cfg.addr.clone())
                };
                let record = HomeRecord {
                    room: room_id.clone(),
                    term,
                    node_id,
                    addr,
                };
                let ticket = ClaimTicket(self.next_ticket);
                self.next_ticket = self.next_ticket.wrapping_add(1);
                if let Some(p) = self.pending_mut(room_id) {
                    p.claim = Some(ticket);
                }
                self.homes.claims.insert(ticket, record.clone());
                self.out
                    .push_back(Output::ClaimHome(HomeClaimRequest { ticket, record }));
            }
        }
    }

    /// Settle every waiting room whose home is `node_id`.
    fn settle_rooms_of(&mut self, node_id: &str) {
        let rooms: Vec<RoomId> = self
            .rooms
            .iter()
            .filter(|(id, r)| {
                r.pending.is_some()
                    && self
                        .homes
                        .known
                        .get(*id)
                        .is_some_and(|h| h.node_id == node_id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for r in rooms {
            self.settle(&r);
        }
    }

    /// This node is the room's home: load it from the store (its genesis, then its winners).
    fn start_loading(&mut self, room_id: &RoomId) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let has_group = room.group.is_some();
        let Some(p) = room.pending.as_mut() else {
            return;
        };
        p.loading = true;
        if has_group {
            self.finish_loading(room_id);
            return;
        }
        room.claims.genesis_loading = true;
        self.out.push_back(Output::LoadGenesis(room_id.clone()));
    }

    /// The room is loaded: its roster gets the resume grace, the parked connections are
    /// admitted.
    fn finish_loading(&mut self, room_id: &RoomId) {
        let now = self.now;
        let grace = self.cfg.resume_grace;
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let parked = room.pending.take().map(|p| p.parked).unwrap_or_default();
        let epoch = room.group.as_ref().map(|g| g.epoch());
        let leaves = room.group.as_ref().map(|g| g.leaves()).unwrap_or_default();
        let mut graced = 0;
        if !grace.is_zero() {
            let until = now.saturating_add(grace);
            for leaf in leaves {
                room.grace.insert(
                    leaf,
                    Grace {
                        until,
                        conn: NOBODY,
                        participant: None,
                    },
                );
                self.grace_timers.insert((until, room_id.clone(), leaf));
                graced += 1;
            }
        }
        self.counters.rooms_loaded += 1;
        self.counters.graces_started += graced as u64;
        self.event(Event::RoomLoaded {
            room: room_id.clone(),
            epoch,
            graced,
        });
        for id in parked {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            let Phase::Parked(p) = std::mem::replace(&mut conn.phase, Phase::AwaitingHello) else {
                continue;
            };
            let Parked { name, claims, .. } = *p;
            self.admit(id, name, claims);
        }
    }
}
