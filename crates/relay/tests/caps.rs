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

// covers: DS-KP-3, CP-WAIT-1
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
    // The big ones were refused at publish with a typed error, and counted.
    assert_eq!(
        net.ds.counters().errors(ErrorCode::KEY_PACKAGE_TOO_LARGE),
        2
    );
    assert_eq!(waiting_kps(&bodies).len(), 1);
}

fn publish(net: &mut Net, conn: ConnId, kp: Vec<u8>) -> Body {
    net.send(
        conn,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(kp),
            join_proof: None,
        }),
    );
    net.last(conn)
}

/// A KeyPackage with a basic credential of `identity`, with the blindcall capabilities.
fn key_package_named(identity: Vec<u8>) -> Vec<u8> {
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let signer = openmls_basic_credential::SignatureKeyPair::new(CS.signature_algorithm()).unwrap();
    let cwk = CredentialWithKey {
        credential: BasicCredential::new(identity).into(),
        signature_key: signer.public().into(),
    };
    let bundle = KeyPackage::builder()
        .leaf_node_capabilities(capabilities())
        .build(CS, &provider, &signer, cwk)
        .unwrap();
    out_bytes(bundle.key_package().clone())
}

fn code(b: Body) -> ErrorCode {
    match b {
        Body::Error(e) => e.code,
        other => panic!("expected an Error, got {other:?}"),
    }
}

// covers: DS-KP-3
#[test]
fn key_package_size_and_credential_are_checked_at_publish() {
    let mut cfg = config();
    cfg.max_key_package_len = 2_000;
    let mut net = Net::with(cfg);
    let _host = room_with_host(&mut net, ROOM, 1);
    let g = Client::connect(&mut net, ROOM, Role::GUEST, 2, "g");
    assert_eq!(
        code(publish(&mut net, g.conn, huge_key_package(3_000))),
        ErrorCode::KEY_PACKAGE_TOO_LARGE
    );
    // Under the size cap, the identity rules members apply: 1..=255 bytes of UTF-8.
    for bad in [vec![b'x'; 256], vec![], vec![0xff, 0xfe]] {
        assert_eq!(
            code(publish(&mut net, g.conn, key_package_named(bad))),
            ErrorCode::INVALID_KEY_PACKAGE
        );
    }
    assert!(matches!(
        publish(&mut net, g.conn, key_package_named(vec![b'x'; 255])),
        Body::KeyPackageAccepted(_)
    ));
    assert_eq!(
        net.ds.counters().errors(ErrorCode::KEY_PACKAGE_TOO_LARGE),
        1
    );
    assert_eq!(net.ds.counters().errors(ErrorCode::INVALID_KEY_PACKAGE), 3);
}

/// A guest with token `id` publishes and asks to join; returns what the JoinRequest got.
fn join(net: &mut Net, id: u8) -> (ConnId, Body) {
    let c = Client::connect(net, ROOM, Role::GUEST, id, "g");
    assert!(matches!(
        publish(net, c.conn, c.key_package()),
        Body::KeyPackageAccepted(_)
    ));
    net.send(c.conn, Body::JoinRequest);
    (c.conn, net.last(c.conn))
}

// covers: DS-WAIT-6
#[test]
fn the_waiting_room_is_capped_per_token_and_per_room() {
    let defaults = config();
    // One shared guest token can still bring a 100-person meeting through the waiting room.
    assert!(defaults.max_waiting_per_token >= 100);
    assert!(defaults.max_waiting_per_room > defaults.max_waiting_per_token);
    let mut cfg = config();
    cfg.max_waiting_per_token = 2;
    cfg.max_waiting_per_room = 3;
    let mut net = Net::with(cfg);
    let _host = room_with_host(&mut net, ROOM, 1);
    let full = Body::Refused(Refused {
        reason: RefusedReason::WAITING_ROOM_FULL,
    });
    assert!(matches!(join(&mut net, 7).1, Body::RoomStateUpdate(_)));
    assert!(matches!(join(&mut net, 7).1, Body::RoomStateUpdate(_)));
    let (conn, body) = join(&mut net, 7);
    assert_eq!(body, full);
    assert!(net.closed.contains_key(&conn));
    // Another token still gets in, until the room's cap.
    assert!(matches!(join(&mut net, 8).1, Body::RoomStateUpdate(_)));
    assert_eq!(join(&mut net, 9).1, full);
    assert_eq!(
        net.ds.counters().refused(RefusedReason::WAITING_ROOM_FULL),
        2
    );
    assert_eq!(net.ds.occupancy().waiting, 3);
}

