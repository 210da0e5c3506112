//! RFC 9605 SFrame: per-frame end-to-end media encryption.
//!
//! Sans-IO and call-and-return: a [`Sender`] seals frames for one KID and owns that key's
//! counter; a [`Receiver`] opens frames, choosing the key by KID only and keeping a replay
//! window per KID, optionally with a [`JumpLimit`] on how far one frame may move it (time is
//! an argument: [`Receiver::open_in_place_at`]). Keys are derived once per KID (RFC 9605
//! §4.4.2) and zeroized on drop. [`Sender::seal_into`], [`Sender::seal_in_place`],
//! [`Receiver::open_in_place`] and [`Receiver::open_in_place_at`] make no heap allocation per
//! frame (see [`MAX_INLINE_AAD`] for the one documented exception).
//!
//! ```
//! use blindcall_sframe::{BaseKey, CipherSuite, Kid, Receiver, ReceiverConfig, Sender};
//!
//! let suite = CipherSuite::AES_128_GCM_SHA256_128;
//! let base_key = BaseKey::new(&[7u8; 16]);
//! let mut sender = Sender::new(suite, Kid(42), &base_key)?;
//! let mut receiver = Receiver::new(ReceiverConfig::default());
//! receiver.add_key(suite, Kid(42), &base_key)?;
//!
//! let frame = sender.seal(b"rtp-ext", b"hello")?;
//! let (header, plaintext) = receiver.open(b"rtp-ext", &frame)?;
//! assert_eq!(header.kid, Kid(42));
//! assert_eq!(plaintext, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod error;
mod header;
mod jump;
mod key;
pub mod mls;
mod receiver;
mod replay;
mod sender;
mod suite;

#[cfg(test)]
mod tests;

pub use error::{DropReason, HeaderError, HeaderField, KeyError, OpenError, SealError};
pub use header::{Counter, Header, Kid};
pub use jump::JumpLimit;
pub use key::{BaseKey, MAX_INLINE_AAD};
pub use receiver::{Opened, Receiver, ReceiverConfig};
pub use replay::MAX_REPLAY_WINDOW;
pub use sender::Sender;
pub use suite::CipherSuite;
