//! `blindcall join`: take part in a call from a terminal with synthetic audio and video
//! (`blindcall-demo`'s sources, published through the SDK like any application's frames).
//!
//! Identity: `--identity FILE` keeps this device's identity key across calls (created on
//! first use, owner-only); its trust store sits beside it. Admission: the host makes an invite
//! when it creates the call and prints its link (`--invite-out FILE` writes it); joiners pass
//! it with `--invite LINK` or `--invite-file FILE`. Join requests are shown with the name and
//! key their KeyPackage carries and what this device knows of them; with `--auto-approve` the
//! host approves exactly those that proved the invite. On stdin: `approve ID`, `deny ID`,
//! `members`, `code LEAF`, `verify LEAF`, `remove LEAF`, `leave`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use blindcall_client::{
    Call, Event, Identity, Invite, JoinOptions, MediaMode, Member, MlsSuite, TrustAnchor,
};
use blindcall_demo::synthetic::{SyntheticConfig, SyntheticMedia};
use tokio::io::AsyncBufReadExt as _;

use super::CliError;
use super::events::{self, EventsFormat, describe};

/// The `--relay` list: at least one address, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relays(Vec<SocketAddr>);

impl Relays {
    /// The first relay (the one joined through first).
    fn first(&self) -> SocketAddr {
        // Invariant: `parse_relays` never returns an empty list.
        self.0[0]
    }
}

/// Parses `--relay A,B,C`: comma-separated `host:port` entries (an IP address or a name,
/// resolved here); an error names the bad entry.
pub(crate) fn parse_relays(s: &str) -> Result<Relays, String> {
    let mut relays = Vec::new();
    for (i, entry) in s.split(',').enumerate() {
        let entry = entry.trim();
        let n = i + 1;
        if entry.is_empty() {
            return Err(format!(
                "relay entry {n} is empty (expected host:port[,host:port...])"
            ));
        }
        let addr = match entry.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                use std::net::ToSocketAddrs as _;
                entry
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        format!("relay entry {n} `{entry}` is not a reachable host:port")
                    })?
            }
        };
        if !relays.contains(&addr) {
            relays.push(addr);
        }
    }
    Ok(Relays(relays))
}

/// Environment variable holding the capability token when `--token` is not given.
pub(crate) const TOKEN_ENV: &str = "BLINDCALL_TOKEN";

/// `blindcall join`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The relay's control address (host:port), or several nodes of one relay cluster,
    /// comma-separated (`A,B,C`): joining tries them in order, and after a lost connection
    /// the participant resumes on another (one certificate name and trust anchor for all).
    #[arg(long, value_name = "HOST:PORT[,...]", value_parser = parse_relays)]
    relay: Relays,
    /// The room capability token (`bct1.…`, from `blindcall token`). Prefer `--token-file` or
    /// the `BLINDCALL_TOKEN` environment variable: a command line is visible to other users.
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the capability token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Display name (the MLS identity).
    #[arg(long)]
    name: String,
    /// This device's identity key (created on first use, owner-only permissions); without
    /// it, a fresh key for this call only.
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// The trust store (names and keys seen, verified or not); default: the identity file
    /// with `.trust` appended, or none without `--identity`.
    #[arg(long, value_name = "FILE")]
    trust_store: Option<PathBuf>,
    /// The call's invite link (from its host).
    #[arg(long, value_name = "LINK", conflicts_with = "invite_file")]
    invite: Option<String>,
    /// A file holding the call's invite link.
    #[arg(long, value_name = "FILE")]
    invite_file: Option<PathBuf>,
    /// As the host creating the call: write its invite link to FILE (owner-only).
    #[arg(long, value_name = "FILE")]
    invite_out: Option<PathBuf>,
    /// A guest token to put in the invite link this host makes (joiners then need nothing
    /// else than the link).
    #[arg(long, value_name = "TOKEN")]
    guest_token: Option<String>,
    /// As host, approve every join request that proved the call's invite (never others).
    #[arg(long)]
    auto_approve: bool,
    /// As host, deny every join request.
    #[arg(long, conflicts_with = "auto_approve")]
    deny_all: bool,
    /// The relay's certificate (PEM), e.g. the development certificate it wrote.
    #[arg(long, value_name = "FILE", conflicts_with = "fingerprint")]
    cert: Option<PathBuf>,
    /// The relay certificate's SHA-256 fingerprint, as the relay printed it.
    #[arg(long)]
    fingerprint: Option<String>,
    /// Name the certificate must carry.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Leave after this many seconds (default: until Ctrl-C or `leave`).
    #[arg(long)]
    duration: Option<u64>,
    /// Join without publishing media.
    #[arg(long)]
    receive_only: bool,
    /// The local address of both the control connection and the media sockets (default:
    /// the system's choice for control, 127.0.0.1 for media; an interface address reaches a
    /// relay on another machine).
    #[arg(long, value_name = "IP", alias = "media-bind")]
    bind: Option<std::net::IpAddr>,
    /// How events are printed: `human` (sentences and tables) or `jsonl` (one JSON object
    /// per line with an `event` field, plus a `stats` line every second; other messages go
    /// to stderr).
    #[arg(long, value_enum, default_value = "human")]
    events: EventsFormat,
}

