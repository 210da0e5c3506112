//! A relay forwarder and three clients on loopback exchange SFrame-sealed audio and video.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use blindcall_media::{MediaKind, Packetizer, PacketizerConfig};
use blindcall_transport::{DropReason, ParticipantId};
use common::{Publisher, Report, Room, leaked_windows, receive, wait_client_connected, within};
use tokio::sync::mpsc;

const STEPS: usize = 12;

type Received = HashMap<(usize, ParticipantId, MediaKind), Vec<u64>>;

/// What the test has sent and what the clients have opened.
struct Log {
    plaintexts: Vec<Vec<u8>>,
    reports: mpsc::UnboundedReceiver<Report>,
    received: Received,
}

/// Sends one frame from each stream and waits until `expect` more frames have been opened.
async fn step(
    room: &Room,
    ids: &[ParticipantId],
    pubs: &mut [Publisher],
    log: &mut Log,
    expect: usize,
    what: &str,
) {
    let Log {
        plaintexts,
        reports,
        received,
    } = log;
    for p in pubs.iter_mut() {
        let (plain, packets) = p.next();
        plaintexts.push(plain);
        let client = room.client(ids[p.index]).await;
        for packet in packets {
            client.send(p.kind, packet).await.unwrap();
        }
    }
    let target = received.values().map(Vec::len).sum::<usize>() + expect;
    within(what, async {
        let mut seen = received.values().map(Vec::len).sum::<usize>();
        while seen < target {
            match reports.recv().await.unwrap() {
                Report::Frame {
                    at,
                    from,
                    kind,
                    seq,
                } => {
                    assert_ne!(ids[at], from, "a client got its own stream back");
                    received.entry((at, from, kind)).or_default().push(seq);
                    seen += 1;
                }
                Report::Bad(why) => panic!("client could not open a frame: {why}"),
                Report::Keyframe(_) => panic!("unsolicited keyframe request"),
            }
        }
    })
    .await;
}

// covers: MT-RELAY-1, MT-RELAY-2, MT-RELAY-3, MT-RELAY-5, MT-FWD-1, MT-FWD-4, MT-FWD-5, MT-FWD-6
// covers: MT-FWD-7
#[test]
fn three_clients_exchange_sealed_media_and_relay_sees_no_plaintext() {
    common::runtime().block_on(three_clients());
}

