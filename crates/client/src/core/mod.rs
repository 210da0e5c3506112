//! [`CallCore`]: one participant's call as a sans-IO state machine: joining, the group and its
//! commits, the waiting room, the media pipeline and the counters. No tasks, sockets, locks or
//! clock reads: time is an argument, bytes and requests go in, messages, events, packets and
//! transport operations come out.
//!
//! # Driving it
//!
//! The shell (the SDK's tokio driver, a simulator, a browser binding) owns one [`CallCore`]:
//! 1. [`CallCore::new`] queues the `Hello`; the shell connects the control channel to the
//!    relay [`CallCore::relay`] names (the first of [`JoinOptions::relays`]) and drains. If
//!    that connection cannot be opened, it calls [`CallCore::handle_control_end`] instead: the
//!    core then names the next relay with [`Output::Connect`] (or fails the join).
//! 2. For every event it calls one input: [`CallCore::handle_control`] (a control message),
//!    [`CallCore::handle_control_end`] (the channel broke), [`CallCore::handle_command`] (the
//!    application), [`CallCore::handle_media`] (the media transport: packets, connection
//!    state, results of [`TransportOp`]s) or, once the instant from
//!    [`CallCore::poll_timeout`] has passed, [`CallCore::handle_timeout`].
//! 3. Then it drains [`CallCore::poll_output`] until `None`, in order: [`Output::Control`] to
//!    the control channel, [`Output::Event`] and [`Output::Frame`] to the application,
//!    [`Output::Transmit`] to the transport, [`Output::Transport`] operations (whose results
//!    come back as [`MediaInput`]s), [`Output::Stats`] to whoever shows counters;
//!    [`Output::Admitted`] / [`Output::JoinFailed`] end joining, [`Output::End`] ends the call
//!    (close the transport and the control channel after what was queued before it).
//! 4. It re-arms its timer with [`CallCore::poll_timeout`].
//!
//! A `now` older than one already seen counts as the latest one. Bad input from the relay or
//! the network is refused and counted or reported, never a panic.
//!
//! # Structure
//!
//! One module per concept: `join` (Hello → HelloAck → create the group, or publish a
//! KeyPackage and wait → Welcome), `commits` (own commits, one at a time, and the intents
//! behind them; divergence), `waiting` (the waiting room), `epoch` (the group's events: epochs,
//! send activation, keyframes, splits), `media` (transport lifecycle, media signaling, video
//! selection, sender authentication), `peer` (messages between members through the relay),
//! `stats`, and `timer`. New control messages, group events and outputs each add one match
//! arm: [`CallCore::handle_control`] routes messages, `epoch` routes group events.

mod commits;
mod epoch;
mod join;
mod link;
mod media;
mod peer;
mod roster;
mod stats;
mod timer;
mod waiting;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use blindcall_group::CallGroup;
use blindcall_media::{MediaKind, RtpPacket};
use blindcall_proto::{Body, RefusedReason, RoomState};
use blindcall_transport::{ConnectionState, ParticipantId};

use crate::error::{CallError, CallWarning, JoinError, ProtocolError};
use crate::event::{CallStats, EndReason, Event};
use crate::media::IncomingFrame;
use crate::observer::{CallObserver, MembershipChange, MembershipChanged};
use crate::options::{JoinOptions, VideoSelection};
use crate::trust::TrustStore;

use commits::Commits;
use epoch::Epochs;
use join::{Join, Phase};
pub use link::ReconnectPolicy;
use media::Media;
pub(crate) use timer::after;
use timer::{Timer, TimerTable};
use waiting::WaitingRoom;

/// A request of the application (what [`crate::Call`]'s methods send).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Admit waiting-room request `.0` (commits its Add).
    Approve(u64),
    /// Deny waiting-room request `.0` (the relay refuses the joiner).
    Deny(u64),
    /// Remove the member at `leaf` holding `identity_key` (commits its Remove).
    Remove {
        /// Its leaf.
        leaf: u32,
        /// Its identity key (names are not unique; leaves are reused).
        identity_key: Vec<u8>,
    },
    /// Record in the trust store that the member at `leaf` holding `identity_key` was
    /// verified (its pairwise code compared out of band).
    Verify {
        /// Its leaf.
        leaf: u32,
        /// Its identity key.
        identity_key: Vec<u8>,
    },
    /// Publish one encoded frame; `keyframe` says whether a video frame is one, when known.
    Publish {
        /// Audio or video.
        kind: MediaKind,
        /// The encoded frame.
        frame: Vec<u8>,
        /// For video: whether it is a keyframe (`None`: unknown, never refused for it).
        keyframe: Option<bool>,
    },
    /// Receive video only from these members (audio always flows).
    SelectVideo(VideoSelection),
    /// Lock (`true`) or unlock the room at the relay.
    LockRoom(bool),
    /// Leave the call.
    Leave,
}