/// Where the call's report goes: stdout in the chosen format; notes for people go to stderr
/// when stdout carries JSON lines.
struct Out {
    format: EventsFormat,
}

impl Out {
    fn note(&self, text: &str) {
        match self.format {
            EventsFormat::Human => println!("{text}"),
            EventsFormat::Jsonl => eprintln!("{text}"),
        }
    }

    fn event(&self, e: &Event) {
        match self.format {
            EventsFormat::Human => {
                if let Some(text) = events::human(e) {
                    println!("{text}");
                }
            }
            EventsFormat::Jsonl => {
                if let Some(v) = events::json(e) {
                    println!("{v}");
                }
            }
        }
    }

    fn stats(&self, s: &blindcall_client::CallStats) {
        match self.format {
            EventsFormat::Human => {
                if let Some(t) = events::stats_table(s) {
                    println!("{t}");
                }
            }
            EventsFormat::Jsonl => println!("{}", events::stats_json(s)),
        }
    }
}

/// A name as it may be printed on a terminal (escapes, never interprets, control and
/// bidirectional formatting characters).
pub(crate) fn shown(name: &str) -> String {
    blindcall_client::identity::printable(name)
}

fn read_trimmed(path: &Path, what: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
}

/// The token: `--token`, `--token-file`, or `BLINDCALL_TOKEN`.
fn token(args: &Args, env: &dyn Fn(&str) -> Option<String>) -> Result<String, CliError> {
    match (&args.token, &args.token_file) {
        (Some(t), _) => Ok(t.clone()),
        (None, Some(path)) => read_trimmed(path, "token"),
        (None, None) => env(TOKEN_ENV).ok_or_else(|| {
            format!("give the capability token with --token-file FILE or {TOKEN_ENV}")
        }),
    }
}

