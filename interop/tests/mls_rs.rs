//! blindcall (openmls 0.9.2) against mls-rs 0.57, an independent RFC 9420 implementation:
//! joins both ways, the same RFC 9605 §5.2 SFrame keys, the same security code, removals that
//! lock the removed member out on both sides. MLS ciphersuites 1 and 2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Instant;

use blindcall_group::{
    CallConfig, CallGroup, CallParams, Client, Error, Event, InvalidMessage, MemberConfig,
    MlsFailure, MlsSuite, PolicyViolation,
};
use blindcall_sframe::CipherSuite as SframeSuite;
use common::{RsMember, bc_open, exchange_all, rs_member, rs_member_with};
use mls_rs::client_builder::MlsConfig;

/// Local settings: no automatic path update after joining (the tests commit updates explicitly).
fn local() -> MemberConfig {
    MemberConfig {
        path_update_after_join: None,
        ..MemberConfig::default()
    }
}

/// Four members: alice (blindcall, creator and host), bob (blindcall), carol (mls-rs, co-host
/// through the host list), dave (mls-rs). Alice adds the other three in one commit; all join
/// from the one Welcome. Epoch 1.
fn blindcall_created_call<C: MlsConfig>(
    suite: MlsSuite,
    sframe: SframeSuite,
    now: Instant,
    [mut carol, mut dave]: [RsMember<C>; 2],
) -> (CallGroup, CallGroup, [RsMember<C>; 2]) {
    let call = CallConfig {
        mls_suite: suite,
        sframe_suite: sframe,
        extra_hosts: vec![carol.signature_key()],
        ..CallConfig::default()
    };
    let mut alice =
        CallGroup::create(Client::new("alice", suite).unwrap(), &call, local(), now).unwrap();
    let bob_client = Client::new("bob", suite).unwrap();
    let kps = [
        bob_client.key_package().unwrap(),
        carol.key_package(),
        dave.key_package(),
    ];
    let refs: Vec<&[u8]> = kps.iter().map(Vec::as_slice).collect();
    let pc = alice.add_members(&refs).unwrap();
    let welcome = pc.welcome().unwrap().to_vec();
    pc.confirm(&mut alice, now).unwrap();
    let bob = CallGroup::join(bob_client, &welcome, local(), now).unwrap();
    carol.join(&welcome);
    dave.join(&welcome);
    assert_eq!(alice.epoch(), 1);
    (alice, bob, [carol, dave])
}

/// Four members: carol (mls-rs) creates the group with the call parameters (carol and alice
/// hosts) in extension 0xF0BC and adds alice, bob (blindcall) and dave (mls-rs) in one commit;
/// all join from the one Welcome. Epoch 1.
fn mls_rs_created_call<C: MlsConfig>(
    suite: MlsSuite,
    sframe: SframeSuite,
    now: Instant,
    [mut carol, mut dave]: [RsMember<C>; 2],
) -> (CallGroup, CallGroup, [RsMember<C>; 2]) {
    let alice_client = Client::new("alice", suite).unwrap();
    let bob_client = Client::new("bob", suite).unwrap();
    let call = CallConfig {
        mls_suite: suite,
        sframe_suite: sframe,
        extra_hosts: vec![alice_client.signature_key().to_vec()],
        ..CallConfig::default()
    };
    let params = CallParams::from_config(&call, &carol.signature_key()).unwrap();
    carol.create(&params);
    let kps = [
        alice_client.key_package().unwrap(),
        bob_client.key_package().unwrap(),
        dave.key_package(),
    ];
    let refs: Vec<&[u8]> = kps.iter().map(Vec::as_slice).collect();
    // Nobody else is in the group yet: the commit goes to no one.
    let (_commit, welcome) = carol.commit_add(&refs);
    carol.confirm();
    let alice = CallGroup::join(alice_client, &welcome, local(), now).unwrap();
    let bob = CallGroup::join(bob_client, &welcome, local(), now).unwrap();
    dave.join(&welcome);
    assert_eq!(alice.params(), &params);
    assert!(alice.is_host() && !bob.is_host());
    assert_eq!(alice.epoch(), 1);
    (alice, bob, [carol, dave])
}

