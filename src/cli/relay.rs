//! `blindcall relay`: the relay with its media forwarder, until SIGINT/SIGTERM.

use blindcall_relay::cli::{RelayArgs, init_logging};

use super::CliError;

/// Runs the relay (control server + delivery service + WebRTC forwarder).
pub(crate) fn run(args: RelayArgs) -> Result<(), CliError> {
    if args.print_example_config {
        return blindcall_relay::cli::run_relay(&args).map_err(|e| e.to_string());
    }
    init_logging(&args.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime
        .block_on(blindcall_client::embedded::run_relay_with_media(&args))
        .map_err(|e| e.to_string())
}
