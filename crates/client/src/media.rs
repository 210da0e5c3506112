//! The media pipeline of one participant: seal → packetize → transport on the way out;
//! transport → depacketize → open on the way in. Frames sealed under an epoch whose commit
//! has not arrived yet are held briefly and opened once it does; every drop is counted per
//! sender with its cause. Sans-IO: packets and opened frames go to the core's output queue.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blindcall_group::{CallGroup, FrameDropReason};
use blindcall_media::{
    Depacketizer, DepacketizerConfig, MediaKind, Packetizer, PacketizerConfig, RtpPacket,
};
use blindcall_transport::ParticipantId;

use crate::core::{Output, Sink};
use crate::error::{FrameRejected, GroupFailure};
use crate::event::{DropCause, FrameReason, SenderHealth};
use crate::observer::{FrameOpened, FrameSent};

/// SFrame stream context of audio (RFC 9605 §5.2 context bits).
pub const AUDIO_CONTEXT: u64 = 0;
/// SFrame stream context of video.
pub const VIDEO_CONTEXT: u64 = 1;

/// The context of a media kind.
pub fn context_of(kind: MediaKind) -> u64 {
    match kind {
        MediaKind::Audio => AUDIO_CONTEXT,
        MediaKind::Video => VIDEO_CONTEXT,
    }
}

fn kind_of(context: u64) -> Option<MediaKind> {
    match context {
        AUDIO_CONTEXT => Some(MediaKind::Audio),
        VIDEO_CONTEXT => Some(MediaKind::Video),
        _ => None,
    }
}

fn slot(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

/// A frame delivered to the application after it authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingFrame {
    /// Sender's identity (authenticated by its SFrame key).
    pub sender: Arc<str>,
    /// Audio or video.
    pub kind: MediaKind,
    /// Epoch whose key opened it.
    pub epoch: u64,
    /// The decrypted frame.
    pub data: Vec<u8>,
}

struct Held {
    until: Instant,
    from: ParticipantId,
    kind: MediaKind,
    data: Vec<u8>,
}

/// Frames and packets through the pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) frames_sent: u64,
    pub(crate) packets_sent: u64,
    pub(crate) packets_received: u64,
}

/// Per-participant media state (owned by the call's core; no locks).
pub(crate) struct MediaPipeline {
    packetizers: [Packetizer; 2],
    timestamps: [u32; 2],
    depack: HashMap<(ParticipantId, MediaKind), (Depacketizer, u64)>,
    health: BTreeMap<u64, SenderHealth>,
    held: VecDeque<Held>,
    hold: Duration,
    counters: Counters,
    health_changed: bool,
}

impl MediaPipeline {
    pub(crate) fn new(seed: u64, hold: Duration) -> Self {
        Self {
            packetizers: [
                Packetizer::new(PacketizerConfig {
                    initial_sequence: (seed & 0xffff) as u16,
                    ..PacketizerConfig::default()
                }),
                Packetizer::new(PacketizerConfig {
                    initial_sequence: ((seed >> 16) & 0xffff) as u16,
                    ..PacketizerConfig::default()
                }),
            ],
            timestamps: [(seed >> 20) as u32, (seed >> 24) as u32],
            depack: HashMap::new(),
            health: BTreeMap::new(),
            held: VecDeque::new(),
            hold,
            counters: Counters::default(),
            health_changed: false,
        }
    }

    /// Frames and packets so far.
    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    /// Seals `plaintext` with the group's sender for `kind`, packetizes it and queues the
    /// packets for the transport.
    pub(crate) fn publish(
        &mut self,
        now: Instant,
        group: &mut CallGroup,
        kind: MediaKind,
        plaintext: &[u8],
        sink: Sink<'_>,
    ) -> Result<(), FrameRejected> {
        let epoch = group.send_epoch();
        let sender = group
            .sender(context_of(kind))
            .map_err(|e| FrameRejected::SendKey(GroupFailure::from(&e)))?;
        let counter = sender.next_counter().map_or(u64::MAX, |c| c.0);
        let sealed = sender.seal(b"", plaintext).map_err(FrameRejected::Seal)?;
        let i = slot(kind);
        let timestamp = self.timestamps[i].wrapping_add(kind.timestamp_step());
        let mut packets = Vec::new();
        self.packetizers[i]
            .packetize(timestamp, &sealed, &mut packets)
            .map_err(FrameRejected::Packetize)?;
        self.timestamps[i] = timestamp;
        self.counters.packets_sent += packets.len() as u64;
        self.counters.frames_sent += 1;
        if let Some(o) = sink.observer {
            o.frame_sent(&FrameSent {
                kind,
                epoch,
                counter,
                plaintext,
                at: now,
            });
        }
        sink.out.extend(
            packets
                .into_iter()
                .map(|packet| Output::Transmit { kind, packet }),
        );
        Ok(())
    }

