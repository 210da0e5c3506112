//! What members send one another through the relay: their own proposals (leaving) and opaque
//! peer messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use blindcall_proto::*;
use blindcall_relay::*;
use common::*;
use openmls::prelude::{LeafNodeIndex, LeafNodeParameters};

const ROOM: &[u8] = b"room-members";

fn three_members(net: &mut Net) -> (Client, Client, Client) {
    let mut a = room_with_host(net, ROOM, 1);
    let mut b = waiting_guest(net, ROOM, 2, "b");
    let mut c = waiting_guest(net, ROOM, 3, "c");
    admit_all(net, &mut a, &mut [], &mut [&mut b, &mut c]);
    (a, b, c)
}

/// B's self-Remove proposal (openmls `leave_group`) as a `Propose`.
fn leave(b: &mut Client) -> Propose {
    let epoch = b.epoch();
    let (provider, signer) = (&b.provider, &b.signer);
    let msg = b
        .group
        .as_mut()
        .unwrap()
        .leave_group(provider, signer)
        .unwrap();
    Propose {
        epoch,
        proposal: VLBytes::new(out_bytes(msg)),
    }
}

fn error_code(body: &Body) -> ErrorCode {
    match body {
        Body::Error(e) => e.code,
        other => panic!("expected an Error, got {other:?}"),
    }
}

// covers: DS-PROP-1, CP-PROP-1, DS-RM-6
#[test]
fn a_member_leaves_by_proposing_its_own_removal() {
    let mut net = Net::new();
    let (mut a, mut b, mut c) = three_members(&mut net);
    let p = leave(&mut b);
    net.send(b.conn, Body::Propose(p.clone()));
    // The others get it unchanged; the proposer gets nothing back.
    assert!(net.take(b.conn).is_empty());
    for who in [a.conn, c.conn] {
        assert_eq!(
            net.take(who),
            vec![Body::ProposalBroadcast(ProposalBroadcast {
                epoch: 1,
                proposal: p.proposal.clone(),
            })]
        );
    }
    assert_eq!(net.ds.counters().member_proposals, 1);
    // A member commits it by reference: the DS queued it, so the commit validates.
    a.process(p.proposal.as_slice());
    c.process(p.proposal.as_slice());
    let commit = a.commit_pending();
    net.send(a.conn, Body::Commit(commit));
    assert!(matches!(
        net.take(a.conn).first(),
        Some(Body::CommitAccepted(e)) if e.epoch == 2
    ));
    a.merge_pending();
    c.pump(&mut net);
    assert_eq!(a.group().members().count(), 2);
    // B hears the commit, then is told it is out and closed — but not banned: it may come
    // back as a new joiner through the waiting room.
    assert!(matches!(
        net.take(b.conn).as_slice(),
        [Body::CommitBroadcast(_), Body::Refused(r)] if r.reason == RefusedReason::REMOVED_FROM_GROUP
    ));
    assert!(net.events.iter().any(|e| matches!(
        e,
        Event::MemberRemoved { conn, banned: false, .. } if *conn == b.conn
    )));
    assert_eq!(net.ds.counters().remove_proposals, 0);
    let (_, body) = net.hello(ROOM, &mint(ROOM, Role::GUEST, T0 + 3600, 2), "b");
    assert!(matches!(body, Body::HelloAck(_)), "{body:?}");
}

