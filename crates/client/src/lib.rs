//! blindcall-client: the SDK an application links to take part in an end-to-end encrypted
//! call through a blind relay.
//!
//! [`Call::join`] opens the TLS control channel, gets admitted with a room capability token,
//! creates the call's MLS group (host, empty room) or waits in the waiting room until a host
//! admits it, then opens one WebRTC PeerConnection to the relay's forwarder (signaled through
//! the control channel). Every outgoing frame is sealed with SFrame under the group's current
//! send key **before** it is packetized; every incoming frame is reassembled and only then
//! opened. The relay sees RTP headers and ciphertext only. Senders sign manifests of their
//! frames; every delivered frame says whether its sender is verified
//! ([`IncomingFrame::auth`]). [`Events`] reports membership, waiting-room requests, epochs
//! with their security codes, keyframe requests, per-sender decrypt health, impersonation,
//! group splits and the end of the call; a [`CallObserver`] sees every frame sealed and
//! opened as it happens. See `spec/client.md` for the normative behaviour.
//!
//! ```no_run
//! use blindcall_client::{Call, Event, JoinOptions, MediaKind, MediaMode, TrustAnchor};
//!
//! # async fn demo(pem: String, token: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let mut options = JoinOptions::new(TrustAnchor::Pem(pem));
//! options.media = MediaMode::App;
//! let (call, mut events) = Call::join("127.0.0.1:7443".parse()?, token, "alice", options).await?;
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::JoinRequested { request, .. } => call.approve(request).await?,
//!         Event::EpochChanged { epoch, code } => println!("epoch {epoch}: compare {code}"),
//!         Event::MediaConnected => call.publish(MediaKind::Audio, vec![0u8; 120]).await?,
//!         Event::CallEnded { reason } => println!("ended: {reason:?}"),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Inside, every protocol decision is made by [`CallCore`], a sans-IO state machine (inputs
//! `handle_*` with the current instant, outputs `poll_output`, deadline `poll_timeout`; see
//! [`core`]); a thin tokio driver moves bytes, requests and timers between it and the TLS
//! control channel, the WebRTC transport and the application. Other shells (a simulator, a
//! browser binding) can drive the same core.
//!
//! The SDK holds no relay and no demo code: the scripted demo call, its report and an
//! in-process relay live in `blindcall-demo`.

mod call;
mod control;
pub mod core;
mod driver;
pub mod error;
pub mod event;
pub mod identity;
pub mod invite;
pub mod media;
pub mod observer;
pub mod options;
pub mod tls;
pub mod trust;

pub use crate::core::{
    CallCore, Command, ControlEnd, MediaInput, Output, ReconnectPolicy, RelayRef, TransportOp,
};
pub use blindcall_group::MlsSuite;
pub use blindcall_media::MediaKind;
pub use blindcall_proto::{RefusedReason, ResumeRefusedReason, Role};
pub use blindcall_transport::MediaNetwork;
pub use call::{Call, Events};
pub use error::{
    CallError, CallWarning, FrameRejected, GroupFailure, JoinError, OptionsError, ProtocolError,
    TransportWarning,
};
pub use event::{
    AuthCounters, CallStats, DropCause, EndReason, Event, FrameReason, ImpersonationReason,
    InviteCheck, JoinRefusal, KeyframeCause, LatencySummary, Member, PeerRefusal, SenderAuth,
    SenderHealth,
};
pub use identity::Identity;
pub use invite::Invite;
pub use media::IncomingFrame;
pub use observer::CallObserver;
pub use options::{JoinOptions, MediaMode, TrustAnchor, VideoSelection};
pub use trust::{Trust, TrustStore};
