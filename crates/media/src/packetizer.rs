//! Splits SFrame ciphertexts into RTP payloads.

use crate::descriptor::Descriptor;
use crate::error::PacketizeError;

/// The RTP fields the media layer decides for one packet. SSRC, payload type and header
/// extensions belong to the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    /// RTP sequence number.
    pub sequence_number: u16,
    /// RTP timestamp of the frame (the same on every packet of a frame).
    pub timestamp: u32,
    /// RTP marker bit: set on the last packet of a frame.
    pub marker: bool,
    /// Descriptor byte followed by a slice of the SFrame ciphertext.
    pub payload: Vec<u8>,
}

/// Packetizer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketizerConfig {
    /// Largest RTP payload to emit, descriptor included (MTU minus IP/UDP/SRTP/RTP overhead).
    pub max_payload: usize,
    /// Largest number of packets one frame may take.
    pub max_packets_per_frame: usize,
    /// Sequence number of the first packet.
    pub initial_sequence: u16,
}

impl Default for PacketizerConfig {
    fn default() -> Self {
        Self {
            max_payload: 1_200,
            max_packets_per_frame: 4_096,
            initial_sequence: 0,
        }
    }
}

/// Turns whole SFrame ciphertexts into RTP packets of one stream.
#[derive(Debug, Clone)]
pub struct Packetizer {
    config: PacketizerConfig,
    next_sequence: u16,
}

impl Packetizer {
    /// A packetizer for one RTP stream.
    pub fn new(config: PacketizerConfig) -> Self {
        let config = PacketizerConfig {
            max_payload: config.max_payload.max(Descriptor::LEN + 1),
            ..config
        };
        Self {
            next_sequence: config.initial_sequence,
            config,
        }
    }

    /// The sequence number the next packet will carry.
    pub fn next_sequence(&self) -> u16 {
        self.next_sequence
    }

    /// Number of packets `frame_len` bytes take.
    pub fn packet_count(&self, frame_len: usize) -> usize {
        frame_len.div_ceil(self.config.max_payload - Descriptor::LEN)
    }

    /// Appends the packets of one sealed frame to `out`, sizes balanced so that no packet is
    /// much smaller than the others; returns how many were appended.
    pub fn packetize(
        &mut self,
        timestamp: u32,
        frame: &[u8],
        out: &mut Vec<RtpPacket>,
    ) -> Result<usize, PacketizeError> {
        if frame.is_empty() {
            return Err(PacketizeError::EmptyFrame);
        }
        let packets = self.packet_count(frame.len());
        if packets > self.config.max_packets_per_frame {
            return Err(PacketizeError::FrameTooLarge {
                len: frame.len(),
                packets,
                max: self.config.max_packets_per_frame,
            });
        }
        out.reserve(packets);
        let base = frame.len() / packets;
        let extra = frame.len() % packets;
        let mut offset = 0;
        for i in 0..packets {
            let len = base + usize::from(i < extra);
            let descriptor = Descriptor {
                start: i == 0,
                end: i + 1 == packets,
            };
            let mut payload = Vec::with_capacity(Descriptor::LEN + len);
            payload.push(descriptor.to_byte());
            payload.extend_from_slice(&frame[offset..offset + len]);
            offset += len;
            out.push(RtpPacket {
                sequence_number: self.next_sequence,
                timestamp,
                marker: descriptor.end,
                payload,
            });
            self.next_sequence = self.next_sequence.wrapping_add(1);
        }
        Ok(packets)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // covers: MT-PKT-2, MT-PKT-3
    #[test]
    fn packets_fit_the_budget_carry_start_end_and_marker_and_concatenate_to_the_frame() {
        let mut p = Packetizer::new(PacketizerConfig {
            max_payload: 100,
            initial_sequence: 65_530,
            ..PacketizerConfig::default()
        });
        for len in [1usize, 98, 99, 100, 197, 198, 199, 1_000, 10_001] {
            let frame: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            let n = p.packetize(7, &frame, &mut out).unwrap();
            assert_eq!(n, out.len());
            assert_eq!(n, len.div_ceil(99));
            let mut joined = Vec::new();
            for (i, pkt) in out.iter().enumerate() {
                assert!(pkt.payload.len() <= 100);
                let (d, data) = Descriptor::split(&pkt.payload).unwrap();
                assert_eq!(d.start, i == 0);
                assert_eq!(d.end, i + 1 == n);
                assert_eq!(pkt.marker, i + 1 == n);
                assert_eq!(pkt.timestamp, 7);
                joined.extend_from_slice(data);
            }
            for w in out.windows(2) {
                assert_eq!(w[1].sequence_number, w[0].sequence_number.wrapping_add(1));
                assert!(w[0].payload.len().abs_diff(w[1].payload.len()) <= 1);
            }
            assert_eq!(joined, frame);
        }
    }

    #[test]
    fn empty_and_oversized_frames_are_refused() {
        let mut p = Packetizer::new(PacketizerConfig {
            max_payload: 11,
            max_packets_per_frame: 2,
            initial_sequence: 0,
        });
        let mut out = Vec::new();
        assert_eq!(
            p.packetize(0, &[], &mut out),
            Err(PacketizeError::EmptyFrame)
        );
        assert!(matches!(
            p.packetize(0, &[0; 21], &mut out),
            Err(PacketizeError::FrameTooLarge { packets: 3, .. })
        ));
        assert!(out.is_empty());
        assert_eq!(p.next_sequence(), 0);
    }
}
