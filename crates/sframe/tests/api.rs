//! Sender and receiver rules through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use blindcall_sframe::{
    BaseKey, CipherSuite, Counter, DropReason, Header, HeaderError, KeyError, Kid, OpenError,
    Receiver, ReceiverConfig, SealError, Sender,
};

fn base() -> BaseKey {
    BaseKey::new(&[3u8; 16])
}

// covers: SF-TX-2, SF-TX-3
#[test]
fn counter_exhaustion_seals_once_then_errors() {
    for suite in CipherSuite::ALL {
        let mut tx = Sender::with_counter(suite, Kid(77), &base(), Counter(u64::MAX)).unwrap();
        assert_eq!(tx.next_counter(), Some(Counter(u64::MAX)));
        let frame = tx.seal(b"", b"last").unwrap();
        assert_eq!(Header::decode(&frame).unwrap().0.ctr, Counter(u64::MAX));
        assert_eq!(tx.next_counter(), None);
        assert_eq!(
            tx.seal(b"", b"again"),
            Err(SealError::CounterExhausted { kid: Kid(77) })
        );
        let mut buf = [0u8; 64];
        assert_eq!(
            tx.seal_in_place(b"", &mut buf, 4),
            Err(SealError::CounterExhausted { kid: Kid(77) })
        );
        let mut rx = Receiver::new(ReceiverConfig::default());
        rx.add_key(suite, Kid(77), &base()).unwrap();
        assert_eq!(rx.open(b"", &frame).unwrap().1, b"last");
    }
}

// covers: SF-RX-1, SF-RX-8
#[test]
fn key_selection_by_kid_only() {
    let suite = CipherSuite::AES_128_GCM_SHA256_128;
    let mut tx = Sender::new(suite, Kid(1), &base()).unwrap();
    let frame = tx.seal(b"", b"hi").unwrap();
    let mut rx = Receiver::new(ReceiverConfig::default());
    assert_eq!(
        rx.open(b"", &frame).unwrap_err(),
        OpenError::UnknownKid { kid: Kid(1) }
    );
    // The right base key under another KID is never tried.
    rx.add_key(suite, Kid(2), &base()).unwrap();
    let e = rx.open(b"", &frame).unwrap_err();
    assert_eq!(e, OpenError::UnknownKid { kid: Kid(1) });
    assert_eq!(
        (e.kid(), e.reason()),
        (Some(Kid(1)), DropReason::UnknownKid)
    );
    rx.add_key(suite, Kid(1), &base()).unwrap();
    assert!(rx.has_key(Kid(1)));
    assert_eq!(rx.key_count(), 2);
    assert_eq!(rx.open(b"", &frame).unwrap().1, b"hi");
    assert!(rx.remove_key(Kid(1)));
    assert!(!rx.remove_key(Kid(1)));
    assert!(!rx.has_key(Kid(1)));
    assert_eq!(rx.key_count(), 1);
    let frame = tx.seal(b"", b"after removal").unwrap();
    assert_eq!(
        rx.open(b"", &frame).unwrap_err(),
        OpenError::UnknownKid { kid: Kid(1) }
    );
}

// covers: SF-RX-2, SF-RX-4, SF-RX-10
#[test]
fn failed_tag_does_not_advance_window() {
    for suite in CipherSuite::ALL {
        let mut tx = Sender::with_counter(suite, Kid(9), &base(), Counter(1000)).unwrap();
        let mut rx = Receiver::new(ReceiverConfig::default());
        rx.add_key(suite, Kid(9), &base()).unwrap();
        let good = tx.seal(b"md", b"payload").unwrap();
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 0x80;
        let e = rx.open(b"md", &bad).unwrap_err();
        assert_eq!(
            e,
            OpenError::TagMismatch {
                kid: Kid(9),
                ctr: Counter(1000)
            }
        );
        assert_eq!(
            (e.kid(), e.reason()),
            (Some(Kid(9)), DropReason::TagMismatch)
        );
        // Wrong metadata is a tag mismatch too.
        assert!(matches!(
            rx.open(b"mD", &good),
            Err(OpenError::TagMismatch { .. })
        ));
        assert_eq!(rx.open(b"md", &good).unwrap().1, b"payload");
        let e = rx.open(b"md", &good).unwrap_err();
        assert_eq!((e.kid(), e.reason()), (Some(Kid(9)), DropReason::Replay));
    }
}

