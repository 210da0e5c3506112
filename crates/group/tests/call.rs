//! Call scenarios on a simulated room with a toy DS and a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use blindcall_group::{
    ApiMisuse, CallConfig, CallGroup, Client, CommitKind, Error, Event, FrameDropReason,
    InvalidMessage, MemberConfig, MlsSuite, RetireReason,
};
use common::{Room, Verdict};

fn room(names: &[&str]) -> Room {
    Room::with_members(names, CallConfig::default(), MemberConfig::default())
}

// covers: GRP-MEM-1, GRP-MEM-2, GRP-MEM-3, GRP-MEM-6, KS-TR-2, KS-TR-6, KS-TR-7, KS-RX-1
#[test]
fn removed_member_cannot_open_later_frames_and_joiner_cannot_open_earlier_ones() {
    let mut r = room(&["alice", "bob", "carol"]);
    r.activate_all();
    r.assert_converged();
    assert!(r.get("alice").is_host());
    assert!(!r.get("bob").is_host());
    let roster: Vec<String> = r
        .get("bob")
        .roster()
        .members()
        .iter()
        .map(|m| m.identity.to_string())
        .collect();
    assert_eq!(roster, ["alice", "bob", "carol"]);

    // Everyone opens everyone in the first shared epoch.
    let before = r.seal("alice", 0, b"hello all");
    for name in ["bob", "carol"] {
        let got = r.open(name, &before).unwrap();
        assert_eq!(
            (got.identity.as_str(), got.payload.as_slice()),
            ("alice", &b"hello all"[..])
        );
    }

    // Carol is removed.
    r.remove("alice", "carol");
    assert!(!r.get("carol").is_active());
    let carol_events = r.take_events("carol");
    assert!(
        carol_events
            .iter()
            .any(|e| matches!(e, Event::RemovedFromCall { .. }))
    );
    assert_eq!(r.get("carol").receive_key_count(), 0);
    let bob_events = r.take_events("bob");
    assert!(bob_events.iter().any(
        |e| matches!(e, Event::MembersLeft { members, .. } if &*members[0].identity == "carol")
    ));
    r.activate_all();
    let after_a = r.seal("alice", 0, b"without carol");
    let after_b = r.seal("bob", 1, b"bob too");
    assert_eq!(r.open("bob", &after_a).unwrap().payload, b"without carol");
    assert_eq!(r.open("alice", &after_b).unwrap().payload, b"bob too");
    for frame in [&after_a, &after_b] {
        let err = r.open("carol", frame).unwrap_err();
        assert_eq!(err.reason, FrameDropReason::UnknownEpoch);
    }

    // Dave joins: he opens what is sent now, not what was sent before his join.
    r.add("alice", &["dave"]);
    let bob_events = r.take_events("bob");
    assert!(bob_events.iter().any(
        |e| matches!(e, Event::MembersJoined { members, .. } if &*members[0].identity == "dave")
    ));
    r.activate_all();
    r.assert_converged();
    let now_frame = r.seal("bob", 0, b"welcome dave");
    let got = r.open("dave", &now_frame).unwrap();
    assert_eq!(
        (got.identity.as_str(), got.payload.as_slice()),
        ("bob", &b"welcome dave"[..])
    );
    assert_eq!(r.get("dave").receive_epochs(), vec![r.get("dave").epoch()]);
    for old in [&before, &after_a, &after_b] {
        let err = r.open("dave", old).unwrap_err();
        assert_eq!(
            err.reason,
            FrameDropReason::UnknownEpoch,
            "dave opened a pre-join frame"
        );
    }
    // Bob still holds the previous epoch (retention) and opens the pre-join frame of Alice.
    assert_eq!(
        r.open("bob", &after_a)
            .map(|g| g.payload)
            .unwrap_err()
            .reason,
        FrameDropReason::Replay
    );
}

