//! Bounded counter jump: one forged frame cannot silence a sender.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use blindcall_sframe::{
    BaseKey, CipherSuite, Counter, DropReason, JumpLimit, Kid, OpenError, Receiver, ReceiverConfig,
    Sender,
};

const SUITE: CipherSuite = CipherSuite::AES_128_GCM_SHA256_128;
const VICTIM: Kid = Kid(0x0100);

fn group_key() -> BaseKey {
    BaseKey::new(&[5u8; 16])
}

fn receiver(limit: Option<JumpLimit>) -> Receiver {
    let mut rx = Receiver::new(ReceiverConfig::default());
    rx.set_jump_limit(limit);
    rx.add_key(SUITE, VICTIM, &group_key()).unwrap();
    rx
}

/// A member holding the group key seals under the victim's KID at a counter of its choice.
fn forge(ctr: u64) -> Vec<u8> {
    Sender::with_counter(SUITE, VICTIM, &group_key(), Counter(ctr))
        .unwrap()
        .seal(b"", b"forged")
        .unwrap()
}

fn jump(ctr: u64, highest: u64) -> OpenError {
    OpenError::CounterJump {
        kid: VICTIM,
        ctr: Counter(ctr),
        highest: Counter(highest),
    }
}

// The attack (issue 10, "No silencing"). Before the jump limit existed, the forged frame was
// accepted and every later genuine frame failed with `TooOld { ctr: 1 }`.
// covers: SF-RX-12, SF-RX-17
#[test]
fn forged_far_ahead_frame_cannot_silence_a_sender() {
    let t0 = Instant::now();
    for forged_ctr in [u64::MAX - 1, u64::MAX, 1 << 40, 65 + 1, 200] {
        let mut victim = Sender::new(SUITE, VICTIM, &group_key()).unwrap();
        let mut rx = receiver(Some(JumpLimit::DEFAULT));
        let g0 = victim.seal(b"", b"genuine 0").unwrap();
        assert!(rx.open_at(t0, b"", &g0).is_ok());
        let e = rx.open_at(t0, b"", &forge(forged_ctr)).unwrap_err();
        assert_eq!(e, jump(forged_ctr, 0));
        assert_eq!(
            (e.kid(), e.reason()),
            (Some(VICTIM), DropReason::CounterJump)
        );
        // The genuine stream goes on, 20 ms per frame.
        for i in 1..100u64 {
            let now = t0 + Duration::from_millis(20 * i);
            let g = victim.seal(b"", b"genuine").unwrap();
            assert_eq!(rx.open_at(now, b"", &g).unwrap().1, b"genuine", "frame {i}");
        }
    }
}

// The strongest single forgery the default limit lets through lands at top + 64: it is
// accepted, and the genuine next frame (and the rest of the stream) still opens.
// covers: SF-RX-12, SF-RX-17
#[test]
fn forged_frame_within_the_limit_still_leaves_the_sender_heard() {
    let t0 = Instant::now();
    let mut victim = Sender::new(SUITE, VICTIM, &group_key()).unwrap();
    let mut rx = receiver(Some(JumpLimit::DEFAULT));
    for _ in 0..10 {
        rx.open_at(t0, b"", &victim.seal(b"", b"g").unwrap())
            .unwrap();
    }
    // Highest genuine counter is 9; 9 + 64 = 73 is the furthest a forger gets right away.
    assert_eq!(rx.open_at(t0, b"", &forge(74)).unwrap_err(), jump(74, 9));
    assert_eq!(rx.open_at(t0, b"", &forge(73)).unwrap().1, b"forged");
    // The genuine frame with the forged counter is lost as a replay; every other one opens.
    for i in 10..200u64 {
        let r = rx.open_at(t0, b"", &victim.seal(b"", b"g").unwrap());
        if i == 73 {
            assert_eq!(
                r.unwrap_err(),
                OpenError::Replay {
                    kid: VICTIM,
                    ctr: Counter(73)
                }
            );
        } else {
            assert_eq!(r.unwrap().1, b"g", "frame {i}");
        }
    }
}

