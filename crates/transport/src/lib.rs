//! blindcall-transport: the WebRTC media plumbing of blindcall.
//!
//! - [`Sfu`]: the relay's forwarder. One PeerConnection per participant; forwards each
//!   publisher's RTP packets to every other participant, rewriting only SSRC, payload type,
//!   header-extension ids (and sequence/timestamp when a leg's source changes); forwards
//!   keyframe requests upstream; counts every packet in, out and dropped. Each publisher
//!   stream is pinned to the one SSRC its answer announced ([`announce`]). It never reads a
//!   payload byte and cannot name a key.
//! - [`ClientTransport`]: a participant's single PeerConnection to the relay.
//!
//! Signaling is left to the caller: offers and answers are [`SessionDescription`] values
//! (complete SDP, candidates included) to carry over the control channel. The relay always
//! offers; clients always answer. Host candidates on one configured address ([`MediaNetwork`];
//! 127.0.0.1 by default), ephemeral ports, no STUN.
//!
//! Sans-IO pieces (unit-tested without sockets): [`rewrite`], [`negotiation`], [`counters`],
//! [`feedback`], [`ids`], [`subscription`], [`announce`].

pub mod announce;
pub mod client;
pub mod counters;
pub mod error;
pub mod feedback;
pub mod ids;
pub mod negotiation;
mod peer;
pub mod rewrite;
mod runtime;
pub mod sfu;
pub mod subscription;

pub use blindcall_media::{MediaKind, RtpPacket};
pub use client::{ClientConfig, ClientEvent, ClientStats, ClientTransport};
pub use counters::{CountersSnapshot, DropReason};
pub use error::TransportError;
pub use ids::ParticipantId;
pub use peer::{
    AUDIO_MIME, AUDIO_PT, ConnectionState, MediaNetwork, SdpKind, SessionDescription, VIDEO_MIME,
    VIDEO_PT, advertise_candidates,
};
pub use runtime::SOCKET_BUFFER_BYTES;
pub use sfu::{ParticipantOptions, Sfu, SfuConfig, SfuEvent, TappedPacket};
pub use subscription::VideoSubscription;
