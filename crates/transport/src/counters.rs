//! Per-room forwarding counters. Every packet that enters is either forwarded to each
//! subscriber leg or dropped with a reason; nothing disappears uncounted.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use blindcall_media::seq::SeqExtender;

/// Tracks one publisher stream's sequence numbers to count packets that never reached the
/// relay's forwarder (lost on the network or dropped inside the WebRTC stack's queues).
#[derive(Debug, Default)]
pub struct LossTracker {
    seq: SeqExtender,
    first: Option<u64>,
    received: u64,
    reported: i64,
}

impl LossTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `sequence_number`; returns the change in the stream's missing-packet count
    /// (positive when a gap opens, negative when a late packet fills one).
    pub fn observe(&mut self, sequence_number: u16) -> i64 {
        let ext = self.seq.extend(sequence_number);
        let first = *self.first.get_or_insert(ext);
        let first = first.min(ext);
        self.first = Some(first);
        self.received += 1;
        let highest = self.seq.highest().unwrap_or(ext);
        let expected = highest - first + 1;
        let missing = i64::try_from(expected).unwrap_or(i64::MAX)
            - i64::try_from(self.received).unwrap_or(i64::MAX);
        let delta = missing - self.reported;
        self.reported = missing;
        delta
    }
}

/// Why a packet (or one copy of it for one leg) was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The publisher's stream had no subscriber leg (counted once per packet).
    NoSubscriber,
    /// The leg's queue was full (the subscriber's writer fell behind).
    QueueFull,
    /// The leg was being torn down.
    LegClosed,
    /// The WebRTC stack refused the write (connection closed).
    WriteFailed,
    /// The copy (or an earlier one of its frame) waited longer than the leg's delay bound.
    Late,
    /// The packet's SSRC is not the one its publisher announced for that stream (counted
    /// once per packet; see [`crate::announce`]).
    UnannouncedSsrc,
}

impl DropReason {
    /// All reasons, in a stable order.
    pub const ALL: [DropReason; 6] = [
        DropReason::NoSubscriber,
        DropReason::QueueFull,
        DropReason::LegClosed,
        DropReason::WriteFailed,
        DropReason::Late,
        DropReason::UnannouncedSsrc,
    ];

    fn index(self) -> usize {
        match self {
            DropReason::NoSubscriber => 0,
            DropReason::QueueFull => 1,
            DropReason::LegClosed => 2,
            DropReason::WriteFailed => 3,
            DropReason::Late => 4,
            DropReason::UnannouncedSsrc => 5,
        }
    }

    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::NoSubscriber => "no_subscriber",
            DropReason::QueueFull => "queue_full",
            DropReason::LegClosed => "leg_closed",
            DropReason::WriteFailed => "write_failed",
            DropReason::Late => "late",
            DropReason::UnannouncedSsrc => "unannounced_ssrc",
        }
    }
}

/// Lock-free counters shared by a room's forwarding tasks.
#[derive(Debug, Default)]
pub struct Counters {
    packets_in: AtomicU64,
    bytes_in: AtomicU64,
    routed: AtomicU64,
    copies: AtomicU64,
    packets_out: AtomicU64,
    bytes_out: AtomicU64,
    dropped: [AtomicU64; 6],
    unsubscribed: AtomicU64,
    extensions_stripped: AtomicU64,
    keyframe_requests: AtomicU64,
    tapped: AtomicU64,
    tap_dropped: AtomicU64,
    missing_upstream: AtomicI64,
}

