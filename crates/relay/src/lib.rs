//! The blind relay: admission by room capability token, the MLS delivery service, and the
//! TLS 1.3 control server operators run, with its WebRTC media forwarder.
//!
//! The sans-IO cores are [`token`] (capability tokens) and [`ds`] (the delivery-service state
//! machine): they never read a clock, open a socket or spawn a task. [`server`] is the tokio +
//! rustls shell that drives them, [`forward`] attaches the media forwarder (one
//! `blindcall_transport::Sfu` per room) to it, [`store`] keeps what the delivery service must
//! not lose (in memory, or in NATS JetStream shared by a cluster's nodes), [`config`] reads
//! `relay.toml`, [`metrics`] exports Prometheus metrics and [`cli`] holds what the
//! `blindcall-relay` binary and the `blindcall` CLI run. The relay validates MLS handshakes
//! with public state only, reads RTP headers only, and cannot name any media key type: it does
//! not depend on `blindcall-sframe` or `blindcall-group`.

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod ds;
pub mod forward;
pub mod keyfile;
pub mod metrics;
pub mod server;
pub mod store;
pub mod time;
pub mod token;

pub use config::{ConfigError, RelayConfig};
pub use ds::{
    BanRequest, ChallengeSeed, ClaimAnswer, ClaimRequest, ClaimTicket, CloseReason, ConnId, Ds,
    DsConfig, DsCounters, DsFault, Event, FetchRequest, GenesisAnswer, GenesisRequest,
    HomeClaimAnswer, HomeClaimRequest, HomesConfig, Input, LockRequest, MediaSignalError,
    Occupancy, Output, RelayIdentities, RelayIdentity, RoomId, StoreMode, WaitingWrite,
};
pub use forward::{ForwarderConfig, ForwarderHandle, start_with_media};
pub use server::{
    ControlRecorder, ControlTap, ForwarderCommand, ForwarderEvent, MediaHook, RelayHandle,
    ServerConfig, ServerError, ShellLimits, TapDirection, TappedFrame, start,
};
pub use time::Timestamp;
pub use token::{TokenClaims, TokenRefusal, TokenSecret};
