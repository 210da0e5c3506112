//! Property tests: whatever the arrival order and duplication, complete frames come out intact
//! exactly once, and a frame missing any packet never comes out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use blindcall_media::{Depacketizer, DepacketizerConfig, Packetizer, PacketizerConfig, RtpPacket};
use proptest::prelude::*;

fn frames_strategy() -> impl Strategy<Value = (Vec<Vec<u8>>, u16, usize)> {
    (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..600), 1..8),
        any::<u16>(),
        20usize..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // covers: MT-PKT-4
    #[test]
    fn any_order_with_duplicates_yields_each_frame_once(
        (frames, first_seq, budget) in frames_strategy(),
        shuffle_seed in any::<u64>(),
        dup_mask in any::<u64>(),
    ) {
        let mut p = Packetizer::new(PacketizerConfig { max_payload: budget, initial_sequence: first_seq, ..PacketizerConfig::default() });
        let mut pkts: Vec<RtpPacket> = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            p.packetize(i as u32 * 3000, f, &mut pkts).unwrap();
        }
        let mut wire: Vec<RtpPacket> = pkts.clone();
        for (i, pk) in pkts.iter().enumerate() {
            if dup_mask >> (i % 64) & 1 == 1 { wire.push(pk.clone()); }
        }
        // Deterministic Fisher-Yates from the seed.
        let mut s = shuffle_seed | 1;
        for i in (1..wire.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            wire.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let mut d = Depacketizer::new(DepacketizerConfig::default());
        let t = Instant::now();
        for pk in &wire {
            d.handle_packet(t, pk.sequence_number, pk.timestamp, &pk.payload).unwrap();
        }
        let mut out: Vec<_> = std::iter::from_fn(|| d.poll_frame()).collect();
        out.sort_by_key(|f| f.timestamp);
        prop_assert_eq!(out.len(), frames.len());
        for (i, f) in out.iter().enumerate() {
            prop_assert_eq!(&f.data, &frames[i]);
        }
        prop_assert_eq!(d.buffered_packets(), 0);
    }

    // covers: MT-PKT-5
    #[test]
    fn a_missing_packet_withholds_exactly_its_frame(
        (frames, first_seq, budget) in frames_strategy(),
        lose in any::<prop::sample::Index>(),
    ) {
        let mut p = Packetizer::new(PacketizerConfig { max_payload: budget, initial_sequence: first_seq, ..PacketizerConfig::default() });
        let mut pkts: Vec<RtpPacket> = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            p.packetize(i as u32 * 3000, f, &mut pkts).unwrap();
        }
        let lost = pkts.remove(lose.index(pkts.len()));
        let mut d = Depacketizer::new(DepacketizerConfig::default());
        let t = Instant::now();
        for pk in &pkts {
            d.handle_packet(t, pk.sequence_number, pk.timestamp, &pk.payload).unwrap();
        }
        let out: Vec<_> = std::iter::from_fn(|| d.poll_frame()).collect();
        prop_assert_eq!(out.len(), frames.len() - 1);
        prop_assert!(out.iter().all(|f| f.timestamp != lost.timestamp));
        d.handle_timeout(t + DepacketizerConfig::default().max_wait);
        prop_assert_eq!(d.buffered_packets(), 0);
        let expected_incomplete = u64::from(pkts.iter().any(|pk| pk.timestamp == lost.timestamp));
        prop_assert_eq!(d.stats().frames_incomplete, expected_incomplete);
    }
}
