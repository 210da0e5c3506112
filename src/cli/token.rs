//! `blindcall token`: mint a room capability token with the operator's secret.

use std::time::SystemTime;

use blindcall_relay::cli::{TokenArgs, mint_token};

use super::CliError;

/// Prints the token's text form on stdout (its id and expiry on stderr).
pub(crate) fn run(args: TokenArgs) -> Result<(), CliError> {
    let t = mint_token(&args, SystemTime::now(), &|v| std::env::var(v).ok())
        .map_err(|e| e.to_string())?;
    eprintln!(
        "token id {} expires at unix {}",
        hex::encode(t.token_id),
        t.expires_at
    );
    println!("{}", t.text);
    Ok(())
}