// covers: ADM-CONN-1
#[test]
fn one_token_holds_at_most_its_share_of_connections() {
    let defaults = config();
    assert!(defaults.max_connections_per_token > defaults.max_waiting_per_token);
    let mut cfg = config();
    cfg.max_connections_per_token = 2;
    let mut net = Net::with(cfg);
    let token = mint(ROOM, Role::GUEST, T0 + 3600, 5);
    let (c1, b1) = net.hello(ROOM, &token, "a");
    let (_c2, b2) = net.hello(ROOM, &token, "b");
    assert!(matches!(b1, Body::HelloAck(_)));
    assert!(matches!(b2, Body::HelloAck(_)));
    let (c3, b3) = net.hello(ROOM, &token, "c");
    assert_eq!(
        b3,
        Body::Refused(Refused {
            reason: RefusedReason::TOO_MANY_CONNECTIONS
        })
    );
    assert!(net.closed.contains_key(&c3));
    // Other tokens are not affected; a slot frees when a connection ends.
    let (_, other) = net.hello(ROOM, &mint(ROOM, Role::GUEST, T0 + 3600, 6), "d");
    assert!(matches!(other, Body::HelloAck(_)));
    net.close(c1);
    let (_, again) = net.hello(ROOM, &token, "e");
    assert!(matches!(again, Body::HelloAck(_)));
    assert_eq!(
        net.ds
            .counters()
            .refused(RefusedReason::TOO_MANY_CONNECTIONS),
        1
    );
}

// covers: CP-FRAME-3
#[test]
fn before_hello_only_small_frames_are_read() {
    let mut net = Net::new();
    // An unauthenticated connection announcing a 5 KiB frame is refused at the header.
    let id = net.open();
    net.raw(id, &5_000u32.to_be_bytes());
    assert_eq!(code(net.last(id)), ErrorCode::FRAME_TOO_LARGE);
    assert_eq!(
        net.closed.get(&id),
        Some(&CloseReason::Protocol(ErrorCode::FRAME_TOO_LARGE))
    );
    // Once admitted, the full limit applies (a 600 kB KeyPackage gets its own typed refusal).
    let g = Client::connect(&mut net, ROOM, Role::GUEST, 2, "g");
    assert_eq!(
        code(publish(&mut net, g.conn, huge_key_package(600_000))),
        ErrorCode::KEY_PACKAGE_TOO_LARGE
    );
    // A Hello and a large message in one read: the limit is raised between them.
    let id = net.open();
    let mut bytes = ControlMessage::new(Body::Hello(Hello {
        room_id: VLBytes::new(ROOM.to_vec()),
        token: VLBytes::new(mint(ROOM, Role::GUEST, T0 + 3600, 3)),
        display_name: VLBytes::new(b"h".to_vec()),
    }))
    .to_frame(u32::MAX)
    .unwrap();
    bytes.extend(
        ControlMessage::new(Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(huge_key_package(20_000)),
            join_proof: None,
        }))
        .to_frame(u32::MAX)
        .unwrap(),
    );
    net.raw(id, &bytes);
    let got = net.take(id);
    assert!(
        matches!(got.as_slice(), [Body::HelloAck(_), Body::Error(e)] if e.code == ErrorCode::KEY_PACKAGE_TOO_LARGE),
        "{got:?}"
    );
}
