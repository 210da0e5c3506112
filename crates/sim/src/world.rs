//! The simulated world: the relay, the participants, the queue of everything in flight and
//! the virtual clock.
//!
//! # A step
//!
//! A step finds the earliest thing due — the first delivery or action in the queue, the
//! relay's deadline ([`Ds::poll_timeout`](blindcall_relay::Ds::poll_timeout)) or a client's
//! ([`CallCore::poll_timeout`](blindcall_client::CallCore::poll_timeout)); ties go to the queue,
//! then the relay, then the clients in index order — moves the clock there and does that one
//! thing: feeds the input to its core and drains the core's outputs in order, which puts new
//! deliveries on the queue (never at the same instant: every hop takes time). Then the
//! invariants are checked. Nothing is random but the seeded generators, so one seed always
//! takes the same steps.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use blindcall_client::MediaKind;
use blindcall_media::RtpPacket;
use blindcall_relay::ConnId;

use crate::clock::{Clock, SimTime};
use crate::invariants::{Checker, Invariant, Violation};
use crate::member::Member;
use crate::net::{Dir, MediaFaults};
use crate::relay::{Relay, SetupError};
use crate::rng::Rng;
use crate::scenario::Scenario;
use crate::trace::Trace;

/// Media stops this long after the last action is over.
const MEDIA_AFTER_LAST_ACTION: Duration = Duration::from_secs(3);
/// ... but goes on at most this long into the last action (a long outage or partition).
const MEDIA_THROUGH_LAST_ACTION: Duration = Duration::from_secs(10);
/// The call gets at least this long after media stops to settle (longer than the relay's
/// waiting-room timeout and the clients' join-step timeout).
const SETTLE: Duration = Duration::from_secs(25);
/// Quiescence needs this long without control traffic (longer than key retention).
const QUIET: Duration = Duration::from_secs(12);
/// A run that has not quiesced this long after the settle time fails.
const QUIESCENCE_BOUND: Duration = Duration::from_secs(120);
/// Steps at one instant before a timer counts as firing forever.
const SAME_INSTANT_BOUND: u64 = 100_000;

/// Something in flight or scheduled.
#[derive(Debug)]
pub(crate) enum Ev {
    /// Scenario action `.0`.
    Action(usize),
    /// Participant `p`'s connection is established.
    Connect { p: usize, generation: u32 },
    /// Participant `p`'s connection attempt failed (its network is down).
    ConnectFailed { p: usize, generation: u32 },
    /// Stream bytes reach the relay (`keepalive`: a `Ping`, which does not keep the call
    /// from quiescing).
    ToRelay {
        p: usize,
        generation: u32,
        bytes: Vec<u8>,
        keepalive: bool,
    },
    /// Stream bytes reach the client (`keepalive`: a `Pong`).
    ToClient {
        p: usize,
        generation: u32,
        bytes: Vec<u8>,
        keepalive: bool,
    },
    /// The client's close reaches the relay: a goodbye (TLS close_notify) or, when the
    /// network cut the connection, a loss.
    CloseToRelay {
        p: usize,
        generation: u32,
        goodbye: bool,
    },
    /// The relay's close reaches the client.
    CloseToClient { p: usize, generation: u32 },
    /// Participant `p`'s media connection comes up.
    MediaUp { p: usize, generation: u32 },
    /// A packet of `from` reaches the forwarder.
    AtForwarder {
        from: usize,
        generation: u32,
        kind: MediaKind,
        packet: RtpPacket,
    },
    /// A packet reaches participant `to`, from the stream of relay participant `from`.
    AtClient {
        to: usize,
        generation: u32,
        from: u64,
        kind: MediaKind,
        packet: RtpPacket,
    },
    /// A receiver's keyframe request reaches `to`.
    KeyframeRequest { to: usize, generation: u32 },
    /// Participant `p`'s application publishes its next `kind` frame.
    Publish { p: usize, kind: MediaKind },
    /// The host's application answers join request `request` of participant `joiner`.
    Decision {
        host: usize,
        request: u64,
        joiner: usize,
        approve: bool,
    },
}