// covers: DS-PROP-1, DS-PROP-2
#[test]
fn a_member_may_propose_nothing_but_its_own_removal_for_the_current_epoch() {
    let mut net = Net::new();
    let (mut a, mut b, c) = three_members(&mut net);
    // The removal of another member.
    let (provider, signer) = (&b.provider, &b.signer);
    let (msg, _) = b
        .group
        .as_mut()
        .unwrap()
        .propose_remove_member(provider, signer, LeafNodeIndex::new(0))
        .unwrap();
    let other = VLBytes::new(out_bytes(msg));
    // An update of its own leaf.
    let (provider, signer) = (&b.provider, &b.signer);
    let (msg, _) = b
        .group
        .as_mut()
        .unwrap()
        .propose_self_update(provider, signer, LeafNodeParameters::default())
        .unwrap();
    let update = VLBytes::new(out_bytes(msg));
    let own = leave(&mut b).proposal;
    let cases = [
        (1, other),
        (1, update),
        (1, VLBytes::new(vec![1, 2, 3])),
        (1, VLBytes::new(a.group_info())),
        (0, own.clone()),
        (2, own.clone()),
    ];
    for (epoch, proposal) in cases {
        net.send(b.conn, Body::Propose(Propose { epoch, proposal }));
        assert_eq!(
            error_code(&net.last(b.conn)),
            ErrorCode::INVALID_PROPOSAL,
            "epoch {epoch}"
        );
    }
    // Nothing reached the others and nothing was queued: A's commit of its (empty) queue is
    // a plain commit that leaves B in.
    assert!(net.take(a.conn).is_empty());
    assert!(net.take(c.conn).is_empty());
    assert_eq!(
        net.ds.counters().errors(ErrorCode::INVALID_PROPOSAL),
        6,
        "each refusal counted"
    );
    // The genuine one goes through once; the same leaf twice in an epoch is refused.
    net.send(
        b.conn,
        Body::Propose(Propose {
            epoch: 1,
            proposal: own.clone(),
        }),
    );
    assert!(net.take(b.conn).is_empty());
    net.send(
        b.conn,
        Body::Propose(Propose {
            epoch: 1,
            proposal: own,
        }),
    );
    assert_eq!(error_code(&net.last(b.conn)), ErrorCode::INVALID_PROPOSAL);
    // A non-member may not propose at all.
    let lobby = Client::connect(&mut net, ROOM, Role::GUEST, 9, "l");
    net.send(
        lobby.conn,
        Body::Propose(Propose {
            epoch: 1,
            proposal: VLBytes::new(vec![0]),
        }),
    );
    assert_eq!(error_code(&net.last(lobby.conn)), ErrorCode::NOT_MEMBER);
    a.pump(&mut net);
}

// covers: DS-PROP-3, DS-RM-1
#[test]
fn a_leaver_that_disconnects_gets_no_second_remove_in_that_epoch() {
    let mut net = Net::new();
    let (mut a, mut b, mut c) = three_members(&mut net);
    let p = leave(&mut b);
    net.send(b.conn, Body::Propose(p));
    net.close(b.conn);
    // The relay does not propose B's removal again in epoch 1.
    assert_eq!(net.ds.counters().remove_proposals, 0);
    let a_in = net.take(a.conn);
    assert!(
        matches!(a_in.as_slice(), [Body::ProposalBroadcast(_)]),
        "{a_in:?}"
    );
    // C commits something else without it: in epoch 2 the relay proposes B's removal.
    net.take(c.conn);
    let commit = c.self_update();
    net.send(c.conn, Body::Commit(commit));
    assert!(matches!(
        net.take(c.conn).as_slice(),
        [Body::CommitAccepted(_), Body::RelayProposal(p)] if p.epoch == 2 && p.removed_leaf == 1
    ));
    c.merge_pending();
    assert_eq!(net.ds.counters().remove_proposals, 1);
    // A moves on and commits the relay's one.
    let bodies = net.take(a.conn);
    a.apply(&bodies);
    let commit = a.commit_pending();
    net.send(a.conn, Body::Commit(commit));
    assert!(matches!(
        net.take(a.conn).first(),
        Some(Body::CommitAccepted(e)) if e.epoch == 3
    ));
}

