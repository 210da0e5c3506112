//! Garbage from several connections at once: random bytes, truncated and oversized frames,
//! valid-looking messages in the wrong state. All refused; the relay keeps serving a healthy
//! room and other rooms are unaffected; nothing panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_proto::*;
use blindcall_relay::*;
use common::*;
use proptest::prelude::*;

/// Deterministic xorshift so the garbage is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

// covers: DS-ERR-1, DS-ERR-2, DS-ERR-3, CP-FRAME-2, CP-ERR-1
#[test]
fn garbage_from_many_connections_is_refused_and_healthy_rooms_go_on() {
    let mut cfg = config();
    cfg.max_frame_len = 64 * 1024;
    let mut net = Net::with(cfg);
    // Healthy room 1 (two members) and room 2 (one member).
    let mut a = room_with_host(&mut net, b"room-1", 1);
    let mut b = waiting_guest(&mut net, b"room-1", 2, "b");
    admit_all(&mut net, &mut a, &mut [], &mut [&mut b]);
    let mut z = room_with_host(&mut net, b"room-2", 3);

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // 1. random bytes before Hello, from 4 connections, interleaved.
    let randoms: Vec<ConnId> = (0..4).map(|_| net.open()).collect();
    // 2. a truncated frame, then the peer goes away.
    let truncated = net.open();
    // 3. an oversized frame header.
    let oversized = net.open();
    // 4. a valid Commit before Hello.
    let early_commit = net.open();
    // 5. an admitted guest sending relay→client messages and host commands.
    let g = Client::connect(&mut net, b"room-1", Role::GUEST, 7, "g");
    // 6. an admitted guest sending malformed bytes inside a valid frame.
    let g2 = Client::connect(&mut net, b"room-1", Role::GUEST, 8, "g2");
    for round in 0..8 {
        for c in &randoms {
            let n = (rng.next() % 300) as usize;
            let junk = rng.bytes(n);
            net.raw(*c, &junk);
        }
        if round == 0 {
            let f = ControlMessage::new(Body::LockRoom)
                .to_frame(1 << 20)
                .unwrap();
            net.raw(truncated, &f[..f.len() - 1]);
            net.close(truncated);
            net.raw(oversized, &(1u32 << 20).to_be_bytes());
            net.send(
                early_commit,
                Body::Commit(Commit {
                    epoch: 1,
                    commit: VLBytes::new(vec![1; 10]),
                    welcome: None,
                    group_info: None,
                }),
            );
            net.send(g.conn, Body::CommitAccepted(CommitAccepted { epoch: 5 }));
            net.send(g.conn, Body::LockRoom);
            net.send(
                g.conn,
                Body::RemoveParticipant(RemoveParticipant { conn_id: a.conn.0 }),
            );
            net.send(g.conn, Body::JoinRequest);
            net.send(
                g.conn,
                Body::Commit(Commit {
                    epoch: 1,
                    commit: VLBytes::new(rng.bytes(100)),
                    welcome: None,
                    group_info: None,
                }),
            );
            let mut bad = ControlMessage::new(Body::GroupInfoRequest)
                .encode()
                .unwrap();
            bad.extend(rng.bytes(5));
            net.raw(g2.conn, &encode_frame(&bad, 1 << 20).unwrap());
        }
    }
    // Every garbage connection got an answer and was closed, or is still waiting for a frame
    // that can never complete (then the Hello deadline closes it).
    net.advance(std::time::Duration::from_secs(11));
    for c in randoms
        .iter()
        .chain([&truncated, &oversized, &early_commit])
    {
        assert!(
            net.closed.contains_key(c) || *c == truncated,
            "{c:?} still open"
        );
    }
    assert_eq!(
        net.closed.get(&oversized),
        Some(&CloseReason::Protocol(ErrorCode::FRAME_TOO_LARGE))
    );
    assert_eq!(
        net.closed.get(&early_commit),
        Some(&CloseReason::Protocol(ErrorCode::UNEXPECTED_MESSAGE))
    );
    assert_eq!(
        net.closed.get(&g2.conn),
        Some(&CloseReason::Protocol(ErrorCode::MALFORMED_MESSAGE))
    );
    // The guest's wrong-state messages each got a typed answer; it stays admitted.
    let answers = net.take(g.conn);
    let codes: Vec<_> = answers
        .iter()
        .filter_map(|b| match b {
            Body::Error(e) => Some(e.code),
            Body::CommitRejected(r) => {
                assert_eq!(r.reason, CommitRejectReason::MALFORMED);
                None
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            ErrorCode::UNEXPECTED_MESSAGE,
            ErrorCode::NOT_HOST,
            ErrorCode::NOT_HOST,
            ErrorCode::NO_KEY_PACKAGE
        ]
    );
    assert!(!net.closed.contains_key(&g.conn));
    let c = net.ds.counters();
    assert!(c.errors(ErrorCode::MALFORMED_MESSAGE) >= 1);
    assert!(c.errors(ErrorCode::FRAME_TOO_LARGE) >= 1);
    assert_eq!(c.internal_faults, 0);

    // Room 1 is healthy: a member commits, the other converges.
    a.pump(&mut net);
    b.pump(&mut net);
    let commit = b.self_update();
    net.send(b.conn, Body::Commit(commit));
    assert!(
        net.take(b.conn)
            .contains(&Body::CommitAccepted(CommitAccepted { epoch: 2 }))
    );
    b.merge_pending();
    a.pump(&mut net);
    assert_eq!(a.authenticator(), b.authenticator());
    // Room 2 too.
    let commit = z.self_update();
    net.send(z.conn, Body::Commit(commit));
    assert!(matches!(net.last(z.conn), Body::CommitAccepted(e) if e.epoch == 1));
}

// covers: DS-ERR-3
#[test]
fn an_abusive_connection_is_closed_after_too_many_errors() {
    let mut cfg = config();
    cfg.max_errors_per_connection = 3;
    let mut net = Net::with(cfg);
    let g = Client::connect(&mut net, b"room-1", Role::GUEST, 1, "g");
    for _ in 0..3 {
        net.send(g.conn, Body::LockRoom);
    }
    assert!(!net.closed.contains_key(&g.conn));
    net.send(g.conn, Body::LockRoom);
    assert_eq!(
        net.closed.get(&g.conn),
        Some(&CloseReason::Protocol(ErrorCode::NOT_HOST))
    );
    // Inputs for the forgotten connection are counted, not acted on.
    net.send(g.conn, Body::LockRoom);
    assert_eq!(net.ds.counters().unknown_connection_inputs, 1);
}

// covers: DS-RATE-1
#[test]
fn a_flooding_connection_is_rate_limited_then_closed() {
    let mut cfg = config();
    cfg.rate_burst = 4;
    cfg.rate_per_second = 2;
    cfg.max_errors_per_connection = 3;
    let mut net = Net::with(cfg);
    let mut host = room_with_host(&mut net, b"room-1", 1);
    // Hello and CreateGroup used 2 of the 4; two more pass, the next is dropped.
    for _ in 0..2 {
        net.send(host.conn, Body::GroupInfoRequest);
        assert!(matches!(net.last(host.conn), Body::GroupInfoResponse(_)));
    }
    net.send(host.conn, Body::GroupInfoRequest);
    assert!(matches!(net.last(host.conn), Body::Error(e) if e.code == ErrorCode::RATE_LIMITED));
    // Half a second refills one message.
    net.advance(std::time::Duration::from_millis(500));
    net.send(host.conn, Body::GroupInfoRequest);
    assert!(matches!(net.last(host.conn), Body::GroupInfoResponse(_)));
    // Several frames in one read are limited one by one; past the error limit the connection closes.
    let one = ControlMessage::new(Body::GroupInfoRequest)
        .to_frame(1 << 20)
        .unwrap();
    net.raw(host.conn, &one.repeat(5));
    assert_eq!(net.ds.counters().errors(ErrorCode::RATE_LIMITED), 4);
    assert_eq!(
        net.closed.get(&host.conn),
        Some(&CloseReason::Protocol(ErrorCode::RATE_LIMITED))
    );
    host.pump(&mut net);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    // covers: DS-ERR-1, CP-DEC-1
    #[test]
    fn arbitrary_streams_never_panic_the_ds(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..8),
        admitted in any::<bool>(),
    ) {
        let mut net = Net::new();
        let id = if admitted {
            Client::connect(&mut net, b"room-p", Role::HOST, 1, "p").conn
        } else {
            net.open()
        };
        for c in &chunks {
            // Sometimes wrap the chunk in a valid v1 frame so it reaches the message handlers.
            if c.first().is_some_and(|b| b % 2 == 0) {
                let mut m = vec![0, 1];
                m.extend(c);
                net.raw(id, &encode_frame(&m, 1 << 20).unwrap());
            } else {
                net.raw(id, c);
            }
        }
        prop_assert_eq!(net.ds.counters().internal_faults, 0);
    }
}
