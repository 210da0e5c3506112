//! `blindcall-relay`: the blind relay: control server, delivery service and media forwarder.
//!
//! ```text
//! blindcall-relay --config relay.toml
//! blindcall-relay --listen 127.0.0.1:4433 --dev-self-signed   # secret from BLINDCALL_TOKEN_SECRET
//! blindcall-relay --config relay.toml --no-media  # control channel only
//! blindcall-relay --print-example-config > relay.toml
//! ```

use std::process::ExitCode;

use blindcall_relay::cli::{RelayArgs, run_relay};
use clap::Parser;

/// The blind relay: admission and MLS delivery service over TLS 1.3, and WebRTC media forwarding.
#[derive(Debug, Parser)]
#[command(name = "blindcall-relay", version)]
struct Cli {
    #[command(flatten)]
    relay: RelayArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_relay(&cli.relay) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blindcall-relay: {e}");
            ExitCode::FAILURE
        }
    }
}
