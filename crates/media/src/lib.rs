//! SFrame over RTP, sans-IO.
//!
//! An encoded frame is sealed whole with SFrame (per-frame mode) and then split into RTP
//! payloads here, in the style of draft-ietf-avtcore-rtp-sframe: each payload starts with a
//! one-byte [`descriptor`] marking the first and last packet of the frame, and the last packet
//! carries the RTP marker bit. The [`Depacketizer`] reassembles frames under loss, reordering
//! and duplication; a frame is handed out only when every one of its packets arrived, so an
//! incomplete frame never reaches `open`. [`source`] generates synthetic audio and video frames
//! whose integrity a receiver can check end to end.
//!
//! Nothing here reads a clock, opens a socket or spawns a task: time is an argument.
#![forbid(unsafe_code)]

pub mod depacketizer;
pub mod descriptor;
pub mod error;
pub mod packetizer;
pub mod seq;
pub mod source;

pub use depacketizer::{Depacketizer, DepacketizerConfig, DepacketizerStats, Frame};
pub use descriptor::Descriptor;
pub use error::{DepacketizeError, IntegrityError, PacketizeError};
pub use packetizer::{Packetizer, PacketizerConfig, RtpPacket};
pub use source::{FrameInfo, MediaKind, SeededRng, SyntheticFrame, SyntheticSource};
