//! Signed media (spec/media-auth.md): what signing media costs per frame and per manifest.
//!
//! * `media_auth/frame/*/{64,1200,10000}`: per frame, against `sha256` of the same bytes (the
//!   limit: both sides must hash every frame once).
//!   * `record`: sender, `ManifestSigner::record` (hash + append; a manifest is cut every 13
//!     frames, as for 50 fps audio at 250 ms).
//!   * `receive_manifest_first`: receiver, `frame_hash` + `on_opened` finding the hash of an
//!     already received manifest (`Verified` at once); one iteration = 13 frames, after
//!     `on_manifest` stored their manifest.
//!   * `receive_frame_first`: receiver, `frame_hash` + `on_opened` (`Pending`) for 13 frames, then
//!     `on_manifest` verifying them.
//!
//!   The two receiver cases report time per 13 frames (criterion's elements = frames).
//! * `media_auth/manifest/{sign,verify}/{ed25519,p256}`: per manifest of 13 audio + 8 video
//!   hashes (audio 50 fps and video 30 fps at 250 ms): `ManifestBody::sign` with the leaf key;
//!   `SignedManifest::decode` + `verify` with openmls' RustCrypto.
//!
//! Run: `cargo bench -p blindcall-group --bench media_auth` (add `-- --quick` for a short run).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use blindcall_group::KidLayout;
use blindcall_group::media_auth::{
    AuthenticatedFrame, FrameAuth, ManifestBody, ManifestEntry, ManifestSigner, MediaVerifier,
    SignedManifest, SignerConfig, StreamRef, VerifiedManifest, VerifierConfig, frame_hash,
};
use blindcall_sframe::{Counter, Kid};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::crypto::OpenMlsCrypto as _;
use openmls_traits::types::SignatureScheme;

const SIZES: [usize; 3] = [64, 1200, 10_000];
const PER_MANIFEST: u64 = 13;
const EPOCH: u64 = 1;
const LEAF: u32 = 1;
const PARTICIPANT: u64 = 101;
const BINDING: [u8; 32] = [0x42; 32];

fn layout() -> KidLayout {
    KidLayout::new(10, 4, 2).unwrap()
}

fn kid(context: u64) -> Kid {
    layout().encode(context, LEAF, EPOCH).unwrap()
}

fn frames(size: usize) -> Vec<Vec<u8>> {
    (0..PER_MANIFEST)
        .map(|i| {
            let mut f = vec![0x5a; size];
            f[..8].copy_from_slice(&i.to_be_bytes());
            f
        })
        .collect()
}

fn verify_signed(
    bytes: &[u8],
    scheme: SignatureScheme,
    pk: &[u8],
    crypto: &RustCrypto,
) -> VerifiedManifest {
    SignedManifest::decode(bytes)
        .unwrap()
        .verify(&BINDING, |i| {
            crypto
                .verify_signature(scheme, i.payload, pk, i.signature)
                .is_ok()
        })
        .unwrap()
}

fn per_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("media_auth/frame");
    let key = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let crypto = RustCrypto::default();
    let stream = StreamRef {
        id: 1,
        participant: PARTICIPANT,
    };
    for size in SIZES {
        let frames = frames(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("sha256", size), &frames[0], |b, f| {
            b.iter(|| ring::digest::digest(&ring::digest::SHA256, black_box(f)))
        });
        g.bench_with_input(BenchmarkId::new("record", size), &frames[0], |b, f| {
            let mut signer = ManifestSigner::new(LEAF, PARTICIPANT, SignerConfig::default());
            let t0 = Instant::now();
            let mut ctr = 0u64;
            let audio = kid(0);
            b.iter(|| {
                // 20 ms per frame: the signer cuts a manifest every 13 frames.
                let now = t0 + Duration::from_millis(ctr * 20);
                signer.record(now, EPOCH, audio, Counter(ctr), black_box(f));
                ctr += 1;
                if let Some(m) = signer.poll_manifest(now) {
                    black_box(m);
                }
            })
        });

        let body = ManifestBody {
            epoch: EPOCH,
            leaf: LEAF,
            participant: PARTICIPANT,
            entries: vec![ManifestEntry {
                kid: kid(0),
                first_ctr: Counter(0),
                hashes: frames.iter().map(|f| frame_hash(f)).collect(),
            }],
        };
        let signed = body.sign(&BINDING, &key).unwrap().encode();
        let manifest = verify_signed(&signed, SignatureScheme::ED25519, key.public(), &crypto);
        let opened = |i: usize, f: &[u8]| AuthenticatedFrame {
            stream,
            leaf: LEAF,
            signs: true,
            epoch: EPOCH,
            kid: kid(0),
            ctr: Counter(i as u64),
            hash: frame_hash(f),
        };
        g.throughput(Throughput::Elements(PER_MANIFEST));
        g.bench_function(BenchmarkId::new("receive_manifest_first", size), |b| {
            b.iter_batched_ref(
                || {
                    let mut v = MediaVerifier::new(layout(), VerifierConfig::default());
                    v.on_manifest(Instant::now(), &manifest).unwrap();
                    v
                },
                |v| {
                    let now = Instant::now();
                    for (i, f) in frames.iter().enumerate() {
                        let r = v.on_opened(now, &opened(i, black_box(f)));
                        debug_assert_eq!(r, FrameAuth::Verified);
                        black_box(r);
                    }
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_function(BenchmarkId::new("receive_frame_first", size), |b| {
            b.iter_batched_ref(
                || MediaVerifier::new(layout(), VerifierConfig::default()),
                |v| {
                    let now = Instant::now();
                    for (i, f) in frames.iter().enumerate() {
                        black_box(v.on_opened(now, &opened(i, black_box(f))));
                    }
                    let n = v.on_manifest(now, &manifest).unwrap();
                    debug_assert_eq!(n as u64, PER_MANIFEST);
                    black_box(n);
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn per_manifest(c: &mut Criterion) {
    let mut g = c.benchmark_group("media_auth/manifest");
    let crypto = RustCrypto::default();
    // 13 audio + 8 video frames: one 250 ms manifest of a sender with both.
    let body = ManifestBody {
        epoch: EPOCH,
        leaf: LEAF,
        participant: PARTICIPANT,
        entries: vec![
            ManifestEntry {
                kid: kid(0),
                first_ctr: Counter(1000),
                hashes: (0..13u8).map(|i| frame_hash(&[i])).collect(),
            },
            ManifestEntry {
                kid: kid(1),
                first_ctr: Counter(600),
                hashes: (0..8u8).map(|i| frame_hash(&[i, i])).collect(),
            },
        ],
    };
    for (name, scheme) in [
        ("ed25519", SignatureScheme::ED25519),
        ("p256", SignatureScheme::ECDSA_SECP256R1_SHA256),
    ] {
        let key = SignatureKeyPair::new(scheme).unwrap();
        g.bench_function(BenchmarkId::new("sign", name), |b| {
            b.iter(|| black_box(body.clone()).sign(&BINDING, &key).unwrap())
        });
        let bytes = body.clone().sign(&BINDING, &key).unwrap().encode();
        g.bench_function(BenchmarkId::new("verify", name), |b| {
            b.iter(|| verify_signed(black_box(&bytes), scheme, key.public(), &crypto))
        });
        if name == "ed25519" {
            g.bench_function(BenchmarkId::new("sha256", bytes.len()), |b| {
                b.iter(|| ring::digest::digest(&ring::digest::SHA256, black_box(&bytes)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, per_frame, per_manifest);
criterion_main!(benches);