/// Path updates committed by each implementation in turn; every epoch all members agree on
/// keys and security code, and the code changes with the epoch.
fn updates_from_both_sides<C: MlsConfig>(
    now: Instant,
    alice: &mut CallGroup,
    bob: &mut CallGroup,
    carol: &mut RsMember<C>,
    dave: &mut RsMember<C>,
) {
    let (_, code1) = exchange_all(&mut [alice, bob], &mut [carol, dave]);

    // mls-rs commits (PublicMessage); blindcall members accept it.
    let commit = carol.commit_update();
    carol.confirm();
    alice.handle_message(now, &commit).unwrap();
    bob.handle_message(now, &commit).unwrap();
    assert!(!dave.handle_commit(&commit));
    assert_eq!(alice.epoch(), 2);
    let (_, code2) = exchange_all(&mut [alice, bob], &mut [carol, dave]);
    assert_ne!(code1, code2);

    // blindcall commits (PublicMessage); mls-rs members accept it.
    let pc = bob.self_update().unwrap();
    let commit = pc.commit().to_vec();
    pc.confirm(bob, now).unwrap();
    alice.handle_message(now, &commit).unwrap();
    assert!(!carol.handle_commit(&commit));
    assert!(!dave.handle_commit(&commit));
    assert_eq!(alice.epoch(), 3);
    let (_, code3) = exchange_all(&mut [alice, bob], &mut [carol, dave]);
    assert_ne!(code2, code3);
}

/// Alice (blindcall host) removes dave (mls-rs), then carol (mls-rs host) removes bob
/// (blindcall). After each removal the removed member cannot open any frame of the new epoch;
/// the remaining members of both implementations open each other's.
fn removals_from_both_sides<C: MlsConfig>(
    now: Instant,
    alice: &mut CallGroup,
    bob: &mut CallGroup,
    carol: &mut RsMember<C>,
    dave: &mut RsMember<C>,
) {
    let (_, before) = exchange_all(&mut [alice, bob], &mut [carol, dave]);

    // blindcall removes an mls-rs member.
    let pc = alice.remove_members(&[dave.leaf()]).unwrap();
    let commit = pc.commit().to_vec();
    pc.confirm(alice, now).unwrap();
    bob.handle_message(now, &commit).unwrap();
    assert!(!carol.handle_commit(&commit));
    assert!(dave.handle_commit(&commit), "dave must see his removal");
    assert!(dave.is_removed());
    let (frames, after) = exchange_all(&mut [alice, bob], &mut [carol]);
    assert_ne!(before, after);
    assert_eq!(alice.roster().len(), 3);
    if let Ok(stale) = dave.exporter() {
        assert_ne!(
            stale.expose_secret(),
            carol.exporter().unwrap().expose_secret(),
            "removed member derived the new epoch's exporter output"
        );
    }
    for f in &frames {
        assert!(
            dave.open(f).is_err(),
            "removed mls-rs member opened {}'s frame of epoch {}",
            f.from,
            f.epoch
        );
    }

    // mls-rs removes a blindcall member.
    let commit = carol.commit_remove(bob.own_leaf());
    carol.confirm();
    alice.handle_message(now, &commit).unwrap();
    bob.handle_message(now, &commit).unwrap();
    assert!(!bob.is_active());
    let mut removed_event = false;
    while let Some(e) = bob.poll_event() {
        removed_event |= matches!(e, Event::RemovedFromCall { .. });
    }
    assert!(removed_event, "bob must be told he was removed");
    assert!(bob.seal(std::time::Instant::now(), 0, b"", b"x").is_err());
    let (frames, last) = exchange_all(&mut [alice], &mut [carol]);
    assert_ne!(after, last);
    assert_eq!(alice.roster().len(), 2);
    for f in &frames {
        assert!(
            bc_open(bob, f).is_err(),
            "removed blindcall member opened {}'s frame of epoch {}",
            f.from,
            f.epoch
        );
    }
}

// covers: IOP-WF-1, IOP-JOIN-1, IOP-KEY-1, IOP-KEY-2, IOP-EPOCH-1, IOP-CODE-1, IOP-SUITE-1
#[test]
fn mls_rs_joins_a_blindcall_call_suite_1() {
    let now = Instant::now();
    let (mut a, mut b, [mut c, mut d]) = blindcall_created_call(
        MlsSuite::X25519Aes128Ed25519,
        SframeSuite::AES_128_GCM_SHA256_128,
        now,
        [
            rs_member("carol", MlsSuite::X25519Aes128Ed25519),
            rs_member("dave", MlsSuite::X25519Aes128Ed25519),
        ],
    );
    updates_from_both_sides(now, &mut a, &mut b, &mut c, &mut d);
}