// covers: GRP-MEM-4, KS-TR-1, KS-TR-3
#[test]
fn after_self_update_new_frames_do_not_open_with_old_epoch_keys() {
    let mut r = room(&["alice", "bob", "carol"]);
    r.activate_all();
    let e0 = r.get("bob").epoch();
    // Carol stays behind: she does not receive Bob's update (stale member with old keys only).
    let carol = r.members.remove("carol").unwrap();
    let pc = r.get_mut("bob").self_update().unwrap();
    assert_eq!(pc.kind(), CommitKind::SelfUpdate);
    assert!(pc.welcome().is_none());
    assert!(
        pc.group_info().is_some(),
        "the relay gets the next epoch's GroupInfo"
    );
    assert_eq!(pc.next_epoch(), e0 + 1);
    r.commit("bob", pc);
    r.members.insert("carol".into(), carol);
    r.activate_all();
    let fresh = r.seal("alice", 0, b"new epoch");
    assert_eq!(r.open("bob", &fresh).unwrap().epoch, e0 + 1);
    let err = r.open("carol", &fresh).unwrap_err();
    assert_eq!(err.reason, FrameDropReason::UnknownEpoch);
    assert_eq!(err.origin.unwrap().leaf, r.get("alice").own_leaf());
    // Even with the epoch bits forged to the old epoch, the old keys do not open it.
    let mut forged = fresh.clone();
    let (hdr, _) = blindcall_sframe::Header::decode(&forged).unwrap();
    let layout = r.get("carol").params().layout;
    let parts = layout.decode(hdr.kid).unwrap();
    let old_kid = layout.encode(parts.context, parts.leaf, e0).unwrap();
    let new_hdr = blindcall_sframe::Header {
        kid: old_kid,
        ctr: hdr.ctr,
    };
    assert_eq!(new_hdr.encoded_len(), hdr.encoded_len());
    new_hdr.encode(&mut forged).unwrap();
    assert_eq!(
        r.open("carol", &forged).unwrap_err().reason,
        FrameDropReason::TagMismatch
    );
    assert_ne!(
        r.get("alice").security_code(),
        r.get("carol").security_code()
    );
}

// covers: KS-TR-3, KS-TR-5, GRP-TIME-1
#[test]
fn frames_sealed_before_a_transition_open_within_retention_and_not_after() {
    // A send barrier longer than the retention: the old send epoch's keys expire first.
    let local = MemberConfig {
        activation_delay: Duration::from_secs(3600),
        ..MemberConfig::default()
    };
    let mut r = Room::with_members(&["alice", "bob", "carol"], CallConfig::default(), local);
    r.activate_all();
    // Alice seals a burst just before the transition (still on the old send epoch).
    let old: Vec<Vec<u8>> = (0..4).map(|i| r.seal("alice", 0, &[i; 8])).collect();
    let pc = r.get_mut("carol").self_update().unwrap();
    r.commit("carol", pc);
    // Senders have not switched yet: Alice still seals with the old epoch's key.
    assert_eq!(r.get("alice").send_epoch() + 1, r.get("alice").epoch());
    let late_old = r.seal("alice", 0, b"late");
    r.advance(Duration::from_millis(9_999));
    for name in ["bob", "carol"] {
        assert_eq!(r.open(name, &old[0]).unwrap().payload, [0; 8]);
        assert_eq!(r.open(name, &late_old).unwrap().payload, b"late");
        assert_eq!(r.get(name).receive_epochs().len(), 2);
    }
    assert_eq!(
        r.get("bob").poll_timeout(),
        Some(r.now + Duration::from_millis(1))
    );
    // A `now` from the past is treated as the last seen time: nothing expires.
    let past = r.now - Duration::from_secs(5);
    r.get_mut("bob").handle_timeout(past);
    assert_eq!(r.get("bob").receive_epochs().len(), 2);
    r.advance(Duration::from_millis(1));
    for name in ["bob", "carol"] {
        let err = r.open(name, &old[1]).unwrap_err();
        assert_eq!(err.reason, FrameDropReason::UnknownEpoch);
        assert_eq!(r.get(name).receive_epochs(), vec![r.get(name).epoch()]);
        let events = r.take_events(name);
        assert!(events.iter().any(|e| matches!(
            e,
            Event::EpochKeysRetired {
                reason: RetireReason::Expired,
                ..
            }
        )));
    }
    // Alice never activated: her old send epoch expired, so the group switched her senders.
    let events = r.take_events("alice");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::SendEpochActivated { forced: true, .. }))
    );
    assert_eq!(r.get("alice").send_epoch(), r.get("alice").epoch());
    let fresh = r.seal("alice", 0, b"new");
    assert_eq!(r.open("bob", &fresh).unwrap().payload, b"new");
}