// covers: SF-RX-9
#[test]
fn replacing_a_key_resets_its_window() {
    let suite = CipherSuite::AES_256_GCM_SHA512_128;
    let key = BaseKey::new(&[1u8; 32]);
    let mut tx = Sender::new(suite, Kid(5), &key).unwrap();
    let mut rx = Receiver::new(ReceiverConfig::default());
    rx.add_key(suite, Kid(5), &key).unwrap();
    let f = tx.seal(b"", b"a").unwrap();
    rx.open(b"", &f).unwrap();
    assert!(rx.open(b"", &f).is_err());
    rx.add_key(suite, Kid(5), &key).unwrap();
    assert_eq!(rx.open(b"", &f).unwrap().1, b"a");
}

// covers: SF-RX-10
#[test]
fn malformed_and_short_frames() {
    let suite = CipherSuite::AES_128_CTR_HMAC_SHA256_80;
    let mut rx = Receiver::new(ReceiverConfig::default());
    rx.add_key(suite, Kid(0x123), &base()).unwrap();
    let e = rx.open(b"", &[]).unwrap_err();
    assert_eq!(
        e,
        OpenError::Malformed(HeaderError::Truncated { needed: 1, got: 0 })
    );
    assert_eq!((e.kid(), e.reason()), (None, DropReason::Malformed));
    // Header for KID 0x123 plus a 9-byte body: one byte short of the 10-byte tag.
    let mut frame = vec![0x90, 0x01, 0x23];
    frame.extend_from_slice(&[0u8; 9]);
    let e = rx.open(b"", &frame).unwrap_err();
    assert_eq!(
        e,
        OpenError::TooShort {
            needed: 13,
            got: 12
        }
    );
    assert_eq!(e.reason(), DropReason::Malformed);
    frame.push(0);
    assert!(matches!(
        rx.open(b"", &frame),
        Err(OpenError::TagMismatch { .. })
    ));
    // An empty plaintext round-trips.
    let mut tx = Sender::new(suite, Kid(0x123), &base()).unwrap();
    let f = tx.seal(b"", b"").unwrap();
    assert_eq!(f.len(), 3 + 10);
    assert!(rx.open(b"", &f).unwrap().1.is_empty());
}

// covers: SF-KEY-3
#[test]
fn key_errors() {
    assert_eq!(
        Sender::new(
            CipherSuite::AES_128_GCM_SHA256_128,
            Kid(1),
            &BaseKey::new(&[])
        )
        .unwrap_err(),
        KeyError::EmptyBaseKey
    );
    let mut rx = Receiver::new(ReceiverConfig::default());
    assert_eq!(
        rx.add_key(
            CipherSuite::AES_128_GCM_SHA256_128,
            Kid(1),
            &BaseKey::from_vec(Vec::new())
        ),
        Err(KeyError::EmptyBaseKey)
    );
    assert_eq!(rx.key_count(), 0);
    assert_eq!(CipherSuite::from_id(0), Err(KeyError::UnsupportedSuite(0)));
}

// covers: SF-KEY-4
#[test]
fn errors_and_debug_carry_no_key_bytes() {
    let key = BaseKey::new(&[0xEE; 16]);
    let tx = Sender::new(CipherSuite::AES_128_GCM_SHA256_128, Kid(1), &key).unwrap();
    let rx = Receiver::new(ReceiverConfig::default());
    for s in [format!("{key:?}"), format!("{tx:?}"), format!("{rx:?}")] {
        assert!(
            !s.to_lowercase().contains("ee, ") && !s.contains("238"),
            "{s}"
        );
        assert!(!s.to_lowercase().contains("eeee"), "{s}");
    }
}

#[test]
fn types_can_move_between_threads() {
    fn check<T: Send + Sync>() {}
    check::<Sender>();
    check::<Receiver>();
    check::<BaseKey>();
    check::<OpenError>();
}
