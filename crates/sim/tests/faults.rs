//! The network's faults, each on its own: the call still keeps every invariant and ends where
//! it should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_sim::scenario::ActionKind;
use common::*;

// covers: SIM-NET-1
#[test]
fn a_partitioned_member_catches_up_in_order_when_it_heals() {
    // p2 hears nothing for 4 s while the host removes p1 and p3 joins: three commits wait on
    // its link and arrive in order after the partition.
    let s = scenario(
        calm(),
        vec![guest(); 4],
        vec![
            join(0, 0),
            join(300, 1),
            join(1_500, 2),
            at(
                3_000,
                ActionKind::Partition {
                    p: 2,
                    duration: ms(4_000),
                },
            ),
            at(3_200, ActionKind::HostRemove { p: 1 }),
            join(3_400, 3),
        ],
    );
    let o = run_clean(s);
    let st = &o.stats;
    // 2 + 2 + remove + 2.
    assert_eq!(st.final_epoch, Some(7), "{st:#?}");
    assert_eq!(st.ends.get("Removed"), Some(&1), "{st:#?}");
    assert_eq!(st.ends.len(), 1, "p2 is still in the call: {st:#?}");
}

// covers: SIM-NET-1, SIM-INV-13
#[test]
fn a_member_cut_off_briefly_resumes_its_leaf_without_a_commit() {
    let s = scenario(
        calm(),
        vec![guest(); 3],
        vec![
            join(0, 0),
            join(300, 1),
            join(1_500, 2),
            at(
                4_000,
                ActionKind::Disconnect {
                    p: 1,
                    outage: ms(2_000),
                },
            ),
        ],
    );
    let o = run_clean(s);
    let st = &o.stats;
    assert!(st.ends.is_empty(), "nobody's call ended: {st:#?}");
    // Two joins (an Add and a path update each) and nothing for the loss.
    assert_eq!(st.final_epoch, Some(4), "{st:#?}");
    assert_eq!(st.relay.get("graces started"), Some(&1), "{st:#?}");
    assert_eq!(st.relay.get("resumes accepted"), Some(&1), "{st:#?}");
    assert_eq!(st.relay.get("remove proposals"), Some(&0), "{st:#?}");
    // Frames published while away were refused, not sealed.
    assert!(
        st.warnings.contains_key("publish Reconnecting"),
        "{:?}",
        st.warnings
    );
}

// covers: SIM-NET-1, SIM-INV-14
#[test]
fn a_member_away_longer_than_the_grace_is_removed_and_refused() {
    let s = scenario(
        calm(),
        vec![guest(); 3],
        vec![
            join(0, 0),
            join(300, 1),
            join(1_500, 2),
            at(
                4_000,
                ActionKind::Disconnect {
                    p: 1,
                    outage: ms(26_000),
                },
            ),
        ],
    );
    let o = run_clean(s);
    let st = &o.stats;
    assert_eq!(st.ends.get("ResumeRefused(REMOVED)"), Some(&1), "{st:#?}");
    assert_eq!(st.ends.len(), 1, "{st:#?}");
    // The relay's proposal to remove p1 is committed (quiescence checks the rosters).
    assert_eq!(st.final_epoch, Some(5), "{st:#?}");
    assert_eq!(st.relay.get("graces expired"), Some(&1), "{st:#?}");
}

// covers: SIM-NET-1, SIM-INV-13
#[test]
fn a_partition_longer_than_the_silence_timeout_makes_the_member_reconnect() {
    let s = scenario(
        calm(),
        vec![guest(); 3],
        vec![
            join(0, 0),
            join(300, 1),
            join(1_500, 2),
            at(
                4_000,
                ActionKind::Partition {
                    p: 2,
                    duration: ms(8_000),
                },
            ),
            at(5_000, ActionKind::HostRemove { p: 1 }),
        ],
    );
    let o = run_clean(s);
    let st = &o.stats;
    assert_eq!(st.ends.get("Removed"), Some(&1), "{st:#?}");
    assert_eq!(st.ends.len(), 1, "p2 is back in the call: {st:#?}");
    assert_eq!(st.final_epoch, Some(5), "{st:#?}");
    assert_eq!(st.relay.get("resumes accepted"), Some(&1), "{st:#?}");
}

// covers: SIM-NET-1
#[test]
fn a_slow_member_with_little_bandwidth_still_converges() {
    let s = scenario(
        calm(),
        vec![guest(); 4],
        vec![
            join(0, 0),
            join(300, 1),
            at(
                1_000,
                ActionKind::Slow {
                    p: 1,
                    duration: ms(6_000),
                    latency: ms(1_500),
                    bytes_per_second: 4_000,
                },
            ),
            join(1_200, 2),
            join(1_200, 3),
        ],
    );
    let o = run_clean(s);
    assert_eq!(o.stats.final_epoch, Some(6), "{:#?}", o.stats);
    assert!(o.stats.ends.is_empty(), "{:#?}", o.stats);
}

// covers: SIM-NET-2
#[test]
fn lost_duplicated_and_reordered_media_is_opened_once_or_dropped() {
    let mut settings = calm();
    settings.media_loss = 150;
    settings.media_duplicate = 150;
    settings.media_jitter = ms(60);
    let s = scenario(
        settings,
        vec![guest(); 3],
        vec![join(0, 0), join(300, 1), join(300, 2)],
    );
    let o = run_clean(s);
    let st = &o.stats;
    assert!(st.frames_opened > 100, "{st:#?}");
    assert!(
        st.dropped.get("Incomplete").is_some_and(|n| *n > 0),
        "lost packets leave frames incomplete: {st:#?}"
    );
    // Every frame sent reached each of the two others at most once (the replay invariant).
    assert!(st.frames_opened < 2 * st.frames_sent, "{st:#?}");
}
