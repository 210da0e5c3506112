//! Unit tests of the manifest codec and of the verifier state machine on synthetic inputs
//! (manifests taken as verified; real signatures are in `crates/group/tests/media_auth.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use blindcall_sframe::{Counter, Kid};
use proptest::prelude::*;

use super::*;
use crate::kid::KidLayout;

const MS: Duration = Duration::from_millis(1);
const EPOCH: u64 = 5;
const VICTIM: u32 = 1;
const FORGER: u32 = 2;
const PV: u64 = 100;
const PF: u64 = 200;

fn layout() -> KidLayout {
    KidLayout::new(10, 4, 2).unwrap()
}

fn kid(leaf: u32, context: u64) -> Kid {
    layout().encode(context, leaf, EPOCH).unwrap()
}

fn frame_bytes(leaf: u32, ctr: u64, forged: bool) -> Vec<u8> {
    let mut v = vec![u8::from(forged)];
    v.extend_from_slice(&leaf.to_be_bytes());
    v.extend_from_slice(&ctr.to_be_bytes());
    v
}

fn frame(stream: StreamRef, leaf: u32, ctr: u64, forged: bool) -> AuthenticatedFrame {
    AuthenticatedFrame {
        stream,
        leaf,
        signs: true,
        epoch: EPOCH,
        kid: kid(leaf, 0),
        ctr: Counter(ctr),
        hash: frame_hash(&frame_bytes(leaf, ctr, forged)),
    }
}

fn manifest(leaf: u32, participant: u64, ctrs: std::ops::Range<u64>) -> VerifiedManifest {
    VerifiedManifest::assume_verified(ManifestBody {
        epoch: EPOCH,
        leaf,
        participant,
        entries: vec![ManifestEntry {
            kid: kid(leaf, 0),
            first_ctr: Counter(ctrs.start),
            hashes: ctrs
                .map(|c| frame_hash(&frame_bytes(leaf, c, false)))
                .collect(),
        }],
    })
}

fn victim_stream() -> StreamRef {
    StreamRef {
        id: 1,
        participant: PV,
    }
}

fn forger_stream() -> StreamRef {
    StreamRef {
        id: 2,
        participant: PF,
    }
}

fn verifier() -> MediaVerifier {
    MediaVerifier::new(layout(), VerifierConfig::default())
}

fn events(v: &mut MediaVerifier) -> Vec<MediaAuthEvent> {
    std::iter::from_fn(|| v.poll_event()).collect()
}

fn reasons(v: &mut MediaVerifier) -> Vec<(u32, u64, ImpersonationReason)> {
    events(v)
        .into_iter()
        .filter_map(|e| match e {
            MediaAuthEvent::Impersonation {
                leaf,
                stream,
                reason,
                ..
            } => Some((leaf, stream.id, reason)),
            _ => None,
        })
        .collect()
}

/// check_stream then on_opened, as the caller does.
fn deliver(v: &mut MediaVerifier, now: Instant, f: &AuthenticatedFrame) -> FrameAuth {
    match v.check_stream(now, f.stream, f.leaf, f.kid) {
        Ok(()) => v.on_opened(now, f),
        Err(StreamRefusal::ForeignKid { .. }) => {
            FrameAuth::Refused(ImpersonationReason::ForeignKidOnStream)
        }
        Err(StreamRefusal::Blocked { reason, .. }) => FrameAuth::Refused(reason),
    }
}

fn sample_body() -> ManifestBody {
    ManifestBody {
        epoch: 0x0102_0304_0506_0708,
        leaf: 0x0a0b_0c0d,
        participant: 0x1112_1314_1516_1718,
        entries: vec![
            ManifestEntry {
                kid: Kid(0x21),
                first_ctr: Counter(0x31),
                hashes: vec![FrameHash([0xaa; 16]), FrameHash([0xbb; 16])],
            },
            ManifestEntry {
                kid: Kid(0x22),
                first_ctr: Counter(u64::MAX),
                hashes: vec![FrameHash([0xcc; 16])],
            },
        ],
    }
}

struct FixedSigner(Vec<u8>);

impl openmls_traits::signatures::Signer for FixedSigner {
    fn sign(&self, _: &[u8]) -> Result<Vec<u8>, openmls_traits::signatures::SignerError> {
        Ok(self.0.clone())
    }
    fn signature_scheme(&self) -> openmls_traits::types::SignatureScheme {
        openmls_traits::types::SignatureScheme::ED25519
    }
}

