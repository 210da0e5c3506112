//! Room homes on a real `nats-server -js` (spec/cluster.md, CL-HOME-6): two in-process nodes
//! with heartbeats and homes; a client on the node that is not the room's home is redirected
//! to the home, and when the home crashes the room is taken over by the other node, where the
//! host resumes at the same epoch and commits.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

mod common;
mod nats;

use std::time::Duration;

use blindcall_proto::{Body, CreateGroup, Role, VLBytes};
use blindcall_relay::keyfile::{new_key_file_text, parse_relay_identities};
use blindcall_relay::store::{JetStreamConfig, RoomStore};
use blindcall_relay::{ConnId, HomesConfig};
use common::relay_from_ack;
use common::tls::*;
use nats::NatsServer;

const ROOM: &[u8] = b"room-failover";

async fn node(server: &NatsServer, keys: &str, id: &str) -> TestRelay {
    let mut cfg = JetStreamConfig::new(server.url());
    cfg.op_timeout = Duration::from_secs(5);
    let store = within("the room store", RoomStore::jetstream(cfg))
        .await
        .unwrap();
    let identities = parse_relay_identities(keys).unwrap();
    let id = id.to_owned();
    start_relay(move |cfg| {
        cfg.store = Some(store);
        cfg.ds.relay_identities = identities;
        cfg.ds.resume_grace = Duration::from_secs(30);
        let mut homes = HomesConfig::new(id, "127.0.0.1:0");
        homes.lease = Duration::from_millis(1500);
        homes.heartbeat = Duration::from_millis(300);
        cfg.ds.homes = Some(homes);
    })
    .await
}

// covers: CL-HOME-6, CL-HOME-2, CL-HOME-4, CL-NODE-7
#[test]
fn a_client_is_redirected_to_the_home_and_the_room_survives_the_homes_crash() {
    let Some(server) = NatsServer::start_or_skip("room_homes_failover") else {
        return;
    };
    run(failover_body(server));
}

