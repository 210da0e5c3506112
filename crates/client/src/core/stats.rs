//! Counters: a [`CallStats`] snapshot (with sender-authentication figures and peer-message
//! counts) and per-sender decrypt health every stats interval.

use std::time::{Duration, Instant};

use super::join::Phase;
use super::timer::{Timer, after};
use super::{CallCore, Output};
use crate::event::{CallStats, Event, LatencySummary};

impl CallCore {
    /// The counters now (the transport's own counter is the shell's to fill in).
    pub(super) fn snapshot(&self) -> CallStats {
        let mut s = CallStats::default();
        let group = match &self.phase {
            Phase::Member(g) => Some(&**g),
            _ => None,
        };
        if let Some(g) = group {
            s.epoch = Some(g.epoch());
            s.code = Some(g.security_code().to_string());
            s.send_epoch = Some(g.send_epoch());
            s.members = g.roster().len();
            let v = g.media_verifier();
            s.detection_latency = LatencySummary::of(v.detection_latency());
            s.signature_wait = LatencySummary::of(v.signature_wait());
            s.manifests_sent = g.manifest_counters().manifests;
        }
        s.reconnects = self.link_stats.reconnects;
        s.time_away = self.link_stats.away;
        s.frames_dropped_away = self.link_stats.frames_dropped_away;
        s.relay = self.relays.current();
        s.relay_addr = self.opts.relays.get(s.relay).copied();
        s.relay_redirect = self.relays.redirect().map(str::to_owned);
        s.peer_messages_sent = self.peer.sent;
        s.peer_messages_received = self.peer.received;
        s.peer_messages_refused = self.peer.refused.clone();
        if let Some(p) = &self.media.pipeline {
            let c = p.counters();
            s.frames_sent = c.frames_sent;
            s.packets_sent = c.packets_sent;
            s.packets_received = c.packets_received;
            s.held_frames = p.held_frames();
            s.senders = p.health_snapshot(group);
            for h in &s.senders {
                s.frames_opened += h.opened;
                for (cause, n) in &h.dropped {
                    *s.dropped.entry(*cause).or_insert(0) += n;
                }
            }
        }
        s.ended = self.is_ended();
        s
    }

    /// The stats interval passed: counters, decrypt health if it changed, and the video
    /// filter (identities learned from newly opened streams may resolve more of it).
    pub(super) fn stats_due(&mut self, now: Instant) {
        let interval = self.opts.stats_interval.max(Duration::from_millis(10));
        self.timers.set(Timer::Stats, after(now, interval));
        let stats = self.snapshot();
        self.out.push_back(Output::Stats(Box::new(stats)));
        let group = match &self.phase {
            Phase::Member(g) => Some(&**g),
            _ => None,
        };
        if let Some(health) = self
            .media
            .pipeline
            .as_mut()
            .and_then(|p| p.take_health(group))
        {
            self.emit(Event::DecryptHealth(health));
        }
        self.sync_video();
    }
}
