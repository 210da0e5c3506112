//! The media pipeline of one participant: seal → packetize → transport on the way out;
//! transport → depacketize → open on the way in. Every incoming (participant, kind) flow is
//! its own stream with its own receive state and sender authentication (the group's
//! `open_on`); frames are delivered at once with their authentication state (play, then
//! verify). Frames sealed under an epoch whose commit has not arrived yet are held briefly
//! (bounded in frames and bytes) and opened once it does; every drop is counted per sender
//! with its cause. Sans-IO: packets and opened frames go to the core's output queue.
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
//! ([`IncomingFrame::data`]). The SFrame header is read by the group's `open_on` only; the
//! pipeline reads nothing of it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blindcall_group::media_auth::{AuthCounters, FrameAuth, StreamRef};
use blindcall_group::{CallGroup, FrameDropReason};
use blindcall_media::{
    Depacketizer, DepacketizerConfig, MediaKind, PacketizeError, Packetizer, PacketizerConfig,
    RtpPacket,
};
use blindcall_transport::ParticipantId;

use crate::core::{Output, Sink};
use crate::error::{FrameRejected, GroupFailure};
use crate::event::{DropCause, FrameReason, SenderAuth, SenderHealth};
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

pub(crate) fn kind_of(context: u64) -> Option<MediaKind> {
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

/// A frame delivered to the application after it authenticated under the call's keys. The
/// plaintext stays in the buffer it was received and opened in.
#[derive(Clone)]
pub struct IncomingFrame {
    /// Sender's identity, as its SFrame key names it ([`IncomingFrame::auth`] says how far
    /// that is proven).
    pub sender: Arc<str>,
    /// Audio or video.
    pub kind: MediaKind,
    /// Epoch whose key opened it.
    pub epoch: u64,
    auth: SenderAuth,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl IncomingFrame {
    /// A frame holding `data` (e.g. for an application's own tests), unauthenticated.
    pub fn new(sender: Arc<str>, kind: MediaKind, epoch: u64, data: Vec<u8>) -> Self {
        let end = data.len();
        Self {
            sender,
            kind,
            epoch,
            auth: SenderAuth::Unauthenticated,
            buf: data,
            start: 0,
            end,
        }
    }

    /// The same frame with sender authentication `auth`.
    pub fn with_auth(mut self, auth: SenderAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Whether the sender is proven: `Verified` (its signed manifest covers the frame),
    /// `Pending` (delivered before its manifest arrived; an impersonation would be reported
    /// by [`crate::Event::Impersonation`] within the signature bound) or `Unauthenticated`
    /// (the sender does not sign its media).
    pub fn auth(&self) -> SenderAuth {
        self.auth
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
            && self.auth == other.auth
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
            .field("auth", &self.auth)
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

/// Bounds on frames held for the next epoch's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HoldLimits {
    /// How long a frame is held.
    pub(crate) time: Duration,
    /// Most frames held at once.
    pub(crate) frames: usize,
    /// Most bytes held at once.
    pub(crate) bytes: usize,
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
    /// The group's id of the stream (its receive state and authentication), unique for the
    /// pipeline's life: a stream that ends and starts again is a new stream.
    id: u64,
    depacketizer: Depacketizer,
    /// Incomplete frames already counted.
    incomplete_seen: u64,
}

/// Everything about incoming frames except their reassembly.
struct Inbound {
    /// Per remote participant; `auth` holds the counters of its streams already closed.
    health: BTreeMap<u64, SenderHealth>,
    held: VecDeque<Held>,
    held_bytes: usize,
    hold: HoldLimits,
    health_changed: bool,
}

/// Per-participant media state (owned by the call's core; no locks).
pub(crate) struct MediaPipeline {
    outbound: Outbound,
    streams: HashMap<(ParticipantId, MediaKind), Stream>,
    next_stream: u64,
    inbound: Inbound,
    counters: Counters,
}

/// `into += from`, counter by counter.
fn add_counters(into: &mut AuthCounters, from: &AuthCounters) {
    into.verified += from.verified;
    into.pending += from.pending;
    into.unsigned += from.unsigned;
    into.forged += from.forged;
    into.no_signature += from.no_signature;
    into.wrong_participant += from.wrong_participant;
    into.foreign += from.foreign;
    into.blocked += from.blocked;
}

impl MediaPipeline {
    pub(crate) fn new(seed: u64, hold: HoldLimits) -> Self {
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
            next_stream: 0,
            inbound: Inbound {
                health: BTreeMap::new(),
                held: VecDeque::new(),
                held_bytes: 0,
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
        let next = &mut self.next_stream;
        let stream = self.streams.entry((from, kind)).or_insert_with(|| {
            let id = *next;
            *next += 1;
            Stream {
                id,
                depacketizer: Depacketizer::new(DepacketizerConfig::default()),
                incomplete_seen: 0,
            }
        });
        let stream_ref = StreamRef {
            id: stream.id,
            participant: from.0,
        };
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
            inbound.open(now, group, join_epoch, stream_ref, kind, f.data, &mut sink);
        }
    }

    /// `from`'s `kind` track ended (the transport may start it again): its reassembly starts
    /// afresh and frames of it still held for the next epoch are dropped and counted as
    /// expired. Its receive and authentication state stay: a restarted track is the same
    /// participant's same stream, so frames the relay replays across the restart are still
    /// refused as replays and its pin holds.
    pub(crate) fn end_track(&mut self, from: ParticipantId, kind: MediaKind) {
        let Some(stream) = self.streams.get_mut(&(from, kind)) else {
            return;
        };
        stream.depacketizer = Depacketizer::new(DepacketizerConfig::default());
        stream.incomplete_seen = 0;
        self.inbound.drop_held(from, kind);
    }

    /// `from`'s `kind` stream is over for good (its member left): its reassembly and the
    /// group's receive and authentication state go (their counters stay in the participant's
    /// health); frames of it still held for the next epoch are dropped and counted as
    /// expired.
    pub(crate) fn close_stream(
        &mut self,
        group: &mut CallGroup,
        from: ParticipantId,
        kind: MediaKind,
    ) {
        let Some(stream) = self.streams.remove(&(from, kind)) else {
            return;
        };
        let inbound = &mut self.inbound;
        if let Some(c) = group.media_verifier().stream_counters(stream.id) {
            add_counters(&mut inbound.health(from).auth, &c);
        }
        group.close_stream(stream.id);
        inbound.drop_held(from, kind);
    }

    /// Closes every stream the group pinned to one of `leaves` (members that left: their
    /// later frames are refused anyway, and frames of theirs still awaiting a manifest they
    /// can no longer send are not flagged).
    pub(crate) fn close_streams_pinned_to(&mut self, group: &mut CallGroup, leaves: &[u32]) {
        let pinned: Vec<(ParticipantId, MediaKind)> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                group
                    .media_verifier()
                    .stream_status(s.id)
                    .and_then(|st| st.pinned)
                    .is_some_and(|l| leaves.contains(&l))
            })
            .map(|(k, _)| *k)
            .collect();
        for (from, kind) in pinned {
            self.close_stream(group, from, kind);
        }
    }

    /// The media kind of the stream the group knows as `id`, if it is still open.
    pub(crate) fn kind_of_stream(&self, id: u64) -> Option<MediaKind> {
        self.streams
            .iter()
            .find(|(_, s)| s.id == id)
            .map(|((_, kind), _)| *kind)
    }

    /// Frames held for the next epoch's commit.
    pub(crate) fn held_frames(&self) -> usize {
        self.inbound.held.len()
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
        self.inbound.held_bytes = 0;
        for h in held {
            let Some(id) = self.streams.get(&(h.from, h.kind)).map(|s| s.id) else {
                self.inbound
                    .drop_frame(h.from, DropCause::FutureEpochExpired);
                continue;
            };
            let stream = StreamRef {
                id,
                participant: h.from.0,
            };
            self.inbound
                .open(now, group, join_epoch, stream, h.kind, h.data, &mut sink);
        }
    }

    /// Expires held frames and incomplete frames.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let inbound = &mut self.inbound;
        while inbound.held.front().is_some_and(|h| h.until <= now) {
            if let Some(h) = inbound.held.pop_front() {
                inbound.held_bytes = inbound.held_bytes.saturating_sub(h.data.len());
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
    pub(crate) fn take_health(&mut self, group: Option<&CallGroup>) -> Option<Vec<SenderHealth>> {
        if !std::mem::take(&mut self.inbound.health_changed) {
            return None;
        }
        Some(self.health_snapshot(group))
    }

    /// Per-sender health, with the group's authentication counters of the open streams.
    pub(crate) fn health_snapshot(&self, group: Option<&CallGroup>) -> Vec<SenderHealth> {
        let mut out: Vec<SenderHealth> = self.inbound.health.values().cloned().collect();
        let Some(group) = group else { return out };
        for ((from, _), s) in &self.streams {
            let Some(c) = group.media_verifier().stream_counters(s.id) else {
                continue;
            };
            if let Some(h) = out.iter_mut().find(|h| h.participant == from.0) {
                add_counters(&mut h.auth, &c);
            }
        }
        out
    }
}

impl Inbound {
    /// Drops (and counts as expired) the held frames of `from`'s `kind` stream.
    fn drop_held(&mut self, from: ParticipantId, kind: MediaKind) {
        let (gone, kept): (VecDeque<Held>, VecDeque<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.from == from && h.kind == kind);
        self.held = kept;
        for h in gone {
            self.held_bytes = self.held_bytes.saturating_sub(h.data.len());
            self.drop_frame(h.from, DropCause::FutureEpochExpired);
        }
    }

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

    /// Holds a frame of the next epoch until its commit, within the bounds: the oldest held
    /// frames make room (dropped and counted); a frame larger than the byte bound is dropped.
    fn hold(&mut self, now: Instant, from: ParticipantId, kind: MediaKind, data: Vec<u8>) {
        let limits = self.hold;
        if limits.frames == 0 || data.len() > limits.bytes {
            self.drop_frame(from, DropCause::HeldOverflow);
            return;
        }
        while self.held.len() >= limits.frames
            || self.held_bytes.saturating_add(data.len()) > limits.bytes
        {
            let Some(old) = self.held.pop_front() else {
                break;
            };
            self.held_bytes = self.held_bytes.saturating_sub(old.data.len());
            self.drop_frame(old.from, DropCause::HeldOverflow);
        }
        self.held_bytes += data.len();
        self.held.push_back(Held {
            until: crate::core::after(now, limits.time),
            from,
            kind,
            data,
        });
    }

    /// Opens one reassembled frame of `stream` in place and delivers it in its own buffer with
    /// its authentication state; holds it if its epoch is the next one; counts it otherwise.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        now: Instant,
        group: &mut CallGroup,
        join_epoch: u64,
        stream: StreamRef,
        kind: MediaKind,
        mut data: Vec<u8>,
        sink: &mut Sink<'_>,
    ) {
        let from = ParticipantId(stream.participant);
        let base = data.as_ptr() as usize;
        let opened = match group.open_on(now, stream, b"", &mut data) {
            Ok(o) => {
                let kind = kind_of(o.context).unwrap_or(kind);
                let auth = match o.auth {
                    Some(FrameAuth::Verified) => SenderAuth::Verified,
                    Some(FrameAuth::Pending) => SenderAuth::Pending,
                    _ => SenderAuth::Unauthenticated,
                };
                if let Some(obs) = sink.observer {
                    obs.frame_opened(&FrameOpened {
                        participant: from.0,
                        sender: &o.identity,
                        kind,
                        epoch: o.epoch,
                        counter: o.counter.0,
                        plaintext: o.plaintext,
                        at: now,
                        auth,
                    });
                }
                // Where the plaintext lies inside `data` (opened in place).
                let start = (o.plaintext.as_ptr() as usize).saturating_sub(base);
                Ok((
                    o.identity,
                    kind,
                    o.epoch,
                    auth,
                    start,
                    start + o.plaintext.len(),
                ))
            }
            Err(e) => Err(e),
        };
        match opened {
            Ok((identity, kind, epoch, auth, start, end)) => {
                let h = self.health(from);
                h.opened += 1;
                match auth {
                    SenderAuth::Verified => h.delivered_verified += 1,
                    SenderAuth::Pending => h.delivered_pending += 1,
                    SenderAuth::Unauthenticated => h.delivered_unauthenticated += 1,
                }
                if h.identity.as_deref() != Some(&*identity) {
                    h.identity = Some(Arc::clone(&identity));
                }
                let end = end.min(data.len());
                sink.out.push_back(Output::Frame(IncomingFrame {
                    sender: identity,
                    kind,
                    epoch,
                    auth,
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
                    self.hold(now, from, kind, data);
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
mod tests;
