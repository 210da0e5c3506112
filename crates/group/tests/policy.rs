//! Admission policy: enforced by every member's client; the relay may only propose removals.
//! "Mallory" is a member running raw openmls (not our client), so she can send what our
//! client would refuse to create.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_group::{
    Actor, AddRule, CallConfig, Client, Error, Event, InvalidMessage, MemberConfig, MlsSuite,
    PolicyViolation, ProposalKind, RelaySender,
};
use common::Room;
use common::raw::Raw;
use openmls::prelude::{
    BasicCredential, Capabilities, CredentialWithKey, ExtensionType, Extensions, ExternalProposal,
    GroupEpoch, GroupId, JoinProposal, KeyPackage, LeafNodeIndex, LeafNodeParameters,
    MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY, MlsGroup, MlsGroupJoinConfig, MlsMessageBodyIn,
    MlsMessageIn, MlsMessageOut, PURE_PLAINTEXT_WIRE_FORMAT_POLICY, SenderExtensionIndex,
    tls_codec::{Deserialize as _, Serialize as _},
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::{MemoryStorage, OpenMlsRustCrypto};
use openmls_traits::OpenMlsProvider as _;

const CALL_EXT: u16 = blindcall_group::config::CALL_PARAMS_EXTENSION_TYPE;

fn bytes(m: &MlsMessageOut) -> Vec<u8> {
    m.tls_serialize_detached().unwrap()
}

fn kp_bytes(kp: KeyPackage) -> Vec<u8> {
    bytes(&MlsMessageOut::from(kp))
}

/// alice (host), bob, and mallory (raw openmls) in a call.
fn room_with_mallory(call: CallConfig) -> (Room, Raw, MlsGroup) {
    let mut r = Room::with_members(&["alice", "bob"], call, MemberConfig::default());
    let mallory = Raw::new("mallory");
    let kp = kp_bytes(mallory.key_package());
    let pc = r.get_mut("alice").add_members(&[&kp]).unwrap();
    let welcome = pc.welcome().unwrap().to_vec();
    r.commit("alice", pc);
    let group = mallory.join(&welcome);
    r.assert_converged();
    (r, mallory, group)
}

fn expect_add_refused(errors: &[(String, Error)], proposer: &Actor, added: &str) {
    assert_eq!(
        errors.len(),
        2,
        "both alice and bob must refuse: {errors:?}"
    );
    for (_, e) in errors {
        match e {
            Error::Policy(PolicyViolation::AddNotAllowed {
                proposer: p,
                added: a,
            }) => {
                assert_eq!((p, a.as_str()), (proposer, added));
            }
            other => panic!("expected AddNotAllowed, got {other:?}"),
        }
    }
}

// covers: GRP-POL-2, GRP-POL-3
#[test]
fn non_host_add_is_refused_locally_and_by_every_other_member() {
    let (mut r, mallory, mut mgroup) = room_with_mallory(CallConfig::default());
    let epoch = r.get("alice").epoch();
    // Bob (our client, not a host) cannot even create the commit.
    let eve = Raw::new("eve");
    let eve_kp = kp_bytes(eve.key_package());
    let err = r.get_mut("bob").add_members(&[&eve_kp]).unwrap_err();
    assert!(
        matches!(err, Error::Policy(PolicyViolation::AddNotAllowed { ref added, .. }) if added == "eve")
    );
    assert!(!r.get("bob").has_pending_commit());

    // Mallory (raw openmls) commits an Add anyway: nobody merges it.
    let mallory_leaf = mgroup.own_leaf_index().u32();
    let (commit, _welcome, _gi) = mgroup
        .add_members(&mallory.provider, &mallory.signer, &[eve.key_package()])
        .unwrap();
    let errors = r.broadcast_except("mallory", &bytes(&commit));
    let proposer = Actor::Member {
        leaf: mallory_leaf,
        identity: "mallory".into(),
    };
    expect_add_refused(&errors, &proposer, "eve");
    let msg = errors[0].1.to_string();
    assert!(
        msg.contains("mallory") && msg.contains("eve"),
        "error must name both: {msg}"
    );
    assert_eq!(r.get("alice").epoch(), epoch);
    assert_eq!(r.get("bob").roster().len(), 3);
    mgroup
        .clear_pending_commit(mallory.provider.storage())
        .unwrap();

    // Her Add proposal is refused too, and not queued.
    let (proposal, _) = mgroup
        .propose_add_member(&mallory.provider, &mallory.signer, &eve.key_package())
        .unwrap();
    let errors = r.broadcast_except("mallory", &bytes(&proposal));
    expect_add_refused(&errors, &proposer, "eve");
    r.drain();
    assert!(
        !r.events
            .get("alice")
            .is_some_and(|es| es.iter().any(|e| matches!(e, Event::ProposalQueued { .. })))
    );

    // The host's own add still works, and the call goes on.
    let pc = r.get_mut("alice").add_members(&[&eve_kp]).unwrap();
    r.commit("alice", pc);
    assert_eq!(r.get("bob").roster().len(), 4);
}

// covers: GRP-POL-4
#[test]
fn non_host_cannot_remove_others_but_hosts_can() {
    let (mut r, mallory, mut mgroup) = room_with_mallory(CallConfig::default());
    let bob_leaf = r.get("bob").own_leaf();
    let alice_leaf = r.get("alice").own_leaf();
    let err = r.get_mut("bob").remove_members(&[alice_leaf]).unwrap_err();
    assert!(matches!(
        err,
        Error::Policy(PolicyViolation::RemoveNotAllowed { .. })
    ));
    let (commit, _, _) = mgroup
        .remove_members(
            &mallory.provider,
            &mallory.signer,
            &[LeafNodeIndex::new(bob_leaf)],
        )
        .unwrap();
    let errors = r.broadcast_except("mallory", &bytes(&commit));
    assert_eq!(errors.len(), 2);
    for (_, e) in &errors {
        assert!(
            matches!(e, Error::Policy(PolicyViolation::RemoveNotAllowed { removed: Actor::Member { identity, .. }, .. }) if identity == "bob"),
            "{e:?}"
        );
    }
    assert!(r.get("bob").is_active());
    // With AnyMember rules both are allowed.
    let call = CallConfig {
        add_rule: AddRule::AnyMember,
        remove_rule: blindcall_group::RemoveRule::AnyMember,
        ..CallConfig::default()
    };
    let mut open = Room::with_members(&["alice", "bob", "carol"], call, MemberConfig::default());
    open.add("bob", &["dave"]);
    open.remove("bob", "carol");
    open.assert_converged();
    assert_eq!(open.get("alice").roster().len(), 3);
}

fn relay_config(relay: &SignatureKeyPair) -> CallConfig {
    CallConfig {
        relay: Some(RelaySender {
            signature_key: relay.public().to_vec(),
            identity: b"relay".to_vec(),
        }),
        ..CallConfig::default()
    }
}

// covers: GRP-POL-5
#[test]
fn relay_may_propose_removals_but_never_adds() {
    let relay =
        SignatureKeyPair::new(MlsSuite::default().ciphersuite().signature_algorithm()).unwrap();
    let mut r = Room::with_members(
        &["alice", "bob", "carol"],
        relay_config(&relay),
        MemberConfig::default(),
    );
    let gid = GroupId::from_slice(r.get("alice").group_id());
    let epoch = GroupEpoch::from(r.get("alice").epoch());

    // Relay-made Add: refused by everyone.
    let eve = Raw::new("eve");
    let add = ExternalProposal::new_add::<OpenMlsRustCrypto>(
        eve.key_package(),
        gid.clone(),
        epoch,
        &relay,
        SenderExtensionIndex::new(0),
    )
    .unwrap();
    let errors = r.broadcast_except("", &bytes(&add));
    assert_eq!(errors.len(), 3);
    for (_, e) in &errors {
        assert!(
            matches!(e, Error::Policy(PolicyViolation::AddNotAllowed { proposer: Actor::ExternalSender { index: 0 }, added }) if added == "eve"),
            "{e:?}"
        );
    }

    // Relay-made group-context change: refused.
    let gce = ExternalProposal::new_group_context_extensions::<OpenMlsRustCrypto>(
        Extensions::empty(),
        gid.clone(),
        epoch,
        &relay,
        SenderExtensionIndex::new(0),
    )
    .unwrap();
    let errors = r.broadcast_except("", &bytes(&gce));
    assert!(
        errors.iter().all(|(_, e)| matches!(
            e,
            Error::Policy(PolicyViolation::ProposalNotAccepted {
                kind: ProposalKind::GroupContextExtensions,
                ..
            })
        )),
        "{errors:?}"
    );

    // A join request from outside: refused.
    let join =
        JoinProposal::new::<MemoryStorage>(eve.key_package(), gid.clone(), epoch, &eve.signer)
            .unwrap();
    let errors = r.broadcast_except("", &bytes(&join));
    assert!(
        errors.iter().all(|(_, e)| matches!(
            e,
            Error::Policy(PolicyViolation::AddNotAllowed {
                proposer: Actor::NewMember,
                ..
            })
        )),
        "{errors:?}"
    );

    // A proposal signed by someone who is not the configured relay: refused by MLS validation.
    let impostor =
        SignatureKeyPair::new(MlsSuite::default().ciphersuite().signature_algorithm()).unwrap();
    let carol_leaf = LeafNodeIndex::new(r.get("carol").own_leaf());
    let fake = ExternalProposal::new_remove::<OpenMlsRustCrypto>(
        carol_leaf,
        gid.clone(),
        epoch,
        &impostor,
        SenderExtensionIndex::new(0),
    )
    .unwrap();
    let errors = r.broadcast_except("", &bytes(&fake));
    assert!(
        errors
            .iter()
            .all(|(_, e)| matches!(e, Error::InvalidMessage(InvalidMessage::Rejected(_)))),
        "{errors:?}"
    );

    // Relay-made Remove (carol disconnected): queued by all, committed by a non-host.
    let remove = ExternalProposal::new_remove::<OpenMlsRustCrypto>(
        carol_leaf,
        gid,
        epoch,
        &relay,
        SenderExtensionIndex::new(0),
    )
    .unwrap();
    let errors = r.broadcast_except("", &bytes(&remove));
    assert!(errors.is_empty(), "{errors:?}");
    let ev = r.take_events("bob");
    let carol_leaf = r.get("carol").own_leaf();
    assert!(ev.contains(&Event::ProposalQueued {
        proposer: Actor::ExternalSender { index: 0 },
        kind: ProposalKind::Remove,
        removed: Some(carol_leaf),
    }));
    let pc = r.get_mut("bob").commit_pending_proposals().unwrap();
    r.commit("bob", pc);
    assert!(!r.get("carol").is_active());
    r.assert_converged();
    assert_eq!(r.get("alice").roster().len(), 2);
}

// covers: GRP-POL-5
#[test]
fn external_commit_join_is_refused() {
    let mut r = Room::with_members(
        &["alice", "bob"],
        CallConfig::default(),
        MemberConfig::default(),
    );
    let epoch = r.get("alice").epoch();
    let gi = r.get("alice").group_info().unwrap();
    let MlsMessageBodyIn::GroupInfo(vgi) =
        MlsMessageIn::tls_deserialize_exact(&gi).unwrap().extract()
    else {
        panic!("not a GroupInfo")
    };
    let eve = Raw::new("eve");
    let cfg = MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
        .build();
    let caps = Capabilities::builder()
        .extensions(vec![ExtensionType::Unknown(CALL_EXT)])
        .build();
    let (_group, bundle) = MlsGroup::external_commit_builder()
        .with_config(cfg)
        .build_group(&eve.provider, vgi, eve.credential.clone())
        .unwrap()
        .leaf_node_parameters(
            LeafNodeParameters::builder()
                .with_capabilities(caps)
                .build(),
        )
        .load_psks(eve.provider.storage())
        .unwrap()
        .build(
            eve.provider.rand(),
            eve.provider.crypto(),
            &eve.signer,
            |_| true,
        )
        .unwrap()
        .finalize(&eve.provider)
        .unwrap();
    let errors = r.broadcast_except("", &bytes(&bundle.into_commit()));
    assert_eq!(errors.len(), 2, "{errors:?}");
    for (_, e) in &errors {
        assert!(
            matches!(
                e,
                Error::Policy(PolicyViolation::CommitByNonMember {
                    committer: Actor::NewMember
                })
            ),
            "{e:?}"
        );
    }
    assert_eq!(r.get("bob").epoch(), epoch);
    assert_eq!(r.get("bob").roster().len(), 2);
}

// covers: GRP-WIRE-1
#[test]
fn handshakes_as_private_messages_are_refused() {
    let (mut r, mallory, mut mgroup) = room_with_mallory(CallConfig::default());
    let epoch = r.get("alice").epoch();
    let ciphertext = MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .wire_format_policy(MIXED_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .build();
    mgroup
        .set_configuration(mallory.provider.storage(), &ciphertext)
        .unwrap();
    let bundle = mgroup
        .self_update(
            &mallory.provider,
            &mallory.signer,
            LeafNodeParameters::default(),
        )
        .unwrap();
    let commit = bytes(&bundle.into_commit());
    assert_eq!(&commit[2..4], &[0, 2], "mallory sends a PrivateMessage");
    let errors = r.broadcast_except("mallory", &commit);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|(_, e)| matches!(e, Error::InvalidMessage(_))),
        "{errors:?}"
    );
    assert_eq!(r.get("bob").epoch(), epoch);
}

