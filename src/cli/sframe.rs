//! `blindcall sframe seal|open`: one RFC 9605 frame, hex in on stdin, hex out on stdout.

use std::io::{Read, Write};

use blindcall_sframe::{
    BaseKey, CipherSuite, Counter, Header, Kid, Receiver, ReceiverConfig, Sender,
};
use clap::Subcommand;

use super::CliError;

/// `blindcall sframe ...`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    op: Op,
}

#[derive(Debug, Subcommand)]
enum Op {
    /// Encrypt: reads the plaintext as hex on stdin, prints the SFrame ciphertext
    /// (header || ciphertext || tag) as hex.
    Seal {
        /// Cipher suite id (1-8, IANA "SFrame Cipher Suites").
        #[arg(long)]
        suite: u16,
        #[command(flatten)]
        key: KeyArgs,
        /// Key identifier.
        #[arg(long)]
        kid: u64,
        /// Frame counter.
        #[arg(long)]
        ctr: u64,
        /// Metadata (authenticated, not sent) as hex.
        #[arg(long, default_value = "")]
        metadata: String,
    },
    /// Decrypt: reads the SFrame ciphertext as hex on stdin, prints the plaintext as hex.
    /// The key is installed for the KID found in the frame's header.
    Open {
        /// Cipher suite id (1-8).
        #[arg(long)]
        suite: u16,
        #[command(flatten)]
        key: KeyArgs,
        /// Metadata (authenticated, not sent) as hex.
        #[arg(long, default_value = "")]
        metadata: String,
    },
}

/// Environment variable holding the base key (hex) when no option gives it.
const KEY_ENV: &str = "BLINDCALL_SFRAME_KEY";

/// Where the base key comes from: a file or `BLINDCALL_SFRAME_KEY` keep it off the command
/// line (visible to other users of the machine); `--base-key` is for throwaway test keys.
#[derive(Debug, clap::Args)]
struct KeyArgs {
    /// Base key as hex (visible to other users in the process list: test keys only).
    #[arg(long = "base-key", conflicts_with = "base_key_file")]
    base_key: Option<String>,
    /// A file holding the base key as hex.
    #[arg(long = "base-key-file", value_name = "FILE")]
    base_key_file: Option<std::path::PathBuf>,
}

impl KeyArgs {
    fn load(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<BaseKey, CliError> {
        let text = zeroize::Zeroizing::new(match (&self.base_key, &self.base_key_file) {
            (Some(k), _) => k.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?,
            (None, None) => env(KEY_ENV).ok_or_else(|| {
                format!("give the base key with --base-key-file FILE or {KEY_ENV}")
            })?,
        });
        let bytes =
            hex::decode(text.trim()).map_err(|_| "the base key is not valid hex".to_string())?;
        Ok(BaseKey::from_vec(bytes))
    }
}

fn hex_arg(what: &str, s: &str) -> Result<Vec<u8>, CliError> {
    hex::decode(s.trim()).map_err(|e| format!("{what} is not valid hex: {e}"))
}

fn stdin_hex() -> Result<Vec<u8>, CliError> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    let compact: String = s.split_whitespace().collect();
    hex_arg("stdin", &compact)
}

fn print_hex(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", hex::encode(bytes)).map_err(|e| format!("cannot write stdout: {e}"))
}

fn suite(id: u16) -> Result<CipherSuite, CliError> {
    CipherSuite::from_id(id).map_err(|e| e.to_string())
}

/// Runs `blindcall sframe seal|open`.
pub(crate) fn run(args: Args) -> Result<(), CliError> {
    let env = |v: &str| std::env::var(v).ok();
    match args.op {
        Op::Seal {
            suite: id,
            key,
            kid,
            ctr,
            metadata,
        } => {
            let suite = suite(id)?;
            let key = key.load(&env)?;
            let metadata = hex_arg("--metadata", &metadata)?;
            let plaintext = stdin_hex()?;
            let mut sender = Sender::with_counter(suite, Kid(kid), &key, Counter(ctr))
                .map_err(|e| e.to_string())?;
            let frame = sender
                .seal(&metadata, &plaintext)
                .map_err(|e| e.to_string())?;
            print_hex(&frame)
        }
        Op::Open {
            suite: id,
            key,
            metadata,
        } => {
            let suite = suite(id)?;
            let key = key.load(&env)?;
            let metadata = hex_arg("--metadata", &metadata)?;
            let mut frame = stdin_hex()?;
            let (header, _) =
                Header::decode(&frame).map_err(|e| format!("malformed SFrame header: {e}"))?;
            let mut receiver = Receiver::new(ReceiverConfig::default());
            receiver
                .add_key(suite, header.kid, &key)
                .map_err(|e| e.to_string())?;
            let opened = receiver
                .open_in_place(&metadata, &mut frame)
                .map_err(|e| e.to_string())?;
            print_hex(opened.plaintext)
        }
    }
}
