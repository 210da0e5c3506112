//! Property tests over the public API: round trips, tampering, replay, header codec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use blindcall_sframe::{
    BaseKey, CipherSuite, Counter, Header, Kid, OpenError, Receiver, ReceiverConfig, Sender,
};
use proptest::prelude::*;
use proptest::sample::select;

/// A u64 whose minimal header field is exactly `n` bytes long (0 = inline, < 8).
fn with_len(n: usize, v: u64) -> u64 {
    match n {
        0 => v & 7,
        1 => 8 + v % 248,
        n => (v >> (64 - 8 * n)) | (1u64 << (8 * (n - 1))),
    }
}

fn sized_u64() -> impl Strategy<Value = u64> {
    (0usize..=8, any::<u64>()).prop_map(|(n, v)| with_len(n, v))
}

fn suite() -> impl Strategy<Value = CipherSuite> {
    select(CipherSuite::ALL.to_vec())
}

fn metadata() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..48),
        1 => proptest::collection::vec(any::<u8>(), 490..530),
    ]
}

fn pair(suite: CipherSuite, kid: Kid, ctr: u64, window: u64) -> (Sender, Receiver) {
    let base = BaseKey::new(b"property test base key");
    let tx = Sender::with_counter(suite, kid, &base, Counter(ctr)).unwrap();
    let mut rx = Receiver::new(ReceiverConfig {
        replay_window: window,
    });
    rx.add_key(suite, kid, &base).unwrap();
    (tx, rx)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    // covers: SF-HDR-1, SF-HDR-2, SF-TX-1, SF-RX-1, SF-AAD-1
    #[test]
    fn round_trip(suite in suite(), kid in sized_u64(), ctr in sized_u64(),
                  md in metadata(), pt in proptest::collection::vec(any::<u8>(), 0..300)) {
        let ctr = ctr.min(u64::MAX - 1);
        let (mut tx, mut rx) = pair(suite, Kid(kid), ctr, 128);
        prop_assert_eq!(tx.sealed_len(pt.len()), Header::new(Kid(kid), Counter(ctr)).encoded_len() + pt.len() + suite.nt());
        let frame = tx.seal(&md, &pt).unwrap();
        prop_assert_eq!(frame.len(), Header::new(Kid(kid), Counter(ctr)).encoded_len() + pt.len() + suite.nt());
        let (h, n) = Header::decode(&frame).unwrap();
        prop_assert_eq!(h, Header::new(Kid(kid), Counter(ctr)));
        prop_assert_eq!(n, h.encoded_len());
        let (h2, got) = rx.open(&md, &frame).unwrap();
        prop_assert_eq!(h2, h);
        prop_assert_eq!(got, pt);
        // A second frame uses the next counter and also opens.
        let frame2 = tx.seal(&md, b"next").unwrap();
        prop_assert_eq!(Header::decode(&frame2).unwrap().0.ctr, Counter(ctr + 1));
        prop_assert_eq!(rx.open(&md, &frame2).unwrap().1, b"next".to_vec());
    }

    // covers: SF-RX-2, SF-RX-3, SF-AAD-1
    #[test]
    fn any_bit_flip_is_rejected(suite in suite(), kid in sized_u64(), ctr in sized_u64(),
                                md in proptest::collection::vec(any::<u8>(), 0..24),
                                pt in proptest::collection::vec(any::<u8>(), 0..64),
                                pick in any::<prop::sample::Index>()) {
        let (mut tx, mut rx) = pair(suite, Kid(kid), ctr.min(u64::MAX - 1), 128);
        let mut frame = tx.seal(&md, &pt).unwrap();
        let mut md = md;
        let bits = 8 * (frame.len() + md.len());
        let bit = pick.index(bits);
        if bit < 8 * frame.len() {
            frame[bit / 8] ^= 1 << (bit % 8);
        } else {
            let b = bit - 8 * frame.len();
            md[b / 8] ^= 1 << (b % 8);
        }
        prop_assert!(rx.open(&md, &frame).is_err());
        // A frame cut short is rejected too.
        let (mut tx, mut rx) = pair(suite, Kid(kid), 0, 128);
        let frame = tx.seal(&md, &pt).unwrap();
        let cut = pick.index(frame.len());
        prop_assert!(rx.open(&md, &frame[..cut]).is_err());
    }

    // covers: SF-RX-4, SF-RX-5, SF-RX-6, SF-RX-7
    #[test]
    fn reordering_within_window_replay_and_too_old(suite in suite(), window in 1u64..300,
                                                   seed in any::<u64>()) {
        let (mut tx, mut rx) = pair(suite, Kid(7), 0, window);
        let total = window + 40;
        let frames: Vec<Vec<u8>> = (0..total).map(|i| tx.seal(b"", &i.to_be_bytes()).unwrap()).collect();
        // Deliver in chunks reversed inside each chunk (displacement < chunk <= window),
        // holding frame 0 back.
        let chunk = usize::try_from((seed % window) + 1).unwrap();
        let order: Vec<usize> = (1..frames.len()).collect::<Vec<_>>()
            .chunks(chunk).flat_map(|c| c.iter().rev().copied().collect::<Vec<_>>()).collect();
        for &i in &order {
            let (h, pt) = rx.open(b"", &frames[i]).unwrap();
            prop_assert_eq!(h.ctr, Counter(i as u64));
            prop_assert_eq!(pt, (i as u64).to_be_bytes().to_vec());
        }
        // Every delivered frame is now a replay or too old; frame 0 (never seen) is too old.
        let top = total - 1;
        for &i in order.iter().step_by(7) {
            let e = rx.open(b"", &frames[i]).unwrap_err();
            if top - (i as u64) < window {
                prop_assert_eq!(e, OpenError::Replay { kid: Kid(7), ctr: Counter(i as u64) });
            } else {
                prop_assert_eq!(e, OpenError::TooOld { kid: Kid(7), ctr: Counter(i as u64) });
            }
        }
        prop_assert_eq!(rx.open(b"", &frames[0]).unwrap_err(), OpenError::TooOld { kid: Kid(7), ctr: Counter(0) });
    }

    // covers: SF-HDR-3, SF-HDR-4, SF-HDR-5
    #[test]
    fn header_decode_never_panics_and_is_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
        if let Ok((h, n)) = Header::decode(&bytes) {
            let mut out = [0u8; Header::MAX_LEN];
            let m = h.encode(&mut out).unwrap();
            prop_assert_eq!(m, n);
            prop_assert_eq!(&out[..m], &bytes[..n]);
        }
    }

    // covers: SF-HDR-1, SF-HDR-2
    #[test]
    fn header_encode_decode_identity(kid in sized_u64(), ctr in sized_u64()) {
        let h = Header::new(Kid(kid), Counter(ctr));
        let mut out = [0u8; Header::MAX_LEN];
        let n = h.encode(&mut out).unwrap();
        prop_assert_eq!(n, h.encoded_len());
        prop_assert_eq!(Header::decode(&out[..n]).unwrap(), (h, n));
        prop_assert!(Header::decode(&out[..n - 1]).is_err());
    }
}