/// The control channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlEnd {
    /// A frame did not decode: the stream is unusable.
    Malformed,
    /// The relay closed the connection (or it broke).
    Closed,
}

/// What the media transport reports to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaInput {
    /// [`TransportOp::Open`] succeeded: the transport exists.
    Opened,
    /// [`TransportOp::Open`] failed: the call goes on without media.
    OpenFailed,
    /// [`TransportOp::ApplyOffer`] succeeded: the SDP answer to send to the relay.
    Answer(String),
    /// [`TransportOp::ApplyOffer`] failed.
    OfferFailed,
    /// One RTP packet of another participant's stream.
    Packet {
        /// The relay's id of the stream's participant.
        from: ParticipantId,
        /// Audio or video.
        kind: MediaKind,
        /// The packet.
        packet: RtpPacket,
    },
    /// A remote stream started.
    TrackStarted {
        /// Whose.
        from: ParticipantId,
        /// Audio or video.
        kind: MediaKind,
    },
    /// A receiver asked for a keyframe of this participant's `kind` stream (RTCP PLI).
    KeyframeRequested {
        /// The stream (video in practice).
        kind: MediaKind,
    },
    /// The connection changed state.
    Connection(ConnectionState),
    /// The transport stopped reporting events.
    EventsEnded,
    /// A remote stream ended (its participant left, or the relay stopped forwarding it): its
    /// receive state is forgotten.
    TrackEnded {
        /// Whose.
        from: ParticipantId,
        /// Audio or video.
        kind: MediaKind,
    },
}

/// A media transport operation for the shell; results come back as [`MediaInput`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportOp {
    /// Create the transport (publishing own audio and video, or receive only); answer with
    /// [`MediaInput::Opened`] or [`MediaInput::OpenFailed`].
    Open {
        /// Whether to publish.
        publish: bool,
    },
    /// Apply the relay's SDP offer, in order; answer with [`MediaInput::Answer`] or
    /// [`MediaInput::OfferFailed`].
    ApplyOffer(String),
    /// Ask the relay for a keyframe of `from`'s video (RTCP PLI); no answer.
    RequestKeyframe {
        /// Whose video.
        from: ParticipantId,
    },
    /// Close the media transport (the connection to the relay was lost; a new one is opened
    /// with [`TransportOp::Open`] once the membership is resumed); no answer.
    Close,
}

/// Where a new control connection goes ([`Output::Connect`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RelayRef {
    /// Relay `.0` of [`JoinOptions::relays`] (always 0 with a single relay).
    Listed(usize),
    /// The address a cluster node named in a `Redirect` (`host:port`, a host name or an IP
    /// address, checked by `Redirect::address`): the shell resolves it and connects with the
    /// same TLS server name and trust roots it uses for the listed relays, so a redirect
    /// never widens whom the client trusts (SDK-REDIR-1).
    Redirected(String),
}

/// What the core asks of its shell, in order.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// Send this message on the control channel.
    Control(Body),
    /// Give this event to the application.
    Event(Event),
    /// Give this decrypted frame to the application.
    Frame(IncomingFrame),
    /// Hand this packet of the own `kind` stream to the transport.
    Transmit {
        /// Audio or video.
        kind: MediaKind,
        /// The packet.
        packet: RtpPacket,
    },
    /// Run this transport operation.
    Transport(TransportOp),
    /// The latest counters (every stats interval, and once more at the end).
    Stats(Box<CallStats>),
    /// The relay admitted this participant (it is a member or in the waiting room): joining
    /// succeeded.
    Admitted,
    /// Joining failed; nothing follows.
    JoinFailed(JoinError),
    /// The call is over ([`Event::CallEnded`] came before): close the transport and the
    /// control channel once what was queued before is written; nothing follows.
    End,
    /// The trust store changed in memory: save it ([`CallCore::trust_store`]).
    TrustChanged,
    /// Open a new control connection to `relay` (a relay of [`JoinOptions::relays`], or the
    /// address a cluster node redirected to) to join through it or to reconnect, with the
    /// same TLS server name and trust roots as every connection; answer with
    /// [`CallCore::handle_control_connected`] or, if it fails,
    /// [`CallCore::handle_control_end`]. What was queued for the previous connection is void.
    Connect {
        /// Where the connection goes.
        relay: RelayRef,
    },
    /// Drop the current control connection at once, without a TLS goodbye (so the relay keeps
    /// the membership for its grace period); what follows comes with [`Output::Connect`].
    DropControl,
}