async fn three_clients() {
    const N: usize = 3;
    let mut room = Room::new(Some(1 << 16), 4_096);
    let ids: Vec<ParticipantId> = (0..N as u64).map(ParticipantId).collect();
    let mut client_events = Vec::new();
    for &id in &ids {
        client_events.push(room.join(id).await);
    }
    room.wait_ready(&ids, 2 * (N - 1)).await;
    let (reports_tx, reports) = mpsc::unbounded_channel();
    for (at, mut events) in client_events.into_iter().enumerate() {
        let mut backlog = Vec::new();
        wait_client_connected(&mut events, &mut backlog).await;
        tokio::spawn(receive(at, N, events, backlog, reports_tx.clone()));
    }

    let mut pubs: Vec<Publisher> = (0..N)
        .flat_map(|s| {
            let id = ids[s].0;
            [
                Publisher::new(s, id, MediaKind::Audio),
                Publisher::new(s, id, MediaKind::Video),
            ]
        })
        .collect();
    let mut log = Log {
        plaintexts: Vec::new(),
        reports,
        received: Received::new(),
    };
    for i in 0..STEPS {
        let what = format!("every client opening every other client's frames of step {i}");
        let expect = N * (N - 1) * 2;
        step(&room, &ids, &mut pubs, &mut log, expect, &what).await;
    }
    assert_eq!(log.received.len(), N * (N - 1) * 2);
    for ((at, from, kind), seqs) in &log.received {
        assert_eq!(seqs.len(), STEPS, "{at} from {from} {kind:?}");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "in order, no duplicates"
        );
    }

    // PLI from client 0 for client 1's video reaches client 1, through the relay.
    room.client(ids[0])
        .await
        .request_keyframe(ids[1])
        .await
        .unwrap();
    within("the keyframe request arriving at publisher 1", async {
        match log.reports.recv().await.unwrap() {
            Report::Keyframe(at) => assert_eq!(at, 1, "request reached the wrong publisher"),
            other => panic!("unexpected report {other:?}"),
        }
    })
    .await;

    // Counters: quiesced, every copy accounted for, fan-out N-1 per packet.
    let counters = room.sfu.counters();
    assert_eq!(counters.in_flight(), 0);
    assert!(counters.balanced(), "{counters:?}");
    for reason in DropReason::ALL {
        assert_eq!(counters.dropped(reason), 0, "{reason:?}: {counters:?}");
    }
    assert_eq!(counters.missing_upstream, 0);
    assert_eq!(counters.copies, counters.routed * (N as u64 - 1));
    assert_eq!(counters.packets_out, counters.copies);
    assert_eq!(counters.bytes_out, counters.bytes_in * (N as u64 - 1));
    assert_eq!(counters.keyframe_requests, 1);
    let (mut client_rx, mut client_tx) = (0, 0);
    for id in &ids {
        let s = room.client(*id).await.stats();
        assert_eq!(s.events_dropped, 0);
        client_rx += s.packets_received;
        client_tx += s.packets_sent;
    }
    assert_eq!(counters.packets_in, client_tx);
    assert_eq!(counters.packets_out, client_rx);

    // The tap saw every packet the relay forwarded, and none holds a plaintext window.
    let mut tap = room.tap.take().unwrap();
    let mut tapped = Vec::new();
    while let Ok(t) = tap.try_recv() {
        tapped.push(t.packet.payload.to_vec());
    }
    assert_eq!(counters.tap_dropped, 0);
    assert_eq!(tapped.len() as u64, counters.packets_in);
    assert_eq!(
        leaked_windows(&log.plaintexts, &tapped),
        0,
        "plaintext visible at the relay"
    );
    // Control: the same check over the frames packetized without SFrame finds them.
    let mut clear = Vec::new();
    let mut p = Packetizer::new(PacketizerConfig::default());
    for pt in &log.plaintexts {
        let mut out = Vec::new();
        p.packetize(0, pt, &mut out).unwrap();
        clear.extend(out.into_iter().map(|r| r.payload));
    }
    let windows: usize = log
        .plaintexts
        .iter()
        .map(|p| p.len().saturating_sub(15))
        .sum();
    assert!(
        leaked_windows(&log.plaintexts, &clear) > windows / 2,
        "the check can fail"
    );
    room.sfu.close().await;
}

// covers: MT-RELAY-4, MT-RELAY-6, MT-FWD-5
#[test]
fn joins_and_leaves_renegotiate_and_drops_are_counted() {
    common::runtime().block_on(joins_and_leaves());
}