// covers: KS-TR-4
#[test]
fn new_epoch_with_same_low_bits_evicts_retained_epoch_at_once() {
    let call = CallConfig {
        epoch_bits: 1,
        ..CallConfig::default()
    };
    let mut r = Room::with_members(&["alice", "bob"], call, MemberConfig::default());
    r.activate_all();
    let e = r.get("bob").epoch();
    let f_e = r.seal("alice", 0, b"epoch e");
    let pc = r.get_mut("alice").self_update().unwrap();
    r.commit("alice", pc);
    assert_eq!(r.get("bob").receive_epochs(), vec![e, e + 1]);
    let pc = r.get_mut("alice").self_update().unwrap();
    r.commit("alice", pc);
    // Epoch e+2 has the same low bit as e: e is gone although its 10 s have not passed.
    assert_eq!(r.get("bob").receive_epochs(), vec![e + 1, e + 2]);
    let events = r.take_events("bob");
    assert!(events.contains(&Event::EpochKeysRetired {
        epoch: e,
        reason: RetireReason::EpochBitsReused
    }));
    let err = r.open("bob", &f_e).unwrap_err();
    assert_eq!(
        err.reason,
        FrameDropReason::TagMismatch,
        "old frame must not open under the new epoch"
    );
    assert_eq!(err.origin.unwrap().epoch, Some(e + 2));
    // Alice's send epoch e was evicted: she was switched.
    assert_eq!(r.get("alice").send_epoch(), e + 2);
}

// covers: GRP-SEQ-1, GRP-SEQ-2, GRP-SEQ-3, GRP-CODE-2
#[test]
fn commit_race_converges_to_one_epoch_and_one_code() {
    let mut r = room(&["alice", "bob", "carol"]);
    let pa = r.get_mut("alice").self_update().unwrap();
    let pb = r.get_mut("bob").self_update().unwrap();
    assert_eq!(pa.from_epoch(), pb.from_epoch());
    // The DS echoes Alice's own commit to her before she hears the verdict: accepted, ignored.
    let echo = pa.commit().to_vec();
    let now = r.now;
    r.get_mut("alice").handle_message(now, &echo).unwrap();
    assert!(r.get("alice").has_pending_commit());
    assert_eq!(r.get("alice").epoch(), pa.from_epoch());
    // Both commits reach the DS; the DS takes Alice's first.
    let Verdict::Accepted(errors) = r.submit("alice", pa) else {
        panic!("first commit refused")
    };
    // Bob got Alice's commit while his own is pending: he must discard first.
    assert_eq!(errors.len(), 1);
    assert!(
        matches!(errors[0], (ref n, Error::ApiMisuse(ApiMisuse::PendingCommitOutstanding { .. })) if n == "bob")
    );
    let Verdict::Rejected(pb) = r.submit("bob", pb) else {
        panic!("second commit in one epoch accepted")
    };
    pb.discard(r.get_mut("bob")).unwrap();
    let winner = r.log.last().unwrap().clone();
    let now = r.now;
    r.get_mut("bob").handle_message(now, &winner).unwrap();
    r.assert_converged();
    // Bob can commit again afterwards.
    let pb2 = r.get_mut("bob").self_update().unwrap();
    r.commit("bob", pb2);
    r.assert_converged();
    r.activate_all();
    let f = r.seal("bob", 0, b"after race");
    assert_eq!(r.open("carol", &f).unwrap().payload, b"after race");
}

// covers: GRP-SEQ-1
#[test]
fn pending_commit_only_exits_into_its_own_call() {
    let mut r = room(&["alice", "bob"]);
    let mut other = Room::new("zoe", CallConfig::default(), MemberConfig::default());
    let pc = r.get_mut("alice").self_update().unwrap();
    // One pending commit at a time; no leave or other commit meanwhile.
    let err = r.get_mut("alice").self_update().unwrap_err();
    assert!(matches!(
        err,
        Error::ApiMisuse(ApiMisuse::PendingCommitOutstanding { .. })
    ));
    assert!(matches!(
        r.get_mut("alice").leave().unwrap_err(),
        Error::ApiMisuse(ApiMisuse::PendingCommitOutstanding { .. })
    ));
    // Confirming it on another call is refused and changes nothing there.
    let zoe_epoch = other.get("zoe").epoch();
    let other_now = other.now;
    let err = pc.confirm(other.get_mut("zoe"), other_now).unwrap_err();
    assert!(matches!(
        err,
        Error::ApiMisuse(ApiMisuse::ForeignPendingCommit)
    ));
    assert_eq!(other.get("zoe").epoch(), zoe_epoch);
    // The handle is gone: the only way out is to abandon the pending commit explicitly.
    assert!(r.get("alice").has_pending_commit());
    let epoch = r.get("alice").epoch();
    r.get_mut("alice").abandon_pending_commit().unwrap();
    assert!(!r.get("alice").has_pending_commit());
    assert_eq!(r.get("alice").epoch(), epoch);
    let pc = r.get_mut("alice").self_update().unwrap();
    r.commit("alice", pc);
    r.assert_converged();
}

