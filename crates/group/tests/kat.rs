//! Known-answer tests of our RFC 9605 §5.2 derivation: fixed MLS exporter output → sender base
//! keys → KIDs → per-sender SFrame key and salt → one sealed frame per sender.
//!
//! The vectors in `tests/kat/sframe_mls.json` were produced once by `generate_vectors` below
//! (`cargo test -p blindcall-group --test kat -- --ignored --nocapture generate_vectors`),
//! which computes everything with `ring` directly (HKDF-SHA256, AES-128-GCM, the RFC 9605
//! §4.3 header written by hand) and shares no code with blindcall-sframe or blindcall-group.
//! The check below recomputes them through the crates' public API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use blindcall_group::KidLayout;
use blindcall_group::keyring::member_base_key;
use blindcall_sframe::{BaseKey, CipherSuite, Header, Receiver, ReceiverConfig, Sender};
use ring::{aead, hkdf};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Vectors {
    note: String,
    sframe_suite: u16,
    sender_bits: u8,
    epoch_bits: u8,
    context_bits: u8,
    epoch: u64,
    exporter_label: String,
    exporter_output: String,
    metadata: String,
    plaintext: String,
    senders: Vec<SenderVector>,
}

#[derive(Serialize, Deserialize)]
struct SenderVector {
    leaf: u32,
    context: u64,
    kid: u64,
    base_key: String,
    sframe_key: String,
    sframe_salt: String,
    counter: u64,
    sealed_frame: String,
}

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kat/sframe_mls.json");

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, info: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    prk.expand(&[info], Len(len))
        .unwrap()
        .fill(&mut out)
        .unwrap();
    out
}

/// Independent RFC 9605 computation (suite 4 only).
fn independent(
    epoch_secret: &[u8],
    kid: u64,
    counter: u64,
    metadata: &[u8],
    plaintext: &[u8],
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    // §5.2: every member's base key is the epoch's exporter output.
    let base_key = epoch_secret;
    // §4.4.2
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(base_key);
    let mut key_label = b"SFrame 1.0 Secret key ".to_vec();
    key_label.extend_from_slice(&kid.to_be_bytes());
    key_label.extend_from_slice(&4u16.to_be_bytes());
    let mut salt_label = b"SFrame 1.0 Secret salt ".to_vec();
    salt_label.extend_from_slice(&kid.to_be_bytes());
    salt_label.extend_from_slice(&4u16.to_be_bytes());
    let key = expand(&prk, &key_label, 16);
    let salt = expand(&prk, &salt_label, 12);
    // §4.3 header
    fn min_be(v: u64) -> Vec<u8> {
        let b = v.to_be_bytes();
        let skip = b.iter().take_while(|x| **x == 0).count().min(7);
        b[skip..].to_vec()
    }
    let mut header = vec![0u8];
    if kid < 8 {
        header[0] |= (kid as u8) << 4;
    } else {
        let k = min_be(kid);
        header[0] |= 0x80 | (((k.len() - 1) as u8) << 4);
        header.extend_from_slice(&k);
    }
    if counter < 8 {
        header[0] |= counter as u8;
    } else {
        let c = min_be(counter);
        header[0] |= 0x08 | ((c.len() - 1) as u8);
        header.extend_from_slice(&c);
    }
    // §4.4.3
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    for (n, s) in nonce.iter_mut().zip(&salt) {
        *n ^= s;
    }
    let mut aad = header.clone();
    aad.extend_from_slice(metadata);
    let sealing = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &key).unwrap());
    let mut ct = plaintext.to_vec();
    sealing
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(&aad),
            &mut ct,
        )
        .unwrap();
    let mut frame = header;
    frame.extend_from_slice(&ct);
    (key, salt, frame)
}

fn layout_kid(s: u8, e: u8, c: u8, context: u64, leaf: u32, epoch: u64) -> u64 {
    // Written out from the RFC formula, independent of KidLayout.
    assert!(context < (1u64 << c) && u64::from(leaf) < (1u64 << s));
    (context << (u32::from(s) + u32::from(e))) | (u64::from(leaf) << e) | (epoch % (1u64 << e))
}