async fn joins_and_leaves() {
    let mut room = Room::new(Some(1 << 12), 4_096);
    let ids: Vec<ParticipantId> = [10u64, 20, 30].map(ParticipantId).to_vec();
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let mut log = Log {
        plaintexts: Vec::new(),
        reports,
        received: Received::new(),
    };

    // Alone in the room: everything published is dropped as NoSubscriber.
    let mut events = room.join(ids[0]).await;
    room.wait_ready(&ids[..1], 0).await;
    let mut backlog = Vec::new();
    wait_client_connected(&mut events, &mut backlog).await;
    tokio::spawn(receive(0, 3, events, backlog, reports_tx.clone()));
    let mut lonely = Publisher::new(0, ids[0].0, MediaKind::Audio);
    let mut alone = 0u64;
    for _ in 0..5 {
        let (_, packets) = lonely.next();
        for packet in packets {
            room.client(ids[0])
                .await
                .send(MediaKind::Audio, packet)
                .await
                .unwrap();
            alone += 1;
        }
    }
    let mut tap = room.tap.take().unwrap();
    within("the relay receiving the lone publisher's packets", async {
        for _ in 0..alone {
            tap.recv().await.unwrap();
        }
    })
    .await;
    let c = room.sfu.counters();
    assert_eq!(c.dropped(DropReason::NoSubscriber), alone);
    assert!(c.balanced());

    // A second participant: the first one is re-offered its tracks.
    let mut events = room.join(ids[1]).await;
    room.wait_legs(&[(ids[0], 2), (ids[1], 2)]).await;
    let mut backlog = Vec::new();
    wait_client_connected(&mut events, &mut backlog).await;
    tokio::spawn(receive(1, 3, events, backlog, reports_tx.clone()));
    let mut pubs = vec![lonely, Publisher::new(0, ids[0].0, MediaKind::Video)];
    pubs.extend([
        Publisher::new(1, ids[1].0, MediaKind::Audio),
        Publisher::new(1, ids[1].0, MediaKind::Video),
    ]);
    step(&room, &ids, &mut pubs, &mut log, 4, "2 members").await;

    // A late joiner gets everyone's tracks, everyone gets its tracks.
    let mut events = room.join(ids[2]).await;
    room.wait_legs(&[(ids[0], 4), (ids[1], 4), (ids[2], 4)])
        .await;
    let mut backlog = Vec::new();
    wait_client_connected(&mut events, &mut backlog).await;
    tokio::spawn(receive(2, 3, events, backlog, reports_tx.clone()));
    pubs.extend([
        Publisher::new(2, ids[2].0, MediaKind::Audio),
        Publisher::new(2, ids[2].0, MediaKind::Video),
    ]);
    step(&room, &ids, &mut pubs, &mut log, 12, "3 members").await;
    assert_eq!(
        log.received[&(2, ids[0], MediaKind::Audio)].len(),
        1,
        "late joiner: no old frames"
    );
    assert_eq!(log.received[&(1, ids[0], MediaKind::Audio)].len(), 2);

    // The second participant leaves: the others are re-offered without its tracks.
    room.sfu.remove_participant(ids[1]).await.unwrap();
    room.client(ids[1]).await.close().await.unwrap();
    room.wait_legs(&[(ids[0], 2), (ids[2], 2)]).await;
    pubs.retain(|p| p.index != 1);
    step(&room, &ids, &mut pubs, &mut log, 4, "after leave").await;
    assert_eq!(
        log.received[&(0, ids[1], MediaKind::Video)].len(),
        2,
        "nothing from the leaver"
    );
    assert_eq!(log.received[&(2, ids[0], MediaKind::Video)].len(), 2);
    assert_eq!(log.received[&(0, ids[2], MediaKind::Video)].len(), 2);

    // A receive-only viewer gets everyone's tracks and renegotiates nobody.
    let viewer = ParticipantId(99);
    let reoffers = room.reoffers.load(std::sync::atomic::Ordering::SeqCst);
    let mut events = room.join_with(viewer, false).await;
    assert_eq!(
        room.reoffers.load(std::sync::atomic::Ordering::SeqCst),
        reoffers,
        "a viewer's join re-offered other participants"
    );
    room.wait_legs(&[(ids[0], 2), (ids[2], 2), (viewer, 4)])
        .await;
    let mut backlog = Vec::new();
    wait_client_connected(&mut events, &mut backlog).await;
    tokio::spawn(receive(3, 3, events, backlog, reports_tx.clone()));
    let all = [ids[0], ids[1], ids[2], viewer];
    step(&room, &all, &mut pubs, &mut log, 8, "with a viewer").await;
    assert_eq!(log.received[&(3, ids[0], MediaKind::Video)].len(), 1);
    assert_eq!(log.received[&(3, ids[2], MediaKind::Audio)].len(), 1);
    assert!(matches!(
        room.client(viewer)
            .await
            .send(
                MediaKind::Audio,
                Publisher::new(3, 99, MediaKind::Audio).next().1[0].clone()
            )
            .await,
        Err(blindcall_transport::TransportError::NotNegotiated(
            MediaKind::Audio
        ))
    ));

    assert!(matches!(
        room.sfu.remove_participant(ids[1]).await,
        Err(blindcall_transport::TransportError::UnknownParticipant(_))
    ));
    let c = room.sfu.counters();
    assert_eq!(c.in_flight(), 0);
    assert!(c.balanced(), "{c:?}");
    assert_eq!(c.dropped(DropReason::NoSubscriber), alone);
    assert_eq!(c.dropped(DropReason::QueueFull), 0);
    room.sfu.close().await;
}

