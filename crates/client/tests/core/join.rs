//! Joining: the handshake as core phases, the waiting room, failures.

use std::time::Duration;

use blindcall_client::{
    CallCore, CallError, Command, ControlEnd, EndReason, Event, JoinError, Output, ProtocolError,
    RefusedReason, Role,
};
use blindcall_proto::{Body, Refused, RoomState, VLBytes, WelcomeMessage};

use crate::harness::{Room, has, options, token};

// covers: SDK-JOIN-1, SDK-JOIN-4, SDK-EVT-1
#[test]
fn the_host_creates_the_group_and_a_guest_waits_then_joins_by_welcome() {
    let mut room = Room::new();
    let a = room.host("alice", options());
    let events = room.peers[a].take_events();
    assert!(
        matches!(events[0], Event::Admitted { role: Role::HOST }),
        "{events:?}"
    );
    assert!(matches!(&events[1], Event::Joined { epoch: 0, members } if members.len() == 1));

    let b = room.guest("bob", options());
    let events = room.peers[b].take_events();
    assert!(
        matches!(events[0], Event::Admitted { role: Role::GUEST }),
        "{events:?}"
    );
    assert_eq!(events[1], Event::Waiting);
    assert_eq!(
        room.peers[b].epoch(),
        None,
        "a waiting guest holds no epoch"
    );

    // The host is asked; an unknown request is refused; the approval commits the Add.
    let events = room.peers[a].take_events();
    let Some(Event::JoinRequested {
        request, joiner, ..
    }) = events
        .iter()
        .find(|e| matches!(e, Event::JoinRequested { .. }))
        .cloned()
    else {
        panic!("no join request: {events:?}");
    };
    assert_eq!(&*joiner.identity, "bob");
    let now = room.now;
    assert_eq!(
        room.peers[a].command(now, Command::Approve(request + 7)),
        Err(CallError::UnknownRequest(request + 7))
    );
    room.peers[a]
        .command(now, Command::Approve(request))
        .unwrap();
    room.run();
    let events = room.peers[b].take_events();
    let Some(Event::Joined { epoch, members }) =
        events.iter().find(|e| matches!(e, Event::Joined { .. }))
    else {
        panic!("bob did not join: {events:?}");
    };
    assert_eq!(*epoch, 1);
    let names: Vec<&str> = members.iter().map(|m| &*m.identity).collect();
    assert_eq!(names, ["alice", "bob"]);
    // Bob's path update follows right after joining: both at epoch 2 with one code.
    room.tick();
    assert_eq!(room.peers[a].epoch(), Some(2));
    assert_eq!(room.peers[b].epoch(), Some(2));
    assert_eq!(room.peers[a].code(), room.peers[b].code());
    assert!(has(&room.peers[a].take_events(), |e| matches!(
        e,
        Event::MembersJoined { epoch: 1, .. }
    )));
}

// covers: SDK-JOIN-4
#[test]
fn a_denied_joiner_ends_with_denied_and_only_hosts_are_asked() {
    let mut room = Room::new();
    let a = room.host("alice", options());
    let b = room.guest("bob", options());
    let req = room.peers[b].conn;
    let now = room.now;
    let r = room.request_for(a, req);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    // Bob is a member, not a host: a new joiner is not announced to him.
    room.peers[b].take_events();
    let c = room.guest("carol", options());
    assert!(!has(&room.peers[b].take_events(), |e| matches!(
        e,
        Event::JoinRequested { .. }
    )));
    assert!(has(&room.peers[a].take_events(), |e| matches!(
        e,
        Event::JoinRequested { .. }
    )));
    let now = room.now;
    let carol = room.request_for(a, room.peers[c].conn);
    room.peers[a].command(now, Command::Deny(carol)).unwrap();
    assert_eq!(
        room.peers[a].command(now, Command::Deny(carol)),
        Err(CallError::UnknownRequest(carol))
    );
    room.run();
    let events = room.peers[c].take_events();
    assert_eq!(
        events.last(),
        Some(&Event::CallEnded {
            reason: EndReason::Denied
        })
    );
    assert!(room.peers[c].ended && room.peers[c].core.is_ended());
    // Nothing was committed for carol.
    assert_eq!(room.peers[a].epoch(), Some(2));
}