// covers: GRP-POL-6, GRP-POL-8
#[test]
fn other_proposal_kinds_and_bad_credentials_are_refused() {
    let (mut r, mallory, mut mgroup) = room_with_mallory(CallConfig::default());
    // A GroupContextExtensions proposal from a member (even trying to make herself host).
    let (gce, _) = mgroup
        .propose_group_context_extensions(&mallory.provider, Extensions::empty(), &mallory.signer)
        .unwrap();
    let errors = r.broadcast_except("mallory", &bytes(&gce));
    assert!(
        errors.iter().all(|(_, e)| matches!(
            e,
            Error::Policy(PolicyViolation::ProposalNotAccepted { .. })
        )),
        "{errors:?}"
    );
    mgroup
        .clear_pending_proposals(mallory.provider.storage())
        .unwrap();

    // A host trying to add a KeyPackage whose identity is not valid UTF-8 is refused locally.
    let bad = Raw::new("x");
    let bad_cred = CredentialWithKey {
        credential: BasicCredential::new(vec![0xff, 0xfe]).into(),
        signature_key: bad.signer.public().into(),
    };
    let kp = KeyPackage::builder()
        .leaf_node_capabilities(
            Capabilities::builder()
                .extensions(vec![ExtensionType::Unknown(CALL_EXT)])
                .build(),
        )
        .build(
            MlsSuite::default().ciphersuite(),
            &bad.provider,
            &bad.signer,
            bad_cred,
        )
        .unwrap()
        .key_package()
        .clone();
    let err = r
        .get_mut("alice")
        .add_members(&[&kp_bytes(kp)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Policy(PolicyViolation::InvalidCredential { .. })
        ),
        "{err:?}"
    );

    // A KeyPackage without the call-parameters capability cannot be added (MLS rejects it).
    let plain = Raw::new("plain");
    let kp = KeyPackage::builder()
        .build(
            MlsSuite::default().ciphersuite(),
            &plain.provider,
            &plain.signer,
            plain.credential.clone(),
        )
        .unwrap()
        .key_package()
        .clone();
    assert!(r.get_mut("alice").add_members(&[&kp_bytes(kp)]).is_err());
    assert!(!r.get("alice").has_pending_commit());
}

