//! The delivery service with real openmls clients: waiting room, Welcome routing, commit
//! sequencing and races, validation, removal proposals, crashes, GroupInfo for rejoins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_proto::*;
use blindcall_relay::*;
use common::*;
use openmls::prelude::{Extensions, MlsMessageBodyIn, MlsMessageIn, RatchetTreeIn};
use tls_codec::Deserialize as _;

const ROOM: &[u8] = b"room-1";

/// Take the connection's inbox and return the epoch of the one CommitAccepted in it.
fn accepted(net: &mut Net, who: ConnId) -> u64 {
    let bodies = net.take(who);
    let acks: Vec<u64> = bodies
        .iter()
        .filter_map(|b| match b {
            Body::CommitAccepted(a) => Some(a.epoch),
            _ => None,
        })
        .collect();
    match acks.as_slice() {
        [e] => *e,
        _ => panic!("expected one CommitAccepted, got {bodies:?}"),
    }
}

fn rejected(body: &Body) -> (CommitRejectReason, Option<Vec<u8>>) {
    match body {
        Body::CommitRejected(r) => (r.reason, r.winner.as_ref().map(|w| w.as_slice().to_vec())),
        other => panic!("expected CommitRejected, got {other:?}"),
    }
}

/// Host plus two members, all at the same epoch.
fn three_members(net: &mut Net) -> (Client, Client, Client) {
    let mut a = room_with_host(net, ROOM, 1);
    let mut b = waiting_guest(net, ROOM, 2, "b");
    let mut c = waiting_guest(net, ROOM, 3, "c");
    admit_all(net, &mut a, &mut [], &mut [&mut b, &mut c]);
    assert_eq!(a.epoch(), 1);
    assert_eq!(a.authenticator(), b.authenticator());
    assert_eq!(a.authenticator(), c.authenticator());
    (a, b, c)
}

// covers: DS-BOOT-1, DS-WAIT-1, DS-WAIT-2, DS-WAIT-3, DS-WEL-1, DS-KP-1
#[test]
fn joiner_waits_until_a_member_commits_its_add_then_gets_the_welcome() {
    let mut net = Net::new();
    let mut host = room_with_host(&mut net, ROOM, 1);
    let mut g = waiting_guest(&mut net, ROOM, 2, "guest");
    // The member sees the joiner with its name and KeyPackage; the joiner has no group yet.
    let bodies = host.pump(&mut net);
    let [Body::WaitingEntryAdded(entry)] = bodies.as_slice() else {
        panic!("{bodies:?}")
    };
    assert_eq!(entry.conn_id, g.conn.0);
    assert_eq!(entry.display_name.as_slice(), b"guest");
    assert_eq!(entry.join_proof, None);
    assert!(g.pump(&mut net).is_empty(), "nothing until a member acts");
    assert_eq!(net.ds.counters().welcomes_routed, 0);

    let kp = entry.key_package.as_slice().to_vec();
    let commit = host.add(std::slice::from_ref(&kp));
    net.send(host.conn, Body::Commit(commit));
    assert_eq!(
        net.take(host.conn).first(),
        Some(&Body::CommitAccepted(CommitAccepted { epoch: 1 }))
    );
    host.merge_pending();
    let got = g.pump(&mut net);
    assert!(matches!(got.first(), Some(Body::Welcome(_))), "{got:?}");
    assert_eq!(g.epoch(), 1);
    assert_eq!(g.authenticator(), host.authenticator());
    assert_eq!(net.ds.counters().welcomes_routed, 1);
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    // The KeyPackage was single-use: the same Add again is refused.
    let _again = waiting_guest(&mut net, ROOM, 3, "g3");
    host.pump(&mut net);
    let stale_kp = kp.clone();
    let kp_err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| host.add(&[stale_kp])));
    // openmls itself refuses to add a member already in the group; either way no second Welcome.
    if let Ok(commit) = kp_err {
        net.send(host.conn, Body::Commit(commit));
        let (reason, _) = rejected(&net.last(host.conn));
        assert_eq!(reason, CommitRejectReason::UNKNOWN_KEY_PACKAGE);
        host.clear_pending();
    }
    assert_eq!(net.ds.counters().welcomes_routed, 1);
}

