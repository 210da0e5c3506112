//! Command-line interface: argument parsing and dispatch. Each subcommand lives in its own
//! module with an `Args` type and a `run` function; add new ones (`demo`, `relay`, `join`,
//! `token`) as a variant of [`Command`] plus a module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cluster;
mod demo;
mod events;
mod join;
mod relay;
mod sframe;
mod token;

/// End-to-end encrypted group calls: MLS keys, SFrame media, a blind relay.
#[derive(Debug, Parser)]
#[command(name = "blindcall", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A real encrypted call on loopback: embedded relay + N participants, live table, report.
    Demo(demo::Args),
    /// Run the relay: TLS control channel, delivery service, WebRTC media forwarder.
    Relay(blindcall_relay::cli::RelayArgs),
    /// A relay cluster's nodes and rooms, from its NATS JetStream room store.
    Cluster(cluster::Args),
    /// Join a call from this terminal with synthetic audio and video.
    Join(join::Args),
    /// Mint a room capability token with the operator's secret.
    Token(blindcall_relay::cli::TokenArgs),
    /// RFC 9605 SFrame: seal or open one frame (for auditors and interop).
    Sframe(sframe::Args),
}

/// A failure to report on one line of stderr.
pub(crate) type CliError = String;

/// Parses the command line, runs the subcommand, maps failures to a one-line stderr message
/// and exit code 1 (clap's own usage errors exit with 2).
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Relay(args) => relay::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Join(args) => join::run(args),
        Command::Token(args) => token::run(args),
        Command::Sframe(args) => sframe::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("error: {}", reason.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
