//! Relay nodes sharing a room store on a real `nats-server -js` (spec/cluster.md, CL-NODE-*):
//! two in-process relays race commits of one room through the store, and the binary in
//! cluster mode starts only when NATS answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

mod common;
mod nats;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use blindcall_proto::{Body, CommitRejectReason, CreateGroup, PublishKeyPackage, Role, VLBytes};
use blindcall_relay::RoomId;
use blindcall_relay::store::{JetStreamConfig, RoomStore};
use common::tls::*;
use common::{AckRelay, Client, SECRET, call_params, relay_from_ack, waiting_kps};
use nats::NatsServer;
use openmls::prelude::{
    Extension, Extensions, ExternalSender, SignaturePublicKey, UnknownExtension,
};

const ROOM: &[u8] = b"room-two-nodes";

async fn store(server: &NatsServer) -> RoomStore {
    let mut cfg = JetStreamConfig::new(server.url());
    cfg.op_timeout = Duration::from_secs(5);
    within("the room store", RoomStore::jetstream(cfg))
        .await
        .unwrap()
}

async fn node(server: &NatsServer) -> TestRelay {
    let s = store(server).await;
    start_relay(move |cfg| cfg.store = Some(s)).await
}

/// Group-context extensions naming both nodes' relay identities as external senders (these
/// in-process nodes are built without a key file, so each has its own; the binary loads one
/// shared file in cluster mode, CL-NODE-3).
fn extensions(relays: &[&AckRelay], host: &Client) -> Extensions<openmls::prelude::GroupContext> {
    let params = call_params(vec![host.signer.public().to_vec()]);
    let senders = relays
        .iter()
        .map(|r| {
            ExternalSender::new(
                SignaturePublicKey::from(r.key.clone()),
                r.credential.clone(),
            )
        })
        .collect();
    Extensions::from_vec(vec![
        Extension::ExternalSenders(senders),
        Extension::Unknown(
            blindcall_policy::CALL_PARAMS_EXTENSION_TYPE,
            UnknownExtension(params.encode().unwrap()),
        ),
    ])
    .unwrap()
}

fn is_commit_answer(b: &Body) -> bool {
    matches!(b, Body::CommitAccepted(_) | Body::CommitRejected(_))
}

fn broadcasts(bodies: &[Body], epoch: u64) -> Vec<Vec<u8>> {
    bodies
        .iter()
        .filter_map(|b| match b {
            Body::CommitBroadcast(c) if c.epoch == epoch => Some(c.commit.as_slice().to_vec()),
            _ => None,
        })
        .collect()
}

// covers: CL-NODE-2, CL-DS-2, CL-DS-3
#[test]
fn two_nodes_sequence_a_rooms_commits_through_one_nats_store() {
    let Some(server) = NatsServer::start_or_skip("two_nodes_sequence_a_rooms_commits") else {
        return;
    };
    run(two_nodes_body(server));
}

