//! Counters: a [`CallStats`] snapshot and per-sender decrypt health every stats interval.

use std::time::{Duration, Instant};

use super::join::Phase;
use super::timer::{Timer, after};
use super::{CallCore, Output};
use crate::event::{CallStats, Event};

impl CallCore {
    /// The counters now (the transport's own counter is the shell's to fill in).
    pub(super) fn snapshot(&self) -> CallStats {
        let mut s = CallStats::default();
        if let Phase::Member(g) = &self.phase {
            s.epoch = Some(g.epoch());
            s.code = Some(g.security_code().to_string());
            s.send_epoch = Some(g.send_epoch());
            s.members = g.roster().len();
        }
        if let Some(p) = &self.media.pipeline {
            let c = p.counters();
            s.frames_sent = c.frames_sent;
            s.packets_sent = c.packets_sent;
            s.packets_received = c.packets_received;
            s.senders = p.health_snapshot();
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
        self.out.push_back(Output::Stats(stats));
        if let Some(health) = self.media.pipeline.as_mut().and_then(|p| p.take_health()) {
            self.emit(Event::DecryptHealth(health));
        }
        self.sync_video();
    }
}
