//! Manifest encoding (TLS presentation language, big-endian) and its signature
//! (RFC 9420 §5.1.2 `SignWithLabel`).
//!
//! ```text
//! struct {
//!     uint64 kid;
//!     uint64 first_ctr;
//!     opaque hashes<16..2^16-1>;          // n * 16 bytes, for first_ctr .. first_ctr + n - 1
//! } ManifestEntry;
//!
//! struct {
//!     uint8  version = 1;
//!     uint64 epoch;
//!     uint32 leaf;
//!     uint64 participant;
//!     ManifestEntry entries<34..2^16-1>;
//! } ManifestBody;
//!
//! struct {
//!     ManifestBody body;
//!     opaque signature<1..256>;           // uint16 length prefix
//! } SignedManifest;
//!
//! struct {
//!     opaque epoch_binding[32];
//!     ManifestBody body;
//! } ManifestTBS;                           // signed with label "blindcall media manifest v1"
//! ```

use blindcall_sframe::{Counter, Kid};
use openmls_traits::signatures::{Signer, SignerError};

use super::{FRAME_HASH_LEN, FrameHash};

/// The body version this code writes and reads.
pub const MANIFEST_VERSION: u8 = 1;
/// The `SignWithLabel` label of a manifest signature.
pub const MANIFEST_SIGN_LABEL: &str = "blindcall media manifest v1";
/// The MLS exporter label from which the caller derives the epoch binding (empty context).
pub const EPOCH_BINDING_LABEL: &str = "blindcall media manifest";
/// Length of the epoch binding.
pub const EPOCH_BINDING_LEN: usize = 32;
/// Largest encoded signed manifest.
pub const MAX_MANIFEST_LEN: usize = 4096;
/// Largest signature.
pub const MAX_SIGNATURE_LEN: usize = 256;
/// Largest body, so that any signature fits under [`MAX_MANIFEST_LEN`].
pub const MAX_BODY_LEN: usize = MAX_MANIFEST_LEN - 2 - MAX_SIGNATURE_LEN;
/// Encoded body bytes before the entries: version, epoch, leaf, participant, entries length.
pub const BODY_HEADER_LEN: usize = 1 + 8 + 4 + 8 + 2;
/// Encoded entry bytes before the hashes: kid, first counter, hashes length.
pub const ENTRY_HEADER_LEN: usize = 8 + 8 + 2;

/// Why a manifest was refused: malformed bytes or a signature that does not verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The input is longer than [`MAX_MANIFEST_LEN`] (or the body than [`MAX_BODY_LEN`]).
    #[error("manifest of {len} bytes exceeds {max}")]
    TooLong {
        /// Length found.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The input ended inside `field`.
    #[error("manifest truncated in {field}")]
    Truncated {
        /// Field being read.
        field: &'static str,
    },
    /// A body version this code does not read.
    #[error("unsupported manifest version {version}")]
    UnsupportedVersion {
        /// Version found.
        version: u8,
    },
    /// A manifest without entries.
    #[error("manifest without entries")]
    NoEntries,
    /// A hash vector that is empty, not a multiple of 16 bytes, or too long.
    #[error("hash vector of {len} bytes")]
    HashesLength {
        /// Byte length found.
        len: usize,
    },
    /// An entry whose counters pass 2^64 - 1.
    #[error("entry for KID {kid:?} overflows the counter")]
    CounterOverflow {
        /// Entry's KID.
        kid: Kid,
    },
    /// Two entries of one KID cover a common counter.
    #[error("entries for KID {kid:?} overlap")]
    OverlappingEntries {
        /// KID covered twice.
        kid: Kid,
    },
    /// A signature that is empty or longer than [`MAX_SIGNATURE_LEN`].
    #[error("signature of {len} bytes")]
    SignatureLength {
        /// Length found.
        len: usize,
    },
    /// Bytes after the signature.
    #[error("{extra} bytes after the manifest")]
    TrailingBytes {
        /// Number of extra bytes.
        extra: usize,
    },
    /// The signature does not verify with the claimed leaf's key in the claimed epoch.
    #[error("manifest signature does not verify")]
    BadSignature,
}