// covers: GRP-POL-7
#[test]
fn call_size_is_capped_by_max_members() {
    let call = CallConfig {
        max_members: 3,
        ..CallConfig::default()
    };
    let mut r = Room::with_members(&["alice", "bob", "carol"], call, MemberConfig::default());
    let dave = Client::new("dave", MlsSuite::default()).unwrap();
    let kp = dave.key_package().unwrap();
    let err = r.get_mut("alice").add_members(&[&kp]).unwrap_err();
    assert!(matches!(
        err,
        Error::Policy(PolicyViolation::CallFull {
            max: 3,
            would_have: 4
        })
    ));
    assert_eq!(r.get("alice").params().layout.sender_bits(), 2);
}

// covers: GRP-POL-9
#[test]
fn a_welcome_from_a_non_host_is_refused_by_the_joiner() {
    use std::time::Instant;

    let (_r, mallory, mut mgroup) = room_with_mallory(CallConfig::default());
    // Erin runs our client; mallory (not a host) adds her with raw openmls.
    let erin = Client::new("erin", MlsSuite::default()).unwrap();
    let kp = erin.key_package().unwrap();
    let MlsMessageBodyIn::KeyPackage(kp_in) =
        MlsMessageIn::tls_deserialize_exact(&kp).unwrap().extract()
    else {
        panic!("not a key package")
    };
    let kp = kp_in
        .validate(
            mallory.provider.crypto(),
            openmls::prelude::ProtocolVersion::Mls10,
        )
        .unwrap();
    let mallory_leaf = mgroup.own_leaf_index().u32();
    let (_commit, welcome, _gi) = mgroup
        .add_members(&mallory.provider, &mallory.signer, &[kp])
        .unwrap();
    let err = blindcall_group::CallGroup::join(
        erin,
        &bytes(&welcome),
        MemberConfig::default(),
        Instant::now(),
    )
    .map(|_| ())
    .unwrap_err();
    match err {
        Error::Policy(PolicyViolation::AddNotAllowed { proposer, added }) => {
            assert_eq!(
                proposer,
                Actor::Member {
                    leaf: mallory_leaf,
                    identity: "mallory".into()
                }
            );
            assert_eq!(added, "erin");
        }
        other => panic!("expected AddNotAllowed, got {other:?}"),
    }
}

