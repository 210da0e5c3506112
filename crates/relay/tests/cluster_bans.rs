//! Store mode: bans shared between nodes through the room store (spec/cluster.md, CL-BAN-*).
//! Sans-IO: the DS asks its shell to write each ban it makes (`Output::Ban`) and is handed the
//! bans the store holds (`Ds::handle_ban`), as the shell's watch of the ban entries does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_proto::*;
use blindcall_relay::store::{
    CorruptEntry, MemoryStore, ban_key, decode_ban, encode_ban, parse_ban_key,
};
use blindcall_relay::*;
use common::*;

const ROOM: &[u8] = b"room-bans";

fn room() -> RoomId {
    RoomId(ROOM.to_vec())
}

fn token_id(n: u8) -> [u8; 16] {
    token::verify(
        &config().token_secret,
        &mint(ROOM, Role::GUEST, T0 + 3600, n),
        ROOM,
        T0,
    )
    .unwrap()
    .token_id
}

fn refused(reason: RefusedReason) -> Body {
    Body::Refused(Refused { reason })
}

fn bans_learned(net: &Net) -> Vec<(RoomId, [u8; 16], usize)> {
    net.events
        .iter()
        .filter_map(|e| match e {
            Event::BanLearned {
                room,
                token_id,
                closed,
            } => Some((room.clone(), *token_id, *closed)),
            _ => None,
        })
        .collect()
}

// covers: CL-BAN-1
#[test]
fn a_ban_made_on_one_node_is_written_to_the_store_and_enforced_on_another() {
    let store = MemoryStore::default();
    let mut a = Net::shared(store.clone());
    let mut b = Net::shared(store);

    // Node A: the host removes a member by commit (ADM-BAN-2): its token is banned there and
    // handed to the shell to share, exactly once.
    let mut host = room_with_host(&mut a, ROOM, 1);
    let mut m = waiting_guest(&mut a, ROOM, 2, "m");
    let mut g = waiting_guest(&mut a, ROOM, 3, "g");
    admit_all(&mut a, &mut host, &mut [], &mut [&mut m, &mut g]);
    let commit = host.remove(&[1]);
    a.send(host.conn, Body::Commit(commit));
    assert!(
        a.take(host.conn)
            .iter()
            .any(|b| matches!(b, Body::CommitAccepted(_)))
    );
    assert_eq!(
        a.closed.get(&m.conn),
        Some(&CloseReason::Refused(RefusedReason::REMOVED_FROM_GROUP))
    );
    assert_eq!(
        a.bans,
        vec![BanRequest {
            room: room(),
            token_id: token_id(2)
        }]
    );
    assert_eq!(a.ds.counters().bans_shared, 1);

    // A host's RemoveParticipant (ADM-BAN-1) is shared the same way.
    let (lobby, ack) = a.hello(ROOM, &mint(ROOM, Role::GUEST, T0 + 3600, 4), "l");
    let Body::HelloAck(ack) = ack else {
        panic!("{ack:?}")
    };
    a.send(
        host.conn,
        Body::RemoveParticipant(RemoveParticipant {
            conn_id: ack.conn_id,
        }),
    );
    assert_eq!(a.last(lobby), refused(RefusedReason::REMOVED_BY_HOST));
    assert_eq!(a.bans.len(), 2);
    assert_eq!(a.bans[1].token_id, token_id(4));

    // The watch hands node A its own ban back: nothing changes there.
    a.events.clear();
    a.ds.handle_ban(a.now, &room(), token_id(2));
    a.drain();
    assert!(bans_learned(&a).is_empty());
    assert_eq!(a.ds.counters().bans_learned, 0);

    // Node B: the banned token has a connection in the room (in the lobby), another token too.
    let (b_m, ack) = b.hello(ROOM, &mint(ROOM, Role::GUEST, T0 + 3600, 2), "m");
    assert!(matches!(ack, Body::HelloAck(_)), "{ack:?}");
    let (b_o, ack) = b.hello(ROOM, &mint(ROOM, Role::GUEST, T0 + 3600, 5), "o");
    assert!(matches!(ack, Body::HelloAck(_)), "{ack:?}");
    for req in a.bans.clone() {
        b.ds.handle_ban(b.now, &req.room, req.token_id);
        b.drain();
    }
    // The banned token's connection is refused and closed as on node A; the other stays.
    assert_eq!(b.last(b_m), refused(RefusedReason::REMOVED_BY_HOST));
    assert_eq!(
        b.closed.get(&b_m),
        Some(&CloseReason::Refused(RefusedReason::REMOVED_BY_HOST))
    );
    assert!(!b.closed.contains_key(&b_o));
    assert_eq!(
        bans_learned(&b),
        vec![(room(), token_id(2), 1), (room(), token_id(4), 0)]
    );
    assert_eq!(b.ds.counters().bans_learned, 2);
    // B wrote nothing: the bans were not made there.
    assert!(b.bans.is_empty());
    // Both tokens' Hellos are refused on B from now on; another room is not affected.
    for n in [2, 4] {
        let (_, body) = b.hello(ROOM, &mint(ROOM, Role::GUEST, T0 + 3600, n), "again");
        assert_eq!(body, refused(RefusedReason::REMOVED_BY_HOST));
    }
    let (_, body) = b.hello(b"other", &mint(b"other", Role::GUEST, T0 + 3600, 2), "m");
    assert!(matches!(body, Body::HelloAck(_)), "{body:?}");
}