/// Why signing a manifest failed (the caller's signer or an invalid body).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The body breaks an encoding rule.
    #[error("invalid manifest body: {0}")]
    Invalid(#[from] ManifestError),
    /// The signer failed.
    #[error("signer failed: {0:?}")]
    Signer(SignerError),
    /// The signer returned an empty or over-long signature.
    #[error("signature of {len} bytes")]
    SignatureLength {
        /// Length returned.
        len: usize,
    },
}

/// Hashes of consecutive frames of one KID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The frames' KID.
    pub kid: Kid,
    /// Counter of the first hash.
    pub first_ctr: Counter,
    /// One hash per frame, for counters `first_ctr`, `first_ctr + 1`, ...
    pub hashes: Vec<FrameHash>,
}

impl ManifestEntry {
    /// The hash this entry holds for `ctr`, if it covers it.
    pub fn hash_for(&self, ctr: Counter) -> Option<&FrameHash> {
        let offset = ctr.0.checked_sub(self.first_ctr.0)?;
        self.hashes.get(usize::try_from(offset).ok()?)
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        ENTRY_HEADER_LEN + FRAME_HASH_LEN * self.hashes.len()
    }

    /// Last covered counter, or `None` if empty or overflowing.
    fn last_ctr(&self) -> Option<u64> {
        let n = u64::try_from(self.hashes.len()).ok()?.checked_sub(1)?;
        self.first_ctr.0.checked_add(n)
    }
}

/// What a sender signs: its epoch, leaf, relay participant id and frame hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestBody {
    /// MLS epoch whose keys sealed the frames.
    pub epoch: u64,
    /// Sender's MLS leaf index.
    pub leaf: u32,
    /// Sender's relay participant (connection) id: its streams arrive under this id.
    pub participant: u64,
    /// Covered frames.
    pub entries: Vec<ManifestEntry>,
}

impl ManifestBody {
    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        BODY_HEADER_LEN
            + self
                .entries
                .iter()
                .map(ManifestEntry::encoded_len)
                .sum::<usize>()
    }

    /// Number of frame hashes.
    pub fn frame_count(&self) -> usize {
        self.entries.iter().map(|e| e.hashes.len()).sum()
    }

    /// Checks the rules a decoder enforces (non-empty, bounded, no overflow, no overlap).
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.entries.is_empty() {
            return Err(ManifestError::NoEntries);
        }
        let len = self.encoded_len();
        if len > MAX_BODY_LEN {
            return Err(ManifestError::TooLong {
                len,
                max: MAX_BODY_LEN,
            });
        }
        let mut ranges = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let bytes = FRAME_HASH_LEN * e.hashes.len();
            if e.hashes.is_empty() || bytes > usize::from(u16::MAX) {
                return Err(ManifestError::HashesLength { len: bytes });
            }
            let last = e
                .last_ctr()
                .ok_or(ManifestError::CounterOverflow { kid: e.kid })?;
            ranges.push((e.kid, e.first_ctr.0, last));
        }
        ranges.sort_unstable();
        for pair in ranges.windows(2) {
            if let [(kid_a, _, last_a), (kid_b, first_b, _)] = pair
                && kid_a == kid_b
                && first_b <= last_a
            {
                return Err(ManifestError::OverlappingEntries { kid: *kid_a });
            }
        }
        Ok(())
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        self.validate()?;
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(MANIFEST_VERSION);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.leaf.to_be_bytes());
        out.extend_from_slice(&self.participant.to_be_bytes());
        let entries_len = self.encoded_len() - BODY_HEADER_LEN;
        // ok: validate() bounds the body by MAX_BODY_LEN < 2^16.
        out.extend_from_slice(&u16::try_from(entries_len).unwrap_or(u16::MAX).to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.kid.0.to_be_bytes());
            out.extend_from_slice(&e.first_ctr.0.to_be_bytes());
            let bytes = FRAME_HASH_LEN * e.hashes.len();
            // ok: validate() bounds each hash vector by 2^16 - 1 bytes.
            out.extend_from_slice(&u16::try_from(bytes).unwrap_or(u16::MAX).to_be_bytes());
            for h in &e.hashes {
                out.extend_from_slice(&h.0);
            }
        }
        Ok(out)
    }

    /// Signs this body with the sender's leaf signature key for the epoch whose binding is
    /// `epoch_binding` (see [`EPOCH_BINDING_LABEL`]).
    pub fn sign<S: Signer + ?Sized>(
        self,
        epoch_binding: &[u8; EPOCH_BINDING_LEN],
        signer: &S,
    ) -> Result<SignedManifest, SignError> {
        let body_bytes = self.encode()?;
        let signature = signer
            .sign(&sign_content(epoch_binding, &body_bytes))
            .map_err(SignError::Signer)?;
        if signature.is_empty() || signature.len() > MAX_SIGNATURE_LEN {
            return Err(SignError::SignatureLength {
                len: signature.len(),
            });
        }
        Ok(SignedManifest {
            body: self,
            body_bytes,
            signature,
        })
    }
}

