//! The media pipeline of one participant: seal → packetize → transport on the way out;
//! transport → depacketize → open on the way in. Frames sealed under an epoch whose commit
//! has not arrived yet are held briefly and opened once it does; every drop is counted per
//! sender with its cause. Sans-IO: packets and opened frames go to the core's output queue.
//!
//! # Copies
//!
//! A frame is copied only where the transport forces it. Out: it is sealed from the
//! application's buffer straight into one reused buffer (the encryption pass), which the
//! packetizer copies into the packets' own payloads (the transport takes one owned buffer per
//! packet). In: the depacketizer takes each packet's buffer as the transport delivered it and
//! joins the packets of a multi-packet frame into one buffer (a frame spread over separate
//! packet buffers must be made contiguous to be authenticated); the frame is then opened in
//! place, and the plaintext is handed to the application inside that same buffer
//! ([`IncomingFrame::data`]). The SFrame header is read by the group's `open` only; the
//! pipeline reads nothing of it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blindcall_group::{CallGroup, FrameDropReason};
use blindcall_media::{
    Depacketizer, DepacketizerConfig, MediaKind, PacketizeError, Packetizer, PacketizerConfig,
    RtpPacket,
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

/// A frame delivered to the application after it authenticated. The plaintext stays in the
/// buffer it was received and opened in.
#[derive(Clone)]
pub struct IncomingFrame {
    /// Sender's identity (authenticated by its SFrame key).
    pub sender: Arc<str>,
    /// Audio or video.
    pub kind: MediaKind,
    /// Epoch whose key opened it.
    pub epoch: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl IncomingFrame {
    /// A frame holding `data` (e.g. for an application's own tests).
    pub fn new(sender: Arc<str>, kind: MediaKind, epoch: u64, data: Vec<u8>) -> Self {
        let end = data.len();
        Self {
            sender,
            kind,
            epoch,
            buf: data,
            start: 0,
            end,
        }
    }

    /// The decrypted frame.
    pub fn data(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// The decrypted frame as its own vector (moves it to the front of its buffer; no
    /// allocation).
    pub fn into_data(self) -> Vec<u8> {
        let mut buf = self.buf;
        buf.truncate(self.end);
        buf.drain(..self.start.min(self.end));
        buf
    }
}

impl PartialEq for IncomingFrame {
    fn eq(&self, other: &Self) -> bool {
        self.sender == other.sender
            && self.kind == other.kind
            && self.epoch == other.epoch
            && self.data() == other.data()
    }
}

impl Eq for IncomingFrame {}

impl std::fmt::Debug for IncomingFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingFrame")
            .field("sender", &self.sender)
            .field("kind", &self.kind)
            .field("epoch", &self.epoch)
            .field("len", &self.data().len())
            .finish()
    }
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

/// Own streams: packetizers, RTP timestamps, and the buffers reused for every frame.
struct Outbound {
    packetizers: [Packetizer; 2],
    max_packets: usize,
    timestamps: [u32; 2],
    /// Sealed frames are written here; it grows to the largest frame sent and stays.
    sealed: Vec<u8>,
    /// The packets of the frame being sent, before they move to the output queue.
    packets: Vec<RtpPacket>,
}

/// One incoming stream (a remote participant's audio or video).
struct Stream {
    depacketizer: Depacketizer,
    /// Incomplete frames already counted.
    incomplete_seen: u64,
}

/// Everything about incoming frames except their reassembly.
struct Inbound {
    health: BTreeMap<u64, SenderHealth>,
    held: VecDeque<Held>,
    hold: Duration,
    health_changed: bool,
}

/// Per-participant media state (owned by the call's core; no locks).
pub(crate) struct MediaPipeline {
    outbound: Outbound,
    streams: HashMap<(ParticipantId, MediaKind), Stream>,
    inbound: Inbound,
    counters: Counters,
}

impl MediaPipeline {
    pub(crate) fn new(seed: u64, hold: Duration) -> Self {
        let config = PacketizerConfig::default();
        Self {
            outbound: Outbound {
                packetizers: [
                    Packetizer::new(PacketizerConfig {
                        initial_sequence: (seed & 0xffff) as u16,
                        ..config
                    }),
                    Packetizer::new(PacketizerConfig {
                        initial_sequence: ((seed >> 16) & 0xffff) as u16,
                        ..config
                    }),
                ],
                max_packets: config.max_packets_per_frame,
                timestamps: [(seed >> 20) as u32, (seed >> 24) as u32],
                sealed: Vec::new(),
                packets: Vec::new(),
            },
            streams: HashMap::new(),
            inbound: Inbound {
                health: BTreeMap::new(),
                held: VecDeque::new(),
                hold,
                health_changed: false,
            },
            counters: Counters::default(),
        }
    }

    /// Frames and packets so far.
    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    /// Seals `plaintext` with the group's sender for `kind` into the reused buffer, packetizes
    /// it and queues the packets for the transport. A frame that cannot be carried is refused
    /// before it is sealed (no counter is used up).
    pub(crate) fn publish(
        &mut self,
        now: Instant,
        group: &mut CallGroup,
        kind: MediaKind,
        plaintext: &[u8],
        sink: Sink<'_>,
    ) -> Result<(), FrameRejected> {
        let epoch = group.send_epoch();
        let len = group
            .sealed_len(context_of(kind), plaintext.len())
            .map_err(|e| FrameRejected::SendKey(GroupFailure::from(&e)))?;
        let out = &mut self.outbound;
        let i = slot(kind);
        let packets = out.packetizers[i].packet_count(len);
        if packets > out.max_packets {
            return Err(FrameRejected::Packetize(PacketizeError::FrameTooLarge {
                len,
                packets,
                max: out.max_packets,
            }));
        }
        let sealed = group
            .seal_into(now, context_of(kind), b"", plaintext, &mut out.sealed)
            .map_err(|e| match e {
                blindcall_group::Error::Seal(s) => FrameRejected::Seal(s),
                e => FrameRejected::SendKey(GroupFailure::from(&e)),
            })?;
        let (counter, n) = (sealed.ctr.0, sealed.len);
        let frame = out.sealed.get(..n).unwrap_or_default();
        let timestamp = out.timestamps[i].wrapping_add(kind.timestamp_step());
        out.packets.clear();
        out.packetizers[i]
            .packetize(timestamp, frame, &mut out.packets)
            .map_err(FrameRejected::Packetize)?;
        out.timestamps[i] = timestamp;
        self.counters.packets_sent += out.packets.len() as u64;
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
            out.packets
                .drain(..)
                .map(|packet| Output::Transmit { kind, packet }),
        );
        Ok(())
    }

    /// The relay participant ids whose streams authenticated as one of `identities`, in
    /// ascending order.
    pub(crate) fn participants_of(&self, identities: &[String]) -> Vec<u64> {
        self.inbound
            .health
            .iter()
            .filter(|(_, h)| {
                h.identity
                    .as_deref()
                    .is_some_and(|i| identities.iter().any(|n| n == i))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// One RTP packet of `from`'s `kind` stream: reassembled, and every frame it completes
    /// opened.
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
        let inbound = &mut self.inbound;
        inbound.health(from).packets += 1;
        let stream = self.streams.entry((from, kind)).or_insert_with(|| Stream {
            depacketizer: Depacketizer::new(DepacketizerConfig::default()),
            incomplete_seen: 0,
        });
        let d = &mut stream.depacketizer;
        let malformed = d
            .handle_packet_owned(
                now,
                packet.sequence_number,
                packet.timestamp,
                packet.payload,
            )
            .is_err();
        let incomplete = d.stats().frames_incomplete;
        let new_incomplete = incomplete.saturating_sub(stream.incomplete_seen);
        stream.incomplete_seen = incomplete;
        if malformed {
            inbound.drop_frame(from, DropCause::MalformedPacket);
        }
        for _ in 0..new_incomplete {
            inbound.drop_frame(from, DropCause::Incomplete);
        }
        while let Some(f) = d.poll_frame() {
            inbound.open(now, group, join_epoch, from, kind, f.data, &mut sink);
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
        let held = std::mem::take(&mut self.inbound.held);
        for h in held {
            self.inbound
                .open(now, group, join_epoch, h.from, h.kind, h.data, &mut sink);
        }
    }

    /// Expires held frames and incomplete frames.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let inbound = &mut self.inbound;
        while inbound.held.front().is_some_and(|h| h.until <= now) {
            if let Some(h) = inbound.held.pop_front() {
                inbound.drop_frame(h.from, DropCause::FutureEpochExpired);
            }
        }
        for ((from, _), stream) in &mut self.streams {
            let d = &mut stream.depacketizer;
            if d.poll_timeout().is_some_and(|t| t <= now) {
                d.handle_timeout(now);
                let n = d.stats().frames_incomplete;
                for _ in stream.incomplete_seen..n {
                    inbound.drop_frame(*from, DropCause::Incomplete);
                }
                stream.incomplete_seen = stream.incomplete_seen.max(n);
            }
        }
    }

    /// The next time something is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let held = self.inbound.held.front().map(|h| h.until);
        let depack = self
            .streams
            .values()
            .filter_map(|s| s.depacketizer.poll_timeout())
            .min();
        [held, depack].into_iter().flatten().min()
    }

    /// Per-sender health, and whether it changed since the last call.
    pub(crate) fn take_health(&mut self) -> Option<Vec<SenderHealth>> {
        if !std::mem::take(&mut self.inbound.health_changed) {
            return None;
        }
        Some(self.health_snapshot())
    }

    /// Per-sender health.
    pub(crate) fn health_snapshot(&self) -> Vec<SenderHealth> {
        self.inbound.health.values().cloned().collect()
    }
}

impl Inbound {
    fn health(&mut self, from: ParticipantId) -> &mut SenderHealth {
        self.health_changed = true;
        self.health.entry(from.0).or_insert_with(|| SenderHealth {
            participant: from.0,
            ..SenderHealth::default()
        })
    }

    fn drop_frame(&mut self, from: ParticipantId, cause: DropCause) {
        *self.health(from).dropped.entry(cause).or_insert(0) += 1;
    }

    /// Opens one reassembled frame in place and delivers it in its own buffer; holds it if its
    /// epoch is the next one; counts it otherwise.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        now: Instant,
        group: &mut CallGroup,
        join_epoch: u64,
        from: ParticipantId,
        kind: MediaKind,
        mut data: Vec<u8>,
        sink: &mut Sink<'_>,
    ) {
        let base = data.as_ptr() as usize;
        let opened = match group.open(b"", &mut data) {
            Ok(o) => {
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
                // Where the plaintext lies inside `data` (opened in place).
                let start = (o.plaintext.as_ptr() as usize).saturating_sub(base);
                Ok((o.identity, kind, o.epoch, start, start + o.plaintext.len()))
            }
            Err(e) => Err(e),
        };
        match opened {
            Ok((identity, kind, epoch, start, end)) => {
                let h = self.health(from);
                h.opened += 1;
                if h.identity.as_deref() != Some(&*identity) {
                    h.identity = Some(Arc::clone(&identity));
                }
                let end = end.min(data.len());
                sink.out.push_back(Output::Frame(IncomingFrame {
                    sender: identity,
                    kind,
                    epoch,
                    buf: data,
                    start: start.min(end),
                    end,
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