// covers: IOP-WF-1, IOP-JOIN-1, IOP-KEY-1, IOP-KEY-2, IOP-EPOCH-1, IOP-CODE-1, IOP-SUITE-1
#[test]
fn mls_rs_joins_a_blindcall_call_suite_2() {
    let now = Instant::now();
    let (mut a, mut b, [mut c, mut d]) = blindcall_created_call(
        MlsSuite::P256Aes128,
        SframeSuite::AES_128_CTR_HMAC_SHA256_80,
        now,
        [
            rs_member("carol", MlsSuite::P256Aes128),
            rs_member("dave", MlsSuite::P256Aes128),
        ],
    );
    updates_from_both_sides(now, &mut a, &mut b, &mut c, &mut d);
}

// covers: IOP-WF-1, IOP-JOIN-2, IOP-KEY-1, IOP-KEY-2, IOP-EPOCH-1, IOP-CODE-1, IOP-SUITE-1
#[test]
fn blindcall_joins_an_mls_rs_group_suite_1() {
    let now = Instant::now();
    let (mut a, mut b, [mut c, mut d]) = mls_rs_created_call(
        MlsSuite::X25519Aes128Ed25519,
        SframeSuite::AES_128_GCM_SHA256_128,
        now,
        [
            rs_member("carol", MlsSuite::X25519Aes128Ed25519),
            rs_member("dave", MlsSuite::X25519Aes128Ed25519),
        ],
    );
    updates_from_both_sides(now, &mut a, &mut b, &mut c, &mut d);
}

// covers: IOP-WF-1, IOP-JOIN-2, IOP-KEY-1, IOP-KEY-2, IOP-EPOCH-1, IOP-CODE-1, IOP-SUITE-1
#[test]
fn blindcall_joins_an_mls_rs_group_suite_2() {
    let now = Instant::now();
    let (mut a, mut b, [mut c, mut d]) = mls_rs_created_call(
        MlsSuite::P256Aes128,
        SframeSuite::AES_256_GCM_SHA512_128,
        now,
        [
            rs_member("carol", MlsSuite::P256Aes128),
            rs_member("dave", MlsSuite::P256Aes128),
        ],
    );
    updates_from_both_sides(now, &mut a, &mut b, &mut c, &mut d);
}

// covers: IOP-RM-1, IOP-RM-2, IOP-EPOCH-1, IOP-CODE-1, IOP-SUITE-1
#[test]
fn removals_lock_out_on_both_sides_in_a_blindcall_call() {
    for suite in [MlsSuite::X25519Aes128Ed25519, MlsSuite::P256Aes128] {
        let now = Instant::now();
        let (mut a, mut b, [mut c, mut d]) = blindcall_created_call(
            suite,
            SframeSuite::AES_128_GCM_SHA256_128,
            now,
            [rs_member("carol", suite), rs_member("dave", suite)],
        );
        removals_from_both_sides(now, &mut a, &mut b, &mut c, &mut d);
    }
}

// covers: IOP-RM-1, IOP-RM-2, IOP-EPOCH-1, IOP-CODE-1, IOP-SUITE-1
#[test]
fn removals_lock_out_on_both_sides_in_an_mls_rs_group() {
    for suite in [MlsSuite::X25519Aes128Ed25519, MlsSuite::P256Aes128] {
        let now = Instant::now();
        let (mut a, mut b, [mut c, mut d]) = mls_rs_created_call(
            suite,
            SframeSuite::AES_128_GCM_SHA256_128,
            now,
            [rs_member("carol", suite), rs_member("dave", suite)],
        );
        removals_from_both_sides(now, &mut a, &mut b, &mut c, &mut d);
    }
}