impl Counters {
    /// Adds a [`LossTracker::observe`] delta to the packets missing before the forwarder.
    pub fn record_missing_upstream(&self, delta: i64) {
        if delta != 0 {
            self.missing_upstream.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// A packet of `bytes` payload bytes arrived from a publisher.
    pub fn record_in(&self, bytes: usize) {
        self.packets_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// An arrived packet was handed to `copies` subscriber legs and held back from
    /// `unsubscribed` legs whose subscriber does not want that stream (a video subscription;
    /// not a drop, the subscriber asked for it). With no leg at all it is a `NoSubscriber` drop.
    pub fn record_routed(&self, copies: usize, unsubscribed: usize) {
        if copies + unsubscribed == 0 {
            self.record_drop(DropReason::NoSubscriber);
        } else {
            self.routed.fetch_add(1, Ordering::Relaxed);
            self.copies.fetch_add(copies as u64, Ordering::Relaxed);
            self.unsubscribed
                .fetch_add(unsubscribed as u64, Ordering::Relaxed);
        }
    }

    /// One copy was written to a subscriber leg.
    pub fn record_out(&self, bytes: usize) {
        self.packets_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A packet or one copy of it was dropped.
    pub fn record_drop(&self, reason: DropReason) {
        self.dropped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Header extensions were removed on a leg that did not negotiate them.
    pub fn record_extensions_stripped(&self, n: usize) {
        if n > 0 {
            self.extensions_stripped
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// A keyframe request was forwarded upstream.
    pub fn record_keyframe_request(&self) {
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy was offered to the tap (`delivered` false: the tap channel was full).
    pub fn record_tap(&self, delivered: bool) {
        if delivered {
            self.tapped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.tap_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A consistent-enough copy of every counter.
    pub fn snapshot(&self) -> CountersSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountersSnapshot {
            packets_in: l(&self.packets_in),
            bytes_in: l(&self.bytes_in),
            routed: l(&self.routed),
            copies: l(&self.copies),
            packets_out: l(&self.packets_out),
            bytes_out: l(&self.bytes_out),
            dropped_no_subscriber: l(&self.dropped[0]),
            dropped_queue_full: l(&self.dropped[1]),
            dropped_leg_closed: l(&self.dropped[2]),
            dropped_write_failed: l(&self.dropped[3]),
            dropped_late: l(&self.dropped[4]),
            dropped_unannounced_ssrc: l(&self.dropped[5]),
            unsubscribed: l(&self.unsubscribed),
            extensions_stripped: l(&self.extensions_stripped),
            keyframe_requests: l(&self.keyframe_requests),
            tapped: l(&self.tapped),
            tap_dropped: l(&self.tap_dropped),
            missing_upstream: u64::try_from(self.missing_upstream.load(Ordering::Relaxed))
                .unwrap_or(0),
        }
    }
}

/// A point-in-time copy of a room's [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// RTP packets received from publishers.
    pub packets_in: u64,
    /// Payload bytes received from publishers.
    pub bytes_in: u64,
    /// Received packets that had at least one subscriber leg.
    pub routed: u64,
    /// Copies handed to subscriber legs (sum of fan-out over routed packets).
    pub copies: u64,
    /// Copies written to subscriber legs.
    pub packets_out: u64,
    /// Payload bytes written to subscriber legs.
    pub bytes_out: u64,
    /// Packets dropped because nobody subscribed to the stream.
    pub dropped_no_subscriber: u64,
    /// Copies dropped because the leg's queue was full.
    pub dropped_queue_full: u64,
    /// Copies dropped because the leg was closing.
    pub dropped_leg_closed: u64,
    /// Copies the WebRTC stack refused.
    pub dropped_write_failed: u64,
    /// Copies dropped because they (or their frame) waited past the leg's delay bound.
    pub dropped_late: u64,
    /// Packets dropped because their SSRC is not the one their publisher announced for the
    /// stream.
    pub dropped_unannounced_ssrc: u64,
    /// Copies not made because the subscriber's video subscription left that publisher out.
    pub unsubscribed: u64,
    /// Header extensions removed on legs that did not negotiate them.
    pub extensions_stripped: u64,
    /// Keyframe requests (PLI/FIR) forwarded to publishers.
    pub keyframe_requests: u64,
    /// Packets copied to the tap.
    pub tapped: u64,
    /// Packets the tap could not take (its channel was full).
    pub tap_dropped: u64,
    /// Publisher packets that never reached the forwarder (gaps in their sequence numbers):
    /// lost on the network or dropped by the WebRTC stack before the relay could count them.
    pub missing_upstream: u64,
}

impl std::ops::AddAssign<&CountersSnapshot> for CountersSnapshot {
    /// Adds every counter of `other` (e.g. to sum rooms).
    fn add_assign(&mut self, other: &CountersSnapshot) {
        let CountersSnapshot {
            packets_in,
            bytes_in,
            routed,
            copies,
            packets_out,
            bytes_out,
            dropped_no_subscriber,
            dropped_queue_full,
            dropped_leg_closed,
            dropped_write_failed,
            dropped_late,
            dropped_unannounced_ssrc,
            unsubscribed,
            extensions_stripped,
            keyframe_requests,
            tapped,
            tap_dropped,
            missing_upstream,
        } = *other;
        self.packets_in += packets_in;
        self.bytes_in += bytes_in;
        self.routed += routed;
        self.copies += copies;
        self.packets_out += packets_out;
        self.bytes_out += bytes_out;
        self.dropped_no_subscriber += dropped_no_subscriber;
        self.dropped_queue_full += dropped_queue_full;
        self.dropped_leg_closed += dropped_leg_closed;
        self.dropped_write_failed += dropped_write_failed;
        self.dropped_late += dropped_late;
        self.dropped_unannounced_ssrc += dropped_unannounced_ssrc;
        self.unsubscribed += unsubscribed;
        self.extensions_stripped += extensions_stripped;
        self.keyframe_requests += keyframe_requests;
        self.tapped += tapped;
        self.tap_dropped += tap_dropped;
        self.missing_upstream += missing_upstream;
    }
}

impl CountersSnapshot {
    /// Dropped copies or packets with `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::NoSubscriber => self.dropped_no_subscriber,
            DropReason::QueueFull => self.dropped_queue_full,
            DropReason::LegClosed => self.dropped_leg_closed,
            DropReason::WriteFailed => self.dropped_write_failed,
            DropReason::Late => self.dropped_late,
            DropReason::UnannouncedSsrc => self.dropped_unannounced_ssrc,
        }
    }

    /// Copies still queued towards a leg (neither written nor dropped yet).
    pub fn in_flight(&self) -> u64 {
        self.copies.saturating_sub(
            self.packets_out
                + self.dropped_queue_full
                + self.dropped_leg_closed
                + self.dropped_write_failed
                + self.dropped_late,
        )
    }

    /// Whether the books balance: every packet in was routed or dropped, and every copy was
    /// written, dropped with a reason, or is still in flight.
    pub fn balanced(&self) -> bool {
        self.packets_in == self.routed + self.dropped_no_subscriber + self.dropped_unannounced_ssrc
            && self.copies
                == self.packets_out
                    + self.dropped_queue_full
                    + self.dropped_leg_closed
                    + self.dropped_write_failed
                    + self.dropped_late
                    + self.in_flight()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: MT-FWD-5, MT-SUB-4
    #[test]
    fn books_balance_across_fan_out_and_every_drop_reason() {
        let c = Counters::default();
        // 3 packets: fan-out 2, fan-out 1 (one leg unsubscribed), no leg: 3 copies, 2 written,
        // 1 queue full.
        for _ in 0..3 {
            c.record_in(100);
        }
        c.record_routed(2, 0);
        c.record_routed(1, 1);
        c.record_routed(0, 0);
        for _ in 0..2 {
            c.record_out(100);
        }
        c.record_drop(DropReason::QueueFull);
        let s = c.snapshot();
        assert_eq!(s.packets_in, 3);
        assert_eq!(s.dropped(DropReason::NoSubscriber), 1);
        assert_eq!(s.copies, 3);
        assert_eq!(s.unsubscribed, 1);
        assert_eq!(s.in_flight(), 0);
        assert!(s.balanced());
        // A copy dropped as late balances like any other drop.
        c.record_in(1);
        c.record_routed(1, 0);
        c.record_drop(DropReason::Late);
        let s = c.snapshot();
        assert_eq!((s.dropped(DropReason::Late), s.in_flight()), (1, 0));
        assert!(s.balanced());
        // One more copy in flight still balances; a phantom "out" does not.
        c.record_in(1);
        c.record_routed(1, 0);
        assert_eq!(c.snapshot().in_flight(), 1);
        assert!(c.snapshot().balanced());
        c.record_out(1);
        c.record_out(1);
        assert!(!c.snapshot().balanced());
        for r in DropReason::ALL {
            assert!(!r.label().is_empty());
        }
    }

    // covers: MT-FWD-5, MT-PIN-4
    #[test]
    fn unannounced_packets_balance_as_drops_and_sums_carry_them() {
        let c = Counters::default();
        c.record_in(10);
        c.record_drop(DropReason::UnannouncedSsrc);
        c.record_in(10);
        c.record_routed(1, 0);
        c.record_out(10);
        let s = c.snapshot();
        assert_eq!(s.dropped(DropReason::UnannouncedSsrc), 1);
        assert_eq!(s.dropped_unannounced_ssrc, 1);
        assert_eq!(DropReason::UnannouncedSsrc.label(), "unannounced_ssrc");
        assert!(s.balanced());
        // Counted as an in-packet that was neither routed nor dropped, it would not balance.
        let mut bad = s;
        bad.dropped_unannounced_ssrc = 0;
        assert!(!bad.balanced());
        let mut sum = s;
        sum += &s;
        assert_eq!(
            (
                sum.packets_in,
                sum.dropped_unannounced_ssrc,
                sum.packets_out
            ),
            (4, 2, 2)
        );
        assert!(sum.balanced());
        // Every reason has its own slot.
        let labels: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), DropReason::ALL.len());
    }

    // covers: MT-FWD-7
    #[test]
    fn loss_tracker_counts_gaps_and_late_fills_across_wrap() {
        let c = Counters::default();
        let mut t = LossTracker::new();
        for seq in [65_533u16, 65_534, 1, 2] {
            c.record_missing_upstream(t.observe(seq));
        }
        // 65_535 and 0 missing.
        assert_eq!(c.snapshot().missing_upstream, 2);
        c.record_missing_upstream(t.observe(0));
        assert_eq!(c.snapshot().missing_upstream, 1);
        // A packet from before the first one seen widens the expected range by itself only.
        c.record_missing_upstream(t.observe(65_532));
        assert_eq!(c.snapshot().missing_upstream, 1);
        c.record_missing_upstream(t.observe(65_535));
        assert_eq!(c.snapshot().missing_upstream, 0);
    }
}