// covers: DS-PEER-1, CP-PEER-1
#[test]
fn peer_messages_reach_every_other_member_with_the_relays_claim() {
    let mut net = Net::new();
    let (a, b, c) = three_members(&mut net);
    net.send(
        b.conn,
        Body::PeerBroadcast(PeerBroadcast {
            payload: VLBytes::new(b"signed confirmation".to_vec()),
        }),
    );
    assert!(net.take(b.conn).is_empty(), "not echoed");
    for who in [a.conn, c.conn] {
        assert_eq!(
            net.take(who),
            vec![Body::PeerMessage(PeerMessage {
                from_conn: b.conn.0,
                from_leaf: 1,
                payload: VLBytes::new(b"signed confirmation".to_vec()),
            })]
        );
    }
    assert_eq!(net.ds.counters().peer_messages, 1);
    // Not from a joiner in the waiting room.
    let w = waiting_guest(&mut net, ROOM, 4, "w");
    net.take(a.conn);
    net.send(
        w.conn,
        Body::PeerBroadcast(PeerBroadcast {
            payload: VLBytes::new(vec![1]),
        }),
    );
    assert_eq!(error_code(&net.last(w.conn)), ErrorCode::NOT_MEMBER);
    assert!(net.take(a.conn).is_empty());
}

// covers: DS-PEER-2, DS-RATE-1
#[test]
fn peer_messages_have_their_own_budget_and_size_cap_and_never_cost_the_connection() {
    let mut cfg = config();
    cfg.peer_rate_burst = 3;
    cfg.peer_rate_per_second = 2;
    cfg.max_peer_payload = 100;
    cfg.rate_burst = 4;
    let mut net = Net::with(cfg);
    let mut a = room_with_host(&mut net, ROOM, 1);
    let mut b = waiting_guest(&mut net, ROOM, 2, "b");
    admit_all(&mut net, &mut a, &mut [], &mut [&mut b]);
    let peer = |n: u8| {
        Body::PeerBroadcast(PeerBroadcast {
            payload: VLBytes::new(vec![n; 100]),
        })
    };
    for n in 0..6 {
        net.send(b.conn, peer(n));
    }
    // The burst went through, the rest was dropped and counted, with no Error.
    let got = net.take(a.conn);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(net.take(b.conn).is_empty());
    assert_eq!(net.ds.counters().peer_messages_rate_limited, 3);
    // Oversized: dropped and counted, the connection stays.
    net.advance(Duration::from_secs(1));
    net.send(
        b.conn,
        Body::PeerBroadcast(PeerBroadcast {
            payload: VLBytes::new(vec![0; 101]),
        }),
    );
    assert_eq!(net.ds.counters().peer_messages_too_large, 1);
    assert!(net.take(a.conn).is_empty());
    // The other budget is untouched and the peer budget refills with time.
    net.send(b.conn, Body::Ping(Ping { nonce: 7 }));
    assert_eq!(net.last(b.conn), Body::Pong(Pong { nonce: 7 }));
    net.send(b.conn, peer(9));
    assert_eq!(net.take(a.conn).len(), 1);
    assert!(!net.closed.contains_key(&b.conn));
    assert_eq!(net.ds.counters().errors(ErrorCode::RATE_LIMITED), 0);
}

// covers: DS-RM-8, DS-RM-1
#[test]
fn the_relay_may_propose_a_hosts_removal_and_any_member_commits_it() {
    let mut net = Net::new();
    let (a, mut b, mut c) = three_members(&mut net);
    // The host's connection ends: the relay proposes the removal of the host's leaf too.
    net.close(a.conn);
    let b_in = b.pump(&mut net);
    assert!(
        matches!(b_in.as_slice(), [Body::RelayProposal(p)] if p.removed_leaf == 0 && p.epoch == 1),
        "{b_in:?}"
    );
    c.pump(&mut net);
    // A guest commits it (relay proposals are accepted from anyone by the members' policy).
    let commit = b.commit_pending();
    net.send(b.conn, Body::Commit(commit));
    assert!(matches!(
        net.take(b.conn).first(),
        Some(Body::CommitAccepted(e)) if e.epoch == 2
    ));
    b.merge_pending();
    c.pump(&mut net);
    assert_eq!(b.authenticator(), c.authenticator());
    assert!(b.group().members().all(|m| m.index.u32() != 0));
}
