//! The delivery-service core: admission, waiting room, commit sequencing, Welcome routing,
//! removal proposals, members' own proposals and peer messages, resumes — as a sans-IO state
//! machine.
//!
//! # Driving it
//!
//! The shell owns one [`Ds`] and, for every event:
//! 1. calls [`Ds::handle_input`] (connection opened, bytes received, connection lost, goodbye)
//!    or, when the deadline from [`Ds::poll_timeout`] passes, [`Ds::handle_timeout`], or, in
//!    store mode ([`StoreMode::Shared`]), when the room store answers an [`Output::Claim`],
//!    [`Ds::handle_claim`], and for every commit the store sequenced (its watch, or the answer
//!    to an [`Output::Fetch`]), [`Ds::handle_winner`] (or [`Ds::handle_fetch_failed`]);
//! 2. drains [`Ds::poll_output`] until `None`, writing each [`Output::Send`] to its connection,
//!    closing on [`Output::Close`] (after writing what was queued before it), starting each
//!    [`Output::Claim`] and [`Output::Fetch`] in a task of its own (never awaited by the
//!    loop) and logging or
//!    counting [`Output::Event`]s;
//! 3. re-arms its timer with [`Ds::poll_timeout`].
//!
//! Time is always an argument ([`Timestamp`]); a `now` older than one already seen is treated as
//! the latest one. Bytes in are raw stream bytes: the DS does the framing. Bytes out are whole
//! frames. Nothing here blocks, spawns or reads a clock; a bad message from one connection gets
//! a typed answer and never affects another connection's room.

mod bans;
mod challenge;
mod claim;
mod commit;
mod counters;
mod error;
mod follow;
mod genesis;
mod homes;
mod identity;
mod io;
mod lifecycle;
mod lock;
mod members;
mod mls;
mod resume;
mod shared_waiting;
mod state;
mod validate;
mod waiting;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use blindcall_proto::{
    Body, ControlMessage, CreateGroup, DecodeError, ErrorCode, ErrorMessage, FrameDecoder,
    GroupInfoResponse, Hello, HelloAck, MessageType, Pong, Refused, RefusedReason, RelaySender,
    Role, VLBytes,
};
use openmls_rust_crypto::RustCrypto;

pub use bans::BanRequest;
pub use challenge::ChallengeSeed;
pub use claim::{ClaimAnswer, ClaimRequest, ClaimTicket};
pub use counters::DsCounters;
pub use error::{DsFault, GroupInfoError, KeyPackageError, MediaSignalError, ProposalError};
pub use follow::{FetchRequest, MAX_FOLLOWED};
pub use genesis::{GenesisAnswer, GenesisRequest};
pub use homes::{HomeClaimAnswer, HomeClaimRequest};
pub use identity::{RelayIdentities, RelayIdentity};
pub use io::{
    CloseReason, ConnId, DEFAULT_COMMIT_HISTORY, DEFAULT_LEASE, DEFAULT_MAX_FRAME_LEN_BEFORE_HELLO,
    DEFAULT_MAX_KEY_PACKAGE_LEN, DEFAULT_MAX_PEER_PAYLOAD, DEFAULT_MAX_QUEUED_COMMITS,
    DEFAULT_RESUME_GRACE, DsConfig, Event, HomesConfig, Input, Output, StoreMode,
};
pub use lifecycle::Occupancy;
pub use lock::LockRequest;
pub use shared_waiting::WaitingWrite;
pub use state::RoomId;

pub(crate) use mls::group_info_members;

use challenge::Challenges;
use mls::GroupState;
use state::{Admission, Conn, Phase, Room, Seat, TokenBucket};

use crate::time::Timestamp;
use crate::token;

