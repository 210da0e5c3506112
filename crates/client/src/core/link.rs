//! Staying in the call when the network fails: the control connection (or the media path)
//! breaks, the member reconnects by itself with bounded exponential backoff and jitter, and
//! resumes its membership on the new connection by proving to the relay that it holds its
//! leaf (spec/client.md SDK-RES-*). No host approval, no new leaf, no rekey for coming back.
//!
//! While away, nothing is sealed (published frames are dropped and counted, so no counter of
//! any key is ever used twice), no commit is made, and the group's state stays as it was.
//! Back on a new connection: `Hello` → `HelloAck` (with a fresh challenge) → `Resume` → the
//! commits the member missed, in order → `ResumeAccepted`; then media is opened again.
//!
//! With several relays (the nodes of one relay cluster, [`crate::JoinOptions::relays`]) the
//! core also decides where each connection goes ([`Relays`], SDK-RELAYS-*): joining tries
//! them in order until one answers; after a loss, attempts rotate through the list starting
//! after the relay that failed (so it comes last), with the backoff applied per full round.
//! The resume proceeds on whichever relay answers (the cluster shares the room's state).

use std::time::{Duration, Instant};

use blindcall_group::call::RESUME_CHALLENGE_LEN;
use blindcall_proto::{
    Body, HelloAck, Ping, Redirect, Resume, ResumeAccepted, ResumeRefusedReason, VLBytes,
};

use super::join::Phase;
use super::timer::{Timer, after};
use super::{CallCore, Output, RelayRef, TransportOp};
use crate::event::{EndReason, Event};

/// How a member reconnects (see [`crate::JoinOptions::reconnect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Whether to reconnect at all (otherwise a broken connection ends the call).
    pub enabled: bool,
    /// Delay before the second attempt (the first is immediate); each later one doubles it.
    pub initial_delay: Duration,
    /// Largest delay between attempts.
    pub max_delay: Duration,
    /// Stop trying (the call ends with `ConnectionLost`) once away this long. A member back
    /// after the relay's grace period (20 s by default) is refused (`REMOVED`) instead.
    pub give_up_after: Duration,
    /// Bound on one attempt (connect, TLS, and the resume after `HelloAck`): a network that
    /// still drops packets makes an attempt hang, not fail; the next one starts after it.
    pub attempt_timeout: Duration,
    /// Bound on the relay's answer to `Hello` on a connection that is up (`HelloAck`,
    /// `Redirect` or `Refused`): longer than `attempt_timeout` because a cluster node may
    /// hold a `Hello` until the lease of a crashed home node expires (about 8 s) before it
    /// answers (SDK-REDIR-5).
    pub hello_timeout: Duration,
    /// A member sends `Ping` this often, so a connection that went silent is noticed.
    pub ping_interval: Duration,
    /// Nothing received from the relay for this long (pongs included): the connection is
    /// taken as lost (a dead network often breaks no TCP connection for minutes).
    pub silence_timeout: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            give_up_after: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(1),
            silence_timeout: Duration::from_secs(3),
        }
    }
}

/// The state of the link to the relay, while a member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Link {
    /// Connected and resumed (or never lost).
    #[default]
    Up,
    /// Waiting to try again (`Timer::Reconnect`).
    Down { since: Instant, attempt: u32 },
    /// The shell is opening a new control connection.
    Connecting { since: Instant, attempt: u32 },
    /// Connected again; `Hello` and then `Resume` sent, waiting for the relay's answer.
    Resuming { since: Instant, attempt: u32 },
}

/// The most redirects in a row without an admission (`HelloAck`); one more is a failed
/// attempt (SDK-REDIR-3).
pub(super) const MAX_REDIRECTS: u32 = 3;

/// Which relay of the list the control connection goes to (indices into
/// [`crate::JoinOptions::relays`]; one relay when the list is empty), or the address a
/// cluster node redirected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Relays {
    /// How many relays there are (at least 1).
    count: usize,
    /// The relay of the current (or last attempted) connection.
    current: usize,
    /// The relay whose connection was lost (reconnect attempts start after it).
    lost: usize,
    /// Relays tried for the first join, the current one included.
    tried: usize,
    /// The address of the current (or last attempted) connection when a node redirected
    /// there (then `current` is the listed relay that redirected).
    redirect: Option<String>,
    /// Redirects followed in a row since the last admission.
    redirects: u32,
}

