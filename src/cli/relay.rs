//! `blindcall relay`: the relay crate's server (control channel, delivery service and media
//! forwarder) until SIGINT/SIGTERM — the same as the `blindcall-relay` binary.

use blindcall_relay::cli::RelayArgs;

use super::CliError;

/// Runs the relay (control server + delivery service + WebRTC forwarder unless `--no-media`).
pub(crate) fn run(args: RelayArgs) -> Result<(), CliError> {
    blindcall_relay::cli::run_relay(&args).map_err(|e| e.to_string())
}
