//! `blindcall-relay`: the blind relay's control server.
//!
//! ```text
//! blindcall-relay --config relay.toml
//! blindcall-relay --listen 127.0.0.1:4433 --dev-self-signed   # secret from BLINDCALL_TOKEN_SECRET
//! blindcall-relay --print-example-config > relay.toml
//! ```

use std::process::ExitCode;

use blindcall_relay::cli::{RelayArgs, run_relay};
use clap::Parser;

/// The blind relay: admission, MLS delivery service and (later) media forwarding, over TLS 1.3.
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