    fn health(&mut self, from: ParticipantId) -> &mut SenderHealth {
        self.health_changed = true;
        self.health.entry(from.0).or_insert_with(|| SenderHealth {
            participant: from.0,
            ..SenderHealth::default()
        })
    }

    /// The relay participant ids whose streams authenticated as one of `identities`, in
    /// ascending order.
    pub(crate) fn participants_of(&self, identities: &[String]) -> Vec<u64> {
        self.health
            .iter()
            .filter(|(_, h)| {
                h.identity
                    .as_deref()
                    .is_some_and(|i| identities.iter().any(|n| n == i))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    fn drop_frame(&mut self, from: ParticipantId, cause: DropCause) {
        *self.health(from).dropped.entry(cause).or_insert(0) += 1;
    }

    /// One RTP packet of `from`'s `kind` stream.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_packet(
        &mut self,
        now: Instant,
        group: &mut CallGroup,
        join_epoch: u64,
        from: ParticipantId,
        kind: MediaKind,
        packet: RtpPacket,
        mut sink: Sink<'_>,
    ) {
        self.counters.packets_received += 1;
        self.health(from).packets += 1;
        let (depack, incomplete_seen) = self
            .depack
            .entry((from, kind))
            .or_insert_with(|| (Depacketizer::new(DepacketizerConfig::default()), 0));
        let malformed = depack
            .handle_packet(
                now,
                packet.sequence_number,
                packet.timestamp,
                &packet.payload,
            )
            .is_err();
        let mut frames = Vec::new();
        while let Some(f) = depack.poll_frame() {
            frames.push(f.data);
        }
        let incomplete = depack.stats().frames_incomplete;
        let new_incomplete = incomplete.saturating_sub(*incomplete_seen);
        *incomplete_seen = incomplete;
        if malformed {
            self.drop_frame(from, DropCause::MalformedPacket);
        }
        for _ in 0..new_incomplete {
            self.drop_frame(from, DropCause::Incomplete);
        }
        for data in frames {
            self.open_frame(now, group, join_epoch, from, kind, data, &mut sink);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open_frame(
        &mut self,
        now: Instant,
        group: &mut CallGroup,
        join_epoch: u64,
        from: ParticipantId,
        kind: MediaKind,
        mut data: Vec<u8>,
        sink: &mut Sink<'_>,
    ) {
        let result = group.open(b"", &mut data).map(|o| {
            let kind = kind_of(o.context).unwrap_or(kind);
            if let Some(obs) = sink.observer {
                obs.frame_opened(&FrameOpened {
                    participant: from.0,
                    sender: &o.identity,
                    kind,
                    epoch: o.epoch,
                    counter: o.counter.0,
                    plaintext: o.plaintext,
                    at: now,
                });
            }
            (Arc::clone(&o.identity), kind, o.epoch, o.plaintext.to_vec())
        });
        match result {
            Ok((identity, kind, epoch, plaintext)) => {
                let h = self.health(from);
                h.opened += 1;
                if h.identity.as_deref() != Some(&*identity) {
                    h.identity = Some(Arc::clone(&identity));
                }
                sink.out.push_back(Output::Frame(IncomingFrame {
                    sender: identity,
                    kind,
                    epoch,
                    data: plaintext,
                }));
            }
            Err(e) if e.reason == FrameDropReason::UnknownEpoch => {
                let layout = group.params().layout;
                let current = group.epoch();
                let low = e.origin.map(|o| o.epoch_low);
                if low == Some(layout.epoch_low(current.saturating_add(1))) && group.is_active() {
                    self.held.push_back(Held {
                        until: crate::core::after(now, self.hold),
                        from,
                        kind,
                        data,
                    });
                    return;
                }
                // The most recent epoch with these low bits.
                let span = 1u64 << layout.epoch_bits();
                let back = low.map_or(span, |l| (layout.epoch_low(current) + span - l) % span);
                let cause = if current < back || current - back < join_epoch {
                    DropCause::BeforeJoin
                } else {
                    DropCause::Frame(FrameReason::UnknownEpoch)
                };
                self.drop_frame(from, cause);
            }
            Err(e) => self.drop_frame(from, DropCause::Frame(e.reason)),
        }
    }

    /// Retries held frames (after an epoch change).
    pub(crate) fn retry_held(
        &mut self,
        now: Instant,
        group: &mut CallGroup,
        join_epoch: u64,
        mut sink: Sink<'_>,
    ) {
        let held = std::mem::take(&mut self.held);
        for h in held {
            self.open_frame(now, group, join_epoch, h.from, h.kind, h.data, &mut sink);
        }
    }

    /// Expires held frames and incomplete frames.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while self.held.front().is_some_and(|h| h.until <= now) {
            if let Some(h) = self.held.pop_front() {
                self.drop_frame(h.from, DropCause::FutureEpochExpired);
            }
        }
        let mut incomplete: Vec<(ParticipantId, u64)> = Vec::new();
        for ((from, _), (d, seen)) in &mut self.depack {
            if d.poll_timeout().is_some_and(|t| t <= now) {
                d.handle_timeout(now);
                let n = d.stats().frames_incomplete;
                if n > *seen {
                    incomplete.push((*from, n - *seen));
                    *seen = n;
                }
            }
        }
        for (from, n) in incomplete {
            for _ in 0..n {
                self.drop_frame(from, DropCause::Incomplete);
            }
        }
    }

    /// The next time something is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let held = self.held.front().map(|h| h.until);
        let depack = self
            .depack
            .values()
            .filter_map(|(d, _)| d.poll_timeout())
            .min();
        [held, depack].into_iter().flatten().min()
    }

    /// Per-sender health, and whether it changed since the last call.
    pub(crate) fn take_health(&mut self) -> Option<Vec<SenderHealth>> {
        if !std::mem::take(&mut self.health_changed) {
            return None;
        }
        Some(self.health.values().cloned().collect())
    }

    /// Per-sender health.
    pub(crate) fn health_snapshot(&self) -> Vec<SenderHealth> {
        self.health.values().cloned().collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::observer::CallObserver;
    use blindcall_group::{CallConfig, Client, MemberConfig, MlsSuite};
    use blindcall_media::SyntheticSource;
    use blindcall_media::source::verify;
    use std::sync::Mutex;

    /// Records (epoch, video?, synthetic seq) of every frame opened; panics on a frame that
    /// fails the synthetic integrity check.
    #[derive(Default)]
    struct Opened(Mutex<Vec<(u64, bool, u64)>>);

    impl CallObserver for Opened {
        fn frame_opened(&self, f: &FrameOpened<'_>) {
            let info = verify(f.plaintext).expect("an opened frame is the one sent");
            assert_eq!(info.kind, f.kind);
            self.0
                .lock()
                .unwrap()
                .push((f.epoch, f.kind == MediaKind::Video, info.seq));
        }
    }

    /// Synthetic audio and video published on schedule through a pipeline.
    struct Sources {
        sources: [SyntheticSource; 2],
        next_due: [Instant; 2],
    }

    impl Sources {
        fn new(start: Instant) -> Self {
            Self {
                sources: [
                    SyntheticSource::new(MediaKind::Audio, 7, 1),
                    SyntheticSource::new(MediaKind::Video, 7, 1),
                ],
                next_due: [start, start],
            }
        }

        /// Publishes every frame due at `now`.
        fn tick(&mut self, now: Instant, side: &mut Side, group: &mut CallGroup) {
            for i in 0..2 {
                while self.next_due[i] <= now {
                    let f = self.sources[i].next_frame();
                    self.next_due[i] += self.sources[i].frame_interval();
                    let sink = Sink {
                        out: &mut side.out,
                        observer: None,
                    };
                    side.pipe
                        .publish(now, group, f.info.kind, &f.data, sink)
                        .unwrap();
                }
            }
        }
    }

    /// A pipeline, the outputs it queued, and what its observer saw opened.
    struct Side {
        pipe: MediaPipeline,
        out: VecDeque<Output>,
        seen: Arc<Opened>,
    }

    impl Side {
        fn new() -> Self {
            Self {
                pipe: MediaPipeline::new(7, Duration::from_secs(2)),
                out: VecDeque::new(),
                seen: Arc::default(),
            }
        }

        /// The packets queued for the transport, one entry per frame.
        fn frames(&mut self) -> Vec<(MediaKind, Vec<RtpPacket>)> {
            let mut frames: Vec<(MediaKind, Vec<RtpPacket>)> = Vec::new();
            let mut open = false;
            for o in std::mem::take(&mut self.out) {
                if let Output::Transmit { kind, packet } = o {
                    let end = packet.marker;
                    match frames.last_mut() {
                        Some((k, ps)) if open && *k == kind => ps.push(packet),
                        _ => frames.push((kind, vec![packet])),
                    }
                    open = !end;
                }
            }
            frames
        }

        fn receive(
            &mut self,
            now: Instant,
            group: &mut CallGroup,
            join_epoch: u64,
            from: ParticipantId,
            kind: MediaKind,
            packet: RtpPacket,
        ) {
            let sink = Sink {
                out: &mut self.out,
                observer: Some(&*self.seen),
            };
            self.pipe
                .on_packet(now, group, join_epoch, from, kind, packet, sink);
        }

        fn retry_held(&mut self, now: Instant, group: &mut CallGroup, join_epoch: u64) {
            let sink = Sink {
                out: &mut self.out,
                observer: Some(&*self.seen),
            };
            self.pipe.retry_held(now, group, join_epoch, sink);
        }
    }

    fn pair(now: Instant) -> (CallGroup, CallGroup) {
        let call = CallConfig::default();
        let member = MemberConfig {
            path_update_after_join: None,
            ..MemberConfig::default()
        };
        let a = Client::new("alice", MlsSuite::default()).unwrap();
        let mut alice = CallGroup::create(a, &call, member, now).unwrap();
        let b = Client::new("bob", MlsSuite::default()).unwrap();
        let kp = b.key_package().unwrap();
        let pc = alice.add_members(&[&kp]).unwrap();
        let welcome = pc.welcome().unwrap().to_vec();
        pc.confirm(&mut alice, now).unwrap();
        alice.activate_send_epoch();
        let bob = CallGroup::join(b, &welcome, member, now).unwrap();
        (alice, bob)
    }

    fn deliver(
        now: Instant,
        from: &mut Side,
        to: &mut Side,
        group: &mut CallGroup,
        join_epoch: u64,
    ) {
        for (kind, packets) in from.frames() {
            for p in packets {
                to.receive(now, group, join_epoch, ParticipantId(1), kind, p);
            }
        }
    }

    // covers: SDK-EPOCH-2, SDK-MEDIA-2
    #[test]
    fn frames_of_the_next_epoch_wait_for_its_commit_and_old_epochs_count_as_before_join() {
        let now = Instant::now();
        let (mut alice, mut bob) = pair(now);
        let mut tx = Side::new();
        let mut rx = Side::new();
        // Epoch 1: bob opens alice's audio and video (video spans many packets).
        let mut src = Sources::new(now);
        src.tick(now, &mut tx, &mut alice);
        deliver(now, &mut tx, &mut rx, &mut bob, 1);
        assert_eq!(rx.pipe.health_snapshot()[0].opened, 2);
        // Alice moves to epoch 2 and switches at once; bob has not seen the commit yet.
        let pc = alice.self_update().unwrap();
        let commit = pc.commit().to_vec();
        pc.confirm(&mut alice, now).unwrap();
        assert_eq!(alice.activate_send_epoch(), 2);
        let t1 = now + Duration::from_millis(40);
        src.tick(t1, &mut tx, &mut alice);
        deliver(t1, &mut tx, &mut rx, &mut bob, 1);
        let h = &rx.pipe.health_snapshot()[0];
        assert_eq!(
            (h.opened, h.dropped.len()),
            (2, 0),
            "held, not dropped: {h:?}"
        );
        assert!(rx.pipe.poll_timeout().is_some());
        // The commit arrives: the held frames open under epoch 2.
        bob.handle_message(t1, &commit).unwrap();
        rx.retry_held(t1, &mut bob, 1);
        let h = &rx.pipe.health_snapshot()[0];
        assert!(h.opened >= 4 && h.dropped.is_empty(), "{h:?}");
        assert!(rx.seen.0.lock().unwrap().iter().any(|o| o.0 == 2));

        // A frame of epoch 1 reaching a member that joined at epoch 2 is "before join".
        let mut late = Side::new();
        let (mut old_alice, _) = pair(now);
        let c = Client::new("carol", MlsSuite::default()).unwrap();
        let kp = c.key_package().unwrap();
        let pc = old_alice.add_members(&[&kp]).unwrap();
        let welcome = pc.welcome().unwrap().to_vec();
        pc.confirm(&mut old_alice, now).unwrap();
        assert_eq!((old_alice.epoch(), old_alice.send_epoch()), (2, 1));
        let mut carol = CallGroup::join(c, &welcome, MemberConfig::default(), now).unwrap();
        let mut old_tx = Side::new();
        Sources::new(now).tick(now, &mut old_tx, &mut old_alice);
        deliver(now, &mut old_tx, &mut late, &mut carol, 2);
        let h = &late.pipe.health_snapshot()[0];
        assert_eq!(h.opened, 0);
        assert_eq!(h.dropped.get(&DropCause::BeforeJoin), Some(&2), "{h:?}");

        // A held frame whose commit never comes is dropped and counted after the hold time.
        let pc = alice.self_update().unwrap();
        pc.confirm(&mut alice, t1).unwrap();
        alice.activate_send_epoch();
        let t2 = t1 + Duration::from_millis(40);
        src.tick(t2, &mut tx, &mut alice);
        deliver(t2, &mut tx, &mut rx, &mut bob, 1);
        rx.pipe.handle_timeout(t2 + Duration::from_secs(3));
        let h = &rx.pipe.health_snapshot()[0];
        assert!(
            h.dropped
                .get(&DropCause::FutureEpochExpired)
                .is_some_and(|n| *n >= 2),
            "{h:?}"
        );
    }

    // covers: SDK-MEDIA-2
    #[test]
    fn incomplete_and_tampered_frames_are_counted_never_opened() {
        let now = Instant::now();
        let (mut alice, mut bob) = pair(now);
        let mut tx = Side::new();
        let mut rx = Side::new();
        Sources::new(now).tick(now, &mut tx, &mut alice);
        let sent = tx.frames();
        let (video_kind, mut video) = sent
            .iter()
            .find(|(k, _)| *k == MediaKind::Video)
            .cloned()
            .unwrap();
        assert!(video.len() > 2);
        // Lose one packet of the keyframe: the frame never completes.
        video.remove(1);
        for p in video {
            rx.receive(now, &mut bob, 1, ParticipantId(1), video_kind, p);
        }
        rx.pipe.handle_timeout(now + Duration::from_secs(1));
        // Flip a ciphertext byte of the audio frame: it fails authentication.
        let (audio_kind, mut audio) = sent
            .iter()
            .find(|(k, _)| *k == MediaKind::Audio)
            .cloned()
            .unwrap();
        let last = audio[0].payload.len() - 1;
        audio[0].payload[last] ^= 1;
        rx.receive(
            now,
            &mut bob,
            1,
            ParticipantId(1),
            audio_kind,
            audio[0].clone(),
        );
        // Garbage payload: a malformed packet.
        let mut junk = audio[0].clone();
        junk.payload = vec![0xff];
        junk.sequence_number = junk.sequence_number.wrapping_add(100);
        rx.receive(now, &mut bob, 1, ParticipantId(1), audio_kind, junk);
        let h = &rx.pipe.health_snapshot()[0];
        assert_eq!(h.opened, 0);
        assert_eq!(h.dropped.get(&DropCause::Incomplete), Some(&1), "{h:?}");
        assert_eq!(
            h.dropped.get(&DropCause::Frame(FrameReason::TagMismatch)),
            Some(&1),
            "{h:?}"
        );
        assert_eq!(
            h.dropped.get(&DropCause::MalformedPacket),
            Some(&1),
            "{h:?}"
        );
    }

    // covers: SDK-MEDIA-2, SDK-MEDIA-4
    #[test]
    fn under_loss_reordering_and_duplication_every_complete_frame_opens_and_replays_fail() {
        let start = Instant::now();
        let (mut alice, mut bob) = pair(start);
        let mut tx = Side::new();
        let mut rx = Side::new();
        let mut rng = blindcall_media::SeededRng::new(0x1055);
        let mut src = Sources::new(start);
        let (mut complete, mut partial, mut replays) = (0u64, 0u64, 0u64);
        let mut history: Vec<(MediaKind, Vec<RtpPacket>)> = Vec::new();
        let mut replay_seq = [0u16, 0u16];
        for step in 0..150u32 {
            let now = start + Duration::from_millis(20) * step;
            src.tick(now, &mut tx, &mut alice);
            let mut batch: Vec<(ParticipantId, MediaKind, RtpPacket)> = Vec::new();
            for (kind, packets) in tx.frames() {
                history.push((kind, packets.clone()));
                let before = batch.len();
                let mut lost = 0;
                for p in &packets {
                    if rng.chance(5) {
                        lost += 1;
                        continue;
                    }
                    batch.push((ParticipantId(1), kind, p.clone()));
                    if rng.chance(5) {
                        batch.push((ParticipantId(1), kind, p.clone()));
                    }
                }
                match lost {
                    0 => complete += 1,
                    l if l < packets.len() => partial += 1,
                    _ => {}
                }
                // Reorder: swap neighbours within this frame's packets.
                for i in before + 1..batch.len() {
                    if rng.chance(5) {
                        batch.swap(i - 1, i);
                    }
                }
            }
            // Now and then a whole earlier frame comes back as fresh RTP (a replay attack).
            if step % 25 == 24 && history.len() > 3 {
                let (kind, packets) = history[history.len() - 3].clone();
                let slot = usize::from(kind == MediaKind::Video);
                for mut p in packets {
                    p.sequence_number = replay_seq[slot];
                    replay_seq[slot] = replay_seq[slot].wrapping_add(1);
                    // Replayed frames travel as their own RTP stream (another SSRC).
                    batch.push((ParticipantId(2), kind, p));
                }
                replays += 1;
            }
            for (from, kind, p) in batch {
                rx.receive(now, &mut bob, 1, from, kind, p);
            }
        }
        rx.pipe.handle_timeout(start + Duration::from_secs(10));
        let health = rx.pipe.health_snapshot();
        let main = &health[0];
        assert!(
            complete > 200 && partial > 5,
            "{complete} complete, {partial} partial"
        );
        let replayed = &health[1];
        // A replayed frame is refused whether or not its original got through (replay
        // window), or, when the original was lost, opens once; never twice.
        let refused = replayed
            .dropped
            .get(&DropCause::Frame(FrameReason::Replay))
            .copied()
            .unwrap_or(0);
        assert_eq!(refused + replayed.opened, replays, "{replayed:?}");
        assert_eq!(
            main.opened, complete,
            "every complete frame opens exactly once: {main:?}"
        );
        assert_eq!(
            main.dropped.get(&DropCause::Incomplete).copied(),
            Some(partial),
            "{main:?}"
        );
        assert!(
            main.dropped.keys().all(|c| *c == DropCause::Incomplete),
            "{main:?}"
        );
        // Every opened frame is the one sent (integrity check inside the pipeline), once.
        let log = rx.seen.0.lock().unwrap();
        let mut seen = std::collections::HashSet::new();
        for o in log.iter() {
            assert!(seen.insert((o.1, o.2)), "frame opened twice");
        }
    }
}