// covers: GRP-CODE-1, GRP-CODE-2
#[test]
fn security_code_equal_for_members_and_different_for_a_fork() {
    let mut r = room(&["alice", "bob", "carol"]);
    r.assert_converged();
    let code = r.get("alice").security_code();
    assert_eq!(code.groups().len(), 6);
    assert_eq!(code.to_string().len(), 35);
    let ev = r.take_events("bob");
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::EpochChanged { code: c, .. } if *c == code))
    );
    // A misbehaving DS accepts two commits in one epoch and splits the group.
    let pa = r.get_mut("alice").self_update().unwrap();
    let pc = r.get_mut("carol").self_update().unwrap();
    let commit_a = pa.commit().to_vec();
    let now = r.now;
    pa.confirm(r.get_mut("alice"), now).unwrap();
    pc.confirm(r.get_mut("carol"), now).unwrap();
    r.get_mut("bob").handle_message(now, &commit_a).unwrap();
    assert_eq!(r.get("alice").epoch(), r.get("carol").epoch());
    assert_eq!(r.get("alice").security_code(), r.get("bob").security_code());
    assert_ne!(
        r.get("alice").security_code(),
        r.get("carol").security_code()
    );
    assert_ne!(r.get("alice").security_code(), code);
}

// covers: GRP-MEM-5
#[test]
fn leave_is_a_self_remove_committed_by_another_member() {
    let mut r = room(&["alice", "bob", "carol"]);
    let proposal = r.get_mut("bob").leave().unwrap();
    assert!(matches!(
        r.get_mut("bob").self_update().unwrap_err(),
        Error::ApiMisuse(ApiMisuse::Leaving)
    ));
    let errors = r.broadcast_except("bob", &proposal);
    assert!(errors.is_empty(), "{errors:?}");
    let ev = r.take_events("carol");
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::ProposalQueued {
            kind: blindcall_group::ProposalKind::Remove,
            ..
        }
    )));
    // Carol, not a host, may commit Bob's own removal.
    let pc = r.get_mut("carol").commit_pending_proposals().unwrap();
    r.commit("carol", pc);
    assert!(!r.get("bob").is_active());
    assert!(
        r.take_events("bob")
            .iter()
            .any(|e| matches!(e, Event::RemovedFromCall { .. }))
    );
    r.assert_converged();
    assert_eq!(r.get("alice").roster().len(), 2);
    assert!(
        !r.get("alice")
            .roster()
            .members()
            .iter()
            .any(|m| &*m.identity == "bob")
    );
}

// covers: GRP-TREE-1
#[test]
fn joiner_is_told_to_send_a_path_update_and_it_converges() {
    let local = MemberConfig {
        path_update_after_join: Some(Duration::from_millis(500)),
        activation_delay: Duration::ZERO,
        ..MemberConfig::default()
    };
    let mut r = Room::with_members(&["alice", "bob"], CallConfig::default(), local);
    assert_eq!(
        r.get("bob").poll_timeout(),
        Some(r.now + Duration::from_millis(500))
    );
    // The creator needs no path update: her only timer is the old epoch's retention.
    assert_eq!(
        r.get("alice").poll_timeout(),
        Some(r.now + Duration::from_secs(10))
    );
    r.advance(Duration::from_millis(499));
    assert!(!r.take_events("bob").contains(&Event::PathUpdateDue));
    r.advance(Duration::from_millis(1));
    r.drain();
    assert!(r.events["bob"].contains(&Event::PathUpdateDue));
    // Bob's path update loses a race once: it is due again right away.
    let pa = r.get_mut("alice").self_update().unwrap();
    let pb = r.get_mut("bob").self_update().unwrap();
    r.events.clear();
    let _ = r.submit("alice", pa);
    let Verdict::Rejected(pb) = r.submit("bob", pb) else {
        panic!()
    };
    pb.discard(r.get_mut("bob")).unwrap();
    let winner = r.log.last().unwrap().clone();
    let now = r.now;
    r.get_mut("bob").handle_message(now, &winner).unwrap();
    assert_eq!(r.get("bob").poll_timeout(), Some(r.now));
    r.advance(Duration::ZERO);
    r.run_path_updates();
    r.assert_converged();
    assert!(
        r.get("bob").poll_timeout().is_some_and(|t| t > r.now),
        "only retention timers remain"
    );
    r.advance(Duration::from_secs(11));
    assert!(r.get("bob").poll_timeout().is_none());
}