/// Appends an MLS variable-length integer (RFC 9420 §2.1.2); `n` is below 2^30 here (a
/// signed content is at most a few KiB), larger values saturate.
fn put_varint(out: &mut Vec<u8>, n: usize) {
    match (u8::try_from(n), u16::try_from(n)) {
        (Ok(b), _) if b < 1 << 6 => out.push(b),
        (_, Ok(w)) if w < 1 << 14 => out.extend_from_slice(&(0x4000 | w).to_be_bytes()),
        _ => {
            let v = u32::try_from(n).unwrap_or(u32::MAX).min(0x3fff_ffff);
            out.extend_from_slice(&(0x8000_0000 | v).to_be_bytes());
        }
    }
}

/// The bytes a manifest signature covers: RFC 9420 §5.1.2 `SignContent` with label
/// `"MLS 1.0 " + MANIFEST_SIGN_LABEL` and content `epoch_binding || body`.
pub fn sign_content(epoch_binding: &[u8; EPOCH_BINDING_LEN], body: &[u8]) -> Vec<u8> {
    const PREFIX: &str = "MLS 1.0 ";
    let label_len = PREFIX.len() + MANIFEST_SIGN_LABEL.len();
    let content_len = EPOCH_BINDING_LEN + body.len();
    let mut out = Vec::with_capacity(4 + label_len + 4 + content_len);
    put_varint(&mut out, label_len);
    out.extend_from_slice(PREFIX.as_bytes());
    out.extend_from_slice(MANIFEST_SIGN_LABEL.as_bytes());
    put_varint(&mut out, content_len);
    out.extend_from_slice(epoch_binding);
    out.extend_from_slice(body);
    out
}

/// A decoded (or freshly signed) manifest whose signature has not been checked here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedManifest {
    body: ManifestBody,
    body_bytes: Vec<u8>,
    signature: Vec<u8>,
}

/// What the caller's signature check receives.
#[derive(Clone, Copy, Debug)]
pub struct SignatureInput<'a> {
    /// Claimed epoch (look the signer up in this epoch's roster).
    pub epoch: u64,
    /// Claimed signer's leaf index.
    pub leaf: u32,
    /// The signed bytes ([`sign_content`]).
    pub payload: &'a [u8],
    /// The signature.
    pub signature: &'a [u8],
}

impl SignedManifest {
    /// The body; its claims are unauthenticated until [`SignedManifest::verify`].
    pub fn body(&self) -> &ManifestBody {
        &self.body
    }

