//! Commit races on the simulation (they used to run over real TLS, waiting up to 20 s each):
//! several members commit in one epoch, the relay sequences exactly one, the losers get the
//! winner and everyone converges. Each run also passes every invariant of the simulation
//! (one accepted and one broadcast commit per epoch, equal epoch authenticators, convergence
//! at quiescence).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_sim::scenario::{ActionKind, MediaPlan};
use common::*;

// covers: SDK-COMMIT-1, SDK-COMMIT-2, SDK-LEAVE-1, DS-SEQ-1, DS-SEQ-2, DS-SEQ-3
#[test]
fn simultaneous_commits_of_one_epoch_converge() {
    // p3 leaves: it proposes its own removal; with no fallback delay p0, p1 and p2 all commit
    // it at once and the relay must pick one.
    let mut settings = calm();
    settings.proposal_fallback = ms(0);
    let s = scenario(
        settings,
        vec![guest(); 4],
        vec![
            join(0, 0),
            join(300, 1),
            join(1_500, 2),
            join(2_700, 3),
            at(5_000, ActionKind::Leave { p: 3 }),
        ],
    );
    let o = run_clean(s);
    let st = &o.stats;
    // Each join is an Add and the joiner's path update; then the removal.
    assert_eq!(st.final_epoch, Some(7), "{st:#?}");
    assert_eq!(st.joined, 4);
    let racing = st.commits_made.get(&6).copied().unwrap_or(0);
    assert_eq!(
        racing, 3,
        "p0, p1 and p2 all committed the proposal: {st:#?}"
    );
    assert_eq!(
        st.rejected.get("EPOCH_TAKEN").copied(),
        Some(racing as u64 - 1),
        "exactly one winner; every other commit refused as late: {st:#?}"
    );
    assert_eq!(st.ends.get("Left"), Some(&1));
    // The leaver's own proposal, and nothing from the relay.
    assert_eq!(st.relay.get("member proposals"), Some(&1), "{st:#?}");
    assert_eq!(st.relay.get("remove proposals"), Some(&0), "{st:#?}");
    assert!(
        !st.warnings.keys().any(|w| w.contains("CommitRejected")),
        "a commit was refused as invalid: {:?}",
        st.warnings
    );
}

// covers: SDK-COMMIT-3
#[test]
fn overlapping_joins_converge_on_one_group() {
    // Four joiners arrive at once: their path updates race each other and the host's Adds, so
    // members get refusals for commits they already dropped (a stale reply once forked a
    // member off).
    let s = scenario(
        calm(),
        vec![guest(); 5],
        vec![
            join(0, 0),
            join(300, 1),
            join(300, 2),
            join(300, 3),
            join(300, 4),
        ],
    );
    let o = run_clean(s);
    let st = &o.stats;
    assert_eq!(st.final_epoch, Some(8), "{st:#?}");
    assert_eq!(st.joined, 5);
    assert!(st.raced_epochs() >= 1, "no commits raced: {st:#?}");
    assert!(st.rejected.get("EPOCH_TAKEN").is_some_and(|n| *n >= 1));
    assert!(
        !st.warnings.keys().any(|w| w.contains("CommitRejected")),
        "a commit was refused as invalid: {:?}",
        st.warnings
    );
}

// covers: DS-SEQ-1, DS-SEQ-2, DS-SEQ-3
#[test]
fn races_under_jitter_split_writes_and_slow_links_still_converge() {
    // The same race with every link jittery, writes cut into segments and one racer slow.
    for seed in 0..4u64 {
        let mut settings = calm();
        settings.proposal_fallback = ms(0);
        settings.split_writes = 500;
        // p3's loss ends its call: the relay proposes its removal after the grace.
        settings.reconnect = false;
        let mut people = vec![guest(); 4];
        for (i, p) in people.iter_mut().enumerate() {
            p.latency = ms(5 + 17 * ((seed + i as u64) % 4));
            p.jitter = ms(8);
            p.media = if i % 2 == 0 {
                MediaPlan::Publish
            } else {
                MediaPlan::ReceiveOnly
            };
        }
        let mut s = scenario(
            settings,
            people,
            vec![
                join(0, 0),
                join(300, 1),
                join(300, 2),
                join(300, 3),
                at(
                    4_000,
                    ActionKind::Slow {
                        p: 1,
                        duration: ms(3_000),
                        latency: ms(400),
                        bytes_per_second: 20_000,
                    },
                ),
                at(
                    4_500,
                    ActionKind::Disconnect {
                        p: 3,
                        outage: ms(0),
                    },
                ),
            ],
        );
        s.seed = seed;
        let o = run_clean(s);
        let st = &o.stats;
        assert_eq!(st.final_epoch, Some(7), "seed {seed}: {st:#?}");
        assert_eq!(st.ends.get("ConnectionLost"), Some(&1));
        assert!(st.raced_epochs() >= 1, "seed {seed}: {st:#?}");
    }
}
