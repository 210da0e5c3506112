//! Secret keys: the caller's base key and the per-KID key material derived from it
//! (RFC 9605 §4.4.2), plus the per-frame AEAD operations on that material.

use aes::{Aes128Enc, Aes256Enc};
use ctr::cipher::{InnerIvInit, KeyInit, StreamCipher};
use ring::{aead, hkdf, hmac};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::KeyError;
use crate::header::{Counter, Kid};
use crate::suite::{Aead, CipherSuite};

/// Largest `header || metadata` that GCM suites assemble on the stack.
///
/// GCM needs the AAD contiguous. With empty metadata the header already is (no copy); with
/// metadata, header and metadata are copied into a stack buffer of this size. If they do not
/// fit (metadata longer than `MAX_INLINE_AAD - 17` bytes), one temporary heap buffer is used
/// for that frame: still correct, but not allocation-free. The CTR+HMAC suites feed the AAD to
/// HMAC piecewise and never allocate.
pub const MAX_INLINE_AAD: usize = 512;

/// Secret base key bytes (zeroized on drop; `Debug` redacted; no `Clone`).
pub struct BaseKey(Zeroizing<Vec<u8>>);

impl BaseKey {
    /// A base key holding a copy of `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// A base key taking ownership of `bytes`.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if the key has no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Raw bytes; for deriving further keys only (e.g. RFC 9605 §5.2); never log.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for BaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BaseKey(<redacted {} bytes>)", self.0.len())
    }
}

impl PartialEq for BaseKey {
    /// Constant-time in the key contents.
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for BaseKey {}

/// HKDF output length as a ring `KeyType`.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

const KEY_LABEL: &[u8] = b"SFrame 1.0 Secret key ";
const SALT_LABEL: &[u8] = b"SFrame 1.0 Secret salt ";

pub(crate) fn hkdf_alg(suite: CipherSuite) -> hkdf::Algorithm {
    if suite.nh() == 32 {
        hkdf::HKDF_SHA256
    } else {
        hkdf::HKDF_SHA512
    }
}

/// `label || KID (8 B big-endian) || suite (2 B big-endian)`.
fn label(prefix: &[u8], kid: Kid, suite: CipherSuite, out: &mut [u8; 33]) -> usize {
    let n = prefix.len();
    out[..n].copy_from_slice(prefix);
    out[n..n + 8].copy_from_slice(&kid.0.to_be_bytes());
    out[n + 8..n + 10].copy_from_slice(&suite.id().to_be_bytes());
    n + 10
}

/// The derived `sframe_key` and `sframe_salt` for one KID (RFC 9605 §4.4.2).
pub(crate) struct KeySalt {
    pub(crate) key: Zeroizing<[u8; 96]>,
    pub(crate) salt: Zeroizing<[u8; 12]>,
}

pub(crate) fn derive_key_salt(
    suite: CipherSuite,
    kid: Kid,
    base_key: &BaseKey,
) -> Result<KeySalt, KeyError> {
    if base_key.is_empty() {
        return Err(KeyError::EmptyBaseKey);
    }
    let prk = hkdf::Salt::new(hkdf_alg(suite), &[]).extract(base_key.expose_secret());
    let mut buf = [0u8; 33];
    let mut out = KeySalt {
        key: Zeroizing::new([0u8; 96]),
        salt: Zeroizing::new([0u8; 12]),
    };
    let n = label(KEY_LABEL, kid, suite, &mut buf);
    let nk = suite.nk();
    prk.expand(&[&buf[..n]], Len(nk))
        .and_then(|okm| okm.fill(&mut out.key[..nk]))
        .map_err(|_| KeyError::Backend)?;
    let n = label(SALT_LABEL, kid, suite, &mut buf);
    prk.expand(&[&buf[..n]], Len(12))
        .and_then(|okm| okm.fill(&mut out.salt[..]))
        .map_err(|_| KeyError::Backend)?;
    Ok(out)
}

/// The AEAD part of a frame key, built once per KID.
// One value per KID, never moved per frame: boxing the large variants would only add an
// indirection on the hot path.
#[allow(clippy::large_enum_variant)]
enum Cipher {
    Gcm(aead::LessSafeKey),
    Ctr128 { enc: Aes128Enc, mac: hmac::Key },
    Ctr256 { enc: Aes256Enc, mac: hmac::Key },
}

/// The AEAD failed to authenticate (or the input was too long to process).
#[derive(Debug)]
pub(crate) struct Unauthentic;

/// The plaintext is too long for one nonce.
#[derive(Debug)]
pub(crate) struct TooLong;

/// Per-KID key material: the AEAD key (prebuilt) and the salt.
///
/// The salt and the AES key schedule (CTR suites) are zeroized on drop; ring's GCM and HMAC
/// key objects do not expose zeroization (see spec/sframe.md, SF-KEY-5).
pub(crate) struct FrameKey {
    cipher: Cipher,
    /// Salt bytes 0..8 and 8..12 as big-endian words, so the nonce is two XORs and two
    /// stores in the 8 + 4 byte layout the AEAD reads (no byte-wise store forwarding).
    salt_hi: u64,
    salt_lo: u32,
    nt: usize,
}

impl Drop for FrameKey {
    fn drop(&mut self) {
        self.salt_hi.zeroize();
        self.salt_lo.zeroize();
    }
}

impl FrameKey {
    /// Derives and builds the key for `kid` from `base_key`.
    pub(crate) fn new(suite: CipherSuite, kid: Kid, base_key: &BaseKey) -> Result<Self, KeyError> {
        let ks = derive_key_salt(suite, kid, base_key)?;
        Self::from_key_salt(suite, &ks.key[..suite.nk()], &ks.salt)
    }

