//! Reassembles SFrame ciphertexts from RTP payloads under loss, reordering and duplication.
//!
//! A frame is released only when its start packet, its end packet and every packet between
//! them (consecutive sequence numbers, one RTP timestamp) have arrived. Frames that cannot
//! complete within [`DepacketizerConfig::max_wait`] of their first packet's arrival, or that
//! are pushed out by the buffer limit, are dropped and counted; they never reach `open`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::descriptor::Descriptor;
use crate::error::DepacketizeError;
use crate::seq::SeqExtender;

/// Depacketizer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepacketizerConfig {
    /// How long the packets of an incomplete frame wait for the rest.
    pub max_wait: Duration,
    /// Most packets held while waiting; beyond it the oldest incomplete frame is dropped.
    pub max_buffered_packets: usize,
    /// How many sequence numbers back duplicates are still recognised.
    pub history: u64,
}

impl Default for DepacketizerConfig {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(500),
            max_buffered_packets: 8_192,
            history: 8_192,
        }
    }
}

/// A reassembled SFrame ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// RTP timestamp of the frame.
    pub timestamp: u32,
    /// Sequence number of its first packet.
    pub first_sequence: u16,
    /// Number of packets it arrived in.
    pub packets: usize,
    /// The SFrame ciphertext.
    pub data: Vec<u8>,
}

/// Counters of what the depacketizer saw and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepacketizerStats {
    /// Packets pushed.
    pub packets: u64,
    /// Packets rejected as malformed.
    pub malformed: u64,
    /// Packets already held or already used in a frame.
    pub duplicates: u64,
    /// Packets too old to be placed, or belonging to a frame already dropped.
    pub late: u64,
    /// Frames released complete.
    pub frames: u64,
    /// Frames dropped incomplete (timeout or buffer limit).
    pub frames_incomplete: u64,
}

#[derive(Debug)]
struct Slot {
    descriptor: Descriptor,
    timestamp: u32,
    arrived: Instant,
    /// The whole RTP payload as received, descriptor included.
    payload: Vec<u8>,
}

impl Slot {
    /// The SFrame bytes the packet carries.
    fn data(&self) -> &[u8] {
        self.payload.get(Descriptor::LEN..).unwrap_or_default()
    }
}

/// Reassembles the frames of one RTP stream.
#[derive(Debug)]
pub struct Depacketizer {
    config: DepacketizerConfig,
    seq: SeqExtender,
    now: Option<Instant>,
    buffered: BTreeMap<u64, Slot>,
    done: BTreeSet<u64>,
    dropped_timestamps: VecDeque<u32>,
    ready: VecDeque<Frame>,
    stats: DepacketizerStats,
}

/// How many dropped frames' timestamps are remembered to discard their stragglers.
const DROPPED_MEMORY: usize = 64;

impl Depacketizer {
    /// A depacketizer for one RTP stream.
    pub fn new(config: DepacketizerConfig) -> Self {
        Self {
            config,
            seq: SeqExtender::new(),
            now: None,
            buffered: BTreeMap::new(),
            done: BTreeSet::new(),
            dropped_timestamps: VecDeque::new(),
            ready: VecDeque::new(),
            stats: DepacketizerStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> DepacketizerStats {
        self.stats
    }

    /// Packets currently waiting for the rest of their frame.
    pub fn buffered_packets(&self) -> usize {
        self.buffered.len()
    }

    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.now.map_or(now, |prev| prev.max(now));
        self.now = Some(now);
        now
    }

    /// Takes one received RTP packet of this stream. A malformed payload is rejected with an
    /// error (and counted); duplicates and late packets are counted and ignored.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        sequence_number: u16,
        timestamp: u32,
        payload: &[u8],
    ) -> Result<(), DepacketizeError> {
        let descriptor = self.check(payload)?;
        self.insert(
            now,
            sequence_number,
            timestamp,
            descriptor,
            payload.to_vec(),
        );
        Ok(())
    }

