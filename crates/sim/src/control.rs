//! The control plane of the world: connections opening and closing, stream bytes in both
//! directions (encoded and framed with `blindcall-proto` exactly as the client's writer and
//! the relay's shell do, and cut into arbitrary segments on the way), and draining the cores'
//! outputs.

use blindcall_client::{
    CallCore, ControlEnd, JoinOptions, MediaInput, MediaMode, Output, TransportOp, TrustAnchor,
};
use blindcall_proto::{
    Body, ControlMessage, DEFAULT_MAX_FRAME_LEN, MediaSignalPayload, Role, encode_frame,
};
use blindcall_relay::{ConnId, Input, Output as RelayOutput};
use blindcall_transport::ConnectionState;

use crate::clock::SimTime;
use crate::net::{Dir, Link, Profile};
use crate::relay::Leg;
use crate::scenario::MediaPlan;
use crate::world::{Ev, World};

impl World {
    /// The options participant `p` joins with.
    fn options(&self, p: usize) -> JoinOptions {
        let plan = self.members[p].plan;
        let s = self.scenario.settings;
        let mut o = JoinOptions::new(TrustAnchor::Fingerprint("00".repeat(32)));
        o.media = match plan.media {
            MediaPlan::Publish => MediaMode::App,
            MediaPlan::ReceiveOnly => MediaMode::ReceiveOnly,
            MediaPlan::Off => MediaMode::Off,
        };
        o.proposal_fallback_step = s.proposal_fallback;
        o.member_config.activation_delay = s.activation_delay;
        o.member_config.path_update_after_join = Some(plan.path_update);
        o.stats_interval = std::time::Duration::from_secs(1);
        if plan.invited {
            o.invite = self.invite.clone();
        }
        if s.any_member_adds {
            o.call_config.add_rule = blindcall_group::AddRule::AnyMember;
        }
        o.reconnect.enabled = s.reconnect;
        o.identity_key = Some(self.members[p].identity_key.clone());
        o.observer = Some(self.members[p].recorder.clone());
        o
    }

    /// Participant `p` starts joining: its core exists (the Hello is queued) and its
    /// connection is being established.
    pub(crate) fn start(&mut self, p: usize) {
        if self.members[p].core.is_some() {
            return;
        }
        let role = if p == 0 { Role::HOST } else { Role::GUEST };
        let Ok(token) = self.relay.token(p, role) else {
            self.count_end(p, "no token");
            return;
        };
        let opts = self.options(p);
        let now = self.clock.instant();
        let made = CallCore::new(now, &self.members[p].name, &token, opts);
        let core = match made {
            Ok(core) => core,
            Err(e) => {
                self.count_end(p, &format!("JoinFailed({e:?})"));
                return;
            }
        };
        self.members[p].core = Some(core);
        self.open_connection(p);
    }

    /// Participant `p`'s shell opens its next control connection (the first, or a new one
    /// its call asked for with `Output::Connect`). While `p`'s network is down the attempt
    /// fails after a round trip or hangs (the call's attempt timeout ends it).
    fn open_connection(&mut self, p: usize) {
        let now = self.now();
        let m = &mut self.members[p];
        m.generations += 1;
        let generation = m.generations;
        m.connecting = Some(generation);
        let latency = m
            .link
            .as_ref()
            .map_or(m.plan.latency, |l| l.profile(now).latency);
        self.trace.num(u64::from(generation));
        if now < m.offline_until {
            if m.rng.chance(500) {
                self.push(now.plus(latency * 2), Ev::ConnectFailed { p, generation });
            }
            return;
        }
        // TCP and TLS handshakes: about one and a half round trips.
        self.push(now.plus(latency * 3), Ev::Connect { p, generation });
    }

