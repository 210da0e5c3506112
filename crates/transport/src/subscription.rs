//! Video subscriptions (sans-IO): which publishers' video a subscriber wants, and the per-leg
//! gate that starts and stops a leg only at frame boundaries, so a subscriber never receives
//! half a frame. A frame boundary is read from the RTP header alone: a packet starts a frame
//! when the stream's previous packet carried the marker bit (MT-PKT-3); no payload byte is read.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ids::ParticipantId;

/// Whose video a subscriber receives. Audio always flows from every publisher.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VideoSubscription {
    /// Every publisher's video (the default).
    #[default]
    All,
    /// Only these publishers' video (e.g. the tiles on screen); an empty set means none.
    Only(BTreeSet<ParticipantId>),
}

impl VideoSubscription {
    /// Whether `publisher`'s video is wanted.
    pub fn wants(&self, publisher: ParticipantId) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(&publisher),
        }
    }
}

/// What to do with one packet on one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateAction {
    /// Forward it; `resumed` on the first packet after a pause (the leg's sequence numbers
    /// must continue from the last packet sent, see [`crate::rewrite::LegRewriter::splice`]).
    Forward {
        /// First packet after a pause.
        resumed: bool,
    },
    /// Do not forward it: the subscriber does not want this stream (not a drop).
    Skip,
}

/// The pure transition of a leg gate: `wanted` is the subscriber's wish, `forwarding` the
/// leg's current state, `starts_frame` whether this packet opens a frame. Returns the action
/// and the new `forwarding` state. A leg changes state only on a packet that starts a frame:
/// a stopping leg finishes the frame in progress, a starting leg waits for the next one.
pub fn transition(wanted: bool, forwarding: bool, starts_frame: bool) -> (GateAction, bool) {
    match (wanted, forwarding, starts_frame) {
        (true, true, _) => (GateAction::Forward { resumed: false }, true),
        (true, false, true) => (GateAction::Forward { resumed: true }, true),
        (true, false, false) => (GateAction::Skip, false),
        (false, true, false) => (GateAction::Forward { resumed: false }, true),
        (false, true, true) | (false, false, _) => (GateAction::Skip, false),
    }
}

/// One leg's gate, shared between the subscription owner (sets `wanted`) and the publisher's
/// forwarding task (the only caller of [`LegGate::admit`]).
#[derive(Debug)]
pub struct LegGate {
    wanted: AtomicBool,
    forwarding: AtomicBool,
}

impl LegGate {
    /// A gate that starts as `wanted` (and forwarding if wanted).
    pub fn new(wanted: bool) -> Self {
        Self {
            wanted: AtomicBool::new(wanted),
            forwarding: AtomicBool::new(wanted),
        }
    }

    /// Sets the subscriber's wish; it takes effect at the next frame boundary. Returns whether
    /// the wish changed.
    pub fn set_wanted(&self, wanted: bool) -> bool {
        self.wanted.swap(wanted, Ordering::Relaxed) != wanted
    }

