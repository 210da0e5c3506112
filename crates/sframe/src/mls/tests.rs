use super::*;
use crate::key::derive_key_salt;
use crate::{Counter, Receiver, ReceiverConfig, Sender};

// covers: SF-MLS-2
#[test]
fn kid_layout_matches_rfc_figure_9() {
    // RFC 9605 Figure 9: E = 4, S = 6.
    let cases = [
        (0, 3, 14, 0x3e),
        (0, 7, 14, 0x7e),
        (0, 20, 14, 0x14e),
        (0, 3, 15, 0x3f),
        (0, 5, 15, 0x5f),
        (2, 2, 16, 0x820),
        (3, 2, 16, 0xc20),
        (0, 33, 17, 0x211),
        (0, 51, 17, 0x331),
    ];
    for (context, index, epoch, want) in cases {
        assert_eq!(kid(context, index, epoch, 6, 4).unwrap(), Kid(want));
    }
    assert!(kid(0, 64, 0, 6, 4).is_err(), "index needs 7 bits");
    assert!(kid(1 << 54, 0, 0, 6, 4).is_err(), "context needs 55 bits");
    assert!(kid(0, 0, 0, 40, 30).is_err(), "S + E > 64");
    assert_eq!(kid(0, 0, u64::MAX, 0, 64).unwrap(), Kid(u64::MAX));
    assert!(kid(1, 0, 0, 32, 32).is_err(), "no context bits left");
    assert_eq!(
        kid(0, u32::MAX, 0, 32, 32).unwrap(),
        Kid(u64::from(u32::MAX) << 32)
    );
}

// covers: SF-MLS-1
#[test]
fn sender_base_key_is_the_epoch_exporter_output() {
    assert_eq!(EXPORTER_LABEL, "SFrame 1.0 Base Key");
    assert!(EXPORTER_CONTEXT.is_empty());
    for suite in CipherSuite::ALL {
        assert_eq!(exporter_length(suite), suite.nk());
        let epoch = BaseKey::new(&vec![0x42; suite.nk()]);
        for index in [0, 1, u32::MAX] {
            assert_eq!(sender_base_key(suite, &epoch, index).unwrap(), epoch);
        }
        let short = BaseKey::new(&vec![0x42; suite.nk() - 1]);
        assert_eq!(
            sender_base_key(suite, &short, 0),
            Err(KeyError::BadKeyLength {
                expected: suite.nk(),
                got: suite.nk() - 1
            })
        );
    }
}

// Known-answer values. Produced once by this crate (epoch secret = 00 01 02 .. Nk-1,
// sender index 3, epoch 14, S = 6, E = 4 so KID 0x3e, CTR 7, metadata "md", plaintext
// "blindcall"), then cross-checked by hand with an independent Python computation
// (hmac/hashlib HKDF, `cryptography` AES-GCM and AES-CTR + HMAC-SHA256) that gave the same
// bytes. No official vectors exist for §5.2.
const KAT: [(CipherSuite, &str, &str, &str); 2] = [
    (
        CipherSuite::AES_128_GCM_SHA256_128,
        "382f21f2e2b43c0e02677886f3c16374",
        "ec58640f276c5e06f80d6918",
        "873e90f5c121b043cd43428c30cfa41b4561bfec2d342913ffe328",
    ),
    (
        CipherSuite::AES_128_CTR_HMAC_SHA256_80,
        "256c49bdabb69623e2b380dfc2919f9d1d8f600e38ff1eaaea4ab22a604d04f93fdc2507f40f7e4d1eebad1739b0225a",
        "b01ca46aa20bf176e600764d",
        "873ee3a444c8782fb87215742297781c1e915406b6",
    ),
];

// covers: SF-MLS-1, SF-MLS-2, SF-KEY-1
#[test]
fn mls_sender_known_answer() {
    for (suite, key, salt, frame) in KAT {
        let epoch: Vec<u8> = (0..suite.nk()).map(|i| i as u8).collect();
        let base = sender_base_key(suite, &BaseKey::new(&epoch), 3).unwrap();
        let k = kid(0, 3, 14, 6, 4).unwrap();
        assert_eq!(k, Kid(0x3e));
        let ks = derive_key_salt(suite, k, &base).unwrap();
        assert_eq!(hex::encode(&ks.key[..suite.nk()]), key);
        assert_eq!(hex::encode(&ks.salt[..]), salt);
        let mut s = Sender::with_counter(suite, k, &base, Counter(7)).unwrap();
        assert_eq!(hex::encode(s.seal(b"md", b"blindcall").unwrap()), frame);
        // Another sender index of the same epoch: same base key, different KID, different key.
        let k2 = kid(0, 4, 14, 6, 4).unwrap();
        let mut rx = Receiver::new(ReceiverConfig::default());
        rx.add_key(
            suite,
            k2,
            &sender_base_key(suite, &BaseKey::new(&epoch), 4).unwrap(),
        )
        .unwrap();
        let mut forged = hex::decode(frame).unwrap();
        forged[1] = 0x4e; // claim KID 0x4e: the frame must not verify under that sender's key
        assert!(rx.open(b"md", &forged).is_err());
    }
}