    /// A connection attempt of participant `p` failed.
    pub(crate) fn connect_failed(&mut self, p: usize, generation: u32) {
        let m = &mut self.members[p];
        if m.connecting != Some(generation) {
            return;
        }
        m.connecting = None;
        self.trace.num(0xcf);
        let now = self.clock.instant();
        if let Some(core) = self.members[p].core.as_mut() {
            core.handle_control_end(now, ControlEnd::Closed);
        }
        self.drain_member(p);
    }

    pub(crate) fn count_end(&mut self, p: usize, reason: &str) {
        self.trace.num(p as u64);
        self.trace.text(reason);
        *self.stats.ends.entry(reason.to_owned()).or_insert(0) += 1;
    }

    /// The connection is up: the relay sees it open and the client's queued messages go out.
    pub(crate) fn connect(&mut self, p: usize, generation: u32) {
        let now = self.now();
        let m = &self.members[p];
        if !m.is_running() || m.connecting != Some(generation) {
            return;
        }
        if now < m.offline_until {
            // The network went down during the handshake.
            self.connect_failed(p, generation);
            return;
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(conn, p);
        let m = &mut self.members[p];
        m.connecting = None;
        let plan = m.plan;
        let mut link = Link::new(
            conn,
            generation,
            Profile {
                latency: plan.latency,
                jitter: plan.jitter,
                bytes_per_second: None,
            },
        );
        let reconnect = match m.link.take() {
            Some(old) => {
                link.inherit(&old);
                if old.relay_open {
                    m.old_links.push(old);
                }
                true
            }
            None => false,
        };
        m.link = Some(link);
        // A new stream: nothing of the old one's last, cut frame carries over.
        m.decoder = blindcall_proto::FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        self.trace.num(conn.0);
        let ts = self.clock.timestamp();
        self.relay.ds.handle_input(ts, Input::Opened(conn));
        self.drain_relay();
        if reconnect {
            let at = self.clock.instant();
            if let Some(core) = self.members[p].core.as_mut() {
                core.handle_control_connected(at);
            }
        }
        self.drain_member(p);
    }

    /// Writes one whole frame on participant `p`'s connection, cut into segments.
    fn write(&mut self, p: usize, dir: Dir, frame: Vec<u8>, keepalive: bool) {
        let now = self.now();
        let split = self.scenario.settings.split_writes;
        let m = &mut self.members[p];
        let Some(link) = m.link.as_mut() else {
            return;
        };
        let generation = link.generation;
        let mut pieces = vec![frame];
        if m.rng.chance(split) {
            let whole = pieces.pop().unwrap_or_default();
            let mut rest = &whole[..];
            let cuts = m.rng.range(1, 3);
            for _ in 0..cuts {
                if rest.len() < 2 {
                    break;
                }
                let at = usize::try_from(m.rng.range(1, rest.len() as u64 - 1)).unwrap_or(1);
                let (a, b) = rest.split_at(at);
                pieces.push(a.to_vec());
                rest = b;
            }
            pieces.push(rest.to_vec());
        }
        let mut deliveries = Vec::with_capacity(pieces.len());
        for bytes in pieces {
            let at = link.schedule(dir, now, bytes.len(), &mut m.rng);
            let ev = match dir {
                Dir::Up => Ev::ToRelay {
                    p,
                    generation,
                    bytes,
                    keepalive,
                },
                Dir::Down => Ev::ToClient {
                    p,
                    generation,
                    bytes,
                    keepalive,
                },
            };
            deliveries.push((at, ev));
        }
        for (at, ev) in deliveries {
            self.push(at, ev);
        }
    }

    /// The client sends `body` to the relay (encoded as the client's writer does).
    fn send_up(&mut self, p: usize, body: Body) {
        let Some(link) = self.members[p].link.as_ref() else {
            return;
        };
        if !link.client_open || link.broken {
            return;
        }
        self.trace.num(u64::from(body.message_type().0));
        if matches!(body, Body::PublishKeyPackage(_)) {
            let m = &self.members[p];
            self.checker.key_package_published(&m.name, m.joined_epoch);
        }
        let keepalive = matches!(body, Body::Ping(_));
        let frame = ControlMessage::new(body)
            .encode()
            .ok()
            .and_then(|m| encode_frame(&m, DEFAULT_MAX_FRAME_LEN).ok());
        match frame {
            Some(f) => self.write(p, Dir::Up, f, keepalive),
            None => *self.stats.warnings.entry("encode".into()).or_insert(0) += 1,
        }
    }

    /// Stream bytes reach the relay.
    pub(crate) fn deliver_to_relay(
        &mut self,
        p: usize,
        generation: u32,
        bytes: &[u8],
        keepalive: bool,
    ) {
        let Some(link) = self.members[p].link.as_ref() else {
            return;
        };
        if link.generation != generation || !link.relay_open || link.broken {
            return;
        }
        let conn = link.conn;
        if !keepalive {
            self.last_control = self.now();
        }
        self.trace.num(bytes.len() as u64);
        let ts = self.clock.timestamp();
        self.relay.ds.handle_input(ts, Input::Received(conn, bytes));
        self.drain_relay();
    }

    /// Stream bytes reach the client: its reader decodes frames and hands the core messages.
    pub(crate) fn deliver_to_client(
        &mut self,
        p: usize,
        generation: u32,
        mut bytes: &[u8],
        keepalive: bool,
    ) {
        let Some(link) = self.members[p].link.as_ref() else {
            return;
        };
        if link.generation != generation || !link.client_open || link.broken {
            return;
        }
        if !keepalive {
            self.last_control = self.now();
        }
        loop {
            let now = self.clock.instant();
            let m = &mut self.members[p];
            let Some(core) = m.core.as_mut() else {
                return;
            };
            match m.decoder.decode(&mut bytes) {
                Ok(Some(frame)) => match ControlMessage::decode(&frame) {
                    Ok(msg) => {
                        self.trace.num(u64::from(msg.body.message_type().0));
                        core.handle_control(now, msg.body);
                    }
                    Err(_) => {
                        core.handle_control_end(now, ControlEnd::Malformed);
                        self.drain_member(p);
                        self.client_closes(p);
                        return;
                    }
                },
                Ok(None) => return,
                Err(_) => {
                    core.handle_control_end(now, ControlEnd::Malformed);
                    self.drain_member(p);
                    self.client_closes(p);
                    return;
                }
            }
            self.drain_member(p);
        }
    }

    /// The client's close reaches the relay: a goodbye when the client closed on purpose, a
    /// loss when the network cut the connection.
    pub(crate) fn close_to_relay(&mut self, p: usize, generation: u32, goodbye: bool) {
        let m = &mut self.members[p];
        let Some(link) = m.link_of(generation) else {
            return;
        };
        if !link.relay_open {
            return;
        }
        link.relay_open = false;
        let conn = link.conn;
        m.old_links.retain(|l| l.relay_open);
        self.relay.legs.remove(&conn);
        self.last_control = self.now();
        let ts = self.clock.timestamp();
        let input = if goodbye {
            Input::Goodbye(conn)
        } else {
            Input::Closed(conn)
        };
        self.relay.ds.handle_input(ts, input);
        self.drain_relay();
    }

    /// The relay's close (or the network's) reaches the client.
    pub(crate) fn close_to_client(&mut self, p: usize, generation: u32) {
        let Some(link) = self.members[p].link.as_mut() else {
            return;
        };
        if link.generation != generation || !link.client_open {
            return;
        }
        link.client_open = false;
        self.last_control = self.now();
        let now = self.clock.instant();
        if let Some(core) = self.members[p].core.as_mut() {
            core.handle_control_end(now, ControlEnd::Closed);
        }
        self.drain_member(p);
    }

    /// The client closes its connection (its call ended or joining failed).
    fn client_closes(&mut self, p: usize) {
        let now = self.now();
        let name = self.members[p].name.clone();
        self.checker.may_leave(&name);
        let m = &mut self.members[p];
        m.media = Default::default();
        m.connecting = None;
        let Some(link) = m.link.as_mut() else {
            return;
        };
        self.relay.legs.remove(&link.conn);
        if !link.client_open {
            return;
        }
        link.client_open = false;
        if link.relay_open && !link.broken {
            let generation = link.generation;
            let at = link.schedule_close(Dir::Up, now, &mut m.rng);
            self.push(
                at,
                Ev::CloseToRelay {
                    p,
                    generation,
                    goodbye: true,
                },
            );
        }
    }

    /// The network cuts participant `p`'s connection: both ends learn it after a while, and
    /// no new connection can be made for `outage`.
    pub(crate) fn disconnect(&mut self, p: usize, outage: std::time::Duration) {
        let now = self.now();
        let name = self.members[p].name.clone();
        let m = &mut self.members[p];
        m.offline_until = m.offline_until.max(now.plus(outage));
        let Some(link) = m.link.as_mut() else {
            return;
        };
        if link.broken || !link.is_up() {
            return;
        }
        link.broken = true;
        let (generation, latency) = (link.generation, link.profile(now).latency);
        self.checker.connection_lost(&name);
        self.push(now.plus(latency), Ev::CloseToClient { p, generation });
        self.push(
            now.plus(latency),
            Ev::CloseToRelay {
                p,
                generation,
                goodbye: false,
            },
        );
    }

    /// Participant `p`'s client drops its connection without a goodbye (`Output::DropControl`):
    /// a pending attempt is abandoned; an open connection is reset, and the relay sees it as
    /// lost after the bytes before the reset, unless a partition swallows the reset (then the
    /// relay learns only from the resume, or never).
    fn drop_control(&mut self, p: usize) {
        let now = self.now();
        let name = self.members[p].name.clone();
        let m = &mut self.members[p];
        if m.connecting.take().is_some() {
            self.trace.num(0xdc);
            return;
        }
        let Some(link) = m.link.as_mut() else {
            return;
        };
        if !link.client_open || link.broken {
            return;
        }
        self.trace.num(0xdd);
        link.client_open = false;
        link.broken = true;
        self.relay.legs.remove(&link.conn);
        self.checker.connection_lost(&name);
        if !link.relay_open {
            return;
        }
        let lost = link.partitioned(now) && m.rng.chance(500);
        if !lost {
            let generation = link.generation;
            let at = link.schedule_close(Dir::Up, now, &mut m.rng);
            self.push(
                at,
                Ev::CloseToRelay {
                    p,
                    generation,
                    goodbye: false,
                },
            );
        }
    }

    /// Drains the relay's outputs: frames to links, closes, media signals to the forwarder,
    /// events to the checker.
    pub(crate) fn drain_relay(&mut self) {
        loop {
            let ts = self.clock.timestamp();
            let Some(out) = self.relay.ds.poll_output(ts) else {
                return;
            };
            match out {
                RelayOutput::Send { conn, bytes } => {
                    let Some(&p) = self.conns.get(&conn) else {
                        continue;
                    };
                    let body = bytes
                        .get(blindcall_proto::frame::HEADER_LEN..)
                        .and_then(|b| ControlMessage::decode(b).ok())
                        .map(|m| m.body);
                    if let Some(b) = &body {
                        self.trace.num(u64::from(b.message_type().0));
                        self.checker.relay_sent(conn, b);
                        if let Body::ResumeAccepted(a) = b {
                            self.checker.resume_accepted(p, a.epoch);
                        }
                    }
                    let keepalive = matches!(body, Some(Body::Pong(_)));
                    let open = self.members[p]
                        .link
                        .as_ref()
                        .is_some_and(|l| l.conn == conn && l.relay_open && !l.broken);
                    if open {
                        self.write(p, Dir::Down, bytes, keepalive);
                    }
                }
                RelayOutput::Close { conn, reason } => {
                    self.trace.text(&format!("{reason:?}"));
                    self.relay.legs.remove(&conn);
                    let Some(&p) = self.conns.get(&conn) else {
                        continue;
                    };
                    let name = self.members[p].name.clone();
                    let now = self.now();
                    let m = &mut self.members[p];
                    let current = m.link.as_ref().is_some_and(|l| l.conn == conn);
                    let Some(link) = m.link_by_conn(conn) else {
                        continue;
                    };
                    link.relay_open = false;
                    m.old_links.retain(|l| l.relay_open);
                    if !current {
                        // A stale connection (the member resumed elsewhere, or its reset
                        // never arrived).
                        continue;
                    }
                    self.checker.relay_closed(&name);
                    let Some(link) = self.members[p].link.as_mut() else {
                        continue;
                    };
                    if link.client_open && !link.broken {
                        let generation = link.generation;
                        let m = &mut self.members[p];
                        let Some(link) = m.link.as_mut() else {
                            continue;
                        };
                        let at = link.schedule_close(Dir::Down, now, &mut m.rng);
                        self.push(at, Ev::CloseToClient { p, generation });
                    }
                }
                RelayOutput::MediaSignal {
                    conn,
                    participant,
                    payload,
                    ..
                } => self.forwarder_signal(conn, participant, &payload),
                RelayOutput::Claim(_)
                | RelayOutput::ClaimHome(_)
                | RelayOutput::Fetch(_)
                | RelayOutput::Genesis(_)
                | RelayOutput::LoadGenesis(_)
                | RelayOutput::Ban(_)
                | RelayOutput::Lock(_)
                | RelayOutput::Waiting(_) => {
                    panic!(
                        "the simulated relay keeps its rooms in memory; it asked the store: {out:?}"
                    )
                }
                RelayOutput::Event(e) => {
                    tracing::debug!(t = %self.now(), event = ?e, "relay");
                    self.trace.text(&format!("{e:?}"));
                    if let blindcall_relay::Event::GraceStarted { until, .. } = &e {
                        let until = self.clock.from_timestamp(*until);
                        self.grace_until = self.grace_until.max(until);
                    }
                    if let blindcall_relay::Event::CommitRejected { reason, .. } = &e {
                        *self
                            .stats
                            .rejected
                            .entry(format!("{reason:?}"))
                            .or_insert(0) += 1;
                    }
                    let conns = &self.conns;
                    self.checker
                        .relay_event(&self.members, |c| conns.get(&c).copied(), &e);
                }
            }
        }
    }

    /// The forwarder's side of media signaling (the real forwarder does the same through its
    /// WebRTC peer): a `Join` gets an offer, an answer brings the connection up.
    fn forwarder_signal(&mut self, conn: ConnId, participant: ConnId, payload: &[u8]) {
        let Some(&p) = self.conns.get(&conn) else {
            return;
        };
        let Some(generation) = self.members[p].link.as_ref().map(|l| l.generation) else {
            return;
        };
        match MediaSignalPayload::decode(payload) {
            Ok(MediaSignalPayload::Join { publish }) => {
                self.relay.legs.insert(
                    conn,
                    Leg {
                        p,
                        generation,
                        participant,
                        publish,
                        answered: false,
                        connected: false,
                    },
                );
                let offer = MediaSignalPayload::Offer("v=0 sim offer".into()).encode();
                if self.relay.ds.send_media_signal(conn, offer).is_err() {
                    *self.stats.warnings.entry("signal".into()).or_insert(0) += 1;
                }
            }
            Ok(MediaSignalPayload::Answer(_)) => {
                let Some(leg) = self.relay.legs.get_mut(&conn) else {
                    return;
                };
                if leg.answered {
                    return;
                }
                leg.answered = true;
                // ICE and DTLS: about a round trip.
                let now = self.now();
                let latency = self.members[p].link.as_ref().map_or(SimTime::ZERO.0, |l| {
                    l.profile(now).latency.as_nanos() as u64
                });
                self.push(
                    SimTime(now.0.saturating_add(latency.saturating_mul(2))),
                    Ev::MediaUp { p, generation },
                );
            }
            _ => {}
        }
    }

    /// Participant `p`'s media connection comes up.
    pub(crate) fn media_up(&mut self, p: usize, generation: u32) {
        let Some(conn) = self.members[p]
            .link
            .as_ref()
            .filter(|l| l.generation == generation && l.is_up())
            .map(|l| l.conn)
        else {
            return;
        };
        let Some(leg) = self.relay.legs.get_mut(&conn) else {
            return;
        };
        leg.connected = true;
        let now = self.clock.instant();
        let m = &mut self.members[p];
        m.media.connected = true;
        if let Some(core) = m.core.as_mut() {
            core.handle_media(now, MediaInput::Connection(ConnectionState::Connected));
        }
        self.drain_member(p);
    }

    /// Drains participant `p`'s core: what its observer saw, then its outputs in order. Before
    /// its connection is established nothing is drained: the shell connects first.
    pub(crate) fn drain_member(&mut self, p: usize) {
        if self.members[p].link.is_none() {
            return;
        }
        loop {
            for o in self.members[p].recorder.take() {
                self.observe(p, &o);
            }
            let now = self.clock.instant();
            let Some(out) = self.members[p]
                .core
                .as_mut()
                .and_then(|c| c.poll_output(now))
            else {
                return;
            };
            match out {
                Output::Control(body) => self.send_up(p, body),
                Output::Event(e) => self.app_event(p, &e),
                Output::Frame(_) => {}
                Output::Transmit { kind, packet } => {
                    self.checker.transmitted(&self.members, p, &packet);
                    self.uplink(p, kind, packet);
                }
                Output::Transport(op) => self.transport_op(p, op),
                Output::Stats(s) => self.members[p].last_stats = Some(*s),
                Output::Admitted => self.trace.num(0xad),
                Output::JoinFailed(e) => {
                    let what = format!("JoinFailed({e:?})");
                    self.count_end(p, &what);
                    // A step that timed out while the network was down (a partition
                    // outlasting the join step's timeout) is expected too.
                    let step = self.options(p).step_timeout;
                    let was_down = self.now() < self.members[p].offline_until.plus(step);
                    let timed_out = matches!(e, blindcall_client::JoinError::Timeout { .. });
                    let expected =
                        crate::invariants::join_failure_expected(&e) || (timed_out && was_down);
                    self.checker.call_ended(&self.members, p, &what, expected);
                    self.client_closes(p);
                }
                Output::End => self.client_closes(p),
                Output::Connect { .. } => self.open_connection(p),
                Output::DropControl => self.drop_control(p),
                _ => {}
            }
        }
    }

    /// The stand-in media transport: opening succeeds at once, offers are answered.
    fn transport_op(&mut self, p: usize, op: TransportOp) {
        let now = self.clock.instant();
        match op {
            TransportOp::Open { .. } => {
                self.members[p].media.opened = true;
                if let Some(core) = self.members[p].core.as_mut() {
                    core.handle_media(now, MediaInput::Opened);
                }
            }
            TransportOp::ApplyOffer(_) => {
                if let Some(core) = self.members[p].core.as_mut() {
                    core.handle_media(now, MediaInput::Answer("v=0 sim answer".into()));
                }
            }
            TransportOp::RequestKeyframe { from } => self.route_keyframe_request(p, from.0),
            TransportOp::Close => {
                let m = &mut self.members[p];
                m.media = Default::default();
                m.started.clear();
                if let Some(conn) = m.link.as_ref().map(|l| l.conn) {
                    self.relay.legs.remove(&conn);
                }
            }
            _ => {}
        }
    }
}