// covers: DS-KP-2, DS-WAIT-2
#[test]
fn key_package_and_waiting_room_rules() {
    let mut net = Net::new();
    let mut host = room_with_host(&mut net, ROOM, 1);
    let g = Client::connect(&mut net, ROOM, Role::GUEST, 2, "g");
    // JoinRequest without a KeyPackage.
    net.send(g.conn, Body::JoinRequest);
    assert!(matches!(net.last(g.conn), Body::Error(e) if e.code == ErrorCode::NO_KEY_PACKAGE));
    // Garbage and non-KeyPackage MLS messages are refused.
    net.send(
        g.conn,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(vec![0, 1, 0, 5, 1, 2, 3]),
            join_proof: None,
        }),
    );
    assert!(matches!(net.last(g.conn), Body::Error(e) if e.code == ErrorCode::INVALID_KEY_PACKAGE));
    net.send(
        g.conn,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(host.group_info()),
            join_proof: None,
        }),
    );
    assert!(matches!(net.last(g.conn), Body::Error(e) if e.code == ErrorCode::INVALID_KEY_PACKAGE));
    // A KeyPackage another connection already published is refused.
    let kp = g.key_package();
    net.send(
        g.conn,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(kp.clone()),
            join_proof: None,
        }),
    );
    assert!(matches!(net.last(g.conn), Body::KeyPackageAccepted(_)));
    let other = Client::connect(&mut net, ROOM, Role::GUEST, 3, "o");
    net.send(
        other.conn,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(kp),
            join_proof: None,
        }),
    );
    assert!(
        matches!(net.last(other.conn), Body::Error(e) if e.code == ErrorCode::INVALID_KEY_PACKAGE)
    );
    // An Add of a KeyPackage that is not in the waiting room is refused.
    let outsider = Client::connect(&mut net, ROOM, Role::GUEST, 4, "out");
    let commit = host.add(&[outsider.key_package()]);
    net.send(host.conn, Body::Commit(commit));
    assert_eq!(
        rejected(&net.last(host.conn)).0,
        CommitRejectReason::UNKNOWN_KEY_PACKAGE
    );
    host.clear_pending();
    assert_eq!(net.ds.room_epoch(ROOM), Some(0));
}

// covers: DS-SEQ-1, DS-SEQ-2, DS-SEQ-3, DS-VAL-1
#[test]
fn commit_race_one_winner_broadcast_loser_gets_it_and_everyone_converges() {
    let mut net = Net::new();
    let (mut a, mut b, mut c) = three_members(&mut net);
    let ca = a.self_update();
    let cb = b.self_update();
    net.send(a.conn, Body::Commit(ca.clone()));
    net.send(b.conn, Body::Commit(cb));
    assert_eq!(
        net.take(a.conn),
        vec![Body::CommitAccepted(CommitAccepted { epoch: 2 })]
    );
    a.merge_pending();
    // B got A's commit broadcast first, then the rejection naming A's commit as winner.
    let bodies = net.take(b.conn);
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let Body::CommitBroadcast(bc) = &bodies[0] else {
        panic!("{bodies:?}")
    };
    assert_eq!(bc.epoch, 1);
    assert_eq!(bc.commit, ca.commit);
    let (reason, winner) = rejected(&bodies[1]);
    assert_eq!(reason, CommitRejectReason::EPOCH_TAKEN);
    assert_eq!(winner.as_deref(), Some(ca.commit.as_slice()));
    // Exactly one commit was broadcast for epoch 1.
    let c_bodies = c.pump(&mut net);
    assert_eq!(
        c_bodies
            .iter()
            .filter(|b| matches!(b, Body::CommitBroadcast(_)))
            .count(),
        1
    );
    // The loser discards its own commit and applies the winner.
    b.clear_pending();
    b.process(&winner.unwrap());
    assert_eq!(a.epoch(), 2);
    assert_eq!(b.epoch(), 2);
    assert_eq!(c.epoch(), 2);
    assert_eq!(a.authenticator(), b.authenticator());
    assert_eq!(a.authenticator(), c.authenticator());
    assert_eq!(net.ds.counters().commits_accepted, 2);
    assert_eq!(
        net.ds
            .counters()
            .commits_rejected(CommitRejectReason::EPOCH_TAKEN),
        1
    );
    // The group goes on: the loser commits at the new epoch.
    let cb2 = b.self_update();
    net.send(b.conn, Body::Commit(cb2));
    accepted(&mut net, b.conn);
}

