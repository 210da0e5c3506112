//! RFC 9605 §5.2 KID layout: `KID = context << (S+E) | leaf_index << E | epoch mod 2^E`.

use blindcall_sframe::Kid;

/// Largest number of sender-index bits (an MLS leaf index is a `u32`).
pub const MAX_SENDER_BITS: u8 = 32;
/// Largest number of epoch bits.
pub const MAX_EPOCH_BITS: u8 = 16;
/// Largest number of context bits.
pub const MAX_CONTEXT_BITS: u8 = 16;

/// Why a KID layout or a KID component is out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KidError {
    /// The layout's bit counts are outside the allowed ranges.
    #[error("invalid KID layout: S={sender_bits}, E={epoch_bits}, C={context_bits}")]
    InvalidLayout {
        /// S, sender-index bits.
        sender_bits: u8,
        /// E, epoch bits.
        epoch_bits: u8,
        /// Context bits.
        context_bits: u8,
    },
    /// The leaf index does not fit in S bits.
    #[error("leaf index {leaf} does not fit in {sender_bits} bits")]
    LeafOutOfRange {
        /// Offending leaf index.
        leaf: u32,
        /// S.
        sender_bits: u8,
    },
    /// The context does not fit in the context bits.
    #[error("context {context} does not fit in {context_bits} bits")]
    ContextOutOfRange {
        /// Offending context.
        context: u64,
        /// Context bits.
        context_bits: u8,
    },
    /// The KID has bits set above `C + S + E`.
    #[error("KID {kid} has bits above the {total_bits}-bit layout")]
    KidOutOfRange {
        /// Offending KID value.
        kid: u64,
        /// C + S + E.
        total_bits: u8,
    },
}

/// The parts of an MLS-derived KID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KidParts {
    /// Stream context of the sender (audio, video layer, screen, ...).
    pub context: u64,
    /// Sender's MLS leaf index.
    pub leaf: u32,
    /// Low E bits of the MLS epoch.
    pub epoch_low: u64,
}

/// A KID layout: S sender bits, E epoch bits and C context bits, fixed for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KidLayout {
    sender_bits: u8,
    epoch_bits: u8,
    context_bits: u8,
}

