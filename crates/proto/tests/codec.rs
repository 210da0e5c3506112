//! Round-trip and garbage-input tests for the control-message codec.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use blindcall_proto::*;
use proptest::prelude::*;

fn bytes() -> impl Strategy<Value = VLBytes> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(VLBytes::new)
}

fn proof() -> impl Strategy<Value = Option<VLBytes>> {
    proptest::option::of(
        proptest::collection::vec(any::<u8>(), 0..=MAX_JOIN_PROOF_LEN).prop_map(VLBytes::new),
    )
}

fn waiting_entry() -> impl Strategy<Value = WaitingEntry> {
    (any::<u64>(), bytes(), bytes(), proof()).prop_map(
        |(conn_id, display_name, key_package, join_proof)| WaitingEntry {
            conn_id,
            display_name,
            key_package,
            join_proof,
        },
    )
}

fn room_state() -> impl Strategy<Value = RoomState> {
    (any::<Option<u64>>(), 0u8..2, any::<u32>(), any::<u32>()).prop_map(
        |(epoch, locked, members, waiting)| RoomState {
            epoch,
            locked,
            members,
            waiting,
        },
    )
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (bytes(), bytes(), bytes()).prop_map(|(room_id, token, display_name)| Body::Hello(Hello {
            room_id,
            token,
            display_name
        })),
        (
            any::<u64>(),
            any::<u8>(),
            room_state(),
            proptest::collection::vec((any::<u16>(), bytes(), bytes()), 0..3),
            any::<[u8; RESUME_CHALLENGE_LEN]>()
        )
            .prop_map(
                |(conn_id, r, room, senders, challenge)| Body::HelloAck(HelloAck {
                    conn_id,
                    role: Role(r),
                    room,
                    external_senders: senders
                        .into_iter()
                        .map(
                            |(signature_scheme, signature_key, credential)| RelaySender {
                                signature_scheme,
                                signature_key,
                                credential,
                            }
                        )
                        .collect(),
                    challenge,
                })
            ),
        (
            any::<u32>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..=MAX_RESUME_SIGNATURE_LEN)
        )
            .prop_map(|(leaf, epoch, sig)| Body::Resume(Resume {
                leaf,
                epoch,
                signature: VLBytes::new(sig),
                participant: u64::from(leaf) << 3,
            })),
        (any::<u64>(), any::<u64>()).prop_map(|(epoch, participant)| Body::ResumeAccepted(
            ResumeAccepted { epoch, participant }
        )),
        ("[a-z0-9.-]{1,60}", 1u16..).prop_map(|(host, port)| Body::Redirect(Redirect {
            relay: VLBytes::new(format!("{host}:{port}").into_bytes())
        })),
        any::<u16>().prop_map(|r| Body::ResumeRefused(ResumeRefused {
            reason: ResumeRefusedReason(r)
        })),
        any::<u16>().prop_map(|r| Body::Refused(Refused {
            reason: RefusedReason(r)
        })),
        bytes().prop_map(|group_info| Body::CreateGroup(CreateGroup { group_info })),
        any::<u64>().prop_map(|epoch| Body::GroupCreated(GroupCreated { epoch })),
        (bytes(), proof()).prop_map(|(key_package, join_proof)| Body::PublishKeyPackage(
            PublishKeyPackage {
                key_package,
                join_proof
            }
        )),
        bytes().prop_map(
            |key_package_ref| Body::KeyPackageAccepted(KeyPackageAccepted { key_package_ref })
        ),
        Just(Body::JoinRequest),
        waiting_entry().prop_map(Body::WaitingEntryAdded),
        any::<u64>().prop_map(|conn_id| Body::WaitingEntryRemoved(WaitingEntryRemoved { conn_id })),
        (any::<u64>(), bytes())
            .prop_map(|(epoch, proposal)| Body::Propose(Propose { epoch, proposal })),
        (any::<u64>(), bytes()).prop_map(|(epoch, proposal)| Body::ProposalBroadcast(
            ProposalBroadcast { epoch, proposal }
        )),
        bytes().prop_map(|payload| Body::PeerBroadcast(PeerBroadcast { payload })),
        (any::<u64>(), any::<u32>(), bytes()).prop_map(|(from_conn, from_leaf, payload)| {
            Body::PeerMessage(PeerMessage {
                from_conn,
                from_leaf,
                payload,
            })
        }),
        (
            any::<u64>(),
            bytes(),
            proptest::option::of(bytes()),
            proptest::option::of(bytes())
        )
            .prop_map(|(epoch, commit, welcome, group_info)| Body::Commit(Commit {
                epoch,
                commit,
                welcome,
                group_info
            })),
        any::<u64>().prop_map(|epoch| Body::CommitAccepted(CommitAccepted { epoch })),
        (any::<u64>(), any::<u16>(), proptest::option::of(bytes())).prop_map(
            |(epoch, r, winner)| Body::CommitRejected(CommitRejected {
                epoch,
                reason: CommitRejectReason(r),
                winner
            })
        ),
        (any::<u64>(), bytes())
            .prop_map(|(epoch, commit)| Body::CommitBroadcast(CommitBroadcast { epoch, commit })),
        (bytes(), bytes()).prop_map(|(welcome, ratchet_tree)| Body::Welcome(WelcomeMessage {
            welcome,
            ratchet_tree
        })),
        Just(Body::GroupInfoRequest),
        (any::<u64>(), bytes(), bytes()).prop_map(|(epoch, group_info, ratchet_tree)| {
            Body::GroupInfoResponse(GroupInfoResponse {
                epoch,
                group_info,
                ratchet_tree,
            })
        }),
        (any::<u64>(), any::<u32>(), bytes()).prop_map(|(epoch, removed_leaf, proposal)| {
            Body::RelayProposal(RelayProposal {
                epoch,
                removed_leaf,
                proposal,
            })
        }),
        Just(Body::LockRoom),
        Just(Body::UnlockRoom),
        any::<u64>().prop_map(|conn_id| Body::RemoveParticipant(RemoveParticipant { conn_id })),
        room_state().prop_map(Body::RoomStateUpdate),
        (any::<u16>(), bytes()).prop_map(|(c, detail)| Body::Error(ErrorMessage {
            code: ErrorCode(c),
            detail
        })),
        bytes().prop_map(|payload| Body::MediaSignal(MediaSignal { payload })),
        any::<u64>().prop_map(|nonce| Body::Ping(Ping { nonce })),
        any::<u64>().prop_map(|nonce| Body::Pong(Pong { nonce })),
    ]
}