#[test]
#[ignore = "generator: run once by hand, output committed as tests/kat/sframe_mls.json"]
fn generate_vectors() {
    let exporter_output: Vec<u8> = ring::digest::digest(
        &ring::digest::SHA256,
        b"blindcall group KAT exporter output",
    )
    .as_ref()[..16]
        .to_vec();
    let (s, e, c, epoch) = (10u8, 4u8, 2u8, 0x0001_2345u64);
    let metadata = b"kat metadata".to_vec();
    let plaintext = b"blindcall KAT frame".to_vec();
    let mut senders = Vec::new();
    for (leaf, context, counter) in [
        (0u32, 0u64, 0u64),
        (1, 0, 7),
        (1, 3, 300),
        (517, 2, 0),
        (1023, 1, 1 << 40),
    ] {
        let kid = layout_kid(s, e, c, context, leaf, epoch);
        let (key, salt, frame) = independent(&exporter_output, kid, counter, &metadata, &plaintext);
        senders.push(SenderVector {
            leaf,
            context,
            kid,
            base_key: hex::encode(&exporter_output),
            sframe_key: hex::encode(key),
            sframe_salt: hex::encode(salt),
            counter,
            sealed_frame: hex::encode(frame),
        });
    }
    let v = Vectors {
        note: "Generated once by crates/group/tests/kat.rs generate_vectors with ring only (no blindcall code); \
               base_key per RFC 9605 section 5.2 is the epoch's MLS exporter output for every sender, \
               KID = context << (S+E) | leaf << E | epoch mod 2^E, key/salt per section 4.4.2, AES-128-GCM seal."
            .into(),
        sframe_suite: 4,
        sender_bits: s,
        epoch_bits: e,
        context_bits: c,
        epoch,
        exporter_label: "SFrame 1.0 Base Key".into(),
        exporter_output: hex::encode(&exporter_output),
        metadata: hex::encode(metadata),
        plaintext: hex::encode(plaintext),
        senders,
    };
    println!("{}", serde_json::to_string_pretty(&v).unwrap());
}

fn load() -> Vectors {
    serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap()
}

// covers: KS-EXP-2, KS-EXP-3, KS-KID-1
#[test]
fn derivation_matches_committed_vectors() {
    let v = load();
    assert_eq!(v.exporter_label, blindcall_group::EXPORTER_LABEL);
    let suite = CipherSuite::from_id(v.sframe_suite).unwrap();
    assert_eq!(suite.nk(), hex::decode(&v.exporter_output).unwrap().len());
    let layout = KidLayout::new(v.sender_bits, v.epoch_bits, v.context_bits).unwrap();
    let epoch_secret = BaseKey::from_vec(hex::decode(&v.exporter_output).unwrap());
    let metadata = hex::decode(&v.metadata).unwrap();
    let plaintext = hex::decode(&v.plaintext).unwrap();
    assert_eq!(v.senders.len(), 5);
    for s in &v.senders {
        let kid = layout.encode(s.context, s.leaf, v.epoch).unwrap();
        assert_eq!(kid.0, s.kid, "KID of leaf {} context {}", s.leaf, s.context);
        let base = member_base_key(suite, &epoch_secret, s.leaf).unwrap();
        assert_eq!(hex::encode(base.expose_secret()), s.base_key);
        // Key and salt as written in the vectors agree with an independent derivation.
        let (key, salt, frame) = independent(
            epoch_secret.expose_secret(),
            s.kid,
            s.counter,
            &metadata,
            &plaintext,
        );
        assert_eq!(
            (hex::encode(key), hex::encode(salt)),
            (s.sframe_key.clone(), s.sframe_salt.clone())
        );
        assert_eq!(hex::encode(&frame), s.sealed_frame);
        // The crates' sender produces exactly the committed frame (so it uses that key and salt).
        let mut sender =
            Sender::with_counter(suite, kid, &base, blindcall_sframe::Counter(s.counter)).unwrap();
        let sealed = sender.seal(&metadata, &plaintext).unwrap();
        assert_eq!(
            hex::encode(&sealed),
            s.sealed_frame,
            "sealed frame of leaf {}",
            s.leaf
        );
        let (h, _) = Header::decode(&sealed).unwrap();
        assert_eq!((h.kid.0, h.ctr.0), (s.kid, s.counter));
        let mut rx = Receiver::new(ReceiverConfig::default());
        rx.add_key(suite, kid, &base).unwrap();
        let (_, opened) = rx
            .open(&metadata, &hex::decode(&s.sealed_frame).unwrap())
            .unwrap();
        assert_eq!(opened, plaintext);
    }
}