    /// [`Depacketizer::handle_packet`] with the payload buffer as the transport delivered it:
    /// the buffer is kept, not copied; a frame of one packet is released in it, and the packets
    /// of a longer frame are copied once, into the frame.
    pub fn handle_packet_owned(
        &mut self,
        now: Instant,
        sequence_number: u16,
        timestamp: u32,
        payload: Vec<u8>,
    ) -> Result<(), DepacketizeError> {
        let descriptor = self.check(&payload)?;
        self.insert(now, sequence_number, timestamp, descriptor, payload);
        Ok(())
    }

    /// Counts the packet and reads its descriptor (a malformed one is counted and refused).
    fn check(&mut self, payload: &[u8]) -> Result<Descriptor, DepacketizeError> {
        self.stats.packets += 1;
        match Descriptor::split(payload) {
            Ok((descriptor, _)) => Ok(descriptor),
            Err(e) => {
                self.stats.malformed += 1;
                Err(e)
            }
        }
    }

    fn insert(
        &mut self,
        now: Instant,
        sequence_number: u16,
        timestamp: u32,
        descriptor: Descriptor,
        payload: Vec<u8>,
    ) {
        let now = self.advance(now);
        let ext = self.seq.extend(sequence_number);
        let highest = self.seq.highest().unwrap_or(ext);
        if ext.saturating_add(self.config.history) < highest
            || self.dropped_timestamps.contains(&timestamp)
        {
            self.stats.late += 1;
            return;
        }
        if self.done.contains(&ext) || self.buffered.contains_key(&ext) {
            self.stats.duplicates += 1;
            return;
        }
        self.buffered.insert(
            ext,
            Slot {
                descriptor,
                timestamp,
                arrived: now,
                payload,
            },
        );
        self.try_assemble(ext);
        let floor = highest.saturating_sub(self.config.history);
        while self.done.first().is_some_and(|k| *k < floor) {
            self.done.pop_first();
        }
        while self.buffered.len() > self.config.max_buffered_packets {
            let Some((&oldest, _)) = self.buffered.first_key_value() else {
                break;
            };
            self.drop_frame_at(oldest);
        }
    }

