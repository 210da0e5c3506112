//! Each invariant check fires when what it guards is broken (fed crafted observations, or a
//! real group checked against a contradicting record).

use std::time::Duration;

use blindcall_client::MediaKind;
use blindcall_group::SecurityCode;
use blindcall_media::RtpPacket;
use blindcall_proto::{Body, CommitAccepted, CommitBroadcast, VLBytes};
use blindcall_relay::{ConnId, Event as RelayEvent, RoomId};
use blindcall_sframe::{Counter, Header, Kid};

use crate::clock::SimTime;
use crate::invariants::{Checker, Invariant};
use crate::member::{FrameTag, Member, Observed};
use crate::rng::Rng;
use crate::scenario::{Action, ActionKind, Admit, MediaPlan, Participant, Scenario, Settings};
use crate::world::World;

fn plan() -> Participant {
    Participant {
        admit: Admit::Approve,
        think: Duration::ZERO,
        media: MediaPlan::Publish,
        path_update: Duration::ZERO,
        latency: Duration::from_millis(10),
        jitter: Duration::ZERO,
        invited: true,
    }
}

fn members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| {
            let key = crate::member::identity_key(7, i).unwrap();
            Member::new(i, plan(), Rng::new(i as u64), key)
        })
        .collect()
}

fn broke(c: &Checker) -> Option<Invariant> {
    c.violation().map(|v| v.invariant)
}

fn code(b: u8) -> SecurityCode {
    SecurityCode::from_epoch_authenticator(&[b; 32], 6)
}

fn packet(kid: u64, ctr: u64) -> RtpPacket {
    let h = Header {
        kid: Kid(kid),
        ctr: Counter(ctr),
    };
    let mut payload = vec![0x80u8; 1 + h.encoded_len()];
    h.encode(&mut payload[1..]).unwrap();
    payload.extend_from_slice(&[0; 20]);
    RtpPacket {
        sequence_number: 1,
        timestamp: 1,
        marker: false,
        payload,
    }
}

// covers: SIM-INV-1
#[test]
fn two_codes_for_one_epoch_break_agreement() {
    let m = members(2);
    let mut c = Checker::new();
    let e = |b| Observed::Epoch {
        epoch: 3,
        code: code(b),
    };
    c.observed(&m, 0, &e(1));
    c.observed(&m, 1, &e(1));
    assert_eq!(broke(&c), None);
    c.observed(&m, 1, &e(2));
    assert_eq!(broke(&c), Some(Invariant::EpochAgreement));
}

// covers: SIM-INV-4
#[test]
fn a_second_winner_or_a_second_broadcast_breaks_sequencing() {
    let accepted = |epoch| Body::CommitAccepted(CommitAccepted { epoch });
    let broadcast = |b: u8| {
        Body::CommitBroadcast(CommitBroadcast {
            epoch: 4,
            commit: VLBytes::new(vec![b; 8]),
        })
    };
    let mut c = Checker::new();
    c.relay_sent(ConnId(1), &accepted(5));
    c.relay_sent(ConnId(2), &broadcast(1));
    c.relay_sent(ConnId(3), &broadcast(1));
    assert_eq!(broke(&c), None);
    c.relay_sent(ConnId(3), &accepted(5));
    assert_eq!(broke(&c), Some(Invariant::OneCommitPerEpoch));

    let mut c = Checker::new();
    c.relay_sent(ConnId(2), &broadcast(1));
    c.relay_sent(ConnId(3), &broadcast(2));
    assert_eq!(broke(&c), Some(Invariant::OneCommitPerEpoch));

    let m = members(1);
    let room = RoomId(b"r".to_vec());
    let mut c = Checker::new();
    c.relay_event(
        &m,
        |_| None,
        &RelayEvent::GroupCreated {
            room: room.clone(),
            epoch: 0,
        },
    );
    let commit = |epoch| RelayEvent::CommitAccepted {
        room: room.clone(),
        conn: ConnId(1),
        epoch,
    };
    c.relay_event(&m, |_| None, &commit(1));
    assert_eq!(broke(&c), None);
    c.relay_event(&m, |_| None, &commit(1));
    assert_eq!(broke(&c), Some(Invariant::OneCommitPerEpoch));
}

