//! `blindcall`: the command-line entry point (one module per subcommand under `cli/`).
#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
