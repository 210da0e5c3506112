//! A deterministic simulation of the whole protocol: the real delivery service
//! ([`blindcall_relay::Ds`]) and N real client cores ([`blindcall_client::CallCore`])
//! exchanging encoded `blindcall-proto` messages over a simulated network, with one virtual
//! clock and seeded faults.
//!
//! - [`scenario`]: a seed becomes a [`Scenario`]: participants (their host's answer, media,
//!   latency) and timed actions — joins (approved, denied or ignored), leaves, host removals,
//!   disconnects (the relay proposes the removal), partitions, slow links, room locks —
//!   often several at one instant, so commits race.
//! - [`net`]: control connections are reliable ordered streams with latency, jitter,
//!   bandwidth, partitions and disconnects; media hops lose, duplicate and reorder packets.
//! - [`world`]: the relay, the participants and the queue; a step moves the clock to the
//!   earliest thing due and does it (see the module documentation).
//! - [`invariants`]: what is checked after every step and at quiescence.
//! - [`mod@shrink`]: a failing scenario loses actions while it keeps failing.
//!
//! Members whose connection is cut (a [`ActionKind::Disconnect`] with an outage, or a
//! partition longer than the clients' silence timeout) reconnect and resume their leaf, or are
//! removed once the relay's grace ran out. Not simulated yet: a relay restart, and adversarial
//! relays or members (every party here is honest; the invariants would then be the attacks'
//! tests).
//!
//! Everything that decides what happens comes from the seed. MLS key material inside openmls
//! comes from the OS; no decision depends on it, and the run's trace digest leaves it out, so
//! one seed always gives the same digest ([`Outcome::trace`]).
//!
//! ```no_run
//! let outcome = blindcall_sim::run_seed(42, &blindcall_sim::Limits::default()).unwrap();
//! if let Some(v) = &outcome.violation {
//!     eprintln!("{}", blindcall_sim::report(&outcome, v, None));
//! }
//! ```

#![forbid(unsafe_code)]

mod app;
pub mod clock;
mod control;
pub mod invariants;
mod media;
pub mod member;
pub mod net;
pub mod relay;
pub mod rng;
pub mod scenario;
pub mod shrink;
pub mod trace;
pub mod world;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

pub use clock::SimTime;
pub use invariants::{Invariant, Violation};
pub use relay::SetupError;
pub use scenario::{Action, ActionKind, Limits, Scenario};
pub use shrink::{Shrunk, shrink, shrink_while};
pub use world::{Outcome, RunStats, World};

/// Runs the scenario of `seed`.
pub fn run_seed(seed: u64, limits: &Limits) -> Result<Outcome, SetupError> {
    run_scenario(Scenario::generate(seed, limits))
}

/// Runs `scenario` to quiescence.
pub fn run_scenario(scenario: Scenario) -> Result<Outcome, SetupError> {
    Ok(World::new(scenario)?.run())
}

/// The command that replays `seed` (with only the actions at `keep`, if given).
pub fn replay_command(seed: u64, keep: Option<&[usize]>) -> String {
    let mut cmd = format!("cargo run -p blindcall-sim --release -- replay --seed {seed}");
    if let Some(keep) = keep {
        let list: Vec<String> = keep.iter().map(usize::to_string).collect();
        cmd.push_str(" --keep ");
        cmd.push_str(&list.join(","));
    }
    cmd
}

/// A failure as printed: the seed, the step, the invariant, what was seen and how to replay.
pub fn report(outcome: &Outcome, v: &Violation, keep: Option<&[usize]>) -> String {
    format!(
        "seed {} broke {} at step {} (t={}): {}\n  replay: {}",
        outcome.seed,
        v.invariant.name(),
        v.step,
        v.at,
        v.detail,
        replay_command(outcome.seed, keep)
    )
}