// covers: DS-VAL-1, DS-VAL-2, DS-VAL-3, DS-VAL-4, DS-ERR-1
#[test]
fn invalid_commits_are_refused_with_a_reason_and_change_nothing() {
    let mut net = Net::new();
    let (mut a, mut b, mut c) = three_members(&mut net);
    let good = a.self_update();
    let send = |net: &mut Net, who: ConnId, commit: Commit| {
        net.send(who, Body::Commit(commit));
        rejected(&net.last(who)).0
    };
    // Garbage bytes.
    let mut bad = good.clone();
    bad.commit = VLBytes::new(vec![0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(send(&mut net, a.conn, bad), CommitRejectReason::MALFORMED);
    // A GroupInfo where the commit belongs.
    let mut bad = good.clone();
    bad.commit = VLBytes::new(a.group_info());
    assert_eq!(
        send(&mut net, a.conn, bad),
        CommitRejectReason::NOT_A_COMMIT
    );
    // Claimed epoch differs from the MLS message's.
    let mut bad = good.clone();
    bad.epoch = 7;
    assert_eq!(
        send(&mut net, a.conn, bad),
        CommitRejectReason::EPOCH_MISMATCH
    );
    // Another member's commit sent on my connection.
    assert_eq!(
        send(&mut net, b.conn, good.clone()),
        CommitRejectReason::SENDER_MISMATCH
    );
    // A tampered signature byte (last byte of the PublicMessage's membership tag).
    let mut raw = good.commit.as_slice().to_vec();
    let n = raw.len();
    // PublicMessage ends: signature<V> (1+64), confirmation_tag (1+32), membership_tag (1+32).
    // The relay cannot check the membership tag (no epoch secret); the signature it can.
    raw[n - 66 - 20] ^= 0x55;
    let mut bad = good.clone();
    bad.commit = VLBytes::new(raw);
    assert!(matches!(
        send(&mut net, a.conn, bad),
        CommitRejectReason::INVALID | CommitRejectReason::MALFORMED
    ));
    // No GroupInfo, or the old epoch's GroupInfo.
    let mut bad = good.clone();
    bad.group_info = None;
    assert_eq!(
        send(&mut net, a.conn, bad),
        CommitRejectReason::BAD_GROUP_INFO
    );
    let mut bad = good.clone();
    bad.group_info = Some(VLBytes::new(c.group_info()));
    assert_eq!(
        send(&mut net, a.conn, bad),
        CommitRejectReason::BAD_GROUP_INFO
    );
    // A Welcome without any Add.
    let mut bad = good.clone();
    bad.welcome = Some(VLBytes::new(vec![0, 1, 0, 3]));
    assert_eq!(
        send(&mut net, a.conn, bad),
        CommitRejectReason::WELCOME_MISMATCH
    );
    // A commit of another group (same epoch) is for the wrong group.
    let mut other = room_with_host(&mut net, b"room-2", 9);
    let mut og = waiting_guest(&mut net, b"room-2", 8, "og");
    admit_all(&mut net, &mut other, &mut [], &mut [&mut og]);
    let foreign = other.self_update();
    assert_eq!(
        send(&mut net, a.conn, foreign),
        CommitRejectReason::WRONG_GROUP
    );
    other.clear_pending();
    // Nothing changed: the epoch is the same and the original commit still wins.
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    assert_eq!(net.ds.counters().commits_accepted, 2);
    net.send(a.conn, Body::Commit(good));
    accepted(&mut net, a.conn);
    a.merge_pending();
    b.pump(&mut net);
    c.pump(&mut net);
    assert_eq!(a.authenticator(), b.authenticator());
    assert_eq!(a.authenticator(), c.authenticator());
    // A commit from the future: A advances locally without the DS, then commits again.
    let _local = a.self_update();
    a.merge_pending();
    let future = a.self_update();
    assert_eq!(
        send(&mut net, a.conn, future),
        CommitRejectReason::FUTURE_EPOCH
    );
    assert!(
        net.ds
            .counters()
            .commits_rejected(CommitRejectReason::BAD_GROUP_INFO)
            == 2
    );
}

// covers: DS-RM-1, DS-RM-2, DS-RM-3, DS-EXT-1
#[test]
fn disconnect_yields_external_remove_proposal_that_a_member_commits() {
    let mut net = Net::new();
    let (mut a, mut b, c) = three_members(&mut net);
    let c_leaf = 2u32;
    net.close(c.conn);
    // Both remaining members get the relay's Remove proposal for C's leaf.
    let a_bodies = a.pump(&mut net);
    assert!(
        matches!(a_bodies.as_slice(), [Body::RelayProposal(p)] if p.removed_leaf == c_leaf && p.epoch == 1),
        "{a_bodies:?}"
    );
    assert_eq!(net.ds.counters().remove_proposals, 1);
    // B commits something else first, without the proposal: the relay re-proposes at epoch 2.
    let cb = b.self_update();
    net.send(b.conn, Body::Commit(cb));
    let b_bodies = net.take(b.conn);
    assert!(b_bodies.contains(&Body::CommitAccepted(CommitAccepted { epoch: 2 })));
    b.merge_pending();
    assert_eq!(net.ds.counters().remove_proposals, 2);
    // B applies the re-issued proposal (the epoch-1 one is stale for it now).
    for body in &b_bodies {
        if let Body::RelayProposal(p) = body
            && p.epoch == 2
        {
            b.process(p.proposal.as_slice());
        }
    }
    let a_bodies = a.pump(&mut net);
    assert!(matches!(
        a_bodies.as_slice(),
        [Body::CommitBroadcast(_), Body::RelayProposal(p)] if p.epoch == 2
    ));
    // A commits the pending proposal (by reference); the DS validates it against its store.
    let commit = a.commit_pending();
    net.send(a.conn, Body::Commit(commit));
    accepted(&mut net, a.conn);
    a.merge_pending();
    b.pump(&mut net);
    assert_eq!(a.authenticator(), b.authenticator());
    let members: Vec<u32> = a
        .group
        .as_ref()
        .unwrap()
        .members()
        .map(|m| m.index.u32())
        .collect();
    assert_eq!(members, vec![0, 1]);
    // No further proposals once the leaf is gone.
    assert_eq!(net.ds.counters().remove_proposals, 2);
    assert!(
        net.events
            .iter()
            .any(|e| matches!(e, Event::MemberLeft { leaf, .. } if *leaf == c_leaf))
    );
}

// covers: DS-RM-4, DS-POL-1
#[test]
fn a_guest_may_not_remove_an_active_member_by_value() {
    let mut net = Net::new();
    let (mut a, mut b, _c) = three_members(&mut net);
    let commit = b.remove(&[0]);
    net.send(b.conn, Body::Commit(commit));
    assert_eq!(rejected(&net.last(b.conn)).0, CommitRejectReason::POLICY);
    b.clear_pending();
    // The host may.
    let commit = a.remove(&[1]);
    net.send(a.conn, Body::Commit(commit));
    accepted(&mut net, a.conn);
    // The removed member still hears the commit, then is told and cut off.
    assert!(matches!(
        net.take(b.conn).as_slice(),
        [Body::CommitBroadcast(_), Body::Refused(r)] if r.reason == RefusedReason::REMOVED_FROM_GROUP
    ));
    assert_eq!(
        net.closed.get(&b.conn),
        Some(&CloseReason::Refused(RefusedReason::REMOVED_FROM_GROUP))
    );
    assert!(net.events.iter().any(|e| matches!(
        e,
        Event::MemberRemoved { conn, leaf: 1, banned: true, .. } if *conn == b.conn
    )));
    assert_eq!(net.ds.counters().members_removed, 1);
    // The relay proposes nothing for a leaf the commit already removed.
    assert_eq!(net.ds.counters().remove_proposals, 0);
}

// covers: DS-CRASH-1, DS-SEQ-4
#[test]
fn a_client_crashing_mid_commit_never_sticks_the_epoch() {
    let mut net = Net::new();
    let (mut a, mut b, mut c) = three_members(&mut net);
    // C sends half of a commit frame and crashes.
    let cc = c.self_update();
    let frame = ControlMessage::new(Body::Commit(cc))
        .to_frame(u32::MAX)
        .unwrap();
    net.raw(c.conn, &frame[..frame.len() / 2]);
    net.close(c.conn);
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    // The others take the epoch at once, including the relay's Remove of C.
    a.pump(&mut net);
    b.pump(&mut net);
    let commit = a.commit_pending();
    net.send(a.conn, Body::Commit(commit));
    assert_eq!(accepted(&mut net, a.conn), 2);
    a.merge_pending();
    b.pump(&mut net);
    assert_eq!(a.authenticator(), b.authenticator());
    // B sends a whole commit and crashes right after: the commit stands, the room moves on.
    let cb = b.self_update();
    net.send(b.conn, Body::Commit(cb));
    net.close(b.conn);
    assert_eq!(net.ds.room_epoch(ROOM), Some(3));
    a.pump(&mut net);
    assert_eq!(a.epoch(), 3);
    let commit = a.commit_pending();
    net.send(a.conn, Body::Commit(commit));
    assert_eq!(accepted(&mut net, a.conn), 4);
    a.merge_pending();
    assert_eq!(a.group.as_ref().unwrap().members().count(), 1);
}

// covers: DS-GI-1, DS-GI-2
#[test]
fn group_info_is_served_to_members_only() {
    let mut net = Net::new();
    let (a, b, _c) = three_members(&mut net);
    net.send(a.conn, Body::GroupInfoRequest);
    let Body::GroupInfoResponse(r) = net.last(a.conn) else {
        panic!()
    };
    assert_eq!(r.epoch, 1);
    let MlsMessageBodyIn::GroupInfo(vgi) =
        MlsMessageIn::tls_deserialize_exact(r.group_info.as_slice())
            .unwrap()
            .extract()
    else {
        panic!()
    };
    assert_eq!(vgi.group_context().epoch().as_u64(), 1);
    RatchetTreeIn::tls_deserialize_exact(r.ratchet_tree.as_slice()).unwrap();
    // Neither a stranger, nor a former member back with its token, nor a host that is not a
    // member gets it: with no external commits it is of no use outside the group.
    let stranger = Client::connect(&mut net, ROOM, Role::GUEST, 50, "s");
    net.close(b.conn);
    let back = Client::connect(&mut net, ROOM, Role::GUEST, 2, "b");
    let host2 = Client::connect(&mut net, ROOM, Role::HOST, 51, "h2");
    for c in [stranger.conn, back.conn, host2.conn] {
        net.send(c, Body::GroupInfoRequest);
        assert!(matches!(net.last(c), Body::Error(e) if e.code == ErrorCode::UNEXPECTED_MESSAGE));
    }
}

// covers: DS-BOOT-2
#[test]
fn group_bootstrap_requires_host_single_member_and_relay_as_external_sender() {
    let mut net = Net::new();
    let mut guest = Client::connect(&mut net, ROOM, Role::GUEST, 2, "g");
    let relay = relay_from_ack(guest.ack.as_ref().unwrap());
    guest.create_group(&relay);
    net.send(
        guest.conn,
        Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(guest.group_info()),
        }),
    );
    assert!(matches!(net.last(guest.conn), Body::Error(e) if e.code == ErrorCode::NOT_HOST));
    let mut host = Client::connect(&mut net, ROOM, Role::HOST, 1, "h");
    host.create_group_with(Extensions::empty());
    net.send(
        host.conn,
        Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(host.group_info()),
        }),
    );
    assert!(
        matches!(net.last(host.conn), Body::Error(e) if e.code == ErrorCode::INVALID_GROUP_INFO)
    );
    net.send(
        host.conn,
        Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(vec![1, 2, 3]),
        }),
    );
    assert!(
        matches!(net.last(host.conn), Body::Error(e) if e.code == ErrorCode::INVALID_GROUP_INFO)
    );
    host.create_group(&relay);
    net.send(
        host.conn,
        Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(host.group_info()),
        }),
    );
    assert_eq!(
        net.last(host.conn),
        Body::GroupCreated(GroupCreated { epoch: 0 })
    );
    assert_eq!(net.ds.counters().groups_created, 1);
    let mut h2 = Client::connect(&mut net, ROOM, Role::HOST, 3, "h2");
    h2.create_group(&relay);
    net.send(
        h2.conn,
        Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(h2.group_info()),
        }),
    );
    assert!(matches!(net.last(h2.conn), Body::Error(e) if e.code == ErrorCode::GROUP_EXISTS));
}