// covers: SDK-JOIN-5, SDK-CORE-1
#[test]
fn join_steps_time_out_and_unexpected_messages_fail_the_join() {
    let room = Room::new();
    // Nobody answers the Hello: the step times out at step_timeout, not before.
    let mut o = options();
    o.step_timeout = Duration::from_secs(5);
    let t0 = room.now;
    let mut core = CallCore::new(t0, "zoe", &token(), o.clone()).unwrap();
    assert!(matches!(
        core.poll_output(t0),
        Some(Output::Control(Body::Hello(_)))
    ));
    assert_eq!(core.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    core.handle_timeout(t0 + Duration::from_millis(4_999));
    assert!(core.poll_output(t0).is_none());
    // An instant older than one already seen counts as the latest one.
    core.handle_timeout(t0);
    assert!(core.poll_output(t0).is_none());
    core.handle_timeout(t0 + Duration::from_secs(5));
    match core.poll_output(t0) {
        Some(Output::JoinFailed(JoinError::Timeout { what })) => assert_eq!(what, "HelloAck"),
        other => panic!("{other:?}"),
    }
    // Nothing follows a failed join, whatever comes in.
    assert!(core.is_ended() && core.poll_timeout().is_none());
    core.handle_control(t0, Body::JoinRequest);
    assert_eq!(
        core.handle_command(t0, Command::Leave),
        Err(CallError::Ended)
    );
    assert!(core.poll_output(t0).is_none());

    // A Welcome before the HelloAck is a protocol error naming both.
    let mut core = CallCore::new(t0, "zoe", &token(), o.clone()).unwrap();
    core.poll_output(t0);
    core.handle_control(
        t0,
        Body::Welcome(WelcomeMessage {
            welcome: VLBytes::new(vec![1, 2, 3]),
            ratchet_tree: VLBytes::new(Vec::new()),
        }),
    );
    match core.poll_output(t0) {
        Some(Output::JoinFailed(JoinError::Protocol(ProtocolError::Unexpected {
            got,
            expected,
        }))) => assert_eq!((got, expected), ("Welcome", "HelloAck")),
        other => panic!("{other:?}"),
    }
    // A refusal carries the relay's reason; a broken channel is a protocol error.
    let mut core = CallCore::new(t0, "zoe", &token(), o.clone()).unwrap();
    core.poll_output(t0);
    core.handle_control(
        t0,
        Body::Refused(Refused {
            reason: RefusedReason::ROOM_LOCKED,
        }),
    );
    assert!(matches!(
        core.poll_output(t0),
        Some(Output::JoinFailed(JoinError::Refused(
            RefusedReason::ROOM_LOCKED
        )))
    ));
    let mut core = CallCore::new(t0, "zoe", &token(), o.clone()).unwrap();
    core.poll_output(t0);
    core.handle_control_end(t0, ControlEnd::Malformed);
    assert!(matches!(
        core.poll_output(t0),
        Some(Output::JoinFailed(JoinError::Protocol(
            ProtocolError::Malformed
        )))
    ));
    // A malformed token or identity fails before anything is sent.
    assert!(matches!(
        CallCore::new(t0, "zoe", "not-a-token", o.clone()),
        Err(JoinError::Options(_))
    ));
    assert!(matches!(
        CallCore::new(t0, "", &token(), o),
        Err(JoinError::Group(_))
    ));
}

// covers: SDK-JOIN-5
#[test]
fn messages_that_precede_admission_are_handled_once_admitted() {
    let mut room = Room::new();
    let a = room.add_peer("alice", options());
    // Hello → HelloAck → CreateGroup; hold GroupCreated back.
    room.relay_all(a);
    let now = room.now;
    room.peers[a].deliver(now);
    room.relay_all(a);
    assert!(!room.peers[a].admitted);
    let created = room.peers[a].inbox.pop_front().unwrap();
    assert!(matches!(created, Body::GroupCreated(_)));
    // The room is locked and someone waits, before the host is a member.
    room.peers[a]
        .inbox
        .push_back(Body::RoomStateUpdate(RoomState {
            epoch: Some(0),
            locked: 1,
            members: 1,
            waiting: 0,
        }));
    let b = room.add_peer("bob", options());
    room.relay_all(b);
    room.peers[b].deliver(now);
    room.relay_all(b);
    room.peers[b].deliver(now);
    room.relay_all(b);
    room.peers[b].deliver(now);
    let kp = room.peers[b].key_package.clone().unwrap();
    let bob = room.peers[b].conn;
    room.peers[a]
        .inbox
        .push_back(Body::WaitingEntryAdded(blindcall_proto::WaitingEntry {
            conn_id: bob,
            display_name: VLBytes::new(b"bob".to_vec()),
            key_package: VLBytes::new(kp),
            join_proof: None,
        }));
    room.peers[a].deliver(now);
    let before = room.peers[a].take_events();
    assert!(
        !has(&before, |e| matches!(
            e,
            Event::JoinRequested { .. } | Event::RoomLocked { .. }
        )),
        "nothing is acted on before admission: {before:?}"
    );
    room.peers[a].inbox.push_back(created);
    room.peers[a].deliver(now);
    let after = room.peers[a].take_events();
    let joined = after
        .iter()
        .position(|e| matches!(e, Event::Joined { .. }))
        .unwrap();
    let locked = after
        .iter()
        .position(|e| *e == Event::RoomLocked { locked: true })
        .unwrap();
    let asked = after
        .iter()
        .position(|e| matches!(e, Event::JoinRequested { .. }))
        .unwrap();
    assert!(joined < locked && joined < asked, "{after:?}");
}
