//! Availability caps: KeyPackage size, identity size, waiting entries, connections, early
//! frames, peer messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_proto::*;
use blindcall_relay::*;
use common::*;
use openmls::prelude::*;

const ROOM: &[u8] = b"room-caps";

/// A valid KeyPackage of about `size` bytes (a basic credential with a huge identity).
fn huge_key_package(size: usize) -> Vec<u8> {
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let signer = openmls_basic_credential::SignatureKeyPair::new(CS.signature_algorithm()).unwrap();
    let cwk = CredentialWithKey {
        credential: BasicCredential::new(vec![b'x'; size]).into(),
        signature_key: signer.public().into(),
    };
    let bundle = KeyPackage::builder()
        .build(CS, &provider, &signer, cwk)
        .unwrap();
    out_bytes(bundle.key_package().clone())
}

#[test]
fn big_key_packages_on_one_token_never_hide_an_honest_joiner() {
    let mut net = Net::new();
    let mut host = room_with_host(&mut net, ROOM, 1);
    // Two connections with one guest token each publish a 600 kB KeyPackage and ask to join.
    for _ in 0..2 {
        let (conn, body) = net.hello(ROOM, &mint(ROOM, Role::GUEST, T0 + 3600, 7), "m");
        assert!(matches!(body, Body::HelloAck(_)));
        net.send(
            conn,
            Body::PublishKeyPackage(PublishKeyPackage {
                key_package: VLBytes::new(huge_key_package(600_000)),
                join_proof: None,
            }),
        );
        net.send(conn, Body::JoinRequest);
    }
    let honest = waiting_guest(&mut net, ROOM, 2, "honest");
    let bodies = host.pump(&mut net);
    let internal: Vec<&Body> = bodies
        .iter()
        .filter(|b| matches!(b, Body::Error(e) if e.code == ErrorCode::INTERNAL))
        .collect();
    assert!(
        internal.is_empty(),
        "the relay answered INTERNAL: {internal:?}"
    );
    assert_eq!(net.ds.counters().internal_faults, 0);
    assert!(
        waiting_kps(&bodies)
            .iter()
            .any(|(c, _)| *c == honest.conn.0),
        "the honest joiner never reached the host"
    );
}
