//! Removal and rejoin at the delivery service: no external commits, a removed member is cut
//! off, host removals ban the token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_proto::*;
use blindcall_relay::*;
use common::*;

const ROOM: &[u8] = b"room-rm";

fn three_members(net: &mut Net) -> (Client, Client, Client) {
    let mut a = room_with_host(net, ROOM, 1);
    let mut b = waiting_guest(net, ROOM, 2, "b");
    let mut c = waiting_guest(net, ROOM, 3, "c");
    admit_all(net, &mut a, &mut [], &mut [&mut b, &mut c]);
    (a, b, c)
}

fn accepted(net: &mut Net, who: ConnId) -> u64 {
    let bodies = net.take(who);
    match bodies.as_slice() {
        [Body::CommitAccepted(a), ..] => a.epoch,
        _ => panic!("expected CommitAccepted, got {bodies:?}"),
    }
}

// covers: DS-JOIN-1
#[test]
fn a_departed_member_cannot_rejoin_by_external_commit() {
    let mut net = Net::new();
    let (mut a, b, mut c) = three_members(&mut net);
    // B's connection ends; A commits the relay's Remove of B's leaf.
    net.close(b.conn);
    a.pump(&mut net);
    c.pump(&mut net);
    let commit = a.commit_pending();
    net.send(a.conn, Body::Commit(commit));
    assert_eq!(accepted(&mut net, a.conn), 2);
    a.merge_pending();
    c.pump(&mut net);
    // B comes back with its old token and a GroupInfo a colluding member handed it.
    let b2 = Client::connect(&mut net, ROOM, Role::GUEST, 2, "b");
    let (_g, ext) = b2.external_commit(&a);
    net.send(b2.conn, Body::Commit(ext));
    let reply = net.take(b2.conn);
    assert!(
        matches!(reply.as_slice(), [Body::CommitRejected(r)] if r.reason == CommitRejectReason::EXTERNAL_COMMIT),
        "the external commit was not refused: {reply:?}"
    );
    assert_eq!(net.ds.room_epoch(ROOM), Some(2));
    assert_eq!(
        net.ds
            .counters()
            .commits_rejected(CommitRejectReason::EXTERNAL_COMMIT),
        1
    );
    // A member's own connection cannot slip one in either (the sender is not its leaf).
    let (_g, ext) = c.external_commit(&a);
    net.send(c.conn, Body::Commit(ext));
    assert!(matches!(
        net.take(c.conn).as_slice(),
        [Body::CommitRejected(r)] if r.reason == CommitRejectReason::EXTERNAL_COMMIT
    ));
    // The way back is the waiting room: B waits, the host adds it (a fresh key store; the
    // attempt above left a group in the old one).
    let b2 = Client::new("b", b2.conn, b2.ack.clone().unwrap());
    net.send(
        b2.conn,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(b2.key_package()),
            join_proof: None,
        }),
    );
    net.send(b2.conn, Body::JoinRequest);
    let mut b2 = b2;
    admit_all(&mut net, &mut a, &mut [&mut c], &mut [&mut b2]);
    assert_eq!(b2.epoch(), 3);
}

// covers: DS-RM-5, DS-RM-6, ADM-BAN-2
#[test]
fn a_member_removed_by_the_host_cannot_come_back() {
    let mut net = Net::new();
    let (mut a, b, mut c) = three_members(&mut net);
    let commit = a.remove(&[1]);
    net.send(a.conn, Body::Commit(commit));
    assert_eq!(accepted(&mut net, a.conn), 2);
    a.merge_pending();
    c.pump(&mut net);
    // B's connection got the commit, then was told and closed.
    let bodies = net.take(b.conn);
    assert!(
        matches!(bodies.as_slice(), [Body::CommitBroadcast(_), Body::Refused(r)] if r.reason == RefusedReason::REMOVED_FROM_GROUP),
        "{bodies:?}"
    );
    assert_eq!(
        net.closed.get(&b.conn),
        Some(&CloseReason::Refused(RefusedReason::REMOVED_FROM_GROUP))
    );
    // The DS forgot it as a member without proposing its (already done) removal.
    assert_eq!(net.ds.counters().remove_proposals, 0);
    assert_eq!(net.ds.occupancy().members, 2);
    // Its token is banned in this room.
    let (_, body) = net.hello(ROOM, &mint(ROOM, Role::GUEST, T0 + 3600, 2), "b");
    assert_eq!(
        body,
        Body::Refused(Refused {
            reason: RefusedReason::REMOVED_BY_HOST
        })
    );
    // Another room is not affected.
    let (_, body) = net.hello(b"other", &mint(b"other", Role::GUEST, T0 + 3600, 2), "b");
    assert!(matches!(body, Body::HelloAck(_)));
}