async fn two_nodes_body(server: NatsServer) {
    let a = node(&server).await;
    let b = node(&server).await;
    let reader = store(&server).await;
    let room = RoomId(ROOM.to_vec());

    // The host and the guest each hold a connection to both nodes (membership is not shared
    // between nodes yet): the host creates the same group on both.
    let (mut h_a, mut host) = a.member(ROOM, Role::HOST, 1, "host").await;
    let (mut h_b, ack_b) = b.admitted(ROOM, Role::HOST, 1, "host").await;
    let relay_a = relay_from_ack(host.ack.as_ref().unwrap());
    let relay_b = relay_from_ack(&ack_b);
    let exts = extensions(&[&relay_a, &relay_b], &host);
    host.create_group_with(exts);
    for (t, node) in [(&mut h_a, "A"), (&mut h_b, "B")] {
        t.send(Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(host.group_info()),
        }))
        .await;
        let got = t.recv(&format!("GroupCreated from node {node}")).await;
        assert!(matches!(got, Body::GroupCreated(_)), "{got:?}");
    }
    let (mut g_a, ack) = a.admitted(ROOM, Role::GUEST, 2, "guest").await;
    let (mut g_b, _) = b.admitted(ROOM, Role::GUEST, 2, "guest").await;
    let mut guest = Client::new("guest", blindcall_relay::ConnId(ack.conn_id), ack);
    let kp = guest.key_package();
    for (t, node) in [(&mut g_a, "A"), (&mut g_b, "B")] {
        t.send(Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(kp.clone()),
            join_proof: None,
        }))
        .await;
        t.recv_until(&format!("KeyPackageAccepted from node {node}"), |b| {
            matches!(b, Body::KeyPackageAccepted(_))
        })
        .await;
        t.send(Body::JoinRequest).await;
    }
    for (t, node) in [(&mut h_a, "A"), (&mut h_b, "B")] {
        let mut seen = Vec::new();
        while waiting_kps(&seen).is_empty() {
            seen.push(t.recv(&format!("the guest waiting on node {node}")).await);
        }
    }

    // The add, sent to both nodes: node A's claim wins epoch 0, node B's claim of the same
    // commit is a win too (the store holds that very commit), and both merge it.
    let add = host.add(&[kp]);
    for (t, node) in [(&mut h_a, "A"), (&mut h_b, "B")] {
        t.send(Body::Commit(add.clone())).await;
        let got = t
            .recv_until(
                &format!("the add's answer from node {node}"),
                is_commit_answer,
            )
            .await;
        assert!(
            matches!(got.last(), Some(Body::CommitAccepted(c)) if c.epoch == 1),
            "node {node}: {got:?}"
        );
    }
    host.merge_pending();
    let welcome = g_a
        .recv_until("the Welcome from node A", |b| matches!(b, Body::Welcome(_)))
        .await;
    guest.apply(&welcome);
    g_b.recv_until("the Welcome from node B", |b| matches!(b, Body::Welcome(_)))
        .await;
    assert_eq!(guest.authenticator(), host.authenticator());
    assert_eq!(
        reader
            .sequenced_commit(&room, 0)
            .await
            .unwrap()
            .unwrap()
            .commit(),
        add.commit.as_slice()
    );

    // The race: the host commits through node A, the guest through node B, at once.
    let ch = host.self_update();
    let cg = guest.self_update();
    tokio::join!(
        h_a.send(Body::Commit(ch.clone())),
        g_b.send(Body::Commit(cg.clone()))
    );
    let h_answer = h_a
        .recv_until("the host's answer from node A", is_commit_answer)
        .await;
    let g_answer = g_b
        .recv_until("the guest's answer from node B", is_commit_answer)
        .await;
    let host_won = matches!(h_answer.last(), Some(Body::CommitAccepted(c)) if c.epoch == 2);
    let guest_won = matches!(g_answer.last(), Some(Body::CommitAccepted(c)) if c.epoch == 2);
    assert!(
        host_won ^ guest_won,
        "exactly one winner: {h_answer:?} / {g_answer:?}"
    );
    let (winner_commit, loser_answer) = if host_won {
        (ch.commit.as_slice().to_vec(), &g_answer)
    } else {
        (cg.commit.as_slice().to_vec(), &h_answer)
    };
    // The loser heard the winner from its node, then got the existing typed rejection.
    assert_eq!(broadcasts(loser_answer, 1), vec![winner_commit.clone()]);
    let Some(Body::CommitRejected(rej)) = loser_answer.last() else {
        panic!("{loser_answer:?}")
    };
    assert_eq!(rej.reason, CommitRejectReason::EPOCH_TAKEN);
    assert_eq!(rej.winner.as_ref().unwrap().as_slice(), winner_commit);
    // The winner's other connection heard the winner once, from the other node.
    let other = if host_won { &mut h_b } else { &mut g_a };
    let heard = other
        .recv_until("the winner broadcast on the other node", |b| {
            matches!(b, Body::CommitBroadcast(_))
        })
        .await;
    assert_eq!(broadcasts(&heard, 1), vec![winner_commit.clone()]);
    // The store holds the winner; every member converges.
    assert_eq!(
        reader
            .sequenced_commit(&room, 1)
            .await
            .unwrap()
            .unwrap()
            .commit(),
        winner_commit
    );
    let (winner, loser) = if host_won {
        (&mut host, &mut guest)
    } else {
        (&mut guest, &mut host)
    };
    winner.merge_pending();
    loser.clear_pending();
    loser.process(&winner_commit);
    assert_eq!(host.epoch(), 2);
    assert_eq!(host.authenticator(), guest.authenticator());

    // Both nodes moved on: the loser's next commit wins epoch 2 through its node.
    let (loser_tls, loser) = if host_won {
        (&mut g_b, &mut guest)
    } else {
        (&mut h_a, &mut host)
    };
    let next = loser.self_update();
    loser_tls.send(Body::Commit(next.clone())).await;
    let got = loser_tls
        .recv_until("the loser's next answer", is_commit_answer)
        .await;
    assert!(
        matches!(got.last(), Some(Body::CommitAccepted(c)) if c.epoch == 3),
        "{got:?}"
    );
    assert_eq!(
        reader
            .sequenced_commit(&room, 2)
            .await
            .unwrap()
            .unwrap()
            .commit(),
        next.commit.as_slice()
    );
    let m = a.scrape().await;
    assert!(metric(&m, "blindcall_relay_store_claims_won_total") >= 1.0);
    assert!(metric(&m, "blindcall_relay_store_claim_seconds_count") >= 2.0);
    a.handle.shutdown();
    b.handle.shutdown();
}