fn signed_bytes(body: ManifestBody, sig_len: usize) -> Vec<u8> {
    body.sign(&[9; 32], &FixedSigner(vec![0x5a; sig_len]))
        .unwrap()
        .encode()
}

// ---------------------------------------------------------------------------------------
// Codec

// covers: MA-WIRE-1, MA-WIRE-3
#[test]
fn encoding_is_the_documented_byte_layout_and_round_trips() {
    let bytes = signed_bytes(sample_body(), 3);
    let expected = hex::decode(concat!(
        "01",               // version
        "0102030405060708", // epoch
        "0a0b0c0d",         // leaf
        "1112131415161718", // participant
        "0054",             // entries: 2 * 18 + 3 * 16 = 84 bytes
        "0000000000000021",
        "0000000000000031",
        "0020",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "0000000000000022",
        "ffffffffffffffff",
        "0010",
        "cccccccccccccccccccccccccccccccc",
        "0003",
        "5a5a5a", // signature
    ))
    .unwrap();
    assert_eq!(bytes, expected);
    let decoded = SignedManifest::decode(&bytes).unwrap();
    assert_eq!(decoded.body(), &sample_body());
    assert_eq!(decoded.signature(), &[0x5a; 3]);
    assert_eq!(decoded.encode(), bytes);
    assert_eq!(decoded.encoded_len(), bytes.len());
    assert_eq!(sample_body().encoded_len(), bytes.len() - 5);
}

// covers: MA-HASH-1
#[test]
fn the_frame_hash_is_truncated_sha256_of_the_whole_frame() {
    // FIPS 180-2 example: SHA-256("abc").
    assert_eq!(
        frame_hash(b"abc").0.to_vec(),
        hex::decode("ba7816bf8f01cfea414140de5dae2223").unwrap()
    );
    // Every byte counts, the header and the tag included.
    let frame = [0x11u8, 0x22, 0x33, 0x44, 0x55];
    for i in 0..frame.len() {
        let mut f = frame;
        f[i] ^= 0x80;
        assert_ne!(frame_hash(&f), frame_hash(&frame));
    }
}

// covers: MA-SIGN-1
#[test]
fn the_signed_content_is_mls_sign_content_with_the_manifest_label() {
    let body = sample_body().encode().unwrap();
    let binding = [7u8; 32];
    let content = sign_content(&binding, &body);
    let label = b"MLS 1.0 blindcall media manifest v1";
    assert_eq!(content[0] as usize, label.len()); // 1-byte varint (35)
    assert_eq!(&content[1..36], label);
    let len = 32 + body.len(); // 139: a 2-byte varint
    assert_eq!(&content[36..38], &[0x40 | (len >> 8) as u8, len as u8]);
    assert_eq!(&content[38..70], &binding);
    assert_eq!(&content[70..], &body[..]);

    // verify() hands exactly these bytes, the claimed epoch and leaf to the caller's check.
    let signed = sample_body()
        .sign(&binding, &FixedSigner(vec![1; 64]))
        .unwrap();
    let mut seen = None;
    let ok = signed.verify(&binding, |i| {
        seen = Some((i.epoch, i.leaf, i.payload.to_vec(), i.signature.to_vec()));
        true
    });
    assert!(ok.is_ok());
    let (epoch, leaf, payload, sig) = seen.unwrap();
    assert_eq!((epoch, leaf), (sample_body().epoch, sample_body().leaf));
    assert_eq!((payload, sig), (content, vec![1; 64]));
}

// covers: MA-SIGN-3
#[test]
fn a_failed_signature_check_yields_no_verified_manifest() {
    let signed = sample_body()
        .sign(&[0; 32], &FixedSigner(vec![1; 64]))
        .unwrap();
    assert_eq!(
        signed.verify(&[0; 32], |_| false),
        Err(ManifestError::BadSignature)
    );
    let long = sample_body().sign(&[0; 32], &FixedSigner(vec![1; MAX_SIGNATURE_LEN + 1]));
    assert_eq!(
        long.unwrap_err(),
        SignError::SignatureLength {
            len: MAX_SIGNATURE_LEN + 1
        }
    );
    let empty = ManifestBody {
        entries: vec![],
        ..sample_body()
    };
    assert_eq!(
        empty.sign(&[0; 32], &FixedSigner(vec![1])).unwrap_err(),
        SignError::Invalid(ManifestError::NoEntries)
    );
}

fn set(bytes: &mut [u8], at: usize, v: &[u8]) {
    bytes[at..at + v.len()].copy_from_slice(v);
}

