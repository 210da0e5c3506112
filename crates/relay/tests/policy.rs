//! The delivery service sequences only commits every honest member accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_proto::*;
use common::*;
use openmls::prelude::{BasicCredential, CredentialWithKey, LeafNodeParameters};

const ROOM: &[u8] = b"room-policy";

// covers: DS-POL-1, DS-POL-2
#[test]
fn a_member_cannot_rename_itself_to_the_host() {
    let mut net = Net::new();
    let mut a = room_with_host(&mut net, ROOM, 1);
    let mut b = waiting_guest(&mut net, ROOM, 2, "b");
    admit_all(&mut net, &mut a, &mut [], &mut [&mut b]);
    // B self-updates with an UpdatePath leaf whose credential says "host" (same key).
    let renamed = CredentialWithKey {
        credential: BasicCredential::new(b"host".to_vec()).into(),
        signature_key: b.cwk.signature_key.clone(),
    };
    let epoch = b.epoch();
    let (provider, signer) = (&b.provider, &b.signer);
    let bundle = b
        .group
        .as_mut()
        .unwrap()
        .self_update(
            provider,
            signer,
            LeafNodeParameters::builder()
                .with_credential_with_key(renamed)
                .build(),
        )
        .unwrap();
    let (commit, _, gi) = bundle.into_contents();
    net.send(
        b.conn,
        Body::Commit(Commit {
            epoch,
            commit: VLBytes::new(out_bytes(commit)),
            welcome: None,
            group_info: gi.map(|g| VLBytes::new(out_bytes(g))),
        }),
    );
    let reply = net.take(b.conn);
    assert!(
        matches!(reply.as_slice(), [Body::CommitRejected(r)] if r.reason == CommitRejectReason::POLICY),
        "the renaming commit was sequenced: {reply:?}"
    );
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    assert_eq!(
        net.ds
            .counters()
            .commits_rejected(CommitRejectReason::POLICY),
        1
    );
    // The refusal changed nothing: the honest host's next commit is sequenced.
    b.clear_pending();
    let commit = a.self_update();
    net.send(a.conn, Body::Commit(commit));
    assert!(matches!(
        net.take(a.conn).first(),
        Some(Body::CommitAccepted(c)) if c.epoch == 2
    ));
}

// covers: DS-POL-1, DS-RM-4
#[test]
fn a_guest_cannot_remove_a_departed_member_by_value() {
    let mut net = Net::new();
    let mut a = room_with_host(&mut net, ROOM, 1);
    let mut b = waiting_guest(&mut net, ROOM, 2, "b");
    let mut c = waiting_guest(&mut net, ROOM, 3, "c");
    admit_all(&mut net, &mut a, &mut [], &mut [&mut b, &mut c]);
    net.close(c.conn);
    a.pump(&mut net);
    // B (a guest) removes C's leaf by value instead of committing the relay's proposal: the
    // members' policy (hosts remove others) refuses that commit, so the relay must too.
    let b_inbox = net.take(b.conn);
    let commit = b.remove(&[2]);
    net.send(b.conn, Body::Commit(commit));
    let reply = net.take(b.conn);
    assert!(
        matches!(reply.as_slice(), [Body::CommitRejected(r)] if r.reason == CommitRejectReason::POLICY),
        "a commit members refuse was sequenced: {reply:?}"
    );
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    // Committing the relay's proposal (by reference) is fine for anyone.
    b.clear_pending();
    b.apply(&b_inbox);
    let commit = b.commit_pending();
    net.send(b.conn, Body::Commit(commit));
    assert!(matches!(
        net.take(b.conn).first(),
        Some(Body::CommitAccepted(c)) if c.epoch == 2
    ));
}

// covers: DS-POL-1, DS-POL-3
#[test]
fn hosts_are_the_call_parameters_hosts_not_host_tokens() {
    let mut net = Net::new();
    let mut a = room_with_host(&mut net, ROOM, 1);
    // A second host token joins as a member; the call parameters list only the creator.
    let h2 = Client::connect(&mut net, ROOM, Role::HOST, 2, "h2");
    net.send(
        h2.conn,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(h2.key_package()),
            join_proof: None,
        }),
    );
    net.send(h2.conn, Body::JoinRequest);
    let mut h2 = h2;
    let mut g = waiting_guest(&mut net, ROOM, 3, "g");
    admit_all(&mut net, &mut a, &mut [], &mut [&mut h2, &mut g]);
    // Members take the host role from the call parameters; so does the relay: h2 may not
    // remove g although it holds a host token.
    let leaf_g = g.group().own_leaf_index().u32();
    let commit = h2.remove(&[leaf_g]);
    net.send(h2.conn, Body::Commit(commit));
    assert!(matches!(
        net.take(h2.conn).as_slice(),
        [Body::CommitRejected(r)] if r.reason == CommitRejectReason::POLICY
    ));
    h2.clear_pending();
    // The listed host may.
    let commit = a.remove(&[leaf_g]);
    net.send(a.conn, Body::Commit(commit));
    assert!(matches!(
        net.take(a.conn).first(),
        Some(Body::CommitAccepted(c)) if c.epoch == 2
    ));
}

// covers: DS-BOOT-3
#[test]
fn a_group_without_valid_call_parameters_is_not_bootstrapped() {
    let mut net = Net::new();
    let mut host = Client::connect(&mut net, ROOM, Role::HOST, 1, "h");
    let relay = relay_from_ack(host.ack.as_ref().unwrap());
    let other_key = vec![7u8; 32];
    for params in [None, Some(call_params(vec![other_key]))] {
        host.create_group_with(group_extensions(&relay, params.as_ref()));
        net.send(
            host.conn,
            Body::CreateGroup(CreateGroup {
                group_info: VLBytes::new(host.group_info()),
            }),
        );
        assert!(
            matches!(net.last(host.conn), Body::Error(e) if e.code == ErrorCode::INVALID_GROUP_INFO),
            "{params:?}"
        );
    }
    assert_eq!(net.ds.room_epoch(ROOM), None);
    host.create_group(&relay);
    net.send(
        host.conn,
        Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(host.group_info()),
        }),
    );
    assert!(matches!(net.last(host.conn), Body::GroupCreated(_)));
}