// covers: SF-RX-12, SF-RX-15
#[test]
fn elapsed_time_widens_the_limit() {
    let t0 = Instant::now();
    let mut rx = receiver(Some(JumpLimit {
        base: 10,
        per_second: 100,
    }));
    rx.open_at(t0, b"", &forge(1000)).unwrap();
    // 0.5 s later: 10 + 50 = 60.
    let t1 = t0 + Duration::from_millis(500);
    assert_eq!(
        rx.open_at(t1, b"", &forge(1061)).unwrap_err(),
        jump(1061, 1000)
    );
    rx.open_at(t1, b"", &forge(1060)).unwrap();
    // The clock restarts at the new highest counter.
    assert_eq!(
        rx.open_at(t1, b"", &forge(1071)).unwrap_err(),
        jump(1071, 1060)
    );
    rx.open_at(t1, b"", &forge(1070)).unwrap();
    // A late frame below the top does not restart it.
    let t2 = t1 + Duration::from_secs(1);
    rx.open_at(t2, b"", &forge(1065)).unwrap();
    rx.open_at(t2, b"", &forge(1180)).unwrap();
    // A time earlier than one already given counts as that time.
    assert_eq!(
        rx.open_at(t0, b"", &forge(1191)).unwrap_err(),
        jump(1191, 1180)
    );
    let t3 = t2 + Duration::from_millis(100);
    rx.open_at(t0, b"", &forge(1181)).unwrap();
    assert_eq!(
        rx.open_at(t3, b"", &forge(1202)).unwrap_err(),
        jump(1202, 1181)
    );
    rx.open_at(t3, b"", &forge(1201)).unwrap();
}

// An honest gap: the network loses 6 s of 50 fps audio while the sender keeps sealing.
// covers: SF-RX-13, SF-RX-15
#[test]
fn honest_outage_passes_the_default_limit() {
    let t0 = Instant::now();
    let mut tx = Sender::new(SUITE, VICTIM, &group_key()).unwrap();
    let mut rx = receiver(Some(JumpLimit::DEFAULT));
    rx.open_at(t0, b"", &tx.seal(b"", b"a").unwrap()).unwrap();
    for _ in 0..300 {
        tx.seal(b"", b"lost").unwrap();
    }
    let frame = tx.seal(b"", b"back").unwrap();
    assert_eq!(
        rx.open_at(t0 + Duration::from_secs(6), b"", &frame)
            .unwrap()
            .1,
        b"back"
    );
    // Without time the same gap stays refused (only `base` applies) ...
    let mut timeless = receiver(Some(JumpLimit::DEFAULT));
    let mut tx = Sender::new(SUITE, VICTIM, &group_key()).unwrap();
    timeless.open(b"", &tx.seal(b"", b"a").unwrap()).unwrap();
    for _ in 0..300 {
        tx.seal(b"", b"lost").unwrap();
    }
    let frame = tx.seal(b"", b"back").unwrap();
    assert_eq!(timeless.open(b"", &frame).unwrap_err(), jump(301, 0));
    // ... until time is given. The top was accepted before any time was known, so it counts
    // as accepted at the first time given; from then on the limit grows.
    let frame = tx.seal(b"", b"later").unwrap();
    assert_eq!(timeless.open_at(t0, b"", &frame).unwrap_err(), jump(302, 0));
    // 1.5 s later: 64 + 256 × 1.5 = 448 >= 303 - 0.
    let frame = tx.seal(b"", b"later").unwrap();
    assert_eq!(
        timeless
            .open_at(t0 + Duration::from_millis(1500), b"", &frame)
            .unwrap()
            .1,
        b"later"
    );
}

// covers: SF-RX-13, SF-RX-14
#[test]
fn no_limit_by_default_and_first_frame_unlimited() {
    let rx = Receiver::new(ReceiverConfig::default());
    assert_eq!(rx.jump_limit(), None);
    assert_eq!(JumpLimit::default(), JumpLimit::DEFAULT);
    assert_eq!(
        JumpLimit::DEFAULT,
        JumpLimit {
            base: 64,
            per_second: 256
        }
    );
    // RFC 9605 behaviour without a limit: any advance is accepted.
    let mut rx = receiver(None);
    rx.open(b"", &forge(0)).unwrap();
    rx.open(b"", &forge(u64::MAX)).unwrap();
    // With a limit, the first frame of a KID is not limited, nor is one at or below the top.
    let mut rx = receiver(Some(JumpLimit::DEFAULT));
    rx.open(b"", &forge(u64::MAX - 5)).unwrap();
    rx.open(b"", &forge(u64::MAX - 100)).unwrap();
    rx.open(b"", &forge(u64::MAX)).unwrap();
    assert_eq!(rx.jump_limit(), Some(JumpLimit::DEFAULT));
    rx.set_jump_limit(None);
    assert_eq!(rx.jump_limit(), None);
}