impl Relays {
    pub(super) fn new(count: usize) -> Self {
        Self {
            count: count.max(1),
            current: 0,
            lost: 0,
            tried: 1,
            redirect: None,
            redirects: 0,
        }
    }

    /// The relay of the current (or last attempted) connection.
    pub(super) fn current(&self) -> usize {
        self.current
    }

    /// The address the current (or last attempted) connection was redirected to, if any.
    pub(super) fn redirect(&self) -> Option<&str> {
        self.redirect.as_deref()
    }

    /// Where the current (or last attempted) connection goes.
    pub(super) fn target(&self) -> RelayRef {
        match &self.redirect {
            Some(a) => RelayRef::Redirected(a.clone()),
            None => RelayRef::Listed(self.current),
        }
    }

    /// A node redirected to `address`: true if it is followed (at most [`MAX_REDIRECTS`] in
    /// a row without an admission), false if this is one too many (a failed attempt).
    pub(super) fn follow(&mut self, address: &str) -> bool {
        if self.redirects >= MAX_REDIRECTS {
            return false;
        }
        self.redirects += 1;
        self.redirect = Some(address.to_owned());
        true
    }

    /// A relay admitted this participant (`HelloAck`): the redirects in a row start over.
    pub(super) fn admitted(&mut self) {
        self.redirects = 0;
    }

    /// Joining: the next relay not yet tried, if any (it becomes the current one).
    pub(super) fn next_untried(&mut self) -> Option<usize> {
        if self.tried >= self.count {
            return None;
        }
        self.current = (self.current + 1) % self.count;
        self.tried += 1;
        self.redirect = None;
        self.redirects = 0;
        Some(self.current)
    }

    /// The connection to the current relay was lost: attempts start after it.
    fn lost(&mut self) {
        self.lost = self.current;
    }

    /// The relay of reconnection attempt `attempt` (1-based): the one after the lost relay,
    /// then on around the list, the lost relay last in each round.
    fn for_attempt(&mut self, attempt: u32) -> usize {
        let step = (attempt.max(1) - 1) as usize % self.count;
        self.current = (self.lost + 1 + step) % self.count;
        self.redirect = None;
        self.redirects = 0;
        self.current
    }

    /// The round (1-based) of reconnection attempt `attempt`, and whether it starts one.
    fn round_of(&self, attempt: u32) -> (u32, bool) {
        let n = u32::try_from(self.count).unwrap_or(u32::MAX);
        let k = attempt.max(1) - 1;
        (k / n + 1, k.is_multiple_of(n))
    }
}

/// What reconnecting did, for the counters.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LinkStats {
    pub(super) reconnects: u64,
    pub(super) away: Duration,
    pub(super) frames_dropped_away: u64,
    /// Deterministic jitter state (seeded from the identity key: no clock, no OS randomness).
    jitter: u64,
}