    /// Builds a frame key from an explicit `sframe_key` (Nk bytes) and salt.
    pub(crate) fn from_key_salt(
        suite: CipherSuite,
        key: &[u8],
        salt: &[u8; 12],
    ) -> Result<Self, KeyError> {
        if key.len() != suite.nk() {
            return Err(KeyError::BadKeyLength {
                expected: suite.nk(),
                got: key.len(),
            });
        }
        let nka = suite.nka();
        let cipher = match suite.aead() {
            Aead::Aes128Gcm | Aead::Aes256Gcm => {
                let alg = if nka == 16 {
                    &aead::AES_128_GCM
                } else {
                    &aead::AES_256_GCM
                };
                let unbound = aead::UnboundKey::new(alg, key).map_err(|_| KeyError::Backend)?;
                Cipher::Gcm(aead::LessSafeKey::new(unbound))
            }
            Aead::Aes128CtrHmacSha256 => Cipher::Ctr128 {
                enc: Aes128Enc::new_from_slice(&key[..nka]).map_err(|_| KeyError::Backend)?,
                mac: hmac::Key::new(hmac::HMAC_SHA256, &key[nka..]),
            },
            Aead::Aes256CtrHmacSha512 => Cipher::Ctr256 {
                enc: Aes256Enc::new_from_slice(&key[..nka]).map_err(|_| KeyError::Backend)?,
                mac: hmac::Key::new(hmac::HMAC_SHA512, &key[nka..]),
            },
        };
        Ok(Self {
            cipher,
            salt_hi: u64::from_be_bytes([
                salt[0], salt[1], salt[2], salt[3], salt[4], salt[5], salt[6], salt[7],
            ]),
            salt_lo: u32::from_be_bytes([salt[8], salt[9], salt[10], salt[11]]),
            nt: suite.nt(),
        })
    }

    /// Tag length Nt.
    #[inline]
    pub(crate) fn nt(&self) -> usize {
        self.nt
    }