impl Ev {
    /// Whether this is keepalive traffic (pings and pongs never stop).
    fn is_keepalive(&self) -> bool {
        matches!(
            self,
            Self::ToRelay {
                keepalive: true,
                ..
            } | Self::ToClient {
                keepalive: true,
                ..
            }
        )
    }

    /// The participant and direction of a control-stream delivery.
    pub(crate) fn control_stream(&self) -> Option<(usize, u32, Dir)> {
        match self {
            Self::ToRelay { p, generation, .. } | Self::CloseToRelay { p, generation, .. } => {
                Some((*p, *generation, Dir::Up))
            }
            Self::ToClient { p, generation, .. } | Self::CloseToClient { p, generation } => {
                Some((*p, *generation, Dir::Down))
            }
            _ => None,
        }
    }
}

/// What is due next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    Queue,
    Relay,
    Member(usize),
}

/// Counts of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Participants in the scenario.
    pub participants: usize,
    /// Participants that became members.
    pub joined: usize,
    /// Commits the relay sequenced.
    pub commits: usize,
    /// The relay's epoch at the end.
    pub final_epoch: Option<u64>,
    /// Frames sealed.
    pub frames_sent: usize,
    /// Frames opened (all receivers).
    pub frames_opened: usize,
    /// Packets the forwarder routed.
    pub packets_forwarded: u64,
    /// Client warnings, by kind.
    pub warnings: BTreeMap<String, u64>,
    /// How participants' calls ended, by reason.
    pub ends: BTreeMap<String, u64>,
    /// Virtual time at the end.
    pub virtual_time: SimTime,
    /// One line per participant: its end state and media counters.
    pub members: Vec<String>,
    /// Commits the clients made, by the epoch they were made in.
    pub commits_made: BTreeMap<u64, usize>,
    /// Commits the relay refused, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Frames receivers dropped, by cause (from each participant's last counters).
    pub dropped: BTreeMap<String, u64>,
    /// The relay's counters of note: errors by code, peer messages, proposals, graces.
    pub relay: BTreeMap<String, u64>,
}

impl RunStats {
    /// Epochs in which more than one commit was made (the relay had to pick one).
    pub fn raced_epochs(&self) -> usize {
        self.commits_made.values().filter(|n| **n > 1).count()
    }
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Steps taken.
    pub steps: u64,
    /// Digest of what happened (equal for equal seeds).
    pub trace: u64,
    /// Counts.
    pub stats: RunStats,
    /// The first invariant broken, if any.
    pub violation: Option<Violation>,
}

/// The relay, the participants, the network and the clock of one run.
pub struct World {
    pub(crate) scenario: Scenario,
    pub(crate) clock: Clock,
    queue: BTreeMap<(SimTime, u64), Ev>,
    seq: u64,
    pub(crate) relay: Relay,
    pub(crate) members: Vec<Member>,
    pub(crate) conns: BTreeMap<ConnId, usize>,
    pub(crate) next_conn: u64,
    pub(crate) checker: Checker,
    pub(crate) trace: Trace,
    pub(crate) rng: Rng,
    pub(crate) faults: MediaFaults,
    pub(crate) publish_until: SimTime,
    pub(crate) stats: RunStats,
    /// When control bytes last moved.
    pub(crate) last_control: SimTime,
    /// When the latest resume grace the relay started runs out.
    pub(crate) grace_until: SimTime,
    /// The call's invite, shared out of band with the invited participants.
    pub(crate) invite: Option<blindcall_client::Invite>,
    steps: u64,
}

