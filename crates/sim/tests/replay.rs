//! Same seed, same run; a failure names its seed and replays in one line; shrinking keeps
//! only the actions that matter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use blindcall_sim::scenario::ActionKind;
use blindcall_sim::{
    Invariant, Limits, Outcome, Scenario, SimTime, Violation, replay_command, report, run_seed,
    shrink_while,
};

// covers: SIM-RUN-2
#[test]
fn one_seed_always_runs_the_same_way() {
    let limits = Limits::default();
    // Seed 4 has a member reconnect: its backoff jitter comes from its identity key, which
    // the simulation derives from the seed.
    let a = run_seed(4, &limits).unwrap();
    let b = run_seed(4, &limits).unwrap();
    assert!(a.steps > 500, "{a:#?}");
    assert!(
        a.stats
            .relay
            .get("resumes accepted")
            .is_some_and(|n| *n > 0),
        "{a:#?}"
    );
    assert_eq!(a, b, "two runs of one seed differ");
    let c = run_seed(11, &limits).unwrap();
    assert_ne!(a.trace, c.trace);
}

// covers: SIM-FAIL-1
#[test]
fn a_failure_reports_its_seed_step_invariant_and_replay_command() {
    let o = run_seed(3, &Limits::default()).unwrap();
    let v = Violation {
        invariant: Invariant::EpochAgreement,
        step: 1_234,
        at: SimTime::from_millis(5_500),
        detail: "p2 entered epoch 4 with code A, p1 with B".into(),
    };
    let text = report(&o, &v, Some(&[0, 2, 5]));
    assert!(text.starts_with("seed 3 broke epoch-agreement at step 1234 (t=5.500000s): p2"));
    assert!(
        text.ends_with(
            "replay: cargo run -p blindcall-sim --release -- replay --seed 3 --keep 0,2,5"
        ),
        "{text}"
    );
    assert_eq!(
        replay_command(9, None),
        "cargo run -p blindcall-sim --release -- replay --seed 9"
    );
}

fn someone_besides_the_host_joined(o: &Outcome) -> bool {
    o.violation.is_none() && o.stats.joined >= 2
}

// covers: SIM-FAIL-1
#[test]
fn shrinking_keeps_only_the_actions_the_outcome_needs() {
    // A seed with several approved joiners and disruptions.
    let limits = Limits::default();
    let seed = (0..200)
        .find(|s| {
            let sc = Scenario::generate(*s, &limits);
            sc.actions.len() >= 8
                && sc
                    .participants
                    .iter()
                    .skip(1)
                    .filter(|p| p.admit == blindcall_sim::scenario::Admit::Approve)
                    .count()
                    >= 2
        })
        .unwrap();
    let scenario = Scenario::generate(seed, &limits);
    let s = shrink_while(&scenario, 200, someone_besides_the_host_joined).unwrap();
    assert_eq!(s.keep.len(), 2, "seed {seed}: kept {:?}", s.keep);
    let kept = scenario.keep(&s.keep);
    assert_eq!(kept.actions[0].kind, ActionKind::Join { p: 0 });
    assert!(matches!(kept.actions[1].kind, ActionKind::Join { .. }));
    assert!(someone_besides_the_host_joined(&s.outcome));
}