    /// `salt XOR CTR`, the CTR left-padded to Nn bytes (RFC 9605 §4.4.3).
    #[inline]
    pub(crate) fn nonce(&self, ctr: Counter) -> [u8; 12] {
        // CTR occupies nonce bytes 4..12: its high half meets salt bytes 4..8, its low half
        // salt bytes 8..12.
        let hi = (self.salt_hi ^ (ctr.0 >> 32)).to_be_bytes();
        // ok: keeping the low 32 bits of the counter is the point of the cast.
        let lo = (self.salt_lo ^ (ctr.0 as u32)).to_be_bytes();
        [
            hi[0], hi[1], hi[2], hi[3], hi[4], hi[5], hi[6], hi[7], lo[0], lo[1], lo[2], lo[3],
        ]
    }

    /// Encrypts `in_out` in place and writes the Nt-byte tag into `tag`.
    /// AAD is `header || metadata`.
    #[inline]
    pub(crate) fn seal(
        &self,
        nonce: [u8; 12],
        header: &[u8],
        metadata: &[u8],
        in_out: &mut [u8],
        tag: &mut [u8],
    ) -> Result<(), TooLong> {
        match &self.cipher {
            Cipher::Gcm(key) => {
                // Hot path kept small: the metadata case (stack AAD buffer) is out of line.
                let t = if metadata.is_empty() {
                    key.seal_in_place_separate_tag(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aead::Aad::from(header),
                        in_out,
                    )
                } else {
                    gcm_seal_with_metadata(key, nonce, header, metadata, in_out)
                }
                .map_err(|_| TooLong)?;
                // Fixed-size copy: `tag` is exactly Nt = 16 bytes for GCM suites.
                let tag: &mut [u8; 16] = tag.try_into().map_err(|_| TooLong)?;
                let t: &[u8; 16] = t.as_ref().try_into().map_err(|_| TooLong)?;
                *tag = *t;
                Ok(())
            }
            Cipher::Ctr128 { enc, mac } => ctr_seal(
                |d| ctr128_apply(enc, &nonce, d),
                mac,
                &nonce,
                header,
                metadata,
                in_out,
                tag,
            ),
            Cipher::Ctr256 { enc, mac } => ctr_seal(
                |d| ctr256_apply(enc, &nonce, d),
                mac,
                &nonce,
                header,
                metadata,
                in_out,
                tag,
            ),
        }
    }

    /// Verifies and decrypts `ct_tag` (ciphertext || tag) in place; returns the plaintext
    /// length. CTR suites compare the tag in constant time before decrypting anything.
    #[inline]
    pub(crate) fn open(
        &self,
        nonce: [u8; 12],
        header: &[u8],
        metadata: &[u8],
        ct_tag: &mut [u8],
    ) -> Result<usize, Unauthentic> {
        match &self.cipher {
            Cipher::Gcm(key) => if metadata.is_empty() {
                key.open_in_place(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aead::Aad::from(header),
                    ct_tag,
                )
                .map(|pt| pt.len())
            } else {
                gcm_open_with_metadata(key, nonce, header, metadata, ct_tag)
            }
            .map_err(|_| Unauthentic),
            Cipher::Ctr128 { enc, mac } => ctr_open(
                |d| ctr128_apply(enc, &nonce, d),
                mac,
                &nonce,
                header,
                metadata,
                ct_tag,
                self.nt,
            ),
            Cipher::Ctr256 { enc, mac } => ctr_open(
                |d| ctr256_apply(enc, &nonce, d),
                mac,
                &nonce,
                header,
                metadata,
                ct_tag,
                self.nt,
            ),
        }
    }
}

/// GCM seal with `header || metadata` assembled contiguously (see [`MAX_INLINE_AAD`]).
#[inline(never)]
fn gcm_seal_with_metadata(
    key: &aead::LessSafeKey,
    nonce: [u8; 12],
    header: &[u8],
    metadata: &[u8],
    in_out: &mut [u8],
) -> Result<aead::Tag, ring::error::Unspecified> {
    with_aad(header, metadata, |aad| {
        key.seal_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad),
            in_out,
        )
    })
}

