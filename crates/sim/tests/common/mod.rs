//! Hand-written scenarios for the simulation's tests.
#![allow(dead_code, clippy::expect_used)]

use std::time::Duration;

use blindcall_sim::scenario::{
    Action, ActionKind, Admit, MediaPlan, Participant, Scenario, Settings,
};
use blindcall_sim::{Outcome, World, report};

/// `v` milliseconds.
pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// A participant approved at once, publishing, on a 10 ms link.
pub fn guest() -> Participant {
    Participant {
        admit: Admit::Approve,
        think: Duration::ZERO,
        media: MediaPlan::Publish,
        path_update: Duration::ZERO,
        latency: ms(10),
        jitter: Duration::ZERO,
        invited: true,
    }
}

/// No faults; the relay's removal proposals committed by rank every 750 ms.
pub fn calm() -> Settings {
    Settings {
        proposal_fallback: ms(750),
        activation_delay: ms(200),
        media_loss: 0,
        media_duplicate: 0,
        media_jitter: Duration::ZERO,
        split_writes: 0,
        any_member_adds: false,
        invite: false,
        reconnect: true,
    }
}

/// `kind` at `t` ms.
pub fn at(t: u64, kind: ActionKind) -> Action {
    Action { at: ms(t), kind }
}

/// Participant `p` joins at `t` ms.
pub fn join(t: u64, p: usize) -> Action {
    at(t, ActionKind::Join { p })
}

/// A hand-written scenario.
pub fn scenario(
    settings: Settings,
    participants: Vec<Participant>,
    actions: Vec<Action>,
) -> Scenario {
    Scenario {
        seed: 0x5eed,
        settings,
        participants,
        actions,
    }
}

/// Runs `s` and fails the test with the simulation's report if an invariant broke.
pub fn run_clean(s: Scenario) -> Outcome {
    let o = World::new(s).expect("the relay is set up").run();
    if let Some(v) = &o.violation {
        panic!("{}\n{:#?}", report(&o, v, None), o.stats);
    }
    o
}