    /// Whether the subscriber wants this stream.
    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Decides for one packet (called by the stream's single forwarding task).
    pub fn admit(&self, starts_frame: bool) -> GateAction {
        let forwarding = self.forwarding.load(Ordering::Relaxed);
        let (action, next) = transition(self.wanted(), forwarding, starts_frame);
        if next != forwarding {
            self.forwarding.store(next, Ordering::Relaxed);
        }
        action
    }
}

/// Bounds a leg's delay under overload: once a copy waited longer than the bound in the leg's
/// queue, it and the rest of its frame are dropped, and the leg resumes at the first frame that
/// starts in time. Real-time media is worthless late; a subscriber that cannot keep up loses
/// whole frames (and asks for a keyframe) instead of falling further behind.
#[derive(Debug, Clone, Copy, Default)]
pub struct LateFilter {
    dropping: bool,
}

impl LateFilter {
    /// Whether to send a copy that waited `waited` (`late`: longer than the bound) and whose
    /// packet does or does not start a frame. Returns `false` for a copy to drop.
    pub fn admit(&mut self, late: bool, starts_frame: bool) -> bool {
        if late {
            self.dropping = true;
            return false;
        }
        if self.dropping && !starts_frame {
            return false;
        }
        self.dropping = false;
        true
    }
}

/// Tracks frame boundaries of one publisher stream from RTP marker bits.
#[derive(Debug, Clone, Copy)]
pub struct FrameBoundary {
    previous_marker: bool,
}

impl Default for FrameBoundary {
    fn default() -> Self {
        Self {
            previous_marker: true,
        }
    }
}

impl FrameBoundary {
    /// Feeds the next packet's marker bit; returns whether that packet starts a frame.
    pub fn observe(&mut self, marker: bool) -> bool {
        std::mem::replace(&mut self.previous_marker, marker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FWD: GateAction = GateAction::Forward { resumed: false };
    const RESUME: GateAction = GateAction::Forward { resumed: true };

    /// Packets of frames with `sizes` packets each: (marker, frame index).
    fn packets(sizes: &[usize]) -> Vec<(bool, usize)> {
        sizes
            .iter()
            .enumerate()
            .flat_map(|(f, &n)| (0..n).map(move |i| (i + 1 == n, f)))
            .collect()
    }

    // covers: MT-SUB-2
    #[test]
    fn a_gate_switches_only_at_frame_boundaries() {
        // Frames of 3, 2, 4, 1, 3 packets; unsubscribe during frame 1, resubscribe during 3.
        let pkts = packets(&[3, 2, 4, 1, 3]);
        let gate = LegGate::new(true);
        let mut fb = FrameBoundary::default();
        let mut forwarded: Vec<(usize, GateAction)> = Vec::new();
        for (i, &(marker, frame)) in pkts.iter().enumerate() {
            if i == 4 {
                assert!(gate.set_wanted(false));
            }
            if i == 10 {
                assert!(gate.set_wanted(true));
            }
            let starts = fb.observe(marker);
            let action = gate.admit(starts);
            if action != GateAction::Skip {
                forwarded.push((frame, action));
            }
        }
        // Frame 0 whole, frame 1 finished although unwanted mid-frame, frames 2 and 3
        // skipped, frame 4 from its first packet with `resumed` on that packet only.
        let frames: Vec<usize> = forwarded.iter().map(|(f, _)| *f).collect();
        assert_eq!(frames, vec![0, 0, 0, 1, 1, 4, 4, 4]);
        assert_eq!(forwarded[5].1, RESUME);
        assert!(forwarded.iter().filter(|(_, a)| *a == RESUME).count() == 1);
        assert!(!gate.set_wanted(true), "no change reported twice");
    }

    // covers: MT-FWD-8
    #[test]
    fn late_copies_drop_whole_frames_and_the_leg_resumes_at_a_frame_start() {
        let mut f = LateFilter::default();
        // (late, starts_frame) → admitted?
        let steps = [
            ((false, true), true),   // frame 1, in time
            ((false, false), true),  //
            ((true, false), false),  // frame 1's tail is late: dropped
            ((false, false), false), // still frame 1: dropped (it is incomplete anyway)
            ((true, true), false),   // frame 2 starts late: dropped
            ((false, false), false), // rest of frame 2
            ((false, true), true),   // frame 3 starts in time: resume
            ((false, false), true),
        ];
        for (i, ((late, starts), want)) in steps.into_iter().enumerate() {
            assert_eq!(f.admit(late, starts), want, "step {i}");
        }
    }

    #[test]
    fn transition_table_is_complete() {
        use GateAction::Skip;
        let table = [
            ((true, true, true), (FWD, true)),
            ((true, true, false), (FWD, true)),
            ((true, false, true), (RESUME, true)),
            ((true, false, false), (Skip, false)),
            ((false, true, true), (Skip, false)),
            ((false, true, false), (FWD, true)),
            ((false, false, true), (Skip, false)),
            ((false, false, false), (Skip, false)),
        ];
        for ((w, f, s), want) in table {
            assert_eq!(transition(w, f, s), want, "{w} {f} {s}");
        }
    }

    // covers: MT-SUB-1
    #[test]
    fn subscription_wants_listed_publishers_only() {
        let only = VideoSubscription::Only([ParticipantId(2), ParticipantId(5)].into());
        assert!(only.wants(ParticipantId(2)) && only.wants(ParticipantId(5)));
        assert!(!only.wants(ParticipantId(3)));
        assert!(VideoSubscription::All.wants(ParticipantId(3)));
        assert!(!VideoSubscription::Only(BTreeSet::new()).wants(ParticipantId(1)));
    }
}