/// Where the media pipeline puts what it produces: outputs, and the observer's view.
pub(crate) struct Sink<'a> {
    pub(crate) out: &'a mut VecDeque<Output>,
    pub(crate) observer: Option<&'a dyn CallObserver>,
}

/// One participant's call: see the [module documentation](self) for the driving order.
pub struct CallCore {
    identity: Arc<str>,
    opts: JoinOptions,
    observer: Option<Arc<dyn CallObserver>>,
    now: Instant,
    phase: Phase,
    join: Join,
    commits: Commits,
    waiting: WaitingRoom,
    epochs: Epochs,
    media: Media,
    room_locked: Option<bool>,
    timers: TimerTable,
    out: VecDeque<Output>,
    /// What this device knows of names and identity keys (kept in memory; the shell saves).
    trust: TrustStore,
    /// The link to the relay while a member (reconnecting and resuming).
    link: link::Link,
    link_stats: link::LinkStats,
    /// Which relay of the list the control connection goes to.
    relays: link::Relays,
    /// When the relay was last heard from.
    last_heard: Instant,
    /// Pings sent.
    pings: u64,
    peer: peer::PeerStats,
}

impl std::fmt::Debug for CallCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCore")
            .field("identity", &self.identity)
            .field("phase", &self.phase.name())
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl CallCore {
    /// A participant about to join as `identity` with capability `token`; the `Hello` is
    /// queued. Fails before any network activity on a malformed token or identity.
    pub fn new(
        now: Instant,
        identity: &str,
        token: &str,
        options: JoinOptions,
    ) -> Result<Self, JoinError> {
        let mut opts = options;
        let observer = opts.observer.take();
        let mut core = Self {
            identity: Arc::from(identity),
            observer,
            now,
            phase: Phase::Ended,
            join: Join::default(),
            commits: Commits::default(),
            waiting: WaitingRoom::default(),
            epochs: Epochs::default(),
            media: Media::new(opts.video.clone()),
            room_locked: None,
            timers: TimerTable::default(),
            out: VecDeque::new(),
            trust: TrustStore::in_memory(),
            link: link::Link::Up,
            link_stats: link::LinkStats::default(),
            relays: link::Relays::new(opts.relays.len()),
            last_heard: now,
            pings: 0,
            peer: peer::PeerStats::default(),
            opts,
        };
        core.start_join(now, identity, token)?;
        Ok(core)
    }

    /// Uses `store` as this device's trust store (opened by the shell; saved by it on
    /// [`Output::TrustChanged`]).
    pub fn with_trust_store(mut self, store: TrustStore) -> Self {
        self.trust = store;
        self
    }

    /// The trust store (for the shell to save after [`Output::TrustChanged`]).
    pub fn trust_store(&self) -> &TrustStore {
        &self.trust
    }

    /// This participant's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The relay of the current (or last attempted) control connection: an index into
    /// [`JoinOptions::relays`] (0 with a single relay). After a redirect, the listed relay
    /// that redirected ([`CallCore::relay_target`] names where the connection went).
    pub fn relay(&self) -> usize {
        self.relays.current()
    }

    /// Where the current (or last attempted) control connection goes: a listed relay, or the
    /// address a cluster node redirected to.
    pub fn relay_target(&self) -> RelayRef {
        self.relays.target()
    }

    /// Whether the call is over (or joining failed): no input has any effect any more.
    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended)
    }

    /// The current counters (the transport's own counter stays 0: the shell knows it).
    pub fn stats(&self) -> CallStats {
        self.snapshot()
    }

    /// The call's MLS group while this participant is a member (read-only: epoch, receive
    /// epochs held, roster, security code), for simulators and diagnostics.
    pub fn call_group(&self) -> Option<&CallGroup> {
        match &self.phase {
            Phase::Member(g) => Some(g),
            _ => None,
        }
    }

    // ----- inputs -----

    /// A message from the relay.
    pub fn handle_control(&mut self, now: Instant, body: Body) {
        let now = self.clock(now);
        self.heard(now);
        if let Body::HelloAck(ack) = &body {
            // The relay's id of the connection joined on: own streams are named by it
            // (SDK-AUTH-2), also after a resume, which keeps it (DS-RES-12).
            if !matches!(self.phase, Phase::Member(_)) {
                self.media.relay_participant = Some(ack.conn_id);
            }
        }
        match &self.phase {
            Phase::Ended => return,
            Phase::Waiting(_) | Phase::Member(_) => self.on_control(now, body),
            _ => self.join_control(now, body),
        }
        self.settle(now);
    }

    /// A new control connection is up (after [`Output::Connect`]).
    pub fn handle_control_connected(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.is_ended() {
            return;
        }
        self.join_connected(now);
        self.link_connected(now);
        self.settle(now);
    }

    /// The control channel ended.
    pub fn handle_control_end(&mut self, now: Instant, end: ControlEnd) {
        let now = self.clock(now);
        if end == ControlEnd::Closed && (self.link_lost(now) || self.join_next_relay(now, false)) {
            return;
        }
        let error = match end {
            ControlEnd::Malformed => ProtocolError::Malformed,
            ControlEnd::Closed => ProtocolError::Closed,
        };
        match (&self.phase, end) {
            (Phase::Ended, _) => {}
            (Phase::Waiting(_) | Phase::Member(_), ControlEnd::Malformed) => {
                self.end(now, EndReason::ProtocolError(error))
            }
            (Phase::Waiting(_) | Phase::Member(_), ControlEnd::Closed) => {
                self.end(now, EndReason::ConnectionLost)
            }
            _ => self.fail_join(error.into()),
        }
    }

    /// A request of the application; its answer.
    pub fn handle_command(&mut self, now: Instant, command: Command) -> Result<(), CallError> {
        let now = self.clock(now);
        if self.is_ended() {
            return Err(CallError::Ended);
        }
        let result = match command {
            Command::Approve(request) => self.approve(request),
            Command::Deny(request) => self.deny(request),
            Command::Remove { leaf, identity_key } => self.remove(leaf, &identity_key),
            Command::Verify { leaf, identity_key } => self.verify(leaf, &identity_key),
            Command::Publish {
                kind,
                frame,
                keyframe,
            } => self.publish_frame(now, kind, &frame, keyframe),
            Command::SelectVideo(selection) => {
                self.select_video(selection);
                Ok(())
            }
            Command::LockRoom(locked) => {
                // Only a host's connection may lock the room (SDK-COMMIT-5).
                if self.join.is_relay_host() {
                    self.send(if locked {
                        Body::LockRoom
                    } else {
                        Body::UnlockRoom
                    });
                    Ok(())
                } else {
                    Err(CallError::NotHost)
                }
            }
            Command::Leave => {
                self.leave(now);
                Ok(())
            }
        };
        self.settle(now);
        result
    }

    /// Publishes one encoded frame without handing over a buffer (see [`Command::Publish`]).
    pub fn publish(
        &mut self,
        now: Instant,
        kind: MediaKind,
        frame: &[u8],
        keyframe: Option<bool>,
    ) -> Result<(), CallError> {
        let now = self.clock(now);
        if self.is_ended() {
            return Err(CallError::Ended);
        }
        self.publish_frame(now, kind, frame, keyframe)
    }

    /// Something from the media transport.
    pub fn handle_media(&mut self, now: Instant, input: MediaInput) {
        let now = self.clock(now);
        if self.is_ended() {
            return;
        }
        self.on_media(now, input);
        self.settle(now);
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.is_ended() {
            return;
        }
        if self.timers.expire(Timer::JoinStep, now) {
            if matches!(self.phase, Phase::Member(_)) {
                // A reconnection attempt took too long: drop it and try again.
                self.out.push_back(Output::DropControl);
                if !self.link_lost(now) {
                    self.end(now, EndReason::ConnectionLost);
                }
                return;
            }
            let what = self.join.step();
            if self.join_next_relay(now, true) {
                return;
            }
            self.fail_join(JoinError::Timeout { what });
            return;
        }
        if self.timers.expire(Timer::Reconnect, now) {
            self.reconnect_due(now);
        }
        if self.timers.expire(Timer::Ping, now) {
            self.ping_due(now);
        }
        if let Phase::Member(g) = &mut self.phase
            && g.poll_timeout().is_some_and(|t| t <= now)
        {
            g.handle_timeout(now);
        }
        if self.timers.expire(Timer::ProposalFallback, now) {
            self.proposal_fallback_due();
        }
        if self.timers.expire(Timer::CommitResend, now) {
            self.commit_resend_due(now);
        }
        if let Some(p) = &mut self.media.pipeline {
            p.handle_timeout(now);
        }
        if self.timers.expire(Timer::Stats, now) {
            self.stats_due(now);
        }
        self.settle(now);
    }

    // ----- outputs -----

    /// The next thing to do, in order; `None` when there is nothing (until the next input).
    pub fn poll_output(&mut self, now: Instant) -> Option<Output> {
        self.clock(now);
        self.out.pop_front()
    }

    /// When [`CallCore::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_ended() {
            return None;
        }
        let group = match &self.phase {
            Phase::Member(g) => g.poll_timeout(),
            _ => None,
        };
        let pipeline = self.media.pipeline.as_ref().and_then(|p| p.poll_timeout());
        [self.timers.next(), group, pipeline]
            .into_iter()
            .flatten()
            .min()
    }

    // ----- shared plumbing -----

    /// `now`, never earlier than the latest instant seen.
    fn clock(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn send(&mut self, body: Body) {
        self.out.push_back(Output::Control(body));
    }

    fn emit(&mut self, event: Event) {
        self.out.push_back(Output::Event(event));
    }

    fn warn(&mut self, warning: CallWarning) {
        self.emit(Event::Warning(warning));
    }

    fn group(&mut self) -> Option<&mut CallGroup> {
        match &mut self.phase {
            Phase::Member(g) => Some(g),
            _ => None,
        }
    }

    fn observe_membership(&self, change: MembershipChange, epoch: u64, now: Instant) {
        if let Some(o) = &self.observer {
            o.membership_changed(&MembershipChanged {
                change,
                epoch,
                at: now,
            });
        }
    }

    /// After every input: the group's events, then the next own commit if none is pending,
    /// then the group's messages for the other members.
    fn settle(&mut self, now: Instant) {
        self.drain_group_events(now);
        if self.link_up() {
            self.next_intent(now);
        }
        self.send_peer_messages();
    }

    /// A message while waiting or a member: one arm per message type.
    fn on_control(&mut self, now: Instant, body: Body) {
        match body {
            Body::Welcome(w) => self.on_welcome(now, &w),
            Body::HelloAck(ack) => self.on_resume_hello_ack(now, &ack),
            Body::ResumeAccepted(a) => self.on_resume_accepted(now, &a),
            Body::ResumeRefused(r) => self.fail_resume(now, r.reason),
            Body::Redirect(r) => self.on_member_redirect(now, &r),
            Body::CommitAccepted(a) => self.on_commit_accepted(now, &a),
            Body::CommitRejected(r) => self.on_commit_rejected(now, &r),
            Body::CommitBroadcast(b) => self.on_commit_broadcast(now, &b),
            Body::RelayProposal(p) => self.on_relay_proposal(now, &p),
            Body::ProposalBroadcast(p) => self.on_proposal_broadcast(now, &p),
            Body::PeerMessage(m) => self.on_peer_message(now, &m),
            Body::WaitingEntryAdded(e) => self.on_waiting_added(e),
            Body::WaitingEntryRemoved(r) => self.on_waiting_removed(r.conn_id),
            Body::MediaSignal(s) => self.on_media_signal(s.payload.as_slice()),
            // Transient while resuming: a failed attempt (SDK-REDIR-4).
            Body::Refused(r) if r.reason == RefusedReason::STORE_UNAVAILABLE && self.resuming() => {
                self.resume_store_unavailable(now)
            }
            Body::Refused(r) => {
                let reason = if r.reason == RefusedReason::REMOVED_BY_HOST
                    && matches!(self.phase, Phase::Waiting(_))
                {
                    EndReason::Denied
                } else {
                    EndReason::Refused(r.reason)
                };
                self.end(now, reason);
            }
            Body::Error(e) => self.warn(CallWarning::Relay(e.code)),
            Body::RoomStateUpdate(state) => self.on_room_state(&state),
            _ => {}
        }
    }

    fn on_room_state(&mut self, state: &RoomState) {
        let locked = state.locked != 0;
        if self.room_locked.is_some_and(|l| l != locked) || (self.room_locked.is_none() && locked) {
            self.emit(Event::RoomLocked { locked });
        }
        self.room_locked = Some(locked);
    }

    /// Ends the call: the final counters, [`Event::CallEnded`], then [`Output::End`].
    fn end(&mut self, now: Instant, reason: EndReason) {
        if !self.is_ended() {
            self.finish(now, reason);
        }
    }

    /// [`CallCore::end`] from any phase, also one already taken apart.
    fn finish(&mut self, now: Instant, reason: EndReason) {
        self.flush_manifests(now);
        if let Phase::Member(g) = &self.phase {
            let epoch = g.epoch();
            let change = if reason == EndReason::Removed {
                MembershipChange::Removed
            } else {
                MembershipChange::Left
            };
            self.observe_membership(change, epoch, now);
        }
        let mut stats = self.snapshot();
        stats.ended = true;
        self.phase = Phase::Ended;
        self.media.close();
        self.timers = TimerTable::default();
        self.out.push_back(Output::Stats(Box::new(stats)));
        self.emit(Event::CallEnded { reason });
        self.out.push_back(Output::End);
    }
}