/// GCM open with `header || metadata` assembled contiguously (see [`MAX_INLINE_AAD`]).
#[inline(never)]
fn gcm_open_with_metadata(
    key: &aead::LessSafeKey,
    nonce: [u8; 12],
    header: &[u8],
    metadata: &[u8],
    ct_tag: &mut [u8],
) -> Result<usize, ring::error::Unspecified> {
    with_aad(header, metadata, |aad| {
        key.open_in_place(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad),
            ct_tag,
        )
        .map(|pt| pt.len())
    })
}

/// Runs `f` with `header || metadata` as one contiguous slice, on the stack when it fits
/// [`MAX_INLINE_AAD`], else in one temporary heap buffer.
#[inline]
fn with_aad<R>(header: &[u8], metadata: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    let total = header.len() + metadata.len();
    if total <= MAX_INLINE_AAD {
        let mut buf = [0u8; MAX_INLINE_AAD];
        buf[..header.len()].copy_from_slice(header);
        buf[header.len()..total].copy_from_slice(metadata);
        f(&buf[..total])
    } else {
        let mut v = Vec::with_capacity(total);
        v.extend_from_slice(header);
        v.extend_from_slice(metadata);
        f(&v)
    }
}

/// CTR suites, sealing: encrypt, then HMAC and truncate (RFC 9605 §4.5.1).
#[inline(never)]
fn ctr_seal(
    keystream: impl FnOnce(&mut [u8]) -> Result<(), TooLong>,
    mac: &hmac::Key,
    nonce: &[u8; 12],
    header: &[u8],
    metadata: &[u8],
    in_out: &mut [u8],
    tag: &mut [u8],
) -> Result<(), TooLong> {
    keystream(in_out)?;
    let full = hmac_tag(mac, nonce, header, metadata, in_out, tag.len());
    let t = full.as_ref().get(..tag.len()).ok_or(TooLong)?;
    tag.copy_from_slice(t);
    Ok(())
}

/// CTR suites, opening: constant-time tag check first, decrypt only if it matches.
#[inline(never)]
fn ctr_open(
    keystream: impl FnOnce(&mut [u8]) -> Result<(), TooLong>,
    mac: &hmac::Key,
    nonce: &[u8; 12],
    header: &[u8],
    metadata: &[u8],
    ct_tag: &mut [u8],
    nt: usize,
) -> Result<usize, Unauthentic> {
    let Some(pt_len) = ct_tag.len().checked_sub(nt) else {
        return Err(Unauthentic);
    };
    let (ct, tag) = ct_tag.split_at_mut(pt_len);
    let full = hmac_tag(mac, nonce, header, metadata, ct, nt);
    let expected = full.as_ref().get(..nt).ok_or(Unauthentic)?;
    if expected.len() != tag.len() {
        return Err(Unauthentic);
    }
    // Constant time: OR of all byte differences (no early exit), one final masked compare
    // (subtle's per-byte slice comparison costs an optimisation barrier per byte).
    let diff = expected
        .iter()
        .zip(tag.iter())
        .fold(0u8, |d, (a, b)| d | (a ^ b));
    if !bool::from(diff.ct_eq(&0)) {
        return Err(Unauthentic);
    }
    keystream(ct).map_err(|_| Unauthentic)?;
    Ok(pt_len)
}

/// AES-CTR keystream with counter block `nonce || 0x00000000` (32-bit big-endian counter).
macro_rules! ctr_fn {
    ($name:ident, $aes:ty) => {
        #[inline]
        fn $name(enc: &$aes, nonce: &[u8; 12], data: &mut [u8]) -> Result<(), TooLong> {
            let mut iv = [0u8; 16];
            iv[..12].copy_from_slice(nonce);
            let core =
                ctr::CtrCore::<$aes, ctr::flavors::Ctr32BE>::inner_iv_init(enc.clone(), &iv.into());
            let mut c = ctr::Ctr32BE::<$aes>::from_core(core);
            c.try_apply_keystream(data).map_err(|_| TooLong)
        }
    };
}
ctr_fn!(ctr128_apply, Aes128Enc);
ctr_fn!(ctr256_apply, Aes256Enc);