proptest! {
    // covers: CP-MSG-1, CP-VER-1, CP-ENUM-1
    #[test]
    fn every_message_round_trips(b in body()) {
        let msg = ControlMessage::new(b);
        let enc = msg.encode().unwrap();
        prop_assert_eq!(&enc[..2], &[0u8, 1][..]);
        prop_assert_eq!(ControlMessage::decode(&enc).unwrap(), msg.clone());
        // framed form decodes back through the FrameDecoder
        let framed = msg.to_frame(DEFAULT_MAX_FRAME_LEN).unwrap();
        let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut input = &framed[..];
        let frame = d.decode(&mut input).unwrap().unwrap();
        prop_assert_eq!(ControlMessage::decode(&frame).unwrap(), msg);
    }

    // covers: CP-DEC-1
    #[test]
    fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ControlMessage::decode(&raw);
        let mut v1 = vec![0u8, 1];
        v1.extend(&raw);
        let _ = ControlMessage::decode(&v1);
    }

    // covers: CP-DEC-1, CP-DEC-2
    #[test]
    fn every_strict_prefix_is_refused(b in body()) {
        let enc = ControlMessage::new(b).encode().unwrap();
        for cut in 0..enc.len() {
            prop_assert!(ControlMessage::decode(&enc[..cut]).is_err(), "prefix {} decoded", cut);
        }
        let mut longer = enc.clone();
        longer.push(0);
        prop_assert_eq!(ControlMessage::decode(&longer), Err(DecodeError::TrailingData));
    }
}

// covers: CP-VER-1
#[test]
fn unknown_version_is_refused_before_the_body() {
    let mut enc = ControlMessage::new(Body::LockRoom).encode().unwrap();
    enc[1] = 2;
    assert_eq!(
        ControlMessage::decode(&enc),
        Err(DecodeError::UnsupportedVersion(2))
    );
}

