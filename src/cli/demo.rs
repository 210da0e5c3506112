//! `blindcall demo`: a real end-to-end encrypted call on loopback in one process: an embedded
//! relay (TLS control channel, WebRTC forwarding) and N participants sending synthetic audio
//! and video, with a live table and a final report. Exits non-zero if any check failed.

use std::path::PathBuf;
use std::time::Duration;

use blindcall_demo::live::LiveRow;
use blindcall_demo::report::{Report, render};
use blindcall_demo::scenario::{self, MAX_PARTICIPANTS, ScenarioConfig, Script};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use super::CliError;

/// `blindcall demo`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Participants (4..=64): a host, joiners (one leaves, one is removed), one late joiner.
    #[arg(long, default_value_t = 6)]
    participants: usize,
    /// Seconds of media from the host's first frame.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Seed of the synthetic media.
    #[arg(long, default_value_t = 0xb11d_ca11)]
    seed: u64,
    /// No live table (the report is still printed).
    #[arg(long)]
    quiet: bool,
    /// Benchmark instead of the demo script: everyone joins, then steady media; reports CPU
    /// per participant-second and seal → open latency (no plaintext check).
    #[arg(long)]
    bench: bool,
    /// Only this many participants talk; the others' audio is silence sent as Opus-DTX-like
    /// comfort-noise frames every 400 ms. Default: everyone talks.
    #[arg(long, value_name = "S")]
    speakers: Option<usize>,
    /// Each participant receives the video of only this many others (a gallery; audio still
    /// comes from everyone). Default: everyone's video.
    #[arg(long, value_name = "K")]
    gallery: Option<usize>,
    /// How long each scripted step (a join, a departure, media reaching everyone) may take
    /// before the demo gives up and names what it was waiting for.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    step_timeout: u64,
    /// With --bench: participants do not sign their media (to measure what signing costs).
    #[arg(long, requires = "bench")]
    unsigned_media: bool,
    /// Run the call on a cluster of N relay nodes sharing a NATS JetStream room store; the
    /// room's home node is killed halfway and the report shows the failover.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(2..=9))]
    cluster: Option<u8>,
    /// With --cluster: the NATS server (default: start a local nats-server, which must be
    /// installed).
    #[arg(long, value_name = "URL", requires = "cluster")]
    nats: Option<String>,
}

async fn show(mut live: watch::Receiver<Vec<LiveRow>>, names: Vec<String>, quiet: bool) {
    let multi = MultiProgress::with_draw_target(if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr_with_hz(4)
    });
    let style = ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let header = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
    header.set_message("blindcall demo: participants on loopback");
    let bars: Vec<ProgressBar> = names
        .iter()
        .map(|n| {
            let b = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
            b.set_message(format!("{n:<8} not started"));
            b
        })
        .collect();
    while live.changed().await.is_ok() {
        let rows = live.borrow_and_update().clone();
        for (bar, name) in bars.iter().zip(&names) {
            if let Some(r) = rows.iter().find(|r| r.name == *name) {
                bar.set_message(r.text());
            }
            bar.tick();
        }
        header.tick();
    }
    for b in &bars {
        b.finish();
    }
    header.finish();
}

/// Runs the demo; the error is the reason it could not run (a failed check is reported via
/// [`Report::passed`]).
pub(crate) fn run(args: Args) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report: Report = runtime.block_on(async {
        let (tx, rx) = watch::channel(Vec::new());
        let n = args.participants.min(MAX_PARTICIPANTS);
        let names: Vec<String> = (0..n).map(scenario::name).collect();
        let ui = tokio::spawn(show(rx, names, args.quiet));
        let result = scenario::run(
            ScenarioConfig {
                participants: args.participants,
                duration: Duration::from_secs(args.duration),
                seed: args.seed,
                script: if args.bench {
                    Script::Steady
                } else {
                    Script::Full
                },
                step_timeout: Duration::from_secs(args.step_timeout),
                gallery: args.gallery,
                speakers: args.speakers,
                unsigned_media: args.unsigned_media,
                cluster: args.cluster.map(|n| scenario::ClusterConfig {
                    nodes: usize::from(n),
                    nats: args.nats.clone(),
                }),
            },
            Some(tx),
        )
        .await;
        let _ = ui.await;
        result.map_err(|e| {
            let hint = if matches!(e, scenario::ScenarioError::Timeout { .. })
                && n > 16
                && args.gallery.is_none()
            {
                "; hint: every participant receiving everyone's audio and video grows with the \
                 square of the call; past ~20 participants that is more than two cores can \
                 forward and decrypt. Large calls watch a gallery: try --gallery 8 --speakers 4."
            } else {
                ""
            };
            format!("demo could not run: {e}{hint}")
        })
    })?;
    println!("{}", render(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| format!("cannot encode the report: {e}"))?;
        std::fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if report.passed {
        Ok(())
    } else {
        Err("a check failed (see the report above)".into())
    }
}