    /// The signature bytes.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        self.body_bytes.len() + 2 + self.signature.len()
    }

    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.body_bytes);
        // ok: sign() and decode() bound the signature by MAX_SIGNATURE_LEN.
        let len = u16::try_from(self.signature.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Strictly decodes a signed manifest; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLong {
                len: bytes.len(),
                max: MAX_MANIFEST_LEN,
            });
        }
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8("version")?;
        if version != MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion { version });
        }
        let epoch = r.u64("epoch")?;
        let leaf = r.u32("leaf")?;
        let participant = r.u64("participant")?;
        let entries_len = usize::from(r.u16("entries length")?);
        let mut er = Reader {
            bytes: r.take(entries_len, "entries")?,
            pos: 0,
        };
        let mut entries = Vec::new();
        while !er.is_empty() {
            let kid = Kid(er.u64("kid")?);
            let first_ctr = Counter(er.u64("first_ctr")?);
            let len = usize::from(er.u16("hashes length")?);
            if len == 0 || len % FRAME_HASH_LEN != 0 {
                return Err(ManifestError::HashesLength { len });
            }
            let raw = er.take(len, "hashes")?;
            let hashes = raw
                .chunks_exact(FRAME_HASH_LEN)
                .map(|c| {
                    let mut h = [0u8; FRAME_HASH_LEN];
                    h.copy_from_slice(c);
                    FrameHash(h)
                })
                .collect();
            entries.push(ManifestEntry {
                kid,
                first_ctr,
                hashes,
            });
        }
        let body = ManifestBody {
            epoch,
            leaf,
            participant,
            entries,
        };
        body.validate()?;
        let body_bytes = bytes.get(..r.pos).unwrap_or_default().to_vec();
        let sig_len = usize::from(r.u16("signature length")?);
        if sig_len == 0 || sig_len > MAX_SIGNATURE_LEN {
            return Err(ManifestError::SignatureLength { len: sig_len });
        }
        let signature = r.take(sig_len, "signature")?.to_vec();
        if !r.is_empty() {
            return Err(ManifestError::TrailingBytes {
                extra: bytes.len() - r.pos,
            });
        }
        Ok(Self {
            body,
            body_bytes,
            signature,
        })
    }

    /// Checks the signature: `verify_signature` must return whether `input.signature` over
    /// `input.payload` verifies with the signature key of leaf `input.leaf` in epoch
    /// `input.epoch` (false if there is no such member). `epoch_binding` is that epoch's
    /// binding (see [`EPOCH_BINDING_LABEL`]).
    pub fn verify<F>(
        self,
        epoch_binding: &[u8; EPOCH_BINDING_LEN],
        verify_signature: F,
    ) -> Result<VerifiedManifest, ManifestError>
    where
        F: FnOnce(&SignatureInput<'_>) -> bool,
    {
        let payload = sign_content(epoch_binding, &self.body_bytes);
        let input = SignatureInput {
            epoch: self.body.epoch,
            leaf: self.body.leaf,
            payload: &payload,
            signature: &self.signature,
        };
        if verify_signature(&input) {
            Ok(VerifiedManifest { body: self.body })
        } else {
            Err(ManifestError::BadSignature)
        }
    }
}

/// A manifest whose signature verified with its leaf's key in its epoch; only
/// [`SignedManifest::verify`] makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest {
    body: ManifestBody,
}

impl VerifiedManifest {
    /// The authenticated body.
    pub fn body(&self) -> &ManifestBody {
        &self.body
    }

    /// Test-only: treat `body` as verified.
    #[cfg(test)]
    pub(crate) fn assume_verified(body: ManifestBody) -> Self {
        Self { body }
    }
}

/// A bounds-checked big-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ManifestError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(ManifestError::Truncated { field })?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or(ManifestError::Truncated { field })?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ManifestError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ManifestError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, ManifestError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, ManifestError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, ManifestError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
}
