//! `blindcall-sim`: run the deterministic simulation.
//!
//! - `soak --seeds N [--start S]`: runs seeds S..S+N, prints each failure (seed, step,
//!   invariant, what was seen, the shrunk scenario's one-line replay command) and a summary
//!   with seeds per second; exits non-zero if any seed failed.
//! - `replay --seed N [--keep I,J,..] [--show]`: runs one seed (only the actions at the given
//!   indices, if any) and prints what happened.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use blindcall_sim::{Limits, Outcome, Scenario, World, report, shrink};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "blindcall-sim",
    about = "Deterministic simulation of blindcall"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs many seeds and reports every invariant violation.
    Soak {
        /// How many seeds.
        #[arg(long, default_value_t = 1_000)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Runs spent shrinking each failure (0: do not shrink).
        #[arg(long, default_value_t = 200)]
        shrink_runs: usize,
        /// Also name every seed whose warnings or ends contain this text (e.g. `Internal`).
        #[arg(long)]
        find: Option<String>,
    },
    /// Replays one seed.
    Replay {
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// Only these action indices (a shrunk scenario), comma-separated.
        #[arg(long, value_delimiter = ',')]
        keep: Option<Vec<usize>>,
        /// Print the scenario.
        #[arg(long)]
        show: bool,
        /// Print the cores' debug logs (`RUST_LOG` syntax, e.g. `blindcall_client=debug`).
        #[arg(long)]
        log: Option<String>,
    },
}

fn summary(o: &Outcome) -> String {
    let s = &o.stats;
    format!(
        "seed {}: {} steps, {:.1}s virtual, {} participants ({} joined), {} commits (epoch {:?}), \
         {} frames sealed, {} opened, {} packets forwarded, trace {:016x}",
        o.seed,
        o.steps,
        s.virtual_time.0 as f64 / 1e9,
        s.participants,
        s.joined,
        s.commits,
        s.final_epoch,
        s.frames_sent,
        s.frames_opened,
        s.packets_forwarded,
        o.trace
    )
}

fn soak(seeds: u64, start: u64, shrink_runs: usize, find: Option<&str>) -> ExitCode {
    let limits = Limits::default();
    // A panic inside a core is a finding reported with its seed, not noise on the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    let began = Instant::now();
    let (mut clean, mut failed, mut steps, mut commits) = (0u64, 0u64, 0u64, 0usize);
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |k: String, n: u64| *totals.entry(k).or_insert(0) += n;
    for seed in start..start.saturating_add(seeds) {
        let scenario = Scenario::generate(seed, &limits);
        let outcome = match World::new(scenario.clone()) {
            Ok(w) => w.run(),
            Err(e) => {
                eprintln!("seed {seed}: setup failed: {e}");
                return ExitCode::FAILURE;
            }
        };
        steps += outcome.steps;
        commits += outcome.stats.commits;
        let st = &outcome.stats;
        if let Some(text) = find
            && st
                .warnings
                .keys()
                .chain(st.ends.keys())
                .any(|k| k.contains(text))
        {
            println!("seed {seed} shows {text:?}");
        }
        for (k, n) in &st.warnings {
            add(format!("warning {k}"), *n);
        }
        for (k, n) in &st.ends {
            add(format!("ended {k}"), *n);
        }
        for (k, n) in &st.rejected {
            add(format!("relay rejected {k}"), *n);
        }
        for (k, n) in &st.relay {
            add(format!("relay {k}"), *n);
        }
        for (k, n) in &st.dropped {
            add(format!("dropped {k}"), *n);
        }
        add("epochs raced".into(), st.raced_epochs() as u64);
        add("frames opened".into(), st.frames_opened as u64);
        add("participants joined".into(), st.joined as u64);
        match &outcome.violation {
            None => clean += 1,
            Some(v) => {
                failed += 1;
                println!("{}", report(&outcome, v, None));
                if shrink_runs > 0
                    && let Some(s) = shrink(&scenario, v.invariant, shrink_runs)
                {
                    let sv = s.outcome.violation.as_ref().unwrap_or(v);
                    println!(
                        "  shrunk to {} of {} actions in {} runs:\n  {}",
                        s.keep.len(),
                        scenario.actions.len(),
                        s.runs,
                        report(&s.outcome, sv, Some(&s.keep)).replace('\n', "\n  ")
                    );
                }
            }
        }
        let done = seed - start + 1;
        if done.is_multiple_of(100) {
            let rate = done as f64 / began.elapsed().as_secs_f64();
            eprintln!("{done} seeds, {failed} failed, {rate:.1} seeds/s");
        }
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "{} seeds in {secs:.1}s ({:.2} seeds/s): {clean} clean, {failed} violated; {steps} steps, \
         {commits} commits sequenced",
        clean + failed,
        (clean + failed) as f64 / secs
    );
    for (k, n) in &totals {
        println!("  {k}: {n}");
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn replay(seed: u64, keep: Option<Vec<usize>>, show: bool) -> ExitCode {
    let full = Scenario::generate(seed, &Limits::default());
    let scenario = match &keep {
        Some(k) => full.keep(k),
        None => full,
    };
    if show {
        println!("{scenario:#?}");
    }
    let outcome = match World::new(scenario) {
        Ok(w) => w.run(),
        Err(e) => {
            eprintln!("setup failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", summary(&outcome));
    for m in &outcome.stats.members {
        println!("  {m}");
    }
    for (k, n) in &outcome.stats.warnings {
        println!("  warning {k}: {n}");
    }
    for (k, n) in &outcome.stats.ends {
        println!("  ended {k}: {n}");
    }
    match &outcome.violation {
        None => ExitCode::SUCCESS,
        Some(v) => {
            println!("{}", report(&outcome, v, keep.as_deref()));
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Soak {
            seeds,
            start,
            shrink_runs,
            find,
        } => soak(seeds, start, shrink_runs, find.as_deref()),
        Cmd::Replay {
            seed,
            keep,
            show,
            log,
        } => {
            if let Some(filter) = log {
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                    .without_time()
                    .init();
            }
            replay(seed, keep, show)
        }
    }
}