// covers: SF-RX-16
#[test]
fn counters_near_the_maximum_do_not_overflow() {
    let t0 = Instant::now();
    let huge = JumpLimit {
        base: u64::MAX,
        per_second: u64::MAX,
    };
    for limit in [
        JumpLimit::DEFAULT,
        huge,
        JumpLimit {
            base: 0,
            per_second: 0,
        },
    ] {
        let mut rx = receiver(Some(limit));
        rx.open_at(t0, b"", &forge(u64::MAX - 64)).unwrap();
        assert!(rx.open_at(t0, b"", &forge(u64::MAX - 200)).is_err());
        let far = t0 + Duration::from_secs(u64::from(u32::MAX));
        let r = rx.open_at(far, b"", &forge(u64::MAX));
        assert_eq!(r.is_ok(), limit.base != 0, "{limit:?}: {r:?}");
        let mut rx = receiver(Some(limit));
        rx.open_at(t0, b"", &forge(0)).unwrap();
        let r = rx.open_at(t0, b"", &forge(u64::MAX));
        assert_eq!(r.is_ok(), limit.base == u64::MAX, "{limit:?}");
    }
}

// covers: SF-RX-12
#[test]
fn refused_jump_leaves_the_window_untouched() {
    let t0 = Instant::now();
    let mut rx = receiver(Some(JumpLimit::DEFAULT));
    rx.open_at(t0, b"", &forge(1000)).unwrap();
    rx.open_at(t0, b"", &forge(990)).unwrap();
    for _ in 0..3 {
        assert_eq!(
            rx.open_at(t0, b"", &forge(5000)).unwrap_err(),
            jump(5000, 1000)
        );
    }
    // Still 1000 at the top: 873 is inside the window, 872 is not, 990 is a replay.
    assert_eq!(
        rx.open_at(t0, b"", &forge(872)).unwrap_err(),
        OpenError::TooOld {
            kid: VICTIM,
            ctr: Counter(872)
        }
    );
    assert_eq!(
        rx.open_at(t0, b"", &forge(990)).unwrap_err(),
        OpenError::Replay {
            kid: VICTIM,
            ctr: Counter(990)
        }
    );
    rx.open_at(t0, b"", &forge(873)).unwrap();
    // The time of the top did not move either: 2 s after it, 1000 + 64 + 512 passes.
    rx.open_at(t0 + Duration::from_secs(2), b"", &forge(1576))
        .unwrap();
    // A frame that fails authentication moves nothing either.
    let mut bad = forge(1577);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        rx.open_at(t0, b"", &bad).unwrap_err(),
        OpenError::TagMismatch {
            kid: VICTIM,
            ctr: Counter(1577)
        }
    );
    rx.open_at(t0, b"", &forge(1577)).unwrap();
}

// covers: SF-RX-11
#[test]
fn reset_window_forgets_counters_and_keeps_the_key() {
    let t0 = Instant::now();
    let mut rx = receiver(Some(JumpLimit::DEFAULT));
    rx.open_at(t0, b"", &forge(u64::MAX - 1)).unwrap();
    assert_eq!(
        rx.open_at(t0, b"", &forge(3)).unwrap_err(),
        OpenError::TooOld {
            kid: VICTIM,
            ctr: Counter(3)
        }
    );
    assert!(rx.reset_window(VICTIM));
    assert!(!rx.reset_window(Kid(9)));
    assert!(rx.has_key(VICTIM));
    // Fresh state: the first frame is unlimited again, and counters are new.
    rx.open_at(t0, b"", &forge(3)).unwrap();
    rx.open_at(t0, b"", &forge(u64::MAX - 1)).unwrap_err();
    rx.open_at(t0, b"", &forge(4)).unwrap();
    assert!(rx.reset_window(VICTIM));
    rx.open_at(t0, b"", &forge(u64::MAX - 1)).unwrap();
}