// covers: DS-ROOM-1, DS-ERR-1
#[test]
fn room_state_lives_while_a_connection_is_admitted() {
    let mut net = Net::new();
    let (a, b, c) = three_members(&mut net);
    let other = room_with_host(&mut net, b"room-2", 9);
    assert_eq!(net.ds.room_count(), 2);
    net.close(a.conn);
    net.close(b.conn);
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    net.close(c.conn);
    assert_eq!(net.ds.room_epoch(ROOM), None);
    assert_eq!(net.ds.room_count(), 1);
    assert!(
        net.events
            .iter()
            .any(|e| matches!(e, Event::RoomClosed { room } if room.0 == ROOM))
    );
    // The other room is untouched.
    assert_eq!(net.ds.room_epoch(b"room-2"), Some(0));
    // A new host starts a fresh group in the same room id.
    let _h = room_with_host(&mut net, ROOM, 1);
    assert_eq!(net.ds.room_epoch(ROOM), Some(0));
    let _ = other;
}

fn publish_and_join(net: &mut Net, c: &Client, proof: Option<Vec<u8>>) {
    net.send(
        c.conn,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(c.key_package()),
            join_proof: proof.map(VLBytes::new),
        }),
    );
    net.send(c.conn, Body::JoinRequest);
    net.take(c.conn);
}