impl LinkStats {
    pub(super) fn seed(&mut self, bytes: &[u8]) {
        self.jitter = bytes.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        }) | 1;
    }

    /// A pseudo-random fraction in [0, 1) (xorshift64*).
    fn next_fraction(&mut self) -> f64 {
        let mut x = self.jitter;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.jitter = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl CallCore {
    /// Whether the member is connected and resumed (commits, peer messages and media go out).
    pub(super) fn link_up(&self) -> bool {
        matches!(self.link, Link::Up)
    }

    /// The control connection (or the media path) broke while a member: reconnect instead of
    /// ending, if allowed. Returns false when the call should end instead.
    pub(super) fn link_lost(&mut self, now: Instant) -> bool {
        if !self.opts.reconnect.enabled || !matches!(self.phase, Phase::Member(_)) {
            return false;
        }
        let (since, attempt) = match self.link {
            Link::Up => (now, 0),
            Link::Down { since, attempt }
            | Link::Connecting { since, attempt }
            | Link::Resuming { since, attempt } => (since, attempt),
        };
        if now.saturating_duration_since(since) >= self.opts.reconnect.give_up_after {
            return false;
        }
        if matches!(self.link, Link::Up) {
            self.relays.lost();
            // Media goes with the connection: the relay's forwarder knew it by that
            // connection. A new transport is opened once resumed.
            self.media.suspend();
            self.out.push_back(Output::Transport(TransportOp::Close));
        }
        self.timers.stop(Timer::JoinStep);
        // Within a round the next relay is tried at once; each new round backs off as single
        // attempts to one relay do (with one relay, every attempt is a round).
        let (round, starts_round) = self.relays.round_of(attempt + 1);
        let delay = if round == 1 || !starts_round {
            Duration::ZERO
        } else {
            let base = self
                .opts
                .reconnect
                .initial_delay
                .saturating_mul(1u32 << (round - 2).min(16))
                .min(self.opts.reconnect.max_delay);
            // Full jitter over the upper half: many members cut off together do not come
            // back in lockstep.
            base.mul_f64(0.5 + 0.5 * self.link_stats.next_fraction())
        };
        self.link = Link::Down {
            since,
            attempt: attempt + 1,
        };
        self.timers.set(Timer::Reconnect, after(now, delay));
        let relay = self.relays.for_attempt(attempt + 1);
        self.emit(Event::Reconnecting {
            attempt: attempt + 1,
            relay,
        });
        true
    }

    /// `Timer::Reconnect`: ask the shell for a new control connection.
    pub(super) fn reconnect_due(&mut self, now: Instant) {
        if let Link::Down { since, attempt } = self.link {
            self.link = Link::Connecting { since, attempt };
            self.out.push_back(Output::Connect {
                relay: self.relays.target(),
            });
            // The shell answers with `handle_control_connected` or `handle_control_end`; the
            // whole attempt is bounded.
            self.timers.set(
                Timer::JoinStep,
                after(now, self.opts.reconnect.attempt_timeout),
            );
        }
    }

    /// The shell connected a new control channel: say Hello again.
    pub(super) fn link_connected(&mut self, now: Instant) {
        let Link::Connecting { since, attempt } = self.link else {
            return;
        };
        self.link = Link::Resuming { since, attempt };
        if let Some(hello) = self.join.hello.clone() {
            self.send(Body::Hello(hello));
        }
        self.last_heard = now;
        // A cluster node may hold the Hello until a crashed home's lease expires
        // (SDK-REDIR-5); the resume after its HelloAck is bounded by `attempt_timeout`.
        self.timers.set(
            Timer::JoinStep,
            after(now, self.opts.reconnect.hello_timeout),
        );
    }

    /// Just became a member: start pinging the relay, with or without reconnecting, so a
    /// quiet call is not cut by the relay's idle timeout (SDK-RES-7).
    pub(super) fn start_keepalive(&mut self, now: Instant) {
        self.last_heard = now;
        self.timers
            .set(Timer::Ping, after(now, self.opts.reconnect.ping_interval));
    }

    /// Something arrived on the control connection.
    pub(super) fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// `Timer::Ping`: while connected, ping the relay; when reconnecting is enabled, a
    /// connection silent for too long is taken as lost.
    pub(super) fn ping_due(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Member(_)) {
            return;
        }
        if self.link_up() {
            let silent = now.saturating_duration_since(self.last_heard)
                >= self.opts.reconnect.silence_timeout;
            if self.opts.reconnect.enabled && silent {
                self.out.push_back(Output::DropControl);
                if !self.link_lost(now) {
                    self.end(now, EndReason::ConnectionLost);
                    return;
                }
            } else {
                self.pings = self.pings.wrapping_add(1);
                self.send(Body::Ping(Ping { nonce: self.pings }));
            }
        }
        self.timers
            .set(Timer::Ping, after(now, self.opts.reconnect.ping_interval));
    }

    /// While resuming: the relay's `HelloAck` carries the challenge to sign.
    pub(super) fn on_resume_hello_ack(&mut self, now: Instant, ack: &HelloAck) {
        let Phase::Member(g) = &self.phase else {
            return;
        };
        self.relays.admitted();
        if matches!(self.link, Link::Resuming { .. }) {
            self.timers.set(
                Timer::JoinStep,
                after(now, self.opts.reconnect.attempt_timeout),
            );
        }
        let challenge: &[u8; RESUME_CHALLENGE_LEN] = &ack.challenge;
        let room = self.join.room.clone();
        match g.resume_proof(challenge, &room) {
            Ok(proof) => self.send(Body::Resume(Resume {
                leaf: proof.leaf,
                epoch: proof.epoch,
                signature: VLBytes::new(proof.signature),
                participant: self.media.relay_participant.unwrap_or(0),
            })),
            Err(e) => {
                tracing::debug!(error = %e, "no resume proof");
                self.fail_resume(now, ResumeRefusedReason::BAD_STATE);
            }
        }
    }

    /// A member (seated, or resuming: the node's answer to its `Hello`) is sent to another
    /// node: connect there at once and resume (SDK-REDIR-2); the call ends only when it could
    /// not reconnect after any loss either (reconnecting disabled, or given up).
    pub(super) fn on_member_redirect(&mut self, now: Instant, r: &Redirect) {
        if !self.member_redirected(now, r) {
            self.end(now, EndReason::ConnectionLost);
        }
    }

    /// [`CallCore::on_member_redirect`]: not a failed attempt and no backoff, unless it is one
    /// redirect too many (SDK-REDIR-3). False when the call should end instead.
    fn member_redirected(&mut self, now: Instant, r: &Redirect) -> bool {
        if !self.opts.reconnect.enabled || !matches!(self.phase, Phase::Member(_)) {
            return false;
        }
        let followed = match r.address() {
            Some(address) => {
                let address = address.to_owned();
                self.relays.follow(&address).then_some(address)
            }
            None => None,
        };
        self.out.push_back(Output::DropControl);
        let Some(address) = followed else {
            // One redirect too many (or an address that does not parse): a failed attempt.
            return self.link_lost(now);
        };
        let (since, attempt) = match self.link {
            Link::Up => {
                // Seated: the connection is gone as on any loss (SDK-RES-5 while away).
                self.relays.lost();
                self.media.suspend();
                self.out.push_back(Output::Transport(TransportOp::Close));
                (now, 1)
            }
            Link::Down { since, attempt }
            | Link::Connecting { since, attempt }
            | Link::Resuming { since, attempt } => (since, attempt.max(1)),
        };
        let fresh = matches!(self.link, Link::Up);
        self.timers.stop(Timer::Reconnect);
        self.emit(Event::Redirected {
            relay: address.clone(),
        });
        if fresh {
            self.emit(Event::Reconnecting {
                attempt,
                relay: self.relays.current(),
            });
        }
        self.link = Link::Connecting { since, attempt };
        self.out.push_back(Output::Connect {
            relay: RelayRef::Redirected(address),
        });
        self.timers.set(
            Timer::JoinStep,
            after(now, self.opts.reconnect.attempt_timeout),
        );
        true
    }

    /// Whether a reconnection attempt is under way (connecting, or `Hello`/`Resume` sent).
    pub(super) fn resuming(&self) -> bool {
        matches!(self.link, Link::Resuming { .. } | Link::Connecting { .. })
    }

    /// A node answered the resuming member's `Hello` with `Refused(STORE_UNAVAILABLE)`:
    /// transient, a failed attempt (the next relay, with the usual backoff; SDK-REDIR-4).
    pub(super) fn resume_store_unavailable(&mut self, now: Instant) {
        self.out.push_back(Output::DropControl);
        if !self.link_lost(now) {
            self.end(now, EndReason::ConnectionLost);
        }
    }

    /// The relay sent every missed commit and seated this member on the new connection.
    pub(super) fn on_resume_accepted(&mut self, now: Instant, a: &ResumeAccepted) {
        let Link::Resuming { since, .. } = self.link else {
            return;
        };
        self.link = Link::Up;
        // A cluster node that took the room over names the member's streams anew: its
        // manifests name the new id from now on (start_media below), so receivers tie the
        // streams of the new media connection to it (SDK-RES-8).
        self.media.relay_participant = Some(a.participant);
        self.timers.stop(Timer::JoinStep);
        let away = now.saturating_duration_since(since);
        self.link_stats.reconnects += 1;
        self.link_stats.away += away;
        // An own commit the relay never sequenced is made again in the current epoch.
        self.redo_pending_commit();
        if let Phase::Member(g) = &mut self.phase {
            g.reconfirm();
        }
        self.emit(Event::Reconnected { away });
        self.start_media();
    }

    /// The relay refused the resume: the membership cannot be taken up again on this relay;
    /// the call ends (the application may join again through the waiting room).
    pub(super) fn fail_resume(&mut self, now: Instant, reason: ResumeRefusedReason) {
        self.emit(Event::ResumeRefused { reason });
        self.end(now, EndReason::ResumeRefused(reason));
    }

    /// A frame published while away: dropped before sealing, counted.
    pub(super) fn drop_away(&mut self) {
        self.link_stats.frames_dropped_away += 1;
    }
}
