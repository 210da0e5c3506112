//! Property tests over the public API: round trips, tampering, replay, header codec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use blindcall_sframe::{
    BaseKey, CipherSuite, Counter, Header, JumpLimit, Kid, OpenError, Receiver, ReceiverConfig,
    Sender,
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

/// One step of a receiver run under a jump limit.
#[derive(Clone, Debug)]
enum Step {
    /// Open a frame with this counter, `dt_ms` after the previous step (or, if `earlier`, at
    /// half the current time), with or without a time, optionally with a broken tag.
    Open {
        ctr: u64,
        dt_ms: u64,
        earlier: bool,
        timed: bool,
        tampered: bool,
    },
    /// `Receiver::reset_window`.
    Reset,
}

fn steps(anchor: u64) -> impl Strategy<Value = Vec<Step>> {
    let open = (
        prop_oneof![
            8 => (0u64..600).prop_map(move |d| anchor.saturating_add(d)),
            1 => any::<u64>(),
            1 => (0u64..80).prop_map(|d| u64::MAX - d),
        ],
        prop_oneof![3 => Just(0u64), 6 => 0u64..300, 1 => 0u64..20_000],
        proptest::bool::weighted(0.1),
        proptest::bool::weighted(0.85),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(ctr, dt_ms, earlier, timed, tampered)| Step::Open {
            ctr,
            dt_ms,
            earlier,
            timed,
            tampered,
        });
    proptest::collection::vec(prop_oneof![30 => open, 1 => Just(Step::Reset)], 1..80)
}

fn jump_limit() -> impl Strategy<Value = JumpLimit> {
    prop_oneof![
        4 => Just(JumpLimit::DEFAULT),
        4 => (0u64..200, 0u64..2_000).prop_map(|(base, per_second)| JumpLimit { base, per_second }),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(base, per_second)| JumpLimit { base, per_second }),
    ]
}

/// Reference model of the receiver's counter state: window, jump limit and time, in ms.
struct Model {
    window: u64,
    limit: JumpLimit,
    top: Option<u64>,
    top_at: Option<u64>,
    seen: BTreeSet<u64>,
    now: Option<u64>,
}