// covers: SIM-INV-3
#[test]
fn a_member_no_host_approved_breaks_the_add_policy() {
    let m = members(3);
    let mut c = Checker::new();
    c.created("p0");
    c.approved("p1");
    c.members_joined(&m, 0, ["p0", "p1"]);
    assert_eq!(broke(&c), None);
    c.members_joined(&m, 0, ["p2"]);
    assert_eq!(broke(&c), Some(Invariant::AddPolicy));

    let mut c = Checker::new();
    let event = RelayEvent::MemberJoined {
        room: RoomId(b"r".to_vec()),
        conn: ConnId(7),
        leaf: 2,
    };
    c.relay_event(&m, |_| Some(2), &event);
    assert_eq!(broke(&c), Some(Invariant::AddPolicy));
}

// covers: SIM-INV-5
#[test]
fn a_repeated_kid_and_counter_in_one_epoch_is_nonce_reuse() {
    let m = members(2);
    let mut c = Checker::new();
    let sent = |counter| Observed::Sent {
        kind: MediaKind::Audio,
        epoch: 2,
        counter,
        tag: None,
    };
    c.observed(&m, 0, &sent(0));
    c.transmitted(&m, 0, &packet(0x12, 0));
    c.observed(&m, 0, &sent(1));
    c.transmitted(&m, 0, &packet(0x12, 1));
    // Another epoch may use the same KID bits and counter (another key).
    c.observed(
        &m,
        1,
        &Observed::Sent {
            kind: MediaKind::Audio,
            epoch: 18,
            counter: 0,
            tag: None,
        },
    );
    c.transmitted(&m, 1, &packet(0x12, 0));
    assert_eq!(broke(&c), None);
    c.observed(&m, 0, &sent(0));
    c.transmitted(&m, 0, &packet(0x12, 0));
    assert_eq!(broke(&c), Some(Invariant::NonceReuse));
}

fn opened(sender: &str, tag: Option<FrameTag>, epoch: u64, counter: u64) -> Observed {
    Observed::Opened {
        participant: 1,
        sender: sender.into(),
        kind: MediaKind::Audio,
        epoch,
        counter,
        tag,
        intact: true,
    }
}

// covers: SIM-INV-6, SIM-INV-7
#[test]
fn frames_must_come_from_their_sealer_once_and_not_after_its_removal() {
    let mut m = members(3);
    m[1].joined_epoch = Some(1);
    let tag = FrameTag { from: 0, seq: 9 };
    let sealed = Observed::Sent {
        kind: MediaKind::Audio,
        epoch: 2,
        counter: 5,
        tag: Some(tag),
    };
    // Never sealed.
    let mut c = Checker::new();
    c.observed(&m, 1, &opened("p0", Some(tag), 2, 5));
    assert_eq!(broke(&c), Some(Invariant::FrameOrigin));
    // Sealed by p0, but opened as p2's.
    let mut c = Checker::new();
    c.observed(&m, 0, &sealed);
    c.observed(&m, 1, &opened("p2", Some(tag), 2, 5));
    assert_eq!(broke(&c), Some(Invariant::FrameOrigin));
    // Opened under an epoch before the receiver joined.
    let mut c = Checker::new();
    m[1].joined_epoch = Some(3);
    c.observed(&m, 0, &sealed);
    c.observed(&m, 1, &opened("p0", Some(tag), 2, 5));
    assert_eq!(broke(&c), Some(Invariant::FrameOrigin));
    m[1].joined_epoch = Some(1);
    // Opened twice.
    let mut c = Checker::new();
    c.observed(&m, 0, &sealed);
    c.observed(&m, 1, &opened("p0", Some(tag), 2, 5));
    assert_eq!(broke(&c), None);
    c.observed(&m, 1, &opened("p0", Some(tag), 2, 5));
    assert_eq!(broke(&c), Some(Invariant::Replay));
    // Opened after the receiver merged the sender's removal.
    let mut c = Checker::new();
    c.observed(&m, 0, &sealed);
    c.may_leave("p0");
    c.members_left(1, 3, ["p0"]);
    c.observed(&m, 1, &opened("p0", Some(tag), 2, 5));
    assert_eq!(broke(&c), Some(Invariant::RemovedSender));
    // A frame opened in an epoch at or after its sender's removal (found at the end).
    let mut c = Checker::new();
    c.observed(&m, 0, &sealed);
    c.observed(&m, 1, &opened("p0", Some(tag), 2, 5));
    c.may_leave("p0");
    c.members_left(2, 2, ["p0"]);
    c.at_quiescence(&m, None, 0, 0);
    assert_eq!(broke(&c), Some(Invariant::FrameOrigin));
}

