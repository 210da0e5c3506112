//! The blind relay: admission by room capability token, the MLS delivery service, and the
//! TLS 1.3 control server operators run.
//!
//! The sans-IO cores are [`token`] (capability tokens) and [`ds`] (the delivery-service state
//! machine): they never read a clock, open a socket or spawn a task. [`server`] is the tokio +
//! rustls shell that drives them, [`config`] reads `relay.toml`, [`metrics`] exports Prometheus
//! metrics and [`cli`] holds what the `blindcall-relay` binary and the `blindcall` CLI run. The
//! relay validates MLS handshakes with public state only and cannot name any media key type: it
//! does not depend on `blindcall-sframe` or `blindcall-group`.

pub mod cli;
pub mod config;
pub mod ds;
pub mod metrics;
pub mod server;
pub mod time;
pub mod token;

pub use config::{ConfigError, RelayConfig};
pub use ds::{
    CloseReason, ConnId, Ds, DsConfig, DsCounters, DsFault, Event, Input, MediaSignalError,
    Occupancy, Output, RelayIdentity, RoomId,
};
pub use server::{
    ForwarderCommand, ForwarderEvent, MediaHook, RelayHandle, ServerConfig, ServerError,
    ShellLimits, start,
};
pub use time::Timestamp;
pub use token::{TokenClaims, TokenRefusal, TokenSecret};