// covers: CL-BAN-1
#[test]
fn a_ban_for_a_room_not_served_here_is_kept_for_its_first_hello() {
    let mut b = Net::shared(MemoryStore::default());
    b.ds.handle_ban(b.now, &room(), token_id(7));
    b.drain();
    assert_eq!(bans_learned(&b), vec![(room(), token_id(7), 0)]);
    let (_, body) = b.hello(ROOM, &mint(ROOM, Role::GUEST, T0 + 3600, 7), "late");
    assert_eq!(body, refused(RefusedReason::REMOVED_BY_HOST));
    let (_, body) = b.hello(ROOM, &mint(ROOM, Role::GUEST, T0 + 3600, 8), "other");
    assert!(matches!(body, Body::HelloAck(_)), "{body:?}");
}

// covers: CL-BAN-1
#[test]
fn a_single_relay_shares_no_ban() {
    let mut net = Net::new();
    let mut host = room_with_host(&mut net, ROOM, 1);
    let g = waiting_guest(&mut net, ROOM, 2, "g");
    net.send(
        host.conn,
        Body::RemoveParticipant(RemoveParticipant { conn_id: g.conn.0 }),
    );
    host.pump(&mut net);
    assert_eq!(net.last(g.conn), refused(RefusedReason::REMOVED_BY_HOST));
    assert!(net.bans.is_empty());
    assert_eq!(net.ds.counters().bans_shared, 0);
}

// covers: CL-BAN-2
#[test]
fn a_ban_entry_is_bound_to_its_key() {
    let (r, t) = (room(), token_id(2));
    let key = ban_key(&r, &t);
    assert_eq!(
        key,
        format!("room.{}.ban.{}", hex::encode(ROOM), hex::encode(t))
    );
    assert_eq!(parse_ban_key(&key), Some((r.clone(), t)));
    assert_eq!(parse_ban_key(&key.to_uppercase()), None);
    assert_eq!(parse_ban_key(&format!("{key}.x")), None);
    let rec = encode_ban(&r, &t).unwrap();
    assert_eq!(decode_ban(&rec, &r, &t), Ok(()));
    let mut other = t;
    other[0] ^= 1;
    assert_eq!(decode_ban(&rec, &r, &other), Err(CorruptEntry::WrongToken));
    assert_eq!(
        decode_ban(&rec, &RoomId(b"x".to_vec()), &t),
        Err(CorruptEntry::WrongRoom)
    );
    assert_eq!(
        decode_ban(&rec[..rec.len() - 1], &r, &t),
        Err(CorruptEntry::Truncated)
    );
    let mut long = rec.clone();
    long.push(0);
    assert_eq!(decode_ban(&long, &r, &t), Err(CorruptEntry::TrailingBytes));
    assert_eq!(decode_ban(b"nope", &r, &t), Err(CorruptEntry::Foreign));
    let mut kind = rec.clone();
    kind[5] = 1;
    assert_eq!(decode_ban(&kind, &r, &t), Err(CorruptEntry::WrongKind(1)));
    assert!(encode_ban(&RoomId(Vec::new()), &t).is_err());
    // The memory store: idempotent.
    let store = MemoryStore::default();
    store.put_ban(&r, &t).unwrap();
    store.put_ban(&r, &t).unwrap();
    assert!(store.is_banned(&r, &t));
    assert!(!store.is_banned(&r, &other));
}