// covers: CL-FOLLOW-1, CL-FOLLOW-2, CL-FOLLOW-3, CL-FOLLOW-5
#[test]
fn a_node_where_nobody_commits_follows_the_winners_sequenced_on_another_node() {
    let Some(server) = NatsServer::start_or_skip("a_node_where_nobody_commits_follows") else {
        return;
    };
    run(follow_body(server));
}

async fn follow_body(server: NatsServer) {
    const ROOM: &[u8] = b"room-followed";
    let a = node(&server).await;
    let b = node(&server).await;

    // The host commits through node A only; it creates the group on both nodes (the genesis
    // is not shared yet). The guest waits on both nodes (the waiting room is not shared yet)
    // and lives on node B: it never sends anything to node A after its KeyPackage.
    let (mut h_a, mut host) = a.member(ROOM, Role::HOST, 1, "host").await;
    let (mut h_b, ack_b) = b.admitted(ROOM, Role::HOST, 1, "host").await;
    let relay_a = relay_from_ack(host.ack.as_ref().unwrap());
    let relay_b = relay_from_ack(&ack_b);
    host.create_group_with(extensions(&[&relay_a, &relay_b], &host));
    for (t, node) in [(&mut h_a, "A"), (&mut h_b, "B")] {
        t.send(Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(host.group_info()),
        }))
        .await;
        let got = t.recv(&format!("GroupCreated from node {node}")).await;
        assert!(matches!(got, Body::GroupCreated(_)), "{got:?}");
    }
    let (mut g_a, _) = a.admitted(ROOM, Role::GUEST, 2, "guest").await;
    let (mut g_b, ack) = b.admitted(ROOM, Role::GUEST, 2, "guest").await;
    let mut guest = Client::new("guest", blindcall_relay::ConnId(ack.conn_id), ack);
    let kp = guest.key_package();
    for (t, node) in [(&mut g_a, "A"), (&mut g_b, "B")] {
        t.send(Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(kp.clone()),
            join_proof: None,
        }))
        .await;
        t.recv_until(&format!("KeyPackageAccepted from node {node}"), |b| {
            matches!(b, Body::KeyPackageAccepted(_))
        })
        .await;
        t.send(Body::JoinRequest).await;
    }
    let mut seen = Vec::new();
    while waiting_kps(&seen).is_empty() {
        seen.push(h_a.recv("the guest waiting on node A").await);
    }

    // The add, sequenced by node A: node B follows it and welcomes the guest waiting there
    // from the stored record.
    let add = host.add(&[kp]);
    h_a.send(Body::Commit(add.clone())).await;
    let got = h_a
        .recv_until("the add's answer from node A", is_commit_answer)
        .await;
    assert!(
        matches!(got.last(), Some(Body::CommitAccepted(c)) if c.epoch == 1),
        "{got:?}"
    );
    host.merge_pending();
    let welcome = g_b
        .recv_until("the Welcome from node B", |b| matches!(b, Body::Welcome(_)))
        .await;
    guest.apply(&welcome);
    assert_eq!(guest.authenticator(), host.authenticator());

    // Two more commits through node A; the guest hears them from node B, in order.
    let mut sent = Vec::new();
    for epoch in [1, 2] {
        let c = host.self_update();
        h_a.send(Body::Commit(c.clone())).await;
        let got = h_a
            .recv_until(
                &format!("the answer to epoch {epoch}'s commit"),
                is_commit_answer,
            )
            .await;
        assert!(
            matches!(got.last(), Some(Body::CommitAccepted(a)) if a.epoch == epoch + 1),
            "{got:?}"
        );
        host.merge_pending();
        sent.push(c.commit.as_slice().to_vec());
    }
    for (i, epoch) in [1u64, 2].into_iter().enumerate() {
        let heard = g_b
            .recv_until(&format!("epoch {epoch}'s commit on node B"), |b| {
                matches!(b, Body::CommitBroadcast(_))
            })
            .await;
        assert_eq!(broadcasts(&heard, epoch), vec![sent[i].clone()]);
        guest.apply(&heard);
    }
    assert_eq!(guest.epoch(), 3);
    assert_eq!(guest.authenticator(), host.authenticator());
    // The host's own connection to node B heard every commit too.
    for epoch in [0u64, 1, 2] {
        let heard = h_b
            .recv_until(
                &format!("epoch {epoch}'s commit for the host on node B"),
                |b| matches!(b, Body::CommitBroadcast(_)),
            )
            .await;
        assert_eq!(broadcasts(&heard, epoch).len(), 1, "{heard:?}");
    }

    // Node B serves the epoch it never sequenced: its GroupInfo came with the record.
    g_b.send(Body::GroupInfoRequest).await;
    let got = g_b
        .recv_until("GroupInfoResponse from node B", |b| {
            matches!(b, Body::GroupInfoResponse(_) | Body::Error(_))
        })
        .await;
    match got.last() {
        Some(Body::GroupInfoResponse(r)) => assert_eq!(r.epoch, 3),
        other => panic!("expected GroupInfoResponse, got {other:?}"),
    }
    // Node B claimed nothing: it followed.
    let m = b.scrape().await;
    assert_eq!(metric(&m, "blindcall_relay_store_claims_won_total"), 0.0);
    assert_eq!(metric(&m, "blindcall_relay_store_claims_lost_total"), 0.0);
    assert_eq!(
        metric(&m, "blindcall_relay_store_winners_applied_total"),
        3.0
    );
    drop(g_a);
    a.handle.shutdown();
    b.handle.shutdown();
}