// covers: GRP-WIRE-1, GRP-WIRE-2
#[test]
fn malformed_and_misdirected_bytes_are_typed_errors_and_change_nothing() {
    let mut r = room(&["alice", "bob"]);
    let epoch = r.get("bob").epoch();
    let now = r.now;
    let bob = r.get_mut("bob");
    assert!(matches!(
        bob.handle_message(now, b""),
        Err(Error::InvalidMessage(InvalidMessage::Malformed))
    ));
    assert!(matches!(
        bob.handle_message(now, &[0xff; 40]),
        Err(Error::InvalidMessage(InvalidMessage::Malformed))
    ));
    let kp = Client::new("x", MlsSuite::default())
        .unwrap()
        .key_package()
        .unwrap();
    assert!(matches!(
        bob.handle_message(now, &kp),
        Err(Error::InvalidMessage(InvalidMessage::UnexpectedKind { .. }))
    ));
    let pc = r.get_mut("alice").self_update().unwrap();
    let commit = pc.commit().to_vec();
    // A handshake is a PublicMessage: wire format 0x0001 after the version field.
    assert_eq!(&commit[..4], &[0, 1, 0, 1]);
    for cut in [1, 10, commit.len() / 2, commit.len() - 1] {
        let e = r
            .get_mut("bob")
            .handle_message(now, &commit[..cut])
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidMessage(InvalidMessage::Malformed)),
            "{e:?}"
        );
    }
    let mut flipped = commit.clone();
    let mid = flipped.len() - 20;
    flipped[mid] ^= 1;
    let e = r.get_mut("bob").handle_message(now, &flipped).unwrap_err();
    assert!(matches!(e, Error::InvalidMessage(_)), "{e:?}");
    assert_eq!(r.get("bob").epoch(), epoch);
    // A Welcome is not a handshake for an existing member, and joining from a commit fails.
    let err = CallGroup::join(
        Client::new("y", MlsSuite::default()).unwrap(),
        &commit,
        MemberConfig::default(),
        now,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidMessage(InvalidMessage::UnexpectedKind { .. })
    ));
    r.commit("alice", pc);
    r.assert_converged();
    // The same commit again (replay) is refused.
    let e = r.get_mut("bob").handle_message(now, &commit).unwrap_err();
    assert!(
        matches!(e, Error::InvalidMessage(InvalidMessage::Rejected(_))),
        "{e:?}"
    );
}

// covers: GRP-MEM-1
#[test]
fn p256_suite_call_works() {
    let call = CallConfig {
        mls_suite: MlsSuite::P256Aes128,
        ..CallConfig::default()
    };
    let mut r = Room::with_members(&["alice", "bob"], call, MemberConfig::default());
    r.assert_converged();
    let f = r.seal("bob", 3, b"p256");
    let got = r.open("alice", &f).unwrap();
    assert_eq!((got.context, got.payload.as_slice()), (3, &b"p256"[..]));
    // A KeyPackage of the other suite is refused.
    let kp = Client::new("carl", MlsSuite::X25519Aes128Ed25519)
        .unwrap()
        .key_package()
        .unwrap();
    let err = r.get_mut("alice").add_members(&[&kp]).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidMessage(InvalidMessage::KeyPackageSuite {
            expected: 2,
            got: 1
        })
    ));
    let mismatched = Client::new("x", MlsSuite::X25519Aes128Ed25519).unwrap();
    assert!(
        CallGroup::create(
            mismatched,
            &CallConfig {
                mls_suite: MlsSuite::P256Aes128,
                ..CallConfig::default()
            },
            MemberConfig::default(),
            r.now
        )
        .is_err()
    );
}