mod over_tls {
    use super::*;
    use common::tls::*;
    use tokio::sync::mpsc;

    // covers: DS-RM-7, OPS-MEDIA-3
    #[test]
    fn a_removed_member_is_cut_off_the_forwarder_when_the_commit_is_sequenced() {
        // One thread: the driver's step (sequence, broadcast, close, tell the forwarder) runs
        // to its end before any writer or the test can run.
        run_current_thread(body());
    }

    async fn body() {
        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let (_cmd_tx, cmd_rx) = mpsc::channel(16);
        let relay = start_relay(move |s| {
            s.media = Some(MediaHook {
                events: ev_tx,
                commands: cmd_rx,
            })
        })
        .await;
        let mut room = room_over_tls(&relay, ROOM, 1, 2).await;
        let removed_conn = room[1].1.conn;
        let (host_tls, host) = &mut room[0];
        let commit = host.remove(&[1]);
        host_tls.send(Body::Commit(commit)).await;
        host_tls
            .recv_until("CommitAccepted for the removal", |b| {
                matches!(b, Body::CommitAccepted(_))
            })
            .await;
        // The driver told the forwarder in the same step that sequenced the commit: the event
        // is there before anyone could read the commit's answer.
        let mut told = Vec::new();
        while let Ok(e) = ev_rx.try_recv() {
            told.push(e);
        }
        assert!(
            told.iter()
                .any(|e| matches!(e, ForwarderEvent::Closed { conn } if *conn == removed_conn)),
            "the forwarder was not told when the commit was sequenced: {told:?}"
        );
        // The removed member got the commit, then its refusal, then a clean close.
        let (m_tls, _) = &mut room[1];
        let (got, ending) = m_tls.closed("the removed member's connection closed").await;
        assert!(
            matches!(got.as_slice(), [Body::CommitBroadcast(_), Body::Refused(r)] if r.reason == RefusedReason::REMOVED_FROM_GROUP),
            "{got:?}"
        );
        assert_eq!(ending, Ending::Clean);
        // The other member stays.
        let (g_tls, _) = &mut room[2];
        let got = g_tls.sync().await;
        assert!(
            matches!(got.as_slice(), [Body::CommitBroadcast(_)]),
            "{got:?}"
        );
        relay.handle.shutdown();
    }
}

// covers: DS-RM-2
#[test]
fn a_joiner_placed_in_a_departed_members_leaf_is_not_proposed_for_removal() {
    // A commit that removes a departed leaf and adds a joiner puts the joiner in the freed
    // leaf (the leftmost blank one). The relay must stop proposing the departed leaf's
    // removal then: its index now names the joiner.
    let mut net = Net::new();
    let (mut a, mut b, c) = three_members(&mut net);
    let c_leaf = c.leaf();
    net.goodbye(c.conn);
    let mut d = waiting_guest(&mut net, ROOM, 4, "d");
    // A holds the relay's Remove of C; its Add commit includes it.
    let bodies = net.take(a.conn);
    a.apply(&bodies);
    b.pump(&mut net);
    let kps: Vec<Vec<u8>> = waiting_kps(&bodies).into_iter().map(|(_, k)| k).collect();
    let commit = a.add(&kps);
    net.send(a.conn, Body::Commit(commit));
    let got_a = net.take(a.conn);
    assert!(matches!(got_a.first(), Some(Body::CommitAccepted(x)) if x.epoch == 2));
    a.merge_pending();
    let got_b = net.take(b.conn);
    b.apply(&got_b);
    let got_d = net.take(d.conn);
    d.apply(&got_d);
    assert_eq!(
        d.leaf(),
        c_leaf,
        "the joiner took the departed member's leaf"
    );
    assert_eq!(d.epoch(), 2);
    // Nobody is asked to remove the joiner.
    for got in [&got_a, &got_b, &got_d] {
        assert!(
            !got.iter().any(|x| matches!(x, Body::RelayProposal(_))),
            "a removal was proposed after the commit: {got:?}"
        );
    }
    assert_eq!(net.ds.counters().remove_proposals, 1);
}
