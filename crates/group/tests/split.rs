//! A relay that confirms two racing commits splits the group; members on both sides detect it
//! from each other's signed epoch confirmations, and report it if confirmations are withheld.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use blindcall_group::{CallConfig, Event, MemberConfig, PEER_CONFIRMATION, PeerMessageError};
use common::Room;

fn room() -> Room {
    let mut r = Room::with_members(
        &["alice", "bob", "carol", "dave"],
        CallConfig::default(),
        MemberConfig::default(),
    );
    r.run_path_updates();
    r.assert_converged();
    r.events.clear();
    r
}

/// The lying relay: bob's and carol's racing self-updates are both "accepted"; bob's goes to
/// alice, carol's to dave.
fn split(r: &mut Room) {
    let now = r.now;
    let pb = r.get_mut("bob").self_update().unwrap();
    let pc = r.get_mut("carol").self_update().unwrap();
    let (cb, cc) = (pb.commit().to_vec(), pc.commit().to_vec());
    pb.confirm(r.get_mut("bob"), now).unwrap();
    pc.confirm(r.get_mut("carol"), now).unwrap();
    r.get_mut("alice").handle_message(now, &cb).unwrap();
    r.get_mut("dave").handle_message(now, &cc).unwrap();
}

fn splits(r: &mut Room, name: &str) -> Vec<String> {
    r.take_events(name)
        .into_iter()
        .filter_map(|e| match e {
            Event::GroupSplit { member, .. } => Some(member.identity.to_string()),
            _ => None,
        })
        .collect()
}

// covers: GRP-SPLIT-1, GRP-SPLIT-2
#[test]
fn both_sides_of_a_split_detect_it_from_signed_confirmations() {
    let mut r = room();
    // In an honest epoch every member reports the group consistent.
    let pc = r.get_mut("alice").self_update().unwrap();
    r.commit("alice", pc);
    for name in ["alice", "bob", "carol", "dave"] {
        assert!(
            r.take_events(name)
                .iter()
                .any(|e| matches!(e, Event::EpochConsistent { .. })),
            "{name} saw no consistent epoch"
        );
    }
    // Same epoch number on all four screens, two different groups.
    split(&mut r);
    let epochs: Vec<u64> = r.epochs().iter().map(|(_, e)| *e).collect();
    assert!(epochs.windows(2).all(|w| w[0] == w[1]), "{epochs:?}");
    assert_ne!(
        r.get("alice").security_code(),
        r.get("dave").security_code()
    );
    r.drain();
    let mut a = splits(&mut r, "alice");
    a.sort();
    assert_eq!(a, ["carol", "dave"], "alice must name the other side");
    let mut d = splits(&mut r, "dave");
    d.sort();
    assert_eq!(d, ["alice", "bob"], "dave must name the other side");
    assert_eq!(splits(&mut r, "bob").len(), 2);
    assert_eq!(splits(&mut r, "carol").len(), 2);
    // Nobody calls a split group consistent.
    for name in ["alice", "bob", "carol", "dave"] {
        assert!(!r.events.get(name).is_some_and(|es| {
            es.iter()
                .any(|e| matches!(e, Event::EpochConsistent { .. }))
        }));
    }
}

// covers: GRP-SPLIT-3
#[test]
fn a_split_whose_confirmations_are_withheld_is_reported_after_the_timeout() {
    let mut r = room();
    r.relay_peer_messages = false;
    split(&mut r);
    r.drain();
    // The lying relay passes confirmations only within each side.
    let held = std::mem::take(&mut r.held_peer_messages);
    for (from, payload) in &held {
        let side: &[&str] = if ["alice", "bob"].contains(&from.as_str()) {
            &["alice", "bob"]
        } else {
            &["carol", "dave"]
        };
        r.deliver_peer(from, payload, Some(side));
    }
    r.drain();
    assert!(splits(&mut r, "alice").is_empty());
    r.advance(Duration::from_millis(4_999));
    assert!(
        !r.take_events("alice")
            .iter()
            .any(|e| matches!(e, Event::EpochUnconfirmed { .. }))
    );
    r.advance(Duration::from_millis(1));
    let unconfirmed = |r: &mut Room, name: &str| -> Vec<String> {
        r.take_events(name)
            .into_iter()
            .find_map(|e| match e {
                Event::EpochUnconfirmed { members, .. } => Some(
                    members
                        .iter()
                        .map(|m| m.identity.to_string())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .unwrap_or_default()
    };
    assert_eq!(unconfirmed(&mut r, "alice"), ["carol", "dave"]);
    assert_eq!(unconfirmed(&mut r, "dave"), ["alice", "bob"]);
}

// covers: GRP-SPLIT-2
#[test]
fn forged_or_misdirected_confirmations_change_nothing() {
    let mut r = room();
    r.relay_peer_messages = false;
    let pc = r.get_mut("alice").self_update().unwrap();
    r.commit("alice", pc);
    let held = std::mem::take(&mut r.held_peer_messages);
    let (from, genuine) = held.iter().find(|(f, _)| f == "bob").unwrap().clone();
    let now = r.now;
    // The relay flips a tag byte of bob's confirmation: the signature no longer verifies.
    let mut forged = genuine.clone();
    let tag_at = forged.len() - 1 - 64 - 32 + 5;
    forged[tag_at] ^= 1;
    assert_eq!(
        r.get_mut("alice").handle_peer_message(now, &forged),
        Err(PeerMessageError::BadSignature)
    );
    // Garbage, truncation and another kind are malformed; nothing panics.
    for bad in [
        vec![],
        vec![PEER_CONFIRMATION],
        vec![9, 1, 2],
        genuine[..genuine.len() - 1].to_vec(),
    ] {
        assert_eq!(
            r.get_mut("alice").handle_peer_message(now, &bad),
            Err(PeerMessageError::Malformed)
        );
    }
    assert!(splits(&mut r, "alice").is_empty());
    // The genuine one still counts, once.
    r.deliver_peer(&from, &genuine, None);
    r.deliver_peer(&from, &genuine, None);
    assert!(splits(&mut r, "alice").is_empty());
    // A confirmation of an old epoch is stale.
    let pc = r.get_mut("alice").self_update().unwrap();
    r.commit("alice", pc);
    let now = r.now;
    assert!(matches!(
        r.get_mut("alice").handle_peer_message(now, &genuine),
        Err(PeerMessageError::Stale { .. })
    ));
}