// covers: MA-WIRE-2
#[test]
fn malformed_manifests_get_typed_errors() {
    let good = signed_bytes(sample_body(), 3);
    let dec = |b: &[u8]| SignedManifest::decode(b).unwrap_err();

    // Every strict prefix is truncated somewhere (never a panic, never Ok).
    for n in 0..good.len() {
        assert!(
            matches!(dec(&good[..n]), ManifestError::Truncated { .. }),
            "prefix {n}: {:?}",
            dec(&good[..n])
        );
    }
    let mut b = good.clone();
    b.push(0);
    assert_eq!(dec(&b), ManifestError::TrailingBytes { extra: 1 });
    let mut b = good.clone();
    b[0] = 2;
    assert_eq!(dec(&b), ManifestError::UnsupportedVersion { version: 2 });
    assert_eq!(
        dec(&vec![1; MAX_MANIFEST_LEN + 1]),
        ManifestError::TooLong {
            len: MAX_MANIFEST_LEN + 1,
            max: MAX_MANIFEST_LEN
        }
    );
    // No entries.
    let mut b = good[..21].to_vec();
    b.extend_from_slice(&[0, 0, 0, 1, 0x5a]);
    assert_eq!(dec(&b), ManifestError::NoEntries);
    // A hash vector that is not a multiple of 16 bytes, or empty.
    let mut b = good.clone();
    set(&mut b, 39, &[0x00, 0x1f]);
    assert_eq!(dec(&b), ManifestError::HashesLength { len: 31 });
    let mut b = good.clone();
    set(&mut b, 39, &[0, 0]);
    assert_eq!(dec(&b), ManifestError::HashesLength { len: 0 });
    // The second entry starts at u64::MAX; two hashes would overflow.
    let mut body = sample_body();
    body.entries[1].hashes.push(FrameHash([0; 16]));
    assert_eq!(
        body.encode().unwrap_err(),
        ManifestError::CounterOverflow { kid: Kid(0x22) }
    );
    // Same KID twice over a common counter.
    let mut b = good.clone();
    set(&mut b, 73, &0x21u64.to_be_bytes());
    set(&mut b, 81, &0x32u64.to_be_bytes());
    assert_eq!(
        dec(&b),
        ManifestError::OverlappingEntries { kid: Kid(0x21) }
    );
    // Same KID twice, adjacent but not overlapping, is fine.
    set(&mut b, 81, &0x33u64.to_be_bytes());
    assert!(SignedManifest::decode(&b).is_ok());
    // Signature lengths 0 and over the cap.
    let sig_at = good.len() - 5;
    let mut b = good[..sig_at].to_vec();
    b.extend_from_slice(&[0, 0]);
    assert_eq!(dec(&b), ManifestError::SignatureLength { len: 0 });
    let mut b = good[..sig_at].to_vec();
    b.extend_from_slice(&257u16.to_be_bytes());
    b.extend_from_slice(&[0; 257]);
    assert_eq!(dec(&b), ManifestError::SignatureLength { len: 257 });
    // A body over the body cap cannot be encoded.
    let huge = ManifestBody {
        entries: vec![ManifestEntry {
            kid: Kid(1),
            first_ctr: Counter(0),
            hashes: vec![FrameHash([0; 16]); MAX_BODY_LEN / 16],
        }],
        ..sample_body()
    };
    assert!(matches!(
        huge.encode(),
        Err(ManifestError::TooLong {
            max: MAX_BODY_LEN,
            ..
        })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x3a17),
        ..ProptestConfig::default()
    })]

    // covers: MA-WIRE-2, MA-WIRE-3
    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_ones_are_canonical(
        bytes in proptest::collection::vec(any::<u8>(), 0..600)
    ) {
        if let Ok(m) = SignedManifest::decode(&bytes) {
            prop_assert_eq!(m.encode(), bytes);
        }
    }

    // covers: MA-WIRE-1, MA-WIRE-3
    #[test]
    fn valid_bodies_round_trip(
        epoch in any::<u64>(),
        leaf in any::<u32>(),
        participant in any::<u64>(),
        entries in proptest::collection::vec((any::<u64>(), any::<u64>(), 1usize..20, any::<u8>()), 1..8),
        sig_len in 1usize..=MAX_SIGNATURE_LEN,
    ) {
        let entries: Vec<ManifestEntry> = entries
            .into_iter()
            .enumerate()
            .map(|(i, (k, first, n, seed))| ManifestEntry {
                // Distinct KIDs, so entries never overlap.
                kid: Kid((k & !0xff) | i as u64),
                first_ctr: Counter(first.min(u64::MAX - n as u64)),
                hashes: (0..n).map(|j| FrameHash([seed.wrapping_add(j as u8); 16])).collect(),
            })
            .collect();
        let body = ManifestBody { epoch, leaf, participant, entries };
        let bytes = signed_bytes(body.clone(), sig_len);
        prop_assert_eq!(bytes.len(), body.encoded_len() + 2 + sig_len);
        let decoded = SignedManifest::decode(&bytes).unwrap();
        prop_assert_eq!(decoded.body(), &body);
        prop_assert_eq!(decoded.encode(), bytes);
    }

    // covers: MA-WIRE-2
    #[test]
    fn mutated_manifests_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut bytes = signed_bytes(sample_body(), 64);
        for (at, v) in flips {
            let n = bytes.len();
            bytes[at % n] = v;
        }
        let n = bytes.len();
        bytes.truncate(n - cut % 4);
        if let Ok(m) = SignedManifest::decode(&bytes) {
            prop_assert_eq!(m.encode(), bytes);
            prop_assert!(m.body().validate().is_ok());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Verifier

// covers: MA-VER-1, MA-OBS-1
#[test]
fn honest_frames_then_manifest_verify_without_events() {
    let t = Instant::now();
    let mut v = verifier();
    for ctr in 0..10 {
        let f = frame(victim_stream(), VICTIM, ctr, false);
        assert_eq!(
            deliver(&mut v, t + ctr as u32 * 20 * MS, &f),
            FrameAuth::Pending
        );
    }
    assert_eq!(v.pending_frames(), 10);
    assert_eq!(v.poll_timeout(), Some(t + Duration::from_secs(1)));
    let n = v
        .on_manifest(t + 250 * MS, &manifest(VICTIM, PV, 0..10))
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(v.pending_frames(), 0);
    v.handle_timeout(t + Duration::from_secs(5));
    assert!(events(&mut v).is_empty());
    let c = v.stream_counters(1).unwrap();
    assert_eq!(
        (c.verified, c.pending, c.forged, c.no_signature),
        (10, 10, 0, 0)
    );
    assert_eq!(v.leaf_counters(VICTIM), Some(c));
    assert_eq!(v.counters().manifests, 1);
    // Waits: 250 ms for the first frame down to 70 ms for the last.
    let w = v.signature_wait();
    assert_eq!(w.count(), 10);
    assert_eq!(w.max(), 250 * MS);
    assert_eq!(w.quantile(0.0), Some(70 * MS));
    let status = v.stream_status(1).unwrap();
    assert_eq!((status.pinned, status.blocked), (Some(VICTIM), None));
}

// covers: MA-VER-1
#[test]
fn a_manifest_before_its_frames_verifies_them_on_arrival() {
    let t = Instant::now();
    let mut v = verifier();
    v.on_manifest(t, &manifest(VICTIM, PV, 0..5)).unwrap();
    for ctr in 0..5 {
        let f = frame(victim_stream(), VICTIM, ctr, false);
        assert_eq!(deliver(&mut v, t + 30 * MS, &f), FrameAuth::Verified);
    }
    // A frame past the manifest waits for the next one.
    let f = frame(victim_stream(), VICTIM, 5, false);
    assert_eq!(deliver(&mut v, t + 40 * MS, &f), FrameAuth::Pending);
    assert_eq!(v.signature_wait().quantile(1.0), Some(Duration::ZERO));
    assert!(events(&mut v).is_empty());
}

// covers: MA-PIN-1, MA-DET-6
#[test]
fn a_pinned_stream_refuses_other_leaves_before_decryption_with_one_event_per_burst() {
    let t = Instant::now();
    let mut v = verifier();
    let own = frame(forger_stream(), FORGER, 0, false);
    assert_eq!(deliver(&mut v, t, &own), FrameAuth::Pending);
    for i in 0..20u32 {
        let forged = frame(forger_stream(), VICTIM, u64::from(i), true);
        assert_eq!(
            v.check_stream(t + i * 10 * MS, forged.stream, VICTIM, forged.kid),
            Err(StreamRefusal::ForeignKid {
                pinned: FORGER,
                claimed: VICTIM
            })
        );
    }
    // on_opened refuses too if the caller skipped check_stream.
    let forged = frame(forger_stream(), VICTIM, 99, true);
    assert_eq!(
        v.on_opened(t + 300 * MS, &forged),
        FrameAuth::Refused(ImpersonationReason::ForeignKidOnStream)
    );
    let evs = events(&mut v);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(matches!(
        evs[0],
        MediaAuthEvent::Impersonation {
            leaf: VICTIM,
            reason: ImpersonationReason::ForeignKidOnStream,
            detected_after: Duration::ZERO,
            stream: StreamRef {
                id: 2,
                participant: PF
            },
            ..
        }
    ));
    assert_eq!(v.stream_counters(2).unwrap().foreign, 21);
    assert_eq!(v.leaf_counters(VICTIM).unwrap().foreign, 21);
    assert_eq!(v.counters().events_suppressed, 20);
    // The forger's own frames still flow on its stream.
    let own = frame(forger_stream(), FORGER, 1, false);
    assert_eq!(deliver(&mut v, t + 310 * MS, &own), FrameAuth::Pending);

    // After a quiet gap a new burst raises a new event.
    let later = t + 310 * MS + VerifierConfig::default().burst_gap;
    let forged = frame(forger_stream(), VICTIM, 100, true);
    assert!(
        v.check_stream(later, forged.stream, VICTIM, forged.kid)
            .is_err()
    );
    assert_eq!(
        reasons(&mut v),
        [(VICTIM, 2, ImpersonationReason::ForeignKidOnStream)]
    );
}

// covers: MA-DET-1, MA-DET-4
#[test]
fn a_mismatching_hash_blocks_that_stream_and_never_the_victims_own() {
    let t = Instant::now();
    let mut v = verifier();
    // The victim talks on its stream; the forger seals under the victim's KID on a fresh
    // stream of its own, reusing counters the victim also uses.
    for ctr in 0..5 {
        let genuine = frame(victim_stream(), VICTIM, ctr, false);
        assert_eq!(deliver(&mut v, t + 10 * MS, &genuine), FrameAuth::Pending);
        let forged = frame(forger_stream(), VICTIM, ctr, true);
        assert_eq!(deliver(&mut v, t + 20 * MS, &forged), FrameAuth::Pending);
    }
    // The victim's manifest: forger stream has the wrong participant and wrong hashes.
    v.on_manifest(t + 260 * MS, &manifest(VICTIM, PV, 0..5))
        .unwrap();
    let evs = events(&mut v);
    assert_eq!(evs.len(), 1, "{evs:?}");
    let MediaAuthEvent::Impersonation {
        leaf,
        kid: claimed_kid,
        stream,
        reason,
        detected_after,
    } = evs[0]
    else {
        panic!("{evs:?}")
    };
    assert_eq!((leaf, claimed_kid, stream.id), (VICTIM, kid(VICTIM, 0), 2));
    assert_eq!(reason, ImpersonationReason::WrongParticipant);
    assert_eq!(detected_after, 240 * MS);
    assert_eq!(v.stream_counters(1).unwrap().verified, 5);
    assert_eq!(v.stream_counters(2).unwrap().wrong_participant, 5);

    // Further forged frames on that stream are refused before decryption...
    let forged = frame(forger_stream(), VICTIM, 5, true);
    assert_eq!(
        v.check_stream(t + 300 * MS, forged.stream, VICTIM, forged.kid),
        Err(StreamRefusal::Blocked {
            leaf: VICTIM,
            reason: ImpersonationReason::WrongParticipant
        })
    );
    // ... while the victim's own stream keeps verifying.
    let genuine = frame(victim_stream(), VICTIM, 5, false);
    assert_eq!(deliver(&mut v, t + 300 * MS, &genuine), FrameAuth::Pending);
    v.on_manifest(t + 500 * MS, &manifest(VICTIM, PV, 5..6))
        .unwrap();
    assert_eq!(v.stream_counters(1).unwrap().verified, 6);
    assert_eq!(v.stream_status(1).unwrap().blocked, None);
    assert!(events(&mut v).is_empty());

    // A forged frame on the victim's participant (only a colluding relay can put one there)
    // is a hash mismatch, caught when the manifest arrives, or at once if it came first.
    let other = StreamRef {
        id: 3,
        participant: PV,
    };
    let forged = frame(other, VICTIM, 7, true);
    assert_eq!(deliver(&mut v, t + 510 * MS, &forged), FrameAuth::Pending);
    v.on_manifest(t + 600 * MS, &manifest(VICTIM, PV, 6..9))
        .unwrap();
    assert_eq!(
        reasons(&mut v),
        [(VICTIM, 3, ImpersonationReason::HashMismatch)]
    );
    let again = StreamRef {
        id: 4,
        participant: PV,
    };
    let forged = frame(again, VICTIM, 8, true);
    assert_eq!(
        deliver(&mut v, t + 610 * MS, &forged),
        FrameAuth::Refused(ImpersonationReason::HashMismatch)
    );
    assert_eq!(
        reasons(&mut v),
        [(VICTIM, 4, ImpersonationReason::HashMismatch)]
    );
    assert_eq!(v.leaf_counters(VICTIM).unwrap().forged, 2);
    assert_eq!(v.detection_latency().count(), 3);
}

// covers: MA-DET-2
#[test]
fn genuine_frames_replayed_on_another_participant_are_wrong_participant() {
    let t = Instant::now();
    let mut v = verifier();
    // Replayed copies (same bytes, same hashes) arrive on the forger's stream before the
    // victim's manifest...
    for ctr in 0..3 {
        let replay = frame(forger_stream(), VICTIM, ctr, false);
        assert_eq!(deliver(&mut v, t, &replay), FrameAuth::Pending);
    }
    v.on_manifest(t + 200 * MS, &manifest(VICTIM, PV, 0..3))
        .unwrap();
    assert_eq!(
        reasons(&mut v),
        [(VICTIM, 2, ImpersonationReason::WrongParticipant)]
    );
    assert_eq!(v.stream_counters(2).unwrap().verified, 0);
    // ... or after it, on yet another stream: refused at once.
    let third = StreamRef {
        id: 3,
        participant: 300,
    };
    let replay = frame(third, VICTIM, 1, false);
    assert_eq!(
        deliver(&mut v, t + 210 * MS, &replay),
        FrameAuth::Refused(ImpersonationReason::WrongParticipant)
    );
    // Even past the covered range: the leaf's participant is known for the epoch.
    let fourth = StreamRef {
        id: 4,
        participant: 400,
    };
    let forged = frame(fourth, VICTIM, 50, true);
    assert_eq!(
        deliver(&mut v, t + 220 * MS, &forged),
        FrameAuth::Refused(ImpersonationReason::WrongParticipant)
    );
    assert_eq!(reasons(&mut v).len(), 2);
}

// covers: MA-DET-3
#[test]
fn frames_never_signed_raise_no_signature_at_the_bound() {
    let t = Instant::now();
    let mut v = verifier();
    let bound = v.config().verify_bound;
    for i in 0..5u32 {
        let forged = frame(forger_stream(), VICTIM, u64::from(i), true);
        assert_eq!(
            deliver(&mut v, t + i * 20 * MS, &forged),
            FrameAuth::Pending
        );
    }
    assert_eq!(v.poll_timeout(), Some(t + bound));
    v.handle_timeout(t + bound - MS);
    assert!(events(&mut v).is_empty());
    v.handle_timeout(t + bound);
    let evs = events(&mut v);
    assert!(matches!(
        evs[..],
        [MediaAuthEvent::Impersonation {
            leaf: VICTIM,
            reason: ImpersonationReason::NoSignature,
            detected_after,
            ..
        }] if detected_after == bound
    ));
    assert_eq!(v.stream_counters(2).unwrap().no_signature, 5);
    assert_eq!(v.pending_frames(), 0);
    assert_eq!(v.poll_timeout(), None);
    let forged = frame(forger_stream(), VICTIM, 9, true);
    assert_eq!(
        deliver(&mut v, t + bound + MS, &forged),
        FrameAuth::Refused(ImpersonationReason::NoSignature)
    );
    assert_eq!(v.stream_counters(2).unwrap().blocked, 1);
    assert_eq!(v.detection_latency().quantile(0.5), Some(bound));
}

// covers: MA-DET-5
#[test]
fn a_late_manifest_naming_the_stream_lifts_a_no_signature_block_and_only_then() {
    let t = Instant::now();
    let mut v = verifier();
    let bound = v.config().verify_bound;
    // The victim's manifests are delayed past the bound (a stalled control connection).
    let f = frame(victim_stream(), VICTIM, 0, false);
    assert_eq!(deliver(&mut v, t, &f), FrameAuth::Pending);
    let forged = frame(forger_stream(), VICTIM, 40, true);
    assert_eq!(deliver(&mut v, t, &forged), FrameAuth::Pending);
    v.handle_timeout(t + bound);
    assert_eq!(reasons(&mut v).len(), 2);
    v.on_manifest(t + bound + 100 * MS, &manifest(VICTIM, PV, 0..3))
        .unwrap();
    let evs = events(&mut v);
    // The victim's stream is unblocked; the forger's becomes a conclusive WrongParticipant.
    assert!(evs.contains(&MediaAuthEvent::StreamUnblocked {
        leaf: VICTIM,
        stream: victim_stream()
    }));
    assert!(evs.iter().any(|e| matches!(
        e,
        MediaAuthEvent::Impersonation {
            stream: StreamRef { id: 2, .. },
            reason: ImpersonationReason::WrongParticipant,
            ..
        }
    )));
    assert_eq!(v.stream_status(1).unwrap().blocked, None);
    assert_eq!(
        v.stream_status(2).unwrap().blocked,
        Some(ImpersonationReason::WrongParticipant)
    );
    let f = frame(victim_stream(), VICTIM, 3, false);
    assert_eq!(
        deliver(&mut v, t + bound + 110 * MS, &f),
        FrameAuth::Pending
    );
    // A conclusive block is never lifted.
    v.on_manifest(t + bound + 200 * MS, &manifest(VICTIM, PV, 3..4))
        .unwrap();
    assert_eq!(
        v.stream_status(2).unwrap().blocked,
        Some(ImpersonationReason::WrongParticipant)
    );
    assert_eq!(v.counters().unblocked, 1);
}

// covers: MA-UNS-1
#[test]
fn unsigned_senders_are_reported_once_per_epoch_and_not_refused() {
    let t = Instant::now();
    let mut v = verifier();
    for ctr in 0..5 {
        let f = AuthenticatedFrame {
            signs: false,
            ..frame(victim_stream(), VICTIM, ctr, false)
        };
        assert_eq!(deliver(&mut v, t, &f), FrameAuth::Unsigned);
    }
    let f = AuthenticatedFrame {
        signs: false,
        epoch: EPOCH + 1,
        ..frame(victim_stream(), VICTIM, 0, false)
    };
    assert_eq!(deliver(&mut v, t, &f), FrameAuth::Unsigned);
    v.handle_timeout(t + Duration::from_secs(10));
    assert_eq!(
        events(&mut v),
        [
            MediaAuthEvent::SenderUnauthenticated {
                leaf: VICTIM,
                epoch: EPOCH
            },
            MediaAuthEvent::SenderUnauthenticated {
                leaf: VICTIM,
                epoch: EPOCH + 1
            }
        ]
    );
    assert_eq!(v.stream_counters(1).unwrap().unsigned, 6);
}

// covers: MA-UNS-2
#[test]
fn with_signatures_required_an_unsigned_sender_is_no_signature() {
    let t = Instant::now();
    let mut v = MediaVerifier::new(
        layout(),
        VerifierConfig {
            require_signed: true,
            ..VerifierConfig::default()
        },
    );
    let f = AuthenticatedFrame {
        signs: false,
        ..frame(victim_stream(), VICTIM, 0, false)
    };
    assert_eq!(
        deliver(&mut v, t, &f),
        FrameAuth::Refused(ImpersonationReason::NoSignature)
    );
    let evs = events(&mut v);
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(matches!(
        evs[1],
        MediaAuthEvent::Impersonation {
            reason: ImpersonationReason::NoSignature,
            detected_after: Duration::ZERO,
            ..
        }
    ));
    let f = AuthenticatedFrame {
        signs: false,
        ..frame(victim_stream(), VICTIM, 1, false)
    };
    assert_eq!(
        deliver(&mut v, t, &f),
        FrameAuth::Refused(ImpersonationReason::NoSignature)
    );
    // Conclusive: a manifest (which such a leaf would not send anyway) does not lift it.
    v.on_manifest(t, &manifest(VICTIM, PV, 0..2)).unwrap();
    assert_eq!(
        v.stream_status(1).unwrap().blocked,
        Some(ImpersonationReason::NoSignature)
    );
}

// covers: MA-SIGN-4
#[test]
fn a_manifest_vouching_for_another_leafs_or_epochs_kid_is_refused() {
    let t = Instant::now();
    let mut v = verifier();
    let forged = frame(forger_stream(), VICTIM, 0, true);
    assert_eq!(deliver(&mut v, t, &forged), FrameAuth::Pending);
    // The forger signs (validly, with its own key) a manifest covering the victim's KID.
    let mut body = manifest(VICTIM, PF, 0..1).body().clone();
    body.leaf = FORGER;
    body.entries[0].hashes[0] = forged.hash;
    let m = VerifiedManifest::assume_verified(body.clone());
    assert_eq!(
        v.on_manifest(t, &m),
        Err(ManifestRefusal::ForeignKid {
            kid: kid(VICTIM, 0)
        })
    );
    // The same for its own leaf but another epoch's KID.
    body.entries[0].kid = layout().encode(0, FORGER, EPOCH + 1).unwrap();
    let m = VerifiedManifest::assume_verified(body);
    assert!(v.on_manifest(t, &m).is_err());
    assert_eq!(v.counters().manifests_refused, 2);
    assert_eq!(v.stream_status(2).unwrap().pending, 1);
}

// covers: MA-BND-1
#[test]
fn a_flood_of_unsigned_frames_overflows_the_pending_cap_into_no_signature() {
    let t = Instant::now();
    let cfg = VerifierConfig {
        max_pending_per_stream: 8,
        ..VerifierConfig::default()
    };
    let mut v = MediaVerifier::new(layout(), cfg);
    for ctr in 0..8 {
        let f = frame(forger_stream(), VICTIM, ctr, true);
        assert_eq!(deliver(&mut v, t + MS, &f), FrameAuth::Pending);
    }
    let f = frame(forger_stream(), VICTIM, 8, true);
    assert_eq!(
        deliver(&mut v, t + 2 * MS, &f),
        FrameAuth::Refused(ImpersonationReason::NoSignature)
    );
    assert!(matches!(
        reasons(&mut v)[..],
        [(VICTIM, 2, ImpersonationReason::NoSignature)]
    ));
    assert_eq!(v.stream_counters(2).unwrap().no_signature, 9);
    assert_eq!(v.pending_frames(), 0);
}

// covers: MA-VER-2, MA-BND-2
#[test]
fn stored_manifests_expire_and_are_capped_per_leaf() {
    let t = Instant::now();
    let cfg = VerifierConfig {
        max_hashes_per_leaf: 10,
        ..VerifierConfig::default()
    };
    let retention = cfg.manifest_retention;
    let mut v = MediaVerifier::new(layout(), cfg);
    v.on_manifest(t, &manifest(VICTIM, PV, 0..6)).unwrap();
    v.on_manifest(t + 100 * MS, &manifest(VICTIM, PV, 6..12))
        .unwrap();
    // The first manifest was evicted by the cap: its frames now wait.
    assert_eq!(v.stored_hashes(), 6);
    assert_eq!(v.counters().hashes_evicted, 6);
    let old = frame(victim_stream(), VICTIM, 1, false);
    assert_eq!(deliver(&mut v, t + 110 * MS, &old), FrameAuth::Pending);
    let kept = frame(victim_stream(), VICTIM, 7, false);
    assert_eq!(deliver(&mut v, t + 110 * MS, &kept), FrameAuth::Verified);
    // Retention: gone `manifest_retention` after arrival.
    assert_eq!(
        v.poll_timeout(),
        Some(t + 110 * MS + Duration::from_secs(1))
    );
    v.handle_timeout(t + 100 * MS + retention);
    assert_eq!(v.stored_hashes(), 0);
    // Epochs: at most four are remembered; the oldest goes first.
    for e in 0..6u64 {
        let mut body = manifest(VICTIM, PV, 0..1).body().clone();
        body.epoch = 16 + e;
        body.entries[0].kid = layout().encode(0, VICTIM, 16 + e).unwrap();
        v.on_manifest(t + 3 * retention, &VerifiedManifest::assume_verified(body))
            .unwrap();
    }
    assert_eq!(v.stored_hashes(), 4);
    v.retire_epoch(21);
    assert_eq!(v.stored_hashes(), 3);
}

// covers: MA-BND-2
#[test]
fn the_event_queue_is_bounded() {
    let t = Instant::now();
    let mut v = verifier();
    for id in 0..1100u64 {
        let s = StreamRef {
            id,
            participant: 1000 + id,
        };
        let own = frame(s, FORGER, 0, false);
        v.on_opened(t, &own);
        let _ = v.check_stream(t, s, VICTIM, kid(VICTIM, 0));
    }
    assert_eq!(events(&mut v).len(), 1024);
    assert_eq!(v.counters().events_dropped, 76);
    assert_eq!(v.counters().events, 1100);
}

#[test]
fn closing_a_stream_forgets_its_pin_and_time_never_goes_back() {
    let t = Instant::now();
    let mut v = verifier();
    let f = frame(forger_stream(), FORGER, 0, false);
    assert_eq!(
        deliver(&mut v, t + Duration::from_secs(1), &f),
        FrameAuth::Pending
    );
    let c = v.close_stream(2).unwrap();
    assert_eq!(c.pending, 1);
    assert_eq!(v.stream_status(2), None);
    // A reopened stream pins afresh; an older `now` counts as the last one.
    let g = frame(forger_stream(), VICTIM, 0, false);
    assert_eq!(deliver(&mut v, t, &g), FrameAuth::Pending);
    assert_eq!(v.poll_timeout(), Some(t + Duration::from_secs(2)));
}