impl World {
    /// A world for `scenario`, nothing started.
    pub fn new(scenario: Scenario) -> Result<Self, SetupError> {
        let members = scenario
            .participants
            .iter()
            .enumerate()
            .map(|(i, plan)| {
                let key = crate::member::identity_key(scenario.seed, i)?;
                Ok(Member::new(
                    i,
                    *plan,
                    Rng::derive(scenario.seed, 1 + i as u64),
                    key,
                ))
            })
            .collect::<Result<_, SetupError>>()?;
        let s = scenario.settings;
        Ok(Self {
            clock: Clock::new(Instant::now()),
            queue: BTreeMap::new(),
            seq: 0,
            relay: Relay::new(scenario.seed)?,
            members,
            conns: BTreeMap::new(),
            next_conn: 1,
            checker: Checker::new(),
            trace: Trace::default(),
            rng: Rng::derive(scenario.seed, 0xf0),
            faults: MediaFaults {
                loss: s.media_loss,
                duplicate: s.media_duplicate,
                jitter: s.media_jitter,
            },
            publish_until: SimTime::ZERO,
            stats: RunStats {
                participants: scenario.participants.len(),
                ..RunStats::default()
            },
            last_control: SimTime::ZERO,
            grace_until: SimTime::ZERO,
            invite: if s.invite {
                Some(
                    blindcall_client::Invite::new(crate::relay::ROOM.to_vec(), None, None)
                        .map_err(|_| SetupError::Invite)?,
                )
            } else {
                None
            },
            steps: 0,
            scenario,
        })
    }

    /// Current virtual time.
    pub(crate) fn now(&self) -> SimTime {
        self.clock.now()
    }

