//! The bounded soak that `cargo test` (and so `.ci/run`) runs: a fixed range of seeds, each a
//! generated scenario checked against every invariant after every step and at quiescence. A
//! failure prints the seed, the step, the invariant, what was seen and the one-line replay
//! command of the shrunk scenario. The long soak is
//! `cargo run -p blindcall-sim --release -- soak --seeds 10000`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ops::Range;

use blindcall_sim::{Limits, Scenario, World, report, shrink};

/// Seeds per test; the two tests run in parallel (about 12 s in a debug build on an idle
/// 2-core machine, 22 s on one core, about 35 s while other builds load both cores).
const HALF: u64 = 100;

/// Runs `seeds`; panics with a shrunk replay command on the first violation. Returns how
/// often each behaviour occurred, to show the seeds exercise what they should.
fn soak(seeds: Range<u64>) -> BTreeMap<&'static str, u64> {
    let limits = Limits::default();
    let mut seen = BTreeMap::new();
    for seed in seeds {
        let scenario = Scenario::generate(seed, &limits);
        let o = World::new(scenario.clone()).unwrap().run();
        if let Some(v) = &o.violation {
            let mut msg = report(&o, v, None);
            if let Some(s) = shrink(&scenario, v.invariant, 30) {
                let sv = s.outcome.violation.as_ref().unwrap_or(v);
                msg.push_str(&format!(
                    "\nshrunk to {} of {} actions:\n{}",
                    s.keep.len(),
                    scenario.actions.len(),
                    report(&s.outcome, sv, Some(&s.keep))
                ));
            }
            panic!("{msg}");
        }
        let st = &o.stats;
        let mut add = |k, n: u64| *seen.entry(k).or_insert(0) += n;
        add("joined", st.joined as u64);
        add("commits", st.commits as u64);
        add("raced epochs", st.raced_epochs() as u64);
        add("frames opened", st.frames_opened as u64);
        add(
            "resumed",
            st.relay.get("resumes accepted").copied().unwrap_or(0),
        );
        for (reason, n) in &st.ends {
            let kind = match reason.as_str() {
                "Removed" => "removed",
                "Left" => "left",
                "ConnectionLost" => "disconnected",
                "Denied" => "denied",
                r if r.contains("WAITING_ROOM_TIMEOUT") => "timed out waiting",
                _ => "other end",
            };
            add(kind, *n);
        }
    }
    seen
}

fn exercised(seen: &BTreeMap<&str, u64>) {
    for what in [
        "joined",
        "commits",
        "raced epochs",
        "frames opened",
        "removed",
        "left",
        "disconnected",
        "resumed",
        "denied",
        "timed out waiting",
    ] {
        assert!(
            seen.get(what).is_some_and(|n| *n > 0),
            "no seed exercised {what}: {seen:?}"
        );
    }
}

// covers: SIM-CI-1, SIM-GEN-1, SIM-RUN-1, SIM-INV-1, SIM-INV-2, SIM-INV-3, SIM-INV-4
#[test]
fn first_half_of_the_ci_seeds_keeps_every_invariant() {
    exercised(&soak(0..HALF));
}

// covers: SIM-CI-1, SIM-INV-5, SIM-INV-6, SIM-INV-7, SIM-INV-8, SIM-INV-9, SIM-INV-13, SIM-INV-14
#[test]
fn second_half_of_the_ci_seeds_keeps_every_invariant() {
    exercised(&soak(HALF..2 * HALF));
}