/// A node whose external-sender keys are those of the key file text `keys` (CL-NODE-3).
async fn node_with_keys(server: &NatsServer, keys: &str) -> TestRelay {
    let s = store(server).await;
    let ids = blindcall_relay::keyfile::parse_relay_identities(keys).unwrap();
    start_relay(move |cfg| {
        cfg.store = Some(s);
        cfg.ds.relay_identities = ids;
    })
    .await
}

// covers: CL-GEN-1, CL-GEN-2, CL-NODE-3
#[test]
fn a_call_created_on_one_node_is_joined_through_another() {
    let Some(server) = NatsServer::start_or_skip("a_call_created_on_one_node") else {
        return;
    };
    run(genesis_body(server));
}

async fn genesis_body(server: NatsServer) {
    const ROOM: &[u8] = b"room-genesis-nodes";
    let keys = blindcall_relay::keyfile::new_key_file_text().unwrap();
    let a = node_with_keys(&server, &keys).await;
    let b = node_with_keys(&server, &keys).await;

    // The host creates the call on node A only; the group lists the one external sender
    // every node shares.
    let (mut h_a, mut host) = a.member(ROOM, Role::HOST, 1, "host").await;
    let relay = relay_from_ack(host.ack.as_ref().unwrap());
    host.create_group(&relay);
    h_a.send(Body::CreateGroup(CreateGroup {
        group_info: VLBytes::new(host.group_info()),
    }))
    .await;
    let got = h_a.recv("GroupCreated from node A").await;
    assert!(matches!(got, Body::GroupCreated(_)), "{got:?}");

    // Another host creating the room's group through node B is refused as a second creation.
    let (mut o_b, mut other) = b.member(ROOM, Role::HOST, 3, "other host").await;
    assert_eq!(relay_from_ack(other.ack.as_ref().unwrap()).key, relay.key);
    other.create_group(&relay);
    o_b.send(Body::CreateGroup(CreateGroup {
        group_info: VLBytes::new(other.group_info()),
    }))
    .await;
    let got = o_b
        .recv_until("the second creation's answer from node B", |b| {
            matches!(b, Body::Error(_) | Body::GroupCreated(_))
        })
        .await;
    assert!(
        matches!(got.last(), Some(Body::Error(e)) if e.code == blindcall_proto::ErrorCode::GROUP_EXISTS),
        "{got:?}"
    );

    // The guest lives on node B (its KeyPackage is also published on node A, where the host
    // sees it: the waiting room is not shared yet).
    let (mut g_a, _) = a.admitted(ROOM, Role::GUEST, 2, "guest").await;
    let (mut g_b, ack) = b.admitted(ROOM, Role::GUEST, 2, "guest").await;
    let mut guest = Client::new("guest", blindcall_relay::ConnId(ack.conn_id), ack);
    let kp = guest.key_package();
    for (t, node) in [(&mut g_a, "A"), (&mut g_b, "B")] {
        t.send(Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(kp.clone()),
            join_proof: None,
        }))
        .await;
        t.recv_until(&format!("KeyPackageAccepted from node {node}"), |b| {
            matches!(b, Body::KeyPackageAccepted(_))
        })
        .await;
        t.send(Body::JoinRequest).await;
    }
    let mut seen = Vec::new();
    while waiting_kps(&seen).is_empty() {
        seen.push(h_a.recv("the guest waiting on node A").await);
    }
    let add = host.add(&[kp]);
    h_a.send(Body::Commit(add)).await;
    let got = h_a
        .recv_until("the add's answer from node A", is_commit_answer)
        .await;
    assert!(
        matches!(got.last(), Some(Body::CommitAccepted(c)) if c.epoch == 1),
        "{got:?}"
    );
    host.merge_pending();
    // Node B, which never saw the group created, welcomes the guest.
    let welcome = g_b
        .recv_until("the Welcome from node B", |b| matches!(b, Body::Welcome(_)))
        .await;
    guest.apply(&welcome);
    assert_eq!(guest.epoch(), 1);
    assert_eq!(guest.authenticator(), host.authenticator());

    // The guest commits through node B; the host hears it from node A: one group.
    let c = guest.self_update();
    g_b.send(Body::Commit(c.clone())).await;
    let got = g_b
        .recv_until("the guest's commit answer from node B", is_commit_answer)
        .await;
    assert!(
        matches!(got.last(), Some(Body::CommitAccepted(a)) if a.epoch == 2),
        "{got:?}"
    );
    guest.merge_pending();
    let heard = h_a
        .recv_until("the guest's commit on node A", |b| {
            matches!(b, Body::CommitBroadcast(_))
        })
        .await;
    assert_eq!(broadcasts(&heard, 1), vec![c.commit.as_slice().to_vec()]);
    host.apply(&heard);
    assert_eq!((host.epoch(), guest.epoch()), (2, 2));
    assert_eq!(guest.authenticator(), host.authenticator());
    drop((g_a, o_b));
    a.handle.shutdown();
    b.handle.shutdown();
}