/// Writes `text` to a new owner-only file.
fn write_private(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Joins, prints events until the call ends, Ctrl-C, `leave` or `--duration`.
pub(crate) fn run(args: Args) -> Result<(), CliError> {
    let token = token(&args, &|v| std::env::var(v).ok())?;
    let trust = match (&args.cert, &args.fingerprint) {
        (Some(path), _) => TrustAnchor::Pem(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        ),
        (None, Some(fp)) => TrustAnchor::Fingerprint(fp.clone()),
        (None, None) => return Err("give --cert FILE or --fingerprint SHA256".into()),
    };
    let mut options = JoinOptions::new(trust);
    options.server_name = args.server_name.clone();
    options.relays = args.relay.0.clone();
    options.auto_approve = args.auto_approve;
    if let Some(ip) = args.bind {
        options.media_network.bind = ip;
        options.bind = Some(ip);
    }
    let out = Out {
        format: args.events,
    };
    options.media = if args.receive_only {
        MediaMode::ReceiveOnly
    } else {
        MediaMode::App
    };
    if let Some(path) = &args.identity {
        let id = Identity::load_or_create(path, MlsSuite::default()).map_err(|e| e.to_string())?;
        if id.is_new() {
            out.note(&format!("created the identity key {}", path.display()));
        }
        options.identity_key = Some(Arc::new(id.into_key()));
    }
    options.trust_store = args.trust_store.clone().or_else(|| {
        args.identity.as_ref().map(|p| {
            let mut s = p.clone().into_os_string();
            s.push(".trust");
            PathBuf::from(s)
        })
    });
    let link = match (&args.invite, &args.invite_file) {
        (Some(l), _) => Some(l.clone()),
        (None, Some(path)) => Some(read_trimmed(path, "invite")?),
        (None, None) => None,
    };
    let room = blindcall_client::tls::room_from_token(&token).map_err(|e| e.to_string())?;
    options.invite = match link {
        Some(l) => Some(Invite::parse(&l).map_err(|e| format!("--invite: {e}"))?),
        // A host that may create the call makes its invite (used only if it does).
        None => Some(
            Invite::new(
                room,
                Some(args.relay.first().to_string()),
                args.guest_token.clone(),
            )
            .map_err(|e| e.to_string())?,
        ),
    };
    let invite_made = args.invite.is_none() && args.invite_file.is_none();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let own_invite = options.invite.clone();
    runtime.block_on(async move {
        let (call, mut events) = Call::join(args.relay.first(), &token, &args.name, options)
            .await
            .map_err(|e| format!("cannot join: {e}"))?;
        out.note(&format!("admitted as {}", shown(call.identity())));
        drop(events.take_frames());
        let media = (!args.receive_only).then(|| {
            SyntheticMedia::spawn(
                call.clone(),
                SyntheticConfig {
                    sender_id: name_hash(args.name.as_bytes()) | 0x0101_0101,
                    seed: 1,
                    silent: false,
                },
            )
        });
        let hook = media.as_ref().map(SyntheticMedia::hook);
        let stop = async {
            match args.duration {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::pin!(stop);
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut stdin_open = true;
        let mut members: Vec<Member> = Vec::new();
        // A table for people every 5 s; a `stats` line for programs every second.
        let mut status = tokio::time::interval(match args.events {
            EventsFormat::Human => Duration::from_secs(5),
            EventsFormat::Jsonl => Duration::from_secs(1),
        });
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => {
                    let _ = call.leave().await;
                    stop_done(&out, &mut events).await;
                    return Ok(());
                }
                line = stdin.next_line(), if stdin_open => match line {
                    Ok(Some(l)) => {
                        if command(&out, &call, &members, l.trim()).await {
                            stop_done(&out, &mut events).await;
                            return Ok(());
                        }
                    }
                    _ => stdin_open = false,
                },
                _ = status.tick() => out.stats(&call.stats()),
                e = events.next() => {
                    let Some(e) = e else { return Ok(()) };
                    if let Some(h) = &hook {
                        h.on_event(&e);
                    }
                    // The invite link is written before the event that announces the call
                    // is printed: whoever reads `joined` may read the link file at once.
                    if let Event::Joined { epoch: 0, .. } = &e
                        && invite_made
                        && let Some(i) = &own_invite
                    {
                        let link = i.to_link();
                        out.note(&format!(
                            "invite link (share it only over a channel you trust): {}",
                            &*link
                        ));
                        if let Some(path) = &args.invite_out {
                            write_private(path, &link)?;
                            out.note(&format!("invite link written to {}", path.display()));
                        }
                    }
                    out.event(&e);
                    match e {
                        Event::Joined { members: m, .. } => members = m,
                        Event::MembersJoined { members: m, .. } => members.extend(m),
                        Event::MembersLeft { members: m, .. } => {
                            members.retain(|y| !m.iter().any(|x| x.leaf == y.leaf));
                        }
                        Event::JoinRequested { request, .. } => {
                            if args.deny_all {
                                out.note(&format!("denying request {request}"));
                                let _ = call.deny(request).await;
                            } else if !args.auto_approve {
                                out.note(&format!("  type 'approve {request}' or 'deny {request}'"));
                            }
                        }
                        Event::CallEnded { .. } => {
                            out.stats(&call.stats());
                            return Ok(());
                        }
                        _ => {}
                    }
                }
            }
        }
    })
}

/// One stdin command; `true` when the call was left.
async fn command(out: &Out, call: &Call, members: &[Member], line: &str) -> bool {
    let mut words = line.split_whitespace();
    let (Some(verb), arg) = (words.next(), words.next()) else {
        return false;
    };
    let num = arg.and_then(|a| a.parse::<u64>().ok());
    let member = num.and_then(|n| members.iter().find(|m| u64::from(m.leaf) == n));
    let result = match (verb, num, member) {
        ("approve", Some(n), _) => call.approve(n).await.map(|()| format!("approving {n}")),
        ("deny", Some(n), _) => call.deny(n).await.map(|()| format!("denying {n}")),
        ("remove", _, Some(m)) => call
            .remove(m)
            .await
            .map(|()| format!("removing {}", describe(m))),
        ("verify", _, Some(m)) => call
            .verify(m)
            .await
            .map(|()| format!("{} marked verified", describe(m))),
        ("code", _, Some(m)) => Ok(format!(
            "pairwise code with {}: {} (compare it with them out of band, then 'verify {}')",
            describe(m),
            call.pairwise_code(m),
            m.leaf
        )),
        ("members", _, _) => Ok(members
            .iter()
            .map(|m| format!("  {}", describe(m)))
            .collect::<Vec<_>>()
            .join("\n")),
        ("leave", _, _) => {
            let _ = call.leave().await;
            return true;
        }
        _ => Ok(
            "commands: approve ID, deny ID, members, code LEAF, verify LEAF, remove LEAF, leave"
                .to_string(),
        ),
    };
    match result {
        Ok(text) => out.note(&text),
        Err(e) => out.note(&format!("{line}: {e}")),
    }
    false
}

/// Reports what follows the request to leave, up to the end of the call.
async fn stop_done(out: &Out, events: &mut blindcall_client::Events) {
    while let Some(e) = events.next().await {
        out.event(&e);
        if matches!(e, Event::CallEnded { .. }) {
            return;
        }
    }
}

/// FNV-1a: a stable sender id from the name (not a security function).
fn name_hash(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // covers: OPS-KEY-1
    #[test]
    fn the_token_comes_from_the_argument_a_file_or_the_environment() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let parse = |extra: &[&str]| {
            let mut argv = vec!["join", "--relay", "127.0.0.1:1", "--name", "a"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).unwrap().args
        };
        let dir = std::env::temp_dir().join(format!("blindcall-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "bct1.aa\n").unwrap();
        let env = |v: &str| (v == TOKEN_ENV).then(|| "bct1.bb".to_string());
        let none = |_: &str| None;
        assert_eq!(
            token(&parse(&["--token", "bct1.cc"]), &env).unwrap(),
            "bct1.cc"
        );
        let from_file = parse(&["--token-file", file.to_str().unwrap()]);
        assert_eq!(token(&from_file, &env).unwrap(), "bct1.aa");
        assert_eq!(token(&parse(&[]), &env).unwrap(), "bct1.bb");
        let err = token(&parse(&[]), &none).unwrap_err();
        assert!(
            err.contains("--token-file") && err.contains(TOKEN_ENV),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    // covers: SDK-RELAYS-5
    #[test]
    fn relay_takes_a_comma_separated_list_and_names_a_bad_entry() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let parse = |relay: &str| {
            Cli::try_parse_from(["join", "--relay", relay, "--name", "a"]).map(|c| c.args.relay)
        };
        let one = parse("127.0.0.1:4433").unwrap();
        assert_eq!(one.0, vec!["127.0.0.1:4433".parse::<SocketAddr>().unwrap()]);
        let three = parse("127.0.0.1:1, 127.0.0.2:2,[::1]:3").unwrap();
        let want: Vec<SocketAddr> = ["127.0.0.1:1", "127.0.0.2:2", "[::1]:3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(three.0, want);
        assert_eq!(three.first(), want[0]);
        // A repeated address is tried once.
        assert_eq!(parse("127.0.0.1:1,127.0.0.1:1").unwrap().0.len(), 1);
        let err = parse_relays("127.0.0.1:1,nonsense,127.0.0.1:3").unwrap_err();
        assert!(err.contains("entry 2") && err.contains("nonsense"), "{err}");
        let err = parse_relays("127.0.0.1:1,,127.0.0.1:3").unwrap_err();
        assert!(err.contains("entry 2") && err.contains("empty"), "{err}");
        assert!(parse("127.0.0.1:1,127.0.0.2:99999").is_err());
    }

    #[test]
    fn names_are_printed_with_escapes_never_interpreted() {
        assert_eq!(shown("alice"), "alice");
        assert_eq!(shown("Zoë"), "Zoë");
        let s = shown("eve\u{1b}[2J\u{202E}x");
        assert!(!s.contains('\u{1b}') && !s.contains('\u{202E}'), "{s}");
        assert!(s.contains("\\u{1b}") && s.contains("\\u{202e}"), "{s}");
    }
}