// covers: CP-WAIT-1, CP-JOIN-1, DS-WAIT-1, DS-WAIT-4, DS-WAIT-5
#[test]
fn the_waiting_room_reaches_members_one_entry_at_a_time() {
    let mut net = Net::new();
    let mut host = room_with_host(&mut net, ROOM, 1);
    let g1 = Client::connect(&mut net, ROOM, Role::GUEST, 2, "g1");
    publish_and_join(&mut net, &g1, Some(vec![0xAA; 32]));
    let bodies = host.pump(&mut net);
    let [Body::WaitingEntryAdded(e1)] = bodies.as_slice() else {
        panic!("{bodies:?}")
    };
    assert_eq!(e1.conn_id, g1.conn.0);
    assert_eq!(
        e1.join_proof.as_ref().map(VLBytes::as_slice),
        Some(&[0xAA; 32][..])
    );
    let mut g2 = Client::connect(&mut net, ROOM, Role::GUEST, 3, "g2");
    publish_and_join(&mut net, &g2, None);
    let g3 = Client::connect(&mut net, ROOM, Role::GUEST, 4, "g3");
    publish_and_join(&mut net, &g3, None);
    // Each new joiner is one message; nobody gets the whole room again.
    let bodies = host.pump(&mut net);
    assert!(
        matches!(bodies.as_slice(), [Body::WaitingEntryAdded(a), Body::WaitingEntryAdded(b)]
            if a.conn_id == g2.conn.0 && b.conn_id == g3.conn.0),
        "{bodies:?}"
    );
    // A joiner that leaves is one removal.
    net.close(g1.conn);
    assert_eq!(
        host.pump(&mut net),
        vec![Body::WaitingEntryRemoved(WaitingEntryRemoved {
            conn_id: g1.conn.0
        })]
    );
    // The host adds g2 only: the host drops g2's entry, and g2, now a member, gets the entry
    // still waiting (g3) right after its Welcome.
    let entries = waiting_kps(&bodies);
    let commit = host.add(&[entries[0].1.clone()]);
    net.send(host.conn, Body::Commit(commit));
    let host_in = net.take(host.conn);
    host.merge_pending();
    let g2_in = g2.pump(&mut net);
    assert!(
        matches!(g2_in.as_slice(), [Body::Welcome(_), Body::WaitingEntryAdded(e)] if e.conn_id == g3.conn.0),
        "{g2_in:?}"
    );
    assert_eq!(
        host_in,
        vec![
            Body::CommitAccepted(CommitAccepted { epoch: 1 }),
            Body::WaitingEntryRemoved(WaitingEntryRemoved { conn_id: g2.conn.0 })
        ]
    );
}