    /// Puts `ev` on the queue at `at` (never before now).
    pub(crate) fn push(&mut self, at: SimTime, ev: Ev) {
        let at = at.max(self.now());
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    /// Moves participant `p`'s in-flight control deliveries of connection `generation` so
    /// that none arrives before `earliest` (a partition began), keeping their order.
    pub(crate) fn hold_in_flight(&mut self, p: usize, generation: u32, earliest: SimTime) {
        let keys: Vec<(SimTime, u64)> = self
            .queue
            .iter()
            .filter(|(_, ev)| {
                ev.control_stream()
                    .is_some_and(|(q, g, _)| q == p && g == generation)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let Some(ev) = self.queue.remove(&k) else {
                continue;
            };
            let Some((_, _, dir)) = ev.control_stream() else {
                continue;
            };
            let at = match self.members[p].link.as_mut() {
                Some(link) => link.delay_in_flight(dir, k.0, earliest),
                None => k.0,
            };
            self.push(at, ev);
        }
    }

    /// Runs the scenario to quiescence and checks everything.
    pub fn run(mut self) -> Outcome {
        let settle_end = self.schedule();
        self.drive(settle_end);
        if self.checker.violation().is_none() {
            self.clock.advance_to(settle_end);
            self.checker.at_step(self.steps, self.now());
            let occupancy = self.relay.ds.occupancy();
            let relay_epoch = self.relay.ds.room_epoch(crate::relay::ROOM);
            self.checker.at_quiescence(
                &self.members,
                relay_epoch,
                occupancy.members,
                occupancy.waiting,
            );
        }
        self.finish()
    }

    /// Puts the scenario's actions on the queue; returns when the call must have settled.
    pub(crate) fn schedule(&mut self) -> SimTime {
        for (i, a) in self.scenario.actions.iter().enumerate() {
            self.seq += 1;
            self.queue
                .insert((SimTime::ZERO.plus(a.at), self.seq), Ev::Action(i));
        }
        // Media goes on through what the last action does (so members come back into a call
        // that publishes), for a bounded time.
        let last_end = SimTime::ZERO.plus(self.scenario.last_action());
        let media_end = last_end
            .min(SimTime::ZERO.plus(self.scenario.last_start() + MEDIA_THROUGH_LAST_ACTION))
            .plus(MEDIA_AFTER_LAST_ACTION);
        self.publish_until = media_end;
        media_end.max(last_end).plus(SETTLE)
    }

    /// Steps until the call has settled (or an invariant broke).
    fn drive(&mut self, settle_end: SimTime) {
        let bound = settle_end.plus(QUIESCENCE_BOUND);
        let mut same_instant = 0u64;
        let mut last_t = SimTime::ZERO;
        loop {
            if self.checker.violation().is_some() {
                return;
            }
            let Some((t, due)) = self.next_due() else {
                return;
            };
            if t >= settle_end && self.quiet() {
                return;
            }
            if t > bound {
                let detail = format!(
                    "still busy {}s after the scenario ended ({} deliveries in flight)",
                    QUIESCENCE_BOUND.as_secs(),
                    self.queue.len()
                );
                self.checker.at_step(self.steps, t);
                self.checker.fail(Invariant::Quiescence, detail);
                return;
            }
            if t == last_t {
                same_instant += 1;
                if same_instant > SAME_INSTANT_BOUND {
                    self.checker.at_step(self.steps, t);
                    self.checker.fail(
                        Invariant::Quiescence,
                        format!("{due:?} is due at {t} forever"),
                    );
                    return;
                }
            } else {
                same_instant = 0;
                last_t = t;
            }
            self.step_at(t, due);
        }
    }

    /// Nothing but keepalive traffic in flight, no other control traffic for a while, no
    /// resume grace running at the relay, and the relay holds no connection its participant
    /// gave up on (a reset lost in a partition: the relay's idle timeout ends it).
    fn quiet(&self) -> bool {
        let stale = self.members.iter().any(|m| {
            !m.old_links.is_empty()
                || (!m.is_running() && m.link.as_ref().is_some_and(|l| l.relay_open))
        });
        !stale
            && self.now() >= self.grace_until
            && self.now() >= self.last_control.plus(QUIET)
            && self.queue.values().all(Ev::is_keepalive)
    }

    /// Steps while something is due at or before `until` (for tests that stop midway).
    #[cfg(test)]
    pub(crate) fn run_until(&mut self, until: SimTime) {
        while self.checker.violation().is_none() {
            match self.next_due() {
                Some((t, due)) if t <= until => self.step_at(t, due),
                _ => return,
            }
        }
    }

    /// One step at `t`, with the invariants after it.
    pub(crate) fn step_at(&mut self, t: SimTime, due: Due) {
        self.clock.advance_to(t);
        self.checker.at_step(self.steps, t);
        let stepped = catch_unwind(AssertUnwindSafe(|| self.step(due)));
        if let Err(panic) = stepped {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            self.checker
                .fail(Invariant::NoPanic, format!("{due:?} panicked: {msg}"));
            return;
        }
        self.checker.after_step(&self.members);
        self.steps += 1;
    }

    fn finish(mut self) -> Outcome {
        self.stats.commits = self.checker.commits_sequenced();
        self.stats.final_epoch = self.checker.relay_epoch();
        self.stats.frames_sent = self.checker.frames_sent();
        self.stats.frames_opened = self.checker.frames_opened();
        self.stats.joined = self
            .members
            .iter()
            .filter(|m| m.joined_epoch.is_some())
            .count();
        self.stats.virtual_time = self.now();
        let c = self.relay.ds.counters();
        let mut relay: BTreeMap<String, u64> = c
            .errors
            .iter()
            .map(|(code, n)| (format!("error {code:?}"), *n))
            .collect();
        for (k, n) in [
            ("peer messages", c.peer_messages),
            ("peer messages rate-limited", c.peer_messages_rate_limited),
            ("remove proposals", c.remove_proposals),
            ("member proposals", c.member_proposals),
            ("graces started", c.graces_started),
            ("graces expired", c.graces_expired),
            ("resumes accepted", c.resumes_accepted),
            ("commits replayed", c.commits_replayed),
            ("internal faults", c.internal_faults),
            ("unknown connection inputs", c.unknown_connection_inputs),
        ] {
            relay.insert(k.to_owned(), n);
        }
        for (reason, n) in &c.resumes_refused {
            relay.insert(format!("resumes refused {reason:?}"), *n);
        }
        self.stats.relay = relay;
        for m in &self.members {
            let latest = m
                .core
                .as_ref()
                .map(|c| c.stats())
                .filter(|s| s.epoch.is_some());
            let Some(s) = latest.as_ref().or(m.last_stats.as_ref()) else {
                continue;
            };
            for (cause, n) in &s.dropped {
                *self.stats.dropped.entry(cause.to_string()).or_insert(0) += n;
            }
        }
        self.stats.members = self
            .members
            .iter()
            .map(|m| {
                let Some(core) = m.core.as_ref() else {
                    return format!("{}: never started", m.name);
                };
                let s = core.stats();
                format!(
                    "{}: {:?}, {}, joined {:?}, epoch {:?}, {} frames sealed, {} opened, dropped {:?}",
                    m.name,
                    m.plan.media,
                    if core.is_ended() { "ended" } else { "running" },
                    m.joined_epoch,
                    s.epoch,
                    s.frames_sent,
                    s.frames_opened,
                    s.dropped
                )
            })
            .collect();
        Outcome {
            seed: self.scenario.seed,
            steps: self.steps,
            trace: self.trace.digest(),
            stats: self.stats,
            violation: self.checker.take_violation(),
        }
    }

    fn next_due(&self) -> Option<(SimTime, Due)> {
        let mut best = self
            .queue
            .first_key_value()
            .map(|((t, _), _)| (*t, Due::Queue));
        let mut consider = |t: SimTime, d: Due| {
            if best.is_none_or(|(b, _)| t < b) {
                best = Some((t, d));
            }
        };
        if let Some(t) = self.relay.ds.poll_timeout() {
            consider(self.clock.from_timestamp(t), Due::Relay);
        }
        for m in &self.members {
            if let Some(t) = m.deadline() {
                consider(self.clock.from_instant(t), Due::Member(m.index));
            }
        }
        best.map(|(t, d)| (t.max(self.now()), d))
    }

    fn step(&mut self, due: Due) {
        let now = self.now();
        self.trace.num(now.0);
        match due {
            Due::Queue => {
                if let Some((_, ev)) = self.queue.pop_first() {
                    self.handle(ev);
                }
            }
            Due::Relay => {
                self.trace.num(1);
                let ts = self.clock.timestamp();
                self.relay.ds.handle_timeout(ts);
                self.drain_relay();
            }
            Due::Member(p) => {
                self.trace.num(2 + p as u64);
                let at = self.clock.instant();
                if let Some(core) = self.members[p].core.as_mut() {
                    core.handle_timeout(at);
                }
                self.drain_member(p);
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Action(i) => self.action(i),
            Ev::Connect { p, generation } => self.connect(p, generation),
            Ev::ConnectFailed { p, generation } => self.connect_failed(p, generation),
            Ev::ToRelay {
                p,
                generation,
                bytes,
                keepalive,
            } => self.deliver_to_relay(p, generation, &bytes, keepalive),
            Ev::ToClient {
                p,
                generation,
                bytes,
                keepalive,
            } => self.deliver_to_client(p, generation, &bytes, keepalive),
            Ev::CloseToRelay {
                p,
                generation,
                goodbye,
            } => self.close_to_relay(p, generation, goodbye),
            Ev::CloseToClient { p, generation } => self.close_to_client(p, generation),
            Ev::MediaUp { p, generation } => self.media_up(p, generation),
            Ev::AtForwarder {
                from,
                generation,
                kind,
                packet,
            } => self.at_forwarder(from, generation, kind, packet),
            Ev::AtClient {
                to,
                generation,
                from,
                kind,
                packet,
            } => self.at_client(to, generation, from, kind, packet),
            Ev::KeyframeRequest { to, generation } => self.keyframe_request(to, generation),
            Ev::Publish { p, kind } => self.publish(p, kind),
            Ev::Decision {
                host,
                request,
                joiner,
                approve,
            } => self.decide(host, request, joiner, approve),
        }
    }
}