/// Run the binary with `args` (control channel only, development certificate) and a reader
/// thread passing its stdout lines.
fn spawn_relay(args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let cert_path = std::env::temp_dir().join(format!(
        "blindcall-cluster-cert-{}-{}.pem",
        std::process::id(),
        args.join("").len()
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_blindcall-relay"))
        .args(["--listen", "127.0.0.1:0", "--dev-self-signed", "--no-media"])
        .args(["--log", "warn"])
        .arg("--dev-cert-out")
        .arg(&cert_path)
        .args(args)
        .env("BLINDCALL_TOKEN_SECRET", hex::encode(SECRET))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

// covers: CL-NODE-1
#[test]
fn in_cluster_mode_the_binary_starts_only_when_nats_answers() {
    let Some(server) = NatsServer::start_or_skip("in_cluster_mode_the_binary_starts") else {
        return;
    };
    // NATS answers: the node says which store it uses, then listens.
    let url = server.url();
    // Every node loads the same external-sender key file (CL-NODE-3).
    let keys = std::env::temp_dir().join(format!("blindcall-cluster-{}.keys", std::process::id()));
    let _ = std::fs::remove_file(&keys);
    blindcall_relay::keyfile::write_new_key_file(&keys).unwrap();
    let keys = keys.to_str().unwrap().to_owned();
    let (mut child, rx) = spawn_relay(&[
        "--cluster",
        &url,
        "--node-id",
        "node-1",
        "--external-sender-key",
        &keys,
    ]);
    let line = |what: &str| {
        rx.recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("timed out waiting for the binary to print {what}"))
    };
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.starts_with("listening on "))
    {
        lines.push(line("its listen address"));
    }
    assert!(
        lines.contains(&format!("cluster node node-1: room store on {url}")),
        "{lines:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Nobody at the address: the relay refuses to start with one clear line.
    let port = server.port();
    drop(server);
    let dead = format!("nats://127.0.0.1:{port}");
    let (child, _rx) = spawn_relay(&[
        "--cluster",
        &dead,
        "--node-id",
        "node-1",
        "--external-sender-key",
        &keys,
    ]);
    let (tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = done
        .recv_timeout(WAIT)
        .expect("timed out waiting for the relay to refuse to start")
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        vec![format!(
            "blindcall-relay: cannot use the cluster store at {dead}: store unreachable \
             (connect); not starting without it"
        )],
        "{stderr}"
    );

    // A node id is required in cluster mode.
    let (child, _rx) = spawn_relay(&["--cluster", &dead]);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("--cluster needs --node-id")
    );
    std::fs::remove_file(&keys).unwrap();
}

// covers: CL-BAN-1
#[test]
fn a_member_removed_on_one_node_is_refused_on_another() {
    let Some(server) = NatsServer::start_or_skip("a_member_removed_on_one_node") else {
        return;
    };
    run(bans_body(server));
}

async fn bans_body(server: NatsServer) {
    const ROOM: &[u8] = b"room-bans-nodes";
    let keys = blindcall_relay::keyfile::new_key_file_text().unwrap();
    let a = node_with_keys(&server, &keys).await;
    let b = node_with_keys(&server, &keys).await;

    // Host and member on node A; the member's token also has a connection on node B.
    let (mut h_a, mut host) = a.member(ROOM, Role::HOST, 1, "host").await;
    let relay = relay_from_ack(host.ack.as_ref().unwrap());
    host.create_group(&relay);
    h_a.send(Body::CreateGroup(CreateGroup {
        group_info: VLBytes::new(host.group_info()),
    }))
    .await;
    let got = h_a.recv("GroupCreated from node A").await;
    assert!(matches!(got, Body::GroupCreated(_)), "{got:?}");
    let (mut m_a, mut member) = a.member(ROOM, Role::GUEST, 2, "member").await;
    let kp = member.key_package();
    m_a.send(Body::PublishKeyPackage(PublishKeyPackage {
        key_package: VLBytes::new(kp.clone()),
        join_proof: None,
    }))
    .await;
    m_a.recv_until("KeyPackageAccepted from node A", |b| {
        matches!(b, Body::KeyPackageAccepted(_))
    })
    .await;
    m_a.send(Body::JoinRequest).await;
    let mut seen = Vec::new();
    while waiting_kps(&seen).is_empty() {
        seen.push(h_a.recv("the member waiting on node A").await);
    }
    h_a.send(Body::Commit(host.add(&[kp]))).await;
    let got = h_a.recv_until("the add's answer", is_commit_answer).await;
    assert!(
        matches!(got.last(), Some(Body::CommitAccepted(c)) if c.epoch == 1),
        "{got:?}"
    );
    host.merge_pending();
    let welcome = m_a
        .recv_until("the member's Welcome", |b| matches!(b, Body::Welcome(_)))
        .await;
    member.apply(&welcome);
    let (mut m_b, _) = b.admitted(ROOM, Role::GUEST, 2, "member on B").await;

    // The host removes the member by commit on node A (ADM-BAN-2).
    h_a.send(Body::Commit(host.remove(&[1]))).await;
    let got = h_a
        .recv_until("the removal's answer", is_commit_answer)
        .await;
    assert!(
        matches!(got.last(), Some(Body::CommitAccepted(c)) if c.epoch == 2),
        "{got:?}"
    );
    let (bodies, _) = m_a.closed("the removed member's close on node A").await;
    assert_eq!(
        bodies.last(),
        Some(&Body::Refused(blindcall_proto::Refused {
            reason: blindcall_proto::RefusedReason::REMOVED_FROM_GROUP
        }))
    );
    // Node B learns the ban through the store: the token's connection there is refused and
    // closed, and its Hello is refused from now on.
    let (bodies, _) = m_b
        .closed("node B closing the banned token's connection")
        .await;
    assert_eq!(
        bodies.last(),
        Some(&Body::Refused(blindcall_proto::Refused {
            reason: blindcall_proto::RefusedReason::REMOVED_BY_HOST
        })),
        "{bodies:?}"
    );
    expect_refused(
        &b,
        ROOM,
        &token(ROOM, Role::GUEST, 2),
        blindcall_proto::RefusedReason::REMOVED_BY_HOST,
    )
    .await;
    // Another token is still admitted on B.
    let (_t, ack) = b.admitted(ROOM, Role::GUEST, 3, "other").await;
    assert_eq!(ack.room.locked, 0);
    let m = b.scrape().await;
    assert_eq!(metric(&m, "blindcall_relay_store_bans_learned_total"), 1.0);
    drop(h_a);
    a.handle.shutdown();
    b.handle.shutdown();
}

// covers: CL-LOCK-1
#[test]
fn a_room_locked_on_one_node_is_locked_on_another() {
    let Some(server) = NatsServer::start_or_skip("a_room_locked_on_one_node") else {
        return;
    };
    run(lock_body(server));
}

async fn lock_body(server: NatsServer) {
    const ROOM: &[u8] = b"room-lock-nodes";
    let a = node(&server).await;
    let b = node(&server).await;
    let (mut h_a, _) = a.admitted(ROOM, Role::HOST, 1, "host").await;
    let (mut g_b, ack) = b.admitted(ROOM, Role::GUEST, 2, "guest").await;
    assert_eq!(ack.room.locked, 0);

    // The host locks the room on node A; the guest's node B hears it through the store.
    h_a.send(Body::LockRoom).await;
    let got = h_a.recv("the lock's RoomStateUpdate on node A").await;
    assert!(
        matches!(&got, Body::RoomStateUpdate(s) if s.locked == 1),
        "{got:?}"
    );
    let got = g_b
        .recv_until("the lock's RoomStateUpdate on node B", |b| {
            matches!(b, Body::RoomStateUpdate(_))
        })
        .await;
    assert!(
        matches!(got.last(), Some(Body::RoomStateUpdate(s)) if s.locked == 1),
        "{got:?}"
    );
    // A guest arriving at node B sees the room locked, and no guest may queue there.
    let (mut late, ack) = b.admitted(ROOM, Role::GUEST, 3, "late").await;
    assert_eq!(ack.room.locked, 1);
    g_b.send(Body::PublishKeyPackage(PublishKeyPackage {
        key_package: VLBytes::new(vec![0; 8]),
        join_proof: None,
    }))
    .await;
    let (bodies, _) = g_b
        .closed("node B refusing to queue in a locked room")
        .await;
    assert_eq!(
        bodies.last(),
        Some(&Body::Refused(blindcall_proto::Refused {
            reason: blindcall_proto::RefusedReason::ROOM_LOCKED
        })),
        "{bodies:?}"
    );

    // Unlocked on node A, unlocked on node B.
    h_a.send(Body::UnlockRoom).await;
    let got = late
        .recv_until("the unlock's RoomStateUpdate on node B", |b| {
            matches!(b, Body::RoomStateUpdate(_))
        })
        .await;
    assert!(
        matches!(got.last(), Some(Body::RoomStateUpdate(s)) if s.locked == 0),
        "{got:?}"
    );
    let m = b.scrape().await;
    assert_eq!(
        metric(&m, "blindcall_relay_store_lock_changes_learned_total"),
        2.0
    );
    a.handle.shutdown();
    b.handle.shutdown();
}

// covers: CL-WAIT-1
#[test]
fn a_host_on_one_node_adds_a_joiner_waiting_on_another() {
    let Some(server) = NatsServer::start_or_skip("a_host_on_one_node_adds") else {
        return;
    };
    run(waiting_body(server));
}

async fn waiting_body(server: NatsServer) {
    const ROOM: &[u8] = b"room-waiting-nodes";
    let keys = blindcall_relay::keyfile::new_key_file_text().unwrap();
    let a = node_with_keys(&server, &keys).await;
    let b = node_with_keys(&server, &keys).await;

    let (mut h_a, mut host) = a.member(ROOM, Role::HOST, 1, "host").await;
    let relay = relay_from_ack(host.ack.as_ref().unwrap());
    host.create_group(&relay);
    h_a.send(Body::CreateGroup(CreateGroup {
        group_info: VLBytes::new(host.group_info()),
    }))
    .await;
    let got = h_a.recv("GroupCreated from node A").await;
    assert!(matches!(got, Body::GroupCreated(_)), "{got:?}");

    // The guest is connected to node B only and waits there.
    let (mut g_b, ack) = b.admitted(ROOM, Role::GUEST, 2, "guest").await;
    let mut guest = Client::new("guest", blindcall_relay::ConnId(ack.conn_id), ack);
    let kp = guest.key_package();
    g_b.send(Body::PublishKeyPackage(PublishKeyPackage {
        key_package: VLBytes::new(kp.clone()),
        join_proof: None,
    }))
    .await;
    g_b.recv_until("KeyPackageAccepted from node B", |b| {
        matches!(b, Body::KeyPackageAccepted(_))
    })
    .await;
    // Node B sets the room's group up from its genesis when the guest arrives; until it has,
    // a JoinRequest is answered NO_GROUP and is sent again.
    loop {
        g_b.send(Body::JoinRequest).await;
        let got = g_b
            .recv_until("the JoinRequest's answer from node B", |b| {
                matches!(b, Body::RoomStateUpdate(_) | Body::Error(_))
            })
            .await;
        match got.last() {
            Some(Body::RoomStateUpdate(_)) => break,
            Some(Body::Error(e)) if e.code == blindcall_proto::ErrorCode::NO_GROUP => {}
            other => panic!("{other:?}"),
        }
    }

    // The host on node A sees the guest waiting on node B, and adds it.
    let mut seen = Vec::new();
    while waiting_kps(&seen).is_empty() {
        seen.push(h_a.recv("node B's waiting guest on node A").await);
    }
    let entries = waiting_kps(&seen);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1, kp);
    h_a.send(Body::Commit(host.add(&[kp]))).await;
    let got = h_a
        .recv_until("the add's answer from node A", is_commit_answer)
        .await;
    assert!(
        matches!(got.last(), Some(Body::CommitAccepted(c)) if c.epoch == 1),
        "{got:?}"
    );
    host.merge_pending();
    // Node B delivers the Welcome.
    let welcome = g_b
        .recv_until("the Welcome from node B", |b| matches!(b, Body::Welcome(_)))
        .await;
    guest.apply(&welcome);
    assert_eq!(guest.epoch(), 1);
    assert_eq!(guest.authenticator(), host.authenticator());
    // The entry is gone on node A once the guest joined.
    let later = h_a
        .recv_until("the guest's entry removed on node A", |b| {
            matches!(b, Body::WaitingEntryRemoved(_))
        })
        .await;
    seen.extend(later);
    assert!(waiting_kps(&seen).is_empty());
    let m = a.scrape().await;
    assert_eq!(
        metric(&m, "blindcall_relay_store_waiting_learned_total"),
        1.0
    );
    a.handle.shutdown();
    b.handle.shutdown();
}