/// Host p0 and guest p1 (approved), no faults, run for `until_ms`.
fn two_member_world(until_ms: u64) -> World {
    let at = |ms| Duration::from_millis(ms);
    let scenario = Scenario {
        seed: 1,
        settings: Settings {
            proposal_fallback: at(750),
            activation_delay: at(200),
            media_loss: 0,
            media_duplicate: 0,
            media_jitter: Duration::ZERO,
            split_writes: 0,
            any_member_adds: false,
            invite: false,
            reconnect: true,
        },
        participants: vec![plan(), plan()],
        actions: vec![
            Action {
                at: Duration::ZERO,
                kind: ActionKind::Join { p: 0 },
            },
            Action {
                at: at(300),
                kind: ActionKind::Join { p: 1 },
            },
        ],
    };
    let mut w = World::new(scenario).unwrap();
    w.schedule();
    w.run_until(SimTime::from_millis(until_ms));
    assert!(
        w.checker.violation().is_none(),
        "{:?}",
        w.checker.violation()
    );
    assert_eq!(w.members[1].joined_epoch, Some(1));
    w
}

// covers: SIM-INV-2
#[test]
fn a_real_group_is_checked_against_removals_and_joins() {
    let mut w = two_member_world(5_000);
    let epoch = w.members[1]
        .core
        .as_ref()
        .unwrap()
        .call_group()
        .unwrap()
        .epoch();
    assert_eq!(epoch, 2, "the Add and p1's path update");
    // Were p1 removed in its current epoch, the keys it holds would break the invariant.
    w.checker.may_leave("p1");
    w.checker.members_left(0, epoch, ["p1"]);
    w.checker.after_step(&w.members);
    assert_eq!(broke(&w.checker), Some(Invariant::KeysAfterRemoval));

    let mut w = two_member_world(5_000);
    w.members[1].joined_epoch = Some(epoch + 1);
    w.checker.after_step(&w.members);
    assert_eq!(broke(&w.checker), Some(Invariant::KeysBeforeJoin));
}

// covers: SIM-INV-8
#[test]
fn members_off_the_relays_epoch_break_convergence() {
    // Past key retention: only the current epoch's keys are held.
    let mut w = two_member_world(15_000);
    w.checker.at_quiescence(&w.members, Some(2), 2, 0);
    assert_eq!(broke(&w.checker), None);
    w.checker.at_quiescence(&w.members, Some(3), 2, 0);
    assert_eq!(broke(&w.checker), Some(Invariant::Convergence));
    let mut w = two_member_world(15_000);
    w.checker.at_quiescence(&w.members, Some(2), 2, 1);
    assert_eq!(broke(&w.checker), Some(Invariant::Convergence));
}

