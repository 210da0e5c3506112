//! Shrinking a failing scenario: drop actions (halves, then quarters, ... then single ones)
//! as long as the run still breaks the same invariant. The result is a list of the original
//! actions' indices, so the shrunk scenario replays from the seed alone.

use crate::invariants::Invariant;
use crate::scenario::Scenario;
use crate::world::{Outcome, World};

/// A shrunk scenario.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// Indices of the original actions kept.
    pub keep: Vec<usize>,
    /// The run of the shrunk scenario.
    pub outcome: Outcome,
    /// Runs spent shrinking.
    pub runs: usize,
}

/// Shrinks `scenario`, whose run broke `target`, within `max_runs` runs. `None` if the
/// failure does not reproduce.
pub fn shrink(scenario: &Scenario, target: Invariant, max_runs: usize) -> Option<Shrunk> {
    shrink_while(scenario, max_runs, |o| {
        o.violation.as_ref().is_some_and(|v| v.invariant == target)
    })
}

/// Drops actions of `scenario` while its run still satisfies `keeps` (within `max_runs`
/// runs). `None` if the whole scenario does not satisfy it.
pub fn shrink_while(
    scenario: &Scenario,
    max_runs: usize,
    keeps: impl Fn(&Outcome) -> bool,
) -> Option<Shrunk> {
    let run = |keep: &[usize]| -> Option<Outcome> {
        let o = World::new(scenario.keep(keep)).ok()?.run();
        keeps(&o).then_some(o)
    };
    let mut keep: Vec<usize> = (0..scenario.actions.len()).collect();
    let mut best = run(&keep)?;
    let mut runs = 1;
    let mut chunk = keep.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < keep.len() && runs < max_runs {
            let end = (start + chunk).min(keep.len());
            let candidate: Vec<usize> = keep[..start].iter().chain(&keep[end..]).copied().collect();
            runs += 1;
            match run(&candidate) {
                Some(o) => {
                    keep = candidate;
                    best = o;
                }
                None => start = end,
            }
        }
        if chunk == 1 || runs >= max_runs {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    Some(Shrunk {
        keep,
        outcome: best,
        runs,
    })
}