// covers: CP-DEC-2
#[test]
fn unknown_message_type_is_typed() {
    assert_eq!(
        ControlMessage::decode(&[0, 1, 0x7f, 0xff]),
        Err(DecodeError::UnknownMessageType(0x7fff))
    );
    // an optional flag other than 0/1 is an invalid value
    let mut enc = ControlMessage::new(Body::CommitRejected(CommitRejected {
        epoch: 1,
        reason: CommitRejectReason::EPOCH_TAKEN,
        winner: None,
    }))
    .encode()
    .unwrap();
    let last = enc.len() - 1;
    enc[last] = 2;
    assert_eq!(ControlMessage::decode(&enc), Err(DecodeError::InvalidValue));
    // a vector claiming more bytes than present
    let enc = [0, 1, 0, 4, 0x40, 0xff, 1, 2];
    assert!(matches!(
        ControlMessage::decode(&enc),
        Err(DecodeError::Truncated | DecodeError::InvalidValue)
    ));
}

// covers: CP-ENUM-1
#[test]
fn wire_enums_name_known_values_and_keep_unknown_ones() {
    assert_eq!(format!("{:?}", RefusedReason::EXPIRED), "EXPIRED");
    assert_eq!(format!("{:?}", RefusedReason(999)), "RefusedReason(0x3e7)");
    assert!(!Role(3).is_known());
    assert!(Role::HOST.is_known());
    // Types 1..=35 except the retired 9 (the whole-room waiting update).
    let known: Vec<u16> = MessageType::KNOWN.iter().map(|t| t.0).collect();
    let want: Vec<u16> = (1..=35).filter(|t| *t != 9).collect();
    assert_eq!(known, want);
    assert!(!MessageType(9).is_known());
    assert_eq!(
        ControlMessage::decode(&[0, 1, 0, 9]),
        Err(DecodeError::UnknownMessageType(9))
    );
    for code in [
        RefusedReason::REMOVED_FROM_GROUP,
        RefusedReason::TOO_MANY_CONNECTIONS,
        RefusedReason::WAITING_ROOM_FULL,
        RefusedReason::RESUMED_ELSEWHERE,
        RefusedReason::STORE_UNAVAILABLE,
    ] {
        assert!(code.is_known());
    }
    assert_eq!(RefusedReason::RESUMED_ELSEWHERE.0, 17);
    assert_eq!(RefusedReason::STORE_UNAVAILABLE.0, 18);
    assert_eq!(MessageType::REDIRECT.0, 35);
    let resume: Vec<u16> = ResumeRefusedReason::KNOWN.iter().map(|r| r.0).collect();
    assert_eq!(resume, (1..=6).collect::<Vec<u16>>());
    assert_eq!(
        format!("{}", ResumeRefusedReason::TOO_FAR_BEHIND),
        "TOO_FAR_BEHIND"
    );
    assert_eq!(CommitRejectReason::EXTERNAL_COMMIT.0, 15);
    assert_eq!(CommitRejectReason::POLICY.0, 16);
    assert_eq!(CommitRejectReason::STORE_UNAVAILABLE.0, 17);
    assert_eq!(
        CommitRejectReason::STORE_UNAVAILABLE.name(),
        Some("STORE_UNAVAILABLE")
    );
    let commits: Vec<u16> = CommitRejectReason::KNOWN.iter().map(|r| r.0).collect();
    assert_eq!(commits, (1..=17).collect::<Vec<u16>>());
    let rejected = ControlMessage::new(Body::CommitRejected(CommitRejected {
        epoch: 7,
        reason: CommitRejectReason::STORE_UNAVAILABLE,
        winner: None,
    }));
    assert_eq!(
        ControlMessage::decode(&rejected.encode().unwrap()).unwrap(),
        rejected
    );
    assert_eq!(ErrorCode::KEY_PACKAGE_TOO_LARGE.0, 15);
    // An unknown code inside a known message decodes (forward compatible): acting on it is
    // the receiver's decision.
    let m = ControlMessage::new(Body::Refused(Refused {
        reason: RefusedReason(0xbeef),
    }));
    assert_eq!(ControlMessage::decode(&m.encode().unwrap()).unwrap(), m);
}