// covers: KS-KID-4, KS-RX-1
#[test]
fn each_stream_has_its_own_kid_key_and_counter_and_failures_are_attributed() {
    let mut r = room(&["alice", "bob"]);
    r.activate_all();
    let a0 = r.seal("alice", 0, b"audio");
    let a1 = r.seal("alice", 1, b"video");
    let (h0, _) = blindcall_sframe::Header::decode(&a0).unwrap();
    let (h1, _) = blindcall_sframe::Header::decode(&a1).unwrap();
    assert_ne!(h0.kid, h1.kid);
    assert_eq!(
        (h0.ctr.0, h1.ctr.0),
        (0, 0),
        "each stream counts on its own"
    );
    let g1 = r.open("bob", &a1).unwrap();
    assert_eq!((g1.context, g1.leaf), (1, r.get("alice").own_leaf()));
    assert_eq!(r.open("bob", &a0).unwrap().context, 0);
    // Replays, tampering and out-of-layout KIDs are dropped with the claimed origin.
    let replay = r.open("bob", &a0).unwrap_err();
    assert_eq!(replay.reason, FrameDropReason::Replay);
    assert_eq!(replay.origin.unwrap().context, 0);
    let mut tampered = r.seal("alice", 0, b"audio 2");
    let last = tampered.len() - 1;
    tampered[last] ^= 0x80;
    let e = r.open("bob", &tampered).unwrap_err();
    assert_eq!(
        (e.reason, e.origin.unwrap().leaf),
        (FrameDropReason::TagMismatch, r.get("alice").own_leaf())
    );
    let layout = r.get("bob").params().layout;
    let kid = blindcall_sframe::Kid(1u64 << layout.total_bits());
    let mut bad = vec![0u8; 64];
    let n = blindcall_sframe::Header {
        kid,
        ctr: blindcall_sframe::Counter(0),
    }
    .encode(&mut bad)
    .unwrap();
    bad.truncate(n + 20);
    assert_eq!(
        r.open("bob", &bad).unwrap_err().reason,
        FrameDropReason::KidOutOfLayout
    );
    let ghost = layout.encode(0, 7, r.get("bob").epoch()).unwrap();
    let mut ghost_frame = vec![0u8; 64];
    let n = blindcall_sframe::Header {
        kid: ghost,
        ctr: blindcall_sframe::Counter(0),
    }
    .encode(&mut ghost_frame)
    .unwrap();
    ghost_frame.truncate(n + 20);
    let e = r.open("bob", &ghost_frame).unwrap_err();
    assert_eq!(
        (e.reason, e.origin.unwrap().leaf),
        (FrameDropReason::UnknownSender, 7)
    );
    assert_eq!(
        r.open("bob", &[]).unwrap_err().reason,
        FrameDropReason::Malformed
    );
    let max = layout.max_contexts();
    let now = r.now;
    assert!(matches!(
        r.get_mut("alice").seal(now, max, b"", b"x"),
        Err(Error::ApiMisuse(ApiMisuse::ContextOutOfRange { .. }))
    ));
}

mod fuzzish {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 48,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xb11d_ca11),
            ..ProptestConfig::default()
        })]

        // covers: GRP-WIRE-2, KS-RX-1
        #[test]
        fn arbitrary_and_mutated_input_never_panics_or_changes_state(
            junk in proptest::collection::vec(any::<u8>(), 0..300),
            pos in any::<usize>(),
            bit in 0u8..8,
        ) {
            let mut r = room(&["alice", "bob"]);
            r.activate_all();
            let now = r.now;
            let epoch = r.get("bob").epoch();
            prop_assert!(r.get_mut("bob").handle_message(now, &junk).is_err());
            let mut frame = junk.clone();
            prop_assert!(r.get_mut("bob").open(b"meta", &mut frame).is_err());
            // One flipped bit in a real commit or frame.
            let pc = r.get_mut("alice").self_update().unwrap();
            let mut commit = pc.commit().to_vec();
            let i = pos % commit.len();
            commit[i] ^= 1 << bit;
            if r.get_mut("bob").handle_message(now, &commit).is_err() {
                prop_assert_eq!(r.get("bob").epoch(), epoch);
            }
            pc.discard(r.get_mut("alice")).unwrap();
            let mut sealed = r.seal("alice", 0, b"payload");
            let j = pos % sealed.len();
            sealed[j] ^= 1 << bit;
            prop_assert!(r.get_mut("bob").open(b"meta", &mut sealed).is_err());
        }
    }
}