    /// Drops incomplete frames that waited longer than `max_wait`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        loop {
            let expired = self
                .buffered
                .iter()
                .find(|(_, s)| s.arrived + self.config.max_wait <= now)
                .map(|(k, _)| *k);
            match expired {
                Some(k) => self.drop_frame_at(k),
                None => break,
            }
        }
    }

    /// When [`Self::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.buffered
            .values()
            .map(|s| s.arrived + self.config.max_wait)
            .min()
    }

    /// The next complete frame, in the order frames completed.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        self.ready.pop_front()
    }

    /// Releases the frame containing `ext` if all its packets are present.
    fn try_assemble(&mut self, ext: u64) {
        let Some(timestamp) = self.buffered.get(&ext).map(|s| s.timestamp) else {
            return;
        };
        // Walk back to the start packet.
        let mut start = ext;
        loop {
            match self.buffered.get(&start) {
                Some(s) if s.timestamp == timestamp && s.descriptor.start => break,
                Some(s) if s.timestamp == timestamp && start > 0 => start -= 1,
                _ => return,
            }
        }
        // Walk forward to the end packet.
        let mut end = start;
        loop {
            match self.buffered.get(&end) {
                Some(s) if s.timestamp != timestamp => return,
                Some(s) if s.descriptor.start && end != start => return,
                Some(s) if s.descriptor.end => break,
                Some(_) => end += 1,
                None => return,
            }
        }
        let data = if start == end {
            // One packet: the frame is released in the packet's own buffer.
            self.done.insert(start);
            let mut payload = self
                .buffered
                .remove(&start)
                .map(|slot| slot.payload)
                .unwrap_or_default();
            payload.drain(..Descriptor::LEN.min(payload.len()));
            payload
        } else {
            // Several packets: one buffer of the frame's size, each packet copied in once.
            let len = (start..=end)
                .filter_map(|k| self.buffered.get(&k))
                .map(|slot| slot.data().len())
                .sum();
            let mut data = Vec::with_capacity(len);
            for k in start..=end {
                if let Some(slot) = self.buffered.remove(&k) {
                    data.extend_from_slice(slot.data());
                }
                self.done.insert(k);
            }
            data
        };
        let packets = usize::try_from(end - start).map_or(usize::MAX, |n| n + 1);
        self.stats.frames += 1;
        self.ready.push_back(Frame {
            timestamp,
            first_sequence: (start & 0xffff) as u16,
            packets,
            data,
        });
    }

    /// Drops the incomplete frame that the packet at `ext` belongs to (the contiguous run of
    /// buffered packets with its timestamp), counting it once.
    fn drop_frame_at(&mut self, ext: u64) {
        let Some(timestamp) = self.buffered.get(&ext).map(|s| s.timestamp) else {
            return;
        };
        let keys: Vec<u64> = self
            .buffered
            .iter()
            .filter(|(_, s)| s.timestamp == timestamp)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.buffered.remove(&k);
            self.done.insert(k);
        }
        self.stats.frames_incomplete += 1;
        if self.dropped_timestamps.len() == DROPPED_MEMORY {
            self.dropped_timestamps.pop_front();
        }
        self.dropped_timestamps.push_back(timestamp);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::packetizer::{Packetizer, PacketizerConfig, RtpPacket};

    fn packets(frames: &[(u32, usize)]) -> Vec<Vec<RtpPacket>> {
        let mut p = Packetizer::new(PacketizerConfig {
            max_payload: 50,
            initial_sequence: 65_500,
            ..PacketizerConfig::default()
        });
        frames
            .iter()
            .map(|&(ts, len)| {
                let frame: Vec<u8> = (0..len).map(|i| (i as u32 ^ ts) as u8).collect();
                let mut out = Vec::new();
                p.packetize(ts, &frame, &mut out).unwrap();
                out
            })
            .collect()
    }

    fn push(d: &mut Depacketizer, now: Instant, p: &RtpPacket) {
        d.handle_packet(now, p.sequence_number, p.timestamp, &p.payload)
            .unwrap();
    }

    fn frame_bytes(ts: u32, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u32 ^ ts) as u8).collect()
    }

    // covers: MT-PKT-4
    #[test]
    fn reordered_frames_across_the_sequence_wrap_reassemble() {
        let t0 = Instant::now();
        let mut d = Depacketizer::new(DepacketizerConfig::default());
        let frames = packets(&[(10, 300), (20, 49), (30, 1_000)]);
        let mut all: Vec<&RtpPacket> = frames.iter().flatten().collect();
        all.reverse();
        for p in all {
            push(&mut d, t0, p);
        }
        let mut got: Vec<Frame> = std::iter::from_fn(|| d.poll_frame()).collect();
        got.sort_by_key(|f| f.timestamp);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].data, frame_bytes(10, 300));
        assert_eq!(got[1].data, frame_bytes(20, 49));
        assert_eq!(got[2].data, frame_bytes(30, 1_000));
        assert_eq!(d.buffered_packets(), 0);
    }

    // covers: MT-PKT-4, MT-PKT-5
    #[test]
    fn a_frame_missing_a_packet_is_dropped_after_max_wait_and_never_released() {
        let t0 = Instant::now();
        let cfg = DepacketizerConfig::default();
        let mut d = Depacketizer::new(cfg);
        let frames = packets(&[(10, 300), (20, 300)]);
        for (i, p) in frames[0].iter().enumerate() {
            if i != 2 {
                push(&mut d, t0, p);
            }
        }
        for p in &frames[1] {
            push(&mut d, t0, p);
        }
        assert_eq!(d.poll_frame().map(|f| f.timestamp), Some(20));
        assert_eq!(d.poll_frame(), None);
        assert_eq!(d.poll_timeout(), Some(t0 + cfg.max_wait));
        d.handle_timeout(t0 + cfg.max_wait - Duration::from_millis(1));
        assert_eq!(d.stats().frames_incomplete, 0);
        d.handle_timeout(t0 + cfg.max_wait);
        assert_eq!(d.stats().frames_incomplete, 1);
        assert_eq!(d.buffered_packets(), 0);
        assert_eq!(d.poll_timeout(), None);
        // The lost packet arriving late does not resurrect the frame.
        push(&mut d, t0 + cfg.max_wait, &frames[0][2]);
        assert_eq!(d.poll_frame(), None);
        assert_eq!(d.stats().late, 1);
        assert_eq!(d.buffered_packets(), 0);
    }

    // covers: MT-PKT-4
    #[test]
    fn duplicates_are_counted_and_do_not_produce_a_second_frame() {
        let t0 = Instant::now();
        let mut d = Depacketizer::new(DepacketizerConfig::default());
        let frames = packets(&[(10, 120)]);
        for p in frames[0].iter().chain(frames[0].iter()) {
            push(&mut d, t0, p);
        }
        assert!(d.poll_frame().is_some());
        assert_eq!(d.poll_frame(), None);
        assert_eq!(d.stats().duplicates, frames[0].len() as u64);
    }

    // covers: MT-PKT-5
    #[test]
    fn the_buffer_limit_drops_the_oldest_incomplete_frame() {
        let t0 = Instant::now();
        let mut d = Depacketizer::new(DepacketizerConfig {
            max_buffered_packets: 4,
            ..DepacketizerConfig::default()
        });
        let frames = packets(&[(10, 200), (20, 200)]); // 5 packets each at 49 B
        for p in &frames[0][..4] {
            push(&mut d, t0, p);
        }
        push(&mut d, t0, &frames[1][0]);
        assert_eq!(d.stats().frames_incomplete, 1);
        assert_eq!(d.buffered_packets(), 1);
    }

    #[test]
    fn malformed_payloads_are_rejected_and_counted() {
        let t0 = Instant::now();
        let mut d = Depacketizer::new(DepacketizerConfig::default());
        assert!(d.handle_packet(t0, 1, 1, &[]).is_err());
        assert!(d.handle_packet(t0, 2, 1, &[0x80]).is_err());
        assert!(d.handle_packet(t0, 3, 1, &[0x81, 1]).is_err());
        assert_eq!(d.stats().malformed, 3);
        assert_eq!(d.buffered_packets(), 0);
    }

    // covers: MT-PKT-4
    #[test]
    fn owned_packets_reassemble_like_borrowed_ones_across_duplicates_and_reordering() {
        let t0 = Instant::now();
        let mut borrowed = Depacketizer::new(DepacketizerConfig::default());
        let mut owned = Depacketizer::new(DepacketizerConfig::default());
        let frames = packets(&[(10, 30), (20, 300), (30, 1), (40, 1_000)]);
        let mut all: Vec<&RtpPacket> = frames.iter().flatten().collect();
        // Reverse the second frame's packets and send one packet twice.
        all[1..7].reverse();
        all.push(all[3]);
        for p in &all {
            push(&mut borrowed, t0, p);
            owned
                .handle_packet_owned(t0, p.sequence_number, p.timestamp, p.payload.clone())
                .unwrap();
        }
        let a: Vec<Frame> = std::iter::from_fn(|| borrowed.poll_frame()).collect();
        let b: Vec<Frame> = std::iter::from_fn(|| owned.poll_frame()).collect();
        assert_eq!(a.len(), 4);
        assert_eq!(a, b);
        assert_eq!(b[0].data, frame_bytes(10, 30));
        assert_eq!(b[3].data, frame_bytes(40, 1_000));
        assert_eq!(borrowed.stats(), owned.stats());
        assert!(owned.handle_packet_owned(t0, 999, 1, vec![0x80]).is_err());
        assert_eq!(owned.stats().malformed, 1);
    }
}