/// Big-endian 8-byte length (usize is at most 64 bits on every supported target).
#[inline]
fn be_len(n: usize) -> [u8; 8] {
    u64::try_from(n).unwrap_or(u64::MAX).to_be_bytes()
}

/// HMAC over `len(AAD) || len(ct) || Nt || nonce || AAD || ct`, AAD = header || metadata
/// (RFC 9605 §4.5.1), untruncated.
#[inline]
fn hmac_tag(
    mac: &hmac::Key,
    nonce: &[u8; 12],
    header: &[u8],
    metadata: &[u8],
    ct: &[u8],
    nt: usize,
) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(mac);
    ctx.update(&be_len(header.len() + metadata.len()));
    ctx.update(&be_len(ct.len()));
    ctx.update(&be_len(nt));
    ctx.update(nonce);
    ctx.update(header);
    ctx.update(metadata);
    ctx.update(ct);
    ctx.sign()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: SF-KEY-4
    #[test]
    fn base_key_debug_is_redacted() {
        let k = BaseKey::new(&[0xAB; 16]);
        let s = format!("{k:?}");
        assert!(!s.to_lowercase().contains("ab"), "{s}");
        assert!(s.contains("redacted"));
        assert_eq!(k, BaseKey::new(&[0xAB; 16]));
        assert_ne!(k, BaseKey::new(&[0xAB; 15]));
        assert_ne!(k, BaseKey::new(&[0xAC; 16]));
    }

    // covers: SF-KEY-3
    #[test]
    fn empty_base_key_rejected() {
        let r = FrameKey::new(
            CipherSuite::AES_128_GCM_SHA256_128,
            Kid(1),
            &BaseKey::new(&[]),
        );
        assert!(matches!(r, Err(KeyError::EmptyBaseKey)));
    }

    // covers: SF-NONCE-1
    #[test]
    fn nonce_is_salt_xor_ctr() {
        let salt = [0xFFu8; 12];
        let k =
            FrameKey::from_key_salt(CipherSuite::AES_128_GCM_SHA256_128, &[0; 16], &salt).unwrap();
        let n = k.nonce(Counter(0x0102));
        assert_eq!(&n[..10], &[0xFF; 10]);
        assert_eq!(&n[10..], &[0xFE, 0xFD]);
    }

    // covers: SF-AAD-2
    #[test]
    fn gcm_aad_above_stack_bound_is_correct() {
        let suite = CipherSuite::AES_256_GCM_SHA512_128;
        let k = FrameKey::new(suite, Kid(9), &BaseKey::new(&[1; 32])).unwrap();
        let header = [0x09u8, 0x01, 0x00];
        for md_len in [0, 1, MAX_INLINE_AAD - 3, MAX_INLINE_AAD - 2, 4096] {
            let md: Vec<u8> = (0..md_len).map(|i| i as u8).collect();
            let mut buf = *b"sixteen byte msg";
            let mut tag = [0u8; 16];
            k.seal(k.nonce(Counter(256)), &header, &md, &mut buf, &mut tag)
                .unwrap();
            let mut ct_tag = buf.to_vec();
            ct_tag.extend_from_slice(&tag);
            // The same bytes as one contiguous AAD through ring directly.
            let mut aad = header.to_vec();
            aad.extend_from_slice(&md);
            let ks = derive_key_salt(suite, Kid(9), &BaseKey::new(&[1; 32])).unwrap();
            let raw = aead::LessSafeKey::new(
                aead::UnboundKey::new(&aead::AES_256_GCM, &ks.key[..32]).unwrap(),
            );
            let mut check = ct_tag.clone();
            let pt = raw
                .open_in_place(
                    aead::Nonce::assume_unique_for_key(k.nonce(Counter(256))),
                    aead::Aad::from(&aad),
                    &mut check,
                )
                .unwrap();
            assert_eq!(pt, b"sixteen byte msg");
            let n = k
                .open(k.nonce(Counter(256)), &header, &md, &mut ct_tag)
                .unwrap();
            assert_eq!(&ct_tag[..n], b"sixteen byte msg");
        }
    }
}
