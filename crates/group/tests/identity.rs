//! Identity keys: a participant's signature key kept across calls, and the codes built on it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_group::code::MIN_GROUPS;
use blindcall_group::{
    ApiMisuse, CallConfig, CallGroup, Client, Error, IdentityKey, IdentityKeyError, MemberConfig,
    MlsSuite, SecurityCode,
};
use common::Room;

// covers: GRP-ID-2
#[test]
fn identity_keys_round_trip_and_damage_is_refused() {
    for suite in [MlsSuite::X25519Aes128Ed25519, MlsSuite::P256Aes128] {
        let key = IdentityKey::generate(suite).unwrap();
        let bytes = key.to_bytes().unwrap();
        let back = IdentityKey::from_bytes(&bytes).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        assert_eq!(back.suite(), suite);
        // Debug shows no secret: only a prefix of the public key.
        let shown = format!("{key:?}");
        assert!(
            !shown.contains(&hex::encode(&bytes[bytes.len() - 8..])),
            "{shown}"
        );

        assert_eq!(
            IdentityKey::from_bytes(b"NOPE").unwrap_err(),
            IdentityKeyError::NotAnIdentityKey
        );
        for cut in 0..bytes.len() {
            assert!(
                IdentityKey::from_bytes(&bytes[..cut]).is_err(),
                "prefix {cut}"
            );
        }
        let mut version = bytes.to_vec();
        version[4] = 9;
        assert_eq!(
            IdentityKey::from_bytes(&version).unwrap_err(),
            IdentityKeyError::UnsupportedVersion(9)
        );
        let mut suite_id = bytes.to_vec();
        suite_id[5..7].copy_from_slice(&77u16.to_be_bytes());
        assert_eq!(
            IdentityKey::from_bytes(&suite_id).unwrap_err(),
            IdentityKeyError::UnknownSuite(77)
        );
        // Every single-byte change of the key pair is refused (parse, scheme or self-check).
        for i in 7..bytes.len() {
            let mut bad = bytes.to_vec();
            bad[i] ^= 0x01;
            assert!(
                IdentityKey::from_bytes(&bad).is_err(),
                "byte {i} flipped was accepted"
            );
        }
    }
    // A key of one suite labelled as the other is corrupt.
    let ed = IdentityKey::generate(MlsSuite::X25519Aes128Ed25519).unwrap();
    let mut relabelled = ed.to_bytes().unwrap().to_vec();
    relabelled[5..7].copy_from_slice(&2u16.to_be_bytes());
    assert_eq!(
        IdentityKey::from_bytes(&relabelled).unwrap_err(),
        IdentityKeyError::Corrupt
    );
}

// covers: GRP-ID-2
#[test]
fn the_same_identity_key_signs_in_every_call() {
    let key = IdentityKey::generate(MlsSuite::default()).unwrap();
    let now = std::time::Instant::now();
    for _ in 0..2 {
        let client = Client::with_identity("alice", &key).unwrap();
        assert_eq!(client.signature_key(), key.public_key());
        let group = CallGroup::create(client, &CallConfig::default(), MemberConfig::default(), now)
            .unwrap();
        assert!(group.is_host());
        assert_eq!(group.roster().members()[0].signature_key, key.public_key());
    }
}

// covers: GRP-ID-3
#[test]
fn a_second_leaf_with_a_members_identity_key_is_refused() {
    let mut r = Room::with_members(
        &["alice", "bob"],
        CallConfig::default(),
        MemberConfig::default(),
    );
    // Two KeyPackages of one identity key (e.g. a copy of an identity file on two devices).
    let key = IdentityKey::generate(MlsSuite::default()).unwrap();
    let twin_a = Client::with_identity("carol", &key).unwrap();
    let twin_b = Client::with_identity("carol (laptop)", &key).unwrap();
    let kp_a = twin_a.key_package().unwrap();
    let kp_b = twin_b.key_package().unwrap();
    let err = r.get_mut("alice").add_members(&[&kp_a, &kp_b]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Policy(blindcall_group::PolicyViolation::DuplicateIdentityKey { .. })
        ),
        "{err:?}"
    );
    let pc = r.get_mut("alice").add_members(&[&kp_a]).unwrap();
    r.commit("alice", pc);
    let err = r.get_mut("alice").add_members(&[&kp_b]).unwrap_err();
    assert!(
        matches!(err, Error::Policy(blindcall_group::PolicyViolation::DuplicateIdentityKey { ref identity }) if identity == "carol (laptop)"),
        "{err:?}"
    );
}

// covers: GRP-CODE-3
#[test]
fn pairwise_codes_match_on_both_sides_across_calls() {
    let a = IdentityKey::generate(MlsSuite::default()).unwrap();
    let b = IdentityKey::generate(MlsSuite::default()).unwrap();
    let c = IdentityKey::generate(MlsSuite::default()).unwrap();
    let ab = SecurityCode::pairwise(a.public_key(), b.public_key());
    assert_eq!(ab, SecurityCode::pairwise(b.public_key(), a.public_key()));
    assert_ne!(ab, SecurityCode::pairwise(a.public_key(), c.public_key()));
    // Stable across reloads of the identity files.
    let a2 = IdentityKey::from_bytes(&a.to_bytes().unwrap()).unwrap();
    assert_eq!(ab, SecurityCode::pairwise(a2.public_key(), b.public_key()));
}

// covers: GRP-CODE-4
#[test]
fn a_security_code_below_the_floor_is_refused() {
    let now = std::time::Instant::now();
    for groups in [0, 1, MIN_GROUPS - 1] {
        let local = MemberConfig {
            security_code_groups: groups,
            ..MemberConfig::default()
        };
        let client = Client::new("alice", MlsSuite::default()).unwrap();
        let err = CallGroup::create(client, &CallConfig::default(), local, now).unwrap_err();
        assert!(
            matches!(err, Error::ApiMisuse(ApiMisuse::InvalidConfig)),
            "{err:?}"
        );
    }
    let local = MemberConfig {
        security_code_groups: MIN_GROUPS,
        ..MemberConfig::default()
    };
    let client = Client::new("alice", MlsSuite::default()).unwrap();
    let g = CallGroup::create(client, &CallConfig::default(), local, now).unwrap();
    assert_eq!(g.security_code().groups().len(), usize::from(MIN_GROUPS));
}