// covers: IOP-POL-1
#[test]
fn blindcall_members_enforce_the_call_policy_on_mls_rs_commits() {
    let now = Instant::now();
    let suite = MlsSuite::X25519Aes128Ed25519;
    let (mut alice, mut bob, [mut carol, mut dave]) = blindcall_created_call(
        suite,
        SframeSuite::AES_128_GCM_SHA256_128,
        now,
        [rs_member("carol", suite), rs_member("dave", suite)],
    );
    let mut eve = rs_member("eve", suite);

    // dave (mls-rs, not a host) adds eve: mls-rs builds it, every blindcall member refuses it.
    let (commit, _) = dave.commit_add(&[&eve.key_package()]);
    for m in [&mut alice, &mut bob] {
        let err = m.handle_message(now, &commit).unwrap_err();
        assert!(
            matches!(&err, Error::Policy(PolicyViolation::AddNotAllowed { added, .. }) if added == "eve"),
            "{err:?}"
        );
        assert_eq!(m.epoch(), 1);
    }
    dave.discard();
    exchange_all(&mut [&mut alice, &mut bob], &mut [&mut carol, &mut dave]);

    // carol (mls-rs, in the host list) may add eve; everyone follows, eve joins with mls-rs.
    let (commit, welcome) = carol.commit_add(&[&eve.key_package()]);
    carol.confirm();
    alice.handle_message(now, &commit).unwrap();
    bob.handle_message(now, &commit).unwrap();
    assert!(!dave.handle_commit(&commit));
    eve.join(&welcome);
    assert_eq!(alice.roster().len(), 5);
    exchange_all(
        &mut [&mut alice, &mut bob],
        &mut [&mut carol, &mut dave, &mut eve],
    );
}

// covers: IOP-WF-1
#[test]
fn blindcall_refuses_handshakes_sent_as_private_message() {
    let now = Instant::now();
    let suite = MlsSuite::X25519Aes128Ed25519;
    let mut carol = rs_member_with("carol", suite, true, true);
    let call = CallConfig {
        mls_suite: suite,
        extra_hosts: vec![carol.signature_key()],
        ..CallConfig::default()
    };
    let mut alice =
        CallGroup::create(Client::new("alice", suite).unwrap(), &call, local(), now).unwrap();
    let pc = alice.add_members(&[&carol.key_package()]).unwrap();
    let welcome = pc.welcome().unwrap().to_vec();
    pc.confirm(&mut alice, now).unwrap();
    carol.join(&welcome);
    exchange_all(&mut [&mut alice], &mut [&mut carol]);

    // Unaligned: mls-rs's default encrypts handshakes; blindcall takes PublicMessage only.
    let commit = carol.commit_update();
    let err = alice.handle_message(now, &commit).unwrap_err();
    assert!(
        matches!(err, Error::InvalidMessage(InvalidMessage::Rejected(_)))
            && format!("{err:?}").contains("IncompatibleWireFormat"),
        "{err:?}"
    );
    assert_eq!(alice.epoch(), 1);
    carol.discard();
    exchange_all(&mut [&mut alice], &mut [&mut carol]);
}

// covers: IOP-JOIN-3
#[test]
fn blindcall_refuses_a_group_without_call_parameters() {
    let now = Instant::now();
    let suite = MlsSuite::X25519Aes128Ed25519;
    let mut carol = rs_member("carol", suite);
    carol.create_plain();
    let alice = Client::new("alice", suite).unwrap();
    let (_, welcome) = carol.commit_add(&[&alice.key_package().unwrap()]);
    carol.confirm();
    let err = CallGroup::join(alice, &welcome, local(), now).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidMessage(InvalidMessage::CallParams {
                field: "extension_missing"
            })
        ),
        "{err:?}"
    );
}

// covers: IOP-JOIN-4
#[test]
fn members_that_cannot_read_the_call_parameters_are_refused_on_both_sides() {
    let now = Instant::now();
    let suite = MlsSuite::X25519Aes128Ed25519;
    let call = CallConfig {
        mls_suite: suite,
        ..CallConfig::default()
    };

    // openmls (blindcall host) refuses an mls-rs KeyPackage that does not list 0xF0BC.
    let carol = rs_member_with("carol", suite, false, false);
    let mut alice =
        CallGroup::create(Client::new("alice", suite).unwrap(), &call, local(), now).unwrap();
    let err = alice.add_members(&[&carol.key_package()]).unwrap_err();
    assert!(
        matches!(err, Error::Mls(MlsFailure::CreateCommit(_)))
            && format!("{err:?}").contains("InsufficientCapabilities"),
        "{err:?}"
    );
    assert!(!alice.has_pending_commit());
    assert_eq!(alice.epoch(), 0);

    // mls-rs refuses to create a group carrying 0xF0BC unless its own leaf declares it.
    let mut dave = rs_member_with("dave", suite, false, false);
    let params = CallParams::from_config(&call, &dave.signature_key()).unwrap();
    let err = dave.try_create(&params).unwrap_err();
    assert!(
        format!("{err:?}").contains("UnsupportedGroupExtension"),
        "{err:?}"
    );
}