fn expect_identity_change_refused(errors: &[(String, Error)], leaf: u32) {
    assert_eq!(
        errors.len(),
        2,
        "alice and bob must both refuse: {errors:?}"
    );
    for (who, e) in errors {
        assert!(
            matches!(
                e,
                Error::Policy(PolicyViolation::IdentityChanged { leaf: l, identity, .. })
                    if *l == leaf && identity == "mallory"
            ),
            "{who}: expected IdentityChanged for mallory, got {e:?}"
        );
    }
}

// covers: GRP-ID-1
#[test]
fn a_member_cannot_rename_itself_by_commit_or_proposal() {
    let (mut r, mallory, mut mgroup) = room_with_mallory(CallConfig::default());
    let epoch = r.get("alice").epoch();
    let leaf = mgroup.own_leaf_index().u32();
    let as_alice = CredentialWithKey {
        credential: BasicCredential::new(b"alice".to_vec()).into(),
        signature_key: mallory.signer.public().into(),
    };
    // A self-update whose path leaf carries the host's name, same key.
    let bundle = mgroup
        .self_update(
            &mallory.provider,
            &mallory.signer,
            LeafNodeParameters::builder()
                .with_credential_with_key(as_alice.clone())
                .build(),
        )
        .unwrap();
    let errors = r.broadcast_except("mallory", &bytes(&bundle.into_commit()));
    expect_identity_change_refused(&errors, leaf);
    mgroup
        .clear_pending_commit(mallory.provider.storage())
        .unwrap();

    // Same name, a new signature key: the identity key is the identity, so also refused.
    let new_key =
        SignatureKeyPair::new(MlsSuite::default().ciphersuite().signature_algorithm()).unwrap();
    let rekeyed = CredentialWithKey {
        credential: BasicCredential::new(b"mallory".to_vec()).into(),
        signature_key: new_key.public().into(),
    };
    let bundle = mgroup
        .self_update_with_new_signer(
            &mallory.provider,
            &mallory.signer,
            openmls::prelude::NewSignerBundle {
                signer: &new_key,
                credential_with_key: rekeyed.clone(),
            },
            LeafNodeParameters::builder()
                .with_credential_with_key(rekeyed)
                .build(),
        )
        .unwrap();
    let errors = r.broadcast_except("mallory", &bytes(&bundle.into_commit()));
    expect_identity_change_refused(&errors, leaf);
    mgroup
        .clear_pending_commit(mallory.provider.storage())
        .unwrap();

    // An Update proposal renaming the leaf is refused and never queued.
    let (proposal, _) = mgroup
        .propose_self_update(
            &mallory.provider,
            &mallory.signer,
            LeafNodeParameters::builder()
                .with_credential_with_key(as_alice)
                .build(),
        )
        .unwrap();
    let errors = r.broadcast_except("mallory", &bytes(&proposal));
    expect_identity_change_refused(&errors, leaf);
    r.drain();
    assert!(
        !r.events
            .get("alice")
            .is_some_and(|es| es.iter().any(|e| matches!(e, Event::ProposalQueued { .. })))
    );
    assert_eq!(r.get("bob").epoch(), epoch);
    let names: Vec<&str> = r
        .get("bob")
        .roster()
        .members()
        .iter()
        .map(|m| &*m.identity)
        .collect();
    assert_eq!(names, ["alice", "bob", "mallory"]);
    // Our own client's self-update (same identity) still goes through.
    let pc = r.get_mut("bob").self_update().unwrap();
    r.commit("bob", pc);
    r.assert_converged();
}