/// The delivery-service state machine for all rooms of one relay.
pub struct Ds {
    cfg: DsConfig,
    crypto: RustCrypto,
    conns: HashMap<ConnId, Conn>,
    rooms: HashMap<RoomId, Room>,
    /// (deadline, connection); checked lazily against the connection's state when due.
    timers: BTreeSet<(Timestamp, ConnId)>,
    /// (end of grace, room, leaf); checked lazily against the room's grace when due.
    grace_timers: BTreeSet<(Timestamp, RoomId, u32)>,
    /// The resume challenge of each admitted connection.
    challenges: Challenges,
    /// Admitted connections per (room, token id), for the per-token connection limit.
    token_conns: HashMap<(RoomId, [u8; 16]), usize>,
    out: VecDeque<Output>,
    counters: DsCounters,
    now: Timestamp,
    /// Set by [`Ds::handle_shutdown`]: every later connection is refused.
    shutting_down: bool,
    /// Store mode: the room of each claim in flight.
    claim_rooms: HashMap<ClaimTicket, RoomId>,
    /// Store mode: the room of each genesis write in flight.
    genesis_rooms: HashMap<ClaimTicket, RoomId>,
    /// Store mode: the next claim's ticket.
    next_ticket: u64,
    /// Store mode: the bans shared through the store, by room, whether or not the room is
    /// served here (CL-BAN-1).
    shared_bans: HashMap<RoomId, HashSet<[u8; 16]>>,
    /// Store mode: the last lock change seen of each room, (number, locked), whether or not
    /// the room is served here (CL-LOCK-1).
    shared_locks: HashMap<RoomId, (u64, bool)>,
    /// Store mode: joiners waiting on other nodes, by room (CL-WAIT-1).
    remote_waiting: HashMap<RoomId, Vec<shared_waiting::RemoteJoiner>>,
    /// Store mode: the next entry id of a joiner waiting on another node.
    next_remote: u64,
    /// Store mode with homes: the nodes and the rooms' homes (CL-HOME-*).
    homes: homes::Homes,
}

/// How a member's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Lost (no goodbye, or idle): the leaf is kept for the resume grace.
    Lost,
    /// Left (goodbye), or closed by the relay: the leaf's removal is proposed at once.
    Left,
}

