//! SFrame keys from an MLS group (RFC 9605 §5.2).
//!
//! RFC 9605 §5.2 derives one base key per epoch,
//! `base_key = MLS-Exporter("SFrame 1.0 Base Key", "", AEAD.Nk)`, shared by all members; every
//! member still gets its own `sframe_key`/`sframe_salt` because §4.4.2 mixes the KID into the
//! derivation, and the KID encodes the sender index:
//! `KID = (context << (S + E)) + (sender_index << E) + (epoch % (1 << E))`.

use crate::error::KeyError;
use crate::header::Kid;
use crate::key::BaseKey;
use crate::suite::CipherSuite;

/// MLS exporter label for the per-epoch SFrame base key.
pub const EXPORTER_LABEL: &str = "SFrame 1.0 Base Key";

/// MLS exporter context for the per-epoch SFrame base key (empty).
pub const EXPORTER_CONTEXT: &[u8] = b"";

/// Exporter output length for `suite` (AEAD.Nk).
pub fn exporter_length(suite: CipherSuite) -> usize {
    suite.nk()
}

/// RFC 9605 §5.2 base key for `sender_index`'s frames in the epoch whose exporter output is
/// `epoch_secret`.
///
/// In RFC 9605 as published, every member of an epoch uses the exporter output itself as
/// `base_key` (earlier drafts expanded it per sender index; the RFC does not). Per-sender
/// separation comes from the KID (see [`kid`]), which §4.4.2 mixes into the key and salt.
/// So this returns a copy of `epoch_secret` after checking it is AEAD.Nk bytes; the index is
/// accepted so callers name who the key is for, and is not mixed in.
pub fn sender_base_key(
    suite: CipherSuite,
    epoch_secret: &BaseKey,
    sender_index: u32,
) -> Result<BaseKey, KeyError> {
    let _ = sender_index;
    if epoch_secret.len() != suite.nk() {
        return Err(KeyError::BadKeyLength {
            expected: suite.nk(),
            got: epoch_secret.len(),
        });
    }
    Ok(BaseKey::new(epoch_secret.expose_secret()))
}

/// The RFC 9605 §5.2 KID: `(context << (S + E)) + (sender_index << E) + (epoch % (1 << E))`
/// with `s_bits` = S and `e_bits` = E.
///
/// Errors if `S + E > 64`, if the index needs more than S bits, or if the context does not
/// fit the remaining `64 - S - E` bits.
pub fn kid(
    context: u64,
    sender_index: u32,
    epoch: u64,
    s_bits: u32,
    e_bits: u32,
) -> Result<Kid, KeyError> {
    let se = s_bits
        .checked_add(e_bits)
        .filter(|&n| n <= 64)
        .ok_or(KeyError::KidLayout("S + E exceeds 64 bits"))?;
    let index = u64::from(sender_index);
    if s_bits < 64 && index >> s_bits != 0 {
        return Err(KeyError::KidLayout("sender index does not fit S bits"));
    }
    let ctx_part = if se == 64 {
        if context != 0 {
            return Err(KeyError::KidLayout("no bits left for the context"));
        }
        0
    } else {
        if context >> (64 - se) != 0 {
            return Err(KeyError::KidLayout("context does not fit 64 - S - E bits"));
        }
        context << se
    };
    let idx_part = if s_bits == 0 { 0 } else { index << e_bits };
    let epoch_part = if e_bits == 64 {
        epoch
    } else {
        epoch & ((1u64 << e_bits) - 1)
    };
    Ok(Kid(ctx_part | idx_part | epoch_part))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