async fn failover_body(server: NatsServer) {
    let keys = new_key_file_text().unwrap();
    let a = node(&server, &keys, "node-a").await;
    let b = node(&server, &keys, "node-b").await;

    // The host reaches A first: A claims the room's home, creates the group, commits once.
    let (mut h, mut host) = a.member(ROOM, Role::HOST, 1, "host").await;
    let relay = relay_from_ack(host.ack.as_ref().unwrap());
    host.create_group(&relay);
    h.send(Body::CreateGroup(CreateGroup {
        group_info: VLBytes::new(host.group_info()),
    }))
    .await;
    let got = h.recv("GroupCreated from the home").await;
    assert!(matches!(got, Body::GroupCreated(_)), "{got:?}");
    h.send(Body::Commit(host.self_update())).await;
    let got = h
        .recv_until("the commit's answer", |b| {
            matches!(b, Body::CommitAccepted(_) | Body::CommitRejected(_))
        })
        .await;
    assert!(
        matches!(got.last(), Some(Body::CommitAccepted(_))),
        "{got:?}"
    );
    host.merge_pending();
    assert_eq!(host.epoch(), 1);

    // A guest that reaches B is sent to A, the home, and admitted there.
    let mut g = b.client().await;
    let got = g.hello(ROOM, &token(ROOM, Role::GUEST, 2), "guest").await;
    let Body::Redirect(r) = got else {
        panic!("expected a Redirect from node B: {got:?}")
    };
    assert_eq!(r.address(), Some(a.addr.to_string().as_str()));
    let (_, ending) = g.closed("node B closing the redirected connection").await;
    let _ = ending;
    let (_g_a, _) = a.admitted(ROOM, Role::GUEST, 2, "guest").await;

    // A crashes: its heartbeat stays in the store until its lease runs out on B.
    a.handle.crash();
    let _ = h.closed("the host's connection to the crashed node").await;

    // The host reaches B. While A's last heartbeat is fresh, B still sends it to A, which
    // does not answer: the host goes back to B after a short backoff, as a client does. Then B
    // parks it until A's lease has run out, claims the next term, loads the room and admits it
    // with the room's real epoch.
    let (mut h_b, ack) = within("the host admitted by node B after the takeover", async {
        loop {
            let mut c = b.client().await;
            match c.hello(ROOM, &token(ROOM, Role::HOST, 1), "host").await {
                Body::HelloAck(ack) => return (c, ack),
                Body::Redirect(r) => {
                    assert_eq!(r.address(), Some(a.addr.to_string().as_str()));
                    assert!(
                        tokio::net::TcpStream::connect(a.addr).await.is_err(),
                        "the crashed node still accepts connections"
                    );
                    // The client's retry backoff, not a synchronization.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("unexpected answer from node B: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(ack.room.epoch, Some(1));
    host.conn = ConnId(ack.conn_id);
    host.ack = Some(ack);
    h_b.send(Body::Resume(host.resume(ROOM))).await;
    let got = h_b
        .recv_until("the host's resume on node B", |b| {
            matches!(b, Body::ResumeAccepted(_) | Body::ResumeRefused(_))
        })
        .await;
    assert!(
        matches!(got.last(), Some(Body::ResumeAccepted(r)) if r.epoch == 1),
        "{got:?}"
    );

    // It commits on its new home.
    h_b.send(Body::Commit(host.self_update())).await;
    let got = h_b
        .recv_until("the commit's answer from node B", |b| {
            matches!(b, Body::CommitAccepted(_) | Body::CommitRejected(_))
        })
        .await;
    assert!(
        matches!(got.last(), Some(Body::CommitAccepted(_))),
        "{got:?}"
    );
    host.merge_pending();
    assert_eq!(host.epoch(), 2);
    let m = b.scrape().await;
    assert!(metric(&m, "blindcall_relay_cluster_redirects_total") >= 1.0);
    assert_eq!(
        metric(&m, "blindcall_relay_cluster_home_claims_won_total"),
        1.0
    );
    assert_eq!(
        metric(&m, "blindcall_relay_cluster_rooms_loaded_total"),
        1.0
    );
    b.handle.shutdown();
    within("node B stopping", b.handle.wait()).await.unwrap();
}

async fn draining_node(server: &NatsServer, keys: &str, id: &str) -> TestRelay {
    let mut cfg = JetStreamConfig::new(server.url());
    cfg.op_timeout = Duration::from_secs(5);
    let store = within("the room store", RoomStore::jetstream(cfg))
        .await
        .unwrap();
    let identities = parse_relay_identities(keys).unwrap();
    let id = id.to_owned();
    start_relay(move |cfg| {
        cfg.store = Some(store);
        cfg.ds.relay_identities = identities;
        cfg.ds.resume_grace = Duration::from_secs(30);
        let mut homes = HomesConfig::new(id, "127.0.0.1:0");
        // A lease far beyond every wait of this test: a handoff must not wait for it.
        homes.lease = Duration::from_secs(120);
        homes.heartbeat = Duration::from_millis(200);
        homes.drain = true;
        cfg.ds.homes = Some(homes);
    })
    .await
}

// covers: CL-DRAIN-1, CL-DRAIN-2, CL-NODE-7
#[test]
fn a_draining_node_hands_its_room_over_and_the_members_resume_on_the_successor() {
    let Some(server) = NatsServer::start_or_skip("room_homes_drain") else {
        return;
    };
    run(drain_body(server));
}

async fn drain_body(server: NatsServer) {
    let keys = new_key_file_text().unwrap();
    let a = draining_node(&server, &keys, "node-a").await;
    let b = draining_node(&server, &keys, "node-b").await;
    let (mut h, mut host) = a.member(ROOM, Role::HOST, 1, "host").await;
    let relay = relay_from_ack(host.ack.as_ref().unwrap());
    host.create_group(&relay);
    h.send(Body::CreateGroup(CreateGroup {
        group_info: VLBytes::new(host.group_info()),
    }))
    .await;
    let got = h.recv("GroupCreated from the home").await;
    assert!(matches!(got, Body::GroupCreated(_)), "{got:?}");

    // A knows B is alive (its heartbeats reach A) before it drains.
    within("node A receiving node B's heartbeats", async {
        loop {
            if metric(
                &a.scrape().await,
                "blindcall_relay_cluster_heartbeats_received_total",
            ) >= 2.0
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    a.handle.shutdown();
    let (got, _) = h.closed("node A redirecting the host").await;
    let Some(Body::Redirect(r)) = got.last() else {
        panic!("expected a Redirect from the draining node: {got:?}")
    };
    assert_eq!(r.address(), Some(b.addr.to_string().as_str()));
    // A exits by itself once its connections are gone.
    within("node A exiting after the drain", a.handle.wait())
        .await
        .unwrap();

    // B is the home already: it loads the room and admits the host without a lease wait.
    let (mut h_b, ack) = b.admitted(ROOM, Role::HOST, 1, "host").await;
    assert_eq!(ack.room.epoch, Some(0));
    host.conn = ConnId(ack.conn_id);
    host.ack = Some(ack);
    h_b.send(Body::Resume(host.resume(ROOM))).await;
    let got = h_b
        .recv_until("the host's resume on node B", |b| {
            matches!(b, Body::ResumeAccepted(_) | Body::ResumeRefused(_))
        })
        .await;
    assert!(
        matches!(got.last(), Some(Body::ResumeAccepted(r)) if r.epoch == 0),
        "{got:?}"
    );
    h_b.send(Body::Commit(host.self_update())).await;
    let got = h_b
        .recv_until("the commit's answer from node B", |b| {
            matches!(b, Body::CommitAccepted(_) | Body::CommitRejected(_))
        })
        .await;
    assert!(
        matches!(got.last(), Some(Body::CommitAccepted(_))),
        "{got:?}"
    );
    let m = b.scrape().await;
    assert_eq!(
        metric(&m, "blindcall_relay_cluster_rooms_loaded_total"),
        1.0
    );
    assert_eq!(metric(&m, "blindcall_relay_cluster_homes"), 1.0);
    // Store latency per operation: the room's load read its genesis and its winners.
    assert!(
        metric(
            &m,
            "blindcall_relay_store_op_seconds_count{op=\"genesis_read\"}"
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "blindcall_relay_store_op_seconds_count{op=\"read_winner\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &m,
            "blindcall_relay_store_op_seconds_count{op=\"heartbeat\"}"
        ) >= 1.0
    );
    b.handle.shutdown();
    within("node B stopping", b.handle.wait()).await.unwrap();
}