// covers: SIM-INV-9
#[test]
fn a_panic_inside_a_step_is_caught_and_reported_with_its_step() {
    let mut w = two_member_world(1_000);
    // A step for a participant that does not exist panics (an index out of bounds).
    w.step_at(SimTime::from_millis(1_001), crate::world::Due::Member(99));
    let v = w.checker.violation().expect("the panic is reported");
    assert_eq!(v.invariant, Invariant::NoPanic);
    assert_eq!(v.at, SimTime::from_millis(1_001));
    assert!(v.detail.contains("panicked"), "{}", v.detail);
}

// covers: SIM-INV-10
#[test]
fn a_call_ended_for_no_reason_of_the_scenario_is_reported() {
    use blindcall_client::{EndReason, JoinError, ProtocolError, RefusedReason};

    use crate::invariants::{end_expected, join_failure_expected};

    for ok in [
        EndReason::Left,
        EndReason::Removed,
        EndReason::Denied,
        EndReason::ConnectionLost,
        EndReason::Refused(RefusedReason::WAITING_ROOM_TIMEOUT),
    ] {
        assert!(end_expected(&ok), "{ok:?}");
    }
    assert!(!end_expected(&EndReason::Refused(
        RefusedReason::IDLE_TIMEOUT
    )));
    assert!(!end_expected(&EndReason::ProtocolError(
        ProtocolError::Malformed
    )));
    assert!(join_failure_expected(&JoinError::Refused(
        RefusedReason::ROOM_LOCKED
    )));
    assert!(!join_failure_expected(&JoinError::Timeout {
        what: "HelloAck"
    }));
    assert!(!join_failure_expected(&JoinError::Refused(
        RefusedReason::HELLO_TIMEOUT
    )));

    let m = members(2);
    let mut c = Checker::new();
    c.call_ended(&m, 1, "Left", true);
    assert_eq!(broke(&c), None);
    c.call_ended(&m, 1, "Refused(IDLE_TIMEOUT)", false);
    assert_eq!(broke(&c), Some(Invariant::UnexpectedEnd));
}

// covers: SIM-INV-11
#[test]
fn a_removal_nobody_caused_is_reported() {
    let m = members(3);
    let removed = |conn| RelayEvent::MemberRemoved {
        room: RoomId(b"r".to_vec()),
        conn: ConnId(conn),
        leaf: 2,
        banned: true,
    };
    let mut c = Checker::new();
    c.may_leave("p1");
    c.relay_event(&m, |c| Some(c.0 as usize), &removed(1));
    c.members_left(0, 4, ["p1"]);
    assert_eq!(broke(&c), None);
    c.relay_event(&m, |c| Some(c.0 as usize), &removed(2));
    assert_eq!(broke(&c), Some(Invariant::RemovalCause));

    let mut c = Checker::new();
    c.members_left(0, 4, ["p2"]);
    assert_eq!(broke(&c), Some(Invariant::RemovalCause));
}

// covers: SIM-INV-12
#[test]
fn alarms_only_a_misbehaving_party_causes_are_violations() {
    use blindcall_client::{Event, ImpersonationReason};

    use crate::invariants::is_false_alarm;

    let impersonation = |reason| Event::Impersonation {
        claimed: None,
        participant: 3,
        kind: MediaKind::Audio,
        reason,
        detected_after: Duration::from_secs(1),
    };
    assert!(is_false_alarm(&impersonation(
        ImpersonationReason::HashMismatch
    )));
    assert!(is_false_alarm(&impersonation(
        ImpersonationReason::ForeignKidOnStream
    )));
    assert!(!is_false_alarm(&impersonation(
        ImpersonationReason::NoSignature
    )));
    assert!(is_false_alarm(&Event::OwnRemovalProposed { epoch: 4 }));
    assert!(!is_false_alarm(&Event::EpochUnconfirmed {
        epoch: 4,
        members: Vec::new()
    }));
    assert!(!is_false_alarm(&Event::Waiting));
}
