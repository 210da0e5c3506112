//! `blindcall join`: take part in a call from a terminal with synthetic audio and video
//! (`blindcall-demo`'s sources, published through the SDK like any application's frames).
//! As host it approves every joiner unless `--deny-all`; prints events and a status line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use blindcall_client::{Call, Event, JoinOptions, MediaMode, TrustAnchor};
use blindcall_demo::synthetic::{SyntheticConfig, SyntheticMedia};

use super::CliError;

/// `blindcall join`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The relay's control address (host:port).
    #[arg(long)]
    relay: SocketAddr,
    /// The room capability token (`bct1.…`, from `blindcall token`).
    #[arg(long)]
    token: String,
    /// Display name (the MLS identity).
    #[arg(long)]
    name: String,
    /// The relay's certificate (PEM), e.g. the development certificate it wrote.
    #[arg(long, value_name = "FILE", conflicts_with = "fingerprint")]
    cert: Option<PathBuf>,
    /// The relay certificate's SHA-256 fingerprint, as the relay printed it.
    #[arg(long)]
    fingerprint: Option<String>,
    /// Name the certificate must carry.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Leave after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// As host, deny every join request instead of approving it.
    #[arg(long)]
    deny_all: bool,
    /// Join without publishing media.
    #[arg(long)]
    receive_only: bool,
    /// Local address for media (default 127.0.0.1; an interface address reaches a relay on
    /// another machine).
    #[arg(long, value_name = "IP")]
    media_bind: Option<std::net::IpAddr>,
}

/// Joins, prints events until the call ends, Ctrl-C or `--duration`.
pub(crate) fn run(args: Args) -> Result<(), CliError> {
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
    if let Some(ip) = args.media_bind {
        options.media_network.bind = ip;
    }
    options.media = if args.receive_only {
        MediaMode::ReceiveOnly
    } else {
        MediaMode::App
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let (call, mut events) = Call::join(args.relay, &args.token, &args.name, options)
            .await
            .map_err(|e| format!("cannot join: {e}"))?;
        println!("admitted as {}", call.identity());
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
        let mut status = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = &mut stop => {
                    let _ = call.leave().await;
                    stop_done(&mut events).await;
                    return Ok(());
                }
                _ = status.tick() => {
                    let s = call.stats();
                    if let Some(epoch) = s.epoch {
                        println!(
                            "epoch {epoch} code {} members {} sent {} opened {} dropped {:?}",
                            s.code.unwrap_or_default(), s.members, s.frames_sent, s.frames_opened, s.dropped
                        );
                    }
                }
                e = events.next() => match e.inspect(|e| {
                    if let Some(h) = &hook {
                        h.on_event(e);
                    }
                }) {
                    None => return Ok(()),
                    Some(Event::JoinRequested { request, display_name }) => {
                        if args.deny_all {
                            println!("denying {display_name}");
                            let _ = call.deny(request).await;
                        } else {
                            println!("approving {display_name}");
                            let _ = call.approve(request).await;
                        }
                    }
                    Some(Event::CallEnded { reason }) => {
                        println!("call ended: {reason:?}");
                        return Ok(());
                    }
                    Some(Event::DecryptHealth(_) | Event::KeyframeRequested { .. }) => {}
                    Some(Event::EpochChanged { epoch, code }) => println!("epoch {epoch}: security code {code}"),
                    Some(other) => println!("{other:?}"),
                },
            }
        }
    })
}

async fn stop_done(events: &mut blindcall_client::Events) {
    while let Some(e) = events.next().await {
        if let Event::CallEnded { reason } = e {
            println!("call ended: {reason:?}");
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