impl std::fmt::Debug for Ds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ds")
            .field("connections", &self.conns.len())
            .field("rooms", &self.rooms.len())
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl Ds {
    /// A DS with no connections.
    pub fn new(cfg: DsConfig) -> Self {
        Self {
            cfg,
            crypto: RustCrypto::default(),
            conns: HashMap::new(),
            rooms: HashMap::new(),
            timers: BTreeSet::new(),
            grace_timers: BTreeSet::new(),
            challenges: Challenges::default(),
            token_conns: HashMap::new(),
            out: VecDeque::new(),
            counters: DsCounters::default(),
            now: Timestamp(0),
            shutting_down: false,
            claim_rooms: HashMap::new(),
            genesis_rooms: HashMap::new(),
            next_ticket: 1,
            shared_bans: HashMap::new(),
            shared_locks: HashMap::new(),
            remote_waiting: HashMap::new(),
            next_remote: 1,
            homes: homes::Homes::default(),
        }
    }

    /// The configuration this DS runs with.
    pub fn config(&self) -> &DsConfig {
        &self.cfg
    }

    /// The relay's external-sender identities (for group creators).
    pub fn relay_identities(&self) -> &RelayIdentities {
        &self.cfg.relay_identities
    }

    /// Counters so far.
    pub fn counters(&self) -> &DsCounters {
        &self.counters
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Number of rooms with at least one connection.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The room's group epoch, if the room exists and has a group.
    pub fn room_epoch(&self, room: &[u8]) -> Option<u64> {
        self.rooms
            .get(&RoomId(room.to_vec()))
            .and_then(|r| r.group.as_ref())
            .map(|g| g.epoch())
    }

    /// Feed one input.
    pub fn handle_input(&mut self, now: Timestamp, input: Input<'_>) {
        self.advance(now);
        match input {
            Input::Opened(id) => self.on_opened(id),
            Input::Received(id, bytes) => self.on_received(id, bytes),
            Input::Closed(id) => self.forget(id, Ending::Lost),
            Input::Goodbye(id) => self.forget(id, Ending::Left),
        }
    }

    /// Fire every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.advance(now);
        while let Some(&(at, id)) = self.timers.first() {
            if at > self.now {
                break;
            }
            self.timers.remove(&(at, id));
            let Some(conn) = self.conns.get(&id) else {
                continue;
            };
            if let Some(idle) = self.cfg.idle_timeout {
                let idle_at = conn.last_rx.saturating_add(idle);
                if idle_at <= self.now {
                    self.refuse(id, RefusedReason::IDLE_TIMEOUT);
                    continue;
                }
                // Re-arm lazily: one pending idle deadline per connection.
                self.timers.insert((idle_at, id));
            }
            match &conn.phase {
                Phase::AwaitingHello
                    if conn.opened_at.saturating_add(self.cfg.hello_timeout) <= self.now =>
                {
                    self.refuse(id, RefusedReason::HELLO_TIMEOUT);
                }
                Phase::Admitted(a) => {
                    if let Seat::Waiting { since } = a.seat
                        && since.saturating_add(self.cfg.waiting_room_timeout) <= self.now
                    {
                        self.refuse(id, RefusedReason::WAITING_ROOM_TIMEOUT);
                    }
                }
                Phase::Parked(p) => {
                    if self.parked_expired(p) {
                        self.refuse(id, RefusedReason::STORE_UNAVAILABLE);
                    }
                }
                Phase::AwaitingHello => {}
            }
        }
        self.home_timeouts();
        while let Some((at, room, leaf)) = self.grace_timers.first().cloned() {
            if at > self.now {
                break;
            }
            self.grace_timers.remove(&(at, room.clone(), leaf));
            self.expire_grace(&room, leaf, at);
        }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self, now: Timestamp) -> Option<Output> {
        self.advance(now);
        self.out.pop_front()
    }

    /// The earliest deadline, if any.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let conn = self.timers.first().map(|(t, _)| *t);
        let grace = self.grace_timers.first().map(|(t, _, _)| *t);
        let home = self.homes.timers.first().map(|(t, _)| *t);
        [conn, grace, home].into_iter().flatten().min()
    }

    fn advance(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        if self.homes.since.is_none() {
            self.homes.since = Some(self.now);
        }
    }

    // ----- connections -----

    fn on_opened(&mut self, id: ConnId) {
        if self.conns.contains_key(&id) {
            self.counters.unknown_connection_inputs += 1;
            return;
        }
        self.counters.connections_opened += 1;
        if self.shutting_down {
            self.refuse_unregistered(id, RefusedReason::SHUTTING_DOWN);
            return;
        }
        if let Some(idle) = self.cfg.idle_timeout {
            self.timers.insert((self.now.saturating_add(idle), id));
        }
        let before_hello = self
            .cfg
            .max_frame_len_before_hello
            .min(self.cfg.max_frame_len);
        self.conns.insert(
            id,
            Conn {
                decoder: FrameDecoder::new(before_hello),
                opened_at: self.now,
                last_rx: self.now,
                errors: 0,
                bucket: TokenBucket::full(self.cfg.rate_burst, self.now),
                peer_bucket: TokenBucket::full(self.cfg.peer_rate_burst, self.now),
                phase: Phase::AwaitingHello,
            },
        );
        self.timers
            .insert((self.now.saturating_add(self.cfg.hello_timeout), id));
    }

    fn on_received(&mut self, id: ConnId, mut bytes: &[u8]) {
        let now = self.now;
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.last_rx = now;
        }
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                self.counters.unknown_connection_inputs += 1;
                return;
            };
            match conn.decoder.decode(&mut bytes) {
                Ok(Some(frame)) => {
                    // Members' peer messages have their own budget; spending it drops the
                    // message silently (counted), it never costs the connection.
                    let peer = conn.admission().is_some()
                        && ControlMessage::peek_type(&frame) == Some(MessageType::PEER_BROADCAST);
                    if peer {
                        let (burst, rate) =
                            (self.cfg.peer_rate_burst, self.cfg.peer_rate_per_second);
                        if conn.peer_bucket.take(self.now, burst, rate) {
                            self.on_frame(id, &frame);
                        } else {
                            self.counters.peer_messages_rate_limited += 1;
                        }
                    } else {
                        let (burst, rate) = (self.cfg.rate_burst, self.cfg.rate_per_second);
                        if conn.bucket.take(self.now, burst, rate) {
                            self.on_frame(id, &frame);
                        } else {
                            self.error(id, ErrorCode::RATE_LIMITED);
                        }
                    }
                }
                Ok(None) => return,
                Err(_) => {
                    self.error(id, ErrorCode::FRAME_TOO_LARGE);
                    self.close(id, CloseReason::Protocol(ErrorCode::FRAME_TOO_LARGE));
                    return;
                }
            }
            if !self.conns.contains_key(&id) {
                return;
            }
        }
    }

    fn on_frame(&mut self, id: ConnId, frame: &[u8]) {
        // A parked Hello waits for its room's home: nothing else is read before its answer.
        if matches!(
            self.conns.get(&id).map(|c| &c.phase),
            Some(Phase::Parked(_))
        ) {
            self.counters.unknown_connection_inputs += 1;
            return;
        }
        let awaiting_hello = matches!(
            self.conns.get(&id).map(|c| &c.phase),
            Some(Phase::AwaitingHello)
        );
        let msg = match ControlMessage::decode(frame) {
            Ok(m) => m,
            Err(DecodeError::UnsupportedVersion(_)) if awaiting_hello => {
                self.refuse(id, RefusedReason::UNSUPPORTED_VERSION);
                return;
            }
            Err(DecodeError::UnsupportedVersion(_)) => {
                self.error(id, ErrorCode::UNSUPPORTED_VERSION);
                self.close(id, CloseReason::Protocol(ErrorCode::UNSUPPORTED_VERSION));
                return;
            }
            Err(_) => {
                self.error(id, ErrorCode::MALFORMED_MESSAGE);
                self.close(id, CloseReason::Protocol(ErrorCode::MALFORMED_MESSAGE));
                return;
            }
        };
        if awaiting_hello {
            match msg.body {
                Body::Hello(h) => self.on_hello(id, h),
                _ => {
                    self.error(id, ErrorCode::UNEXPECTED_MESSAGE);
                    self.close(id, CloseReason::Protocol(ErrorCode::UNEXPECTED_MESSAGE));
                }
            }
            return;
        }
        match msg.body {
            Body::CreateGroup(m) => self.on_create_group(id, m),
            Body::PublishKeyPackage(m) => self.on_publish(id, m),
            Body::JoinRequest => self.on_join_request(id),
            Body::Commit(m) => self.on_commit(id, m),
            Body::GroupInfoRequest => self.on_group_info_request(id),
            Body::LockRoom => self.on_lock(id, true),
            Body::UnlockRoom => self.on_lock(id, false),
            Body::RemoveParticipant(m) => self.on_remove(id, ConnId(m.conn_id)),
            Body::MediaSignal(m) => self.on_media_signal(id, m),
            Body::Propose(m) => self.on_propose(id, m),
            Body::PeerBroadcast(m) => self.on_peer_broadcast(id, m),
            Body::Resume(m) => self.on_resume(id, m),
            Body::Ping(p) => self.send(id, Body::Pong(Pong { nonce: p.nonce })),
            _ => self.error(id, ErrorCode::UNEXPECTED_MESSAGE),
        }
    }

    /// Drop all state of a connection (peer closed, or after a `Close` output). A member's
    /// leaf gets the resume grace when its connection was lost, not when it left.
    fn forget(&mut self, id: ConnId, ending: Ending) {
        let Some(conn) = self.conns.remove(&id) else {
            self.counters.unknown_connection_inputs += 1;
            return;
        };
        let adm = match conn.phase {
            Phase::Admitted(adm) => adm,
            Phase::Parked(p) => {
                self.unpark(id, &p.room);
                return;
            }
            Phase::AwaitingHello => return,
        };
        let room_id = adm.room;
        let key = (room_id.clone(), adm.token_id);
        if let Some(n) = self.token_conns.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.token_conns.remove(&key);
            }
        }
        let Some(room) = self.rooms.get_mut(&room_id) else {
            return;
        };
        room.conns.remove(&id);
        match adm.seat {
            Seat::Lobby => {}
            Seat::Waiting { .. } => {
                room.waiting.retain(|c| *c != id);
                self.send_waiting_removed(&room_id, id, &[]);
                self.share_waiting(&room_id, id, false);
            }
            Seat::Member { leaf } => {
                self.event(Event::MemberLeft {
                    room: room_id.clone(),
                    conn: id,
                    leaf,
                });
                self.depart(&room_id, leaf, id, adm.participant, ending);
            }
        }
        self.drop_room_if_idle(&room_id);
    }

    /// Drop a room once nothing can happen in it: no connection, no leaf in its grace.
    fn drop_room_if_idle(&mut self, room_id: &RoomId) {
        if self.rooms.get(room_id).is_some_and(Room::is_idle) {
            self.rooms.remove(room_id);
            self.event(Event::RoomClosed {
                room: room_id.clone(),
            });
        }
    }

    fn close(&mut self, id: ConnId, reason: CloseReason) {
        if self.conns.contains_key(&id) {
            self.out.push_back(Output::Close { conn: id, reason });
            // An idle connection is probably lost (it may resume); every other close is the
            // relay's decision about a peer that broke the rules or was removed.
            let ending = match reason {
                CloseReason::Refused(RefusedReason::IDLE_TIMEOUT) => Ending::Lost,
                _ => Ending::Left,
            };
            self.forget(id, ending);
        }
    }

    fn refuse(&mut self, id: ConnId, reason: RefusedReason) {
        DsCounters::bump(&mut self.counters.refused, reason);
        self.send(id, Body::Refused(Refused { reason }));
        self.event(Event::Refused { conn: id, reason });
        self.close(id, CloseReason::Refused(reason));
    }

    /// Send an Error; close the connection once it has sent too many bad messages.
    fn error(&mut self, id: ConnId, code: ErrorCode) {
        self.error_with(id, code, "");
    }

    /// [`Ds::error`] with a short ASCII detail for the peer's logs.
    fn error_with(&mut self, id: ConnId, code: ErrorCode, detail: &str) {
        DsCounters::bump(&mut self.counters.errors, code);
        self.send(
            id,
            Body::Error(ErrorMessage {
                code,
                detail: VLBytes::new(detail.as_bytes().to_vec()),
            }),
        );
        self.event(Event::ProtocolError { conn: id, code });
        let limit = self.cfg.max_errors_per_connection;
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.errors = conn.errors.saturating_add(1);
            if conn.errors > limit {
                self.close(id, CloseReason::Protocol(code));
            }
        }
    }

    fn fault(&mut self, id: ConnId, fault: DsFault) {
        self.counters.internal_faults += 1;
        self.event(Event::InternalFault { conn: id, fault });
        // A followed winner has no connection behind it (`claim::NOBODY`): nobody to tell.
        if self.conns.contains_key(&id) {
            self.error(id, ErrorCode::INTERNAL);
        }
    }

    fn send(&mut self, id: ConnId, body: Body) {
        match ControlMessage::new(body).to_frame(self.cfg.max_frame_len) {
            Ok(bytes) => self.out.push_back(Output::Send { conn: id, bytes }),
            Err(_) => {
                // Only relay-built messages embedding peer data can exceed the frame limit.
                self.counters.internal_faults += 1;
                let err = ControlMessage::new(Body::Error(ErrorMessage {
                    code: ErrorCode::INTERNAL,
                    detail: VLBytes::new(b"response exceeds frame limit".to_vec()),
                }));
                if let Ok(bytes) = err.to_frame(self.cfg.max_frame_len) {
                    self.out.push_back(Output::Send { conn: id, bytes });
                }
            }
        }
    }

    fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    fn admission(&self, id: ConnId) -> Option<&Admission> {
        self.conns.get(&id).and_then(Conn::admission)
    }

    fn members(&self, room: &RoomId) -> Vec<(ConnId, u32)> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.conns
            .iter()
            .filter_map(|c| match self.admission(*c)?.seat {
                Seat::Member { leaf } => Some((*c, leaf)),
                _ => None,
            })
            .collect()
    }

    fn room_state(&self, room: &RoomId) -> Option<blindcall_proto::RoomState> {
        let members = self.members(room).len();
        self.rooms.get(room).map(|r| r.state(members))
    }

    // ----- admission -----

    fn on_hello(&mut self, id: ConnId, h: Hello) {
        let name = h.display_name.as_slice();
        if name.len() > self.cfg.max_display_name_len || std::str::from_utf8(name).is_err() {
            self.refuse(id, RefusedReason::BAD_HELLO);
            return;
        }
        let room_id = h.room_id.as_slice();
        if room_id.is_empty() || room_id.len() > token::MAX_ROOM_ID_LEN {
            self.refuse(id, RefusedReason::BAD_HELLO);
            return;
        }
        let claims = match token::verify(
            &self.cfg.token_secret,
            h.token.as_slice(),
            room_id,
            self.now.unix_secs(),
        ) {
            Ok(c) => c,
            Err(r) => {
                self.refuse(id, r.into());
                return;
            }
        };
        let room_key = RoomId(claims.room_id.clone());
        // A locked room still admits guests, to the lobby only: they may resume a membership
        // but not queue (ADM-LOCK-1).
        if self.is_banned(&room_key, &claims.token_id) {
            self.refuse(id, RefusedReason::REMOVED_BY_HOST);
            return;
        }
        let name = name.to_vec();
        if self.cfg.store_mode == StoreMode::Shared && self.cfg.homes.is_some() {
            // The room is served by its home node only (CL-HOME-2).
            self.route_hello(id, name, claims);
        } else {
            self.admit(id, name, claims);
        }
    }

    /// Admit a Hello that passed every check to its room's lobby: `HelloAck`.
    fn admit(&mut self, id: ConnId, name: Vec<u8>, claims: token::TokenClaims) {
        let room_key = RoomId(claims.room_id.clone());
        let token_key = (room_key.clone(), claims.token_id);
        let held = self.token_conns.get(&token_key).copied().unwrap_or(0);
        if held >= self.cfg.max_connections_per_token {
            self.refuse(id, RefusedReason::TOO_MANY_CONNECTIONS);
            return;
        }
        self.token_conns.insert(token_key, held + 1);
        let initial_lock = self.initial_lock(&room_key);
        let room = self.rooms.entry(room_key.clone()).or_insert_with(|| Room {
            locked: initial_lock,
            ..Room::default()
        });
        room.conns.insert(id);
        let max_frame_len = self.cfg.max_frame_len;
        let challenge = self.challenges.next(&self.cfg.challenge_seed);
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.decoder.set_max_len(max_frame_len);
            conn.phase = Phase::Admitted(Box::new(Admission {
                room: room_key.clone(),
                role: claims.role,
                token_id: claims.token_id,
                display_name: name,
                key_package: None,
                seat: Seat::Lobby,
                challenge,
                resume_tried: false,
                participant: id,
            }));
        }
        self.counters.admitted += 1;
        let Some(state) = self.room_state(&room_key) else {
            return;
        };
        let external_senders = self
            .cfg
            .relay_identities
            .iter()
            .map(|r| RelaySender {
                signature_scheme: r.signature_scheme() as u16,
                signature_key: VLBytes::new(r.signature_public_key().to_vec()),
                credential: VLBytes::new(r.credential_bytes()),
            })
            .collect();
        let ack = HelloAck {
            conn_id: id.0,
            role: claims.role,
            room: state,
            external_senders,
            challenge,
        };
        self.send(id, Body::HelloAck(ack));
        self.event(Event::Admitted {
            conn: id,
            room: room_key.clone(),
            role: claims.role,
            token_id: claims.token_id,
        });
        // Store mode: the room's group may have been created on another node (CL-GEN-2). With
        // homes the room was loaded before any HelloAck (CL-HOME-4).
        if self.cfg.homes.is_none() {
            self.want_genesis(&room_key);
        }
    }

    // ----- group bootstrap, key packages, waiting room -----

    fn on_create_group(&mut self, id: ConnId, m: CreateGroup) {
        let Some(adm) = self.admission(id) else {
            return;
        };
        if adm.role != Role::HOST {
            self.error(id, ErrorCode::NOT_HOST);
            return;
        }
        if adm.seat != Seat::Lobby {
            self.error(id, ErrorCode::UNEXPECTED_MESSAGE);
            return;
        }
        let room_id = adm.room.clone();
        if self.same_genesis_again(id, &room_id, m.group_info.as_slice()) {
            return;
        }
        if self
            .rooms
            .get(&room_id)
            .is_some_and(|r| r.group.is_some() || r.claims.genesis.is_some())
        {
            self.error(id, ErrorCode::GROUP_EXISTS);
            return;
        }
        let boot = GroupState::bootstrap(
            &self.crypto,
            &self.cfg.relay_identities,
            m.group_info.as_slice(),
            self.cfg.commit_history,
        );
        let (group, leaf) = match boot {
            Ok(g) => g,
            Err(e) => {
                self.error(id, e.into());
                return;
            }
        };
        match self.cfg.store_mode {
            StoreMode::Local => self.group_created(&room_id, id, group, leaf),
            // The first creation of the room across the cluster wins (CL-GEN-1).
            StoreMode::Shared => {
                self.claim_genesis(id, &room_id, m.group_info.as_slice().to_vec(), group, leaf);
            }
        }
    }

    // ----- group info and host commands -----

    fn on_group_info_request(&mut self, id: ConnId) {
        let Some(adm) = self.admission(id) else {
            return;
        };
        let room_id = adm.room.clone();
        let Some(room) = self.rooms.get(&room_id) else {
            return;
        };
        // Only members: with no external commits, a GroupInfo is of no use to anyone else.
        if !matches!(adm.seat, Seat::Member { .. }) {
            self.error(id, ErrorCode::UNEXPECTED_MESSAGE);
            return;
        }
        let Some(group) = room.group.as_ref() else {
            self.error(id, ErrorCode::NO_GROUP);
            return;
        };
        let epoch = group.epoch();
        match (group.group_info_bytes(), group.ratchet_tree_bytes()) {
            (Ok(None), _) => {
                // Store mode: the epoch's winner came from another node in a version 1 record,
                // which carries no GroupInfo (CL-FOLLOW-2).
                self.error_with(id, ErrorCode::INTERNAL, "group info held by another node");
            }
            (Ok(Some(gi)), Ok(tree)) => self.send(
                id,
                Body::GroupInfoResponse(GroupInfoResponse {
                    epoch,
                    group_info: VLBytes::new(gi),
                    ratchet_tree: VLBytes::new(tree),
                }),
            ),
            (Err(f), _) | (_, Err(f)) => self.fault(id, f),
        }
    }

    fn on_lock(&mut self, id: ConnId, locked: bool) {
        let Some(adm) = self.admission(id) else {
            return;
        };
        if adm.role != Role::HOST {
            self.error(id, ErrorCode::NOT_HOST);
            return;
        }
        let room_id = adm.room.clone();
        if let Some(room) = self.rooms.get_mut(&room_id) {
            room.locked = locked;
        }
        self.share_lock(&room_id, locked);
        let all: Vec<ConnId> = self
            .rooms
            .get(&room_id)
            .map(|r| r.conns.iter().copied().collect())
            .unwrap_or_default();
        if let Some(state) = self.room_state(&room_id) {
            for c in all {
                self.send(c, Body::RoomStateUpdate(state.clone()));
            }
        }
        self.event(Event::RoomLocked {
            room: room_id,
            locked,
        });
    }

    fn on_remove(&mut self, id: ConnId, target: ConnId) {
        let Some(adm) = self.admission(id) else {
            return;
        };
        if adm.role != Role::HOST {
            self.error(id, ErrorCode::NOT_HOST);
            return;
        }
        let room_id = adm.room.clone();
        let target_token = self
            .admission(target)
            .filter(|t| t.room == room_id && target != id)
            .map(|t| t.token_id);
        let Some(token_id) = target_token else {
            self.error(id, ErrorCode::UNKNOWN_PARTICIPANT);
            return;
        };
        self.ban(&room_id, token_id);
        self.refuse(target, RefusedReason::REMOVED_BY_HOST);
    }
}