/// The distinct addresses of the candidates in an SDP text.
fn candidate_addresses(sdp: &str) -> Vec<String> {
    let set: std::collections::BTreeSet<String> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .filter_map(|c| c.split_whitespace().nth(4).map(str::to_owned))
        .collect();
    set.into_iter().collect()
}

// covers: MT-NET-1
#[test]
fn media_flows_between_configured_addresses() {
    use blindcall_media::RtpPacket;
    use blindcall_transport::{ClientEvent, MediaNetwork};
    use std::net::{IpAddr, Ipv4Addr};

    // Every 127/8 address is local on Linux: a relay and clients on distinct addresses.
    let relay_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let client_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    common::runtime().block_on(async {
        let mut room = Room::with_network(
            None,
            64,
            MediaNetwork {
                bind: relay_ip,
                advertise: None,
            },
            MediaNetwork {
                bind: client_ip,
                advertise: None,
            },
        );
        let (a, b) = (ParticipantId(1), ParticipantId(2));
        let mut ea = room.join(a).await;
        let mut eb = room.join(b).await;
        room.wait_ready(&[a, b], 2).await;
        let (mut backlog_a, mut backlog_b) = (Vec::new(), Vec::new());
        wait_client_connected(&mut ea, &mut backlog_a).await;
        wait_client_connected(&mut eb, &mut backlog_b).await;
        for sdp in room.offers.lock().await.iter() {
            assert_eq!(
                candidate_addresses(sdp),
                vec![relay_ip.to_string()],
                "{sdp}"
            );
        }
        // a publishes; b receives it from the relay's address.
        let client_a = room.client(a).await;
        let got = within("b to receive a's packet", async {
            let mut seq = 0u16;
            loop {
                let packet = RtpPacket {
                    sequence_number: seq,
                    timestamp: u32::from(seq) * 960,
                    marker: true,
                    payload: vec![0xC0, 1, 2, 3],
                };
                client_a.send(MediaKind::Audio, packet).await.unwrap();
                seq += 1;
                let next = tokio::time::timeout(std::time::Duration::from_millis(200), eb.recv());
                if let Ok(Some(ClientEvent::Media { from, packet, .. })) = next.await {
                    return (from, packet.payload);
                }
            }
        })
        .await;
        assert_eq!(got, (a, vec![0xC0, 1, 2, 3]));
        room.sfu.close().await;
    });
}

// covers: MT-NET-2
#[test]
fn a_relay_behind_nat_advertises_its_public_address() {
    use blindcall_transport::MediaNetwork;
    use std::net::{IpAddr, Ipv4Addr};

    common::runtime().block_on(async {
        let public = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        let room = Room::with_network(
            None,
            64,
            MediaNetwork {
                bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                advertise: Some(public),
            },
            MediaNetwork::default(),
        );
        let offer = within(
            "the relay's first offer",
            room.sfu.add_participant(ParticipantId(1)),
        )
        .await
        .unwrap();
        assert_eq!(
            candidate_addresses(&offer.sdp),
            vec![public.to_string()],
            "{}",
            offer.sdp
        );
        room.sfu.close().await;
    });
}
