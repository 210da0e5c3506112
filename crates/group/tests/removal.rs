//! Removal really removes: senders switch at once, the removed member's old-epoch frames are
//! refused, and the old keys it knows go away soon. Joins and self-updates keep the barrier.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use blindcall_group::{CallConfig, Event, FrameDropReason, MemberConfig};
use common::Room;

fn room(names: &[&str]) -> Room {
    let mut r = Room::with_members(names, CallConfig::default(), MemberConfig::default());
    r.activate_all();
    r
}

fn switched(r: &mut Room, name: &str) -> bool {
    r.take_events(name)
        .iter()
        .any(|e| matches!(e, Event::SendEpochActivated { forced: false, .. }))
}

// covers: KS-TR-8
#[test]
fn senders_switch_after_the_barrier_when_nobody_was_removed() {
    let mut r = room(&["alice", "bob", "carol"]);
    r.take_events("alice");
    let pc = r.get_mut("carol").self_update().unwrap();
    r.commit("carol", pc);
    let epoch = r.get("alice").epoch();
    assert_eq!(r.get("alice").send_epoch() + 1, epoch);
    assert_eq!(
        r.get("alice").poll_timeout(),
        Some(r.now + Duration::from_millis(200)),
        "the barrier is the group's next timer"
    );
    r.advance(Duration::from_millis(199));
    assert_eq!(r.get("alice").send_epoch() + 1, epoch);
    assert!(!switched(&mut r, "alice"));
    r.advance(Duration::from_millis(1));
    assert_eq!(r.get("alice").send_epoch(), epoch);
    assert!(
        switched(&mut r, "alice"),
        "one SendEpochActivated per switch"
    );
    r.advance(Duration::from_millis(500));
    assert!(!switched(&mut r, "alice"));
    // The committer (confirmed its own commit) follows the same barrier.
    assert_eq!(r.get("carol").send_epoch(), epoch);
}

// covers: KS-TR-9, KS-TR-10, KS-TR-11
#[test]
fn a_removal_switches_senders_at_once_and_refuses_the_removed_members_old_frames() {
    let mut r = room(&["alice", "bob", "carol", "dave"]);
    let old_epoch = r.get("bob").epoch();
    // Frames sealed under the old epoch just before the removal.
    let from_carol = r.seal("carol", 0, b"carol before");
    let from_bob: Vec<Vec<u8>> = (0..3).map(|i| r.seal("bob", 0, &[i; 4])).collect();
    for name in ["alice", "bob", "dave"] {
        r.take_events(name);
    }

    r.remove("alice", "carol");
    let epoch = r.get("bob").epoch();
    assert_eq!(epoch, old_epoch + 1);
    for name in ["alice", "bob", "dave"] {
        // No barrier: the switch happened when the commit merged.
        assert_eq!(
            r.get(name).send_epoch(),
            epoch,
            "{name} still seals under old keys"
        );
        assert!(switched(&mut r, name), "{name} reported no switch");
    }
    // What the others seal now, carol cannot read.
    let fresh = r.seal("bob", 0, b"after carol");
    assert_eq!(
        r.open("carol", &fresh).unwrap_err().reason,
        FrameDropReason::UnknownEpoch
    );
    // Carol's old-epoch frame is refused, though its epoch's keys are still held.
    let err = r.open("dave", &from_carol).unwrap_err();
    assert_eq!(err.reason, FrameDropReason::SenderRemoved);
    assert_eq!(err.origin.unwrap().epoch, Some(old_epoch));
    // A remaining member's old-epoch frame in flight still opens...
    assert_eq!(r.open("dave", &from_bob[0]).unwrap().payload, [0; 4]);
    // ...for the short removal retention only (2 s, not the usual 10 s).
    r.advance(Duration::from_millis(1_999));
    assert_eq!(r.open("dave", &from_bob[1]).unwrap().payload, [1; 4]);
    r.advance(Duration::from_millis(1));
    assert_eq!(
        r.open("dave", &from_bob[2]).unwrap_err().reason,
        FrameDropReason::UnknownEpoch
    );
    assert_eq!(r.get("dave").receive_epochs(), vec![epoch]);
    r.assert_converged();
}

// covers: KS-TR-10
#[test]
fn an_old_frame_of_a_removed_member_is_refused_even_if_installed_before() {
    let mut r = room(&["alice", "bob", "carol"]);
    let first = r.seal("carol", 1, b"one");
    let second = r.seal("carol", 1, b"two");
    // Bob opened carol's stream before the removal: its key is installed.
    assert_eq!(r.open("bob", &first).unwrap().payload, b"one");
    let keys = r.get("bob").receive_key_count();
    r.remove("alice", "carol");
    assert_eq!(
        r.get("bob").receive_key_count(),
        keys - 1,
        "carol's installed key was removed"
    );
    assert_eq!(
        r.open("bob", &second).unwrap_err().reason,
        FrameDropReason::SenderRemoved
    );
}