// covers: CP-DEC-2, CP-JOIN-1
#[test]
fn a_join_proof_over_64_bytes_is_an_invalid_value() {
    for (len, ok) in [
        (0, true),
        (MAX_JOIN_PROOF_LEN, true),
        (MAX_JOIN_PROOF_LEN + 1, false),
    ] {
        let proof = Some(VLBytes::new(vec![7; len]));
        for body in [
            Body::PublishKeyPackage(PublishKeyPackage {
                key_package: VLBytes::new(vec![1, 2, 3]),
                join_proof: proof.clone(),
            }),
            Body::WaitingEntryAdded(WaitingEntry {
                conn_id: 4,
                display_name: VLBytes::new(b"j".to_vec()),
                key_package: VLBytes::new(vec![1, 2, 3]),
                join_proof: proof.clone(),
            }),
        ] {
            let enc = ControlMessage::new(body).encode().unwrap();
            let got = ControlMessage::decode(&enc);
            if ok {
                assert!(got.is_ok(), "{len}: {got:?}");
            } else {
                assert_eq!(got, Err(DecodeError::InvalidValue), "{len}");
            }
        }
    }
}

#[test]
fn the_message_type_is_read_without_decoding_the_body() {
    let enc = ControlMessage::new(Body::PeerBroadcast(PeerBroadcast {
        payload: VLBytes::new(vec![0; 10]),
    }))
    .encode()
    .unwrap();
    assert_eq!(
        ControlMessage::peek_type(&enc),
        Some(MessageType::PEER_BROADCAST)
    );
    assert_eq!(ControlMessage::peek_type(&enc[..3]), None);
    assert_eq!(ControlMessage::peek_type(&[0, 2, 0, 30]), None);
}

// covers: CP-DEC-2, CP-REDIR-1
#[test]
fn a_redirect_carries_a_host_and_port_of_at_most_255_bytes() {
    let long_host = "h".repeat(MAX_REDIRECT_ADDR_LEN - 4);
    for (addr, ok) in [
        ("relay-b.example:7443".to_string(), true),
        ("127.0.0.1:1".to_string(), true),
        ("[::1]:7443".to_string(), true),
        (format!("{long_host}:7443"), false),
        (format!("{}:7443", &long_host[1..]), true),
        ("relay-b.example".to_string(), false),
        ("relay-b.example:0".to_string(), false),
        ("relay-b.example:99999".to_string(), false),
        (":7443".to_string(), false),
        ("relay b:7443".to_string(), false),
        ("relay\nb:7443".to_string(), false),
        ("https://relay:7443".to_string(), false),
    ] {
        let enc = ControlMessage::new(Body::Redirect(Redirect {
            relay: VLBytes::new(addr.clone().into_bytes()),
        }))
        .encode()
        .unwrap();
        let got = ControlMessage::decode(&enc);
        if ok {
            assert!(got.is_ok(), "{addr:?}: {got:?}");
        } else {
            assert_eq!(got, Err(DecodeError::InvalidValue), "{addr:?}");
        }
    }
    let bad = ControlMessage::new(Body::Redirect(Redirect {
        relay: VLBytes::new(vec![0xff, b':', b'1']),
    }))
    .encode()
    .unwrap();
    assert_eq!(ControlMessage::decode(&bad), Err(DecodeError::InvalidValue));
}

// covers: CP-DEC-2, CP-RES-1
#[test]
fn a_resume_signature_over_255_bytes_is_an_invalid_value() {
    for (len, ok) in [
        (0, true),
        (MAX_RESUME_SIGNATURE_LEN, true),
        (MAX_RESUME_SIGNATURE_LEN + 1, false),
    ] {
        let enc = ControlMessage::new(Body::Resume(Resume {
            leaf: 1,
            epoch: 2,
            signature: VLBytes::new(vec![7; len]),
            participant: 3,
        }))
        .encode()
        .unwrap();
        let got = ControlMessage::decode(&enc);
        if ok {
            assert!(got.is_ok(), "{len}: {got:?}");
        } else {
            assert_eq!(got, Err(DecodeError::InvalidValue), "{len}");
        }
    }
    // The challenge is exactly 32 bytes, without a length prefix.
    let ack = HelloAck {
        conn_id: 1,
        role: Role::GUEST,
        room: RoomState {
            epoch: None,
            locked: 0,
            members: 0,
            waiting: 0,
        },
        external_senders: Vec::new(),
        challenge: [9; RESUME_CHALLENGE_LEN],
    };
    let enc = ControlMessage::new(Body::HelloAck(ack)).encode().unwrap();
    assert_eq!(
        &enc[enc.len() - 33..],
        &[[0u8].as_slice(), &[9; 32]].concat()[..]
    );
}
