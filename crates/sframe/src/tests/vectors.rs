#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde::Deserialize;

use crate::key::{FrameKey, derive_key_salt};
use crate::{BaseKey, CipherSuite, Counter, Header, Kid, Receiver, ReceiverConfig, Sender};

/// `BLINDCALL_VECTORS_DIR`, else `<workspace root>/../shared/vectors`.
fn vectors_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("BLINDCALL_VECTORS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/vectors"
        )),
    };
    if dir.join("rfc9605-test-vectors.json").is_file() {
        return Some(dir);
    }
    let required = std::env::var("BLINDCALL_REQUIRE_VECTORS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "RFC 9605 vectors not found in {} and BLINDCALL_REQUIRE_VECTORS=1",
        dir.display()
    );
    eprintln!(
        "\n!!!!! SKIPPED: RFC 9605 test vectors not found in {} (set BLINDCALL_VECTORS_DIR) !!!!!\n",
        dir.display()
    );
    None
}

fn load<T: for<'de> Deserialize<'de>>(dir: &std::path::Path, file: &str) -> T {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn hx(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[derive(Deserialize)]
struct HeaderCase {
    kid: u64,
    ctr: u64,
    encoded: String,
}

#[derive(Deserialize)]
struct AeadCase {
    cipher_suite: u16,
    key: String,
    enc_key: String,
    auth_key: String,
    nonce: String,
    aad: String,
    pt: String,
    ct: String,
}

#[derive(Deserialize)]
struct SframeCase {
    cipher_suite: u16,
    kid: u64,
    ctr: u64,
    base_key: String,
    sframe_key_label: String,
    sframe_salt_label: String,
    sframe_secret: String,
    sframe_key: String,
    sframe_salt: String,
    metadata: String,
    nonce: String,
    aad: String,
    pt: String,
    ct: String,
}

#[derive(Deserialize)]
struct RfcFile {
    header: Vec<HeaderCase>,
    aes_ctr_hmac: Vec<AeadCase>,
    sframe: Vec<SframeCase>,
}

#[derive(Deserialize)]
struct HeadFile {
    header: Vec<HeaderCase>,
    aes_ctr_hmac: Vec<AeadCase>,
    aes_256_ctr_hmac: Vec<AeadCase>,
    sframe: Vec<SframeCase>,
}

#[derive(Deserialize)]
struct Aes256File {
    sframe_aes_256_ctr_hmac: Vec<SframeCase>,
}

fn check_headers(cases: &[HeaderCase]) {
    for c in cases {
        let h = Header::new(Kid(c.kid), Counter(c.ctr));
        let want = hx(&c.encoded);
        let mut buf = [0u8; Header::MAX_LEN];
        let n = h.encode(&mut buf).unwrap();
        assert_eq!(&buf[..n], &want[..], "encode kid={} ctr={}", c.kid, c.ctr);
        assert_eq!(h.encoded_len(), want.len());
        assert_eq!(Header::decode(&want).unwrap(), (h, want.len()));
        // Trailing bytes are not part of the header.
        let mut longer = want.clone();
        longer.extend_from_slice(&[0xAA; 5]);
        assert_eq!(Header::decode(&longer).unwrap(), (h, want.len()));
    }
}

fn check_aead(cases: &[AeadCase]) {
    for c in cases {
        let suite = CipherSuite::from_id(c.cipher_suite).unwrap();
        let key = hx(&c.key);
        assert_eq!(key.len(), suite.nk());
        assert_eq!(&key[..suite.nka()], &hx(&c.enc_key)[..]);
        assert_eq!(&key[suite.nka()..], &hx(&c.auth_key)[..]);
        let k = FrameKey::from_key_salt(suite, &key, &[0; 12]).unwrap();
        let nonce: [u8; 12] = hx(&c.nonce).try_into().unwrap();
        let (aad, pt, want) = (hx(&c.aad), hx(&c.pt), hx(&c.ct));
        let mut buf = pt.clone();
        let mut tag = vec![0u8; suite.nt()];
        k.seal(nonce, &aad, &[], &mut buf, &mut tag).unwrap();
        buf.extend_from_slice(&tag);
        assert_eq!(buf, want, "suite {}", c.cipher_suite);
        // Splitting the AAD between "header" and "metadata" must not matter.
        let mut ct = want.clone();
        let n = k.open(nonce, &aad[..3], &aad[3..], &mut ct).unwrap();
        assert_eq!(&ct[..n], &pt[..]);
        // Tag bit flip: rejected before decryption, buffer untouched.
        let mut bad = want.clone();
        *bad.last_mut().unwrap() ^= 1;
        let before = bad.clone();
        assert!(k.open(nonce, &aad, &[], &mut bad).is_err());
        assert_eq!(
            bad, before,
            "CTR suites must not decrypt before the tag verifies"
        );
    }
}

fn check_sframe(cases: &[SframeCase]) {
    for c in cases {
        let suite = CipherSuite::from_id(c.cipher_suite).unwrap();
        let base = BaseKey::new(&hx(&c.base_key));
        let kid = Kid(c.kid);
        // Labels: "SFrame 1.0 Secret key " / "salt " || KID (8 B BE) || suite (2 B BE).
        let mut label = b"SFrame 1.0 Secret key ".to_vec();
        label.extend_from_slice(&c.kid.to_be_bytes());
        label.extend_from_slice(&c.cipher_suite.to_be_bytes());
        assert_eq!(label, hx(&c.sframe_key_label));
        let mut label = b"SFrame 1.0 Secret salt ".to_vec();
        label.extend_from_slice(&c.kid.to_be_bytes());
        label.extend_from_slice(&c.cipher_suite.to_be_bytes());
        assert_eq!(label, hx(&c.sframe_salt_label));
        // HKDF-Extract("", base_key) = HMAC(salt = "", base_key).
        let alg = if suite.nh() == 32 {
            ring::hmac::HMAC_SHA256
        } else {
            ring::hmac::HMAC_SHA512
        };
        let prk = ring::hmac::sign(&ring::hmac::Key::new(alg, &[]), base.expose_secret());
        assert_eq!(prk.as_ref(), &hx(&c.sframe_secret)[..]);
        let ks = derive_key_salt(suite, kid, &base).unwrap();
        assert_eq!(&ks.key[..suite.nk()], &hx(&c.sframe_key)[..]);
        assert_eq!(&ks.salt[..], &hx(&c.sframe_salt)[..]);
        let fk = FrameKey::new(suite, kid, &base).unwrap();
        assert_eq!(&fk.nonce(Counter(c.ctr))[..], &hx(&c.nonce)[..]);
        let (md, pt, want) = (hx(&c.metadata), hx(&c.pt), hx(&c.ct));
        let (header, hlen) = Header::decode(&want).unwrap();
        assert_eq!(header, Header::new(kid, Counter(c.ctr)));
        let mut aad = want[..hlen].to_vec();
        aad.extend_from_slice(&md);
        assert_eq!(aad, hx(&c.aad), "AAD is header || metadata");
        let mut sender = Sender::with_counter(suite, kid, &base, Counter(c.ctr)).unwrap();
        assert_eq!(
            sender.seal(&md, &pt).unwrap(),
            want,
            "suite {}",
            c.cipher_suite
        );
        let mut rx = Receiver::new(ReceiverConfig::default());
        rx.add_key(suite, kid, &base).unwrap();
        let (h, got) = rx.open(&md, &want).unwrap();
        assert_eq!((h, got), (header, pt));
    }
}

// covers: SF-HDR-1, SF-HDR-2, SF-SUITE-1, SF-SUITE-3, SF-SUITE-4, SF-KEY-1, SF-KEY-2
// covers: SF-NONCE-1, SF-AAD-1, SF-TX-1, SF-RX-1, SF-RX-3
#[test]
fn rfc9605_vectors() {
    let Some(dir) = vectors_dir() else { return };
    let rfc: RfcFile = load(&dir, "rfc9605-test-vectors.json");
    assert_eq!(rfc.header.len(), 289);
    assert_eq!(rfc.aes_ctr_hmac.len(), 3);
    assert_eq!(rfc.sframe.len(), 5);
    check_headers(&rfc.header);
    check_aead(&rfc.aes_ctr_hmac);
    check_sframe(&rfc.sframe);
    let suites: Vec<u16> = rfc.sframe.iter().map(|c| c.cipher_suite).collect();
    assert_eq!(suites, [1, 2, 3, 4, 5]);
}

// covers: SF-SUITE-1, SF-SUITE-3, SF-SUITE-4, SF-KEY-1, SF-KEY-2, SF-RX-3
#[test]
fn iana_suites_6_to_8_vectors() {
    let Some(dir) = vectors_dir() else { return };
    let head: HeadFile = load(&dir, "test-vectors.json");
    assert_eq!(head.header.len(), 289);
    assert_eq!(head.aes_ctr_hmac.len(), 3);
    assert_eq!(head.aes_256_ctr_hmac.len(), 3);
    assert_eq!(head.sframe.len(), 5);
    check_headers(&head.header);
    check_aead(&head.aes_ctr_hmac);
    check_aead(&head.aes_256_ctr_hmac);
    check_sframe(&head.sframe);
    let aes256: Aes256File = load(&dir, "test-vectors-aes256.json");
    assert_eq!(aes256.sframe_aes_256_ctr_hmac.len(), 3);
    check_sframe(&aes256.sframe_aes_256_ctr_hmac);
    let suites: Vec<u16> = aes256
        .sframe_aes_256_ctr_hmac
        .iter()
        .map(|c| c.cipher_suite)
        .collect();
    assert_eq!(suites, [6, 7, 8]);
    let suites: Vec<u16> = head
        .aes_256_ctr_hmac
        .iter()
        .map(|c| c.cipher_suite)
        .collect();
    assert_eq!(suites, [6, 7, 8]);
}
