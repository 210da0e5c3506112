//! Signed media (spec/media-auth.md): every member shares the SFrame keys of an epoch, so any
//! member could seal frames under another member's KID (RFC 9605 §7.2 leaves sender
//! authentication open). Senders therefore sign, with their MLS leaf signature key, manifests
//! of truncated SHA-256 hashes of the SFrame frames they sent; receivers pin each incoming
//! stream to one leaf and check every frame of a signing leaf against those manifests.
//!
//! Sans-IO, time is an argument. Sender: [`ManifestSigner::record`] after each sealed frame,
//! [`ManifestSigner::poll_manifest`] when [`ManifestSigner::poll_timeout`] fires,
//! [`ManifestBody::sign`], [`SignedManifest::encode`], broadcast. Receiver: a peer message goes
//! through [`SignedManifest::decode`] and [`SignedManifest::verify`] into
//! [`MediaVerifier::on_manifest`]; a media frame goes through [`MediaVerifier::check_stream`]
//! (before decryption), [`frame_hash`] (before decryption in place), the SFrame open, then
//! [`MediaVerifier::on_opened`]; timers through `poll_timeout`/`handle_timeout`; events through
//! [`MediaVerifier::poll_event`].

mod signer;
mod stats;
mod verifier;
mod wire;

pub use signer::{ManifestSigner, SignerConfig, SignerCounters};
pub use stats::LatencyHistogram;
pub use verifier::{
    AuthCounters, AuthenticatedFrame, FrameAuth, ImpersonationReason, ManifestRefusal,
    MediaAuthEvent, MediaVerifier, StreamRefusal, StreamStatus, VerifierConfig, VerifierCounters,
};
pub use wire::{
    BODY_HEADER_LEN, ENTRY_HEADER_LEN, EPOCH_BINDING_LABEL, EPOCH_BINDING_LEN, MANIFEST_SIGN_LABEL,
    MANIFEST_VERSION, MAX_BODY_LEN, MAX_MANIFEST_LEN, MAX_SIGNATURE_LEN, ManifestBody,
    ManifestEntry, ManifestError, SignError, SignatureInput, SignedManifest, VerifiedManifest,
    sign_content,
};

/// The leaf capability (an MLS extension type) by which a leaf announces that it signs its
/// media; receivers expect manifests from exactly the leaves that advertise it.
pub const SIGNS_MEDIA_EXTENSION_TYPE: u16 = blindcall_policy::SIGNS_MEDIA_CAPABILITY;

/// Length of a frame hash in bytes.
pub const FRAME_HASH_LEN: usize = 16;

/// The first 16 bytes of SHA-256 over a whole SFrame frame (header, ciphertext and tag).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHash(pub [u8; FRAME_HASH_LEN]);

/// Hashes a whole SFrame frame as sent or received (before it is decrypted in place).
pub fn frame_hash(sframe: &[u8]) -> FrameHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, sframe);
    let mut out = [0u8; FRAME_HASH_LEN];
    // SHA-256 output is 32 bytes, so the first 16 always exist.
    for (o, d) in out.iter_mut().zip(digest.as_ref()) {
        *o = *d;
    }
    FrameHash(out)
}

/// One incoming media flow: the relay's participant (connection) id that carries it and the
/// caller's id for the (participant, media kind) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StreamRef {
    /// Caller-chosen stream id, unique among open streams.
    pub id: u64,
    /// Relay participant (connection) id the stream arrives from.
    pub participant: u64,
}

#[cfg(test)]
mod tests;