fn mask(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

impl KidLayout {
    /// A layout with `sender_bits` (1..=32), `epoch_bits` (1..=16) and `context_bits` (0..=16).
    pub fn new(sender_bits: u8, epoch_bits: u8, context_bits: u8) -> Result<Self, KidError> {
        let ok = (1..=MAX_SENDER_BITS).contains(&sender_bits)
            && (1..=MAX_EPOCH_BITS).contains(&epoch_bits)
            && context_bits <= MAX_CONTEXT_BITS;
        if !ok {
            return Err(KidError::InvalidLayout {
                sender_bits,
                epoch_bits,
                context_bits,
            });
        }
        Ok(Self {
            sender_bits,
            epoch_bits,
            context_bits,
        })
    }

    /// The smallest S that gives every one of `max_members` members its own index (at least 1).
    pub fn sender_bits_for(max_members: u32) -> u8 {
        let needed = 32 - max_members.saturating_sub(1).leading_zeros();
        // `needed` is in 0..=32, so the conversion cannot fail.
        u8::try_from(needed.max(1)).unwrap_or(MAX_SENDER_BITS)
    }

    /// S, the number of leaf-index bits.
    pub fn sender_bits(&self) -> u8 {
        self.sender_bits
    }

    /// E, the number of epoch bits.
    pub fn epoch_bits(&self) -> u8 {
        self.epoch_bits
    }

    /// The number of context bits.
    pub fn context_bits(&self) -> u8 {
        self.context_bits
    }

    /// Total bits used by a KID in this layout.
    pub fn total_bits(&self) -> u8 {
        self.sender_bits + self.epoch_bits + self.context_bits
    }

    /// `epoch mod 2^E`.
    pub fn epoch_low(&self, epoch: u64) -> u64 {
        epoch & mask(self.epoch_bits)
    }

    /// Number of distinct contexts (`2^C`).
    pub fn max_contexts(&self) -> u64 {
        mask(self.context_bits).saturating_add(1)
    }

    /// Builds the KID for (`context`, `leaf`, `epoch`); the epoch is reduced mod 2^E.
    pub fn encode(&self, context: u64, leaf: u32, epoch: u64) -> Result<Kid, KidError> {
        if u64::from(leaf) > mask(self.sender_bits) {
            return Err(KidError::LeafOutOfRange {
                leaf,
                sender_bits: self.sender_bits,
            });
        }
        if context > mask(self.context_bits) {
            return Err(KidError::ContextOutOfRange {
                context,
                context_bits: self.context_bits,
            });
        }
        // One formula for the whole project: RFC 9605 §5.2 as implemented by the SFrame crate.
        blindcall_sframe::mls::kid(
            context,
            leaf,
            epoch,
            u32::from(self.sender_bits),
            u32::from(self.epoch_bits),
        )
        .map_err(|_| KidError::InvalidLayout {
            sender_bits: self.sender_bits,
            epoch_bits: self.epoch_bits,
            context_bits: self.context_bits,
        })
    }

    /// Splits a KID into its parts; fails if bits above the layout are set.
    pub fn decode(&self, kid: Kid) -> Result<KidParts, KidError> {
        let total = self.total_bits();
        if kid.0 > mask(total) {
            return Err(KidError::KidOutOfRange {
                kid: kid.0,
                total_bits: total,
            });
        }
        let se = self.sender_bits + self.epoch_bits;
        let context = if se >= 64 { 0 } else { kid.0 >> se };
        let leaf_bits = (kid.0 >> self.epoch_bits) & mask(self.sender_bits);
        // `leaf_bits` < 2^S <= 2^32, so the conversion cannot fail.
        let leaf = u32::try_from(leaf_bits).map_err(|_| KidError::KidOutOfRange {
            kid: kid.0,
            total_bits: total,
        })?;
        Ok(KidParts {
            context,
            leaf,
            epoch_low: self.epoch_low(kid.0),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // covers: KS-KID-1
    #[test]
    fn layout_matches_rfc_formula_example() {
        let layout = KidLayout::new(10, 4, 2).unwrap();
        let kid = layout.encode(3, 517, 0x1234_5677).unwrap();
        assert_eq!(kid.0, (3u64 << 14) | (517u64 << 4) | 0x7);
        assert_eq!(
            layout.decode(kid).unwrap(),
            KidParts {
                context: 3,
                leaf: 517,
                epoch_low: 7
            }
        );
    }

    // covers: KS-KID-2
    #[test]
    fn sender_bits_from_max_members() {
        assert_eq!(KidLayout::sender_bits_for(0), 1);
        assert_eq!(KidLayout::sender_bits_for(1), 1);
        assert_eq!(KidLayout::sender_bits_for(2), 1);
        assert_eq!(KidLayout::sender_bits_for(3), 2);
        assert_eq!(KidLayout::sender_bits_for(512), 9);
        assert_eq!(KidLayout::sender_bits_for(513), 10);
        assert_eq!(KidLayout::sender_bits_for(1024), 10);
        assert_eq!(KidLayout::sender_bits_for(u32::MAX), 32);
    }

    // covers: KS-KID-3
    #[test]
    fn layout_ranges_are_validated() {
        assert!(KidLayout::new(0, 4, 2).is_err());
        assert!(KidLayout::new(33, 4, 2).is_err());
        assert!(KidLayout::new(10, 0, 2).is_err());
        assert!(KidLayout::new(10, 17, 2).is_err());
        assert!(KidLayout::new(10, 4, 17).is_err());
        assert!(KidLayout::new(32, 16, 16).is_ok());
        let layout = KidLayout::new(3, 2, 1).unwrap();
        assert_eq!(
            layout.encode(0, 8, 0),
            Err(KidError::LeafOutOfRange {
                leaf: 8,
                sender_bits: 3
            })
        );
        assert_eq!(
            layout.encode(2, 0, 0),
            Err(KidError::ContextOutOfRange {
                context: 2,
                context_bits: 1
            })
        );
        assert_eq!(
            layout.decode(Kid(1 << 6)),
            Err(KidError::KidOutOfRange {
                kid: 64,
                total_bits: 6
            })
        );
        assert!(layout.decode(Kid(63)).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x4b1d),
            ..ProptestConfig::default()
        })]

        // covers: KS-KID-1, KS-KID-3
        #[test]
        fn encode_decode_round_trip(
            s in 1u8..=32, e in 1u8..=16, c in 0u8..=16,
            leaf in any::<u32>(), context in any::<u64>(), epoch in any::<u64>(),
        ) {
            let layout = KidLayout::new(s, e, c).unwrap();
            let leaf = if s == 32 { leaf } else { leaf & ((1u32 << s) - 1) };
            let context = context & mask(c);
            let kid = layout.encode(context, leaf, epoch).unwrap();
            prop_assert!(kid.0 <= mask(layout.total_bits()));
            let parts = layout.decode(kid).unwrap();
            prop_assert_eq!(parts, KidParts { context, leaf, epoch_low: epoch % (1u64 << e) });
        }

        // covers: KS-KID-3
        #[test]
        fn out_of_range_parts_are_rejected(
            s in 1u8..=31, e in 1u8..=16, c in 0u8..=15, leaf in any::<u32>(), context in any::<u64>(),
        ) {
            let layout = KidLayout::new(s, e, c).unwrap();
            let leaf_ok = u64::from(leaf) < (1u64 << s);
            prop_assert_eq!(layout.encode(0, leaf, 0).is_ok(), leaf_ok);
            let ctx_ok = context < (1u64 << c);
            prop_assert_eq!(layout.encode(context, 0, 0).is_ok(), ctx_ok);
        }
    }
}