impl Model {
    fn open(&mut self, ctr: u64, at: Option<u64>, tampered: bool) -> Result<(), OpenError> {
        let kid = Kid(9);
        if let Some(at) = at {
            if self.now.is_none() && self.top.is_some() {
                self.top_at = Some(at);
            }
            self.now = Some(self.now.map_or(at, |n| n.max(at)));
        }
        if let Some(top) = self.top {
            if ctr <= top {
                if top - ctr >= self.window {
                    return Err(OpenError::TooOld {
                        kid,
                        ctr: Counter(ctr),
                    });
                }
                if self.seen.contains(&ctr) {
                    return Err(OpenError::Replay {
                        kid,
                        ctr: Counter(ctr),
                    });
                }
            } else {
                let elapsed_ms = match (self.now, self.top_at) {
                    (Some(n), Some(t)) => n.saturating_sub(t),
                    _ => 0,
                };
                let grown = u128::from(self.limit.per_second) * u128::from(elapsed_ms) / 1000;
                let allowed = u128::from(self.limit.base) + grown;
                if u128::from(ctr - top) > allowed {
                    return Err(OpenError::CounterJump {
                        kid,
                        ctr: Counter(ctr),
                        highest: Counter(top),
                    });
                }
            }
        }
        if tampered {
            return Err(OpenError::TagMismatch {
                kid,
                ctr: Counter(ctr),
            });
        }
        self.seen.insert(ctr);
        if self.top.is_none_or(|top| ctr > top) {
            self.top = Some(ctr);
            self.top_at = self.now;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.top = None;
        self.top_at = None;
        self.seen.clear();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    // The receiver under a jump limit behaves exactly like the model: a refused frame (jump,
    // window or tag) changes nothing, counters and limits anywhere in u64 never overflow.
    // covers: SF-RX-11, SF-RX-12, SF-RX-14, SF-RX-15, SF-RX-16
    #[test]
    fn jump_limit_matches_model(suite in suite(), window in prop_oneof![Just(128u64), 1u64..300],
                                limit in jump_limit(),
                                steps in prop_oneof![Just(0u64), Just(u64::MAX - 500), any::<u64>()]
                                    .prop_flat_map(steps)) {
        let base = BaseKey::new(b"jump model base key");
        let kid = Kid(9);
        let mut rx = Receiver::new(ReceiverConfig { replay_window: window });
        rx.set_jump_limit(Some(limit));
        rx.add_key(suite, kid, &base).unwrap();
        let mut model = Model { window, limit, top: None, top_at: None, seen: BTreeSet::new(), now: None };
        let t0 = Instant::now();
        let mut clock_ms = 0u64;
        for step in steps {
            match step {
                Step::Reset => {
                    prop_assert!(rx.reset_window(kid));
                    model.reset();
                }
                Step::Open { ctr, dt_ms, earlier, timed, tampered } => {
                    clock_ms += dt_ms;
                    let at = if earlier { clock_ms / 2 } else { clock_ms };
                    let mut frame = Sender::with_counter(suite, kid, &base, Counter(ctr)).unwrap().seal(b"m", b"payload").unwrap();
                    if tampered {
                        let last = frame.len() - 1;
                        frame[last] ^= 0x80;
                    }
                    let got = if timed {
                        rx.open_at(t0 + Duration::from_millis(at), b"m", &frame)
                    } else {
                        rx.open(b"m", &frame)
                    };
                    let want = model.open(ctr, timed.then_some(at), tampered);
                    prop_assert_eq!(got.map(|(h, pt)| (h.ctr, pt)), want.map(|()| (Counter(ctr), b"payload".to_vec())));
                }
            }
        }
    }

    // Whatever counter a forger picks, with the default limit and window: a forgery arriving
    // less than (128 - 64) / 256 s = 250 ms after the last genuine frame costs the genuine
    // stream nothing but the frame sharing its counter (a replay); a later one moves the top at
    // most 64 + 256 frames/s × gap ahead, and the genuine stream is heard again as soon as its
    // counter is back inside the window, so the silence is bounded by the gap, never the epoch.
    // covers: SF-RX-17
    #[test]
    fn one_forged_frame_never_silences(start in prop_oneof![Just(0u64), 0u64..1_000_000, Just(u64::MAX - 300)],
                                       forged in prop_oneof![any::<u64>(), 0u64..400, (0u64..80).prop_map(|d| u64::MAX - d)],
                                       gap_ms in prop_oneof![0u64..250, 0u64..2_000]) {
        let suite = CipherSuite::AES_128_CTR_HMAC_SHA256_80;
        let base = BaseKey::new(b"silencing base key");
        let kid = Kid(0x42);
        let mut victim = Sender::with_counter(suite, kid, &base, Counter(start)).unwrap();
        let mut rx = Receiver::new(ReceiverConfig::default());
        rx.set_jump_limit(Some(JumpLimit::DEFAULT));
        rx.add_key(suite, kid, &base).unwrap();
        let t0 = Instant::now();
        rx.open_at(t0, b"", &victim.seal(b"", b"g").unwrap()).unwrap();
        let forged_frame = Sender::with_counter(suite, kid, &base, Counter(forged)).unwrap().seal(b"", b"f").unwrap();
        // The forgery arrives `gap_ms` after the last genuine frame, just before the next one.
        let t1 = t0 + Duration::from_millis(gap_ms);
        let forged_ok = rx.open_at(t1, b"", &forged_frame).is_ok();
        if forged_ok && forged > start {
            prop_assert!(forged - start <= JumpLimit::DEFAULT.allowance(Duration::from_millis(gap_ms)));
        }
        // The genuine sender goes on at 50 frames/s.
        for i in 1..=400u64 {
            let Some(ctr) = start.checked_add(i) else { break };
            let frame = victim.seal(b"", b"g").unwrap();
            let r = rx.open_at(t1 + Duration::from_millis(20 * i), b"", &frame);
            if forged_ok && ctr == forged {
                prop_assert_eq!(r.unwrap_err(), OpenError::Replay { kid, ctr: Counter(ctr) });
            } else if forged_ok && forged > ctr && forged - ctr >= 128 {
                prop_assert!(gap_ms >= 250, "silenced after a {} ms gap", gap_ms);
                prop_assert_eq!(r.unwrap_err(), OpenError::TooOld { kid, ctr: Counter(ctr) });
            } else {
                prop_assert!(r.is_ok(), "genuine {} after forged {} ({}): {:?}", ctr, forged, forged_ok, r);
            }
        }
    }
}
